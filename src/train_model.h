/* train_model.h — the batched forward and backward pass of training.
 *
 * Activations for a (B, T) batch are allocated once per run and every
 * intermediate the backward pass needs is kept, except what is cheap to
 * recompute (listed below) and, under LoRA, the FFN's h1 and h3 and the
 * full logits (see ffn_stride, logit_rows). Shapes: N = B*T rows; L, D, QD, H, KV, V, hs as in
 * params.h; NH = n_heads, NKV = n_kv_heads. */
#ifndef NF_TRAIN_MODEL_H
#define NF_TRAIN_MODEL_H

#include "backend.h"
#include "lora.h"
#include "params.h"

/* A frozen base's matrices as bfloat16 bits (LoRA under --dtype bf16), in
 * params.h's shapes; wcls is token_embedding when the classifier is shared. */
typedef struct {
    const uint16_t *token_embedding, *wq, *wk, *wv, *wo, *w1, *w2, *w3, *wcls;
} BaseBf16;

/* The network the passes run: base weights, and LoRA adapters when lora != NULL. */
typedef struct {
    const ModelConfig *config;
    ParamPointers w;      /* with trained LoRA norms, its rms_* point at the adapter buffer's */
    const Lora *lora;     /* NULL: no adapters */
    const BaseBf16 *bf16; /* the base's matrices in bf16 only (w's matrix pointers NULL), or NULL */
} Net;

/* LoRA's frozen base held in bf16 (frozen_base_bf16): the matrices rounded
 * once, the norms, biases and q/k norms (a few MB) kept in fp32. */
typedef struct {
    BaseBf16 w;      /* views into bits */
    uint16_t *bits;  /* every matrix, in params.h order */
    float *small;    /* the fp32 pieces */
    ParamPointers p; /* the fp32 pieces in small; the matrices NULL */
    uint64_t bytes;  /* bits and small together */
} FrozenBase;

/* Where backward accumulates gradients; a NULL pointer is a frozen weight. */
typedef struct {
    ParamPointers w;
    LoraPointers lora;
    /* called by backward after each layer (last to first), whose gradients are then done, with layer_ctx; NULL:
     * none (net_full and net_lora leave it so). grad_sync.h starts summing them over the ranks there. */
    void (*layer_done)(void *layer_ctx, int layer);
    void *layer_ctx;
} NetGrads;

typedef struct {
    int B, T;
    int head_size;    /* hs: a row of the RoPE table holds one head's pairs */
    float *resid;     /* (L+1, N, D) input of each layer; [L] feeds the final norm */
    float *resid_mid; /* (L, N, D) stream after the attention block */
    /* xn_att, xn_ffn and hact are cheap to recompute, so they hold the
     * current layer only: forward writes them, backward recomputes them from
     * what is kept (resid, resid_mid, rstd_*, h1, h3). att_out is kept for
     * every layer when wo trains (its weight or an adapter); under LoRA
     * without a wo adapter one layer's worth is reused: att_out_stride 0. */
    float *xn_att;     /* (N, D) rmsnorm(resid) of the current layer */
    float *rstd_att;   /* (L, N) */
    float *q;          /* (L, N, QD) queries after RoPE */
    float *k;          /* (L, N, KV) keys after RoPE */
    float *v;          /* (L, N, KV) */
    float *q_raw;      /* (L, N, QD) qk_norm only: queries before their norm (bias added) */
    float *k_raw;      /* (L, N, KV) qk_norm only */
    float *rstd_q;     /* (L, N, NH) qk_norm only */
    float *rstd_k;     /* (L, N, NKV) qk_norm only */
    float *att_lse;    /* (L, B, NH, T) log-sum-exp of each attention row (scores are recomputed) */
    float *att_out;    /* (L, N, QD) attention output before wo */
    float *xn_ffn;     /* (N, D) rmsnorm(resid_mid) of the current layer */
    float *rstd_ffn;   /* (L, N) */
    float *h1;         /* (L, N, H) gate pre-activation; under LoRA (N, H): ffn_stride 0 */
    float *h3;         /* (L, N, H) up; likewise */
    float *hact;       /* (N, H) silu(h1) * h3 of the current layer */
    float *xn_final;   /* (N, D) */
    float *rstd_final; /* (N) */
    float *logits;     /* (logit_rows, V): the classifier's output, a chunk of rows at a time */
    /* gradient scratch, reused by every layer */
    float *dresid;      /* (N, D) gradient of the residual stream */
    float *dxn;         /* (N, D) */
    float *datt_out;    /* (N, QD) */
    float *dq;          /* (N, QD) */
    float *dk;          /* (N, KV) */
    float *dq_raw;      /* (N, QD) qk_norm only: the gradient before the norm */
    float *dk_raw;      /* (N, KV) qk_norm only */
    float *dv;          /* (N, KV) */
    float *dh1;         /* (N, H) */
    float *dh3;         /* (N, H) */
    float *dhact;       /* (N, H) */
    float *att_scratch; /* nf_attention_scratch_floats(B, T, NKV, hs): attention's tiles and transposed heads */
    float *rope;        /* (T, hs) RoPE's (cos, sin) pairs, nf_rope_table */
    /* LoRA only (empty without adapters); r = rank, M = max(D, QD, H) */
    float *lora_u;         /* (L, n_targets, N, r) s * A x of each adapted projection */
    float *lora_x;         /* (N, M) scratch: an adapter's input after dropout */
    float *lora_dx;        /* (N, M) scratch: its gradient */
    float *lora_du;        /* (N, r) scratch */
    uint64_t dropout_key;  /* the dropout masks of the last forward (0 = none), redrawn by backward */
    size_t att_out_stride; /* floats per layer of att_out, or 0 */
    /* Under LoRA the classifier is frozen, so forward finishes it: the
     * logits are computed logit_rows rows at a time (never all N x V at
     * once), each chunk's loss and gradient taken at once, and the gradient
     * of xn_final left in dxn for backward. Full training keeps all N rows,
     * replaced by their gradient for backward's classifier weight gradient.
     * A test may lower logit_rows to split a small batch. */
    int logit_rows;
    bool classifier_in_forward;
    /* Under LoRA h1 and h3 hold one layer (ffn_stride 0) and backward
     * recomputes them from resid_mid (adapters and dropout masks included:
     * the masks are hashed, so they redraw exactly): L x N x H x 2 floats
     * less for a third more of the FFN's forward products. Else N * H. */
    size_t ffn_stride;
    Bf16Context *bf16; /* --dtype bf16: the weight products run in bf16; NULL for fp32 */
} Activations;

/* Builds fb from the fp32 base src (model c): each matrix rounded to bf16
 * (to nearest even; exact for a bf16 model), the small pieces copied. With
 * release_src, src is memory about to be freed and its pages are handed
 * back behind the conversion, so the peak stays near src's own size.
 * NF_ERR_MEMORY when out of memory (fb is then empty). */
int frozen_base_bf16(FrozenBase *fb, const ModelConfig *c, const ParamPointers *src, bool release_src, NfError *err);
void frozen_base_free(FrozenBase *fb);
/* Bytes frozen_base_bf16 allocates for model c. */
uint64_t frozen_base_bytes(const ModelConfig *c);

/* A network of every weight in params (params.h layout); g (if not NULL)
 * points at grads, laid out alike (NULL grads: g all NULL). */
void net_full(Net *net, NetGrads *g, const ModelConfig *c, float *params, float *grads);
/* LoRA on the frozen base weights: g (if not NULL) gets the adapter gradients
 * in adapter_grads (lora.h layout) and nothing for the base. Trained norms
 * take the place of the base's norms. A base held in bf16 (FrozenBase):
 * base is its p, and the caller sets net->bf16 to its w. */
void net_lora(Net *net, NetGrads *g, const ModelConfig *c, const ParamPointers *base, const Lora *lora,
              float *adapter_grads);

/* FLOPs of one token's forward and backward with sequences of T tokens
 * (lora: NULL for full training), for tok/s -> FLOP/s reporting. */
double model_flops_per_token(const ModelConfig *c, int T, const LoraConfig *lora);

/* lora (may be NULL) sizes the adapter buffers; bf16 makes the products with
 * the model's weights run in bf16 (fp32 master weights and optimizer state). */
int activations_init(Activations *a, const ModelConfig *c, const LoraConfig *lora, int B, int T, bool bf16,
                     NfError *err);
void activations_free(Activations *a);
/* Under --dtype bf16, rounds the weights the products read once and keeps
 * them (nf_bf16_keep). Full training keeps all of params (n_params floats)
 * and returns the copy, which optimizer_update must keep in step; under
 * LoRA the frozen base's projections and classifier are kept, need no
 * upkeep, and NULL is returned. Also NULL for fp32, or when memory is short
 * (the products then round the weights at every call, as before). */
uint16_t *activations_keep_bf16_weights(Activations *a, const Net *net, float *params, size_t n_params);
/* Floats in each of the bf16 context's two operand buffers (activations_init). */
uint64_t bf16_operand_floats(const ModelConfig *c, const LoraConfig *lora, int B, int T);
/* Bytes the activations take for this shape (for reporting and limits). */
uint64_t activations_bytes(const ModelConfig *c, const LoraConfig *lora, int B, int T);

/* Forward pass over tokens (B, T); returns the mean cross-entropy against
 * targets (B, T) over the counted targets: a target < 0 is masked out of
 * the loss (a prompt token of instruction data; data.h), and the mean is
 * over the targets >= 0 (model_counted_targets), 0 when there is none. With
 * every target counted this is the plain mean over B*T, bit for bit as
 * before masks existed. If grad_scale != 0, leaves
 * d(mean loss * grad_scale)/dlogits in a->logits ready for model_backward
 * (zero rows for masked targets, so with none counted the gradient is zero);
 * under LoRA (classifier_in_forward) it goes on through the frozen
 * classifier and leaves the gradient of xn_final in a->dxn instead.
 * dropout_key != 0 draws LoRA dropout masks from it (training); 0 means no
 * dropout (evaluation). */
double model_forward(const Net *net, Activations *a, const int *tokens, const int *targets, float grad_scale,
                     uint64_t dropout_key);
/* How many of targets[0..n) the loss counts (those >= 0). */
int model_counted_targets(const int *targets, int n);

/* Backward pass after model_forward(..., grad_scale != 0): the gradient of
 * every parameter that g does not leave NULL, written over whatever the
 * buffers held under NF_SET (a step's first micro-batch: no zeroing), added
 * to them under NF_ADD (the micro-batches after it). */
void model_backward(const Net *net, const NetGrads *g, NfWrite grads, Activations *a, const int *tokens);

#endif
