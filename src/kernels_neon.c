/* kernels_neon.c — the inner loops for aarch64 (Advanced SIMD, which every
 * ARMv8-A CPU has): each is the AVX2 kernel of the same name in
 * kernels_avx2.c on 4-float vectors, with the same arithmetic (the same
 * exp polynomial, the same order of sums per lane). The Q8 product uses
 * the dot-product instruction (sdot, ARMv8.2's optional DotProd) where
 * cpu_has() in backend_cpu.c found it, else widening multiplies. NEON has
 * no masked loads, so ragged ends go through a small zeroed copy. These
 * are serial: the callers split rows between threads. bf16 rounding stays
 * the portable loop (the compiler vectorizes it). */
#include "kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* the first `left` floats of p (all 4 for left >= 4), the rest zero */
static inline float32x4_t load_part(const float *p, long left) {
    if (left >= 4) return vld1q_f32(p);
    float part[4] = {0};
    memcpy(part, p, (size_t)(left > 0 ? left : 0) * sizeof(float));
    return vld1q_f32(part);
}

/* v's first `left` lanes to p (all 4 for left >= 4) */
static inline void store_part(float *p, float32x4_t v, long left) {
    if (left >= 4) {
        vst1q_f32(p, v);
        return;
    }
    float part[4];
    vst1q_f32(part, v);
    memcpy(p, part, (size_t)(left > 0 ? left : 0) * sizeof(float));
}

/* lanes 0 .. left-1 all ones */
static inline uint32x4_t first_lanes(long left) {
    static const uint32_t index[4] = {0, 1, 2, 3};
    return vcltq_u32(vld1q_u32(index), vdupq_n_u32((uint32_t)(left > 4 ? 4 : left < 0 ? 0 : left)));
}

/* 4 (or `left`, the rest zero) bf16 values widened to fp32 exactly */
static inline float32x4_t load_bf16(const uint16_t *p, long left) {
    if (left >= 4) return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
    uint16_t part[4] = {0};
    memcpy(part, p, (size_t)(left > 0 ? left : 0) * sizeof(uint16_t));
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(part), 16));
}

float neon_dot(const float *a, const float *b, int n) {
    float32x4_t v0 = vdupq_n_f32(0), v1 = vdupq_n_f32(0), v2 = vdupq_n_f32(0), v3 = vdupq_n_f32(0);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v0 = vfmaq_f32(v0, vld1q_f32(a + i), vld1q_f32(b + i));
        v1 = vfmaq_f32(v1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        v2 = vfmaq_f32(v2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        v3 = vfmaq_f32(v3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i < n; i += 4) /* the last 1..15 values; a zeroed lane adds nothing */
        v0 = vfmaq_f32(v0, load_part(a + i, n - i), load_part(b + i, n - i));
    return vaddvq_f32(vaddq_f32(vaddq_f32(v0, v1), vaddq_f32(v2, v3)));
}

/* Four rows share each load of x, two accumulators per row (as avx2_dots) */
void neon_dots(float *out, const float *w, size_t ld, const float *x, int rows, int n) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *w0 = w + (size_t)r * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            float32x4_t x0 = vld1q_f32(x + i), x1 = vld1q_f32(x + i + 4);
            a0 = vfmaq_f32(a0, vld1q_f32(w0 + i), x0);
            b0 = vfmaq_f32(b0, vld1q_f32(w0 + i + 4), x1);
            a1 = vfmaq_f32(a1, vld1q_f32(w1 + i), x0);
            b1 = vfmaq_f32(b1, vld1q_f32(w1 + i + 4), x1);
            a2 = vfmaq_f32(a2, vld1q_f32(w2 + i), x0);
            b2 = vfmaq_f32(b2, vld1q_f32(w2 + i + 4), x1);
            a3 = vfmaq_f32(a3, vld1q_f32(w3 + i), x0);
            b3 = vfmaq_f32(b3, vld1q_f32(w3 + i + 4), x1);
        }
        for (; i < n; i += 4) {
            float32x4_t x0 = load_part(x + i, n - i);
            a0 = vfmaq_f32(a0, load_part(w0 + i, n - i), x0);
            a1 = vfmaq_f32(a1, load_part(w1 + i, n - i), x0);
            a2 = vfmaq_f32(a2, load_part(w2 + i, n - i), x0);
            a3 = vfmaq_f32(a3, load_part(w3 + i, n - i), x0);
        }
        out[r] = vaddvq_f32(vaddq_f32(a0, b0));
        out[r + 1] = vaddvq_f32(vaddq_f32(a1, b1));
        out[r + 2] = vaddvq_f32(vaddq_f32(a2, b2));
        out[r + 3] = vaddvq_f32(vaddq_f32(a3, b3));
    }
    for (; r < rows; r++) out[r] = neon_dot(w + (size_t)r * ld, x, n);
}

void neon_weighted_sum(float *out, const float *a, const float *v, size_t ld, int rows, int n) {
    for (int c = 0; c < n; c += 16) { /* 16 columns in four registers through all rows */
        float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
        for (int r = 0; r < rows; r++) {
            const float *vr = v + (size_t)r * ld + c;
            for (int k = 0; k < 4; k++) acc[k] = vfmaq_n_f32(acc[k], load_part(vr + 4 * k, n - c - 4 * k), a[r]);
        }
        for (int k = 0; k < 4; k++) store_part(out + c + 4 * k, acc[k], n - c - 4 * k);
    }
}

/* As avx2_dots_bf16: four key rows share each load of x */
void neon_dots_bf16(float *out, const uint16_t *w, size_t ld, const float *x, int rows, int n) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const uint16_t *w0 = w + (size_t)r * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < n; i += 4) {
            float32x4_t x0 = load_part(x + i, n - i);
            a0 = vfmaq_f32(a0, load_bf16(w0 + i, n - i), x0);
            a1 = vfmaq_f32(a1, load_bf16(w1 + i, n - i), x0);
            a2 = vfmaq_f32(a2, load_bf16(w2 + i, n - i), x0);
            a3 = vfmaq_f32(a3, load_bf16(w3 + i, n - i), x0);
        }
        out[r] = vaddvq_f32(a0), out[r + 1] = vaddvq_f32(a1), out[r + 2] = vaddvq_f32(a2), out[r + 3] = vaddvq_f32(a3);
    }
    for (; r < rows; r++) {
        const uint16_t *wr = w + (size_t)r * ld;
        float32x4_t a = vdupq_n_f32(0);
        for (int i = 0; i < n; i += 4) a = vfmaq_f32(a, load_bf16(wr + i, n - i), load_part(x + i, n - i));
        out[r] = vaddvq_f32(a);
    }
}

void neon_weighted_sum_bf16(float *out, const float *a, const uint16_t *v, size_t ld, int rows, int n) {
    for (int c = 0; c < n; c += 16) {
        float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
        for (int r = 0; r < rows; r++) {
            const uint16_t *vr = v + (size_t)r * ld + c;
            for (int k = 0; k < 4; k++) acc[k] = vfmaq_n_f32(acc[k], load_bf16(vr + 4 * k, n - c - 4 * k), a[r]);
        }
        for (int k = 0; k < 4; k++) store_part(out + c + 4 * k, acc[k], n - c - 4 * k);
    }
}

/* exp(x) for x <= 0 as kernels_avx2.c's exp_nonpositive: x = k ln2 + r,
 * a degree-7 polynomial in r, 2^k built in the exponent bits; 0 below -87 */
static inline float32x4_t exp_nonpositive(float32x4_t x) {
    const float32x4_t lowest = vdupq_n_f32(-87.0f);
    const float c[6] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f};
    uint32x4_t alive = vcgeq_f32(x, lowest);
    x = vmaxq_f32(x, lowest);
    float32x4_t k = vrndnq_f32(vmulq_n_f32(x, 1.44269504f)); /* to nearest even, as _mm256_round_ps's mode */
    float32x4_t r = vfmsq_n_f32(x, k, 0.693359375f);
    r = vfmsq_n_f32(r, k, -2.12194440e-4f);
    float32x4_t p = vdupq_n_f32(c[0]);
    for (int j = 1; j < 6; j++) p = vfmaq_f32(vdupq_n_f32(c[j]), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    int32x4_t two_k = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_u32(vandq_u32(alive, vreinterpretq_u32_f32(vmulq_f32(p, vreinterpretq_f32_s32(two_k)))));
}

float neon_exp_shifted_sum(float *row, int n, float max) {
    float32x4_t acc = vdupq_n_f32(0), m = vdupq_n_f32(max);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t e = exp_nonpositive(vsubq_f32(vld1q_f32(row + i), m));
        vst1q_f32(row + i, e);
        acc = vaddq_f32(acc, e);
    }
    if (i < n) { /* the last 1..3: attention's rows end anywhere */
        float32x4_t e = exp_nonpositive(vsubq_f32(load_part(row + i, n - i), m));
        e = vreinterpretq_f32_u32(vandq_u32(first_lanes(n - i), vreinterpretq_u32_f32(e)));
        store_part(row + i, e, n - i);
        acc = vaddq_f32(acc, e);
    }
    return vaddvq_f32(acc);
}

float neon_softmax_row(float *row, int n, int width) {
    float32x4_t max = vdupq_n_f32(-INFINITY);
    for (int i = 0; i < n; i += 4)
        max = vmaxq_f32(max, vbslq_f32(first_lanes(n - i), load_part(row + i, n - i), vdupq_n_f32(-INFINITY)));
    float top = vmaxvq_f32(max), sum = neon_exp_shifted_sum(row, n, top), inv = 1.0f / sum;
    for (int i = 0; i < n; i += 4) store_part(row + i, vmulq_n_f32(load_part(row + i, n - i), inv), n - i);
    if (width > n) memset(row + n, 0, (size_t)(width - n) * sizeof(float));
    return top + logf(sum);
}

void neon_softmax_backward_row(float *dp, const float *p, int n, int width, float scale) {
    float32x4_t acc = vdupq_n_f32(0);
    for (int i = 0; i < n; i += 4) acc = vfmaq_f32(acc, load_part(p + i, n - i), load_part(dp + i, n - i));
    float32x4_t weighted = vdupq_n_f32(vaddvq_f32(acc));
    for (int i = 0; i < n; i += 4) {
        float32x4_t d = vsubq_f32(load_part(dp + i, n - i), weighted);
        store_part(dp + i, vmulq_n_f32(vmulq_f32(load_part(p + i, n - i), d), scale), n - i);
    }
    if (width > n) memset(dp + n, 0, (size_t)(width - n) * sizeof(float));
}

/* 1 / (1 + exp(-g)) from exp(-|g|), which cannot overflow */
static inline float32x4_t sigmoid4(float32x4_t g) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    float32x4_t e = exp_nonpositive(vnegq_f32(vabsq_f32(g)));
    float32x4_t r = vdivq_f32(one, vaddq_f32(one, e));
    return vbslq_f32(vcltq_f32(g, vdupq_n_f32(0)), vmulq_f32(e, r), r);
}

void neon_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i += 4) {
        long left = (long)(n - i);
        float32x4_t g = load_part(gate + i, left), u = load_part(up + i, left);
        store_part(out + i, vmulq_f32(vmulq_f32(g, sigmoid4(g)), u), left);
    }
}

void neon_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    for (size_t i = 0; i < n; i += 4) {
        long left = (long)(n - i);
        float32x4_t g = load_part(gate + i, left), u = load_part(up + i, left), d = load_part(dout + i, left);
        float32x4_t s = sigmoid4(g);
        float32x4_t du = vmulq_f32(vmulq_f32(d, g), s);
        float32x4_t dg = vmulq_f32(vmulq_f32(vmulq_f32(d, u), s), vfmaq_f32(one, g, vsubq_f32(one, s)));
        store_part(dup + i, du, left);
        store_part(dgate + i, dg, left);
    }
}

/* acc (4 int32) += the dot products of 16 int8 weights and 16 int8 x, four
 * bytes per lane. sdot (DotProd) does it in one instruction; it is written
 * as assembly, inlined only into q8_row_dotprod (compiled for ARMv8.2 +
 * DotProd, so the assembler takes it), so that the rest of this file is
 * not compiled for it (the compiler could then use it anywhere); that
 * runs only where cpu_has() found it. Without it: widening multiplies
 * (|w x| <= 128 * 128 fits int16) and pairwise widening adds into the
 * int32 lanes. Either way the sums are exact. */
static inline __attribute__((always_inline)) int32x4_t dot16(int32x4_t acc, int8x16_t w, int8x16_t x, bool dotprod) {
    if (dotprod) {
        __asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(w), "w"(x));
        return acc;
    }
    /* pairs of products, then pairs of pairs: lane j sums bytes 4j .. 4j + 3, as sdot's, so both paths give
     * each lane the same integer and the float sums that follow the same bits */
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x))), hi = vpaddlq_s16(vmull_high_s8(w, x));
    return vaddq_s32(acc, vpaddq_s32(lo, hi));
}

/* One weight row against xr (a constant at each call) rows of x, group by
 * group: each group's integer dot product scaled into a float sum per row. */
static inline __attribute__((always_inline)) void q8_row_dots(float *out, size_t out_stride, const int8_t *wr,
                                                              const float *ws, const int8_t *xq, const float *xs,
                                                              int dim, int groups, int gs, int xr, bool dotprod) {
    float32x4_t acc[NEON_Q8_XROWS];
    for (int k = 0; k < xr; k++) acc[k] = vdupq_n_f32(0);
    for (int g = 0; g < groups; g++) {
        int32x4_t dot[NEON_Q8_XROWS];
        for (int k = 0; k < xr; k++) dot[k] = vdupq_n_s32(0);
        for (int c = g * gs; c < (g + 1) * gs; c += 16) {
            int8x16_t w = vld1q_s8(wr + c);
            for (int k = 0; k < xr; k++) dot[k] = dot16(dot[k], w, vld1q_s8(xq + (size_t)k * dim + c), dotprod);
        }
        for (int k = 0; k < xr; k++)
            acc[k] = vfmaq_n_f32(acc[k], vcvtq_f32_s32(dot[k]), xs[(size_t)k * groups + g] * ws[g]);
    }
    for (int k = 0; k < xr; k++) out[(size_t)k * out_stride] = vaddvq_f32(acc[k]);
}

static inline __attribute__((always_inline)) void q8_rows(float *out, size_t out_stride, const int8_t *wr,
                                                          const float *ws, const int8_t *xq, const float *xs, int n,
                                                          int dim, int gs, bool dotprod) {
    int groups = dim / gs, i = 0;
    for (; i + NEON_Q8_XROWS <= n; i += NEON_Q8_XROWS)
        q8_row_dots(out + (size_t)i * out_stride, out_stride, wr, ws, xq + (size_t)i * dim, xs + (size_t)i * groups,
                    dim, groups, gs, NEON_Q8_XROWS, dotprod);
    for (; i < n; i++)
        q8_row_dots(out + (size_t)i * out_stride, out_stride, wr, ws, xq + (size_t)i * dim, xs + (size_t)i * groups,
                    dim, groups, gs, 1, dotprod);
}

__attribute__((target("arch=armv8.2-a+dotprod"))) static void q8_row_dotprod(float *out, size_t out_stride,
                                                                             const int8_t *wr, const float *ws,
                                                                             const int8_t *xq, const float *xs, int n,
                                                                             int dim, int gs) {
    q8_rows(out, out_stride, wr, ws, xq, xs, n, dim, gs, true);
}

void neon_q8_row(float *out, size_t out_stride, const int8_t *wr, const float *ws, const int8_t *xq, const float *xs,
                 int n, int dim, int gs, bool dotprod) {
    if (dotprod)
        q8_row_dotprod(out, out_stride, wr, ws, xq, xs, n, dim, gs);
    else
        q8_rows(out, out_stride, wr, ws, xq, xs, n, dim, gs, false);
}

void neon_quantize_q8(int8_t *xq, float *xs, const float *x, size_t groups, int gs) {
    for (size_t g = 0; g < groups; g++) {
        const float *xg = x + g * gs;
        float32x4_t max = vdupq_n_f32(0);
        for (int i = 0; i < gs; i += 4) max = vmaxq_f32(max, vabsq_f32(vld1q_f32(xg + i)));
        float s = vmaxvq_f32(max) / 127.0f, inv = s > 0 ? 1.0f / s : 0.0f;
        for (int i = 0; i < gs; i += 16) { /* vcvtnq: round to nearest even, as lrintf in the default mode */
            int32x4_t q[4];
            for (int k = 0; k < 4; k++) q[k] = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xg + i + 4 * k), inv));
            int16x8_t lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
            int16x8_t hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
            vst1q_s8(xq + g * gs + i, vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
        }
        xs[g] = s;
    }
}

#define UNROLL _Pragma("GCC unroll 8")

/* PANEL_ROWS x (4 nv) outputs in registers (24 of the 32 for nv = 4) while
 * the depth runs, as kernels_avx2.c's panel_strip; rows past `rows` repeat
 * row 0's reads and are not stored. */
static inline __attribute__((always_inline)) void panel_strip(const int nv, float *c, size_t ldc, const float *a,
                                                              size_t a_row, size_t a_col, const float *b, size_t ldb,
                                                              int rows, int cols, int s0, int s1, float alpha,
                                                              bool accumulate) {
    const float *ar[PANEL_ROWS];
    float32x4_t acc[PANEL_ROWS][4];
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) ar[r] = a + (size_t)(r < rows ? r : 0) * a_row;
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) UNROLL
    for (int v = 0; v < nv; v++) acc[r][v] = vdupq_n_f32(0);
    for (int s = s0; s < s1; s++) {
        const float *bs = b + (size_t)s * ldb;
        size_t at = (size_t)s * a_col;
        float32x4_t bv[4];
        UNROLL
        for (int v = 0; v < nv; v++) bv[v] = load_part(bs + 4 * v, cols - 4 * v);
        UNROLL
        for (int r = 0; r < PANEL_ROWS; r++) {
            float x = ar[r][at];
            UNROLL
            for (int v = 0; v < nv; v++) acc[r][v] = vfmaq_n_f32(acc[r][v], bv[v], x);
        }
    }
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) /* whole bounds, so the compiler keeps acc in registers */
        UNROLL
    for (int v = 0; v < nv; v++) {
        if (r >= rows) break;
        float *cr = c + (size_t)r * ldc + 4 * v;
        float32x4_t y = vmulq_n_f32(acc[r][v], alpha);
        if (accumulate) y = vaddq_f32(y, load_part(cr, cols - 4 * v));
        store_part(cr, y, cols - 4 * v);
    }
}

/* A panel of up to PANEL_COLS columns as strips of 16 (fewer at the end) */
void neon_panel_product(float *c, size_t ldc, const float *a, size_t a_row, size_t a_col, const float *b, size_t ldb,
                        int rows, int cols, int s0, int s1, float alpha, bool accumulate) {
    for (int n0 = 0; n0 < cols; n0 += 16) {
        int left = cols - n0;
        if (left > 12)
            panel_strip(4, c + n0, ldc, a, a_row, a_col, b + n0, ldb, rows, left, s0, s1, alpha, accumulate);
        else if (left > 8)
            panel_strip(3, c + n0, ldc, a, a_row, a_col, b + n0, ldb, rows, left, s0, s1, alpha, accumulate);
        else if (left > 4)
            panel_strip(2, c + n0, ldc, a, a_row, a_col, b + n0, ldb, rows, left, s0, s1, alpha, accumulate);
        else
            panel_strip(1, c + n0, ldc, a, a_row, a_col, b + n0, ldb, rows, left, s0, s1, alpha, accumulate);
    }
}

size_t neon_f16_widen(float *out, const uint16_t *h, size_t n) {
    size_t done = n / 4 * 4;
    for (size_t i = 0; i < done; i += 4) vst1q_f32(out + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
    return done;
}
#endif
