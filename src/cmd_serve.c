/* cmd_serve.c — `neuralforge serve`: the dashboard. Checks the flags,
 * sets umask 077, takes the access token (--token-file, --token, $NEURALFORGE_TOKEN or
 * random) and makes the session secret, starts the server (server.c) and waits for
 * SIGINT/SIGTERM, which stop live runs gracefully before it exits. The
 * signals are taken with sigwait, so no handler and no global flag. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "budget.h"
#include "commands.h"
#include "server.h"
#include "util.h"

static bool is_loopback(const char *host) { return strncmp(host, "127.", 4) == 0; }

static int random_token(char *out, size_t cap, NfError *err) {
    unsigned char bytes[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, bytes, sizeof bytes) == (ssize_t)sizeof bytes;
    if (fd >= 0) close(fd);
    if (!ok) return nf_fail(err, NF_ERR_IO, "cannot read /dev/urandom for the access token");
    for (size_t i = 0; i < sizeof bytes && 2 * i + 2 < cap; i++) snprintf(out + 2 * i, 3, "%02x", bytes[i]);
    return 0;
}

/* A token travels in a URL and an Authorization header: 16 to 100 of [A-Za-z0-9._~-]. */
static bool token_valid(const char *t) {
    size_t n = strlen(t);
    if (n < 16 || n > 100) return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= '0' && t[i] <= '9') ||
              strchr("._~-", t[i])))
            return false;
    return true;
}

/* The token from a file only its owner can read (a token others can read guards nothing); one line,
 * its trailing newline dropped. */
static int read_token_file(const char *path, char *out, size_t cap, NfError *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return nf_fail(err, NF_ERR_IO, "--token-file '%s': %s", path, strerror(e));
    }
    ssize_t n = 0;
    if (!S_ISREG(sb.st_mode))
        nf_fail(err, NF_ERR_USAGE, "--token-file '%s' is not a regular file", path);
    else if (sb.st_uid != geteuid())
        nf_fail(err, NF_ERR_USAGE, "--token-file '%s' is not owned by you", path);
    else if (sb.st_mode & 077)
        nf_fail(err, NF_ERR_USAGE, "--token-file '%s' is readable by others (mode %03o): chmod 600 it", path,
                (unsigned)(sb.st_mode & 0777));
    else if ((n = read(fd, out, cap - 1)) < 0)
        nf_fail(err, NF_ERR_IO, "--token-file '%s': %s", path, strerror(errno));
    close(fd);
    if (err->code || n < 0) return -1;
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = '\0';
    if (!token_valid(out))
        return nf_fail(err, NF_ERR_USAGE,
                       "--token-file '%s' must hold one token of 16 to 100 characters "
                       "(letters, digits, '.', '_', '~', '-')",
                       path);
    return 0;
}

/* The token: --token-file, else --token, else $NEURALFORGE_TOKEN, else random. */
static int take_token(const char *flag, const char *file, char *out, size_t cap, NfError *err) {
    if (flag && file) return nf_fail(err, NF_ERR_USAGE, "--token and --token-file: give one of them");
    if (file) return read_token_file(file, out, cap, err);
    const char *env = getenv("NEURALFORGE_TOKEN");
    const char *given = flag ? flag : env && *env ? env : NULL;
    if (!given) return random_token(out, cap, err);
    if (!token_valid(given))
        return nf_fail(err, NF_ERR_USAGE, "%s must be 16 to 100 characters (letters, digits, '.', '_', '~', '-')",
                       flag ? "--token" : "NEURALFORGE_TOKEN");
    snprintf(out, cap, "%s", given);
    return 0;
}

int cmd_serve(int argc, char **argv, NfOut *out) {
    int64_t port = 8377, idle_timeout = 30;
    const char *host = "127.0.0.1", *data_dir = "neuralforge-data", *token = NULL, *token_file = NULL;
    bool allow_remote = false;
    int64_t max_trainings = 1, max_jobs = 2, stop_wait = 60;
    const char *max_memory = NULL;
    ArgSpec specs[] = {
        {"port", ARG_INT, &port, 0, 65535, .help = "TCP port (default 8377; 0 = any free port)"},
        {"host", ARG_STRING, &host, .help = "IPv4 address to bind (default 127.0.0.1)"},
        {"allow-remote", ARG_FLAG, &allow_remote,
         .help = "permit a --host beyond loopback (the token is then all that guards it)"},
        {"data-dir", ARG_STRING, &data_dir,
         .help = "where projects, runs and the database live (default ./neuralforge-data)"},
        {"token-file", ARG_STRING, &token_file, .help = "read the access token from this file (mode 0600, yours)"},
        {"token", ARG_STRING, &token,
         .help = "the access token, 16 to 100 characters; visible to every user in `ps`: "
                 "prefer --token-file or $NEURALFORGE_TOKEN (default: random)"},
        {"idle-timeout", ARG_INT, &idle_timeout, 3, 3600,
         .help = "seconds a connection may stay silent before it is closed (default 30)"},
        {"max-trainings", ARG_INT, &max_trainings, 1, 64,
         .help = "training runs at once; more wait queued (default 1)"},
        {"max-jobs", ARG_INT, &max_jobs, 1, 64,
         .help = "generate, tokenize and export runs at once; more wait queued (default 2)"},
        {"max-memory", ARG_STRING, &max_memory,
         .help = "memory budget of each training run, as train --max-memory (default 80% of the machine's)"},
        {"stop-wait", ARG_INT, &stop_wait, 0, 3600,
         .help = "seconds a stop (Ctrl-C, SIGTERM) waits for the runs to checkpoint and end; runs still ending then "
                 "finish on their own, and the next serve records how they ended (default 60)"},
    };
    int exit_status;
    if (command_parse_flags("serve", "Serves the web dashboard: projects, live training, generation, export.", specs,
                            ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (!is_loopback(host) && !allow_remote) {
        nf_fail(&err, NF_ERR_USAGE, "--host %s is reachable from other machines: add --allow-remote to mean it", host);
        return emit_error(out, &err);
    }
    char tok[128], session[40];
    if (take_token(token, token_file, tok, sizeof tok, &err) != 0 || random_token(session, sizeof session, &err) != 0)
        return emit_error(out, &err);
    uint64_t budget;
    if (max_memory && budget_parse_size(max_memory, "max-memory", &budget, &err) != 0) return emit_error(out, &err);
    Server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        nf_fail(&err, NF_ERR_MEMORY, "out of memory");
        return emit_error(out, &err);
    }
    srv->max_trainings = (int)max_trainings;
    srv->max_jobs = (int)max_jobs;
    srv->stop_wait = (int)stop_wait;
    if (max_memory && budget == 0)
        snprintf(srv->max_memory, sizeof srv->max_memory, "none");
    else if (max_memory)
        snprintf(srv->max_memory, sizeof srv->max_memory, "%llu", (unsigned long long)budget);
    char exe[PATH_MAX];
    nf_self_exe(exe, sizeof exe, NULL); /* "" when unknown: web/ relative to here */
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(srv->web_dir, sizeof srv->web_dir, "%s/../web", exe); /* build/neuralforge -> web/ */
    /* private by default: prompts, data and models are nobody else's business. Everything the
     * server and its runs (which inherit the mask) create is 0700 / 0600 */
    umask(077);
    char abs[PATH_MAX];
    struct stat sb;
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST)
        nf_fail(&err, NF_ERR_IO, "cannot create --data-dir '%s': %s", data_dir, strerror(errno));
    else if (!realpath(data_dir, abs))
        nf_fail(&err, NF_ERR_IO, "cannot open --data-dir '%s'", data_dir);
    else if (strlen(abs) >= sizeof srv->data_dir)
        nf_fail(&err, NF_ERR_USAGE, "--data-dir: its absolute path is longer than %zu bytes", sizeof srv->data_dir - 1);
    else {
        /* a directory made earlier (or by the user) keeps its mode: say so rather than change it */
        if (stat(abs, &sb) == 0 && (sb.st_mode & 077))
            nf_log("serve: warning: --data-dir '%s' is open to other users (mode %03o): chmod 700 it to keep them out",
                   abs, (unsigned)(sb.st_mode & 0777));
        memcpy(srv->data_dir, abs, strlen(abs) + 1);
        memcpy(srv->token, tok, sizeof tok);
        memcpy(srv->session, session, sizeof session);
        srv->idle_timeout = (unsigned)idle_timeout;
    }
    /* the signals are blocked before any thread starts, so every thread inherits the mask and sigwait gets them */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    int started = err.code ? -1 : server_start(srv, host, (int)port, &err);
    if (started != 0) {
        if (started == -1) free(srv); /* -2: threads of the runs it started still use it */
        return emit_error(out, &err);
    }
    char url[512];
    snprintf(url, sizeof url, "http://%s:%u/?token=%s", host, srv->port, srv->token);
    JsonBuf j;
    msg_begin(&j, "serve");
    json_str(&j, "url", url);
    json_str(&j, "host", host);
    json_int(&j, "port", srv->port);
    json_str(&j, "data_dir", srv->data_dir);
    json_int(&j, "idle_timeout", srv->idle_timeout);
    json_int(&j, "max_connections", srv->max_connections);
    json_int(&j, "max_per_client", srv->max_per_client);
    msg_emit(out, &j);
    nf_log("NeuralForge dashboard: %s", url);
    int sig;
    sigwait(&stop, &sig);
    nf_log("serve: stopping (runs are stopped gracefully)");
    if (server_stop(srv))
        free(srv);
    else /* srv stays: the threads that wait on those runs use it until the process ends */
        nf_log("serve: runs still ending after --stop-wait %d s are left to finish; the next serve over this "
               "data directory records how they ended",
               srv->stop_wait);
    return 0;
}
