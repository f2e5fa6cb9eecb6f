/* test_sampler.c — next-token sampling (sampler.h): temperature 0 is argmax,
 * the seeded RNG is reproducible and seed-dependent and stays in [0, 1),
 * top_k = 1 and a tiny top_p reduce to argmax at any temperature, top_k = 2
 * never returns a third token, top_p keeps the smallest prefix reaching its
 * mass, and plain temperature-1 sampling reproduces a known distribution
 * (0.5 / 0.3 / 0.2 given as log-probabilities) within 0.02 over 20000 draws.
 * Filtered sampling picks, draw for draw, the token that sorting every token
 * with qsort picks (the sampler before its radix sort, kept here as the
 * reference): over flat, peaked and tied distributions of 1 to 32,000
 * tokens, and where rounding leaves the tokens above top-p's cut-off short of
 * top_p, so that all tokens must be sorted after all. */
#include "testutil.h"

#include <math.h>

#include "backend.h"
#include "sampler.h"

static void init(Sampler *s, int vocab, float temperature, float top_p, int top_k, uint64_t seed) {
    NfError err = {0};
    assert_int_equal(sampler_init(s, vocab, temperature, top_p, top_k, seed, &err), 0);
    assert_non_null(s->order);
}

static const float LOGITS5[5] = {0.1f, 2.0f, -1.0f, 1.9f, 0.5f}; /* argmax 1 */

static int sample_copy(Sampler *s, const float *logits, int n) {
    float buf[16];
    assert_true(n <= 16);
    memcpy(buf, logits, (size_t)n * sizeof(float));
    int id = sampler_sample(s, buf);
    assert_true(id >= 0 && id < n);
    return id;
}

static void test_temperature_zero_is_argmax(void **state) {
    (void)state;
    Sampler s;
    init(&s, 5, 0.0f, 1.0f, 0, 1);
    for (int i = 0; i < 100; i++) assert_int_equal(sample_copy(&s, LOGITS5, 5), 1);
    /* argmax at the ends of the array, and with negative logits */
    const float last[5] = {-5, -4, -3, -2, -1};
    assert_int_equal(sample_copy(&s, last, 5), 4);
    const float first[5] = {3, -4, -3, -2, -1};
    assert_int_equal(sample_copy(&s, first, 5), 0);
    sampler_free(&s);
}

static void test_temperature_zero_ignores_top_k_and_top_p(void **state) {
    (void)state;
    Sampler s;
    init(&s, 5, 0.0f, 0.5f, 3, 7);
    for (int i = 0; i < 20; i++) assert_int_equal(sample_copy(&s, LOGITS5, 5), 1);
    sampler_free(&s);
}

static void test_same_seed_same_sequence(void **state) {
    (void)state;
    Sampler a, b;
    init(&a, 5, 1.0f, 1.0f, 0, 1234);
    init(&b, 5, 1.0f, 1.0f, 0, 1234);
    for (int i = 0; i < 500; i++) assert_int_equal(sample_copy(&a, LOGITS5, 5), sample_copy(&b, LOGITS5, 5));
    sampler_free(&a);
    sampler_free(&b);
    /* the same holds with filtering on */
    init(&a, 5, 0.8f, 0.9f, 4, 99);
    init(&b, 5, 0.8f, 0.9f, 4, 99);
    for (int i = 0; i < 500; i++) assert_int_equal(sample_copy(&a, LOGITS5, 5), sample_copy(&b, LOGITS5, 5));
    sampler_free(&a);
    sampler_free(&b);
}

static void test_different_seed_different_sequence(void **state) {
    (void)state;
    const uint64_t seeds[][2] = {{1234, 1235}, {0, 1}, {42, 43}};
    for (size_t k = 0; k < 3; k++) {
        Sampler a, b;
        init(&a, 5, 1.0f, 1.0f, 0, seeds[k][0]);
        init(&b, 5, 1.0f, 1.0f, 0, seeds[k][1]);
        int differ = 0;
        for (int i = 0; i < 200; i++) differ += sample_copy(&a, LOGITS5, 5) != sample_copy(&b, LOGITS5, 5);
        assert_true(differ > 20);
        float ra = sampler_random(&a), rb = sampler_random(&b);
        assert_true(ra != rb);
        sampler_free(&a);
        sampler_free(&b);
    }
}

static void test_seed_zero_works(void **state) {
    (void)state;
    Sampler s;
    init(&s, 5, 1.0f, 1.0f, 0, 0);
    assert_true(s.rng.state != 0);
    float first = sampler_random(&s);
    int same = 0;
    for (int i = 0; i < 100; i++) same += sampler_random(&s) == first;
    assert_true(same < 3);
    sampler_free(&s);
}

static void test_random_in_unit_interval(void **state) {
    (void)state;
    Sampler s;
    init(&s, 2, 1.0f, 1.0f, 0, 5);
    double sum = 0.0;
    float lo = 1.0f, hi = 0.0f;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        float r = sampler_random(&s);
        assert_true(r >= 0.0f);
        assert_true(r < 1.0f);
        if (r < lo) lo = r;
        if (r > hi) hi = r;
        sum += r;
    }
    assert_true(fabs(sum / n - 0.5) < 0.01);
    assert_true(lo < 0.001f);
    assert_true(hi > 0.999f);
    sampler_free(&s);
}

static void test_top_k_one_is_argmax_at_any_temperature(void **state) {
    (void)state;
    const float temps[] = {0.1f, 1.0f, 5.0f, 100.0f};
    for (int t = 0; t < 4; t++) {
        Sampler s;
        init(&s, 5, temps[t], 1.0f, 1, 77 + (uint64_t)t);
        for (int i = 0; i < 300; i++) assert_int_equal(sample_copy(&s, LOGITS5, 5), 1);
        sampler_free(&s);
    }
}

static void test_tiny_top_p_is_argmax(void **state) {
    (void)state;
    const float temps[] = {0.5f, 1.0f, 10.0f};
    for (int t = 0; t < 3; t++) {
        Sampler s;
        init(&s, 5, temps[t], 1e-6f, 0, 3 + (uint64_t)t);
        for (int i = 0; i < 300; i++) assert_int_equal(sample_copy(&s, LOGITS5, 5), 1);
        sampler_free(&s);
    }
}

static void test_top_k_two_never_returns_third(void **state) {
    (void)state;
    /* nearly flat logits: without top_k every token would come up */
    const float logits[4] = {1.0f, 0.9f, 0.8f, 0.7f};
    Sampler s;
    init(&s, 4, 1.0f, 1.0f, 2, 11);
    int count[4] = {0};
    for (int i = 0; i < 5000; i++) count[sample_copy(&s, logits, 4)]++;
    assert_int_equal(count[2], 0);
    assert_int_equal(count[3], 0);
    /* both kept tokens occur, in proportion exp(1) : exp(0.9) */
    assert_true(count[0] > 0 && count[1] > 0);
    double expected0 = 1.0 / (1.0 + exp(-0.1));
    assert_true(fabs(count[0] / 5000.0 - expected0) < 0.03);
    sampler_free(&s);
}

static void test_top_p_keeps_smallest_prefix_reaching_mass(void **state) {
    (void)state;
    /* probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps the first two */
    const float logits[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    Sampler s;
    init(&s, 4, 1.0f, 0.7f, 0, 21);
    int count[4] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) count[sample_copy(&s, logits, 4)]++;
    assert_int_equal(count[2], 0);
    assert_int_equal(count[3], 0);
    assert_true(fabs(count[0] / (double)n - 0.625) < 0.02); /* renormalized 0.5 / 0.8 */
    assert_true(fabs(count[1] / (double)n - 0.375) < 0.02);
    sampler_free(&s);
}

static void test_known_distribution_frequencies(void **state) {
    (void)state;
    const double p[3] = {0.5, 0.3, 0.2};
    const float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    Sampler s;
    init(&s, 3, 1.0f, 1.0f, 0, 2024);
    int count[3] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) count[sample_copy(&s, logits, 3)]++;
    for (int k = 0; k < 3; k++) {
        double freq = count[k] / (double)n;
        if (fabs(freq - p[k]) >= 0.02) fail_msg("token %d: frequency %.4f, probability %.2f", k, freq, p[k]);
    }
    sampler_free(&s);
}

static void test_known_distribution_with_inactive_filters(void **state) {
    (void)state;
    /* top_k >= vocab and top_p = 1 filter nothing; the sorted path must give the same distribution */
    const double p[3] = {0.2, 0.5, 0.3};
    const float logits[3] = {logf(0.2f), logf(0.5f), logf(0.3f)};
    Sampler s;
    init(&s, 3, 1.0f, 0.999999f, 3, 9);
    int count[3] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) count[sample_copy(&s, logits, 3)]++;
    for (int k = 0; k < 3; k++) assert_true(fabs(count[k] / (double)n - p[k]) < 0.02);
    sampler_free(&s);
}

/* The sampler as it was before its radix sort: every token sorted by qsort, most probable first, ties by id */
typedef struct {
    int id;
    float prob;
} RefCandidate;

static int ref_by_prob_desc(const void *a, const void *b) {
    float pa = ((const RefCandidate *)a)->prob, pb = ((const RefCandidate *)b)->prob;
    if (pa != pb) return pa > pb ? -1 : 1;
    return ((const RefCandidate *)a)->id - ((const RefCandidate *)b)->id;
}

static int reference_sample(Rng *rng, float temperature, float top_p, int top_k, float *logits, int n,
                            RefCandidate *c) {
    for (int i = 0; i < n; i++) logits[i] /= temperature;
    nf_softmax(logits, n);
    float r = rng_uniform(rng);
    if (!((top_k > 0 && top_k < n) || top_p < 1.0f)) { /* nothing filtered: the tokens in id order */
        float cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (r < cdf) return i;
        }
        return n - 1;
    }
    for (int i = 0; i < n; i++) c[i] = (RefCandidate){i, logits[i]};
    qsort(c, (size_t)n, sizeof *c, ref_by_prob_desc);
    int m = top_k > 0 && top_k < n ? top_k : n, keep = m;
    float mass = 0.0f;
    for (int i = 0; i < m; i++) {
        mass += c[i].prob;
        if (mass >= top_p) {
            keep = i + 1;
            break;
        }
    }
    float total = 0.0f;
    for (int i = 0; i < keep; i++) total += c[i].prob;
    float target = r * total, cdf = 0.0f;
    for (int i = 0; i < keep; i++) {
        cdf += c[i].prob;
        if (target < cdf) return c[i].id;
    }
    return c[keep - 1].id;
}

/* `draws` tokens from the sampler and from the reference, each with the same seed and the same logits: equal. With
 * a decoy, each draw follows one from the decoy's logits (compared too), so that the sampler's scratch holds another
 * distribution's tokens when it samples these. */
static void assert_matches_reference(const float *logits, const float *decoy, int n, float temperature, float top_p,
                                     int top_k, uint64_t seed, int draws) {
    Sampler s;
    init(&s, n, temperature, top_p, top_k, seed);
    Rng rng;
    rng_seed(&rng, seed);
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    RefCandidate *c = malloc((size_t)n * sizeof *c);
    assert_true(a && b && c);
    for (int d = 0; d < draws * (decoy ? 2 : 1); d++) {
        const float *x = decoy && d % 2 == 0 ? decoy : logits;
        memcpy(a, x, (size_t)n * sizeof *a);
        memcpy(b, x, (size_t)n * sizeof *b);
        int got = sampler_sample(&s, a), want = reference_sample(&rng, temperature, top_p, top_k, b, n, c);
        if (got != want)
            fail_msg("n %d, temperature %g, top_p %.9g, top_k %d, seed %llu, draw %d: token %d, the full sort's %d", n,
                     temperature, top_p, top_k, (unsigned long long)seed, d, got, want);
    }
    free(a), free(b), free(c);
    sampler_free(&s);
}

/* Logits of one kind: 0 nearly flat (an untrained model's), 1 and 2 peaked (a trained one's, and sharper), 3 a
 * handful of values shared by many tokens (ties), 4 one token far above the rest */
static void make_logits(float *x, int n, int kind, Rng *rng) {
    for (int i = 0; i < n; i++) {
        float z = rng_normal(rng);
        x[i] = kind == 0 ? 0.01f * z : kind == 1 ? 3.0f * z : kind == 2 ? 8.0f * z : kind == 3 ? (float)(i * 7 % 4) : z;
    }
    if (kind == 4) x[n / 2] = 30.0f;
}

static void test_filtered_sampling_matches_full_sort(void **state) {
    (void)state;
    const int sizes[] = {1, 2, 3, 5, 100, 1000};
    const float temps[] = {0.7f, 1.0f, 1.5f}, top_ps[] = {1e-6f, 0.3f, 0.9f, 0.95f, 0.999f, 1.0f};
    const int top_ks[] = {0, 1, 2, 40};
    Rng rng;
    rng_seed(&rng, 5);
    float x[1000];
    uint64_t seed = 1;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (int kind = 0; kind < 5; kind++) {
            make_logits(x, sizes[si], kind, &rng);
            for (int t = 0; t < 3; t++)
                for (int p = 0; p < 6; p++)
                    for (int k = 0; k < 4; k++)
                        assert_matches_reference(x, NULL, sizes[si], temps[t], top_ps[p], top_ks[k], seed++, 4);
        }
    /* a real vocabulary's size: 32,000 tokens (Llama 2's), fewer settings */
    const int n = 32000;
    float *big = malloc(n * sizeof *big);
    assert_non_null(big);
    for (int kind = 0; kind < 5; kind++) {
        make_logits(big, n, kind, &rng);
        assert_matches_reference(big, NULL, n, 1.0f, 0.9f, 0, seed++, 3);
        assert_matches_reference(big, NULL, n, 0.8f, 0.95f, 40, seed++, 2);
        assert_matches_reference(big, NULL, n, 1.0f, 1.0f, 50, seed++, 2);
    }
    free(big);
}

/* One token near top_p and n - 1 near top-p's cut-off, (1 - top_p) / (n - 1): the sampler sorts only the tokens at
 * or above the cut-off, and where rounding leaves those short of top_p (their sum, as floats, below it) it must
 * sort them all. Such cases are searched for, the sampler compared with the full sort in each, and at least one
 * must be found, or the search no longer reaches the case it is for. */
static void test_rounding_at_top_p_cut_off(void **state) {
    (void)state;
    int short_cases = 0;
    for (int n = 2; n <= 12; n++)
        for (int pi = 0; pi < 200; pi++) {
            float top_p = 0.5f + (float)pi * 0.0023f, cut = (1.0f - top_p) / (float)(n - 1);
            float x[12] = {0}, probs[12], flat[12] = {0}; /* flat: the decoy, every token sorted */
            x[0] = logf(top_p / cut);
            for (int step = 0; step < 40; step++, x[0] = nextafterf(x[0], 0.0f)) {
                memcpy(probs, x, sizeof x);
                nf_softmax(probs, n);
                float kept = 0.0f;
                int below = 0;
                for (int i = 0; i < n; i++) /* the kept tokens in order: token 0 is the most probable */
                    if (probs[i] >= cut)
                        kept += probs[i];
                    else
                        below++;
                if (below == 0 || kept >= top_p) continue;
                short_cases++;
                assert_matches_reference(x, flat, n, 1.0f, top_p, 0, (uint64_t)(n * 1000 + pi), 8);
            }
        }
    if (short_cases == 0) fail_msg("no case where rounding leaves the kept tokens short of top_p");
}

static void test_temperature_sharpens_and_flattens(void **state) {
    (void)state;
    const float logits[2] = {1.0f, 0.0f};
    const int n = 10000;
    double freq[2];
    const float temps[2] = {0.25f, 4.0f};
    for (int t = 0; t < 2; t++) {
        Sampler s;
        init(&s, 2, temps[t], 1.0f, 0, 5);
        int c0 = 0;
        for (int i = 0; i < n; i++) c0 += sample_copy(&s, logits, 2) == 0;
        freq[t] = c0 / (double)n;
        double expected = 1.0 / (1.0 + exp(-1.0 / temps[t]));
        assert_true(fabs(freq[t] - expected) < 0.02);
        sampler_free(&s);
    }
    assert_true(freq[0] > 0.97);
    assert_true(freq[1] < 0.6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_temperature_zero_is_argmax),
        cmocka_unit_test(test_temperature_zero_ignores_top_k_and_top_p),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_different_seed_different_sequence),
        cmocka_unit_test(test_seed_zero_works),
        cmocka_unit_test(test_random_in_unit_interval),
        cmocka_unit_test(test_top_k_one_is_argmax_at_any_temperature),
        cmocka_unit_test(test_tiny_top_p_is_argmax),
        cmocka_unit_test(test_top_k_two_never_returns_third),
        cmocka_unit_test(test_top_p_keeps_smallest_prefix_reaching_mass),
        cmocka_unit_test(test_known_distribution_frequencies),
        cmocka_unit_test(test_known_distribution_with_inactive_filters),
        cmocka_unit_test(test_temperature_sharpens_and_flattens),
        cmocka_unit_test(test_filtered_sampling_matches_full_sort),
        cmocka_unit_test(test_rounding_at_top_p_cut_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
