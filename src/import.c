/* import.c — GGUF files into a flat parameter buffer, and the dispatch to hf_model.c for Hugging Face directories
 * (see import.h). */
#include "import.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export.h"
#include "f16.h"
#include "fileio.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "hf_model.h"
#include "llama_interop.h"
#include "util.h"

void import_note_dtype(ImportInfo *info, const char *name) {
    if (strstr(info->dtypes, name)) return;
    size_t n = strlen(info->dtypes);
    snprintf(info->dtypes + n, sizeof info->dtypes - n, "%s%s", n ? "," : "", name);
}

/* ---- GGUF ---------------------------------------------------------------------- */

static int gguf_config_u32(const GgufFile *g, const char *key, int *out, bool required, const char *path,
                           NfError *err) {
    const GgufKv *kv = gguf_find(g, key);
    uint64_t v;
    if (!kv) return required ? nf_fail(err, NF_ERR_MODEL, "'%s' lacks the metadata key %s", path, key) : 0;
    if (gguf_kv_uint(kv, &v) != 0 || v > INT32_MAX)
        return nf_fail(err, NF_ERR_MODEL, "'%s': %s is not a positive integer", path, key);
    *out = (int)v;
    return 0;
}

static int arch_u32(const GgufFile *g, const ModelConfig *c, const char *key, int *out, bool required, const char *path,
                    NfError *err) {
    char k[96];
    return gguf_config_u32(g, gguf_arch_key(k, sizeof k, c->arch, key), out, required, path, err);
}

/* A float key of the architecture: *out keeps its value when the key is absent. */
static int arch_float(const GgufFile *g, const ModelConfig *c, const char *key, float *out, const char *path,
                      NfError *err) {
    char k[96];
    const GgufKv *kv = gguf_find(g, gguf_arch_key(k, sizeof k, c->arch, key));
    double v;
    if (!kv) return 0;
    if (gguf_kv_float(kv, &v) != 0 || !(v > 0) || v > 1e30)
        return nf_fail(err, NF_ERR_MODEL, "'%s': %s is not a positive number", path, k);
    *out = (float)v;
    return 0;
}

/* A string value, or NULL when the key is absent or no string. */
static const char *kv_string(const GgufFile *g, const char *key, uint64_t *len) {
    const GgufKv *kv = gguf_find(g, key);
    const char *s = NULL;
    *len = 0;
    if (kv && kv->type == GGUF_STRING) gguf_string_at(kv->value, &s, len, NULL);
    return s;
}

static bool string_is(const char *s, uint64_t len, const char *want) {
    return s && len == strlen(want) && memcmp(s, want, len) == 0;
}

/* general.architecture: one of those NeuralForge computes, and not a LoRA adapter. */
static int gguf_arch(const GgufFile *g, const char *path, ModelConfig *c, NfError *err) {
    uint64_t len;
    const char *type = kv_string(g, "general.type", &len);
    if (string_is(type, len, "adapter")) return nf_fail(err, NF_ERR_MODEL, "'%s' is a LoRA adapter, not a model", path);
    const char *s = kv_string(g, "general.architecture", &len);
    char name[32] = "";
    if (s && len < sizeof name) memcpy(name, s, len), name[len] = '\0';
    if (!s || len >= sizeof name || model_arch_parse(name, &c->arch) != 0)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s' has general.architecture '%.*s'; NeuralForge computes llama, qwen2 and qwen3", path,
                       (int)(len < 40 ? len : 40), s ? s : "");
    return 0;
}

/* What the architecture's keys may say that NeuralForge does not compute: refused by name, never ignored. */
static int gguf_refuse_unsupported(const GgufFile *g, const ModelConfig *c, const char *path, NfError *err) {
    char k[96];
    int experts = 0, window = 0;
    if (arch_u32(g, c, "expert_count", &experts, false, path, err) != 0 ||
        arch_u32(g, c, "attention.sliding_window", &window, false, path, err) != 0)
        return -1;
    if (experts > 0)
        return nf_fail(err, NF_ERR_MODEL, "'%s' is a mixture of experts (%s %d), which NeuralForge does not compute",
                       path, gguf_arch_key(k, sizeof k, c->arch, "expert_count"), experts);
    if (window > 0)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s' uses sliding-window attention (%s %d), which NeuralForge does not compute", path,
                       gguf_arch_key(k, sizeof k, c->arch, "attention.sliding_window"), window);
    uint64_t len;
    const char *scaling = kv_string(g, gguf_arch_key(k, sizeof k, c->arch, "rope.scaling.type"), &len);
    if (gguf_find(g, k) && !string_is(scaling, len, "none"))
        return nf_fail(err, NF_ERR_MODEL, "'%s' uses RoPE scaling '%.*s' (%s), which NeuralForge does not implement",
                       path, (int)(len < 40 ? len : 40), scaling ? scaling : "?", k);
    float factor = 1.0f;
    if (arch_float(g, c, "rope.scaling.factor", &factor, path, err) != 0) return -1;
    if (factor != 1.0f)
        return nf_fail(err, NF_ERR_MODEL, "'%s' scales RoPE by %g (%s), which NeuralForge does not implement", path,
                       factor, gguf_arch_key(k, sizeof k, c->arch, "rope.scaling.factor"));
    return 0;
}

/* Classifies a rope_freqs factor: 1 (kept), the full factor, or in the band between. */
static bool near(double x, double y) { return fabs(x - y) <= 1e-5 * fabs(y); }

/* rope_freqs.weight back into llama3 RoPE scaling. The factors pin every pair's scaled frequency, not the
 * parameters: the band's points lie on s = C / ((high - low) wavelen) - low / (high - low), which two points
 * fix given low_freq_factor, so low is taken as Llama 3.1/3.2's 1 (and high as their 4 when the band holds one
 * point; the context as their 8192 when it holds none), and the result is checked against every factor. */
static int rope_scaling_from_factors(ModelConfig *c, const float *r, int half, const char *path, NfError *err) {
    ModelConfig plain = *c;
    plain.rope_scaling.type = ROPE_SCALING_NONE;
    bool all_one = true;
    for (int i = 0; i < half; i++) all_one = all_one && near(r[i], 1.0);
    if (all_one) return 0; /* factors of 1 scale nothing */
    double F = r[half - 1], max_kept = 0, min_scaled = HUGE_VAL, wl[2] = {0, 0}, sm[2] = {0, 0};
    int band = 0;
    for (int i = 0; i < half; i++) {
        double w = 6.28318530717958647692 / config_rope_freq(&plain, i);
        if (near(r[i], 1.0))
            max_kept = w > max_kept ? w : max_kept;
        else if (near(r[i], F))
            min_scaled = w < min_scaled ? w : min_scaled;
        else {
            wl[band > 0] = w, sm[band > 0] = (1.0 / r[i] - 1.0 / F) / (1.0 - 1.0 / F);
            band++;
        }
    }
    double low = 1.0, high = 4.0, context = 8192.0;
    if (band >= 2 && wl[0] != wl[1]) {
        double a = (sm[1] - sm[0]) / (1.0 / wl[1] - 1.0 / wl[0]), b = sm[0] - a / wl[0];
        high = b < 0 ? low - low / b : 0; /* b = -low / (high - low) */
        context = a * (high - low);
        if (fabs(high - round(high * 1000) / 1000) < 1e-4) high = round(high * 1000) / 1000;
    } else if (band == 1) {
        context = wl[0] * (sm[0] * (high - low) + low);
    } else if (!(4 * max_kept < context && context < min_scaled)) {
        context = (4 * max_kept + min_scaled) / 2;
    }
    c->rope_scaling = (RopeScaling){ROPE_SCALING_LLAMA3, (float)F, (float)low, (float)high, (int)lround(context)};
    NfError ignored = {0};
    bool valid = context >= 1 && context <= NF_MAX_SEQ_LEN && config_validate(c, &ignored) == 0;
    for (int i = 0; valid && i < half; i++)
        valid = fabs(config_rope_freq(&plain, i) / config_rope_freq(c, i) - r[i]) <= 1e-4 * r[i];
    if (!valid)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s': rope_freqs.weight is no llama3 RoPE scaling of base %g (the only kind NeuralForge "
                       "implements)",
                       path, config_rope_theta(c));
    return 0;
}

/* llama.cpp's rope_freqs.weight (llama only: the other architectures have no place for it) */
static int gguf_rope_freqs(const GgufFile *g, ModelConfig *c, const char *path, NfError *err) {
    const GgufTensor *t = gguf_find_tensor(g, "rope_freqs.weight");
    int half = config_head_size(c) / 2;
    if (!t || c->arch != ARCH_LLAMA) return 0;
    if (t->type != GGML_F32 || t->n_dims != 1 || t->dims[0] != (uint64_t)half)
        return nf_fail(err, NF_ERR_MODEL, "'%s': rope_freqs.weight is not %d F32 values (one per pair)", path, half);
    float *r = nf_alloc_array((size_t)half, sizeof *r, err);
    if (!r) return -1;
    memcpy(r, t->data, (size_t)half * 4);
    int rc = rope_scaling_from_factors(c, r, half, path, err);
    free(r);
    return rc;
}

/* The model's shape from the metadata and the tensor descriptions (no tensor data is read). */
static int gguf_read_config(const GgufFile *g, const char *path, ModelConfig *c, NfError *err) {
    memset(c, 0, sizeof *c);
    int head = 0, value = 0, rope_dims = 0, vocab = 0;
    if (gguf_arch(g, path, c, err) != 0 || arch_u32(g, c, "context_length", &c->seq_len, true, path, err) != 0 ||
        arch_u32(g, c, "embedding_length", &c->dim, true, path, err) != 0 ||
        arch_u32(g, c, "block_count", &c->n_layers, true, path, err) != 0 ||
        arch_u32(g, c, "feed_forward_length", &c->hidden_dim, true, path, err) != 0 ||
        arch_u32(g, c, "attention.head_count", &c->n_heads, true, path, err) != 0)
        return -1;
    c->n_kv_heads = c->n_heads;
    if (arch_u32(g, c, "attention.head_count_kv", &c->n_kv_heads, false, path, err) != 0 ||
        arch_u32(g, c, "attention.key_length", &head, false, path, err) != 0 ||
        arch_u32(g, c, "attention.value_length", &value, false, path, err) != 0 ||
        arch_u32(g, c, "rope.dimension_count", &rope_dims, false, path, err) != 0 ||
        arch_u32(g, c, "vocab_size", &vocab, false, path, err) != 0 || gguf_refuse_unsupported(g, c, path, err) != 0)
        return -1;
    const GgufTensor *embed = gguf_find_tensor(g, "token_embd.weight");
    if (!embed || embed->n_dims != 2 || embed->dims[1] > NF_MAX_VOCAB)
        return nf_fail(err, NF_ERR_MODEL, "'%s' has no usable token_embd.weight", path);
    c->vocab_size = (int)embed->dims[1];
    if (vocab && vocab != c->vocab_size)
        return nf_fail(err, NF_ERR_MODEL, "'%s': %s.vocab_size %d is not token_embd.weight's %d rows", path,
                       model_arch_name(c->arch), vocab, c->vocab_size);
    c->shared_classifier = gguf_find_tensor(g, "output.weight") == NULL;
    c->qkv_bias = gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->qk_norm = gguf_find_tensor(g, "blk.0.attn_q_norm.weight") != NULL;
    if (head && c->n_heads > 0 && (head != c->dim / c->n_heads || c->dim % c->n_heads != 0)) c->head_dim = head;
    float theta = 10000.0f, eps = 1e-5f;
    if (arch_float(g, c, "rope.freq_base", &theta, path, err) != 0 ||
        arch_float(g, c, "attention.layer_norm_rms_epsilon", &eps, path, err) != 0)
        return -1;
    c->rope_theta = theta;
    c->norm_eps = eps;
    if (config_validate(c, err) != 0) return nf_prefix(err, NF_ERR_MODEL, "'%s': ", path);
    int hs = config_head_size(c);
    if (value && value != hs)
        return nf_fail(err, NF_ERR_MODEL, "'%s': value heads of %d and key heads of %d; NeuralForge needs them equal",
                       path, value, hs);
    if (rope_dims && rope_dims != hs)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s' rotates %d of each head's %d dimensions; NeuralForge rotates all of them", path, rope_dims,
                       hs);
    const char *cannot = gguf_arch_refusal(c);
    if (cannot) return nf_fail(err, NF_ERR_MODEL, "'%s' holds %s", path, cannot);
    return gguf_rope_freqs(g, c, path, err);
}

int import_gguf_config(const char *path, ModelConfig *c, NfError *err) {
    GgufFile g;
    if (gguf_open(&g, path, err) != 0) return -1;
    int rc = gguf_read_config(&g, path, c, err);
    gguf_close(&g);
    return rc;
}

static int gguf_to_f32(float *dst, const GgufTensor *t, uint64_t count) {
    if (t->type == GGML_F32)
        memcpy(dst, t->data, count * 4);
    else if (t->type == GGML_F16 || t->type == GGML_BF16)
        for (uint64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            dst[i] = t->type == GGML_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
    else if (t->type == GGML_Q8_0)
        for (uint64_t b = 0; b < count / GGML_Q8_0_BLOCK; b++) {
            const unsigned char *blk = t->data + b * GGML_Q8_0_BYTES;
            uint16_t dh;
            memcpy(&dh, blk, 2);
            float d = f16_to_f32(dh);
            for (int i = 0; i < GGML_Q8_0_BLOCK; i++) dst[b * GGML_Q8_0_BLOCK + i] = d * (float)(int8_t)blk[2 + i];
        }
    else
        return -1;
    return 0;
}

static const char *ggml_type_name(uint32_t t) {
    return t == GGML_F32 ? "F32" : t == GGML_F16 ? "F16" : t == GGML_BF16 ? "BF16" : "Q8_0";
}

/* A tensor of the file that is none of t (n) nor rope_freqs (read into the config) is part of a model we
 * cannot run: refused by name. */
static int gguf_check_leftovers(const GgufFile *g, const ModelConfig *c, const LlamaTensor *t, int n, const char *path,
                                NfError *err) {
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const GgufTensor *x = &g->tensors[i];
        bool known = c->arch == ARCH_LLAMA && x->name_len == 17 && memcmp(x->name, "rope_freqs.weight", 17) == 0;
        for (int k = 0; k < n && !known; k++)
            known = strlen(t[k].gguf_name) == x->name_len && memcmp(t[k].gguf_name, x->name, x->name_len) == 0;
        if (!known)
            return nf_fail(err, NF_ERR_MODEL, "'%s' has tensor '%.*s', which a %s model has no place for", path,
                           (int)(x->name_len < 80 ? x->name_len : 80), x->name, model_arch_name(c->arch));
    }
    return 0;
}

/* One tensor into t->data as fp32, in NeuralForge's row order (a NEOX architecture's rotated rows are HF's). */
static int gguf_copy_tensor(const GgufFile *g, const ModelConfig *c, const LlamaTensor *t, const char *path,
                            ImportInfo *info, NfError *err) {
    const GgufTensor *src = gguf_find_tensor(g, t->gguf_name);
    uint64_t row = t->cols ? t->cols : t->rows, count = t->rows * (t->cols ? t->cols : 1);
    if (!src) return nf_fail(err, NF_ERR_MODEL, "'%s' lacks tensor %s", path, t->gguf_name);
    if (src->n_dims != (t->cols ? 2u : 1u) || src->dims[0] != row || (t->cols && src->dims[1] != t->rows))
        return nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s has the wrong shape for this configuration", path,
                       t->gguf_name);
    bool permute = t->rope_heads && gguf_rope_neox(c->arch);
    float *tmp = permute ? nf_alloc_array(count, sizeof *tmp, err) : NULL;
    if (permute && !tmp) return -1;
    if (src->bytes == 0 || gguf_to_f32(tmp ? tmp : t->data, src, count) != 0) {
        free(tmp);
        return nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s has ggml type %u; F32, F16, BF16 and Q8_0 are read", path,
                       t->gguf_name, src->type);
    }
    if (tmp) hf_permute_rows(t->data, tmp, t->rope_heads, t->rows, t->cols, false);
    free(tmp);
    import_note_dtype(info, ggml_type_name(src->type));
    return 0;
}

/* The model g holds, checked: its configuration, and its tensors (t, n of them) placed in a flat buffer *params
 * (params.h) that holds none of their values yet, allocated unzeroed: the caller fills it. */
static int gguf_model_tensors(const GgufFile *g, const char *path, ModelConfig *c, LlamaTensor **t, int *n,
                              float **params, NfError *err) {
    *t = NULL, *params = NULL;
    if (gguf_read_config(g, path, c, err) != 0) return -1;
    *n = llama_tensor_count(c);
    if (!(*t = nf_alloc_array((size_t)*n, sizeof **t, err)) ||
        !(*params = nf_alloc_array_unzeroed((size_t)config_param_count(c), sizeof **params, err)))
        return -1;
    llama_tensors(c, *params, *t);
    return gguf_check_leftovers(g, c, *t, *n, path, err);
}

/* Whether every matrix of the model (t, n: the two-dimensional ones) is Q8_0 in g, whole blocks to a row */
static bool gguf_matrices_q8_0(const GgufFile *g, const LlamaTensor *t, int n) {
    for (int k = 0; k < n; k++) {
        const GgufTensor *src = gguf_find_tensor(g, t[k].gguf_name);
        if (t[k].cols && !(src && src->type == GGML_Q8_0 && src->n_dims == 2 && src->dims[0] == t[k].cols &&
                           src->dims[1] == t[k].rows && t[k].cols % GGML_Q8_0_BLOCK == 0 &&
                           src->bytes == t[k].rows * t[k].cols / GGML_Q8_0_BLOCK * GGML_Q8_0_BYTES))
            return false; /* (a wrong shape is then refused by gguf_copy_tensor, by name) */
    }
    return true;
}

static int import_gguf(const char *path, const char *tokenizer_out, ModelConfig *c, float **params, ImportInfo *info,
                       NfError *err) {
    GgufFile g;
    if (gguf_open(&g, path, err) != 0) return -1;
    int rc = -1, n;
    LlamaTensor *t;
    float *p;
    if (gguf_model_tensors(&g, path, c, &t, &n, &p, err) != 0) goto done;
    info->rms_eps = config_norm_eps(c);
    for (int k = 0; k < n; k++)
        if (gguf_copy_tensor(&g, c, &t[k], path, info, err) != 0) goto done;
    info->tensors = n;
    if (tokenizer_out && gguf_vocab_write_bin(&g, path, tokenizer_out, &info->vocab_written, err) != 0) goto done;
    *params = p;
    p = NULL;
    rc = 0;
done:
    free(p);
    free(t);
    gguf_close(&g);
    return rc;
}

/* What gguf_q8_fill copies from: the open file, and the model's tensors (their names, shapes, and where each lies in
 * the model's flat buffer, by which gguf_q8_fill knows a Tensor of the model) */
typedef struct {
    const GgufFile *g;
    const ModelConfig *c;
    const LlamaTensor *t;
    int n;
} GgufQ8Source;

/* A Q8Fill (model.h), for fp16 scales: matrix w's Q8_0 blocks as they are in the file, each an fp16 scale and 32
 * int8 values, the rows of a NEOX architecture's wq and wk put back in our order (as gguf_copy_tensor does). */
static void gguf_q8_fill(void *ctx, const Tensor *w, size_t count, int gs, int8_t *q, float *scale,
                         uint16_t *scale_f16) {
    const GgufQ8Source *s = ctx;
    const LlamaTensor *t = s->t, *end = s->t + s->n;
    while (t < end && t->data != w->f32) t++; /* found: the model's matrices are llama_tensors' of its flat buffer */
    if (t == end) return;
    const GgufTensor *src = gguf_find_tensor(s->g, t->gguf_name);
    bool permute = t->rope_heads && gguf_rope_neox(s->c->arch);
    size_t blocks_per_row = (size_t)t->cols / GGML_Q8_0_BLOCK; /* gs is GGML_Q8_0_BLOCK: import_gguf_model's */
    for (uint64_t row = 0; row < t->rows; row++) {
        uint64_t from = permute ? hf_row_index(row, t->rope_heads, t->rows) : row;
        const unsigned char *blk = src->data + from * blocks_per_row * GGML_Q8_0_BYTES;
        for (size_t b = row * blocks_per_row; b < (row + 1) * blocks_per_row; b++, blk += GGML_Q8_0_BYTES) {
            memcpy(scale_f16 + b, blk, 2);
            memcpy(q + b * GGML_Q8_0_BLOCK, blk + 2, GGML_Q8_0_BLOCK);
        }
    }
    (void)count, (void)gs, (void)scale;
}

int import_gguf_model(Model *m, const char *path, NfError *err) {
    memset(m, 0, sizeof *m);
    GgufFile g;
    if (gguf_open(&g, path, err) != 0) return -1;
    ModelConfig c;
    ImportInfo info = {0};
    int rc = -1, n;
    LlamaTensor *t;
    float *p;
    if (gguf_model_tensors(&g, path, &c, &t, &n, &p, err) != 0) goto done;
    bool stored_q8 = gguf_matrices_q8_0(&g, t, n);
    for (int k = 0; k < n; k++) /* under stored_q8 the matrices' part of the buffer is never touched */
        if (!(stored_q8 && t[k].cols) && gguf_copy_tensor(&g, &c, &t[k], path, &info, err) != 0) goto done;
    if (model_from_params(m, &c, p, err) != 0) goto done;
    m->owned = p; /* freed with the model */
    p = NULL;
    m->format = MODEL_GGUF;
    GgufQ8Source source = {&g, &c, t, n};
    rc = stored_q8 ? model_to_q8(m, GGML_Q8_0_BLOCK, true, gguf_q8_fill, &source, err) : 0;
done:
    if (rc != 0) model_free(m);
    free(p);
    free(t);
    gguf_close(&g);
    return rc;
}

int import_model(const char *input, const char *tokenizer_out, ModelConfig *c, float **params, ImportInfo *info,
                 NfError *err) {
    memset(info, 0, sizeof *info);
    struct stat sb;
    if (stat(input, &sb) != 0) return nf_fail(err, NF_ERR_IO, "cannot open '%s'", input);
    if (S_ISDIR(sb.st_mode)) {
        info->format = "safetensors";
        if (tokenizer_out)
            return nf_fail(err, NF_ERR_USAGE,
                           "--tokenizer-output reads a GGUF file's vocabulary; a Hugging Face directory has none in "
                           "tokenizer.bin form");
        return hf_model_read(input, c, params, info, err);
    }
    info->format = "gguf";
    return import_gguf(input, tokenizer_out, c, params, info, err);
}
