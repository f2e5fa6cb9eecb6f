/* data.h — training data: token files (tokenfile.h: ids of 2 or 4 bytes
 * after a header, or llama2.c's headerless uint16), or the shards and loss
 * masks an `ingest` manifest lists, memory-mapped,
 * checked against the vocabulary, split into training and validation
 * spans, and cut into (B, T) batches.
 *
 * Two ways to draw training windows of T+1 tokens:
 *   random  — a uniform random start anywhere, from the sampler's RNG;
 *   shuffle — epochs: the data is cut into windows at stride T and every
 *             window is visited once per epoch in a seeded random order.
 * The whole sampler state is a few integers, saved in checkpoints. */
#ifndef NF_DATA_H
#define NF_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "fileio.h"
#include "rng.h"
#include "tokenfile.h"

typedef struct {
    const unsigned char *bytes; /* little-endian ids of `width` bytes */
    int width;                  /* 2 or 4 */
    const unsigned char *mask;  /* (len) loss mask: 1 = the loss counts this token as a target, 0 = masked
                                    (a prompt token); NULL = every token counts */
    uint64_t len;               /* tokens */
} TokenSpan;

typedef struct {
    TokenFile *files;  /* (n_files) token files */
    MappedFile *masks; /* (n_files) their mask files; data NULL where a file has none */
    int n_files;
    TokenSpan *train, *val;
    int n_train, n_val;
    uint64_t train_tokens, val_tokens;
    bool train_masked, val_masked; /* some training / validation span has a mask */
} TokenData;

/* paths: files or directories. A directory with a manifest.json (written by
 * `ingest`) stands for exactly the shards it lists, with their masks, each
 * checked against the manifest's counts; any other directory for every
 * regular file inside, sorted by name. val_path (may be NULL) is a
 * validation file or directory; otherwise val_split (0 <= f < 1) holds out
 * the last fraction of the training tokens. Every id is checked against
 * vocab_size, every mask byte is 0 or 1; the training part needs at least
 * T+1 tokens, and a target the loss counts when it has masks. */
int token_data_open(TokenData *d, const char *const *paths, int n_paths, const char *val_path, double val_split,
                    int vocab_size, int T, NfError *err);
void token_data_close(TokenData *d);

/* Ids were checked against the vocabulary (below 2^22) when the file was opened: they fit an int. */
static inline int token_at(const TokenSpan *s, uint64_t i) { return (int)token_id_at(s->bytes, s->width, i); }

typedef struct {
    bool shuffle;
    uint64_t seed;
    Rng rng;            /* random mode: draws window starts */
    int64_t epoch;      /* shuffle mode: current epoch (0-based) */
    uint64_t position;  /* shuffle mode: windows of this epoch already used */
    uint64_t n_windows; /* shuffle mode: windows per epoch */
    uint64_t *order;    /* shuffle mode: this epoch's window order */
} BatchSampler;

int batch_sampler_init(BatchSampler *s, const TokenData *d, int T, bool shuffle, uint64_t seed, NfError *err);
void batch_sampler_free(BatchSampler *s);
/* Moves a fresh sampler to a saved state (checkpoint resume); fails when the
 * saved position does not exist in this data. */
int batch_sampler_restore(BatchSampler *s, uint64_t rng_state, int64_t epoch, uint64_t position, NfError *err);

/* Fills tokens and targets (B, T): targets are the tokens shifted by one,
 * or -1 where the mask of the target token is 0 (model_forward leaves
 * those out of the loss). */
void batch_sampler_next(BatchSampler *s, const TokenData *d, int B, int T, int *tokens, int *targets);

/* Batch k of n_batches from a fixed, evenly spaced set of windows over the
 * spans (the same at every evaluation): fills (B, T), targets masked as
 * batch_sampler_next does. */
void fixed_batch(const TokenSpan *spans, int n_spans, int k, int n_batches, int B, int T, int *tokens, int *targets);

#endif
