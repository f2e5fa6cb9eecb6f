/* test_optimizer.c — the gradient norm of optimizer.h. Its chunk sums run
 * across threads with partial sums inside each chunk; the norm must match a
 * long double sum of squares and be the same bits on one thread and on
 * several, for a length that ends inside a chunk and inside a partial-sum
 * block. (AdamW itself is checked against torch.optim.AdamW end to end:
 * tests/e2e/test_optimizer_reference.py.) */
#include "testutil.h"

#include <math.h>

#include "backend.h"
#include "optimizer.h"

static void test_gradient_norm_matches_reference_on_any_thread_count(void **state) {
    (void)state;
    size_t n = 3 * 65536 + 13;
    float *g = malloc(n * sizeof(float));
    uint64_t r = 5;
    long double ref = 0.0L;
    for (size_t i = 0; i < n; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        g[i] = ((float)(r >> 40) / (float)(1u << 24) - 0.5f) * (i % 1000 == 0 ? 100.0f : 1.0f);
        ref += (long double)g[i] * g[i];
    }
    int threads = nf_threads();
    nf_set_threads(1);
    double one = sqrt(grad_sum_squares(g, n));
    nf_set_threads(2);
    double two = sqrt(grad_sum_squares(g, n));
    nf_set_threads(threads);
    double expect = (double)sqrtl(ref);
    assert_true(fabs(one - expect) <= 1e-12 * expect);
    assert_memory_equal(&one, &two, sizeof one);
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient_norm_matches_reference_on_any_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
