/* cmd_serve.c — `neuralforge serve`: the dashboard. Checks the flags,
 * makes the access token, starts the server (server.c) and waits for
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

int cmd_serve(int argc, char **argv, NfOut *out) {
    int64_t port = 8377;
    const char *host = "127.0.0.1", *data_dir = "neuralforge-data", *token = NULL;
    bool allow_remote = false;
    int64_t max_trainings = 1, max_jobs = 2;
    const char *max_memory = NULL;
    ArgSpec specs[] = {
        {"port", ARG_INT, &port, 0, 65535, .help = "TCP port (default 8377; 0 = any free port)"},
        {"host", ARG_STRING, &host, .help = "IPv4 address to bind (default 127.0.0.1)"},
        {"allow-remote", ARG_FLAG, &allow_remote, .help = "permit a --host beyond loopback (the token is then all that guards it)"},
        {"data-dir", ARG_STRING, &data_dir, .help = "where projects, runs and the database live (default ./neuralforge-data)"},
        {"token", ARG_STRING, &token, .help = "the access token, 16 to 100 characters (default: random)"},
        {"max-trainings", ARG_INT, &max_trainings, 1, 64, .help = "training runs at once; more wait queued (default 1)"},
        {"max-jobs", ARG_INT, &max_jobs, 1, 64, .help = "generate, tokenize and export runs at once; more wait queued (default 2)"},
        {"max-memory", ARG_STRING, &max_memory, .help = "memory budget of each training run, as train --max-memory (default 80% of the machine's)"},
    };
    int n_specs = (int)(sizeof specs / sizeof specs[0]);
    NfError err = {0};
    int parsed = args_parse_command("serve", "Serves the web dashboard: projects, live training, generation, export.",
                                    specs, n_specs, argc, argv, &err);
    if (parsed == ARGS_HELP) return 0;
    if (parsed == ARGS_ERROR) return emit_error(out, &err);
    if (!is_loopback(host) && !allow_remote) {
        nf_fail(&err, NF_ERR_USAGE, "--host %s is reachable from other machines: add --allow-remote to mean it", host);
        return emit_error(out, &err);
    }
    if (token && (strlen(token) < 16 || strlen(token) > 100)) {
        nf_fail(&err, NF_ERR_USAGE, "--token must be 16 to 100 characters");
        return emit_error(out, &err);
    }
    uint64_t budget;
    if (max_memory && budget_parse_size(max_memory, "max-memory", &budget, &err) != 0) return emit_error(out, &err);
    Server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        nf_fail(&err, NF_ERR_MEMORY, "out of memory");
        return emit_error(out, &err);
    }
    srv->max_trainings = (int)max_trainings;
    srv->max_jobs = (int)max_jobs;
    if (max_memory && budget == 0) snprintf(srv->max_memory, sizeof srv->max_memory, "none");
    else if (max_memory) snprintf(srv->max_memory, sizeof srv->max_memory, "%llu", (unsigned long long)budget);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(srv->web_dir, sizeof srv->web_dir, "%s/../web", exe); /* build/neuralforge -> web/ */
    char abs[PATH_MAX];
    if (mkdir(data_dir, 0755) != 0 && errno != EEXIST)
        nf_fail(&err, NF_ERR_IO, "cannot create --data-dir '%s': %s", data_dir, strerror(errno));
    else if (!realpath(data_dir, abs))
        nf_fail(&err, NF_ERR_IO, "cannot open --data-dir '%s'", data_dir);
    else if (strlen(abs) >= sizeof srv->data_dir)
        nf_fail(&err, NF_ERR_USAGE, "--data-dir: its absolute path is longer than %zu bytes", sizeof srv->data_dir - 1);
    else {
        memcpy(srv->data_dir, abs, strlen(abs) + 1);
        if (token) snprintf(srv->token, sizeof srv->token, "%s", token);
        else random_token(srv->token, sizeof srv->token, &err);
    }
    /* the signals are blocked before any thread starts, so every thread inherits the mask and sigwait gets them */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (err.code || server_start(srv, host, (int)port, &err) != 0) {
        free(srv);
        return emit_error(out, &err);
    }
    char url[512];
    snprintf(url, sizeof url, "http://%s:%u/?token=%s", host, srv->port, srv->token);
    JsonBuf j;
    msg_begin(&j, "serve");
    json_string(&j, "url", url);
    json_string(&j, "host", host);
    json_int(&j, "port", srv->port);
    json_string(&j, "data_dir", srv->data_dir);
    msg_emit(out, &j);
    nf_log("NeuralForge dashboard: %s", url);
    int sig;
    sigwait(&stop, &sig);
    nf_log("serve: stopping (runs are stopped gracefully)");
    server_stop(srv);
    free(srv);
    return 0;
}
