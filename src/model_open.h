/* model_open.h — opening what `--model` names, whatever its format: a
 * llama2.c model file (mapped, model.c), or a Hugging Face model directory
 * or a GGUF file (converted to the flat layout by import.c). Every command
 * that takes --model opens it here, so each format works everywhere. */
#ifndef NF_MODEL_OPEN_H
#define NF_MODEL_OPEN_H

#include <stdbool.h>

#include "error.h"
#include "model.h"

/* Whether path is read through import.c: a directory (Hugging Face) or a file starting with "GGUF". */
bool model_path_is_imported(const char *path);

/* Opens the model at path for inference (free it with model_free). */
int model_open(Model *m, const char *path, NfError *err);

/* The configuration alone, for sizing a run before anything large is read (a Hugging Face directory's
 * config.json alone). */
int model_peek_config(const char *path, ModelConfig *c, NfError *err);

/* The tokenizer that comes with the model, for commands given --model without --tokenizer: model_path
 * itself when it is a Hugging Face directory holding tokenizer.json (tokenizer_load reads such a
 * directory), else NULL. */
const char *model_tokenizer_path(const char *model_path);

#endif
