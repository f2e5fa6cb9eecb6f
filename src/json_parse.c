/* json_parse.c — recursive-descent JSON parsing into JsonValue trees. */
#include "json_parse.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_DEPTH 32

typedef struct {
    const char *s;
    size_t len, pos;
    NfError *err;
} Parser;

static int fail_at(Parser *p, const char *what) {
    return nf_fail(p->err, NF_ERR_USAGE, "invalid JSON at byte %zu: %s", p->pos, what);
}

static void skip_ws(Parser *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                               p->s[p->pos] == '\r'))
        p->pos++;
}

static int parse_value(Parser *p, JsonValue *v, int depth);

static void put_utf8(char *out, size_t *o, unsigned cp) {
    if (cp < 0x80) out[(*o)++] = (char)cp;
    else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(Parser *p, unsigned *cp) {
    if (p->pos + 4 > p->len) return fail_at(p, "short \\u escape");
    *cp = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        *cp <<= 4;
        if (c >= '0' && c <= '9') *cp |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') *cp |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') *cp |= (unsigned)(c - 'A' + 10);
        else return fail_at(p, "bad \\u escape");
    }
    return 0;
}

static int parse_string(Parser *p, char **out, size_t *out_len) {
    p->pos++; /* opening quote */
    char *buf = malloc(p->len - p->pos + 4);
    if (!buf) return nf_fail(p->err, NF_ERR_MEMORY, "out of memory");
    size_t o = 0;
    while (p->pos < p->len && p->s[p->pos] != '"') {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c < 0x20) {
            free(buf);
            return fail_at(p, "control character in string");
        }
        if (c != '\\') {
            buf[o++] = (char)c;
            continue;
        }
        if (p->pos >= p->len) break;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': buf[o++] = '"'; break;
        case '\\': buf[o++] = '\\'; break;
        case '/': buf[o++] = '/'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp) != 0) {
                free(buf);
                return -1;
            }
            if (cp >= 0xD800 && cp < 0xDC00 && p->pos + 6 <= p->len && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                unsigned lo;
                p->pos += 2;
                if (hex4(p, &lo) != 0) {
                    free(buf);
                    return -1;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(buf, &o, cp);
            break;
        }
        default:
            free(buf);
            return fail_at(p, "bad escape");
        }
    }
    if (p->pos >= p->len) {
        free(buf);
        return fail_at(p, "unterminated string");
    }
    p->pos++;
    buf[o] = '\0';
    *out = buf;
    if (out_len) *out_len = o;
    return 0;
}

static int parse_container(Parser *p, JsonValue *v, int depth, bool object) {
    char close = object ? '}' : ']';
    p->pos++;
    int cap = 0;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? cap * 2 : 8;
            JsonValue *items = realloc(v->items, (size_t)cap * sizeof *items);
            if (!items) return nf_fail(p->err, NF_ERR_MEMORY, "out of memory");
            v->items = items;
            if (object) {
                char **keys = realloc(v->keys, (size_t)cap * sizeof *keys);
                if (!keys) return nf_fail(p->err, NF_ERR_MEMORY, "out of memory");
                v->keys = keys;
            }
        }
        skip_ws(p);
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return fail_at(p, "expected a key");
            if (parse_string(p, &v->keys[v->n], NULL) != 0) return -1;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(v->keys[v->n]);
                return fail_at(p, "expected ':'");
            }
            p->pos++;
        }
        memset(&v->items[v->n], 0, sizeof(JsonValue));
        v->n++;
        if (parse_value(p, &v->items[v->n - 1], depth + 1) != 0) return -1;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return 0;
        }
        return fail_at(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_value(Parser *p, JsonValue *v, int depth) {
    memset(v, 0, sizeof *v);
    if (depth > MAX_DEPTH) return fail_at(p, "nested too deeply");
    skip_ws(p);
    if (p->pos >= p->len) return fail_at(p, "unexpected end");
    char c = p->s[p->pos];
    if (c == '{') {
        v->type = JV_OBJECT;
        return parse_container(p, v, depth, true);
    }
    if (c == '[') {
        v->type = JV_ARRAY;
        return parse_container(p, v, depth, false);
    }
    if (c == '"') {
        v->type = JV_STRING;
        return parse_string(p, &v->text, &v->len);
    }
    const char *words[3] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if (p->len - p->pos >= n && strncmp(p->s + p->pos, words[i], n) == 0) {
            p->pos += n;
            v->type = i == 2 ? JV_NULL : JV_BOOL;
            v->boolean = i == 0;
            return 0;
        }
    }
    size_t start = p->pos;
    while (p->pos < p->len && strchr("+-0123456789.eE", p->s[p->pos])) p->pos++;
    if (p->pos == start) return fail_at(p, "unexpected character");
    v->type = JV_NUMBER;
    v->text = malloc(p->pos - start + 1);
    if (!v->text) return nf_fail(p->err, NF_ERR_MEMORY, "out of memory");
    memcpy(v->text, p->s + start, p->pos - start);
    v->text[p->pos - start] = '\0';
    v->len = p->pos - start;
    return 0;
}

int json_parse(const char *text, size_t len, JsonValue *out, NfError *err) {
    Parser p = {text, len, 0, err};
    if (parse_value(&p, out, 0) != 0) {
        json_value_free(out);
        return -1;
    }
    skip_ws(&p);
    if (p.pos != len) {
        fail_at(&p, "trailing characters");
        json_value_free(out);
        return -1;
    }
    return 0;
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
