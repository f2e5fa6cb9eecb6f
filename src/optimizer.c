/* optimizer.c — AdamW, clipping and schedules. */
#include "optimizer.h"

#include <math.h>

#include "backend.h"

double lr_at(const OptimizerOptions *o, int64_t step) {
    if (o->warmup > 0 && step <= o->warmup) return o->lr * (double)step / (double)o->warmup;
    if (o->schedule == LR_CONSTANT || o->total_steps <= o->warmup) return o->lr;
    double progress = (double)(step - o->warmup) / (double)(o->total_steps - o->warmup);
    if (progress > 1.0) progress = 1.0;
    if (o->schedule == LR_COSINE)
        return o->lr_min + 0.5 * (1.0 + cos(3.14159265358979323846 * progress)) * (o->lr - o->lr_min);
    return o->lr - (o->lr - o->lr_min) * progress;
}

#define NORM_CHUNK 65536

/* sum of x[i]^2 in double, with eight partial sums: one running sum would be
 * a chain of dependent adds, four cycles each, slower than reading memory */
static double sum_squares(const float *x, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[i + k] * x[i + k];
    double s = 0.0;
    for (; i < n; i++) s += (double)x[i] * x[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

double grad_sum_squares(const float *grads, size_t n) {
    size_t chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    double total = 0.0;
    /* chunk sums in parallel, added in chunk order: the same bits whatever the thread count */
    double partial[256];
    for (size_t base = 0; base < chunks; base += 256) {
        size_t count = chunks - base < 256 ? chunks - base : 256;
        long c;
#pragma omp parallel for schedule(static)
        for (c = 0; c < (long)count; c++) {
            size_t start = (base + (size_t)c) * NORM_CHUNK, end = start + NORM_CHUNK < n ? start + NORM_CHUNK : n;
            partial[c] = sum_squares(grads + start, end - start);
        }
        for (size_t c2 = 0; c2 < count; c2++) total += partial[c2];
    }
    return total;
}

/* The factor clip_grad_norm_ scales gradients of this norm by, so that
 * theirs is at most max_norm: 1 when it already is, or when max_norm <= 0
 * (clipping off). adamw_step applies it. */
static float grad_clip_factor(double norm, double max_norm) {
    double coef = max_norm / (norm + 1e-6);
    return max_norm <= 0 || coef >= 1.0 ? 1.0f : (float)coef;
}

void grad_multiply(float *grads, size_t n, float f) {
    size_t i;
#pragma omp parallel for schedule(static)
    for (i = 0; i < n; i++) grads[i] *= f;
}

#define ADAMW_BLOCK 16384 /* floats: the bf16 copy is written while the block is still in cache */

/* One AdamW step (t is 1-based) over the part [lo, hi) of the flat buffer,
 * with the gradients grads * grad_scale (grad_clip_factor; 1 for none):
 * grads, m and v hold that part (grads[i - lo]), updated in place with
 * params; norm weights (segments with is_norm) get no weight decay.
 * params_bf16 (NULL for none) is a bf16 copy of params (nf_bf16_keep's),
 * written block by block as params are (nf_bf16_round), so that it stays
 * params rounded. */
static void adamw_step(float *params, uint16_t *params_bf16, const float *grads, float grad_scale, float *m, float *v,
                       size_t lo, size_t hi, const ParamSegment *seg, int n_seg, const OptimizerOptions *o, double lr,
                       int64_t t) {
    float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    float bc1 = (float)(1.0 - pow(o->beta1, (double)t)), bc2 = (float)(1.0 - pow(o->beta2, (double)t));
    float step_size = (float)lr / bc1, bc2_sqrt = sqrtf(bc2);
    for (int s = 0; s < n_seg; s++) {
        float decay = seg[s].is_norm ? 1.0f : (float)(1.0 - lr * o->weight_decay);
        size_t first = seg[s].offset > lo ? seg[s].offset : lo;
        size_t last = seg[s].offset + seg[s].count < hi ? seg[s].offset + seg[s].count : hi;
        if (first >= last) continue;
        size_t blocks = (last - first + ADAMW_BLOCK - 1) / ADAMW_BLOCK, b;
#pragma omp parallel for schedule(static)
        for (b = 0; b < blocks; b++) {
            size_t start = first + b * ADAMW_BLOCK, end = start + ADAMW_BLOCK < last ? start + ADAMW_BLOCK : last;
            for (size_t i = start; i < end; i++) {
                size_t k = i - lo;
                float g = grads[k] * grad_scale; /* clipping here saves a pass over the gradients */
                m[k] = b1 * m[k] + (1.0f - b1) * g;
                v[k] = b2 * v[k] + (1.0f - b2) * g * g;
                /* torch: p *= 1 - lr wd;  p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) */
                params[i] = params[i] * decay - step_size * m[k] / (sqrtf(v[k]) / bc2_sqrt + eps);
            }
            if (params_bf16) nf_bf16_round(params_bf16 + start, params + start, end - start);
        }
    }
}

void optimizer_update_part(float *params, uint16_t *params_bf16, const float *grads, float *m, float *v, size_t lo,
                           size_t hi, double norm, const ParamSegment *seg, int n_seg, const OptimizerOptions *o,
                           double lr, int64_t t) {
    if (isfinite(norm))
        adamw_step(params, params_bf16, grads, grad_clip_factor(norm, o->grad_clip), m, v, lo, hi, seg, n_seg, o, lr,
                   t);
}

double optimizer_update(float *params, uint16_t *params_bf16, const float *grads, size_t n, float *m, float *v,
                        const ParamSegment *seg, int n_seg, const OptimizerOptions *o, double lr, int64_t t) {
    double norm = sqrt(grad_sum_squares(grads, n));
    optimizer_update_part(params, params_bf16, grads, m, v, 0, n, norm, seg, n_seg, o, lr, t);
    return norm;
}
