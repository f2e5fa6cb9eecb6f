/* hf_vocab.c — locating and reading tokenizer.json's vocab and merges without building a JSON tree. */
#include "hf_vocab.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "util.h"

typedef struct {
    const char *s;
    size_t i, n;
} Scan;

static void skip_ws(Scan *c) {
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r')) c->i++;
}

static bool skip_string(Scan *c) {
    if (c->i >= c->n || c->s[c->i] != '"') return false;
    for (c->i++; c->i < c->n; c->i++) {
        if (c->s[c->i] == '\\')
            c->i++;
        else if (c->s[c->i] == '"')
            return ++c->i, true;
    }
    return false;
}

/* Skips any value: brackets are matched (strings skipped whole), scalars run to a delimiter. Only for
 * locating: the values skipped here are checked by jansson. */
static bool skip_value(Scan *c) {
    skip_ws(c);
    if (c->i >= c->n) return false;
    if (c->s[c->i] == '"') return skip_string(c);
    if (c->s[c->i] != '{' && c->s[c->i] != '[') {
        while (c->i < c->n && !strchr(",}] \t\r\n", c->s[c->i])) c->i++;
        return true;
    }
    int depth = 0;
    while (c->i < c->n) {
        char ch = c->s[c->i];
        if (ch == '"') {
            if (!skip_string(c)) return false;
            continue;
        }
        if (ch == '{' || ch == '[') depth++;
        if (ch == '}' || ch == ']') depth--;
        c->i++;
        if (depth == 0) return true;
    }
    return false;
}

/* Walks the members of the object at c (on its '{'); calls member() with each key (raw bytes) and c on the
 * value; member() must leave c after the value. False when malformed. */
typedef bool (*MemberFn)(Scan *c, const char *key, size_t key_len, void *ctx);

static bool each_member(Scan *c, MemberFn member, void *ctx) {
    skip_ws(c);
    if (c->i >= c->n || c->s[c->i] != '{') return false;
    c->i++;
    for (;;) {
        skip_ws(c);
        if (c->i < c->n && c->s[c->i] == '}') return c->i++, true;
        size_t key = c->i + 1;
        if (!skip_string(c)) return false;
        size_t key_len = c->i - 1 - key;
        skip_ws(c);
        if (c->i >= c->n || c->s[c->i] != ':') return false;
        c->i++;
        skip_ws(c);
        if (!member(c, c->s + key, key_len, ctx)) return false;
        skip_ws(c);
        if (c->i < c->n && c->s[c->i] == ',') {
            c->i++;
            continue;
        }
        if (c->i < c->n && c->s[c->i] == '}') return c->i++, true;
        return false;
    }
}

typedef struct {
    JsonSpan *vocab, *merges;
} Found;

static bool model_member(Scan *c, const char *key, size_t len, void *ctx) {
    Found *f = ctx;
    JsonSpan *span = len == 5 && memcmp(key, "vocab", 5) == 0    ? f->vocab
                     : len == 6 && memcmp(key, "merges", 6) == 0 ? f->merges
                                                                 : NULL;
    size_t start = c->i;
    if (!skip_value(c)) return false;
    if (span && c->i - start >= 2 && (c->s[start] == '{' || c->s[start] == '[')) *span = (JsonSpan){start, c->i, true};
    return true;
}

static bool top_member(Scan *c, const char *key, size_t len, void *ctx) {
    if (len == 5 && memcmp(key, "model", 5) == 0 && c->i < c->n && c->s[c->i] == '{')
        return each_member(c, model_member, ctx);
    return skip_value(c);
}

void hf_vocab_locate(const char *text, size_t n, JsonSpan *vocab, JsonSpan *merges) {
    memset(vocab, 0, sizeof *vocab);
    memset(merges, 0, sizeof *merges);
    Scan c = {text, 0, n};
    Found f = {vocab, merges};
    if (!each_member(&c, top_member, &f)) vocab->found = merges->found = false;
}

void hf_blanked_init(BlankedText *b, const char *text, size_t n, JsonSpan vocab, JsonSpan merges) {
    memset(b, 0, sizeof *b);
    b->text = text, b->n = n;
    bool swap = vocab.found && merges.found && merges.start < vocab.start;
    b->span[0] = swap ? merges : vocab;
    b->span[1] = swap ? vocab : merges;
}

size_t hf_blanked_feed(void *buffer, size_t buflen, void *data) {
    BlankedText *b = data;
    char *out = buffer;
    size_t o = 0;
    while (o < buflen) {
        if (b->newlines > 0) {
            out[o++] = '\n';
            b->newlines--;
            continue;
        }
        if (b->pos >= b->n) break;
        const JsonSpan *next = NULL;
        for (int k = 0; k < 2 && !next; k++)
            if (b->span[k].found && b->span[k].end > b->pos) next = &b->span[k];
        if (next && b->pos == next->start) {
            if (buflen - o < 2) break;
            out[o++] = b->text[next->start];
            out[o++] = b->text[next->start] == '{' ? '}' : ']';
            for (size_t i = next->start; i < next->end; i++) b->newlines += b->text[i] == '\n';
            b->pos = next->end;
            continue;
        }
        size_t stop = next ? next->start : b->n, take = stop - b->pos < buflen - o ? stop - b->pos : buflen - o;
        memcpy(out + o, b->text + b->pos, take);
        o += take;
        b->pos += take;
    }
    return o;
}

/* ---- strict reading ------------------------------------------------------------------- */

static int fail_at(const Scan *c, const char *what, NfError *err) {
    return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the model's %s is not valid JSON at byte %zu", what, c->i);
}

static int put_bytes(HfStrings *o, const char *s, size_t n, NfError *err) {
    if (!nf_grow((void **)&o->strings, &o->strings_cap, o->strings_len + n + 1, 1, 1 << 20))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory reading tokenizer.json");
    memcpy(o->strings + o->strings_len, s, n);
    o->strings_len += n;
    return 0;
}

static int hex4(const char *s, unsigned *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char h = s[k];
        int d = h >= '0' && h <= '9' ? h - '0' : (h | 32) >= 'a' && (h | 32) <= 'f' ? (h | 32) - 'a' + 10 : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

static int put_codepoint(HfStrings *o, unsigned cp, NfError *err) {
    char b[4];
    size_t n;
    if (cp < 0x80)
        b[0] = (char)cp, n = 1;
    else if (cp < 0x800)
        b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[2] = (char)(0x80 | (cp & 0x3F)),
        n = 3;
    else
        b[0] = (char)(0xF0 | cp >> 18), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    return put_bytes(o, b, n, err);
}

/* A \u escape at c (on the 'u'), with a surrogate pair's second half. */
static int unicode_escape(Scan *c, HfStrings *o, const char *what, NfError *err) {
    unsigned cp, lo;
    if (c->n - c->i < 5 || hex4(c->s + c->i + 1, &cp) != 0) return fail_at(c, what, err);
    c->i += 5;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail_at(c, what, err);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (c->n - c->i < 6 || c->s[c->i] != '\\' || c->s[c->i + 1] != 'u' || hex4(c->s + c->i + 2, &lo) != 0 ||
            lo < 0xDC00 || lo > 0xDFFF)
            return fail_at(c, what, err);
        c->i += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return put_codepoint(o, cp, err);
}

/* A JSON string at c, decoded and appended to o->strings; its offset and length. */
static int read_string(Scan *c, HfStrings *o, size_t *off, size_t *len, const char *what, NfError *err) {
    if (c->i >= c->n || c->s[c->i] != '"') return fail_at(c, what, err);
    c->i++;
    *off = o->strings_len;
    for (;;) {
        size_t run = c->i;
        while (run < c->n && c->s[run] != '"' && c->s[run] != '\\' && (unsigned char)c->s[run] >= 0x20 &&
               (unsigned char)c->s[run] < 0x80)
            run++;
        if (put_bytes(o, c->s + c->i, run - c->i, err) != 0) return -1;
        c->i = run;
        if (c->i >= c->n) return fail_at(c, what, err);
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch == '"') break;
        if (ch < 0x20) return fail_at(c, what, err);
        if (ch >= 0x80) {
            size_t l = utf8_valid_len((const unsigned char *)c->s + c->i, c->n - c->i);
            if (l == 0) return fail_at(c, what, err);
            if (put_bytes(o, c->s + c->i, l, err) != 0) return -1;
            c->i += l;
            continue;
        }
        if (++c->i >= c->n) return fail_at(c, what, err); /* a backslash */
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *e = strchr(from, c->s[c->i]);
        if (c->s[c->i] == 'u') {
            if (unicode_escape(c, o, what, err) != 0) return -1;
        } else if (e && *e) {
            if (put_bytes(o, &to[e - from], 1, err) != 0) return -1;
            c->i++;
        } else {
            return fail_at(c, what, err);
        }
    }
    c->i++;
    *len = o->strings_len - *off;
    return put_bytes(o, "", 1, err); /* a NUL after each string, for messages that print it */
}

static int push_entry(HfStrings *o, size_t off, size_t len, long long id, NfError *err) {
    if (!nf_grow((void **)&o->items, &o->cap, o->n + 1, sizeof *o->items, 4096))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory reading tokenizer.json");
    o->items[o->n++] = (HfEntry){off, len, id};
    return 0;
}

static int expect(Scan *c, char ch, const char *what, NfError *err) {
    skip_ws(c);
    if (c->i >= c->n || c->s[c->i] != ch) return fail_at(c, what, err);
    c->i++;
    skip_ws(c);
    return 0;
}

/* After an element: true at the closing bracket (consumed), false after a comma; -1 when neither. */
static int next_or_end(Scan *c, char close, const char *what, NfError *err) {
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == ',') {
        c->i++;
        skip_ws(c);
        return 0;
    }
    if (c->i < c->n && c->s[c->i] == close) return c->i++, 1;
    return fail_at(c, what, err);
}

/* The decoded strings take at most the span's bytes: one allocation up front instead of doubling. */
static int presize(HfStrings *o, JsonSpan span, NfError *err) {
    memset(o, 0, sizeof *o);
    if (!nf_grow((void **)&o->strings, &o->strings_cap, span.end - span.start + 1, 1, 1 << 20))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory reading tokenizer.json");
    return 0;
}

int hf_vocab_read(const char *text, JsonSpan span, HfStrings *out, NfError *err) {
    if (presize(out, span, err) != 0) return -1;
    Scan c = {text, span.start, span.end};
    const char *what = "vocab";
    if (expect(&c, '{', what, err) != 0) return -1;
    if (c.i < c.n && c.s[c.i] == '}') return 0;
    for (int more = 0; more == 0;) {
        size_t off, len;
        if (read_string(&c, out, &off, &len, what, err) != 0 || expect(&c, ':', what, err) != 0) return -1;
        size_t digits = c.i;
        long long id = 0;
        while (c.i < c.n && c.s[c.i] >= '0' && c.s[c.i] <= '9' && id < (1LL << 40)) id = id * 10 + (c.s[c.i++] - '0');
        if (c.i == digits || (c.s[digits] == '0' && c.i - digits > 1) ||
            (c.i < c.n && strchr("0123456789.eE-+", c.s[c.i])))
            return nf_fail(err, NF_ERR_TOKENIZER,
                           "tokenizer.json: the vocab's token '%.40s' has no integer id (byte %zu)", out->strings + off,
                           c.i);
        if (push_entry(out, off, len, id, err) != 0) return -1;
        if ((more = next_or_end(&c, '}', what, err)) < 0) return -1;
    }
    return 0;
}

int hf_merges_read(const char *text, JsonSpan span, HfStrings *out, NfError *err) {
    if (presize(out, span, err) != 0) return -1;
    Scan c = {text, span.start, span.end};
    const char *what = "merges";
    if (expect(&c, '[', what, err) != 0) return -1;
    if (c.i < c.n && c.s[c.i] == ']') return 0;
    for (int more = 0; more == 0;) {
        size_t l, l_len, r, r_len;
        if (c.i < c.n && c.s[c.i] == '[') {
            c.i++;
            skip_ws(&c);
            if (read_string(&c, out, &l, &l_len, what, err) != 0 || expect(&c, ',', what, err) != 0 ||
                read_string(&c, out, &r, &r_len, what, err) != 0 || expect(&c, ']', what, err) != 0)
                return -1;
        } else {
            size_t off, len;
            if (read_string(&c, out, &off, &len, what, err) != 0) return -1;
            const char *space = memchr(out->strings + off, ' ', len);
            if (!space)
                return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: merge %zu ('%.40s') is not two tokens",
                               out->n / 2, out->strings + off);
            l = off, l_len = (size_t)(space - (out->strings + off));
            r = l + l_len + 1, r_len = len - l_len - 1;
        }
        if (push_entry(out, l, l_len, 0, err) != 0 || push_entry(out, r, r_len, 0, err) != 0) return -1;
        if ((more = next_or_end(&c, ']', what, err)) < 0) return -1;
    }
    return 0;
}

int hf_strings_add(HfStrings *o, const char *s, size_t n, long long id, NfError *err) {
    size_t off = o->strings_len;
    if (put_bytes(o, s, n, err) != 0 || put_bytes(o, "", 1, err) != 0) return -1;
    return push_entry(o, off, n, id, err);
}

void hf_strings_free(HfStrings *s) {
    free(s->strings);
    free(s->items);
    memset(s, 0, sizeof *s);
}
