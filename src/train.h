/* train.h — a training run: options, and the loop that turns them into
 * optimizer steps, validation, checkpoints and the NDJSON stream. */
#ifndef NF_TRAIN_H
#define NF_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "args.h"
#include "dist.h"
#include "lora.h"
#include "optimizer.h"
#include "protocol.h"

typedef struct {
    /* where the model comes from: a file, a fresh init, or the checkpoint on --resume */
    const char *model_path;
    bool init;
    ModelConfig init_config; /* --dim ... --seq-len, shared classifier by default */
    /* LoRA: adapters on the frozen --model when use_lora */
    bool use_lora;
    LoraConfig lora;
    bool bf16;             /* --dtype bf16: weight products in bf16 */
    const char *tokenizer; /* --tokenizer: checked against the vocabulary; stored (absolute) for export */
    /* data */
    StringList data;
    const char *val_data;
    double val_split;
    int64_t val_every, val_batches;
    bool shuffle;
    /* batch */
    int64_t batch, seq, accum, steps, seed;
    OptimizerOptions optim;
    /* checkpoints and process control */
    const char *ckpt;
    int64_t ckpt_every, keep_last, restart_every;
    double ckpt_minutes; /* also checkpoint when this long has passed since the last one (0 = off) */
    bool resume;
    uint64_t max_memory; /* --max-memory in bytes (0: no limit); budget.h */
    /* under mpirun (dist.h) */
    int64_t zero;        /* --zero 1: each rank holds its slice of the AdamW state */
    double dist_timeout; /* --dist-timeout: seconds a collective may wait */
    int overlap;         /* --overlap: 1 on, 0 off, -1 auto (on when the ranks span machines); grad_sync.h */
    int world_size;      /* the ranks of the run (1 without mpirun): --zero 1 divides the AdamW state by it */
    int ranks_here;      /* the ranks on this machine (1 without mpirun): they share --max-memory */
    /* every flag as JSON, stored in checkpoints */
    char *options_json;
    /* for self-restart: the words after `neuralforge train` */
    int argc;
    char **argv;
} TrainOptions;

/* Blocks SIGINT and SIGTERM (taken at step ends: train.c says why) and ignores SIGPIPE; *stop is the set. Called
 * before any thread starts, MPI's included, so that every thread inherits the mask. */
void train_block_stop_signals(sigset_t *stop);

/* Runs the whole training as this rank of dist (a single process: rank 0 of 1); returns the exit status
 * (errors already emitted, by the rank they concern). */
int train_run(TrainOptions *o, Dist *dist, NfOut *out);

#endif
