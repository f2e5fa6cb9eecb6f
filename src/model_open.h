/* model_open.h — opening what `--model` names, whatever its format: a
 * llama2.c model file (mapped, model.c), or a Hugging Face model directory
 * or a GGUF file (converted to the flat layout by import.c; a GGUF of Q8_0
 * matrices kept as stored, a Q8 model as a v2 file is). Every command that
 * takes --model opens it here, so each format works everywhere. */
#ifndef NF_MODEL_OPEN_H
#define NF_MODEL_OPEN_H

#include "error.h"
#include "model.h"

/* Opens the model at path for inference (free it with model_free). */
int model_open(Model *m, const char *path, NfError *err);

/* The configuration alone, for sizing a run before anything large is read (a Hugging Face directory's
 * config.json alone). */
int model_peek_config(const char *path, ModelConfig *c, NfError *err);

/* The tokenizer that goes with --model: --tokenizer when given (tokenizer_flag), else the model's own: a Hugging
 * Face directory holding tokenizer.json (the directory), a GGUF file's embedded vocabulary when it has one (the
 * GGUF path); tokenizer_load reads both. NULL when there is none. Every command that takes --model and --tokenizer
 * decides it here. */
const char *model_tokenizer(const char *model_path, const char *tokenizer_flag);

#endif
