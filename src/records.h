/* records.h — the source files of `ingest` turned into documents: token
 * ids with a loss mask that says which ids the loss counts as targets.
 *
 *   .txt, .md   documents split as `tokenize --split` does (textsplit.h):
 *               BOS + text, every token counted
 *   .jsonl      one JSON object a line:
 *                 {"text": T}                      BOS + T, all counted
 *                 {"prompt": P, "completion": C}   BOS P masked, C EOS counted
 *                 {"messages": [...]}              a chat, through the
 *                                                  run's chat template
 *   .csv        a header row, then one document per row: its `text` column;
 *               or its `prompt` and `completion` columns as a pair; or
 *               else every column as "name: value" lines, all counted
 *
 * Chats: the messages (role and content strings) go through the run's
 * template (chat_template.h: llama3, chatml or llama2, the last being
 * NeuralForge's from before templates could be chosen); its special tokens
 * become their ids, and consecutive text parts (template text and contents)
 * are encoded as one stretch, as Hugging Face tokenizes the rendered
 * string. The mask counts a token when any of its bytes belongs to an
 * assistant's content, and the assistant's end-of-turn token; everything
 * else is masked. Under CHAT_NONE a chat is an error (the template's
 * refusal). docs/formats.md has examples. */
#ifndef NF_RECORDS_H
#define NF_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "error.h"
#include "textsplit.h"
#include "tokenizer.h"

typedef enum { SOURCE_UNSUPPORTED, SOURCE_TEXT, SOURCE_CSV, SOURCE_JSONL } SourceKind;

/* By the file name's extension, case-insensitively: .txt and .md are text,
 * .csv, .jsonl; anything else is unsupported (ingest skips it). */
SourceKind source_kind(const char *path);

#define RECORD_MAX_BYTES   ((size_t)16 << 20) /* a JSONL line, a CSV record */
#define DOCUMENT_MAX_BYTES ((size_t)64 << 20) /* the text of one .txt/.md document */

typedef struct {
    TokenList ids;       /* the document's ids, BOS first */
    unsigned char *mask; /* (ids.len) 1: the loss counts this id as a target; 0: masked */
    size_t mask_cap;
    uint64_t masked; /* zeros in mask */
} Document;

void document_free(Document *d);

/* How a run's records become documents: the same for every source of an ingest run. */
typedef struct {
    const Tokenizer *tok;
    const ChatTemplate *chat; /* the chats' template */
    TextSplit split;          /* where .txt and .md documents end */
    bool parse_special;       /* --parse-special: special tokens spelled in texts, prompts and completions become
                                 their ids (never in a chat's contents) */
} RecordsOptions;

/* One JSONL record (a line, without its '\n') into d (reset first).
 * Returns 1 when d holds a document, 0 when the record has none (a "text"
 * that is only whitespace), -1 with err set (bad_data, not naming the
 * file: the caller adds that). */
int record_from_json(const RecordsOptions *o, const char *line, size_t len, Document *d, NfError *err);

/* A rendered chat (chat_render, or chat_render_prompt for `chat`) into d (reset first): BOS/EOS and the
 * template's special tokens as their ids, each run of text parts encoded as one stretch, the mask as above.
 * The one encoding of a chat: what `chat` feeds the model is what `ingest` trains it on. Errors: a special
 * token the vocabulary lacks (bad_tokenizer). */
int document_from_chat(const Tokenizer *t, ChatKind kind, const ChatRender *r, Document *d, NfError *err);

/* Receives each document of a source; d is reused after the call returns. */
typedef int (*DocumentFn)(void *ctx, const Document *d, NfError *err);

/* Every document of one source file's bytes data[0..size), in order. Errors
 * (bad_data) name the file (path, as given) and the line. */
int records_read(SourceKind kind, const char *path, const char *data, size_t size, const RecordsOptions *o,
                 DocumentFn fn, void *ctx, NfError *err);

#endif
