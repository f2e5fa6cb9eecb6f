/* bpe.c — HF BPE: vocabulary and merge tables, one word's merges, the word cache, GPT-2's byte alphabet. */
#include "bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "util.h"

/* Words at most this long are cached; the cache is emptied when it holds this many words. */
#define CACHE_MAX_WORD  256
#define CACHE_MAX_WORDS (1u << 18)

/* ---- GPT-2's byte<->unicode map ----------------------------------------------- */

/* Printable Latin-1 bytes stand for themselves; the other 68 are U+0100 onwards in byte order: 0x00-0x20 (33),
 * 0x7F-0xA0 (34), 0xAD (1). So every byte is a visible character. */
static uint32_t byte_level_codepoint(unsigned char b) {
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33 + (b - 0x7Fu);
    if (b == 0xAD) return 256u + 67;
    return b;
}

size_t byte_level_char(unsigned char b, char out[2]) {
    uint32_t cp = byte_level_codepoint(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

int byte_level_byte(uint32_t cp) {
    if (cp < 256) return byte_level_codepoint((unsigned char)cp) == cp ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(0x7F + cp - 256 - 33);
    return cp == 256 + 67 ? 0xAD : -1;
}

/* ---- vocabulary ------------------------------------------------------------------ */

int bpe_init(Bpe *b, int n_ids, NfError *err) {
    memset(b, 0, sizeof *b);
    b->n_ids = n_ids;
    b->unk_id = -1;
    uint32_t size = 16;
    while (size < 2u * (uint32_t)n_ids) size *= 2;
    if (!(b->str = nf_alloc_array((size_t)n_ids, sizeof *b->str, err)) ||
        !(b->table = nf_alloc_array(size, sizeof *b->table, err))) {
        bpe_free(b);
        return -1;
    }
    for (uint32_t i = 0; i < size; i++) b->table[i].id = -1;
    b->table_mask = size - 1;
    for (int i = 0; i < 256; i++) b->byte_ids[i] = -1;
    return 0;
}

static void cache_free(WordCache *c) {
    free(c->slots);
    free(c->keys);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

void bpe_free(Bpe *b) {
    free(b->strings);
    free(b->str);
    free(b->table);
    free(b->merge_keys);
    free(b->merge_rank);
    free(b->merge_id);
    free(b->sym);
    free(b->heap.items);
    free(b->mapped);
    cache_free(&b->cache);
    memset(b, 0, sizeof *b);
}

int bpe_find(const Bpe *b, const char *s, size_t n) {
    uint32_t h = nf_fnv1a32(s, n), slot = h & b->table_mask;
    for (;;) {
        const BpeSlot *e = &b->table[slot];
        if (e->id < 0) return -1;
        if (e->hash == h && b->str[e->id].len == n && memcmp(b->strings + b->str[e->id].start, s, n) == 0) return e->id;
        slot = (slot + 1) & b->table_mask;
    }
}

int bpe_set_token(Bpe *b, int id, const char *s, size_t n, NfError *err) {
    if (id < 0 || id >= b->n_ids) return nf_fail(err, NF_ERR_TOKENIZER, "token id %d is out of range", id);
    if (b->str[id].len > 0 || n == 0)
        return nf_fail(err, NF_ERR_TOKENIZER, "token id %d is %s", id, n == 0 ? "an empty string" : "given twice");
    if (bpe_find(b, s, n) >= 0)
        return nf_fail(err, NF_ERR_TOKENIZER, "the token '%.*s' has two ids", n > 64 ? 64 : (int)n, s);
    if (n > UINT32_MAX - b->strings_len) return nf_fail(err, NF_ERR_TOKENIZER, "the vocabulary is too large");
    if (!nf_grow((void **)&b->strings, &b->strings_cap, b->strings_len + n, 1, 1 << 20))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory reading the vocabulary");
    memcpy(b->strings + b->strings_len, s, n);
    b->str[id] = (BpeString){(uint32_t)b->strings_len, (uint32_t)n};
    b->strings_len += n;
    uint32_t h = nf_fnv1a32(s, n), slot = h & b->table_mask;
    while (b->table[slot].id >= 0) slot = (slot + 1) & b->table_mask;
    b->table[slot] = (BpeSlot){h, id};
    return 0;
}

/* ---- merges ------------------------------------------------------------------------- */

static uint32_t pair_slot(uint64_t key, uint32_t mask) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (uint32_t)key & mask;
}

int bpe_prepare(Bpe *b, int n_merges, NfError *err) {
    /* at most 3/4 full: 280k merges (Llama 3) in 512k slots */
    uint32_t size = 16;
    while (size < (uint32_t)n_merges + (uint32_t)n_merges / 3 + 2) size *= 2;
    if (!(b->merge_keys = nf_alloc_array(size, sizeof(uint64_t), err)) ||
        !(b->merge_rank = nf_alloc_array(size, sizeof(int32_t), err)) ||
        !(b->merge_id = nf_alloc_array(size, sizeof(int32_t), err)))
        return -1;
    b->merge_mask = size - 1;
    for (int i = 0; i < 256; i++) {
        char s[8];
        size_t n = b->byte_level ? byte_level_char((unsigned char)i, s)
                                 : (size_t)snprintf(s, sizeof s, "<0x%02X>", (unsigned)i);
        b->byte_ids[i] = bpe_find(b, s, n);
    }
    return 0;
}

/* The slot of pair (left, right): its own, or the empty one where it would go. */
static uint32_t merge_lookup(const Bpe *b, int left, int right) {
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    uint32_t slot = pair_slot(key, b->merge_mask);
    while (b->merge_keys[slot] != 0 && b->merge_keys[slot] != key) slot = (slot + 1) & b->merge_mask;
    return slot;
}

int bpe_add_merge(Bpe *b, const char *left, size_t left_len, const char *right, size_t right_len, NfError *err) {
    int rank = b->n_merges;
    if ((uint32_t)rank + (uint32_t)rank / 3 + 2 > b->merge_mask)
        return nf_fail(err, NF_ERR_TOKENIZER, "more merges than the table was sized for");
    int l = bpe_find(b, left, left_len), r = bpe_find(b, right, right_len);
    if (!nf_grow((void **)&b->mapped, &b->mapped_cap, left_len + right_len + 1, 1, 256))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory reading the merges");
    memcpy(b->mapped, left, left_len);
    memcpy(b->mapped + left_len, right, right_len);
    int id = l >= 0 && r >= 0 ? bpe_find(b, b->mapped, left_len + right_len) : -1;
    if (id < 0)
        return nf_fail(err, NF_ERR_TOKENIZER, "merge %d ('%.*s' '%.*s') names a token that is not in the vocabulary",
                       rank, left_len > 32 ? 32 : (int)left_len, left, right_len > 32 ? 32 : (int)right_len, right);
    /* a pair listed twice keeps its last rank, as HF's map of merges does */
    uint32_t slot = merge_lookup(b, l, r);
    b->merge_keys[slot] = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    b->merge_rank[slot] = rank;
    b->merge_id[slot] = id;
    b->n_merges++;
    return 0;
}

/* ---- one word --------------------------------------------------------------------------- */

/* Min-heap order: lower rank first, then the leftmost position. */
static bool merge_before(const BpeMerge *a, const BpeMerge *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

NF_HEAP_FUNCS(merge_heap, BpeMergeHeap, BpeMerge, merge_before)

/* Queues the merge of symbol pos with the one after it, if the pair has a rank. */
static int queue_pair(Bpe *b, int pos, NfError *err) {
    if (pos < 0 || b->sym[pos].next < 0) return 0;
    uint32_t slot = merge_lookup(b, b->sym[pos].id, b->sym[b->sym[pos].next].id);
    if (b->merge_keys[slot] == 0) return 0;
    if (!merge_heap_push(&b->heap, (BpeMerge){b->merge_rank[slot], pos, b->merge_id[slot]}))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory in the tokenizer");
    return 0;
}

static int push_symbol(Bpe *b, size_t *n, int id, NfError *err) {
    if (!nf_grow((void **)&b->sym, &b->sym_cap, *n + 1, sizeof *b->sym, 64))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory in the tokenizer");
    b->sym[*n] = (BpeSymbol){id, (int)*n - 1, -1};
    if (*n > 0) b->sym[*n - 1].next = (int)*n;
    (*n)++;
    return 0;
}

/* The word's first symbols: one per byte (byte-level) or per character, with byte fallback and <unk>. */
static int initial_symbols(Bpe *b, const char *w, size_t n, size_t *n_sym, NfError *err) {
    *n_sym = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        int id;
        if (b->byte_level) {
            id = b->byte_ids[(unsigned char)w[i]];
        } else {
            len = utf8_valid_len((const unsigned char *)w + i, n - i);
            if (len == 0) len = 1;
            id = bpe_find(b, w + i, len);
        }
        if (id < 0 && b->byte_fallback) {
            bool all = true;
            for (size_t k = 0; k < len; k++) all = all && b->byte_ids[(unsigned char)w[i + k]] >= 0;
            for (size_t k = 0; all && k < len; k++)
                if (push_symbol(b, n_sym, b->byte_ids[(unsigned char)w[i + k]], err) != 0) return -1;
            if (all) {
                i += len, last_unk = false;
                continue;
            }
        }
        if (id < 0 && b->unk_id >= 0 && !(b->fuse_unk && last_unk) && push_symbol(b, n_sym, b->unk_id, err) != 0)
            return -1;
        if (id >= 0 && push_symbol(b, n_sym, id, err) != 0) return -1;
        last_unk = id < 0 && b->unk_id >= 0;
        i += len;
    }
    return 0;
}

/* The string the vocabulary spells the word with (byte-level: its bytes mapped), in b->mapped. */
static const char *spelled(Bpe *b, const char *w, size_t n, size_t *len, NfError *err) {
    if (!b->byte_level) {
        *len = n;
        return w;
    }
    if (!nf_grow((void **)&b->mapped, &b->mapped_cap, 2 * n + 1, 1, 256)) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory in the tokenizer");
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) o += byte_level_char((unsigned char)w[i], b->mapped + o);
    *len = o;
    return b->mapped;
}

static int merge_word(Bpe *b, const char *w, size_t n, TokenList *out, NfError *err) {
    if (b->ignore_merges) {
        size_t len;
        const char *s = spelled(b, w, n, &len, err);
        if (!s) return -1;
        int id = bpe_find(b, s, len);
        if (id >= 0) return token_list_push(out, id, err);
    }
    size_t n_sym;
    if (initial_symbols(b, w, n, &n_sym, err) != 0) return -1;
    b->heap.len = 0;
    for (size_t i = 0; i + 1 < n_sym; i++)
        if (queue_pair(b, (int)i, err) != 0) return -1;
    while (b->heap.len > 0) {
        BpeMerge m = merge_heap_pop(&b->heap);
        BpeSymbol *l = &b->sym[m.pos];
        if (l->id < 0 || l->next < 0) continue; /* merged away, or last */
        uint32_t slot = merge_lookup(b, l->id, b->sym[l->next].id);
        if (b->merge_keys[slot] == 0 || b->merge_id[slot] != m.new_id) continue; /* stale */
        BpeSymbol *r = &b->sym[l->next];
        l->id = m.new_id;
        l->next = r->next;
        if (r->next >= 0) b->sym[r->next].prev = m.pos;
        r->id = -1;
        if (queue_pair(b, l->prev, err) != 0 || queue_pair(b, m.pos, err) != 0) return -1;
    }
    for (int i = n_sym ? 0 : -1; i >= 0; i = b->sym[i].next)
        if (token_list_push(out, b->sym[i].id, err) != 0) return -1;
    return 0;
}

/* ---- the word cache -------------------------------------------------------------------- */

static CacheEntry *cache_slot(WordCache *c, const char *w, size_t n, uint64_t h) {
    uint32_t slot = (uint32_t)h & c->mask;
    for (;;) {
        CacheEntry *e = &c->slots[slot];
        if (e->key_len == 0) return e;
        if (e->hash == h && e->key_len == n && memcmp(c->keys + e->key_start, w, n) == 0) return e;
        slot = (slot + 1) & c->mask;
    }
}

static void cache_clear(WordCache *c) {
    memset(c->slots, 0, ((size_t)c->mask + 1) * sizeof *c->slots);
    c->used = 0;
    c->keys_len = c->ids_len = 0;
}

/* Remembers ids[0..n_ids) for the word (a full or failed allocation just skips it: the cache is a speed-up). */
static void cache_put(WordCache *c, const char *w, size_t n, uint64_t h, const int *ids, size_t n_ids) {
    if (!c->slots) {
        if (!(c->slots = calloc(2 * (size_t)CACHE_MAX_WORDS, sizeof *c->slots))) return;
        c->mask = 2 * CACHE_MAX_WORDS - 1;
    }
    if (c->used >= CACHE_MAX_WORDS) cache_clear(c);
    if (!nf_grow((void **)&c->keys, &c->keys_cap, c->keys_len + n, 1, 1 << 20) ||
        !nf_grow((void **)&c->ids, &c->ids_cap, c->ids_len + n_ids, sizeof *c->ids, 1 << 18))
        return;
    CacheEntry *e = cache_slot(c, w, n, h);
    memcpy(c->keys + c->keys_len, w, n);
    memcpy(c->ids + c->ids_len, ids, n_ids * sizeof *ids);
    *e = (CacheEntry){h, (uint32_t)c->keys_len, (uint32_t)n, (uint32_t)c->ids_len, (uint32_t)n_ids};
    c->keys_len += n;
    c->ids_len += n_ids;
    c->used++;
}

int bpe_encode_word(Bpe *b, const char *word, size_t n, TokenList *out, NfError *err) {
    if (n == 0) return 0;
    if (n > CACHE_MAX_WORD) return merge_word(b, word, n, out, err);
    WordCache *c = &b->cache;
    uint64_t h = nf_fnv1a64(NF_FNV1A64_INIT, word, n);
    if (c->slots) {
        CacheEntry *e = cache_slot(c, word, n, h);
        if (e->key_len) {
            for (uint32_t i = 0; i < e->n_ids; i++)
                if (token_list_push(out, c->ids[e->ids_start + i], err) != 0) return -1;
            return 0;
        }
    }
    size_t from = out->len;
    if (merge_word(b, word, n, out, err) != 0) return -1;
    cache_put(c, word, n, h, out->ids + from, out->len - from);
    return 0;
}
