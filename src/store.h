/* store.h — the dashboard's SQLite database (D/nf.db): projects, runs and
 * the NDJSON messages of every run (a long training run's step and batch
 * messages thinned, see store.c). One connection, serialized by a mutex,
 * shared by the HTTP threads and the runner threads; every call is one
 * short transaction. Store also wakes whoever waits for news (the
 * Server-Sent Events streams) when a message or a status is written.
 * Calls that write return 0 or -1 (an id or -1); a failure is logged. */
#ifndef NF_STORE_H
#define NF_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

typedef struct sqlite3 sqlite3;

typedef struct {
    sqlite3 *db;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* broadcast on every new message or status */
    uint64_t generation;    /* counts those changes: waiters compare it */
} Store;

int store_open(Store *s, const char *path, NfError *err);
void store_close(Store *s);

/* Waits until the generation differs from *seen or timeout_ms passes; updates *seen. */
void store_wait(Store *s, uint64_t *seen, int timeout_ms);

/* ---- projects: options is a JSON object's text; model may be NULL ---- */
int64_t store_project_create(Store *s, const char *name, const char *model, const char *tokenizer, const char *options);
/* name/model/tokenizer/options: NULL leaves the field; set_model distinguishes setting model to NULL */
int store_project_update(Store *s, int64_t id, const char *name, bool set_model, const char *model,
                         const char *tokenizer, const char *options);
/* Deletes the project, its runs and their messages in one transaction; *run_ids (malloc'd, *n_runs)
 * gets the ids of the runs deleted, so the caller can remove their files. */
int store_project_delete(Store *s, int64_t id, int64_t **run_ids, int *n_runs);
/* Fields of one project, malloc'd strings (model NULL when from scratch); false if absent. */
typedef struct {
    int64_t id;
    char *name, *model, *tokenizer, *options;
    double created_at;
} ProjectRow;
bool store_project_get(Store *s, int64_t id, ProjectRow *p);
void project_row_free(ProjectRow *p);
/* Ids of every project, oldest first (malloc'd; *n). */
int64_t *store_project_ids(Store *s, int *n);

/* ---- runs ---- */
typedef struct {
    int64_t id, project_id;
    char kind[16], status[16];
    int64_t pid;
    char *args;   /* JSON array of the CLI's words after `neuralforge` */
    char *output; /* export: the file written; NULL otherwise */
    double created_at, started_at, ended_at;
    int64_t exit_code; /* -1 while running or unknown */
    char *error;       /* the CLI's error message, or NULL */
    bool stop_requested;
    int64_t messages; /* how many were received: the last one's sequence number */
} RunRow;
/* A new run is "queued" until runqueue.c starts it. */
int64_t store_run_create(Store *s, int64_t project_id, const char *kind, const char *args, const char *output);
/* Run ids handed out from now on are above `above` (ids whose files may still exist). */
int store_runs_reserve(Store *s, int64_t above);
bool store_run_get(Store *s, int64_t id, RunRow *r);
void run_row_free(RunRow *r);
int store_run_set_args(Store *s, int64_t id, const char *args);
int store_run_set_output(Store *s, int64_t id, const char *output);
int store_run_started(Store *s, int64_t id, int64_t pid);
int store_run_status(Store *s, int64_t id, const char *status);
int store_run_request_stop(Store *s, int64_t id);
int store_run_ended(Store *s, int64_t id, const char *status, int64_t exit_code, const char *error);
/* Run ids of a project (newest first), or of every run with a process (starting, running, restarting). */
int64_t *store_run_ids(Store *s, int64_t project_id, bool active_only, int *n);
/* Run ids with this status, oldest first. */
int64_t *store_run_ids_with_status(Store *s, const char *status, int *n);
/* Not ended: queued, or with a process. */
bool run_status_active(const char *status);

/* ---- messages ---- */
/* Stores a message as the run's next sequence number; a `step` one may thin the run's older
 * step and batch messages (the newest are always kept). */
int store_message_add(Store *s, int64_t run_id, const char *type, const char *json, size_t len);
/* The latest message of a type, malloc'd JSON text, or NULL. */
char *store_message_latest(Store *s, int64_t run_id, const char *type);
/* Calls fn for each message of run_id after seq `since` (of `type` if not NULL; at most limit), in
 * order; returns the last seq seen (or since). */
int64_t store_messages_each(Store *s, int64_t run_id, int64_t since, const char *type, int limit,
                            void (*fn)(void *ctx, int64_t seq, const char *json, int len), void *ctx);

#endif
