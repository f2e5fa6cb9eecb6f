/* tokenizer_train.h — learning a BPE vocabulary with byte fallback from text,
 * for tokenizer.c's SentencePiece-style encoder, and writing it as a llama2.c
 * tokenizer.bin.
 *
 * This file owns the training algorithm and the layout of the vocabulary it
 * produces (docs/formats.md, "Trained tokenizers"):
 *   id 0 <unk>, 1 "\n<s>\n" (BOS), 2 "\n</s>\n" (EOS), 3..258 <0x00>..<0xFF>
 *   (all score 0); then the characters of the text, most frequent first; then
 *   the learned merges in the order they were learned, except that pieces made
 *   of spaces only come after all the others. Every id from 259 on has score
 *   -(id - 259), so the encoder, which merges the highest-scoring piece first,
 *   applies the merges in the order they were learned (spaces-only pieces
 *   last, so that in "   word" the word keeps its leading space as it did in
 *   training).
 *
 * Training works on words, not on the raw text: the text is normalized the
 * way the encoder reads it (a dummy-prefix space at the start of each
 * input; each invalid UTF-8 byte a character of its own) and
 * cut into words; identical words are counted once with their count. A word
 * is one leading space (if any) and a run of characters of one class
 * (letters, digits, punctuation and symbols, or control characters such as
 * newlines and tabs); a run of n >= 2 spaces gives a word of n - 1 spaces
 * and the last space starts the next word. So no piece spans whitespace or a
 * class boundary, and a space is only ever the first byte(s) of a piece.
 * Merging is classic BPE over those word counts: the most frequent adjacent
 * pair is merged everywhere, with pair counts updated incrementally for the
 * words that hold the pair, and a max-heap to find the next pair.
 *
 * Determinism: ties between pairs of equal count go to the pair whose left
 * piece was added first, then whose right piece was added first; characters of equal count
 * are ordered by their UTF-8 bytes. Nothing depends on hash order, so the
 * same input gives the same file. */
#ifndef NF_TOKENIZER_TRAIN_H
#define NF_TOKENIZER_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fileio.h"

#define TOKTRAIN_FIXED_PIECES    259                 /* <unk>, BOS, EOS and the 256 byte pieces */
#define TOKTRAIN_MIN_VOCAB       260                 /* the fixed pieces and the space piece llama2.c's run.c needs */
#define TOKTRAIN_MAX_VOCAB       65536               /* token files store uint16 ids */
#define TOKTRAIN_MAX_INPUT_BYTES ((uint64_t)1 << 30) /* 1 GiB of text in all */
#define TOKTRAIN_MAX_PIECE_CHARS 16  /* longest learned piece, in characters (SentencePiece's default) */
#define TOKTRAIN_MAX_WORD_BYTES  256 /* longer runs are cut into words of at most this many bytes */

/* One input text: a view of bytes the caller owns (a mapped file). */
typedef struct {
    const unsigned char *data;
    size_t size;
} TextSpan;

typedef enum {
    TOKTRAIN_COUNTING, /* reading the text into word counts: bytes_done of bytes_total */
    TOKTRAIN_MERGING,  /* learning merges: merges of merges_max, vocab_size of target */
} TokTrainPhase;

typedef struct {
    TokTrainPhase phase;
    uint64_t bytes_done;  /* COUNTING: input bytes read so far */
    uint64_t bytes_total; /* COUNTING: input bytes in all */
    int merges;           /* MERGING: merges learned so far */
    int merges_max;       /* MERGING: merges that fit the target (target - 259 - characters) */
    int vocab_size;       /* MERGING: pieces so far */
    int target;           /* the requested vocab_size */
} TokTrainProgress;

typedef struct {
    int vocab_size;            /* target piece count, TOKTRAIN_MIN_VOCAB .. TOKTRAIN_MAX_VOCAB */
    double character_coverage; /* (0, 1]: keep the most frequent characters until this share of
                                     the text's characters is covered (1 = every character that fits) */
    /* Called now and then while counting and after every merge; may be NULL. */
    void (*progress)(void *ctx, const TokTrainProgress *p);
    void *progress_ctx;
} TokTrainOptions;

/* A trained vocabulary, in id order. */
typedef struct {
    int vocab_size;         /* pieces: 259 + characters + merges; below the target if the text ran out of pairs */
    int characters;         /* single-character pieces (ids 259 .. 259 + characters - 1) */
    int merges;             /* learned pieces after them */
    int space_merges;       /* of those, the pieces of spaces only (the last ids) */
    int dropped_characters; /* distinct characters left to byte fallback (coverage or vocabulary full) */
    int max_token_length;   /* longest piece in bytes */
    uint64_t bytes;         /* input bytes read */
    uint64_t words;         /* distinct words counted */
    unsigned char *blob;    /* every piece's bytes (a space, not U+2581), where piece_start says */
    uint32_t *piece_start;  /* (vocab_size) offset of each piece in blob */
    uint32_t *piece_len;    /* (vocab_size) length in bytes */
    float *scores;          /* (vocab_size) 0 for ids < 259, then -(id - 259) */
} TrainedVocab;

/* Learns a vocabulary from the texts (at most TOKTRAIN_MAX_INPUT_BYTES in
 * all, not all empty). Fails with NF_ERR_USAGE for options out of range,
 * NF_ERR_DATA for empty or oversized input, NF_ERR_MEMORY. */
int tokenizer_train(const TextSpan *texts, int n_texts, const TokTrainOptions *opt, TrainedVocab *v, NfError *err);

/* Writes v in llama2.c's tokenizer.bin format into an open AtomicFile (the caller commits). */
int trained_vocab_write(const TrainedVocab *v, AtomicFile *f, NfError *err);

/* Writes v as a llama2.c tokenizer.bin at path, atomically. */
int trained_vocab_save(const TrainedVocab *v, const char *path, NfError *err);

void trained_vocab_free(TrainedVocab *v);

#endif
