/* json_parse.c — JSON text into JsonValue trees, on jansson (libjansson).
 *
 * jansson lexes and validates (RFC 8259: UTF-8 checked, surrogate pairs
 * paired, lone surrogates refused, duplicate keys refused) in linear time and
 * memory. This file adds what jansson does not: the depth bound, and the move
 * of jansson's tree into JsonValues. The move frees each jansson node as soon
 * as it is copied, so the peak is about one tree, not both.
 *
 * A tree of many small values costs ~10x its text (jansson's nodes alone ~9x),
 * so json_parse_each streams the big arrays of a top-level object instead: a
 * small scanner steps over the glue between members and elements, and jansson
 * parses each key and value on its own (json_loadb of one value at an offset,
 * JSON_DISABLE_EOF_CHECK telling how many bytes it used).
 *
 * jansson.h is included here and nowhere else. The writer's (json.h) names
 * stay clear of jansson's exported symbols (json_str, not json_string), so
 * neither definition can shadow the other at link time. */
#include "json_parse.h"
#include "util.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arrays and objects nest at most this deep: JsonValue trees are walked
 * recursively by every reader, and no file we read needs more. */
#define MAX_DEPTH 32

/* Strict RFC 8259, plus: any value at the top (a JSONL line may be one string),
 * and \u0000 inside strings (a JV_STRING keeps its length). Duplicate keys are
 * refused: the old reader kept both and json_get saw the first, jansson would
 * keep the last; rather than pick one silently, a file that says two things is
 * an error (formats.md already makes it one for --config). */
#define LOAD_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES)

static int fail_at(NfError *err, size_t pos, const char *what) {
    return nf_fail(err, NF_ERR_USAGE, "invalid JSON at byte %zu: %s", pos, what);
}

/* The byte offset of the first bracket nested deeper than MAX_DEPTH, or len.
 * A linear pre-scan, so that hostile nesting is refused with its offset before
 * jansson builds anything (jansson's own bound is 2048). On malformed text the
 * count may be off; jansson then reports the real error. */
static size_t too_deep_at(const char *s, size_t len) {
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
        } else if (c == '[' || c == '{') {
            if (++depth > MAX_DEPTH) return i;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return len;
}

/* A number's text: integers exactly; reals in the fewest digits that read back
 * as the same double (at most 17, which always do), with ".0" when that would
 * look like an integer, so that callers reading integers (strtoll with an end
 * check) still refuse 1.0 and 1e3 as the old reader did. */
static void number_text(json_t *j, char *buf, size_t cap) {
    if (json_is_integer(j)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return;
    }
    double x = json_real_value(j);
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, cap, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) break;
    }
    if (!strpbrk(buf, ".e")) strncat(buf, ".0", cap - strlen(buf) - 1);
}

static char *copy_bytes(const char *s, size_t n, NfError *err) {
    char *t = malloc(n + 1);
    if (!t) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory");
        return NULL;
    }
    memcpy(t, s, n);
    t[n] = '\0';
    return t;
}

static int convert(json_t *j, JsonValue *v, NfError *err);

/* Allocates n zeroed items (and keys), so that a partial tree frees cleanly. */
static int alloc_items(JsonValue *v, size_t n, bool keys, NfError *err) {
    if (n > INT_MAX)
        return nf_fail(err, NF_ERR_USAGE, "invalid JSON: more than %d items in one array or object", INT_MAX);
    if (n == 0) return 0;
    v->items = calloc(n, sizeof *v->items);
    if (keys) v->keys = calloc(n, sizeof *v->keys);
    if (!v->items || (keys && !v->keys)) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    v->n = (int)n;
    return 0;
}

/* From the back, so that each json_array_remove drops the last item and moves nothing. */
static int convert_array(json_t *j, JsonValue *v, NfError *err) {
    size_t n = json_array_size(j);
    if (alloc_items(v, n, false, err) != 0) return -1;
    for (size_t i = n; i-- > 0;) {
        if (convert(json_array_get(j, i), &v->items[i], err) != 0) return -1;
        json_array_remove(j, i);
    }
    return 0;
}

/* In jansson's order, which is the text's. */
static int convert_object(json_t *j, JsonValue *v, NfError *err) {
    if (alloc_items(v, json_object_size(j), true, err) != 0) return -1;
    void *it = json_object_iter(j);
    for (int i = 0; it && i < v->n; i++) {
        void *next = json_object_iter_next(j, it);
        const char *key = json_object_iter_key(it);
        size_t key_len = json_object_iter_key_len(it);
        if (!(v->keys[i] = copy_bytes(key, key_len, err)) ||
            convert(json_object_iter_value(it), &v->items[i], err) != 0)
            return -1;
        json_object_deln(j, key, key_len); /* frees key and value */
        it = next;
    }
    return 0;
}

static int convert(json_t *j, JsonValue *v, NfError *err) {
    memset(v, 0, sizeof *v);
    switch (json_typeof(j)) {
    case JSON_OBJECT: v->type = JV_OBJECT; return convert_object(j, v, err);
    case JSON_ARRAY: v->type = JV_ARRAY; return convert_array(j, v, err);
    case JSON_STRING:
        v->type = JV_STRING;
        v->len = json_string_length(j);
        return (v->text = copy_bytes(json_string_value(j), v->len, err)) ? 0 : -1;
    case JSON_INTEGER:
    case JSON_REAL: {
        char buf[48];
        number_text(j, buf, sizeof buf);
        v->type = JV_NUMBER;
        v->len = strlen(buf);
        return (v->text = copy_bytes(buf, v->len, err)) ? 0 : -1;
    }
    case JSON_TRUE:
    case JSON_FALSE:
        v->type = JV_BOOL;
        v->boolean = json_is_true(j);
        return 0;
    case JSON_NULL: v->type = JV_NULL; return 0;
    }
    return nf_fail(err, NF_ERR_USAGE, "invalid JSON: unknown value type");
}

/* One value from text[0, len) into out (left empty on failure). With
 * JSON_DISABLE_EOF_CHECK in flags jansson stops after the value and *used is
 * how many bytes it read (whitespace before the value included); without it,
 * anything but whitespace after the value is an error. base is text's offset
 * in the whole input, for the messages. */
static int load_value(const char *text, size_t len, size_t base, size_t flags, JsonValue *out, size_t *used,
                      NfError *err) {
    memset(out, 0, sizeof *out);
    json_error_t e;
    json_t *root = json_loadb(text, len, flags, &e);
    if (!root) {
        if (json_error_code(&e) == json_error_out_of_memory)
            return nf_fail(err, NF_ERR_MEMORY, "out of memory parsing JSON");
        return fail_at(err, base + (e.position < 0 ? 0 : (size_t)e.position), e.text);
    }
    /* jansson's position is an int: a value of 2 GiB or more is refused rather than misplaced */
    if (used && (e.position <= 0 || (size_t)e.position > len)) {
        json_decref(root);
        return fail_at(err, base, "value too long");
    }
    if (used) *used = (size_t)e.position;
    int rc = convert(root, out, err);
    json_decref(root);
    if (rc != 0) json_value_free(out);
    return rc;
}

int json_parse(const char *text, size_t len, JsonValue *out, NfError *err) {
    memset(out, 0, sizeof *out);
    size_t deep = too_deep_at(text, len);
    if (deep < len) return fail_at(err, deep, "nested more than 32 levels deep");
    return load_value(text, len, 0, LOAD_FLAGS, out, NULL, err);
}

/* ---- json_parse_each ------------------------------------------------------ */

/* The walk over the top-level object. jansson parses every key and value
 * (json_loadb of one value at an offset); this only steps over the glue
 * between them: whitespace, '{', ':', ',', '[', ']', '}'. */
typedef struct {
    const char *text;
    size_t len, pos; /* pos: the next byte to read */
    const JsonStream *stream;
    void *ctx;
    JsonValue *rest; /* the members not streamed, so far */
    size_t rest_cap;
    json_t *seen; /* the top-level keys so far (a jansson hash table: duplicates in linear time) */
    NfError *err;
} Each;

static void skip_space(Each *w) {
    for (; w->pos < w->len; w->pos++) {
        char c = w->text[w->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    }
}

/* Skips whitespace, then consumes c if it is next. */
static bool take(Each *w, char c) {
    skip_space(w);
    if (w->pos < w->len && w->text[w->pos] == c) {
        w->pos++;
        return true;
    }
    return false;
}

/* "X expected", near the end of the input when that is where it stopped (the truncated file's message). */
static int expected(Each *w, const char *what) {
    char why[64];
    snprintf(why, sizeof why, "%s expected%s", what, w->pos < w->len ? "" : " near end of file");
    return fail_at(w->err, w->pos, why);
}

/* The next value, whole, at pos; pos moves past it. */
static int next_value(Each *w, JsonValue *v) {
    size_t used;
    if (load_value(w->text + w->pos, w->len - w->pos, w->pos, LOAD_FLAGS | JSON_DISABLE_EOF_CHECK, v, &used, w->err) !=
        0)
        return -1;
    w->pos += used;
    return 0;
}

/* A member's key at pos (a '"' is there, so jansson parses a string), refused when it holds
 * a NUL (keys are C strings, as in json_parse) or came before. */
static int next_key(Each *w, JsonValue *key) {
    size_t at = w->pos;
    if (next_value(w, key) != 0) return -1;
    int rc = 0;
    if (strlen(key->text) != key->len)
        rc = fail_at(w->err, at, "NUL byte in object key not supported");
    else if (json_object_get(w->seen, key->text))
        rc = fail_at(w->err, at, "duplicate object key");
    else if (json_object_set_new(w->seen, key->text, json_true()) != 0)
        rc = nf_fail(w->err, NF_ERR_MEMORY, "out of memory");
    if (rc != 0) json_value_free(key);
    return rc;
}

static bool is_streamed(const JsonStream *s, const char *key) {
    for (const char *const *k = s->keys; k && *k; k++)
        if (strcmp(*k, key) == 0) return true;
    return false;
}

/* The elements of the array at pos ('[' already consumed), one at a time: each
 * is parsed, handed to element() and freed before the next is read. */
static int stream_array(Each *w, const char *key) {
    size_t n = 0;
    if (!take(w, ']')) {
        for (;; n++) {
            JsonValue v;
            if (next_value(w, &v) != 0) return -1;
            int rc = w->stream->element(w->ctx, key, n, &v, w->err);
            json_value_free(&v);
            if (rc != 0) return -1;
            if (take(w, ']')) break;
            if (!take(w, ',')) return expected(w, "']' or ','");
        }
        n++;
    }
    return w->stream->end ? w->stream->end(w->ctx, key, n, w->err) : 0;
}

/* Appends key (moved) and v (moved) to rest, growing it by doubling. */
static int add_member(Each *w, JsonValue *key, JsonValue *v) {
    JsonValue *r = w->rest;
    if ((size_t)r->n == w->rest_cap) {
        if (w->rest_cap > INT_MAX / 2)
            return nf_fail(w->err, NF_ERR_USAGE, "invalid JSON: too many members in one object");
        size_t cap = w->rest_cap; /* items and keys grow together under one capacity */
        if (!nf_grow((void **)&r->items, &cap, (size_t)r->n + 1, sizeof *r->items, 16) ||
            !nf_resize((void **)&r->keys, cap, sizeof *r->keys))
            return nf_fail(w->err, NF_ERR_MEMORY, "out of memory");
        w->rest_cap = cap;
    }
    r->keys[r->n] = key->text;
    r->items[r->n++] = *v;
    memset(key, 0, sizeof *key);
    memset(v, 0, sizeof *v);
    return 0;
}

/* One "key": value member at pos. */
static int member(Each *w) {
    JsonValue key, v;
    skip_space(w);
    if (w->pos >= w->len || w->text[w->pos] != '"') return expected(w, "string");
    if (next_key(w, &key) != 0) return -1;
    int rc;
    if (!take(w, ':')) {
        rc = expected(w, "':'");
    } else if (is_streamed(w->stream, key.text) && take(w, '[')) {
        rc = stream_array(w, key.text);
    } else if ((rc = next_value(w, &v)) == 0) {
        rc = add_member(w, &key, &v);
        json_value_free(&v); /* emptied when added */
    }
    json_value_free(&key); /* likewise */
    return rc;
}

static int walk_object(Each *w) {
    if (!take(w, '{')) return expected(w, "'{'");
    if (!take(w, '}')) {
        do
            if (member(w) != 0) return -1;
        while (take(w, ','));
        if (!take(w, '}')) return expected(w, "'}' or ','");
    }
    skip_space(w);
    return w->pos == w->len ? 0 : fail_at(w->err, w->pos, "end of file expected");
}

int json_parse_each(const char *text, size_t len, const JsonStream *stream, void *ctx, JsonValue *rest, NfError *err) {
    memset(rest, 0, sizeof *rest);
    rest->type = JV_OBJECT;
    size_t deep = too_deep_at(text, len);
    if (deep < len) return fail_at(err, deep, "nested more than 32 levels deep");
    Each w = {.text = text, .len = len, .stream = stream, .ctx = ctx, .rest = rest, .seen = json_object(), .err = err};
    int rc = w.seen ? walk_object(&w) : nf_fail(err, NF_ERR_MEMORY, "out of memory");
    json_decref(w.seen);
    if (rc != 0) {
        json_value_free(rest);
        rest->type = JV_OBJECT;
    }
    return rc;
}

void json_value_free(JsonValue *v) {
    for (int i = 0; i < v->n; i++) {
        json_value_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->text);
    memset(v, 0, sizeof *v);
}

const JsonValue *json_get(const JsonValue *obj, const char *key) {
    if (obj->type != JV_OBJECT) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

bool json_value_equal(const JsonValue *a, const JsonValue *b) {
    if (a->type != b->type) return false;
    switch (a->type) {
    case JV_NULL: return true;
    case JV_BOOL: return a->boolean == b->boolean;
    case JV_NUMBER:
    case JV_STRING: return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
    case JV_ARRAY:
    case JV_OBJECT:
        if (a->n != b->n) return false;
        for (int i = 0; i < a->n; i++) {
            if (a->type == JV_OBJECT && strcmp(a->keys[i], b->keys[i]) != 0) return false;
            if (!json_value_equal(&a->items[i], &b->items[i])) return false;
        }
        return true;
    }
    return false;
}
