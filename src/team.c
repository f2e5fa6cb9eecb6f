/* team.c — decode's team of threads: steps started by a counter, idle threads spinning briefly, then asleep (team.h). */
#include "team.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

typedef struct {
    NfTeam *team;
    int index; /* 1 .. size - 1 */
} Worker;

struct NfTeam {
    int size;          /* threads, the caller's included */
    pthread_t *thread; /* [size - 1] */
    Worker *worker;    /* [size - 1] */
    /* the present step: job and ctx are written before `step` is raised (release) and read after it is seen
     * (acquire); `active` threads take part (indices 0 .. active - 1), `left` of the others have yet to finish */
    NfTeamJob job;
    void *ctx;
    _Atomic int active, left;
    _Atomic unsigned step;
    _Atomic int sleepers; /* threads asleep on `wake`, or about to be */
    _Atomic bool stop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
};

/* Whether a wait that began at `since` has spun past TEAM_SPIN_US (the clock read every 64 spins) */
static bool spun_past_limit(int spins, double since) {
    return spins % 64 == 0 && (nf_now_ms() - since) * 1000.0 >= TEAM_SPIN_US;
}

/* Spins until the step moves past `seen` (or the team stops) for TEAM_SPIN_US, then sleeps on the condition
 * variable. The sleeper counts itself before its last look at the step, and the caller raises the step before it
 * looks for sleepers, both sequentially consistent: one of the two sees the other, so no wake-up is lost. */
static unsigned wait_for_step(NfTeam *t, unsigned seen) {
    double since = nf_now_ms();
    for (int spins = 1;; spins++) {
        unsigned step = atomic_load_explicit(&t->step, memory_order_acquire);
        if (step != seen || atomic_load_explicit(&t->stop, memory_order_relaxed)) return step;
        cpu_relax();
        if (!spun_past_limit(spins, since)) continue;
        pthread_mutex_lock(&t->lock);
        atomic_fetch_add(&t->sleepers, 1);
        while (atomic_load(&t->step) == seen && !atomic_load(&t->stop)) pthread_cond_wait(&t->wake, &t->lock);
        atomic_fetch_sub(&t->sleepers, 1);
        pthread_mutex_unlock(&t->lock);
        since = nf_now_ms();
    }
}

static void *worker_main(void *arg) {
    Worker *w = arg;
    NfTeam *t = w->team;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_step(t, seen);
        if (atomic_load(&t->stop)) return NULL;
        int active = atomic_load_explicit(&t->active, memory_order_relaxed);
        if (w->index >= active) continue; /* not in this step */
        t->job(t->ctx, w->index, active);
        atomic_fetch_sub_explicit(&t->left, 1, memory_order_release);
    }
}

int nf_team_init(NfTeam **team, int threads, NfError *err) {
    *team = NULL;
    if (threads < 2) return 0;
    NfTeam *t = calloc(1, sizeof *t);
    if (!t || !(t->thread = calloc((size_t)threads - 1, sizeof *t->thread)) ||
        !(t->worker = calloc((size_t)threads - 1, sizeof *t->worker))) {
        if (t) free(t->thread);
        free(t);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory for a team of %d threads", threads);
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    for (int i = 0; i < threads - 1; i++) {
        t->worker[i] = (Worker){t, i + 1};
        if (pthread_create(&t->thread[i], NULL, worker_main, &t->worker[i]) != 0) {
            t->size = i + 1; /* those started so far, joined by nf_team_free */
            nf_team_free(t);
            return nf_fail(err, NF_ERR_MEMORY, "cannot start a thread for a team of %d", threads);
        }
    }
    t->size = threads;
    *team = t;
    return 0;
}

void nf_team_run(NfTeam *t, int threads, NfTeamJob job, void *ctx) {
    if (!t || threads < 2) {
        job(ctx, 0, 1);
        return;
    }
    if (threads > t->size) threads = t->size;
    t->job = job, t->ctx = ctx;
    atomic_store_explicit(&t->active, threads, memory_order_relaxed);
    atomic_store_explicit(&t->left, threads - 1, memory_order_relaxed);
    atomic_fetch_add(&t->step, 1); /* sequentially consistent: before the look for sleepers (wait_for_step) */
    if (atomic_load(&t->sleepers) > 0) {
        pthread_mutex_lock(&t->lock);
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->lock);
    }
    job(ctx, 0, threads);
    /* the others' ends: spin as they do, then give the core away while a descheduled one catches up */
    double since = nf_now_ms();
    for (int spins = 1; atomic_load_explicit(&t->left, memory_order_acquire) > 0; spins++) {
        cpu_relax();
        if (spun_past_limit(spins, since)) sched_yield();
    }
}

void nf_team_free(NfTeam *t) {
    if (!t) return;
    pthread_mutex_lock(&t->lock);
    atomic_store(&t->stop, true);
    atomic_fetch_add(&t->step, 1);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
    for (int i = 0; i < t->size - 1; i++) pthread_join(t->thread[i], NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->wake);
    free(t->thread);
    free(t->worker);
    free(t);
}
