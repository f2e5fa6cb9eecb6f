/* checkpoint.h — training checkpoints: everything needed to continue a run
 * bit for bit (docs/formats.md has the byte layout).
 *
 * A checkpoint holds the model config, the weights, both AdamW moments,
 * the step, the data sampler's state, the training options (as JSON) and a
 * checksum over all of it. It is written atomically; loading verifies the
 * size and the checksum before trusting a single field.
 *
 * A LoRA checkpoint (kind 1) holds the adapters instead of the weights (their
 * moments likewise), the LoRA configuration, and the path and checksum of the
 * base model file it was trained on: a few MB where a full one is a copy of
 * the model times three. */
#ifndef NF_CHECKPOINT_H
#define NF_CHECKPOINT_H

#include <stdint.h>

#include "error.h"
#include "lora.h"
#include "model.h"

typedef struct {
    uint32_t version; /* the file's format version (checkpoint_load); checkpoint_save writes the current one */
    ModelConfig config;
    int64_t step; /* optimizer steps completed */
    int64_t tokens_seen;
    uint64_t data_rng_state; /* BatchSampler: random mode */
    int64_t data_epoch;      /* BatchSampler: shuffle mode */
    uint64_t data_position;
    double best_val_loss; /* NaN before the first validation */
    double last_loss;
    char *options_json;     /* the training options, NUL-terminated */
    bool is_lora;           /* kind 1: params are LoRA adapters (lora.h layout) on a base model file */
    LoraConfig lora;        /* is_lora only */
    uint64_t base_checksum; /* is_lora only: the base's checksum of the checkpoint's version (model_file_checksum) */
    char *base_path;        /* is_lora only: the base model file as train was given it, NUL-terminated */
    uint64_t n_params;      /* trainable floats: config_param_count, or lora_param_count */
    float *params;          /* (n_params) */
    float *adam_m;          /* (n_params) or NULL when only weights are wanted */
    float *adam_v;          /* (n_params) or NULL */
} Checkpoint;

/* Writes atomically; returns the file size in *bytes. */
int checkpoint_save(const char *path, const Checkpoint *ck, uint64_t *bytes, NfError *err);

/* Loads and verifies; allocates options_json, base_path, params and (if with_optimizer) the moments. */
int checkpoint_load(const char *path, Checkpoint *ck, bool with_optimizer, NfError *err);
void checkpoint_free(Checkpoint *ck);
/* The model config and kind from a checkpoint's header alone, unverified (the
 * checksum is checked by checkpoint_load): for sizing a run before loading
 * it. False when the file cannot be read or its header is not valid. */
bool checkpoint_peek_config(const char *path, ModelConfig *config, bool *is_lora);

/* The checksum a checkpoint of `version` ends with, over n bytes (XXH3-64 from version 3, FNV-1a over 64-bit
 * words before): for tools that forge checkpoints (the fuzz harness). */
int checkpoint_checksum(const void *data, size_t n, uint32_t version, uint64_t *sum, NfError *err);

/* The checksum that identifies a base model in a LoRA checkpoint of the current version: the XXH3-64 of the
 * XXH3-64 digests of its 16 MiB pieces, hashed by all threads at once (a Hugging Face directory's config.json
 * and safetensors files in hf_model_files' order, each cut in pieces of its own; docs/formats.md). */
int model_file_checksum(const char *path, uint64_t *sum, NfError *err);

/* Refuses a LoRA checkpoint unless base_path is the very file it was trained on (compared by the checksum of
 * the checkpoint's version). */
int checkpoint_check_base(const Checkpoint *ck, const char *ckpt_path, const char *base_path,
                          const ModelConfig *base_config, NfError *err);
/* The same check against a base whose current checksum (model_file_checksum) is known; a checkpoint of an older
 * version stores its version's checksum (FNV-1a before 3, XXH3-64 of the bytes in 3), which is computed from
 * base_path for it (only then). */
int checkpoint_base_matches(const Checkpoint *ck, const char *ckpt_path, const char *base_path, uint64_t base_sum,
                            const ModelConfig *base_config, NfError *err);

/* Adapters loaded from a LoRA checkpoint for the base model file base_path
 * (whose config is base_config): refused unless the checkpoint was trained
 * on exactly that file. *buffer holds the adapter weights (free it). */
int lora_load(const char *adapter_path, const char *base_path, const ModelConfig *base_config, Lora *lora,
              float **buffer, NfError *err);

/* The weights of a model file or of a checkpoint (exactly one of model_path and
 * ckpt_path) as a flat parameter buffer (params.h layout, malloc'd), with LoRA
 * adapters merged in: those of lora_path (on model_path), or of a LoRA
 * checkpoint given as ckpt_path (on the base model it names). options_json
 * (may be NULL) gets the checkpoint's stored options, malloc'd, or NULL for a
 * model file. */
int load_flat_params(const char *model_path, const char *ckpt_path, const char *lora_path, ModelConfig *config,
                     float **params, char **options_json, NfError *err);

/* Opens a model for inference from a model file (mapped, any format) or a
 * checkpoint (a LoRA one merged into its base). */
int open_model(const char *model_path, const char *ckpt_path, Model *m, NfError *err);

#endif
