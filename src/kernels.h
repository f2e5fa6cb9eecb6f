/* kernels.h — the hand-written inner loops of backend_cpu.c, in three tiers:
 * AVX-512 (kernels_avx512.c) and AVX2 + FMA (kernels_avx2.c, the same
 * kernels on 8-float vectors under the avx2_ names) on x86-64, and NEON
 * (kernels_neon.c, on 4-float vectors under the neon_ names) on aarch64.
 * Only backend_cpu.c calls them, and only after cpu_tier() has confirmed
 * the instructions; each has a portable twin in backend_cpu.c. All are
 * serial. Each file compiles to nothing on the other architecture. */
#ifndef NF_KERNELS_H
#define NF_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How many rows ahead the attention kernels of both x86 tiers prefetch: 4 KiB
 * further down a head's run of KV-cache rows (at least 4 rows). Left to the
 * hardware prefetcher alone, the decode attention at positions 500 and 1000
 * took 20-37% longer inside generation over a bf16 cache, and at 768 twice as
 * long over an fp32 cache (its 256-byte rows: 20 against 45 GB/s). */
static inline int kernel_rows_ahead(size_t row_bytes) { return row_bytes >= 1024 ? 4 : (int)(4096 / row_bytes); }

/* Every cache line of bytes at p fetched into L1 (prefetcht0 on x86) */
static inline void kernel_prefetch(const void *p, size_t bytes) {
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)p + b, 0, 3);
}

/* a (n) . b (n) */
float avx512_dot(const float *a, const float *b, int n);
/* out (rows) = w (rows, n; rows ld floats apart) x (n) */
void avx512_dots(float *out, const float *w, size_t ld, const float *x, int rows, int n);
/* out (n) = sum over r of a[r] * v row r (rows, n; rows ld floats apart) */
void avx512_weighted_sum(float *out, const float *a, const float *v, size_t ld, int rows, int n);
/* avx512_dots and avx512_weighted_sum over rows of bfloat16 (a bf16 KV
 * cache): each value widened to fp32 exactly, then the same arithmetic. */
void avx512_dots_bf16(float *out, const uint16_t *w, size_t ld, const float *x, int rows, int n);
void avx512_weighted_sum_bf16(float *out, const float *a, const uint16_t *v, size_t ld, int rows, int n);
/* row[i] = exp(row[i] - max) for i < n; returns their sum */
float avx512_exp_shifted_sum(float *row, int n, float max);
/* Attention's rows of scores, n live of width: softmax in place, zeros from
 * n to width, and returns the log-sum-exp; and its backward, dp = p (dp -
 * p . dp) scale with zeros from n to width. */
float avx512_softmax_row(float *row, int n, int width);
void avx512_softmax_backward_row(float *dp, const float *p, int n, int width, float scale);
/* out = silu(gate) * up;  dgate, dup = the backward of it (backend.h's nf_swiglu_forward/backward) */
void avx512_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void avx512_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);

/* One panel of a small product, attention's tiles: c (rows <= PANEL_ROWS,
 * cols <= PANEL_COLS; rows ldc apart) = alpha sum over s0 <= s < s1 of
 * a(r, s) b row s, added to c when accumulate. a(r, s) is a[r a_row + s
 * a_col] (a or its transpose in memory); b's rows are ldb floats apart. */
#define PANEL_ROWS 6
#define PANEL_COLS 64
void avx512_panel_product(float *c, size_t ldc, const float *a, size_t a_row, size_t a_col, const float *b, size_t ldb,
                          int rows, int cols, int s0, int s1, float alpha, bool accumulate);

/* One Q8 weight row wr (dim int8, scales ws per group of gs: 32, or a
 * multiple of 64) against n rows of x quantized by avx512_quantize_q8 (xq, xs, xo, each
 * row's). out[i * out_stride] = row . x row i. (AVX-512 VNNI) */
#define VNNI_Q8_XROWS 4 /* x rows per pass over the weight row */
void vnni_q8_row(float *out, size_t out_stride, const int8_t *wr, const float *ws, const int8_t *xq, const float *xs,
                 const int32_t *xo, int n, int dim, int gs);

/* Decode's product for groups of 64 or 32 (gs): out[r] = row r . x for `rows`
 * consecutive Q8 weight rows (w: rows * dim int8; their scales ws, or, for
 * groups of 32, ws16 as fp16 with ws NULL) against one x row quantized by
 * avx512_quantize_q8; each out[r] is vnni_q8_row's on the same scales as
 * fp32, bit for bit. The rows one after another without vnni_q8_row's
 * per-row set-up, their sums reduced four at a time. (AVX-512 VNNI) */
void vnni_q8_gemv(float *out, const int8_t *w, const float *ws, const uint16_t *ws16, const int8_t *xq, const float *xs,
                  const int32_t *xo, int rows, int dim, int gs);

/* x (groups * gs) quantized for vnni_q8_row, gs a multiple of 16: per
 * group the scale xs = max |x| / 127, xq = round(x / xs), and
 * xo = -128 sum(xq), which takes out what unsigned weights add to its dots. */
void avx512_quantize_q8(int8_t *xq, float *xs, int32_t *xo, const float *x, size_t groups, int gs);

/* out = x rounded to bfloat16 (to nearest even) for the first multiple of
 * 32 values; returns how many it did. (AVX512-BF16) */
size_t avx512bf16_round(uint16_t *out, const float *x, size_t n);

/* out = the fp16 values h widened to fp32 (exactly, subnormals too) for the first multiple of the vector's width
 * (16, 8 and 4 values in the three tiers); returns how many it did. (F16C; NEON's fcvtl) */
size_t avx512_f16_widen(float *out, const uint16_t *h, size_t n);

/* The AVX2 tier: each as its avx512_ twin above. */
float avx2_dot(const float *a, const float *b, int n);
void avx2_dots(float *out, const float *w, size_t ld, const float *x, int rows, int n);
void avx2_weighted_sum(float *out, const float *a, const float *v, size_t ld, int rows, int n);
void avx2_dots_bf16(float *out, const uint16_t *w, size_t ld, const float *x, int rows, int n);
void avx2_weighted_sum_bf16(float *out, const float *a, const uint16_t *v, size_t ld, int rows, int n);
float avx2_exp_shifted_sum(float *row, int n, float max);
float avx2_softmax_row(float *row, int n, int width);
void avx2_softmax_backward_row(float *dp, const float *p, int n, int width, float scale);
void avx2_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void avx2_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);
/* cols <= PANEL_COLS, rows <= PANEL_ROWS, as avx512_panel_product */
void avx2_panel_product(float *c, size_t ldc, const float *a, size_t a_row, size_t a_col, const float *b, size_t ldb,
                        int rows, int cols, int s0, int s1, float alpha, bool accumulate);
/* vnni_q8_row's twin for gs a multiple of 32, x quantized by
 * avx2_quantize_q8 (the same xq and xs; no offsets: the weights' signs move
 * onto x instead). vnni: the CPU has AVX-VNNI (vpdpbusd on 256 bits). */
#define AVX2_Q8_XROWS 4
void avx2_q8_row(float *out, size_t out_stride, const int8_t *wr, const float *ws, const int8_t *xq, const float *xs,
                 int n, int dim, int gs, bool vnni);
void avx2_quantize_q8(int8_t *xq, float *xs, const float *x, size_t groups, int gs);
/* f32_to_bf16 (f16.h) on the first multiple of 16 values; returns how many it did */
size_t avx2_bf16_round(uint16_t *out, const float *x, size_t n);
size_t avx2_f16_widen(float *out, const uint16_t *h, size_t n);

/* The NEON tier (aarch64): each as its avx2_ twin above. */
float neon_dot(const float *a, const float *b, int n);
void neon_dots(float *out, const float *w, size_t ld, const float *x, int rows, int n);
void neon_weighted_sum(float *out, const float *a, const float *v, size_t ld, int rows, int n);
void neon_dots_bf16(float *out, const uint16_t *w, size_t ld, const float *x, int rows, int n);
void neon_weighted_sum_bf16(float *out, const float *a, const uint16_t *v, size_t ld, int rows, int n);
float neon_exp_shifted_sum(float *row, int n, float max);
float neon_softmax_row(float *row, int n, int width);
void neon_softmax_backward_row(float *dp, const float *p, int n, int width, float scale);
void neon_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void neon_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);
void neon_panel_product(float *c, size_t ldc, const float *a, size_t a_row, size_t a_col, const float *b, size_t ldb,
                        int rows, int cols, int s0, int s1, float alpha, bool accumulate);
/* vnni_q8_row's twin for gs a multiple of 16, x quantized by
 * neon_quantize_q8 (the same xq and xs as avx2_quantize_q8; signed by
 * signed bytes, so no offsets). dotprod: the CPU has ARMv8.2's DotProd (sdot). */
#define NEON_Q8_XROWS 4
void neon_q8_row(float *out, size_t out_stride, const int8_t *wr, const float *ws, const int8_t *xq, const float *xs,
                 int n, int dim, int gs, bool dotprod);
void neon_quantize_q8(int8_t *xq, float *xs, const float *x, size_t groups, int gs);
size_t neon_f16_widen(float *out, const uint16_t *h, size_t n);

#endif
