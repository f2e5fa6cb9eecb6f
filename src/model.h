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
#include "f16.h"
#include "fileio.h"

/* The families whose layers NeuralForge computes. They differ only in what
 * the attention block carries: Qwen 2 adds biases to q, k and v; Qwen 3
 * normalizes each head of q and k (RMSNorm over head_dim) before RoPE. */
typedef enum { ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3 } ModelArch;
#define MODEL_ARCH_CHOICES "llama|qwen2|qwen3"

/* RoPE's frequencies: base^(-2i/head_dim), then, for `llama3` scaling (Llama
 * 3.1/3.2), long wavelengths divided by factor, short ones kept, and the band
 * between them interpolated (HF's _compute_llama3_parameters). */
typedef enum { ROPE_SCALING_NONE, ROPE_SCALING_LLAMA3 } RopeScalingType;
typedef struct {
    RopeScalingType type;
    float factor;           /* >= 1 */
    float low_freq_factor;  /* wavelengths above original_context / low_freq_factor are divided by factor */
    float high_freq_factor; /* wavelengths below original_context / high_freq_factor are kept */
    int original_context;   /* the context the model was first trained with */
} RopeScaling;

/* A field left 0 (head_dim, rope_theta, norm_eps) means llama2.c's value:
 * read them through config_head_size, config_rope_theta, config_norm_eps. */
typedef struct {
    int dim;        /* residual stream width */
    int hidden_dim; /* SwiGLU inner width */
    int n_layers;
    int n_heads;    /* query heads */
    int n_kv_heads; /* key/value heads (GQA); divides n_heads */
    int vocab_size;
    int seq_len;            /* longest context the model was trained for */
    bool shared_classifier; /* classifier weights == token embedding */
    int head_dim;           /* width of one head; 0: dim / n_heads (Qwen 3 has 128 with dim 1024, 16 heads) */
    ModelArch arch;
    bool qkv_bias;    /* q, k and v projections add a bias (Qwen 2) */
    bool qk_norm;     /* RMSNorm of each q and k head before RoPE (Qwen 3) */
    float rope_theta; /* RoPE base; 0: 10000 */
    RopeScaling rope_scaling;
    float norm_eps; /* RMSNorm epsilon; 0: 1e-5 */
} ModelConfig;

/* Sane bounds for any header field; larger values are refused as forged. */
#define NF_MAX_DIM     65536
#define NF_MAX_HIDDEN  262144
#define NF_MAX_LAYERS  1024
#define NF_MAX_VOCAB   (1 << 22)
#define NF_MAX_SEQ_LEN (1 << 20)

static inline int config_head_size(const ModelConfig *c) { return c->head_dim ? c->head_dim : c->dim / c->n_heads; }
/* Width of all query heads together: wq's rows and wo's columns (dim, unless head_dim says otherwise). */
static inline int config_q_dim(const ModelConfig *c) { return config_head_size(c) * c->n_heads; }
static inline int config_kv_dim(const ModelConfig *c) { return config_head_size(c) * c->n_kv_heads; }
static inline float config_rope_theta(const ModelConfig *c) { return c->rope_theta > 0 ? c->rope_theta : 10000.0f; }
static inline float config_norm_eps(const ModelConfig *c) { return c->norm_eps > 0 ? c->norm_eps : 1e-5f; }
/* What llama2.c's files cannot hold about this model ("q/k/v biases", "rope_theta 500000", ...), or NULL
 * when they can hold all of it. */
const char *config_beyond_llama2c(const ModelConfig *c, char *buf, size_t cap);
/* "llama", "qwen2", "qwen3"; and back (-1 for another name). */
const char *model_arch_name(ModelArch a);
int model_arch_parse(const char *name, ModelArch *a);
/* RoPE's inverse frequency of pair `pair` (of head_size / 2), theta and scaling applied. */
float config_rope_freq(const ModelConfig *c, int pair);

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
    const float *f32;          /* NF_F32: the values */
    const int8_t *q;           /* NF_Q8: the int8 values */
    const float *scale;        /* NF_Q8: value = q * scale[index / group_size]; or NULL, and then: */
    const uint16_t *scale_f16; /* NF_Q8: the same scales as fp16, in groups of 32 (a GGUF's Q8_0 as stored) */
    int group_size;            /* NF_Q8 */
} Tensor;

/* A Q8 tensor's scale of group g (the flat index / group_size) */
static inline float tensor_q8_scale(const Tensor *t, size_t g) {
    return t->scale ? t->scale[g] : f16_to_f32(t->scale_f16[g]);
}

/* Writes row `row` of a (rows, cols) tensor as fp32. */
void tensor_row_f32(const Tensor *t, size_t row, int cols, float *out);

/* Shapes: D = dim, QD = q_dim, H = hidden_dim, KV = kv_dim, V = vocab_size, hs = head_size. */
typedef struct {
    const float *rms_att; /* (D) */
    Tensor wq;            /* (QD, D)   rows are n_heads * head_size outputs */
    Tensor wk;            /* (KV, D) */
    Tensor wv;            /* (KV, D) */
    Tensor wo;            /* (D, QD) */
    const float *bq;      /* (QD) qkv_bias only, else NULL */
    const float *bk;      /* (KV) */
    const float *bv;      /* (KV) */
    const float *q_norm;  /* (hs) qk_norm only, else NULL */
    const float *k_norm;  /* (hs) */
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

/* What a Model was read from; the last two are converted by import.c (model_open.h). */
typedef enum { MODEL_LLAMA2C_V0, MODEL_LLAMA2C_V1, MODEL_LLAMA2C_V2, MODEL_HF, MODEL_GGUF } ModelFormat;

typedef struct {
    ModelConfig config;
    ModelWeights weights;
    ModelFormat format;
    DType dtype;              /* of the matrices */
    int group_size;           /* Q8 only */
    MappedFile file;          /* the weights point into this mapping */
    float *owned;             /* memory freed with the model: copied Q8 scales, or a checkpoint's weights */
    const float *flat;        /* model_from_params: the flat buffer (params.h) the weights view; else NULL */
    unsigned char *quantized; /* model_quantize_q8's int8 matrices and scales, freed with the model */
} Model;

const char *model_format_name(ModelFormat f);

/* Opens, validates and maps a llama2.c model file. */
int model_load(Model *m, const char *path, NfError *err);

/* Turns an fp32 model's matrices into Q8 (int8 with one scale per group of
 * model_q8_group_size values of each matrix, as llama2.c's version 2 files):
 * a quarter of the bytes to read per generated token. Norms stay fp32. A Q8
 * model is left as it is. */
int model_quantize_q8(Model *m, NfError *err);
#define NF_Q8_GROUP 64 /* the largest group size of --quant q8: a whole AVX-512 register of int8 */
/* The group size --quant q8 uses for a shape: the largest of NF_Q8_GROUP, 32
 * and 16 that divides every matrix's row length (dim, q_dim, hidden_dim), so
 * that the groups tile the rows and the int8 kernels can run (stories15M's dim
 * 288 takes 32); where none does (stories260K's hidden 172), NF_Q8_GROUP, whose
 * groups run across rows and take the plain product. */
int model_q8_group_size(const ModelConfig *c);
/* Makes the Q8 form of one fp32 matrix t of count values in groups of gs: q (count) and the ceil(count / gs)
 * scales, into scale (fp32) or, where model_to_q8 was asked for fp16 scales, into scale_f16 (the other is NULL) */
typedef void (*Q8Fill)(void *ctx, const Tensor *t, size_t count, int gs, int8_t *q, float *scale, uint16_t *scale_f16);
/* Turns an fp32 model's matrices into Q8 in groups of group_size, each made by fill (model_quantize_q8 quantizes;
 * import.c's GGUF reader copies a file's own Q8_0 blocks). Where the model owns its fp32 buffer (model_from_params
 * of memory it was given to free: an imported model, a checkpoint's weights), the matrices' fp32 pages are given
 * back, so that a Q8 model holds its int8 values and scales alone (1.0625 bytes a weight against 4 for groups of 64
 * with fp32 scales or of 32 with fp16 ones; 1.125 for 32 with fp32), and model->flat becomes NULL. f16_scales: the
 * scales are held as fp16 (for values that are fp16 already: a GGUF's Q8_0; groups of 32 only, which the kernels
 * rely on). A Q8 model is left as it is. */
int model_to_q8(Model *m, int group_size, bool f16_scales, Q8Fill fill, void *ctx, NfError *err);
/* Bytes a Q8 tensor holds per group for its scale: 2 (fp16) or 4 */
static inline size_t tensor_q8_scale_bytes(const Tensor *t) { return t->scale ? sizeof(float) : sizeof(uint16_t); }
void model_free(Model *m);

#endif
