/* hf_vocab.h — the fast path for tokenizer.json's two big members,
 * model.vocab (128k "token": id pairs for Llama 3) and model.merges (280k
 * entries). jansson builds a node per value, which takes most of a second for
 * Llama 3's 9 MB; these members are instead read by a small strict scanner
 * (RFC 8259 strings with every escape, UTF-8 checked, integers), and left
 * out (read as {} and []) of what jansson parses for everything else. When the members cannot be located (a
 * malformed file), nothing is blanked and jansson reports the error. */
#ifndef NF_HF_VOCAB_H
#define NF_HF_VOCAB_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct {
    size_t start, end; /* the value's bytes, [start, end) */
    bool found;
} JsonSpan;

typedef struct {
    size_t off, len; /* a decoded string in HfStrings.strings */
    long long id;    /* vocab: its id; merges: 0 */
} HfEntry;

typedef struct {
    char *strings; /* every decoded string, back to back (NUL after each) */
    size_t strings_len, strings_cap;
    HfEntry *items; /* vocab: one per token; merges: two per merge (left, right) */
    size_t n, cap;
} HfStrings;

/* Locates model.vocab and model.merges at the top level of text[0..n). */
void hf_vocab_locate(const char *text, size_t n, JsonSpan *vocab, JsonSpan *merges);
/* The text as jansson's json_load_callback reads it (hf_vocab_feed): the located spans replaced by "{}" / "[]"
 * and the newlines they held, so that jansson's line numbers stay the file's. */
typedef struct {
    const char *text;
    size_t n, pos;
    JsonSpan span[2]; /* in file order */
    size_t newlines;  /* still to give for the span just skipped */
} BlankedText;

void hf_blanked_init(BlankedText *b, const char *text, size_t n, JsonSpan vocab, JsonSpan merges);
/* A json_load_callback_t: the next bytes, 0 at the end. */
size_t hf_blanked_feed(void *buffer, size_t buflen, void *data);

/* Reads the vocab object ({"tok": id, ...}) into out: one item per token. */
int hf_vocab_read(const char *text, JsonSpan span, HfStrings *out, NfError *err);
/* Reads the merges array (["a b", ...] or [["a", "b"], ...]) into out: items 2i and 2i+1 are merge i's sides. */
int hf_merges_read(const char *text, JsonSpan span, HfStrings *out, NfError *err);
/* Appends one item: a copy of s[0..n) and its id (for vocabularies and merges that come from jansson). */
int hf_strings_add(HfStrings *o, const char *s, size_t n, long long id, NfError *err);
void hf_strings_free(HfStrings *s);

#endif
