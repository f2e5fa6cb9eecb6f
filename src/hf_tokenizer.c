/* hf_tokenizer.c — reading tokenizer.json / tokenizer_config.json (jansson,
 * used directly: the 128k-entry vocabulary is iterated, never searched key by
 * key), added tokens, and the glue from a text to the BPE model's ids. */
#include "hf_tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bpe.h"
#include "fileio.h"
#include "hf_vocab.h"
#include "pretok.h"
#include "utf8.h"
#include "util.h"

#define MAX_IDS (1 << 24) /* ids past this are refused: a corrupt file, not a vocabulary */

typedef struct {
    char *content;
    size_t len;
    int id;
    bool special, lstrip, rstrip, single_word;
} AddedToken;

struct HfTokenizer {
    Bpe bpe;
    TextPipeline pipe;
    AddedToken *added;
    int n_added;
    int by_byte[257]; /* added tokens sorted by first byte: those starting with byte b are [by_byte[b], by_byte[b+1]) */
    int *order;       /* (n_added) indices into added, by first byte then longest first */
    bool strip_first_space;
};

/* ---- files ----------------------------------------------------------------------- */

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int hf_tokenizer_paths(const char *path, HfPaths *out, NfError *err) {
    memset(out, 0, sizeof *out);
    char *dir = NULL;
    if (is_dir(path)) {
        out->json = nf_path_join(path, "tokenizer.json");
        dir = strdup(path);
    } else {
        out->json = strdup(path);
        const char *slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path + (slash == path))) : strdup(".");
    }
    if (!out->json || !dir) {
        free(dir);
        hf_paths_free(out);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    if (!is_file(out->json)) {
        nf_fail(err, NF_ERR_IO, "'%s' is not a tokenizer.json file%s", out->json,
                is_dir(path) ? " (the directory holds no tokenizer.json)" : "");
        free(dir);
        hf_paths_free(out);
        return -1;
    }
    out->config = nf_path_join(dir, "tokenizer_config.json");
    out->dir = dir;
    if (!out->config) {
        hf_paths_free(out);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    if (!is_file(out->config)) {
        free(out->config);
        out->config = NULL;
    }
    return 0;
}

void hf_paths_free(HfPaths *p) {
    free(p->json);
    free(p->config);
    free(p->dir);
    memset(p, 0, sizeof *p);
}

/* flags: JSON_DECODE_INT_AS_REAL for tokenizer_config.json, whose model_max_length may be 1e30 written as an
 * integer (which jansson's int64 refuses); tokenizer.json's ids must stay integers. */
static int load_json(const char *path, size_t flags, json_t **root, NfError *err) {
    MappedFile f;
    if (mapped_file_open(&f, path, "tokenizer", err) != 0) return -1;
    json_error_t je;
    *root = json_loadb((const char *)f.data, f.size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | flags, &je);
    mapped_file_close(&f);
    if (!*root)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s' is not valid JSON (line %d, column %d: %s)", path, je.line,
                       je.column, je.text);
    if (!json_is_object(*root)) {
        json_decref(*root);
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s' is not a JSON object", path);
    }
    return 0;
}

/* tokenizer.json: jansson parses it with model.vocab and model.merges left out (hf_vocab.h); doc keeps
 * the file mapped and their spans, for hf_vocab.c to read. */
typedef struct {
    MappedFile file;
    JsonSpan vocab, merges;
} Doc;

static int load_tokenizer_json(const char *path, Doc *doc, json_t **root, NfError *err) {
    if (mapped_file_open(&doc->file, path, "tokenizer", err) != 0) return -1;
    const char *text = (const char *)doc->file.data;
    hf_vocab_locate(text, doc->file.size, &doc->vocab, &doc->merges);
    BlankedText feed;
    hf_blanked_init(&feed, text, doc->file.size, doc->vocab, doc->merges);
    json_error_t je;
    *root = json_load_callback(hf_blanked_feed, &feed, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!*root)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s' is not valid JSON (line %d, column %d: %s)", path, je.line,
                       je.column, je.text);
    if (!json_is_object(*root)) return nf_fail(err, NF_ERR_TOKENIZER, "'%s' is not a JSON object", path);
    return 0;
}

/* ---- small readers --------------------------------------------------------------------- */

/* A member that must be a string when present (absent or null: NULL). */
static int opt_string(const json_t *obj, const char *key, const char *where, const char **out, size_t *len,
                      NfError *err) {
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (len) *len = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return nf_fail(err, NF_ERR_TOKENIZER, "%s: \"%s\" must be a string", where, key);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 0;
}

static int opt_bool(const json_t *obj, const char *key, bool dflt, const char *where, bool *out, NfError *err) {
    const json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return nf_fail(err, NF_ERR_TOKENIZER, "%s: \"%s\" must be true or false", where, key);
    *out = json_is_true(v);
    return 0;
}

static const char *type_of(const json_t *obj) {
    const json_t *t = json_object_get(obj, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static char *dup_n(const char *s, size_t n, NfError *err) {
    char *d = nf_alloc(n + 1, err);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- the model -------------------------------------------------------------------------- */

static int id_of(const json_t *v, const char *what, int *id, NfError *err) {
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 0 || x >= MAX_IDS)
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: %s has an id that is not in [0, %d)", what, MAX_IDS);
    *id = (int)x;
    return 0;
}

static int read_added(HfTokenizer *h, const json_t *root, NfError *err) {
    const json_t *arr = json_object_get(root, "added_tokens");
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: \"added_tokens\" is not an array");
    size_t n = json_array_size(arr);
    if (!(h->added = nf_alloc_array(n ? n : 1, sizeof *h->added, err))) return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(arr, i);
        AddedToken *t = &h->added[h->n_added];
        const char *content;
        size_t len;
        if (!json_is_object(a))
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: added token %zu is not an object", i);
        if (id_of(json_object_get(a, "id"), "an added token", &t->id, err) != 0 ||
            opt_string(a, "content", "tokenizer.json added token", &content, &len, err) != 0 ||
            opt_bool(a, "special", false, "added token", &t->special, err) != 0 ||
            opt_bool(a, "lstrip", false, "added token", &t->lstrip, err) != 0 ||
            opt_bool(a, "rstrip", false, "added token", &t->rstrip, err) != 0 ||
            opt_bool(a, "single_word", false, "added token", &t->single_word, err) != 0)
            return -1;
        if (!content || len == 0)
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: added token %zu has no content", i);
        if (!(t->content = dup_n(content, len, err))) return -1;
        t->len = len;
        h->n_added++;
    }
    return 0;
}

/* The vocabulary from jansson's tree: where hf_vocab_locate found no span (it never does for a file jansson
 * reads, short of a key spelled with escapes). */
static int vocab_from_tree(const json_t *vocab, HfStrings *out, NfError *err) {
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        long long id = json_is_integer(v) ? (long long)json_integer_value(v) : -1;
        /* jansson keys are NUL-terminated: a key with \u0000 is cut there */
        if (hf_strings_add(out, key, strlen(key), id, err) != 0) return -1;
    }
    return 0;
}

/* Merges as "a b" (the first space separates: neither side holds one) or as ["a", "b"], from jansson's tree. */
static int merges_from_tree(const json_t *merges, HfStrings *out, NfError *err) {
    for (size_t i = 0; i < json_array_size(merges); i++) {
        const json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *space = memchr(s, ' ', json_string_length(m));
            if (!space)
                return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: merge %zu ('%.40s') is not two tokens", i, s);
            size_t l = (size_t)(space - s);
            if (hf_strings_add(out, s, l, 0, err) != 0 ||
                hf_strings_add(out, space + 1, json_string_length(m) - l - 1, 0, err) != 0)
                return -1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            for (int k = 0; k < 2; k++) {
                const json_t *side = json_array_get(m, (size_t)k);
                if (hf_strings_add(out, json_string_value(side), json_string_length(side), 0, err) != 0) return -1;
            }
        } else {
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
        }
    }
    return 0;
}

static int add_merges(Bpe *b, const HfStrings *m, NfError *err) {
    size_t n = m->n / 2;
    if (n > (size_t)MAX_IDS) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: too many merges");
    if (bpe_prepare(b, (int)n, err) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        const HfEntry *l = &m->items[2 * i], *r = &m->items[2 * i + 1];
        if (bpe_add_merge(b, m->strings + l->off, l->len, m->strings + r->off, r->len, err) != 0) return -1;
    }
    return 0;
}

static int check_model_options(const json_t *model, NfError *err) {
    const char *type = type_of(model);
    if (type ? strcmp(type, "BPE") != 0 : !json_object_get(model, "merges"))
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: model type '%s' is not supported (only BPE)",
                       type ? type : "(none)");
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0))
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: BPE dropout is not supported (it is for training)");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s;
        size_t len;
        if (opt_string(model, affixes[i], "tokenizer.json model", &s, &len, err) != 0) return -1;
        if (len > 0)
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the BPE model's %s is not supported", affixes[i]);
    }
    const json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab))
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the model has no \"vocab\" object");
    if (!json_is_array(merges))
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the model has no \"merges\" array");
    return 0;
}

static int read_vocab(HfTokenizer *h, const HfStrings *vocab, bool byte_level, NfError *err) {
    int max_id = -1;
    for (size_t i = 0; i < vocab->n; i++) {
        if (vocab->items[i].id < 0 || vocab->items[i].id >= MAX_IDS)
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the vocabulary has an id that is not in [0, %d)",
                           MAX_IDS);
        if (vocab->items[i].id > max_id) max_id = (int)vocab->items[i].id;
    }
    for (int i = 0; i < h->n_added; i++)
        if (h->added[i].id > max_id) max_id = h->added[i].id;
    if (max_id < 0) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the vocabulary is empty");
    Bpe *b = &h->bpe;
    if (bpe_init(b, max_id + 1, err) != 0) return -1;
    b->byte_level = byte_level;
    for (size_t i = 0; i < vocab->n; i++) {
        const HfEntry *e = &vocab->items[i];
        if (bpe_set_token(b, (int)e->id, vocab->strings + e->off, e->len, err) != 0)
            return nf_prefix(err, NULL, "tokenizer.json vocabulary: ");
    }
    for (int i = 0; i < h->n_added; i++) {
        AddedToken *a = &h->added[i];
        int named = bpe_find(b, a->content, a->len);
        if (named >= 0 && named != a->id)
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: added token '%s' has id %d but the vocabulary %d",
                           a->content, a->id, named);
        if (named < 0 && bpe_set_token(b, a->id, a->content, a->len, err) != 0)
            return nf_prefix(err, NULL, "tokenizer.json added tokens: ");
    }
    return 0;
}

static int read_model(HfTokenizer *h, const json_t *root, const Doc *doc, bool byte_level, NfError *err) {
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json has no \"model\" object");
    if (check_model_options(model, err) != 0) return -1;
    if (read_added(h, root, err) != 0) return -1;
    const char *text = (const char *)doc->file.data;
    HfStrings vocab = {0}, merges = {0};
    int rc = doc->vocab.found ? hf_vocab_read(text, doc->vocab, &vocab, err)
                              : vocab_from_tree(json_object_get(model, "vocab"), &vocab, err);
    if (rc == 0) rc = read_vocab(h, &vocab, byte_level, err);
    hf_strings_free(&vocab);
    if (rc == 0)
        rc = doc->merges.found ? hf_merges_read(text, doc->merges, &merges, err)
                               : merges_from_tree(json_object_get(model, "merges"), &merges, err);
    Bpe *b = &h->bpe;
    const char *unk;
    size_t unk_len;
    if (rc == 0 && (opt_string(model, "unk_token", "tokenizer.json model", &unk, &unk_len, err) != 0 ||
                    opt_bool(model, "byte_fallback", false, "tokenizer.json model", &b->byte_fallback, err) != 0 ||
                    opt_bool(model, "fuse_unk", false, "tokenizer.json model", &b->fuse_unk, err) != 0 ||
                    opt_bool(model, "ignore_merges", false, "tokenizer.json model", &b->ignore_merges, err) != 0))
        rc = -1;
    if (rc == 0 && unk && (b->unk_id = bpe_find(b, unk, unk_len)) < 0)
        rc = nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the unk_token '%s' is not in the vocabulary", unk);
    if (rc == 0) rc = add_merges(b, &merges, err);
    hf_strings_free(&merges);
    return rc;
}

/* ---- normalizer ------------------------------------------------------------------------- */

static int add_norm(TextPipeline *p, const json_t *n, NfError *err) {
    const char *type = type_of(n);
    if (!type) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: a normalizer has no type");
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Sequence normalizer has no list");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (add_norm(p, json_array_get(list, i), err) != 0) return -1;
        return 0;
    }
    NormStep st = {0};
    static const char *const unicode[] = {"NFC", "NFD", "NFKC", "NFKD"};
    static const NormKind unicode_kind[] = {NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD};
    bool known = false;
    for (int i = 0; i < 4; i++)
        if (strcmp(type, unicode[i]) == 0) st.kind = unicode_kind[i], known = true;
    const char *s = NULL, *to = NULL;
    size_t s_len = 0, to_len = 0;
    if (strcmp(type, "Prepend") == 0) {
        if (opt_string(n, "prepend", "the Prepend normalizer", &to, &to_len, err) != 0) return -1;
        st.kind = NORM_PREPEND, known = to != NULL;
    } else if (strcmp(type, "Replace") == 0) {
        const json_t *pattern = json_object_get(n, "pattern");
        if (opt_string(pattern, "String", "the Replace normalizer's pattern", &s, &s_len, err) != 0 ||
            opt_string(n, "content", "the Replace normalizer", &to, &to_len, err) != 0)
            return -1;
        if (!s || s_len == 0 || !to)
            return nf_fail(err, NF_ERR_TOKENIZER,
                           "tokenizer.json: a Replace normalizer without a String pattern is not supported");
        st.kind = NORM_REPLACE, known = true;
    }
    if (!known) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the normalizer '%s' is not supported", type);
    if ((s && !(st.from = dup_n(s, s_len, err))) || (to && !(st.to = dup_n(to, to_len, err)))) {
        free(st.from);
        return -1;
    }
    st.from_len = s_len, st.to_len = to_len;
    if (!nf_grow((void **)&p->norm, &p->norm_steps_cap, (size_t)p->n_norm + 1, sizeof *p->norm, 4)) {
        free(st.from), free(st.to);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    p->norm[p->n_norm++] = st;
    return 0;
}

/* ---- pre-tokenizer ----------------------------------------------------------------------- */

static int push_pre(TextPipeline *p, PreStep st, NfError *err) {
    if (!nf_grow((void **)&p->pre, &p->pre_steps_cap, (size_t)p->n_pre + 1, sizeof *p->pre, 4)) {
        pretok_step_free(&st);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    p->pre[p->n_pre++] = st;
    return 0;
}

static int split_behavior(const json_t *n, SplitBehavior *b, NfError *err) {
    static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    const char *s;
    if (opt_string(n, "behavior", "the Split pre-tokenizer", &s, NULL, err) != 0) return -1;
    for (int i = 0; s && i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *b = (SplitBehavior)i;
            return 0;
        }
    return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Split pre-tokenizer's behavior '%s' is not supported",
                   s ? s : "(none)");
}

static int add_split(TextPipeline *p, const json_t *n, NfError *err) {
    PreStep st = {.kind = PRE_SPLIT};
    const json_t *pattern = json_object_get(n, "pattern");
    const char *re, *lit;
    size_t re_len, lit_len;
    if (!json_is_object(pattern) || opt_string(pattern, "Regex", "the Split pattern", &re, &re_len, err) != 0 ||
        opt_string(pattern, "String", "the Split pattern", &lit, &lit_len, err) != 0 ||
        split_behavior(n, &st.behavior, err) != 0 ||
        opt_bool(n, "invert", false, "the Split pre-tokenizer", &st.invert, err) != 0)
        return err->code ? -1
                         : nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Split pre-tokenizer has no pattern");
    if (!re && !lit)
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Split pre-tokenizer has no Regex or String pattern");
    st.literal = !re;
    st.pattern_len = re ? re_len : lit_len;
    if (!(st.pattern = dup_n(re ? re : lit, st.pattern_len, err))) return -1;
    if (pretok_compile(&st.re, st.pattern, st.pattern_len, st.literal, "tokenizer.json's Split pre-tokenizer", err) !=
        0) {
        pretok_step_free(&st);
        return -1;
    }
    return push_pre(p, st, err);
}

static int add_byte_level(TextPipeline *p, const json_t *n, NfError *err) {
    PreStep st = {.kind = PRE_BYTE_LEVEL};
    bool use_regex;
    if (opt_bool(n, "add_prefix_space", true, "the ByteLevel pre-tokenizer", &st.add_prefix_space, err) != 0 ||
        opt_bool(n, "use_regex", true, "the ByteLevel pre-tokenizer", &use_regex, err) != 0)
        return -1;
    if (use_regex && pretok_compile(&st.re, PRETOK_GPT2_REGEX, strlen(PRETOK_GPT2_REGEX), false,
                                    "ByteLevel's GPT-2 regex", err) != 0)
        return -1;
    return push_pre(p, st, err);
}

static int add_metaspace(TextPipeline *p, const json_t *n, NfError *err) {
    PreStep st = {.kind = PRE_METASPACE, .prepend = PREPEND_ALWAYS};
    const char *rep, *scheme;
    bool add_prefix;
    if (opt_string(n, "replacement", "the Metaspace pre-tokenizer", &rep, &st.replacement_len, err) != 0 ||
        opt_string(n, "prepend_scheme", "the Metaspace pre-tokenizer", &scheme, NULL, err) != 0 ||
        opt_bool(n, "add_prefix_space", true, "the Metaspace pre-tokenizer", &add_prefix, err) != 0 ||
        opt_bool(n, "split", true, "the Metaspace pre-tokenizer", &st.split, err) != 0)
        return -1;
    if (!rep || st.replacement_len == 0)
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Metaspace pre-tokenizer has no replacement");
    if (scheme)
        st.prepend = strcmp(scheme, "first") == 0   ? PREPEND_FIRST
                     : strcmp(scheme, "never") == 0 ? PREPEND_NEVER
                                                    : PREPEND_ALWAYS;
    else if (!add_prefix)
        st.prepend = PREPEND_NEVER;
    if (scheme && strcmp(scheme, "first") && strcmp(scheme, "never") && strcmp(scheme, "always"))
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: Metaspace prepend_scheme '%s' is not supported", scheme);
    if (!(st.replacement = dup_n(rep, st.replacement_len, err))) return -1;
    if (pretok_compile(&st.re, rep, st.replacement_len, true, "Metaspace's replacement", err) != 0) {
        free(st.replacement);
        return -1;
    }
    return push_pre(p, st, err);
}

/* Digits: HF splits on Unicode numerics (Rust's char::is_numeric: \p{N}), each alone or in runs. */
static int add_digits(TextPipeline *p, const json_t *n, NfError *err) {
    PreStep st = {.kind = PRE_SPLIT, .behavior = SPLIT_ISOLATED};
    bool individual;
    if (opt_bool(n, "individual_digits", false, "the Digits pre-tokenizer", &individual, err) != 0) return -1;
    const char *re = individual ? "\\p{N}" : "\\p{N}+";
    st.pattern_len = strlen(re);
    if (!(st.pattern = dup_n(re, st.pattern_len, err))) return -1;
    if (pretok_compile(&st.re, re, strlen(re), false, "Digits", err) != 0) {
        pretok_step_free(&st);
        return -1;
    }
    return push_pre(p, st, err);
}

static int add_pre(TextPipeline *p, const json_t *n, bool *byte_level, NfError *err) {
    const char *type = type_of(n);
    if (!type) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: a pre-tokenizer has no type");
    if (*byte_level)
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: a pre-tokenizer after ByteLevel is not supported");
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(n, "pretokenizers");
        if (!json_is_array(list))
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Sequence pre-tokenizer has no list");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (add_pre(p, json_array_get(list, i), byte_level, err) != 0) return -1;
        return 0;
    }
    if (strcmp(type, "Split") == 0) return add_split(p, n, err);
    if (strcmp(type, "Metaspace") == 0) return add_metaspace(p, n, err);
    if (strcmp(type, "Digits") == 0) return add_digits(p, n, err);
    if (strcmp(type, "ByteLevel") == 0) {
        *byte_level = true;
        return add_byte_level(p, n, err);
    }
    return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the pre-tokenizer '%s' is not supported", type);
}

static int read_pipeline(HfTokenizer *h, const json_t *root, bool *byte_level, NfError *err) {
    const json_t *norm = json_object_get(root, "normalizer"), *pre = json_object_get(root, "pre_tokenizer");
    if (norm && !json_is_null(norm) && add_norm(&h->pipe, norm, err) != 0) return -1;
    if (pre && !json_is_null(pre) && add_pre(&h->pipe, pre, byte_level, err) != 0) return -1;
    return pretok_init(&h->pipe, err);
}

/* ---- decoder ------------------------------------------------------------------------------ */

typedef struct {
    bool byte_level;    /* ByteLevel: characters back to bytes */
    bool byte_fallback; /* ByteFallback: <0xXX> is the byte */
    const char *from;   /* Replace / Metaspace: this string decodes as `to` */
    size_t from_len;
    const char *to;
    size_t to_len;
} DecodeRules;

static int decoder_part(const json_t *d, DecodeRules *r, HfTokenizer *h, NfError *err) {
    const char *type = type_of(d);
    if (!type) return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: a decoder has no type");
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(d, "decoders");
        if (!json_is_array(list))
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Sequence decoder has no list");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (decoder_part(json_array_get(list, i), r, h, err) != 0) return -1;
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) return r->byte_level = true, 0;
    if (strcmp(type, "ByteFallback") == 0) return r->byte_fallback = true, 0;
    if (strcmp(type, "Fuse") == 0) return 0; /* joining the pieces: what decoding does anyway */
    if (strcmp(type, "Replace") == 0) {
        const json_t *pattern = json_object_get(d, "pattern");
        if (opt_string(pattern, "String", "the Replace decoder's pattern", &r->from, &r->from_len, err) != 0 ||
            opt_string(d, "content", "the Replace decoder", &r->to, &r->to_len, err) != 0)
            return -1;
        if (!r->from || r->from_len == 0 || !r->to)
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: a Replace decoder without a String pattern");
        return 0;
    }
    if (strcmp(type, "Strip") == 0) {
        const char *content;
        const json_t *start = json_object_get(d, "start"), *stop = json_object_get(d, "stop");
        if (opt_string(d, "content", "the Strip decoder", &content, NULL, err) != 0) return -1;
        json_int_t a = json_integer_value(start), z = json_integer_value(stop);
        if (!content || strcmp(content, " ") != 0 || a > 1 || z != 0)
            return nf_fail(err, NF_ERR_TOKENIZER,
                           "tokenizer.json: only a Strip decoder of at most one leading space is supported");
        h->strip_first_space = a == 1;
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *scheme;
        bool add_prefix;
        if (opt_string(d, "replacement", "the Metaspace decoder", &r->from, &r->from_len, err) != 0 ||
            opt_string(d, "prepend_scheme", "the Metaspace decoder", &scheme, NULL, err) != 0 ||
            opt_bool(d, "add_prefix_space", true, "the Metaspace decoder", &add_prefix, err) != 0)
            return -1;
        if (!r->from || r->from_len == 0)
            return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the Metaspace decoder has no replacement");
        r->to = " ", r->to_len = 1;
        h->strip_first_space = scheme ? strcmp(scheme, "never") != 0 : add_prefix;
        return 0;
    }
    return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the decoder '%s' is not supported", type);
}

/* The bytes token string s decodes to, appended to blob. */
static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
}

/* The byte a "<0xXX>" token stands for (HF's ByteFallback reads either case), or -1. */
static int fallback_byte(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_value(s[3]), lo = hex_value(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int decode_token(const DecodeRules *r, const char *s, size_t n, Tokenizer *t, size_t *blob_len, size_t *blob_cap,
                        NfError *err) {
    if (!nf_grow((void **)&t->blob, blob_cap, *blob_len + n + 1, 1, 1 << 20))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory building the decoder");
    char *o = (char *)t->blob + *blob_len;
    size_t len = 0;
    int byte = r->byte_fallback ? fallback_byte(s, n) : -1;
    if (r->byte_level) {
        for (size_t i = 0; i < n;) {
            size_t cl = utf8_valid_len((const unsigned char *)s + i, n - i);
            uint32_t cp = cl == 1   ? (unsigned char)s[i]
                          : cl == 2 ? ((s[i] & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu)
                                    : 0x110000;
            int b = byte_level_byte(cp);
            if (b < 0) { /* not of the byte alphabet: HF keeps the token's own bytes */
                memcpy(o, s, n);
                len = n;
                break;
            }
            o[len++] = (char)b;
            i += cl;
        }
    } else if (byte >= 0) {
        o[len++] = (char)byte;
    } else {
        for (size_t i = 0; i < n;) {
            if (r->from && n - i >= r->from_len && memcmp(s + i, r->from, r->from_len) == 0) {
                if (!nf_grow((void **)&t->blob, blob_cap, *blob_len + len + r->to_len + (n - i) + 1, 1, 1 << 20))
                    return nf_fail(err, NF_ERR_MEMORY, "out of memory building the decoder");
                o = (char *)t->blob + *blob_len;
                memcpy(o + len, r->to, r->to_len);
                len += r->to_len;
                i += r->from_len;
            } else {
                o[len++] = s[i++];
            }
        }
    }
    *blob_len += len;
    return 0;
}

static bool is_added(const HfTokenizer *h, int id, const AddedToken **a) {
    for (int i = 0; i < h->n_added; i++)
        if (h->added[i].id == id) return *a = &h->added[i], true;
    return false;
}

static int build_decoder(Tokenizer *t, HfTokenizer *h, const json_t *root, bool byte_level, NfError *err) {
    DecodeRules r = {0};
    const json_t *d = json_object_get(root, "decoder");
    if (d && !json_is_null(d) && decoder_part(d, &r, h, err) != 0) return -1;
    if (byte_level != r.byte_level)
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: %s",
                       byte_level ? "a ByteLevel pre-tokenizer needs the ByteLevel decoder"
                                  : "a ByteLevel decoder needs the ByteLevel pre-tokenizer");
    const Bpe *b = &h->bpe;
    size_t blob_len = 0, blob_cap = 0;
    unsigned char *is_added_id = nf_alloc((size_t)b->n_ids, err);
    if (!is_added_id || !(t->piece_start = nf_alloc_array((size_t)b->n_ids, 4, err)) ||
        !(t->piece_len = nf_alloc_array((size_t)b->n_ids, 4, err))) {
        free(is_added_id);
        return -1;
    }
    for (int i = 0; i < h->n_added; i++) is_added_id[h->added[i].id] = 1;
    int rc = 0;
    for (int id = 0; rc == 0 && id < b->n_ids; id++) {
        const char *s = b->strings + b->str[id].start;
        size_t before = blob_len;
        const AddedToken *a;
        if (is_added_id[id] && is_added(h, id, &a)) { /* added tokens decode to their content */
            DecodeRules plain = {0};
            rc = decode_token(&plain, a->content, a->len, t, &blob_len, &blob_cap, err);
        } else {
            rc = decode_token(&r, s, b->str[id].len, t, &blob_len, &blob_cap, err);
        }
        t->piece_start[id] = (uint32_t)before;
        t->piece_len[id] = (uint32_t)(blob_len - before);
        if ((int)t->piece_len[id] > t->max_token_length) t->max_token_length = (int)t->piece_len[id];
        if (!is_added_id[id] && b->byte_fallback && r.byte_fallback && t->piece_len[id] == 1 && b->str[id].len == 6 &&
            memcmp(s, "<0x", 3) == 0 && t->byte_piece[t->blob[before]] < 0)
            t->byte_piece[t->blob[before]] = id, t->n_byte_pieces++;
    }
    free(is_added_id);
    if (rc == 0 && blob_len > UINT32_MAX)
        rc = nf_fail(err, NF_ERR_TOKENIZER, "tokenizer.json: the vocabulary is too large");
    return rc;
}

/* ---- BOS, EOS, end of turn ---------------------------------------------------------------- */

/* A token named by tokenizer_config.json: "<s>" or {"content": "<s>", ...}; -1 when absent or null. */
static int config_token(const json_t *cfg, const char *key, const HfTokenizer *h, int *id, NfError *err) {
    *id = -1;
    const json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer_config.json: \"%s\" is neither a string nor a token", key);
    if ((*id = bpe_find(&h->bpe, json_string_value(v), json_string_length(v))) < 0)
        return nf_fail(err, NF_ERR_TOKENIZER, "tokenizer_config.json: the %s '%s' is not a token", key,
                       json_string_value(v));
    return 0;
}

/* TemplateProcessing's "single": the special token it puts first (*first) and last (*last), or -1. */
static void template_ends(const json_t *root, const HfTokenizer *h, int *first, int *last) {
    *first = *last = -1;
    const json_t *pp = json_object_get(root, "post_processor");
    const char *type = type_of(pp);
    const json_t *single = json_object_get(pp, "single");
    if (!type || strcmp(type, "TemplateProcessing") != 0 || !json_is_array(single) || json_array_size(single) == 0)
        return;
    for (int end = 0; end < 2; end++) {
        const json_t *item = json_array_get(single, end ? json_array_size(single) - 1 : 0);
        const json_t *tok = json_object_get(json_object_get(item, "SpecialToken"), "id");
        if (!json_is_string(tok)) continue;
        int id = bpe_find(&h->bpe, json_string_value(tok), json_string_length(tok));
        if (end)
            *last = id;
        else
            *first = id;
    }
}

static int read_specials(Tokenizer *t, const HfTokenizer *h, const json_t *root, const json_t *cfg, NfError *err) {
    int tmpl_first, tmpl_last;
    template_ends(root, h, &tmpl_first, &tmpl_last);
    if (config_token(cfg, "bos_token", h, &t->bos_id, err) != 0 ||
        config_token(cfg, "eos_token", h, &t->eos_id, err) != 0)
        return -1;
    if (t->bos_id < 0) t->bos_id = tmpl_first;
    if (t->eos_id < 0) t->eos_id = tmpl_last;
    bool dflt_bos = tmpl_first >= 0 && tmpl_first == t->bos_id, dflt_eos = tmpl_last >= 0 && tmpl_last == t->eos_id;
    if (opt_bool(cfg, "add_bos_token", dflt_bos, "tokenizer_config.json", &t->add_bos, err) != 0 ||
        opt_bool(cfg, "add_eos_token", dflt_eos, "tokenizer_config.json", &t->add_eos, err) != 0)
        return -1;
    t->unk_id = h->bpe.unk_id;
    /* no control ids: every token decodes to its text, BOS and EOS too, as HF's decode without
     * skip_special_tokens (generate stops at EOS and the end-of-turn ids before printing them) */
    if (t->eos_id >= 0) t->eot_ids[t->n_eot++] = t->eos_id;
    /* end-of-turn markers of the chat formats generate should stop at */
    static const char *const eot[] = {"<|eot_id|>",    "<|im_end|>", "<|end_of_text|>", "<|endoftext|>", "<|eom_id|>",
                                      "<end_of_turn>", "</s>"};
    for (int i = 0; i < h->n_added; i++)
        for (size_t k = 0; k < sizeof eot / sizeof *eot; k++)
            if (h->added[i].special && strcmp(h->added[i].content, eot[k]) == 0 &&
                !tokenizer_is_eot(t, h->added[i].id) && t->n_eot < TOKENIZER_MAX_EOT)
                t->eot_ids[t->n_eot++] = h->added[i].id;
    return 0;
}

/* ---- loading --------------------------------------------------------------------------- */

static int compare_added(const void *a, const void *b, void *ctx);

/* Added tokens by first byte, longest first, for matching in the text. */
static int index_added(HfTokenizer *h, NfError *err) {
    if (!(h->order = nf_alloc_array((size_t)h->n_added + 1, sizeof(int), err))) return -1;
    for (int i = 0; i < h->n_added; i++) h->order[i] = i;
    /* insertion sort: a few hundred tokens at most in practice */
    for (int i = 1; i < h->n_added; i++) {
        int x = h->order[i], j = i;
        while (j > 0 && compare_added(&h->added[h->order[j - 1]], &h->added[x], NULL) > 0) {
            h->order[j] = h->order[j - 1];
            j--;
        }
        h->order[j] = x;
    }
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < h->n_added && (unsigned char)h->added[h->order[k]].content[0] < b) k++;
        h->by_byte[b] = k;
    }
    return 0;
}

static int compare_added(const void *a, const void *b, void *ctx) {
    (void)ctx;
    const AddedToken *x = a, *y = b;
    unsigned char cx = (unsigned char)x->content[0], cy = (unsigned char)y->content[0];
    if (cx != cy) return cx < cy ? -1 : 1;
    return x->len > y->len ? -1 : x->len < y->len ? 1 : 0;
}

static int load_parts(Tokenizer *t, HfTokenizer *h, const json_t *root, const Doc *doc, const json_t *cfg,
                      NfError *err) {
    bool byte_level = false;
    if (read_pipeline(h, root, &byte_level, err) != 0 || read_model(h, root, doc, byte_level, err) != 0 ||
        index_added(h, err) != 0)
        return -1;
    t->kind = byte_level ? TOKENIZER_HF_BYTE_LEVEL : TOKENIZER_HF_SENTENCEPIECE;
    t->vocab_size = h->bpe.n_ids;
    for (int i = 0; i < 256; i++) t->byte_piece[i] = -1;
    if (build_decoder(t, h, root, byte_level, err) != 0) return -1;
    return read_specials(t, h, root, cfg, err);
}

int hf_tokenizer_load(Tokenizer *t, const char *path, NfError *err) {
    memset(t, 0, sizeof *t);
    HfPaths files;
    if (hf_tokenizer_paths(path, &files, err) != 0) return -1;
    json_t *root = NULL, *cfg = NULL;
    Doc doc = {0};
    int rc = -1;
    HfTokenizer *h = NULL;
    if (load_tokenizer_json(files.json, &doc, &root, err) != 0 ||
        (files.config && load_json(files.config, JSON_DECODE_INT_AS_REAL, &cfg, err) != 0))
        goto done;
    if (!(h = t->hf = nf_alloc(sizeof *h, err))) goto done;
    rc = load_parts(t, h, root, &doc, cfg, err);
    if (rc != 0) nf_prefix(err, NULL, "'%s': ", files.json);
done:
    mapped_file_close(&doc.file);
    json_decref(root);
    json_decref(cfg);
    hf_paths_free(&files);
    if (rc != 0) tokenizer_free(t);
    return rc;
}

int hf_tokenizer_from_tree(Tokenizer *t, const json_t *root, const json_t *cfg, const char *name, NfError *err) {
    memset(t, 0, sizeof *t);
    Doc doc = {0}; /* no text: the vocabulary and merges are read from the tree */
    HfTokenizer *h = t->hf = nf_alloc(sizeof *h, err);
    int rc = h ? load_parts(t, h, root, &doc, cfg, err) : -1;
    if (rc != 0) {
        if (h) nf_prefix(err, NULL, "'%s': ", name);
        tokenizer_free(t);
    }
    return rc;
}

void hf_tokenizer_free(HfTokenizer *h) {
    if (!h) return;
    bpe_free(&h->bpe);
    pretok_free(&h->pipe);
    for (int i = 0; i < h->n_added; i++) free(h->added[i].content);
    free(h->added);
    free(h->order);
    free(h);
}

bool hf_tokenizer_strips_first_space(const HfTokenizer *h) { return h->strip_first_space; }

const Bpe *hf_tokenizer_bpe(const HfTokenizer *h) { return &h->bpe; }

const TextPipeline *hf_tokenizer_pipeline(const HfTokenizer *h) { return &h->pipe; }

int hf_tokenizer_n_added(const HfTokenizer *h) { return h->n_added; }

const char *hf_tokenizer_added(const HfTokenizer *h, int i, int *id, bool *special) {
    *id = h->added[i].id;
    *special = h->added[i].special;
    return h->added[i].content;
}

/* ---- encoding -------------------------------------------------------------------------- */

typedef struct {
    Bpe *bpe;
    TokenList *out;
} WordSink;

static int encode_word(void *ctx, const char *word, size_t n, NfError *err) {
    WordSink *s = ctx;
    return bpe_encode_word(s->bpe, word, n, s->out, err);
}

static bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
static bool is_word_byte(unsigned char c) {
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
}

/* The added token at text[i], longest first; NULL when none. */
static const AddedToken *added_at(const HfTokenizer *h, const char *text, size_t n, size_t i, bool parse_special) {
    unsigned char c = (unsigned char)text[i];
    for (int k = h->by_byte[c]; k < h->by_byte[c + 1]; k++) {
        const AddedToken *a = &h->added[h->order[k]];
        if (a->special && !parse_special) continue;
        if (n - i < a->len || memcmp(text + i, a->content, a->len) != 0) continue;
        if (a->single_word && ((i > 0 && is_word_byte((unsigned char)text[i - 1])) ||
                               (i + a->len < n && is_word_byte((unsigned char)text[i + a->len]))))
            continue;
        return a;
    }
    return NULL;
}

int hf_tokenizer_encode(const Tokenizer *t, const char *text, size_t n, bool parse_special, TokenList *out,
                        NfError *err) {
    HfTokenizer *h = t->hf;
    WordSink sink = {&h->bpe, out};
    size_t seg = 0;
    for (size_t i = 0; i < n; i++) {
        const AddedToken *a = h->by_byte[(unsigned char)text[i]] < h->by_byte[(unsigned char)text[i] + 1]
                                  ? added_at(h, text, n, i, parse_special)
                                  : NULL;
        if (!a) continue;
        size_t end = i + a->len, seg_end = i;
        if (a->lstrip)
            while (seg_end > seg && is_space((unsigned char)text[seg_end - 1])) seg_end--;
        if (a->rstrip)
            while (end < n && is_space((unsigned char)text[end])) end++;
        if (pretok_run(&h->pipe, text + seg, seg_end - seg, seg == 0, encode_word, &sink, err) != 0 ||
            token_list_push(out, a->id, err) != 0)
            return -1;
        seg = end;
        i = end - 1;
    }
    return pretok_run(&h->pipe, text + seg, n - seg, seg == 0, encode_word, &sink, err);
}
