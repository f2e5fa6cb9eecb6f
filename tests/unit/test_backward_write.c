/* test_backward_write.c — model_backward under NF_SET writes every gradient
 * it computes: gradient buffers filled with NaN and written must equal zeroed
 * ones added to (NF_ADD), value for value, for a full fine-tune with a shared
 * and with a separate classifier, in fp32 and bf16, and for LoRA adapters on
 * every projection with trained norms and dropout. A slot the first
 * backward of a step left unwritten would keep the last step's gradient (or
 * here, NaN). And the layer_done hook (grad_sync.h's) reports each layer,
 * last to first, only once its gradients are final (and the final norm's and
 * a separate classifier's by the first report), and changes nothing. */
#include "testutil.h"

#include <math.h>

#include "lora.h"
#include "params.h"
#include "train_model.h"

static const ModelConfig TINY = {.dim = 16,
                                 .hidden_dim = 24,
                                 .n_layers = 2,
                                 .n_heads = 4,
                                 .n_kv_heads = 2,
                                 .vocab_size = 11,
                                 .seq_len = 8,
                                 .shared_classifier = true};
enum { B = 2, T = 5 };

/* Runs forward and backward twice, into NaN-filled grads under NF_SET and into
 * zeroed ones under NF_ADD, and compares. */
static void check_set_equals_add(const Net *net, const NetGrads *g, float *grads, size_t n, const LoraConfig *lc,
                                 bool bf16, const char *what) {
    NfError err;
    Activations acts;
    assert_int_equal(activations_init(&acts, net->config, lc, B, T, bf16, &err), 0);
    int tokens[B * T], targets[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (i * 7 + 3) % TINY.vocab_size;
        targets[i] = (i * 5 + 1) % TINY.vocab_size;
    }
    float *added = malloc(n * sizeof(float));
    uint64_t dropout = lc && lc->dropout > 0 ? 0x9E3779B9u : 0;
    memset(grads, 0, n * sizeof(float));
    model_forward(net, &acts, tokens, targets, 1.0f, dropout);
    model_backward(net, g, NF_ADD, &acts, tokens);
    memcpy(added, grads, n * sizeof(float));
    for (size_t i = 0; i < n; i++) grads[i] = NAN;
    model_forward(net, &acts, tokens, targets, 1.0f, dropout);
    model_backward(net, g, NF_SET, &acts, tokens);
    for (size_t i = 0; i < n; i++)
        if (!(grads[i] == added[i])) fail_msg("%s: gradient %zu written %g, added %g", what, i, grads[i], added[i]);
    free(added);
    activations_free(&acts);
}

static void check_full(bool shared, bool bf16) {
    ModelConfig c = TINY;
    c.shared_classifier = shared;
    size_t n = config_param_count(&c);
    float *params = malloc(n * sizeof(float)), *grads = malloc(n * sizeof(float));
    params_init(params, &c, 7);
    Net net;
    NetGrads g;
    net_full(&net, &g, &c, params, grads);
    char what[64];
    snprintf(what, sizeof what, "full, %s classifier, %s", shared ? "shared" : "separate", bf16 ? "bf16" : "fp32");
    check_set_equals_add(&net, &g, grads, n, NULL, bf16, what);
    free(params);
    free(grads);
}

static void test_full_fine_tune_writes_every_gradient(void **state) {
    (void)state;
    check_full(true, false);
    check_full(false, false);
    check_full(true, true);
    check_full(false, true);
}

static void test_lora_writes_every_gradient(void **state) {
    (void)state;
    LoraConfig lc = {.rank = 2, .alpha = 3, .dropout = 0.3f, .targets = 0x7F, .train_norms = true};
    size_t n_base = config_param_count(&TINY), n = lora_param_count(&TINY, &lc);
    float *base = malloc(n_base * sizeof(float)), *adapters = malloc(n * sizeof(float));
    float *grads = malloc(n * sizeof(float));
    params_init(base, &TINY, 7);
    ParamPointers bp;
    param_pointers(&bp, base, &TINY);
    lora_init(adapters, &TINY, &lc, &bp, 5);
    Lora lora = {.config = lc};
    lora_pointers(&lora.w, adapters, &TINY, &lc);
    for (size_t i = 0; i < n; i++) adapters[i] += 0.05f * (float)((i * 37) % 11) - 0.25f; /* B away from zero */
    Net net;
    NetGrads g;
    net_lora(&net, &g, &TINY, &bp, &lora, grads);
    check_set_equals_add(&net, &g, grads, n, &lc, false, "LoRA on every projection, norms, dropout");
    free(base);
    free(adapters);
    free(grads);
}

/* What the hook saw: the layers in the order reported, and each layer's gradient slices when it was reported. */
typedef struct {
    const ParamSegment *seg;
    int n_seg, n_layers, reported[8], n_reported;
    const float *grads;
    float *seen;
} HookLog;

/* The embedding's gradient is done only at the end; the final norm's and a separate classifier's before the
 * last layer's (grad_sync.c sends them with it); every other segment is (L, ...), one slice per layer. */
static bool at_the_end(const ParamSegment *g) { return !strcmp(g->name, "token_embedding"); }
static bool before_the_layers(const ParamSegment *g) {
    return !strcmp(g->name, "wcls") || !strcmp(g->name, "rms_final");
}

static void log_layer(void *ctx, int layer) {
    HookLog *h = ctx;
    bool first = h->n_reported == 0;
    h->reported[h->n_reported++] = layer;
    for (int i = 0; i < h->n_seg; i++) {
        const ParamSegment *g = &h->seg[i];
        if (at_the_end(g) || (before_the_layers(g) && !first)) continue;
        size_t per = before_the_layers(g) ? g->count : g->count / (size_t)h->n_layers;
        size_t at = g->offset + (before_the_layers(g) ? 0 : (size_t)layer * per);
        memcpy(h->seen + at, h->grads + at, per * sizeof(float));
    }
}

/* Backward with the hook gives the gradients of backward without it, bit for bit, and every layer's slices were
 * final (the values backward ends with) when the hook reported it. */
static void check_hook(const Net *net, NetGrads *g, float *grads, size_t n, const LoraConfig *lc,
                       const ParamSegment *seg, int n_seg, const char *what) {
    NfError err;
    Activations acts;
    assert_int_equal(activations_init(&acts, net->config, lc, B, T, false, &err), 0);
    int tokens[B * T], targets[B * T], L = net->config->n_layers;
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (i * 7 + 3) % TINY.vocab_size;
        targets[i] = (i * 5 + 1) % TINY.vocab_size;
    }
    float *plain = malloc(n * sizeof(float)), *seen = malloc(n * sizeof(float));
    model_forward(net, &acts, tokens, targets, 1.0f, 0);
    model_backward(net, g, NF_SET, &acts, tokens);
    memcpy(plain, grads, n * sizeof(float));
    for (size_t i = 0; i < n; i++) seen[i] = grads[i] = NAN;
    HookLog h = {.seg = seg, .n_seg = n_seg, .n_layers = L, .grads = grads, .seen = seen};
    g->layer_done = log_layer;
    g->layer_ctx = &h;
    model_forward(net, &acts, tokens, targets, 1.0f, 0);
    model_backward(net, g, NF_SET, &acts, tokens);
    g->layer_done = NULL;
    assert_int_equal(h.n_reported, L);
    for (int k = 0; k < L; k++) assert_int_equal(h.reported[k], L - 1 - k);
    for (size_t i = 0; i < n; i++)
        if (!(grads[i] == plain[i]))
            fail_msg("%s: gradient %zu with the hook %g, without %g", what, i, grads[i], plain[i]);
    for (int i = 0; i < n_seg; i++)
        for (size_t j = 0; !at_the_end(&seg[i]) && j < seg[i].count; j++)
            if (!(seen[seg[i].offset + j] == grads[seg[i].offset + j]))
                fail_msg("%s: %s[%zu] was %g when its layer (or the last) was reported, %g at the end", what,
                         seg[i].name, j, seen[seg[i].offset + j], grads[seg[i].offset + j]);
    free(plain);
    free(seen);
    activations_free(&acts);
}

static void test_layer_hook_reports_final_gradients_last_layer_first(void **state) {
    (void)state;
    ModelConfig c = TINY;
    c.n_layers = 3;
    c.shared_classifier = false;
    size_t n = config_param_count(&c);
    float *params = malloc(n * sizeof(float)), *grads = malloc(n * sizeof(float));
    params_init(params, &c, 7);
    Net net;
    NetGrads g;
    net_full(&net, &g, &c, params, grads);
    ParamSegment seg[PARAM_SEGMENTS_MAX];
    check_hook(&net, &g, grads, n, NULL, seg, param_segments(&c, seg), "full");
    free(params);
    free(grads);

    LoraConfig lc = {.rank = 2, .alpha = 3, .targets = 0x7F, .train_norms = true};
    size_t n_base = config_param_count(&c);
    n = lora_param_count(&c, &lc);
    float *base = malloc(n_base * sizeof(float)), *adapters = malloc(n * sizeof(float));
    grads = malloc(n * sizeof(float));
    params_init(base, &c, 7);
    ParamPointers bp;
    param_pointers(&bp, base, &c);
    lora_init(adapters, &c, &lc, &bp, 5);
    for (size_t i = 0; i < n; i++) adapters[i] += 0.05f * (float)((i * 37) % 11) - 0.25f; /* B away from zero */
    Lora lora = {.config = lc};
    lora_pointers(&lora.w, adapters, &c, &lc);
    net_lora(&net, &g, &c, &bp, &lora, grads);
    ParamSegment lseg[LORA_SEGMENTS_MAX];
    check_hook(&net, &g, grads, n, &lc, lseg, lora_segments(&c, &lc, lseg), "LoRA");
    free(base);
    free(adapters);
    free(grads);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_fine_tune_writes_every_gradient),
        cmocka_unit_test(test_lora_writes_every_gradient),
        cmocka_unit_test(test_layer_hook_reports_final_gradients_last_layer_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
