/* optimizer.h — AdamW with decoupled weight decay, global-norm gradient
 * clipping and the learning-rate schedules, all over the flat parameter
 * buffer (params.h). Matches torch.optim.AdamW and clip_grad_norm_. */
#ifndef NF_OPTIMIZER_H
#define NF_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include "params.h"

typedef enum { LR_CONSTANT, LR_COSINE, LR_LINEAR } LrSchedule;

typedef struct {
    double lr, lr_min;
    LrSchedule schedule;
    int64_t warmup; /* steps of linear warmup from lr/warmup to lr */
    int64_t total_steps;
    double beta1, beta2, eps, weight_decay;
    double grad_clip; /* 0 = off */
} OptimizerOptions;

/* Learning rate of optimizer step `step` (1-based). */
double lr_at(const OptimizerOptions *o, int64_t step);

/* sum g^2 in double, summed in a fixed order (bitwise reproducible); its sqrt is the global norm. */
double grad_sum_squares(const float *grads, size_t n);

/* grads *= f: a step over masked data turns its gradient, accumulated with
 * a fixed scale per target, into the gradient of the mean over the targets
 * the whole step counted (train.c). */
void grad_multiply(float *grads, size_t n, float f);

/* The update that ends every training step (train and benchmark): the
 * global norm of grads (n floats), then, if it is finite, adamw_step with
 * the gradients clipped to o->grad_clip. Returns the norm; a NaN or
 * infinite one leaves params, m and v as they were. */
double optimizer_update(float *params, uint16_t *params_bf16, const float *grads, size_t n, float *m, float *v,
                        const ParamSegment *seg, int n_seg, const OptimizerOptions *o, double lr, int64_t t);

/* The update of the part [lo, hi) of the flat buffer (--zero 1: a rank's
 * shard), with the gradients' global norm already known (every shard's sum
 * of squares, summed): grads, m and v hold that part only (grads[i - lo]);
 * params and params_bf16 are the whole buffers. Nothing is updated when the
 * norm is not finite. */
void optimizer_update_part(float *params, uint16_t *params_bf16, const float *grads, float *m, float *v, size_t lo,
                           size_t hi, double norm, const ParamSegment *seg, int n_seg, const OptimizerOptions *o,
                           double lr, int64_t t);

#endif
