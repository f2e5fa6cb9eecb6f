/* test_decode_threads.c — the schedule that chooses a generated token's thread count (decode_threads.h), fed
 * made-up token times. */
#include "decode_threads.h"
#include "testutil.h"

/* Runs one token: returns the count it ran at, and records ms_fewer or ms_all for it. */
static int step(DecodeThreads *d, double ms_fewer, double ms_all) {
    int n = decode_threads_next(d);
    decode_threads_record(d, n < d->max ? ms_fewer : ms_all);
    return n;
}

/* Runs tokens until the present run phase and its probe are over; returns how many. */
static int cycle(DecodeThreads *d, double ms_fewer, double ms_all) {
    int tokens = 0;
    while (!d->probing) step(d, ms_fewer, ms_all), tokens++;
    while (d->probing) step(d, ms_fewer, ms_all), tokens++;
    return tokens;
}

static void test_probes_one_thread_fewer_and_backs_off_while_all_are_faster(void **state) {
    (void)state;
    DecodeThreads d;
    decode_threads_init(&d, 4);
    int fewer = 0, total = 0, probes = 0;
    for (int t = 0; t < DECODE_RUN_TOKENS; t++) assert_int_equal(step(&d, 3.4, 3.0), 4);
    for (int t = 0; t < 1 + DECODE_SAMPLE_TOKENS; t++) assert_int_equal(step(&d, 3.4, 3.0), 3); /* the probe */
    assert_int_equal(d.current, 4);
    /* each probe that keeps the count doubles the run before the next, up to DECODE_RUN_TOKENS_MAX */
    for (int run = 2 * DECODE_RUN_TOKENS; run <= 4 * DECODE_RUN_TOKENS_MAX; run *= 2) {
        int expect = (run < DECODE_RUN_TOKENS_MAX ? run : DECODE_RUN_TOKENS_MAX) + 1 + DECODE_SAMPLE_TOKENS;
        int before = total;
        while (total - before < expect) fewer += step(&d, 3.4, 3.0) == 3, total++;
        assert_false(d.probing);
        assert_int_equal(d.current, 4);
        probes++;
    }
    assert_int_equal(probes, 6);
    assert_int_equal(fewer, probes * (1 + DECODE_SAMPLE_TOKENS)); /* each probe, and only the probes */
}

static void test_drops_a_thread_when_that_runs_faster_and_returns_when_it_no_longer_does(void **state) {
    (void)state;
    DecodeThreads d;
    decode_threads_init(&d, 2);
    assert_int_equal(cycle(&d, 3.5, 8.0), DECODE_RUN_TOKENS + 1 + DECODE_SAMPLE_TOKENS); /* a busy process */
    assert_int_equal(d.current, 1);
    for (int t = 0; t < DECODE_RUN_TOKENS; t++) assert_int_equal(step(&d, 3.5, 8.0), 1);
    assert_int_equal(step(&d, 3.5, 8.0), 2); /* the probe at all of them: still slower, so it stays at one */
    for (int t = 0; t < DECODE_SAMPLE_TOKENS; t++) step(&d, 3.5, 8.0);
    assert_int_equal(d.current, 1);
    assert_int_equal(d.run_tokens, 2 * DECODE_RUN_TOKENS);
    cycle(&d, 5.5, 3.0); /* the busy process ended */
    assert_int_equal(d.current, 2);
    assert_int_equal(d.run_tokens, DECODE_RUN_TOKENS); /* after a change, probes come soon again */
}

static void test_small_differences_change_nothing(void **state) {
    (void)state;
    DecodeThreads d;
    decode_threads_init(&d, 2);
    for (int c = 0; c < 4; c++) cycle(&d, 2.8, 3.0); /* one thread fewer 7% faster: under the margin */
    assert_int_equal(d.current, 2);
}

static void test_the_waking_token_is_not_counted(void **state) {
    (void)state;
    DecodeThreads d;
    decode_threads_init(&d, 2);
    for (int t = 0; t < DECODE_RUN_TOKENS; t++) decode_threads_record(&d, 8.0);
    decode_threads_record(&d, 500.0); /* the probe's first token, waking threads */
    for (int t = 0; t < DECODE_SAMPLE_TOKENS; t++) decode_threads_record(&d, 3.0);
    assert_int_equal(d.current, 1);
}

static void test_one_thread_never_changes(void **state) {
    (void)state;
    DecodeThreads d, off = {0};
    decode_threads_init(&d, 1);
    for (int t = 0; t < 3 * DECODE_RUN_TOKENS; t++) {
        assert_int_equal(step(&d, 0.1, 9.0), 1);
        decode_threads_record(&off, 1.0);
        assert_int_equal(decode_threads_next(&off), 0); /* a zeroed state: off, the caller's count stays */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probes_one_thread_fewer_and_backs_off_while_all_are_faster),
        cmocka_unit_test(test_drops_a_thread_when_that_runs_faster_and_returns_when_it_no_longer_does),
        cmocka_unit_test(test_small_differences_change_nothing),
        cmocka_unit_test(test_the_waking_token_is_not_counted),
        cmocka_unit_test(test_one_thread_never_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
