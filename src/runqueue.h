/* runqueue.h — how many runs the dashboard runs at once. Every run is
 * recorded "queued"; the queue starts it when its class has a free slot:
 * trainings up to max_trainings, light jobs (generate, tokenize, export) up
 * to max_jobs. The others wait, oldest first, and start by themselves when a
 * run ends (the runner calls runqueue_dispatch) or when the server starts
 * again. A stop of a queued run cancels it: it ends "stopped" and never
 * starts. Each child gets OMP_NUM_THREADS = the usable cores / its class's
 * slots, so runs side by side share the cores instead of each taking all. */
#ifndef NF_RUNQUEUE_H
#define NF_RUNQUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "runner.h"
#include "store.h"

typedef struct {
    Store *store;
    Runner *runner;
    int max_trainings, max_jobs; /* slots of each class */
    int cores;                   /* usable by this process (its CPU affinity) */
    bool closing;                /* the server is stopping: nothing starts */
    pthread_mutex_t lock;        /* makes counting the slots and starting a run one step */
} RunQueue;

/* Also hooks runqueue_dispatch to the runner's end of every run. */
void runqueue_init(RunQueue *q, Store *s, Runner *r, int max_trainings, int max_jobs);
/* A run just recorded (status "queued"): started if its class has a free
 * slot and no older run of it waits, else left queued. -1 (err set) when
 * it should have started and could not (it then ends "error"). */
int runqueue_submit(RunQueue *q, int64_t run_id, NfError *err);
/* Starts queued runs, oldest first, while their classes have free slots. */
void runqueue_dispatch(RunQueue *q);
/* Cancels a queued run (it ends "stopped" without starting): true; false
 * when the run is not queued. */
bool runqueue_cancel(RunQueue *q, int64_t run_id);
/* From now on nothing starts (server shutdown); queued runs stay queued.
 * The queue's mutex is never destroyed: a run thread that outlives
 * runner_shutdown's wait may still call runqueue_dispatch, which then finds
 * the queue closed; the process exits next. */
void runqueue_close(RunQueue *q);

#endif
