/* tokenizer.h — the one front for every tokenizer: llama2.c's tokenizer.bin,
 * builtin:bytes, and Hugging Face tokenizer.json files (hf_tokenizer.c reads
 * those, bpe.c encodes them; see there). For tokenizer.bin: an encoder that produces
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
#include "utf8.h"

typedef enum {
    TOKENIZER_BIN,              /* llama2.c tokenizer.bin or builtin:bytes */
    TOKENIZER_HF_BYTE_LEVEL,    /* tokenizer.json: BPE over GPT-2's byte-level alphabet (Llama 3, Qwen, SmolLM2) */
    TOKENIZER_HF_SENTENCEPIECE, /* tokenizer.json: SentencePiece-style BPE with "▁" (Llama 2, Mistral, TinyLlama) */
} TokenizerKind;

/* tokenizer_encode's flags. */
#define TOKENIZE_BOS           1u /* the BOS id first (nothing when the tokenizer has none) */
#define TOKENIZE_EOS           2u /* the EOS id last (nothing when the tokenizer has none) */
#define TOKENIZE_PARSE_SPECIAL 4u /* special tokens spelled in the text (<|eot_id|>) become their ids */

#define TOKENIZER_MAX_EOT 8

typedef struct HfTokenizer HfTokenizer; /* hf_tokenizer.h */

typedef struct {
    TokenizerKind kind;
    int vocab_size;
    int max_token_length; /* longest piece, in the bytes it decodes to */
    /* Control ids, -1 = none. tokenizer.bin: 0, 1, 2 and add_bos (add_eos false); tokenizer.json: from
     * tokenizer_config.json (docs/formats.md says what a missing one means). */
    int bos_id, eos_id, unk_id;
    bool add_bos, add_eos;
    int eot_ids[TOKENIZER_MAX_EOT]; /* generate stops on these: EOS and end-of-turn tokens (<|eot_id|>, <|im_end|>) */
    int n_eot;
    unsigned char *blob;   /* the bytes each id decodes to, back to back */
    uint32_t *piece_start; /* (vocab_size) offset of each piece in blob */
    uint32_t *piece_len;   /* (vocab_size) */
    /* tokenizer.bin only */
    float *scores;        /* (vocab_size) merge priority: higher merges first */
    int byte_piece[256];  /* id of <0xXX> for each byte, -1 if the vocabulary lacks it */
    int n_byte_pieces;    /* how many of the 256 exist */
    int32_t *lookup;      /* open-addressing hash: piece bytes -> id; -1 = empty */
    uint32_t lookup_mask; /* table size - 1 (a power of two) */
    HfTokenizer *hf;      /* tokenizer.json's model, NULL for tokenizer.bin. Holds the word cache, so a
                           * Tokenizer encodes on one thread at a time. */
} Tokenizer;

/* Where a tokenizer path is taken, this name means the built-in byte-level
 * vocabulary (259 pieces: <unk>, BOS, EOS, the 256 bytes): no file needed. */
#define TOKENIZER_BUILTIN_BYTES "builtin:bytes"

/* path: tokenizer.bin, builtin:bytes, a tokenizer.json file, a directory holding tokenizer.json (and
 * maybe tokenizer_config.json), or a GGUF model file (its embedded vocabulary: gguf_vocab.h). */
int tokenizer_load(Tokenizer *t, const char *path, NfError *err);
/* A tokenizer.bin image already in memory (name: where it came from, for errors). */
int tokenizer_load_image(Tokenizer *t, const unsigned char *data, size_t size, const char *name, NfError *err);
/* The path names a tokenizer.json (it ends in .json, or is a directory): what tokenizer_load reads it as. */
bool tokenizer_path_is_hf(const char *path);
void tokenizer_free(Tokenizer *t);

/* What identifies a tokenizer (manifests compare it): FNV-1a 64 of its file; of tokenizer.json and
 * tokenizer_config.json (when present) for a tokenizer.json; of the name for builtin:bytes. */
int tokenizer_hash(const char *path, uint64_t *h, NfError *err);

/* "sentencepiece_bin", "hf_byte_level_bpe" or "hf_sentencepiece_bpe". */
const char *tokenizer_kind_name(TokenizerKind kind);

/* Fails unless the tokenizer's ids all fit the model: exactly the model's vocab_size pieces for a
 * tokenizer.bin; a tokenizer.json's model may have more rows than ids (padding, as Qwen's). */
int tokenizer_check_vocab(const Tokenizer *t, int model_vocab_size, NfError *err);

/* The flags of the tokenizer's own defaults: BOS and EOS as add_bos / add_eos say. */
unsigned tokenizer_default_flags(const Tokenizer *t);

/* True for EOS and the end-of-turn ids (eot_ids). */
bool tokenizer_is_eot(const Tokenizer *t, int id);

/* tokenizer.bin: id of the normal piece spelled by bytes s[0..n), or -1 (always -1 for tokenizer.json). */
int tokenizer_find(const Tokenizer *t, const char *s, size_t n);

/* A growable list of token ids. */
typedef struct {
    int *ids;
    size_t len, cap;
} TokenList;

void token_list_free(TokenList *l);
int token_list_push(TokenList *l, int id, NfError *err);

/* Appends the ids of text[0..n) to out; flags: TOKENIZE_*. */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t n, unsigned flags, TokenList *out, NfError *err);

/* Whether id decodes to nothing: tokenizer.bin's BOS and EOS (a tokenizer.json's decode to their text). */
static inline bool tokenizer_is_control(const Tokenizer *t, int id) {
    return t->kind == TOKENIZER_BIN && (id == t->bos_id || id == t->eos_id);
}

/* The bytes that token `id` stands for when it follows `prev` (-1 at the start):
 * byte pieces give their byte, control ids (tokenizer.bin's BOS, EOS) give nothing (tokenizer.json's special
 * tokens give their text, as HF decodes them), and the dummy-prefix space
 * is dropped from the first piece of a text (prev = -1 or a control BOS) where the tokenizer adds one
 * (tokenizer.bin, SentencePiece-style tokenizer.json); in a
 * vocabulary with no space piece it is the byte piece <0x20>, dropped too. Byte-level pieces give
 * their bytes, which may be part of a UTF-8 character (utf8.h's Utf8Stream joins them). */
const char *tokenizer_decode_piece(const Tokenizer *t, int prev, int id, size_t *len, unsigned char *byte_buf);

/* Streaming decode, as generate prints tokens while they come: each token's bytes (tokenizer_decode_piece,
 * after the token before it) joined by a Utf8Stream, so that a UTF-8 character split across tokens
 * (byte-level pieces, byte-fallback pieces) comes out whole, with the token that completes it. */
typedef struct {
    int prev; /* the token before, -1 at the start */
    Utf8Stream utf8;
} TokenStream;

/* prev: the last token already given (the prompt's last), or -1. */
void token_stream_init(TokenStream *s, int prev);
/* Bytes to print for token id (out needs token_stream_room(t) bytes); returns how many. */
size_t token_stream_push(TokenStream *s, const Tokenizer *t, int id, char *out);
size_t token_stream_room(const Tokenizer *t);

/* Decodes a whole id sequence into a malloc'd buffer (NUL-terminated, *len bytes). */
char *tokenizer_decode(const Tokenizer *t, const int *ids, size_t n, size_t *len, NfError *err);

#endif
