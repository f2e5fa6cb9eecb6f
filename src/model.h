/* model.h — the LLaMA model: its configuration, its weights, and the
 * llama2.c model files they are read from.
 *
 * Three on-disk formats are read (docs/formats.md has the byte layouts):
 *   v0  legacy llama2.c: 7 int32 header, fp32 weights, freq_cis tables
 *       (skipped), negative vocab_size = separate classifier at the end;
 *   v1  "ak42" magic, version 1, 256-byte header, fp32 weights, norms first;
 *   v2  "ak42" magic, version 2, Q8_0: int8 weights + fp32 per-group scales.
 * Every dimension comes from the header; the header is validated and the
 * file size checked against it before anything is allocated. fp32 and int8
 * weights are used in place from the memory-mapped file. */
#ifndef NF_MODEL_H
#define NF_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "fileio.h"

typedef struct {
    int dim;        /* residual stream width */
    int hidden_dim; /* SwiGLU inner width */
    int n_layers;
    int n_heads;    /* query heads; head_size = dim / n_heads */
    int n_kv_heads; /* key/value heads (GQA); divides n_heads */
    int vocab_size;
    int seq_len;            /* longest context the model was trained for */
    bool shared_classifier; /* classifier weights == token embedding */
} ModelConfig;

/* Sane bounds for any header field; larger values are refused as forged. */
#define NF_MAX_DIM     65536
#define NF_MAX_HIDDEN  262144
#define NF_MAX_LAYERS  1024
#define NF_MAX_VOCAB   (1 << 22)
#define NF_MAX_SEQ_LEN (1 << 20)

static inline int config_head_size(const ModelConfig *c) { return c->dim / c->n_heads; }
static inline int config_kv_dim(const ModelConfig *c) { return c->dim / c->n_heads * c->n_kv_heads; }

/* Checks every field against the bounds and the divisibility rules. */
int config_validate(const ModelConfig *c, NfError *err);
/* Number of weights (parameters), the classifier counted once when shared. */
uint64_t config_param_count(const ModelConfig *c);
/* Every field equal. */
bool config_equal(const ModelConfig *a, const ModelConfig *b);

typedef enum { NF_F32 = 0, NF_Q8 = 1 } DType;

/* A weight matrix, or a stack of them (one per layer), row-major. */
typedef struct {
    DType dtype;
    const float *f32;   /* NF_F32: the values */
    const int8_t *q;    /* NF_Q8: the int8 values */
    const float *scale; /* NF_Q8: value = q * scale[index / group_size] */
    int group_size;     /* NF_Q8 */
} Tensor;

/* Writes row `row` of a (rows, cols) tensor as fp32. */
void tensor_row_f32(const Tensor *t, size_t row, int cols, float *out);

/* Shapes: D = dim, H = hidden_dim, KV = kv_dim, V = vocab_size. */
typedef struct {
    const float *rms_att; /* (D) */
    Tensor wq;            /* (D, D)   rows are n_heads * head_size outputs */
    Tensor wk;            /* (KV, D) */
    Tensor wv;            /* (KV, D) */
    Tensor wo;            /* (D, D) */
    const float *rms_ffn; /* (D) */
    Tensor w1;            /* (H, D)  gate */
    Tensor w2;            /* (D, H)  down */
    Tensor w3;            /* (H, D)  up */
} LayerWeights;

typedef struct {
    Tensor token_embedding; /* (V, D) */
    LayerWeights *layers;   /* (n_layers) */
    const float *rms_final; /* (D) */
    Tensor wcls;            /* (V, D), the embedding itself when shared */
} ModelWeights;

typedef enum { MODEL_LLAMA2C_V0, MODEL_LLAMA2C_V1, MODEL_LLAMA2C_V2 } ModelFormat;

typedef struct {
    ModelConfig config;
    ModelWeights weights;
    ModelFormat format;
    DType dtype;              /* of the matrices */
    int group_size;           /* Q8 only */
    MappedFile file;          /* the weights point into this mapping */
    float *owned;             /* memory freed with the model: copied Q8 scales, or a checkpoint's weights */
    unsigned char *quantized; /* model_quantize_q8's int8 matrices and scales, freed with the model */
} Model;

const char *model_format_name(ModelFormat f);

/* Opens, validates and maps a llama2.c model file. */
int model_load(Model *m, const char *path, NfError *err);

/* Turns an fp32 model's matrices into Q8 (int8 with one scale per group of
 * group_size values of each matrix, as llama2.c's version 2 files): a quarter
 * of the bytes to read per generated token. Norms stay fp32. A Q8 model is
 * left as it is. */
int model_quantize_q8(Model *m, int group_size, NfError *err);
#define NF_Q8_GROUP 64 /* the group size of --quant q8: a whole AVX-512 register of int8 */
void model_free(Model *m);

#endif
