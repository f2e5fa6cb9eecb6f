/* train_options.c — the rows of train's option table, and what is built
 * from them: the parser's flag table with its help lines, the lookup of a
 * project's option key, and the table as JSON. */
#include "train_options.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lora.h"
#include "model.h"

#define MAX_SAFE_INT 9007199254740991.0 /* 2^53 - 1: JSON numbers stay exact up to it */

/* Shorthands for the rows: D = the dashboard may set it. */
#define INT(lo, hi)   ARG_INT, (lo), (hi)
#define FLOAT(lo, hi) ARG_FLOAT, (lo), (hi)
#define D             .dashboard = true

const TrainOption TRAIN_OPTIONS[TRAIN_OPTION_COUNT] = {
    [TO_MODEL] = {"model", ARG_STRING, .help = "start from this model file (fine-tuning)"},
    [TO_INIT] = {"init", ARG_FLAG, .help = "start from a fresh model with the --dim ... shape"},
    [TO_DIM] = {"dim", INT(2, NF_MAX_DIM), .def = "288", .help = "model width", .group = "shape", D},
    [TO_HIDDEN_DIM] = {"hidden-dim", INT(0, NF_MAX_HIDDEN), .def = "0",
                       .help = "FFN width; 0 = from dim, as llama2.c (2/3 of 4 dim, a multiple of 32)",
                       .group = "shape", D},
    [TO_N_LAYERS] = {"n-layers", INT(1, NF_MAX_LAYERS), .def = "6", .help = "layers", .group = "shape", D},
    [TO_N_HEADS] = {"n-heads", INT(1, NF_MAX_DIM), .def = "6", .help = "query heads", .group = "shape", D},
    [TO_N_KV_HEADS] = {"n-kv-heads", INT(0, NF_MAX_DIM), .def = "0",
                       .help = "key/value heads; 0 = as many as query heads", .group = "shape", D},
    /* a dashboard project's vocabulary is its tokenizer's: serve sets it */
    [TO_VOCAB_SIZE] = {"vocab-size", INT(0, NF_MAX_VOCAB), .def = "0",
                       .help = "vocabulary; 0 = the --tokenizer's size (32000 without one)", .group = "shape"},
    [TO_SEQ_LEN] = {"seq-len", INT(1, NF_MAX_SEQ_LEN), .def = "256", .help = "context length", .group = "shape", D},
    [TO_SEPARATE_CLASSIFIER] = {"separate-classifier", ARG_FLAG, .help = "untied output weights", .group = "shape", D},
    [TO_ARCH] = {"arch", ARG_CHOICE, .choices = MODEL_ARCH_CHOICES, .def = "llama",
                 .help = "layer family: llama; qwen2 (q/k/v biases); qwen3 (q/k RMSNorm per head)", .group = "shape",
                 D},
    [TO_HEAD_DIM] = {"head-dim", INT(0, NF_MAX_DIM), .def = "0", .help = "width of a head; 0 = dim / n-heads",
                     .group = "shape", D},
    [TO_ROPE_THETA] = {"rope-theta", FLOAT(0, 1e9), .def = "0",
                       .help = "RoPE base, at least 1; 0 = the family's (llama 10000, qwen 1000000)", .group = "shape",
                       D},
    [TO_RMS_NORM_EPS] = {"rms-norm-eps", FLOAT(0, 0.1), .def = "0",
                         .help = "RMSNorm epsilon, at least 1e-12; 0 = the family's (llama 1e-5, qwen 1e-6)",
                         .group = "shape", D},
    [TO_LORA_RANK] = {"lora-rank", INT(0, LORA_MAX_RANK), .def = "0",
                      .help = "adapters of rank r on the frozen base model, at most its dim; 0 = full fine-tuning",
                      .group = "lora", D},
    [TO_LORA_ALPHA] = {"lora-alpha", FLOAT(1e-6, 1e6), .def_text = "= rank", .help = "scale alpha / rank",
                       .group = "lora", D},
    [TO_LORA_DROPOUT] = {"lora-dropout", FLOAT(0, 0.9), .def = "0", .help = "dropout on the adapter inputs",
                         .group = "lora", D},
    [TO_LORA_TARGETS] = {"lora-targets", ARG_STRING, .def = "wq,wk,wv,wo",
                         .help = "wq,wk,wv,wo,w1,w2,w3 (or q,k,v,o,gate,down,up), or a bit mask 1 ... 127",
                         .group = "lora", D, .syntax = "lora_targets"},
    [TO_LORA_TRAIN_NORMS] = {"lora-train-norms", ARG_FLAG, .help = "train the RMSNorm weights too", .group = "lora", D},
    [TO_DATA] = {"data", ARG_LIST, .help = "token file or directory of them (repeatable; required)"},
    [TO_VAL_DATA] = {"val-data", ARG_STRING, .help = "validation token file or directory of them"},
    [TO_VAL_SPLIT] = {"val-split", FLOAT(0, 0.9), .def = "0", .help = "hold out this last fraction for validation",
                      .group = "validation", D},
    [TO_VAL_EVERY] = {"val-every", INT(0, 1e9), .def = "100", .help = "validate every N steps; 0 = never",
                      .group = "validation", D},
    [TO_VAL_BATCHES] = {"val-batches", INT(1, 1e6), .def = "10", .help = "batches per validation",
                        .group = "validation", D},
    [TO_SHUFFLE] = {"shuffle", ARG_FLAG, .help = "epochs of shuffled windows instead of random windows",
                    .group = "batches", D},
    [TO_BATCH] = {"batch", INT(1, 4096), .def = "4", .help = "sequences per micro-batch", .group = "batches", D},
    [TO_SEQ] = {"seq", INT(0, NF_MAX_SEQ_LEN), .def = "0", .help = "tokens per sequence; 0 = the model's seq_len",
                .group = "batches", D},
    [TO_ACCUM] = {"accum", INT(1, 65536), .def = "1", .help = "micro-batches per optimizer step", .group = "batches",
                  D},
    [TO_STEPS] = {"steps", INT(1, 1e9), .def = "1000",
                  .help = "optimizer steps in the whole run, resumed ones included", .group = "batches", D},
    [TO_SEED] = {"seed", INT(0, MAX_SAFE_INT), .def = "1337", .help = "seed for initialization and data windows",
                 .group = "batches", D},
    [TO_LR] = {"lr", FLOAT(1e-12, 10), .def = "5e-4", .help = "peak learning rate", .group = "optimizer", D},
    [TO_LR_MIN] = {"lr-min", FLOAT(0, 10), .def = "0", .help = "final learning rate of the decay; at most lr",
                   .group = "optimizer", D},
    [TO_LR_SCHEDULE] = {"lr-schedule", ARG_CHOICE, .choices = "constant|cosine|linear", .def = "cosine",
                        .help = "after the warmup", .group = "optimizer", D},
    [TO_WARMUP] = {"warmup", INT(0, 1e9), .def = "0", .help = "linear warmup steps", .group = "optimizer", D},
    [TO_BETA1] = {"beta1", FLOAT(0, 0.999999), .def = "0.9", .help = "AdamW beta1", .group = "optimizer", D},
    [TO_BETA2] = {"beta2", FLOAT(0, 0.999999), .def = "0.95", .help = "AdamW beta2", .group = "optimizer", D},
    [TO_EPS] = {"eps", FLOAT(1e-30, 1), .def = "1e-8", .help = "AdamW epsilon", .group = "optimizer", D},
    [TO_WEIGHT_DECAY] = {"weight-decay", FLOAT(0, 10), .def = "0.1", .help = "decoupled (AdamW), not on norms",
                         .group = "optimizer", D},
    [TO_GRAD_CLIP] = {"grad-clip", FLOAT(0, 1e6), .def = "1", .help = "largest global gradient norm; 0 = off",
                      .group = "optimizer", D},
    [TO_CKPT] = {"ckpt", ARG_STRING, .help = "checkpoint file to write (and --resume from)"},
    [TO_CKPT_EVERY] = {"ckpt-every", INT(0, 1e9), .def = "0",
                       .help = "also checkpoint every N steps; 0 = only at the end (and on stop)",
                       .group = "validation", D},
    /* a dashboard run that dies without warning (power, OOM kill) loses at most this much */
    [TO_CKPT_MINUTES] = {"ckpt-minutes", FLOAT(0, 1e6), .def = "0", .dash_def = "10",
                         .help = "also checkpoint when N minutes (a fraction too) have passed since the last one; "
                                 "0 = off",
                         .group = "validation", D},
    [TO_KEEP_LAST] = {"keep-last", INT(1, 1000), .def = "1", .help = "keep the N newest checkpoints as PATH.step-N",
                      .group = "validation", D},
    [TO_RESUME] = {"resume", ARG_FLAG, .help = "continue exactly from --ckpt"},
    [TO_RESTART_EVERY] = {"restart-every", INT(0, 1e9), .def = "0",
                          .help = "checkpoint and re-execute itself every N steps; 0 = never"},
    [TO_CONFIG] = {"config", ARG_STRING, .help = "JSON file of flag names and values (flags win)"},
    [TO_DTYPE] = {"dtype", ARG_CHOICE, .choices = "fp32|bf16", .def = "fp32",
                  .help = "precision of the weight products; bf16 keeps fp32 weights and AdamW state",
                  .group = "batches", D},
    /* serve gives each run its share of the cores (OMP_NUM_THREADS) and its memory budget */
    [TO_THREADS] = {"threads", INT(0, 4096), .def = "0",
                    .help = "threads (of each rank under mpirun); 0 = one per core it may use, or OMP_NUM_THREADS"},
    /* data-parallel runs under mpirun (dist.h) */
    [TO_ZERO] = {"zero", INT(0, 1), .def = "0",
                 .help =
                     "under mpirun: 1 = shard the AdamW state over the ranks (ZeRO stage 1); 0 = every rank holds it"},
    [TO_DIST_TIMEOUT] = {"dist-timeout", FLOAT(10, 86400), .def = "600",
                         .help = "under mpirun: seconds one rank may wait for the others before the job stops as hung"},
    [TO_OVERLAP] = {"overlap", ARG_CHOICE, .choices = "auto|on|off", .def = "auto",
                    .help = "under mpirun: on = sum each layer's gradients over the ranks while backward goes on; "
                            "auto = on when the ranks span machines (docs/performance.md)"},
    /* the launcher (launch.h): this process starts the ranks through mpirun */
    [TO_PROCESSES] = {"processes", INT(0, 1024), .def = "0",
                      .help = "N > 1: run as N data-parallel ranks, started through mpirun; 0 = this process (or, "
                              "under mpirun, its ranks)",
                      .group = "batches", D},
    [TO_HOSTFILE] = {"hostfile", ARG_STRING,
                     .help = "with --processes: mpirun's hostfile, to place the ranks on several machines"},
    [TO_MAX_MEMORY] = {"max-memory", ARG_STRING, .def_text = "80% of the machine's memory",
                       .help = "refuse a run estimated to need more memory than SIZE (8G, 512M; none = no limit)",
                       .syntax = "size"},
    [TO_TOKENIZER] = {"tokenizer", ARG_STRING,
                      .help = "the tokenizer the data was made with: checked against the vocabulary, remembered for "
                              "export --format gguf"},
};

#undef INT
#undef FLOAT
#undef D

/* The shortest text of x that reads back as x (ranges and defaults are shown exactly). */
static void number_text(double x, char *out, size_t cap) {
    if (x == (double)(int64_t)x && x > -MAX_SAFE_INT && x < MAX_SAFE_INT) {
        snprintf(out, cap, "%.0f", x);
        return;
    }
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(out, cap, "%.*g", digits, x);
        if (strtod(out, NULL) == x) return;
    }
}

/* "LoRA: scale alpha / rank (range 1e-06 ... 1e+06; default = rank)" */
static void help_line(const TrainOption *o, char *out, size_t cap) {
    const char *prefix = !o->group                        ? ""
                         : strcmp(o->group, "shape") == 0 ? "--init: "
                         : strcmp(o->group, "lora") == 0  ? "LoRA: "
                                                          : "";
    char lo[32], hi[32], range[80] = "";
    if (o->type == ARG_INT || o->type == ARG_FLOAT) {
        number_text(o->min, lo, sizeof lo);
        number_text(o->max, hi, sizeof hi);
        snprintf(range, sizeof range, "range %s..%s", lo, hi);
    }
    const char *def = o->def ? o->def : o->def_text;
    char tail[160] = "";
    if (range[0] || def)
        snprintf(tail, sizeof tail, " (%s%s%s%s)", range, range[0] && def ? "; " : "", def ? "default " : "",
                 def ? def : "");
    snprintf(out, cap, "%s%s%s", prefix, o->help, tail);
}

int train_flags_build(TrainFlagTable *t, void *const dest[TRAIN_OPTION_COUNT], NfError *err) {
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++) {
        const TrainOption *o = &TRAIN_OPTIONS[i];
        if (!dest[i]) return nf_fail(err, NF_ERR_USAGE, "train's option --%s has no variable", o->name);
        help_line(o, t->help[i], sizeof t->help[i]);
        t->specs[i] = (ArgSpec){.name = o->name,
                                .type = o->type,
                                .dest = dest[i],
                                .min = o->min,
                                .max = o->max,
                                .choices = o->choices,
                                .help = t->help[i]};
        switch (o->type) { /* the default: none, or the row's text read as the flag's value would be */
        case ARG_STRING:
        case ARG_CHOICE: *(const char **)dest[i] = NULL; break;
        case ARG_INT: *(int64_t *)dest[i] = 0; break;
        case ARG_FLOAT: *(double *)dest[i] = 0.0; break;
        case ARG_FLAG: *(bool *)dest[i] = false; break;
        case ARG_LIST: ((StringList *)dest[i])->n = 0; break;
        }
        if (o->def && args_set_value(&t->specs[i], o->def, err) != 0) return -1;
    }
    return 0;
}

void train_option_key(const TrainOption *o, char *out, size_t cap) {
    snprintf(out, cap, "%s", o->name);
    for (char *c = out; *c; c++)
        if (*c == '-') *c = '_';
}

const TrainOption *train_option_by_key(const char *key) {
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++) {
        const char *n = TRAIN_OPTIONS[i].name, *k = key;
        while (*n && *k == (*n == '-' ? '_' : *n)) n++, k++; /* "lr-min" is not a key */
        if (!*n && !*k) return &TRAIN_OPTIONS[i];
    }
    return NULL;
}

/* A default written as its type: a number, a string or a boolean. */
static void json_default(JsonBuf *j, const char *key, const TrainOption *o, const char *text) {
    if (!text)
        json_null_value(j, key);
    else if (o->type == ARG_INT)
        json_int(j, key, strtoll(text, NULL, 10));
    else if (o->type == ARG_FLOAT) {
        char num[32];
        number_text(strtod(text, NULL), num, sizeof num);
        json_raw(j, key, num, strlen(num));
    } else
        json_str(j, key, text);
}

static void json_bound(JsonBuf *j, const char *key, const TrainOption *o, double x) {
    if (o->type == ARG_INT) {
        json_int(j, key, (int64_t)x);
        return;
    }
    char num[32];
    number_text(x, num, sizeof num);
    json_raw(j, key, num, strlen(num));
}

void train_options_json(JsonBuf *j, const char *key) {
    static const char *const TYPE_NAMES[] = {[ARG_STRING] = "string", [ARG_INT] = "int",       [ARG_FLOAT] = "float",
                                             [ARG_FLAG] = "flag",     [ARG_CHOICE] = "choice", [ARG_LIST] = "list"};
    json_array_begin(j, key);
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++) {
        const TrainOption *o = &TRAIN_OPTIONS[i];
        char opt_key[64];
        train_option_key(o, opt_key, sizeof opt_key);
        json_object_begin(j, NULL);
        json_str(j, "name", o->name);
        json_str(j, "key", opt_key);
        json_str(j, "type", TYPE_NAMES[o->type]);
        if (o->type == ARG_INT || o->type == ARG_FLOAT) {
            json_bound(j, "min", o, o->min);
            json_bound(j, "max", o, o->max);
        }
        if (o->choices) {
            json_array_begin(j, "choices");
            for (const char *p = o->choices; *p;) {
                size_t len = strcspn(p, "|");
                json_str_n(j, NULL, p, len);
                p += len + (p[len] == '|');
            }
            json_array_end(j);
        }
        if (o->type == ARG_FLAG)
            json_bool(j, "default", false);
        else
            json_default(j, "default", o, o->def);
        if (o->def_text) json_str(j, "default_text", o->def_text);
        if (o->dash_def) json_default(j, "dashboard_default", o, o->dash_def);
        json_str(j, "help", o->help);
        json_str(j, "group", o->group);
        json_bool(j, "dashboard", o->dashboard);
        if (o->syntax) json_str(j, "syntax", o->syntax);
        if (o->syntax && strcmp(o->syntax, "lora_targets") == 0) { /* the form checks names as lora.c reads them */
            json_array_begin(j, "targets");
            for (int t = 0; t < LORA_TARGETS; t++) {
                json_object_begin(j, NULL);
                json_str(j, "name", lora_target_name((LoraTarget)t));
                json_str(j, "alias", lora_target_alias((LoraTarget)t));
                json_int(j, "bit", 1 << t);
                json_object_end(j);
            }
            json_array_end(j);
        }
        json_object_end(j);
    }
    json_array_end(j);
}
