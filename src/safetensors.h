/* safetensors.h — Hugging Face's safetensors container: an 8-byte
 * little-endian header length, a JSON header naming each tensor's dtype,
 * shape and byte range, then the tensor bytes.
 *
 * The reader maps the file, parses the header (at most 100 MB, as the
 * reference implementation allows) and checks every range against the
 * file. The writer lays the given tensors out back to back and writes the
 * file atomically. Which tensors a LLaMA has is llama_interop.h's business. */
#ifndef NF_SAFETENSORS_H
#define NF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fileio.h"

typedef enum { ST_F32, ST_F16, ST_BF16, ST_OTHER } StDtype;

#define ST_MAX_DIMS 4

typedef struct {
    char *name;
    StDtype dtype;
    int n_dims;
    uint64_t shape[ST_MAX_DIMS]; /* PyTorch order: shape[0] is the slowest-varying (rows) */
    const unsigned char *data;   /* in the mapping */
    uint64_t bytes;
} StTensor;

typedef struct {
    MappedFile file;
    StTensor *tensors;
    int n_tensors;
} StFile;

int st_open(StFile *f, const char *path, NfError *err);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);

typedef struct {
    const char *name;
    StDtype dtype; /* ST_F32 or ST_F16 or ST_BF16 */
    int n_dims;
    uint64_t shape[ST_MAX_DIMS];
    const void *data; /* caller-owned */
    uint64_t bytes;
} StOutTensor;

/* Writes n tensors in the given order, with "__metadata__": {"format": "pt"}. */
int st_write(const char *path, const StOutTensor *tensors, int n, uint64_t *bytes, NfError *err);

#endif
