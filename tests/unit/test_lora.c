/* test_lora.c — LoRA: target names and masks, the buffer layout, the
 * gradient with dropout against central finite differences (the PyTorch
 * comparison in tests/e2e covers the no-dropout case), dropout determinism,
 * merging, the classifier in chunks of rows, and a base held in bf16 only. */
#include "testutil.h"

#include <math.h>

#include "f16.h"
#include "lora.h"
#include "params.h"
#include "rng.h"
#include "train_model.h"

static const ModelConfig TINY = {.dim = 16,
                                 .hidden_dim = 24,
                                 .n_layers = 2,
                                 .n_heads = 4,
                                 .n_kv_heads = 2,
                                 .vocab_size = 11,
                                 .seq_len = 8,
                                 .shared_classifier = false};

static void test_targets_names_aliases_and_masks(void **state) {
    (void)state;
    NfError err;
    unsigned a, b, c;
    assert_int_equal(lora_parse_targets("wq,wk,w1", &a, &err), 0);
    assert_int_equal(lora_parse_targets("q,k,gate", &b, &err), 0);
    assert_int_equal(lora_parse_targets("19", &c, &err), 0);
    assert_int_equal(a, 1 | 2 | 16);
    assert_int_equal(a, b);
    assert_int_equal(a, c);
    assert_int_equal(lora_parse_targets("15", &a, &err), 0);
    assert_int_equal(a, LORA_DEFAULT_TARGETS);
    assert_int_equal(lora_parse_targets("down,up,o", &a, &err), 0);
    assert_int_equal(a, 32 | 64 | 8);
    const char *bad[] = {"", "0", "128", "wq,", ",wq", "wq,wq", "q,wq", "attn", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.code = NULL;
        assert_int_equal(lora_parse_targets(bad[i], &a, &err), -1);
        assert_string_equal(err.code, NF_ERR_USAGE);
    }
}

static void test_layout_counts_and_pointers(void **state) {
    (void)state;
    LoraConfig lc = {.rank = 3, .alpha = 6, .targets = 0x7F, .train_norms = true};
    ParamSegment seg[LORA_SEGMENTS_MAX];
    int n = lora_segments(&TINY, &lc, seg);
    assert_int_equal(n, 17);
    size_t L = 2, r = 3, D = 16, H = 24, KV = 8;
    uint64_t expected = L * r * (D + D) + L * r * (D + KV) * 2 + L * r * (D + D) + 3 * L * r * (D + H) + 2 * L * D + D;
    assert_int_equal(lora_param_count(&TINY, &lc), expected);
    for (int i = 1; i < n; i++) assert_int_equal(seg[i].offset, seg[i - 1].offset + seg[i - 1].count);
    assert_string_equal(seg[2].name, "wk.lora_a");
    assert_true(seg[16].is_norm && !seg[0].is_norm);
    float *buf = calloc(expected, sizeof(float));
    LoraPointers p;
    lora_pointers(&p, buf, &TINY, &lc);
    assert_ptr_equal(p.a[LORA_WK], buf + seg[2].offset);
    assert_ptr_equal(p.b[LORA_W2], buf + seg[11].offset);
    assert_ptr_equal(p.rms_final, buf + seg[16].offset);
    lc.targets = 1 << LORA_WV, lc.train_norms = false;
    lora_pointers(&p, buf, &TINY, &lc);
    assert_null(p.a[LORA_WQ]);
    assert_null(p.rms_att);
    assert_ptr_equal(p.a[LORA_WV], buf);
    free(buf);
}

typedef struct {
    float *base, *adapters, *grads;
    Lora lora;
    Net net;
    NetGrads g;
    Activations acts;
    int tokens[2 * 5], targets[2 * 5];
} Fixture;

static void fixture_init(Fixture *f, const LoraConfig *lc) {
    memset(f, 0, sizeof *f);
    NfError err;
    size_t n_base = config_param_count(&TINY), n = lora_param_count(&TINY, lc);
    f->base = malloc(n_base * sizeof(float));
    f->adapters = malloc(n * sizeof(float));
    f->grads = calloc(n, sizeof(float));
    params_init(f->base, &TINY, 7);
    ParamPointers bp;
    param_pointers(&bp, f->base, &TINY);
    Rng rng;
    rng_seed(&rng, 3);
    for (size_t i = 0; i < (size_t)TINY.n_layers * TINY.dim; i++) bp.rms_att[i] = 1.0f + 0.2f * rng_normal(&rng);
    lora_init(f->adapters, &TINY, lc, &bp, 5);
    LoraPointers p;
    lora_pointers(&p, f->adapters, &TINY, lc);
    for (int t = 0; t < LORA_TARGETS; t++) { /* B away from zero so every path carries gradient */
        if (!p.b[t]) continue;
        int in, out;
        lora_target_dims(&TINY, (LoraTarget)t, &in, &out);
        for (size_t i = 0; i < (size_t)TINY.n_layers * out * lc->rank; i++) p.b[t][i] = 0.3f * rng_normal(&rng);
    }
    f->lora.config = *lc;
    f->lora.w = p;
    net_lora(&f->net, &f->g, &TINY, &bp, &f->lora, f->grads);
    assert_int_equal(activations_init(&f->acts, &TINY, lc, 2, 5, false, &err), 0);
    for (int i = 0; i < 10; i++) {
        f->tokens[i] = (int)rng_below(&rng, (uint64_t)TINY.vocab_size);
        f->targets[i] = (int)rng_below(&rng, (uint64_t)TINY.vocab_size);
    }
}

static void fixture_free(Fixture *f) {
    activations_free(&f->acts);
    free(f->base);
    free(f->adapters);
    free(f->grads);
}

static void test_dropout_gradient_matches_finite_differences(void **state) {
    (void)state;
    LoraConfig lc = {.rank = 2, .alpha = 3, .dropout = 0.3f, .targets = 0x7F, .train_norms = true};
    Fixture f;
    fixture_init(&f, &lc);
    const uint64_t key = 0x1234567;
    model_forward(&f.net, &f.acts, f.tokens, f.targets, 1.0f, key);
    model_backward(&f.net, &f.g, NF_ADD, &f.acts, f.tokens);
    size_t n = lora_param_count(&TINY, &lc);
    double worst = 0.0, largest = 0.0;
    int checked = 0;
    for (size_t i = 0; i < n; i += 7) {
        float keep = f.adapters[i], h = 1e-2f;
        f.adapters[i] = keep + h;
        double up = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, key);
        f.adapters[i] = keep - h;
        double down = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, key);
        f.adapters[i] = keep;
        double numeric = (up - down) / (2.0 * h);
        double diff = fabs(numeric - f.grads[i]);
        if (diff > worst) worst = diff;
        if (fabs(numeric) > largest) largest = fabs(numeric);
        checked++;
    }
    assert_true(checked > 50);
    assert_true(largest > 1e-3);
    if (worst > 2e-3 * largest + 1e-5) fail_msg("worst |numeric - analytic| %g, largest gradient %g", worst, largest);
    fixture_free(&f);
}

static void test_dropout_masks_are_redrawn_the_same_and_off_in_evaluation(void **state) {
    (void)state;
    LoraConfig lc = {.rank = 2, .alpha = 2, .dropout = 0.5f, .targets = LORA_DEFAULT_TARGETS};
    Fixture f;
    fixture_init(&f, &lc);
    double a = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, 99);
    double b = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, 99);
    double c = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, 100);
    double eval = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, 0);
    f.lora.config.dropout = 0.0f;
    double no_dropout = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, 99);
    assert_true(a == b);
    assert_true(a != c);
    assert_true(eval == no_dropout);
    assert_true(a != eval);
    fixture_free(&f);
}

static void test_merge_equals_the_adapter_forward(void **state) {
    (void)state;
    LoraConfig lc = {.rank = 3, .alpha = 5, .targets = 0x7F, .train_norms = true};
    Fixture f;
    fixture_init(&f, &lc);
    double with_adapters = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, 0);
    NfError err;
    assert_int_equal(lora_merge(f.base, &TINY, &f.lora, &err), 0);
    Net merged;
    net_full(&merged, NULL, &TINY, f.base, NULL);
    double after_merge = model_forward(&merged, &f.acts, f.tokens, f.targets, 0.0f, 0);
    assert_true(fabs(with_adapters - after_merge) < 1e-5 * fabs(with_adapters));
    fixture_free(&f);
}

/* One LoRA step's loss, with the adapter gradients left in f->grads. */
static double lora_step(Fixture *f, uint64_t key) {
    double loss = model_forward(&f->net, &f->acts, f->tokens, f->targets, 1.0f, key);
    model_backward(&f->net, &f->g, NF_SET, &f->acts, f->tokens);
    return loss;
}

static void assert_close(const float *a, const float *b, size_t n, double tol) {
    double largest = 0.0;
    for (size_t i = 0; i < n; i++) largest = fabs(a[i]) > largest ? fabs(a[i]) : largest;
    assert_true(largest > 0.0);
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i] - b[i]) > tol * largest) fail_msg("element %zu: %g against %g", i, a[i], b[i]);
}

/* Under LoRA forward runs the classifier and the loss a chunk of rows at a
 * time and passes the gradient on at once: any chunking gives the same loss
 * and gradients (masked targets included). */
static void test_classifier_in_chunks_of_rows_gives_the_same_gradients(void **state) {
    (void)state;
    LoraConfig lc = {.rank = 2, .alpha = 3, .dropout = 0.2f, .targets = 0x7F, .train_norms = true};
    Fixture f;
    fixture_init(&f, &lc);
    f.targets[3] = -1; /* a masked target */
    size_t n = lora_param_count(&TINY, &lc);
    assert_true(f.acts.classifier_in_forward);
    assert_int_equal(f.acts.logit_rows, 10); /* a tiny vocabulary: one chunk */
    double whole = lora_step(&f, 77);
    float *expected = malloc(n * sizeof(float));
    memcpy(expected, f.grads, n * sizeof(float));
    int rows[] = {1, 3, 4};
    for (int k = 0; k < 3; k++) {
        f.acts.logit_rows = rows[k];
        double chunked = lora_step(&f, 77);
        assert_true(fabs(chunked - whole) <= 1e-6 * fabs(whole));
        assert_close(f.grads, expected, n, 1e-5);
    }
    free(expected);
    fixture_free(&f);
}

/* A base held in bf16 only (frozen_base_bf16: what train keeps under
 * --dtype bf16) computes what the fp32 base with its kept bf16 copies does,
 * when the base's values are bf16 already (as a bf16 model's are): the same
 * rounded weights, the embedding widened exactly. */
static void test_base_held_in_bf16_matches_the_kept_copies(void **state) {
    (void)state;
    LoraConfig lc = {.rank = 2, .alpha = 3, .dropout = 0.1f, .targets = 0x7F, .train_norms = false};
    ModelConfig c = TINY;
    c.qkv_bias = true; /* the small fp32 pieces beside the matrices */
    Fixture f;
    fixture_init(&f, &lc);
    size_t n_base = config_param_count(&c), n = lora_param_count(&c, &lc);
    float *base = malloc(n_base * sizeof(float));
    params_init(base, &c, 11);
    for (size_t i = 0; i < n_base; i++) base[i] = bf16_to_f32(f32_to_bf16(base[i]));
    ParamPointers bp;
    param_pointers(&bp, base, &c);
    for (size_t i = 0; i < (size_t)c.n_layers * config_q_dim(&c); i++) bp.bq[i] = 0.1f * (float)(i % 7) - 0.3f;
    NfError err;
    Activations acts;
    assert_int_equal(activations_init(&acts, &c, &lc, 2, 5, true, &err), 0);
    Net net;
    NetGrads g;
    net_lora(&net, &g, &c, &bp, &f.lora, f.grads);
    activations_keep_bf16_weights(&acts, &net, NULL, 0);
    double kept = model_forward(&net, &acts, f.tokens, f.targets, 1.0f, 5);
    model_backward(&net, &g, NF_SET, &acts, f.tokens);
    float *expected = malloc(n * sizeof(float));
    memcpy(expected, f.grads, n * sizeof(float));
    activations_free(&acts);

    FrozenBase fb;
    assert_int_equal(frozen_base_bf16(&fb, &c, &bp, false, &err), 0);
    assert_int_equal(fb.bytes, frozen_base_bytes(&c));
    assert_true(fb.bytes <
                n_base * sizeof(float) / 2 +
                    (size_t)c.n_layers * (2 * c.dim + 2 * config_kv_dim(&c) + config_q_dim(&c)) * sizeof(float) +
                    c.dim * sizeof(float));
    assert_null(fb.p.wq);
    assert_float_equal(fb.p.bq[5], bp.bq[5], 0.0f);
    free(base); /* nothing reads the fp32 base any more */
    assert_int_equal(activations_init(&acts, &c, &lc, 2, 5, true, &err), 0);
    net_lora(&net, &g, &c, &fb.p, &f.lora, f.grads);
    net.bf16 = &fb.w;
    assert_null(activations_keep_bf16_weights(&acts, &net, NULL, 0));
    double held = model_forward(&net, &acts, f.tokens, f.targets, 1.0f, 5);
    model_backward(&net, &g, NF_SET, &acts, f.tokens);
    assert_true(fabs(held - kept) <= 1e-6 * fabs(kept));
    assert_close(f.grads, expected, n, 1e-5);
    activations_free(&acts);
    frozen_base_free(&fb);
    free(expected);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets_names_aliases_and_masks),
        cmocka_unit_test(test_layout_counts_and_pointers),
        cmocka_unit_test(test_dropout_gradient_matches_finite_differences),
        cmocka_unit_test(test_dropout_masks_are_redrawn_the_same_and_off_in_evaluation),
        cmocka_unit_test(test_merge_equals_the_adapter_forward),
        cmocka_unit_test(test_classifier_in_chunks_of_rows_gives_the_same_gradients),
        cmocka_unit_test(test_base_held_in_bf16_matches_the_kept_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
