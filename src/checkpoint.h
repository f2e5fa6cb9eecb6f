/* checkpoint.h — training checkpoints: everything needed to continue a run
 * bit for bit (docs/formats.md has the byte layout).
 *
 * A checkpoint holds the model config, the weights, both AdamW moments,
 * the step, the data sampler's state, the training options (as JSON) and a
 * checksum over all of it. It is written atomically; loading verifies the
 * size and the checksum before trusting a single field. */
#ifndef NF_CHECKPOINT_H
#define NF_CHECKPOINT_H

#include <stdint.h>

#include "error.h"
#include "model.h"

typedef struct {
    ModelConfig config;
    int64_t step;             /* optimizer steps completed */
    int64_t tokens_seen;
    uint64_t data_rng_state;  /* BatchSampler: random mode */
    int64_t data_epoch;       /* BatchSampler: shuffle mode */
    uint64_t data_position;
    double best_val_loss;     /* NaN before the first validation */
    double last_loss;
    char *options_json;       /* the training options, NUL-terminated */
    uint64_t n_params;
    float *params;            /* (n_params) */
    float *adam_m;            /* (n_params) or NULL when only weights are wanted */
    float *adam_v;            /* (n_params) or NULL */
} Checkpoint;

/* Writes atomically; returns the file size in *bytes. */
int checkpoint_save(const char *path, const Checkpoint *ck, uint64_t *bytes, NfError *err);

/* Loads and verifies; allocates options_json, params and (if with_optimizer) the moments. */
int checkpoint_load(const char *path, Checkpoint *ck, bool with_optimizer, NfError *err);
void checkpoint_free(Checkpoint *ck);

/* The weights of a model file or of a checkpoint (exactly one path given) as
 * a flat parameter buffer (params.h layout, malloc'd). */
int load_flat_params(const char *model_path, const char *ckpt_path, ModelConfig *config, float **params,
                     NfError *err);

/* Opens a model for inference from a model file (mapped, any format) or a checkpoint. */
int open_model(const char *model_path, const char *ckpt_path, Model *m, NfError *err);

#endif
