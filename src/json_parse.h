/* json_parse.h — the JSON reader: --config files, manifest.json, JSONL
 * records, safetensors headers, config.json of import, request bodies, the
 * options stored in checkpoints and runs.
 *
 * Parsing is jansson's (libjansson, Debian's libjansson-dev): strict RFC 8259,
 * linear in time and memory, UTF-8 validated, \u escapes of surrogates only
 * as pairs, duplicate keys refused. Its tree is moved into the JsonValue tree
 * below (each jansson node freed once copied), which every caller walks; only
 * json_parse.c includes jansson.h (its json_str() and json_null_value() clash
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
    char *text;              /* JV_STRING: the decoded string; JV_NUMBER: its source text (NUL-terminated) */
    size_t len;              /* bytes of text: a JV_STRING may hold NUL bytes (\u0000) */
    struct JsonValue *items; /* JV_ARRAY / JV_OBJECT: n values */
    char **keys;             /* JV_OBJECT: n keys */
    int n;
} JsonValue;

int json_parse(const char *text, size_t len, JsonValue *out, NfError *err);
void json_value_free(JsonValue *v);
/* Streaming a big top-level object (manifest.json's shards and sources): the
 * members whose key is in keys and whose value is an array are never built as
 * one tree; their elements are parsed one at a time, handed to element() and
 * freed, so memory follows the largest element, not the array. */
typedef struct {
    const char *const *keys; /* NULL-terminated */
    /* The index-th element of the array under key. value is freed when this
     * returns: move out (and zero) what you keep. 0, or -1 with err filled,
     * which stops the parse and is returned as it is. */
    int (*element)(void *ctx, const char *key, size_t index, JsonValue *value, NfError *err);
    /* May be NULL: the array under key ended after n elements (so that an
     * empty array can be told from an absent one). Returns like element(). */
    int (*end)(void *ctx, const char *key, size_t n, NfError *err);
} JsonStream;

/* Parses text, whose top level must be an object, as json_parse would (the
 * same checks, depth counted from the top, the same "invalid JSON at byte N"
 * errors), streaming the arrays named by stream->keys. Every other member (a
 * listed key whose value is not an array too) goes whole into *rest, a
 * JV_OBJECT in the text's order, which the callbacks may read: it holds the
 * members before the current one. On failure *rest is left empty. */
int json_parse_each(const char *text, size_t len, const JsonStream *stream, void *ctx, JsonValue *rest, NfError *err);

/* The value of key in an object, or NULL. */
const JsonValue *json_get(const JsonValue *obj, const char *key);
/* Same type and value; numbers compare by their source text, objects by key in order. */
bool json_value_equal(const JsonValue *a, const JsonValue *b);

#endif
