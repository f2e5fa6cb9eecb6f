/* gguf.h — the GGUF container (version 3, little-endian), as llama.cpp
 * writes and reads it: a header, typed metadata key/values, tensor
 * descriptions, then the tensor data, each tensor aligned.
 *
 * The reader maps a file, checks every count, length and offset against the
 * file's size before using it, and gives views of values and tensor data.
 * The writer collects metadata and tensors (pointers to caller-owned
 * bytes, which must stay valid until gguf_writer_commit) and writes the file
 * atomically. What the keys and tensors of a LLaMA are is llama_interop.h's
 * business, not this file's. docs/formats.md has the layout. */
#ifndef NF_GGUF_H
#define NF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fileio.h"

typedef enum {
    GGUF_UINT8 = 0,
    GGUF_INT8 = 1,
    GGUF_UINT16 = 2,
    GGUF_INT16 = 3,
    GGUF_UINT32 = 4,
    GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_UINT64 = 10,
    GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
} GgufType;

/* ggml tensor types NeuralForge reads and writes */
typedef enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q8_0 = 8, GGML_BF16 = 30 } GgmlType;
#define GGML_Q8_0_BLOCK 32 /* values per Q8_0 block: an fp16 scale, then 32 int8 */
#define GGML_Q8_0_BYTES 34

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    const char *key; /* not NUL-terminated: key_len bytes */
    size_t key_len;
    GgufType type;
    const unsigned char *value; /* the value's bytes (for arrays: the first element) */
    GgufType array_type;        /* GGUF_ARRAY only */
    uint64_t array_count;       /* GGUF_ARRAY only */
} GgufKv;

typedef struct {
    const char *name; /* not NUL-terminated: name_len bytes */
    size_t name_len;
    uint32_t n_dims;
    uint64_t dims[GGUF_MAX_DIMS]; /* ggml order: dims[0] is the fastest-varying (a row's length) */
    uint32_t type;                /* GgmlType, or another ggml type (refused by users that cannot read it) */
    const unsigned char *data;    /* in the mapping */
    uint64_t bytes;               /* 0 for types this file does not know the size of */
} GgufTensor;

typedef struct {
    MappedFile file;
    uint32_t version;
    GgufKv *kv;
    uint64_t n_kv;
    GgufTensor *tensors;
    uint64_t n_tensors;
    uint32_t alignment;
} GgufFile;

/* Whether path is a regular file starting with GGUF's magic. */
bool gguf_is_file(const char *path);
int gguf_open(GgufFile *g, const char *path, NfError *err);
void gguf_close(GgufFile *g);

const GgufKv *gguf_find(const GgufFile *g, const char *key);
const GgufTensor *gguf_find_tensor(const GgufFile *g, const char *name);
/* Scalar values, converted; fail (-1) for a value of another kind. */
int gguf_kv_uint(const GgufKv *kv, uint64_t *out);
int gguf_kv_float(const GgufKv *kv, double *out);
/* A string value (or one element of a string array, by cursor: pass the
 * array's value pointer first, then what *next returns). */
void gguf_string_at(const unsigned char *at, const char **s, uint64_t *len, const unsigned char **next);
/* Bytes of n values of a ggml type with rows of `row` values; 0 if unknown or not whole blocks. */
uint64_t ggml_type_bytes(uint32_t type, uint64_t n, uint64_t row);

typedef struct {
    unsigned char *data;
    size_t len, cap;
    bool failed; /* an allocation failed: commit reports it */
} ByteBuf;

typedef struct {
    char name[96];
    uint32_t n_dims;
    uint64_t dims[GGUF_MAX_DIMS];
    GgmlType type;
    const void *data; /* caller-owned, bytes long */
    uint64_t bytes;
} GgufOutTensor;

typedef struct {
    ByteBuf kv; /* the metadata section as it will be written */
    uint64_t n_kv;
    GgufOutTensor *tensors;
    uint64_t n_tensors;
    size_t cap_tensors;
} GgufWriter;

void gguf_writer_init(GgufWriter *w);
void gguf_writer_free(GgufWriter *w);
void gguf_put_string(GgufWriter *w, const char *key, const char *s);
void gguf_put_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_put_f32(GgufWriter *w, const char *key, float v);
void gguf_put_bool(GgufWriter *w, const char *key, bool v);
/* Arrays: n strings (pieces[i], lengths[i]), n float32, n int32. */
void gguf_put_string_array(GgufWriter *w, const char *key, uint64_t n, const char *const *s, const uint32_t *len);
void gguf_put_f32_array(GgufWriter *w, const char *key, uint64_t n, const float *v);
void gguf_put_i32_array(GgufWriter *w, const char *key, uint64_t n, const int32_t *v);
/* dims in ggml order (row length first) */
int gguf_add_tensor(GgufWriter *w, const char *name, uint32_t n_dims, const uint64_t *dims, GgmlType type,
                    const void *data, uint64_t bytes, NfError *err);
/* Writes the file atomically; *bytes is its size. */
int gguf_writer_commit(GgufWriter *w, const char *path, uint64_t *bytes, NfError *err);

#endif
