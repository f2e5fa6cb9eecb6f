/* train_options.h — the one table of `neuralforge train`'s options.
 *
 * Every training flag is one row: its name, type, range, default, help, the
 * dashboard Config form's group and whether a dashboard project may set it.
 * Everything else is built from or checked against these rows, so they
 * cannot drift apart: train's flag parser (cmd_train.c binds each row to the
 * variable it fills), serve's validation of a project's options (server.c),
 * the table as JSON (`train --options-json`, GET /api/options) from which
 * web/app.js builds the Config form, and docs/dashboard.md's list
 * (scripts/train_options_doc.py; tests/e2e/test_options.py checks all four). */
#ifndef NF_TRAIN_OPTIONS_H
#define NF_TRAIN_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "args.h"
#include "error.h"

/* Row indices, in `train --help` order (checkpoints store options in it: changed_flags follow it). */
typedef enum {
    TO_MODEL,
    TO_INIT,
    TO_DIM,
    TO_HIDDEN_DIM,
    TO_N_LAYERS,
    TO_N_HEADS,
    TO_N_KV_HEADS,
    TO_VOCAB_SIZE,
    TO_SEQ_LEN,
    TO_SEPARATE_CLASSIFIER,
    TO_ARCH,
    TO_HEAD_DIM,
    TO_ROPE_THETA,
    TO_RMS_NORM_EPS,
    TO_LORA_RANK,
    TO_LORA_ALPHA,
    TO_LORA_DROPOUT,
    TO_LORA_TARGETS,
    TO_LORA_TRAIN_NORMS,
    TO_DATA,
    TO_VAL_DATA,
    TO_VAL_SPLIT,
    TO_VAL_EVERY,
    TO_VAL_BATCHES,
    TO_SHUFFLE,
    TO_BATCH,
    TO_SEQ,
    TO_ACCUM,
    TO_STEPS,
    TO_SEED,
    TO_LR,
    TO_LR_MIN,
    TO_LR_SCHEDULE,
    TO_WARMUP,
    TO_BETA1,
    TO_BETA2,
    TO_EPS,
    TO_WEIGHT_DECAY,
    TO_GRAD_CLIP,
    TO_CKPT,
    TO_CKPT_EVERY,
    TO_CKPT_MINUTES,
    TO_KEEP_LAST,
    TO_RESUME,
    TO_RESTART_EVERY,
    TO_CONFIG,
    TO_DTYPE,
    TO_THREADS,
    TO_ZERO,
    TO_DIST_TIMEOUT,
    TO_OVERLAP,
    TO_PROCESSES,
    TO_HOSTFILE,
    TO_MAX_MEMORY,
    TO_TOKENIZER,
    TRAIN_OPTION_COUNT
} TrainOptionId;

typedef struct {
    const char *name; /* the flag without "--"; a project's option key is the same with '_' for '-' */
    ArgType type;
    double min, max;      /* ARG_INT, ARG_FLOAT */
    const char *choices;  /* ARG_CHOICE: "fp32|bf16" */
    const char *def;      /* the default as the flag's value would be written ("5e-4"), or NULL (def_text) */
    const char *def_text; /* with def NULL: a default worked out at run time, in words ("= rank"), or NULL: none */
    const char *dash_def; /* a dashboard run's value when the project does not set it (serve passes it), or NULL */
    const char *help;     /* one line, without the default or range (those are added from the row) */
    const char *group;    /* "shape" (--init only), "batches", "optimizer", "validation", "lora", or NULL */
    bool dashboard;       /* a project may set it; the others are the server's own (paths, budget, threads) */
    const char *syntax;   /* NULL, or how a string reads: "lora_targets" (lora.h), "size" (budget.h) */
} TrainOption;

extern const TrainOption TRAIN_OPTIONS[TRAIN_OPTION_COUNT];

/* A parser's flag table built from the rows, with its help lines (group prefix, range and default added). */
typedef struct {
    ArgSpec specs[TRAIN_OPTION_COUNT];
    char help[TRAIN_OPTION_COUNT][320];
} TrainFlagTable;

/* Binds row i to dest[i] (the variable of ArgSpec's type) and sets every dest to the row's default (0, false,
 * NULL, an empty list where it has none). -1 with err when a row has no dest or its default does not parse. */
int train_flags_build(TrainFlagTable *t, void *const dest[TRAIN_OPTION_COUNT], NfError *err);

/* A row's option key for a project: its name with '_' for '-' ("lr_min"). */
void train_option_key(const TrainOption *o, char *out, size_t cap);

/* The row of a project's option key ("lr_min"), or NULL. */
const TrainOption *train_option_by_key(const char *key);

/* Writes the table as the array `key`: one object per row (docs/protocol.md, `train_options`). */
struct JsonBuf;
void train_options_json(struct JsonBuf *j, const char *key);

#endif
