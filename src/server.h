/* server.h — `neuralforge serve`'s HTTP side (libmicrohttpd, a thread per
 * connection): the request guards (Host, Origin, media types, the token and
 * its session cookie, security headers, connection limits and timeouts),
 * the JSON API of docs/dashboard.md,
 * Server-Sent Events, uploads, downloads and the static front end. Every
 * path it touches is built from the data directory and a validated plain
 * file name; nothing a request says can name a path. */
#ifndef NF_SERVER_H
#define NF_SERVER_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "runner.h"
#include "runqueue.h"
#include "store.h"

typedef struct Server {
    char data_dir[2048];         /* absolute; short enough that every path built from it fits PATH_MAX */
    char web_dir[PATH_MAX + 16]; /* the front end's files: <binary>/../web */
    char token[128];
    char session[40];         /* the session cookie's value: random, made anew by every start */
    unsigned idle_timeout;    /* seconds a connection may stay silent before it is closed */
    char host[64];            /* bound, as given; with the port, the Host a request must name (on loopback) */
    bool check_host;          /* loopback only: a remote bind is reached under names the server cannot know */
    unsigned max_connections; /* all clients together */
    unsigned max_per_client;  /* connections from one IP address */
    Store store;
    Runner runner;
    RunQueue queue;              /* how many runs at once; the rest wait queued */
    int max_trainings, max_jobs; /* serve --max-trainings, --max-jobs (set before server_start) */
    char max_memory[32];         /* serve --max-memory, passed to every training run; "" = train's default */
    int stop_wait;               /* serve --stop-wait: seconds a stop waits for the runs to checkpoint and end */
    struct MHD_Daemon *daemon;
    uint16_t port;          /* bound */
    pthread_mutex_t launch; /* makes "no training run is active" and starting one a single step */
    int lock_fd;            /* D/serve.lock, locked: one server per data directory */
    int listen_fd;          /* the bound socket while it is ours (before libmicrohttpd has it, after quiesce) */
} Server;

/* Locks the data directory (one server each), opens the store, binds host:port, recovers the runs a dead server
 * left, starts the queued ones and serves. The caller sets token, session, idle_timeout and the limits first;
 * max_connections and max_per_client are set here. On failure what it opened is closed again: -1, srv may be
 * freed; -2 (only where serving failed after runs had started), those runs are still ending on threads that use
 * srv, as after server_stop returning false. */
int server_start(Server *srv, const char *host, int port, NfError *err);
/* Stops accepting, stops live runs gracefully (waiting up to stop_wait seconds for them), closes everything.
 * Returns false where runs were still ending when the wait ran out: their threads still use srv, which then
 * stays open (not to be freed) until the process exits; the next server adopts those runs (runner_recover). */
bool server_stop(Server *srv);

#endif
