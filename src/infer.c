/* infer.c — the LLaMA forward pass for generation:
 *   x = embed(token)
 *   per layer: x += Wo · attention(RoPE(qn(Wq·rms(x) + bq)), cache(RoPE(kn(Wk·rms(x) + bk)), Wv·rms(x) + bv))
 *              x += W2 · (silu(W1·rms(x)) * W3·rms(x))
 *   logits = Wcls · rms(x)
 * With LoRA adapters, each adapted projection adds s·B·(A·x) on the side,
 * unmerged, and trained norms replace the model's. The biases (Qwen 2) and
 * the per-head norms qn, kn (Qwen 3) are there only when the model has them. */
#include "infer.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "lora.h"
#include "protocol.h"
#include "util.h"

/* One buffer of the state: a float or a bf16 array of count elements (0: not used by this state). */
typedef struct {
    float **f32;
    uint16_t **bf16;
    size_t count;
} InferBuffer;

/* The element counts of the state's buffers, worked out once from the model's shape (all 0 when freeing). */
typedef struct {
    size_t chunk_dim, chunk_hidden; /* (chunk, max(dim, q_dim)), (chunk, hidden_dim) */
    size_t scores, rope, scratch, logits;
    size_t layer, cache; /* one layer's keys (positions, kv_dim), and all layers' */
    bool bf16;           /* the cache holds bf16 */
} InferSizes;

enum { INFER_BUFFER_COUNT = 17 };

/* Every buffer of the state with its element count: one list for allocation and freeing. */
static void state_buffers(InferState *s, const InferSizes *z, InferBuffer out[INFER_BUFFER_COUNT]) {
    InferBuffer list[INFER_BUFFER_COUNT] = {
        {&s->x, NULL, z->chunk_dim},
        {&s->xb, NULL, z->chunk_dim},
        {&s->xb2, NULL, z->chunk_dim},
        {&s->hb, NULL, z->chunk_hidden},
        {&s->hb2, NULL, z->chunk_hidden},
        {&s->q, NULL, z->chunk_dim},
        {&s->lora_u, NULL, z->chunk_dim},
        {&s->scores, NULL, z->scores},
        {&s->rope, NULL, z->rope},
        {&s->att_scratch, NULL, z->scratch},
        {&s->logits, NULL, z->logits},
        {&s->keys, NULL, z->layer},
        {&s->values, NULL, z->layer},
        {&s->key_cache, NULL, z->bf16 ? 0 : z->cache},
        {&s->value_cache, NULL, z->bf16 ? 0 : z->cache},
        {NULL, &s->key_cache_bf16, z->bf16 ? z->cache : 0},
        {NULL, &s->value_cache_bf16, z->bf16 ? z->cache : 0},
    };
    memcpy(out, list, sizeof list);
}

int infer_state_init(InferState *s, const ModelConfig *c, int max_positions, KvCacheType kv_type, NfError *err) {
    memset(s, 0, sizeof *s);
    s->kv_type = kv_type;
    if (max_positions < 1 || max_positions > c->seq_len) max_positions = c->seq_len;
    s->max_positions = max_positions;
    s->chunk = max_positions < INFER_CHUNK ? max_positions : INFER_CHUNK;
    size_t P = (size_t)max_positions, C = (size_t)s->chunk;
    size_t width = (size_t)(c->dim > config_q_dim(c) ? c->dim : config_q_dim(c)); /* xb and q hold q_dim too */
    InferSizes z = {.chunk_dim = width * C,
                    .chunk_hidden = (size_t)c->hidden_dim * C,
                    .scores = (size_t)c->n_heads * P,
                    .rope = P * (size_t)config_head_size(c),
                    .scratch = nf_attention_scratch_floats(1, max_positions, c->n_kv_heads, config_head_size(c)),
                    .logits = (size_t)c->vocab_size,
                    .bf16 = kv_type == KV_CACHE_BF16};
    if (!nf_mul_size(P, (size_t)config_kv_dim(c), &z.layer) || !nf_mul_size(z.layer, (size_t)c->n_layers, &z.cache))
        return nf_fail(err, NF_ERR_MEMORY, "KV cache size overflows");
    InferBuffer list[INFER_BUFFER_COUNT];
    state_buffers(s, &z, list);
    for (int i = 0; i < INFER_BUFFER_COUNT; i++) {
        if (list[i].count == 0) continue;
        bool ok = list[i].f32 ? (*list[i].f32 = nf_alloc_array(list[i].count, sizeof(float), err)) != NULL
                              : (*list[i].bf16 = nf_alloc_array(list[i].count, sizeof(uint16_t), err)) != NULL;
        if (!ok) {
            infer_state_free(s);
            return -1;
        }
    }
    nf_rope_table(s->rope, max_positions, c);
    return 0;
}

void infer_state_free(InferState *s) {
    nf_team_free(s->team);
    InferBuffer list[INFER_BUFFER_COUNT];
    state_buffers(s, &(InferSizes){0}, list); /* only the fields are read */
    for (int i = 0; i < INFER_BUFFER_COUNT; i++) {
        if (list[i].f32)
            free(*list[i].f32);
        else
            free(*list[i].bf16);
    }
    memset(s, 0, sizeof *s);
}

/* y (n, dim) = rmsnorm of each row of x (n, dim); y may alias x */
static void rmsnorm_rows(float *y, const float *x, const float *weight, int n, int dim, float eps) {
    for (int r = 0; r < n; r++) nf_rmsnorm(y + (size_t)r * dim, x + (size_t)r * dim, weight, dim, eps);
}

/* q (n, heads, hs): the bias, then each head's RMSNorm, then RoPE at positions pos.., in place */
static void shape_heads(float *x, const float *bias, const float *norm, const float *rope, int n, int pos, int heads,
                        int hs, float eps) {
    if (bias) nf_bias_forward(x, bias, n, heads * hs);
    if (norm) rmsnorm_rows(x, x, norm, n * heads, hs, eps);
    nf_rope_forward(x, rope, 1, n, pos, heads, hs);
}

/* The team that runs one row's products and attention (team.h), started the first time: not for LoRA (its products
 * run on oneDNN's OpenMP threads, which the team's would spin beside) nor the baseline tier (oneDNN's products) */
static NfTeam *row_team(InferState *s, const Lora *lora, int n) {
    if (n != 1 || lora || !nf_row_products_thread_invariant() || nf_threads() < 2) return NULL;
    NfError err = {0};
    if (!s->team && !s->team_failed && (s->team_failed = nf_team_init(&s->team, nf_threads(), &err) != 0))
        nf_log("%s: generated tokens run on OpenMP's threads instead", err.message); /* slower, the same bits */
    return s->team;
}

/* nf_matmuls on team's threads (NULL: OpenMP's), its time counted in s->timing when that is on */
static void products(InferState *s, NfTeam *team, const NfProduct *p, int count, const float *x, int n, int in_dim) {
    double t0 = s->timing.on ? nf_now_ms() : 0.0;
    nf_matmuls(p, count, x, n, in_dim, team);
    if (s->timing.on) s->timing.product_ms += nf_now_ms() - t0;
}

/* One chunk: n <= s->chunk tokens at positions pos .. pos+n-1. Leaves the
 * final residual rows in s->x. */
static void forward_chunk(const Model *m, const Lora *lora, InferState *s, const int *tokens, int n, int pos) {
    const ModelConfig *c = &m->config;
    const ModelWeights *w = &m->weights;
    int D = c->dim, H = c->hidden_dim, KV = config_kv_dim(c), QD = config_q_dim(c), hs = config_head_size(c);
    size_t P = (size_t)s->max_positions, ND = (size_t)n * D, NH = (size_t)n * H;
    float eps = config_norm_eps(c);
    NfTeam *team = row_team(s, lora, n);

    for (int r = 0; r < n; r++) tensor_row_f32(&w->token_embedding, (size_t)tokens[r], D, s->x + (size_t)r * D);

    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        const float *rms_att = lora && lora->w.rms_att ? lora->w.rms_att + (size_t)l * D : lw->rms_att;
        const float *rms_ffn = lora && lora->w.rms_ffn ? lora->w.rms_ffn + (size_t)l * D : lw->rms_ffn;
        /* this layer's cache, head-major; the new rows come in by position */
        size_t layer = (size_t)l * P * KV;
        NfKvLayout layout = {P * (size_t)hs, (size_t)hs};
        float *key_cache = s->key_cache ? s->key_cache + layer : NULL;
        float *value_cache = s->value_cache ? s->value_cache + layer : NULL;
        uint16_t *key_cache_bf16 = s->key_cache_bf16 ? s->key_cache_bf16 + layer : NULL;
        uint16_t *value_cache_bf16 = s->value_cache_bf16 ? s->value_cache_bf16 + layer : NULL;
        float *k_rows = s->keys + (size_t)pos * KV, *v_rows = s->values + (size_t)pos * KV; /* (n, KV) */

        /* attention block */
        rmsnorm_rows(s->xb, s->x, rms_att, n, D, eps);
        products(s, team, (NfProduct[]){{s->q, &lw->wq, QD}, {k_rows, &lw->wk, KV}, {v_rows, &lw->wv, KV}}, 3, s->xb, n,
                 D);
        lora_apply(s->q, s->xb, lora, LORA_WQ, l, c, n, s->lora_u);
        lora_apply(k_rows, s->xb, lora, LORA_WK, l, c, n, s->lora_u);
        lora_apply(v_rows, s->xb, lora, LORA_WV, l, c, n, s->lora_u);
        shape_heads(s->q, lw->bq, lw->q_norm, s->rope, n, pos, c->n_heads, hs, eps);
        shape_heads(k_rows, lw->bk, lw->k_norm, s->rope, n, pos, c->n_kv_heads, hs, eps);
        if (lw->bv) nf_bias_forward(v_rows, lw->bv, n, KV);
        nf_kv_store(key_cache, key_cache_bf16, layout, k_rows, n, pos, c->n_kv_heads, hs);
        nf_kv_store(value_cache, value_cache_bf16, layout, v_rows, n, pos, c->n_kv_heads, hs);
        double attention_t0 = s->timing.on ? nf_now_ms() : 0.0;
        if (n == 1 && key_cache_bf16) /* one row: a dot product per cached position, streaming each head's rows */
            nf_attention_decode_bf16(s->xb, s->q, key_cache_bf16, value_cache_bf16, layout, s->scores, pos, c->n_heads,
                                     c->n_kv_heads, hs, team);
        else if (n == 1)
            nf_attention_decode(s->xb, s->q, key_cache, value_cache, layout, s->scores, pos, c->n_heads, c->n_kv_heads,
                                hs, team);
        else { /* a chunk: tiles of rows through sgemm, on the layer's rows read back by position (a bf16
                * cache's widened, so the chunk attends to the values a single row would); row r sees up to
                * pos + r */
            nf_kv_load(s->keys, key_cache, key_cache_bf16, layout, pos + n, c->n_kv_heads, hs);
            nf_kv_load(s->values, value_cache, value_cache_bf16, layout, pos + n, c->n_kv_heads, hs);
            nf_attention_forward(s->xb, NULL, s->q, s->keys, s->values, 1, n, pos, c->n_heads, c->n_kv_heads, hs,
                                 s->att_scratch);
        }
        if (s->timing.on) s->timing.attention_ms += nf_now_ms() - attention_t0;
        products(s, team, &(NfProduct){s->xb2, &lw->wo, D}, 1, s->xb, n, QD);
        lora_apply(s->xb2, s->xb, lora, LORA_WO, l, c, n, s->lora_u);
        for (size_t i = 0; i < ND; i++) s->x[i] += s->xb2[i];

        /* feed-forward block */
        rmsnorm_rows(s->xb, s->x, rms_ffn, n, D, eps);
        products(s, team, (NfProduct[]){{s->hb, &lw->w1, H}, {s->hb2, &lw->w3, H}}, 2, s->xb, n, D);
        lora_apply(s->hb, s->xb, lora, LORA_W1, l, c, n, s->lora_u);
        lora_apply(s->hb2, s->xb, lora, LORA_W3, l, c, n, s->lora_u);
        nf_swiglu_forward(s->hb, s->hb, s->hb2, NH);
        products(s, team, &(NfProduct){s->xb2, &lw->w2, D}, 1, s->hb, n, H);
        lora_apply(s->xb2, s->hb, lora, LORA_W2, l, c, n, s->lora_u);
        for (size_t i = 0; i < ND; i++) s->x[i] += s->xb2[i];
    }
}

/* n tokens in chunks; the last one's logits */
static float *forward_rows(const Model *m, const Lora *lora, InferState *s, const int *tokens, int n, int pos) {
    if (n < 1 || pos < 0 || pos + n > s->max_positions) return NULL; /* callers keep within the cache */
    const ModelConfig *c = &m->config;
    int D = c->dim, rows = 0;
    for (int done = 0; done < n; done += rows) {
        rows = n - done < s->chunk ? n - done : s->chunk;
        forward_chunk(m, lora, s, tokens + done, rows, pos + done);
    }
    /* only the last token's prediction is wanted */
    float *last = s->x + (size_t)(rows - 1) * D;
    nf_rmsnorm(last, last, lora && lora->w.rms_final ? lora->w.rms_final : m->weights.rms_final, D, config_norm_eps(c));
    products(s, row_team(s, lora, 1), &(NfProduct){s->logits, &m->weights.wcls, c->vocab_size}, 1, last, 1, D);
    return s->logits;
}

void infer_adapt_threads(InferState *s, int threads) {
    decode_threads_init(&s->threads, nf_threads_unchosen(threads) ? nf_threads() : 0);
}

/* one token at a count of its own: only where the count cannot change its bits (no LoRA products, which go through
 * oneDNN, nor the baseline tier's) */
static bool token_threads_adapt(const InferState *s, const Lora *lora) {
    return s->threads.max >= 2 && !lora && nf_row_products_thread_invariant();
}

int infer_token_threads(const InferState *s, const Lora *lora) {
    return token_threads_adapt(s, lora) ? decode_threads_next(&s->threads) : nf_threads();
}

float *infer_forward(const Model *m, const Lora *lora, InferState *s, const int *tokens, int n, int pos) {
    if (n > 1 || !token_threads_adapt(s, lora)) return forward_rows(m, lora, s, tokens, n, pos);
    nf_set_threads(decode_threads_next(&s->threads));
    double start = nf_now_ms();
    float *logits = forward_rows(m, lora, s, tokens, n, pos);
    decode_threads_record(&s->threads, nf_now_ms() - start);
    nf_set_threads(s->threads.max); /* prompts and everything else: all of them */
    return logits;
}
