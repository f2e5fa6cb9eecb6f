/* gguf_vocab.c — tokenizers as GGUF tokenizer metadata (see gguf_vocab.h). */
#include "gguf_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "chat_template.h"
#include "hf_tokenizer.h"
#include "pretok.h"
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

typedef struct {
    const char **s;
    uint32_t *len;
    char *pads; /* "[PADn]" names of ids no token names, back to back */
    int32_t *types;
} GptTokens;

static void gpt_tokens_free(GptTokens *t) { free(t->s), free(t->len), free(t->pads), free(t->types); }

static int gpt_tokens(const Tokenizer *tok, GptTokens *t, NfError *err) {
    const Bpe *b = hf_tokenizer_bpe(tok->hf);
    size_t n = (size_t)b->n_ids, unnamed = 0;
    if (!(t->s = nf_alloc_array(n, sizeof *t->s, err)) || !(t->len = nf_alloc_array(n, sizeof *t->len, err)) ||
        !(t->types = nf_alloc_array(n, sizeof *t->types, err)))
        return -1;
    for (size_t i = 0; i < n; i++) unnamed += b->str[i].len == 0;
    if (!(t->pads = nf_alloc(unnamed * 20 + 1, err))) return -1;
    char *pad = t->pads;
    for (size_t i = 0; i < n; i++) {
        t->types[i] = TOKEN_NORMAL;
        t->s[i] = b->strings + b->str[i].start;
        t->len[i] = b->str[i].len;
        if (t->len[i] == 0) { /* as convert_hf_to_gguf.py fills the holes of a vocabulary */
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

static int put_gpt2(GgufWriter *w, const Tokenizer *tok, const char *path, NfError *err) {
    const char *pre = gguf_pre_name(tok, err);
    if (!pre) return -1;
    char *chat = NULL;
    if (chat_template_text(path, &chat, err) != 0) return -1;
    GptTokens t = {0};
    int rc = gpt_tokens(tok, &t, err);
    if (rc == 0) {
        uint64_t n = (uint64_t)hf_tokenizer_bpe(tok->hf)->n_ids;
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
        gguf_put_bool(w, "tokenizer.ggml.add_bos_token", tok->add_bos);
        gguf_put_bool(w, "tokenizer.ggml.add_eos_token", tok->add_eos);
        if (chat) gguf_put_string(w, "tokenizer.chat_template", chat);
    }
    gpt_tokens_free(&t);
    free(chat);
    return rc;
}

int gguf_put_vocab(GgufWriter *w, const Tokenizer *tok, const char *path, NfError *err) {
    switch (tok->kind) {
    case TOKENIZER_BIN: return put_spm(w, tok, err);
    case TOKENIZER_HF_BYTE_LEVEL: return put_gpt2(w, tok, path, err);
    case TOKENIZER_HF_SENTENCEPIECE:
        return nf_fail(err, NF_ERR_TOKENIZER,
                       "--format gguf cannot embed a SentencePiece-style tokenizer.json (Llama 2, Mistral): GGUF's "
                       "'llama' vocabulary needs SentencePiece's scores, which tokenizer.json does not hold; give "
                       "the model's tokenizer.bin, or export --format safetensors");
    }
    return nf_fail(err, NF_ERR_TOKENIZER, "unknown tokenizer kind");
}
