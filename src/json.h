/* json.h — building one JSON value in memory, correctly escaped.
 *
 * A JsonBuf grows as fields are added; keys are passed with each value and
 * commas are placed automatically. Strings are escaped so that no input (a
 * path, a token's bytes) can break the line or add a field: control bytes
 * become \u00XX and invalid UTF-8 becomes U+FFFD. Non-finite numbers are
 * written as null.
 *
 * Reading moved to jansson (json_parse.h); writing stays here on purpose. This
 * is a one-pass emitter into one buffer, no tree, and it had no findings in
 * the hardening review (issue 16). jansson's json_pack + json_dumps builds a
 * tree first, refuses strings that are not valid UTF-8 (a token's bytes often
 * are not) instead of replacing the bad bytes, and took about twice as long
 * for one `step` message (8.0 vs 4.0 us, 10 fields, on the 2-core CI box). */
#ifndef NF_JSON_H
#define NF_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 16

typedef struct JsonBuf {
    char *data; /* NUL-terminated text so far */
    size_t len, cap;
    int depth;                      /* open objects/arrays */
    bool has_items[JSON_MAX_DEPTH]; /* per level: a comma is due before the next item */
    bool failed;                    /* an allocation failed; the text is incomplete */
} JsonBuf;

void json_init(JsonBuf *j);
void json_free(JsonBuf *j);

/* key is NULL for array elements and for the top-level value. */
void json_object_begin(JsonBuf *j, const char *key);
void json_object_end(JsonBuf *j);
void json_array_begin(JsonBuf *j, const char *key);
void json_array_end(JsonBuf *j);
void json_str(JsonBuf *j, const char *key, const char *s);
void json_str_n(JsonBuf *j, const char *key, const char *s, size_t n);
void json_int(JsonBuf *j, const char *key, int64_t v);
void json_number(JsonBuf *j, const char *key, double v);
/* A float32 value in the fewest digits that read back as the same float (0.1, not 0.100000001). */
void json_float(JsonBuf *j, const char *key, float v);
void json_bool(JsonBuf *j, const char *key, bool v);
void json_null_value(JsonBuf *j, const char *key);

/* Appends raw (n bytes), which must already be one JSON value (a stored message), as an item. */
void json_raw(JsonBuf *j, const char *key, const char *raw, size_t n);

/* Appends s (n bytes) as the body of a JSON string, without quotes. */
void json_escape_into(JsonBuf *j, const char *s, size_t n);

#endif
