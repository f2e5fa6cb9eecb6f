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
    int64_t warmup;        /* steps of linear warmup from lr/warmup to lr */
    int64_t total_steps;
    double beta1, beta2, eps, weight_decay;
    double grad_clip;      /* 0 = off */
} OptimizerOptions;

/* Learning rate of optimizer step `step` (1-based). */
double lr_at(const OptimizerOptions *o, int64_t step);

/* sqrt(sum g^2) in double, summed in a fixed order (bitwise reproducible). */
double grad_global_norm(const float *grads, size_t n);

/* The factor clip_grad_norm_ scales gradients of this norm by, so that
 * theirs is at most max_norm: 1 when it already is, or when max_norm <= 0
 * (clipping off). adamw_step applies it. */
float grad_clip_factor(double norm, double max_norm);

/* grads *= f: a step over masked data turns its gradient, accumulated with
 * a fixed scale per target, into the gradient of the mean over the targets
 * the whole step counted (train.c). */
void grad_multiply(float *grads, size_t n, float f);

/* One AdamW step (t is 1-based) with the gradients grads * grad_scale
 * (grad_clip_factor; 1 for none): m, v and params updated in place; norm
 * weights (segments with is_norm) get no weight decay. params_bf16 (NULL
 * for none) is a bf16 copy of params (nf_bf16_keep's), written block by
 * block as params are (nf_bf16_round), so that it stays params rounded. */
void adamw_step(float *params, uint16_t *params_bf16, const float *grads, float grad_scale, float *m, float *v,
                const ParamSegment *seg, int n_seg, const OptimizerOptions *o, double lr, int64_t t);

/* The update that ends every training step (train and benchmark): the
 * global norm of grads (n floats), then, if it is finite, adamw_step with
 * the gradients clipped to o->grad_clip. Returns the norm; a NaN or
 * infinite one leaves params, m and v as they were. */
double optimizer_update(float *params, uint16_t *params_bf16, const float *grads, size_t n, float *m, float *v,
                        const ParamSegment *seg, int n_seg, const OptimizerOptions *o, double lr, int64_t t);

#endif
