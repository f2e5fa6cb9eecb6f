/* train_model.h — the batched forward and backward pass of training.
 *
 * Activations for a (B, T) batch are allocated once per run and every
 * intermediate the backward pass needs is kept: nothing is recomputed and
 * nothing is hidden. Shapes: N = B*T rows; L, D, H, KV, V as in params.h;
 * NH = n_heads. */
#ifndef NF_TRAIN_MODEL_H
#define NF_TRAIN_MODEL_H

#include "params.h"

typedef struct {
    int B, T;
    float *resid;       /* (L+1, N, D) input of each layer; [L] feeds the final norm */
    float *resid_mid;   /* (L, N, D) stream after the attention block */
    float *xn_att;      /* (L, N, D) rmsnorm(resid) */
    float *rstd_att;    /* (L, N) */
    float *q;           /* (L, N, D) queries after RoPE */
    float *k;           /* (L, N, KV) keys after RoPE */
    float *v;           /* (L, N, KV) */
    float *att;         /* (L, B, NH, T, T) softmax weights */
    float *att_out;     /* (L, N, D) attention output before wo */
    float *xn_ffn;      /* (L, N, D) */
    float *rstd_ffn;    /* (L, N) */
    float *h1;          /* (L, N, H) gate pre-activation */
    float *h3;          /* (L, N, H) up */
    float *hact;        /* (L, N, H) silu(h1) * h3 */
    float *xn_final;    /* (N, D) */
    float *rstd_final;  /* (N) */
    float *logits;      /* (N, V), replaced by their gradient in backward */
    /* gradient scratch, reused by every layer */
    float *dresid;      /* (N, D) gradient of the residual stream */
    float *dxn;         /* (N, D) */
    float *datt_out;    /* (N, D) */
    float *dq;          /* (N, D) */
    float *dk;          /* (N, KV) */
    float *dv;          /* (N, KV) */
    float *dh1;         /* (N, H) */
    float *dh3;         /* (N, H) */
    float *dhact;       /* (N, H) */
} Activations;

int activations_init(Activations *a, const ModelConfig *c, int B, int T, NfError *err);
void activations_free(Activations *a);
/* Bytes the activations take for this shape (for reporting and limits). */
uint64_t activations_bytes(const ModelConfig *c, int B, int T);

/* Forward pass over tokens (B, T); returns the mean cross-entropy against
 * targets (B, T). If grad_scale != 0, leaves d(mean loss * grad_scale)/dlogits
 * in a->logits ready for model_backward. */
double model_forward(const ModelConfig *c, const ParamPointers *p, Activations *a, const int *tokens,
                     const int *targets, float grad_scale);

/* Backward pass after model_forward(..., grad_scale != 0): accumulates (+=)
 * the gradient of every parameter into g. */
void model_backward(const ModelConfig *c, const ParamPointers *p, const ParamPointers *g, Activations *a,
                    const int *tokens);

#endif
