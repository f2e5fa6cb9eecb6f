/* llama_interop.c — the LLaMA tensor table for GGUF and Hugging Face (see llama_interop.h). */
#include "llama_interop.h"

#include <stdio.h>
#include <string.h>

#include "params.h"

static const char *const GGUF_LAYER_NAMES[] = {"attn_q",   "attn_k",   "attn_v", "attn_output",
                                               "ffn_gate", "ffn_down", "ffn_up"};
static const char *const HF_MODULES[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"};

const char *hf_module_name(LoraTarget t) { return HF_MODULES[t]; }
const char *hf_block_name(LoraTarget t) { return t <= LORA_WO ? "self_attn" : "mlp"; }

static LlamaTensor *add(LlamaTensor *t, const char *gguf, const char *hf, float *data, uint64_t rows, uint64_t cols,
                        LoraTarget target, int layer) {
    memset(t, 0, sizeof *t);
    snprintf(t->gguf_name, sizeof t->gguf_name, "%s", gguf);
    snprintf(t->hf_name, sizeof t->hf_name, "%s", hf);
    t->data = data;
    t->rows = rows;
    t->cols = cols;
    t->target = target;
    t->layer = layer;
    return t + 1;
}

/* params + offset, or NULL without a buffer (callers that only want the names) */
static float *at(float *params, size_t offset) { return params ? params + offset : NULL; }

/* The segment of the flat buffer (params.h) that holds each LoRA target's matrices, layer after layer. */
static const ParamSegmentId SEGMENT_OF[LORA_TARGETS] = {
    [LORA_WQ] = PARAM_WQ, [LORA_WK] = PARAM_WK, [LORA_WV] = PARAM_WV, [LORA_WO] = PARAM_WO,
    [LORA_W1] = PARAM_W1, [LORA_W2] = PARAM_W2, [LORA_W3] = PARAM_W3,
};

int llama_tensors(const ModelConfig *c, float *params, LlamaTensor *out) {
    ParamSegment seg[PARAM_SEGMENTS_MAX]; /* indexed by ParamSegmentId */
    param_segments(c, seg);
    uint64_t D = (uint64_t)c->dim, H = (uint64_t)c->hidden_dim, KV = (uint64_t)config_kv_dim(c),
             V = (uint64_t)c->vocab_size, QD = (uint64_t)config_q_dim(c), hs = (uint64_t)config_head_size(c);
    LlamaTensor *t = out;
    t = add(t, "token_embd.weight", "model.embed_tokens.weight", at(params, seg[PARAM_TOKEN_EMBEDDING].offset), V, D,
            LORA_TARGETS, -1);
    const uint64_t rows[LORA_TARGETS] = {
        [LORA_WQ] = QD, [LORA_WK] = KV, [LORA_WV] = KV, [LORA_WO] = D, [LORA_W1] = H, [LORA_W2] = D, [LORA_W3] = H};
    const uint64_t cols[LORA_TARGETS] = {
        [LORA_WQ] = D, [LORA_WK] = D, [LORA_WV] = D, [LORA_WO] = QD, [LORA_W1] = D, [LORA_W2] = H, [LORA_W3] = D};
    const ParamSegmentId bias_segment[3] = {PARAM_BQ, PARAM_BK, PARAM_BV};
    const int heads[3] = {c->n_heads, c->n_kv_heads, 0}; /* whose rows HF orders by halves; v is not rotated */
    for (int l = 0; l < c->n_layers; l++) {
        char g[64], h[96];
        /* per layer: attention norm, wq, wk, wv, wo, then FFN norm, w1, w2, w3 */
        for (int k = LORA_WQ; k <= LORA_W3; k++) {
            if (k == LORA_WQ || k == LORA_W1) {
                bool attention = k == LORA_WQ;
                snprintf(g, sizeof g, "blk.%d.%s.weight", l, attention ? "attn_norm" : "ffn_norm");
                snprintf(h, sizeof h, "model.layers.%d.%s.weight", l,
                         attention ? "input_layernorm" : "post_attention_layernorm");
                ParamSegmentId norm = attention ? PARAM_RMS_ATT : PARAM_RMS_FFN;
                t = add(t, g, h, at(params, seg[norm].offset + l * D), D, 0, LORA_TARGETS, l);
            }
            snprintf(g, sizeof g, "blk.%d.%s.weight", l, GGUF_LAYER_NAMES[k]);
            snprintf(h, sizeof h, "model.layers.%d.%s.%s.weight", l, hf_block_name((LoraTarget)k), HF_MODULES[k]);
            float *w = at(params, seg[SEGMENT_OF[k]].offset + l * rows[k] * cols[k]);
            t = add(t, g, h, w, rows[k], cols[k], (LoraTarget)k, l);
            if (k <= LORA_WV) t[-1].rope_heads = heads[k];
            if (k <= LORA_WV && c->qkv_bias) { /* Qwen 2: the projection's bias after it */
                snprintf(g, sizeof g, "blk.%d.%s.bias", l, GGUF_LAYER_NAMES[k]);
                snprintf(h, sizeof h, "model.layers.%d.self_attn.%s.bias", l, HF_MODULES[k]);
                t = add(t, g, h, at(params, seg[bias_segment[k]].offset + l * rows[k]), rows[k], 0, LORA_TARGETS, l);
                t[-1].rope_heads = heads[k];
            }
            if (k == LORA_WV && c->qk_norm) { /* Qwen 3: one norm of a head's width for q, one for k */
                for (int qk = 0; qk < 2; qk++) {
                    snprintf(g, sizeof g, "blk.%d.%s.weight", l, qk ? "attn_k_norm" : "attn_q_norm");
                    snprintf(h, sizeof h, "model.layers.%d.self_attn.%s.weight", l, qk ? "k_norm" : "q_norm");
                    ParamSegmentId norm = qk ? PARAM_K_NORM : PARAM_Q_NORM;
                    t = add(t, g, h, at(params, seg[norm].offset + l * hs), hs, 0, LORA_TARGETS, l);
                    t[-1].rope_heads = 1;
                }
            }
        }
    }
    t = add(t, "output_norm.weight", "model.norm.weight", at(params, seg[PARAM_RMS_FINAL].offset), D, 0, LORA_TARGETS,
            -1);
    if (!c->shared_classifier)
        t = add(t, "output.weight", "lm_head.weight", at(params, seg[PARAM_WCLS].offset), V, D, LORA_TARGETS, -1);
    return (int)(t - out);
}

uint64_t hf_row_index(uint64_t ours, int heads, uint64_t rows) {
    uint64_t hs = rows / (uint64_t)heads, half = hs / 2, r = ours % hs;
    return ours - r + (r % 2) * half + r / 2; /* row 2i + p of a head is HF's row p * half + i */
}

void hf_permute_rows(float *dst, const float *src, int heads, uint64_t rows, uint64_t cols, bool to_hf) {
    if (cols == 0) cols = 1; /* a vector: one value per row */
    for (uint64_t ours = 0; ours < rows; ours++) {
        uint64_t theirs = hf_row_index(ours, heads, rows);
        memcpy(dst + (to_hf ? theirs : ours) * cols, src + (to_hf ? ours : theirs) * cols, cols * sizeof(float));
    }
}

void gguf_rope_factors(const ModelConfig *c, float *out) {
    ModelConfig plain = *c;
    plain.rope_scaling.type = ROPE_SCALING_NONE;
    for (int i = 0; i < config_head_size(c) / 2; i++) out[i] = config_rope_freq(&plain, i) / config_rope_freq(c, i);
}

const char *gguf_arch_refusal(const ModelConfig *c) {
    if (c->arch == ARCH_QWEN2 && !c->qkv_bias) return "a qwen2 model without q/k/v biases (llama.cpp requires them)";
    if (c->arch == ARCH_QWEN3 && c->qkv_bias) return "q/k/v biases in a qwen3 model (llama.cpp's qwen3 has none)";
    if (c->arch != ARCH_QWEN3 && c->qk_norm) return "q/k norms outside the qwen3 architecture";
    if (c->arch != ARCH_LLAMA && c->rope_scaling.type != ROPE_SCALING_NONE)
        return "llama3 RoPE scaling outside the llama architecture (llama.cpp reads rope_freqs for llama only)";
    return NULL;
}

const char *gguf_arch_key(char *buf, size_t cap, ModelArch arch, const char *key) {
    snprintf(buf, cap, "%s.%s", model_arch_name(arch), key);
    return buf;
}
