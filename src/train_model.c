/* train_model.c — LLaMA forward and backward over a batch, layer by layer:
 *   x = embed(tokens)                                         (N, D)
 *   per layer: x += Wo · attn(rope(Wq·rms(x)), rope(Wk·rms(x)), Wv·rms(x))
 *              x += W2 · (silu(W1·rms(x)) * W3·rms(x))
 *   loss = cross_entropy(Wcls · rms(x), targets)
 * and the same steps in reverse for the gradients. */
#include "train_model.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "util.h"

typedef struct {
    float **field;
    uint64_t count;
} Buffer;

/* Every buffer of the activations with its element count: one list for init, free and sizing. */
static int activation_buffers(Activations *a, const ModelConfig *c, int B, int T, Buffer out[32]) {
    uint64_t L = (uint64_t)c->n_layers, N = (uint64_t)B * (uint64_t)T, D = (uint64_t)c->dim;
    uint64_t H = (uint64_t)c->hidden_dim, KV = (uint64_t)config_kv_dim(c), V = (uint64_t)c->vocab_size;
    uint64_t NH = (uint64_t)c->n_heads;
    Buffer list[] = {
        {&a->resid, (L + 1) * N * D}, {&a->resid_mid, L * N * D}, {&a->xn_att, L * N * D},
        {&a->rstd_att, L * N},        {&a->q, L * N * D},         {&a->k, L * N * KV},
        {&a->v, L * N * KV},          {&a->att, L * (uint64_t)B * NH * (uint64_t)T * (uint64_t)T},
        {&a->att_out, L * N * D},     {&a->xn_ffn, L * N * D},    {&a->rstd_ffn, L * N},
        {&a->h1, L * N * H},          {&a->h3, L * N * H},        {&a->hact, L * N * H},
        {&a->xn_final, N * D},        {&a->rstd_final, N},        {&a->logits, N * V},
        {&a->dresid, N * D},          {&a->dxn, N * D},           {&a->datt_out, N * D},
        {&a->dq, N * D},              {&a->dk, N * KV},           {&a->dv, N * KV},
        {&a->dh1, N * H},             {&a->dh3, N * H},           {&a->dhact, N * H},
    };
    int n = (int)(sizeof list / sizeof list[0]);
    memcpy(out, list, sizeof list);
    return n;
}

uint64_t activations_bytes(const ModelConfig *c, int B, int T) {
    Activations a;
    Buffer list[32];
    int n = activation_buffers(&a, c, B, T, list);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += list[i].count * sizeof(float);
    return total;
}

int activations_init(Activations *a, const ModelConfig *c, int B, int T, NfError *err) {
    memset(a, 0, sizeof *a);
    a->B = B;
    a->T = T;
    Buffer list[32];
    int n = activation_buffers(a, c, B, T, list);
    for (int i = 0; i < n; i++) {
        if (list[i].count > SIZE_MAX / sizeof(float) ||
            !(*list[i].field = nf_alloc_array((size_t)list[i].count, sizeof(float), err))) {
            activations_free(a);
            if (err && !err->code) nf_fail(err, NF_ERR_MEMORY, "activations too large");
            return -1;
        }
    }
    return 0;
}

void activations_free(Activations *a) {
    Buffer list[32];
    int n = activation_buffers(a, &(ModelConfig){.dim = 2, .hidden_dim = 1, .n_layers = 1, .n_heads = 1,
                                                 .n_kv_heads = 1, .vocab_size = 1, .seq_len = 1},
                               0, 0, list);
    for (int i = 0; i < n; i++) {
        free(*list[i].field);
        *list[i].field = NULL;
    }
}

double model_forward(const ModelConfig *c, const ParamPointers *p, Activations *a, const int *tokens,
                     const int *targets, float grad_scale) {
    int B = a->B, T = a->T, N = B * T, D = c->dim, H = c->hidden_dim, KV = config_kv_dim(c);
    int NH = c->n_heads, NKV = c->n_kv_heads, hs = config_head_size(c);
    size_t ND = (size_t)N * D, NKVs = (size_t)N * KV, NH_ = (size_t)N * H;
    size_t att_size = (size_t)B * NH * T * T;

    /* embedding: resid[0][n] = token_embedding[tokens[n]] */
    for (int n = 0; n < N; n++)
        memcpy(a->resid + (size_t)n * D, p->token_embedding + (size_t)tokens[n] * D, (size_t)D * sizeof(float));

    for (int l = 0; l < c->n_layers; l++) {
        float *x = a->resid + l * ND, *mid = a->resid_mid + l * ND, *x_next = a->resid + (l + 1) * ND;
        float *xn = a->xn_att + l * ND, *q = a->q + l * ND, *k = a->k + l * NKVs, *v = a->v + l * NKVs;
        float *att = a->att + l * att_size, *att_out = a->att_out + l * ND;
        float *xn2 = a->xn_ffn + l * ND, *h1 = a->h1 + l * NH_, *h3 = a->h3 + l * NH_, *hact = a->hact + l * NH_;

        /* attention block: mid = x + Wo attn(...)  */
        nf_rmsnorm_forward(xn, a->rstd_att + (size_t)l * N, x, p->rms_att + (size_t)l * D, N, D);
        nf_matmul_forward(q, xn, p->wq + (size_t)l * D * D, N, D, D);
        nf_matmul_forward(k, xn, p->wk + (size_t)l * KV * D, N, D, KV);
        nf_matmul_forward(v, xn, p->wv + (size_t)l * KV * D, N, D, KV);
        nf_rope_forward(q, B, T, NH, hs);
        nf_rope_forward(k, B, T, NKV, hs);
        nf_attention_forward(att_out, att, q, k, v, B, T, NH, NKV, hs);
        nf_matmul_forward(mid, att_out, p->wo + (size_t)l * D * D, N, D, D);
        for (size_t i = 0; i < ND; i++) mid[i] += x[i];

        /* feed-forward block: x_next = mid + W2 (silu(W1 xn2) * W3 xn2) */
        nf_rmsnorm_forward(xn2, a->rstd_ffn + (size_t)l * N, mid, p->rms_ffn + (size_t)l * D, N, D);
        nf_matmul_forward(h1, xn2, p->w1 + (size_t)l * H * D, N, D, H);
        nf_matmul_forward(h3, xn2, p->w3 + (size_t)l * H * D, N, D, H);
        nf_swiglu_forward(hact, h1, h3, NH_);
        nf_matmul_forward(x_next, hact, p->w2 + (size_t)l * D * H, N, H, D);
        for (size_t i = 0; i < ND; i++) x_next[i] += mid[i];
    }

    float *x = a->resid + (size_t)c->n_layers * ND;
    nf_rmsnorm_forward(a->xn_final, a->rstd_final, x, p->rms_final, N, D);
    nf_matmul_forward(a->logits, a->xn_final, p->wcls, N, D, c->vocab_size);
    double loss_sum = nf_cross_entropy(a->logits, targets, N, c->vocab_size, grad_scale / (float)N);
    return loss_sum / N;
}

void model_backward(const ModelConfig *c, const ParamPointers *p, const ParamPointers *g, Activations *a,
                    const int *tokens) {
    int B = a->B, T = a->T, N = B * T, D = c->dim, H = c->hidden_dim, KV = config_kv_dim(c);
    int NH = c->n_heads, NKV = c->n_kv_heads, hs = config_head_size(c);
    size_t ND = (size_t)N * D, NKVs = (size_t)N * KV, NH_ = (size_t)N * H;
    size_t att_size = (size_t)B * NH * T * T;

    /* classifier and final norm: dresid = d loss / d resid[L] */
    memset(a->dxn, 0, ND * sizeof(float));
    memset(a->dresid, 0, ND * sizeof(float));
    nf_matmul_backward(a->dxn, g->wcls, a->logits, a->xn_final, p->wcls, N, D, c->vocab_size);
    nf_rmsnorm_backward(a->dresid, g->rms_final, a->dxn, a->resid + (size_t)c->n_layers * ND, p->rms_final,
                        a->rstd_final, N, D);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        float *x = a->resid + l * ND, *mid = a->resid_mid + l * ND;
        float *xn = a->xn_att + l * ND, *q = a->q + l * ND, *k = a->k + l * NKVs, *v = a->v + l * NKVs;
        float *att = a->att + l * att_size, *att_out = a->att_out + l * ND;
        float *xn2 = a->xn_ffn + l * ND, *h1 = a->h1 + l * NH_, *h3 = a->h3 + l * NH_, *hact = a->hact + l * NH_;

        /* feed-forward block: dresid flows to mid unchanged, plus through the branch */
        memset(a->dhact, 0, NH_ * sizeof(float));
        memset(a->dh1, 0, NH_ * sizeof(float));
        memset(a->dh3, 0, NH_ * sizeof(float));
        memset(a->dxn, 0, ND * sizeof(float));
        nf_matmul_backward(a->dhact, g->w2 + (size_t)l * D * H, a->dresid, hact, p->w2 + (size_t)l * D * H, N, H, D);
        nf_swiglu_backward(a->dh1, a->dh3, a->dhact, h1, h3, NH_);
        nf_matmul_backward(a->dxn, g->w1 + (size_t)l * H * D, a->dh1, xn2, p->w1 + (size_t)l * H * D, N, D, H);
        nf_matmul_backward(a->dxn, g->w3 + (size_t)l * H * D, a->dh3, xn2, p->w3 + (size_t)l * H * D, N, D, H);
        nf_rmsnorm_backward(a->dresid, g->rms_ffn + (size_t)l * D, a->dxn, mid, p->rms_ffn + (size_t)l * D,
                            a->rstd_ffn + (size_t)l * N, N, D);

        /* attention block: dresid now holds d mid; it flows to x, plus through the branch */
        memset(a->datt_out, 0, ND * sizeof(float));
        memset(a->dq, 0, ND * sizeof(float));
        memset(a->dk, 0, NKVs * sizeof(float));
        memset(a->dv, 0, NKVs * sizeof(float));
        memset(a->dxn, 0, ND * sizeof(float));
        nf_matmul_backward(a->datt_out, g->wo + (size_t)l * D * D, a->dresid, att_out, p->wo + (size_t)l * D * D, N,
                           D, D);
        nf_attention_backward(a->dq, a->dk, a->dv, a->datt_out, att, q, k, v, B, T, NH, NKV, hs);
        nf_rope_backward(a->dq, B, T, NH, hs);
        nf_rope_backward(a->dk, B, T, NKV, hs);
        nf_matmul_backward(a->dxn, g->wq + (size_t)l * D * D, a->dq, xn, p->wq + (size_t)l * D * D, N, D, D);
        nf_matmul_backward(a->dxn, g->wk + (size_t)l * KV * D, a->dk, xn, p->wk + (size_t)l * KV * D, N, D, KV);
        nf_matmul_backward(a->dxn, g->wv + (size_t)l * KV * D, a->dv, xn, p->wv + (size_t)l * KV * D, N, D, KV);
        nf_rmsnorm_backward(a->dresid, g->rms_att + (size_t)l * D, a->dxn, x, p->rms_att + (size_t)l * D,
                            a->rstd_att + (size_t)l * N, N, D);
    }

    /* embedding: scatter-add the rows (serial: the same token may repeat) */
    for (int n = 0; n < N; n++) {
        float *row = g->token_embedding + (size_t)tokens[n] * D;
        const float *d = a->dresid + (size_t)n * D;
        for (int i = 0; i < D; i++) row[i] += d[i];
    }
}
