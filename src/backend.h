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
#include "team.h"

/* Threads of every parallel kernel: n >= 1, or 0 for OMP_NUM_THREADS if set, else one per core. */
void nf_set_threads(int n);
/* True when nobody chose the count that nf_set_threads(n) sets: n is 0 and OMP_NUM_THREADS is unset (one per core) */
bool nf_threads_unchosen(int n);
/* True when the products of one row (nf_matmuls with n = 1, fp32 or Q8) give the same bits at any thread count:
 * each output is one thread's dot product. Not in the baseline tier, whose fp32 row goes through oneDNN. */
bool nf_row_products_thread_invariant(void);
int nf_threads(void);
/* fp32 GEMM speed measured now on square products of size n (GFLOP/s): the
 * peak that benchmarks report their efficiency (MFU) against. */
double nf_gemm_peak_gflops(int n);
/* Memory read speed measured now (GB/s), ten passes of every thread summing
 * its part of a buffer of this many bytes, larger than the caches: the best
 * pass, and the median one (how far apart they are says how much the
 * machine's read speed moves from one pass to the next). Generation reads
 * each weight once per token, so the best pass bounds its tokens/s. Both 0
 * when the buffer cannot be allocated. */
typedef struct {
    double best, median;
} NfReadSpeed;
NfReadSpeed nf_memory_read_gbytes_s(size_t bytes);
/* One such buffer, for a caller that times passes one at a time between its own work (benchmark's paired
 * passes): a shared machine's read speed moves within seconds, so a bound is fairest measured beside the work. */
typedef struct {
    float *buf; /* [n] ones, in huge pages, placed by the threads that read them */
    size_t n;
} NfReadBuffer;
int nf_read_buffer_init(NfReadBuffer *r, size_t bytes); /* -1 when it cannot be allocated */
double nf_read_buffer_pass(NfReadBuffer *r);            /* GB/s of one pass by all threads */
void nf_read_buffer_free(NfReadBuffer *r);
/* Which hand-written kernels this CPU runs: "avx512-vnni-bf16",
 * "avx512-vnni", "avx512", "avx2-vnni", "avx2" or "portable" (found at run
 * time; NF_CPU=avx2 caps it at the AVX2 tier, NF_CPU=baseline forces
 * "portable"). nf_cpu_check_env refuses any other NF_CPU value. */
const char *nf_cpu_kernels(void);
int nf_cpu_check_env(NfError *err);

/* out (n, out_dim) = x (n, in_dim) @ W^T, W (out_dim, in_dim) fp32 or Q8. */
void nf_matmul(float *out, const float *x, const Tensor *w, int n, int in_dim, int out_dim);
/* Products that share their input: out (n, out_dim) = x (n, in_dim) @ W^T
 * for each. They run as one: one pass of the threads over all their rows
 * for a single row of x (team's threads where team is not NULL, team.h:
 * decode's; else OpenMP's), and x quantized once for Q8 weights. */
typedef struct {
    float *out;
    const Tensor *w;
    int out_dim;
} NfProduct;
void nf_matmuls(const NfProduct *products, int count, const float *x, int n, int in_dim, NfTeam *team);

/* out (dim) = x / sqrt(mean(x^2) + eps) * weight. out may alias x. */
void nf_rmsnorm(float *out, const float *x, const float *weight, int dim, float eps);

/* In place: x = softmax(x). */
void nf_softmax(float *x, int n);

/* Where a layer's cached keys (or values) lie: kv head j, position t starts
 * head_stride * j + row_stride * t values from the base. Generation keeps
 * its cache head-major (row_stride = head_size), so that a decode step
 * streams each head's rows; (positions, kv_dim) rows are {head_size, kv_dim}. */
typedef struct {
    size_t head_stride, row_stride;
} NfKvLayout;

/* One query position attending to positions 0..pos of a layer's KV cache.
 *   out (n_heads, head_size), q (n_heads, head_size),
 *   keys/values: pos+1 rows per kv head, laid out as `layout` says,
 *   scores scratch (n_heads, pos+1). Query head h reads kv head h / (n_heads / n_kv_heads).
 * The heads are split between team's threads (team.h), or OpenMP's where team is NULL. */
void nf_attention_decode(float *out, const float *q, const float *keys, const float *values, NfKvLayout layout,
                         float *scores, int pos, int n_heads, int n_kv_heads, int head_size, NfTeam *team);
/* The same over a bf16 cache (keys/values as bfloat16 bits): each value is
 * widened exactly, so only the cache's rounding differs from fp32's. */
void nf_attention_decode_bf16(float *out, const float *q, const uint16_t *keys, const uint16_t *values,
                              NfKvLayout layout, float *scores, int pos, int n_heads, int n_kv_heads, int head_size,
                              NfTeam *team);
/* Rows between one layer of generation's KV cache (keys or values, fp32 or
 * bf16: the other pointer NULL) and a (rows, n_kv_heads * head_size) buffer x:
 * store writes x's n rows at positions pos.., rounded to bf16 for a bf16
 * cache; load reads positions 0..n-1 back (widened exactly). */
void nf_kv_store(float *cache, uint16_t *cache_bf16, NfKvLayout layout, const float *x, int n, int pos, int n_kv_heads,
                 int head_size);
void nf_kv_load(float *x, const float *cache, const uint16_t *cache_bf16, NfKvLayout layout, int n, int n_kv_heads,
                int head_size);

/* ---- training ops -----------------------------------------------------------
 * Each op's forward and backward sit side by side. Activations are (B, T, C)
 * flattened to N = B*T rows. A backward pass *accumulates* (+=) into
 * parameter gradients and into input gradients, so a residual branch and
 * micro-batches add up without extra copies; a NULL gradient pointer means
 * "not needed" (frozen weights, or the first layer's input). */

/* How a backward product writes the input gradient: see nf_matmul_backward */
typedef enum { NF_SET, NF_ADD } NfWrite;

/* out (N, OC) = inp (N, C) @ W^T, W (OC, C); for a few rows of a large W as sgemm on W inp^T (backend_cpu.c) */
void nf_matmul_forward(float *out, const float *inp, const float *w, int N, int C, int OC);

/* The same two products in bf16 (training with --dtype bf16): operands are
 * rounded to bfloat16, products accumulate in fp32, through oneDNN's matmul
 * (AVX512-BF16 where the CPU has it). A Bf16Context holds oneDNN's engine and
 * stream and room for the rounded operands of up to max_floats values each;
 * one per run. Should oneDNN refuse a product, it is computed in fp32. */
typedef struct Bf16Context Bf16Context;
Bf16Context *nf_bf16_create(size_t max_floats);
void nf_bf16_free(Bf16Context *ctx);
/* Rounds the weights w (n floats) once and keeps the copy: a product whose
 * weight lies inside w reads the copy instead of rounding the weight again.
 * Whoever changes w afterwards must write the change into the returned
 * copy through nf_bf16_round: AdamW does as it updates (optimizer_update).
 * NULL when there is no memory for it (or more than a few buffers are
 * kept): the products then round as before. */
uint16_t *nf_bf16_keep(Bf16Context *ctx, const float *w, size_t n);
/* out (n) = x rounded to bfloat16, to nearest even, the same bits as the
 * products' rounding (AVX512-BF16 where the CPU has it); on this thread. */
void nf_bf16_round(uint16_t *out, const float *x, size_t n);
void nf_matmul_forward_bf16(Bf16Context *ctx, float *out, const float *inp, const float *w, int N, int C, int OC);
void nf_matmul_backward_bf16(Bf16Context *ctx, float *dinp, NfWrite dinp_write, float *dw, NfWrite dw_write,
                             const float *dout, const float *inp, const float *w, int N, int C, int OC);
/* The same with a weight held only in bf16 (a LoRA run's frozen base under
 * --dtype bf16): w (OC, C) as bfloat16 bits, read as they are; no weight
 * gradient (the weight is frozen). Should oneDNN refuse, the product runs
 * in fp32 on w widened slice by slice. */
void nf_matmul_forward_bf16w(Bf16Context *ctx, float *out, const float *inp, const uint16_t *w, int N, int C, int OC);
void nf_matmul_backward_bf16w(Bf16Context *ctx, float *dinp, NfWrite dinp_write, const float *dout, const uint16_t *w,
                              int N, int C, int OC);
/* out (N, OC) += inp (N, C) @ W^T: a second branch added onto a projection (LoRA) */
void nf_matmul_forward_add(float *out, const float *inp, const float *w, int N, int C, int OC);
/* dinp (N, C) = dout (N, OC) @ W, or += under NF_ADD (a second path into
 * the same input);  dw (OC, C) = dout^T @ inp, or += under NF_ADD (a later
 * micro-batch). Writing the first contribution outright spares zeroing the
 * buffer beforehand, and the product's read of it. */
void nf_matmul_backward(float *dinp, NfWrite dinp_write, float *dw, NfWrite dw_write, const float *dout,
                        const float *inp, const float *w, int N, int C, int OC);

/* x (n) = 0, across threads: one core's stores cannot fill the memory
 * bandwidth (a separate classifier's embedding gradient is 37 MB at 15M). */
void nf_zero(float *x, size_t n);

/* out (N, C) = inp * rstd * weight with rstd (N) = 1/sqrt(mean(inp^2) + eps), saved for backward. out may
 * alias inp. */
void nf_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
/* dinp (N, C) += the gradient through the norm;  dweight (C) = its
 * gradient, or += under NF_ADD */
void nf_rmsnorm_backward(float *dinp, float *dweight, NfWrite dweight_write, const float *dout, const float *inp,
                         const float *weight, const float *rstd, int N, int C);

/* RoPE rotates the adjacent pairs (i, i+1) of each head at position p by
 * the angle p * config_rope_freq(c, i / 2) (theta^(-i/head_size), scaled),
 * as llama2.c does; Hugging Face's rotate-half layout is the same
 * rotation on permuted rows (llama_interop.h). The cosines and sines depend
 * only on the position, so they are computed once per run: rope (positions,
 * head_size) holds (cos, sin) of each pair of each position 0..positions-1. */
void nf_rope_table(float *rope, int positions, const ModelConfig *c);
/* In place on x (B, T, n_heads, head_size) at positions pos0..pos0+T-1
 * (rows of the table). Backward rotates the gradient by the opposite angle. */
void nf_rope_forward(float *x, const float *rope, int B, int T, int pos0, int n_heads, int head_size);
void nf_rope_backward(float *dx, const float *rope, int B, int T, int pos0, int n_heads, int head_size);

/* y (N, C) += bias (C) on every row; dbias (C) = the column sums of dy (N, C), or += under NF_ADD. */
void nf_bias_forward(float *y, const float *bias, int N, int C);
void nf_bias_backward(float *dbias, NfWrite write, const float *dy, int N, int C);

/* Causal attention with GQA, tiled by blocks of query rows: no (T, T)
 * matrix is stored, only each row's softmax normalizer; backward recomputes
 * the scores tile by tile.
 *   q (B, T, NH, hs): queries at positions q_start .. q_start+T-1 (training:
 *   q_start 0; a prompt chunk after earlier tokens: where it starts)
 *   k and v (B, q_start+T, NKV, hs) -> out (B, T, NH, hs)
 *   lse (B, NH, T): log-sum-exp of each query row's scores, saved for
 *   backward (NULL: not wanted)
 *   scratch: nf_attention_scratch_floats(B, q_start+T, NKV, hs) floats, for both directions */
void nf_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                          int q_start, int NH, int NKV, int hs, float *scratch);
/* dq += ..., dk += ..., dv += ... from dout (B, T, NH, hs) */
void nf_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q,
                           const float *k, const float *v, int B, int T, int NH, int NKV, int hs, float *scratch);
size_t nf_attention_scratch_floats(int B, int keys, int NKV, int hs);

/* out (N) = silu(gate) * up; out may be gate (in place) */
void nf_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
/* dgate, dup (N) = the gradients of out through silu(gate) * up (written, not added) */
void nf_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);

/* Cross-entropy of logits (N, V) against targets (N). A target < 0 is
 * masked (a prompt token of instruction data): its row adds nothing to the
 * loss and gets a zero gradient. Returns the loss summed over the other rows
 * (double; 0 when every row is masked), in row order so it is the same bits
 * on any thread count. If grad_scale != 0 the logits are replaced by
 * d(loss_sum * grad_scale)/d(logits) = (softmax - onehot) * grad_scale, and
 * a masked row by zeros; otherwise they are left overwritten (by
 * unnormalized softmax values; masked rows untouched). The caller divides
 * by the count of rows with target >= 0 for a mean. */
double nf_cross_entropy(float *logits, const int *targets, int N, int V, float grad_scale);

#endif
