/* backend_cpu.c — the CPU implementation of backend.h.
 *
 * Batched fp32 products go to oneDNN's sgemm; single rows (generation) use
 * an OpenMP row-parallel dot product, which is memory-bound either way. Q8
 * weights are dequantized group by group inside the dot product. */
#include "backend.h"

#include <math.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

/* Dot product with 8 independent partial sums: vectorizes without -ffast-math. */
static inline float dot_f32(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Dot of n Q8 values starting at flat element `start` of a tensor with fp32 x.
 * Groups run over the flattened tensor, so a row need not start on a group
 * boundary (llama2.c only requires dim, not hidden_dim, to be a multiple). */
static inline float dot_q8(const Tensor *w, size_t start, const float *x, int n) {
    const int8_t *q = w->q + start;
    size_t gs = (size_t)w->group_size;
    float s = 0.0f;
    int j = 0;
    while (j < n) {
        size_t flat = start + (size_t)j;
        int seg = (int)(gs - flat % gs);
        if (seg > n - j) seg = n - j;
        float acc = 0.0f;
        for (int k = 0; k < seg; k++) acc += (float)q[j + k] * x[j + k];
        s += acc * w->scale[flat / gs];
        j += seg;
    }
    return s;
}

void nf_matmul(float *out, const float *x, const Tensor *w, int n, int in_dim, int out_dim) {
    if (w->dtype == NF_F32 && n > 1) {
        /* row-major: out (n, out_dim) = x (n, in_dim) * W^T */
        dnnl_sgemm('N', 'T', n, out_dim, in_dim, 1.0f, x, in_dim, w->f32, in_dim, 0.0f, out, out_dim);
        return;
    }
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * in_dim;
        float *outr = out + (size_t)r * out_dim;
        int i;
        if (w->dtype == NF_F32) {
#pragma omp parallel for schedule(static)
            for (i = 0; i < out_dim; i++) outr[i] = dot_f32(w->f32 + (size_t)i * in_dim, xr, in_dim);
        } else {
#pragma omp parallel for schedule(static)
            for (i = 0; i < out_dim; i++) outr[i] = dot_q8(w, (size_t)i * in_dim, xr, in_dim);
        }
    }
}

void nf_rmsnorm(float *out, const float *x, const float *weight, int dim) {
    float ss = 0.0f;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / dim + 1e-5f);
    for (int i = 0; i < dim; i++) out[i] = weight[i] * (inv * x[i]);
}

void nf_rope(float *vec, int n_heads, int head_size, int pos) {
    for (int i = 0; i < head_size; i += 2) {
        /* same float expression as llama2.c's run.c, so greedy outputs match bit for bit */
        float freq = 1.0f / powf(10000.0f, i / (float)head_size);
        float angle = pos * freq;
        float c = cosf(angle), s = sinf(angle);
        for (int h = 0; h < n_heads; h++) {
            float *v = vec + (size_t)h * head_size + i;
            float v0 = v[0], v1 = v[1];
            v[0] = v0 * c - v1 * s;
            v[1] = v0 * s + v1 * c;
        }
    }
}

void nf_softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

void nf_swiglu(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void nf_attention_decode(float *out, const float *q, const float *keys, const float *values, float *scores,
                         int pos, int n_heads, int n_kv_heads, int head_size) {
    int kv_dim = n_kv_heads * head_size;
    int group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_size);
    int h;
#pragma omp parallel for schedule(static)
    for (h = 0; h < n_heads; h++) {
        const float *qh = q + (size_t)h * head_size;
        const float *kh = keys + (size_t)(h / group) * head_size;
        const float *vh = values + (size_t)(h / group) * head_size;
        float *sh = scores + (size_t)h * (pos + 1);
        for (int t = 0; t <= pos; t++) sh[t] = dot_f32(qh, kh + (size_t)t * kv_dim, head_size) * scale;
        nf_softmax(sh, pos + 1);
        float *oh = out + (size_t)h * head_size;
        memset(oh, 0, (size_t)head_size * sizeof(float));
        for (int t = 0; t <= pos; t++) {
            const float *vt = vh + (size_t)t * kv_dim;
            float a = sh[t];
            for (int i = 0; i < head_size; i++) oh[i] += a * vt[i];
        }
    }
}
