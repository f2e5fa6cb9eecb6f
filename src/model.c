/* model.c — validating and mapping llama2.c model files (v0, v1, v2). */
#include "model.h"

#include <stdlib.h>
#include <string.h>

#define AK42_MAGIC 0x616b3432u
#define AK42_HEADER_BYTES 256
#define LEGACY_HEADER_BYTES 28

int config_validate(const ModelConfig *c, NfError *err) {
#define CHECK_RANGE(field, lo, hi)                                                              \
    if (c->field < (lo) || c->field > (hi))                                                     \
        return nf_fail(err, NF_ERR_MODEL, #field " %d is outside [%d, %d]", c->field, (int)(lo), (int)(hi))
    CHECK_RANGE(dim, 2, NF_MAX_DIM);
    CHECK_RANGE(hidden_dim, 1, NF_MAX_HIDDEN);
    CHECK_RANGE(n_layers, 1, NF_MAX_LAYERS);
    CHECK_RANGE(n_heads, 1, c->dim);
    CHECK_RANGE(n_kv_heads, 1, c->n_heads);
    CHECK_RANGE(vocab_size, 1, NF_MAX_VOCAB);
    CHECK_RANGE(seq_len, 1, NF_MAX_SEQ_LEN);
#undef CHECK_RANGE
    if (c->dim % c->n_heads != 0)
        return nf_fail(err, NF_ERR_MODEL, "dim %d is not a multiple of n_heads %d", c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return nf_fail(err, NF_ERR_MODEL, "n_kv_heads %d does not divide n_heads %d", c->n_kv_heads, c->n_heads);
    if (config_head_size(c) % 2 != 0)
        return nf_fail(err, NF_ERR_MODEL, "head size %d is odd; RoPE needs pairs", config_head_size(c));
    return 0;
}

/* Element counts of each weight, all layers together. The bounds in
 * config_validate keep every product below 2^62. */
typedef struct {
    uint64_t embedding, norm_layers, attn_q, attn_kv, attn_o, ffn, norm_final, classifier;
} WeightCounts;

static WeightCounts weight_counts(const ModelConfig *c) {
    uint64_t L = (uint64_t)c->n_layers, D = (uint64_t)c->dim, H = (uint64_t)c->hidden_dim;
    uint64_t KV = (uint64_t)config_kv_dim(c), V = (uint64_t)c->vocab_size;
    WeightCounts w;
    w.embedding = V * D;
    w.norm_layers = L * D;
    w.attn_q = L * D * D;
    w.attn_kv = L * KV * D;
    w.attn_o = L * D * D;
    w.ffn = L * H * D;
    w.norm_final = D;
    w.classifier = c->shared_classifier ? 0 : V * D;
    return w;
}

uint64_t config_param_count(const ModelConfig *c) {
    WeightCounts w = weight_counts(c);
    return w.embedding + 2 * w.norm_layers + w.attn_q + 2 * w.attn_kv + w.attn_o + 3 * w.ffn +
           w.norm_final + w.classifier;
}

const char *model_format_name(ModelFormat f) {
    switch (f) {
    case MODEL_LLAMA2C_V0: return "llama2c-v0";
    case MODEL_LLAMA2C_V1: return "llama2c-v1";
    case MODEL_LLAMA2C_V2: return "llama2c-v2-q8_0";
    }
    return "unknown";
}

Tensor tensor_offset(const Tensor *t, size_t offset) {
    Tensor v = *t;
    if (t->dtype == NF_F32) {
        v.f32 = t->f32 + offset;
    } else {
        v.q = t->q + offset;
        v.scale = t->scale + offset / (size_t)t->group_size;
    }
    return v;
}

void tensor_row_f32(const Tensor *t, size_t row, int cols, float *out) {
    size_t base = row * (size_t)cols;
    if (t->dtype == NF_F32) {
        memcpy(out, t->f32 + base, (size_t)cols * sizeof(float));
        return;
    }
    for (int i = 0; i < cols; i++)
        out[i] = t->q[base + i] * t->scale[(base + i) / (size_t)t->group_size];
}

/* Walks the mapped file; sizes were checked before, so running past the end is a bug. */
typedef struct {
    const unsigned char *p, *end;
} Cursor;

static const void *take(Cursor *c, uint64_t bytes) {
    if ((uint64_t)(c->end - c->p) < bytes) return NULL;
    const void *r = c->p;
    c->p += bytes;
    return r;
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

static Tensor f32_tensor(const void *p) {
    Tensor t = {.dtype = NF_F32, .f32 = p};
    return t;
}

static int check_size(const char *path, uint64_t expected, size_t actual, NfError *err) {
    if (expected != actual)
        return nf_fail(err, NF_ERR_MODEL,
                       "model file '%s' is %zu bytes but its header describes %llu bytes (%s)", path, actual,
                       (unsigned long long)expected, actual < expected ? "truncated" : "trailing data");
    return 0;
}

static int load_legacy(Model *m, const char *path, NfError *err) {
    const MappedFile *f = &m->file;
    ModelConfig *c = &m->config;
    read_config7(f->data, c);
    c->shared_classifier = c->vocab_size > 0;
    if (c->vocab_size < 0) c->vocab_size = -c->vocab_size;
    if (config_validate(c, err) != 0) return -1;
    WeightCounts w = weight_counts(c);
    uint64_t freq_cis = (uint64_t)c->seq_len * (uint64_t)config_head_size(c); /* cos and sin halves */
    uint64_t floats = config_param_count(c) + freq_cis;
    if (check_size(path, LEGACY_HEADER_BYTES + 4 * floats, f->size, err) != 0) return -1;

    Cursor cur = {f->data + LEGACY_HEADER_BYTES, f->data + f->size};
    ModelWeights *mw = &m->weights;
    mw->token_embedding = f32_tensor(take(&cur, 4 * w.embedding));
    mw->rms_att = take(&cur, 4 * w.norm_layers);
    mw->wq = f32_tensor(take(&cur, 4 * w.attn_q));
    mw->wk = f32_tensor(take(&cur, 4 * w.attn_kv));
    mw->wv = f32_tensor(take(&cur, 4 * w.attn_kv));
    mw->wo = f32_tensor(take(&cur, 4 * w.attn_o));
    mw->rms_ffn = take(&cur, 4 * w.norm_layers);
    mw->w1 = f32_tensor(take(&cur, 4 * w.ffn));
    mw->w2 = f32_tensor(take(&cur, 4 * w.ffn));
    mw->w3 = f32_tensor(take(&cur, 4 * w.ffn));
    mw->rms_final = take(&cur, 4 * w.norm_final);
    take(&cur, 4 * freq_cis); /* RoPE is computed, not read */
    mw->wcls = c->shared_classifier ? mw->token_embedding : f32_tensor(take(&cur, 4 * w.classifier));
    m->format = MODEL_LLAMA2C_V0;
    m->dtype = NF_F32;
    return 0;
}

static int load_v1(Model *m, const char *path, NfError *err) {
    const MappedFile *f = &m->file;
    ModelConfig *c = &m->config;
    WeightCounts w = weight_counts(c);
    if (check_size(path, AK42_HEADER_BYTES + 4 * config_param_count(c), f->size, err) != 0) return -1;

    Cursor cur = {f->data + AK42_HEADER_BYTES, f->data + f->size};
    ModelWeights *mw = &m->weights;
    mw->rms_att = take(&cur, 4 * w.norm_layers);
    mw->rms_ffn = take(&cur, 4 * w.norm_layers);
    mw->rms_final = take(&cur, 4 * w.norm_final);
    mw->token_embedding = f32_tensor(take(&cur, 4 * w.embedding));
    mw->wq = f32_tensor(take(&cur, 4 * w.attn_q));
    mw->wk = f32_tensor(take(&cur, 4 * w.attn_kv));
    mw->wv = f32_tensor(take(&cur, 4 * w.attn_kv));
    mw->wo = f32_tensor(take(&cur, 4 * w.attn_o));
    mw->w1 = f32_tensor(take(&cur, 4 * w.ffn));
    mw->w2 = f32_tensor(take(&cur, 4 * w.ffn));
    mw->w3 = f32_tensor(take(&cur, 4 * w.ffn));
    mw->wcls = c->shared_classifier ? mw->token_embedding : f32_tensor(take(&cur, 4 * w.classifier));
    m->format = MODEL_LLAMA2C_V1;
    m->dtype = NF_F32;
    return 0;
}

static int load_v2(Model *m, const char *path, NfError *err) {
    const MappedFile *f = &m->file;
    ModelConfig *c = &m->config;
    int group_size = read_i32(f->data + 37);
    if (group_size <= 0 || group_size > 4096 || c->dim % group_size != 0)
        return nf_fail(err, NF_ERR_MODEL, "Q8_0 group size %d is invalid for dim %d", group_size, c->dim);
    WeightCounts w = weight_counts(c);
    uint64_t norms = 2 * w.norm_layers + w.norm_final;
    uint64_t quantized = config_param_count(c) - norms;
    uint64_t expected = AK42_HEADER_BYTES + 4 * norms + quantized + 4 * (quantized / (uint64_t)group_size);
    if (check_size(path, expected, f->size, err) != 0) return -1;

    Cursor cur = {f->data + AK42_HEADER_BYTES, f->data + f->size};
    ModelWeights *mw = &m->weights;
    mw->rms_att = take(&cur, 4 * w.norm_layers);
    mw->rms_ffn = take(&cur, 4 * w.norm_layers);
    mw->rms_final = take(&cur, 4 * w.norm_final);

    /* All int8 blocks come first, then all scale blocks, in the same order. */
    Tensor *order[9] = {&mw->token_embedding, &mw->wq, &mw->wk, &mw->wv, &mw->wo,
                        &mw->w1, &mw->w2, &mw->w3, &mw->wcls};
    uint64_t counts[9] = {w.embedding, w.attn_q, w.attn_kv, w.attn_kv, w.attn_o,
                          w.ffn, w.ffn, w.ffn, w.classifier};
    int n = c->shared_classifier ? 8 : 9;
    for (int i = 0; i < n; i++) {
        order[i]->dtype = NF_Q8;
        order[i]->group_size = group_size;
        order[i]->q = take(&cur, counts[i]);
    }
    const unsigned char *scales = take(&cur, 4 * (quantized / (uint64_t)group_size));
    if ((uintptr_t)scales % sizeof(float) != 0) {
        /* int8 blocks of odd total length leave the scales unaligned: copy them. */
        m->owned = malloc(4 * (quantized / (uint64_t)group_size));
        if (!m->owned) return nf_fail(err, NF_ERR_MEMORY, "cannot allocate Q8 scales");
        memcpy(m->owned, scales, 4 * (quantized / (uint64_t)group_size));
        scales = (const unsigned char *)m->owned;
    }
    const float *s = (const float *)scales;
    for (int i = 0; i < n; i++) {
        order[i]->scale = s;
        s += counts[i] / (uint64_t)group_size;
    }
    if (c->shared_classifier) mw->wcls = mw->token_embedding;
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
                rc = nf_fail(err, NF_ERR_MODEL, "model file '%s' has unsupported version %d (1 and 2 are known)",
                             path, version);
        }
    } else {
        rc = load_legacy(m, path, err);
    }
    if (rc != 0) {
        /* Say which file the header problem came from. */
        if (err && strstr(err->message, path) == NULL) {
            char detail[sizeof err->message];
            memcpy(detail, err->message, sizeof detail);
            nf_fail(err, err->code, "model file '%s': %s", path, detail);
        }
        model_free(m);
    }
    return rc;
}

void model_free(Model *m) {
    mapped_file_close(&m->file);
    free(m->owned);
    memset(m, 0, sizeof *m);
}
