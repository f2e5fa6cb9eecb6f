/* hf_model.h — Hugging Face model directories: config.json and safetensors
 * shards, read and written.
 *
 * A directory holds config.json and either model.safetensors or the shards
 * that model.safetensors.index.json's weight_map names (F32, F16 or BF16).
 * config.json is read for model_type llama, qwen2 and qwen3 (transformers'
 * LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) with transformers'
 * defaults for absent keys; whatever such a model would compute that
 * NeuralForge does not (sliding-window attention in use, mixture-of-experts,
 * a RoPE scaling other than llama3, biases the family has none of, another
 * activation, tensors left over or missing) is refused by name, never
 * computed wrongly. wq/wk rows (and their biases and q/k norms) go from HF's
 * rotate-half order to llama2.c's pairs through llama_interop.h's table.
 * The writer's config.json (hf_model_config_json) carries every key the
 * family's transformers config needs; export.c writes the tensors beside it.
 * docs/formats.md lists the keys, the refusals and the directory checksum. */
#ifndef NF_HF_MODEL_H
#define NF_HF_MODEL_H

#include "error.h"
#include "import.h"
#include "json.h"
#include "model.h"
#include "tokenizer.h"

/* dir/config.json alone into c: the cheap read that sizes a run. */
int hf_model_read_config(const char *dir, ModelConfig *c, NfError *err);

/* The whole model: c and *params (malloc'd, the flat layout of params.h, fp32); info gets the tensor count,
 * the source dtypes and the RMSNorm epsilon. */
int hf_model_read(const char *dir, ModelConfig *c, float **params, ImportInfo *info, NfError *err);

/* The files that make the model, in the order its checksum hashes them: config.json, then
 * model.safetensors.index.json and the shards it names sorted by name (bytewise), or model.safetensors.
 * *paths (n entries) and each path are malloc'd: free with hf_model_files_free. */
int hf_model_files(const char *dir, char ***paths, int *n, NfError *err);
void hf_model_files_free(char **paths, int n);

/* config.json for c as one JSON object into j: model_type and architectures of c's family, the shape, RoPE,
 * norm and bias keys, torch_dtype float32, and BOS/EOS ids from tok (a tokenizer.json; NULL or a
 * tokenizer.bin: llama2.c's 1 and 2). */
void hf_model_config_json(JsonBuf *j, const ModelConfig *c, const Tokenizer *tok);

#endif
