/* gguf_vocab.h — a tokenizer written as llama.cpp's GGUF tokenizer metadata
 * (the tokenizer.ggml.* keys), for `export --format gguf`, and read back from
 * a GGUF model as its tokenizer (gguf_vocab_load, at the end):
 *
 * - tokenizer.bin (and builtin:bytes): the "llama" (SentencePiece)
 *   vocabulary: pieces with spaces spelled U+2581, scores, token types,
 *   BOS/EOS/<unk>.
 * - a byte-level BPE tokenizer.json (Llama 3, Qwen, SmolLM, GPT-2): the
 *   "gpt2" vocabulary as llama.cpp's convert_hf_to_gguf.py writes it: the
 *   token strings as tokenizer.json spells them (byte-level alphabet, added
 *   tokens included) by id, token types (1 normal, 3 control for special
 *   added tokens and those that look special, 4 user-defined for the other
 *   added tokens, 5 unused for an id no token names), the merges in rank
 *   order, BOS/EOS where the tokenizer has them, add_bos/add_eos,
 *   tokenizer.ggml.pre, and tokenizer.chat_template when the tokenizer has one.
 *   llama.cpp picks its pre-tokenizer regexes by the name in
 *   tokenizer.ggml.pre, so the name is given only for a pipeline recognised
 *   exactly (normalizer, Split regex, ByteLevel settings, ignore_merges);
 *   any other is refused with an error describing it.
 * - a SentencePiece-style tokenizer.json (Llama 2, Mistral) is refused: GGUF's
 *   "llama" vocabulary needs SentencePiece's per-piece scores, which a
 *   tokenizer.json does not hold (docs/formats.md says why no derivation is
 *   exact). */
#ifndef NF_GGUF_VOCAB_H
#define NF_GGUF_VOCAB_H

#include "error.h"
#include "gguf.h"
#include "tokenizer.h"

/* Whether tok can be the vocabulary of a model with `rows` embedding rows: as many ids, or (byte-level BPE)
 * fewer, the rest written as llama.cpp's unused "[PAD<id>]" tokens as convert_hf_to_gguf.py pads Qwen's. */
int gguf_vocab_fits(const Tokenizer *tok, int rows, NfError *err);

/* Adds tok's keys to w, `rows` tokens (gguf_vocab_fits); path: where tok was loaded from (a tokenizer.json's
 * chat template is read beside it). An end-of-turn id other than EOS goes into tokenizer.ggml.eot_token_id. */
int gguf_put_vocab(GgufWriter *w, const Tokenizer *tok, const char *path, int rows, NfError *err);

/* tokenizer.ggml.pre for a byte-level tokenizer.json ("llama-bpe", "qwen2", "smollm", "gpt-2"), or NULL with err
 * describing a pipeline llama.cpp has no name for. */
const char *gguf_pre_name(const Tokenizer *tok, NfError *err);

/* The other way: the vocabulary a GGUF file embeds, as a Tokenizer (tokenizer_load calls this for a GGUF path).
 * "llama" (SentencePiece): built as a tokenizer.bin image in memory and parsed as one (no file is written);
 * "gpt2" (byte-level BPE): the tokenizer.json it was converted from, rebuilt in memory (tokens, types,
 * merges, BOS/EOS, the pipeline the tokenizer.ggml.pre name stands for: one of those gguf_pre_name gives,
 * any other refused) and read by hf_tokenizer.c, so it encodes with the same BPE as a tokenizer.json.
 * tokenizer.ggml.eot_token_id joins the end-of-turn ids. */
int gguf_vocab_load(Tokenizer *t, const char *path, NfError *err);

/* Whether a GGUF file embeds a vocabulary (tokenizer.ggml.model); false for one that cannot be read. */
bool gguf_vocab_present(const char *path);

/* tokenizer.chat_template of a GGUF file (malloc'd), or NULL when it has none. */
int gguf_vocab_chat_template(const char *path, char **jinja, NfError *err);

/* A "llama" vocabulary written to out as a llama2.c tokenizer.bin (import --tokenizer-output); *written: its
 * pieces. */
int gguf_vocab_write_bin(const GgufFile *g, const char *path, const char *out, int *written, NfError *err);

#endif
