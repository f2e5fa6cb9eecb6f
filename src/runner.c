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

#include "json.h"
#include "json_parse.h"

#define MAX_ARGS 128
#define MAX_LINE (16u << 20)

int runner_init(Runner *r, Store *s, const char *data_dir, NfError *err) {
    memset(r, 0, sizeof *r);
    r->store = s;
    ssize_t n = readlink("/proc/self/exe", r->exe, sizeof r->exe - 1);
    if (n <= 0) return nf_fail(err, NF_ERR_IO, "cannot find this program's path (/proc/self/exe)");
    r->exe[n] = '\0';
    snprintf(r->log_dir, sizeof r->log_dir, "%s/logs", data_dir);
    if (mkdir(r->log_dir, 0755) != 0 && errno != EEXIST)
        return nf_fail(err, NF_ERR_IO, "cannot create '%s': %s", r->log_dir, strerror(errno));
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->idle, NULL);
    return 0;
}

void runner_log_path(const Runner *r, int64_t run_id, char *out, size_t cap) {
    snprintf(out, cap, "%s/%lld.log", r->log_dir, (long long)run_id);
}

typedef struct {
    Runner *runner;
    int64_t run_id;
    char *argv[MAX_ARGS + 2];   /* exe, the run's words, NULL */
    JsonValue args;             /* owns the words */
    char log_path[PATH_MAX + 32];
    char **envp;                /* the server's environment with OMP_NUM_THREADS set, or NULL: as inherited */
    char threads_env[32];
} Job;

static void job_free(Job *job) {
    free(job->envp);
    json_value_free(&job->args);
    free(job->argv[0]);
    free(job);
}

/* One line of the child's stdout: stored, and the run's status moved on. */
static void take_line(Job *job, const char *line, size_t len, char *error, size_t error_cap) {
    Store *s = job->runner->store;
    JsonValue v = {0};
    NfError err;
    char type[32] = "unparsed";
    if (json_parse(line, len, &v, &err) == 0 && v.type == JV_OBJECT) {
        const JsonValue *t = json_get(&v, "type");
        if (t && t->type == JV_STRING) snprintf(type, sizeof type, "%s", t->text);
        const JsonValue *msg = json_get(&v, "message");
        if (strcmp(type, "error") == 0 && msg && msg->type == JV_STRING) snprintf(error, error_cap, "%s", msg->text);
        store_message_add(s, job->run_id, type, line, len);
    } else { /* not one of ours: kept as a string, so nothing is lost */
        JsonBuf j;
        json_init(&j);
        json_object_begin(&j, NULL);
        json_string(&j, "type", "unparsed");
        json_string_n(&j, "line", line, len);
        json_object_end(&j);
        if (!j.failed) store_message_add(s, job->run_id, type, j.data, j.len);
        json_free(&j);
    }
    json_value_free(&v);
    if (strcmp(type, "restart") == 0) store_run_status(s, job->run_id, "restarting");
    else if (strcmp(type, "error") != 0) store_run_status(s, job->run_id, "running");
}

static void *job_thread(void *arg) {
    Job *job = arg;
    Runner *r = job->runner;
    Store *s = r->store;
    char error[600] = "";
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
            if (job->envp) execve(job->argv[0], job->argv, job->envp);
            else execv(job->argv[0], job->argv);
            _exit(127);
        }
        close(out[1]);
        if (pid < 0) close(out[0]);
    }
    if (log_fd >= 0) close(log_fd);
    if (pid < 0) {
        store_run_ended(s, job->run_id, "error", -1, "could not start the process");
        goto done;
    }
    store_run_started(s, job->run_id, pid);
    /* lines of stdout, a partial one kept until its newline arrives */
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    bool overlong = false;
    for (;;) {
        if (!buf) break;
        if (len == cap) {
            if (cap >= MAX_LINE) { /* a line this long is dropped, not stored */
                overlong = true;
                len = 0;
            } else {
                char *grown = realloc(buf, cap * 2);
                if (!grown) break;
                buf = grown;
                cap *= 2;
            }
        }
        ssize_t n = read(out[0], buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        size_t start = 0, end = len + (size_t)n;
        for (size_t i = len; i < end; i++)
            if (buf[i] == '\n') {
                if (!overlong && i > start) take_line(job, buf + start, i - start, error, sizeof error);
                overlong = false;
                start = i + 1;
            }
        memmove(buf, buf + start, end - start);
        len = end - start;
    }
    free(buf);
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    RunRow run;
    bool stopped = store_run_get(s, job->run_id, &run) && run.stop_requested;
    run_row_free(&run);
    int64_t code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code != 0 && !error[0]) {
        if (WIFSIGNALED(status)) snprintf(error, sizeof error, "killed by signal %d", WTERMSIG(status));
        else if (code == 127) snprintf(error, sizeof error, "could not run %s", job->argv[0]);
        else snprintf(error, sizeof error, "exited with status %lld", (long long)code);
    }
    /* a stopped train run ends "stopped" when it checkpointed and left cleanly (done reason "interrupted") */
    const char *final = stopped ? "stopped" : code == 0 ? "done" : "error";
    store_run_ended(s, job->run_id, final, code, code == 0 || stopped ? NULL : error);
done:
    if (r->on_end) r->on_end(r->on_end_ctx); /* before live drops: shutdown waits for it */
    pthread_mutex_lock(&r->lock);
    r->live--;
    pthread_cond_broadcast(&r->idle);
    pthread_mutex_unlock(&r->lock);
    job_free(job);
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

int runner_start(Runner *r, int64_t run_id, NfError *err) { return runner_start_threads(r, run_id, 0, err); }

int runner_start_threads(Runner *r, int64_t run_id, int threads, NfError *err) {
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
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&r->lock);
    r->live++;
    pthread_mutex_unlock(&r->lock);
    if (!job->argv[0] || pthread_create(&t, &attr, job_thread, job) != 0) {
        pthread_mutex_lock(&r->lock);
        r->live--;
        pthread_mutex_unlock(&r->lock);
        nf_fail(err, NF_ERR_MEMORY, "cannot start a thread for run %lld", (long long)run_id);
        pthread_attr_destroy(&attr);
        goto done;
    }
    pthread_attr_destroy(&attr);
    job = NULL;
    rc = 0;
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

void runner_recover(Runner *r) {
    int n;
    int64_t *ids = store_run_ids(r->store, 0, true, &n);
    for (int i = 0; ids && i < n; i++) {
        RunRow run;
        if (!store_run_get(r->store, ids[i], &run)) continue;
        /* an orphan got SIGINT when the old server died: give it time to checkpoint and leave */
        for (int waited = 0; run.pid > 0 && kill((pid_t)run.pid, 0) == 0 && waited < 100; waited++) {
            struct timespec ts = {0, 100000000L};
            nanosleep(&ts, NULL);
        }
        store_run_ended(r->store, ids[i], "interrupted", -1, "the server stopped while this run was active");
        run_row_free(&run);
    }
    free(ids);
}

void runner_shutdown(Runner *r, int timeout_s) {
    int n;
    int64_t *ids = store_run_ids(r->store, 0, true, &n);
    for (int i = 0; ids && i < n; i++) runner_stop(r, ids[i]);
    free(ids);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_s;
    pthread_mutex_lock(&r->lock);
    while (r->live > 0)
        if (pthread_cond_timedwait(&r->idle, &r->lock, &until) == ETIMEDOUT) break;
    pthread_mutex_unlock(&r->lock);
}
