/* tokenizer.c — the Tokenizer front: dispatching on the kind of file, loading
 * tokenizer.bin, SentencePiece-exact BPE encoding for it, and decoding for
 * every kind (hf_tokenizer.c fills the same per-id bytes for tokenizer.json). */
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "heap.h"
#include "hf_tokenizer.h"
#include "utf8.h"
#include "util.h"

/* ---- loading ---------------------------------------------------------------- */

/* tokenizer.bin's control ids, as llama2.c fixes them */
enum { BIN_UNK = 0, BIN_BOS = 1, BIN_EOS = 2 };

static int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte a "<0xXX>" piece stands for, or -1 for any other piece. */
static int byte_piece_value(const unsigned char *p, uint32_t len) {
    if (len != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
    int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

int tokenizer_find(const Tokenizer *t, const char *s, size_t n) {
    if (!t->lookup) return -1;
    uint32_t slot = nf_fnv1a32(s, n) & t->lookup_mask;
    for (;;) {
        int32_t id = t->lookup[slot];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && memcmp(t->blob + t->piece_start[id], s, n) == 0) return id;
        slot = (slot + 1) & t->lookup_mask;
    }
}

static int build_lookup(Tokenizer *t, NfError *err) {
    uint32_t size = 16;
    while (size < 2u * (uint32_t)t->vocab_size) size *= 2;
    t->lookup = malloc(size * sizeof(int32_t));
    if (!t->lookup) return nf_fail(err, NF_ERR_MEMORY, "cannot allocate the tokenizer's lookup table");
    memset(t->lookup, 0xFF, size * sizeof(int32_t));
    t->lookup_mask = size - 1;
    for (int i = 0; i < 256; i++) t->byte_piece[i] = -1;
    for (int id = 0; id < t->vocab_size; id++) {
        const unsigned char *p = t->blob + t->piece_start[id];
        int byte = byte_piece_value(p, t->piece_len[id]);
        if (byte >= 0) {
            if (t->byte_piece[byte] < 0) t->byte_piece[byte] = id, t->n_byte_pieces++;
            continue;
        }
        /* <unk>, BOS and EOS are control pieces: text never matches them */
        if (id <= BIN_EOS) continue;
        if (tokenizer_find(t, (const char *)p, t->piece_len[id]) >= 0) continue; /* first spelling wins */
        uint32_t slot = nf_fnv1a32((const char *)p, t->piece_len[id]) & t->lookup_mask;
        while (t->lookup[slot] >= 0) slot = (slot + 1) & t->lookup_mask;
        t->lookup[slot] = id;
    }
    return 0;
}

/* Parses a tokenizer.bin image (file contents) into t. */
static int tokenizer_parse(Tokenizer *t, const unsigned char *data, size_t size, const char *path, NfError *err) {
    int rc = -1;
    const unsigned char *p = data, *end = data + size;
    int32_t mtl;
    if (size < 4) {
        nf_fail(err, NF_ERR_TOKENIZER, "tokenizer file '%s' is %s", path, size ? "truncated" : "empty");
        goto done;
    }
    memcpy(&mtl, p, 4);
    p += 4;
    if (mtl < 1 || mtl > 65536) {
        nf_fail(err, NF_ERR_TOKENIZER, "tokenizer file '%s' has an invalid max_token_length %d", path, mtl);
        goto done;
    }
    t->max_token_length = mtl;
    /* First pass: count and check every record; nothing is allocated from header values. */
    int count = 0;
    size_t blob_bytes = 0;
    for (const unsigned char *q = p; q < end; count++) {
        float score;
        int32_t len;
        if (end - q < 8) {
            nf_fail(err, NF_ERR_TOKENIZER, "tokenizer file '%s' is truncated in piece %d", path, count);
            goto done;
        }
        memcpy(&score, q, 4);
        memcpy(&len, q + 4, 4);
        q += 8;
        if (!isfinite(score) || len < 0 || len > mtl || end - q < len) {
            nf_fail(err, NF_ERR_TOKENIZER, "tokenizer file '%s' has a corrupt piece %d (length %d, max %d)", path,
                    count, len, mtl);
            goto done;
        }
        if (count >= (1 << 22)) {
            nf_fail(err, NF_ERR_TOKENIZER, "tokenizer file '%s' has more than %d pieces", path, 1 << 22);
            goto done;
        }
        q += len;
        blob_bytes += (size_t)len;
    }
    if (count < 3) {
        nf_fail(err, NF_ERR_TOKENIZER, "tokenizer file '%s' has %d pieces; <unk>, BOS and EOS need at least 3", path,
                count);
        goto done;
    }
    t->vocab_size = count;
    if (!(t->blob = nf_alloc(blob_bytes, err)) || !(t->piece_start = nf_alloc_array(count, 4, err)) ||
        !(t->piece_len = nf_alloc_array(count, 4, err)) || !(t->scores = nf_alloc_array(count, 4, err)))
        goto done;
    size_t offset = 0;
    for (int id = 0; id < count; id++) {
        int32_t len;
        memcpy(&t->scores[id], p, 4);
        memcpy(&len, p + 4, 4);
        p += 8;
        memcpy(t->blob + offset, p, (size_t)len);
        t->piece_start[id] = (uint32_t)offset;
        t->piece_len[id] = (uint32_t)len;
        offset += (size_t)len;
        p += len;
    }
    rc = build_lookup(t, err);
    if (rc == 0) {
        t->kind = TOKENIZER_BIN;
        t->unk_id = BIN_UNK, t->bos_id = BIN_BOS, t->eos_id = BIN_EOS;
        t->add_bos = true, t->add_eos = false;
        t->eot_ids[t->n_eot++] = BIN_EOS;
    }
done:
    if (rc != 0) tokenizer_free(t);
    return rc;
}

/* The built-in byte-level vocabulary: <unk>, BOS, EOS and the 256 byte pieces,
 * laid out as a tokenizer.bin image so it goes through the same parser. */
static unsigned char *byte_vocabulary_image(size_t *size) {
    static const char *const specials[3] = {"<unk>", "\n<s>\n", "\n</s>\n"};
    unsigned char *img = malloc(4 + 259 * (8 + 6)), *p = img;
    if (!img) return NULL;
    int32_t mtl = 6;
    memcpy(p, &mtl, 4);
    p += 4;
    for (int id = 0; id < 259; id++) {
        char piece[8];
        if (id < 3)
            snprintf(piece, sizeof piece, "%s", specials[id]);
        else
            snprintf(piece, sizeof piece, "<0x%02X>", id - 3);
        float score = 0.0f;
        int32_t len = (int32_t)strlen(piece);
        memcpy(p, &score, 4);
        memcpy(p + 4, &len, 4);
        memcpy(p + 8, piece, (size_t)len);
        p += 8 + len;
    }
    *size = (size_t)(p - img);
    return img;
}

/* A directory (an HF model directory) or a file named *.json is a tokenizer.json. */
bool tokenizer_path_is_hf(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return true;
    size_t n = strlen(path);
    return n >= 5 && strcmp(path + n - 5, ".json") == 0;
}

int tokenizer_load_image(Tokenizer *t, const unsigned char *data, size_t size, const char *name, NfError *err) {
    memset(t, 0, sizeof *t);
    return tokenizer_parse(t, data, size, name, err);
}

int tokenizer_load(Tokenizer *t, const char *path, NfError *err) {
    memset(t, 0, sizeof *t);
    if (tokenizer_path_is_hf(path)) return hf_tokenizer_load(t, path, err);
    if (gguf_is_file(path)) return gguf_vocab_load(t, path, err);
    if (strcmp(path, TOKENIZER_BUILTIN_BYTES) == 0) {
        size_t size;
        unsigned char *img = byte_vocabulary_image(&size);
        if (!img) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        int rc = tokenizer_parse(t, img, size, path, err);
        free(img);
        return rc;
    }
    MappedFile f;
    if (mapped_file_open(&f, path, "tokenizer", err) != 0) return -1;
    int rc = tokenizer_parse(t, f.data, f.size, path, err);
    mapped_file_close(&f);
    return rc;
}

int tokenizer_check_vocab(const Tokenizer *t, int model_vocab_size, NfError *err) {
    /* a tokenizer.json's model may have spare rows past its last id (Qwen: 151,669 ids, 151,936 rows) */
    if (t->hf && t->vocab_size < model_vocab_size) return 0;
    if (t->hf && t->vocab_size > model_vocab_size)
        return nf_fail(err, NF_ERR_TOKENIZER, "the tokenizer has ids up to %d but the model's vocab_size is %d",
                       t->vocab_size - 1, model_vocab_size);
    if (t->vocab_size != model_vocab_size)
        return nf_fail(err, NF_ERR_TOKENIZER, "the tokenizer has %d pieces but the model's vocab_size is %d",
                       t->vocab_size, model_vocab_size);
    return 0;
}

static int hash_file(const char *path, uint64_t *h, NfError *err) {
    MappedFile f;
    if (mapped_file_open(&f, path, "tokenizer", err) != 0) return -1;
    *h = nf_fnv1a64(*h, f.data, f.size);
    mapped_file_close(&f);
    return 0;
}

int tokenizer_hash(const char *path, uint64_t *h, NfError *err) {
    *h = NF_FNV1A64_INIT;
    if (strcmp(path, TOKENIZER_BUILTIN_BYTES) == 0) {
        *h = nf_fnv1a64(*h, path, strlen(path));
        return 0;
    }
    if (!tokenizer_path_is_hf(path)) return hash_file(path, h, err);
    HfPaths files;
    if (hf_tokenizer_paths(path, &files, err) != 0) return -1;
    int rc = hash_file(files.json, h, err);
    if (rc == 0 && files.config) rc = hash_file(files.config, h, err);
    hf_paths_free(&files);
    return rc;
}

const char *tokenizer_kind_name(TokenizerKind kind) {
    switch (kind) {
    case TOKENIZER_HF_BYTE_LEVEL: return "hf_byte_level_bpe";
    case TOKENIZER_HF_SENTENCEPIECE: return "hf_sentencepiece_bpe";
    case TOKENIZER_BIN: break;
    }
    return "sentencepiece_bin";
}

unsigned tokenizer_default_flags(const Tokenizer *t) {
    return (t->add_bos ? TOKENIZE_BOS : 0u) | (t->add_eos ? TOKENIZE_EOS : 0u);
}

bool tokenizer_is_eot(const Tokenizer *t, int id) {
    for (int i = 0; i < t->n_eot; i++)
        if (t->eot_ids[i] == id) return true;
    return false;
}

void tokenizer_free(Tokenizer *t) {
    hf_tokenizer_free(t->hf);
    free(t->blob);
    free(t->piece_start);
    free(t->piece_len);
    free(t->scores);
    free(t->lookup);
    memset(t, 0, sizeof *t);
}

/* ---- token lists -------------------------------------------------------------- */

void token_list_free(TokenList *l) {
    free(l->ids);
    memset(l, 0, sizeof *l);
}

int token_list_push(TokenList *l, int id, NfError *err) {
    if (!nf_grow((void **)&l->ids, &l->cap, l->len + 1, sizeof *l->ids, 256))
        return nf_fail(err, NF_ERR_MEMORY, "cannot grow a token list past %zu ids", l->cap);
    l->ids[l->len++] = id;
    return 0;
}

/* ---- encoding ----------------------------------------------------------------- */

/* The text the encoder works on: the dummy-prefix space, then the text's
 * bytes unchanged. An invalid UTF-8 byte stays a symbol of its own (byte
 * fallback, as llama2.c's run.c does) and U+2581 stays itself, so every byte
 * sequence decodes back to itself; SentencePiece instead reads them as U+FFFD
 * and a space, which loses the bytes (docs/formats.md, Encoding). */
static char *normalize(const char *text, size_t n, size_t *out_len, NfError *err) {
    char *out = nf_alloc(n + 2, err);
    if (!out) return NULL;
    out[0] = ' ';
    memcpy(out + 1, text, n);
    *out_len = n + 1;
    return out;
}

typedef struct {
    uint32_t start, len; /* bytes of the normalized text */
    int prev, next;      /* neighbours in the live list, -1 at the ends */
    int id;              /* vocabulary id of the whole symbol, -1 if none */
} Symbol;

typedef struct {
    float score;
    int left, right; /* symbol indices */
    uint32_t len;    /* combined length when queued: stale if it changed */
    int id;          /* id of the merged piece */
} Candidate;

/* Max-heap order: higher score first, then the leftmost pair. */
static bool before(const Candidate *a, const Candidate *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

NF_HEAP_TYPE(Heap, Candidate);
NF_HEAP_FUNCS(heap, Heap, Candidate, before)

/* Queues the merge of symbols left and right if their concatenation is a piece. */
static int queue_pair(const Tokenizer *t, const char *text, const Symbol *sym, int left, int right, Heap *h,
                      NfError *err) {
    if (left < 0 || right < 0) return 0;
    uint32_t len = sym[left].len + sym[right].len;
    if (len > (uint32_t)t->max_token_length) return 0;
    int id = tokenizer_find(t, text + sym[left].start, len);
    if (id < 0) return 0;
    if (!heap_push(h, (Candidate){t->scores[id], left, right, len, id}))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory in the tokenizer");
    return 0;
}

/* tokenizer.bin's encoder on text[0..n) (no BOS/EOS). */
static int bin_encode(const Tokenizer *t, const char *text, size_t n, TokenList *out, NfError *err) {
    if (n > 0) {
        size_t norm_len;
        char *norm = normalize(text, n, &norm_len, err);
        if (!norm) return -1;
        Symbol *sym = nf_alloc_array(norm_len, sizeof(Symbol), err);
        Heap heap = {0};
        int rc = sym ? 0 : -1;
        /* one symbol per UTF-8 character, and per byte that is not part of one */
        int n_sym = 0;
        for (size_t i = 0; rc == 0 && i < norm_len; n_sym++) {
            uint32_t len = (uint32_t)utf8_valid_len((const unsigned char *)norm + i, norm_len - i);
            if (len == 0) len = 1;
            sym[n_sym] = (Symbol){(uint32_t)i, len, n_sym - 1, -1, tokenizer_find(t, norm + i, len)};
            if (n_sym > 0) sym[n_sym - 1].next = n_sym;
            i += len;
        }
        for (int i = 0; rc == 0 && i + 1 < n_sym; i++) rc = queue_pair(t, norm, sym, i, i + 1, &heap, err);
        while (rc == 0 && heap.len > 0) {
            Candidate c = heap_pop(&heap);
            Symbol *l = &sym[c.left], *r = &sym[c.right];
            if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.len) continue; /* stale */
            l->len += r->len;
            l->id = c.id;
            l->next = r->next;
            if (r->next >= 0) sym[r->next].prev = c.left;
            r->len = 0;
            rc = queue_pair(t, norm, sym, l->prev, c.left, &heap, err);
            if (rc == 0) rc = queue_pair(t, norm, sym, c.left, l->next, &heap, err);
        }
        for (int i = 0; rc == 0 && i >= 0 && n_sym > 0; i = sym[i].next) {
            if (sym[i].id >= 0) {
                rc = token_list_push(out, sym[i].id, err);
                continue;
            }
            for (uint32_t b = 0; rc == 0 && b < sym[i].len; b++) {
                int id = t->byte_piece[(unsigned char)norm[sym[i].start + b]];
                rc = token_list_push(out, id >= 0 ? id : BIN_UNK, err);
            }
        }
        free(heap.items);
        free(sym);
        free(norm);
        if (rc != 0) return -1;
    }
    return 0;
}

/* With TOKENIZE_PARSE_SPECIAL, tokenizer.bin's control pieces spelled as SentencePiece names them
 * ("<s>", "</s>") are their ids; the text between goes through bin_encode, each part with its own
 * dummy prefix, as SentencePiece would encode the parts. */
static int bin_encode_special(const Tokenizer *t, const char *text, size_t n, TokenList *out, NfError *err) {
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        int id = -1;
        size_t len = 0;
        if (n - i >= 3 && memcmp(text + i, "<s>", 3) == 0) id = BIN_BOS, len = 3;
        if (n - i >= 4 && memcmp(text + i, "</s>", 4) == 0) id = BIN_EOS, len = 4;
        if (id < 0) continue;
        if (bin_encode(t, text + from, i - from, out, err) != 0 || token_list_push(out, id, err) != 0) return -1;
        i += len - 1;
        from = i + 1;
    }
    return bin_encode(t, text + from, n - from, out, err);
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t n, unsigned flags, TokenList *out, NfError *err) {
    if ((flags & TOKENIZE_BOS) && t->bos_id >= 0 && token_list_push(out, t->bos_id, err) != 0) return -1;
    bool special = (flags & TOKENIZE_PARSE_SPECIAL) != 0;
    int rc = t->hf     ? hf_tokenizer_encode(t, text, n, special, out, err)
             : special ? bin_encode_special(t, text, n, out, err)
                       : bin_encode(t, text, n, out, err);
    if (rc != 0) return -1;
    if ((flags & TOKENIZE_EOS) && t->eos_id >= 0 && token_list_push(out, t->eos_id, err) != 0) return -1;
    return 0;
}

/* ---- decoding ----------------------------------------------------------------- */

const char *tokenizer_decode_piece(const Tokenizer *t, int prev, int id, size_t *len, unsigned char *byte_buf) {
    *len = 0;
    if (id < 0 || id >= t->vocab_size || tokenizer_is_control(t, id)) return "";
    const char *p = (const char *)t->blob + t->piece_start[id];
    size_t n = t->piece_len[id];
    /* a text starts at the start, or after a BOS that decodes to nothing (tokenizer.bin's) */
    bool first = prev < 0 || (prev == t->bos_id && tokenizer_is_control(t, prev));
    if (t->hf) {
        /* tokenizer.json: the bytes are already decoded; only the dummy prefix's space is left to drop */
        if (first && hf_tokenizer_strips_first_space(t->hf) && n > 0 && p[0] == ' ') p++, n--;
        *len = n;
        return p;
    }
    int byte = byte_piece_value((const unsigned char *)p, (uint32_t)n);
    if (byte >= 0) {
        /* a vocabulary without a space piece (builtin:bytes) spells the dummy prefix as byte 0x20 */
        if (first && byte == ' ' && tokenizer_find(t, " ", 1) < 0) return "";
        *byte_buf = (unsigned char)byte;
        *len = 1;
        return (const char *)byte_buf;
    }
    if (first && n > 0 && p[0] == ' ') p++, n--;
    *len = n;
    return p;
}

void token_stream_init(TokenStream *s, int prev) {
    memset(s, 0, sizeof *s);
    s->prev = prev;
}

size_t token_stream_room(const Tokenizer *t) { return 3 * ((size_t)t->max_token_length + 8); }

size_t token_stream_push(TokenStream *s, const Tokenizer *t, int id, char *out) {
    unsigned char byte;
    size_t len;
    const char *piece = tokenizer_decode_piece(t, s->prev, id, &len, &byte);
    s->prev = id;
    return utf8_stream_push(&s->utf8, piece, len, out);
}

char *tokenizer_decode(const Tokenizer *t, const int *ids, size_t n, size_t *len, NfError *err) {
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->vocab_size) cap += t->piece_len[ids[i]];
    char *out = nf_alloc(cap, err);
    if (!out) return NULL;
    size_t o = 0;
    int prev = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char byte;
        size_t plen;
        const char *piece = tokenizer_decode_piece(t, prev, ids[i], &plen, &byte);
        memcpy(out + o, piece, plen);
        o += plen;
        prev = ids[i];
    }
    out[o] = '\0';
    *len = o;
    return out;
}
