/* cmd_train.c — `neuralforge train`: the flags of a training run, checked
 * and gathered into TrainOptions (train.c runs it). --config FILE.json sets
 * any flag by name; flags on the command line win.
 *
 * One parse serves two callers: cmd_train runs what it parsed, and the
 * dashboard (train_command_check) asks the same code for a verdict on a
 * run's command line before it starts one. With --processes N > 1 and no
 * MPI launcher above it, cmd_train trains nothing itself: launch.c starts
 * the N ranks through mpirun, with the same words. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "backend.h"
#include "budget.h"
#include "commands.h"
#include "fileio.h"
#include "json_parse.h"
#include "launch.h"
#include "model_open.h"
#include "tokenizer.h"
#include "train.h"
#include "train_options.h"

/* The flags whose values are not TrainOptions fields as they stand; the table
 * (train_options.c) gives each its default. */
typedef struct {
    const char *config_path, *schedule, *dtype, *max_memory, *lora_targets, *arch, *hostfile, *overlap;
    int64_t dim, hidden, layers, heads, kv_heads, vocab, seq_len, lora_rank, threads, head_dim, processes;
    bool separate_classifier;
    double lora_alpha, lora_dropout, rope_theta, rms_norm_eps;
} TrainFlagValues;

/* A parsed command line: the options, and what they point into. */
typedef struct {
    TrainOptions o;
    TrainFlagValues v;
    TrainFlagTable table;
    JsonValue config;    /* --config's document: strings in o and v may point into it */
    JsonBuf options;     /* every flag as JSON; o.options_json is its text */
    char *tokenizer_abs; /* o.tokenizer made absolute; o.tokenizer points here */
} TrainCommand;

static void train_command_free(TrainCommand *c) {
    free(c->tokenizer_abs);
    json_free(&c->options);
    json_value_free(&c->config);
}

/* Fills c->o and c->v from the command line and --config; ARGS_OK, ARGS_HELP or ARGS_ERROR. */
static int read_flags(TrainCommand *c, int argc, char **argv, NfError *err) {
    TrainOptions *o = &c->o;
    TrainFlagValues *v = &c->v;
    void *const dest[TRAIN_OPTION_COUNT] = {
        [TO_MODEL] = &o->model_path,
        [TO_INIT] = &o->init,
        [TO_DIM] = &v->dim,
        [TO_HIDDEN_DIM] = &v->hidden,
        [TO_N_LAYERS] = &v->layers,
        [TO_N_HEADS] = &v->heads,
        [TO_N_KV_HEADS] = &v->kv_heads,
        [TO_VOCAB_SIZE] = &v->vocab,
        [TO_SEQ_LEN] = &v->seq_len,
        [TO_SEPARATE_CLASSIFIER] = &v->separate_classifier,
        [TO_ARCH] = &v->arch,
        [TO_HEAD_DIM] = &v->head_dim,
        [TO_ROPE_THETA] = &v->rope_theta,
        [TO_RMS_NORM_EPS] = &v->rms_norm_eps,
        [TO_LORA_RANK] = &v->lora_rank,
        [TO_LORA_ALPHA] = &v->lora_alpha,
        [TO_LORA_DROPOUT] = &v->lora_dropout,
        [TO_LORA_TARGETS] = &v->lora_targets,
        [TO_LORA_TRAIN_NORMS] = &o->lora.train_norms,
        [TO_DATA] = &o->data,
        [TO_VAL_DATA] = &o->val_data,
        [TO_VAL_SPLIT] = &o->val_split,
        [TO_VAL_EVERY] = &o->val_every,
        [TO_VAL_BATCHES] = &o->val_batches,
        [TO_SHUFFLE] = &o->shuffle,
        [TO_BATCH] = &o->batch,
        [TO_SEQ] = &o->seq,
        [TO_ACCUM] = &o->accum,
        [TO_STEPS] = &o->steps,
        [TO_SEED] = &o->seed,
        [TO_LR] = &o->optim.lr,
        [TO_LR_MIN] = &o->optim.lr_min,
        [TO_LR_SCHEDULE] = &v->schedule,
        [TO_WARMUP] = &o->optim.warmup,
        [TO_BETA1] = &o->optim.beta1,
        [TO_BETA2] = &o->optim.beta2,
        [TO_EPS] = &o->optim.eps,
        [TO_WEIGHT_DECAY] = &o->optim.weight_decay,
        [TO_GRAD_CLIP] = &o->optim.grad_clip,
        [TO_CKPT] = &o->ckpt,
        [TO_CKPT_EVERY] = &o->ckpt_every,
        [TO_CKPT_MINUTES] = &o->ckpt_minutes,
        [TO_KEEP_LAST] = &o->keep_last,
        [TO_RESUME] = &o->resume,
        [TO_RESTART_EVERY] = &o->restart_every,
        [TO_CONFIG] = &v->config_path,
        [TO_DTYPE] = &v->dtype,
        [TO_THREADS] = &v->threads,
        [TO_ZERO] = &o->zero,
        [TO_DIST_TIMEOUT] = &o->dist_timeout,
        [TO_OVERLAP] = &v->overlap,
        [TO_PROCESSES] = &v->processes,
        [TO_HOSTFILE] = &v->hostfile,
        [TO_MAX_MEMORY] = &v->max_memory,
        [TO_TOKENIZER] = &o->tokenizer,
    };
    if (train_flags_build(&c->table, dest, err) != 0) return ARGS_ERROR;
    int parsed = args_parse_command("train",
                                    "Trains a model (from scratch, or fine-tuning a model file). "
                                    "`train --options-json` prints these\nflags as JSON (docs/protocol.md, "
                                    "train_options).",
                                    c->table.specs, TRAIN_OPTION_COUNT, argc, argv, err);
    if (parsed != ARGS_OK || !v->config_path) return parsed;
    MappedFile f;
    if (mapped_file_open(&f, v->config_path, "config", err) != 0) return ARGS_ERROR;
    int rc = json_parse((const char *)f.data, f.size, &c->config, err);
    mapped_file_close(&f);
    if (rc != 0) {
        nf_prefix(err, NF_ERR_USAGE, "--config '%s': ", v->config_path);
        return ARGS_ERROR;
    }
    return args_apply_json(c->table.specs, TRAIN_OPTION_COUNT, &c->config, err) != 0 ? ARGS_ERROR : ARGS_OK;
}

static bool flag_seen(const TrainCommand *c, const char *name) {
    return args_seen(c->table.specs, TRAIN_OPTION_COUNT, name);
}

/* The rules between flags: which need, and which exclude, which. */
static int check_flag_combinations(const TrainCommand *c, NfError *err) {
    const TrainOptions *o = &c->o;
    if (o->data.n == 0) return nf_fail(err, NF_ERR_USAGE, "train needs --data (a token file or a directory of them)");
    if (!o->resume && !o->model_path && !o->init)
        return nf_fail(err, NF_ERR_USAGE, "train needs --model (fine-tune), --init (from scratch) or --resume");
    if (o->model_path && o->init) return nf_fail(err, NF_ERR_USAGE, "--model and --init exclude each other");
    if ((o->resume || o->restart_every > 0) && !o->ckpt)
        return nf_fail(err, NF_ERR_USAGE, "--%s needs --ckpt", o->resume ? "resume" : "restart-every");
    if (!o->ckpt && (o->ckpt_every > 0 || o->ckpt_minutes > 0 || o->keep_last > 1))
        return nf_fail(err, NF_ERR_USAGE, "--%s needs --ckpt (the checkpoint path)",
                       o->ckpt_every > 0     ? "ckpt-every"
                       : o->ckpt_minutes > 0 ? "ckpt-minutes"
                                             : "keep-last");
    if (c->v.lora_rank == 0) {
        /* a LoRA setting that would change something, without LoRA, is a mistake worth naming */
        const char *stray = flag_seen(c, "lora-alpha")     ? "lora-alpha"
                            : flag_seen(c, "lora-targets") ? "lora-targets"
                            : c->v.lora_dropout > 0        ? "lora-dropout"
                            : o->lora.train_norms          ? "lora-train-norms"
                                                           : NULL;
        if (stray) return nf_fail(err, NF_ERR_USAGE, "--%s needs --lora-rank", stray);
    } else if (!o->model_path) {
        return nf_fail(err, NF_ERR_USAGE, "--lora-rank trains adapters on a pretrained model: give --model");
    }
    if (o->val_data && o->val_split > 0)
        return nf_fail(err, NF_ERR_USAGE, "--val-data and --val-split exclude each other");
    if (c->v.rope_theta != 0 && c->v.rope_theta < 1)
        return nf_fail(err, NF_ERR_USAGE, "--rope-theta %g is below 1", c->v.rope_theta);
    if (c->v.rms_norm_eps != 0 && c->v.rms_norm_eps < 1e-12)
        return nf_fail(err, NF_ERR_USAGE, "--rms-norm-eps %g is below 1e-12", c->v.rms_norm_eps);
    if (!o->init) {
        /* a shape flag without --init would be ignored: the model or checkpoint has its shape */
        static const char *const SHAPE[] = {"dim",        "hidden-dim", "n-layers",   "n-heads",
                                            "n-kv-heads", "vocab-size", "seq-len",    "separate-classifier",
                                            "arch",       "head-dim",   "rope-theta", "rms-norm-eps"};
        for (size_t i = 0; i < sizeof SHAPE / sizeof SHAPE[0]; i++)
            if (flag_seen(c, SHAPE[i])) return nf_fail(err, NF_ERR_USAGE, "--%s needs --init", SHAPE[i]);
    }
    if (o->optim.lr_min > o->optim.lr)
        return nf_fail(err, NF_ERR_USAGE, "--lr-min %g is above --lr %g", o->optim.lr_min, o->optim.lr);
    return 0;
}

/* llama2.c's default SwiGLU width: 2/3 of 4*dim, rounded up to a multiple of 32 */
static int default_hidden_dim(int dim) {
    int hidden = 2 * 4 * dim / 3;
    return 32 * ((hidden + 31) / 32);
}

/* --init's model: the shape flags, each family's defaults, the vocabulary of --tokenizer when --vocab-size is 0. */
static int init_config(TrainCommand *c, NfError *err) {
    const TrainFlagValues *v = &c->v;
    ModelConfig *m = &c->o.init_config;
    *m = (ModelConfig){.dim = (int)v->dim,
                       .hidden_dim = v->hidden ? (int)v->hidden : default_hidden_dim((int)v->dim),
                       .n_layers = (int)v->layers,
                       .n_heads = (int)v->heads,
                       .n_kv_heads = v->kv_heads ? (int)v->kv_heads : (int)v->heads,
                       .vocab_size = (int)v->vocab,
                       .seq_len = (int)v->seq_len,
                       .shared_classifier = !v->separate_classifier,
                       .head_dim = (int)v->head_dim};
    if (model_arch_parse(v->arch, &m->arch) != 0) return nf_fail(err, NF_ERR_USAGE, "--arch %s is unknown", v->arch);
    bool qwen = m->arch != ARCH_LLAMA;
    m->qkv_bias = m->arch == ARCH_QWEN2;
    m->qk_norm = m->arch == ARCH_QWEN3;
    m->rope_theta = v->rope_theta ? (float)v->rope_theta : qwen ? 1e6f : 10000.0f;
    m->norm_eps = v->rms_norm_eps ? (float)v->rms_norm_eps : qwen ? 1e-6f : 1e-5f;
    if (m->vocab_size > 0 || !c->o.init) return 0;
    if (!c->o.tokenizer) {
        m->vocab_size = 32000; /* llama2's, as before there was a choice */
        return 0;
    }
    Tokenizer tok;
    if (tokenizer_load(&tok, c->o.tokenizer, err) != 0) return -1;
    m->vocab_size = tok.vocab_size;
    tokenizer_free(&tok);
    return 0;
}

/* The TrainOptions fields worked out from the flags' values. */
static int derive_options(TrainCommand *c, int argc, char **argv, NfError *err) {
    TrainOptions *o = &c->o;
    const TrainFlagValues *v = &c->v;
    if (!v->max_memory)
        o->max_memory = budget_default();
    else if (budget_parse_size(v->max_memory, "max-memory", &o->max_memory, err) != 0)
        return -1;
    o->use_lora = v->lora_rank > 0;
    if (o->use_lora) {
        o->lora.rank = (int)v->lora_rank;
        o->lora.alpha = flag_seen(c, "lora-alpha") ? (float)v->lora_alpha : (float)v->lora_rank; /* scale 1 */
        o->lora.dropout = (float)v->lora_dropout;
        if (lora_parse_targets(v->lora_targets, &o->lora.targets, err) != 0) return -1;
    }
    o->optim.schedule = strcmp(v->schedule, "constant") == 0 ? LR_CONSTANT
                        : strcmp(v->schedule, "linear") == 0 ? LR_LINEAR
                                                             : LR_COSINE;
    o->optim.total_steps = o->steps;
    o->tokenizer = model_tokenizer(o->model_path, o->tokenizer); /* else the model's own, remembered */
    if (init_config(c, err) != 0) return -1;
    o->bf16 = strcmp(v->dtype, "bf16") == 0;
    o->overlap = strcmp(v->overlap, "on") == 0 ? 1 : strcmp(v->overlap, "off") == 0 ? 0 : -1;
    /* checkpoints remember where the tokenizer is, wherever export runs */
    if (o->tokenizer && strcmp(o->tokenizer, TOKENIZER_BUILTIN_BYTES) != 0) {
        if (!(c->tokenizer_abs = realpath(o->tokenizer, NULL)))
            return nf_fail(err, NF_ERR_IO, "cannot open tokenizer '%s'", o->tokenizer);
        o->tokenizer = c->tokenizer_abs;
    }
    /* a launcher's ranks (--processes): the dashboard's check sizes each rank's share of the machine */
    o->world_size = v->processes > 1 ? (int)v->processes : 1;
    o->ranks_here = v->processes > 1 && !v->hostfile ? (int)v->processes : 1;
    json_init(&c->options);
    args_to_json(c->table.specs, TRAIN_OPTION_COUNT, &c->options, NULL);
    o->options_json = c->options.data;
    o->argc = argc;
    o->argv = argv;
    return 0;
}

static LaunchOptions launch_options(const TrainCommand *c) {
    return (LaunchOptions){.processes = (int)c->v.processes, .hostfile = c->v.hostfile, .threads = (int)c->v.threads};
}

/* Parses and checks train's command line into c; ARGS_OK, ARGS_HELP (help printed) or ARGS_ERROR.
 * mpi_size: the ranks mpirun started this process among, 0 when no launcher did. */
static int train_command_parse(TrainCommand *c, int argc, char **argv, int mpi_size, NfError *err) {
    memset(c, 0, sizeof *c);
    int parsed = read_flags(c, argc, argv, err);
    if (parsed != ARGS_OK) return parsed;
    LaunchOptions launch = launch_options(c);
    if (check_flag_combinations(c, err) != 0 || launch_check(&launch, mpi_size, err) != 0 ||
        derive_options(c, argc, argv, err) != 0)
        return ARGS_ERROR;
    return ARGS_OK;
}

/* What train_run would refuse about a fresh model's shape or the memory, refused before a child starts. */
static int check_before_start(TrainCommand *c, NfError *err) {
    const TrainOptions *o = &c->o;
    if (o->init) {
        if (config_validate(&o->init_config, err) != 0) return nf_prefix(err, NF_ERR_USAGE, "model shape: ");
        if (o->seq > o->init_config.seq_len)
            return nf_fail(err, NF_ERR_USAGE, "--seq %lld is longer than --seq-len %d", (long long)o->seq,
                           o->init_config.seq_len);
    }
    MemoryEstimate memory;
    return train_memory_check(&c->o, &memory, err); /* train_run checks again, as the child */
}

/* `train --options-json`: the option table as one train_options message, for the dashboard and the docs */
static int print_options(int argc, NfOut *out) {
    if (argc != 1) {
        NfError err;
        nf_fail(&err, NF_ERR_USAGE, "--options-json takes no other flags");
        return emit_error(out, &err);
    }
    JsonBuf j;
    msg_begin(&j, "train_options");
    train_options_json(&j, "options");
    msg_emit(out, &j);
    return 0;
}

/* Under mpirun: rank 0 writes the stream, the other ranks only their errors (protocol.h). */
static void join_ranks(Dist *dist, NfOut *out) {
    if (dist->size <= 1) return;
    out->rank = dist->rank;
    out->muted = dist->rank != 0;
}

int cmd_train(int argc, char **argv, NfOut *out) {
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--options-json") == 0) return print_options(argc, out);
    NfError err = {0};
    sigset_t stop;
    train_block_stop_signals(&stop); /* before MPI's threads: a stop signal must never reach one of them */
    Dist dist;
    if (dist_init(&dist, &err) != 0) return emit_error(out, &err);
    join_ranks(&dist, out);
    TrainCommand c;
    int parsed = train_command_parse(&c, argc, argv, dist.mpi ? dist.size : 0, &err);
    /* every rank parses the same words, but a --config or --tokenizer file may be missing on one host only */
    int status = dist_settle(&dist, out, parsed == ARGS_ERROR, &err);
    if (status == 0 && parsed == ARGS_OK && !dist.mpi && c.v.processes > 1) {
        LaunchOptions launch = launch_options(&c); /* no MPI here: dist_init found no launcher */
        status = launch_train(&launch, argc, argv, out);
    } else if (status == 0 && parsed == ARGS_OK) {
        nf_set_threads((int)c.v.threads);
        if (dist_watch(&dist, out, c.o.dist_timeout, &err) != 0)
            status = emit_error(out, &err);
        else
            status = train_run(&c.o, &dist, out);
    }
    train_command_free(&c);
    dist_finalize(&dist);
    return status;
}

int train_command_check(int argc, char **argv, NfError *err) {
    TrainCommand c;
    int parsed = train_command_parse(&c, argc, argv, 0, err); /* serve is no rank */
    int rc = parsed == ARGS_ERROR ? -1 : parsed == ARGS_OK ? check_before_start(&c, err) : 0;
    train_command_free(&c);
    return rc;
}
