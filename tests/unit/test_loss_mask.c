/* test_loss_mask.c — masked targets (target < 0): nf_cross_entropy against a
 * double-precision reference, rows left unmasked keep their bits, a fully
 * masked batch counts nothing and yields zeros (no NaN), and model_forward's
 * mean over counted targets with the gradient it leaves for backward. */
#include "testutil.h"

#include <math.h>

#include "backend.h"
#include "params.h"
#include "train_model.h"

static void fill_logits(float *logits, int n, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        logits[i] = ((float)(x >> 40) / 16777216.0f - 0.5f) * 12.0f;
    }
}

/* Masked rows add no loss and get a zero gradient; the others match double math. */
static void test_masked_cross_entropy_matches_double_reference(void **state) {
    (void)state;
    enum { N = 6, V = 515 };
    float *logits = malloc(sizeof(float) * N * V), *orig = malloc(sizeof(float) * N * V);
    int targets[N] = {5, -1, 514, -1, -1, 0};
    fill_logits(orig, N * V, 7);
    memcpy(logits, orig, sizeof(float) * N * V);
    const float scale = 0.25f;
    double loss = nf_cross_entropy(logits, targets, N, V, scale), ref_loss = 0.0;
    for (int n = 0; n < N; n++) {
        const float *row = orig + (size_t)n * V;
        const float *got = logits + (size_t)n * V;
        if (targets[n] < 0) {
            for (int i = 0; i < V; i++)
                if (got[i] != 0.0f) fail_msg("masked row %d logit %d: gradient %g, want 0", n, i, got[i]);
            continue;
        }
        double max = row[0], sum = 0.0;
        for (int i = 0; i < V; i++) max = row[i] > max ? row[i] : max;
        for (int i = 0; i < V; i++) sum += exp((double)row[i] - max);
        ref_loss += log(sum) + max - row[targets[n]];
        for (int i = 0; i < V; i++) {
            double grad = (exp((double)row[i] - max) / sum - (i == targets[n])) * scale;
            if (fabs(got[i] - grad) > 1e-6 * fabs(grad) + 1e-9)
                fail_msg("row %d logit %d: gradient %g, reference %g", n, i, got[i], grad);
        }
    }
    assert_true(fabs(loss - ref_loss) < 1e-6 * fabs(ref_loss));
    free(logits);
    free(orig);
}

/* An unmasked row's gradient and loss are the same bits whether or not other rows are masked. */
static void test_unmasked_rows_keep_their_bits(void **state) {
    (void)state;
    enum { N = 4, V = 300 };
    float *a = malloc(sizeof(float) * N * V), *b = malloc(sizeof(float) * N * V);
    fill_logits(a, N * V, 11);
    memcpy(b, a, sizeof(float) * N * V);
    int all[N] = {3, 17, 299, 42}, some[N] = {3, -1, 299, -1};
    double loss_all = nf_cross_entropy(a, all, N, V, 0.5f);
    double loss_some = nf_cross_entropy(b, some, N, V, 0.5f);
    assert_memory_equal(a, b, sizeof(float) * V);                 /* row 0 */
    assert_memory_equal(a + 2 * V, b + 2 * V, sizeof(float) * V); /* row 2 */
    /* the summed loss of rows 0 and 2 alone */
    float *c = malloc(sizeof(float) * V);
    fill_logits(a, N * V, 11);
    double r0, r2;
    memcpy(c, a, sizeof(float) * V);
    r0 = nf_cross_entropy(c, &all[0], 1, V, 0.0f);
    memcpy(c, a + 2 * V, sizeof(float) * V);
    r2 = nf_cross_entropy(c, &all[2], 1, V, 0.0f);
    assert_true(loss_some == r0 + r2);
    assert_true(loss_all > loss_some);
    free(a);
    free(b);
    free(c);
}

/* Every target masked: nothing counted, a zero loss and zero gradients, no NaN. */
static void test_fully_masked_batch_counts_nothing(void **state) {
    (void)state;
    enum { N = 3, V = 64 };
    float logits[N * V], orig[N * V];
    int targets[N] = {-1, -1, -1};
    fill_logits(orig, N * V, 5);
    memcpy(logits, orig, sizeof logits);
    double loss = nf_cross_entropy(logits, targets, N, V, 1.0f);
    assert_true(loss == 0.0);
    for (int i = 0; i < N * V; i++) assert_true(logits[i] == 0.0f);
    memcpy(logits, orig, sizeof logits);
    assert_true(nf_cross_entropy(logits, targets, N, V, 0.0f) == 0.0); /* evaluation: logits left alone */
    assert_memory_equal(logits, orig, sizeof logits);
    assert_int_equal(model_counted_targets(targets, N), 0);
    int some[4] = {0, -1, 7, -5};
    assert_int_equal(model_counted_targets(some, 4), 2);
}

static const ModelConfig TINY = {.dim = 16,
                                 .hidden_dim = 24,
                                 .n_layers = 2,
                                 .n_heads = 4,
                                 .n_kv_heads = 2,
                                 .vocab_size = 13,
                                 .seq_len = 8,
                                 .shared_classifier = true};
enum { B = 2, T = 6, NT = B * T };

typedef struct {
    float *params, *grads;
    Net net;
    NetGrads g;
    Activations acts;
    int tokens[NT], targets[NT];
} Fixture;

static void fixture_init(Fixture *f) {
    memset(f, 0, sizeof *f);
    size_t n = config_param_count(&TINY);
    f->params = malloc(n * sizeof(float));
    f->grads = calloc(n, sizeof(float));
    params_init(f->params, &TINY, 9);
    net_full(&f->net, &f->g, &TINY, f->params, f->grads);
    NfError err;
    assert_int_equal(activations_init(&f->acts, &TINY, NULL, B, T, false, &err), 0);
    for (int i = 0; i < NT; i++) {
        f->tokens[i] = (i * 5 + 3) % TINY.vocab_size;
        f->targets[i] = (i * 7 + 1) % TINY.vocab_size;
    }
}

static void fixture_free(Fixture *f) {
    activations_free(&f->acts);
    free(f->params);
    free(f->grads);
}

/* model_forward's mean is over the counted targets: the mean of the row losses that each row alone gives. */
static void test_model_forward_means_over_counted_targets(void **state) {
    (void)state;
    Fixture f;
    fixture_init(&f);
    int masked[NT];
    memcpy(masked, f.targets, sizeof masked);
    int keep[] = {2, 3, 7, 11};
    for (int i = 0; i < NT; i++) masked[i] = -1;
    for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++) masked[keep[k]] = f.targets[keep[k]];
    double mean = model_forward(&f.net, &f.acts, f.tokens, masked, 0.0f, 0), sum = 0.0;
    for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++) {
        int one[NT];
        for (int i = 0; i < NT; i++) one[i] = -1;
        one[keep[k]] = f.targets[keep[k]];
        sum += model_forward(&f.net, &f.acts, f.tokens, one, 0.0f, 0);
    }
    assert_true(fabs(mean - sum / 4.0) < 1e-6 * fabs(mean));
    double full = model_forward(&f.net, &f.acts, f.tokens, f.targets, 0.0f, 0);
    assert_true(fabs(full - mean) > 1e-4); /* masking changed the loss */
    fixture_free(&f);
}

/* All targets masked: loss 0, and backward writes zeros (no NaN anywhere). */
static void test_fully_masked_forward_and_backward_are_zero(void **state) {
    (void)state;
    Fixture f;
    fixture_init(&f);
    int none[NT];
    for (int i = 0; i < NT; i++) none[i] = -1;
    double loss = model_forward(&f.net, &f.acts, f.tokens, none, 1.0f, 0);
    assert_true(loss == 0.0);
    size_t n = config_param_count(&TINY);
    for (size_t i = 0; i < n; i++) f.grads[i] = 1.0f;
    model_backward(&f.net, &f.g, NF_SET, &f.acts, f.tokens);
    for (size_t i = 0; i < n; i++)
        if (f.grads[i] != 0.0f) fail_msg("gradient %zu is %g after a fully masked batch", i, f.grads[i]);
    fixture_free(&f);
}

/* The gradient of a batch with masked rows is the mean of the gradients
 * that each counted row gives alone: masked rows contribute nothing. */
static void test_masked_gradient_is_the_mean_of_counted_rows(void **state) {
    (void)state;
    Fixture f;
    fixture_init(&f);
    size_t n = config_param_count(&TINY);
    int keep[] = {1, 4, 9};
    int masked[NT];
    for (int i = 0; i < NT; i++) masked[i] = -1;
    for (int k = 0; k < 3; k++) masked[keep[k]] = f.targets[keep[k]];
    model_forward(&f.net, &f.acts, f.tokens, masked, 1.0f, 0);
    model_backward(&f.net, &f.g, NF_SET, &f.acts, f.tokens);
    float *together = malloc(n * sizeof(float)), *rows = calloc(n, sizeof(float));
    memcpy(together, f.grads, n * sizeof(float));
    for (int k = 0; k < 3; k++) {
        int one[NT];
        for (int i = 0; i < NT; i++) one[i] = -1;
        one[keep[k]] = f.targets[keep[k]];
        memset(f.grads, 0, n * sizeof(float));
        model_forward(&f.net, &f.acts, f.tokens, one, 1.0f / 3.0f, 0);
        model_backward(&f.net, &f.g, NF_ADD, &f.acts, f.tokens);
        for (size_t i = 0; i < n; i++) rows[i] += f.grads[i];
    }
    double worst = 0.0, largest = 0.0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(together[i] - rows[i]));
        largest = fmax(largest, fabs(rows[i]));
    }
    assert_true(largest > 0.0);
    if (worst > 1e-5 * largest)
        fail_msg("masked gradient differs from the counted rows' mean by %g (largest %g)", worst, largest);
    free(together);
    free(rows);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masked_cross_entropy_matches_double_reference),
        cmocka_unit_test(test_unmasked_rows_keep_their_bits),
        cmocka_unit_test(test_fully_masked_batch_counts_nothing),
        cmocka_unit_test(test_model_forward_means_over_counted_targets),
        cmocka_unit_test(test_fully_masked_forward_and_backward_are_zero),
        cmocka_unit_test(test_masked_gradient_is_the_mean_of_counted_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
