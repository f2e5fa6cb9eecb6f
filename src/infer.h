/* infer.h — the inference forward pass, one token at a time with a KV cache.
 *
 * The cache holds only as many positions as the caller will use
 * (max_positions <= seq_len), so a model that claims a huge seq_len costs
 * nothing until it is actually used. */
#ifndef NF_INFER_H
#define NF_INFER_H

#include "decode_threads.h"
#include "lora.h"
#include "model.h"
#include "team.h"

/* Rows of one batch: a prompt runs through the layers INFER_CHUNK tokens at a
 * time, so its products are matrix-matrix (sgemm) rather than one GEMV per token. */
#define INFER_CHUNK 256

/* What the KV cache stores. fp32 keeps generation bit for bit with
 * llama2.c's; bf16 halves the bytes every generated token reads back (the
 * cache's share of a token grows with its position) at the cost of rounding
 * each key and value to 8 bits of mantissa. */
typedef enum { KV_CACHE_F32, KV_CACHE_BF16 } KvCacheType;

/* Where the forward's time goes, for `benchmark`: with on set, each forward adds the wall time of its weight
 * products (each a parallel region of its own, as they run) and of its attention (the cache's reads) here. */
typedef struct {
    bool on;
    double product_ms, attention_ms;
} InferTiming;

typedef struct {
    int max_positions;  /* P: positions the KV cache can hold */
    int chunk;          /* C: rows of the buffers below, min(P, INFER_CHUNK) */
    float *x;           /* (C, D) residual stream */
    float *xb;          /* (C, D) normalized input / attention output */
    float *xb2;         /* (C, D) projection output */
    float *hb;          /* (C, H) FFN gate, then silu(gate) * up */
    float *hb2;         /* (C, H) FFN up */
    float *q;           /* (C, D) queries of these positions */
    float *lora_u;      /* (C, D) LoRA scratch: s A x, rank <= D */
    float *scores;      /* (n_heads, P) attention weights of one row */
    float *rope;        /* (P, hs) RoPE's (cos, sin) pairs, nf_rope_table */
    float *att_scratch; /* nf_attention_scratch_floats(1, P, KVH, hs): a prompt chunk's attention tiles */
    float *logits;      /* (V) output of the last forward */
    KvCacheType kv_type;
    /* The cache is head-major, so that a decode step streams each head's
     * rows: layer l, kv head j, position t at ((l * KVH + j) * P + t) * hs. */
    float *key_cache;           /* fp32 cache: (L, KVH, P, hs); NULL under bf16 */
    float *value_cache;         /* (L, KVH, P, hs) */
    uint16_t *key_cache_bf16;   /* bf16 cache: (L, KVH, P, hs); NULL under fp32 */
    uint16_t *value_cache_bf16; /* (L, KVH, P, hs) */
    float *keys;                /* (P, KV) one layer's keys by position: new rows, a prompt chunk's attention input */
    float *values;              /* (P, KV) */
    InferTiming timing;         /* off (zeroed) unless the caller turns it on */
    DecodeThreads threads;      /* one token's thread count (decode_threads.h); off (zeroed) unless turned on */
    NfTeam *team;               /* one row's threads (team.h), started by the first row that can use them */
    bool team_failed;           /* no threads could be started for it: OpenMP's run those rows */
} InferState;

int infer_state_init(InferState *s, const ModelConfig *c, int max_positions, KvCacheType kv_type, NfError *err);
void infer_state_free(InferState *s);

/* Lets generated tokens choose their thread count (decode_threads.h) when threads is 0 (the user chose none) and
 * OMP_NUM_THREADS is unset; nf_set_threads must have run. */
void infer_adapt_threads(InferState *s, int threads);
/* The threads infer_forward will run one token (n = 1) with next: decode_threads' count where it chooses, else all */
int infer_token_threads(const InferState *s, const Lora *lora);

/* Runs tokens[0..n) (n >= 1) at positions pos .. pos+n-1 (< max_positions),
 * filling the KV cache there; returns s->logits (V), the prediction after the
 * last one, or NULL for positions outside the cache. lora (NULL for none)
 * adds adapters on top. */
float *infer_forward(const Model *m, const Lora *lora, InferState *s, const int *tokens, int n, int pos);

#endif
