/* infer.h — the inference forward pass, one token at a time with a KV cache.
 *
 * The cache holds only as many positions as the caller will use
 * (max_positions <= seq_len), so a model that claims a huge seq_len costs
 * nothing until it is actually used. */
#ifndef NF_INFER_H
#define NF_INFER_H

#include "lora.h"
#include "model.h"

typedef struct {
    int max_positions;    /* P: positions the KV cache can hold */
    float *x;             /* (D) residual stream */
    float *xb;            /* (D) normalized input / attention output */
    float *xb2;           /* (D) projection output */
    float *hb;            /* (H) FFN gate, then silu(gate) * up */
    float *hb2;           /* (H) FFN up */
    float *q;             /* (D) queries of this position */
    float *lora_u;        /* (D) LoRA scratch: s A x, rank <= D */
    float *scores;        /* (n_heads, P) attention weights */
    float *logits;        /* (V) output of the last forward */
    float *key_cache;     /* (L, P, KV) */
    float *value_cache;   /* (L, P, KV) */
} InferState;

int infer_state_init(InferState *s, const ModelConfig *c, int max_positions, NfError *err);
void infer_state_free(InferState *s);

/* Runs token at position pos (0 <= pos < max_positions), filling the KV cache
 * at pos; returns s->logits (V). lora (NULL for none) adds adapters on top. */
float *infer_forward(const Model *m, const Lora *lora, InferState *s, int token, int pos);

#endif
