/* train_model.c — LLaMA forward and backward over a batch, layer by layer:
 *   x = embed(tokens)                                         (N, D)
 *   per layer: x += Wo · attn(rope(qn(Wq·rms(x) + bq)), rope(kn(Wk·rms(x) + bk)), Wv·rms(x) + bv)
 *              x += W2 · (silu(W1·rms(x)) * W3·rms(x))
 *   loss = cross_entropy(Wcls · rms(x), targets)
 * and the same steps in reverse for the gradients. The biases (Qwen 2) and
 * the per-head RMSNorms qn, kn (Qwen 3) are there when the model has them.
 * With LoRA, each adapted projection W adds s·B·A on the side
 * (projection_forward/backward). */
#include "train_model.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "f16.h"
#include "rng.h"
#include "util.h"

typedef struct {
    float **field;
    uint64_t count;
} Buffer;

/* Floats of one chunk of logits under LoRA (64 MiB): about 130 rows of a 128k vocabulary, enough rows for the
 * classifier's products to run at full speed. */
#define LOGIT_CHUNK_FLOATS (1u << 24)

/* Rows of logits held at once (see Activations.logit_rows). */
static uint64_t logit_rows(const ModelConfig *c, const LoraConfig *lora, uint64_t N) {
    if (!lora) return N;
    uint64_t rows = LOGIT_CHUNK_FLOATS / (uint64_t)c->vocab_size;
    return rows < 1 ? 1 : rows > N ? N : rows;
}

/* Every buffer of the activations with its element count: one list for init, free and sizing. */
static int activation_buffers(Activations *a, const ModelConfig *c, const LoraConfig *lora, int B, int T,
                              Buffer out[40]) {
    uint64_t L = (uint64_t)c->n_layers, N = (uint64_t)B * (uint64_t)T, D = (uint64_t)c->dim;
    uint64_t H = (uint64_t)c->hidden_dim, KV = (uint64_t)config_kv_dim(c), V = (uint64_t)c->vocab_size;
    uint64_t NH = (uint64_t)c->n_heads, R = lora ? (uint64_t)lora->rank : 0, QD = (uint64_t)config_q_dim(c);
    uint64_t M = D > H ? D : H, NKV = (uint64_t)c->n_kv_heads, QK = c->qk_norm ? 1 : 0;
    M = M > QD ? M : QD;
    /* layers of att_out that backward reads (see train_model.h) */
    uint64_t L_att_out = !lora || lora->targets & 1u << LORA_WO ? L : 1;
    a->att_out_stride = L_att_out == L ? N * QD : 0;
    uint64_t L_ffn = lora ? 1 : L; /* h1, h3 (see train_model.h) */
    a->ffn_stride = lora ? 0 : N * H;
    a->logit_rows = (int)logit_rows(c, lora, N);
    a->classifier_in_forward = lora != NULL;
    Buffer list[] = {
        {&a->resid, (L + 1) * N * D},
        {&a->resid_mid, L * N * D},
        {&a->xn_att, N * D},
        {&a->rstd_att, L * N},
        {&a->q, L * N * QD},
        {&a->k, L * N * KV},
        {&a->v, L * N * KV},
        {&a->q_raw, QK * L * N * QD},
        {&a->k_raw, QK * L * N * KV},
        {&a->rstd_q, QK * L * N * NH},
        {&a->rstd_k, QK * L * N * NKV},
        {&a->att_lse, L * (uint64_t)B * NH * (uint64_t)T},
        {&a->att_out, L_att_out * N * QD},
        {&a->xn_ffn, N * D},
        {&a->rstd_ffn, L * N},
        {&a->h1, L_ffn * N * H},
        {&a->h3, L_ffn * N * H},
        {&a->hact, N * H},
        {&a->xn_final, N * D},
        {&a->rstd_final, N},
        {&a->logits, (uint64_t)a->logit_rows * V},
        {&a->dresid, N * D},
        {&a->dxn, N * D},
        {&a->datt_out, N * QD},
        {&a->dq, N * QD},
        {&a->dk, N * KV},
        {&a->dq_raw, QK * N * QD},
        {&a->dk_raw, QK * N * KV},
        {&a->dv, N * KV},
        {&a->dh1, N * H},
        {&a->dh3, N * H},
        {&a->dhact, N * H},
        {&a->att_scratch, T > 0 ? nf_attention_scratch_floats(B, T, c->n_kv_heads, config_head_size(c)) : 0},
        {&a->rope, (uint64_t)T * (uint64_t)config_head_size(c)},
        {&a->lora_u, lora ? L * (uint64_t)__builtin_popcount(lora->targets) * N * R : 0},
        {&a->lora_x, lora ? N * M : 0},
        {&a->lora_dx, lora ? N * M : 0},
        {&a->lora_du, lora ? N * R : 0},
    };
    int n = (int)(sizeof list / sizeof list[0]);
    memcpy(out, list, sizeof list);
    return n;
}

uint64_t activations_bytes(const ModelConfig *c, const LoraConfig *lora, int B, int T) {
    Activations a;
    Buffer list[40];
    int n = activation_buffers(&a, c, lora, B, T, list);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += list[i].count * sizeof(float);
    return total;
}

uint64_t bf16_operand_floats(const ModelConfig *c, const LoraConfig *lora, int B, int T) {
    /* the largest operand of a weight product: a chunk of logits or their gradient, an activation, or a weight
     * that has no kept copy. Under LoRA the classifier's weight is left out: kept (or held in bf16) it is no
     * operand, and should keeping it fail, its products run in fp32 rather than take V x D more here. */
    uint64_t N = (uint64_t)B * (uint64_t)T, D = (uint64_t)c->dim, H = (uint64_t)c->hidden_dim;
    uint64_t V = (uint64_t)c->vocab_size, QD = (uint64_t)config_q_dim(c);
    uint64_t most = logit_rows(c, lora, N) * V;
    uint64_t others[] = {lora ? 0 : V * D, N * H, H * D, N * D, N * QD, QD * D};
    for (int k = 0; k < 6; k++) most = others[k] > most ? others[k] : most;
    return most;
}

int activations_init(Activations *a, const ModelConfig *c, const LoraConfig *lora, int B, int T, bool bf16,
                     NfError *err) {
    memset(a, 0, sizeof *a);
    a->B = B;
    a->T = T;
    a->head_size = config_head_size(c);
    Buffer list[40];
    int n = activation_buffers(a, c, lora, B, T, list);
    for (int i = 0; i < n; i++) {
        if (list[i].count == 0) continue;
        if (list[i].count > SIZE_MAX / sizeof(float) ||
            !(*list[i].field = nf_alloc_array((size_t)list[i].count, sizeof(float), err))) {
            activations_free(a);
            if (err && !err->code) nf_fail(err, NF_ERR_MEMORY, "activations too large");
            return -1;
        }
    }
    nf_rope_table(a->rope, T, c);
    if (bf16) {
        size_t most = (size_t)bf16_operand_floats(c, lora, B, T);
        if (!(a->bf16 = nf_bf16_create(most))) {
            activations_free(a);
            return nf_fail(err, NF_ERR_MEMORY, "cannot set up bf16 products (%zu-value operands)", most);
        }
    }
    return 0;
}

void activations_free(Activations *a) {
    nf_bf16_free(a->bf16);
    a->bf16 = NULL;
    Buffer list[40];
    int n = activation_buffers(
        a,
        &(ModelConfig){
            .dim = 2, .hidden_dim = 1, .n_layers = 1, .n_heads = 1, .n_kv_heads = 1, .vocab_size = 1, .seq_len = 1},
        NULL, 0, 0, list);
    for (int i = 0; i < n; i++) {
        free(*list[i].field);
        *list[i].field = NULL;
    }
}

void net_full(Net *net, NetGrads *g, const ModelConfig *c, float *params, float *grads) {
    *net = (Net){.config = c};
    param_pointers(&net->w, params, c);
    if (!g) return;
    memset(g, 0, sizeof *g);
    if (grads) param_pointers(&g->w, grads, c);
}

void net_lora(Net *net, NetGrads *g, const ModelConfig *c, const ParamPointers *base, const Lora *lora,
              float *adapter_grads) {
    *net = (Net){.config = c, .w = *base, .lora = lora};
    if (lora->config.train_norms) {
        net->w.rms_att = lora->w.rms_att, net->w.rms_ffn = lora->w.rms_ffn, net->w.rms_final = lora->w.rms_final;
    }
    if (!g) return;
    memset(g, 0, sizeof *g);
    if (!adapter_grads) return;
    lora_pointers(&g->lora, adapter_grads, c, &lora->config);
    g->w.rms_att = g->lora.rms_att, g->w.rms_ffn = g->lora.rms_ffn, g->w.rms_final = g->lora.rms_final;
}

/* The matrices of params.h's layout (the pieces a frozen base holds in bf16), in layout order. */
static const ParamSegmentId BASE_MATRICES[] = {
    PARAM_TOKEN_EMBEDDING, PARAM_WQ, PARAM_WK, PARAM_WV, PARAM_WO, PARAM_W1, PARAM_W2, PARAM_W3, PARAM_WCLS};
#define N_BASE_MATRICES (sizeof BASE_MATRICES / sizeof BASE_MATRICES[0])

static bool is_base_matrix(int id) {
    for (size_t k = 0; k < N_BASE_MATRICES; k++)
        if ((int)BASE_MATRICES[k] == id) return true;
    return false;
}

/* Floats of the matrices, and of the rest, in model c's buffer. */
static void base_counts(const ModelConfig *c, size_t *matrices, size_t *small) {
    ParamSegment seg[PARAM_SEGMENTS_MAX];
    int n = param_segments(c, seg);
    *matrices = *small = 0;
    for (int i = 0; i < n; i++) *(is_base_matrix(i) ? matrices : small) += seg[i].count;
}

uint64_t frozen_base_bytes(const ModelConfig *c) {
    size_t matrices, small;
    base_counts(c, &matrices, &small);
    return 2 * (uint64_t)matrices + 4 * (uint64_t)small;
}

/* dst (n) = src rounded to bf16, in slices, each slice's source released behind it when release is set. */
#define CONVERT_SLICE ((size_t)1 << 22) /* floats: 16 MiB of fp32 at a time */
static void round_releasing(uint16_t *dst, const float *src, size_t n, bool release) {
    for (size_t at = 0; at < n; at += CONVERT_SLICE) {
        size_t len = n - at < CONVERT_SLICE ? n - at : CONVERT_SLICE;
        nf_bf16_round(dst + at, src + at, len);
        if (release) nf_release_pages(src + at, len * sizeof(float));
    }
}

int frozen_base_bf16(FrozenBase *fb, const ModelConfig *c, const ParamPointers *src, bool release_src, NfError *err) {
    memset(fb, 0, sizeof *fb);
    size_t matrices, small;
    base_counts(c, &matrices, &small);
    /* bits by malloc, not nf_alloc, which zeroes: untouched pages take no memory, so the bf16 copy grows only
     * as the conversion writes it, while the fp32 source shrinks behind */
    size_t bits_bytes;
    if (!nf_mul_size(matrices, sizeof(uint16_t), &bits_bytes) || !(fb->bits = malloc(bits_bytes ? bits_bytes : 1)))
        return nf_fail(err, NF_ERR_MEMORY, "cannot allocate %zu bytes for the bf16 base", matrices * 2);
    if (!(fb->small = nf_alloc_array(small ? small : 1, sizeof(float), err))) {
        frozen_base_free(fb);
        return -1;
    }
    fb->bytes = frozen_base_bytes(c);
    /* the same layout as src, its matrices moved to bits and the rest to small, each in order */
    ParamSegment seg[PARAM_SEGMENTS_MAX];
    int n = param_segments(c, seg);
    float *const from[PARAM_SEGMENTS_MAX] = {src->token_embedding,
                                             src->rms_att,
                                             src->wq,
                                             src->wk,
                                             src->wv,
                                             src->wo,
                                             src->rms_ffn,
                                             src->w1,
                                             src->w2,
                                             src->w3,
                                             src->rms_final,
                                             src->wcls,
                                             src->bq,
                                             src->bk,
                                             src->bv,
                                             src->q_norm,
                                             src->k_norm};
    float *small_at[PARAM_SEGMENTS_MAX] = {0};
    const uint16_t *bits_at[PARAM_SEGMENTS_MAX] = {0};
    size_t m = 0, k = 0;
    for (int i = 0; i < n; i++) {
        if (seg[i].count == 0) continue;
        if (is_base_matrix(i)) {
            round_releasing(fb->bits + m, from[i], seg[i].count, release_src);
            bits_at[i] = fb->bits + m, m += seg[i].count;
        } else {
            memcpy(fb->small + k, from[i], seg[i].count * sizeof(float));
            small_at[i] = fb->small + k, k += seg[i].count;
        }
    }
    fb->w = (BaseBf16){bits_at[PARAM_TOKEN_EMBEDDING],
                       bits_at[PARAM_WQ],
                       bits_at[PARAM_WK],
                       bits_at[PARAM_WV],
                       bits_at[PARAM_WO],
                       bits_at[PARAM_W1],
                       bits_at[PARAM_W2],
                       bits_at[PARAM_W3],
                       c->shared_classifier ? bits_at[PARAM_TOKEN_EMBEDDING] : bits_at[PARAM_WCLS]};
    fb->p = (ParamPointers){.rms_att = small_at[PARAM_RMS_ATT],
                            .rms_ffn = small_at[PARAM_RMS_FFN],
                            .rms_final = small_at[PARAM_RMS_FINAL],
                            .bq = small_at[PARAM_BQ],
                            .bk = small_at[PARAM_BK],
                            .bv = small_at[PARAM_BV],
                            .q_norm = small_at[PARAM_Q_NORM],
                            .k_norm = small_at[PARAM_K_NORM]};
    return 0;
}

void frozen_base_free(FrozenBase *fb) {
    free(fb->bits);
    free(fb->small);
    memset(fb, 0, sizeof *fb);
}

/* FLOPs of one token's forward and backward: per matmul weight 2 forward, 2 for
 * the input gradient and 2 for the weight gradient (frozen LoRA bases skip the
 * last), plus causal attention; LoRA adapters add 6 per adapter weight. */
double model_flops_per_token(const ModelConfig *c, int T, const LoraConfig *lora) {
    double L = c->n_layers, D = c->dim, H = c->hidden_dim, KV = config_kv_dim(c), V = c->vocab_size;
    double QD = config_q_dim(c);
    double per_weight = lora ? 4.0 : 6.0, adapters = 0.0;
    if (lora) {
        ParamSegment seg[LORA_SEGMENTS_MAX];
        int n = lora_segments(c, lora, seg);
        for (int i = 0; i < n; i++) adapters += seg[i].is_norm ? 0.0 : (double)seg[i].count;
    }
    return per_weight * (L * (2 * QD * D + 2 * KV * D + 3 * H * D) + V * D) + 6.0 * adapters + 6.0 * L * T * QD;
}

/* A weight of the products: fp32 (f32), or a frozen base's held only in bf16 (bf16, f32 NULL). */
typedef struct {
    const float *f32;
    const uint16_t *bf16;
} Weight;

/* Products with the model's weights: fp32, or bf16 under --dtype bf16 (which a bf16-only weight implies). */
static void weight_forward(Activations *a, float *out, const float *inp, Weight w, int N, int C, int OC) {
    if (w.bf16)
        nf_matmul_forward_bf16w(a->bf16, out, inp, w.bf16, N, C, OC);
    else if (a->bf16)
        nf_matmul_forward_bf16(a->bf16, out, inp, w.f32, N, C, OC);
    else
        nf_matmul_forward(out, inp, w.f32, N, C, OC);
}

/* A bf16-only weight is frozen: dw is NULL for it. */
static void weight_backward(Activations *a, float *dinp, NfWrite dinp_write, float *dw, NfWrite dw_write,
                            const float *dout, const float *inp, Weight w, int N, int C, int OC) {
    if (w.bf16) {
        if (dinp) nf_matmul_backward_bf16w(a->bf16, dinp, dinp_write, dout, w.bf16, N, C, OC);
    } else if (a->bf16)
        nf_matmul_backward_bf16(a->bf16, dinp, dinp_write, dw, dw_write, dout, inp, w.f32, N, C, OC);
    else
        nf_matmul_backward(dinp, dinp_write, dw, dw_write, dout, inp, w.f32, N, C, OC);
}

/* The (L, out, in) weight of projection t. */
static float *projection_weight(const ParamPointers *p, LoraTarget t) {
    float *const w[LORA_TARGETS] = {p->wq, p->wk, p->wv, p->wo, p->w1, p->w2, p->w3};
    return w[t];
}

/* Layer l's weight of projection t in the network, fp32 or bf16. */
static Weight projection_of(const Net *net, LoraTarget t, int l) {
    int in, out;
    lora_target_dims(net->config, t, &in, &out);
    size_t at = (size_t)l * out * in;
    if (net->bf16) {
        const BaseBf16 *b = net->bf16;
        const uint16_t *const w[LORA_TARGETS] = {b->wq, b->wk, b->wv, b->wo, b->w1, b->w2, b->w3};
        return (Weight){NULL, w[t] + at};
    }
    return (Weight){projection_weight(&net->w, t) + at, NULL};
}

static Weight classifier_of(const Net *net) {
    return net->bf16 ? (Weight){NULL, net->bf16->wcls} : (Weight){net->w.wcls, NULL};
}

uint16_t *activations_keep_bf16_weights(Activations *a, const Net *net, float *params, size_t n_params) {
    if (!a->bf16 || net->bf16) return NULL; /* a base held in bf16 is its own copy */
    if (!net->lora) return nf_bf16_keep(a->bf16, params, n_params);
    const ModelConfig *c = net->config;
    for (int t = 0; t < LORA_TARGETS; t++) {
        int in, out;
        lora_target_dims(c, (LoraTarget)t, &in, &out);
        nf_bf16_keep(a->bf16, projection_weight(&net->w, (LoraTarget)t), (size_t)c->n_layers * out * in);
    }
    nf_bf16_keep(a->bf16, net->w.wcls, (size_t)c->vocab_size * c->dim);
    return NULL;
}

/* Layer l of an (L, per_layer) weight or gradient; a NULL (frozen) gradient stays NULL. */
static float *layer_of(float *base, int l, size_t per_layer) { return base ? base + (size_t)l * per_layer : NULL; }

/* out (n) = x * keep / (1 - p): inverted dropout on an adapter's input. Each
 * element's keep bit is a hash of (key, layer, target, index), so backward
 * redraws exactly the forward's mask and a resumed run draws the same ones. */
static void lora_dropout(float *out, const float *x, size_t n, float p, uint64_t key, int l, int t) {
    uint64_t stream = rng_hash(key ^ ((uint64_t)(l * LORA_TARGETS + t + 1) << 40));
    uint64_t threshold = (uint64_t)((double)p * 4294967296.0);
    float scale = 1.0f / (1.0f - p);
    size_t i;
#pragma omp parallel for schedule(static)
    for (i = 0; i < n; i++) out[i] = (rng_hash(stream + i) >> 32) >= threshold ? x[i] * scale : 0.0f;
}

static bool has_adapter(const Net *net, LoraTarget t) { return net->lora && net->lora->w.a[t]; }

/* u of target t in layer l: the adapted targets of a layer sit side by side, in LoraTarget order */
static float *lora_u_of(const Net *net, const Activations *a, int l, LoraTarget t) {
    size_t N = (size_t)a->B * a->T, r = (size_t)net->lora->config.rank;
    unsigned targets = net->lora->config.targets;
    size_t per_layer = (size_t)__builtin_popcount(targets),
           slot = (size_t)__builtin_popcount(targets & ((1u << t) - 1));
    return a->lora_u + ((size_t)l * per_layer + slot) * N * r;
}

/* y (N, out) = x (N, in) @ W^T  [+ s B (A dropout(x)), with s A dropout(x) saved as u (N, r)] */
static void projection_forward(const Net *net, Activations *a, int l, LoraTarget t, float *y, const float *x) {
    int N = a->B * a->T, in, out;
    lora_target_dims(net->config, t, &in, &out);
    weight_forward(a, y, x, projection_of(net, t, l), N, in, out);
    if (!has_adapter(net, t)) return;
    const float *x_in = x;
    float p = net->lora->config.dropout;
    if (a->dropout_key && p > 0.0f) {
        lora_dropout(a->lora_x, x, (size_t)N * in, p, a->dropout_key, l, t);
        x_in = a->lora_x;
    }
    lora_apply(y, x_in, net->lora, t, l, net->config, N, lora_u_of(net, a, l, t));
}

/* dx (N, in) = dy W, or += under NF_ADD [+ the adapter path];  dW = dy^T x;
 * dB = dy^T u;  dA = (s dy B)^T dropout(x); the weights' gradients += under
 * grads NF_ADD */
static void projection_backward(const Net *net, const NetGrads *g, NfWrite grads, Activations *a, int l, LoraTarget t,
                                float *dx, NfWrite dx_write, const float *dy, const float *x) {
    int N = a->B * a->T, in, out;
    lora_target_dims(net->config, t, &in, &out);
    size_t per_layer = (size_t)out * in;
    weight_backward(a, dx, dx_write, layer_of(projection_weight(&g->w, t), l, per_layer), grads, dy, x,
                    projection_of(net, t, l), N, in, out);
    if (!has_adapter(net, t)) return;
    const Lora *lora = net->lora;
    int r = lora->config.rank;
    float s = lora_scale(&lora->config), p = lora->config.dropout;
    const float *A = lora->w.a[t] + (size_t)l * r * in, *B = lora->w.b[t] + (size_t)l * out * r;
    float *dA = layer_of(g->lora.a[t], l, (size_t)r * in), *dB = layer_of(g->lora.b[t], l, (size_t)out * r);
    /* u = s A x_in and y += u B^T:  du = dy B, so d(A x_in) = s du */
    nf_matmul_backward(a->lora_du, NF_SET, dB, grads, dy, lora_u_of(net, a, l, t), B, N, r, out);
    for (size_t i = 0; i < (size_t)N * r; i++) a->lora_du[i] *= s;
    if (!(a->dropout_key && p > 0.0f)) {
        nf_matmul_backward(dx, NF_ADD, dA, grads, a->lora_du, x, A, N, in, r);
        return;
    }
    size_t n_in = (size_t)N * in;
    lora_dropout(a->lora_x, x, n_in, p, a->dropout_key, l, t);
    nf_matmul_backward(a->lora_dx, NF_SET, dA, grads, a->lora_du, a->lora_x, A, N, in, r);
    lora_dropout(a->lora_dx, a->lora_dx, n_in, p, a->dropout_key, l, t);
    for (size_t i = 0; i < n_in; i++) dx[i] += a->lora_dx[i];
}

int model_counted_targets(const int *targets, int n) {
    int counted = 0;
    for (int i = 0; i < n; i++) counted += targets[i] >= 0;
    return counted;
}

/* q (N, heads * hs) of layer l from the projection's output raw: the bias, each head's RMSNorm (raw kept
 * for backward, the result in out), then RoPE; without a norm raw is out. */
static void shape_heads_forward(const Activations *a, float *out, float *raw, float *rstd, const float *bias,
                                const float *norm, int heads, float eps) {
    int N = a->B * a->T, hs = a->head_size;
    if (bias) nf_bias_forward(raw, bias, N, heads * hs);
    if (norm) nf_rmsnorm_forward(out, rstd, raw, norm, N * heads, hs, eps);
    nf_rope_forward(out, a->rope, a->B, a->T, 0, heads, hs);
}

/* The reverse of shape_heads_forward: d (the gradient after RoPE) becomes the gradient of the projection's output,
 * returned (d itself, or draw under a norm); the bias's and norm's gradients go to dbias, dnorm (NULL: frozen). */
static float *shape_heads_backward(const Activations *a, float *d, float *draw, NfWrite grads, float *dbias,
                                   float *dnorm, const float *raw, const float *rstd, const float *norm, int heads) {
    int N = a->B * a->T, hs = a->head_size;
    nf_rope_backward(d, a->rope, a->B, a->T, 0, heads, hs);
    if (norm) {
        nf_zero(draw, (size_t)N * heads * hs); /* rmsnorm_backward adds */
        nf_rmsnorm_backward(draw, dnorm, grads, d, raw, norm, rstd, N * heads, hs);
        d = draw;
    }
    if (dbias) nf_bias_backward(dbias, grads, d, N, heads * hs);
    return d;
}

/* The classifier and the cross-entropy over xn_final, logit_rows rows at a
 * time; returns the loss summed over the counted rows. scale != 0: each
 * chunk's logits become their gradient, and under classifier_in_forward go
 * on at once into dxn's rows (the classifier is frozen: no weight gradient
 * is lost). */
static double classifier_forward(const Net *net, Activations *a, const int *targets, float scale) {
    int N = a->B * a->T, D = net->config->dim, V = net->config->vocab_size;
    Weight wcls = classifier_of(net);
    double loss_sum = 0.0;
    for (int r0 = 0; r0 < N; r0 += a->logit_rows) {
        int rows = N - r0 < a->logit_rows ? N - r0 : a->logit_rows;
        weight_forward(a, a->logits, a->xn_final + (size_t)r0 * D, wcls, rows, D, V);
        loss_sum += nf_cross_entropy(a->logits, targets + r0, rows, V, scale);
        if (scale != 0.0f && a->classifier_in_forward)
            weight_backward(a, a->dxn + (size_t)r0 * D, NF_SET, NULL, NF_SET, a->logits, NULL, wcls, rows, D, V);
    }
    return loss_sum;
}

double model_forward(const Net *net, Activations *a, const int *tokens, const int *targets, float grad_scale,
                     uint64_t dropout_key) {
    const ModelConfig *c = net->config;
    const ParamPointers *p = &net->w;
    int B = a->B, T = a->T, N = B * T, D = c->dim, H = c->hidden_dim, KV = config_kv_dim(c), QD = config_q_dim(c);
    int NH = c->n_heads, NKV = c->n_kv_heads, hs = config_head_size(c);
    size_t ND = (size_t)N * D, NKVs = (size_t)N * KV, NH_ = (size_t)N * H, NQ = (size_t)N * QD;
    size_t att_size = (size_t)B * NH * T;
    float eps = config_norm_eps(c);
    a->dropout_key = dropout_key;

    /* embedding: resid[0][n] = token_embedding[tokens[n]] (widened exactly from a bf16 base) */
    for (int n = 0; n < N; n++) {
        float *row = a->resid + (size_t)n * D;
        if (net->bf16)
            for (int i = 0; i < D; i++) row[i] = bf16_to_f32(net->bf16->token_embedding[(size_t)tokens[n] * D + i]);
        else
            memcpy(row, p->token_embedding + (size_t)tokens[n] * D, (size_t)D * sizeof(float));
    }

    for (int l = 0; l < c->n_layers; l++) {
        float *x = a->resid + l * ND, *mid = a->resid_mid + l * ND, *x_next = a->resid + (l + 1) * ND;
        float *xn = a->xn_att, *q = a->q + l * NQ, *k = a->k + l * NKVs, *v = a->v + l * NKVs;
        float *q_raw = c->qk_norm ? a->q_raw + l * NQ : q, *k_raw = c->qk_norm ? a->k_raw + l * NKVs : k;
        float *att_lse = a->att_lse + l * att_size, *att_out = a->att_out + l * a->att_out_stride;
        float *xn2 = a->xn_ffn, *h1 = a->h1 + l * a->ffn_stride, *h3 = a->h3 + l * a->ffn_stride, *hact = a->hact;

        /* attention block: mid = x + Wo attn(...)  */
        nf_rmsnorm_forward(xn, a->rstd_att + (size_t)l * N, x, p->rms_att + (size_t)l * D, N, D, eps);
        projection_forward(net, a, l, LORA_WQ, q_raw, xn);
        projection_forward(net, a, l, LORA_WK, k_raw, xn);
        projection_forward(net, a, l, LORA_WV, v, xn);
        shape_heads_forward(a, q, q_raw, c->qk_norm ? a->rstd_q + l * (size_t)N * NH : NULL,
                            layer_of(p->bq, l, (size_t)QD), layer_of(p->q_norm, l, (size_t)hs), NH, eps);
        shape_heads_forward(a, k, k_raw, c->qk_norm ? a->rstd_k + l * (size_t)N * NKV : NULL,
                            layer_of(p->bk, l, (size_t)KV), layer_of(p->k_norm, l, (size_t)hs), NKV, eps);
        if (p->bv) nf_bias_forward(v, p->bv + (size_t)l * KV, N, KV);
        nf_attention_forward(att_out, att_lse, q, k, v, B, T, 0, NH, NKV, hs, a->att_scratch);
        projection_forward(net, a, l, LORA_WO, mid, att_out);
        for (size_t i = 0; i < ND; i++) mid[i] += x[i];

        /* feed-forward block: x_next = mid + W2 (silu(W1 xn2) * W3 xn2) */
        nf_rmsnorm_forward(xn2, a->rstd_ffn + (size_t)l * N, mid, p->rms_ffn + (size_t)l * D, N, D, eps);
        projection_forward(net, a, l, LORA_W1, h1, xn2);
        projection_forward(net, a, l, LORA_W3, h3, xn2);
        nf_swiglu_forward(hact, h1, h3, NH_);
        projection_forward(net, a, l, LORA_W2, x_next, hact);
        for (size_t i = 0; i < ND; i++) x_next[i] += mid[i];
    }

    float *x = a->resid + (size_t)c->n_layers * ND;
    nf_rmsnorm_forward(a->xn_final, a->rstd_final, x, p->rms_final, N, D, eps);
    /* the mean over counted targets: a negative target is masked (no loss, no gradient) */
    int counted = model_counted_targets(targets, N);
    double loss_sum = classifier_forward(net, a, targets, grad_scale / (float)(counted > 0 ? counted : 1));
    return counted > 0 ? loss_sum / counted : 0.0;
}

void model_backward(const Net *net, const NetGrads *g, NfWrite grads, Activations *a, const int *tokens) {
    const ModelConfig *c = net->config;
    const ParamPointers *p = &net->w;
    int B = a->B, T = a->T, N = B * T, D = c->dim, H = c->hidden_dim, KV = config_kv_dim(c), QD = config_q_dim(c);
    int NH = c->n_heads, NKV = c->n_kv_heads, hs = config_head_size(c);
    size_t ND = (size_t)N * D, NKVs = (size_t)N * KV, NH_ = (size_t)N * H, NQ = (size_t)N * QD;
    size_t att_size = (size_t)B * NH * T;
    float eps = config_norm_eps(c);

    /* classifier and final norm: dresid = d loss / d resid[L]; under LoRA forward did the classifier */
    nf_zero(a->dresid, ND);
    if (!a->classifier_in_forward)
        weight_backward(a, a->dxn, NF_SET, g->w.wcls, grads, a->logits, a->xn_final, classifier_of(net), N, D,
                        c->vocab_size);
    nf_rmsnorm_backward(a->dresid, g->w.rms_final, grads, a->dxn, a->resid + (size_t)c->n_layers * ND, p->rms_final,
                        a->rstd_final, N, D);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        float *x = a->resid + l * ND, *mid = a->resid_mid + l * ND;
        float *xn = a->xn_att, *q = a->q + l * NQ, *k = a->k + l * NKVs, *v = a->v + l * NKVs;
        float *att_lse = a->att_lse + l * att_size, *att_out = a->att_out + l * a->att_out_stride;
        float *xn2 = a->xn_ffn, *h1 = a->h1 + l * a->ffn_stride, *h3 = a->h3 + l * a->ffn_stride, *hact = a->hact;

        /* feed-forward block: dresid flows to mid unchanged, plus through the branch;
         * first the inputs of its projections again (bitwise what forward computed) */
        nf_rmsnorm_forward(xn2, a->rstd_ffn + (size_t)l * N, mid, p->rms_ffn + (size_t)l * D, N, D, eps);
        if (a->ffn_stride == 0) { /* one layer kept: h1, h3 again, the same dropout masks redrawn */
            projection_forward(net, a, l, LORA_W1, h1, xn2);
            projection_forward(net, a, l, LORA_W3, h3, xn2);
        }
        nf_swiglu_forward(hact, h1, h3, NH_);
        /* the first product into each input gradient writes it (NF_SET): no zeroing */
        projection_backward(net, g, grads, a, l, LORA_W2, a->dhact, NF_SET, a->dresid, hact);
        nf_swiglu_backward(a->dh1, a->dh3, a->dhact, h1, h3, NH_);
        projection_backward(net, g, grads, a, l, LORA_W1, a->dxn, NF_SET, a->dh1, xn2);
        projection_backward(net, g, grads, a, l, LORA_W3, a->dxn, NF_ADD, a->dh3, xn2);
        nf_rmsnorm_backward(a->dresid, layer_of(g->w.rms_ffn, l, D), grads, a->dxn, mid, p->rms_ffn + (size_t)l * D,
                            a->rstd_ffn + (size_t)l * N, N, D);

        /* attention block: dresid now holds d mid; it flows to x, plus through the branch */
        nf_rmsnorm_forward(xn, a->rstd_att + (size_t)l * N, x, p->rms_att + (size_t)l * D, N, D, eps);
        nf_zero(a->dq, NQ); /* attention's backward adds tile by tile */
        nf_zero(a->dk, NKVs);
        nf_zero(a->dv, NKVs);
        projection_backward(net, g, grads, a, l, LORA_WO, a->datt_out, NF_SET, a->dresid, att_out);
        nf_attention_backward(a->dq, a->dk, a->dv, a->datt_out, att_lse, q, k, v, B, T, NH, NKV, hs, a->att_scratch);
        float *dq = shape_heads_backward(a, a->dq, a->dq_raw, grads, layer_of(g->w.bq, l, (size_t)QD),
                                         layer_of(g->w.q_norm, l, (size_t)hs), c->qk_norm ? a->q_raw + l * NQ : NULL,
                                         c->qk_norm ? a->rstd_q + l * (size_t)N * NH : NULL,
                                         layer_of(p->q_norm, l, (size_t)hs), NH);
        float *dk = shape_heads_backward(a, a->dk, a->dk_raw, grads, layer_of(g->w.bk, l, (size_t)KV),
                                         layer_of(g->w.k_norm, l, (size_t)hs), c->qk_norm ? a->k_raw + l * NKVs : NULL,
                                         c->qk_norm ? a->rstd_k + l * (size_t)N * NKV : NULL,
                                         layer_of(p->k_norm, l, (size_t)hs), NKV);
        if (g->w.bv) nf_bias_backward(g->w.bv + (size_t)l * KV, grads, a->dv, N, KV);
        projection_backward(net, g, grads, a, l, LORA_WQ, a->dxn, NF_SET, dq, xn);
        projection_backward(net, g, grads, a, l, LORA_WK, a->dxn, NF_ADD, dk, xn);
        projection_backward(net, g, grads, a, l, LORA_WV, a->dxn, NF_ADD, a->dv, xn);
        nf_rmsnorm_backward(a->dresid, layer_of(g->w.rms_att, l, D), grads, a->dxn, x, p->rms_att + (size_t)l * D,
                            a->rstd_att + (size_t)l * N, N, D);
        if (g->layer_done) g->layer_done(g->layer_ctx, l);
    }

    /* embedding: scatter-add the rows (serial: the same token may repeat); a
     * classifier that shares the embedding has written it already */
    if (!g->w.token_embedding) return;
    if (grads == NF_SET && g->w.token_embedding != g->w.wcls) nf_zero(g->w.token_embedding, (size_t)c->vocab_size * D);
    for (int n = 0; n < N; n++) {
        float *row = g->w.token_embedding + (size_t)tokens[n] * D;
        const float *d = a->dresid + (size_t)n * D;
        for (int i = 0; i < D; i++) row[i] += d[i];
    }
}
