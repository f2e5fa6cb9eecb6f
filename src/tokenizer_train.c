/* tokenizer_train.c — BPE training over word counts, and writing the result
 * as a llama2.c tokenizer.bin. The rules are in tokenizer_train.h. */
#include "tokenizer_train.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "util.h"

#define MIN_PAIR_COUNT     2 /* a pair seen once is not worth a piece */
#define REPORT_EVERY_BYTES ((size_t)16 << 20)

/* ---- a hash table of byte strings --------------------------------------------- */

/* Byte strings -> entry index, each entry with a number of the caller's
 * (a count, an id). Entries keep their insertion order, which is the order of
 * the text, so iterating them is deterministic. */
typedef struct {
    char *arena; /* every key's bytes, back to back */
    size_t arena_len, arena_cap;
    size_t *key_off;    /* (cap) where entry i's key starts in arena */
    uint32_t *key_len;  /* (cap) */
    uint32_t *key_hash; /* (cap) */
    uint64_t *value;    /* (cap) the caller's number */
    uint32_t n, cap;    /* entries used / allocated */
    uint32_t *slots;    /* (mask + 1) entry index + 1; 0 = empty slot */
    uint32_t mask;
} StrTable;

static void strtab_free(StrTable *t) {
    free(t->arena);
    free(t->key_off);
    free(t->key_len);
    free(t->key_hash);
    free(t->value);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Index of the entry with key s[0..n) and hash h, or -1. */
static int64_t strtab_find(const StrTable *t, const char *s, size_t n, uint32_t h) {
    if (!t->slots) return -1;
    for (uint32_t slot = h & t->mask;; slot = (slot + 1) & t->mask) {
        uint32_t e = t->slots[slot];
        if (e == 0) return -1;
        e--;
        if (t->key_hash[e] == h && t->key_len[e] == n && memcmp(t->arena + t->key_off[e], s, n) == 0) return e;
    }
}

static int strtab_rehash(StrTable *t, uint32_t size, NfError *err) {
    uint32_t *slots = calloc(size, sizeof *slots);
    if (!slots) return nf_fail(err, NF_ERR_MEMORY, "cannot grow a hash table to %u slots", size);
    for (uint32_t e = 0; e < t->n; e++) {
        uint32_t slot = t->key_hash[e] & (size - 1);
        while (slots[slot]) slot = (slot + 1) & (size - 1);
        slots[slot] = e + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    return 0;
}

/* Adds a new entry (the key must be absent); returns its index or -1. */
static int64_t strtab_insert(StrTable *t, const char *s, size_t n, uint32_t h, uint64_t value, NfError *err) {
    if (t->n >= (1u << 31)) return nf_fail(err, NF_ERR_MEMORY, "more than 2^31 distinct words");
    if (t->n == t->cap) {
        size_t c = t->cap ? 2 * (size_t)t->cap : 64;
        if (!nf_resize((void **)&t->key_off, c, sizeof *t->key_off) ||
            !nf_resize((void **)&t->key_len, c, sizeof *t->key_len) ||
            !nf_resize((void **)&t->key_hash, c, sizeof *t->key_hash) ||
            !nf_resize((void **)&t->value, c, sizeof *t->value))
            return nf_fail(err, NF_ERR_MEMORY, "cannot grow a hash table past %u entries", t->cap);
        t->cap = (uint32_t)c;
    }
    if (!nf_grow((void **)&t->arena, &t->arena_cap, t->arena_len + n, 1, 16))
        return nf_fail(err, NF_ERR_MEMORY, "cannot grow a hash table's keys past %zu bytes", t->arena_len);
    if (2 * ((size_t)t->n + 1) > (t->slots ? (size_t)t->mask + 1 : 0) &&
        strtab_rehash(t, t->slots ? 2 * (t->mask + 1) : 64, err) != 0)
        return -1;
    uint32_t e = t->n++;
    memcpy(t->arena + t->arena_len, s, n);
    t->key_off[e] = t->arena_len;
    t->arena_len += n;
    t->key_len[e] = (uint32_t)n;
    t->key_hash[e] = h;
    t->value[e] = value;
    uint32_t slot = h & t->mask;
    while (t->slots[slot]) slot = (slot + 1) & t->mask;
    t->slots[slot] = e + 1;
    return e;
}

/* Adds inc to the value of key s[0..n), inserting it (at 0) if absent. */
static int64_t strtab_add(StrTable *t, const char *s, size_t n, uint64_t inc, NfError *err) {
    uint32_t h = nf_fnv1a32(s, n);
    int64_t e = strtab_find(t, s, n, h);
    if (e < 0 && (e = strtab_insert(t, s, n, h, 0, err)) < 0) return -1;
    t->value[e] += inc;
    return e;
}

static const char *strtab_key(const StrTable *t, uint32_t e) { return t->arena + t->key_off[e]; }

/* ---- text -> word counts -------------------------------------------------------- */

/* Word classes: a word never mixes two of them (apart from its leading space). */
enum { CLS_NONE, CLS_SPACE, CLS_CONTROL, CLS_DIGIT, CLS_LETTER, CLS_PUNCT };

static int char_class(uint32_t cp) {
    if (cp == ' ') return CLS_SPACE;
    if (cp < 0x20 || cp == 0x7F) return CLS_CONTROL; /* newline, tab, CR and the other C0 controls */
    if (cp < 0x80) {
        if (cp >= '0' && cp <= '9') return CLS_DIGIT;
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CLS_LETTER;
        return CLS_PUNCT;
    }
    /* A coarse split of the rest: the blocks of punctuation and symbols
     * (Latin-1's, general punctuation to miscellaneous symbols and arrows, CJK
     * and full-width punctuation, specials such as U+FFFD, emoji) against
     * everything else, taken as letters of some script. */
    if (cp <= 0xBF || cp == 0xD7 || cp == 0xF7) return CLS_PUNCT;
    if ((cp >= 0x2000 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
        (cp >= 0xFF00 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) || (cp >= 0xFF3B && cp <= 0xFF40) ||
        (cp >= 0xFF5B && cp <= 0xFF65) || (cp >= 0xFFF0 && cp <= 0xFFFF) || (cp >= 0x1F000 && cp <= 0x1FAFF))
        return CLS_PUNCT;
    return CLS_LETTER;
}

/* Cuts the normalized character stream into words and counts them. */
typedef struct {
    StrTable *words;                        /* word bytes -> count */
    char word[TOKTRAIN_MAX_WORD_BYTES + 4]; /* the word being built */
    size_t len;                             /* its bytes so far */
    int cls;                                /* class of its characters after the leading space */
    uint64_t spaces;                        /* spaces since the last other character, in no word yet */
} Splitter;

static int splitter_flush(Splitter *sp, NfError *err) {
    if (sp->len > 0 && strtab_add(sp->words, sp->word, sp->len, 1, err) < 0) return -1;
    sp->len = 0;
    sp->cls = CLS_NONE;
    return 0;
}

/* k spaces as words of their own, TOKTRAIN_MAX_WORD_BYTES at most each. */
static int splitter_spaces(Splitter *sp, uint64_t k, NfError *err) {
    char spaces[TOKTRAIN_MAX_WORD_BYTES];
    memset(spaces, ' ', sizeof spaces);
    if (k >= sizeof spaces && strtab_add(sp->words, spaces, sizeof spaces, k / sizeof spaces, err) < 0) return -1;
    if (k % sizeof spaces && strtab_add(sp->words, spaces, k % sizeof spaces, 1, err) < 0) return -1;
    return 0;
}

static int splitter_char(Splitter *sp, const char *c, size_t n, int cls, NfError *err) {
    if (cls == CLS_SPACE) {
        sp->spaces++;
        return splitter_flush(sp, err);
    }
    if (sp->spaces > 0) {
        /* the last space of the run starts this word; the others form one of their own */
        if (sp->spaces > 1 && splitter_spaces(sp, sp->spaces - 1, err) != 0) return -1;
        sp->spaces = 0;
        sp->word[0] = ' ';
        sp->len = 1;
    } else if (sp->len > 0 && (sp->cls != cls || sp->len + n > TOKTRAIN_MAX_WORD_BYTES)) {
        if (splitter_flush(sp, err) != 0) return -1;
    }
    memcpy(sp->word + sp->len, c, n);
    sp->len += n;
    sp->cls = cls;
    return 0;
}

/* The end of one input: the next input is a new text with its own dummy prefix. */
static int splitter_end(Splitter *sp, NfError *err) {
    if (splitter_flush(sp, err) != 0) return -1;
    if (sp->spaces > 0 && splitter_spaces(sp, sp->spaces, err) != 0) return -1;
    sp->spaces = 0;
    return 0;
}

static uint32_t decode_cp(const unsigned char *s, size_t len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

static void report(const TokTrainOptions *o, TokTrainProgress *p) {
    if (o->progress) o->progress(o->progress_ctx, p);
}

/* Bytes of the character at s: a UTF-8 character, or one byte that is not part of one (as the encoder splits). */
static size_t char_len(const char *s, size_t n) {
    size_t len = utf8_valid_len((const unsigned char *)s, n);
    return len ? len : 1;
}

/* Reads each text as tokenizer_encode does and counts its words. */
static int count_words(const TextSpan *texts, int n_texts, uint64_t total, const TokTrainOptions *o, StrTable *words,
                       NfError *err) {
    Splitter sp = {.words = words, .cls = CLS_NONE};
    TokTrainProgress p = {.phase = TOKTRAIN_COUNTING, .bytes_total = total, .target = o->vocab_size};
    report(o, &p);
    for (int t = 0; t < n_texts; t++) {
        const unsigned char *s = texts[t].data;
        size_t n = texts[t].size, next_report = REPORT_EVERY_BYTES;
        if (n == 0) continue;
        sp.spaces = 1; /* the dummy prefix */
        for (size_t i = 0; i < n;) {
            size_t len = utf8_valid_len(s + i, n - i);
            const unsigned char *c = s + i;
            uint32_t cp;
            if (len == 0) { /* an invalid byte is a character of its own, classed as U+FFFD would be */
                len = 1;
                cp = 0xFFFD;
            } else
                cp = decode_cp(c, len);
            i += len;
            if (splitter_char(&sp, (const char *)c, len, char_class(cp), err) != 0) return -1;
            if (i >= next_report) {
                p.bytes_done += REPORT_EVERY_BYTES;
                next_report += REPORT_EVERY_BYTES;
                report(o, &p);
            }
        }
        if (splitter_end(&sp, err) != 0) return -1;
        p.bytes_done += n % REPORT_EVERY_BYTES;
    }
    p.bytes_done = total;
    report(o, &p);
    return 0;
}

/* ---- pieces ---------------------------------------------------------------------- */

typedef struct {
    unsigned char *blob; /* every piece's bytes */
    size_t blob_len, blob_cap;
    uint32_t *start, *len; /* (cap) per id */
    uint16_t *chars;       /* (cap) per id: characters in the piece (learned pieces are capped) */
    size_t n, cap;         /* pieces so far / allocated */
    StrTable lookup;       /* characters and learned pieces: bytes -> id */
} Pieces;

static void pieces_free(Pieces *p) {
    free(p->blob);
    free(p->start);
    free(p->len);
    free(p->chars);
    strtab_free(&p->lookup);
    memset(p, 0, sizeof *p);
}

/* Appends a piece; indexed ones (characters, merges) can be found by their bytes. */
static int pieces_add(Pieces *p, const char *s, size_t n, int chars, bool indexed, NfError *err) {
    if (p->n == p->cap) {
        size_t c = p->cap ? 2 * p->cap : 1024;
        if (!nf_resize((void **)&p->start, c, sizeof *p->start) || !nf_resize((void **)&p->len, c, sizeof *p->len) ||
            !nf_resize((void **)&p->chars, c, sizeof *p->chars))
            return nf_fail(err, NF_ERR_MEMORY, "cannot grow the vocabulary");
        p->cap = c;
    }
    if (!nf_grow((void **)&p->blob, &p->blob_cap, p->blob_len + n, 1, 16))
        return nf_fail(err, NF_ERR_MEMORY, "cannot grow the vocabulary");
    if (indexed && strtab_insert(&p->lookup, s, n, nf_fnv1a32(s, n), p->n, err) < 0) return -1;
    memcpy(p->blob + p->blob_len, s, n);
    p->start[p->n] = (uint32_t)p->blob_len;
    p->len[p->n] = (uint32_t)n;
    p->chars[p->n] = (uint16_t)chars;
    p->blob_len += n;
    p->n++;
    return 0;
}

/* <unk>, BOS and EOS spelled as llama2.c's tokenizer.bin files spell them, then the byte pieces. */
static int pieces_add_fixed(Pieces *p, NfError *err) {
    static const char *const specials[3] = {"<unk>", "\n<s>\n", "\n</s>\n"};
    for (int i = 0; i < 3; i++)
        if (pieces_add(p, specials[i], strlen(specials[i]), 0, false, err) != 0) return -1;
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        if (pieces_add(p, piece, 6, 0, false, err) != 0) return -1;
    }
    return 0;
}

/* Would the loader read these bytes as something other than a normal piece? */
static bool spells_reserved(const unsigned char *s, size_t n) {
    if (n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') return true; /* <0xXX> */
    return (n == 5 && memcmp(s, "<unk>", 5) == 0) || (n == 5 && memcmp(s, "\n<s>\n", 5) == 0) ||
           (n == 6 && memcmp(s, "\n</s>\n", 6) == 0);
}

/* ---- characters -------------------------------------------------------------------- */

typedef struct {
    uint64_t count;
    uint32_t key;   /* the UTF-8 bytes, left-aligned big-endian: integer order = byte order */
    uint32_t entry; /* index in the character table */
} CharRank;

static int char_rank_cmp(const void *pa, const void *pb) {
    const CharRank *a = pa, *b = pb;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    return a->key < b->key ? -1 : a->key > b->key;
}

/* Counts the characters of the words, picks the pieces (most frequent first,
 * as coverage and the vocabulary allow, the space always) and gives each
 * character its id in char_id (-1: left to byte fallback). */
static int choose_characters(const StrTable *words, const TokTrainOptions *o, StrTable *chars, int32_t **char_id,
                             Pieces *pieces, int *dropped, NfError *err) {
    uint64_t total = 0;
    for (uint32_t w = 0; w < words->n; w++) {
        const char *s = strtab_key(words, w);
        for (uint32_t i = 0; i < words->key_len[w];) {
            size_t len = char_len(s + i, words->key_len[w] - i);
            if (strtab_add(chars, s + i, len, words->value[w], err) < 0) return -1;
            total += words->value[w];
            i += (uint32_t)len;
        }
    }
    CharRank *rank = nf_alloc_array(chars->n, sizeof *rank, err);
    *char_id = nf_alloc_array(chars->n, sizeof **char_id, err);
    if (!rank || !*char_id) {
        free(rank);
        return -1;
    }
    for (uint32_t e = 0; e < chars->n; e++) {
        uint32_t key = 0;
        for (uint32_t i = 0; i < 4; i++)
            key = key << 8 | (i < chars->key_len[e] ? (unsigned char)strtab_key(chars, e)[i] : 0);
        rank[e] = (CharRank){chars->value[e], key, e};
        (*char_id)[e] = -1;
    }
    qsort(rank, chars->n, sizeof *rank, char_rank_cmp);
    int budget = o->vocab_size - TOKTRAIN_FIXED_PIECES, kept_other = 0;
    uint64_t covered = 0;
    bool have_space = false;
    int rc = 0;
    *dropped = 0;
    for (uint32_t r = 0; rc == 0 && r < chars->n; r++) {
        uint32_t e = rank[r].entry;
        bool space = chars->key_len[e] == 1 && strtab_key(chars, e)[0] == ' ';
        if (!space && (kept_other >= budget - 1 || (double)covered >= o->character_coverage * (double)total)) {
            (*dropped)++;
            continue;
        }
        (*char_id)[e] = (int32_t)pieces->n;
        rc = pieces_add(pieces, strtab_key(chars, e), chars->key_len[e], 1, true, err);
        covered += rank[r].count;
        if (space)
            have_space = true;
        else
            kept_other++;
    }
    free(rank);
    /* llama2.c's run.c looks the dummy prefix up as the piece " " */
    if (rc == 0 && !have_space) rc = pieces_add(pieces, " ", 1, 1, true, err);
    return rc;
}

/* ---- BPE over word counts ------------------------------------------------------------- */

typedef struct {
    int32_t *sym; /* every word's symbols (piece ids), back to back; words shrink in place */
    size_t n_sym, cap_sym;
    size_t *start;   /* (n) first symbol of word w in sym */
    uint32_t *len;   /* (n) symbols in word w now */
    uint64_t *count; /* (n) how often the word occurs in the text */
    uint32_t *stamp; /* (n) the last merge that rewrote word w (a word listed twice is rewritten once) */
    size_t n, cap;
} WordSet;

typedef struct {
    int32_t left, right; /* piece ids */
    int64_t count;       /* occurrences in the text: the counts of the words that hold it, once per position */
    uint32_t *words;     /* words that hold it (or held it: entries can be stale, or repeat) */
    uint32_t n_words, cap_words;
    uint32_t queued; /* the merge after which it was last queued with a higher count */
    bool forbidden;  /* its piece would be too long or spell a reserved piece: never merged */
} Pair;

typedef struct {
    Pair *p;
    size_t n, cap;
    uint32_t *slots; /* (mask + 1) pair index + 1; 0 = empty */
    uint32_t mask;
} PairTable;

typedef struct {
    int64_t count; /* the pair's count when queued; stale once the count changed */
    uint32_t pair;
} HeapItem;

typedef struct {
    HeapItem *items;
    size_t n, cap;
} PairHeap;

typedef struct {
    WordSet words;
    PairTable pairs;
    PairHeap heap;
    uint32_t *touched; /* pairs whose count rose during the current merge */
    size_t n_touched, cap_touched;
    uint32_t merge_no; /* merges applied so far, learned or not (stamps) */
} Bpe;

static uint32_t pair_hash(int32_t l, int32_t r) {
    uint64_t k = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (uint32_t)k;
}

/* Index of pair (l, r), created at count 0 if new; -1 on allocation failure. */
static int64_t pair_get(PairTable *t, int32_t l, int32_t r, NfError *err) {
    uint32_t h = pair_hash(l, r);
    if (t->slots) {
        for (uint32_t slot = h & t->mask;; slot = (slot + 1) & t->mask) {
            uint32_t e = t->slots[slot];
            if (e == 0) break;
            if (t->p[e - 1].left == l && t->p[e - 1].right == r) return e - 1;
        }
    }
    if (t->n >= UINT32_MAX / 4) return nf_fail(err, NF_ERR_MEMORY, "too many distinct pairs");
    if (!nf_grow((void **)&t->p, &t->cap, t->n + 1, sizeof *t->p, 16))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    if (2 * (t->n + 1) > (t->slots ? (size_t)t->mask + 1 : 0)) {
        uint32_t size = t->slots ? 2 * (t->mask + 1) : 1024;
        uint32_t *slots = calloc(size, sizeof *slots);
        if (!slots) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        for (size_t e = 0; e < t->n; e++) {
            uint32_t slot = pair_hash(t->p[e].left, t->p[e].right) & (size - 1);
            while (slots[slot]) slot = (slot + 1) & (size - 1);
            slots[slot] = (uint32_t)e + 1;
        }
        free(t->slots);
        t->slots = slots;
        t->mask = size - 1;
    }
    size_t e = t->n++;
    t->p[e] = (Pair){.left = l, .right = r};
    uint32_t slot = h & t->mask;
    while (t->slots[slot]) slot = (slot + 1) & t->mask;
    t->slots[slot] = (uint32_t)e + 1;
    return (int64_t)e;
}

/* Heap order: higher count first; ties to the smaller left id, then the smaller right id. */
static bool heap_before(const PairTable *t, const HeapItem *a, const HeapItem *b) {
    if (a->count != b->count) return a->count > b->count;
    const Pair *pa = &t->p[a->pair], *pb = &t->p[b->pair];
    if (pa->left != pb->left) return pa->left < pb->left;
    return pa->right < pb->right;
}

static int heap_push(PairHeap *h, const PairTable *t, HeapItem item, NfError *err) {
    if (!nf_grow((void **)&h->items, &h->cap, h->n + 1, sizeof *h->items, 16))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    size_t i = h->n++;
    while (i > 0 && heap_before(t, &item, &h->items[(i - 1) / 2])) {
        h->items[i] = h->items[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->items[i] = item;
    return 0;
}

static HeapItem heap_pop(PairHeap *h, const PairTable *t) {
    HeapItem top = h->items[0], last = h->items[--h->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n) break;
        if (child + 1 < h->n && heap_before(t, &h->items[child + 1], &h->items[child])) child++;
        if (!heap_before(t, &h->items[child], &last)) break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->n > 0) h->items[i] = last;
    return top;
}

/* Adds delta to pair (l, r)'s count; a rise lists word w under the pair and queues it after the merge. */
static int pair_add(Bpe *b, int32_t l, int32_t r, int64_t delta, uint32_t w, NfError *err) {
    int64_t e = pair_get(&b->pairs, l, r, err);
    if (e < 0) return -1;
    Pair *p = &b->pairs.p[e];
    p->count += delta;
    if (delta <= 0) return 0;
    if (p->n_words == 0 || p->words[p->n_words - 1] != w) {
        size_t cap = p->cap_words;
        if (!nf_grow((void **)&p->words, &cap, (size_t)p->n_words + 1, sizeof *p->words, 16))
            return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        p->cap_words = (uint32_t)cap;
        p->words[p->n_words++] = w;
    }
    if (p->queued != b->merge_no) {
        p->queued = b->merge_no;
        size_t cap = b->cap_touched;
        if (!nf_grow((void **)&b->touched, &cap, b->n_touched + 1, sizeof *b->touched, 16))
            return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        b->cap_touched = cap;
        b->touched[b->n_touched++] = (uint32_t)e;
    }
    return 0;
}

/* Queues every pair whose count rose since the last call. */
static int queue_touched(Bpe *b, NfError *err) {
    for (size_t i = 0; i < b->n_touched; i++) {
        const Pair *p = &b->pairs.p[b->touched[i]];
        if (p->count > 0 && heap_push(&b->heap, &b->pairs, (HeapItem){p->count, b->touched[i]}, err) != 0) return -1;
    }
    b->n_touched = 0;
    return 0;
}

/* Adds one word (a run of known characters) with its count. */
static int bpe_add_word(Bpe *b, const int32_t *ids, uint32_t n, uint64_t count, NfError *err) {
    WordSet *ws = &b->words;
    if (ws->n == ws->cap) {
        size_t c = ws->cap ? 2 * ws->cap : 1024;
        if (!nf_resize((void **)&ws->start, c, sizeof *ws->start) ||
            !nf_resize((void **)&ws->len, c, sizeof *ws->len) ||
            !nf_resize((void **)&ws->count, c, sizeof *ws->count) ||
            !nf_resize((void **)&ws->stamp, c, sizeof *ws->stamp))
            return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        ws->cap = c;
    }
    if (!nf_grow((void **)&ws->sym, &ws->cap_sym, ws->n_sym + n, sizeof *ws->sym, 16))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    if (ws->n >= UINT32_MAX) return nf_fail(err, NF_ERR_MEMORY, "too many words");
    uint32_t w = (uint32_t)ws->n++;
    ws->start[w] = ws->n_sym;
    ws->len[w] = n;
    ws->count[w] = count;
    ws->stamp[w] = 0;
    memcpy(ws->sym + ws->n_sym, ids, n * sizeof *ids);
    ws->n_sym += n;
    for (uint32_t i = 0; i + 1 < n; i++)
        if (pair_add(b, ids[i], ids[i + 1], (int64_t)count, w, err) != 0) return -1;
    return 0;
}

/* Splits every counted word into character ids; characters without a piece
 * split the word there (they are byte fallback, which never merges). */
static int bpe_init(Bpe *b, const StrTable *words, const StrTable *chars, const int32_t *char_id, NfError *err) {
    int32_t ids[TOKTRAIN_MAX_WORD_BYTES];
    b->merge_no = 1; /* stamps: 1 for the pairs found here, 2 onwards for the merges */
    for (uint32_t w = 0; w < words->n; w++) {
        const char *s = strtab_key(words, w);
        uint32_t n = 0;
        for (uint32_t i = 0; i <= words->key_len[w];) {
            int32_t id = -1;
            size_t len = 1;
            if (i < words->key_len[w]) {
                len = char_len(s + i, words->key_len[w] - i);
                id = char_id[strtab_find(chars, s + i, len, nf_fnv1a32(s + i, len))];
            }
            if (id >= 0) {
                ids[n++] = id;
            } else {
                if (n >= 2 && bpe_add_word(b, ids, n, words->value[w], err) != 0) return -1;
                n = 0;
            }
            i += (uint32_t)len;
        }
    }
    b->merge_no = 2;
    return queue_touched(b, err);
}

static void bpe_free(Bpe *b) {
    free(b->words.sym);
    free(b->words.start);
    free(b->words.len);
    free(b->words.count);
    free(b->words.stamp);
    for (size_t i = 0; i < b->pairs.n; i++) free(b->pairs.p[i].words);
    free(b->pairs.p);
    free(b->pairs.slots);
    free(b->heap.items);
    free(b->touched);
    memset(b, 0, sizeof *b);
}

/* The next pair to merge: the most frequent (heap order), or -1 when no pair
 * occurs MIN_PAIR_COUNT times. Stale queue entries are dropped or requeued. */
static int64_t bpe_best(Bpe *b, NfError *err) {
    while (b->heap.n > 0) {
        HeapItem top = heap_pop(&b->heap, &b->pairs);
        const Pair *p = &b->pairs.p[top.pair];
        if (p->forbidden) continue;
        if (p->count != top.count) {
            /* lower now: requeue at the new count (a higher count was queued when it rose) */
            if (p->count > 0 && p->count < top.count &&
                heap_push(&b->heap, &b->pairs, (HeapItem){p->count, top.pair}, err) != 0)
                return -2;
            continue;
        }
        return p->count >= MIN_PAIR_COUNT ? (int64_t)top.pair : -1;
    }
    return -1;
}

/* Rewrites every word that holds pair (a, b) with c in its place, left to
 * right, keeping the counts of the neighbouring pairs up to date. */
static int bpe_merge(Bpe *b, uint32_t pair, int32_t c, NfError *err) {
    int32_t a = b->pairs.p[pair].left, bb = b->pairs.p[pair].right;
    uint32_t n_words = b->pairs.p[pair].n_words;
    uint32_t *list = b->pairs.p[pair].words; /* pair_add never adds to (a, b): every new pair holds c */
    b->pairs.p[pair].words = NULL;
    b->pairs.p[pair].n_words = b->pairs.p[pair].cap_words = 0;
    int rc = 0;
    for (uint32_t k = 0; rc == 0 && k < n_words; k++) {
        uint32_t w = list[k];
        if (b->words.stamp[w] == b->merge_no) continue;
        b->words.stamp[w] = b->merge_no;
        int32_t *s = b->words.sym + b->words.start[w];
        uint32_t n = b->words.len[w], o = 0;
        int64_t cnt = (int64_t)b->words.count[w];
        for (uint32_t i = 0; rc == 0 && i < n;) {
            if (i + 1 < n && s[i] == a && s[i + 1] == bb) {
                b->pairs.p[pair].count -= cnt;
                if (o > 0) {
                    rc = pair_add(b, s[o - 1], a, -cnt, w, err);
                    if (rc == 0) rc = pair_add(b, s[o - 1], c, cnt, w, err);
                }
                if (rc == 0 && i + 2 < n) {
                    rc = pair_add(b, bb, s[i + 2], -cnt, w, err);
                    if (rc == 0) rc = pair_add(b, c, s[i + 2], cnt, w, err);
                }
                s[o++] = c;
                i += 2;
            } else {
                s[o++] = s[i++];
            }
        }
        b->words.len[w] = o;
    }
    free(list);
    if (rc == 0) rc = queue_touched(b, err);
    b->merge_no++;
    return rc;
}

/* Learns merges until the vocabulary has the target size or no pair is frequent enough. */
static int bpe_learn(Bpe *b, Pieces *pieces, const TokTrainOptions *o, TokTrainProgress *prog, int *merges,
                     NfError *err) {
    char merged[4 * TOKTRAIN_MAX_PIECE_CHARS];
    while ((int)pieces->n < o->vocab_size) {
        int64_t best = bpe_best(b, err);
        if (best == -2) return -1;
        if (best < 0) break;
        Pair *p = &b->pairs.p[best];
        uint32_t la = pieces->len[p->left], lb = pieces->len[p->right];
        int chars = pieces->chars[p->left] + pieces->chars[p->right];
        if (chars > TOKTRAIN_MAX_PIECE_CHARS) {
            p->forbidden = true;
            continue;
        }
        memcpy(merged, pieces->blob + pieces->start[p->left], la);
        memcpy(merged + la, pieces->blob + pieces->start[p->right], lb);
        if (spells_reserved((const unsigned char *)merged, la + lb)) {
            p->forbidden = true;
            continue;
        }
        /* the same bytes can be reached by two different pairs: reuse the piece */
        int64_t existing = strtab_find(&pieces->lookup, merged, la + lb, nf_fnv1a32(merged, la + lb));
        int32_t c = existing >= 0 ? (int32_t)pieces->lookup.value[existing] : (int32_t)pieces->n;
        if (existing < 0) {
            if (pieces_add(pieces, merged, la + lb, chars, true, err) != 0) return -1;
            (*merges)++;
        }
        if (bpe_merge(b, (uint32_t)best, c, err) != 0) return -1;
        if (existing < 0) {
            prog->merges = *merges;
            prog->vocab_size = (int)pieces->n;
            report(o, prog);
        }
    }
    return 0;
}

/* ---- the whole run ----------------------------------------------------------------------- */

int tokenizer_train(const TextSpan *texts, int n_texts, const TokTrainOptions *opt, TrainedVocab *v, NfError *err) {
    memset(v, 0, sizeof *v);
    if (opt->vocab_size < TOKTRAIN_MIN_VOCAB || opt->vocab_size > TOKTRAIN_MAX_VOCAB)
        return nf_fail(err, NF_ERR_USAGE, "--vocab-size must be between %d and %d, got %d", TOKTRAIN_MIN_VOCAB,
                       TOKTRAIN_MAX_VOCAB, opt->vocab_size);
    if (!(opt->character_coverage > 0.0 && opt->character_coverage <= 1.0))
        return nf_fail(err, NF_ERR_USAGE, "--character-coverage must be in (0, 1], got %g", opt->character_coverage);
    uint64_t total = 0;
    for (int t = 0; t < n_texts; t++) {
        total += texts[t].size;
        if (total > TOKTRAIN_MAX_INPUT_BYTES)
            return nf_fail(err, NF_ERR_DATA, "the input is larger than %llu bytes (1 GiB) in all",
                           (unsigned long long)TOKTRAIN_MAX_INPUT_BYTES);
    }
    if (total == 0) return nf_fail(err, NF_ERR_DATA, "the input is empty: there is no text to train on");

    StrTable words = {0}, chars = {0};
    int32_t *char_id = NULL;
    Pieces pieces = {0};
    Bpe bpe = {0};
    int rc = -1;
    if (count_words(texts, n_texts, total, opt, &words, err) != 0) goto done;
    v->bytes = total;
    v->words = words.n;
    if (pieces_add_fixed(&pieces, err) != 0) goto done;
    if (choose_characters(&words, opt, &chars, &char_id, &pieces, &v->dropped_characters, err) != 0) goto done;
    v->characters = (int)pieces.n - TOKTRAIN_FIXED_PIECES;
    TokTrainProgress prog = {.phase = TOKTRAIN_MERGING,
                             .merges_max = opt->vocab_size - (int)pieces.n,
                             .vocab_size = (int)pieces.n,
                             .target = opt->vocab_size};
    report(opt, &prog);
    if ((int)pieces.n < opt->vocab_size) {
        if (bpe_init(&bpe, &words, &chars, char_id, err) != 0) goto done;
        strtab_free(&words); /* the words live on as symbol arrays */
        if (bpe_learn(&bpe, &pieces, opt, &prog, &v->merges, err) != 0) goto done;
    }

    /* Hand the pieces over with their final ids and scores: the merges in the
     * order they were learned, except that pieces of spaces only come last. A
     * run of spaces before a word is, in training, a word of spaces and then
     * the word with its leading space; scored last, "  " cannot take that
     * leading space from the word in the encoder. */
    v->vocab_size = (int)pieces.n;
    v->blob = pieces.blob;
    pieces.blob = NULL;
    if (!(v->piece_start = nf_alloc_array(pieces.n, sizeof *v->piece_start, err)) ||
        !(v->piece_len = nf_alloc_array(pieces.n, sizeof *v->piece_len, err)) ||
        !(v->scores = nf_alloc_array(pieces.n, sizeof *v->scores, err)))
        goto done;
    int first_merge = TOKTRAIN_FIXED_PIECES + v->characters, next = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int id = 0; id < v->vocab_size; id++) {
            const unsigned char *p = v->blob + pieces.start[id];
            uint32_t k = 0;
            while (k < pieces.len[id] && p[k] == ' ') k++;
            bool spaces_only = id >= first_merge && k == pieces.len[id];
            if (id < first_merge ? pass == 1 : spaces_only != (pass == 1)) continue;
            v->piece_start[next] = pieces.start[id];
            v->piece_len[next] = pieces.len[id];
            v->space_merges += spaces_only;
            next++;
        }
    }
    for (int id = 0; id < v->vocab_size; id++) {
        v->scores[id] = id < TOKTRAIN_FIXED_PIECES ? 0.0f : -(float)(id - TOKTRAIN_FIXED_PIECES);
        if ((int)v->piece_len[id] > v->max_token_length) v->max_token_length = (int)v->piece_len[id];
    }
    rc = 0;
done:
    if (rc != 0) trained_vocab_free(v);
    bpe_free(&bpe);
    pieces_free(&pieces);
    free(char_id);
    strtab_free(&chars);
    strtab_free(&words);
    return rc;
}

int trained_vocab_write(const TrainedVocab *v, AtomicFile *f, NfError *err) {
    int32_t mtl = v->max_token_length;
    if (atomic_file_write(f, &mtl, 4, err) != 0) return -1;
    for (int id = 0; id < v->vocab_size; id++) {
        int32_t len = (int32_t)v->piece_len[id];
        if (atomic_file_write(f, &v->scores[id], 4, err) != 0 || atomic_file_write(f, &len, 4, err) != 0 ||
            atomic_file_write(f, v->blob + v->piece_start[id], (size_t)len, err) != 0)
            return -1;
    }
    return 0;
}

int trained_vocab_save(const TrainedVocab *v, const char *path, NfError *err) {
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    int rc = trained_vocab_write(v, &f, err);
    if (rc == 0) rc = atomic_file_commit(&f, err);
    atomic_file_abort(&f);
    return rc;
}

void trained_vocab_free(TrainedVocab *v) {
    free(v->blob);
    free(v->piece_start);
    free(v->piece_len);
    free(v->scores);
    memset(v, 0, sizeof *v);
}
