/* test_block_claims.c — the parallel loop whose threads take blocks from each other's shares (block_claims.h). */
#include <stdatomic.h>
#include <time.h>

#include <omp.h>

#include "block_claims.h"
#include "testutil.h"

enum { MAX_BLOCKS = 1100 };

typedef struct {
    _Atomic int runs[MAX_BLOCKS]; /* times each block ran */
    int thread[MAX_BLOCKS];       /* the thread that ran it */
    _Atomic int order;            /* blocks run so far, all threads */
    int rank[MAX_BLOCKS];         /* when each block ran: 0 for the first */
    int slow_thread;              /* this thread sleeps slow_ms in each block; -1: none */
    int slow_ms;
} Record;

static void record_block(void *ctx, int block) {
    Record *r = ctx;
    int t = omp_get_thread_num();
    if (t == r->slow_thread) nanosleep(&(struct timespec){0, r->slow_ms * 1000000L}, NULL);
    atomic_fetch_add(&r->runs[block], 1);
    r->thread[block] = t;
    r->rank[block] = atomic_fetch_add(&r->order, 1);
}

static Record *run_blocks(int threads, int blocks, int per_claim, int slow_thread, int slow_ms) {
    Record *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->slow_thread = slow_thread, r->slow_ms = slow_ms;
    int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    block_claims_run(blocks, per_claim, record_block, r);
    omp_set_num_threads(before);
    return r;
}

static void test_every_block_runs_once(void **state) {
    (void)state;
    const int threads[] = {1, 2, 3, 5}, counts[] = {0, 1, 2, 3, 7, 64, 1001}, per_claim[] = {0, 1, 3};
    for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
        for (size_t j = 0; j < sizeof counts / sizeof *counts; j++)
            for (size_t k = 0; k < sizeof per_claim / sizeof *per_claim; k++) {
                Record *r = run_blocks(threads[i], counts[j], per_claim[k], -1, 0);
                for (int b = 0; b < MAX_BLOCKS; b++)
                    if (r->runs[b] != (b < counts[j]))
                        fail_msg("%d threads, %d blocks, %d a claim: block %d ran %d times", threads[i], counts[j],
                                 per_claim[k], b, r->runs[b]);
                free(r);
            }
}

/* A slow thread keeps the front of its share in order; the other, done with its own, takes the rest of the slow
 * one's share from the back, so the two end together instead of one waiting for the other. */
static void test_a_slow_thread_is_helped_from_the_back_of_its_share(void **state) {
    (void)state;
    enum { BLOCKS = 40, SHARE = BLOCKS / 2 };
    Record *r = run_blocks(2, BLOCKS, 1, 0, 5);
    int own = 0, helped = 0;
    for (int b = 0; b < SHARE; b++) {
        if (r->thread[b] == 0) {
            assert_int_equal(own, b); /* thread 0's blocks: a run from its share's front */
            if (b > 0) assert_true(r->rank[b] > r->rank[b - 1]);
            own++;
        } else {
            helped++;
        }
    }
    for (int b = SHARE; b < BLOCKS; b++) assert_int_equal(r->thread[b], 1); /* no one helps the fast thread */
    /* the help came from the back, last block first */
    for (int b = own; b + 1 < SHARE; b++) assert_true(r->rank[b] > r->rank[b + 1]);
    /* thread 0 sleeps 5 ms a block, so thread 1 takes most of its share (with a margin for a loaded machine) */
    if (helped < SHARE / 4) fail_msg("thread 1 took %d of the slow thread's %d blocks", helped, SHARE);
    free(r);
}

/* Claims of several blocks: the slow thread runs a prefix of its share in order, and the other takes the rest in
 * claims of at most per_claim, each run in order, the claims from the back. */
static void test_claims_of_several_blocks_keep_their_order(void **state) {
    (void)state;
    enum { BLOCKS = 48, SHARE = BLOCKS / 2, PER_CLAIM = 4 };
    Record *r = run_blocks(2, BLOCKS, PER_CLAIM, 0, 5);
    int own = 0;
    while (own < SHARE && r->thread[own] == 0) own++;
    for (int b = 1; b < own; b++) assert_true(r->rank[b] > r->rank[b - 1]);
    if (own > SHARE - PER_CLAIM) fail_msg("thread 1 took none of the slow thread's blocks (it ran %d)", own);
    for (int b = own; b < SHARE; b++) assert_int_equal(r->thread[b], 1);
    /* the helper's claims, from the share's end down: within each, the blocks in order */
    for (int end = SHARE; end > own; end -= PER_CLAIM) {
        int first = end - PER_CLAIM > own ? end - PER_CLAIM : own;
        for (int b = first + 1; b < end; b++) assert_true(r->rank[b] > r->rank[b - 1]);
        if (first > own) assert_true(r->rank[first - 1] > r->rank[end - 1]);
    }
    free(r);
}

/* More threads than BLOCK_CLAIMS_MAX_SHARES: the extra threads own no share and only take from the others'. */
static void test_threads_beyond_the_shares_only_take_from_the_back(void **state) {
    (void)state;
    Record *r = run_blocks(BLOCK_CLAIMS_MAX_SHARES + 4, 1000, 2, -1, 0);
    for (int b = 0; b < 1000; b++) assert_int_equal(r->runs[b], 1);
    free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_block_runs_once),
        cmocka_unit_test(test_a_slow_thread_is_helped_from_the_back_of_its_share),
        cmocka_unit_test(test_claims_of_several_blocks_keep_their_order),
        cmocka_unit_test(test_threads_beyond_the_shares_only_take_from_the_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
