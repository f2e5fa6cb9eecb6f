/* kernels_avx2.c — the inner loops for CPUs with AVX2 and FMA but no
 * AVX-512 (most desktops and laptops), and the same loops under NF_CPU=avx2
 * anywhere: each is the AVX-512 kernel of the same name in kernels_avx512.c
 * on 8-float vectors. Compiled for those instructions whatever the rest of
 * the build targets; nothing here is called unless cpu_tier() in
 * backend_cpu.c found them. AVX2 has no masked loads of bytes or halves, so
 * the ragged ends of bf16 rows go through a small zeroed copy. These are
 * serial: the callers split rows between threads. */
#include "kernels.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include <math.h>
#include <string.h>

/* lanes 0 .. left-1 set (all for left >= 8, none for left <= 0): AVX2's
 * masks for maskload/maskstore are whole lanes of ones */
static inline __m256i first_lanes(long left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left > 8   ? 8
                                                      : left < 0 ? 0
                                                                 : left)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

/* 8 (or `left`, the rest zero) bf16 values widened to fp32 exactly */
static inline __m256 load_bf16(const uint16_t *p, long left) {
    if (left >= 8)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)p)), 16));
    uint16_t part[8] = {0};
    memcpy(part, p, (size_t)(left > 0 ? left : 0) * sizeof(uint16_t));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)part)), 16));
}

float avx2_dot(const float *a, const float *b, int n) {
    __m256 v0 = _mm256_setzero_ps(), v1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), v0);
        v1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), v1);
    }
    for (; i < n; i += 8) { /* the last 1..15 values, masked */
        __m256i m = first_lanes(n - i);
        v0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), v0);
    }
    return hsum(_mm256_add_ps(v0, v1));
}

/* Four rows share each load of x, two accumulators per row (as avx512_dots,
 * which says why only short rows are prefetched) */
void avx2_dots(float *out, const float *w, size_t ld, const float *x, int rows, int n) {
    int r = 0, ahead = ld * sizeof(float) < 1024 ? kernel_rows_ahead(ld * sizeof(float)) : 0;
    for (; r + 4 <= rows; r += 4) {
        const float *w0 = w + (size_t)r * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
        for (int k = 0; ahead && k < 4 && r + ahead + k < rows; k++)
            kernel_prefetch(w0 + (size_t)(ahead + k) * ld, (size_t)n * sizeof(float));
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= n; i += 16) {
            __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), x0, a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i + 8), x1, b0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), x0, a1);
            b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i + 8), x1, b1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), x0, a2);
            b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i + 8), x1, b2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), x0, a3);
            b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i + 8), x1, b3);
        }
        for (; i < n; i += 8) {
            __m256i m = first_lanes(n - i);
            __m256 x0 = _mm256_maskload_ps(x + i, m);
            a0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + i, m), x0, a0);
            a1 = _mm256_fmadd_ps(_mm256_maskload_ps(w1 + i, m), x0, a1);
            a2 = _mm256_fmadd_ps(_mm256_maskload_ps(w2 + i, m), x0, a2);
            a3 = _mm256_fmadd_ps(_mm256_maskload_ps(w3 + i, m), x0, a3);
        }
        out[r] = hsum(_mm256_add_ps(a0, b0));
        out[r + 1] = hsum(_mm256_add_ps(a1, b1));
        out[r + 2] = hsum(_mm256_add_ps(a2, b2));
        out[r + 3] = hsum(_mm256_add_ps(a3, b3));
    }
    for (; r < rows; r++) out[r] = avx2_dot(w + (size_t)r * ld, x, n);
}

void avx2_weighted_sum(float *out, const float *a, const float *v, size_t ld, int rows, int n) {
    int ahead = kernel_rows_ahead(ld * sizeof(float));
    for (int c = 0; c < n; c += 32) { /* 32 columns in four registers through all rows */
        __m256i m[4];
        for (int k = 0; k < 4; k++) m[k] = first_lanes(n - c - 8 * k);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(),
               acc3 = _mm256_setzero_ps();
        for (int r = 0; r < rows; r++) {
            const float *vr = v + (size_t)r * ld + c;
            if (r + ahead < rows)
                kernel_prefetch(vr + (size_t)ahead * ld, (size_t)(n - c < 32 ? n - c : 32) * sizeof(float));
            __m256 s = _mm256_set1_ps(a[r]);
            acc0 = _mm256_fmadd_ps(s, _mm256_maskload_ps(vr, m[0]), acc0);
            acc1 = _mm256_fmadd_ps(s, _mm256_maskload_ps(vr + 8, m[1]), acc1);
            acc2 = _mm256_fmadd_ps(s, _mm256_maskload_ps(vr + 16, m[2]), acc2);
            acc3 = _mm256_fmadd_ps(s, _mm256_maskload_ps(vr + 24, m[3]), acc3);
        }
        _mm256_maskstore_ps(out + c, m[0], acc0);
        _mm256_maskstore_ps(out + c + 8, m[1], acc1);
        _mm256_maskstore_ps(out + c + 16, m[2], acc2);
        _mm256_maskstore_ps(out + c + 24, m[3], acc3);
    }
}

/* As avx512_dots_bf16: four key rows share each load of x */
void avx2_dots_bf16(float *out, const uint16_t *w, size_t ld, const float *x, int rows, int n) {
    int r = 0, ahead = kernel_rows_ahead(ld * sizeof(uint16_t));
    for (; r + 4 <= rows; r += 4) {
        const uint16_t *w0 = w + (size_t)r * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
        for (int k = 0; k < 4 && r + ahead + k < rows; k++)
            kernel_prefetch(w0 + (size_t)(ahead + k) * ld, (size_t)n * sizeof(uint16_t));
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int i = 0; i < n; i += 8) {
            __m256 x0 = _mm256_maskload_ps(x + i, first_lanes(n - i));
            a0 = _mm256_fmadd_ps(load_bf16(w0 + i, n - i), x0, a0);
            a1 = _mm256_fmadd_ps(load_bf16(w1 + i, n - i), x0, a1);
            a2 = _mm256_fmadd_ps(load_bf16(w2 + i, n - i), x0, a2);
            a3 = _mm256_fmadd_ps(load_bf16(w3 + i, n - i), x0, a3);
        }
        out[r] = hsum(a0), out[r + 1] = hsum(a1), out[r + 2] = hsum(a2), out[r + 3] = hsum(a3);
    }
    for (; r < rows; r++) {
        const uint16_t *wr = w + (size_t)r * ld;
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < n; i += 8)
            a = _mm256_fmadd_ps(load_bf16(wr + i, n - i), _mm256_maskload_ps(x + i, first_lanes(n - i)), a);
        out[r] = hsum(a);
    }
}

void avx2_weighted_sum_bf16(float *out, const float *a, const uint16_t *v, size_t ld, int rows, int n) {
    int ahead = kernel_rows_ahead(ld * sizeof(uint16_t));
    for (int c = 0; c < n; c += 32) {
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int r = 0; r < rows; r++) {
            const uint16_t *vr = v + (size_t)r * ld + c;
            if (r + ahead < rows)
                kernel_prefetch(vr + (size_t)ahead * ld, (size_t)(n - c < 32 ? n - c : 32) * sizeof(uint16_t));
            __m256 s = _mm256_set1_ps(a[r]);
            for (int k = 0; k < 4; k++) acc[k] = _mm256_fmadd_ps(s, load_bf16(vr + 8 * k, n - c - 8 * k), acc[k]);
        }
        for (int k = 0; k < 4; k++) _mm256_maskstore_ps(out + c + 8 * k, first_lanes(n - c - 8 * k), acc[k]);
    }
}

/* exp(x) for x <= 0 as kernels_avx512.c's exp_nonpositive; 2^k is built in
 * the exponent bits (k >= -126 above the flush, so always a normal number) */
static inline __m256 exp_nonpositive(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504f), ln2_hi = _mm256_set1_ps(0.693359375f),
                 ln2_lo = _mm256_set1_ps(-2.12194440e-4f), lowest = _mm256_set1_ps(-87.0f);
    const float c[6] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f};
    __m256 alive = _mm256_cmp_ps(x, lowest, _CMP_GE_OQ);
    x = _mm256_max_ps(x, lowest);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
    r = _mm256_fnmadd_ps(k, ln2_lo, r);
    __m256 p = _mm256_set1_ps(c[0]);
    for (int j = 1; j < 6; j++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[j]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256 two_k =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(alive, _mm256_mul_ps(p, two_k));
}

float avx2_exp_shifted_sum(float *row, int n, float max) {
    __m256 acc = _mm256_setzero_ps(), m = _mm256_set1_ps(max);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row + i), m));
        _mm256_storeu_ps(row + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (i < n) { /* the last 1..7, masked: attention's rows end anywhere */
        __m256i tail = first_lanes(n - i);
        __m256 e = _mm256_and_ps(_mm256_castsi256_ps(tail),
                                 exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(row + i, tail), m)));
        _mm256_maskstore_ps(row + i, tail, e);
        acc = _mm256_add_ps(acc, e);
    }
    return hsum(acc);
}

float avx2_softmax_row(float *row, int n, int width) {
    __m256 max = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 8) {
        __m256i m = first_lanes(n - i);
        __m256 v = _mm256_blendv_ps(max, _mm256_maskload_ps(row + i, m), _mm256_castsi256_ps(m));
        max = _mm256_max_ps(max, v);
    }
    float top = hmax(max), sum = avx2_exp_shifted_sum(row, n, top);
    __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (int i = 0; i < n; i += 8) {
        __m256i m = first_lanes(n - i);
        _mm256_maskstore_ps(row + i, m, _mm256_mul_ps(_mm256_maskload_ps(row + i, m), inv));
    }
    if (width > n) memset(row + n, 0, (size_t)(width - n) * sizeof(float));
    return top + logf(sum);
}

void avx2_softmax_backward_row(float *dp, const float *p, int n, int width, float scale) {
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        __m256i m = first_lanes(n - i);
        acc = _mm256_fmadd_ps(_mm256_maskload_ps(p + i, m), _mm256_maskload_ps(dp + i, m), acc);
    }
    __m256 weighted = _mm256_set1_ps(hsum(acc)), s = _mm256_set1_ps(scale);
    for (int i = 0; i < n; i += 8) {
        __m256i m = first_lanes(n - i);
        __m256 d = _mm256_sub_ps(_mm256_maskload_ps(dp + i, m), weighted);
        _mm256_maskstore_ps(dp + i, m, _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(p + i, m), d), s));
    }
    if (width > n) memset(dp + n, 0, (size_t)(width - n) * sizeof(float));
}

/* 1 / (1 + exp(-g)) from exp(-|g|), which cannot overflow */
static inline __m256 sigmoid8(__m256 g) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    __m256 abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), g);
    __m256 e = exp_nonpositive(_mm256_sub_ps(zero, abs));
    __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
    return _mm256_blendv_ps(r, _mm256_mul_ps(e, r), _mm256_cmp_ps(g, zero, _CMP_LT_OQ));
}

void avx2_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = first_lanes((long)(n - i));
        __m256 g = _mm256_maskload_ps(gate + i, m), u = _mm256_maskload_ps(up + i, m);
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_mul_ps(g, sigmoid8(g)), u));
    }
}

void avx2_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = first_lanes((long)(n - i));
        __m256 g = _mm256_maskload_ps(gate + i, m), u = _mm256_maskload_ps(up + i, m);
        __m256 d = _mm256_maskload_ps(dout + i, m), s = sigmoid8(g);
        __m256 du = _mm256_mul_ps(_mm256_mul_ps(d, g), s);
        __m256 dg =
            _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, u), s), _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one));
        _mm256_maskstore_ps(dup + i, m, du);
        _mm256_maskstore_ps(dgate + i, m, dg);
    }
}

/* acc (8 int32) += the dot products of 32 int8 weights and 32 int8 x, four
 * bytes per lane. Both instructions multiply unsigned by signed bytes, so
 * the weight's sign moves onto x: |w| (up to 128, as unsigned) times
 * sign(w) x. vpmaddubsw's int16 pairs cannot saturate (2 128 127 < 32768).
 * AVX-VNNI's vpdpbusd does it in one instruction; it is written as
 * assembly so that this file need not be compiled for AVX-VNNI (the
 * compiler could then use it anywhere), and runs only where cpu_tier()
 * found it. */
static inline __attribute__((always_inline)) __m256i dot32(__m256i acc, __m256i wabs, __m256i xs, bool vnni) {
    if (vnni) {
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(wabs), "x"(xs));
        return acc;
    }
    __m256i pairs = _mm256_maddubs_epi16(wabs, xs);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

/* One weight row against xr (a constant at each call) rows of x, group by
 * group: each group's integer dot product scaled into a float sum per row. */
static inline __attribute__((always_inline)) void q8_row_dots(float *out, size_t out_stride, const int8_t *wr,
                                                              const float *ws, const int8_t *xq, const float *xs,
                                                              int dim, int groups, int gs, int xr, bool vnni) {
    __m256 acc[AVX2_Q8_XROWS];
    for (int k = 0; k < xr; k++) acc[k] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m256i dot[AVX2_Q8_XROWS];
        for (int k = 0; k < xr; k++) dot[k] = _mm256_setzero_si256();
        for (int c = g * gs; c < (g + 1) * gs; c += 32) {
            __m256i w = _mm256_loadu_si256((const void *)(wr + c)), wabs = _mm256_sign_epi8(w, w);
            for (int k = 0; k < xr; k++) {
                __m256i x = _mm256_loadu_si256((const void *)(xq + (size_t)k * dim + c));
                dot[k] = dot32(dot[k], wabs, _mm256_sign_epi8(x, w), vnni);
            }
        }
        for (int k = 0; k < xr; k++)
            acc[k] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[k]), _mm256_set1_ps(xs[(size_t)k * groups + g] * ws[g]), acc[k]);
    }
    for (int k = 0; k < xr; k++) out[(size_t)k * out_stride] = hsum(acc[k]);
}

static inline __attribute__((always_inline)) void q8_rows(float *out, size_t out_stride, const int8_t *wr,
                                                          const float *ws, const int8_t *xq, const float *xs, int n,
                                                          int dim, int gs, bool vnni) {
    int groups = dim / gs, i = 0;
    for (; i + AVX2_Q8_XROWS <= n; i += AVX2_Q8_XROWS)
        q8_row_dots(out + (size_t)i * out_stride, out_stride, wr, ws, xq + (size_t)i * dim, xs + (size_t)i * groups,
                    dim, groups, gs, AVX2_Q8_XROWS, vnni);
    for (; i < n; i++)
        q8_row_dots(out + (size_t)i * out_stride, out_stride, wr, ws, xq + (size_t)i * dim, xs + (size_t)i * groups,
                    dim, groups, gs, 1, vnni);
}

void avx2_q8_row(float *out, size_t out_stride, const int8_t *wr, const float *ws, const int8_t *xq, const float *xs,
                 int n, int dim, int gs, bool vnni) {
    if (vnni)
        q8_rows(out, out_stride, wr, ws, xq, xs, n, dim, gs, true);
    else
        q8_rows(out, out_stride, wr, ws, xq, xs, n, dim, gs, false);
}

void avx2_quantize_q8(int8_t *xq, float *xs, const float *x, size_t groups, int gs) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t g = 0; g < groups; g++) {
        const float *xg = x + g * gs;
        __m256 max = _mm256_setzero_ps();
        for (int i = 0; i < gs; i += 8) max = _mm256_max_ps(max, _mm256_andnot_ps(sign, _mm256_loadu_ps(xg + i)));
        float s = hmax(max) / 127.0f, inv = s > 0 ? 1.0f / s : 0.0f;
        __m256 vinv = _mm256_set1_ps(inv);
        for (int i = 0; i < gs; i += 32) { /* cvtps: round to nearest even, as lrintf in the default mode */
            __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + i), vinv));
            __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + i + 8), vinv));
            __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + i + 16), vinv));
            __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + i + 24), vinv));
            /* the packs work within 128-bit halves; one permutation puts the 32 bytes back in order */
            __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
            b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((void *)(xq + g * gs + i), b);
        }
        xs[g] = s;
    }
}

/* f16.h's f32_to_bf16 on 16 values at a time: round to nearest even in the
 * integers, NaNs kept quiet NaNs */
size_t avx2_bf16_round(uint16_t *out, const float *x, size_t n) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000),
                  half = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
    size_t blocks = n / 16;
    for (size_t k = 0; k < blocks; k++) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            __m256i u = _mm256_loadu_si256((const void *)(x + 16 * k + 8 * h));
            __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
            __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, half), odd), 16);
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
            r[h] = _mm256_blendv_epi8(rounded, _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet), nan);
        }
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_si256((void *)(out + 16 * k), packed);
    }
    return blocks * 16;
}

#define UNROLL _Pragma("GCC unroll 8")

/* PANEL_ROWS x (8 nv) outputs in registers (12 of the 16 for nv = 2) while
 * the depth runs, as kernels_avx512.c's panel_product; rows past `rows`
 * repeat row 0's reads and are not stored. */
static inline __attribute__((always_inline)) void panel_strip(const int nv, float *c, size_t ldc, const float *a,
                                                              size_t a_row, size_t a_col, const float *b, size_t ldb,
                                                              int rows, int cols, int s0, int s1, float alpha,
                                                              bool accumulate) {
    const float *ar[PANEL_ROWS];
    __m256i m[2];
    __m256 acc[PANEL_ROWS][2];
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) ar[r] = a + (size_t)(r < rows ? r : 0) * a_row;
    UNROLL
    for (int v = 0; v < nv; v++) m[v] = first_lanes(cols - 8 * v);
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) UNROLL
    for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();
    for (int s = s0; s < s1; s++) {
        const float *bs = b + (size_t)s * ldb;
        size_t at = (size_t)s * a_col;
        __m256 bv[2];
        UNROLL
        for (int v = 0; v < nv; v++) bv[v] = _mm256_maskload_ps(bs + 8 * v, m[v]);
        UNROLL
        for (int r = 0; r < PANEL_ROWS; r++) {
            __m256 x = _mm256_set1_ps(ar[r][at]);
            UNROLL
            for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(x, bv[v], acc[r][v]);
        }
    }
    __m256 scale = _mm256_set1_ps(alpha);
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) /* whole bounds, so the compiler keeps acc in registers */
        UNROLL
    for (int v = 0; v < nv; v++) {
        if (r >= rows) break;
        float *cr = c + (size_t)r * ldc + 8 * v;
        __m256 y = _mm256_mul_ps(acc[r][v], scale);
        if (accumulate) y = _mm256_add_ps(y, _mm256_maskload_ps(cr, m[v]));
        _mm256_maskstore_ps(cr, m[v], y);
    }
}

/* A panel of up to PANEL_COLS columns as strips of 16 (8 at the end): 16
 * registers hold only 6 rows of 16 accumulators. */
void avx2_panel_product(float *c, size_t ldc, const float *a, size_t a_row, size_t a_col, const float *b, size_t ldb,
                        int rows, int cols, int s0, int s1, float alpha, bool accumulate) {
    for (int n0 = 0; n0 < cols; n0 += 16) {
        int left = cols - n0;
        if (left > 8)
            panel_strip(2, c + n0, ldc, a, a_row, a_col, b + n0, ldb, rows, left, s0, s1, alpha, accumulate);
        else
            panel_strip(1, c + n0, ldc, a, a_row, a_col, b + n0, ldb, rows, left, s0, s1, alpha, accumulate);
    }
}

size_t avx2_f16_widen(float *out, const uint16_t *h, size_t n) {
    size_t done = n / 8 * 8;
    for (size_t i = 0; i < done; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    return done;
}
#endif
