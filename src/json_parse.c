/* json_parse.c — JSON text into JsonValue trees, on jansson (libjansson).
 *
 * jansson lexes and validates (RFC 8259: UTF-8 checked, surrogate pairs
 * paired, lone surrogates refused, duplicate keys refused) in linear time and
 * memory. This file adds what jansson does not: the depth bound, and the move
 * of jansson's tree into JsonValues. The move frees each jansson node as soon
 * as it is copied, so the peak is about one tree, not both.
 *
 * jansson.h is included here and nowhere else: its json_string() and
 * json_null() would clash with the writer's (json.h). */
#include "json_parse.h"

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
    if (n > INT_MAX) return nf_fail(err, NF_ERR_USAGE, "invalid JSON: more than %d items in one array or object", INT_MAX);
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
        if (!(v->keys[i] = copy_bytes(key, key_len, err)) || convert(json_object_iter_value(it), &v->items[i], err) != 0)
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
    case JSON_FALSE: v->type = JV_BOOL; v->boolean = json_is_true(j); return 0;
    case JSON_NULL: v->type = JV_NULL; return 0;
    }
    return nf_fail(err, NF_ERR_USAGE, "invalid JSON: unknown value type");
}

int json_parse(const char *text, size_t len, JsonValue *out, NfError *err) {
    memset(out, 0, sizeof *out);
    size_t deep = too_deep_at(text, len);
    if (deep < len) return fail_at(err, deep, "nested more than 32 levels deep");
    json_error_t e;
    json_t *root = json_loadb(text, len, LOAD_FLAGS, &e);
    if (!root) {
        if (json_error_code(&e) == json_error_out_of_memory) return nf_fail(err, NF_ERR_MEMORY, "out of memory parsing JSON");
        return fail_at(err, e.position < 0 ? 0 : (size_t)e.position, e.text);
    }
    int rc = convert(root, out, err);
    json_decref(root);
    if (rc != 0) json_value_free(out);
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
