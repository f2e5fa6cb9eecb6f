/* kernels_avx512.c — the inner loops that use AVX-512 (with VNNI and BF16
 * where named), compiled for those instructions whatever the rest of the
 * build targets. Nothing here is called unless cpu_has() in backend_cpu.c
 * says the running CPU has the instructions; each kernel has a portable
 * twin there, and the tests run both (NF_CPU=baseline picks the twins).
 * These are serial: the callers split rows between threads. */
#include "kernels.h"

#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16,fma,f16c")
#include <immintrin.h>

#include <math.h>

float avx512_dot(const float *a, const float *b, int n) {
    __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        v0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), v0);
        v1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), v1);
    }
    if (i < n) { /* the last 1..31 values, masked */
        __mmask16 m0 = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
        v0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, a + i), _mm512_maskz_loadu_ps(m0, b + i), v0);
        if (n - i > 16) {
            __mmask16 m1 = (__mmask16)((1u << (n - i - 16)) - 1);
            v1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, a + i + 16), _mm512_maskz_loadu_ps(m1, b + i + 16), v1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
}

/* Four rows share each load of x; two accumulators per row hide the FMA
 * latency. Memory-bound for generation's weight matrices, which is the point:
 * every weight byte is read once per token. Short rows (a head of the KV
 * cache) are prefetched ahead; the weights' long rows are left to the
 * hardware prefetcher, which follows them at full speed. */
void avx512_dots(float *out, const float *w, size_t ld, const float *x, int rows, int n) {
    int r = 0, ahead = ld * sizeof(float) < 1024 ? kernel_rows_ahead(ld * sizeof(float)) : 0;
    for (; r + 4 <= rows; r += 4) {
        const float *w0 = w + (size_t)r * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
        for (int k = 0; ahead && k < 4 && r + ahead + k < rows; k++)
            kernel_prefetch(w0 + (size_t)(ahead + k) * ld, (size_t)n * sizeof(float));
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
        int i = 0;
        for (; i + 32 <= n; i += 32) {
            __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + i), x0, a0);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + i + 16), x1, b0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + i), x0, a1);
            b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + i + 16), x1, b1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + i), x0, a2);
            b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + i + 16), x1, b2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + i), x0, a3);
            b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + i + 16), x1, b3);
        }
        for (; i < n; i += 16) {
            __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
            __m512 x0 = _mm512_maskz_loadu_ps(m, x + i);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + i), x0, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + i), x0, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + i), x0, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + i), x0, a3);
        }
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        out[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        out[r + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        out[r + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    }
    for (; r < rows; r++) out[r] = avx512_dot(w + (size_t)r * ld, x, n);
}

void avx512_weighted_sum(float *out, const float *a, const float *v, size_t ld, int rows, int n) {
    int ahead = kernel_rows_ahead(ld * sizeof(float));
    for (int c = 0; c < n; c += 64) { /* 64 columns in four registers through all rows */
        __mmask16 m[4];
        for (int k = 0; k < 4; k++) {
            int left = n - c - 16 * k;
            m[k] = (__mmask16)(left >= 16 ? 0xFFFF : left <= 0 ? 0 : (1u << left) - 1);
        }
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(),
               acc3 = _mm512_setzero_ps();
        for (int r = 0; r < rows; r++) {
            const float *vr = v + (size_t)r * ld + c;
            if (r + ahead < rows)
                kernel_prefetch(vr + (size_t)ahead * ld, (size_t)(n - c < 64 ? n - c : 64) * sizeof(float));
            __m512 s = _mm512_set1_ps(a[r]);
            acc0 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[0], vr), acc0);
            acc1 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[1], vr + 16), acc1);
            acc2 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[2], vr + 32), acc2);
            acc3 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[3], vr + 48), acc3);
        }
        _mm512_mask_storeu_ps(out + c, m[0], acc0);
        _mm512_mask_storeu_ps(out + c + 16, m[1], acc1);
        _mm512_mask_storeu_ps(out + c + 32, m[2], acc2);
        _mm512_mask_storeu_ps(out + c + 48, m[3], acc3);
    }
}

/* 32 bf16 values (those of mask m) as two fp32 vectors: the even-numbered
 * values (their bits moved to the top half) and the odd-numbered ones (the
 * low half cleared). Splitting this way costs two integer operations per 32
 * values, where widening them in order costs four. */
static inline void load_bf16_pairs(__mmask32 m, const uint16_t *p, __m512 *even, __m512 *odd) {
    __m512i v = _mm512_maskz_loadu_epi16(m, p);
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000u)));
}

static inline __mmask32 first_values(int left) { return left >= 32 ? 0xFFFFFFFFu : left <= 0 ? 0 : (1u << left) - 1; }

/* x[i .. i+32) split the same way, zero past n */
static inline void load_f32_pairs(const float *x, int i, int n, __m512 *even, __m512 *odd) {
    const __m512i even_idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    int left = n - i;
    __m512 lo = _mm512_maskz_loadu_ps((__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1), x + i);
    __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(left >= 32   ? 0xFFFF
                                                  : left <= 16 ? 0
                                                               : (1u << (left - 16)) - 1),
                                      x + i + 16);
    *even = _mm512_permutex2var_ps(lo, even_idx, hi);
    *odd = _mm512_permutex2var_ps(lo, odd_idx, hi);
}

/* The sums of four vectors' lanes, in one pass of shuffles */
static inline void reduce4(float *out, __m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    __m512 t = _mm512_add_ps(_mm512_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2))); /* rows 0-3 in each 128 bits */
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    _mm_storeu_ps(out, _mm512_castps512_ps128(t));
}

/* Four key rows share each load of x, as avx512_dots; rows are short (a
 * head), so their sums are reduced four at a time. */
void avx512_dots_bf16(float *out, const uint16_t *w, size_t ld, const float *x, int rows, int n) {
    int r = 0, ahead = kernel_rows_ahead(ld * sizeof(uint16_t));
    for (; r + 4 <= rows; r += 4) {
        const uint16_t *w0 = w + (size_t)r * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int k = 0; k < 4 && r + ahead + k < rows; k++)
            kernel_prefetch(w0 + (size_t)(ahead + k) * ld, (size_t)n * sizeof(uint16_t));
        for (int i = 0; i < n; i += 32) {
            __mmask32 m = first_values(n - i);
            __m512 xe, xo, we, wo;
            load_f32_pairs(x, i, n, &xe, &xo);
            load_bf16_pairs(m, w0 + i, &we, &wo);
            a0 = _mm512_fmadd_ps(wo, xo, _mm512_fmadd_ps(we, xe, a0));
            load_bf16_pairs(m, w1 + i, &we, &wo);
            a1 = _mm512_fmadd_ps(wo, xo, _mm512_fmadd_ps(we, xe, a1));
            load_bf16_pairs(m, w2 + i, &we, &wo);
            a2 = _mm512_fmadd_ps(wo, xo, _mm512_fmadd_ps(we, xe, a2));
            load_bf16_pairs(m, w3 + i, &we, &wo);
            a3 = _mm512_fmadd_ps(wo, xo, _mm512_fmadd_ps(we, xe, a3));
        }
        reduce4(out + r, a0, a1, a2, a3);
    }
    for (; r < rows; r++) {
        const uint16_t *wr = w + (size_t)r * ld;
        __m512 a = _mm512_setzero_ps();
        for (int i = 0; i < n; i += 32) {
            __m512 xe, xo, we, wo;
            load_f32_pairs(x, i, n, &xe, &xo);
            load_bf16_pairs(first_values(n - i), wr + i, &we, &wo);
            a = _mm512_fmadd_ps(wo, xo, _mm512_fmadd_ps(we, xe, a));
        }
        out[r] = _mm512_reduce_add_ps(a);
    }
}

/* The even- and odd-numbered columns accumulate apart and are interleaved
 * back at the end. */
void avx512_weighted_sum_bf16(float *out, const float *a, const uint16_t *v, size_t ld, int rows, int n) {
    int ahead = kernel_rows_ahead(ld * sizeof(uint16_t));
    const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int c = 0; c < n; c += 64) { /* 64 columns in four registers through all rows */
        __mmask32 m0 = first_values(n - c), m1 = first_values(n - c - 32);
        __m512 e0 = _mm512_setzero_ps(), o0 = _mm512_setzero_ps(), e1 = _mm512_setzero_ps(), o1 = _mm512_setzero_ps();
        for (int r = 0; r < rows; r++) {
            const uint16_t *vr = v + (size_t)r * ld + c;
            if (r + ahead < rows)
                kernel_prefetch(vr + (size_t)ahead * ld, (size_t)(n - c < 64 ? n - c : 64) * sizeof(uint16_t));
            __m512 s = _mm512_set1_ps(a[r]), ve, vo;
            load_bf16_pairs(m0, vr, &ve, &vo);
            e0 = _mm512_fmadd_ps(s, ve, e0);
            o0 = _mm512_fmadd_ps(s, vo, o0);
            if (m1) {
                load_bf16_pairs(m1, vr + 32, &ve, &vo);
                e1 = _mm512_fmadd_ps(s, ve, e1);
                o1 = _mm512_fmadd_ps(s, vo, o1);
            }
        }
        float col[64];
        _mm512_storeu_ps(col, _mm512_permutex2var_ps(e0, lo_idx, o0));
        _mm512_storeu_ps(col + 16, _mm512_permutex2var_ps(e0, hi_idx, o0));
        _mm512_storeu_ps(col + 32, _mm512_permutex2var_ps(e1, lo_idx, o1));
        _mm512_storeu_ps(col + 48, _mm512_permutex2var_ps(e1, hi_idx, o1));
        for (int i = 0; i < 64 && c + i < n; i++) out[c + i] = col[i];
    }
}

/* exp(x) = 2^k p(r) with x = k ln2 + r, |r| <= ln2/2, p of degree 6:
 * relative error about 2e-7, like expf. For x <= 0 only; below -87 the
 * result is flushed to 0, where expf underflows too. */
static inline __m512 exp_nonpositive(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504f), ln2_hi = _mm512_set1_ps(0.693359375f),
                 ln2_lo = _mm512_set1_ps(-2.12194440e-4f), lowest = _mm512_set1_ps(-87.0f);
    const __m512 c[6] = {_mm512_set1_ps(1.0f / 720), _mm512_set1_ps(1.0f / 120), _mm512_set1_ps(1.0f / 24),
                         _mm512_set1_ps(1.0f / 6),   _mm512_set1_ps(0.5f),       _mm512_set1_ps(1.0f)};
    __mmask16 alive = _mm512_cmp_ps_mask(x, lowest, _CMP_GE_OQ);
    x = _mm512_max_ps(x, lowest);
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, ln2_hi, x);
    r = _mm512_fnmadd_ps(k, ln2_lo, r);
    __m512 p = c[0];
    for (int j = 1; j < 6; j++) p = _mm512_fmadd_ps(p, r, c[j]);
    p = _mm512_fmadd_ps(p, r, c[5]); /* 1 + r (1 + r/2 (1 + ...)) */
    return _mm512_maskz_mov_ps(alive, _mm512_scalef_ps(p, k));
}

float avx512_exp_shifted_sum(float *row, int n, float max) {
    __m512 acc = _mm512_setzero_ps(), m = _mm512_set1_ps(max);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + i), m));
        _mm512_storeu_ps(row + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) { /* the last 1..15, masked: attention's rows end anywhere */
        __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, row + i), m)));
        _mm512_mask_storeu_ps(row + i, tail, e);
        acc = _mm512_add_ps(acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

static inline __mmask16 tail_mask(size_t left) { return (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1); }

float avx512_softmax_row(float *row, int n, int width) {
    __m512 max = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        max = _mm512_mask_max_ps(max, m, _mm512_maskz_loadu_ps(m, row + i), max);
    }
    float top = _mm512_reduce_max_ps(max), sum = avx512_exp_shifted_sum(row, n, top);
    __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(row + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + i), inv));
    }
    for (int i = n; i < width; i += 16) _mm512_mask_storeu_ps(row + i, tail_mask(width - i), _mm512_setzero_ps());
    return top + logf(sum);
}

void avx512_softmax_backward_row(float *dp, const float *p, int n, int width, float scale) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + i), _mm512_maskz_loadu_ps(m, dp + i), acc);
    }
    __m512 weighted = _mm512_set1_ps(_mm512_reduce_add_ps(acc)), s = _mm512_set1_ps(scale);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dp + i), weighted);
        _mm512_mask_storeu_ps(dp + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + i), d), s));
    }
    for (int i = n; i < width; i += 16) _mm512_mask_storeu_ps(dp + i, tail_mask(width - i), _mm512_setzero_ps());
}

/* 1 / (1 + exp(-g)) from exp(-|g|), which cannot overflow */
static inline __m512 sigmoid16(__m512 g) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g)));
    __m512 r = _mm512_div_ps(one, _mm512_add_ps(one, e));
    return _mm512_mask_mul_ps(r, _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ), e, r);
}

void avx512_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(g, sigmoid16(g)), u));
    }
}

void avx512_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        __m512 d = _mm512_maskz_loadu_ps(m, dout + i), s = sigmoid16(g);
        __m512 du = _mm512_mul_ps(_mm512_mul_ps(d, g), s);
        __m512 dg =
            _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, u), s), _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one));
        _mm512_mask_storeu_ps(dup + i, m, du);
        _mm512_mask_storeu_ps(dgate + i, m, dg);
    }
}

/* out[k * out_stride] = w row . x row k for xr rows of x. A group's dot
 * product is integer arithmetic, four bytes per lane per instruction:
 * vpdpbusd multiplies unsigned by signed bytes, so each weight byte is made
 * unsigned, w + 128 (an xor of its top bit), and the 128 * sum(xq) this
 * adds is taken back out in the integers: each group's sum starts from
 * xo = -128 * sum(xq), which avx512_quantize_q8 computed once per group of
 * x for every weight row. Two groups at a time, so that one row's float
 * sums are two chains, not one waiting on the other. xr is a constant at
 * each call. */
static inline __attribute__((always_inline)) void q8_group_dots(__m512 *acc, int g, const int8_t *wr, const float *ws,
                                                                const int8_t *xq, const float *xs, const int32_t *xo,
                                                                int dim, int groups, int gs, int xr) {
    const __m512i top = _mm512_set1_epi8((char)0x80);
    __m512i dot[VNNI_Q8_XROWS];
    for (int k = 0; k < xr; k++) dot[k] = _mm512_maskz_set1_epi32(1, xo[(size_t)k * groups + g]);
    for (int c = g * gs; c < (g + 1) * gs; c += 64) {
        __m512i wu = _mm512_xor_si512(_mm512_loadu_si512((const void *)(wr + c)), top);
        for (int k = 0; k < xr; k++)
            dot[k] = _mm512_dpbusd_epi32(dot[k], wu, _mm512_loadu_si512((const void *)(xq + (size_t)k * dim + c)));
    }
    for (int k = 0; k < xr; k++)
        acc[k] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[k]), _mm512_set1_ps(xs[(size_t)k * groups + g] * ws[g]), acc[k]);
}

/* The weight scales of groups g and g + 1 in lanes 0 and 1 (lane 1 zero where g is the row's last group): from
 * fp32 scales ws or, where ws16 is not NULL, fp16 ones (a GGUF's Q8_0 as stored), widened exactly */
static inline __attribute__((always_inline)) __m128 q8_pair_wscale(const float *ws, const uint16_t *ws16, int g,
                                                                   int groups) {
    __mmask8 pair = g + 1 < groups ? 3 : 1;
    return ws16 ? _mm_cvtph_ps(_mm_maskz_loadu_epi16(pair, ws16 + g)) : _mm_maskz_loadu_ps(pair, ws + g);
}

/* q8_group_dots for groups of 32: groups g and g + 1 in one vpdpbusd over 64 bytes, group g in lanes 0-7 and g + 1
 * in lanes 8-15, each half with its own offset and its own scale; g alone (the upper half zero) where it is the
 * row's last group. The weights' scales from ws or ws16 (q8_pair_wscale). */
static inline __attribute__((always_inline)) void q8_pair_dots(__m512 *acc, int g, const int8_t *wr, const float *ws,
                                                               const uint16_t *ws16, const int8_t *xq, const float *xs,
                                                               const int32_t *xo, int dim, int groups, int xr) {
    const __m512i top = _mm512_set1_epi8((char)0x80);
    bool two = g + 1 < groups;
    __mmask64 bytes = two ? ~(__mmask64)0 : 0xFFFFFFFFull;
    __m512i wu = _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes, wr + (size_t)g * 32), top);
    /* lanes 0-7 take a pair's first value, lanes 8-15 its second */
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __mmask8 pair = two ? 3 : 1;
    __m128 wscale = q8_pair_wscale(ws, ws16, g, groups);
    for (int k = 0; k < xr; k++) {
        /* the two offsets in lanes 0 and 8; the two groups' scales, xs ws, each across its half */
        __m128i offsets = _mm_maskz_loadu_epi32(pair, xo + (size_t)k * groups + g);
        __m512i dot = _mm512_maskz_permutexvar_epi32(0x0101, halves, _mm512_castsi128_si512(offsets));
        dot = _mm512_dpbusd_epi32(dot, wu, _mm512_maskz_loadu_epi8(bytes, xq + (size_t)k * dim + (size_t)g * 32));
        __m128 scales = _mm_mul_ps(_mm_maskz_loadu_ps(pair, xs + (size_t)k * groups + g), wscale);
        __m512 scale = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(scales));
        acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[k]);
    }
}

static inline __attribute__((always_inline)) void q8_row_dots(float *out, size_t out_stride, const int8_t *wr,
                                                              const float *ws, const int8_t *xq, const float *xs,
                                                              const int32_t *xo, int dim, int groups, int gs, int xr) {
    __m512 even[VNNI_Q8_XROWS], odd[VNNI_Q8_XROWS];
    for (int k = 0; k < xr; k++) even[k] = odd[k] = _mm512_setzero_ps();
    int g = 0;
    if (gs == 32) { /* two groups a vector: pairs alternate between the two sums, as groups do below */
        for (; g + 4 <= groups; g += 4) {
            q8_pair_dots(even, g, wr, ws, NULL, xq, xs, xo, dim, groups, xr);
            q8_pair_dots(odd, g + 2, wr, ws, NULL, xq, xs, xo, dim, groups, xr);
        }
        if (g < groups) q8_pair_dots(even, g, wr, ws, NULL, xq, xs, xo, dim, groups, xr);
        if (g + 2 < groups) q8_pair_dots(odd, g + 2, wr, ws, NULL, xq, xs, xo, dim, groups, xr);
        g = groups;
    }
    for (; g + 2 <= groups; g += 2) {
        q8_group_dots(even, g, wr, ws, xq, xs, xo, dim, groups, gs, xr);
        q8_group_dots(odd, g + 1, wr, ws, xq, xs, xo, dim, groups, gs, xr);
    }
    if (g < groups) q8_group_dots(even, g, wr, ws, xq, xs, xo, dim, groups, gs, xr);
    for (int k = 0; k < xr; k++) out[(size_t)k * out_stride] = _mm512_reduce_add_ps(_mm512_add_ps(even[k], odd[k]));
}

/* How far ahead of the weight row in use the next rows are fetched: the
 * rows are short (a few cache lines), too short for the hardware's stream
 * prefetch to run ahead on its own. 4 KiB was the fastest of 1-8 KiB. */
#define Q8_PREFETCH_BYTES 4096

void vnni_q8_row(float *out, size_t out_stride, const int8_t *wr, const float *ws, const int8_t *xq, const float *xs,
                 const int32_t *xo, int n, int dim, int gs) {
    int groups = dim / gs, i = 0;
    kernel_prefetch(wr + Q8_PREFETCH_BYTES, (size_t)dim);
    _mm_prefetch((const char *)(ws + Q8_PREFETCH_BYTES / gs), _MM_HINT_T0); /* their scales */
    for (; i + VNNI_Q8_XROWS <= n; i += VNNI_Q8_XROWS)
        q8_row_dots(out + (size_t)i * out_stride, out_stride, wr, ws, xq + (size_t)i * dim, xs + (size_t)i * groups,
                    xo + (size_t)i * groups, dim, groups, gs, VNNI_Q8_XROWS);
    for (; i < n; i++)
        q8_row_dots(out + (size_t)i * out_stride, out_stride, wr, ws, xq + (size_t)i * dim, xs + (size_t)i * groups,
                    xo + (size_t)i * groups, dim, groups, gs, 1);
}

/* out[0..3] = the sums of four rows' vectors, each reduced in _mm512_reduce_add_ps's order (256-bit halves, then
 * 128-bit halves, then lanes 0 + 2 and 1 + 3, then those two), four rows at once */
static inline void reduce_add4(float *out, const __m512 *v) {
    __m128 r[4];
    for (int k = 0; k < 4; k++) {
        __m256 h = _mm256_add_ps(_mm512_extractf32x8_ps(v[k], 1), _mm512_castps512_ps256(v[k]));
        r[k] = _mm_add_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));
    }
    _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]); /* r[j] lane k: row k's lane j */
    _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(r[0], r[2]), _mm_add_ps(r[1], r[3])));
}

/* One weight row against one x row: q8_row_dots' sums for xr = 1, left unreduced (even + odd groups). The lines
 * Q8_PREFETCH_BYTES ahead are fetched one per line read, spread over the row: vnni_q8_row's burst of a row's
 * fetches at its start made decode's products ~10% slower (bench: the two alternated in one process). */
static inline __attribute__((always_inline)) __m512 q8_gemv_row(const int8_t *wr, const float *ws, const uint16_t *ws16,
                                                                const int8_t *xq, const float *xs, const int32_t *xo,
                                                                int dim, int groups, int gs) {
    __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
    /* the scales of the rows ahead */
    _mm_prefetch(ws16 ? (const char *)(ws16 + Q8_PREFETCH_BYTES / gs) : (const char *)(ws + Q8_PREFETCH_BYTES / gs),
                 _MM_HINT_T0);
    int g = 0;
    if (gs == 32) { /* q8_row_dots' pairs, in its order */
        for (; g + 4 <= groups; g += 4) {
            _mm_prefetch((const char *)wr + Q8_PREFETCH_BYTES + (size_t)g * 32, _MM_HINT_T0);
            _mm_prefetch((const char *)wr + Q8_PREFETCH_BYTES + (size_t)g * 32 + 64, _MM_HINT_T0);
            q8_pair_dots(&even, g, wr, ws, ws16, xq, xs, xo, dim, groups, 1);
            q8_pair_dots(&odd, g + 2, wr, ws, ws16, xq, xs, xo, dim, groups, 1);
        }
        if (g < groups) {
            _mm_prefetch((const char *)wr + Q8_PREFETCH_BYTES + (size_t)g * 32, _MM_HINT_T0);
            q8_pair_dots(&even, g, wr, ws, ws16, xq, xs, xo, dim, groups, 1);
        }
        if (g + 2 < groups) q8_pair_dots(&odd, g + 2, wr, ws, ws16, xq, xs, xo, dim, groups, 1);
        return _mm512_add_ps(even, odd);
    }
    for (; g + 2 <= groups; g += 2) {
        _mm_prefetch((const char *)wr + Q8_PREFETCH_BYTES + (size_t)g * 64, _MM_HINT_T0);
        _mm_prefetch((const char *)wr + Q8_PREFETCH_BYTES + (size_t)g * 64 + 64, _MM_HINT_T0);
        q8_group_dots(&even, g, wr, ws, xq, xs, xo, dim, groups, 64, 1);
        q8_group_dots(&odd, g + 1, wr, ws, xq, xs, xo, dim, groups, 64, 1);
    }
    if (g < groups) {
        _mm_prefetch((const char *)wr + Q8_PREFETCH_BYTES + (size_t)g * 64, _MM_HINT_T0);
        q8_group_dots(&even, g, wr, ws, xq, xs, xo, dim, groups, 64, 1);
    }
    return _mm512_add_ps(even, odd);
}

/* vnni_q8_gemv for one group size and one kind of scale (fp32 ws, or fp16 ws16 for groups of 32), constants where
 * it is inlined */
static inline __attribute__((always_inline)) void q8_gemv_rows(float *out, const int8_t *w, const float *ws,
                                                               const uint16_t *ws16, const int8_t *xq, const float *xs,
                                                               const int32_t *xo, int rows, int dim, int gs) {
    int groups = dim / gs, r = 0;
    for (; r + 4 <= rows; r += 4) { /* the rows one after another (one stream), their sums reduced four at once */
        __m512 sum[4];
        for (int k = 0; k < 4; k++) {
            size_t at = (size_t)(r + k) * groups; /* the row's first group */
            sum[k] = q8_gemv_row(w + (size_t)(r + k) * dim, ws ? ws + at : NULL, ws16 ? ws16 + at : NULL, xq, xs, xo,
                                 dim, groups, gs);
        }
        reduce_add4(out + r, sum);
    }
    for (; r < rows; r++) {
        size_t at = (size_t)r * groups;
        out[r] = _mm512_reduce_add_ps(q8_gemv_row(w + (size_t)r * dim, ws ? ws + at : NULL, ws16 ? ws16 + at : NULL, xq,
                                                  xs, xo, dim, groups, gs));
    }
}

void vnni_q8_gemv(float *out, const int8_t *w, const float *ws, const uint16_t *ws16, const int8_t *xq, const float *xs,
                  const int32_t *xo, int rows, int dim, int gs) {
    if (ws16) /* groups of 32 only */
        q8_gemv_rows(out, w, NULL, ws16, xq, xs, xo, rows, dim, 32);
    else if (gs == 32)
        q8_gemv_rows(out, w, ws, NULL, xq, xs, xo, rows, dim, 32);
    else
        q8_gemv_rows(out, w, ws, NULL, xq, xs, xo, rows, dim, 64);
}

void avx512_quantize_q8(int8_t *xq, float *xs, int32_t *xo, const float *x, size_t groups, int gs) {
    for (size_t g = 0; g < groups; g++) {
        const float *xg = x + g * gs;
        __m512 max = _mm512_setzero_ps();
        for (int i = 0; i < gs; i += 16) max = _mm512_max_ps(max, _mm512_abs_ps(_mm512_loadu_ps(xg + i)));
        float s = _mm512_reduce_max_ps(max) / 127.0f, inv = s > 0 ? 1.0f / s : 0.0f;
        __m512 vinv = _mm512_set1_ps(inv);
        __m512i sum = _mm512_setzero_si512();
        for (int i = 0; i < gs; i += 16) { /* lrintf: round to nearest even, as the default rounding mode */
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xg + i), vinv));
            sum = _mm512_add_epi32(sum, q);
            _mm_storeu_si128((__m128i *)(xq + g * gs + i), _mm512_cvtepi32_epi8(q));
        }
        xs[g] = s;
        xo[g] = -128 * _mm512_reduce_add_epi32(sum);
    }
}

size_t avx512bf16_round(uint16_t *out, const float *x, size_t n) {
    size_t blocks = n / 32;
    for (size_t k = 0; k < blocks; k++) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 32 * k + 16), _mm512_loadu_ps(x + 32 * k));
        _mm512_storeu_si512((void *)(out + 32 * k), (__m512i)v);
    }
    return blocks * 32;
}

#define UNROLL _Pragma("GCC unroll 8")

/* A panel of PANEL_ROWS x (16 nv) outputs kept in registers (24 of the 32
 * for nv = 4) while the depth runs: each step loads nv vectors of b's row
 * and broadcasts one value of a per output row. Rows past `rows` repeat row
 * 0's reads and are not stored, so every panel runs the same code. */
static inline __attribute__((always_inline)) void panel_product(const int nv, float *c, size_t ldc, const float *a,
                                                                size_t a_row, size_t a_col, const float *b, size_t ldb,
                                                                int rows, __mmask16 last, int s0, int s1, float alpha,
                                                                bool accumulate) {
    const float *ar[PANEL_ROWS];
    __mmask16 m[4];
    __m512 acc[PANEL_ROWS][4];
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) ar[r] = a + (size_t)(r < rows ? r : 0) * a_row;
    UNROLL
    for (int v = 0; v < nv; v++) m[v] = v == nv - 1 ? last : (__mmask16)0xFFFF;
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) UNROLL
    for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();
    for (int s = s0; s < s1; s++) {
        const float *bs = b + (size_t)s * ldb;
        size_t at = (size_t)s * a_col;
        __m512 bv[4];
        UNROLL
        for (int v = 0; v < nv; v++) bv[v] = _mm512_maskz_loadu_ps(m[v], bs + 16 * v);
        UNROLL
        for (int r = 0; r < PANEL_ROWS; r++) {
            __m512 x = _mm512_set1_ps(ar[r][at]);
            UNROLL
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
        }
    }
    __m512 scale = _mm512_set1_ps(alpha);
    UNROLL
    for (int r = 0; r < PANEL_ROWS; r++) /* whole bounds, so the compiler keeps acc in registers */
        UNROLL
    for (int v = 0; v < nv; v++) {
        if (r >= rows) break;
        float *cr = c + (size_t)r * ldc + 16 * v;
        __m512 y = _mm512_mul_ps(acc[r][v], scale);
        if (accumulate) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m[v], cr));
        _mm512_mask_storeu_ps(cr, m[v], y);
    }
}

void avx512_panel_product(float *c, size_t ldc, const float *a, size_t a_row, size_t a_col, const float *b, size_t ldb,
                          int rows, int cols, int s0, int s1, float alpha, bool accumulate) {
    int nv = (cols + 15) / 16;
    __mmask16 last = (__mmask16)(cols - 16 * (nv - 1) == 16 ? 0xFFFF : (1u << (cols - 16 * (nv - 1))) - 1);
    switch (nv) {
    case 1: panel_product(1, c, ldc, a, a_row, a_col, b, ldb, rows, last, s0, s1, alpha, accumulate); break;
    case 2: panel_product(2, c, ldc, a, a_row, a_col, b, ldb, rows, last, s0, s1, alpha, accumulate); break;
    case 3: panel_product(3, c, ldc, a, a_row, a_col, b, ldb, rows, last, s0, s1, alpha, accumulate); break;
    default: panel_product(4, c, ldc, a, a_row, a_col, b, ldb, rows, last, s0, s1, alpha, accumulate); break;
    }
}

size_t avx512_f16_widen(float *out, const uint16_t *h, size_t n) {
    size_t done = n / 16 * 16;
    for (size_t i = 0; i < done; i += 16)
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
    return done;
}
#endif
