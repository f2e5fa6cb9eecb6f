/* manifest.h — manifest.json, the index of a directory that `ingest`
 * writes: which shard files (token files, tokenfile.h; and a loss mask beside those
 * that have masked tokens) hold the data, and for each source file its
 * size, content hash, counts and where its tokens are. `train` and `eval`
 * read the shard list (data.c); `ingest --incremental` reads the sources
 * to skip unchanged files. docs/formats.md describes every field. */
#ifndef NF_MANIFEST_H
#define NF_MANIFEST_H

#include <stdbool.h>
#include <stdint.h>

#include "chat_template.h"
#include "error.h"
#include "textsplit.h"

#define MANIFEST_NAME    "manifest.json"
#define MANIFEST_FORMAT  "neuralforge-ingest"
#define MANIFEST_VERSION 2 /* 2: shards with the token-file header and token_width; 1 (still read): uint16, no header */

typedef struct {
    char *file;             /* shard file name in the directory (no '/'): shard_GGGGGG_SSSSS.bin */
    char *mask;             /* its mask file name, or NULL when the shard has no masked token */
    uint64_t tokens;        /* ids in the file */
    uint64_t masked_tokens; /* zero bytes in the mask file (0 when mask is NULL) */
} ManifestShard;

typedef struct {
    char *path;     /* relative to --source, '/'-separated */
    uint64_t bytes; /* file size when ingested */
    uint64_t hash;  /* FNV-1a 64 of the file's bytes */
    uint64_t documents, tokens, masked_tokens;
    /* where its tokens are: they start at token `offset` of shard `shard`
     * and run on through the following shards, `tokens` of them */
    uint64_t shard, offset;
} ManifestSource;

typedef struct {
    int version;             /* of the file read (manifest_save writes MANIFEST_VERSION) */
    int64_t generation;      /* 1 for the first ingest into the directory, +1 on each run */
    char *tokenizer;         /* the --tokenizer path as given */
    uint64_t tokenizer_hash; /* FNV-1a 64 of the tokenizer file's bytes (of the name, for builtin:bytes) */
    int vocab_size;
    int token_width;        /* bytes per id in the shards: 2 or 4 */
    bool token_legacy;      /* version 1: the shards are headerless uint16 */
    TextSplit split;        /* --split of .txt and .md sources */
    ChatKind chat_template; /* the template of its chats (CHAT_NONE: chats were refused); llama2 when absent */
    int64_t max_shard_mb;
    uint64_t documents, tokens, masked_tokens; /* totals over the sources (= over the shards) */
    ManifestShard *shards;                     /* (n_shards) in stream order */
    int n_shards;
    ManifestSource *sources; /* (n_sources) sorted by path, bytewise */
    int n_sources;
} Manifest;

/* Whether dir holds a manifest.json (a regular file). */
bool manifest_exists(const char *dir);

/* Reads and checks DIR/manifest.json: the format and version, every field's
 * type and range, shard names that stay inside the directory, totals that
 * add up. Errors are bad_data (io when the file cannot be read). */
int manifest_load(const char *dir, Manifest *m, NfError *err);

/* Writes DIR/manifest.json atomically (AtomicFile). */
int manifest_save(const char *dir, const Manifest *m, NfError *err);

void manifest_free(Manifest *m);

#endif
