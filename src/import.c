/* import.c — GGUF files and Hugging Face model directories (hf_model.c reads those) into a flat parameter
 * buffer (see import.h). */
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

static int gguf_to_f32(float *dst, const GgufTensor *t, uint64_t count) {
    if (t->type == GGML_F32)
        memcpy(dst, t->data, count * 4);
    else if (t->type == GGML_F16)
        for (uint64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            dst[i] = f16_to_f32(h);
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

static const char *ggml_type_name(uint32_t t) { return t == GGML_F32 ? "F32" : t == GGML_F16 ? "F16" : "Q8_0"; }

static int gguf_tokenizer(const GgufFile *g, const char *path, const char *out, int *written, NfError *err) {
    const GgufKv *model = gguf_find(g, "tokenizer.ggml.model"), *tokens = gguf_find(g, "tokenizer.ggml.tokens"),
                 *scores = gguf_find(g, "tokenizer.ggml.scores");
    const char *s;
    uint64_t len;
    if (!model || model->type != GGUF_STRING || !tokens || tokens->type != GGUF_ARRAY ||
        tokens->array_type != GGUF_STRING)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s' holds no tokenizer (tokenizer.ggml.model and tokens)", path);
    gguf_string_at(model->value, &s, &len, NULL);
    if (len != 5 || memcmp(s, "llama", 5) != 0)
        return nf_fail(err, NF_ERR_TOKENIZER,
                       "'%s' has a '%.*s' tokenizer; only SentencePiece ('llama') ones become a tokenizer.bin", path,
                       (int)(len < 40 ? len : 40), s);
    if (scores && (scores->type != GGUF_ARRAY || scores->array_type != GGUF_FLOAT32 ||
                   scores->array_count != tokens->array_count))
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s': tokenizer.ggml.scores does not match the tokens", path);
    if (tokens->array_count < 3 || tokens->array_count > NF_MAX_VOCAB)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s': %llu tokens; a tokenizer.bin holds 3 to %d", path,
                       (unsigned long long)tokens->array_count, NF_MAX_VOCAB);
    int n = (int)tokens->array_count, rc = 0;
    char **pieces = calloc((size_t)n, sizeof *pieces);
    uint32_t *lens = calloc((size_t)n, sizeof *lens);
    float *sc = calloc((size_t)n, sizeof *sc);
    if (!pieces || !lens || !sc) rc = nf_fail(err, NF_ERR_MEMORY, "out of memory reading the tokenizer");
    const unsigned char *at = tokens->value;
    for (int i = 0; rc == 0 && i < n; i++) {
        gguf_string_at(at, &s, &len, &at);
        if (len > 4096) { /* a piece that long is no SentencePiece piece */
            rc = nf_fail(err, NF_ERR_TOKENIZER, "'%s': token %d is %llu bytes long", path, i, (unsigned long long)len);
            break;
        }
        if (!(pieces[i] = malloc(len + 1))) {
            rc = nf_fail(err, NF_ERR_MEMORY, "out of memory reading the tokenizer");
            break;
        }
        uint32_t k = 0; /* "▁" (E2 96 81) back to the space llama2.c's tokenizer.bin uses */
        for (uint64_t j = 0; j < len; j++)
            if (j + 2 < len && (unsigned char)s[j] == 0xE2 && (unsigned char)s[j + 1] == 0x96 &&
                (unsigned char)s[j + 2] == 0x81)
                pieces[i][k++] = ' ', j += 2;
            else
                pieces[i][k++] = s[j];
        lens[i] = k;
        if (scores) memcpy(&sc[i], scores->value + 4 * (size_t)i, 4);
    }
    if (rc == 0) rc = tokenizer_bin_write(out, n, (const char *const *)pieces, lens, sc, err);
    for (int i = 0; pieces && i < n; i++) free(pieces[i]);
    free(pieces), free(lens), free(sc);
    if (rc == 0) *written = n;
    return rc;
}

static int import_gguf(const char *path, const char *tokenizer_out, ModelConfig *c, float **params, ImportInfo *info,
                       NfError *err) {
    GgufFile g;
    if (gguf_open(&g, path, err) != 0) return -1;
    int rc = -1, rope_dims = 0;
    LlamaTensor *t = NULL;
    float *p = NULL;
    const GgufKv *arch = gguf_find(&g, "general.architecture");
    const char *s;
    uint64_t len = 0;
    if (arch && arch->type == GGUF_STRING) gguf_string_at(arch->value, &s, &len, NULL);
    if (!arch || len != 5 || memcmp(s, "llama", 5) != 0) {
        nf_fail(err, NF_ERR_MODEL, "'%s' is not a llama GGUF model (general.architecture '%.*s')", path,
                (int)(len < 40 ? len : 40), arch ? s : "");
        goto done;
    }
    const GgufKv *type = gguf_find(&g, "general.type");
    if (type && type->type == GGUF_STRING) {
        gguf_string_at(type->value, &s, &len, NULL);
        if (len == 7 && memcmp(s, "adapter", 7) == 0) {
            nf_fail(err, NF_ERR_MODEL, "'%s' is a LoRA adapter, not a model", path);
            goto done;
        }
    }
    memset(c, 0, sizeof *c);
    if (gguf_config_u32(&g, "llama.context_length", &c->seq_len, true, path, err) != 0 ||
        gguf_config_u32(&g, "llama.embedding_length", &c->dim, true, path, err) != 0 ||
        gguf_config_u32(&g, "llama.block_count", &c->n_layers, true, path, err) != 0 ||
        gguf_config_u32(&g, "llama.feed_forward_length", &c->hidden_dim, true, path, err) != 0 ||
        gguf_config_u32(&g, "llama.attention.head_count", &c->n_heads, true, path, err) != 0)
        goto done;
    c->n_kv_heads = c->n_heads;
    if (gguf_config_u32(&g, "llama.attention.head_count_kv", &c->n_kv_heads, false, path, err) != 0 ||
        gguf_config_u32(&g, "llama.rope.dimension_count", &rope_dims, false, path, err) != 0)
        goto done;
    const GgufTensor *embed = gguf_find_tensor(&g, "token_embd.weight");
    if (!embed || embed->n_dims != 2 || embed->dims[1] > NF_MAX_VOCAB) {
        nf_fail(err, NF_ERR_MODEL, "'%s' has no usable token_embd.weight", path);
        goto done;
    }
    c->vocab_size = (int)embed->dims[1];
    c->shared_classifier = gguf_find_tensor(&g, "output.weight") == NULL;
    if (config_validate(c, err) != 0) goto done;
    if (rope_dims && rope_dims != config_head_size(c)) {
        nf_fail(err, NF_ERR_MODEL, "'%s' rotates %d of each head's %d dimensions; NeuralForge rotates all of them",
                path, rope_dims, config_head_size(c));
        goto done;
    }
    const GgufKv *base = gguf_find(&g, "llama.rope.freq_base"),
                 *eps = gguf_find(&g, "llama.attention.layer_norm_rms_epsilon");
    double v = 10000.0;
    if (base && (gguf_kv_float(base, &v) != 0 || fabs(v - 10000.0) > 1e-3)) {
        nf_fail(err, NF_ERR_MODEL, "'%s' uses RoPE base %g; NeuralForge's RoPE has base 10000", path, v);
        goto done;
    }
    if (gguf_find(&g, "llama.rope.scaling.type")) {
        nf_fail(err, NF_ERR_MODEL, "'%s' uses RoPE scaling, which NeuralForge does not implement", path);
        goto done;
    }
    info->rms_eps = 1e-5;
    if (eps && gguf_kv_float(eps, &info->rms_eps) != 0) info->rms_eps = 1e-5;
    int n = llama_tensor_count(c);
    if (!(t = nf_alloc_array((size_t)n, sizeof *t, err)) ||
        !(p = nf_alloc_array((size_t)config_param_count(c), sizeof *p, err)))
        goto done;
    llama_tensors(c, p, t);
    if (g.n_tensors != (uint64_t)n) { /* a tensor we would ignore is part of the model we cannot run */
        for (uint64_t i = 0; i < g.n_tensors; i++) {
            bool known = false;
            for (int k = 0; k < n && !known; k++)
                known = strlen(t[k].gguf_name) == g.tensors[i].name_len &&
                        memcmp(t[k].gguf_name, g.tensors[i].name, g.tensors[i].name_len) == 0;
            if (!known) {
                nf_fail(err, NF_ERR_MODEL, "'%s' has tensor '%.*s', which a llama2.c-shaped model has no place for",
                        path, (int)(g.tensors[i].name_len < 80 ? g.tensors[i].name_len : 80), g.tensors[i].name);
                goto done;
            }
        }
    }
    for (int k = 0; k < n; k++) {
        const GgufTensor *src = gguf_find_tensor(&g, t[k].gguf_name);
        uint64_t row = t[k].cols ? t[k].cols : t[k].rows, count = t[k].rows * (t[k].cols ? t[k].cols : 1);
        if (!src) {
            nf_fail(err, NF_ERR_MODEL, "'%s' lacks tensor %s", path, t[k].gguf_name);
            goto done;
        }
        if (src->n_dims != (t[k].cols ? 2u : 1u) || src->dims[0] != row || (t[k].cols && src->dims[1] != t[k].rows)) {
            nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s has the wrong shape for this configuration", path,
                    t[k].gguf_name);
            goto done;
        }
        if (src->bytes == 0 || gguf_to_f32(t[k].data, src, count) != 0) {
            nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s has ggml type %u; F32, F16 and Q8_0 are read", path,
                    t[k].gguf_name, src->type);
            goto done;
        }
        import_note_dtype(info, ggml_type_name(src->type));
    }
    info->tensors = n;
    if (tokenizer_out && gguf_tokenizer(&g, path, tokenizer_out, &info->vocab_written, err) != 0) goto done;
    *params = p;
    p = NULL;
    rc = 0;
done:
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
