/* params.c — the flat parameter layout: naming its pieces, filling it from a
 * model file or from llama2.c's initialization, and viewing it as a Model. */
#include "params.h"

#include <math.h>
#include <string.h>

#include "rng.h"
#include "util.h"

int param_segments(const ModelConfig *c, ParamSegment seg[PARAM_SEGMENTS_MAX]) {
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)config_kv_dim(c), V = (size_t)c->vocab_size, QD = (size_t)config_q_dim(c);
    size_t bias = c->qkv_bias ? L : 0, qk_norm = c->qk_norm ? L * (size_t)config_head_size(c) : 0;
    const struct {
        const char *name;
        size_t count;
        bool is_norm;
    } order[PARAM_SEGMENTS_MAX] = {
        [PARAM_TOKEN_EMBEDDING] = {"token_embedding", V * D, false},
        [PARAM_RMS_ATT] = {"rms_att", L * D, true},
        [PARAM_WQ] = {"wq", L * QD * D, false},
        [PARAM_WK] = {"wk", L * KV * D, false},
        [PARAM_WV] = {"wv", L * KV * D, false},
        [PARAM_WO] = {"wo", L * D * QD, false},
        [PARAM_RMS_FFN] = {"rms_ffn", L * D, true},
        [PARAM_W1] = {"w1", L * H * D, false},
        [PARAM_W2] = {"w2", L * D * H, false},
        [PARAM_W3] = {"w3", L * H * D, false},
        [PARAM_RMS_FINAL] = {"rms_final", D, true},
        [PARAM_WCLS] = {"wcls", c->shared_classifier ? 0 : V * D, false},
        [PARAM_BQ] = {"bq", bias * QD, true},
        [PARAM_BK] = {"bk", bias * KV, true},
        [PARAM_BV] = {"bv", bias * KV, true},
        [PARAM_Q_NORM] = {"q_norm", qk_norm, true},
        [PARAM_K_NORM] = {"k_norm", qk_norm, true},
    };
    size_t offset = 0;
    for (int i = 0; i < PARAM_SEGMENTS_MAX; i++) {
        seg[i] = (ParamSegment){order[i].name, offset, order[i].count, order[i].is_norm};
        offset += order[i].count;
    }
    return PARAM_SEGMENTS_MAX;
}

void param_pointers(ParamPointers *p, float *base, const ModelConfig *c) {
    ParamSegment seg[PARAM_SEGMENTS_MAX];
    param_segments(c, seg);
    float **fields[PARAM_SEGMENTS_MAX] = {
        &p->token_embedding, &p->rms_att, &p->wq, &p->wk, &p->wv, &p->wo,     &p->rms_ffn, &p->w1, &p->w2, &p->w3,
        &p->rms_final,       &p->wcls,    &p->bq, &p->bk, &p->bv, &p->q_norm, &p->k_norm};
    for (int i = 0; i < PARAM_SEGMENTS_MAX; i++) *fields[i] = seg[i].count ? base + seg[i].offset : NULL;
    if (c->shared_classifier) p->wcls = p->token_embedding;
}

int param_view_of_model(ParamPointers *p, const Model *m) {
    const ModelConfig *c = &m->config;
    const ModelWeights *w = &m->weights;
    if (m->flat) { /* a flat buffer's view: its pointers */
        param_pointers(p, (float *)m->flat, c);
        return 0;
    }
    if (m->dtype != NF_F32) return -1;
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c), QD = (size_t)config_q_dim(c);
    const LayerWeights *first = &w->layers[0];
    for (int l = 0; l < c->n_layers; l++) { /* every layer's piece must follow the previous one's */
        const LayerWeights *lw = &w->layers[l];
        if (lw->rms_att != first->rms_att + l * D || lw->rms_ffn != first->rms_ffn + l * D ||
            lw->wq.f32 != first->wq.f32 + l * QD * D || lw->wk.f32 != first->wk.f32 + l * KV * D ||
            lw->wv.f32 != first->wv.f32 + l * KV * D || lw->wo.f32 != first->wo.f32 + l * D * QD ||
            lw->w1.f32 != first->w1.f32 + l * H * D || lw->w2.f32 != first->w2.f32 + l * D * H ||
            lw->w3.f32 != first->w3.f32 + l * H * D)
            return -1;
    }
    /* the model is read-only; ParamPointers is not const only because gradients share the type */
    *p = (ParamPointers){(float *)w->token_embedding.f32,
                         (float *)first->rms_att,
                         (float *)first->wq.f32,
                         (float *)first->wk.f32,
                         (float *)first->wv.f32,
                         (float *)first->wo.f32,
                         (float *)first->rms_ffn,
                         (float *)first->w1.f32,
                         (float *)first->w2.f32,
                         (float *)first->w3.f32,
                         (float *)w->rms_final,
                         (float *)w->wcls.f32,
                         NULL,
                         NULL,
                         NULL,
                         NULL,
                         NULL};
    return 0;
}

static void copy_matrix(float *dst, const Tensor *t, size_t rows, int cols) {
    for (size_t r = 0; r < rows; r++) tensor_row_f32(t, r, cols, dst + r * (size_t)cols);
}

void params_from_model(float *params, const Model *m) {
    const ModelConfig *c = &m->config;
    ParamPointers p;
    param_pointers(&p, params, c);
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c), QD = (size_t)config_q_dim(c);
    size_t hs = (size_t)config_head_size(c);
    copy_matrix(p.token_embedding, &m->weights.token_embedding, (size_t)c->vocab_size, c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &m->weights.layers[l];
        memcpy(p.rms_att + l * D, lw->rms_att, D * sizeof(float));
        memcpy(p.rms_ffn + l * D, lw->rms_ffn, D * sizeof(float));
        copy_matrix(p.wq + l * QD * D, &lw->wq, QD, c->dim);
        copy_matrix(p.wk + l * KV * D, &lw->wk, KV, c->dim);
        copy_matrix(p.wv + l * KV * D, &lw->wv, KV, c->dim);
        copy_matrix(p.wo + l * D * QD, &lw->wo, D, (int)QD);
        if (c->qkv_bias) {
            memcpy(p.bq + l * QD, lw->bq, QD * sizeof(float));
            memcpy(p.bk + l * KV, lw->bk, KV * sizeof(float));
            memcpy(p.bv + l * KV, lw->bv, KV * sizeof(float));
        }
        if (c->qk_norm) {
            memcpy(p.q_norm + l * hs, lw->q_norm, hs * sizeof(float));
            memcpy(p.k_norm + l * hs, lw->k_norm, hs * sizeof(float));
        }
        copy_matrix(p.w1 + l * H * D, &lw->w1, H, c->dim);
        copy_matrix(p.w2 + l * D * H, &lw->w2, D, c->hidden_dim);
        copy_matrix(p.w3 + l * H * D, &lw->w3, H, c->dim);
    }
    memcpy(p.rms_final, m->weights.rms_final, D * sizeof(float));
    if (!c->shared_classifier) copy_matrix(p.wcls, &m->weights.wcls, (size_t)c->vocab_size, c->dim);
}

static Tensor f32(const float *p) {
    Tensor t = {.dtype = NF_F32, .f32 = p};
    return t;
}

int model_from_params(Model *m, const ModelConfig *c, float *params, NfError *err) {
    memset(m, 0, sizeof *m);
    m->config = *c;
    m->format = MODEL_LLAMA2C_V0;
    m->dtype = NF_F32;
    m->weights.layers = nf_alloc_array((size_t)c->n_layers, sizeof(LayerWeights), err);
    if (!m->weights.layers) return -1;
    m->flat = params;
    ParamPointers p;
    param_pointers(&p, params, c);
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c), QD = (size_t)config_q_dim(c);
    size_t hs = (size_t)config_head_size(c);
    m->weights.token_embedding = f32(p.token_embedding);
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &m->weights.layers[l];
        lw->rms_att = p.rms_att + l * D;
        lw->rms_ffn = p.rms_ffn + l * D;
        lw->wq = f32(p.wq + l * QD * D);
        lw->wk = f32(p.wk + l * KV * D);
        lw->wv = f32(p.wv + l * KV * D);
        lw->wo = f32(p.wo + l * D * QD);
        if (c->qkv_bias) lw->bq = p.bq + l * QD, lw->bk = p.bk + l * KV, lw->bv = p.bv + l * KV;
        if (c->qk_norm) lw->q_norm = p.q_norm + l * hs, lw->k_norm = p.k_norm + l * hs;
        lw->w1 = f32(p.w1 + l * H * D);
        lw->w2 = f32(p.w2 + l * D * H);
        lw->w3 = f32(p.w3 + l * H * D);
    }
    m->weights.rms_final = p.rms_final;
    m->weights.wcls = f32(p.wcls);
    return 0;
}

/* How a matrix gets its values: n of them with standard deviation std, from ctx's stream. */
typedef void (*FillFn)(float *x, size_t n, float std, void *ctx);

static void fill_normal(float *x, size_t n, float std, void *ctx) {
    Rng *rng = ctx;
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(rng);
}

/* Value i of the stream is a function of its key + i alone, so the threads fill their shares at once and the
 * result does not depend on how many there are; each call takes the next n counter values. Uniform on
 * [-a, a], whose standard deviation is a / sqrt(3). */
static void fill_hashed(float *x, size_t n, float std, void *ctx) {
    uint64_t *key = ctx, first = *key;
    *key += n;
    float a = std * sqrtf(3.0f);
    size_t i;
#pragma omp parallel for schedule(static)
    for (i = 0; i < n; i++) x[i] = a * ((float)(rng_hash(first + i) >> 40) * (2.0f / 16777216.0f) - 1.0f);
}

/* llama2.c's layout of initial values, each matrix drawn by fill. */
static void init_with(float *params, const ModelConfig *c, FillFn fill, void *ctx) {
    ParamPointers p;
    param_pointers(&p, params, c);
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)config_kv_dim(c), V = (size_t)c->vocab_size, QD = (size_t)config_q_dim(c);
    float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * (float)L);
    fill(p.token_embedding, V * D, std, ctx);
    fill(p.wq, L * QD * D, std, ctx);
    fill(p.wk, L * KV * D, std, ctx);
    fill(p.wv, L * KV * D, std, ctx);
    fill(p.wo, L * D * QD, proj_std, ctx);
    fill(p.w1, L * H * D, std, ctx);
    fill(p.w2, L * D * H, proj_std, ctx);
    fill(p.w3, L * H * D, std, ctx);
    if (!c->shared_classifier) fill(p.wcls, V * D, std, ctx);
    for (size_t i = 0; i < L * D; i++) p.rms_att[i] = p.rms_ffn[i] = 1.0f;
    for (size_t i = 0; i < D; i++) p.rms_final[i] = 1.0f;
    /* biases start at zero (HF's _init_weights), q/k norms at one */
    if (c->qkv_bias) memset(p.bq, 0, L * (QD + 2 * KV) * sizeof(float));
    for (size_t i = 0; c->qk_norm && i < L * (size_t)config_head_size(c); i++) p.q_norm[i] = p.k_norm[i] = 1.0f;
}

void params_init(float *params, const ModelConfig *c, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    init_with(params, c, fill_normal, &rng);
}

void params_init_fast(float *params, const ModelConfig *c, uint64_t seed) {
    uint64_t key = rng_hash(seed);
    init_with(params, c, fill_hashed, &key);
}
