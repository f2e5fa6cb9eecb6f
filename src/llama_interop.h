/* llama_interop.h — what a LLaMA's tensors are called elsewhere, and how
 * they are laid out there: llama.cpp's GGUF names (the same row order as
 * llama2.c, whose RoPE rotates adjacent pairs) and Hugging Face's
 * transformers names (whose RoPE rotates the two halves of a head, so the
 * rows of wq and wk are permuted). export.c and import.c both use this
 * one table, so a name can never differ between writing and reading. */
#ifndef NF_LLAMA_INTEROP_H
#define NF_LLAMA_INTEROP_H

#include <stdbool.h>
#include <stdint.h>

#include "lora.h"
#include "model.h"

typedef struct {
    char gguf_name[64];  /* "blk.3.attn_q.weight" */
    char hf_name[96];    /* "model.layers.3.self_attn.q_proj.weight" */
    float *data;         /* in the flat parameter buffer (params.h) */
    uint64_t rows, cols; /* (rows, cols) row-major; cols = 0 for a vector of `rows` values (a norm) */
    int rope_heads;      /* wq, wk, bq, bk (their heads), q_norm, k_norm (1): the heads whose rows HF orders by
                          * halves; 0 for other tensors */
    LoraTarget target;   /* the projection, for LoRA adapters; LORA_TARGETS for embeddings and norms */
    int layer;           /* -1 outside the layers */
} LlamaTensor;

/* Tensors of a model: embedding, per layer (attention norm, wq, [bq], wk,
 * [bk], wv, [bv], [q_norm, k_norm], wo, FFN norm, w1, w2, w3), final norm,
 * and the classifier when separate. */
static inline int llama_tensor_count(const ModelConfig *c) {
    return 2 + (9 + 3 * c->qkv_bias + 2 * c->qk_norm) * c->n_layers + !c->shared_classifier;
}
/* Fills out (llama_tensor_count entries) pointing into params (data NULL
 * when params is NULL: the names and shapes alone); returns the count. */
int llama_tensors(const ModelConfig *c, float *params, LlamaTensor *out);

/* HF's order of a projection's rows: per head, llama2.c's row 2i + p is HF's
 * row p * (hs / 2) + i. dst and src are (rows, cols), rows = heads * hs; a
 * vector (a bias, a q/k norm) has cols 0. */
void hf_permute_rows(float *dst, const float *src, int heads, uint64_t rows, uint64_t cols, bool to_hf);
/* Which of HF's rows our row `ours` of such a matrix is (rows = heads * hs) */
uint64_t hf_row_index(uint64_t ours, int heads, uint64_t rows);

/* Whether llama.cpp's architecture `arch` rotates the two halves of a head (NEOX RoPE: qwen2, qwen3), so that a
 * GGUF holds the RoPE-rotated rows (rope_heads) in HF's order, rather than adjacent pairs (llama), llama2.c's and
 * NeuralForge's order, which convert_hf_to_gguf.py permutes Llama's weights into (llama_model_rope_type in
 * llama.cpp's llama-model.cpp). */
static inline bool gguf_rope_neox(ModelArch arch) { return arch != ARCH_LLAMA; }

/* "{arch}.key", llama.cpp's name of an architecture's metadata key (llama-arch.cpp's LLM_KV_NAMES), into buf. */
const char *gguf_arch_key(char *buf, size_t cap, ModelArch arch, const char *key);

/* What llama.cpp's architecture for c has no place for (its tensor lists, llama-arch.cpp: biases in qwen2 (required
 * there) and llama (optional), q/k norms in qwen3 only, rope_freqs in llama only), or NULL. GGUF export refuses it
 * and GGUF import refuses a file that has it. */
const char *gguf_arch_refusal(const ModelConfig *c);

/* llama.cpp's rope_freqs.weight for llama3 RoPE scaling (head_size / 2 values): per pair, what the unscaled
 * frequency is divided by (convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors). */
void gguf_rope_factors(const ModelConfig *c, float *out);

/* HF module names of a LoRA target ("q_proj", ... "up_proj") and its place ("self_attn" or "mlp"). */
const char *hf_module_name(LoraTarget t);
const char *hf_block_name(LoraTarget t);

#endif
