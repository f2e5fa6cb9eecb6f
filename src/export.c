/* export.c — writing models and adapters in other tools' formats (see export.h). */
#include "export.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "f16.h"
#include "fileio.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "hf_model.h"
#include "hf_tokenizer.h"
#include "json.h"
#include "llama_interop.h"
#include "params.h"
#include "safetensors.h"
#include "util.h"

/* ---- llama2.c ------------------------------------------------------------------ */

static int write_all(AtomicFile *f, const float *p, size_t n, NfError *err) {
    return atomic_file_write(f, p, n * sizeof(float), err);
}

int export_llama2c(const char *path, const ModelConfig *c, const float *params, int version, ExportStats *st,
                   NfError *err) {
    char why[96];
    if (config_beyond_llama2c(c, why, sizeof why))
        return nf_fail(err, NF_ERR_USAGE, "a llama2.c model file cannot hold %s: export to gguf or safetensors", why);
    ParamPointers p;
    param_pointers(&p, (float *)params, c);
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, H = (size_t)c->hidden_dim, KV = (size_t)config_kv_dim(c),
           V = (size_t)c->vocab_size;
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    int rc = 0;
    uint64_t bytes;
    if (version == 0) {
        /* the legacy layout is the flat buffer itself, with freq_cis tables before a separate classifier */
        int32_t header[7] = {c->dim,     c->hidden_dim, c->n_layers,
                             c->n_heads, c->n_kv_heads, c->shared_classifier ? c->vocab_size : -c->vocab_size,
                             c->seq_len};
        size_t half = (size_t)config_head_size(c) / 2, cls_at = (size_t)(p.rms_final - params) + D;
        float *freq = nf_alloc_array(2 * (size_t)c->seq_len * half, sizeof(float), err);
        if (!freq) rc = -1;
        for (int pos = 0; rc == 0 && pos < c->seq_len; pos++)
            for (size_t i = 0; i < half; i++) {
                float angle = pos * (1.0f / powf(10000.0f, (float)(2 * i) / (float)config_head_size(c)));
                freq[(size_t)pos * half + i] = cosf(angle);
                freq[(size_t)c->seq_len * half + (size_t)pos * half + i] = sinf(angle);
            }
        if (rc == 0)
            rc = atomic_file_write(&f, header, sizeof header, err) == 0 && write_all(&f, params, cls_at, err) == 0 &&
                         write_all(&f, freq, 2 * (size_t)c->seq_len * half, err) == 0 &&
                         (c->shared_classifier || write_all(&f, p.wcls, V * D, err) == 0)
                     ? 0
                     : -1;
        free(freq);
        bytes = sizeof header + (config_param_count(c) + 2 * (uint64_t)c->seq_len * half) * sizeof(float);
    } else {
        unsigned char header[256] = {0};
        uint32_t magic = 0x616b3432;
        int32_t fields[8] = {1,          c->dim,        c->hidden_dim, c->n_layers,
                             c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len};
        memcpy(header, &magic, 4);
        memcpy(header + 4, fields, sizeof fields);
        header[36] = c->shared_classifier ? 1 : 0;
        rc = atomic_file_write(&f, header, sizeof header, err) == 0 && write_all(&f, p.rms_att, L * D, err) == 0 &&
                     write_all(&f, p.rms_ffn, L * D, err) == 0 && write_all(&f, p.rms_final, D, err) == 0 &&
                     write_all(&f, p.token_embedding, V * D, err) == 0 && write_all(&f, p.wq, L * D * D, err) == 0 &&
                     write_all(&f, p.wk, L * KV * D, err) == 0 && write_all(&f, p.wv, L * KV * D, err) == 0 &&
                     write_all(&f, p.wo, L * D * D, err) == 0 && write_all(&f, p.w1, L * H * D, err) == 0 &&
                     write_all(&f, p.w2, L * D * H, err) == 0 && write_all(&f, p.w3, L * H * D, err) == 0 &&
                     (c->shared_classifier || write_all(&f, p.wcls, V * D, err) == 0)
                 ? 0
                 : -1;
        bytes = sizeof header + config_param_count(c) * sizeof(float);
    }
    if (rc != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    st->bytes = bytes;
    st->tensors = llama_tensor_count(c);
    return atomic_file_commit(&f, err);
}

/* ---- GGUF ---------------------------------------------------------------------- */

/* Buffers converted for the writer, freed after it commits. */
typedef struct {
    void **items;
    int n;
    size_t cap;
} Owned;

static void *owned_alloc(Owned *o, size_t bytes, NfError *err) {
    if (!nf_grow((void **)&o->items, &o->cap, (size_t)o->n + 1, sizeof *o->items, 64))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory converting tensors"), NULL;
    void *p = nf_alloc(bytes ? bytes : 1, err);
    if (p) o->items[o->n++] = p;
    return p;
}

static void owned_free(Owned *o) {
    for (int i = 0; i < o->n; i++) free(o->items[i]);
    free(o->items);
}

/* llama.cpp's Q8_0: blocks of 32, scale d = max|x| / 127 stored as fp16, q = round(x / d) */
static void quantize_q8_0(unsigned char *out, const float *x, uint64_t n) {
    for (uint64_t b = 0; b < n / GGML_Q8_0_BLOCK; b++) {
        const float *xb = x + b * GGML_Q8_0_BLOCK;
        unsigned char *ob = out + b * GGML_Q8_0_BYTES;
        float amax = 0.0f;
        for (int i = 0; i < GGML_Q8_0_BLOCK; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = f32_to_f16(d);
        memcpy(ob, &dh, 2);
        for (int i = 0; i < GGML_Q8_0_BLOCK; i++) ob[2 + i] = (unsigned char)(int8_t)roundf(xb[i] * id);
    }
}

static void put_model_config(GgufWriter *w, const ModelConfig *c) {
    char k[96];
    uint32_t hs = (uint32_t)config_head_size(c);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "context_length"), (uint32_t)c->seq_len);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "embedding_length"), (uint32_t)c->dim);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "block_count"), (uint32_t)c->n_layers);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "feed_forward_length"), (uint32_t)c->hidden_dim);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "attention.head_count"), (uint32_t)c->n_heads);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "attention.key_length"), hs);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "attention.value_length"), hs);
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "rope.dimension_count"), hs);
    gguf_put_f32(w, gguf_arch_key(k, sizeof k, c->arch, "rope.freq_base"), config_rope_theta(c));
    gguf_put_f32(w, gguf_arch_key(k, sizeof k, c->arch, "attention.layer_norm_rms_epsilon"), config_norm_eps(c));
    gguf_put_u32(w, gguf_arch_key(k, sizeof k, c->arch, "vocab_size"), (uint32_t)c->vocab_size);
}

/* One tensor in the dtype asked for (norms, biases and rope_freqs stay F32, as llama.cpp keeps them); rows of
 * RoPE-rotated tensors in HF's order when the architecture rotates halves. */
static int add_gguf_tensor(GgufWriter *w, Owned *owned, const LlamaTensor *t, const float *data, bool neox,
                           ExportDtype dtype, NfError *err) {
    uint64_t count = t->rows * (t->cols ? t->cols : 1), row = t->cols ? t->cols : t->rows;
    uint64_t dims[2] = {row, t->rows};
    GgmlType type = !t->cols || dtype == EXPORT_F32                      ? GGML_F32
                    : dtype == EXPORT_Q8_0 && row % GGML_Q8_0_BLOCK == 0 ? GGML_Q8_0
                                                                         : GGML_F16;
    if (neox && t->rope_heads) {
        float *perm = owned_alloc(owned, count * sizeof(float), err);
        if (!perm) return -1;
        hf_permute_rows(perm, data, t->rope_heads, t->rows, t->cols, true);
        data = perm;
    }
    uint64_t bytes = ggml_type_bytes(type, count, row);
    const void *out = data;
    if (type != GGML_F32) {
        unsigned char *conv = owned_alloc(owned, bytes, err);
        if (!conv) return -1;
        if (type == GGML_F16)
            for (uint64_t k = 0; k < count; k++) {
                uint16_t h = f32_to_f16(data[k]);
                memcpy(conv + 2 * k, &h, 2);
            }
        else
            quantize_q8_0(conv, data, count);
        out = conv;
    }
    return gguf_add_tensor(w, t->gguf_name, t->cols ? 2 : 1, dims, type, out, bytes, err);
}

int export_gguf(const char *path, const ModelConfig *c, const float *params, const Tokenizer *tok,
                const char *tokenizer_path, ExportDtype dtype, ExportStats *st, NfError *err) {
    const char *cannot = gguf_arch_refusal(c);
    if (cannot) return nf_fail(err, NF_ERR_USAGE, "--format gguf cannot hold %s", cannot);
    if (gguf_vocab_fits(tok, c->vocab_size, err) != 0) return -1;
    LlamaTensor *t = nf_alloc_array((size_t)llama_tensor_count(c), sizeof *t, err);
    if (!t) return -1;
    int n = llama_tensors(c, (float *)params, t), rc = 0;
    GgufWriter w;
    Owned owned = {0};
    gguf_writer_init(&w);
    gguf_put_string(&w, "general.architecture", model_arch_name(c->arch));
    gguf_put_string(&w, "general.name", "neuralforge");
    gguf_put_u32(&w, "general.file_type", dtype == EXPORT_F32 ? 0 : dtype == EXPORT_F16 ? 1 : 7);
    gguf_put_u32(&w, "general.quantization_version", 2);
    put_model_config(&w, c);
    rc = gguf_put_vocab(&w, tok, tokenizer_path, c->vocab_size, err);
    if (rc == 0 && c->rope_scaling.type == ROPE_SCALING_LLAMA3) {
        int half = config_head_size(c) / 2;
        float *factors = owned_alloc(&owned, (size_t)half * sizeof(float), err);
        uint64_t dims[1] = {(uint64_t)half};
        if (!factors) rc = -1;
        if (rc == 0) gguf_rope_factors(c, factors);
        if (rc == 0) rc = gguf_add_tensor(&w, "rope_freqs.weight", 1, dims, GGML_F32, factors, (uint64_t)half * 4, err);
    }
    for (int i = 0; rc == 0 && i < n; i++)
        rc = add_gguf_tensor(&w, &owned, &t[i], t[i].data, gguf_rope_neox(c->arch), dtype, err);
    if (rc == 0) rc = gguf_writer_commit(&w, path, &st->bytes, err);
    st->tensors = (int)w.n_tensors;
    gguf_writer_free(&w);
    owned_free(&owned);
    free(t);
    return rc;
}

/* ---- Hugging Face ---------------------------------------------------------------- */

static int ensure_dir(const char *dir, NfError *err) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return 0;
        return nf_fail(err, NF_ERR_USAGE, "--output '%s' exists and is not a directory", dir);
    }
    if (mkdir(dir, 0755) != 0) return nf_fail(err, NF_ERR_IO, "cannot create directory '%s': %s", dir, strerror(errno));
    return 0;
}

static int write_text(const char *path, const char *text, size_t n, uint64_t *bytes, NfError *err) {
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    if (atomic_file_write(&f, text, n, err) != 0 || atomic_file_write(&f, "\n", 1, err) != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    *bytes += n + 1;
    return atomic_file_commit(&f, err);
}

/* src copied byte for byte to dir/name, atomically. */
static int copy_into(const char *src, const char *dir, const char *name, uint64_t *bytes, NfError *err) {
    char *dst = nf_path_join(dir, name);
    if (!dst) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    MappedFile in;
    int rc = mapped_file_open(&in, src, "tokenizer", err);
    if (rc == 0) {
        AtomicFile f;
        rc = atomic_file_open(&f, dst, err);
        if (rc == 0 && atomic_file_write(&f, in.data, in.size, err) != 0) {
            atomic_file_abort(&f);
            rc = -1;
        } else if (rc == 0) {
            rc = atomic_file_commit(&f, err);
        }
        if (rc == 0) *bytes += in.size;
        mapped_file_close(&in);
    }
    free(dst);
    return rc;
}

/* tokenizer.json, tokenizer_config.json and chat_template.jinja (those present), as transformers'
 * AutoTokenizer loads them from the model's directory. */
static int copy_tokenizer_files(const char *tokenizer_path, const char *dir, uint64_t *bytes, NfError *err) {
    HfPaths files;
    if (hf_tokenizer_paths(tokenizer_path, &files, err) != 0) return -1;
    int rc = copy_into(files.json, dir, "tokenizer.json", bytes, err);
    if (rc == 0 && files.config) rc = copy_into(files.config, dir, "tokenizer_config.json", bytes, err);
    char *jinja = nf_path_join(files.dir, "chat_template.jinja");
    struct stat sb;
    if (rc == 0 && !jinja) rc = nf_fail(err, NF_ERR_MEMORY, "out of memory");
    if (rc == 0 && stat(jinja, &sb) == 0 && S_ISREG(sb.st_mode))
        rc = copy_into(jinja, dir, "chat_template.jinja", bytes, err);
    free(jinja);
    hf_paths_free(&files);
    return rc;
}

int export_safetensors(const char *dir, const ModelConfig *c, const float *params, const Tokenizer *tok,
                       const char *tokenizer_path, ExportStats *st, NfError *err) {
    if (tok && tokenizer_check_vocab(tok, c->vocab_size, err) != 0) return -1;
    if (ensure_dir(dir, err) != 0) return -1;
    int count = llama_tensor_count(c), rc = 0;
    LlamaTensor *t = nf_alloc_array((size_t)count, sizeof *t, err);
    StOutTensor *out = t ? nf_alloc_array((size_t)count, sizeof *out, err) : NULL;
    Owned owned = {0};
    char *model_path = nf_path_join(dir, "model.safetensors"), *config_path = nf_path_join(dir, "config.json");
    if (!t || !out || !model_path || !config_path) {
        rc = t && out ? nf_fail(err, NF_ERR_MEMORY, "out of memory") : -1;
        goto done;
    }
    int n = llama_tensors(c, (float *)params, t);
    for (int i = 0; i < n; i++) {
        uint64_t values = t[i].rows * (t[i].cols ? t[i].cols : 1);
        out[i] = (StOutTensor){.name = t[i].hf_name,
                               .dtype = ST_F32,
                               .n_dims = t[i].cols ? 2 : 1,
                               .shape = {t[i].rows, t[i].cols},
                               .data = t[i].data,
                               .bytes = values * 4};
        if (t[i].rope_heads) { /* HF rotates halves of each head: reorder its rows */
            float *perm = owned_alloc(&owned, values * 4, err);
            if (!perm) {
                rc = -1;
                goto done;
            }
            hf_permute_rows(perm, t[i].data, t[i].rope_heads, t[i].rows, t[i].cols, true);
            out[i].data = perm;
        }
    }
    st->bytes = 0;
    if ((rc = st_write(model_path, out, n, &st->bytes, err)) != 0) goto done;
    JsonBuf j;
    json_init(&j);
    hf_model_config_json(&j, c, tok);
    rc = j.failed ? nf_fail(err, NF_ERR_MEMORY, "out of memory")
                  : write_text(config_path, j.data, j.len, &st->bytes, err);
    json_free(&j);
    if (rc == 0 && tok && tok->hf) rc = copy_tokenizer_files(tokenizer_path, dir, &st->bytes, err);
    st->tensors = n;
done:
    owned_free(&owned);
    free(t), free(out), free(model_path), free(config_path);
    return rc;
}

/* ---- LoRA adapters ------------------------------------------------------------- */

static int check_adapter_exportable(const Lora *lora, const char *format, NfError *err) {
    if (lora->config.train_norms)
        return nf_fail(err, NF_ERR_USAGE,
                       "these adapters train the RMSNorm weights, which a %s adapter cannot hold: export them merged "
                       "(--format gguf, safetensors or llama2c) instead",
                       format);
    return 0;
}

int export_gguf_lora(const char *path, const ModelConfig *c, const Lora *lora, ExportStats *st, NfError *err) {
    if (check_adapter_exportable(lora, "GGUF LoRA", err) != 0) return -1;
    const char *cannot = gguf_arch_refusal(c);
    if (cannot) return nf_fail(err, NF_ERR_USAGE, "--format gguf-lora: llama.cpp cannot hold %s", cannot);
    int r = lora->config.rank, rc = 0, n = 0;
    Owned owned = {0};
    GgufWriter w;
    gguf_writer_init(&w);
    gguf_put_string(&w, "general.architecture", model_arch_name(c->arch));
    gguf_put_string(&w, "general.type", "adapter");
    gguf_put_string(&w, "adapter.type", "lora");
    gguf_put_f32(&w, "adapter.lora.alpha", lora->config.alpha);
    LlamaTensor *t = nf_alloc_array((size_t)llama_tensor_count(c), sizeof *t, err);
    if (!t) {
        gguf_writer_free(&w);
        return -1;
    }
    /* the table gives each projection's GGUF name; the data pointers into params are unused here */
    int count = llama_tensors(c, NULL, t);
    for (int i = 0; rc == 0 && i < count; i++) {
        LoraTarget k = t[i].target;
        if (k == LORA_TARGETS || !lora->w.a[k]) continue;
        int in, out;
        lora_target_dims(c, k, &in, &out);
        char name[96];
        uint64_t a_dims[2] = {(uint64_t)in, (uint64_t)r}, b_dims[2] = {(uint64_t)r, (uint64_t)out};
        const float *a = lora->w.a[k] + (size_t)t[i].layer * r * in, *b = lora->w.b[k] + (size_t)t[i].layer * out * r;
        if (t[i].rope_heads && gguf_rope_neox(c->arch)) { /* B's rows are the projection's outputs: HF's order */
            float *perm = owned_alloc(&owned, (size_t)out * r * 4, err);
            if (!perm) {
                rc = -1;
                break;
            }
            hf_permute_rows(perm, b, t[i].rope_heads, (uint64_t)out, (uint64_t)r, true);
            b = perm;
        }
        snprintf(name, sizeof name, "%s.lora_a", t[i].gguf_name);
        rc = gguf_add_tensor(&w, name, 2, a_dims, GGML_F32, a, (uint64_t)r * in * 4, err);
        snprintf(name, sizeof name, "%s.lora_b", t[i].gguf_name);
        if (rc == 0) rc = gguf_add_tensor(&w, name, 2, b_dims, GGML_F32, b, (uint64_t)out * r * 4, err);
        n += 2;
    }
    if (rc == 0) rc = gguf_writer_commit(&w, path, &st->bytes, err);
    st->tensors = n;
    gguf_writer_free(&w);
    owned_free(&owned);
    free(t);
    return rc;
}

int export_peft(const char *dir, const ModelConfig *c, const Lora *lora, const char *base_name, ExportStats *st,
                NfError *err) {
    if (check_adapter_exportable(lora, "PEFT", err) != 0 || ensure_dir(dir, err) != 0) return -1;
    int r = lora->config.rank, rc = 0, n = 0, count = llama_tensor_count(c);
    LlamaTensor *t = nf_alloc_array((size_t)count, sizeof *t, err);
    StOutTensor *out = t ? nf_alloc_array(2 * (size_t)count, sizeof *out, err) : NULL;
    char(*names)[128] = out ? nf_alloc_array(2 * (size_t)count, sizeof *names, err) : NULL;
    Owned owned = {0};
    char *model_path = nf_path_join(dir, "adapter_model.safetensors"),
         *config_path = nf_path_join(dir, "adapter_config.json");
    if (!names || !model_path || !config_path) {
        rc = names ? nf_fail(err, NF_ERR_MEMORY, "out of memory") : -1;
        goto done;
    }
    llama_tensors(c, NULL, t);
    for (int i = 0; i < count; i++) {
        LoraTarget k = t[i].target;
        if (k == LORA_TARGETS || !lora->w.a[k]) continue;
        int in, o;
        lora_target_dims(c, k, &in, &o);
        const float *a = lora->w.a[k] + (size_t)t[i].layer * r * in, *b = lora->w.b[k] + (size_t)t[i].layer * o * r;
        if (t[i].rope_heads) { /* B's rows are the projection's outputs: HF's order */
            float *perm = owned_alloc(&owned, (size_t)o * r * 4, err);
            if (!perm) {
                rc = -1;
                goto done;
            }
            hf_permute_rows(perm, b, t[i].rope_heads, (uint64_t)o, (uint64_t)r, true);
            b = perm;
        }
        snprintf(names[n], sizeof names[n], "base_model.model.model.layers.%d.%s.%s.lora_A.weight", t[i].layer,
                 hf_block_name(k), hf_module_name(k));
        out[n] = (StOutTensor){names[n], ST_F32, 2, {(uint64_t)r, (uint64_t)in}, a, (uint64_t)r * in * 4};
        n++;
        snprintf(names[n], sizeof names[n], "base_model.model.model.layers.%d.%s.%s.lora_B.weight", t[i].layer,
                 hf_block_name(k), hf_module_name(k));
        out[n] = (StOutTensor){names[n], ST_F32, 2, {(uint64_t)o, (uint64_t)r}, b, (uint64_t)o * r * 4};
        n++;
    }
    st->bytes = 0;
    if ((rc = st_write(model_path, out, n, &st->bytes, err)) != 0) goto done;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_str(&j, "peft_type", "LORA");
    json_str(&j, "task_type", "CAUSAL_LM");
    json_str(&j, "base_model_name_or_path", base_name ? base_name : "");
    json_int(&j, "r", r);
    json_float(&j, "lora_alpha", lora->config.alpha);
    json_float(&j, "lora_dropout", lora->config.dropout);
    json_array_begin(&j, "target_modules");
    for (int k = 0; k < LORA_TARGETS; k++)
        if (lora->w.a[k]) json_str(&j, NULL, hf_module_name((LoraTarget)k));
    json_array_end(&j);
    json_str(&j, "bias", "none");
    json_bool(&j, "fan_in_fan_out", false);
    json_bool(&j, "inference_mode", true);
    json_object_end(&j);
    rc = j.failed ? nf_fail(err, NF_ERR_MEMORY, "out of memory")
                  : write_text(config_path, j.data, j.len, &st->bytes, err);
    json_free(&j);
    st->tensors = n;
done:
    owned_free(&owned);
    free(t), free(out), free(names), free(model_path), free(config_path);
    return rc;
}

/* ---- tokenizer.bin ----------------------------------------------------------------- */

int tokenizer_bin_write(const char *path, int n, const char *const *pieces, const uint32_t *lens, const float *scores,
                        NfError *err) {
    int32_t max_len = 0;
    for (int i = 0; i < n; i++) max_len = (int32_t)lens[i] > max_len ? (int32_t)lens[i] : max_len;
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    int rc = atomic_file_write(&f, &max_len, 4, err);
    for (int i = 0; rc == 0 && i < n; i++) {
        int32_t len = (int32_t)lens[i];
        rc = atomic_file_write(&f, &scores[i], 4, err) == 0 && atomic_file_write(&f, &len, 4, err) == 0 &&
                     atomic_file_write(&f, pieces[i], lens[i], err) == 0
                 ? 0
                 : -1;
    }
    if (rc != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    return atomic_file_commit(&f, err);
}
