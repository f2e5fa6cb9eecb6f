/* pretok.h — tokenizer.json's normalizer and pre-tokenizer: the text of one
 * segment (between added tokens) is normalized (NFC and friends through
 * utf8proc, Prepend, Replace) and cut into words (Split with the model's
 * regex through PCRE2, ByteLevel, Metaspace, Digits), which are handed one at
 * a time to a callback (the BPE model).
 *
 * Regexes are compiled by PCRE2 with PCRE2_UTF | PCRE2_UCP (so \p{L}, \s and
 * \d mean their Unicode classes, as in Oniguruma, which HF uses) and
 * PCRE2_MATCH_INVALID_UTF (invalid UTF-8 in the text is matched around, never
 * a failure), and JIT-compiled. Empty matches are skipped (HF drops empty
 * pieces). Invalid UTF-8 is kept byte for byte: NFC is applied to the valid
 * runs between invalid bytes. */
#ifndef NF_PRETOK_H
#define NF_PRETOK_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef enum { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_PREPEND, NORM_REPLACE } NormKind;

typedef struct {
    NormKind kind;
    char *from, *to; /* Prepend: to; Replace: from -> to */
    size_t from_len, to_len;
} NormStep;

typedef enum { PRE_SPLIT, PRE_BYTE_LEVEL, PRE_METASPACE } PreKind;

typedef enum {
    SPLIT_ISOLATED,
    SPLIT_REMOVED,
    SPLIT_MERGED_PREVIOUS,
    SPLIT_MERGED_NEXT,
    SPLIT_CONTIGUOUS
} SplitBehavior;

typedef enum { PREPEND_NEVER, PREPEND_FIRST, PREPEND_ALWAYS } PrependScheme;

typedef struct {
    size_t start, end;
    bool match;
} PieceRange;

typedef struct {
    PreKind kind;
    void *re; /* pcre2_code_8 *: Split's pattern, ByteLevel's GPT-2 regex (use_regex), Metaspace's replacement */
    /* Split (and Digits, read as one): the pattern as the file spells it, kept so that GGUF export can name the
     * pre-tokenizer (gguf_vocab.c); literal: a String pattern, not a Regex */
    char *pattern;
    size_t pattern_len;
    bool literal;
    SplitBehavior behavior;
    bool invert;
    bool add_prefix_space; /* ByteLevel */
    char *replacement;     /* Metaspace, e.g. "▁" */
    size_t replacement_len;
    PrependScheme prepend; /* Metaspace */
    bool split;            /* Metaspace: cut before each replacement */
    /* scratch of this step, reused piece after piece */
    PieceRange *ranges;
    size_t ranges_cap;
    char *buf;
    size_t buf_cap;
} PreStep;

typedef struct {
    NormStep *norm;
    int n_norm;
    size_t norm_steps_cap;
    PreStep *pre;
    int n_pre;
    size_t pre_steps_cap;
    void *match_data; /* pcre2_match_data_8 * */
    void *match_ctx;  /* pcre2_match_context_8 * */
    void *jit_stack;  /* pcre2_jit_stack_8 * */
    char *norm_buf[2];
    size_t norm_cap[2];
} TextPipeline;

/* One word: 0, or -1 with err filled, which stops the run. */
typedef int (*WordFn)(void *ctx, const char *word, size_t n, NfError *err);

/* Compiles a regex (literal: a plain string) for a Split step; the error names `what`. */
int pretok_compile(void **re, const char *pattern, size_t len, bool literal, const char *what, NfError *err);
/* GPT-2's pre-tokenizer regex (ByteLevel's use_regex). */
extern const char PRETOK_GPT2_REGEX[];

/* Allocates the matching state once the steps are set. */
int pretok_init(TextPipeline *p, NfError *err);
void pretok_free(TextPipeline *p);
/* Frees one step (pretok_free frees them all). */
void pretok_step_free(PreStep *st);

/* Normalizes text[0..n) and pre-tokenizes it; at_start: the segment starts the whole text (Metaspace's
 * prepend_scheme "first"). */
int pretok_run(TextPipeline *p, const char *text, size_t n, bool at_start, WordFn fn, void *ctx, NfError *err);

#endif
