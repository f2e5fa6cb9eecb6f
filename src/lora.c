/* lora.c — LoRA adapter layout, naming, initialization and merging. The
 * adapter math inside the training passes is in train_model.c, beside the
 * projections it modifies. */
#include "lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "rng.h"
#include "util.h"

static const char *const TARGET_NAMES[LORA_TARGETS] = {"wq", "wk", "wv", "wo", "w1", "w2", "w3"};
/* the same targets as Hugging Face names them: w1 is the gate, w2 down, w3 up */
static const char *const TARGET_ALIASES[LORA_TARGETS] = {"q", "k", "v", "o", "gate", "down", "up"};
static const char *const SEGMENT_NAMES[LORA_TARGETS][2] = {
    {"wq.lora_a", "wq.lora_b"}, {"wk.lora_a", "wk.lora_b"}, {"wv.lora_a", "wv.lora_b"}, {"wo.lora_a", "wo.lora_b"},
    {"w1.lora_a", "w1.lora_b"}, {"w2.lora_a", "w2.lora_b"}, {"w3.lora_a", "w3.lora_b"},
};

const char *lora_target_name(LoraTarget t) { return TARGET_NAMES[t]; }
const char *lora_target_alias(LoraTarget t) { return TARGET_ALIASES[t]; }

int lora_parse_targets(const char *text, unsigned *mask, NfError *err) {
    size_t digits = strspn(text, "0123456789");
    if (digits > 0 && text[digits] == '\0') {
        long v = digits <= 3 ? strtol(text, NULL, 10) : 0;
        if (v < 1 || v >= (1 << LORA_TARGETS))
            return nf_fail(err, NF_ERR_USAGE, "--lora-targets mask %s is out of range 1..%d", text,
                           (1 << LORA_TARGETS) - 1);
        *mask = (unsigned)v;
        return 0;
    }
    *mask = 0;
    const char *p = text;
    while (1) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int t = 0; t < LORA_TARGETS && found < 0; t++)
            if ((strlen(TARGET_NAMES[t]) == len && strncmp(p, TARGET_NAMES[t], len) == 0) ||
                (strlen(TARGET_ALIASES[t]) == len && strncmp(p, TARGET_ALIASES[t], len) == 0))
                found = t;
        if (found < 0)
            return nf_fail(err, NF_ERR_USAGE,
                           "--lora-targets: unknown target '%.*s' (use wq,wk,wv,wo,w1,w2,w3, q,k,v,o,gate,down,up, "
                           "or a bit mask)",
                           (int)len, p);
        if (*mask & (1u << found))
            return nf_fail(err, NF_ERR_USAGE, "--lora-targets names %s twice", TARGET_NAMES[found]);
        *mask |= 1u << found;
        if (p[len] == '\0') return 0;
        p += len + 1;
    }
}

int lora_config_validate(const LoraConfig *lc, const ModelConfig *c, NfError *err) {
    if (lc->rank < 1 || lc->rank > LORA_MAX_RANK || lc->rank > c->dim)
        return nf_fail(err, NF_ERR_USAGE, "--lora-rank %d is out of range 1..%d (at most the model's dim)", lc->rank,
                       c->dim < LORA_MAX_RANK ? c->dim : LORA_MAX_RANK);
    if (!(lc->alpha > 0.0f) || !isfinite(lc->alpha)) return nf_fail(err, NF_ERR_USAGE, "--lora-alpha must be positive");
    if (!(lc->dropout >= 0.0f && lc->dropout < 1.0f))
        return nf_fail(err, NF_ERR_USAGE, "--lora-dropout must be in [0, 1)");
    if (lc->targets == 0 || lc->targets >= (1u << LORA_TARGETS))
        return nf_fail(err, NF_ERR_USAGE, "--lora-targets must name at least one of wq,wk,wv,wo,w1,w2,w3");
    return 0;
}

void lora_target_dims(const ModelConfig *c, LoraTarget t, int *in, int *out) {
    int D = c->dim, H = c->hidden_dim, KV = config_kv_dim(c), QD = config_q_dim(c);
    switch (t) {
    case LORA_WQ: *in = D, *out = QD; break;
    case LORA_WK:
    case LORA_WV: *in = D, *out = KV; break;
    case LORA_WO: *in = QD, *out = D; break;
    case LORA_W1:
    case LORA_W3: *in = D, *out = H; break;
    case LORA_W2: *in = H, *out = D; break;
    default: *in = *out = 0; break;
    }
}

int lora_segments(const ModelConfig *c, const LoraConfig *lc, ParamSegment seg[LORA_SEGMENTS_MAX]) {
    size_t L = (size_t)c->n_layers, r = (size_t)lc->rank, D = (size_t)c->dim, offset = 0;
    int n = 0;
    for (int t = 0; t < LORA_TARGETS; t++) {
        if (!(lc->targets & (1u << t))) continue;
        int in, out;
        lora_target_dims(c, (LoraTarget)t, &in, &out);
        seg[n++] = (ParamSegment){SEGMENT_NAMES[t][0], offset, L * r * (size_t)in, false};
        offset += L * r * (size_t)in;
        seg[n++] = (ParamSegment){SEGMENT_NAMES[t][1], offset, L * (size_t)out * r, false};
        offset += L * (size_t)out * r;
    }
    if (lc->train_norms) {
        seg[n++] = (ParamSegment){"rms_att", offset, L * D, true};
        seg[n++] = (ParamSegment){"rms_ffn", offset + L * D, L * D, true};
        seg[n++] = (ParamSegment){"rms_final", offset + 2 * L * D, D, true};
    }
    return n;
}

uint64_t lora_param_count(const ModelConfig *c, const LoraConfig *lc) {
    ParamSegment seg[LORA_SEGMENTS_MAX];
    int n = lora_segments(c, lc, seg);
    return n ? seg[n - 1].offset + seg[n - 1].count : 0;
}

void lora_pointers(LoraPointers *p, float *buffer, const ModelConfig *c, const LoraConfig *lc) {
    memset(p, 0, sizeof *p);
    ParamSegment seg[LORA_SEGMENTS_MAX];
    int n = lora_segments(c, lc, seg), i = 0;
    for (int t = 0; t < LORA_TARGETS; t++) {
        if (!(lc->targets & (1u << t))) continue;
        p->a[t] = buffer + seg[i++].offset;
        p->b[t] = buffer + seg[i++].offset;
    }
    if (lc->train_norms) {
        p->rms_att = buffer + seg[n - 3].offset;
        p->rms_ffn = buffer + seg[n - 2].offset;
        p->rms_final = buffer + seg[n - 1].offset;
    }
}

void lora_init(float *buffer, const ModelConfig *c, const LoraConfig *lc, const ParamPointers *base, uint64_t seed) {
    LoraPointers p;
    lora_pointers(&p, buffer, c, lc);
    Rng rng;
    rng_seed(&rng, seed);
    size_t L = (size_t)c->n_layers, r = (size_t)lc->rank, D = (size_t)c->dim;
    for (int t = 0; t < LORA_TARGETS; t++) {
        if (!p.a[t]) continue;
        int in, out;
        lora_target_dims(c, (LoraTarget)t, &in, &out);
        float bound = 1.0f / sqrtf((float)in);
        for (size_t i = 0; i < L * r * (size_t)in; i++) p.a[t][i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
        memset(p.b[t], 0, L * (size_t)out * r * sizeof(float));
    }
    if (lc->train_norms) {
        memcpy(p.rms_att, base->rms_att, L * D * sizeof(float));
        memcpy(p.rms_ffn, base->rms_ffn, L * D * sizeof(float));
        memcpy(p.rms_final, base->rms_final, D * sizeof(float));
    }
}

int lora_merge(float *base_params, const ModelConfig *c, const Lora *lora, NfError *err) {
    int widest = c->dim > c->hidden_dim ? c->dim : c->hidden_dim;
    widest = widest > config_q_dim(c) ? widest : config_q_dim(c);
    size_t most = (size_t)widest * (size_t)lora->config.rank;
    float *scaled_b = nf_alloc_array(most, sizeof(float), err);
    if (!scaled_b) return -1;
    ParamPointers base;
    param_pointers(&base, base_params, c);
    float *weights[LORA_TARGETS] = {base.wq, base.wk, base.wv, base.wo, base.w1, base.w2, base.w3};
    size_t L = (size_t)c->n_layers, r = (size_t)lora->config.rank, D = (size_t)c->dim;
    float s = lora_scale(&lora->config);
    for (int t = 0; t < LORA_TARGETS; t++) {
        if (!lora->w.a[t]) continue;
        int in, out;
        lora_target_dims(c, (LoraTarget)t, &in, &out);
        for (size_t l = 0; l < L; l++) {
            const float *A = lora->w.a[t] + l * r * in, *B = lora->w.b[t] + l * (size_t)out * r;
            for (size_t i = 0; i < (size_t)out * r; i++) scaled_b[i] = s * B[i];
            /* W (out, in) += (s B) (out, r) @ A (r, in): the product of a backward input gradient */
            nf_matmul_backward(weights[t] + l * (size_t)out * in, NF_ADD, NULL, NF_ADD, scaled_b, NULL, A, out, in,
                               (int)r);
        }
    }
    if (lora->config.train_norms) {
        memcpy(base.rms_att, lora->w.rms_att, L * D * sizeof(float));
        memcpy(base.rms_ffn, lora->w.rms_ffn, L * D * sizeof(float));
        memcpy(base.rms_final, lora->w.rms_final, D * sizeof(float));
    }
    free(scaled_b);
    return 0;
}

void lora_apply(float *y, const float *x, const Lora *lora, LoraTarget t, int layer, const ModelConfig *c, int n,
                float *u) {
    if (!lora || !lora->w.a[t]) return;
    int in, out, r = lora->config.rank;
    lora_target_dims(c, t, &in, &out);
    float s = lora_scale(&lora->config);
    nf_matmul_forward(u, x, lora->w.a[t] + (size_t)layer * r * in, n, in, r);
    for (size_t i = 0; i < (size_t)n * r; i++) u[i] *= s;
    nf_matmul_forward_add(y, u, lora->w.b[t] + (size_t)layer * out * r, n, r, out);
}
