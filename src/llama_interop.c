/* llama_interop.c — the LLaMA tensor table for GGUF and Hugging Face (see llama_interop.h). */
#include "llama_interop.h"

#include <stdio.h>
#include <string.h>

#include "params.h"

static const char *const GGUF_LAYER_NAMES[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up"};
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

int llama_tensors(const ModelConfig *c, float *params, LlamaTensor *out) {
    ParamSegment seg[PARAM_SEGMENTS_MAX]; /* in layout order: embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, wcls */
    param_segments(c, seg);
    uint64_t D = (uint64_t)c->dim, H = (uint64_t)c->hidden_dim, KV = (uint64_t)config_kv_dim(c), V = (uint64_t)c->vocab_size;
    LlamaTensor *t = out;
    t = add(t, "token_embd.weight", "model.embed_tokens.weight", at(params, seg[0].offset), V, D, LORA_TARGETS, -1);
    for (int l = 0; l < c->n_layers; l++) {
        char g[64], h[96];
        uint64_t rows[LORA_TARGETS] = {D, KV, KV, D, H, D, H}, cols[LORA_TARGETS] = {D, D, D, D, D, H, D};
        const int seg_of[LORA_TARGETS] = {2, 3, 4, 5, 7, 8, 9};
        float *w[LORA_TARGETS];
        for (int k = 0; k < LORA_TARGETS; k++) w[k] = at(params, seg[seg_of[k]].offset + l * rows[k] * cols[k]);
        snprintf(g, sizeof g, "blk.%d.attn_norm.weight", l);
        snprintf(h, sizeof h, "model.layers.%d.input_layernorm.weight", l);
        t = add(t, g, h, at(params, seg[1].offset + l * D), D, 0, LORA_TARGETS, l);
        for (int k = LORA_WQ; k <= LORA_WO; k++) {
            snprintf(g, sizeof g, "blk.%d.%s.weight", l, GGUF_LAYER_NAMES[k]);
            snprintf(h, sizeof h, "model.layers.%d.self_attn.%s.weight", l, HF_MODULES[k]);
            t = add(t, g, h, w[k], rows[k], cols[k], (LoraTarget)k, l);
        }
        out[2 + 9 * l].rope_heads = c->n_heads;     /* wq */
        out[3 + 9 * l].rope_heads = c->n_kv_heads;  /* wk */
        snprintf(g, sizeof g, "blk.%d.ffn_norm.weight", l);
        snprintf(h, sizeof h, "model.layers.%d.post_attention_layernorm.weight", l);
        t = add(t, g, h, at(params, seg[6].offset + l * D), D, 0, LORA_TARGETS, l);
        for (int k = LORA_W1; k <= LORA_W3; k++) {
            snprintf(g, sizeof g, "blk.%d.%s.weight", l, GGUF_LAYER_NAMES[k]);
            snprintf(h, sizeof h, "model.layers.%d.mlp.%s.weight", l, HF_MODULES[k]);
            t = add(t, g, h, w[k], rows[k], cols[k], (LoraTarget)k, l);
        }
    }
    t = add(t, "output_norm.weight", "model.norm.weight", at(params, seg[10].offset), D, 0, LORA_TARGETS, -1);
    if (!c->shared_classifier) t = add(t, "output.weight", "lm_head.weight", at(params, seg[11].offset), V, D, LORA_TARGETS, -1);
    return (int)(t - out);
}

void hf_permute_rows(float *dst, const float *src, int heads, uint64_t rows, uint64_t cols, bool to_hf) {
    uint64_t hs = rows / (uint64_t)heads, half = hs / 2;
    for (int h = 0; h < heads; h++)
        for (uint64_t i = 0; i < half; i++)
            for (uint64_t p = 0; p < 2; p++) {
                uint64_t ours = h * hs + 2 * i + p, theirs = h * hs + p * half + i;
                memcpy(dst + (to_hf ? theirs : ours) * cols, src + (to_hf ? ours : theirs) * cols, cols * sizeof(float));
            }
}
