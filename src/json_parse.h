/* json_parse.h — the JSON reader: --config files, manifest.json, JSONL
 * records, safetensors headers, config.json of import, request bodies, the
 * options stored in checkpoints and runs.
 *
 * Parsing is jansson's (libjansson, Debian's libjansson-dev): strict RFC 8259,
 * linear in time and memory, UTF-8 validated, \u escapes of surrogates only
 * as pairs, duplicate keys refused. Its tree is moved into the JsonValue tree
 * below (each jansson node freed once copied), which every caller walks; only
 * json_parse.c includes jansson.h (its json_string() and json_null() clash
 * with the writer's, json.h). Writing stays with json.h's JsonBuf, a one-pass
 * emitter: see there.
 *
 * Numbers keep a text so that integers are read exactly by whoever reads
 * them: integers (int64; larger ones are refused) in decimal, reals in the
 * fewest digits (at most 17) that read back as the same double, always with a
 * '.' or an exponent, so a reader of integers refuses 1.0 and 1e3. Nesting is
 * bounded (32 levels); malformed input is a usage error, "invalid JSON at
 * byte N: <jansson's reason>". */
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
