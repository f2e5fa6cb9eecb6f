/* gguf.c — reading and writing the GGUF container (see gguf.h). */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define GGUF_MAGIC     0x46554747u /* "GGUF" */
#define GGUF_MAX_ITEMS (1u << 24)  /* tensors or keys: far beyond any real file, small enough to allocate */

/* ---- reading ------------------------------------------------------------------ */

typedef struct {
    const unsigned char *p, *end;
} Cursor;

static bool take(Cursor *c, uint64_t n, const unsigned char **at) {
    if (n > (uint64_t)(c->end - c->p)) return false;
    *at = c->p;
    c->p += n;
    return true;
}

static bool read_u32(Cursor *c, uint32_t *v) {
    const unsigned char *at;
    if (!take(c, 4, &at)) return false;
    memcpy(v, at, 4);
    return true;
}

static bool read_u64(Cursor *c, uint64_t *v) {
    const unsigned char *at;
    if (!take(c, 8, &at)) return false;
    memcpy(v, at, 8);
    return true;
}

static bool read_string(Cursor *c, const char **s, uint64_t *len) {
    const unsigned char *at;
    if (!read_u64(c, len) || !take(c, *len, &at)) return false;
    *s = (const char *)at;
    return true;
}

static uint64_t scalar_size(GgufType t) {
    switch (t) {
    case GGUF_UINT8:
    case GGUF_INT8:
    case GGUF_BOOL: return 1;
    case GGUF_UINT16:
    case GGUF_INT16: return 2;
    case GGUF_UINT32:
    case GGUF_INT32:
    case GGUF_FLOAT32: return 4;
    case GGUF_UINT64:
    case GGUF_INT64:
    case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Skips one value of type t (not an array); false if it runs past the end. */
static bool skip_value(Cursor *c, GgufType t) {
    const unsigned char *at;
    if (t == GGUF_STRING) {
        const char *s;
        uint64_t len;
        return read_string(c, &s, &len);
    }
    uint64_t size = scalar_size(t);
    return size > 0 && take(c, size, &at);
}

uint64_t ggml_type_bytes(uint32_t type, uint64_t n, uint64_t row) {
    switch (type) {
    case GGML_F32: return n * 4;
    case GGML_F16:
    case GGML_BF16: return n * 2;
    case GGML_Q8_0: return row % GGML_Q8_0_BLOCK == 0 ? n / GGML_Q8_0_BLOCK * GGML_Q8_0_BYTES : 0;
    default: return 0;
    }
}

static int bad(NfError *err, const char *path, const char *what) {
    return nf_fail(err, NF_ERR_MODEL, "'%s' is not a usable GGUF file: %s", path, what);
}

bool gguf_is_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return false;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    uint32_t magic = 0;
    bool gguf = fread(&magic, 1, 4, f) == 4 && magic == GGUF_MAGIC;
    fclose(f);
    return gguf;
}

int gguf_open(GgufFile *g, const char *path, NfError *err) {
    memset(g, 0, sizeof *g);
    if (mapped_file_open(&g->file, path, "GGUF file", err) != 0) return -1;
    Cursor c = {g->file.data, g->file.data + g->file.size};
    uint32_t magic;
    if (!read_u32(&c, &magic) || magic != GGUF_MAGIC) {
        bad(err, path, "no GGUF magic");
        goto fail;
    }
    if (!read_u32(&c, &g->version) || g->version < 2 || g->version > 3) {
        bad(err, path, "only GGUF versions 2 and 3 are read");
        goto fail;
    }
    if (!read_u64(&c, &g->n_tensors) || !read_u64(&c, &g->n_kv)) {
        bad(err, path, "truncated header");
        goto fail;
    }
    /* every key and tensor takes at least 12 bytes: counts beyond that are forged */
    if (g->n_tensors > GGUF_MAX_ITEMS || g->n_kv > GGUF_MAX_ITEMS ||
        (g->n_tensors + g->n_kv) * 12 > (uint64_t)(c.end - c.p)) {
        bad(err, path, "tensor or key count larger than the file");
        goto fail;
    }
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory reading '%s'", path);
        goto fail;
    }
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        GgufKv *kv = &g->kv[i];
        uint64_t len;
        uint32_t type;
        if (!read_string(&c, &kv->key, &len) || !read_u32(&c, &type)) {
            bad(err, path, "truncated metadata");
            goto fail;
        }
        kv->key_len = (size_t)len;
        kv->type = (GgufType)type;
        kv->value = c.p;
        bool ok;
        if (type == GGUF_ARRAY) {
            uint32_t elem = 0;
            ok = read_u32(&c, &elem) && read_u64(&c, &kv->array_count) && elem != GGUF_ARRAY &&
                 (elem == GGUF_STRING || scalar_size((GgufType)elem) > 0);
            kv->array_type = (GgufType)elem;
            kv->value = c.p;
            if (ok && elem != GGUF_STRING) {
                const unsigned char *at;
                uint64_t size = scalar_size((GgufType)elem);
                ok = kv->array_count <= (uint64_t)(c.end - c.p) / size && take(&c, kv->array_count * size, &at);
            } else
                for (uint64_t k = 0; ok && k < kv->array_count; k++) ok = skip_value(&c, GGUF_STRING);
        } else
            ok = skip_value(&c, (GgufType)type);
        if (!ok) {
            char what[160];
            snprintf(what, sizeof what, "metadata value of '%.*s' is truncated or of an unknown type",
                     (int)(kv->key_len < 80 ? kv->key_len : 80), kv->key);
            bad(err, path, what);
            goto fail;
        }
    }
    const GgufKv *align = gguf_find(g, "general.alignment");
    if (align) {
        uint64_t a;
        if (gguf_kv_uint(align, &a) != 0 || a == 0 || a > 65536 || (a & (a - 1)) != 0) {
            bad(err, path, "general.alignment is not a power of two up to 65536");
            goto fail;
        }
        g->alignment = (uint32_t)a;
    }
    uint64_t *offsets = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *offsets);
    if (!offsets) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory reading '%s'", path);
        goto fail;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        GgufTensor *t = &g->tensors[i];
        uint64_t len = 0;
        bool ok =
            read_string(&c, &t->name, &len) && read_u32(&c, &t->n_dims) && t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS;
        t->name_len = (size_t)len;
        uint64_t n = 1;
        for (uint32_t d = 0; ok && d < t->n_dims; d++) {
            ok = read_u64(&c, &t->dims[d]) && t->dims[d] > 0 && t->dims[d] <= (1ull << 40) / n;
            if (ok) n *= t->dims[d];
        }
        ok = ok && read_u32(&c, &t->type) && read_u64(&c, &offsets[i]);
        if (!ok) {
            free(offsets);
            bad(err, path, "a tensor description is truncated or has impossible dimensions");
            goto fail;
        }
        t->bytes = ggml_type_bytes(t->type, n, t->dims[0]);
    }
    uint64_t header = (uint64_t)(c.p - g->file.data);
    uint64_t data_start = (header + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        GgufTensor *t = &g->tensors[i];
        if (offsets[i] % g->alignment != 0 || data_start > g->file.size || offsets[i] > g->file.size - data_start ||
            t->bytes > g->file.size - data_start - offsets[i]) {
            char what[200];
            snprintf(what, sizeof what, "tensor '%.*s' lies outside the file or is misaligned",
                     (int)(t->name_len < 80 ? t->name_len : 80), t->name);
            free(offsets);
            bad(err, path, what);
            goto fail;
        }
        t->data = g->file.data + data_start + offsets[i];
    }
    free(offsets);
    return 0;
fail:
    gguf_close(g);
    return -1;
}

void gguf_close(GgufFile *g) {
    mapped_file_close(&g->file);
    free(g->kv);
    free(g->tensors);
    memset(g, 0, sizeof *g);
}

const GgufKv *gguf_find(const GgufFile *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0) return &g->kv[i];
    return NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *g, const char *name) {
    size_t n = strlen(name);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name_len == n && memcmp(g->tensors[i].name, name, n) == 0) return &g->tensors[i];
    return NULL;
}

int gguf_kv_uint(const GgufKv *kv, uint64_t *out) {
    bool is_signed;
    switch (kv->type) {
    case GGUF_UINT8:
    case GGUF_UINT16:
    case GGUF_UINT32:
    case GGUF_UINT64: is_signed = false; break;
    case GGUF_INT8:
    case GGUF_INT16:
    case GGUF_INT32:
    case GGUF_INT64: is_signed = true; break;
    default: return -1;
    }
    uint64_t bytes = scalar_size(kv->type), x = 0;
    memcpy(&x, kv->value, bytes);                           /* little-endian, as GGUF and the hosts we build for */
    if (is_signed && (x >> (8 * bytes - 1) & 1)) return -1; /* a negative count is no count */
    *out = x;
    return 0;
}

int gguf_kv_float(const GgufKv *kv, double *out) {
    if (kv->type == GGUF_FLOAT32) {
        float x;
        memcpy(&x, kv->value, 4);
        *out = x;
        return 0;
    }
    if (kv->type == GGUF_FLOAT64) {
        memcpy(out, kv->value, 8);
        return 0;
    }
    uint64_t u;
    if (gguf_kv_uint(kv, &u) != 0) return -1;
    *out = (double)u;
    return 0;
}

void gguf_string_at(const unsigned char *at, const char **s, uint64_t *len, const unsigned char **next) {
    memcpy(len, at, 8); /* bounds were checked when the file was opened */
    *s = (const char *)at + 8;
    if (next) *next = at + 8 + *len;
}

/* ---- writing ------------------------------------------------------------------ */

static void put(ByteBuf *b, const void *data, size_t n) {
    if (b->failed) return;
    if (!nf_grow((void **)&b->data, &b->cap, b->len + n, 1, 4096)) {
        b->failed = true;
        return;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void put_u32(ByteBuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(ByteBuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(ByteBuf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}

static void put_key(GgufWriter *w, const char *key, GgufType type) {
    put_str(&w->kv, key, strlen(key));
    put_u32(&w->kv, (uint32_t)type);
    w->n_kv++;
}

void gguf_writer_init(GgufWriter *w) { memset(w, 0, sizeof *w); }

void gguf_writer_free(GgufWriter *w) {
    free(w->kv.data);
    free(w->tensors);
    memset(w, 0, sizeof *w);
}

void gguf_put_string(GgufWriter *w, const char *key, const char *s) {
    put_key(w, key, GGUF_STRING);
    put_str(&w->kv, s, strlen(s));
}

void gguf_put_u32(GgufWriter *w, const char *key, uint32_t v) {
    put_key(w, key, GGUF_UINT32);
    put_u32(&w->kv, v);
}

void gguf_put_f32(GgufWriter *w, const char *key, float v) {
    put_key(w, key, GGUF_FLOAT32);
    put(&w->kv, &v, 4);
}

void gguf_put_bool(GgufWriter *w, const char *key, bool v) {
    put_key(w, key, GGUF_BOOL);
    unsigned char b = v;
    put(&w->kv, &b, 1);
}

void gguf_put_string_array(GgufWriter *w, const char *key, uint64_t n, const char *const *s, const uint32_t *len) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_STRING);
    put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, s[i], len[i]);
}

void gguf_put_f32_array(GgufWriter *w, const char *key, uint64_t n, const float *v) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_FLOAT32);
    put_u64(&w->kv, n);
    put(&w->kv, v, n * 4);
}

void gguf_put_i32_array(GgufWriter *w, const char *key, uint64_t n, const int32_t *v) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_INT32);
    put_u64(&w->kv, n);
    put(&w->kv, v, n * 4);
}

int gguf_add_tensor(GgufWriter *w, const char *name, uint32_t n_dims, const uint64_t *dims, GgmlType type,
                    const void *data, uint64_t bytes, NfError *err) {
    if (!nf_grow((void **)&w->tensors, &w->cap_tensors, (size_t)w->n_tensors + 1, sizeof *w->tensors, 64))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory describing GGUF tensors");
    GgufOutTensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    memcpy(t->dims, dims, n_dims * sizeof *dims);
    t->type = type;
    t->data = data;
    t->bytes = bytes;
    return 0;
}

static uint64_t align_up(uint64_t x) {
    return (x + GGUF_DEFAULT_ALIGNMENT - 1) / GGUF_DEFAULT_ALIGNMENT * GGUF_DEFAULT_ALIGNMENT;
}

int gguf_writer_commit(GgufWriter *w, const char *path, uint64_t *bytes, NfError *err) {
    ByteBuf head = {0};
    put_u32(&head, GGUF_MAGIC);
    put_u32(&head, 3);
    put_u64(&head, w->n_tensors);
    put_u64(&head, w->n_kv);
    put(&head, w->kv.data, w->kv.len);
    uint64_t offset = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const GgufOutTensor *t = &w->tensors[i];
        put_str(&head, t->name, strlen(t->name));
        put_u32(&head, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&head, t->dims[d]);
        put_u32(&head, (uint32_t)t->type);
        put_u64(&head, offset);
        offset = align_up(offset + t->bytes);
    }
    if (head.failed || w->kv.failed) {
        free(head.data);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory building the GGUF header");
    }
    static const unsigned char zeros[GGUF_DEFAULT_ALIGNMENT] = {0};
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) {
        free(head.data);
        return -1;
    }
    uint64_t at = head.len;
    int rc = atomic_file_write(&f, head.data, head.len, err);
    free(head.data);
    if (rc == 0) {
        rc = atomic_file_write(&f, zeros, align_up(at) - at, err);
        at = align_up(at);
    }
    for (uint64_t i = 0; rc == 0 && i < w->n_tensors; i++) {
        const GgufOutTensor *t = &w->tensors[i];
        rc = atomic_file_write(&f, t->data, t->bytes, err);
        if (rc == 0 && i + 1 < w->n_tensors) rc = atomic_file_write(&f, zeros, align_up(t->bytes) - t->bytes, err);
        at += i + 1 < w->n_tensors ? align_up(t->bytes) : t->bytes;
    }
    if (rc != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    *bytes = at;
    return atomic_file_commit(&f, err);
}
