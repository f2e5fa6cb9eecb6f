/* json.c — the JSON writer behind every NDJSON line. */
#include "json.h"

#include "utf8.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_init(JsonBuf *j) { memset(j, 0, sizeof *j); }

void json_free(JsonBuf *j) {
    free(j->data);
    memset(j, 0, sizeof *j);
}

static void append(JsonBuf *j, const char *s, size_t n) {
    if (j->failed) return;
    if (!nf_grow((void **)&j->data, &j->cap, j->len + n + 1, 1, 256)) {
        j->failed = true;
        return;
    }
    memcpy(j->data + j->len, s, n);
    j->len += n;
    j->data[j->len] = '\0';
}

static void append_str(JsonBuf *j, const char *s) { append(j, s, strlen(s)); }

void json_escape_into(JsonBuf *j, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"') {
            append(j, "\\\"", 2);
            i++;
        } else if (c == '\\') {
            append(j, "\\\\", 2);
            i++;
        } else if (c == '\n') {
            append(j, "\\n", 2);
            i++;
        } else if (c == '\r') {
            append(j, "\\r", 2);
            i++;
        } else if (c == '\t') {
            append(j, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            append(j, esc, 6);
            i++;
        } else if (c < 0x80) {
            append(j, (const char *)s + i, 1);
            i++;
        } else {
            size_t len = utf8_valid_len(s + i, n - i);
            if (len == 0) {
                append_str(j, "\\ufffd");
                i++;
            }
            /* U+2028/U+2029 are legal in JSON but split lines for many readers */
            else if (len == 3 && s[i] == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
                append_str(j, s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029");
                i += 3;
            } else {
                append(j, (const char *)s + i, len);
                i += len;
            }
        }
    }
}

/* Writes the comma (if due) and the "key": prefix for the next item. */
static void item_prefix(JsonBuf *j, const char *key) {
    if (j->depth > JSON_MAX_DEPTH) {
        j->failed = true; /* nested deeper than we track: the message is dropped, not corrupted */
        return;
    }
    if (j->depth > 0) {
        if (j->has_items[j->depth - 1]) append(j, ",", 1);
        j->has_items[j->depth - 1] = true;
    }
    if (key) {
        append(j, "\"", 1);
        json_escape_into(j, key, strlen(key));
        append(j, "\":", 2);
    }
}

static void open_level(JsonBuf *j, const char *key, const char *bracket) {
    item_prefix(j, key);
    append_str(j, bracket);
    if (j->depth < JSON_MAX_DEPTH)
        j->has_items[j->depth] = false;
    else
        j->failed = true;
    j->depth++;
}

static void close_level(JsonBuf *j, const char *bracket) {
    if (j->depth > 0) j->depth--;
    append_str(j, bracket);
}

void json_object_begin(JsonBuf *j, const char *key) { open_level(j, key, "{"); }
void json_object_end(JsonBuf *j) { close_level(j, "}"); }
void json_array_begin(JsonBuf *j, const char *key) { open_level(j, key, "["); }
void json_array_end(JsonBuf *j) { close_level(j, "]"); }

void json_str_n(JsonBuf *j, const char *key, const char *s, size_t n) {
    item_prefix(j, key);
    append(j, "\"", 1);
    json_escape_into(j, s, n);
    append(j, "\"", 1);
}

void json_str(JsonBuf *j, const char *key, const char *s) {
    if (!s) {
        json_null_value(j, key);
        return;
    }
    json_str_n(j, key, s, strlen(s));
}

void json_int(JsonBuf *j, const char *key, int64_t v) {
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)v);
    item_prefix(j, key);
    append_str(j, num);
}

void json_number(JsonBuf *j, const char *key, double v) {
    if (!isfinite(v)) {
        json_null_value(j, key);
        return;
    }
    char num[40];
    snprintf(num, sizeof num, "%.9g", v);
    item_prefix(j, key);
    append_str(j, num);
}

void json_float(JsonBuf *j, const char *key, float v) {
    if (!isfinite(v)) {
        json_null_value(j, key);
        return;
    }
    char num[40];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(num, sizeof num, "%.*g", digits, (double)v);
        if (strtof(num, NULL) == v) break;
    }
    item_prefix(j, key);
    append_str(j, num);
}

void json_bool(JsonBuf *j, const char *key, bool v) {
    item_prefix(j, key);
    append_str(j, v ? "true" : "false");
}

void json_null_value(JsonBuf *j, const char *key) {
    item_prefix(j, key);
    append_str(j, "null");
}

void json_raw(JsonBuf *j, const char *key, const char *raw, size_t n) {
    item_prefix(j, key);
    append(j, raw, n);
}
