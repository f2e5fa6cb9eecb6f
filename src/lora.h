/* lora.h — LoRA adapters: which projections carry one, how their weights lie
 * in one flat buffer, how they start, and how they fold into the base weights.
 *
 * An adapted projection computes
 *     y = W x + s · B (A x),   s = alpha / r
 *     W (out, in) frozen,  A (r, in),  B (out, r)
 * A starts Kaiming-uniform and B at zero, so an untrained adapter changes nothing.
 *
 * The trainable buffer (weights, gradients and both AdamW moments alike) holds,
 * target by target in LoraTarget order and only for targets in the mask,
 *     A_t (L, r, in_t)  then  B_t (L, out_t, r)
 * and then, with train_norms, copies of rms_att (L, D), rms_ffn (L, D) and
 * rms_final (D) that replace the base model's norms. */
#ifndef NF_LORA_H
#define NF_LORA_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "params.h"

typedef enum { LORA_WQ, LORA_WK, LORA_WV, LORA_WO, LORA_W1, LORA_W2, LORA_W3, LORA_TARGETS } LoraTarget;

/* bits 0..3 (1 = wq, 2 = wk, 4 = wv, 8 = wo) are NeuralForge's original mask */
#define LORA_DEFAULT_TARGETS 0xFu
#define LORA_MAX_RANK        1024
#define LORA_SEGMENTS_MAX    (2 * LORA_TARGETS + 3)

typedef struct {
    int rank;         /* r >= 1 */
    float alpha;      /* scale s = alpha / r */
    float dropout;    /* probability of zeroing an adapter input while training, [0, 1) */
    unsigned targets; /* bit t set: target t carries an adapter */
    bool train_norms; /* the RMSNorm weights train too */
} LoraConfig;

typedef struct {
    float *a[LORA_TARGETS];               /* (L, r, in_t), or NULL when t is not a target */
    float *b[LORA_TARGETS];               /* (L, out_t, r), or NULL */
    float *rms_att, *rms_ffn, *rms_final; /* (L, D), (L, D), (D), or NULL without train_norms */
} LoraPointers;

/* Adapters on top of a model: their configuration and weights. */
typedef struct {
    LoraConfig config;
    LoraPointers w;
} Lora;

static inline float lora_scale(const LoraConfig *lc) { return lc->alpha / (float)lc->rank; }

const char *lora_target_name(LoraTarget t);  /* "wq", "wk", ... */
const char *lora_target_alias(LoraTarget t); /* Hugging Face's name: "q", "k", ..., "gate", "down", "up" */
/* "wq,wv", aliases "q,k,v,o,gate,down,up", or a bit mask "1".."127". */
int lora_parse_targets(const char *text, unsigned *mask, NfError *err);
/* Range checks against the model (rank at most dim, a target at least). */
int lora_config_validate(const LoraConfig *lc, const ModelConfig *c, NfError *err);
void lora_target_dims(const ModelConfig *c, LoraTarget t, int *in, int *out);

/* Fills seg in layout order ("wq.lora_a", "wq.lora_b", ..., norms) and returns how many. */
int lora_segments(const ModelConfig *c, const LoraConfig *lc, ParamSegment seg[LORA_SEGMENTS_MAX]);
uint64_t lora_param_count(const ModelConfig *c, const LoraConfig *lc);
void lora_pointers(LoraPointers *p, float *buffer, const ModelConfig *c, const LoraConfig *lc);

/* A Kaiming-uniform (bound 1/sqrt(in), as PEFT), B zero, trained norms copied from the base. */
void lora_init(float *buffer, const ModelConfig *c, const LoraConfig *lc, const ParamPointers *base, uint64_t seed);

/* base_params (params.h layout) += the adapters: W += s B A per target and
 * layer; trained norms replace the base norms. */
int lora_merge(float *base_params, const ModelConfig *c, const Lora *lora, NfError *err);

/* y (n, out) += s B (A x) for x (n, in): the adapter branch at inference.
 * u is scratch of n * rank floats. */
void lora_apply(float *y, const float *x, const Lora *lora, LoraTarget t, int layer, const ModelConfig *c, int n,
                float *u);

#endif
