/* gguf_vocab.c — tokenizers as GGUF tokenizer metadata (see gguf_vocab.h). */
#include "gguf_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bpe.h"
#include "chat_template.h"
#include "fileio.h"
#include "hf_tokenizer.h"
#include "model.h"
#include "pretok.h"
#include "utf8.h"
#include "util.h"

/* llama.cpp's token types (llama_token_type) */
enum {
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6
};

/* ---- tokenizer.bin: "llama" ------------------------------------------------------ */

/* SentencePiece spells a space as U+2581 ("▁"); llama2.c's tokenizer.bin uses ' '. */
static char *spm_piece(const unsigned char *s, uint32_t n, uint32_t *out_len) {
    uint32_t spaces = 0;
    for (uint32_t i = 0; i < n; i++) spaces += s[i] == ' ';
    char *o = malloc((size_t)n + 2 * spaces + 1), *q = o;
    if (!o) return NULL;
    for (uint32_t i = 0; i < n; i++)
        if (s[i] == ' ')
            *q++ = (char)0xE2, *q++ = (char)0x96, *q++ = (char)0x81;
        else
            *q++ = (char)s[i];
    *out_len = (uint32_t)(q - o);
    return o;
}

static int put_spm(GgufWriter *w, const Tokenizer *tok, NfError *err) {
    int n = tok->vocab_size, rc = 0;
    char **pieces = calloc((size_t)n, sizeof *pieces);
    uint32_t *lens = malloc((size_t)n * sizeof *lens);
    int32_t *types = malloc((size_t)n * sizeof *types);
    if (!pieces || !lens || !types) rc = nf_fail(err, NF_ERR_MEMORY, "out of memory writing the tokenizer");
    for (int i = 0; rc == 0 && i < n; i++) {
        if (!(pieces[i] = spm_piece(tok->blob + tok->piece_start[i], tok->piece_len[i], &lens[i])))
            rc = nf_fail(err, NF_ERR_MEMORY, "out of memory writing the tokenizer");
        types[i] = i == tok->unk_id ? TOKEN_UNKNOWN : tokenizer_is_control(tok, i) ? TOKEN_CONTROL : TOKEN_NORMAL;
    }
    for (int b = 0; rc == 0 && b < 256; b++)
        if (tok->byte_piece[b] >= 0) types[tok->byte_piece[b]] = TOKEN_BYTE;
    if (rc == 0) {
        gguf_put_string(w, "tokenizer.ggml.model", "llama");
        gguf_put_string_array(w, "tokenizer.ggml.tokens", (uint64_t)n, (const char *const *)pieces, lens);
        gguf_put_f32_array(w, "tokenizer.ggml.scores", (uint64_t)n, tok->scores);
        gguf_put_i32_array(w, "tokenizer.ggml.token_type", (uint64_t)n, types);
        gguf_put_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)tok->bos_id);
        gguf_put_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)tok->eos_id);
        gguf_put_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)tok->unk_id);
        gguf_put_bool(w, "tokenizer.ggml.add_bos_token", tok->add_bos);
        gguf_put_bool(w, "tokenizer.ggml.add_eos_token", tok->add_eos);
    }
    for (int i = 0; pieces && i < n; i++) free(pieces[i]);
    free(pieces), free(lens), free(types);
    return rc;
}

/* ---- the pre-tokenizer's name -------------------------------------------------------- */

/* The pipelines llama.cpp names, as the models' tokenizer.json files spell them. llama.cpp runs its own regexes
 * for each name (llama-vocab.cpp), equal to these, and sets ignore_merges for llama-bpe only. */
typedef struct {
    const char *name;
    bool nfc;            /* the normalizer is NFC (Qwen's), else there is none */
    const char *split;   /* a Split regex before ByteLevel (Isolated, not inverted), or NULL for none */
    bool byte_regex;     /* ByteLevel applies GPT-2's regex itself (use_regex) */
    bool ignore_merges;  /* the BPE model's ignore_merges */
    const char *example; /* for the error message */
} PreName;

static const PreName PRE_NAMES[] = {
    {"llama-bpe", false,
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     false, true, "Llama 3"},
    {"qwen2", true,
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+",
     false, false, "Qwen 2/2.5/3"},
    {"smollm", false, "\\p{N}", true, false, "SmolLM: Digits(individual_digits) then ByteLevel"},
    {"gpt-2", false, NULL, true, false, "GPT-2: ByteLevel alone"},
};

static bool pre_matches(const PreName *p, const TextPipeline *pipe, const Bpe *b) {
    if (p->nfc ? !(pipe->n_norm == 1 && pipe->norm[0].kind == NORM_NFC) : pipe->n_norm != 0) return false;
    if (b->ignore_merges != p->ignore_merges || b->byte_fallback) return false;
    int at = 0;
    if (p->split) {
        const PreStep *s = pipe->n_pre > 0 ? &pipe->pre[0] : NULL;
        if (!s || s->kind != PRE_SPLIT || s->literal || s->invert || s->behavior != SPLIT_ISOLATED ||
            s->pattern_len != strlen(p->split) || memcmp(s->pattern, p->split, s->pattern_len) != 0)
            return false;
        at = 1;
    }
    if (pipe->n_pre != at + 1) return false;
    const PreStep *bl = &pipe->pre[at];
    return bl->kind == PRE_BYTE_LEVEL && !bl->add_prefix_space && (bl->re != NULL) == p->byte_regex;
}

/* A one-line description of the pipeline, for the refusal. */
static void describe(const TextPipeline *pipe, const Bpe *b, char *out, size_t cap) {
    static const char *const norm[] = {"NFC", "NFD", "NFKC", "NFKD", "Prepend", "Replace"};
    static const char *const behavior[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    size_t n = 0;
    out[0] = '\0';
#define ADD(...) (n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, __VA_ARGS__), n = n < cap ? n : cap - 1)
    ADD("normalizer ");
    for (int i = 0; i < pipe->n_norm; i++) ADD("%s%s", i ? "+" : "", norm[pipe->norm[i].kind]);
    ADD("%s; pre-tokenizer ", pipe->n_norm ? "" : "none");
    for (int i = 0; i < pipe->n_pre; i++) {
        const PreStep *s = &pipe->pre[i];
        ADD("%s", i ? " + " : "");
        if (s->kind == PRE_SPLIT)
            ADD("Split(%s '%.*s'%s, %s%s)", s->literal ? "String" : "Regex",
                s->pattern_len > 100 ? 100 : (int)s->pattern_len, s->pattern, s->pattern_len > 100 ? "..." : "",
                behavior[s->behavior], s->invert ? ", invert" : "");
        else if (s->kind == PRE_BYTE_LEVEL)
            ADD("ByteLevel(add_prefix_space=%s, use_regex=%s)", s->add_prefix_space ? "true" : "false",
                s->re ? "true" : "false");
        else
            ADD("Metaspace");
    }
    ADD("%s; ignore_merges=%s", pipe->n_pre ? "" : "none", b->ignore_merges ? "true" : "false");
#undef ADD
}

const char *gguf_pre_name(const Tokenizer *tok, NfError *err) {
    const TextPipeline *pipe = hf_tokenizer_pipeline(tok->hf);
    const Bpe *b = hf_tokenizer_bpe(tok->hf);
    for (size_t i = 0; i < sizeof PRE_NAMES / sizeof *PRE_NAMES; i++)
        if (pre_matches(&PRE_NAMES[i], pipe, b)) return PRE_NAMES[i].name;
    char what[400];
    describe(pipe, b, what, sizeof what);
    nf_fail(err, NF_ERR_TOKENIZER,
            "--format gguf: llama.cpp has no name (tokenizer.ggml.pre) for this tokenizer.json's pipeline (%s); "
            "recognised exactly: llama-bpe (Llama 3), qwen2 (Qwen 2/2.5/3), smollm (SmolLM), gpt-2 (GPT-2)",
            what);
    return NULL;
}

/* ---- byte-level tokenizer.json: "gpt2" ----------------------------------------------- */

/* convert_hf_to_gguf.py's does_token_look_special: added tokens that are control tokens by their spelling even
 * where tokenizer.json does not mark them special (Qwen's <|fim_prefix|>). */
static bool looks_special(const char *s) {
    size_t n = strlen(s);
#define ENDS(a, b) (n >= strlen(a) + strlen(b) && strncmp(s, a, strlen(a)) == 0 && strcmp(s + n - strlen(b), b) == 0)
    bool named =
        strcmp(s, "<pad>") == 0 || strcmp(s, "<mask>") == 0 || strcmp(s, "<2mass>") == 0 || strcmp(s, "[@BOS@]") == 0;
    return named || ENDS("<|", "|>") || ENDS("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || ENDS("<unused", ">");
#undef ENDS
}

/* "[PAD<id>]" at its own id: a hole of the vocabulary, as convert_hf_to_gguf.py names it (and gguf_vocab_load
 * reads it back). */
static bool is_pad(const char *s, uint32_t len, size_t id) {
    char pad[32];
    return (size_t)snprintf(pad, sizeof pad, "[PAD%zu]", id) == len && memcmp(pad, s, len) == 0;
}

typedef struct {
    const char **s;
    uint32_t *len;
    char *pads; /* "[PADn]" names of ids no token names, back to back */
    int32_t *types;
} GptTokens;

static void gpt_tokens_free(GptTokens *t) { free(t->s), free(t->len), free(t->pads), free(t->types); }

/* n: the model's rows, at least the tokenizer's ids; the ids past those are padding. */
static int gpt_tokens(const Tokenizer *tok, size_t n, GptTokens *t, NfError *err) {
    const Bpe *b = hf_tokenizer_bpe(tok->hf);
    size_t unnamed = n - (size_t)b->n_ids;
    if (!(t->s = nf_alloc_array(n, sizeof *t->s, err)) || !(t->len = nf_alloc_array(n, sizeof *t->len, err)) ||
        !(t->types = nf_alloc_array(n, sizeof *t->types, err)))
        return -1;
    for (size_t i = 0; i < (size_t)b->n_ids; i++)
        unnamed += b->str[i].len == 0 || is_pad(b->strings + b->str[i].start, b->str[i].len, i);
    if (!(t->pads = nf_alloc(unnamed * 20 + 1, err))) return -1;
    char *pad = t->pads;
    for (size_t i = 0; i < n; i++) {
        t->types[i] = TOKEN_NORMAL;
        t->s[i] = i < (size_t)b->n_ids ? b->strings + b->str[i].start : "";
        t->len[i] = i < (size_t)b->n_ids ? b->str[i].len : 0;
        if (t->len[i] == 0 || is_pad(t->s[i], t->len[i], i)) { /* as convert_hf_to_gguf.py fills the holes */
            t->s[i] = pad;
            t->len[i] = (uint32_t)sprintf(pad, "[PAD%zu]", i);
            pad += t->len[i] + 1;
            t->types[i] = TOKEN_UNUSED;
        }
    }
    for (int i = 0; i < hf_tokenizer_n_added(tok->hf); i++) {
        int id;
        bool special;
        const char *content = hf_tokenizer_added(tok->hf, i, &id, &special);
        t->types[id] = special || looks_special(content) ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
    }
    return 0;
}

typedef struct {
    int32_t rank, left, right;
} RankedMerge;

static int by_rank(const void *a, const void *b) {
    int32_t x = ((const RankedMerge *)a)->rank, y = ((const RankedMerge *)b)->rank;
    return (x > y) - (x < y);
}

/* One side of a merge into o: a space is written U+0120 as gguf-py writes merges given as pairs (a "a b"
 * string could not hold it). Returns the bytes written. */
static size_t merge_side(const Bpe *b, int id, char *o) {
    const char *s = b->strings + b->str[id].start;
    size_t n = 0;
    for (uint32_t i = 0; i < b->str[id].len; i++)
        if (s[i] == ' ')
            o[n++] = (char)0xC4, o[n++] = (char)0xA0;
        else
            o[n++] = s[i];
    return n;
}

/* The merges in rank order as "left right" strings. A pair listed twice holds its last rank (HF's), the one
 * written; llama.cpp would keep the first of two. */
static int put_merges(GgufWriter *w, const Bpe *b, NfError *err) {
    size_t n = 0, bytes = 0;
    for (uint32_t i = 0; i <= b->merge_mask && b->merge_keys; i++) n += b->merge_keys[i] != 0;
    RankedMerge *m = nf_alloc_array(n ? n : 1, sizeof *m, err);
    if (!m) return -1;
    size_t k = 0;
    for (uint32_t i = 0; i <= b->merge_mask && b->merge_keys; i++)
        if (b->merge_keys[i]) {
            uint64_t key = b->merge_keys[i] - 1;
            m[k] = (RankedMerge){b->merge_rank[i], (int32_t)(key >> 32), (int32_t)(uint32_t)key};
            bytes += 2 * ((size_t)b->str[m[k].left].len + b->str[m[k].right].len) + 2;
            k++;
        }
    qsort(m, n, sizeof *m, by_rank);
    char *buf = nf_alloc(bytes + 1, err), *at = buf;
    const char **s = buf ? nf_alloc_array(n ? n : 1, sizeof *s, err) : NULL;
    uint32_t *len = s ? nf_alloc_array(n ? n : 1, sizeof *len, err) : NULL;
    int rc = len ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        s[i] = at;
        at += merge_side(b, m[i].left, at);
        *at++ = ' ';
        at += merge_side(b, m[i].right, at);
        len[i] = (uint32_t)(at - s[i]);
    }
    if (rc == 0) gguf_put_string_array(w, "tokenizer.ggml.merges", (uint64_t)n, s, len);
    free(m), free(buf), free(s), free(len);
    return rc;
}

/* The first end-of-turn id that is not EOS (<|eot_id|>, <|im_end|>), or -1. */
static int end_of_turn(const Tokenizer *tok) {
    for (int i = 0; i < tok->n_eot; i++)
        if (tok->eot_ids[i] != tok->eos_id) return tok->eot_ids[i];
    return -1;
}

static int put_gpt2(GgufWriter *w, const Tokenizer *tok, const char *path, int rows, NfError *err) {
    const char *pre = gguf_pre_name(tok, err);
    if (!pre) return -1;
    char *chat = NULL;
    if (chat_template_text(path, &chat, err) != 0) return -1;
    GptTokens t = {0};
    uint64_t n = (uint64_t)rows;
    int rc = gpt_tokens(tok, (size_t)n, &t, err);
    if (rc == 0) {
        gguf_put_string(w, "tokenizer.ggml.model", "gpt2");
        gguf_put_string(w, "tokenizer.ggml.pre", pre);
        gguf_put_string_array(w, "tokenizer.ggml.tokens", n, t.s, t.len);
        gguf_put_i32_array(w, "tokenizer.ggml.token_type", n, t.types);
        rc = put_merges(w, hf_tokenizer_bpe(tok->hf), err);
    }
    if (rc == 0) {
        if (tok->bos_id >= 0) gguf_put_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)tok->bos_id);
        if (tok->eos_id >= 0) gguf_put_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)tok->eos_id);
        if (tok->unk_id >= 0) gguf_put_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)tok->unk_id);
        if (end_of_turn(tok) >= 0) gguf_put_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)end_of_turn(tok));
        gguf_put_bool(w, "tokenizer.ggml.add_bos_token", tok->add_bos);
        gguf_put_bool(w, "tokenizer.ggml.add_eos_token", tok->add_eos);
        if (chat) gguf_put_string(w, "tokenizer.chat_template", chat);
    }
    gpt_tokens_free(&t);
    free(chat);
    return rc;
}

int gguf_vocab_fits(const Tokenizer *tok, int rows, NfError *err) {
    if (tok->kind == TOKENIZER_HF_BYTE_LEVEL && tok->vocab_size < rows) return 0; /* padded, as Qwen's are */
    return tokenizer_check_vocab(tok, rows, err);
}

int gguf_put_vocab(GgufWriter *w, const Tokenizer *tok, const char *path, int rows, NfError *err) {
    if (gguf_vocab_fits(tok, rows, err) != 0) return -1;
    switch (tok->kind) {
    case TOKENIZER_BIN: return put_spm(w, tok, err);
    case TOKENIZER_HF_BYTE_LEVEL: return put_gpt2(w, tok, path, rows, err);
    case TOKENIZER_HF_SENTENCEPIECE:
        return nf_fail(err, NF_ERR_TOKENIZER,
                       "--format gguf cannot embed a SentencePiece-style tokenizer.json (Llama 2, Mistral): GGUF's "
                       "'llama' vocabulary needs SentencePiece's scores, which tokenizer.json does not hold; give "
                       "the model's tokenizer.bin, or export --format safetensors");
    }
    return nf_fail(err, NF_ERR_TOKENIZER, "unknown tokenizer kind");
}

/* ---- reading: a GGUF's vocabulary back into a Tokenizer ------------------------------ */

/* tokenizer.ggml.model (into model[16]) and tokenizer.ggml.tokens, checked. */
static int vocab_keys(const GgufFile *g, const char *path, char model[16], const GgufKv **tokens, NfError *err) {
    const GgufKv *m = gguf_find(g, "tokenizer.ggml.model");
    *tokens = gguf_find(g, "tokenizer.ggml.tokens");
    const char *s;
    uint64_t len = 0;
    if (m && m->type == GGUF_STRING) gguf_string_at(m->value, &s, &len, NULL);
    if (!m || m->type != GGUF_STRING || len >= 16 || !*tokens || (*tokens)->type != GGUF_ARRAY ||
        (*tokens)->array_type != GGUF_STRING)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s' holds no tokenizer (tokenizer.ggml.model and tokens)", path);
    memcpy(model, s, len);
    model[len] = '\0';
    if ((*tokens)->array_count < 3 || (*tokens)->array_count > NF_MAX_VOCAB)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s': %llu tokens; a vocabulary holds 3 to %d", path,
                       (unsigned long long)(*tokens)->array_count, NF_MAX_VOCAB);
    return 0;
}

/* An integer array key of n values (token types), or NULL when absent; -1 when malformed. */
static int i32_array(const GgufFile *g, const char *key, uint64_t n, const unsigned char **at, const char *path,
                     NfError *err) {
    const GgufKv *kv = gguf_find(g, key);
    *at = NULL;
    if (!kv) return 0;
    if (kv->type != GGUF_ARRAY || (kv->array_type != GGUF_INT32 && kv->array_type != GGUF_UINT32) ||
        kv->array_count != n)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s': %s does not match the tokens", path, key);
    *at = kv->value;
    return 0;
}

static int32_t i32_at(const unsigned char *at, uint64_t i) {
    int32_t v;
    memcpy(&v, at + 4 * i, 4);
    return v;
}

/* The "llama" (SentencePiece) vocabulary as a llama2.c tokenizer.bin image: "▁" back to the space
 * tokenizer.bin uses, the scores kept. tokenizer.bin's ids 0, 1, 2 are <unk>, BOS, EOS: a vocabulary with
 * others is refused. */
static int spm_image(const GgufFile *g, const char *path, const GgufKv *tokens, unsigned char **img, size_t *size,
                     NfError *err) {
    const GgufKv *scores = gguf_find(g, "tokenizer.ggml.scores");
    if (scores && (scores->type != GGUF_ARRAY || scores->array_type != GGUF_FLOAT32 ||
                   scores->array_count != tokens->array_count))
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s': tokenizer.ggml.scores does not match the tokens", path);
    static const char *const ids[3] = {"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
                                       "tokenizer.ggml.eos_token_id"};
    for (int i = 0; i < 3; i++) {
        const GgufKv *kv = gguf_find(g, ids[i]);
        uint64_t v;
        if (kv && (gguf_kv_uint(kv, &v) != 0 || v != (uint64_t)i))
            return nf_fail(err, NF_ERR_TOKENIZER, "'%s': %s is not %d, as a tokenizer.bin's must be", path, ids[i], i);
    }
    uint64_t n = tokens->array_count, bytes = 4;
    const unsigned char *at = tokens->value;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t len;
        gguf_string_at(at, &s, &len, &at);
        if (len > 4096) /* a piece that long is no SentencePiece piece */
            return nf_fail(err, NF_ERR_TOKENIZER, "'%s': token %llu is %llu bytes long", path, (unsigned long long)i,
                           (unsigned long long)len);
        bytes += 8 + len;
    }
    unsigned char *o = nf_alloc((size_t)bytes, err), *p = o + 4;
    if (!o) return -1;
    int32_t max_len = 0;
    at = tokens->value;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t len;
        gguf_string_at(at, &s, &len, &at);
        float score = 0.0f;
        if (scores) memcpy(&score, scores->value + 4 * i, 4);
        unsigned char *piece = p + 8;
        int32_t k = 0;
        for (uint64_t j = 0; j < len; j++)
            if (j + 2 < len && (unsigned char)s[j] == 0xE2 && (unsigned char)s[j + 1] == 0x96 &&
                (unsigned char)s[j + 2] == 0x81)
                piece[k++] = ' ', j += 2;
            else
                piece[k++] = (unsigned char)s[j];
        memcpy(p, &score, 4);
        memcpy(p + 4, &k, 4);
        p = piece + k;
        max_len = k > max_len ? k : max_len;
    }
    memcpy(o, &max_len, 4);
    *img = o;
    *size = (size_t)(p - o);
    return 0;
}

int gguf_vocab_write_bin(const GgufFile *g, const char *path, const char *out, int *written, NfError *err) {
    char model[16];
    const GgufKv *tokens;
    if (vocab_keys(g, path, model, &tokens, err) != 0) return -1;
    if (strcmp(model, "llama") != 0)
        return nf_fail(err, NF_ERR_TOKENIZER,
                       "'%s' has a '%s' tokenizer; only SentencePiece ('llama') ones become a tokenizer.bin", path,
                       model);
    unsigned char *img;
    size_t size;
    if (spm_image(g, path, tokens, &img, &size, err) != 0) return -1;
    AtomicFile f;
    int rc = atomic_file_open(&f, out, err);
    if (rc == 0 && atomic_file_write(&f, img, size, err) != 0) {
        atomic_file_abort(&f);
        rc = -1;
    } else if (rc == 0) {
        rc = atomic_file_commit(&f, err);
    }
    free(img);
    if (rc == 0) *written = (int)tokens->array_count;
    return rc;
}

/* The pipeline llama.cpp runs for a tokenizer.ggml.pre name, as a tokenizer.json's pre-tokenizer. */
static json_t *pre_tokenizer_json(const PreName *p) {
    json_t *byte_level = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets",
                                   1, "use_regex", p->byte_regex);
    if (!p->split) return byte_level;
    json_t *split = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", p->split, "behavior",
                              "Isolated", "invert", 0);
    return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", split, byte_level);
}

/* Whether s[0..len) is UTF-8 without NUL, as jansson's strings and keys must be (a gpt2 vocabulary spells every
 * token in GPT-2's byte alphabet, so only a damaged file fails). */
static bool valid_utf8(const char *s, uint64_t len) {
    for (uint64_t i = 0; i < len;) {
        size_t n = s[i] ? utf8_valid_len((const unsigned char *)s + i, (size_t)(len - i)) : 0;
        if (n == 0) return false;
        i += n;
    }
    return true;
}

/* The "gpt2" vocabulary as the tokenizer.json llama.cpp's converter read it: tokens by id (those of type
 * control or user-defined as added tokens, special for control, as convert_hf_to_gguf.py typed them; unused
 * "[PAD<id>]" fillers left unnamed), the merges in rank order, the pipeline tokenizer.ggml.pre names;
 * BOS/EOS and add_bos/add_eos as a tokenizer_config.json. */
static int gpt2_trees(const GgufFile *g, const char *path, const GgufKv *tokens, const PreName *pre, json_t **root,
                      json_t **cfg, NfError *err) {
    const unsigned char *types;
    uint64_t n = tokens->array_count;
    if (i32_array(g, "tokenizer.ggml.token_type", n, &types, path, err) != 0) return -1;
    const GgufKv *merges = gguf_find(g, "tokenizer.ggml.merges");
    if (!merges || merges->type != GGUF_ARRAY || merges->array_type != GGUF_STRING)
        return nf_fail(err, NF_ERR_TOKENIZER, "'%s': a 'gpt2' tokenizer without tokenizer.ggml.merges", path);
    json_t *vocab = json_object(), *added = json_array(), *merge_list = json_array();
    *root =
        json_pack("{s:o, s:o, s:{s:s, s:o, s:o, s:b, s:b}, s:o, s:{s:s}}", "normalizer",
                  pre->nfc ? json_pack("{s:s}", "type", "NFC") : json_null(), "pre_tokenizer", pre_tokenizer_json(pre),
                  "model", "type", "BPE", "vocab", vocab, "merges", merge_list, "ignore_merges", pre->ignore_merges,
                  "byte_fallback", 0, "added_tokens", added, "decoder", "type", "ByteLevel");
    *cfg = json_object();
    if (!*root || !*cfg) return nf_fail(err, NF_ERR_MEMORY, "out of memory reading the tokenizer");
    const unsigned char *at = tokens->value;
    bool failed = false;
    for (uint64_t i = 0; i < n && !failed; i++) {
        const char *s;
        uint64_t len;
        gguf_string_at(at, &s, &len, &at);
        int32_t type = types ? i32_at(types, i) : TOKEN_NORMAL;
        /* unused ids ("[PAD<id>]") keep their names, so that the tokenizer has the file's count of ids (the
         * model's rows): no merge makes them, so no text encodes to them */
        if (!valid_utf8(s, len))
            return nf_fail(err, NF_ERR_TOKENIZER, "'%s': token %llu is not valid UTF-8", path, (unsigned long long)i);
        json_t *str = json_stringn(s, (size_t)len);
        if (type == TOKEN_CONTROL || type == TOKEN_USER_DEFINED)
            failed = json_array_append_new(added, json_pack("{s:I, s:o, s:b}", "id", (json_int_t)i, "content", str,
                                                            "special", type == TOKEN_CONTROL)) != 0;
        else {
            char *key = str ? strndup(s, (size_t)len) : NULL;
            failed = !key || json_object_set_new(vocab, key, json_integer((json_int_t)i)) != 0;
            free(key);
            json_decref(str);
        }
    }
    at = merges->value;
    for (uint64_t i = 0; i < merges->array_count && !failed; i++) {
        const char *s;
        uint64_t len;
        gguf_string_at(at, &s, &len, &at);
        if (!valid_utf8(s, len))
            return nf_fail(err, NF_ERR_TOKENIZER, "'%s': merge %llu is not valid UTF-8", path, (unsigned long long)i);
        failed = json_array_append_new(merge_list, json_stringn(s, (size_t)len)) != 0;
    }
    static const char *const specials[2][3] = {{"tokenizer.ggml.bos_token_id", "bos_token", "add_bos_token"},
                                               {"tokenizer.ggml.eos_token_id", "eos_token", "add_eos_token"}};
    for (int k = 0; k < 2 && !failed; k++) {
        char add_key[64];
        snprintf(add_key, sizeof add_key, "tokenizer.ggml.%s", specials[k][2]);
        const GgufKv *id = gguf_find(g, specials[k][0]), *add = gguf_find(g, add_key);
        uint64_t v;
        if (id && (gguf_kv_uint(id, &v) != 0 || v >= n))
            return nf_fail(err, NF_ERR_TOKENIZER, "'%s': %s is not a token id", path, specials[k][0]);
        if (id) {
            const char *s;
            uint64_t len;
            at = tokens->value;
            for (uint64_t i = 0; i <= v; i++) gguf_string_at(at, &s, &len, &at);
            failed = json_object_set_new(*cfg, specials[k][1], json_stringn(s, (size_t)len)) != 0;
        }
        if (add && add->type == GGUF_BOOL)
            failed = failed || json_object_set_new(*cfg, specials[k][2], json_boolean(add->value[0] != 0)) != 0;
    }
    return failed ? nf_fail(err, NF_ERR_MEMORY, "out of memory reading the tokenizer") : 0;
}

static int load_gpt2(Tokenizer *t, const GgufFile *g, const char *path, const GgufKv *tokens, NfError *err) {
    uint64_t len;
    const char *s = NULL;
    const GgufKv *kv = gguf_find(g, "tokenizer.ggml.pre");
    if (kv && kv->type == GGUF_STRING) gguf_string_at(kv->value, &s, &len, NULL);
    const PreName *pre = NULL;
    for (size_t i = 0; s && i < sizeof PRE_NAMES / sizeof *PRE_NAMES; i++)
        if (strlen(PRE_NAMES[i].name) == len && memcmp(PRE_NAMES[i].name, s, len) == 0) pre = &PRE_NAMES[i];
    if (!pre)
        return nf_fail(err, NF_ERR_TOKENIZER,
                       "'%s': tokenizer.ggml.pre '%.*s' names a pre-tokenizer NeuralForge does not reproduce "
                       "(llama-bpe, qwen2, smollm, gpt-2); give --tokenizer",
                       path, s ? (int)(len < 40 ? len : 40) : 0, s ? s : "");
    json_t *root = NULL, *cfg = NULL;
    int rc = gpt2_trees(g, path, tokens, pre, &root, &cfg, err);
    if (rc == 0) rc = hf_tokenizer_from_tree(t, root, cfg, path, err);
    json_decref(root);
    json_decref(cfg);
    uint64_t eot;
    kv = gguf_find(g, "tokenizer.ggml.eot_token_id");
    if (rc == 0 && kv && gguf_kv_uint(kv, &eot) == 0 && eot < (uint64_t)t->vocab_size &&
        !tokenizer_is_eot(t, (int)eot) && t->n_eot < TOKENIZER_MAX_EOT)
        t->eot_ids[t->n_eot++] = (int)eot;
    return rc;
}

int gguf_vocab_load(Tokenizer *t, const char *path, NfError *err) {
    memset(t, 0, sizeof *t);
    GgufFile g;
    if (gguf_open(&g, path, err) != 0) return -1;
    char model[16];
    const GgufKv *tokens;
    int rc = vocab_keys(&g, path, model, &tokens, err);
    if (rc == 0 && strcmp(model, "llama") == 0) {
        unsigned char *img = NULL;
        size_t size;
        rc = spm_image(&g, path, tokens, &img, &size, err);
        if (rc == 0) rc = tokenizer_load_image(t, img, size, path, err);
        const GgufKv *add_bos = gguf_find(&g, "tokenizer.ggml.add_bos_token");
        if (rc == 0 && add_bos && add_bos->type == GGUF_BOOL) t->add_bos = add_bos->value[0] != 0;
        free(img);
    } else if (rc == 0 && strcmp(model, "gpt2") == 0) {
        rc = load_gpt2(t, &g, path, tokens, err);
    } else if (rc == 0) {
        rc = nf_fail(err, NF_ERR_TOKENIZER,
                     "'%s' has a '%s' tokenizer; NeuralForge reads 'llama' (SentencePiece) and 'gpt2' (BPE) ones", path,
                     model);
    }
    gguf_close(&g);
    return rc;
}

int gguf_vocab_chat_template(const char *path, char **jinja, NfError *err) {
    *jinja = NULL;
    GgufFile g;
    if (gguf_open(&g, path, err) != 0) return -1;
    const GgufKv *kv = gguf_find(&g, "tokenizer.chat_template");
    int rc = 0;
    if (kv && kv->type == GGUF_STRING) {
        const char *s;
        uint64_t len;
        gguf_string_at(kv->value, &s, &len, NULL);
        if (!(*jinja = strndup(s, (size_t)len))) rc = nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    gguf_close(&g);
    return rc;
}

bool gguf_vocab_present(const char *path) {
    GgufFile g;
    NfError ignored = {0};
    if (gguf_open(&g, path, &ignored) != 0) return false;
    bool present = gguf_find(&g, "tokenizer.ggml.model") != NULL;
    gguf_close(&g);
    return present;
}
