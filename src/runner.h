/* runner.h — the dashboard's runs as processes: each run is this very
 * binary executed with the run's argument array (fork/exec, never a
 * shell), its stdout read line by line (partial lines buffered) into the
 * store, its stderr appended to D/logs/<run>.log. A run's status follows
 * its messages and its exit. One thread per live run forks the child and
 * reads it; the child gets SIGINT if that thread, or the server, dies, so
 * an orphaned training run still checkpoints: train ignores SIGPIPE, stops
 * on the closed stdout too, and writes its remaining messages to stderr,
 * the log, from which the next server's runner_recover imports them. */
#ifndef NF_RUNNER_H
#define NF_RUNNER_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

typedef struct {
    Store *store;
    char exe[PATH_MAX];     /* /proc/self/exe: what every run executes */
    char log_dir[PATH_MAX]; /* D/logs */
    pthread_mutex_t lock;
    pthread_cond_t idle;       /* signalled when live drops */
    int live;                  /* reader threads still running */
    void (*on_end)(void *ctx); /* called as each run ends, after its final status (runqueue.c); may be NULL */
    void *on_end_ctx;
} Runner;

int runner_init(Runner *r, Store *s, const char *data_dir, NfError *err);
/* D/logs/<run>.log: the run's stderr (deleted with its project). */
void runner_log_path(const Runner *r, int64_t run_id, char *out, size_t cap);
/* Starts the stored run (kind and args from the store), with
 * OMP_NUM_THREADS=threads in the child's environment (0: as inherited); its
 * status is "starting" until the child speaks. Returns once the child is
 * forked and its pid recorded. runqueue.c decides when. */
int runner_start(Runner *r, int64_t run_id, int threads, NfError *err);
/* SIGINT to an active run's process; it ends as "stopped". */
int runner_stop(Runner *r, int64_t run_id);
/* At start-up, for each run recorded as active: while its process (checked
 * by /proc/PID/cmdline against the run's words, not just the pid) is still
 * alive, the run stays active and a thread waits for it (up to 15 minutes,
 * then kills it); once it is gone, the messages it wrote to the log after
 * its server died are imported, and the run ends as they say: "error",
 * "done" (completed), "stopped" (a stop was asked) or "interrupted". */
void runner_recover(Runner *r);
/* SIGINT to every live run, then waits (up to timeout_s) for them to end.
 * Returns how many of the runner's threads are still live (0: all ended);
 * those still use the store, so it must stay open while the process lives. */
int runner_shutdown(Runner *r, int timeout_s);

#endif
