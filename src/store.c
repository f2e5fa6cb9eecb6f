/* store.c — the dashboard's SQLite database (see store.h). */
#include "store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static const char *SCHEMA =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS projects("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL, model TEXT, tokenizer TEXT NOT NULL,"
    "  options TEXT NOT NULL, created_at REAL NOT NULL);"
    "CREATE TABLE IF NOT EXISTS runs("
    "  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,"
    "  pid INTEGER, args TEXT NOT NULL, output TEXT, created_at REAL NOT NULL, started_at REAL, ended_at REAL,"
    "  exit_code INTEGER NOT NULL DEFAULT -1, error TEXT, stop_requested INTEGER NOT NULL DEFAULT 0,"
    "  messages INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS runs_by_project ON runs(project_id, id);"
    "CREATE TABLE IF NOT EXISTS messages("
    "  run_id INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, json TEXT NOT NULL,"
    "  PRIMARY KEY(run_id, seq));"
    "CREATE INDEX IF NOT EXISTS messages_by_type ON messages(run_id, type, seq);";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int store_open(Store *s, const char *path, NfError *err) {
    memset(s, 0, sizeof *s);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        nf_fail(err, NF_ERR_IO, "cannot open database '%s': %s", path, s->db ? sqlite3_errmsg(s->db) : "no memory");
        sqlite3_close(s->db);
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(s->db, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        nf_fail(err, NF_ERR_IO, "cannot set up database '%s': %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(s->db);
        return -1;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    return 0;
}

void store_close(Store *s) {
    if (!s->db) return;
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
    memset(s, 0, sizeof *s);
}

static void changed(Store *s) { /* with the lock held */
    s->generation++;
    pthread_cond_broadcast(&s->changed);
}

void store_wait(Store *s, uint64_t *seen, int timeout_ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->lock);
    while (s->generation == *seen)
        if (pthread_cond_timedwait(&s->changed, &s->lock, &until) == ETIMEDOUT) break;
    *seen = s->generation;
    pthread_mutex_unlock(&s->lock);
}

/* Prepares sql with the lock held; the caller finalizes and unlocks. */
static sqlite3_stmt *prepare(Store *s, const char *sql) {
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&s->lock);
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    return st;
}

static void finish(Store *s, sqlite3_stmt *st) {
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static char *column_dup(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

/* ---- projects ------------------------------------------------------------------ */

int64_t store_project_create(Store *s, const char *name, const char *model, const char *tokenizer, const char *options) {
    sqlite3_stmt *st = prepare(s, "INSERT INTO projects(name, model, tokenizer, options, created_at) VALUES(?,?,?,?,?)");
    if (!st) return -1;
    bind_text(st, 1, name);
    bind_text(st, 2, model);
    bind_text(st, 3, tokenizer);
    bind_text(st, 4, options);
    sqlite3_bind_double(st, 5, now_s());
    int64_t id = sqlite3_step(st) == SQLITE_DONE ? sqlite3_last_insert_rowid(s->db) : -1;
    finish(s, st);
    return id;
}

int store_project_update(Store *s, int64_t id, const char *name, bool set_model, const char *model,
                         const char *tokenizer, const char *options) {
    sqlite3_stmt *st = prepare(s, "UPDATE projects SET name = coalesce(?, name),"
                                  " model = CASE WHEN ? THEN ? ELSE model END, tokenizer = coalesce(?, tokenizer),"
                                  " options = coalesce(?, options) WHERE id = ?");
    if (!st) return -1;
    bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, set_model);
    bind_text(st, 3, model);
    bind_text(st, 4, tokenizer);
    bind_text(st, 5, options);
    sqlite3_bind_int64(st, 6, id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    finish(s, st);
    return rc;
}

int store_project_delete(Store *s, int64_t id) {
    pthread_mutex_lock(&s->lock);
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN; DELETE FROM messages WHERE run_id IN (SELECT id FROM runs WHERE project_id = %lld);"
             "DELETE FROM runs WHERE project_id = %lld; DELETE FROM projects WHERE id = %lld; COMMIT;",
             (long long)id, (long long)id, (long long)id);
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    if (rc != 0) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

bool store_project_get(Store *s, int64_t id, ProjectRow *p) {
    memset(p, 0, sizeof *p);
    sqlite3_stmt *st = prepare(s, "SELECT id, name, model, tokenizer, options, created_at FROM projects WHERE id = ?");
    if (!st) return false;
    sqlite3_bind_int64(st, 1, id);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    if (found) {
        p->id = sqlite3_column_int64(st, 0);
        p->name = column_dup(st, 1);
        p->model = column_dup(st, 2);
        p->tokenizer = column_dup(st, 3);
        p->options = column_dup(st, 4);
        p->created_at = sqlite3_column_double(st, 5);
    }
    finish(s, st);
    return found;
}

void project_row_free(ProjectRow *p) {
    free(p->name), free(p->model), free(p->tokenizer), free(p->options);
    memset(p, 0, sizeof *p);
}

static int64_t *collect_ids(Store *s, sqlite3_stmt *st, int *n) {
    int cap = 16;
    int64_t *ids = malloc((size_t)cap * sizeof *ids);
    *n = 0;
    while (ids && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            int64_t *grown = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!grown) {
                free(ids);
                ids = NULL;
                break;
            }
            ids = grown;
        }
        ids[(*n)++] = sqlite3_column_int64(st, 0);
    }
    finish(s, st);
    if (!ids) *n = 0;
    return ids;
}

int64_t *store_project_ids(Store *s, int *n) {
    sqlite3_stmt *st = prepare(s, "SELECT id FROM projects ORDER BY id");
    *n = 0;
    return st ? collect_ids(s, st, n) : NULL;
}

/* ---- runs ---------------------------------------------------------------------- */

bool run_status_active(const char *status) {
    return strcmp(status, "queued") == 0 || strcmp(status, "starting") == 0 || strcmp(status, "running") == 0 || strcmp(status, "restarting") == 0;
}

int64_t store_run_create(Store *s, int64_t project_id, const char *kind, const char *args, const char *output) {
    sqlite3_stmt *st = prepare(s, "INSERT INTO runs(project_id, kind, status, args, output, created_at)"
                                  " VALUES(?,?,'queued',?,?,?)"); /* runqueue.c starts it */
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, project_id);
    bind_text(st, 2, kind);
    bind_text(st, 3, args);
    bind_text(st, 4, output);
    sqlite3_bind_double(st, 5, now_s());
    int64_t id = sqlite3_step(st) == SQLITE_DONE ? sqlite3_last_insert_rowid(s->db) : -1;
    if (id > 0) changed(s);
    finish(s, st);
    return id;
}

bool store_run_get(Store *s, int64_t id, RunRow *r) {
    memset(r, 0, sizeof *r);
    sqlite3_stmt *st = prepare(s, "SELECT id, project_id, kind, status, pid, args, output, created_at, started_at,"
                                  " ended_at, exit_code, error, stop_requested, messages FROM runs WHERE id = ?");
    if (!st) return false;
    sqlite3_bind_int64(st, 1, id);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    if (found) {
        r->id = sqlite3_column_int64(st, 0);
        r->project_id = sqlite3_column_int64(st, 1);
        snprintf(r->kind, sizeof r->kind, "%s", (const char *)sqlite3_column_text(st, 2));
        snprintf(r->status, sizeof r->status, "%s", (const char *)sqlite3_column_text(st, 3));
        r->pid = sqlite3_column_int64(st, 4);
        r->args = column_dup(st, 5);
        r->output = column_dup(st, 6);
        r->created_at = sqlite3_column_double(st, 7);
        r->started_at = sqlite3_column_double(st, 8);
        r->ended_at = sqlite3_column_double(st, 9);
        r->exit_code = sqlite3_column_int64(st, 10);
        r->error = column_dup(st, 11);
        r->stop_requested = sqlite3_column_int(st, 12) != 0;
        r->messages = sqlite3_column_int64(st, 13);
    }
    finish(s, st);
    return found;
}

void run_row_free(RunRow *r) {
    free(r->args), free(r->output), free(r->error);
    memset(r, 0, sizeof *r);
}

static int run_exec(Store *s, sqlite3_stmt *st) {
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    if (rc == 0) changed(s);
    finish(s, st);
    return rc;
}

int store_run_started(Store *s, int64_t id, int64_t pid) {
    sqlite3_stmt *st = prepare(s, "UPDATE runs SET pid = ?, status = 'starting', started_at = ?, ended_at = NULL,"
                                  " exit_code = -1, error = NULL, stop_requested = 0 WHERE id = ?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_double(st, 2, now_s());
    sqlite3_bind_int64(st, 3, id);
    return run_exec(s, st);
}

static int run_set_text(Store *s, int64_t id, const char *sql, const char *text) {
    sqlite3_stmt *st = prepare(s, sql);
    if (!st) return -1;
    bind_text(st, 1, text);
    sqlite3_bind_int64(st, 2, id);
    return run_exec(s, st);
}

int store_run_set_args(Store *s, int64_t id, const char *args) {
    return run_set_text(s, id, "UPDATE runs SET args = ? WHERE id = ?", args);
}

int store_run_set_output(Store *s, int64_t id, const char *output) {
    return run_set_text(s, id, "UPDATE runs SET output = ? WHERE id = ?", output);
}

int store_run_status(Store *s, int64_t id, const char *status) {
    sqlite3_stmt *st = prepare(s, "UPDATE runs SET status = ? WHERE id = ? AND status <> ?");
    if (!st) return -1;
    bind_text(st, 1, status);
    sqlite3_bind_int64(st, 2, id);
    bind_text(st, 3, status);
    return run_exec(s, st);
}

int store_run_request_stop(Store *s, int64_t id) {
    sqlite3_stmt *st = prepare(s, "UPDATE runs SET stop_requested = 1 WHERE id = ?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    return run_exec(s, st);
}

int store_run_ended(Store *s, int64_t id, const char *status, int64_t exit_code, const char *error) {
    sqlite3_stmt *st = prepare(s, "UPDATE runs SET status = ?, exit_code = ?, error = ?, ended_at = ? WHERE id = ?");
    if (!st) return -1;
    bind_text(st, 1, status);
    sqlite3_bind_int64(st, 2, exit_code);
    bind_text(st, 3, error);
    sqlite3_bind_double(st, 4, now_s());
    sqlite3_bind_int64(st, 5, id);
    return run_exec(s, st);
}

int64_t *store_run_ids(Store *s, int64_t project_id, bool active_only, int *n) {
    sqlite3_stmt *st = active_only
                           ? prepare(s, "SELECT id FROM runs WHERE status IN ('starting','running','restarting') ORDER BY id")
                           : prepare(s, "SELECT id FROM runs WHERE project_id = ? ORDER BY id DESC");
    *n = 0;
    if (!st) return NULL;
    if (!active_only) sqlite3_bind_int64(st, 1, project_id);
    return collect_ids(s, st, n);
}

int64_t *store_run_ids_with_status(Store *s, const char *status, int *n) {
    sqlite3_stmt *st = prepare(s, "SELECT id FROM runs WHERE status = ? ORDER BY id");
    *n = 0;
    if (!st) return NULL;
    bind_text(st, 1, status);
    return collect_ids(s, st, n);
}

/* ---- messages ------------------------------------------------------------------ */

int store_message_add(Store *s, int64_t run_id, const char *type, const char *json, size_t len) {
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL, *count = NULL;
    int rc = -1;
    if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(s->db, "UPDATE runs SET messages = messages + 1 WHERE id = ?", -1, &count, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(s->db,
                           "INSERT INTO messages(run_id, seq, type, json)"
                           " SELECT ?1, messages + 1, ?2, ?3 FROM runs WHERE id = ?1",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_text(st, 2, type, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, json, (int)len, SQLITE_TRANSIENT);
        sqlite3_bind_int64(count, 1, run_id);
        if (sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(s->db) == 1 && sqlite3_step(count) == SQLITE_DONE) rc = 0;
    }
    sqlite3_finalize(st);
    sqlite3_finalize(count);
    sqlite3_exec(s->db, rc == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
    if (rc == 0) changed(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int64_t store_messages_each(Store *s, int64_t run_id, int64_t since, const char *type, int limit,
                            void (*fn)(void *ctx, int64_t seq, const char *json, int len), void *ctx) {
    sqlite3_stmt *st = type ? prepare(s, "SELECT seq, json FROM messages WHERE run_id = ? AND seq > ? AND type = ?"
                                         " ORDER BY seq LIMIT ?")
                            : prepare(s, "SELECT seq, json FROM messages WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?");
    if (!st) return since;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, since);
    if (type) bind_text(st, 3, type);
    sqlite3_bind_int(st, type ? 4 : 3, limit);
    int64_t last = since;
    while (sqlite3_step(st) == SQLITE_ROW) {
        last = sqlite3_column_int64(st, 0);
        fn(ctx, last, (const char *)sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 1));
    }
    finish(s, st);
    return last;
}

char *store_message_latest(Store *s, int64_t run_id, const char *type) {
    sqlite3_stmt *st = prepare(s, "SELECT json FROM messages WHERE run_id = ? AND type = ? ORDER BY seq DESC LIMIT 1");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, run_id);
    bind_text(st, 2, type);
    char *json = sqlite3_step(st) == SQLITE_ROW ? column_dup(st, 0) : NULL;
    finish(s, st);
    return json;
}
