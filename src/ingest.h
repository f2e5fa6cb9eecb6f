/* ingest.h — `neuralforge ingest`: a directory tree of source files
 * (.txt, .md, .csv, .jsonl; records.h) into token shards (tokenfile.h), their loss
 * masks and manifest.json (manifest.h), which `train --data` and `eval
 * --data` read.
 *
 * One run:
 *   1. walk --source recursively (names starting with '.' are ignored,
 *      symbolic links to directories are not followed), sorted by relative
 *      path, bytewise;
 *   2. for each file in that order: hash it (FNV-1a 64); with --incremental,
 *      a file whose size and hash equal the last run's keeps its tokens,
 *      copied from the last run's shards where the manifest says they are;
 *      any other file is read into documents and tokenized;
 *   3. pack the token stream into shards of at most --max-shard-mb, cut
 *      between documents (a longer document is split), named with a new
 *      generation number so the last run's shards stay valid meanwhile;
 *   4. write manifest.json atomically: the switch from the old data to the
 *      new; then delete the shards of earlier generations.
 * Because the output is a function of the sorted token stream only, an
 * incremental run writes the same shards, byte for byte, as a fresh one. A
 * crash before step 4 leaves the last manifest and its shards intact (the
 * new files are orphans that the next run deletes). */
#ifndef NF_INGEST_H
#define NF_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "textsplit.h"

#define INGEST_LOCK_NAME ".ingest.lock"
#define INGEST_MAX_DEPTH 64 /* directory nesting under --source */

typedef struct {
    const char *source;         /* directory to read, recursively */
    const char *output;         /* directory to write; created (with its parents) when missing */
    const char *tokenizer_path; /* tokenizer.bin, builtin:bytes or tokenizer.json */
    TextSplit split;            /* documents of .txt and .md files */
    int64_t max_shard_mb;       /* a shard holds at most this many MiB of tokens (2 bytes each) */
    int64_t max_file_mb;        /* larger source files are an error */
    bool incremental;           /* reuse the tokens of files unchanged since the last run */
    bool parse_special;         /* special tokens spelled in texts are control ids (--parse-special) */
    const char *chat_template;  /* --chat-template: one of CHAT_TEMPLATE_CHOICES (chat_template.h) */
} IngestOptions;

typedef enum { INGEST_NEW, INGEST_CHANGED, INGEST_UNCHANGED, INGEST_REMOVED, INGEST_SKIPPED } IngestStatus;

/* "new", "changed", "unchanged", "removed", "skipped" */
const char *ingest_status_name(IngestStatus s);

typedef struct {
    const char *path; /* relative to --source */
    IngestStatus status;
    const char *reason;                        /* skipped: why (e.g. "unsupported extension"); otherwise NULL */
    uint64_t bytes;                            /* file size (removed: when last ingested) */
    uint64_t documents, tokens, masked_tokens; /* what it holds (removed: what was dropped; skipped: 0) */
    bool tokenized; /* this run tokenized it; false: tokens reused from the last run (or none) */
} IngestFileReport;

typedef struct {
    uint64_t files;                       /* source files ingested */
    uint64_t skipped, removed, tokenized; /* files skipped, dropped since the last run, tokenized by this run */
    uint64_t bytes;                       /* bytes of the files ingested */
    uint64_t documents, tokens, masked_tokens;
    int shards;
    int64_t generation;        /* the manifest's generation */
    const char *chat_template; /* the template chats were rendered with ("none": chats refused) */
} IngestSummary;

/* Called once per source file, in path order, then once per removed file. */
typedef void (*IngestReportFn)(void *ctx, const IngestFileReport *r);

int ingest_run(const IngestOptions *o, IngestReportFn report, void *ctx, IngestSummary *summary, NfError *err);

#endif
