/* launch.c — `train --processes N`: mpirun started, its ranks stopped
 * gracefully, rank 0's stream relayed (see launch.h). */
#define _GNU_SOURCE /* sched_getaffinity, pipe2 */
#include "launch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dist.h"
#include "util.h"

/* mpirun's absolute path from PATH into out (cap bytes); false when it is not there. */
static bool find_mpirun(char *out, size_t cap) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        if (len > 0 && (size_t)snprintf(out, cap, "%.*s/mpirun", (int)len, path) < cap && access(out, X_OK) == 0)
            return true;
        path += len + (path[len] == ':');
    }
    return false;
}

int launch_check(const LaunchOptions *l, int mpi_size, NfError *err) {
    if (mpi_size > 0) {
        if (l->processes != 0 && l->processes != mpi_size)
            return nf_fail(err, NF_ERR_USAGE,
                           "--processes %d, but mpirun started %d processes: give mpirun -np the same number, or "
                           "leave --processes out under mpirun",
                           l->processes, mpi_size);
        if (l->hostfile && l->processes == 0)
            return nf_fail(err, NF_ERR_USAGE,
                           "--hostfile goes with --processes; under mpirun, give mpirun the hostfile");
        return 0;
    }
    if (l->hostfile && l->processes < 2) return nf_fail(err, NF_ERR_USAGE, "--hostfile needs --processes 2 or more");
    if (l->processes < 2) return 0;
    if (!dist_has_mpi())
        return nf_fail(err, NF_ERR_DIST,
                       "--processes %d needs MPI, and this build of neuralforge has none (it was built without Open "
                       "MPI): leave --processes out, or build it where mpicc is installed",
                       l->processes);
    char path[PATH_MAX];
    if (!find_mpirun(path, sizeof path))
        return nf_fail(err, NF_ERR_DIST,
                       "--processes %d starts the ranks with mpirun, which is not on PATH (Debian: apt-get install "
                       "openmpi-bin)",
                       l->processes);
    if (l->hostfile && access(l->hostfile, R_OK) != 0)
        return nf_fail(err, NF_ERR_IO, "cannot read --hostfile '%s': %s", l->hostfile, strerror(errno));
    return 0;
}

/* One run of mpirun, as the launcher sees it. */
typedef struct {
    char mpirun[PATH_MAX], exe[PATH_MAX], np[16];
    char **argv; /* mpirun's words */
    int processes;
    pid_t pid;
    int out_fd; /* the read end of mpirun's stdout */
    int sig_fd; /* signalfd: SIGINT, SIGTERM, SIGCHLD */
    NfOut *out;
    bool relayed, relayed_error; /* a line of the ranks went out; an error did */
    bool reaped;
    int status; /* mpirun's, once reaped */
} Launcher;

/* mpirun -np N [--allow-run-as-root] --bind-to none [--hostfile F] EXE train WORDS... */
static int build_command(Launcher *L, const LaunchOptions *l, int argc, char **argv, NfError *err) {
    if (!find_mpirun(L->mpirun, sizeof L->mpirun))
        return nf_fail(err, NF_ERR_DIST, "mpirun is not on PATH (Debian: apt-get install openmpi-bin)");
    if (nf_self_exe(L->exe, sizeof L->exe, err) != 0) return -1;
    snprintf(L->np, sizeof L->np, "%d", l->processes);
    if (!(L->argv = calloc((size_t)argc + 12, sizeof *L->argv))) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    int k = 0;
    L->argv[k++] = "mpirun";
    L->argv[k++] = "-np";
    L->argv[k++] = L->np;
    if (geteuid() == 0) L->argv[k++] = "--allow-run-as-root"; /* Open MPI refuses root without it */
    L->argv[k++] = "--bind-to";
    L->argv[k++] = "none";
    if (l->hostfile) {
        L->argv[k++] = "--hostfile";
        L->argv[k++] = (char *)l->hostfile;
    }
    L->argv[k++] = L->exe;
    L->argv[k++] = "train";
    for (int i = 0; i < argc; i++) L->argv[k++] = argv[i];
    L->argv[k] = NULL;
    return 0;
}

/* A local run with --threads 0: the ranks share this process's threads (OMP_NUM_THREADS, which the dashboard
 * sets to a run's share, else one per core it may use), each at least 1. mpirun passes the environment on to
 * the ranks it starts here; the ranks of a hostfile's other hosts count their own cores. */
static void divide_threads(const LaunchOptions *l) {
    if (l->hostfile || l->threads > 0) return;
    const char *env = getenv("OMP_NUM_THREADS");
    long total = env ? strtol(env, NULL, 10) : 0;
    if (total <= 0) {
        cpu_set_t set;
        total = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    }
    char text[24];
    snprintf(text, sizeof text, "%ld", total / l->processes > 0 ? total / l->processes : 1);
    setenv("OMP_NUM_THREADS", text, 1);
}

static int start_mpirun(Launcher *L, NfError *err) {
    sigset_t watched, none;
    sigemptyset(&watched);
    sigaddset(&watched, SIGINT);
    sigaddset(&watched, SIGTERM);
    sigaddset(&watched, SIGCHLD);
    sigemptyset(&none);
    pthread_sigmask(SIG_BLOCK, &watched, NULL); /* taken from sig_fd only */
    L->sig_fd = signalfd(-1, &watched, SFD_NONBLOCK | SFD_CLOEXEC);
    int out[2];
    if (L->sig_fd < 0 || pipe2(out, O_CLOEXEC) != 0)
        return nf_fail(err, NF_ERR_IO, "cannot set up to run mpirun: %s", strerror(errno));
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    L->pid = fork();
    if (L->pid == 0) { /* the child: only async-signal-safe calls until exec */
        setpgid(0, 0); /* a terminal's Ctrl-C reaches the launcher only, which stops the ranks itself */
        /* fork cleared it already: mpirun must outlive a dying launcher until the ranks have stopped */
        prctl(PR_SET_PDEATHSIG, 0);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        /* mpirun forwards stdin to rank 0, and a background process group reading a terminal is stopped */
        if (null_fd >= 0) dup2(null_fd, 0);
        dup2(out[1], 1);
        execv(L->mpirun, L->argv);
        _exit(127);
    }
    int fork_errno = errno;
    close(out[1]);
    if (null_fd >= 0) close(null_fd);
    L->out_fd = out[0];
    if (L->pid < 0) return nf_fail(err, NF_ERR_IO, "cannot start mpirun: %s", strerror(fork_errno));
    return 0;
}

/* One line of rank 0's stream (ctx: the Launcher): passed on. */
static void relay_line(void *ctx, const char *line, size_t len) {
    Launcher *L = ctx;
    static const char error_start[] = "{\"type\":\"error\""; /* msg_begin writes the type first */
    msg_relay(L->out, line, len);
    L->relayed = true;
    if (len >= sizeof error_start - 1 && memcmp(line, error_start, sizeof error_start - 1) == 0)
        L->relayed_error = true;
}

/* pid's parent; -1 if gone. */
static pid_t parent_of(pid_t pid) {
    int ppid;
    return nf_proc_stat((int)pid, NULL, &ppid) ? (pid_t)ppid : -1;
}

static bool runs_program(pid_t pid, const char *exe) {
    char path[64], target[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return false;
    target[n] = '\0';
    return strcmp(target, exe) == 0;
}

/* A stop signal: SIGINT to every rank here (mpirun's children running this
 * program), or, when there is none (not started yet, or every rank on other
 * hosts), the signal to mpirun, which then ends the job itself. */
static void stop_ranks(Launcher *L, int sig) {
    if (L->reaped) return;
    msg_tee_if_supervised(L->out); /* as train does: the last lines must survive a dying supervisor */
    int found = 0;
    DIR *proc = opendir("/proc");
    for (struct dirent *e; proc && (e = readdir(proc));) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || parent_of((pid_t)pid) != L->pid || !runs_program((pid_t)pid, L->exe)) continue;
        if (kill((pid_t)pid, SIGINT) == 0) found++;
    }
    if (proc) closedir(proc);
    if (found == 0) kill(L->pid, sig);
}

static void take_signals(Launcher *L) {
    struct signalfd_siginfo si;
    while (read(L->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo != SIGCHLD)
            stop_ranks(L, (int)si.ssi_signo);
        else if (!L->reaped && waitpid(L->pid, &L->status, WNOHANG) == L->pid)
            L->reaped = true;
    }
}

/* Relays mpirun's stdout and answers stop signals until mpirun has ended and its stdout is drained. */
static void relay_until_end(Launcher *L) {
    LineReader lines;
    line_reader_init(&lines);
    bool reading = true;
    while (reading || !L->reaped) {
        struct pollfd fds[2] = {{.fd = L->sig_fd, .events = POLLIN}, {.fd = L->out_fd, .events = POLLIN}};
        /* once mpirun is gone, its stdout ends at once unless something it started still holds it */
        int ready = poll(fds, reading ? 2 : 1, L->reaped ? 2000 : -1);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) break;
        if (fds[0].revents) take_signals(L);
        if (reading && fds[1].revents && line_reader_read(&lines, L->out_fd, relay_line, L) <= 0) reading = false;
    }
    line_reader_free(&lines);
    while (!L->reaped && waitpid(L->pid, &L->status, 0) < 0 && errno == EINTR) {
    }
    L->reaped = true;
}

/* mpirun's exit status as this process's; an error when mpirun failed and no rank said why. */
static int finish(const Launcher *L) {
    int code = WIFEXITED(L->status) ? WEXITSTATUS(L->status) : 128 + WTERMSIG(L->status);
    if (code == 0 || L->relayed_error) return code;
    NfError err;
    if (WIFSIGNALED(L->status))
        nf_fail(&err, NF_ERR_DIST, "mpirun -np %d was killed by signal %d", L->processes, WTERMSIG(L->status));
    else
        nf_fail(&err, NF_ERR_DIST, "mpirun -np %d ended with status %d %s (mpirun's own message is on stderr)",
                L->processes, code, L->relayed ? "without an error from the ranks" : "before any rank wrote a message");
    emit_error(L->out, &err);
    return code;
}

int launch_train(const LaunchOptions *l, int argc, char **argv, NfOut *out) {
    Launcher L = {.processes = l->processes, .out = out, .out_fd = -1, .sig_fd = -1};
    NfError err = {0};
    int status;
    if (build_command(&L, l, argc, argv, &err) != 0) {
        status = emit_error(out, &err);
    } else {
        divide_threads(l);
        if (start_mpirun(&L, &err) != 0) {
            status = emit_error(out, &err);
        } else {
            relay_until_end(&L);
            status = finish(&L);
        }
    }
    if (L.out_fd >= 0) close(L.out_fd);
    if (L.sig_fd >= 0) close(L.sig_fd);
    free(L.argv);
    return status;
}
