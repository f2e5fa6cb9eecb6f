/* tokenfile.h — token files: NeuralForge's format (a 1024-byte header, then
 * ids of 2 or 4 bytes) and llama2.c's headerless uint16 files, read and
 * written in one place. tokenize and ingest write them; data.c (train,
 * eval) and ingest --incremental read them.
 *
 * Header, every integer little-endian (docs/formats.md):
 *   bytes 0-7      magic FF FF 'N' 'F' 'T' 'O' 'K' 00 (as uint16 ids: 65535 first,
 *                  which a legacy file of ours, starting with BOS, never is)
 *   bytes 8-11     version, uint32 (1)
 *   bytes 12-15    token width in bytes, uint32: 2 or 4
 *   bytes 16-23    token count, uint64: the file is exactly 1024 + count * width bytes
 *   bytes 24-27    the writer's vocabulary size, uint32 (every id is below it; 0 = not recorded)
 *   bytes 28-1023  zero (reserved)
 * A file whose first 4 bytes are not FF FF 'N' 'F' is a legacy headerless
 * file of little-endian uint16 ids. */
#ifndef NF_TOKENFILE_H
#define NF_TOKENFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fileio.h"

#define TOKEN_FILE_MAGIC        "\xFF\xFFNFTOK"
#define TOKEN_FILE_MAGIC_BYTES  8 /* with the NUL that ends the literal above */
#define TOKEN_FILE_VERSION      1
#define TOKEN_FILE_HEADER_BYTES 1024
#define TOKEN_FILE_U16_VOCAB    65536 /* the largest vocabulary width-2 ids can address */

/* Where a file's tokens are: the parsed header, or what a legacy file implies. */
typedef struct {
    const unsigned char *tokens; /* the first id */
    uint64_t count;
    int width;           /* bytes per id: 2 or 4 */
    bool legacy;         /* headerless uint16 (llama2.c) */
    uint32_t vocab_size; /* recorded by the writer; 0 = not recorded */
} TokenFileView;

/* The width a vocabulary needs: 2 up to 65536 pieces, 4 beyond. */
int token_width_for(int vocab_size);

/* Reads a token file image of `size` bytes: the header is checked (magic, version, width, reserved bytes, the
 * count against the size), a legacy file must have an even size. `what` and `path` name it in errors (bad_data). */
int token_file_parse(const unsigned char *data, size_t size, const char *what, const char *path, TokenFileView *v,
                     NfError *err);

static inline uint32_t token_id_at(const unsigned char *tokens, int width, uint64_t i) {
    const unsigned char *p = tokens + (size_t)i * (size_t)width;
    uint32_t id = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    if (width == 4) id |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return id;
}

/* A token file mapped read-only and parsed. */
typedef struct {
    MappedFile map;
    TokenFileView view;
} TokenFile;

int token_file_open(TokenFile *f, const char *path, const char *what, NfError *err);
void token_file_close(TokenFile *f);

/* Writes a token file atomically, ids streamed in; the header (with the count) is completed at commit. */
typedef struct {
    AtomicFile file;
    int width;
    bool legacy;
    int vocab_size;
    uint64_t count;
    size_t len; /* bytes waiting in buf */
    unsigned char buf[32768];
} TokenWriter;

/* legacy: a headerless uint16 file for llama2.c's tools (refused past 65536 pieces); otherwise a header and the
 * width vocab_size needs. */
int token_writer_open(TokenWriter *w, const char *path, int vocab_size, bool legacy, NfError *err);
/* Appends ids; each must be in [0, vocab_size) (bad_data otherwise). */
int token_writer_put(TokenWriter *w, const int *ids, size_t n, NfError *err);
int token_writer_commit(TokenWriter *w, NfError *err);
/* Drops the temporary file; safe after commit and on a writer never opened (zeroed). */
void token_writer_abort(TokenWriter *w);

#endif
