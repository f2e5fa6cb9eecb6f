/* cmd_train.c — `neuralforge train`: the flags of a training run, checked
 * and gathered into TrainOptions (train.c runs it). --config FILE.json sets
 * any flag by name; flags on the command line win. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "backend.h"
#include "budget.h"
#include "commands.h"
#include "fileio.h"
#include "json_parse.h"
#include "tokenizer.h"
#include "train.h"
#include "train_options.h"

/* llama2.c's default SwiGLU width: 2/3 of 4*dim, rounded up to a multiple of 32 */
static int default_hidden_dim(int dim) {
    int hidden = 2 * 4 * dim / 3;
    return 32 * ((hidden + 31) / 32);
}

/* Parses and checks train's command line; runs it unless check_only (then
 * the verdict goes to *check_err: the dashboard checks a run's command line
 * with this same code before it starts one). */
static int train_command(int argc, char **argv, NfOut *out, bool check_only, NfError *check_err) {
    TrainOptions o = {0};
    /* the flags' variables; the table (train_options.c) gives each its default */
    const char *config_path, *schedule, *dtype, *max_memory, *lora_targets;
    int64_t dim, hidden, layers, heads, kv_heads, vocab, seq_len, lora_rank, threads;
    bool separate_classifier;
    double lora_alpha, lora_dropout;
    void *const dest[TRAIN_OPTION_COUNT] = {
        [TO_MODEL] = &o.model_path, [TO_INIT] = &o.init, [TO_DIM] = &dim, [TO_HIDDEN_DIM] = &hidden,
        [TO_N_LAYERS] = &layers, [TO_N_HEADS] = &heads, [TO_N_KV_HEADS] = &kv_heads, [TO_VOCAB_SIZE] = &vocab,
        [TO_SEQ_LEN] = &seq_len, [TO_SEPARATE_CLASSIFIER] = &separate_classifier, [TO_LORA_RANK] = &lora_rank,
        [TO_LORA_ALPHA] = &lora_alpha, [TO_LORA_DROPOUT] = &lora_dropout, [TO_LORA_TARGETS] = &lora_targets,
        [TO_LORA_TRAIN_NORMS] = &o.lora.train_norms, [TO_DATA] = &o.data, [TO_VAL_DATA] = &o.val_data,
        [TO_VAL_SPLIT] = &o.val_split, [TO_VAL_EVERY] = &o.val_every, [TO_VAL_BATCHES] = &o.val_batches,
        [TO_SHUFFLE] = &o.shuffle, [TO_BATCH] = &o.batch, [TO_SEQ] = &o.seq, [TO_ACCUM] = &o.accum,
        [TO_STEPS] = &o.steps, [TO_SEED] = &o.seed, [TO_LR] = &o.optim.lr, [TO_LR_MIN] = &o.optim.lr_min,
        [TO_LR_SCHEDULE] = &schedule, [TO_WARMUP] = &o.optim.warmup, [TO_BETA1] = &o.optim.beta1,
        [TO_BETA2] = &o.optim.beta2, [TO_EPS] = &o.optim.eps, [TO_WEIGHT_DECAY] = &o.optim.weight_decay,
        [TO_GRAD_CLIP] = &o.optim.grad_clip, [TO_CKPT] = &o.ckpt, [TO_CKPT_EVERY] = &o.ckpt_every,
        [TO_CKPT_MINUTES] = &o.ckpt_minutes, [TO_KEEP_LAST] = &o.keep_last, [TO_RESUME] = &o.resume,
        [TO_RESTART_EVERY] = &o.restart_every, [TO_CONFIG] = &config_path, [TO_DTYPE] = &dtype,
        [TO_THREADS] = &threads, [TO_MAX_MEMORY] = &max_memory, [TO_TOKENIZER] = &o.tokenizer,
    };
    TrainFlagTable table;
    ArgSpec *specs = table.specs;
    int n_specs = TRAIN_OPTION_COUNT;
    NfError err = {0};
    JsonValue config = {0};
    int status = 0;
    if (train_flags_build(&table, dest, &err) != 0) goto fail;
    int parsed = args_parse_command("train",
                                    "Trains a model (from scratch, or fine-tuning a model file). "
                                    "`train --options-json` prints these\nflags as JSON (docs/protocol.md, "
                                    "train_options).",
                                    specs, n_specs, argc, argv, &err);
    if (parsed == ARGS_HELP) return 0;
    if (parsed == ARGS_ERROR) goto fail;
    if (config_path) {
        MappedFile f;
        if (mapped_file_open(&f, config_path, "config", &err) != 0) goto fail;
        int rc = json_parse((const char *)f.data, f.size, &config, &err);
        mapped_file_close(&f);
        if (rc != 0) {
            nf_prefix(&err, NF_ERR_USAGE, "--config '%s': ", config_path);
            goto fail;
        }
        if (args_apply_json(specs, n_specs, &config, &err) != 0) goto fail;
    }
    if (o.data.n == 0) {
        nf_fail(&err, NF_ERR_USAGE, "train needs --data (a token file or a directory of them)");
        goto fail;
    }
    if (!o.resume && !o.model_path && !o.init) {
        nf_fail(&err, NF_ERR_USAGE, "train needs --model (fine-tune), --init (from scratch) or --resume");
        goto fail;
    }
    if (o.model_path && o.init) {
        nf_fail(&err, NF_ERR_USAGE, "--model and --init exclude each other");
        goto fail;
    }
    if ((o.resume || o.restart_every > 0) && !o.ckpt) {
        nf_fail(&err, NF_ERR_USAGE, "--%s needs --ckpt", o.resume ? "resume" : "restart-every");
        goto fail;
    }
    if (!o.ckpt && (o.ckpt_every > 0 || o.ckpt_minutes > 0 || o.keep_last > 1)) {
        nf_fail(&err, NF_ERR_USAGE, "--%s needs --ckpt (the checkpoint path)",
                o.ckpt_every > 0 ? "ckpt-every" : o.ckpt_minutes > 0 ? "ckpt-minutes" : "keep-last");
        goto fail;
    }
    if (!max_memory) o.max_memory = budget_default();
    else if (budget_parse_size(max_memory, "max-memory", &o.max_memory, &err) != 0) goto fail;
    o.use_lora = lora_rank > 0;
    if (!o.use_lora) {
        /* a LoRA setting that would change something, without LoRA, is a mistake worth naming */
        const char *stray = args_seen(specs, n_specs, "lora-alpha")     ? "lora-alpha"
                            : args_seen(specs, n_specs, "lora-targets") ? "lora-targets"
                            : lora_dropout > 0                          ? "lora-dropout"
                            : o.lora.train_norms                        ? "lora-train-norms"
                                                                        : NULL;
        if (stray) {
            nf_fail(&err, NF_ERR_USAGE, "--%s needs --lora-rank", stray);
            goto fail;
        }
    } else {
        if (!o.model_path) {
            nf_fail(&err, NF_ERR_USAGE, "--lora-rank trains adapters on a pretrained model: give --model");
            goto fail;
        }
        if (!args_seen(specs, n_specs, "lora-alpha")) lora_alpha = (double)lora_rank; /* scale 1 */
        o.lora.rank = (int)lora_rank;
        o.lora.alpha = (float)lora_alpha;
        o.lora.dropout = (float)lora_dropout;
        if (lora_parse_targets(lora_targets, &o.lora.targets, &err) != 0) goto fail;
    }
    if (o.val_data && o.val_split > 0) {
        nf_fail(&err, NF_ERR_USAGE, "--val-data and --val-split exclude each other");
        goto fail;
    }
    o.optim.schedule = strcmp(schedule, "constant") == 0 ? LR_CONSTANT : strcmp(schedule, "linear") == 0 ? LR_LINEAR : LR_COSINE;
    o.optim.total_steps = o.steps;
    if (o.optim.lr_min > o.optim.lr) {
        nf_fail(&err, NF_ERR_USAGE, "--lr-min %g is above --lr %g", o.optim.lr_min, o.optim.lr);
        goto fail;
    }
    o.init_config = (ModelConfig){(int)dim, hidden ? (int)hidden : default_hidden_dim((int)dim), (int)layers,
                                  (int)heads, kv_heads ? (int)kv_heads : (int)heads, (int)vocab, (int)seq_len,
                                  !separate_classifier};
    char *tokenizer_abs = NULL; /* checkpoints remember where the tokenizer is, wherever export runs */
    if (o.tokenizer && strcmp(o.tokenizer, TOKENIZER_BUILTIN_BYTES) != 0) {
        if (!(tokenizer_abs = realpath(o.tokenizer, NULL))) {
            nf_fail(&err, NF_ERR_IO, "cannot open tokenizer '%s'", o.tokenizer);
            goto fail;
        }
        o.tokenizer = tokenizer_abs;
    }
    JsonBuf options;
    json_init(&options);
    args_to_json(specs, n_specs, &options, NULL);
    o.options_json = options.data;
    o.argc = argc;
    o.argv = argv;
    if (!check_only) nf_set_threads((int)threads);
    o.bf16 = strcmp(dtype, "bf16") == 0;
    if (check_only && o.init) { /* what train_run would refuse about a fresh model's shape, refused now */
        if (config_validate(&o.init_config, &err) != 0) {
            nf_prefix(&err, NF_ERR_USAGE, "model shape: ");
            json_free(&options);
            free(tokenizer_abs);
            goto fail;
        }
        if (o.seq > o.init_config.seq_len) {
            nf_fail(&err, NF_ERR_USAGE, "--seq %lld is longer than --seq-len %d", (long long)o.seq, o.init_config.seq_len);
            json_free(&options);
            free(tokenizer_abs);
            goto fail;
        }
    }
    MemoryEstimate memory;
    if (check_only && train_memory_check(&o, &memory, &err) != 0) { /* train_run checks again, as the child */
        json_free(&options);
        free(tokenizer_abs);
        goto fail;
    }
    status = check_only ? 0 : train_run(&o, out);
    free(tokenizer_abs);
    json_free(&options);
    json_value_free(&config);
    return status;
fail:
    json_value_free(&config);
    if (check_only) {
        *check_err = err;
        return -1;
    }
    return emit_error(out, &err);
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

int cmd_train(int argc, char **argv, NfOut *out) {
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--options-json") == 0) return print_options(argc, out);
    return train_command(argc, argv, out, false, NULL);
}

int train_command_check(int argc, char **argv, NfError *err) { return train_command(argc, argv, NULL, true, err); }
