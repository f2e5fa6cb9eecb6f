/* params.c — the flat parameter layout: naming its pieces, filling it from a
 * model file or from llama2.c's initialization, and viewing it as a Model. */
#include "params.h"

#include <math.h>
#include <string.h>

#include "rng.h"
#include "util.h"

int param_segments(const ModelConfig *c, ParamSegment seg[PARAM_SEGMENTS_MAX]) {
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)config_kv_dim(c), V = (size_t)c->vocab_size;
    const struct {
        const char *name;
        size_t count;
        bool is_norm;
    } order[PARAM_SEGMENTS_MAX] = {
        [PARAM_TOKEN_EMBEDDING] = {"token_embedding", V * D, false},
        [PARAM_RMS_ATT] = {"rms_att", L * D, true},
        [PARAM_WQ] = {"wq", L * D * D, false},
        [PARAM_WK] = {"wk", L * KV * D, false},
        [PARAM_WV] = {"wv", L * KV * D, false},
        [PARAM_WO] = {"wo", L * D * D, false},
        [PARAM_RMS_FFN] = {"rms_ffn", L * D, true},
        [PARAM_W1] = {"w1", L * H * D, false},
        [PARAM_W2] = {"w2", L * D * H, false},
        [PARAM_W3] = {"w3", L * H * D, false},
        [PARAM_RMS_FINAL] = {"rms_final", D, true},
        [PARAM_WCLS] = {"wcls", V * D, false},
    };
    int n = c->shared_classifier ? PARAM_SEGMENTS_MAX - 1 : PARAM_SEGMENTS_MAX;
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        seg[i] = (ParamSegment){order[i].name, offset, order[i].count, order[i].is_norm};
        offset += order[i].count;
    }
    return n;
}

void param_pointers(ParamPointers *p, float *base, const ModelConfig *c) {
    ParamSegment seg[PARAM_SEGMENTS_MAX];
    int n = param_segments(c, seg);
    float **fields[PARAM_SEGMENTS_MAX] = {&p->token_embedding, &p->rms_att, &p->wq, &p->wk, &p->wv,        &p->wo,
                                          &p->rms_ffn,         &p->w1,      &p->w2, &p->w3, &p->rms_final, &p->wcls};
    for (int i = 0; i < n; i++) *fields[i] = base + seg[i].offset;
    if (c->shared_classifier) p->wcls = p->token_embedding;
}

int param_view_of_model(ParamPointers *p, const Model *m) {
    const ModelConfig *c = &m->config;
    const ModelWeights *w = &m->weights;
    if (m->dtype != NF_F32) return -1;
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c);
    const LayerWeights *first = &w->layers[0];
    for (int l = 0; l < c->n_layers; l++) { /* every layer's piece must follow the previous one's */
        const LayerWeights *lw = &w->layers[l];
        if (lw->rms_att != first->rms_att + l * D || lw->rms_ffn != first->rms_ffn + l * D ||
            lw->wq.f32 != first->wq.f32 + l * D * D || lw->wk.f32 != first->wk.f32 + l * KV * D ||
            lw->wv.f32 != first->wv.f32 + l * KV * D || lw->wo.f32 != first->wo.f32 + l * D * D ||
            lw->w1.f32 != first->w1.f32 + l * H * D || lw->w2.f32 != first->w2.f32 + l * D * H ||
            lw->w3.f32 != first->w3.f32 + l * H * D)
            return -1;
    }
    /* the model is read-only; ParamPointers is not const only because gradients share the type */
    *p = (ParamPointers){(float *)w->token_embedding.f32, (float *)first->rms_att, (float *)first->wq.f32,
                         (float *)first->wk.f32,          (float *)first->wv.f32,  (float *)first->wo.f32,
                         (float *)first->rms_ffn,         (float *)first->w1.f32,  (float *)first->w2.f32,
                         (float *)first->w3.f32,          (float *)w->rms_final,   (float *)w->wcls.f32};
    return 0;
}

static void copy_matrix(float *dst, const Tensor *t, size_t rows, int cols) {
    for (size_t r = 0; r < rows; r++) tensor_row_f32(t, r, cols, dst + r * (size_t)cols);
}

void params_from_model(float *params, const Model *m) {
    const ModelConfig *c = &m->config;
    ParamPointers p;
    param_pointers(&p, params, c);
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c);
    copy_matrix(p.token_embedding, &m->weights.token_embedding, (size_t)c->vocab_size, c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &m->weights.layers[l];
        memcpy(p.rms_att + l * D, lw->rms_att, D * sizeof(float));
        memcpy(p.rms_ffn + l * D, lw->rms_ffn, D * sizeof(float));
        copy_matrix(p.wq + l * D * D, &lw->wq, D, c->dim);
        copy_matrix(p.wk + l * KV * D, &lw->wk, KV, c->dim);
        copy_matrix(p.wv + l * KV * D, &lw->wv, KV, c->dim);
        copy_matrix(p.wo + l * D * D, &lw->wo, D, c->dim);
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
    ParamPointers p;
    param_pointers(&p, params, c);
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c);
    m->weights.token_embedding = f32(p.token_embedding);
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &m->weights.layers[l];
        lw->rms_att = p.rms_att + l * D;
        lw->rms_ffn = p.rms_ffn + l * D;
        lw->wq = f32(p.wq + l * D * D);
        lw->wk = f32(p.wk + l * KV * D);
        lw->wv = f32(p.wv + l * KV * D);
        lw->wo = f32(p.wo + l * D * D);
        lw->w1 = f32(p.w1 + l * H * D);
        lw->w2 = f32(p.w2 + l * D * H);
        lw->w3 = f32(p.w3 + l * H * D);
    }
    m->weights.rms_final = p.rms_final;
    m->weights.wcls = f32(p.wcls);
    return 0;
}

static void fill_normal(float *x, size_t n, float std, Rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(rng);
}

void params_init(float *params, const ModelConfig *c, uint64_t seed) {
    ParamPointers p;
    param_pointers(&p, params, c);
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)config_kv_dim(c), V = (size_t)c->vocab_size;
    Rng rng;
    rng_seed(&rng, seed);
    float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * (float)L);
    fill_normal(p.token_embedding, V * D, std, &rng);
    fill_normal(p.wq, L * D * D, std, &rng);
    fill_normal(p.wk, L * KV * D, std, &rng);
    fill_normal(p.wv, L * KV * D, std, &rng);
    fill_normal(p.wo, L * D * D, proj_std, &rng);
    fill_normal(p.w1, L * H * D, std, &rng);
    fill_normal(p.w2, L * D * H, proj_std, &rng);
    fill_normal(p.w3, L * H * D, std, &rng);
    if (!c->shared_classifier) fill_normal(p.wcls, V * D, std, &rng);
    for (size_t i = 0; i < L * D; i++) p.rms_att[i] = p.rms_ffn[i] = 1.0f;
    for (size_t i = 0; i < D; i++) p.rms_final[i] = 1.0f;
}
