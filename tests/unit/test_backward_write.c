/* test_backward_write.c — model_backward under NF_SET writes every gradient
 * it computes: gradient buffers filled with NaN and written must equal zeroed
 * ones added to (NF_ADD), value for value, for a full fine-tune with a shared
 * and with a separate classifier, in fp32 and bf16, and for LoRA adapters on
 * every projection with trained norms and dropout. A slot the first
 * backward of a step left unwritten would keep the last step's gradient (or
 * here, NaN). */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_fine_tune_writes_every_gradient),
        cmocka_unit_test(test_lora_writes_every_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
