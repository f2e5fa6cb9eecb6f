/* server.h — `neuralforge serve`'s HTTP side (libmicrohttpd, a thread per
 * connection): token authentication, the JSON API of docs/dashboard.md,
 * Server-Sent Events, uploads, downloads and the static front end. Every
 * path it touches is built from the data directory and a validated plain
 * file name; nothing a request says can name a path. */
#ifndef NF_SERVER_H
#define NF_SERVER_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#include "error.h"
#include "runner.h"
#include "runqueue.h"
#include "store.h"

typedef struct Server {
    char data_dir[2048];        /* absolute; short enough that every path built from it fits PATH_MAX */
    char web_dir[PATH_MAX + 16]; /* the front end's files: <binary>/../web */
    char token[128];
    Store store;
    Runner runner;
    RunQueue queue;             /* how many runs at once; the rest wait queued */
    int max_trainings, max_jobs; /* serve --max-trainings, --max-jobs (set before server_start) */
    char max_memory[32];        /* serve --max-memory, passed to every training run; "" = train's default */
    struct MHD_Daemon *daemon;
    uint16_t port;              /* bound */
    pthread_mutex_t launch;     /* makes "no training run is active" and starting one a single step */
} Server;

/* Opens the store (recovering runs a dead server left), binds host:port and starts serving. */
int server_start(Server *srv, const char *host, int port, NfError *err);
/* Stops accepting, stops live runs gracefully, closes everything. */
void server_stop(Server *srv);

#endif
