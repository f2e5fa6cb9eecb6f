/* hf_tokenizer.h — Hugging Face tokenizer.json (and tokenizer_config.json
 * beside it) read into a Tokenizer: the BPE model (bpe.c), its normalizer and
 * pre-tokenizer (pretok.c), added tokens, decoding, and BOS/EOS.
 *
 * Supported: model BPE (merges as "a b" strings or [a, b] pairs, byte_fallback,
 * fuse_unk, ignore_merges, unk_token); normalizers NFC/NFD/NFKC/NFKD, Prepend,
 * Replace (a String pattern), Sequence; pre-tokenizers Split (Regex or String
 * pattern, every behavior, invert), ByteLevel (add_prefix_space, use_regex),
 * Metaspace (replacement, prepend_scheme, split), Digits, Sequence; decoders
 * ByteLevel, Metaspace, and Sequences of Replace, ByteFallback, Fuse, Strip.
 * Anything else (Unigram, WordPiece, other normalizers, pre-tokenizers or
 * decoders, a regex PCRE2 refuses) is refused with an error naming the part:
 * never a silent approximation. docs/formats.md has the details.
 *
 * Encoding: added tokens are found in the raw text first (leftmost, longest;
 * special ones only with parse_special, the others always, as HF does), with
 * their lstrip/rstrip/single_word; the text between them goes through the
 * normalizer, the pre-tokenizer and BPE. BOS/EOS: tokenizer_config.json's
 * bos_token/eos_token and add_bos_token/add_eos_token; where it is missing
 * (or silent), the tokenizer.json's TemplateProcessing post-processor says
 * (a special token it puts first is BOS and added, one it puts last is EOS
 * and added); otherwise none. */
#ifndef NF_HF_TOKENIZER_H
#define NF_HF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#include "bpe.h"
#include "error.h"
#include "pretok.h"
#include "tokenizer.h"

typedef struct {
    char *json;   /* tokenizer.json */
    char *config; /* tokenizer_config.json beside it, NULL when there is none */
    char *dir;    /* the directory holding tokenizer.json (where chat_template.jinja would be) */
} HfPaths;

/* path: a tokenizer.json or a directory holding one. */
int hf_tokenizer_paths(const char *path, HfPaths *out, NfError *err);
void hf_paths_free(HfPaths *p);

int hf_tokenizer_load(Tokenizer *t, const char *path, NfError *err);
void hf_tokenizer_free(HfTokenizer *h);

/* A tokenizer.json and tokenizer_config.json (cfg, may be NULL) already parsed by jansson, as gguf_vocab.c
 * rebuilds them from a GGUF's vocabulary; name: where they came from, for errors. */
struct json_t;
int hf_tokenizer_from_tree(Tokenizer *t, const struct json_t *root, const struct json_t *cfg, const char *name,
                           NfError *err);

/* The ids of text[0..n), no BOS/EOS (tokenizer_encode adds those). */
int hf_tokenizer_encode(const Tokenizer *t, const char *text, size_t n, bool parse_special, TokenList *out,
                        NfError *err);

/* The decoder drops the first space of a text (SentencePiece-style: Strip, Metaspace). */
bool hf_tokenizer_strips_first_space(const HfTokenizer *h);

/* The BPE model and the normalizer/pre-tokenizer as read (GGUF export writes the vocabulary and merges, and
 * names the pre-tokenizer, from them). */
const Bpe *hf_tokenizer_bpe(const HfTokenizer *h);
const TextPipeline *hf_tokenizer_pipeline(const HfTokenizer *h);

/* tokenizer.json's added tokens, in its order. */
int hf_tokenizer_n_added(const HfTokenizer *h);
const char *hf_tokenizer_added(const HfTokenizer *h, int i, int *id, bool *special);

#endif
