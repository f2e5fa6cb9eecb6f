/* backend.h — the narrow interface between the model code and the hardware.
 *
 * Everything numeric that the forward pass (and later the backward pass)
 * does goes through these functions; the model code itself only moves
 * pointers. backend_cpu.c implements them with oneDNN's sgemm, OpenMP and
 * vectorizable loops. An accelerator backend implements the same list.
 *
 * Shapes are in comments as (rows, cols), row-major; "W" is always stored
 * (out_features, in_features) as in PyTorch and llama2.c. */
#ifndef NF_BACKEND_H
#define NF_BACKEND_H

#include "model.h"

/* out (n, out_dim) = x (n, in_dim) @ W^T, W (out_dim, in_dim) fp32 or Q8. */
void nf_matmul(float *out, const float *x, const Tensor *w, int n, int in_dim, int out_dim);

/* out (dim) = x / sqrt(mean(x^2) + 1e-5) * weight. out may alias x. */
void nf_rmsnorm(float *out, const float *x, const float *weight, int dim);

/* Rotates adjacent pairs (2i, 2i+1) of each head of vec (n_heads, head_size)
 * by angle pos * 10000^(-2i/head_size), as llama2.c does. */
void nf_rope(float *vec, int n_heads, int head_size, int pos);

/* In place: x = softmax(x). */
void nf_softmax(float *x, int n);

/* In place: gate = silu(gate) * up, both (n). */
void nf_swiglu(float *gate, const float *up, int n);

/* One query position attending to positions 0..pos of a layer's KV cache.
 *   out (n_heads, head_size), q (n_heads, head_size),
 *   keys/values (pos+1, kv_dim) with rows kv_dim apart,
 *   scores scratch (n_heads, pos+1). Query head h reads kv head h / (n_heads / n_kv_heads). */
void nf_attention_decode(float *out, const float *q, const float *keys, const float *values, float *scores,
                         int pos, int n_heads, int n_kv_heads, int head_size);

#endif
