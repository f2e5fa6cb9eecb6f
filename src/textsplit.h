/* textsplit.h — a text corpus cut into documents: the rule that
 * `tokenize --split` and `ingest` (.txt and .md sources) share.
 *
 * The text is read as lines ending at '\n'. A document ends at a separator
 * line: with TEXT_SPLIT_EOT a line that is exactly <|endoftext|> apart from
 * surrounding ASCII whitespace, with TEXT_SPLIT_BLANK an empty or
 * whitespace-only line, with TEXT_SPLIT_NONE never (the whole text is one
 * document). The separator line belongs to neither document. Each document
 * is stripped of surrounding ASCII whitespace; empty documents are skipped. */
#ifndef NF_TEXTSPLIT_H
#define NF_TEXTSPLIT_H

#include <stddef.h>

#include "error.h"

typedef enum { TEXT_SPLIT_EOT, TEXT_SPLIT_BLANK, TEXT_SPLIT_NONE } TextSplit;

/* The flag values, in ArgSpec's choices syntax, and their names. */
#define TEXT_SPLIT_CHOICES "eot|blank|none"
#define TEXT_EOT_MARKER    "<|endoftext|>"
/* "eot" | "blank" | "none" -> the mode; -1 for another word. */
int text_split_parse(const char *name, TextSplit *split);
const char *text_split_name(TextSplit split);

/* Narrows [*b, *e) of text to exclude leading and trailing ASCII whitespace
 * (space, \t, \n, \r, \v, \f). */
void text_strip(const char *text, size_t *b, size_t *e);

/* Receives one document: doc[0..len), stripped and non-empty. line is the
 * 1-based line of the text where the document's first byte is. Returns 0,
 * or -1 with err set, which stops text_split. */
typedef int (*TextDocumentFn)(void *ctx, const char *doc, size_t len, size_t line, NfError *err);

/* Calls fn for every document of text[0..size), in order. */
int text_split(const char *text, size_t size, TextSplit split, TextDocumentFn fn, void *ctx, NfError *err);

#endif
