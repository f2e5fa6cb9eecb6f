/* import.h — reading models made elsewhere into a flat parameter buffer
 * (params.h): a llama.cpp GGUF file (architecture "llama", "qwen2" or
 * "qwen3", tensors F32, F16, BF16 or Q8_0; Qwen's q/k rows, which llama.cpp
 * keeps in HF's order, and llama3 RoPE scaling, which it keeps as
 * rope_freqs, brought back to NeuralForge's), or a Hugging Face model
 * directory (hf_model.h reads it: config.json plus safetensors shards).
 * Anything the model would need and NeuralForge does not implement (mixture
 * of experts, sliding windows, other RoPE scaling, extra tensors) is refused
 * by name. */
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

/* A GGUF file as a Model (model_open's): the weights widened to fp32 in a flat buffer the model owns, or, where its
 * matrices are all Q8_0 (llama.cpp's Q8_0 files), those as the file's own int8 values and fp16 scales in groups of
 * 32 (model_to_q8), never widened, as a llama2.c v2 file's are: generation reads 1.0625 bytes a weight instead of
 * 4, as llama.cpp does, on the values the file holds, in about the file's memory; what needs fp32 (training, export)
 * widens them as it does a v2 file's, to the values import_model gives. */
int import_gguf_model(Model *m, const char *path, NfError *err);

/* The configuration of a GGUF model from its metadata and tensor descriptions alone (no tensor data read),
 * checked as import_model checks it. */
int import_gguf_config(const char *path, ModelConfig *c, NfError *err);

#endif
