/* import.h — reading models made elsewhere into a flat parameter buffer
 * (params.h), from which NeuralForge writes a llama2.c model file it trains
 * on: a llama.cpp GGUF file (architecture "llama", tensors F32, F16 or
 * Q8_0), or a Hugging Face model directory (hf_model.h reads it: config.json
 * plus safetensors shards). Anything the model would need and NeuralForge
 * does not implement is refused by name. */
#ifndef NF_IMPORT_H
#define NF_IMPORT_H

#include "error.h"
#include "model.h"

typedef struct {
    const char *format; /* "gguf" or "safetensors" */
    int tensors;        /* tensors read */
    char dtypes[64];    /* the source's tensor types, e.g. "F32,Q8_0" */
    double rms_eps;     /* the source's RMSNorm epsilon (NeuralForge uses 1e-5) */
    int vocab_written;  /* pieces written to the tokenizer output, 0 if none */
} ImportInfo;

/* Adds a source tensor type to info->dtypes, once. */
void import_note_dtype(ImportInfo *info, const char *name);

/* input: a GGUF file or a Hugging Face model directory. *params is
 * malloc'd. tokenizer_out (may be NULL): write the GGUF's vocabulary there
 * as a llama2.c tokenizer.bin (GGUF only). */
int import_model(const char *input, const char *tokenizer_out, ModelConfig *c, float **params, ImportInfo *info,
                 NfError *err);

#endif
