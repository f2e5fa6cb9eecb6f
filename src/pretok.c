/* pretok.c — normalizers (utf8proc) and pre-tokenizers (PCRE2) of tokenizer.json. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretok.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "utf8.h"
#include "util.h"

/* GPT-2's pattern, as HF's ByteLevel pre-tokenizer has it. */
const char PRETOK_GPT2_REGEX[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int pretok_compile(void **re, const char *pattern, size_t len, bool literal, const char *what, NfError *err) {
    int code;
    PCRE2_SIZE offset;
    /* PCRE2_LITERAL refuses PCRE2_UCP (a literal has no classes for it to change) */
    uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)pattern, len, options, &code, &offset, NULL);
    if (!c) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return nf_fail(err, NF_ERR_TOKENIZER, "%s: the regex is not one PCRE2 accepts (at character %zu: %s)", what,
                       (size_t)offset, (const char *)msg);
    }
    pcre2_jit_compile(c, PCRE2_JIT_COMPLETE); /* without JIT (unsupported CPU) the interpreter matches the same */
    *re = c;
    return 0;
}

int pretok_init(TextPipeline *p, NfError *err) {
    /* JIT stack: 32 KiB to start, up to 16 MiB for long pieces (10 MB of one letter is one \p{L}+ match) */
    if (!(p->match_data = pcre2_match_data_create(1, NULL)) || !(p->match_ctx = pcre2_match_context_create(NULL)) ||
        !(p->jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL)))
        return nf_fail(err, NF_ERR_MEMORY, "cannot allocate the regex matcher");
    pcre2_jit_stack_assign(p->match_ctx, NULL, p->jit_stack);
    return 0;
}

void pretok_step_free(PreStep *st) {
    pcre2_code_free(st->re);
    free(st->replacement);
    free(st->pattern);
    free(st->ranges);
    free(st->buf);
    memset(st, 0, sizeof *st);
}

void pretok_free(TextPipeline *p) {
    for (int i = 0; i < p->n_norm; i++) {
        free(p->norm[i].from);
        free(p->norm[i].to);
    }
    for (int i = 0; i < p->n_pre; i++) pretok_step_free(&p->pre[i]);
    free(p->norm);
    free(p->pre);
    pcre2_match_data_free(p->match_data);
    pcre2_match_context_free(p->match_ctx);
    pcre2_jit_stack_free(p->jit_stack);
    free(p->norm_buf[0]);
    free(p->norm_buf[1]);
    memset(p, 0, sizeof *p);
}

/* ---- normalizers ------------------------------------------------------------------- */

typedef struct {
    char **data;
    size_t *cap, len;
} Out;

static int out_add(Out *o, const char *s, size_t n, NfError *err) {
    if (!nf_grow((void **)o->data, o->cap, o->len + n + 1, 1, 4096))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory normalizing the text");
    memcpy(*o->data + o->len, s, n);
    o->len += n;
    return 0;
}

/* Unicode normalization of the valid UTF-8 runs; invalid bytes pass as they are. */
static int unicode_normalize(NormKind kind, const char *s, size_t n, Out *o, NfError *err) {
    int opts = UTF8PROC_STABLE | (kind == NORM_NFC || kind == NORM_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
               (kind == NORM_NFKC || kind == NORM_NFKD ? UTF8PROC_COMPAT : 0);
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        bool ascii = true;
        for (size_t len; i < n && (len = utf8_valid_len((const unsigned char *)s + i, n - i)) > 0; i += len)
            ascii = ascii && len == 1;
        if (ascii) {
            if (out_add(o, s + start, i - start, err) != 0) return -1;
        } else {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t len =
                utf8proc_map((const utf8proc_uint8_t *)s + start, (utf8proc_ssize_t)(i - start), &dst, opts);
            int rc = len >= 0 ? out_add(o, (const char *)dst, (size_t)len, err) : out_add(o, s + start, i - start, err);
            free(dst);
            if (rc != 0) return -1;
        }
        if (i < n && out_add(o, s + i++, 1, err) != 0) return -1; /* an invalid byte */
    }
    return 0;
}

static int normalize_step(const NormStep *st, const char *s, size_t n, Out *o, NfError *err) {
    switch (st->kind) {
    case NORM_PREPEND:
        /* HF prepends to a non-empty text only */
        if (n > 0 && out_add(o, st->to, st->to_len, err) != 0) return -1;
        return out_add(o, s, n, err);
    case NORM_REPLACE:
        for (size_t i = 0; i < n;) {
            if (n - i >= st->from_len && memcmp(s + i, st->from, st->from_len) == 0) {
                if (out_add(o, st->to, st->to_len, err) != 0) return -1;
                i += st->from_len;
                continue;
            }
            size_t run = i + 1;
            while (run < n && (unsigned char)s[run] != (unsigned char)st->from[0]) run++;
            if (out_add(o, s + i, run - i, err) != 0) return -1;
            i = run;
        }
        return 0;
    default: return unicode_normalize(st->kind, s, n, o, err);
    }
}

/* ---- pre-tokenizers ---------------------------------------------------------------- */

static int pre_step(TextPipeline *p, int i, const char *s, size_t n, bool first, WordFn fn, void *ctx, NfError *err);

static int add_range(PreStep *st, size_t *len, size_t start, size_t end, bool match, NfError *err) {
    if (!nf_grow((void **)&st->ranges, &st->ranges_cap, *len + 1, sizeof *st->ranges, 64))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory pre-tokenizing the text");
    st->ranges[(*len)++] = (PieceRange){start, end, match};
    return 0;
}

/* s[0..n) as alternating unmatched / matched ranges of re (empty matches skipped). */
static int find_matches(TextPipeline *p, PreStep *st, const pcre2_code *re, const char *s, size_t n, size_t *len,
                        NfError *err) {
    *len = 0;
    size_t prev = 0, at = 0;
    while (at < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NOTEMPTY, p->match_data, p->match_ctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return nf_fail(err, NF_ERR_DATA, "the pre-tokenizer's regex failed on the text: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->match_data);
        if (ov[0] > prev && add_range(st, len, prev, ov[0], false, err) != 0) return -1;
        if (add_range(st, len, ov[0], ov[1], true, err) != 0) return -1;
        prev = at = ov[1];
    }
    if (prev < n && add_range(st, len, prev, n, false, err) != 0) return -1;
    return 0;
}

/* HF's SplitDelimiterBehavior, folded in place over the ranges. */
static size_t apply_behavior(PreStep *st, SplitBehavior behavior, size_t n) {
    PieceRange *r = st->ranges;
    size_t out = 0;
    bool prev_match = false;
    switch (behavior) {
    case SPLIT_ISOLATED: return n;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!r[i].match) r[out++] = r[i];
        return out;
    case SPLIT_MERGED_PREVIOUS:
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            bool merge = behavior == SPLIT_CONTIGUOUS ? r[i].match == prev_match : r[i].match && !prev_match;
            if (merge && out > 0)
                r[out - 1].end = r[i].end;
            else
                r[out++] = r[i];
            prev_match = r[i].match;
        }
        return out;
    case SPLIT_MERGED_NEXT:
        /* from the end: a match joins the piece after it; written from the end, then moved to the front */
        out = n;
        for (size_t i = n; i-- > 0;) {
            if (r[i].match && !prev_match && out < n)
                r[out].start = r[i].start;
            else
                r[--out] = r[i];
            prev_match = r[i].match;
        }
        memmove(r, r + out, (n - out) * sizeof *r);
        return n - out;
    }
    return n;
}

static int split_step(TextPipeline *p, int i, const pcre2_code *re, SplitBehavior behavior, bool invert, const char *s,
                      size_t n, bool first, WordFn fn, void *ctx, NfError *err) {
    PreStep *st = &p->pre[i];
    size_t len;
    if (find_matches(p, st, re, s, n, &len, err) != 0) return -1;
    if (invert)
        for (size_t k = 0; k < len; k++) st->ranges[k].match = !st->ranges[k].match;
    len = apply_behavior(st, behavior, len);
    /* the next step may reuse nothing of this one's: ranges stay put while it runs */
    for (size_t k = 0; k < len; k++) {
        PieceRange r = st->ranges[k];
        if (pre_step(p, i + 1, s + r.start, r.end - r.start, first && r.start == 0, fn, ctx, err) != 0) return -1;
    }
    return 0;
}

static int step_buffer(PreStep *st, size_t need, NfError *err) {
    if (!nf_grow((void **)&st->buf, &st->buf_cap, need, 1, 256))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory pre-tokenizing the text");
    return 0;
}

static int byte_level_step(TextPipeline *p, int i, const char *s, size_t n, bool first, WordFn fn, void *ctx,
                           NfError *err) {
    PreStep *st = &p->pre[i];
    if (st->add_prefix_space && s[0] != ' ') {
        if (step_buffer(st, n + 1, err) != 0) return -1;
        st->buf[0] = ' ';
        memcpy(st->buf + 1, s, n);
        s = st->buf, n++;
    }
    if (st->re) return split_step(p, i, st->re, SPLIT_ISOLATED, false, s, n, first, fn, ctx, err);
    return pre_step(p, i + 1, s, n, first, fn, ctx, err);
}

static int metaspace_step(TextPipeline *p, int i, const char *s, size_t n, bool first, WordFn fn, void *ctx,
                          NfError *err) {
    PreStep *st = &p->pre[i];
    size_t rl = st->replacement_len, spaces = 0;
    for (size_t k = 0; k < n; k++) spaces += s[k] == ' ';
    if (step_buffer(st, n + spaces * rl + rl, err) != 0) return -1;
    size_t o = 0;
    /* HF looks at the text after the replacing: it starts with the replacement if it began with a space */
    bool starts = s[0] == ' ' || (n >= rl && memcmp(s, st->replacement, rl) == 0);
    bool prepend = st->prepend == PREPEND_ALWAYS || (st->prepend == PREPEND_FIRST && first);
    if (prepend && !starts) memcpy(st->buf, st->replacement, rl), o = rl;
    for (size_t k = 0; k < n; k++) {
        if (s[k] == ' ') {
            memcpy(st->buf + o, st->replacement, rl);
            o += rl;
        } else {
            st->buf[o++] = s[k];
        }
    }
    if (st->split) return split_step(p, i, st->re, SPLIT_MERGED_NEXT, false, st->buf, o, first, fn, ctx, err);
    return pre_step(p, i + 1, st->buf, o, first, fn, ctx, err);
}

static int pre_step(TextPipeline *p, int i, const char *s, size_t n, bool first, WordFn fn, void *ctx, NfError *err) {
    if (n == 0) return 0;
    if (i == p->n_pre) return fn(ctx, s, n, err);
    PreStep *st = &p->pre[i];
    switch (st->kind) {
    case PRE_SPLIT: return split_step(p, i, st->re, st->behavior, st->invert, s, n, first, fn, ctx, err);
    case PRE_BYTE_LEVEL: return byte_level_step(p, i, s, n, first, fn, ctx, err);
    case PRE_METASPACE: return metaspace_step(p, i, s, n, first, fn, ctx, err);
    }
    return nf_fail(err, NF_ERR_TOKENIZER, "unknown pre-tokenizer step");
}

int pretok_run(TextPipeline *p, const char *text, size_t n, bool at_start, WordFn fn, void *ctx, NfError *err) {
    const char *cur = text;
    for (int k = 0; k < p->n_norm; k++) {
        Out o = {&p->norm_buf[k & 1], &p->norm_cap[k & 1], 0};
        if (normalize_step(&p->norm[k], cur, n, &o, err) != 0) return -1;
        cur = o.len ? *o.data : "";
        n = o.len;
    }
    return pre_step(p, 0, cur, n, at_start, fn, ctx, err);
}
