/* import.c — GGUF files and Hugging Face Llama directories into a flat parameter buffer (see import.h). */
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
#include "json_parse.h"
#include "llama_interop.h"
#include "safetensors.h"
#include "util.h"

static void note_dtype(ImportInfo *info, const char *name) {
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
        note_dtype(info, ggml_type_name(src->type));
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

/* ---- Hugging Face safetensors ---------------------------------------------------- */

static int json_int_field(const JsonValue *cfg, const char *key, int *out, bool required, const char *path,
                          NfError *err) {
    const JsonValue *v = json_get(cfg, key);
    if (!v || v->type == JV_NULL) return required ? nf_fail(err, NF_ERR_MODEL, "'%s' lacks \"%s\"", path, key) : 0;
    char *end;
    long x = v->type == JV_NUMBER ? strtol(v->text, &end, 10) : -1;
    if (v->type != JV_NUMBER || *end != '\0' || x < 1 || x > INT32_MAX)
        return nf_fail(err, NF_ERR_MODEL, "'%s': \"%s\" is not a positive integer", path, key);
    *out = (int)x;
    return 0;
}

/* A shard name from the index must be a plain file name inside the directory. */
static bool plain_file_name(const char *s) { return s[0] != '\0' && s[0] != '.' && !strchr(s, '/') && strlen(s) < 256; }

#define MAX_SHARDS 256

/* config.json into c (and info->rms_eps): a Llama whose RoPE, activation and head size NeuralForge implements. */
static int hf_read_config(const char *config_path, ModelConfig *c, ImportInfo *info, NfError *err) {
    MappedFile f = {0};
    JsonValue cfg = {0};
    int rc = -1;
    if (mapped_file_open(&f, config_path, "config.json", err) != 0) goto done;
    if (json_parse((const char *)f.data, f.size, &cfg, err) != 0 || cfg.type != JV_OBJECT) {
        if (cfg.type == JV_OBJECT || !err->code)
            nf_fail(err, NF_ERR_MODEL, "'%s': not a JSON object", config_path);
        else
            nf_prefix(err, NF_ERR_MODEL, "'%s': ", config_path);
        goto done;
    }
    mapped_file_close(&f);
    const JsonValue *mt = json_get(&cfg, "model_type");
    if (!mt || mt->type != JV_STRING || strcmp(mt->text, "llama") != 0) {
        nf_fail(err, NF_ERR_MODEL, "'%s' is not a Llama model (model_type \"%s\")", config_path,
                mt && mt->type == JV_STRING ? mt->text : "");
        goto done;
    }
    memset(c, 0, sizeof *c);
    if (json_int_field(&cfg, "hidden_size", &c->dim, true, config_path, err) != 0 ||
        json_int_field(&cfg, "intermediate_size", &c->hidden_dim, true, config_path, err) != 0 ||
        json_int_field(&cfg, "num_hidden_layers", &c->n_layers, true, config_path, err) != 0 ||
        json_int_field(&cfg, "num_attention_heads", &c->n_heads, true, config_path, err) != 0 ||
        json_int_field(&cfg, "vocab_size", &c->vocab_size, true, config_path, err) != 0 ||
        json_int_field(&cfg, "max_position_embeddings", &c->seq_len, true, config_path, err) != 0)
        goto done;
    c->n_kv_heads = c->n_heads;
    if (json_int_field(&cfg, "num_key_value_heads", &c->n_kv_heads, false, config_path, err) != 0) goto done;
    const JsonValue *tie = json_get(&cfg, "tie_word_embeddings"), *theta = json_get(&cfg, "rope_theta"),
                    *scaling = json_get(&cfg, "rope_scaling"), *act = json_get(&cfg, "hidden_act"),
                    *eps = json_get(&cfg, "rms_norm_eps"), *head_dim = json_get(&cfg, "head_dim");
    c->shared_classifier = tie && tie->type == JV_BOOL && tie->boolean; /* transformers' default is untied */
    if (config_validate(c, err) != 0) goto done;
    if (theta && theta->type == JV_NUMBER && fabs(strtod(theta->text, NULL) - 10000.0) > 1e-3) {
        nf_fail(err, NF_ERR_MODEL, "'%s' uses RoPE base %s; NeuralForge's RoPE has base 10000", config_path,
                theta->text);
        goto done;
    }
    if (scaling && scaling->type != JV_NULL) {
        nf_fail(err, NF_ERR_MODEL, "'%s' uses rope_scaling, which NeuralForge does not implement", config_path);
        goto done;
    }
    if (act && (act->type != JV_STRING || strcmp(act->text, "silu") != 0)) {
        nf_fail(err, NF_ERR_MODEL, "'%s' uses the activation \"%s\"; NeuralForge's feed-forward is SwiGLU (silu)",
                config_path, act->type == JV_STRING ? act->text : "?");
        goto done;
    }
    if (head_dim && head_dim->type == JV_NUMBER && atoi(head_dim->text) != config_head_size(c)) {
        nf_fail(err, NF_ERR_MODEL, "'%s': head_dim %s is not hidden_size / num_attention_heads", config_path,
                head_dim->text);
        goto done;
    }
    info->rms_eps = eps && eps->type == JV_NUMBER ? strtod(eps->text, NULL) : 1e-6; /* transformers' default */
    rc = 0;
done:
    mapped_file_close(&f);
    json_value_free(&cfg);
    return rc;
}

/* The open shards of a directory. */
typedef struct {
    StFile files[MAX_SHARDS];
    int n;
} Shards;

/* Opens the shards: those the index (index_path) names, each once, or else the one model.safetensors. */
static int hf_open_shards(const char *dir, const char *index_path, Shards *sh, NfError *err) {
    struct stat sb;
    if (stat(index_path, &sb) != 0) {
        char *model_path = nf_path_join(dir, "model.safetensors");
        int opened = model_path ? st_open(&sh->files[0], model_path, err) : -1;
        free(model_path);
        if (opened != 0) return -1;
        sh->n++;
        return 0;
    }
    const char *names[MAX_SHARDS]; /* in index's text */
    MappedFile f = {0};
    JsonValue index = {0};
    int rc = -1;
    if (mapped_file_open(&f, index_path, "safetensors index", err) != 0) goto done;
    if (json_parse((const char *)f.data, f.size, &index, err) != 0) {
        nf_prefix(err, NF_ERR_MODEL, "'%s': ", index_path);
        goto done;
    }
    mapped_file_close(&f);
    const JsonValue *map = json_get(&index, "weight_map");
    if (!map || map->type != JV_OBJECT) {
        nf_fail(err, NF_ERR_MODEL, "'%s' has no weight_map", index_path);
        goto done;
    }
    for (int i = 0; i < map->n; i++) {
        const JsonValue *file = &map->items[i];
        if (file->type != JV_STRING || !plain_file_name(file->text)) {
            nf_fail(err, NF_ERR_MODEL, "'%s': shard name of '%.80s' is not a file name in the directory", index_path,
                    map->keys[i]);
            goto done;
        }
        bool seen = false;
        for (int k = 0; k < sh->n && !seen; k++) seen = strcmp(names[k], file->text) == 0;
        if (seen) continue;
        if (sh->n == MAX_SHARDS) {
            nf_fail(err, NF_ERR_MODEL, "'%s' lists more than %d shards", index_path, MAX_SHARDS);
            goto done;
        }
        char *shard_path = nf_path_join(dir, file->text);
        int opened = shard_path ? st_open(&sh->files[sh->n], shard_path, err) : -1;
        free(shard_path);
        if (opened != 0) goto done;
        names[sh->n++] = file->text;
    }
    rc = 0;
done:
    mapped_file_close(&f);
    json_value_free(&index);
    return rc;
}

/* Copies src, the checkpoint's tensor for t (shape checked), into t->data as fp32 in llama2.c's row order. */
static int hf_copy_tensor(const char *dir, const LlamaTensor *t, const StTensor *src, ImportInfo *info, NfError *err) {
    uint64_t count = t->rows * (t->cols ? t->cols : 1);
    if (src->n_dims != (t->cols ? 2 : 1) || src->shape[0] != t->rows || (t->cols && src->shape[1] != t->cols))
        return nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s has the wrong shape for config.json", dir, t->hf_name);
    float *dst = t->data;
    float *tmp = t->rope_heads ? malloc(count * 4) : NULL;
    if (t->rope_heads && !tmp) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    float *w = tmp ? tmp : dst;
    if (src->dtype == ST_F32)
        memcpy(w, src->data, count * 4), note_dtype(info, "F32");
    else if (src->dtype == ST_F16 || src->dtype == ST_BF16) {
        for (uint64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src->data + 2 * i, 2);
            w[i] = src->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        note_dtype(info, src->dtype == ST_F16 ? "F16" : "BF16");
    } else {
        free(tmp);
        return nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s is not F32, F16 or BF16", dir, t->hf_name);
    }
    if (tmp) { /* HF's half-rotation order back to llama2.c's pairs */
        hf_permute_rows(dst, tmp, t->rope_heads, t->rows, t->cols, false);
        free(tmp);
    }
    return 0;
}

/* Refuses a tensor in the shards that is none of t (n) and not one we can do without. */
static int hf_check_leftovers(const char *dir, const ModelConfig *c, const Shards *sh, const LlamaTensor *t, int n,
                              NfError *err) {
    for (int s = 0; s < sh->n; s++)
        for (int i = 0; i < sh->files[s].n_tensors; i++) {
            const char *name = sh->files[s].tensors[i].name;
            bool known = strstr(name, "rotary_emb.inv_freq") != NULL || /* a cache older transformers saved */
                         (c->shared_classifier && strcmp(name, "lm_head.weight") == 0);
            for (int k = 0; k < n && !known; k++) known = strcmp(t[k].hf_name, name) == 0;
            if (!known)
                return nf_fail(err, NF_ERR_MODEL,
                               "'%s' has tensor '%.80s', which a llama2.c-shaped model has no place for", dir, name);
        }
    return 0;
}

static int import_safetensors(const char *dir, ModelConfig *c, float **params, ImportInfo *info, NfError *err) {
    char *config_path = nf_path_join(dir, "config.json"),
         *index_path = nf_path_join(dir, "model.safetensors.index.json");
    Shards sh = {.n = 0};
    int rc = -1;
    LlamaTensor *t = NULL;
    float *p = NULL;
    if (!config_path || !index_path) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory");
        goto done;
    }
    if (hf_read_config(config_path, c, info, err) != 0 || hf_open_shards(dir, index_path, &sh, err) != 0) goto done;
    int n = llama_tensor_count(c), found = 0;
    if (!(t = nf_alloc_array((size_t)n, sizeof *t, err)) ||
        !(p = nf_alloc_array((size_t)config_param_count(c), sizeof *p, err)))
        goto done;
    llama_tensors(c, p, t);
    for (int k = 0; k < n; k++) {
        const StTensor *src = NULL;
        for (int s = 0; s < sh.n && !src; s++) src = st_find(&sh.files[s], t[k].hf_name);
        if (!src) {
            nf_fail(err, NF_ERR_MODEL, "'%s' lacks tensor %s", dir, t[k].hf_name);
            goto done;
        }
        if (hf_copy_tensor(dir, &t[k], src, info, err) != 0) goto done;
        found++;
    }
    if (hf_check_leftovers(dir, c, &sh, t, n, err) != 0) goto done;
    info->tensors = found;
    *params = p;
    p = NULL;
    rc = 0;
done:
    for (int s = 0; s < sh.n; s++) st_close(&sh.files[s]);
    free(t), free(p), free(config_path), free(index_path);
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
        return import_safetensors(input, c, params, info, err);
    }
    info->format = "gguf";
    return import_gguf(input, tokenizer_out, c, params, info, err);
}
