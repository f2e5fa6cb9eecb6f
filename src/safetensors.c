/* safetensors.c — reading and writing safetensors files (see safetensors.h). */
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_parse.h"

#define ST_MAX_HEADER (100u << 20)

static StDtype dtype_of(const char *s) {
    return strcmp(s, "F32") == 0    ? ST_F32
           : strcmp(s, "F16") == 0  ? ST_F16
           : strcmp(s, "BF16") == 0 ? ST_BF16
                                    : ST_OTHER;
}

static const char *dtype_name(StDtype d) { return d == ST_F32 ? "F32" : d == ST_F16 ? "F16" : "BF16"; }
static uint64_t dtype_size(StDtype d) { return d == ST_F32 ? 4 : 2; }

/* A non-negative integer JSON number, exactly. */
static bool json_u64(const JsonValue *v, uint64_t *out) {
    if (!v || v->type != JV_NUMBER) return false;
    char *end;
    unsigned long long x = strtoull(v->text, &end, 10);
    if (*end != '\0' || v->text[0] == '-') return false;
    *out = x;
    return true;
}

static int bad(NfError *err, const char *path, const char *what, const char *name) {
    return nf_fail(err, NF_ERR_MODEL, "'%s' is not a usable safetensors file: %s%s%.80s%s", path, what,
                   name ? " ('" : "", name ? name : "", name ? "')" : "");
}

int st_open(StFile *f, const char *path, NfError *err) {
    memset(f, 0, sizeof *f);
    if (mapped_file_open(&f->file, path, "safetensors file", err) != 0) return -1;
    uint64_t header_len;
    JsonValue h = {0};
    if (f->file.size < 8) {
        bad(err, path, "shorter than its header length", NULL);
        goto fail;
    }
    memcpy(&header_len, f->file.data, 8);
    if (header_len > ST_MAX_HEADER || header_len > f->file.size - 8) {
        bad(err, path, "header length beyond the file or above 100 MB", NULL);
        goto fail;
    }
    if (json_parse((const char *)f->file.data + 8, (size_t)header_len, &h, err) != 0) {
        nf_prefix(err, NF_ERR_MODEL, "'%s' is not a usable safetensors file: ", path); /* as bad() says it */
        goto fail;
    }
    if (h.type != JV_OBJECT) {
        bad(err, path, "the header is not a JSON object", NULL);
        goto fail;
    }
    f->tensors = calloc((size_t)h.n + 1, sizeof *f->tensors);
    if (!f->tensors) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory reading '%s'", path);
        goto fail;
    }
    const unsigned char *data = f->file.data + 8 + header_len;
    uint64_t data_size = f->file.size - 8 - header_len;
    for (int i = 0; i < h.n; i++) {
        if (strcmp(h.keys[i], "__metadata__") == 0) continue;
        const JsonValue *t = &h.items[i], *dt = json_get(t, "dtype"), *shape = json_get(t, "shape"),
                        *offs = json_get(t, "data_offsets");
        StTensor *out = &f->tensors[f->n_tensors];
        uint64_t begin, end, count = 1;
        if (t->type != JV_OBJECT || !dt || dt->type != JV_STRING || !shape || shape->type != JV_ARRAY ||
            shape->n > ST_MAX_DIMS || !offs || offs->type != JV_ARRAY || offs->n != 2 ||
            !json_u64(&offs->items[0], &begin) || !json_u64(&offs->items[1], &end) || begin > end || end > data_size) {
            bad(err, path, "a tensor's entry is malformed or lies outside the file", h.keys[i]);
            goto fail;
        }
        out->dtype = dtype_of(dt->text);
        out->n_dims = shape->n;
        for (int d = 0; d < shape->n; d++) {
            if (!json_u64(&shape->items[d], &out->shape[d]) || out->shape[d] > (1ull << 40) ||
                (out->shape[d] && count > (1ull << 40) / out->shape[d])) {
                bad(err, path, "a tensor's shape is malformed", h.keys[i]);
                goto fail;
            }
            count *= out->shape[d];
        }
        if (out->dtype != ST_OTHER && count * dtype_size(out->dtype) != end - begin) {
            bad(err, path, "a tensor's byte range does not match its shape", h.keys[i]);
            goto fail;
        }
        if (!(out->name = strdup(h.keys[i]))) {
            nf_fail(err, NF_ERR_MEMORY, "out of memory reading '%s'", path);
            goto fail;
        }
        out->data = data + begin;
        out->bytes = end - begin;
        f->n_tensors++;
    }
    json_value_free(&h);
    return 0;
fail:
    json_value_free(&h);
    st_close(f);
    return -1;
}

void st_close(StFile *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    mapped_file_close(&f->file);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int st_write(const char *path, const StOutTensor *tensors, int n, uint64_t *bytes, NfError *err) {
    JsonBuf h;
    json_init(&h);
    json_object_begin(&h, NULL);
    json_object_begin(&h, "__metadata__");
    json_str(&h, "format", "pt");
    json_object_end(&h);
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const StOutTensor *t = &tensors[i];
        json_object_begin(&h, t->name);
        json_str(&h, "dtype", dtype_name(t->dtype));
        json_array_begin(&h, "shape");
        for (int d = 0; d < t->n_dims; d++) json_int(&h, NULL, (int64_t)t->shape[d]);
        json_array_end(&h);
        json_array_begin(&h, "data_offsets");
        json_int(&h, NULL, (int64_t)offset);
        json_int(&h, NULL, (int64_t)(offset + t->bytes));
        json_array_end(&h);
        json_object_end(&h);
        offset += t->bytes;
    }
    json_object_end(&h);
    if (h.failed) {
        json_free(&h);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory building the safetensors header");
    }
    /* the header is padded with spaces to a multiple of 8, so the data is aligned */
    uint64_t header_len = (h.len + 7) / 8 * 8;
    AtomicFile f;
    int rc = atomic_file_open(&f, path, err);
    if (rc == 0) rc = atomic_file_write(&f, &header_len, 8, err);
    if (rc == 0) rc = atomic_file_write(&f, h.data, h.len, err);
    if (rc == 0) rc = atomic_file_write(&f, "       ", header_len - h.len, err);
    for (int i = 0; rc == 0 && i < n; i++) rc = atomic_file_write(&f, tensors[i].data, tensors[i].bytes, err);
    json_free(&h);
    if (rc != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    *bytes = 8 + header_len + offset;
    return atomic_file_commit(&f, err);
}
