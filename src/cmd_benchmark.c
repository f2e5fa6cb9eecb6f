/* cmd_benchmark.c — `neuralforge benchmark`: how fast training steps and
 * generation run on this machine, for a preset shape (random weights) or a
 * model file, as one `benchmark` message.
 *
 *   --train:    warm-up step, then --steps timed optimizer steps on random
 *               tokens: forward, backward, gradient norm, AdamW (full, or
 *               LoRA adapters with --lora-rank) -> ms per step, tokens/s,
 *               GFLOP/s and MFU against an fp32 GEMM peak measured now.
 *   --generate: --prompt-tokens through the KV-cached forward (a warm-up
 *               pass, then a timed one), then --tokens greedy tokens ->
 *               tokens/s of each, and the bytes read per second while
 *               generating (weights and KV cache), against a memory read
 *               speed measured now.
 *   --competing-load N: the same benchmark twice, alone and then beside N
 *               busy processes, the second message with the ratio: how a
 *               shared machine slows it (wait_policy.h).
 *
 * The presets are llama2.c's TinyStories shapes and three published models'
 * shapes (SmolLM2-135M, Qwen2.5-0.5B, Llama-3.2-1B: GQA, Qwen 2's q/k/v
 * biases, their RoPE bases and Llama 3's RoPE scaling), with random weights.
 * --train holds what `train` would hold (a LoRA base under --dtype bf16 in
 * bf16 only) and is refused, before anything large is allocated, when
 * budget.h's estimate exceeds --max-memory: a 1B model's full fine-tuning
 * does not fit a 24 GB machine. bench/presets_vs_torch.py runs them beside a PyTorch peer. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "args.h"
#include "backend.h"
#include "budget.h"
#include "checkpoint.h"
#include "commands.h"
#include "infer.h"
#include "model_open.h"
#include "optimizer.h"
#include "params.h"
#include "rng.h"
#include "sampler.h"
#include "train_model.h"
#include "util.h"
#include "wait_policy.h"

/* --competing-load's bound: more busy processes than this measure nothing a user's machine does */
#define NF_MAX_COMPETING_LOAD 64

typedef struct {
    const char *name;
    ModelConfig config;
} Preset;

/* --preset's choices: PRESETS' names */
#define PRESET_CHOICES "15M|42M|110M|smollm2-135m|qwen2.5-0.5b|llama3.2-1b"

/* llama2.c's TinyStories models, then the published models' config.json (hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size, max_position_embeddings,
 * tie_word_embeddings, rope_theta, rope_scaling, rms_norm_eps; head_dim is 64 in all three, dim / n_heads). */
static const Preset PRESETS[] = {
    {"15M",
     {.dim = 288,
      .hidden_dim = 768,
      .n_layers = 6,
      .n_heads = 6,
      .n_kv_heads = 6,
      .vocab_size = 32000,
      .seq_len = 256,
      .shared_classifier = true}},
    {"42M",
     {.dim = 512,
      .hidden_dim = 1376,
      .n_layers = 8,
      .n_heads = 8,
      .n_kv_heads = 8,
      .vocab_size = 32000,
      .seq_len = 1024,
      .shared_classifier = true}},
    {"110M",
     {.dim = 768,
      .hidden_dim = 2048,
      .n_layers = 12,
      .n_heads = 12,
      .n_kv_heads = 12,
      .vocab_size = 32000,
      .seq_len = 1024,
      .shared_classifier = true}},
    /* HuggingFaceTB/SmolLM2-135M: 134,515,008 weights */
    {"smollm2-135m",
     {.dim = 576,
      .hidden_dim = 1536,
      .n_layers = 30,
      .n_heads = 9,
      .n_kv_heads = 3,
      .vocab_size = 49152,
      .seq_len = 8192,
      .shared_classifier = true,
      .arch = ARCH_LLAMA,
      .rope_theta = 100000.0f,
      .norm_eps = 1e-5f}},
    /* Qwen/Qwen2.5-0.5B: 494,032,768 weights, q/k/v biases (Qwen 2 always has them) */
    {"qwen2.5-0.5b",
     {.dim = 896,
      .hidden_dim = 4864,
      .n_layers = 24,
      .n_heads = 14,
      .n_kv_heads = 2,
      .vocab_size = 151936,
      .seq_len = 32768,
      .shared_classifier = true,
      .arch = ARCH_QWEN2,
      .qkv_bias = true,
      .rope_theta = 1000000.0f,
      .norm_eps = 1e-6f}},
    /* meta-llama/Llama-3.2-1B: 1,235,814,400 weights, Llama 3's RoPE scaling */
    {"llama3.2-1b",
     {.dim = 2048,
      .hidden_dim = 8192,
      .n_layers = 16,
      .n_heads = 32,
      .n_kv_heads = 8,
      .vocab_size = 128256,
      .seq_len = 131072,
      .shared_classifier = true,
      .arch = ARCH_LLAMA,
      .rope_theta = 500000.0f,
      .rope_scaling = {ROPE_SCALING_LLAMA3, 32.0f, 1.0f, 4.0f, 8192},
      .norm_eps = 1e-5f}},
};

typedef struct {
    ModelConfig config;
    float *params;     /* (config_param_count) weights, params.h layout; NULL once the base is held in bf16, and
                        * for --generate of a --model, which bench_generate opens as generate does */
    FrozenBase frozen; /* LoRA under --dtype bf16: the base in bf16 only, as `train` holds it (else empty) */
    const char *source;
    const char *model_path; /* --model, or NULL for a preset */
} BenchModel;

/* The model's shape, read before any weight is: the preset's, or the model file's header. */
static int bench_model_config(BenchModel *bm, const char *preset, const char *model_path, NfError *err) {
    if (model_path) {
        bm->source = bm->model_path = model_path;
        return model_peek_config(model_path, &bm->config, err);
    }
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++)
        if (strcmp(preset, PRESETS[i].name) == 0) {
            bm->config = PRESETS[i].config;
            bm->source = PRESETS[i].name;
            return 0;
        }
    return nf_fail(err, NF_ERR_USAGE, "--preset '%s' is not one of " PRESET_CHOICES, preset);
}

static int load_bench_model(BenchModel *bm, const char *model_path, NfError *err) {
    if (model_path) return load_flat_params(model_path, NULL, NULL, &bm->config, &bm->params, NULL, err);
    if (!(bm->params = nf_alloc_array((size_t)config_param_count(&bm->config), sizeof(float), err))) return -1;
    params_init_fast(bm->params, &bm->config, 1);
    return 0;
}

/* LoRA under --dtype bf16: the base's matrices in bf16 and the fp32 weights gone (train.c's load_base), so the
 * run holds and reads what a `train --dtype bf16 --lora-rank` run does. */
static int bench_model_hold_bf16(BenchModel *bm, NfError *err) {
    ParamPointers p;
    param_pointers(&p, bm->params, &bm->config);
    if (frozen_base_bf16(&bm->frozen, &bm->config, &p, true, err) != 0) return -1;
    free(bm->params);
    bm->params = NULL;
    return 0;
}

static void bench_model_free(BenchModel *bm) {
    free(bm->params);
    frozen_base_free(&bm->frozen);
}

static void random_tokens(int *tokens, size_t n, int vocab, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) tokens[i] = (int)rng_below(&rng, (uint64_t)vocab);
}

typedef struct {
    int64_t batch, seq, steps, lora_rank, tokens, prompt_tokens;
    bool q8, bf16;
    KvCacheType kv_type;
    int threads;              /* --threads: 0 lets generated tokens choose their count (decode_threads.h) */
    uint64_t max_memory;      /* --train: the budget (0: none) */
    uint64_t memory_estimate; /* --train: budget.h's estimate of the run's peak */
} BenchOptions;

/* --lora-rank's adapters: `train --lora-rank`'s defaults (wq, wk, wv, wo; alpha = rank) */
static LoraConfig bench_lora(const BenchOptions *o) {
    return (LoraConfig){.rank = (int)o->lora_rank, .alpha = (float)o->lora_rank, .targets = LORA_DEFAULT_TARGETS};
}

/* --train's refusal, before anything large is allocated, of a run that would not fit --max-memory; else
 * o->memory_estimate is what it will hold. */
static int bench_train_check(const ModelConfig *c, BenchOptions *o, NfError *err) {
    LoraConfig lc = bench_lora(o);
    if (o->lora_rank > 0 && lora_config_validate(&lc, c, err) != 0) return -1;
    MemoryEstimate e;
    memory_estimate(c, o->lora_rank > 0 ? &lc : NULL, (int)o->batch, (int)o->seq, o->bf16, &e);
    o->memory_estimate = e.total;
    const char *remedies = o->lora_rank > 0 ? "a smaller model, --batch or --seq"
                                            : "a smaller model, --batch or --seq, LoRA (--lora-rank)";
    return memory_budget_check(&e, 1, o->max_memory, remedies, err);
}

/* One timed run: beside how many busy processes, and the alone run's rate to compare with. */
typedef struct {
    int competing_load;
    double alone_tok_s; /* the run before, without the load (when competing_load > 0) */
    double tok_s;       /* out: this run's rate */
} BenchRun;

static void emit_common(JsonBuf *j, const char *mode, const BenchModel *bm, const BenchRun *run) {
    msg_begin(j, "benchmark");
    json_str(j, "mode", mode);
    json_str(j, "model", bm->source);
    json_model_config(j, "config", &bm->config);
    json_int(j, "params", (int64_t)config_param_count(&bm->config));
    json_int(j, "threads", nf_threads());
    json_str(j, "kernels", nf_cpu_kernels());
    wait_policy_json(j);
    json_int(j, "competing_load", run->competing_load);
}

/* The rate beside the load against the rate alone: 1 is no slowdown, 0.5 is a machine shared fairly with one
 * busy process when every core was in use. */
static void emit_load_ratio(JsonBuf *j, const BenchRun *run) {
    if (run->competing_load == 0) return;
    json_number(j, "alone_tok_s", run->alone_tok_s);
    json_number(j, "load_ratio", run->alone_tok_s > 0 ? run->tok_s / run->alone_tok_s : 0.0);
}

static int bench_train(BenchModel *bm, const BenchOptions *o, BenchRun *run, NfOut *out, NfError *err) {
    const ModelConfig *c = &bm->config;
    int B = (int)o->batch, T = (int)o->seq;
    LoraConfig lc = bench_lora(o);
    const LoraConfig *lora = o->lora_rank > 0 ? &lc : NULL;
    size_t n = (size_t)(lora ? lora_param_count(c, lora) : config_param_count(c));
    float *grads = NULL, *m = NULL, *v = NULL, *adapters = NULL;
    int *tokens = NULL;
    Activations acts = {0};
    int rc = -1;
    if (!(grads = nf_alloc_array(n, sizeof(float), err)) || !(m = nf_alloc_array(n, sizeof(float), err)) ||
        !(v = nf_alloc_array(n, sizeof(float), err)) || (lora && !(adapters = nf_alloc_array(n, sizeof(float), err))) ||
        !(tokens = nf_alloc_array(2 * (size_t)B * T, sizeof(int), err)) ||
        activations_init(&acts, c, lora, B, T, o->bf16, err) != 0)
        goto done;
    random_tokens(tokens, 2 * (size_t)B * T, c->vocab_size, 7);
    Net net;
    NetGrads g;
    Lora adapted = {0};
    ParamSegment seg[LORA_SEGMENTS_MAX > PARAM_SEGMENTS_MAX ? LORA_SEGMENTS_MAX : PARAM_SEGMENTS_MAX];
    int n_seg;
    float *trained;
    if (lora) {
        ParamPointers base;
        if (bm->frozen.bits)
            base = bm->frozen.p;
        else
            param_pointers(&base, bm->params, c);
        adapted.config = lc;
        lora_init(adapters, c, &lc, &base, 1);
        lora_pointers(&adapted.w, adapters, c, &lc);
        net_lora(&net, &g, c, &base, &adapted, grads);
        net.bf16 = bm->frozen.bits ? &bm->frozen.w : NULL;
        n_seg = lora_segments(c, &lc, seg);
        trained = adapters;
    } else {
        net_full(&net, &g, c, bm->params, grads);
        n_seg = param_segments(c, seg);
        trained = bm->params;
    }
    uint16_t *trained_bf16 = activations_keep_bf16_weights(&acts, &net, trained, n);
    OptimizerOptions opt = {.lr = 1e-4,
                            .beta1 = 0.9,
                            .beta2 = 0.95,
                            .eps = 1e-8,
                            .weight_decay = 0.1,
                            .grad_clip = 1.0,
                            .schedule = LR_CONSTANT,
                            .total_steps = o->steps + 1};
    double timed_ms = 0.0, first_ms = 0.0;
    for (int64_t step = 1; step <= o->steps + 1; step++) { /* step 1 is the warm-up */
        double t0 = nf_now_ms();
        model_forward(&net, &acts, tokens, tokens + (size_t)B * T, 1.0f, lora ? (uint64_t)step : 0);
        model_backward(&net, &g, NF_SET, &acts, tokens); /* writes the gradients: no zeroing */
        optimizer_update(trained, trained_bf16, grads, n, m, v, seg, n_seg, &opt, opt.lr, step);
        double ms = nf_now_ms() - t0;
        if (step == 1)
            first_ms = ms;
        else
            timed_ms += ms;
    }
    double ms_per_step = timed_ms / (double)o->steps, tok_s = (double)B * T / (ms_per_step / 1000.0);
    double gflops = model_flops_per_token(c, T, lora) * tok_s / 1e9, peak = nf_gemm_peak_gflops(2048);
    run->tok_s = tok_s;
    JsonBuf j;
    emit_common(&j, "train", bm, run);
    json_int(&j, "batch", B);
    json_int(&j, "seq", T);
    json_int(&j, "lora_rank", o->lora_rank);
    json_str(&j, "dtype", o->bf16 ? "bf16" : "fp32");
    json_int(&j, "steps", o->steps);
    json_number(&j, "first_step_ms", first_ms);
    json_number(&j, "ms_per_step", ms_per_step);
    json_number(&j, "tok_s", tok_s);
    json_number(&j, "gflops", gflops);
    json_number(&j, "gemm_peak_gflops", peak);
    json_number(&j, "mfu", peak > 0 ? gflops / peak : 0.0);
    json_int(&j, "activation_bytes", (int64_t)activations_bytes(c, lora, B, T));
    json_int(&j, "memory_estimate_bytes", (int64_t)o->memory_estimate);
    emit_load_ratio(&j, run);
    msg_emit(out, &j);
    nf_log("train %s: %.0f ms/step, %.0f tokens/s, %.0f GFLOP/s (%.0f%% of a %.0f GFLOP/s GEMM)", bm->source,
           ms_per_step, tok_s, gflops, 100 * gflops / peak, peak);
    rc = 0;
done:
    activations_free(&acts);
    free(grads), free(m), free(v), free(adapters), free(tokens);
    return rc;
}

/* Bytes of weights read per generated token: every weight but the token embedding table, of which a token reads
 * one row (unless the classifier is that table); int8 plus a scale per group under Q8 (m's group size; fp32 or, for
 * a GGUF's Q8_0, fp16) */
static double weight_bytes_per_token(const Model *m) {
    const ModelConfig *c = &m->config;
    double embedding_unread = c->shared_classifier ? 0.0 : (double)c->vocab_size * c->dim - c->dim;
    double q8 = 1.0 + (double)tensor_q8_scale_bytes(&m->weights.token_embedding) / m->group_size;
    return ((double)config_param_count(c) - embedding_unread) * (m->dtype == NF_Q8 ? q8 : 4.0);
}

/* Bytes of KV cache read per generated token, on average over tokens at positions P .. P+N-1: the token at
 * position p reads p + 1 keys and values per kv head in every layer. After a long prompt these are a
 * noticeable part of a token's reads (110M after 768 tokens: 14% of the fp32 weights' bytes). */
static double cache_bytes_per_token(const ModelConfig *c, KvCacheType kv_type, int P, int N) {
    double mean_rows = P + (N + 1) / 2.0, value_bytes = kv_type == KV_CACHE_BF16 ? 2.0 : 4.0;
    return 2.0 * c->n_layers * config_kv_dim(c) * value_bytes * mean_rows;
}

/* Generation against the read speed of the same seconds: n pairs of a read pass over 512 MB, then one token at
 * positions P, P+1, ... (the cache written there again), each token's bytes per second over its pass's, the pass
 * run by as many threads as its token (decode_threads.h may run some tokens with one fewer). A shared
 * machine's read speed moves by half within minutes (docs/performance.md), so a bound measured apart from the
 * tokens said as much about those minutes as about the tokens. The medians of the pairs' ratios, for the whole
 * token (use) and for its products alone (product_use); both 0 without the memory. */
typedef struct {
    double use, product_use;
} PairedUse;

static PairedUse paired_use(const Model *m, InferState *s, Sampler *sampler, int token, int P, int n,
                            KvCacheType kv_type, double weight_bytes) {
    PairedUse out = {0.0, 0.0};
    NfReadBuffer rb = {0};
    double *ratio = calloc(2 * (size_t)n, sizeof(double));
    if (!ratio || nf_read_buffer_init(&rb, (size_t)512 << 20) != 0) {
        free(ratio);
        return out;
    }
    double *product_ratio = ratio + n;
    int all = nf_threads();
    for (int i = 0; i < n; i++) {
        nf_set_threads(infer_token_threads(s, NULL)); /* the pass with the threads its token will have */
        double pass_gbytes_s = nf_read_buffer_pass(&rb);
        nf_set_threads(all);
        double product_ms = s->timing.product_ms, t0 = nf_now_ms();
        token = sampler_sample(sampler, infer_forward(m, NULL, s, &token, 1, P + i));
        double ms = nf_now_ms() - t0, bytes = weight_bytes + cache_bytes_per_token(&m->config, kv_type, P + i, 1);
        product_ms = s->timing.product_ms - product_ms;
        ratio[i] = pass_gbytes_s > 0 ? bytes / ms / 1e6 / pass_gbytes_s : 0.0;
        product_ratio[i] = pass_gbytes_s > 0 && product_ms > 0 ? weight_bytes / product_ms / 1e6 / pass_gbytes_s : 0.0;
    }
    out = (PairedUse){nf_sort_median(ratio, (size_t)n), nf_sort_median(product_ratio, (size_t)n)};
    nf_read_buffer_free(&rb);
    free(ratio);
    return out;
}

static int bench_generate(BenchModel *bm, const BenchOptions *o, BenchRun *run, NfOut *out, NfError *err) {
    const ModelConfig *c = &bm->config;
    int P = (int)o->prompt_tokens, N = (int)o->tokens;
    if (P + N > c->seq_len)
        return nf_fail(err, NF_ERR_USAGE, "--prompt-tokens %d plus --tokens %d exceed the model's seq_len %d", P, N,
                       c->seq_len);
    Model m;
    /* a model file as generate opens it (a Q8 file as it is stored), a preset's random weights from their buffer */
    if ((bm->model_path ? model_open(&m, bm->model_path, err) : model_from_params(&m, c, bm->params, err)) != 0)
        return -1;
    if (o->q8 && model_quantize_q8(&m, err) != 0) {
        model_free(&m);
        return -1;
    }
    InferState s;
    int *prompt = NULL, rc = -1;
    Sampler sampler = {0};
    if (infer_state_init(&s, c, P + N, o->kv_type, err) != 0) {
        model_free(&m);
        return -1;
    }
    infer_adapt_threads(&s, o->threads);
    if (!(prompt = nf_alloc_array((size_t)P + 1, sizeof(int), err)) ||
        sampler_init(&sampler, c->vocab_size, 0.0f, 1.0f, 0, 1, err) != 0)
        goto done;
    random_tokens(prompt, (size_t)P + 1, c->vocab_size, 11);
    /* The first pass over the prompt also pays what a process pays once
     * (oneDNN generating its kernels, fresh pages), so it is timed apart and
     * the rate comes from a second pass, as llama-bench warms up first. */
    double t0 = nf_now_ms();
    if (P > 0) infer_forward(&m, NULL, &s, prompt, P, 0);
    double first_prompt_ms = nf_now_ms() - t0;
    t0 = nf_now_ms();
    if (P > 0) infer_forward(&m, NULL, &s, prompt, P, 0);
    double prompt_ms = nf_now_ms() - t0;
    int token = prompt[P];
    s.timing.on = true; /* the generated tokens' time in products and attention, apart from the rest */
    t0 = nf_now_ms();
    for (int pos = P; pos < P + N; pos++) token = sampler_sample(&sampler, infer_forward(&m, NULL, &s, &token, 1, pos));
    double gen_ms = nf_now_ms() - t0, tok_s = N / (gen_ms / 1000.0);
    /* the bound: generation reads every weight and the cache's keys and values once per token */
    double weight_bytes = weight_bytes_per_token(&m), cache_bytes = cache_bytes_per_token(c, o->kv_type, P, N);
    double weight_gbytes_s = weight_bytes * tok_s / 1e9, cache_gbytes_s = cache_bytes * tok_s / 1e9;
    double token_ms = gen_ms / N, product_ms = s.timing.product_ms / N, attention_ms = s.timing.attention_ms / N;
    NfReadSpeed read = nf_memory_read_gbytes_s((size_t)512 << 20);
    PairedUse paired = paired_use(&m, &s, &sampler, token, P, N, o->kv_type, weight_bytes);
    double read_gbytes_s = read.best;
    double bandwidth_use = read_gbytes_s > 0 ? (weight_gbytes_s + cache_gbytes_s) / read_gbytes_s : 0.0;
    double prompt_tok_s = P > 0 ? P / (prompt_ms / 1000.0) : 0.0;
    run->tok_s = tok_s;
    JsonBuf j;
    emit_common(&j, "generate", bm, run);
    json_str(&j, "quant", m.dtype == NF_Q8 ? "q8" : "none");
    json_str(&j, "kv_cache", o->kv_type == KV_CACHE_BF16 ? "bf16" : "fp32");
    json_int(&j, "prompt_tokens", P);
    json_number(&j, "prompt_tok_s", prompt_tok_s);
    json_number(&j, "prompt_first_ms", first_prompt_ms);
    json_int(&j, "tokens", N);
    json_number(&j, "ms_per_token", token_ms);
    json_number(&j, "tok_s", tok_s);
    json_number(&j, "weight_gbytes_s", weight_gbytes_s);
    json_number(&j, "cache_gbytes_s", cache_gbytes_s);
    json_number(&j, "memory_read_gbytes_s", read_gbytes_s);
    json_number(&j, "memory_read_median_gbytes_s", read.median);
    json_number(&j, "bandwidth_use", bandwidth_use);
    json_number(&j, "paired_bandwidth_use", paired.use);
    json_number(&j, "paired_product_use", paired.product_use);
    json_number(&j, "product_ms_per_token", product_ms);
    json_number(&j, "product_gbytes_s", product_ms > 0 ? weight_bytes / product_ms / 1e6 : 0.0);
    json_number(&j, "attention_ms_per_token", attention_ms);
    json_number(&j, "attention_gbytes_s", attention_ms > 0 ? cache_bytes / attention_ms / 1e6 : 0.0);
    json_int(&j, "decode_threads", s.threads.max >= 2 ? s.threads.current : nf_threads());
    emit_load_ratio(&j, run);
    msg_emit(out, &j);
    nf_log("generate %s: %.1f tokens/s (%.1f GB/s of weights and %.1f of KV cache, %.0f%% of a %.1f GB/s read, "
           "median pass %.1f, %.0f%% of the read beside each token; a token's products %.2f of its %.2f ms, "
           "attention %.2f), prompt %.0f tokens/s (first pass %.0f ms)",
           bm->source, tok_s, weight_gbytes_s, cache_gbytes_s, 100 * bandwidth_use, read_gbytes_s, read.median,
           100 * paired.use, product_ms, token_ms, attention_ms, prompt_tok_s, first_prompt_ms);
    rc = 0;
done:
    sampler_free(&sampler);
    free(prompt);
    infer_state_free(&s);
    model_free(&m);
    return rc;
}

/* A busy process: a child that only spins, killed by stop_load (and by the kernel if this process dies first). It
 * touches nothing of the parent's (its OpenMP threads did not survive the fork). */
static pid_t start_spinner(void) {
    pid_t parent = getpid(), pid = fork();
    if (pid != 0) return pid; /* the parent, or -1 */
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    if (getppid() != parent) _exit(0); /* the parent died before the death signal was armed */
    volatile unsigned long spins = 0;
    for (;;) spins++;
}

static void stop_load(pid_t *pids, int n) {
    for (int i = 0; i < n; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < n; i++) waitpid(pids[i], NULL, 0);
}

/* The benchmark alone, then beside n busy processes (or only alone when n is 0). */
static int bench_with_load(BenchModel *bm, const BenchOptions *o, bool train, int n, NfOut *out, NfError *err) {
    BenchRun alone = {0};
    int rc = train ? bench_train(bm, o, &alone, out, err) : bench_generate(bm, o, &alone, out, err);
    if (rc != 0 || n == 0) return rc;
    pid_t pids[NF_MAX_COMPETING_LOAD];
    int started = 0;
    for (; started < n; started++)
        if ((pids[started] = start_spinner()) < 0) {
            stop_load(pids, started);
            return nf_fail(err, NF_ERR_IO, "cannot start --competing-load's busy processes (fork)");
        }
    BenchRun loaded = {.competing_load = n, .alone_tok_s = alone.tok_s};
    rc = train ? bench_train(bm, o, &loaded, out, err) : bench_generate(bm, o, &loaded, out, err);
    stop_load(pids, started);
    return rc;
}

int cmd_benchmark(int argc, char **argv, NfOut *out) {
    bool train = false, generate = false;
    const char *preset = "15M", *model_path = NULL;
    int64_t threads = 0, competing_load = 0;
    const char *quant = "none", *dtype = "fp32", *kv_cache = "fp32", *max_memory = NULL;
    BenchOptions o = {.batch = 4, .seq = 256, .steps = 3, .lora_rank = 0, .tokens = 128, .prompt_tokens = 128};
    ArgSpec specs[] = {
        {"train", ARG_FLAG, &train, .help = "time training steps"},
        {"generate", ARG_FLAG, &generate, .help = "time generation"},
        {"preset", ARG_CHOICE, &preset, .choices = PRESET_CHOICES,
         .help = "a model shape with random weights: llama2.c's 15M, 42M, 110M, or SmolLM2-135M's, Qwen2.5-0.5B's, "
                 "Llama-3.2-1B's (default 15M)"},
        {"model", ARG_STRING, &model_path, .help = "or this model file"},
        {"batch", ARG_INT, &o.batch, 1, 4096, .help = "--train: sequences per step (default 4)"},
        {"seq", ARG_INT, &o.seq, 1, NF_MAX_SEQ_LEN, .help = "--train: tokens per sequence (default 256)"},
        {"steps", ARG_INT, &o.steps, 1, 1000, .help = "--train: timed steps after one warm-up (default 3)"},
        {"lora-rank", ARG_INT, &o.lora_rank, 0, LORA_MAX_RANK,
         .help = "--train: LoRA on wq,wk,wv,wo (default 0 = full)"},
        {"tokens", ARG_INT, &o.tokens, 1, NF_MAX_SEQ_LEN, .help = "--generate: tokens to generate (default 128)"},
        {"prompt-tokens", ARG_INT, &o.prompt_tokens, 0, NF_MAX_SEQ_LEN,
         .help = "--generate: prompt tokens first (default 128)"},
        {"dtype", ARG_CHOICE, &dtype, .choices = "fp32|bf16",
         .help = "--train: precision of the weight products (default fp32)"},
        {"max-memory", ARG_STRING, &max_memory,
         .help = "--train: refuse a run estimated to need more memory than SIZE, as train --max-memory (default 80% "
                 "of the machine's memory; none = no limit)"},
        {"quant", ARG_CHOICE, &quant, .choices = "none|q8", .help = "--generate: q8 = int8 weights (default none)"},
        {"kv-cache", ARG_CHOICE, &kv_cache, .choices = "fp32|bf16",
         .help = "--generate: what the KV cache stores (default fp32)"},
        {"threads", ARG_INT, &threads, 0, 4096, .help = "threads (default 0 = one per core)"},
        {"competing-load", ARG_INT, &competing_load, 0, NF_MAX_COMPETING_LOAD,
         .help = "run again beside N busy processes and report the ratio (default 0)"},
    };
    int n_specs = ARGS_COUNT(specs);
    int exit_status;
    if (command_parse_flags("benchmark", "Times training steps or generation on this machine.", specs, n_specs, argc,
                            argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (train == generate) {
        nf_fail(&err, NF_ERR_USAGE, "benchmark needs exactly one of --train and --generate");
        return emit_error(out, &err);
    }
    if (model_path && args_seen(specs, n_specs, "preset")) {
        nf_fail(&err, NF_ERR_USAGE, "--preset and --model exclude each other");
        return emit_error(out, &err);
    }
    const char *train_only[] = {"batch", "seq", "steps", "lora-rank", "dtype", "max-memory"},
               *generate_only[] = {"tokens", "prompt-tokens", "quant", "kv-cache"};
    for (size_t i = 0; i < sizeof train_only / sizeof train_only[0]; i++)
        if (generate && args_seen(specs, n_specs, train_only[i])) {
            nf_fail(&err, NF_ERR_USAGE, "--%s is for --train", train_only[i]);
            return emit_error(out, &err);
        }
    for (size_t i = 0; i < sizeof generate_only / sizeof generate_only[0]; i++)
        if (train && args_seen(specs, n_specs, generate_only[i])) {
            nf_fail(&err, NF_ERR_USAGE, "--%s is for --generate", generate_only[i]);
            return emit_error(out, &err);
        }
    nf_set_threads((int)threads);
    o.threads = (int)threads;
    o.q8 = strcmp(quant, "q8") == 0;
    o.kv_type = strcmp(kv_cache, "bf16") == 0 ? KV_CACHE_BF16 : KV_CACHE_F32;
    o.bf16 = strcmp(dtype, "bf16") == 0;
    o.max_memory = budget_default();
    if (max_memory && budget_parse_size(max_memory, "max-memory", &o.max_memory, &err) != 0)
        return emit_error(out, &err);
    BenchModel bm = {0};
    if (bench_model_config(&bm, preset, model_path, &err) != 0) return emit_error(out, &err);
    /* defaults that do not fit a short-context model shrink to fit it */
    int ctx = bm.config.seq_len;
    if (!args_seen(specs, n_specs, "seq") && o.seq > ctx) o.seq = ctx;
    if (!args_seen(specs, n_specs, "prompt-tokens") && o.prompt_tokens > ctx / 2) o.prompt_tokens = ctx / 2;
    if (!args_seen(specs, n_specs, "tokens") && o.prompt_tokens + o.tokens > ctx) o.tokens = ctx - o.prompt_tokens;
    if (train && o.seq > ctx) {
        nf_fail(&err, NF_ERR_USAGE, "--seq %lld is longer than the model's seq_len %d", (long long)o.seq, ctx);
        return emit_error(out, &err);
    }
    if (train && bench_train_check(&bm.config, &o, &err) != 0) return emit_error(out, &err);
    int rc = train || !model_path ? load_bench_model(&bm, model_path, &err) : 0; /* else bench_generate opens it */
    if (rc == 0 && train && o.lora_rank > 0 && o.bf16) rc = bench_model_hold_bf16(&bm, &err);
    if (rc == 0) rc = bench_with_load(&bm, &o, train, (int)competing_load, out, &err);
    bench_model_free(&bm);
    return rc == 0 ? 0 : emit_error(out, &err);
}
