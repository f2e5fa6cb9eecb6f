/* manifest.c — reading, checking and writing manifest.json. */
#include "manifest.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "json.h"
#include "json_parse.h"
#include "model.h"
#include "tokenfile.h"
#include "util.h"

/* Counts far beyond any real corpus but safe to add up in uint64. */
#define MANIFEST_MAX_COUNT (1ull << 56)

static char *path_in(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

bool manifest_exists(const char *dir) {
    char *p = path_in(dir, MANIFEST_NAME);
    struct stat st;
    bool yes = p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
    free(p);
    return yes;
}

void manifest_free(Manifest *m) {
    for (int i = 0; i < m->n_shards; i++) {
        free(m->shards[i].file);
        free(m->shards[i].mask);
    }
    for (int i = 0; i < m->n_sources; i++) free(m->sources[i].path);
    free(m->shards);
    free(m->sources);
    free(m->tokenizer);
    memset(m, 0, sizeof *m);
}

/* ---- reading ------------------------------------------------------------ */

typedef struct {
    const char *path; /* the manifest file, for messages */
    NfError *err;
} Reader;

static int bad(Reader *r, const char *fmt, const char *what) {
    char why[256];
    snprintf(why, sizeof why, fmt, what);
    return nf_fail(r->err, NF_ERR_DATA, "manifest '%s': %s", r->path, why);
}

static const JsonValue *field(Reader *r, const JsonValue *obj, const char *key, JsonType type) {
    const JsonValue *v = json_get(obj, key);
    if (!v || v->type != type) {
        bad(r, "missing or mistyped field \"%s\"", key);
        return NULL;
    }
    return v;
}

/* A non-negative integer field, at most max. */
static int get_count(Reader *r, const JsonValue *obj, const char *key, uint64_t max, uint64_t *out) {
    const JsonValue *v = field(r, obj, key, JV_NUMBER);
    if (!v) return -1;
    const char *s = v->text;
    if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return bad(r, "field \"%s\" is not a count", key);
    uint64_t x = strtoull(s, NULL, 10);
    if (x > max) return bad(r, "field \"%s\" is out of range", key);
    *out = x;
    return 0;
}

static int get_string(Reader *r, const JsonValue *obj, const char *key, char **out) {
    const JsonValue *v = field(r, obj, key, JV_STRING);
    if (!v) return -1;
    if (strlen(v->text) != v->len) return bad(r, "field \"%s\" holds a NUL character", key);
    if (!(*out = strdup(v->text))) return nf_fail(r->err, NF_ERR_MEMORY, "out of memory");
    return 0;
}

static int get_hash(Reader *r, const JsonValue *obj, const char *key, uint64_t *out) {
    const JsonValue *v = field(r, obj, key, JV_STRING);
    if (!v) return -1;
    const char *s = v->text;
    if (strncmp(s, "fnv1a64:", 8) != 0 || strlen(s) != 24 || strspn(s + 8, "0123456789abcdef") != 16)
        return bad(r, "field \"%s\" is not an fnv1a64:<16 hex digits> hash", key);
    *out = strtoull(s + 8, NULL, 16);
    return 0;
}

/* A file name that stays in the manifest's directory: no '/', not . or .., not hidden. */
static bool safe_name(const char *s) { return s[0] && s[0] != '.' && !strchr(s, '/'); }

static int read_shard(Reader *r, const JsonValue *v, ManifestShard *s) {
    if (v->type != JV_OBJECT) return bad(r, "%s", "a shard is not an object");
    if (get_string(r, v, "file", &s->file) != 0 || get_count(r, v, "tokens", MANIFEST_MAX_COUNT, &s->tokens) != 0 ||
        get_count(r, v, "masked_tokens", s->tokens, &s->masked_tokens) != 0)
        return -1;
    if (!safe_name(s->file)) return bad(r, "shard file name '%s' leaves the directory", s->file);
    const JsonValue *mask = json_get(v, "mask");
    if (!mask || (mask->type != JV_NULL && mask->type != JV_STRING))
        return bad(r, "%s", "a shard's \"mask\" is missing or mistyped");
    if (mask->type == JV_STRING) {
        if (get_string(r, v, "mask", &s->mask) != 0) return -1;
        if (!safe_name(s->mask)) return bad(r, "mask file name '%s' leaves the directory", s->mask);
    } else if (s->masked_tokens != 0) {
        return bad(r, "shard '%s' has masked tokens but no mask file", s->file);
    }
    return 0;
}

static int read_source(Reader *r, const JsonValue *v, ManifestSource *s) {
    if (v->type != JV_OBJECT) return bad(r, "%s", "a source is not an object");
    if (get_string(r, v, "path", &s->path) != 0 || get_count(r, v, "bytes", MANIFEST_MAX_COUNT, &s->bytes) != 0 ||
        get_hash(r, v, "hash", &s->hash) != 0 || get_count(r, v, "documents", MANIFEST_MAX_COUNT, &s->documents) != 0 ||
        get_count(r, v, "tokens", MANIFEST_MAX_COUNT, &s->tokens) != 0 ||
        get_count(r, v, "masked_tokens", s->tokens, &s->masked_tokens) != 0 ||
        get_count(r, v, "shard", MANIFEST_MAX_COUNT, &s->shard) != 0 ||
        get_count(r, v, "offset", MANIFEST_MAX_COUNT, &s->offset) != 0)
        return -1;
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted, so that 100,000 shards take n log n comparisons, not n² / 2. */
static int shard_listed_twice(Reader *r, const Manifest *m) {
    if (m->n_shards < 2) return 0;
    char **names = nf_alloc_array((size_t)m->n_shards, sizeof *names, r->err);
    if (!names) return -1;
    for (int i = 0; i < m->n_shards; i++) names[i] = m->shards[i].file;
    qsort(names, (size_t)m->n_shards, sizeof *names, by_name);
    int rc = 0;
    for (int i = 1; i < m->n_shards && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0) rc = bad(r, "shard '%s' is listed twice", names[i]);
    free(names);
    return rc;
}

/* The fields that say whether this build can read the file at all. */
static int read_format(Reader *r, const JsonValue *root, int *version_out) {
    const JsonValue *format = field(r, root, "format", JV_STRING);
    if (!format) return -1;
    if (strcmp(format->text, MANIFEST_FORMAT) != 0) return bad(r, "format is not \"%s\"", MANIFEST_FORMAT);
    uint64_t version;
    if (get_count(r, root, "version", 1000000, &version) != 0) return -1;
    if (version < 1 || version > MANIFEST_VERSION)
        return nf_fail(r->err, NF_ERR_DATA, "manifest '%s' has version %llu; this build reads versions 1 to %d",
                       r->path, (unsigned long long)version, MANIFEST_VERSION);
    *version_out = (int)version;
    return 0;
}

/* Version 1's shards are headerless uint16; version 2's have the token-file header with the width it lists. */
static int read_token_width(Reader *r, const JsonValue *root, Manifest *m) {
    m->token_legacy = m->version == 1;
    m->token_width = 2;
    uint64_t width;
    if (m->version >= 2) {
        if (get_count(r, root, "token_width", 4, &width) != 0) return -1;
        if (width != 2 && width != 4) return bad(r, "%s is not 2 or 4", "token_width");
        m->token_width = (int)width;
    }
    if (m->token_width == 2 && m->vocab_size > TOKEN_FILE_U16_VOCAB)
        return bad(r, "%s is 2 but the vocab_size is past 65536", "token_width");
    return 0;
}

/* Every top-level field but the shards and sources. */
static int read_header(Reader *r, const JsonValue *root, Manifest *m) {
    uint64_t generation, vocab, shard_mb;
    if (read_format(r, root, &m->version) != 0 || get_count(r, root, "generation", INT64_MAX, &generation) != 0)
        return -1;
    m->generation = (int64_t)generation;
    const JsonValue *tok = field(r, root, "tokenizer", JV_OBJECT);
    if (!tok || get_string(r, tok, "path", &m->tokenizer) != 0 || get_hash(r, tok, "hash", &m->tokenizer_hash) != 0 ||
        get_count(r, tok, "vocab_size", NF_MAX_VOCAB, &vocab) != 0)
        return -1;
    m->vocab_size = (int)vocab;
    if (read_token_width(r, root, m) != 0) return -1;
    const JsonValue *split = field(r, root, "split", JV_STRING);
    if (!split) return -1;
    if (text_split_parse(split->text, &m->split) != 0) return bad(r, "%s", "split is not eot, blank or none");
    /* chat_template: absent in manifests from before it was chosen, which rendered chats as llama2 */
    const JsonValue *chat = json_get(root, "chat_template");
    m->chat_template = CHAT_LLAMA2;
    if (chat && (chat->type != JV_STRING || chat_kind_parse(chat->text, &m->chat_template) != 0))
        return bad(r, "%s", "chat_template is not llama3, chatml, llama2 or none");
    if (get_count(r, root, "max_shard_mb", 1u << 20, &shard_mb) != 0 ||
        get_count(r, root, "documents", MANIFEST_MAX_COUNT, &m->documents) != 0 ||
        get_count(r, root, "tokens", MANIFEST_MAX_COUNT, &m->tokens) != 0 ||
        get_count(r, root, "masked_tokens", m->tokens, &m->masked_tokens) != 0)
        return -1;
    m->max_shard_mb = (int64_t)shard_mb;
    return 0;
}

/* manifest.json is read with json_parse_each: the shards and sources, which
 * make up nearly all of a big manifest, come one element at a time straight
 * into the Manifest's arrays, so the peak is about the Manifest itself, not a
 * tree of the whole file (~10x its size). The other fields land in `rest`. */
typedef struct {
    Reader r;
    Manifest *m;
    const JsonValue *rest; /* json_parse_each's members so far */
    size_t shards_cap, sources_cap;
    bool have_shards, have_sources;
    bool format_read; /* before the first element, when format and version come first (ingest writes them so) */
    bool failed;      /* a callback failed: its error is already the manifest's own */
    /* running sums, compared with the totals at the end; each stays <= MANIFEST_MAX_COUNT or it is an error
     * at once, so adding a count (also <= MANIFEST_MAX_COUNT) never wraps */
    uint64_t shard_tokens, shard_masked, documents, tokens, masked;
} Loader;

/* Room for one more element of (*items)[*n], zeroed and counted in *n (so that manifest_free frees it even when
 * reading it fails), growing by doubling. */
static void *append(void **items, int *n, size_t *cap, size_t size, NfError *err) {
    if ((size_t)*n == *cap) {
        /* an element takes at least 3 bytes of text ("{}," or "[],"), so INT_MAX of them is a 6 GB file */
        if (*n == INT_MAX) {
            nf_fail(err, NF_ERR_DATA, "manifest: more than %d shards or sources", INT_MAX);
            return NULL;
        }
        if (!nf_grow(items, cap, (size_t)*n + 1, size, 64)) {
            nf_fail(err, NF_ERR_MEMORY, "out of memory");
            return NULL;
        }
    }
    char *slot = (char *)*items + (size_t)(*n)++ * size;
    memset(slot, 0, size);
    return slot;
}

/* sum += x, refused once it passes any total a manifest may hold. */
static bool add_count(uint64_t *sum, uint64_t x) {
    *sum += x;
    return *sum <= MANIFEST_MAX_COUNT;
}

static int add_shard(Loader *l, const JsonValue *v) {
    Manifest *m = l->m;
    ManifestShard *s = append((void **)&m->shards, &m->n_shards, &l->shards_cap, sizeof *s, l->r.err);
    if (!s || read_shard(&l->r, v, s) != 0) return -1;
    if (!add_count(&l->shard_tokens, s->tokens) || !add_count(&l->shard_masked, s->masked_tokens))
        return bad(&l->r, "%s", "the shards' token counts do not add up to the totals");
    return 0;
}

static int add_source(Loader *l, const JsonValue *v) {
    Manifest *m = l->m;
    ManifestSource *s = append((void **)&m->sources, &m->n_sources, &l->sources_cap, sizeof *s, l->r.err);
    if (!s || read_source(&l->r, v, s) != 0) return -1;
    if (m->n_sources > 1 && strcmp(m->sources[m->n_sources - 2].path, s->path) >= 0)
        return bad(&l->r, "source '%s' is out of order or listed twice", s->path);
    if (!add_count(&l->documents, s->documents) || !add_count(&l->tokens, s->tokens) ||
        !add_count(&l->masked, s->masked_tokens))
        return bad(&l->r, "%s", "the sources' counts do not add up to the totals");
    return 0;
}

static int on_element(void *ctx, const char *key, size_t index, JsonValue *v, NfError *err) {
    (void)index;
    (void)err; /* the Reader's */
    Loader *l = ctx;
    /* a manifest of another format or version is named as such, not by the first field it lacks */
    int rc = 0;
    if (!l->format_read && json_get(l->rest, "format") && json_get(l->rest, "version")) {
        l->format_read = true;
        int version;
        rc = read_format(&l->r, l->rest, &version);
    }
    if (rc == 0) rc = strcmp(key, "shards") == 0 ? add_shard(l, v) : add_source(l, v);
    if (rc != 0) l->failed = true;
    return rc;
}

static int on_end(void *ctx, const char *key, size_t n, NfError *err) {
    (void)n;
    (void)err;
    Loader *l = ctx;
    if (strcmp(key, "shards") == 0)
        l->have_shards = true;
    else
        l->have_sources = true;
    return 0;
}

/* What can only be checked once the whole file is read. */
static int finish(Loader *l) {
    Reader *r = &l->r;
    Manifest *m = l->m;
    if (read_header(r, l->rest, m) != 0) return -1;
    if (!l->have_shards) return bad(r, "missing or mistyped field \"%s\"", "shards");
    if (!l->have_sources) return bad(r, "missing or mistyped field \"%s\"", "sources");
    if (shard_listed_twice(r, m) != 0) return -1;
    if (l->shard_tokens != m->tokens || l->shard_masked != m->masked_tokens)
        return bad(r, "%s", "the shards' token counts do not add up to the totals");
    if (l->documents != m->documents || l->tokens != m->tokens || l->masked != m->masked_tokens)
        return bad(r, "%s", "the sources' counts do not add up to the totals");
    return 0;
}

static const char *const STREAMED[] = {"shards", "sources", NULL};

int manifest_load(const char *dir, Manifest *m, NfError *err) {
    memset(m, 0, sizeof *m);
    char *path = path_in(dir, MANIFEST_NAME);
    if (!path) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    MappedFile f;
    int rc = mapped_file_open(&f, path, "manifest", err);
    if (rc == 0) {
        JsonValue rest;
        Loader l = {.r = {path, err}, .m = m, .rest = &rest};
        JsonStream stream = {STREAMED, on_element, on_end};
        rc = json_parse_each((const char *)f.data, f.size, &stream, &l, &rest, err);
        if (rc != 0 && !l.failed) {
            rc = nf_prefix(err, NF_ERR_DATA, "manifest '%s': ", path);
        } else if (rc == 0) {
            rc = finish(&l);
        }
        json_value_free(&rest);
        mapped_file_close(&f);
    }
    free(path);
    if (rc != 0) manifest_free(m);
    return rc;
}

/* ---- writing ------------------------------------------------------------ */

static void json_hash(JsonBuf *j, const char *key, uint64_t h) {
    char s[32];
    snprintf(s, sizeof s, "fnv1a64:%016" PRIx64, h);
    json_str(j, key, s);
}

int manifest_save(const char *dir, const Manifest *m, NfError *err) {
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_str(&j, "format", MANIFEST_FORMAT);
    json_int(&j, "version", MANIFEST_VERSION);
    json_int(&j, "generation", m->generation);
    json_object_begin(&j, "tokenizer");
    json_str(&j, "path", m->tokenizer);
    json_hash(&j, "hash", m->tokenizer_hash);
    json_int(&j, "vocab_size", m->vocab_size);
    json_object_end(&j);
    json_int(&j, "token_width", m->token_width);
    json_str(&j, "split", text_split_name(m->split));
    json_str(&j, "chat_template", chat_kind_name(m->chat_template));
    json_int(&j, "max_shard_mb", m->max_shard_mb);
    json_int(&j, "documents", (int64_t)m->documents);
    json_int(&j, "tokens", (int64_t)m->tokens);
    json_int(&j, "masked_tokens", (int64_t)m->masked_tokens);
    json_array_begin(&j, "shards");
    for (int i = 0; i < m->n_shards; i++) {
        const ManifestShard *s = &m->shards[i];
        json_object_begin(&j, NULL);
        json_str(&j, "file", s->file);
        json_str(&j, "mask", s->mask);
        json_int(&j, "tokens", (int64_t)s->tokens);
        json_int(&j, "masked_tokens", (int64_t)s->masked_tokens);
        json_object_end(&j);
    }
    json_array_end(&j);
    json_array_begin(&j, "sources");
    for (int i = 0; i < m->n_sources; i++) {
        const ManifestSource *s = &m->sources[i];
        json_object_begin(&j, NULL);
        json_str(&j, "path", s->path);
        json_int(&j, "bytes", (int64_t)s->bytes);
        json_hash(&j, "hash", s->hash);
        json_int(&j, "documents", (int64_t)s->documents);
        json_int(&j, "tokens", (int64_t)s->tokens);
        json_int(&j, "masked_tokens", (int64_t)s->masked_tokens);
        json_int(&j, "shard", (int64_t)s->shard);
        json_int(&j, "offset", (int64_t)s->offset);
        json_object_end(&j);
    }
    json_array_end(&j);
    json_object_end(&j);
    if (j.failed) {
        json_free(&j);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory writing the manifest");
    }
    char *path = path_in(dir, MANIFEST_NAME);
    AtomicFile f;
    int rc = path ? 0 : nf_fail(err, NF_ERR_MEMORY, "out of memory");
    if (rc == 0) rc = atomic_file_open(&f, path, err);
    if (rc == 0 && (atomic_file_write(&f, j.data, j.len, err) != 0 || atomic_file_write(&f, "\n", 1, err) != 0 ||
                    atomic_file_commit(&f, err) != 0)) {
        atomic_file_abort(&f);
        rc = -1;
    }
    free(path);
    json_free(&j);
    return rc;
}
