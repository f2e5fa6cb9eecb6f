/* test_block_claims.c — the parallel loop whose threads take blocks from each other's shares (block_claims.h), on
 * OpenMP's threads and on a team's (team.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <omp.h>

#include "block_claims.h"
#include "testutil.h"

enum { MAX_BLOCKS = 1100, HELP_WAIT_MS = 10000 };

typedef struct {
    _Atomic int runs[MAX_BLOCKS]; /* times each block ran */
    int thread[MAX_BLOCKS];       /* the thread that ran it */
    _Atomic int order;            /* blocks run so far, all threads */
    int rank[MAX_BLOCKS];         /* when each block ran: 0 for the first */
    _Atomic int team;             /* the team's size, as the blocks saw it */
    int team_size;                /* run on a team (team.h) of this many: 0 for OpenMP's threads */
    pthread_t caller;             /* a team's thread 0 */
    pthread_mutex_t lock;         /* a team's other threads, numbered as they first run a block: */
    pthread_t others[8];
    int n_others;
    /* Thread 0 is slow where slow_share > 0: its share is blocks 0..slow_share-1, and in its first block it waits
     * (up to HELP_WAIT_MS) until another thread has run one of those, then takes 1 ms a block. So the other thread
     * helps whatever the machine's load, and the outcome does not hang on timing. */
    int slow_share;
    bool slow_waited;   /* thread 0 has waited (only thread 0 reads and writes it) */
    _Atomic int helped; /* blocks of thread 0's share run by another thread */
} Record;

static void sleep_ms(long ms) { nanosleep(&(struct timespec){ms / 1000, ms % 1000 * 1000000L}, NULL); }

/* The thread running a block: OpenMP's number, or on a team 0 for the caller and 1.. for the others */
static int block_thread(Record *r) {
    if (!r->team_size) return omp_get_thread_num();
    pthread_t self = pthread_self();
    if (pthread_equal(self, r->caller)) return 0;
    pthread_mutex_lock(&r->lock);
    int t = 0;
    while (t < r->n_others && !pthread_equal(r->others[t], self)) t++;
    if (t == r->n_others && r->n_others < 8) r->others[r->n_others++] = self;
    pthread_mutex_unlock(&r->lock);
    return t + 1;
}

static void record_block(void *ctx, int block) {
    Record *r = ctx;
    int t = block_thread(r), team = r->team_size ? r->team_size : omp_get_num_threads();
    atomic_store(&r->team, team);
    if (r->slow_share > 0 && t == 0 && team > 1) {
        for (int waited = 0; !r->slow_waited && atomic_load(&r->helped) == 0 && waited < HELP_WAIT_MS; waited++)
            sleep_ms(1);
        r->slow_waited = true;
        sleep_ms(1);
    }
    if (t != 0 && block < r->slow_share) atomic_fetch_add(&r->helped, 1);
    atomic_fetch_add(&r->runs[block], 1);
    r->thread[block] = t;
    r->rank[block] = atomic_fetch_add(&r->order, 1);
}

/* blocks run by `threads` threads: a team's of that size (on_team), else OpenMP's */
static Record *run_blocks(int threads, int blocks, int per_claim, int slow_share, bool on_team) {
    Record *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->slow_share = slow_share;
    NfTeam *team = NULL;
    if (on_team) {
        assert_int_equal(nf_team_init(&team, threads, NULL), 0);
        r->team_size = threads, r->caller = pthread_self();
        pthread_mutex_init(&r->lock, NULL);
    }
    int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    block_claims_run(team, blocks, per_claim, record_block, r);
    omp_set_num_threads(before);
    nf_team_free(team);
    return r;
}

static void test_every_block_runs_once(void **state) {
    (void)state;
    const int threads[] = {1, 2, 3, 5}, counts[] = {0, 1, 2, 3, 7, 64, 1001}, per_claim[] = {0, 1, 3};
    for (int on_team = 0; on_team < 2; on_team++)
        for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
            for (size_t j = 0; j < sizeof counts / sizeof *counts; j++)
                for (size_t k = 0; k < sizeof per_claim / sizeof *per_claim; k++) {
                    Record *r = run_blocks(threads[i], counts[j], per_claim[k], 0, on_team);
                    for (int b = 0; b < MAX_BLOCKS; b++)
                        if (r->runs[b] != (b < counts[j]))
                            fail_msg("%s %d threads, %d blocks, %d a claim: block %d ran %d times",
                                     on_team ? "a team's" : "OpenMP's", threads[i], counts[j], per_claim[k], b,
                                     r->runs[b]);
                    free(r);
                }
}

/* Two threads, thread 0 slow: how many of its share's blocks it ran itself (a run from the front, in order), with
 * the checks common to any claim size. */
static int slow_share_prefix(const Record *r, int share, int blocks) {
    int own = 0;
    while (own < share && r->thread[own] == 0) own++;
    for (int b = 1; b < own; b++) assert_true(r->rank[b] > r->rank[b - 1]);
    if (own == share) fail_msg("thread 1 took none of the slow thread's %d blocks in %d s", share, HELP_WAIT_MS / 1000);
    for (int b = own; b < share; b++) assert_int_equal(r->thread[b], 1);
    for (int b = share; b < blocks; b++) assert_int_equal(r->thread[b], 1); /* no one helps the fast thread */
    return own;
}

/* A slow thread keeps the front of its share in order; the other, done with its own, takes the rest of the slow
 * one's share from the back, last block first, so the two end together instead of one waiting for the other. */
static void test_a_slow_thread_is_helped_from_the_back_of_its_share(void **state) {
    (void)state;
    enum { BLOCKS = 40, SHARE = BLOCKS / 2 };
    for (int on_team = 1; on_team >= 0; on_team--) {
        Record *r = run_blocks(2, BLOCKS, 1, SHARE, on_team);
        if (r->team < 2) { /* OpenMP gave one thread */
            free(r);
            skip();
        }
        int own = slow_share_prefix(r, SHARE, BLOCKS);
        for (int b = own; b + 1 < SHARE; b++) assert_true(r->rank[b] > r->rank[b + 1]);
        free(r);
    }
}

/* Claims of several blocks: the other thread takes the rest of the slow one's share in claims of at most
 * per_claim, each run in order, the claims from the back. */
static void test_claims_of_several_blocks_keep_their_order(void **state) {
    (void)state;
    enum { BLOCKS = 48, SHARE = BLOCKS / 2, PER_CLAIM = 4 };
    for (int on_team = 1; on_team >= 0; on_team--) {
        Record *r = run_blocks(2, BLOCKS, PER_CLAIM, SHARE, on_team);
        if (r->team < 2) { /* OpenMP gave one thread */
            free(r);
            skip();
        }
        int own = slow_share_prefix(r, SHARE, BLOCKS);
        for (int end = SHARE; end > own; end -= PER_CLAIM) {
            int first = end - PER_CLAIM > own ? end - PER_CLAIM : own;
            for (int b = first + 1; b < end; b++) assert_true(r->rank[b] > r->rank[b - 1]);
            if (first > own) assert_true(r->rank[first - 1] > r->rank[end - 1]);
        }
        free(r);
    }
}

/* A team smaller than omp_get_max_threads() (here a nested region, which gets one thread): the shares no thread
 * owns are taken from the back by the threads there are. */
static void test_shares_without_a_thread_are_taken_from_the_back(void **state) {
    (void)state;
    enum { BLOCKS = 99, PER_CLAIM = 2 };
    Record *r = calloc(1, sizeof *r);
    assert_non_null(r);
    int levels = omp_get_max_active_levels();
    omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
    if (omp_get_thread_num() == 0) {
        omp_set_num_threads(3); /* three shares of 33, for a team of one */
        block_claims_run(NULL, BLOCKS, PER_CLAIM, record_block, r);
    }
    omp_set_max_active_levels(levels);
    assert_int_equal(r->team, 1);
    for (int b = 0; b < BLOCKS; b++) assert_int_equal(r->runs[b], 1);
    for (int b = 1; b < 33; b++) assert_true(r->rank[b] > r->rank[b - 1]); /* its own share first, in order */
    /* then share 1 (33..65) and share 2 (66..98), each from the back in claims of two, each claim run in order */
    assert_true(r->rank[64] > r->rank[32]);
    assert_true(r->rank[65] > r->rank[64]);
    assert_true(r->rank[33] > r->rank[65]);
    assert_true(r->rank[97] > r->rank[33]);
    assert_true(r->rank[66] > r->rank[98]);
    free(r);
}

/* More threads than BLOCK_CLAIMS_MAX_SHARES: the extra threads own no share, and every block still runs once. */
static void test_threads_beyond_the_shares_still_run_every_block_once(void **state) {
    (void)state;
    Record *r = run_blocks(BLOCK_CLAIMS_MAX_SHARES + 4, 1000, 2, 0, false);
    for (int b = 0; b < 1000; b++) assert_int_equal(r->runs[b], 1);
    free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_block_runs_once),
        cmocka_unit_test(test_a_slow_thread_is_helped_from_the_back_of_its_share),
        cmocka_unit_test(test_claims_of_several_blocks_keep_their_order),
        cmocka_unit_test(test_shares_without_a_thread_are_taken_from_the_back),
        cmocka_unit_test(test_threads_beyond_the_shares_still_run_every_block_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
