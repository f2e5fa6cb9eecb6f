/* params.h — the trainable parameters as one flat fp32 buffer.
 *
 * Weights, gradients and both AdamW moments share this layout, which is
 * llama2.c's legacy (v0) order without the freq_cis tables, so exporting a
 * model is writing the buffer. ParamPointers names the pieces of any buffer
 * laid out this way. */
#ifndef NF_PARAMS_H
#define NF_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

#include "model.h"

/* L = n_layers, D = dim, QD = q_dim, H = hidden_dim, KV = kv_dim, V = vocab_size, hs = head_size */
typedef struct {
    float *token_embedding; /* (V, D) */
    float *rms_att;         /* (L, D) */
    float *wq;              /* (L, QD, D) */
    float *wk;              /* (L, KV, D) */
    float *wv;              /* (L, KV, D) */
    float *wo;              /* (L, D, QD) */
    float *rms_ffn;         /* (L, D) */
    float *w1;              /* (L, H, D) */
    float *w2;              /* (L, D, H) */
    float *w3;              /* (L, H, D) */
    float *rms_final;       /* (D) */
    float *wcls;            /* (V, D); the embedding itself when the classifier is shared */
    float *bq;              /* (L, QD) qkv_bias only, else NULL */
    float *bk;              /* (L, KV) */
    float *bv;              /* (L, KV) */
    float *q_norm;          /* (L, hs) qk_norm only, else NULL */
    float *k_norm;          /* (L, hs) */
} ParamPointers;

/* One named piece of the flat buffer, in layout order. */
typedef struct {
    const char *name; /* "token_embedding", "rms_att", "wq", ... */
    size_t offset;    /* in floats from the start */
    size_t count;     /* floats */
    bool is_norm;     /* RMSNorm weights and biases: no weight decay */
} ParamSegment;

/* The segments by name: param_segments fills seg[PARAM_WQ] with wq, and so on. What a model lacks (a shared
 * classifier, biases or q/k norms) has count 0. The pieces llama2.c's files hold come first, in their order,
 * so that such a model's buffer is its v0 file's weights. */
typedef enum {
    PARAM_TOKEN_EMBEDDING,
    PARAM_RMS_ATT,
    PARAM_WQ,
    PARAM_WK,
    PARAM_WV,
    PARAM_WO,
    PARAM_RMS_FFN,
    PARAM_W1,
    PARAM_W2,
    PARAM_W3,
    PARAM_RMS_FINAL,
    PARAM_WCLS,
    PARAM_BQ,
    PARAM_BK,
    PARAM_BV,
    PARAM_Q_NORM,
    PARAM_K_NORM
} ParamSegmentId;
#define PARAM_SEGMENTS_MAX 17

/* Fills seg in layout order and returns PARAM_SEGMENTS_MAX (absent pieces have count 0). */
int param_segments(const ModelConfig *c, ParamSegment seg[PARAM_SEGMENTS_MAX]);

/* Points p at the pieces of base (config_param_count(c) floats). */
void param_pointers(ParamPointers *p, float *base, const ModelConfig *c);

/* Points p at the weights of a loaded fp32 model in place (a read-only view
 * of its mapping: nothing is copied). Fails (-1) when the model's weights do
 * not lie as one piece per kind, as in Q8 files; then copy them instead. */
int param_view_of_model(ParamPointers *p, const Model *m);

/* Copies every weight of a loaded model (any format; Q8 is dequantized) into params. */
void params_from_model(float *params, const Model *m);

/* Makes m an inference view of params (no file behind it); free it with model_free. */
int model_from_params(Model *m, const ModelConfig *c, float *params, NfError *err);

/* Fills params as llama2.c's model.py initializes a fresh model: normal(0, 0.02)
 * for matrices, with wo and w2 scaled down by sqrt(2 * n_layers); ones for norms. */
void params_init(float *params, const ModelConfig *c, uint64_t seed);
/* The same layout and standard deviations, drawn uniform from a counter hash
 * on every thread at once: a billion weights in about a second instead of a
 * minute, for `benchmark`'s random weights, whose values time nothing. */
void params_init_fast(float *params, const ModelConfig *c, uint64_t seed);

#endif
