/* model.c — validating and mapping llama2.c model files (v0, v1, v2). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define AK42_MAGIC          0x616b3432u
#define AK42_HEADER_BYTES   256
#define LEGACY_HEADER_BYTES 28

int config_validate(const ModelConfig *c, NfError *err) {
#define CHECK_RANGE(field, lo, hi)                                                                               \
    do {                                                                                                         \
        if (c->field < (lo) || c->field > (hi))                                                                  \
            return nf_fail(err, NF_ERR_MODEL, #field " %d is outside [%d, %d]", c->field, (int)(lo), (int)(hi)); \
    } while (0)
    CHECK_RANGE(dim, 2, NF_MAX_DIM);
    CHECK_RANGE(hidden_dim, 1, NF_MAX_HIDDEN);
    CHECK_RANGE(n_layers, 1, NF_MAX_LAYERS);
    CHECK_RANGE(n_heads, 1, c->dim);
    CHECK_RANGE(n_kv_heads, 1, c->n_heads);
    CHECK_RANGE(vocab_size, 1, NF_MAX_VOCAB);
    CHECK_RANGE(seq_len, 1, NF_MAX_SEQ_LEN);
#undef CHECK_RANGE
    if (c->head_dim < 0 || c->head_dim > NF_MAX_DIM || (int64_t)c->head_dim * c->n_heads > NF_MAX_DIM)
        return nf_fail(err, NF_ERR_MODEL, "head_dim %d with %d heads is outside [1, %d] in all", c->head_dim,
                       c->n_heads, NF_MAX_DIM);
    if (c->head_dim == 0 && c->dim % c->n_heads != 0)
        return nf_fail(err, NF_ERR_MODEL, "dim %d is not a multiple of n_heads %d", c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return nf_fail(err, NF_ERR_MODEL, "n_kv_heads %d does not divide n_heads %d", c->n_kv_heads, c->n_heads);
    if (config_head_size(c) % 2 != 0)
        return nf_fail(err, NF_ERR_MODEL, "head size %d is odd; RoPE needs pairs", config_head_size(c));
    if ((unsigned)c->arch > ARCH_QWEN3) return nf_fail(err, NF_ERR_MODEL, "architecture %d is unknown", (int)c->arch);
    if (c->rope_theta != 0 && !(c->rope_theta >= 1.0f && c->rope_theta <= 1e9f))
        return nf_fail(err, NF_ERR_MODEL, "rope_theta %g is outside [1, 1e9]", c->rope_theta);
    if (c->norm_eps != 0 && !(c->norm_eps >= 1e-12f && c->norm_eps <= 0.1f))
        return nf_fail(err, NF_ERR_MODEL, "rms_norm_eps %g is outside [1e-12, 0.1]", c->norm_eps);
    const RopeScaling *s = &c->rope_scaling;
    if (s->type == ROPE_SCALING_LLAMA3) {
        if (!(s->factor >= 1.0f && s->factor <= 1024.0f) || !(s->low_freq_factor > 0.0f) ||
            !(s->high_freq_factor > s->low_freq_factor && s->high_freq_factor <= 1024.0f) || s->original_context < 1 ||
            s->original_context > NF_MAX_SEQ_LEN)
            return nf_fail(err, NF_ERR_MODEL,
                           "llama3 RoPE scaling needs factor in [1, 1024], 0 < low_freq_factor < high_freq_factor "
                           "and an original context in [1, %d]",
                           NF_MAX_SEQ_LEN);
    } else if (s->type != ROPE_SCALING_NONE) {
        return nf_fail(err, NF_ERR_MODEL, "RoPE scaling type %d is unknown", (int)s->type);
    }
    return 0;
}

const char *config_beyond_llama2c(const ModelConfig *c, char *buf, size_t cap) {
    if (c->arch != ARCH_LLAMA)
        snprintf(buf, cap, "the %s architecture", model_arch_name(c->arch));
    else if (config_q_dim(c) != c->dim)
        snprintf(buf, cap, "head_dim %d apart from dim / n_heads", config_head_size(c));
    else if (c->qkv_bias)
        snprintf(buf, cap, "q/k/v biases");
    else if (c->qk_norm)
        snprintf(buf, cap, "q/k norms");
    else if (config_rope_theta(c) != 10000.0f)
        snprintf(buf, cap, "rope_theta %g", config_rope_theta(c));
    else if (c->rope_scaling.type != ROPE_SCALING_NONE)
        snprintf(buf, cap, "llama3 RoPE scaling");
    else if (config_norm_eps(c) != 1e-5f)
        snprintf(buf, cap, "rms_norm_eps %g", config_norm_eps(c));
    else
        return NULL;
    return buf;
}

static const char *const ARCH_NAMES[] = {[ARCH_LLAMA] = "llama", [ARCH_QWEN2] = "qwen2", [ARCH_QWEN3] = "qwen3"};

const char *model_arch_name(ModelArch a) { return (unsigned)a <= ARCH_QWEN3 ? ARCH_NAMES[a] : "unknown"; }

int model_arch_parse(const char *name, ModelArch *a) {
    for (int i = 0; i <= ARCH_QWEN3; i++)
        if (strcmp(name, ARCH_NAMES[i]) == 0) {
            *a = (ModelArch)i;
            return 0;
        }
    return -1;
}

float config_rope_freq(const ModelConfig *c, int pair) {
    int hs = config_head_size(c);
    /* the float expression of llama2.c's run.c, so greedy outputs match it bit for bit */
    float freq = 1.0f / powf(config_rope_theta(c), (float)(2 * pair) / (float)hs);
    const RopeScaling *s = &c->rope_scaling;
    if (s->type != ROPE_SCALING_LLAMA3) return freq;
    /* HF's _compute_llama3_parameters, in float as it computes */
    float wavelen = 6.28318530717958647692f / freq;
    float low_wavelen = (float)s->original_context / s->low_freq_factor;
    float high_wavelen = (float)s->original_context / s->high_freq_factor;
    if (wavelen > low_wavelen) return freq / s->factor;
    if (wavelen < high_wavelen) return freq;
    float smooth =
        ((float)s->original_context / wavelen - s->low_freq_factor) / (s->high_freq_factor - s->low_freq_factor);
    return (1.0f - smooth) * freq / s->factor + smooth * freq;
}

/* Element counts of each weight, all layers together. The bounds in
 * config_validate keep every product below 2^62. */
typedef struct {
    uint64_t embedding, norm_layers, attn_q, attn_kv, attn_o, ffn, norm_final, classifier, bias, qk_norm;
} WeightCounts;

static WeightCounts weight_counts(const ModelConfig *c) {
    uint64_t L = (uint64_t)c->n_layers, D = (uint64_t)c->dim, H = (uint64_t)c->hidden_dim;
    uint64_t KV = (uint64_t)config_kv_dim(c), V = (uint64_t)c->vocab_size, QD = (uint64_t)config_q_dim(c);
    WeightCounts w;
    w.embedding = V * D;
    w.norm_layers = L * D;
    w.attn_q = L * QD * D;
    w.attn_kv = L * KV * D;
    w.attn_o = L * D * QD;
    w.ffn = L * H * D;
    w.norm_final = D;
    w.classifier = c->shared_classifier ? 0 : V * D;
    w.bias = c->qkv_bias ? L * (QD + 2 * KV) : 0;
    w.qk_norm = c->qk_norm ? 2 * L * (uint64_t)config_head_size(c) : 0;
    return w;
}

bool config_equal(const ModelConfig *a, const ModelConfig *b) {
    const RopeScaling *x = &a->rope_scaling, *y = &b->rope_scaling;
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->vocab_size == b->vocab_size &&
           a->seq_len == b->seq_len && a->shared_classifier == b->shared_classifier &&
           config_head_size(a) == config_head_size(b) && a->arch == b->arch && a->qkv_bias == b->qkv_bias &&
           a->qk_norm == b->qk_norm && config_rope_theta(a) == config_rope_theta(b) &&
           config_norm_eps(a) == config_norm_eps(b) && x->type == y->type &&
           (x->type == ROPE_SCALING_NONE ||
            (x->factor == y->factor && x->low_freq_factor == y->low_freq_factor &&
             x->high_freq_factor == y->high_freq_factor && x->original_context == y->original_context));
}

uint64_t config_param_count(const ModelConfig *c) {
    WeightCounts w = weight_counts(c);
    return w.embedding + 2 * w.norm_layers + w.attn_q + 2 * w.attn_kv + w.attn_o + 3 * w.ffn + w.norm_final +
           w.classifier + w.bias + w.qk_norm;
}

const char *model_format_name(ModelFormat f) {
    switch (f) {
    case MODEL_LLAMA2C_V0: return "llama2c-v0";
    case MODEL_LLAMA2C_V1: return "llama2c-v1";
    case MODEL_LLAMA2C_V2: return "llama2c-v2-q8_0";
    case MODEL_HF: return "hf-safetensors";
    case MODEL_GGUF: return "gguf";
    }
    return "unknown";
}

void tensor_row_f32(const Tensor *t, size_t row, int cols, float *out) {
    size_t base = row * (size_t)cols;
    if (t->dtype == NF_F32) {
        memcpy(out, t->f32 + base, (size_t)cols * sizeof(float));
        return;
    }
    for (int i = 0; i < cols; i++) out[i] = t->q[base + i] * tensor_q8_scale(t, (base + i) / (size_t)t->group_size);
}

static int32_t read_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void read_config7(const unsigned char *p, ModelConfig *c) {
    c->dim = read_i32(p);
    c->hidden_dim = read_i32(p + 4);
    c->n_layers = read_i32(p + 8);
    c->n_heads = read_i32(p + 12);
    c->n_kv_heads = read_i32(p + 16);
    c->vocab_size = read_i32(p + 20);
    c->seq_len = read_i32(p + 24);
}

static int check_size(const char *path, uint64_t expected, size_t actual, NfError *err) {
    if (expected != actual)
        return nf_fail(err, NF_ERR_MODEL, "model file '%s' is %zu bytes but its header describes %llu bytes (%s)", path,
                       actual, (unsigned long long)expected, actual < expected ? "truncated" : "trailing data");
    return 0;
}

/* Walks the mapped file in the order the format stores tensors. The file
 * size was checked against the header first, so every take succeeds. */
typedef struct {
    const unsigned char *p;
    DType dtype;       /* of the matrices */
    int group_size;    /* Q8 */
    float *scale_copy; /* Q8 with group_size % 4 != 0: aligned home for the scales */
} Reader;

static const float *read_f32(Reader *r, uint64_t n) {
    const float *v = (const float *)r->p;
    r->p += 4 * n;
    return v;
}

static Tensor read_matrix(Reader *r, uint64_t n) {
    Tensor t = {.dtype = r->dtype, .group_size = r->group_size};
    if (r->dtype == NF_F32) {
        t.f32 = read_f32(r, n);
        return t;
    }
    /* Q8_0 as llama2.c's export writes it: the int8 values, then one fp32 scale per group */
    t.q = (const int8_t *)r->p;
    r->p += n;
    uint64_t groups = n / (uint64_t)r->group_size;
    if (r->scale_copy) {
        memcpy(r->scale_copy, r->p, 4 * groups);
        t.scale = r->scale_copy;
        r->scale_copy += groups;
        r->p += 4 * groups;
    } else {
        t.scale = read_f32(r, groups);
    }
    return t;
}

#define FOR_EACH_LAYER(m, field, value) \
    for (int l_ = 0; l_ < (m)->config.n_layers; l_++) (m)->weights.layers[l_].field = (value)

static void read_legacy_layout(Model *m, Reader *r) {
    const ModelConfig *c = &m->config;
    uint64_t D = (uint64_t)c->dim, H = (uint64_t)c->hidden_dim, KV = (uint64_t)config_kv_dim(c);
    m->weights.token_embedding = read_matrix(r, (uint64_t)c->vocab_size * D);
    FOR_EACH_LAYER(m, rms_att, read_f32(r, D));
    FOR_EACH_LAYER(m, wq, read_matrix(r, D * D));
    FOR_EACH_LAYER(m, wk, read_matrix(r, KV * D));
    FOR_EACH_LAYER(m, wv, read_matrix(r, KV * D));
    FOR_EACH_LAYER(m, wo, read_matrix(r, D * D));
    FOR_EACH_LAYER(m, rms_ffn, read_f32(r, D));
    FOR_EACH_LAYER(m, w1, read_matrix(r, H * D));
    FOR_EACH_LAYER(m, w2, read_matrix(r, D * H));
    FOR_EACH_LAYER(m, w3, read_matrix(r, H * D));
    m->weights.rms_final = read_f32(r, D);
    read_f32(r, (uint64_t)c->seq_len * (uint64_t)config_head_size(c)); /* freq_cis: RoPE is computed */
    m->weights.wcls = c->shared_classifier ? m->weights.token_embedding : read_matrix(r, (uint64_t)c->vocab_size * D);
}

/* v1 and v2: the norms first (always fp32), then the matrices in the reader's dtype. */
static void read_ak42_layout(Model *m, Reader *r) {
    const ModelConfig *c = &m->config;
    uint64_t D = (uint64_t)c->dim, H = (uint64_t)c->hidden_dim, KV = (uint64_t)config_kv_dim(c);
    FOR_EACH_LAYER(m, rms_att, read_f32(r, D));
    FOR_EACH_LAYER(m, rms_ffn, read_f32(r, D));
    m->weights.rms_final = read_f32(r, D);
    m->weights.token_embedding = read_matrix(r, (uint64_t)c->vocab_size * D);
    FOR_EACH_LAYER(m, wq, read_matrix(r, D * D));
    FOR_EACH_LAYER(m, wk, read_matrix(r, KV * D));
    FOR_EACH_LAYER(m, wv, read_matrix(r, KV * D));
    FOR_EACH_LAYER(m, wo, read_matrix(r, D * D));
    FOR_EACH_LAYER(m, w1, read_matrix(r, H * D));
    FOR_EACH_LAYER(m, w2, read_matrix(r, D * H));
    FOR_EACH_LAYER(m, w3, read_matrix(r, H * D));
    m->weights.wcls = c->shared_classifier ? m->weights.token_embedding : read_matrix(r, (uint64_t)c->vocab_size * D);
}

static int alloc_layers(Model *m, NfError *err) {
    m->weights.layers = nf_alloc_array((size_t)m->config.n_layers, sizeof(LayerWeights), err);
    return m->weights.layers ? 0 : -1;
}

static int load_legacy(Model *m, const char *path, NfError *err) {
    ModelConfig *c = &m->config;
    read_config7(m->file.data, c);
    c->shared_classifier = c->vocab_size > 0;
    if (c->vocab_size < 0) c->vocab_size = c->vocab_size == INT32_MIN ? 0 : -c->vocab_size; /* 0 fails validation */
    if (config_validate(c, err) != 0) return -1;
    uint64_t freq_cis = (uint64_t)c->seq_len * (uint64_t)config_head_size(c); /* cos and sin halves */
    uint64_t floats = config_param_count(c) + freq_cis;
    if (check_size(path, LEGACY_HEADER_BYTES + 4 * floats, m->file.size, err) != 0) return -1;
    if (alloc_layers(m, err) != 0) return -1;
    Reader r = {m->file.data + LEGACY_HEADER_BYTES, NF_F32, 0, NULL};
    read_legacy_layout(m, &r);
    m->format = MODEL_LLAMA2C_V0;
    m->dtype = NF_F32;
    return 0;
}

static int load_v1(Model *m, const char *path, NfError *err) {
    if (check_size(path, AK42_HEADER_BYTES + 4 * config_param_count(&m->config), m->file.size, err) != 0) return -1;
    if (alloc_layers(m, err) != 0) return -1;
    Reader r = {m->file.data + AK42_HEADER_BYTES, NF_F32, 0, NULL};
    read_ak42_layout(m, &r);
    m->format = MODEL_LLAMA2C_V1;
    m->dtype = NF_F32;
    return 0;
}

static int load_v2(Model *m, const char *path, NfError *err) {
    const ModelConfig *c = &m->config;
    int group_size = read_i32(m->file.data + 37);
    if (group_size <= 0 || group_size > 4096 || c->dim % group_size != 0)
        return nf_fail(err, NF_ERR_MODEL, "Q8_0 group size %d is invalid for dim %d", group_size, c->dim);
    WeightCounts w = weight_counts(c);
    uint64_t norms = 2 * w.norm_layers + w.norm_final;
    uint64_t quantized = config_param_count(c) - norms;
    uint64_t groups = quantized / (uint64_t)group_size; /* every matrix is a whole number of groups */
    if (check_size(path, AK42_HEADER_BYTES + 4 * norms + quantized + 4 * groups, m->file.size, err) != 0) return -1;
    if (alloc_layers(m, err) != 0) return -1;
    Reader r = {m->file.data + AK42_HEADER_BYTES, NF_Q8, group_size, NULL};
    if (group_size % 4 != 0) {
        /* int8 blocks of such a length leave the fp32 scales after them unaligned */
        if (!(m->owned = nf_alloc_array(groups, sizeof(float), err))) return -1;
        r.scale_copy = m->owned;
    }
    read_ak42_layout(m, &r);
    m->format = MODEL_LLAMA2C_V2;
    m->dtype = NF_Q8;
    m->group_size = group_size;
    return 0;
}

int model_load(Model *m, const char *path, NfError *err) {
    memset(m, 0, sizeof *m);
    if (mapped_file_open(&m->file, path, "model", err) != 0) return -1;
    const MappedFile *f = &m->file;
    int rc;
    if (f->size < LEGACY_HEADER_BYTES) {
        rc = nf_fail(err, NF_ERR_MODEL, "model file '%s' is too short (%zu bytes) to hold a header", path, f->size);
    } else if ((uint32_t)read_i32(f->data) == AK42_MAGIC) {
        if (f->size < AK42_HEADER_BYTES) {
            rc = nf_fail(err, NF_ERR_MODEL, "model file '%s' is truncated inside its 256-byte header", path);
        } else {
            int version = read_i32(f->data + 4);
            read_config7(f->data + 8, &m->config);
            m->config.shared_classifier = f->data[36] != 0;
            if (f->data[36] > 1)
                rc = nf_fail(err, NF_ERR_MODEL, "model file '%s' has an invalid shared-classifier flag %d", path,
                             f->data[36]);
            else if (config_validate(&m->config, err) != 0)
                rc = -1;
            else if (version == 1)
                rc = load_v1(m, path, err);
            else if (version == 2)
                rc = load_v2(m, path, err);
            else
                rc = nf_fail(err, NF_ERR_MODEL, "model file '%s' has unsupported version %d (1 and 2 are known)", path,
                             version);
        }
    } else {
        rc = load_legacy(m, path, err);
    }
    if (rc != 0) {
        /* Say which file the header problem came from. */
        if (err && strstr(err->message, path) == NULL) nf_prefix(err, NULL, "model file '%s': ", path);
        model_free(m);
    }
    return rc;
}

/* A Q8Fill that quantizes t's fp32 values: per group, scale = max |value| / 127 and value / scale rounded. The
 * groups are independent, so the threads share them (a 1B model's 1.2 billion values took 20 s on one). */
static void quantize_fill(void *ctx, const Tensor *t, size_t count, int gs, int8_t *q, float *scale,
                          uint16_t *scale_f16) {
    (void)ctx, (void)scale_f16; /* model_quantize_q8 asks for fp32 scales */
    const float *w = t->f32;
    size_t groups = (count + (size_t)gs - 1) / (size_t)gs, g;
#pragma omp parallel for schedule(static)
    for (g = 0; g < groups; g++) {
        size_t start = g * gs, end = start + gs < count ? start + gs : count;
        float max = 0.0f;
        for (size_t i = start; i < end; i++) max = fabsf(w[i]) > max ? fabsf(w[i]) : max;
        float s = max / 127.0f, inv = s > 0 ? 1.0f / s : 0.0f;
        for (size_t i = start; i < end; i++) q[i] = (int8_t)lrintf(w[i] * inv);
        scale[g] = s;
    }
}

int model_q8_group_size(const ModelConfig *c) {
    for (int gs = NF_Q8_GROUP; gs >= 16; gs /= 2)
        if (c->dim % gs == 0 && config_q_dim(c) % gs == 0 && c->hidden_dim % gs == 0) return gs;
    return NF_Q8_GROUP;
}

int model_to_q8(Model *m, int group_size, bool f16_scales, Q8Fill fill, void *ctx, NfError *err) {
    if (m->dtype == NF_Q8) return 0;
    if (f16_scales && group_size != 32)
        return nf_fail(err, NF_ERR_MODEL, "fp16 Q8 scales come in groups of 32, not %d", group_size);
    const ModelConfig *c = &m->config;
    size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c), V = (size_t)c->vocab_size;
    size_t QD = (size_t)config_q_dim(c), gs = (size_t)group_size;
    /* every matrix: (tensor, values); the layers' seven, the embedding and a separate classifier */
    size_t n_tensors = 7 * (size_t)c->n_layers + 2, bytes = 0;
    Tensor **tensors = nf_alloc_array(n_tensors, sizeof(Tensor *), err);
    size_t *counts = nf_alloc_array(n_tensors, sizeof(size_t), err);
    if (!tensors || !counts) {
        free(tensors);
        free(counts);
        return -1;
    }
    size_t n = 0;
    tensors[n] = &m->weights.token_embedding, counts[n++] = V * D;
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &m->weights.layers[l];
        Tensor *t[7] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w1, &lw->w2, &lw->w3};
        size_t sizes[7] = {QD * D, KV * D, KV * D, D * QD, H * D, D * H, H * D};
        for (int i = 0; i < 7; i++) tensors[n] = t[i], counts[n++] = sizes[i];
    }
    if (!c->shared_classifier) tensors[n] = &m->weights.wcls, counts[n++] = V * D;
    size_t scale_bytes = f16_scales ? sizeof(uint16_t) : sizeof(float);
    for (size_t i = 0; i < n; i++) bytes += counts[i] + (counts[i] + gs - 1) / gs * scale_bytes + 64;
    unsigned char *block = nf_alloc(bytes, err);
    if (!block) {
        free(tensors);
        free(counts);
        return -1;
    }
    /* The fp32 matrices go once their Q8 form is made, where the model owns them (imported, or a checkpoint's):
     * the rest of that buffer (norms, biases) stays in use. A mapped file's pages are the page cache's, and flat
     * buffers of others (benchmark's) are theirs. */
    bool release = m->owned && m->flat == m->owned;
    unsigned char *p = block;
    for (size_t i = 0; i < n; i++) {
        size_t groups = (counts[i] + gs - 1) / gs;
        float *scale = f16_scales ? NULL : (float *)p;
        uint16_t *scale_f16 = f16_scales ? (uint16_t *)p : NULL;
        int8_t *q = (int8_t *)(p + groups * scale_bytes);
        fill(ctx, tensors[i], counts[i], group_size, q, scale, scale_f16);
        if (release) nf_release_pages(tensors[i]->f32, counts[i] * sizeof(float));
        *tensors[i] =
            (Tensor){.dtype = NF_Q8, .q = q, .scale = scale, .scale_f16 = scale_f16, .group_size = group_size};
        p += groups * scale_bytes + (counts[i] + 63) / 64 * 64; /* keep the next scales aligned */
    }
    if (c->shared_classifier) m->weights.wcls = m->weights.token_embedding;
    if (release) m->flat = NULL; /* its matrices are gone: params.h's view of it would read zeros */
    free(tensors);
    free(counts);
    m->quantized = block;
    m->dtype = NF_Q8;
    m->group_size = group_size;
    return 0;
}

int model_quantize_q8(Model *m, NfError *err) {
    return model_to_q8(m, model_q8_group_size(&m->config), false, quantize_fill, NULL, err);
}

void model_free(Model *m) {
    mapped_file_close(&m->file);
    free(m->weights.layers);
    free(m->owned);
    free(m->quantized);
    memset(m, 0, sizeof *m);
}
