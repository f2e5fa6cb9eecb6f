/* bpe.h — Hugging Face's BPE model (tokenizer.json's "model"): the
 * vocabulary as tokenizer.json spells it, merges ranked by their order,
 * encoding one pre-tokenized word (the pair of lowest rank merges first,
 * leftmost on ties, as HF's Word::merge_all), byte fallback and <unk>, and a
 * cache of words already encoded (words repeat: most of a corpus is cache
 * hits). Also GPT-2's byte<->unicode map that byte-level vocabularies are
 * spelled in.
 *
 * Byte-level vocabularies (Llama 3, Qwen) are encoded from the word's raw
 * bytes: each byte starts as the id of its mapped character, so any byte
 * sequence, valid UTF-8 or not, has ids. SentencePiece-style ones start from
 * the word's UTF-8 characters; a byte outside a valid character is a symbol
 * of its own, which byte_fallback turns into <0xXX> (so it survives too). */
#ifndef NF_BPE_H
#define NF_BPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "heap.h"
#include "tokenizer.h"

typedef struct {
    uint64_t hash;
    uint32_t key_start, key_len; /* in WordCache.keys */
    uint32_t ids_start, n_ids;   /* in WordCache.ids */
} CacheEntry;

typedef struct {
    CacheEntry *slots; /* open addressing; key_len 0 = empty (empty words are never cached) */
    uint32_t mask, used;
    char *keys;
    size_t keys_len, keys_cap;
    int *ids;
    size_t ids_len, ids_cap;
} WordCache;

typedef struct {
    int id, prev, next;
} BpeSymbol;

typedef struct {
    uint32_t start, len;
} BpeString;

/* A slot of the string -> id table; the hash is kept so that a probe past other strings touches only the table
 * (280k merges look up three strings each while Llama 3's file loads). */
typedef struct {
    uint32_t hash;
    int32_t id;
} BpeSlot;

typedef struct {
    int32_t rank, pos, new_id;
} BpeMerge;
NF_HEAP_TYPE(BpeMergeHeap, BpeMerge);

typedef struct {
    int n_ids;      /* ids are [0, n_ids); an id no token names has an empty string */
    char *strings;  /* every token's string back to back */
    BpeString *str; /* (n_ids) where each id's string is */
    size_t strings_len, strings_cap;
    BpeSlot *table; /* string -> id, open addressing, id -1 = empty */
    uint32_t table_mask;
    uint64_t *merge_keys; /* (left id << 32 | right id) + 1; 0 = empty */
    int32_t *merge_rank, *merge_id;
    uint32_t merge_mask;
    int n_merges;
    int unk_id; /* -1: none (a character outside the vocabulary is dropped, as HF drops it) */
    bool byte_level, byte_fallback, fuse_unk, ignore_merges;
    int byte_ids[256]; /* byte_level: id of each byte's character; byte_fallback: id of <0xXX>; -1 none */
    /* scratch, reused word after word (a Bpe encodes on one thread at a time) */
    BpeSymbol *sym;
    size_t sym_cap;
    BpeMergeHeap heap;
    char *mapped;
    size_t mapped_cap;
    WordCache cache;
} Bpe;

/* Starts an empty model with ids [0, n_ids). */
int bpe_init(Bpe *b, int n_ids, NfError *err);
void bpe_free(Bpe *b);
/* Names id with s[0..n); fails if the id already has a name or the string another id. */
int bpe_set_token(Bpe *b, int id, const char *s, size_t n, NfError *err);
/* Id of the token spelled s[0..n), or -1. */
int bpe_find(const Bpe *b, const char *s, size_t n);
/* After every token is named: sizes the merge table for n_merges and fills byte_ids. */
int bpe_prepare(Bpe *b, int n_merges, NfError *err);
/* The next merge (rank = the order of calls): both sides and their concatenation must be tokens. */
int bpe_add_merge(Bpe *b, const char *left, size_t left_len, const char *right, size_t right_len, NfError *err);
/* Appends the ids of one word (raw bytes for a byte-level model, text for the others). */
int bpe_encode_word(Bpe *b, const char *word, size_t n, TokenList *out, NfError *err);

/* GPT-2's byte-level alphabet: the character byte b is spelled as (UTF-8 into out, returns its length). */
size_t byte_level_char(unsigned char b, char out[2]);
/* The byte a character of the alphabet stands for, or -1. */
int byte_level_byte(uint32_t codepoint);

#endif
