/* json_parse.h — a small, strict JSON reader for configuration files
 * (--config) and the options stored in checkpoints. Numbers keep their source text so that
 * integers are parsed exactly by whoever reads them. Depth and size are
 * bounded; malformed input is an error with the byte offset. */
#ifndef NF_JSON_PARSE_H
#define NF_JSON_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef enum { JV_NULL, JV_BOOL, JV_NUMBER, JV_STRING, JV_ARRAY, JV_OBJECT } JsonType;

typedef struct JsonValue {
    JsonType type;
    bool boolean;
    char *text;                /* JV_STRING: the decoded string; JV_NUMBER: its source text (NUL-terminated) */
    size_t len;                /* bytes of text: a JV_STRING may hold NUL bytes (\u0000) */
    struct JsonValue *items;   /* JV_ARRAY / JV_OBJECT: n values */
    char **keys;               /* JV_OBJECT: n keys */
    int n;
} JsonValue;

int json_parse(const char *text, size_t len, JsonValue *out, NfError *err);
void json_value_free(JsonValue *v);
/* The value of key in an object, or NULL. */
const JsonValue *json_get(const JsonValue *obj, const char *key);
/* Same type and value; numbers compare by their source text, objects by key in order. */
bool json_value_equal(const JsonValue *a, const JsonValue *b);

#endif
