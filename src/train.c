/* train.c — the training loop.
 *
 *   setup:   model (file | init | checkpoint), data, buffers, sampler  -> `init`
 *   step:    accum x (sample batch, forward, backward)                 -> `batch` each
 *            clip, AdamW                                               -> `step`
 *            every --val-every: validation                             -> `val`
 *            every --ckpt-every steps or --ckpt-minutes: checkpoint    -> `checkpoint`
 *            SIGINT/SIGTERM, or stdout closed: checkpoint and stop     -> `done` (interrupted)
 *            (the signals are blocked and taken at step ends: no handler)
 *            every --restart-every: checkpoint and re-exec itself      -> `restart`
 *   end:                                                               -> `done`
 *
 * Under mpirun (dist.h) every rank runs this loop on the same data order:
 * a step's accum x N micro-batches are drawn by every rank's sampler, and
 * rank r computes the r-th accum of them, so N ranks with --accum A train
 * exactly as one process with --accum N*A. The gradients (and the loss and
 * target counts) are summed over the ranks, and every rank makes the same
 * AdamW step (--zero 1: each its shard of it, then the weights gathered).
 * Validation batches are dealt out among the ranks and their sums added.
 * Rank 0 alone writes the stream and the checkpoints; decisions made at a
 * step's end (stop on a signal, a checkpoint due by the clock) are agreed
 * by every rank, and a failure anywhere reaches every rank (dist_settle). */
#define _XOPEN_SOURCE 700 /* realpath */
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "budget.h"
#include "checkpoint.h"
#include "data.h"
#include "grad_sync.h"
#include "json_parse.h"
#include "model_open.h"
#include "params.h"
#include "rng.h"
#include "tokenizer.h"
#include "train_model.h"
#include "util.h"

/* SIGINT and SIGTERM ask the run to stop at the end of a step. They are
 * blocked first thing, so in every thread created later too (OpenMP's), and
 * taken at step ends by stop_signal: no handler ever interrupts a kernel.
 * (One did: a SIGINT landing inside oneDNN's sgemm now and then corrupted
 * its heap, seen as "corrupted size vs. prev_size" aborts of dashboard runs
 * whose server died.) A signal during setup waits for the first step's end.
 * SIGPIPE is ignored: a write to a stdout nobody reads fails with EPIPE,
 * which msg_emit notices (out->closed), and the run stops as on SIGINT. */
void train_block_stop_signals(sigset_t *stop) {
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(stop);
    sigaddset(stop, SIGINT);
    sigaddset(stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, stop, NULL);
}

/* The stop signal pending, taken (0 if none); never waits. */
static int stop_signal(const sigset_t *stop) {
    static const struct timespec now = {0, 0};
    int sig = sigtimedwait(stop, NULL, &now);
    return sig > 0 ? sig : 0;
}

typedef struct {
    const TrainOptions *o;
    NfOut *out;
    Dist *dist;        /* the ranks of this run (one, without mpirun) */
    DistShards shards; /* --zero 1: this rank's part [lo, hi) of params, the part its adam_m / adam_v hold */
    GradSync *sync;    /* --overlap on several ranks: the gradients summed during backward; else NULL */
    ModelConfig config;
    size_t n_params;                         /* trainable floats: the whole model, or the LoRA adapters */
    float *params, *grads, *adam_m, *adam_v; /* (n_params) each; --zero 1: adam_m, adam_v (shard) */
    Model base_model;                        /* LoRA: the base model file, mapped */
    float *base_copy;       /* LoRA: its weights in fp32 when the file's cannot be used in place (Q8) */
    ParamPointers base;     /* LoRA: the frozen base weights, in the mapping, in base_copy or in frozen */
    FrozenBase frozen;      /* LoRA under --dtype bf16: the base held in bf16 (base then has its small pieces) */
    uint64_t base_checksum; /* LoRA: identifies the base model file */
    char *base_path;        /* LoRA: the base model file's absolute path, as checkpoints name it */
    Lora lora;              /* LoRA: the adapters, pointing into params */
    Net net;                /* what forward and backward run on */
    NetGrads g;             /* where backward accumulates (NULL = frozen) */
    ParamSegment seg[LORA_SEGMENTS_MAX > PARAM_SEGMENTS_MAX ? LORA_SEGMENTS_MAX : PARAM_SEGMENTS_MAX];
    int n_seg;
    TokenData data;
    BatchSampler sampler;
    Activations acts;
    int *tokens, *targets; /* (B, T) */
    uint16_t *params_bf16; /* --dtype bf16: params rounded, kept by acts (NULL otherwise) */
    int64_t step;          /* optimizer steps completed */
    int64_t tokens_seen;
    double last_loss, best_val_loss;
    /* milliseconds of setup_run's parts, for `init`'s setup_ms: the weights read (model file, checkpoint or LoRA
     * base with its checksum, which base_checksum_ms also gives alone), the training state allocated
     * (alloc_state), the data opened, the activations */
    double weights_ms, base_checksum_ms, state_ms, data_ms, activations_ms;
} Trainer;

/* Tokens a step trains on: every rank's micro-batches (batch x seq x accum x world size). */
static int64_t step_tokens(const Trainer *t) { return t->o->batch * t->o->seq * t->o->accum * t->dist->size; }

/* The part of the AdamW state this rank holds: all of it, or under --zero 1 its shard. */
static int alloc_shards(Trainer *t, NfError *err) {
    if (t->o->zero) return dist_shards(t->dist, t->n_params, &t->shards, err);
    t->shards = (DistShards){.lo = 0, .hi = t->n_params};
    return 0;
}

/* --zero 1 on --resume: the checkpoint's whole AdamW state (n_params) cut down to this rank's shard. */
static void keep_shard(float **state, const DistShards *s) {
    memmove(*state, *state + s->lo, (s->hi - s->lo) * sizeof **state);
    float *smaller = realloc(*state, (s->hi - s->lo > 0 ? s->hi - s->lo : 1) * sizeof **state);
    if (smaller) *state = smaller;
}

static int alloc_buffers(Trainer *t, NfError *err) {
    const ModelConfig *c = &t->config;
    const LoraConfig *lc = &t->o->lora;
    t->n_params = (size_t)(t->o->use_lora ? lora_param_count(c, lc) : config_param_count(c));
    if (alloc_shards(t, err) != 0) return -1;
    size_t part = t->shards.hi - t->shards.lo;
    if (!t->params && !(t->params = nf_alloc_array(t->n_params, sizeof(float), err))) return -1;
    if (!t->adam_m && !(t->adam_m = nf_alloc_array(part, sizeof(float), err))) return -1;
    if (!t->adam_v && !(t->adam_v = nf_alloc_array(part, sizeof(float), err))) return -1;
    /* not zeroed: a step's first backward writes every gradient (NF_SET), and train_step zeroes them when no
     * backward ran; their pages are faulted in by that first write, not here as well */
    return (t->grads = nf_alloc_array_unzeroed(t->n_params, sizeof(float), err)) ? 0 : -1;
}

/* The gradients and the AdamW state (and the weights, where the caller has none yet), the network's pointers
 * into them. */
static int alloc_state(Trainer *t, NfError *err) {
    const ModelConfig *c = &t->config;
    const LoraConfig *lc = &t->o->lora;
    double start = nf_now_ms();
    int rc = alloc_buffers(t, err);
    t->state_ms += nf_now_ms() - start;
    if (rc != 0) return -1;
    if (!t->o->use_lora) {
        net_full(&t->net, &t->g, c, t->params, t->grads);
        t->n_seg = param_segments(c, t->seg);
        return 0;
    }
    t->lora.config = *lc;
    lora_pointers(&t->lora.w, t->params, c, lc);
    net_lora(&t->net, &t->g, c, &t->base, &t->lora, t->grads);
    t->net.bf16 = t->frozen.bits ? &t->frozen.w : NULL;
    t->n_seg = lora_segments(c, lc, t->seg);
    return 0;
}

/* LoRA: the frozen base from --model, used in place where the file allows (it
 * is never written), and the checksum that ties adapters to it. Under
 * --dtype bf16 the base is held in bf16 only (its products read nothing
 * else): the fp32 weights go as soon as they are converted. */
static int load_base(Trainer *t, NfError *err) {
    const TrainOptions *o = t->o;
    /* the checksum first: the files it reads are out of memory again before the weights come in */
    double start = nf_now_ms();
    if (model_file_checksum(o->model_path, &t->base_checksum, err) != 0) return -1;
    t->base_checksum_ms = nf_now_ms() - start;
    if (model_open(&t->base_model, o->model_path, err) != 0) return -1;
    t->config = t->base_model.config;
    if (param_view_of_model(&t->base, &t->base_model) != 0) {
        if (!(t->base_copy = nf_alloc_array_unzeroed((size_t)config_param_count(&t->config), sizeof(float), err)))
            return -1;
        params_from_model(t->base_copy, &t->base_model);
        param_pointers(&t->base, t->base_copy, &t->config);
        model_free(&t->base_model);
    }
    if (o->bf16) {
        /* the fp32 weights (an imported buffer, a dequantized copy or a file's mapping) are dropped next, so
         * they go page by page as they are converted: the peak stays that of the fp32 weights alone */
        if (frozen_base_bf16(&t->frozen, &t->config, &t->base, true, err) != 0) return -1;
        model_free(&t->base_model);
        free(t->base_copy);
        t->base_copy = NULL;
        t->base = t->frozen.p;
    }
    if (lora_config_validate(&o->lora, &t->config, err) != 0) return -1;
    /* the canonical path, so a checkpoint names its base wherever it is read from */
    if (!(t->base_path = realpath(o->model_path, NULL)))
        return nf_fail(err, NF_ERR_IO, "cannot resolve the path of '%s'", o->model_path);
    return 0;
}

static bool lora_layout_equal(const LoraConfig *a, const LoraConfig *b) {
    return a->rank == b->rank && a->targets == b->targets && a->train_norms == b->train_norms;
}

/* Chooses the model: the checkpoint on --resume, else a model file, else a fresh init. */
static int setup_model(Trainer *t, Checkpoint *ck, NfError *err) {
    const TrainOptions *o = t->o;
    if (o->resume) {
        if (checkpoint_load(o->ckpt, ck, true, err) != 0) return -1;
        if (ck->is_lora != o->use_lora)
            return nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' is %s, but this run %s", o->ckpt,
                           ck->is_lora ? "a LoRA checkpoint" : "a full checkpoint",
                           o->use_lora ? "trains LoRA adapters (--lora-rank)" : "has no --lora-rank");
        if (o->use_lora) {
            if (!lora_layout_equal(&ck->lora, &o->lora))
                return nf_fail(err, NF_ERR_CHECKPOINT,
                               "checkpoint '%s' holds rank-%d adapters on other targets or norms than this run's "
                               "--lora flags",
                               o->ckpt, ck->lora.rank);
            if (load_base(t, err) != 0 ||
                checkpoint_base_matches(ck, o->ckpt, o->model_path, t->base_checksum, &t->config, err) != 0)
                return -1;
        }
        t->config = ck->config;
        if (o->model_path && !o->use_lora) {
            ModelConfig base;
            if (model_peek_config(o->model_path, &base, err) != 0) return -1;
            if (!config_equal(&base, &ck->config))
                return nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' does not fit model '%s' (different config)",
                               o->ckpt, o->model_path);
        }
        if (o->init && !config_equal(&o->init_config, &ck->config))
            return nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' does not fit the --init config", o->ckpt);
        t->params = ck->params;
        t->adam_m = ck->adam_m;
        t->adam_v = ck->adam_v;
        ck->params = ck->adam_m = ck->adam_v = NULL; /* the trainer owns them now */
        t->step = ck->step;
        t->tokens_seen = ck->tokens_seen;
        t->best_val_loss = ck->best_val_loss;
        t->last_loss = ck->last_loss;
        if (alloc_state(t, err) != 0) return -1;
        if (o->zero) {
            keep_shard(&t->adam_m, &t->shards);
            keep_shard(&t->adam_v, &t->shards);
        }
        return 0;
    }
    if (o->use_lora) {
        if (load_base(t, err) != 0 || alloc_state(t, err) != 0) return -1;
        lora_init(t->params, &t->config, &o->lora, &t->base, (uint64_t)o->seed);
        return 0;
    }
    if (o->model_path) {
        Model m;
        if (model_open(&m, o->model_path, err) != 0) return -1;
        t->config = m.config;
        /* the weights are copied in whole next: zeroing them first would write 4 bytes a weight for nothing */
        if (!(t->params = nf_alloc_array_unzeroed((size_t)config_param_count(&m.config), sizeof(float), err)) ||
            alloc_state(t, err) != 0) {
            model_free(&m);
            return -1;
        }
        params_from_model(t->params, &m);
        model_free(&m);
        return 0;
    }
    t->config = o->init_config;
    if (config_validate(&t->config, err) != 0) {
        return nf_prefix(err, NF_ERR_USAGE, "--init config: ");
    }
    if (alloc_state(t, err) != 0) return -1;
    params_init(t->params, &t->config, (uint64_t)o->seed);
    return 0;
}

/* Writes "changed_flags": the flags of this resumed run whose values differ
 * from those stored in the checkpoint. They apply (the command line rules);
 * they are reported because an exact continuation needs the same flags. */
static void json_changed_flags(JsonBuf *j, const char *stored_json, const char *current_json) {
    JsonValue stored = {0}, current = {0};
    NfError ignored;
    json_array_begin(j, "changed_flags");
    if (json_parse(stored_json, strlen(stored_json), &stored, &ignored) == 0 &&
        json_parse(current_json, strlen(current_json), &current, &ignored) == 0 && current.type == JV_OBJECT) {
        for (int i = 0; i < current.n; i++) {
            const char *name = current.keys[i];
            /* --max-memory only decides whether the run may start */
            if (strcmp(name, "resume") == 0 || strcmp(name, "config") == 0 || strcmp(name, "max-memory") == 0) continue;
            const JsonValue *was = json_get(&stored, name);
            if (!was || !json_value_equal(was, &current.items[i])) {
                json_str(j, NULL, name);
                nf_log("resuming with --%s different from the checkpoint's run", name);
            }
        }
    }
    json_array_end(j);
    json_value_free(&stored);
    json_value_free(&current);
}

static void emit_init(Trainer *t, const char *stored_options) {
    const TrainOptions *o = t->o;
    const LoraConfig *lc = o->use_lora ? &o->lora : NULL;
    JsonBuf j;
    msg_begin(&j, "init");
    json_model_config(&j, "config", &t->config);
    json_int(&j, "params", (int64_t)t->n_params);
    json_int(&j, "frozen_params", lc ? (int64_t)config_param_count(&t->config) : 0);
    json_str(&j, "source", o->resume ? "checkpoint" : o->model_path ? "model" : "init");
    json_int(&j, "resume_step", t->step);
    json_int(&j, "pid", (int64_t)getpid());
    json_int(&j, "world_size", t->dist->size);
    if (t->dist->size > 1) {
        json_array_begin(&j, "rank_pids");
        for (int r = 0; r < t->dist->size; r++) json_int(&j, NULL, t->dist->peer_pid[r]);
        json_array_end(&j);
    }
    json_int(&j, "zero", o->zero);
    json_bool(&j, "overlap", t->sync != NULL);
    json_int(&j, "total_steps", o->steps);
    json_int(&j, "batch", o->batch);
    json_int(&j, "seq", o->seq);
    json_int(&j, "accum", o->accum);
    json_int(&j, "tokens_per_step", step_tokens(t));
    json_str(&j, "dtype", o->bf16 ? "bf16" : "fp32");
    json_int(&j, "train_tokens", (int64_t)t->data.train_tokens);
    json_int(&j, "val_tokens", (int64_t)t->data.val_tokens);
    json_int(&j, "activation_bytes", (int64_t)activations_bytes(&t->config, lc, (int)o->batch, (int)o->seq));
    MemoryEstimate memory;
    memory_estimate(&t->config, lc, (int)o->batch, (int)o->seq, o->bf16, &memory);
    memory_estimate_ranks(&memory, o);
    json_int(&j, "memory_bytes", (int64_t)memory.total);
    json_int(&j, "max_memory", (int64_t)o->max_memory);
    json_object_begin(&j, "setup_ms");
    json_number(&j, "weights", t->weights_ms);
    if (lc) json_number(&j, "base_checksum", t->base_checksum_ms);
    json_number(&j, "state", t->state_ms);
    json_number(&j, "data", t->data_ms);
    json_number(&j, "activations", t->activations_ms);
    json_object_end(&j);
    if (o->resume) json_changed_flags(&j, stored_options ? stored_options : "{}", o->options_json);
    msg_emit(t->out, &j);
    if (!lc) return;
    msg_begin(&j, "info");
    json_str(&j, "key", "lora");
    json_object_begin(&j, "value");
    json_lora_fields(&j, lc, (int64_t)t->n_params);
    json_object_end(&j);
    msg_emit(t->out, &j);
}

/* The validation loss: the mean of the batches' means, or with masked
 * data the mean over every target the batches count (NaN when none does).
 * Batch k is rank k mod N's; the sums are added over the ranks. */
static int validate(Trainer *t, double *loss, NfError *err) {
    const TrainOptions *o = t->o;
    int N = (int)(o->batch * o->seq);
    double sums[3] = {0.0, 0.0, 0.0}; /* the batches' means, the means weighted by their counts, the counts */
    for (int k = t->dist->rank; k < o->val_batches; k += t->dist->size) {
        fixed_batch(t->data.val, t->data.n_val, k, (int)o->val_batches, (int)o->batch, (int)o->seq, t->tokens,
                    t->targets);
        int c = t->data.val_masked ? model_counted_targets(t->targets, N) : N;
        if (c == 0) continue;
        double mean = model_forward(&t->net, &t->acts, t->tokens, t->targets, 0.0f, 0);
        sums[0] += mean;
        sums[1] += mean * c;
        sums[2] += c;
    }
    if (dist_sum_doubles(t->dist, sums, 3, "the validation losses", err) != 0) return -1;
    if (!t->data.val_masked)
        *loss = sums[0] / (double)o->val_batches;
    else
        *loss = sums[2] > 0 ? sums[1] / sums[2] : NAN;
    return 0;
}

static int compare_steps_descending(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x < y) - (x > y);
}

/* Removes stamped checkpoints of this path beyond the newest keep_last up to
 * step `current` (the one just written), whatever run or --ckpt-every wrote
 * them: the directory is the record. Only names this code writes count
 * (PATH.step- and the step as %09lld); files of later steps, left by a run
 * this one resumed before, are not this run's to judge and stay. */
static void prune_stamped(const char *path, int64_t current, int64_t keep_last) {
    char dir_path[4096], prefix[4096];
    const char *slash = strrchr(path, '/');
    if (slash) {
        snprintf(dir_path, sizeof dir_path, "%.*s", (int)(slash - path + 1), path);
        snprintf(prefix, sizeof prefix, "%s.step-", slash + 1);
    } else {
        snprintf(dir_path, sizeof dir_path, ".");
        snprintf(prefix, sizeof prefix, "%s.step-", path);
    }
    DIR *dir = opendir(dir_path);
    if (!dir) return;
    long long *steps = NULL;
    size_t n = 0, cap = 0, plen = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0) continue;
        const char *digits = e->d_name + plen;
        size_t len = strlen(digits);
        if (len < 9 || len > 18 || strspn(digits, "0123456789") != len) continue;
        long long step = strtoll(digits, NULL, 10);
        char canonical[32];
        snprintf(canonical, sizeof canonical, "%09lld", step);
        if (strcmp(canonical, digits) != 0 || step > current) continue;
        if (!nf_grow((void **)&steps, &cap, n + 1, sizeof *steps, 64)) break;
        steps[n++] = step;
    }
    closedir(dir);
    if (n > 0) qsort(steps, n, sizeof *steps, compare_steps_descending);
    char name[4200];
    for (size_t i = (size_t)keep_last; i < n; i++) {
        snprintf(name, sizeof name, "%s.step-%09lld", path, steps[i]);
        unlink(name);
    }
    free(steps);
}

/* Rank 0's part of save_checkpoint: the file (with the AdamW state m, v, whole), and the `checkpoint` message. */
static int write_checkpoint(Trainer *t, float *adam_m, float *adam_v, NfError *err) {
    const TrainOptions *o = t->o;
    Checkpoint ck = {
        .config = t->config,
        .step = t->step,
        .tokens_seen = t->tokens_seen,
        .data_rng_state = t->sampler.rng.state,
        .data_epoch = t->sampler.epoch,
        .data_position = t->sampler.position,
        .best_val_loss = t->best_val_loss,
        .last_loss = t->last_loss,
        .options_json = o->options_json,
        .n_params = t->n_params,
        .is_lora = o->use_lora,
        .lora = o->lora,
        .base_checksum = t->base_checksum,
        .base_path = t->base_path,
        .params = t->params,
        .adam_m = adam_m,
        .adam_v = adam_v,
    };
    uint64_t bytes;
    double start_ms = nf_now_ms();
    if (o->keep_last > 1) {
        /* keep a stamped copy too: written once, linked into place */
        char stamped[4096];
        snprintf(stamped, sizeof stamped, "%s.step-%09lld", o->ckpt, (long long)t->step);
        if (checkpoint_save(stamped, &ck, &bytes, err) != 0) return -1;
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.link.%ld", o->ckpt, (long)getpid());
        unlink(tmp);
        if (link(stamped, tmp) != 0 || rename(tmp, o->ckpt) != 0) {
            int e = errno;
            unlink(tmp);
            return nf_fail(err, NF_ERR_IO, "cannot place checkpoint '%s': %s", o->ckpt, strerror(e));
        }
        prune_stamped(o->ckpt, t->step, o->keep_last);
    } else if (checkpoint_save(o->ckpt, &ck, &bytes, err) != 0) {
        return -1;
    }
    JsonBuf j;
    msg_begin(&j, "checkpoint");
    json_str(&j, "path", o->ckpt);
    json_int(&j, "step", t->step);
    json_number(&j, "loss", t->last_loss);
    json_int(&j, "bytes", (int64_t)bytes);
    json_number(&j, "ms", nf_now_ms() - start_ms);
    msg_emit(t->out, &j);
    return 0;
}

/* --zero 1: rank 0's room for the whole AdamW state, which it gathers from the shards; NULL elsewhere. */
static int gather_room(Trainer *t, float **m, float **v, NfError *err) {
    *m = *v = NULL;
    int ready = 1;
    if (t->dist->rank == 0) {
        *m = nf_alloc_array(t->n_params, sizeof(float), err);
        *v = *m ? nf_alloc_array(t->n_params, sizeof(float), err) : NULL;
        ready = *v != NULL;
    }
    if (dist_broadcast_ints(t->dist, &ready, 1, err) != 0) return -1;
    if (ready) return 0;
    free(*m);
    *m = NULL;
    return t->dist->rank == 0 ? -1 : nf_fail(err, NF_ERR_MEMORY, "rank 0 had no memory to gather the checkpoint");
}

/* Every rank calls it: rank 0 writes the checkpoint (--zero 1: the shards of the AdamW state gathered first), and
 * every rank learns whether it could. */
static int save_checkpoint(Trainer *t, NfError *err) {
    float *m = t->adam_m, *v = t->adam_v;
    if (t->o->zero) {
        if (gather_room(t, &m, &v, err) != 0 || dist_gather_to_root(t->dist, t->adam_m, m, &t->shards, err) != 0 ||
            dist_gather_to_root(t->dist, t->adam_v, v, &t->shards, err) != 0) {
            free(m);
            free(v);
            return -1;
        }
    }
    int failed = t->dist->rank == 0 && write_checkpoint(t, m, v, err) != 0;
    if (t->o->zero) {
        free(m);
        free(v);
    }
    if (dist_broadcast_ints(t->dist, &failed, 1, err) != 0) return -1;
    if (failed && t->dist->rank != 0) return nf_fail(err, NF_ERR_IO, "rank 0 could not write the checkpoint");
    return failed ? -1 : 0;
}

static void show_progress(const Trainer *t, double tok_s, double elapsed_s, int64_t steps_done) {
    const TrainOptions *o = t->o;
    double eta = steps_done > 0 ? elapsed_s / steps_done * (double)(o->steps - t->step) : 0;
    int width = 30, filled = (int)(width * (double)t->step / (double)o->steps);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %02d:%02d ", bar, (long long)t->step,
            (long long)o->steps, t->last_loss, tok_s, (int)(eta / 60), (int)eta % 60);
    fflush(stderr);
}

/* Replaces this process with a fresh copy of itself that resumes from the checkpoint. */
static int restart_self(const TrainOptions *o, NfError *err) {
    char **argv = calloc((size_t)o->argc + 4, sizeof(char *));
    if (!argv) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    int n = 0, has_resume = 0;
    argv[n++] = "neuralforge";
    argv[n++] = "train";
    for (int i = 0; i < o->argc; i++) {
        if (strcmp(o->argv[i], "--resume") == 0) has_resume = 1;
        argv[n++] = o->argv[i];
    }
    if (!has_resume) argv[n++] = "--resume";
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    execv("/proc/self/exe", argv);
    free(argv);
    return nf_fail(err, NF_ERR_IO, "cannot re-execute /proc/self/exe for --restart-every");
}

static void emit_done(Trainer *t, double seconds, int64_t tokens, const char *reason) {
    JsonBuf j;
    msg_begin(&j, "done");
    json_int(&j, "total_steps", t->step);
    json_number(&j, "final_loss", t->last_loss);
    json_number(&j, "best_val_loss", t->best_val_loss);
    json_number(&j, "total_time_s", seconds);
    json_number(&j, "tok_s", seconds > 0 ? tokens / seconds : 0.0);
    json_str(&j, "reason", reason);
    msg_emit(t->out, &j);
}

/* Everything before the first step: the memory check, the model, the tokenizer check, the data and its sampler
 * (restored on --resume), the activations and the batch buffers. Sets o->seq when it was left 0. */
static int setup_run(Trainer *t, TrainOptions *o, Checkpoint *ck, NfError *err) {
    MemoryEstimate memory; /* before anything large is allocated */
    if (train_memory_check(o, &memory, err) != 0) return -1;
    double start = nf_now_ms();
    if (setup_model(t, ck, err) != 0) return -1;
    t->weights_ms = nf_now_ms() - start - t->state_ms;
    start = nf_now_ms();
    if (o->tokenizer) {
        Tokenizer tok;
        if (tokenizer_load(&tok, o->tokenizer, err) != 0) return -1;
        int matches = tokenizer_check_vocab(&tok, t->config.vocab_size, err);
        tokenizer_free(&tok);
        if (matches != 0) return -1;
    }
    if (o->seq == 0) o->seq = t->config.seq_len;
    int B = (int)o->batch, T = (int)o->seq;
    if (T > t->config.seq_len)
        return nf_fail(err, NF_ERR_USAGE, "--seq %d is longer than the model's seq_len %d", T, t->config.seq_len);
    if (token_data_open(&t->data, o->data.items, o->data.n, o->val_data, o->val_split, t->config.vocab_size, T, err) !=
        0)
        return -1;
    if (batch_sampler_init(&t->sampler, &t->data, T, o->shuffle, (uint64_t)o->seed, err) != 0) return -1;
    if (o->resume &&
        batch_sampler_restore(&t->sampler, ck->data_rng_state, ck->data_epoch, ck->data_position, err) != 0)
        return -1;
    t->data_ms = nf_now_ms() - start;
    start = nf_now_ms();
    const LoraConfig *lora = o->use_lora ? &o->lora : NULL;
    if (activations_init(&t->acts, &t->config, lora, B, T, o->bf16, err) != 0) return -1;
    /* bf16: the weights rounded once; AdamW keeps a full run's copy in step */
    t->params_bf16 = activations_keep_bf16_weights(&t->acts, &t->net, t->params, t->n_params);
    if (!(t->tokens = nf_alloc_array((size_t)B * T, sizeof(int), err)) ||
        !(t->targets = nf_alloc_array((size_t)B * T, sizeof(int), err)))
        return -1;
    t->activations_ms = nf_now_ms() - start;
    return 0;
}

/* --overlap on several ranks: the bucketed gradient sums' thread (a collective, after setup_run succeeded
 * everywhere). auto: on only when the ranks span machines. On one machine the sum goes through shared memory
 * in one call (106 ms of a 4.2 s 110M step, measured), while the communication thread's bucket after bucket
 * competes with the compute for the same cores (its sums took 0.9 s, and the step 11% longer): docs/performance.md. */
static int setup_overlap(Trainer *t, NfError *err) {
    bool on = t->o->overlap > 0 || (t->o->overlap < 0 && dist_ranks_here(t->dist) < t->dist->size);
    if (!on || t->dist->size <= 1) return 0;
    t->sync = grad_sync_create(t->dist, t->grads, t->n_params, t->seg, t->n_seg, t->config.n_layers,
                               t->o->zero ? &t->shards : NULL, err);
    return t->sync ? 0 : -1;
}

/* What one optimizer step did; comm_ms and comm_busy_ms: see the `step` message (docs/protocol.md). */
typedef struct {
    double loss, lr, norm, comm_ms, comm_busy_ms;
} StepResult;

/* One micro-batch's forward and backward (global index micro of the step's accum x N): its mean loss, NaN when
 * every target is masked (no gradient then). *counted_step: the targets counted so far this step on this rank (the
 * first backward writes the gradients, the others add: no zeroing pass). */
static double train_micro_batch(Trainer *t, int64_t step, int micro, bool last, int counted, int64_t *counted_step) {
    const TrainOptions *o = t->o;
    int B = (int)o->batch, T = (int)o->seq;
    if (counted == 0) return NAN;
    /* dropout masks depend only on (seed, step, micro-batch): a resumed run, or one on other ranks, draws the same */
    uint64_t dropout_key = rng_hash((uint64_t)o->seed ^ rng_hash((uint64_t)step * 65536u + (uint64_t)micro)) | 1;
    float scale =
        t->data.train_masked ? (float)((double)counted / (double)(B * T)) : 1.0f / (float)(o->accum * t->dist->size);
    double loss = model_forward(&t->net, &t->acts, t->tokens, t->targets, scale, dropout_key);
    /* this rank's last micro-batch leaves each layer's gradients done as backward passes it */
    t->g.layer_done = last && t->sync ? grad_sync_layer_done : NULL;
    t->g.layer_ctx = t->sync;
    model_backward(&t->net, &t->g, *counted_step == 0 ? NF_SET : NF_ADD, &t->acts, t->tokens);
    t->g.layer_done = NULL;
    *counted_step += counted;
    return loss;
}

/* The gradients summed over the ranks: by the buckets started during backward (--overlap), or now in one call.
 * Times it in r (comm_ms, comm_busy_ms). */
static int sum_gradients(Trainer *t, StepResult *r, NfError *err) {
    if (t->dist->size <= 1) return 0;
    if (t->sync) return grad_sync_finish(t->sync, &r->comm_ms, &r->comm_busy_ms, err);
    double start = nf_now_ms();
    int rc = t->o->zero ? dist_reduce_scatter(t->dist, t->grads, &t->shards, err)
                        : dist_sum_floats(t->dist, t->grads, t->n_params, "the gradients", err);
    r->comm_ms = r->comm_busy_ms = nf_now_ms() - start;
    return rc;
}

/* The AdamW step on the gradients summed over the ranks (each rank its shard under --zero 1, then the weights
 * gathered), with the step's target count (counted_step, every rank's) for masked data. Returns the norm. */
static int update_weights(Trainer *t, int64_t step, double counted_step, double *norm, NfError *err) {
    const TrainOptions *o = t->o;
    int B = (int)o->batch, T = (int)o->seq;
    Dist *d = t->dist;
    size_t lo = t->shards.lo, hi = t->shards.hi;
    /* grads now holds the sum: all of it, or this rank's shard at grads[0 ...) */
    if (t->data.train_masked && counted_step > 0)
        grad_multiply(t->grads, hi - lo, (float)((double)(B * T) / counted_step));
    double sum_squares = grad_sum_squares(t->grads, hi - lo);
    if (o->zero && dist_sum_doubles(d, &sum_squares, 1, "the gradient norm", err) != 0) return -1;
    *norm = sqrt(sum_squares);
    double lr = lr_at(&o->optim, step);
    optimizer_update_part(t->params, t->params_bf16, t->grads, t->adam_m, t->adam_v, lo, hi, *norm, t->seg, t->n_seg,
                          &o->optim, lr, step);
    if (!o->zero || !isfinite(*norm)) return 0;
    if (dist_all_gather(d, t->params, &t->shards, err) != 0) return -1;
    /* the bf16 copy of the other ranks' shards, from the weights they sent */
    for (int r = 0; t->params_bf16 && r < d->size; r++)
        if (r != d->rank)
            nf_bf16_round(t->params_bf16 + t->shards.displs[r], t->params + t->shards.displs[r],
                          (size_t)t->shards.counts[r]);
    return 0;
}

/* Optimizer step number `step`: o->accum micro-batches on this rank (a `batch` message each, from rank 0), then
 * the gradients summed over the ranks, clipping and AdamW. Fails (NF_ERR_TRAINING) on a NaN or infinite loss or
 * gradient norm, with nothing updated: on every rank alike, as they share the loss and norm. */
static int train_step(Trainer *t, int64_t step, StepResult *r, NfError *err) {
    const TrainOptions *o = t->o;
    int B = (int)o->batch, T = (int)o->seq, A = (int)o->accum;
    /* Without masks every micro-batch's mean loss weighs 1/(accum N).
     * With masks the step's loss is the mean over all the targets its
     * micro-batches count: each target's gradient is accumulated with
     * the fixed scale 1/(B*T), then the sum is rescaled by
     * B*T/counted_step, so --accum (and N ranks) stay equivalent to a
     * bigger batch. */
    bool masked = t->data.train_masked;
    double sums[2] = {0.0, 0.0}; /* the loss (weighted as above) and the targets counted, this rank's */
    int64_t counted_step = 0;
    dist_set_step(t->dist, step);
    int first = t->dist->rank * A, end = first + A, micros = A * t->dist->size;
    for (int micro = 0; micro < micros; micro++) {
        /* every rank draws every micro-batch of the step, so the samplers stay together */
        batch_sampler_next(&t->sampler, &t->data, B, T, t->tokens, t->targets);
        if (micro < first || micro >= end) continue;
        int counted = masked ? model_counted_targets(t->targets, B * T) : B * T;
        double micro_loss = train_micro_batch(t, step, micro, micro == end - 1, counted, &counted_step);
        if (counted > 0) sums[0] += masked ? micro_loss * counted : micro_loss / (double)micros;
        JsonBuf j;
        msg_begin(&j, "batch");
        json_int(&j, "step", step);
        json_int(&j, "micro_step", micro + 1);
        json_number(&j, "loss", micro_loss);
        json_int(&j, "tokens", (int64_t)B * T);
        json_int(&j, "targets", counted);
        msg_emit(t->out, &j);
    }
    if (counted_step == 0) nf_zero(t->grads, t->n_params); /* every target masked: no backward ran */
    if (sum_gradients(t, r, err) != 0) return -1;
    sums[1] = (double)counted_step;
    if (dist_sum_doubles(t->dist, sums, 2, "the step's loss", err) != 0) return -1;
    double loss = masked ? (sums[1] > 0 ? sums[0] / sums[1] : NAN) : sums[0];
    if (sums[1] > 0 && !isfinite(loss))
        return nf_fail(err, NF_ERR_TRAINING, "the loss became %s at step %lld; stopping (the last checkpoint is kept)",
                       isnan(loss) ? "NaN" : "infinite", (long long)step);
    double norm;
    if (update_weights(t, step, sums[1], &norm, err) != 0) return -1;
    if (!isfinite(norm)) /* nothing was updated */
        return nf_fail(err, NF_ERR_TRAINING,
                       "the gradient norm became %s at step %lld (loss %g); stopping (the last checkpoint is kept)",
                       isnan(norm) ? "NaN" : "infinite", (long long)step, loss);
    t->step = step;
    t->last_loss = loss;
    t->tokens_seen += step_tokens(t);
    r->loss = loss;
    r->lr = lr_at(&o->optim, step);
    r->norm = norm;
    return 0;
}

/* The `step` message of the step just done (ms long); returns its tokens per second. */
static double emit_step(const Trainer *t, const StepResult *r, double ms, double flops) {
    const TrainOptions *o = t->o;
    double tokens = (double)step_tokens(t);
    double tok_s = ms > 0 ? tokens / (ms / 1000.0) : 0.0;
    JsonBuf j;
    msg_begin(&j, "step");
    json_int(&j, "step", t->step);
    json_int(&j, "total", o->steps);
    json_number(&j, "loss", r->loss);
    json_number(&j, "lr", r->lr);
    json_number(&j, "grad_norm", r->norm);
    json_number(&j, "ms", ms);
    json_number(&j, "tok_s", tok_s);
    json_number(&j, "tflops", ms > 0 ? flops * tokens / (ms / 1000.0) / 1e12 : 0.0);
    if (t->dist->size > 1) {
        json_number(&j, "comm_ms", r->comm_ms);
        json_number(&j, "comm_busy_ms", r->comm_busy_ms);
    }
    if (o->shuffle) json_int(&j, "epoch", t->sampler.epoch);
    msg_emit(t->out, &j);
    return tok_s;
}

/* Validation after the step just done: the `val` message, and the best loss so far. */
static int emit_validation(Trainer *t, NfError *err) {
    double val;
    if (validate(t, &val, err) != 0) return -1;
    if (isnan(t->best_val_loss) || val < t->best_val_loss) t->best_val_loss = val;
    JsonBuf j;
    msg_begin(&j, "val");
    json_int(&j, "step", t->step);
    json_number(&j, "val_loss", val);
    json_number(&j, "val_ppl", exp(val));
    json_int(&j, "val_batches", t->o->val_batches);
    msg_emit(t->out, &j);
    return 0;
}

/* The state of the loop in this process (a restart begins a new one). */
typedef struct {
    sigset_t stop;           /* the blocked stop signals */
    int signalled;           /* the stop signal taken (0: none) */
    bool progress;           /* a progress bar on stderr (a terminal) */
    double start, last_ckpt; /* nf_now_ms() at the first step and at the last checkpoint */
    int64_t steps_here, tokens_here;
} RunLoop;

enum { STEP_GO_ON, STEP_STOP, STEP_RESTART };

/* The end of the step just done: a stop request (a signal, or a closed stdout), a checkpoint when one is due,
 * a restart. Returns STEP_STOP (interrupted), STEP_GO_ON, STEP_RESTART (under mpirun: train_run sets the run up
 * again from the checkpoint, as MPI cannot be started twice in one process, even across exec), -1 on failure (a
 * restart by exec returns only on failure). The ranks agree on the stop and on a checkpoint due by the clock. */
static int end_step(Trainer *t, RunLoop *l, NfError *err) {
    const TrainOptions *o = t->o;
    int64_t step = t->step;
    /* a signal in the last step changes nothing; a closed stdout (the
     * dashboard that reads it died) is a stop request too */
    if (!l->signalled) l->signalled = stop_signal(&l->stop);
    int agreed[2] = {l->signalled != 0 || t->out->closed, /* rank 0's clock decides */
                     t->dist->rank == 0 && o->ckpt_minutes > 0 &&
                         nf_now_ms() - l->last_ckpt >= o->ckpt_minutes * 60000.0};
    if (dist_max_ints(t->dist, agreed, 2, "the step's end", err) != 0) return -1;
    bool stopping = agreed[0] && step < o->steps;
    bool restarting = o->restart_every > 0 && l->steps_here % o->restart_every == 0 && step < o->steps;
    bool periodic = (o->ckpt_every > 0 && step % o->ckpt_every == 0) || agreed[1];
    if (stopping && l->signalled != 0) msg_tee_if_supervised(t->out);
    if (o->ckpt && (periodic || step == o->steps || stopping || restarting)) {
        if (save_checkpoint(t, err) != 0) return -1;
        l->last_ckpt = nf_now_ms();
    }
    if (stopping) return STEP_STOP;
    if (restarting) {
        if (l->progress) fputc('\n', stderr);
        JsonBuf j;
        msg_begin(&j, "restart");
        json_int(&j, "step", step);
        json_str(&j, "reason", "restart-every");
        msg_emit(t->out, &j);
        if (t->dist->mpi) return STEP_RESTART;
        restart_self(o, err); /* returns only on failure */
        return -1;
    }
    return STEP_GO_ON;
}

static void trainer_free(Trainer *t) {
    activations_free(&t->acts);
    free(t->tokens);
    free(t->targets);
    batch_sampler_free(&t->sampler);
    token_data_close(&t->data);
    free(t->params);
    free(t->grads);
    free(t->adam_m);
    free(t->adam_v);
    model_free(&t->base_model);
    free(t->base_copy);
    frozen_base_free(&t->frozen);
    free(t->base_path);
    grad_sync_free(t->sync);
    if (t->o->zero) dist_shards_free(&t->shards);
}

/* The run once set up: the `init` message (stored_options: the resumed checkpoint's flags), the steps up to
 * o->steps or a stop request, and the `done` message. Returns 0, STEP_RESTART (under mpirun) or -1. */
static int run_steps(Trainer *t, RunLoop *l, const char *stored_options, NfError *err) {
    const TrainOptions *o = t->o;
    bool validating = o->val_every > 0 && t->data.n_val > 0;
    emit_init(t, stored_options);
    l->progress = t->dist->rank == 0 && isatty(STDERR_FILENO);
    double flops = model_flops_per_token(&t->config, (int)o->seq, o->use_lora ? &o->lora : NULL);
    l->start = l->last_ckpt = nf_now_ms();
    const char *reason = "completed";
    while (t->step < o->steps) {
        double step_start = nf_now_ms();
        StepResult r = {0};
        if (train_step(t, t->step + 1, &r, err) != 0) return -1;
        l->steps_here++;
        l->tokens_here += step_tokens(t);
        double tok_s = emit_step(t, &r, nf_now_ms() - step_start, flops);
        if (l->progress) show_progress(t, tok_s, (nf_now_ms() - l->start) / 1000.0, l->steps_here);
        if (validating && (t->step % o->val_every == 0 || t->step == o->steps) && emit_validation(t, err) != 0)
            return -1;
        int end = end_step(t, l, err);
        if (end < 0 || end == STEP_RESTART) return end;
        if (end == STEP_STOP) {
            reason = "interrupted";
            break;
        }
    }
    if (l->progress) fputc('\n', stderr);
    double seconds = (nf_now_ms() - l->start) / 1000.0;
    emit_done(t, seconds, l->tokens_here, reason);
    if (t->dist->rank == 0)
        nf_log("training %s at step %lld: loss %.4f, %.1f s", reason, (long long)t->step, t->last_loss, seconds);
    return 0;
}

int train_run(TrainOptions *o, Dist *dist, NfOut *out) {
    RunLoop l = {.signalled = 0};
    train_block_stop_signals(&l.stop);
    if (dist->size == 1) o->zero = 0; /* one process holds the whole state anyway */
    o->world_size = dist->size;
    o->ranks_here = dist_ranks_here(dist);
    int status = 0;
    for (;;) {
        NfError err = {0};
        Trainer t = {.o = o, .out = out, .dist = dist, .best_val_loss = NAN, .last_loss = NAN};
        Checkpoint ck = {0};
        int end = -1;
        status = dist_settle(dist, out, setup_run(&t, o, &ck, &err) != 0, &err);
        if (status == 0) status = dist_settle(dist, out, setup_overlap(&t, &err) != 0, &err);
        if (status == 0 && (end = run_steps(&t, &l, ck.options_json, &err)) < 0)
            status = dist_settle(dist, out, 1, &err);
        checkpoint_free(&ck);
        trainer_free(&t);
        if (status != 0 || end != STEP_RESTART) break;
        /* --restart-every under mpirun: the run set up again from its checkpoint, in this process */
        o->resume = true;
        l.steps_here = l.tokens_here = 0;
    }
    return status;
}
