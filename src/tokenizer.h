/* tokenizer.h — llama2.c's tokenizer.bin and an encoder that produces
 * SentencePiece's ids for BPE vocabularies with byte fallback (on valid
 * UTF-8 without U+2581; unlike SentencePiece, it keeps invalid bytes and
 * U+2581, so every byte sequence decodes back to itself).
 *
 * File: int32 max_token_length, then per piece: float32 score, int32 length,
 * length bytes (SentencePiece's "▁" already replaced by a space). The piece
 * count is whatever the file holds. Ids 0, 1, 2 are <unk>, BOS, EOS as in
 * llama2.c; pieces spelled <0xXX> are the 256 byte-fallback pieces.
 *
 * Encoding: a space is prepended (SentencePiece's dummy prefix), the text is
 * split into UTF-8 characters (a byte outside any valid character is a
 * symbol of its own), and adjacent symbols are merged best score
 * first (ties: leftmost) while the merged string is a vocabulary piece.
 * What is left unmatched falls back to its bytes. A heap keeps this
 * O(n log n) in the text length. */
#ifndef NF_TOKENIZER_H
#define NF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define TOKEN_UNK 0
#define TOKEN_BOS 1
#define TOKEN_EOS 2

typedef struct {
    int vocab_size;
    int max_token_length;
    unsigned char *blob;   /* all pieces' bytes, back to back */
    uint32_t *piece_start; /* (vocab_size) offset of each piece in blob */
    uint32_t *piece_len;   /* (vocab_size) */
    float *scores;         /* (vocab_size) merge priority: higher merges first */
    int byte_piece[256];   /* id of <0xXX> for each byte, -1 if the vocabulary lacks it */
    int n_byte_pieces;     /* how many of the 256 exist */
    int32_t *lookup;       /* open-addressing hash: piece bytes -> id; -1 = empty */
    uint32_t lookup_mask;  /* table size - 1 (a power of two) */
} Tokenizer;

/* Where a tokenizer path is taken, this name means the built-in byte-level
 * vocabulary (259 pieces: <unk>, BOS, EOS, the 256 bytes): no file needed. */
#define TOKENIZER_BUILTIN_BYTES "builtin:bytes"

int tokenizer_load(Tokenizer *t, const char *path, NfError *err);
void tokenizer_free(Tokenizer *t);

/* Fails unless the tokenizer has exactly the model's vocab_size pieces. */
int tokenizer_check_vocab(const Tokenizer *t, int model_vocab_size, NfError *err);

/* Id of the normal piece spelled by bytes s[0..n), or -1. */
int tokenizer_find(const Tokenizer *t, const char *s, size_t n);

/* A growable list of token ids. */
typedef struct {
    int *ids;
    size_t len, cap;
} TokenList;

void token_list_free(TokenList *l);
int token_list_push(TokenList *l, int id, NfError *err);

/* Appends the ids of text[0..n) to out, with BOS before / EOS after when asked. */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t n, bool bos, bool eos, TokenList *out, NfError *err);

/* The bytes that token `id` stands for when it follows `prev` (-1 at the start):
 * byte pieces give their byte, BOS/EOS give nothing, and the dummy-prefix space
 * is dropped from the first piece of a text (prev = -1 or BOS); in a
 * vocabulary with no space piece it is the byte piece <0x20>, dropped too. */
const char *tokenizer_decode_piece(const Tokenizer *t, int prev, int id, size_t *len, unsigned char *byte_buf);

/* Decodes a whole id sequence into a malloc'd buffer (NUL-terminated, *len bytes). */
char *tokenizer_decode(const Tokenizer *t, const int *ids, size_t n, size_t *len, NfError *err);

#endif
