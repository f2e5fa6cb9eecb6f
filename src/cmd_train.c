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
    const char *config_path = NULL, *schedule = "cosine", *dtype = "fp32", *max_memory = NULL;
    int64_t dim = 288, hidden = 0, layers = 6, heads = 6, kv_heads = 0, vocab = 32000, seq_len = 256;
    bool separate_classifier = false;
    int64_t lora_rank = 0, threads = 0;
    double lora_alpha = 0.0, lora_dropout = 0.0;
    const char *lora_targets = "wq,wk,wv,wo";
    o.val_every = 100;
    o.val_batches = 10;
    o.batch = 4;
    o.accum = 1;
    o.steps = 1000;
    o.seed = 1337;
    o.keep_last = 1;
    o.optim = (OptimizerOptions){.lr = 5e-4, .lr_min = 0.0, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                                 .weight_decay = 0.1, .grad_clip = 1.0};
    ArgSpec specs[] = {
        {"model", ARG_STRING, &o.model_path, .help = "start from this model file (fine-tuning)"},
        {"init", ARG_FLAG, &o.init, .help = "start from a fresh model with the --dim ... shape"},
        {"dim", ARG_INT, &dim, 2, NF_MAX_DIM, .help = "--init: model width (default 288)"},
        {"hidden-dim", ARG_INT, &hidden, 0, NF_MAX_HIDDEN, .help = "--init: FFN width (default from dim, as llama2.c)"},
        {"n-layers", ARG_INT, &layers, 1, NF_MAX_LAYERS, .help = "--init: layers (default 6)"},
        {"n-heads", ARG_INT, &heads, 1, NF_MAX_DIM, .help = "--init: query heads (default 6)"},
        {"n-kv-heads", ARG_INT, &kv_heads, 0, NF_MAX_DIM, .help = "--init: key/value heads (default n-heads)"},
        {"vocab-size", ARG_INT, &vocab, 1, 65536, .help = "--init: vocabulary (default 32000)"},
        {"seq-len", ARG_INT, &seq_len, 1, NF_MAX_SEQ_LEN, .help = "--init: context length (default 256)"},
        {"separate-classifier", ARG_FLAG, &separate_classifier, .help = "--init: untied output weights"},
        {"lora-rank", ARG_INT, &lora_rank, 0, LORA_MAX_RANK, .help = "LoRA: adapters of rank r on --model, frozen (0 = full fine-tuning)"},
        {"lora-alpha", ARG_FLOAT, &lora_alpha, 1e-6, 1e6, .help = "LoRA: scale alpha/r (default alpha = r)"},
        {"lora-dropout", ARG_FLOAT, &lora_dropout, 0, 0.9, .help = "LoRA: dropout on the adapter inputs (default 0)"},
        {"lora-targets", ARG_STRING, &lora_targets, .help = "LoRA: wq,wk,wv,wo,w1,w2,w3 (or q,k,v,o,gate,down,up, or a bit mask; default wq,wk,wv,wo)"},
        {"lora-train-norms", ARG_FLAG, &o.lora.train_norms, .help = "LoRA: train the RMSNorm weights too"},
        {"data", ARG_LIST, &o.data, .help = "token file or directory of them (repeatable; required)"},
        {"val-data", ARG_STRING, &o.val_data, .help = "validation token file or directory of them"},
        {"val-split", ARG_FLOAT, &o.val_split, 0, 0.9, .help = "hold out this last fraction for validation"},
        {"val-every", ARG_INT, &o.val_every, 0, 1e9, .help = "validate every N steps (default 100; 0 = never)"},
        {"val-batches", ARG_INT, &o.val_batches, 1, 1e6, .help = "batches per validation (default 10)"},
        {"shuffle", ARG_FLAG, &o.shuffle, .help = "epochs of shuffled windows instead of random windows"},
        {"batch", ARG_INT, &o.batch, 1, 4096, .help = "sequences per micro-batch (default 4)"},
        {"seq", ARG_INT, &o.seq, 0, NF_MAX_SEQ_LEN, .help = "tokens per sequence (default: the model's seq_len)"},
        {"accum", ARG_INT, &o.accum, 1, 65536, .help = "micro-batches per optimizer step (default 1)"},
        {"steps", ARG_INT, &o.steps, 1, 1e9, .help = "optimizer steps in the whole run (default 1000)"},
        {"seed", ARG_INT, &o.seed, 0, 9007199254740991.0, .help = "seed for init and data (default 1337)"},
        {"lr", ARG_FLOAT, &o.optim.lr, 1e-12, 10, .help = "peak learning rate (default 5e-4)"},
        {"lr-min", ARG_FLOAT, &o.optim.lr_min, 0, 10, .help = "final learning rate of the decay (default 0)"},
        {"lr-schedule", ARG_CHOICE, &schedule, .choices = "constant|cosine|linear", .help = "after warmup (default cosine)"},
        {"warmup", ARG_INT, &o.optim.warmup, 0, 1e9, .help = "linear warmup steps (default 0)"},
        {"beta1", ARG_FLOAT, &o.optim.beta1, 0, 0.999999, .help = "AdamW beta1 (default 0.9)"},
        {"beta2", ARG_FLOAT, &o.optim.beta2, 0, 0.999999, .help = "AdamW beta2 (default 0.95)"},
        {"eps", ARG_FLOAT, &o.optim.eps, 1e-30, 1, .help = "AdamW epsilon (default 1e-8)"},
        {"weight-decay", ARG_FLOAT, &o.optim.weight_decay, 0, 10, .help = "decoupled, not on norms (default 0.1)"},
        {"grad-clip", ARG_FLOAT, &o.optim.grad_clip, 0, 1e6, .help = "max global gradient norm (default 1; 0 = off)"},
        {"ckpt", ARG_STRING, &o.ckpt, .help = "checkpoint file to write (and --resume from)"},
        {"ckpt-every", ARG_INT, &o.ckpt_every, 0, 1e9, .help = "also checkpoint every N steps (default: at the end)"},
        {"ckpt-minutes", ARG_FLOAT, &o.ckpt_minutes, 0, 1e6, .help = "also checkpoint when N minutes (a fraction too) have passed since the last one (default 0 = off)"},
        {"keep-last", ARG_INT, &o.keep_last, 1, 1000, .help = "keep the N newest checkpoints as PATH.step-N (default 1)"},
        {"resume", ARG_FLAG, &o.resume, .help = "continue exactly from --ckpt"},
        {"restart-every", ARG_INT, &o.restart_every, 0, 1e9, .help = "checkpoint and re-execute itself every N steps"},
        {"config", ARG_STRING, &config_path, .help = "JSON file of flag names and values (flags win)"},
        {"dtype", ARG_CHOICE, &dtype, .choices = "fp32|bf16", .help = "precision of the weight products (default fp32; bf16 keeps fp32 weights and AdamW state)"},
        {"threads", ARG_INT, &threads, 0, 4096, .help = "threads (default 0 = one per core, or OMP_NUM_THREADS)"},
        {"max-memory", ARG_STRING, &max_memory, .help = "refuse a run estimated to need more memory than SIZE (8G, 512M; none = no limit; default 80% of the machine's)"},
        {"tokenizer", ARG_STRING, &o.tokenizer, .help = "the tokenizer the data was made with: checked against the vocabulary, remembered for export --format gguf"},
    };
    int n_specs = (int)(sizeof specs / sizeof specs[0]);
    NfError err = {0};
    JsonValue config = {0};
    int status = 0;
    int parsed = args_parse_command("train", "Trains a model (from scratch, or fine-tuning a model file).", specs,
                                    n_specs, argc, argv, &err);
    if (parsed == ARGS_HELP) return 0;
    if (parsed == ARGS_ERROR) goto fail;
    if (config_path) {
        MappedFile f;
        if (mapped_file_open(&f, config_path, "config", &err) != 0) goto fail;
        int rc = json_parse((const char *)f.data, f.size, &config, &err);
        mapped_file_close(&f);
        if (rc != 0) {
            char why[sizeof err.message];
            memcpy(why, err.message, sizeof why);
            nf_fail(&err, NF_ERR_USAGE, "--config '%s': %s", config_path, why);
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
            char why[sizeof err.message];
            memcpy(why, err.message, sizeof why);
            nf_fail(&err, NF_ERR_USAGE, "model shape: %s", why);
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

int cmd_train(int argc, char **argv, NfOut *out) { return train_command(argc, argv, out, false, NULL); }

int train_command_check(int argc, char **argv, NfError *err) { return train_command(argc, argv, NULL, true, err); }
