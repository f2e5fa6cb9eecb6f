/* test_team.c — decode's team of threads (team.h): each step runs once on each of its threads, with their own
 * indices, and on no more; steps follow each other whether the threads are spinning or asleep (after TEAM_SPIN_US
 * idle); fewer threads than the team, a team of one, and none, run the step on the caller; freeing joins them. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "team.h"
#include "testutil.h"

typedef struct {
    _Atomic int runs[8]; /* per thread index */
    _Atomic int bad;     /* a call with an index or a count out of place */
    int want_threads;
    pthread_t caller;
} Step;

static void count_step(void *ctx, int thread, int threads) {
    Step *s = ctx;
    if (threads != s->want_threads || thread < 0 || thread >= threads ||
        (thread == 0) != (pthread_equal(pthread_self(), s->caller) != 0))
        atomic_fetch_add(&s->bad, 1);
    else
        atomic_fetch_add(&s->runs[thread], 1);
}

static void sleep_us(long us) { nanosleep(&(struct timespec){0, us * 1000L}, NULL); }

static void run_steps(NfTeam *team, int threads, int want_threads, int steps, long idle_us) {
    Step s = {.want_threads = want_threads, .caller = pthread_self()};
    for (int i = 0; i < steps; i++) {
        nf_team_run(team, threads, count_step, &s);
        if (idle_us) sleep_us(idle_us);
    }
    assert_int_equal(atomic_load(&s.bad), 0);
    for (int t = 0; t < 8; t++) assert_int_equal(atomic_load(&s.runs[t]), t < want_threads ? steps : 0);
}

static void test_each_step_runs_once_on_each_thread(void **state) {
    (void)state;
    for (int size = 2; size <= 4; size++) {
        NfTeam *team = NULL;
        assert_int_equal(nf_team_init(&team, size, NULL), 0);
        assert_non_null(team);
        run_steps(team, size, size, 5000, 0);              /* back to back: the threads spin */
        run_steps(team, size, size, 20, 2 * TEAM_SPIN_US); /* idle between: they sleep, and are woken */
        run_steps(team, size + 3, size, 100, 0);           /* more asked than there are: the team's size */
        run_steps(team, 2, 2, 100, 0);                     /* fewer: the others sit the steps out */
        run_steps(team, 1, 1, 10, 0);                      /* one: the caller alone */
        run_steps(team, size, size, 100, 0);               /* and all of them again */
        nf_team_free(team);
    }
}

static void test_no_team_runs_steps_on_the_caller(void **state) {
    (void)state;
    NfTeam *team = (NfTeam *)&team; /* overwritten */
    assert_int_equal(nf_team_init(&team, 1, NULL), 0);
    assert_null(team);
    run_steps(NULL, 4, 1, 10, 0);
    nf_team_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_step_runs_once_on_each_thread),
        cmocka_unit_test(test_no_team_runs_steps_on_the_caller),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
