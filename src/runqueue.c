/* runqueue.c — slots for trainings and light jobs; the rest wait queued (see runqueue.h). */
#define _GNU_SOURCE /* sched_getaffinity */
#include "runqueue.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

enum { CLASS_TRAIN, CLASS_JOB, CLASSES };

static int class_of(const char *kind) { return strcmp(kind, "train") == 0 ? CLASS_TRAIN : CLASS_JOB; }

static void on_run_end(void *ctx) { runqueue_dispatch(ctx); }

void runqueue_init(RunQueue *q, Store *s, Runner *r, int max_trainings, int max_jobs) {
    memset(q, 0, sizeof *q);
    q->store = s;
    q->runner = r;
    q->max_trainings = max_trainings > 0 ? max_trainings : 1;
    q->max_jobs = max_jobs > 0 ? max_jobs : 1;
    cpu_set_t set;
    q->cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    pthread_mutex_init(&q->lock, NULL);
    r->on_end = on_run_end;
    r->on_end_ctx = q;
}

/* Runs with a process (starting, running, restarting) of each class. */
static void count_running(RunQueue *q, int counts[CLASSES]) {
    counts[CLASS_TRAIN] = counts[CLASS_JOB] = 0;
    int n;
    int64_t *ids = store_run_ids(q->store, 0, true, &n);
    for (int i = 0; ids && i < n; i++) {
        RunRow r;
        if (!store_run_get(q->store, ids[i], &r)) continue;
        counts[class_of(r.kind)]++;
        run_row_free(&r);
    }
    free(ids);
}

/* Starts what fits, oldest first; a run of a full class does not hold back
 * the other class. Returns -1 with err set when `watch` failed to start. */
static int dispatch_locked(RunQueue *q, int64_t watch, NfError *err) {
    if (q->closing) return 0;
    int running[CLASSES], limit[CLASSES] = {q->max_trainings, q->max_jobs};
    count_running(q, running);
    int n, rc = 0;
    int64_t *ids = store_run_ids_with_status(q->store, "queued", &n);
    for (int i = 0; ids && i < n; i++) {
        RunRow r;
        if (!store_run_get(q->store, ids[i], &r)) continue;
        int k = class_of(r.kind);
        /* A run the server is still recording has no words yet: they come (a train run's folder, a chat's
         * file are named after its id) before its own runqueue_submit, which starts it. Another run's end
         * dispatching in between must not start it with none. */
        bool recording = strcmp(r.args, "[]") == 0;
        run_row_free(&r);
        if (recording || running[k] >= limit[k]) continue;
        int threads = q->cores / limit[k] > 0 ? q->cores / limit[k] : 1;
        NfError why = {0};
        /* "starting" before the lock is let go, so the next count sees the slot taken; pid 0 until
         * the child exists, so no stop can reach a resumed run's old, maybe reused, pid */
        if (store_run_started(q->store, ids[i], 0) != 0 || runner_start(q->runner, ids[i], threads, &why) != 0) {
            if (!why.code) nf_fail(&why, NF_ERR_IO, "cannot start run %lld", (long long)ids[i]);
            store_run_ended(q->store, ids[i], "error", -1, why.message);
            if (ids[i] == watch) rc = err ? (*err = why, -1) : -1;
            continue;
        }
        running[k]++;
    }
    free(ids);
    return rc;
}

int runqueue_submit(RunQueue *q, int64_t run_id, NfError *err) {
    pthread_mutex_lock(&q->lock);
    int rc = dispatch_locked(q, run_id, err);
    pthread_mutex_unlock(&q->lock);
    return rc;
}

void runqueue_dispatch(RunQueue *q) {
    pthread_mutex_lock(&q->lock);
    dispatch_locked(q, 0, NULL);
    pthread_mutex_unlock(&q->lock);
}

bool runqueue_cancel(RunQueue *q, int64_t run_id) {
    pthread_mutex_lock(&q->lock);
    RunRow r;
    bool found = store_run_get(q->store, run_id, &r), queued = found && strcmp(r.status, "queued") == 0;
    if (found) run_row_free(&r);
    if (queued) store_run_ended(q->store, run_id, "stopped", -1, NULL);
    pthread_mutex_unlock(&q->lock);
    return queued;
}

void runqueue_close(RunQueue *q) {
    pthread_mutex_lock(&q->lock);
    q->closing = true;
    pthread_mutex_unlock(&q->lock);
}
