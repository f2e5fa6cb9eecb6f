/* runner.c — runs as child processes, their NDJSON into the store (see runner.h). */
#define _GNU_SOURCE /* close_range */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "json.h"
#include "json_parse.h"
#include "protocol.h"
#include "util.h"

#define MAX_ARGS 128

int runner_init(Runner *r, Store *s, const char *data_dir, NfError *err) {
    memset(r, 0, sizeof *r);
    r->store = s;
    if (nf_self_exe(r->exe, sizeof r->exe, err) != 0) return -1;
    snprintf(r->log_dir, sizeof r->log_dir, "%s/logs", data_dir);
    if (mkdir(r->log_dir, 0755) != 0 && errno != EEXIST)
        return nf_fail(err, NF_ERR_IO, "cannot create '%s': %s", r->log_dir, strerror(errno));
    pthread_mutex_init(&r->lock, NULL);
    nf_cond_init_monotonic(&r->idle);
    return 0;
}

void runner_log_path(const Runner *r, int64_t run_id, char *out, size_t cap) {
    snprintf(out, cap, "%s/%lld.log", r->log_dir, (long long)run_id);
}

static void thread_done(Runner *r) {
    pthread_mutex_lock(&r->lock);
    r->live--;
    pthread_cond_broadcast(&r->idle);
    pthread_mutex_unlock(&r->lock);
}

/* A detached thread counted in r->live (runner_shutdown waits for those);
 * the thread calls thread_done when it ends. */
static int start_thread(Runner *r, void *(*fn)(void *), void *arg) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&r->lock);
    r->live++;
    pthread_mutex_unlock(&r->lock);
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) thread_done(r); /* never started: a shutdown waiting meanwhile must hear it */
    return rc != 0 ? -1 : 0;
}

/* runner_start waits on this until the job's thread has forked (or failed
 * to), so the run's row holds the new pid when it answers. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t done;
    bool forked;
} Launch;

typedef struct {
    Runner *runner;
    int64_t run_id;
    char *argv[MAX_ARGS + 2]; /* exe, the run's words, NULL */
    JsonValue args;           /* owns the words */
    char log_path[PATH_MAX + 32];
    char **envp; /* the server's environment with OMP_NUM_THREADS set, or NULL: as inherited */
    char threads_env[32];
    Launch *launch; /* runner_start's, until the fork is recorded */
} Job;

static void job_free(Job *job) {
    free(job->envp);
    json_value_free(&job->args);
    free(job->argv[0]);
    free(job);
}

/* Tells runner_start the fork is recorded; its Launch is not touched after. */
static void launch_done(Job *job) {
    Launch *l = job->launch;
    job->launch = NULL;
    pthread_mutex_lock(&l->lock);
    l->forked = true;
    pthread_cond_signal(&l->done);
    pthread_mutex_unlock(&l->lock);
}

/* What the stored lines of a run said, for its status. */
typedef struct {
    char type[32];   /* the last line's */
    char error[600]; /* the last error message, or "" */
    bool completed;  /* a done line with reason "completed" */
} Seen;

/* One NDJSON line of a run: stored, and what it says noted in *seen. */
static void store_line(Store *s, int64_t run_id, const char *line, size_t len, Seen *seen) {
    JsonValue v = {0};
    NfError err;
    snprintf(seen->type, sizeof seen->type, "unparsed");
    if (json_parse(line, len, &v, &err) == 0 && v.type == JV_OBJECT) {
        const JsonValue *t = json_get(&v, "type");
        if (t && t->type == JV_STRING) snprintf(seen->type, sizeof seen->type, "%s", t->text);
        const JsonValue *msg = json_get(&v, "message"), *reason = json_get(&v, "reason");
        if (strcmp(seen->type, "error") == 0 && msg && msg->type == JV_STRING)
            snprintf(seen->error, sizeof seen->error, "%s", msg->text);
        if (strcmp(seen->type, "done") == 0)
            seen->completed = reason && reason->type == JV_STRING && strcmp(reason->text, "completed") == 0;
        store_message_add(s, run_id, seen->type, line, len);
    } else { /* not one of ours: kept as a string, so nothing is lost */
        JsonBuf j;
        json_init(&j);
        json_object_begin(&j, NULL);
        json_str(&j, "type", "unparsed");
        json_str_n(&j, "line", line, len);
        json_object_end(&j);
        if (!j.failed) store_message_add(s, run_id, seen->type, j.data, j.len);
        json_free(&j);
    }
    json_value_free(&v);
}

typedef struct {
    Job *job;
    Seen *seen;
} LineTaker;

/* One line of the child's stdout (ctx: a LineTaker): stored, and the run's status moved on. */
static void take_line(void *ctx, const char *line, size_t len) {
    Job *job = ((LineTaker *)ctx)->job;
    Seen *seen = ((LineTaker *)ctx)->seen;
    Store *s = job->runner->store;
    store_line(s, job->run_id, line, len, seen);
    if (strcmp(seen->type, "restart") == 0)
        store_run_status(s, job->run_id, "restarting");
    else if (strcmp(seen->type, "error") != 0)
        store_run_status(s, job->run_id, "running");
}

static void *job_thread(void *arg) {
    Job *job = arg;
    Runner *r = job->runner;
    Store *s = r->store;
    Seen seen = {.type = ""};
    char *error = seen.error;
    int out[2];
    int log_fd = open(job->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid = -1;
    sigset_t none;
    sigemptyset(&none);
    if (pipe2(out, O_CLOEXEC) == 0) {
        pid = fork();
        if (pid == 0) { /* the child: only async-signal-safe calls until exec */
            /* the server blocks SIGINT/SIGTERM (it sigwaits) and ignores SIGPIPE: exec would keep both */
            sigprocmask(SIG_SETMASK, &none, NULL);
            signal(SIGPIPE, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGINT); /* this thread (or the server) gone: stop gracefully */
            int null_fd = open("/dev/null", O_RDONLY);
            dup2(null_fd, 0);
            dup2(out[1], 1);
            dup2(log_fd >= 0 ? log_fd : null_fd, 2);
            close_range(3, ~0u, 0);
            if (job->envp)
                execve(job->argv[0], job->argv, job->envp);
            else
                execv(job->argv[0], job->argv);
            _exit(127);
        }
        close(out[1]);
        if (pid < 0) close(out[0]);
    }
    if (log_fd >= 0) close(log_fd);
    if (pid < 0) {
        store_run_ended(s, job->run_id, "error", -1, "could not start the process");
        launch_done(job);
        goto done;
    }
    store_run_started(s, job->run_id, pid);
    launch_done(job);
    LineTaker taker = {job, &seen};
    LineReader lines;
    line_reader_init(&lines);
    while (line_reader_read(&lines, out[0], take_line, &taker) > 0) {
    }
    line_reader_free(&lines);
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    RunRow run;
    bool stopped = store_run_get(s, job->run_id, &run) && run.stop_requested;
    run_row_free(&run);
    int64_t code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code != 0 && !error[0]) {
        if (WIFSIGNALED(status))
            snprintf(error, sizeof seen.error, "killed by signal %d", WTERMSIG(status));
        else if (code == 127)
            snprintf(error, sizeof seen.error, "could not run %s", job->argv[0]);
        else
            snprintf(error, sizeof seen.error, "exited with status %lld", (long long)code);
    }
    /* a stopped train run ends "stopped" when it checkpointed and left cleanly (done reason "interrupted") */
    const char *final = stopped ? "stopped" : code == 0 ? "done" : "error";
    store_run_ended(s, job->run_id, final, code, code == 0 || stopped ? NULL : error);
done:
    if (r->on_end) r->on_end(r->on_end_ctx); /* before live drops: shutdown waits for it */
    job_free(job);
    thread_done(r);
    return NULL;
}

/* environ with OMP_NUM_THREADS=threads in place of any inherited one, built
 * before fork: the child may only make async-signal-safe calls */
static int job_environment(Job *job, int threads) {
    extern char **environ;
    size_t n = 0;
    while (environ[n]) n++;
    if (!(job->envp = calloc(n + 2, sizeof *job->envp))) return -1;
    snprintf(job->threads_env, sizeof job->threads_env, "OMP_NUM_THREADS=%d", threads);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "OMP_NUM_THREADS=", 16) != 0) job->envp[k++] = environ[i];
    job->envp[k] = job->threads_env;
    return 0;
}

int runner_start(Runner *r, int64_t run_id, int threads, NfError *err) {
    RunRow run;
    if (!store_run_get(r->store, run_id, &run)) return nf_fail(err, NF_ERR_IO, "run %lld not found", (long long)run_id);
    Job *job = calloc(1, sizeof *job);
    int rc = -1;
    if (!job) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory");
        goto done;
    }
    job->runner = r;
    job->run_id = run_id;
    runner_log_path(r, run_id, job->log_path, sizeof job->log_path);
    if (json_parse(run.args, strlen(run.args), &job->args, err) != 0 || job->args.type != JV_ARRAY ||
        job->args.n > MAX_ARGS) {
        nf_fail(err, NF_ERR_USAGE, "run %lld has a malformed argument list", (long long)run_id);
        goto done;
    }
    job->argv[0] = strdup(r->exe);
    if (threads > 0 && job_environment(job, threads) != 0) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < job->args.n; i++) {
        if (job->args.items[i].type != JV_STRING) {
            nf_fail(err, NF_ERR_USAGE, "run %lld has a malformed argument list", (long long)run_id);
            goto done;
        }
        job->argv[i + 1] = job->args.items[i].text;
    }
    /* the fork happens on the job's thread, which lives as long as the child:
     * PR_SET_PDEATHSIG fires when the forking thread ends */
    Launch launch = {.forked = false};
    pthread_mutex_init(&launch.lock, NULL);
    pthread_cond_init(&launch.done, NULL);
    job->launch = &launch;
    if (!job->argv[0] || start_thread(r, job_thread, job) != 0) {
        nf_fail(err, NF_ERR_MEMORY, "cannot start a thread for run %lld", (long long)run_id);
    } else {
        job = NULL;
        rc = 0;
        pthread_mutex_lock(&launch.lock);
        while (!launch.forked) pthread_cond_wait(&launch.done, &launch.lock);
        pthread_mutex_unlock(&launch.lock);
    }
    pthread_cond_destroy(&launch.done);
    pthread_mutex_destroy(&launch.lock);
done:
    if (job) job_free(job);
    run_row_free(&run);
    return rc;
}

int runner_stop(Runner *r, int64_t run_id) {
    RunRow run;
    if (!store_run_get(r->store, run_id, &run)) return -1;
    int rc = -1;
    if (run_status_active(run.status) && run.pid > 0) {
        store_run_request_stop(r->store, run_id);
        rc = kill((pid_t)run.pid, SIGINT) == 0 ? 0 : -1;
    }
    run_row_free(&run);
    return rc;
}

/* ---- recovery: the runs a previous server left active ---------------------------- */

/* How long an orphan that is still alive at start-up gets to finish: it got
 * SIGINT when its server died, so it is completing its current step and
 * writing a checkpoint; a big model's step and checkpoint take minutes.
 * After that it is killed (AtomicFile leaves the last whole checkpoint). */
#define ORPHAN_WAIT_S  (15 * 60)
#define ORPHAN_POLL_MS 200

/* Whether pid is still the process of this run, and not a recycled pid:
 * alive, not a zombie (whose cmdline is empty), running the run's words
 * (its /proc/PID/cmdline after argv[0], plus the --resume that a
 * --restart-every re-exec may append). */
static bool is_run_process(int64_t pid, const char *args_json) {
    if (pid <= 0 || kill((pid_t)pid, 0) != 0) return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/cmdline", (long long)pid);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    /* the words take no more room there than in JSON; argv[0] is a path */
    size_t cap = strlen(args_json) + PATH_MAX + 64;
    char *cmd = malloc(cap);
    size_t n = cmd ? fread(cmd, 1, cap, f) : 0;
    fclose(f);
    JsonValue args = {0};
    NfError err;
    bool same = n > 0 && n < cap && json_parse(args_json, strlen(args_json), &args, &err) == 0 && args.type == JV_ARRAY;
    size_t at = cmd && same ? strnlen(cmd, n) + 1 : 0; /* past argv[0] */
    for (int i = 0; same && i < args.n; i++) {
        const JsonValue *w = &args.items[i];
        size_t len = w->type == JV_STRING ? strlen(w->text) : 0;
        same = w->type == JV_STRING && at + len < n && memcmp(cmd + at, w->text, len + 1) == 0;
        at += len + 1;
    }
    same = same && (at == n || (n - at == sizeof "--resume" && memcmp(cmd + at, "--resume", sizeof "--resume") == 0));
    json_value_free(&args);
    free(cmd);
    return same;
}

/* Whether the line is the run's latest stored message of its type: a line
 * train wrote to stdout and to stderr (msg_tee_stderr), and the server read. */
static bool stored_already(Store *s, int64_t run_id, const char *line, size_t len) {
    JsonValue v = {0};
    NfError err;
    bool same = false;
    if (json_parse(line, len, &v, &err) == 0 && v.type == JV_OBJECT) {
        const JsonValue *t = json_get(&v, "type");
        char *latest = t && t->type == JV_STRING ? store_message_latest(s, run_id, t->text) : NULL;
        same = latest && strlen(latest) == len && memcmp(latest, line, len) == 0;
        free(latest);
    }
    json_value_free(&v);
    return same;
}

/* The messages an orphaned run wrote to its log after its server died (the
 * lines after train's NF_STDERR_NOTE for that process, less those the
 * server had read from stdout): into the store, so its chart, checkpoint and
 * end are complete. */
static void import_orphan_log(Runner *r, const RunRow *run, Seen *seen) {
    char path[PATH_MAX + 32], note[160];
    runner_log_path(r, run->id, path, sizeof path);
    int len = snprintf(note, sizeof note, "\n" NF_STDERR_NOTE "\n", (long)run->pid);
    MappedFile f;
    NfError err;
    if (run->pid <= 0 || mapped_file_open(&f, path, "log", &err) != 0) return;
    /* the last such line: the log is appended to by every process of the run */
    const char *text = (const char *)f.data, *end = text + f.size, *from = NULL;
    if (f.size >= (size_t)len - 1 && memcmp(text, note + 1, (size_t)len - 1) == 0) from = text + len - 1;
    for (const char *p = text; p && p < end;) {
        p = memmem(p, (size_t)(end - p), note, (size_t)len);
        if (p) from = ++p + len - 1;
    }
    while (from && from < end) {
        const char *nl = memchr(from, '\n', (size_t)(end - from));
        if (!nl) break; /* a torn last line: the process died writing it */
        if (strncmp(from, "{\"type\":", 8) == 0 && !stored_already(r->store, run->id, from, (size_t)(nl - from)))
            store_line(r->store, run->id, from, (size_t)(nl - from), seen);
        from = nl + 1;
    }
    mapped_file_close(&f);
}

/* Ends a run whose process is gone: its late messages imported, then the
 * status they imply; a run that stopped early is "interrupted" (resumable
 * when its checkpoint exists). */
static void settle_orphan(Runner *r, int64_t run_id, const char *why) {
    RunRow run;
    if (!store_run_get(r->store, run_id, &run)) return;
    Seen seen = {.type = ""};
    import_orphan_log(r, &run, &seen);
    if (seen.error[0])
        store_run_ended(r->store, run_id, "error", -1, seen.error);
    else if (seen.completed)
        store_run_ended(r->store, run_id, "done", 0, NULL);
    else if (run.stop_requested)
        store_run_ended(r->store, run_id, "stopped", -1, NULL);
    else
        store_run_ended(r->store, run_id, "interrupted", -1, why);
    run_row_free(&run);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits for a live orphan to finish (it is not ours: no waitpid, so its
 * pid is polled), kills it after ORPHAN_WAIT_S, then settles the run. */
static void watch_orphan(Runner *r, int64_t run_id, int64_t pid, const char *args) {
    const char *why = "the server stopped while this run was active";
    for (int waited_ms = 0; is_run_process(pid, args) && waited_ms < ORPHAN_WAIT_S * 1000; waited_ms += ORPHAN_POLL_MS)
        sleep_ms(ORPHAN_POLL_MS);
    if (is_run_process(pid, args)) {
        kill((pid_t)pid, SIGKILL);
        for (int i = 0; i < 100 && is_run_process(pid, args); i++) sleep_ms(ORPHAN_POLL_MS);
        why = "the server stopped while this run was active; its process had not stopped 15 minutes after the "
              "server restarted, and was killed";
    }
    settle_orphan(r, run_id, why);
}

typedef struct {
    Runner *runner;
    int64_t run_id, pid;
    char *args;
} Orphan;

static void *orphan_thread(void *arg) {
    Orphan *o = arg;
    Runner *r = o->runner;
    watch_orphan(r, o->run_id, o->pid, o->args);
    free(o->args);
    free(o);
    if (r->on_end) r->on_end(r->on_end_ctx); /* its training slot is free: queued runs may start */
    thread_done(r);
    return NULL;
}

void runner_recover(Runner *r) {
    int n;
    int64_t *ids = store_run_ids(r->store, 0, true, &n);
    for (int i = 0; ids && i < n; i++) {
        RunRow run;
        if (!store_run_get(r->store, ids[i], &run)) continue;
        if (!is_run_process(run.pid, run.args)) {
            settle_orphan(r, run.id, "the server stopped while this run was active");
        } else { /* still running: the run stays active, in the background, until its process is gone */
            Orphan *o = malloc(sizeof *o);
            char *args = strdup(run.args);
            if (o && args) *o = (Orphan){r, run.id, run.pid, args};
            if (!o || !args || start_thread(r, orphan_thread, o) != 0) {
                free(o);
                free(args);
                watch_orphan(r, run.id, run.pid, run.args); /* no thread: wait here */
            }
        }
        run_row_free(&run);
    }
    free(ids);
}

int runner_shutdown(Runner *r, int timeout_s) {
    int n;
    int64_t *ids = store_run_ids(r->store, 0, true, &n);
    for (int i = 0; ids && i < n; i++) runner_stop(r, ids[i]);
    free(ids);
    struct timespec until = nf_deadline_ms(timeout_s * 1000L);
    pthread_mutex_lock(&r->lock);
    while (r->live > 0)
        if (pthread_cond_timedwait(&r->idle, &r->lock, &until) == ETIMEDOUT) break;
    int live = r->live;
    pthread_mutex_unlock(&r->lock);
    return live;
}
