/* export.h — writing a model (a flat parameter buffer, params.h) or LoRA
 * adapters in the formats other tools read: llama2.c v0 and v1, GGUF
 * (llama.cpp's llama, qwen2 or qwen3 architecture; F32, F16 or Q8_0, with
 * the tokenizer embedded), Hugging Face
 * safetensors with config.json (and a tokenizer.json's files), and unmerged adapters as a llama.cpp GGUF
 * LoRA adapter or a PEFT directory. Every file is written atomically.
 * docs/formats.md describes each output. */
#ifndef NF_EXPORT_H
#define NF_EXPORT_H

#include <stdint.h>

#include "error.h"
#include "lora.h"
#include "model.h"
#include "tokenizer.h"

typedef enum { EXPORT_F32, EXPORT_F16, EXPORT_Q8_0 } ExportDtype;

typedef struct {
    uint64_t bytes; /* of every file written */
    int tensors;    /* tensors written */
} ExportStats;

/* version 0 (legacy, what run.c loads) or 1 ("ak42" header, norms first) */
int export_llama2c(const char *path, const ModelConfig *c, const float *params, int version, ExportStats *st,
                   NfError *err);
/* tok: the vocabulary to embed (its size must be the model's), loaded from
 * tokenizer_path (gguf_vocab.h writes it). Under Q8_0, a
 * matrix whose rows are not whole 32-value blocks is written as F16, and the
 * norms are F32 in every dtype, as llama.cpp does. */
int export_gguf(const char *path, const ModelConfig *c, const float *params, const Tokenizer *tok,
                const char *tokenizer_path, ExportDtype dtype, ExportStats *st, NfError *err);
/* dir/model.safetensors (F32) and dir/config.json; dir is created if missing.
 * tok (or NULL), loaded from tokenizer_path: a tokenizer.json's files
 * (tokenizer.json, tokenizer_config.json and chat_template.jinja where
 * present) are copied into dir byte for byte and its BOS/EOS ids go into
 * config.json; a tokenizer.bin adds nothing (ids 1 and 2). */
int export_safetensors(const char *dir, const ModelConfig *c, const float *params, const Tokenizer *tok,
                       const char *tokenizer_path, ExportStats *st, NfError *err);
/* Adapters without merging. Trained norms cannot be expressed by either
 * format and are refused. base_name goes into adapter_config.json. */
int export_gguf_lora(const char *path, const ModelConfig *c, const Lora *lora, ExportStats *st, NfError *err);
int export_peft(const char *dir, const ModelConfig *c, const Lora *lora, const char *base_name, ExportStats *st,
                NfError *err);

/* Writes a llama2.c tokenizer.bin: n pieces (bytes and lengths) with their scores. */
int tokenizer_bin_write(const char *path, int n, const char *const *pieces, const uint32_t *lens, const float *scores,
                        NfError *err);

#endif
