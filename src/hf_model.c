/* hf_model.c — Hugging Face model directories: config.json and safetensors shards, read and written (see
 * hf_model.h). */
#include "hf_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "f16.h"
#include "fileio.h"
#include "json_parse.h"
#include "llama_interop.h"
#include "safetensors.h"
#include "util.h"

/* ---- config.json ------------------------------------------------------------------ */

/* Each family as transformers names it, with the defaults its config class gives absent keys. */
typedef struct {
    const char *model_type, *architecture;
    ModelArch arch;
    int default_head_dim; /* 0: hidden_size / num_attention_heads */
} HfFamily;

static const HfFamily FAMILIES[] = {
    {"llama", "LlamaForCausalLM", ARCH_LLAMA, 0},
    {"qwen2", "Qwen2ForCausalLM", ARCH_QWEN2, 0},
    {"qwen3", "Qwen3ForCausalLM", ARCH_QWEN3, 128}, /* Qwen3Config's head_dim default */
};
#define N_FAMILIES (int)(sizeof FAMILIES / sizeof FAMILIES[0])

/* A key present with a value (JSON null counts as absent, as transformers reads it). */
static const JsonValue *present(const JsonValue *cfg, const char *key) {
    const JsonValue *v = json_get(cfg, key);
    return v && v->type != JV_NULL ? v : NULL;
}

static int int_field(const JsonValue *cfg, const char *key, int *out, bool required, const char *path, NfError *err) {
    const JsonValue *v = present(cfg, key);
    if (!v) return required ? nf_fail(err, NF_ERR_MODEL, "'%s' lacks \"%s\"", path, key) : 0;
    char *end;
    long long x = v->type == JV_NUMBER ? strtoll(v->text, &end, 10) : -1;
    if (v->type != JV_NUMBER || *end != '\0' || x < 1 || x > INT32_MAX)
        return nf_fail(err, NF_ERR_MODEL, "'%s': \"%s\" is not a positive integer", path, key);
    *out = (int)x;
    return 0;
}

/* A positive number up to 1e30 (so it converts to float); *out untouched when the key is absent. */
static int number_field(const JsonValue *cfg, const char *key, double *out, const char *path, NfError *err) {
    const JsonValue *v = present(cfg, key);
    if (!v) return 0;
    double x = v->type == JV_NUMBER ? strtod(v->text, NULL) : NAN;
    if (!(x > 0.0 && x <= 1e30))
        return nf_fail(err, NF_ERR_MODEL, "'%s': \"%s\" is not a positive number up to 1e30", path, key);
    *out = x;
    return 0;
}

static int bool_field(const JsonValue *cfg, const char *key, bool *out, const char *path, NfError *err) {
    const JsonValue *v = present(cfg, key);
    if (!v) return 0;
    if (v->type != JV_BOOL) return nf_fail(err, NF_ERR_MODEL, "'%s': \"%s\" is not true or false", path, key);
    *out = v->boolean;
    return 0;
}

/* model_type, checked against architectures where config.json names them. */
static int read_family(const JsonValue *cfg, const char *path, const HfFamily **family, NfError *err) {
    const JsonValue *mt = json_get(cfg, "model_type");
    const char *type = mt && mt->type == JV_STRING ? mt->text : "";
    *family = NULL;
    for (int i = 0; i < N_FAMILIES && !*family; i++)
        if (strcmp(type, FAMILIES[i].model_type) == 0) *family = &FAMILIES[i];
    if (!*family)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s': model_type \"%.40s\" is unknown; NeuralForge reads llama, qwen2 and qwen3", path, type);
    const JsonValue *archs = present(cfg, "architectures");
    if (!archs) return 0;
    const JsonValue *first = archs->type == JV_ARRAY && archs->n > 0 ? &archs->items[0] : NULL;
    if (!first || first->type != JV_STRING || strcmp(first->text, (*family)->architecture) != 0)
        return nf_fail(err, NF_ERR_MODEL, "'%s': architectures names \"%.60s\"; a %s model is read as %s", path,
                       first && first->type == JV_STRING ? first->text : "?", type, (*family)->architecture);
    return 0;
}

/* Mixture-of-experts and sliding-window attention: computed by neither family's layers here. */
static int refuse_attention_and_experts(const JsonValue *cfg, const HfFamily *f, int seq_len, int n_layers,
                                        const char *path, NfError *err) {
    static const char *const EXPERT_KEYS[] = {"num_experts", "num_local_experts", "n_routed_experts",
                                              "num_experts_per_tok", "moe_intermediate_size"};
    for (size_t i = 0; i < sizeof EXPERT_KEYS / sizeof EXPERT_KEYS[0]; i++) {
        const JsonValue *v = present(cfg, EXPERT_KEYS[i]);
        if (v && !(v->type == JV_NUMBER && strtod(v->text, NULL) == 0.0))
            return nf_fail(err, NF_ERR_MODEL,
                           "'%s' is a mixture-of-experts model (\"%s\"), which NeuralForge does not compute", path,
                           EXPERT_KEYS[i]);
    }
    const JsonValue *window = present(cfg, "sliding_window");
    double w = window && window->type == JV_NUMBER ? strtod(window->text, NULL) : 0.0;
    bool windowed = w > 0.0 && w < seq_len;
    if (f->arch == ARCH_LLAMA) { /* LlamaConfig has no window: a Mistral-style config relabelled */
        if (windowed)
            return nf_fail(err, NF_ERR_MODEL,
                           "'%s' uses sliding-window attention (sliding_window %s below the context %d), which "
                           "NeuralForge does not compute",
                           path, window->text, seq_len);
        return 0;
    }
    /* Qwen: the window applies (use_sliding_window) to the layers from max_window_layers on */
    bool use = false;
    if (bool_field(cfg, "use_sliding_window", &use, path, err) != 0) return -1;
    const JsonValue *mwl = present(cfg, "max_window_layers"); /* absent: counted as 0, every layer windowed */
    bool some_layer = !mwl || mwl->type != JV_NUMBER || strtod(mwl->text, NULL) < n_layers;
    if (use && windowed && some_layer)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s' uses sliding-window attention (use_sliding_window, sliding_window %s below the context "
                       "%d), which NeuralForge does not compute",
                       path, window->text, seq_len);
    return 0;
}

/* Biases and activation: Llama has no bias anywhere, Qwen 2 always biases q/k/v (its config has no key for it),
 * Qwen 3 has attention_bias false; all use SwiGLU. */
static int read_biases_and_act(const JsonValue *cfg, const HfFamily *f, ModelConfig *c, const char *path,
                               NfError *err) {
    bool attention_bias = false, mlp_bias = false;
    if (bool_field(cfg, "attention_bias", &attention_bias, path, err) != 0 ||
        bool_field(cfg, "mlp_bias", &mlp_bias, path, err) != 0)
        return -1;
    if (f->arch != ARCH_QWEN2 && attention_bias)
        return nf_fail(err, NF_ERR_MODEL, "'%s' sets attention_bias, but a %s model's attention has no biases", path,
                       f->model_type);
    if (f->arch == ARCH_LLAMA && mlp_bias)
        return nf_fail(err, NF_ERR_MODEL, "'%s' sets mlp_bias, but a llama model's feed-forward has no biases", path);
    c->qkv_bias = f->arch == ARCH_QWEN2;
    c->qk_norm = f->arch == ARCH_QWEN3;
    const JsonValue *act = present(cfg, "hidden_act");
    if (act && (act->type != JV_STRING || strcmp(act->text, "silu") != 0))
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s' uses the activation \"%.40s\"; NeuralForge's feed-forward is SwiGLU (silu)", path,
                       act->type == JV_STRING ? act->text : "?");
    return 0;
}

/* rope_theta, rope_scaling (none, "default" or "llama3") and partial rotation (refused). */
static int read_rope(const JsonValue *cfg, ModelConfig *c, const char *path, NfError *err) {
    double theta = 10000.0, partial = 1.0;
    if (number_field(cfg, "rope_theta", &theta, path, err) != 0 ||
        number_field(cfg, "partial_rotary_factor", &partial, path, err) != 0)
        return -1;
    if (partial != 1.0)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s' rotates part of each head (partial_rotary_factor %g); NeuralForge "
                       "rotates all of it",
                       path, partial);
    c->rope_theta = (float)theta;
    const JsonValue *s = present(cfg, "rope_scaling");
    if (!s) return 0;
    if (s->type != JV_OBJECT) return nf_fail(err, NF_ERR_MODEL, "'%s': rope_scaling is not an object", path);
    const JsonValue *type = present(s, "rope_type");
    if (!type) type = present(s, "type"); /* the older spelling */
    const char *name = type && type->type == JV_STRING ? type->text : "?";
    if (strcmp(name, "default") == 0) return 0;
    if (strcmp(name, "llama3") != 0)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s' uses rope_scaling type \"%.40s\", which NeuralForge does not implement (llama3 only)",
                       path, name);
    double factor = 0, low = 0, high = 0;
    int original = 0;
    const char *sp = "rope_scaling";
    if (number_field(s, "factor", &factor, sp, err) != 0 || number_field(s, "low_freq_factor", &low, sp, err) != 0 ||
        number_field(s, "high_freq_factor", &high, sp, err) != 0 ||
        int_field(s, "original_max_position_embeddings", &original, true, sp, err) != 0)
        return nf_prefix(err, NF_ERR_MODEL, "'%s': ", path);
    if (!factor || !low || !high)
        return nf_fail(err, NF_ERR_MODEL,
                       "'%s': llama3 rope_scaling needs factor, low_freq_factor and high_freq_factor", path);
    c->rope_scaling = (RopeScaling){ROPE_SCALING_LLAMA3, (float)factor, (float)low, (float)high, original};
    return 0;
}

/* The parsed config.json (cfg) into c. */
static int parse_config(const JsonValue *cfg, const char *path, ModelConfig *c, NfError *err) {
    const HfFamily *f;
    if (read_family(cfg, path, &f, err) != 0) return -1;
    memset(c, 0, sizeof *c);
    c->arch = f->arch;
    if (int_field(cfg, "hidden_size", &c->dim, true, path, err) != 0 ||
        int_field(cfg, "intermediate_size", &c->hidden_dim, true, path, err) != 0 ||
        int_field(cfg, "num_hidden_layers", &c->n_layers, true, path, err) != 0 ||
        int_field(cfg, "num_attention_heads", &c->n_heads, true, path, err) != 0 ||
        int_field(cfg, "vocab_size", &c->vocab_size, true, path, err) != 0 ||
        int_field(cfg, "max_position_embeddings", &c->seq_len, true, path, err) != 0)
        return -1;
    c->n_kv_heads = c->n_heads;
    int head_dim = f->default_head_dim;
    double eps = 1e-6; /* every family's config default */
    if (int_field(cfg, "num_key_value_heads", &c->n_kv_heads, false, path, err) != 0 ||
        int_field(cfg, "head_dim", &head_dim, false, path, err) != 0 ||
        number_field(cfg, "rms_norm_eps", &eps, path, err) != 0 ||
        bool_field(cfg, "tie_word_embeddings", &c->shared_classifier, path, err) != 0) /* default: untied */
        return -1;
    /* head_dim stays 0 where it is dim / heads, as train --init leaves it */
    c->head_dim = head_dim && (c->dim % c->n_heads != 0 || head_dim != c->dim / c->n_heads) ? head_dim : 0;
    c->norm_eps = (float)eps;
    if (refuse_attention_and_experts(cfg, f, c->seq_len, c->n_layers, path, err) != 0 ||
        read_biases_and_act(cfg, f, c, path, err) != 0 || read_rope(cfg, c, path, err) != 0)
        return -1;
    if (config_validate(c, err) != 0) return nf_prefix(err, NF_ERR_MODEL, "'%s': ", path);
    return 0;
}

static int read_config_file(const char *config_path, ModelConfig *c, NfError *err) {
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
    rc = parse_config(&cfg, config_path, c, err);
done:
    mapped_file_close(&f);
    json_value_free(&cfg);
    return rc;
}

int hf_model_read_config(const char *dir, ModelConfig *c, NfError *err) {
    char *config_path = nf_path_join(dir, "config.json");
    if (!config_path) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    struct stat sb;
    int rc;
    if (stat(config_path, &sb) != 0)
        rc =
            nf_fail(err, NF_ERR_IO, "'%s' is a directory without config.json, not a Hugging Face model directory", dir);
    else
        rc = read_config_file(config_path, c, err);
    free(config_path);
    return rc;
}

/* ---- shards --------------------------------------------------------------------- */

#define MAX_SHARDS 256

/* The shard file names of a directory: those model.safetensors.index.json names, each once, in the index's
 * order, or else the one model.safetensors. index_present says which. */
typedef struct {
    char *names[MAX_SHARDS];
    int n;
    bool index_present;
} ShardNames;

static void shard_names_free(ShardNames *s) {
    for (int i = 0; i < s->n; i++) free(s->names[i]);
    s->n = 0;
}

/* A shard name from the index must be a plain file name inside the directory. */
static bool plain_file_name(const char *s) { return s[0] != '\0' && s[0] != '.' && !strchr(s, '/') && strlen(s) < 256; }

static int add_shard_name(ShardNames *s, const char *name, NfError *err) {
    for (int k = 0; k < s->n; k++)
        if (strcmp(s->names[k], name) == 0) return 0;
    if (s->n == MAX_SHARDS) return nf_fail(err, NF_ERR_MODEL, "the index lists more than %d shards", MAX_SHARDS);
    if (!(s->names[s->n] = strdup(name))) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    s->n++;
    return 0;
}

static int shard_names(const char *dir, ShardNames *s, NfError *err) {
    memset(s, 0, sizeof *s);
    char *index_path = nf_path_join(dir, "model.safetensors.index.json");
    if (!index_path) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    struct stat sb;
    if (stat(index_path, &sb) != 0) {
        free(index_path);
        return add_shard_name(s, "model.safetensors", err);
    }
    s->index_present = true;
    MappedFile f = {0};
    JsonValue index = {0};
    int rc = -1;
    if (mapped_file_open(&f, index_path, "safetensors index", err) != 0) goto done;
    if (json_parse((const char *)f.data, f.size, &index, err) != 0) {
        nf_prefix(err, NF_ERR_MODEL, "'%s': ", index_path);
        goto done;
    }
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
        if (add_shard_name(s, file->text, err) != 0) {
            nf_prefix(err, NULL, "'%s': ", index_path);
            goto done;
        }
    }
    rc = 0;
done:
    if (rc != 0) shard_names_free(s);
    mapped_file_close(&f);
    json_value_free(&index);
    free(index_path);
    return rc;
}

/* The open shards of a directory. */
typedef struct {
    StFile files[MAX_SHARDS];
    int n;
} Shards;

static void shards_close(Shards *sh) {
    for (int s = 0; s < sh->n; s++) st_close(&sh->files[s]);
    sh->n = 0;
}

static int shards_open(const char *dir, Shards *sh, NfError *err) {
    ShardNames names;
    sh->n = 0;
    if (shard_names(dir, &names, err) != 0) return -1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < names.n; i++) {
        char *shard_path = nf_path_join(dir, names.names[i]);
        rc = shard_path ? st_open(&sh->files[sh->n], shard_path, err) : nf_fail(err, NF_ERR_MEMORY, "out of memory");
        free(shard_path);
        if (rc == 0) sh->n++;
    }
    shard_names_free(&names);
    if (rc != 0) shards_close(sh);
    return rc;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int hf_model_files(const char *dir, char ***paths, int *n, NfError *err) {
    ShardNames names;
    *paths = NULL;
    *n = 0;
    if (shard_names(dir, &names, err) != 0) return -1;
    qsort(names.names, (size_t)names.n, sizeof names.names[0], by_name);
    char **out = nf_alloc_array((size_t)names.n + 2, sizeof *out, err);
    int k = 0, rc = out ? 0 : -1;
    if (rc == 0 && !(out[k++] = nf_path_join(dir, "config.json"))) rc = -1;
    if (rc == 0 && names.index_present && !(out[k++] = nf_path_join(dir, "model.safetensors.index.json"))) rc = -1;
    for (int i = 0; rc == 0 && i < names.n; i++)
        if (!(out[k++] = nf_path_join(dir, names.names[i]))) rc = -1;
    shard_names_free(&names);
    if (rc != 0) {
        hf_model_files_free(out, k);
        return out ? nf_fail(err, NF_ERR_MEMORY, "out of memory") : -1;
    }
    *paths = out;
    *n = k;
    return 0;
}

void hf_model_files_free(char **paths, int n) {
    for (int i = 0; paths && i < n; i++) free(paths[i]);
    free(paths);
}

/* ---- tensors ---------------------------------------------------------------------- */

/* src, the shards' tensor for t, has t's shape and a dtype we read. */
static int check_tensor(const char *dir, const LlamaTensor *t, const StTensor *src, NfError *err) {
    if (src->n_dims != (t->cols ? 2 : 1) || src->shape[0] != t->rows || (t->cols && src->shape[1] != t->cols))
        return nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s has the wrong shape for config.json", dir, t->hf_name);
    if (src->dtype != ST_F32 && src->dtype != ST_F16 && src->dtype != ST_BF16)
        return nf_fail(err, NF_ERR_MODEL, "'%s': tensor %s is not F32, F16 or BF16", dir, t->hf_name);
    return 0;
}

/* Copies src (check_tensor passed) into t->data as fp32 in llama2.c's row order. */
static int copy_tensor(const LlamaTensor *t, const StTensor *src, ImportInfo *info, NfError *err) {
    uint64_t count = t->rows * (t->cols ? t->cols : 1);
    float *tmp = t->rope_heads ? nf_alloc_array(count, sizeof(float), err) : NULL;
    if (t->rope_heads && !tmp) return -1;
    float *w = tmp ? tmp : t->data;
    if (src->dtype == ST_F32) {
        memcpy(w, src->data, count * 4);
        import_note_dtype(info, "F32");
    } else {
        for (uint64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src->data + 2 * i, 2);
            w[i] = src->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        import_note_dtype(info, src->dtype == ST_F16 ? "F16" : "BF16");
    }
    if (tmp) { /* HF's half-rotation order back to llama2.c's pairs */
        hf_permute_rows(t->data, tmp, t->rope_heads, t->rows, t->cols, false);
        free(tmp);
    }
    return 0;
}

/* Refuses a tensor in the shards that is none of t (n) and not one we can do without. */
static int check_leftovers(const char *dir, const ModelConfig *c, const Shards *sh, const LlamaTensor *t, int n,
                           NfError *err) {
    for (int s = 0; s < sh->n; s++)
        for (int i = 0; i < sh->files[s].n_tensors; i++) {
            const char *name = sh->files[s].tensors[i].name;
            bool known = strstr(name, "rotary_emb.inv_freq") != NULL || /* a cache older transformers saved */
                         (c->shared_classifier && strcmp(name, "lm_head.weight") == 0);
            for (int k = 0; k < n && !known; k++) known = strcmp(t[k].hf_name, name) == 0;
            if (!known)
                return nf_fail(err, NF_ERR_MODEL,
                               "'%s' has tensor '%.80s', which a %s model of this config.json has no "
                               "place for",
                               dir, name, model_arch_name(c->arch));
        }
    return 0;
}

/* Each tensor of t (n) found in the shards, checked: the shards' sizes then bound what the caller allocates. */
static int find_tensors(const char *dir, const Shards *sh, const LlamaTensor *t, int n, const StTensor **src,
                        NfError *err) {
    for (int k = 0; k < n; k++) {
        src[k] = NULL;
        for (int s = 0; s < sh->n && !src[k]; s++) src[k] = st_find(&sh->files[s], t[k].hf_name);
        if (!src[k]) return nf_fail(err, NF_ERR_MODEL, "'%s' lacks tensor %s", dir, t[k].hf_name);
        if (check_tensor(dir, &t[k], src[k], err) != 0) return -1;
    }
    return 0;
}

int hf_model_read(const char *dir, ModelConfig *c, float **params, ImportInfo *info, NfError *err) {
    Shards sh = {.n = 0};
    int rc = -1;
    LlamaTensor *t = NULL;
    const StTensor **src = NULL;
    float *p = NULL;
    if (hf_model_read_config(dir, c, err) != 0 || shards_open(dir, &sh, err) != 0) goto done;
    int n = llama_tensor_count(c);
    if (!(t = nf_alloc_array((size_t)n, sizeof *t, err)) || !(src = nf_alloc_array((size_t)n, sizeof *src, err)))
        goto done;
    llama_tensors(c, NULL, t); /* names and shapes first: nothing large is allocated before the files back it */
    /* the leftovers first: a tensor of a feature we lack explains a missing or misshapen one best */
    if (check_leftovers(dir, c, &sh, t, n, err) != 0 || find_tensors(dir, &sh, t, n, src, err) != 0) goto done;
    if (!(p = nf_alloc_array((size_t)config_param_count(c), sizeof *p, err))) goto done;
    llama_tensors(c, p, t);
    for (int k = 0; k < n; k++) {
        if (copy_tensor(&t[k], src[k], info, err) != 0) goto done;
        /* its pages of the mapping are not needed again: a 1B model's shards need not sit beside its weights */
        nf_release_pages(src[k]->data, (size_t)src[k]->bytes);
    }
    info->tensors = n;
    info->rms_eps = config_norm_eps(c);
    *params = p;
    p = NULL;
    rc = 0;
done:
    shards_close(&sh);
    free(t), free(src), free(p);
    return rc;
}

/* ---- writing config.json ---------------------------------------------------------- */

void hf_model_config_json(JsonBuf *j, const ModelConfig *c, const Tokenizer *tok) {
    const HfFamily *f = &FAMILIES[0];
    for (int i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i].arch == c->arch) f = &FAMILIES[i];
    json_object_begin(j, NULL);
    json_array_begin(j, "architectures");
    json_str(j, NULL, f->architecture);
    json_array_end(j);
    json_str(j, "model_type", f->model_type);
    json_int(j, "hidden_size", c->dim);
    json_int(j, "intermediate_size", c->hidden_dim);
    json_int(j, "num_hidden_layers", c->n_layers);
    json_int(j, "num_attention_heads", c->n_heads);
    json_int(j, "num_key_value_heads", c->n_kv_heads);
    json_int(j, "head_dim", config_head_size(c));
    json_int(j, "vocab_size", c->vocab_size);
    json_int(j, "max_position_embeddings", c->seq_len);
    json_float(j, "rms_norm_eps", config_norm_eps(c));
    json_float(j, "rope_theta", config_rope_theta(c));
    const RopeScaling *s = &c->rope_scaling;
    if (s->type == ROPE_SCALING_LLAMA3) {
        json_object_begin(j, "rope_scaling");
        json_str(j, "rope_type", "llama3");
        json_float(j, "factor", s->factor);
        json_float(j, "low_freq_factor", s->low_freq_factor);
        json_float(j, "high_freq_factor", s->high_freq_factor);
        json_int(j, "original_max_position_embeddings", s->original_context);
        json_object_end(j);
    } else {
        json_null_value(j, "rope_scaling");
    }
    json_bool(j, "tie_word_embeddings", c->shared_classifier);
    json_str(j, "hidden_act", "silu");
    if (c->arch != ARCH_QWEN2) json_bool(j, "attention_bias", false); /* Qwen 2's q/k/v biases have no key */
    if (c->arch == ARCH_LLAMA) json_bool(j, "mlp_bias", false);
    if (c->arch != ARCH_LLAMA) json_bool(j, "use_sliding_window", false); /* Qwen's default, said outright */
    json_number(j, "attention_dropout", 0.0);
    /* a tokenizer.json's own ids; without one, llama2.c's (tokenizer.bin), what its models use */
    if (tok && tok->hf) {
        if (tok->bos_id >= 0)
            json_int(j, "bos_token_id", tok->bos_id);
        else
            json_null_value(j, "bos_token_id");
        if (tok->eos_id >= 0)
            json_int(j, "eos_token_id", tok->eos_id);
        else
            json_null_value(j, "eos_token_id");
    } else {
        json_int(j, "bos_token_id", 1);
        json_int(j, "eos_token_id", 2);
    }
    json_str(j, "torch_dtype", "float32");
    json_object_end(j);
}
