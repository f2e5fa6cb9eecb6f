/* store.c — the dashboard's SQLite database (see store.h): its schema and migrations, and the
 * policy that keeps it small. Every value is bound, every SQLite call checked; a failure is
 * logged with SQLite's reason and returned to the caller. */
#include "store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "protocol.h"
#include "util.h"

/* Schema versions, in PRAGMA user_version: 0 is the first schema (ids could be reused), 1 gives
 * projects and runs AUTOINCREMENT ids. A newer database than this code knows is refused. */
enum { SCHEMA_VERSION = 1 };

/* Version 1's tables. AUTOINCREMENT: an id is never handed out twice, even after its row is
 * deleted, so a new project or run can never inherit a deleted one's directory or log. */
static const char *TABLES =
    "CREATE TABLE projects("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, model TEXT, tokenizer TEXT NOT NULL,"
    "  options TEXT NOT NULL, created_at REAL NOT NULL);"
    "CREATE TABLE runs("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, project_id INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,"
    "  pid INTEGER, args TEXT NOT NULL, output TEXT, created_at REAL NOT NULL, started_at REAL, ended_at REAL,"
    "  exit_code INTEGER NOT NULL DEFAULT -1, error TEXT, stop_requested INTEGER NOT NULL DEFAULT 0,"
    "  messages INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX runs_by_project ON runs(project_id, id);"
    "CREATE TABLE IF NOT EXISTS messages("
    "  run_id INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, json TEXT NOT NULL,"
    "  PRIMARY KEY(run_id, seq));"
    "CREATE INDEX IF NOT EXISTS messages_by_type ON messages(run_id, type, seq);";

/* Version 0 -> 1: SQLite cannot add AUTOINCREMENT to a table, so projects and runs are rebuilt
 * (messages is kept as it is); their rows keep their ids, and the sequences start at the largest. */
static const char *MIGRATE_V0_BEFORE = "ALTER TABLE projects RENAME TO projects_v0;"
                                       "ALTER TABLE runs RENAME TO runs_v0;"
                                       "DROP INDEX IF EXISTS runs_by_project;";
static const char *MIGRATE_V0_AFTER =
    "INSERT INTO projects(id, name, model, tokenizer, options, created_at)"
    "  SELECT id, name, model, tokenizer, options, created_at FROM projects_v0;"
    "INSERT INTO runs(id, project_id, kind, status, pid, args, output, created_at, started_at, ended_at, exit_code,"
    "                 error, stop_requested, messages)"
    "  SELECT id, project_id, kind, status, pid, args, output, created_at, started_at, ended_at, exit_code,"
    "         error, stop_requested, messages FROM runs_v0;"
    "DROP TABLE projects_v0;"
    "DROP TABLE runs_v0;";

/* The policy that keeps nf.db small. A training run writes a `step` and `accum` `batch`
 * messages per optimizer step (thousands a minute for a small model); every other type is rare
 * and always kept. Of the step and batch messages a run keeps
 *   - every one of its first KEEP_FIRST steps,
 *   - every one of its latest KEEP_RECENT steps (up to THIN_EVERY more between two passes),
 *     so the live view, the "last 1000 steps" chart and the newest step are all there, and
 *   - in between, those of steps on an even grid: multiples of a power of two, the smallest that
 *     leaves at most KEEP_SPREAD steps; as the run grows the grid coarsens, halving what it held.
 * So a run never stores more than about 3,500 steps' messages, whatever its length, and those
 * still span it evenly from the first step to the last. A pass runs every THIN_EVERY steps;
 * the pages it frees are reused by the next messages. */
enum { KEEP_FIRST = 1000, KEEP_RECENT = 1000, KEEP_SPREAD = 1000, THIN_EVERY = 500 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Logs a failed SQLite call with SQLite's reason; returns -1, for `return failed(...)`. */
static int failed(Store *s, const char *what) {
    nf_log("store: %s failed: %s", what, sqlite3_errmsg(s->db));
    return -1;
}

/* sqlite3_exec with the failure logged: 0 or -1. */
static int exec(Store *s, const char *sql, const char *what) {
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    nf_log("store: %s failed: %s", what, msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg);
    return -1;
}

/* Runs statements in one transaction, rolled back if any fails: 0 or -1. */
static int exec_transaction(Store *s, const char *const *sql, int n, const char *what) {
    if (exec(s, "BEGIN IMMEDIATE", what) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (exec(s, sql[i], what) != 0) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    return exec(s, "COMMIT", what);
}

/* A single integer from sql (no parameters), or -1. */
static int64_t query_int(Store *s, const char *sql) {
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        failed(s, sql);
    sqlite3_finalize(st);
    return v;
}

/* Brings the database to SCHEMA_VERSION: creates it, or migrates the first schema. */
static int schema_upgrade(Store *s, const char *path, NfError *err) {
    int64_t version = query_int(s, "PRAGMA user_version");
    int64_t tables = query_int(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'projects'");
    if (version < 0 || tables < 0) return nf_fail(err, NF_ERR_IO, "cannot read database '%s'", path);
    if (version > SCHEMA_VERSION)
        return nf_fail(err, NF_ERR_IO, "database '%s' has schema version %lld, newer than this program's %d", path,
                       (long long)version, SCHEMA_VERSION);
    char set_version[64];
    snprintf(set_version, sizeof set_version, "PRAGMA user_version = %d", SCHEMA_VERSION);
    /* pages freed by deletes (a project's messages) go back to the file system; this must be set
     * before the first table exists, or be followed by a VACUUM */
    bool fresh = version == 0 && tables == 0;
    if (fresh && exec(s, "PRAGMA auto_vacuum = INCREMENTAL", "setting auto_vacuum") != 0)
        return nf_fail(err, NF_ERR_IO, "cannot set up database '%s'", path);
    if (exec(s,
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
             /* a checkpoint resets the WAL; this also truncates the file, so it does not keep its peak size */
             "PRAGMA journal_size_limit = 4194304;",
             "setting the journal mode") != 0)
        return nf_fail(err, NF_ERR_IO, "cannot set up database '%s'", path);
    if (version == SCHEMA_VERSION) return 0;
    const char *create[] = {TABLES, set_version};
    const char *migrate[] = {MIGRATE_V0_BEFORE, TABLES, MIGRATE_V0_AFTER, set_version};
    if (fresh ? exec_transaction(s, create, 2, "creating the tables")
              : exec_transaction(s, migrate, 4, "migrating the database to schema version 1"))
        return nf_fail(err, NF_ERR_IO, "cannot set up database '%s': %s", path, sqlite3_errmsg(s->db));
    if (!fresh) {
        nf_log("store: migrated '%s' to schema version %d", path, SCHEMA_VERSION);
        /* not essential: only lets later deletes give their space back */
        exec(s, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM", "vacuuming the migrated database");
    }
    return 0;
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
    if (schema_upgrade(s, path, err) != 0) {
        sqlite3_close(s->db);
        s->db = NULL;
        return -1;
    }
    pthread_mutex_init(&s->lock, NULL);
    nf_cond_init_monotonic(&s->changed);
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
    struct timespec until = nf_deadline_ms(timeout_ms);
    pthread_mutex_lock(&s->lock);
    while (s->generation == *seen)
        if (pthread_cond_timedwait(&s->changed, &s->lock, &until) == ETIMEDOUT) break;
    *seen = s->generation;
    pthread_mutex_unlock(&s->lock);
}

/* Compiles sql and binds its parameters, in order, as `types` says: 't' text (a NULL pointer
 * binds NULL), 'i' int64_t, 'd' double. With the lock held; NULL (logged) on any failure. */
static sqlite3_stmt *vcompile(Store *s, const char *sql, const char *types, va_list ap) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        failed(s, "preparing a statement");
        return NULL;
    }
    /* more values than the statement has parameters is this file's bug: caught before a wrong
     * va_arg reads one */
    int rc = (int)strlen(types) <= sqlite3_bind_parameter_count(st) ? SQLITE_OK : SQLITE_RANGE;
    for (int i = 0; types[i] && rc == SQLITE_OK; i++) {
        if (types[i] == 't') {
            const char *v = va_arg(ap, const char *);
            rc = v ? sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i')
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        else
            rc = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
    }
    if (rc != SQLITE_OK) {
        failed(s, "binding a value");
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static sqlite3_stmt *compile(Store *s, const char *sql, const char *types, ...) {
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = vcompile(s, sql, types, ap);
    va_end(ap);
    return st;
}

/* compile() taking the lock: it stays held when a statement comes back (finish() releases it),
 * and is released when NULL does. */
static sqlite3_stmt *prepare(Store *s, const char *sql, const char *types, ...) {
    pthread_mutex_lock(&s->lock);
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = vcompile(s, sql, types, ap);
    va_end(ap);
    if (!st) pthread_mutex_unlock(&s->lock);
    return st;
}

static void finish(Store *s, sqlite3_stmt *st) {
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
}

/* Steps a statement that returns no rows: 0, or -1 logged. */
static int step_done(Store *s, sqlite3_stmt *st, const char *what) {
    return sqlite3_step(st) == SQLITE_DONE ? 0 : failed(s, what);
}

/* Steps a statement that returns at most one row: 1 a row, 0 none, -1 logged. */
static int step_row(Store *s, sqlite3_stmt *st, const char *what) {
    int rc = sqlite3_step(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : failed(s, what);
}

static char *column_dup(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

/* ---- projects ------------------------------------------------------------------ */

int64_t store_project_create(Store *s, const char *name, const char *model, const char *tokenizer,
                             const char *options) {
    sqlite3_stmt *st = prepare(s, "INSERT INTO projects(name, model, tokenizer, options, created_at) VALUES(?,?,?,?,?)",
                               "ttttd", name, model, tokenizer, options, now_s());
    if (!st) return -1;
    int64_t id = step_done(s, st, "creating a project") == 0 ? sqlite3_last_insert_rowid(s->db) : -1;
    finish(s, st);
    return id;
}

int store_project_update(Store *s, int64_t id, const char *name, bool set_model, const char *model,
                         const char *tokenizer, const char *options) {
    sqlite3_stmt *st = prepare(s,
                               "UPDATE projects SET name = coalesce(?, name),"
                               " model = CASE WHEN ? THEN ? ELSE model END, tokenizer = coalesce(?, tokenizer),"
                               " options = coalesce(?, options) WHERE id = ?",
                               "tittti", name, (int64_t)set_model, model, tokenizer, options, id);
    if (!st) return -1;
    int rc = step_done(s, st, "updating a project");
    finish(s, st);
    return rc;
}

/* Steps st to its end, collecting column 0 of each row (malloc'd; *n); NULL (logged) on failure. */
static int64_t *read_ids(Store *s, sqlite3_stmt *st, int *n) {
    int rc = SQLITE_DONE;
    size_t cap = 16;
    int64_t *ids = malloc(cap * sizeof *ids);
    *n = 0;
    while (ids && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!nf_grow((void **)&ids, &cap, (size_t)*n + 1, sizeof *ids, 16)) break;
        ids[(*n)++] = sqlite3_column_int64(st, 0);
    }
    if (!ids || rc != SQLITE_DONE) {
        if (ids) failed(s, "reading ids");
        free(ids);
        ids = NULL;
        *n = 0;
    }
    return ids;
}

int store_project_delete(Store *s, int64_t id, int64_t **run_ids, int *n_runs) {
    *run_ids = NULL;
    *n_runs = 0;
    pthread_mutex_lock(&s->lock);
    static const char *const sql[] = {
        "DELETE FROM messages WHERE run_id IN (SELECT id FROM runs WHERE project_id = ?)",
        "DELETE FROM runs WHERE project_id = ?",
        "DELETE FROM projects WHERE id = ?",
    };
    int rc = exec(s, "BEGIN IMMEDIATE", "deleting a project");
    if (rc == 0) { /* the runs as they are in this transaction, so none is missed */
        sqlite3_stmt *st = compile(s, "SELECT id FROM runs WHERE project_id = ? ORDER BY id", "i", id);
        *run_ids = st ? read_ids(s, st, n_runs) : NULL;
        sqlite3_finalize(st);
        if (!*run_ids) rc = -1;
    }
    for (int i = 0; rc == 0 && i < 3; i++) {
        sqlite3_stmt *st = compile(s, sql[i], "i", id);
        rc = st ? step_done(s, st, "deleting a project") : -1;
        sqlite3_finalize(st);
    }
    if (rc == 0) rc = exec(s, "COMMIT", "deleting a project");
    if (rc != 0) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        free(*run_ids);
        *run_ids = NULL;
        *n_runs = 0;
    } else /* gives the freed pages back to the file system: not essential */
        exec(s, "PRAGMA incremental_vacuum", "returning free pages");
    pthread_mutex_unlock(&s->lock);
    return rc;
}

bool store_project_get(Store *s, int64_t id, ProjectRow *p) {
    memset(p, 0, sizeof *p);
    sqlite3_stmt *st =
        prepare(s, "SELECT id, name, model, tokenizer, options, created_at FROM projects WHERE id = ?", "i", id);
    if (!st) return false;
    bool found = step_row(s, st, "reading a project") == 1;
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
    int64_t *ids = read_ids(s, st, n);
    finish(s, st);
    return ids;
}

int64_t *store_project_ids(Store *s, int *n) {
    sqlite3_stmt *st = prepare(s, "SELECT id FROM projects ORDER BY id", "");
    *n = 0;
    return st ? collect_ids(s, st, n) : NULL;
}

/* ---- runs ---------------------------------------------------------------------- */

bool run_status_active(const char *status) {
    return strcmp(status, "queued") == 0 || strcmp(status, "starting") == 0 || strcmp(status, "running") == 0 ||
           strcmp(status, "restarting") == 0;
}

int64_t store_run_create(Store *s, int64_t project_id, const char *kind, const char *args, const char *output) {
    sqlite3_stmt *st = prepare(s,
                               "INSERT INTO runs(project_id, kind, status, args, output, created_at)"
                               " VALUES(?,?,'queued',?,?,?)", /* runqueue.c starts it */
                               "itttd", project_id, kind, args, output, now_s());
    if (!st) return -1;
    int64_t id = step_done(s, st, "creating a run") == 0 ? sqlite3_last_insert_rowid(s->db) : -1;
    if (id > 0) changed(s);
    finish(s, st);
    return id;
}

int store_runs_reserve(Store *s, int64_t above) {
    pthread_mutex_lock(&s->lock);
    /* sqlite_sequence has the runs row only once a run was inserted; it may be written like any table */
    static const char *const sql[] = {
        "INSERT INTO sqlite_sequence(name, seq) SELECT 'runs', 0"
        " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'runs')",
        "UPDATE sqlite_sequence SET seq = ? WHERE name = 'runs' AND seq < ?",
    };
    int rc = exec(s, "BEGIN IMMEDIATE", "reserving run ids");
    for (int i = 0; rc == 0 && i < 2; i++) {
        sqlite3_stmt *st = compile(s, sql[i], i == 0 ? "" : "ii", above, above);
        rc = st ? step_done(s, st, "reserving run ids") : -1;
        sqlite3_finalize(st);
    }
    if (rc == 0) rc = exec(s, "COMMIT", "reserving run ids");
    if (rc != 0) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

bool store_run_get(Store *s, int64_t id, RunRow *r) {
    memset(r, 0, sizeof *r);
    sqlite3_stmt *st = prepare(s,
                               "SELECT id, project_id, kind, status, pid, args, output, created_at, started_at,"
                               " ended_at, exit_code, error, stop_requested, messages FROM runs WHERE id = ?",
                               "i", id);
    if (!st) return false;
    bool found = step_row(s, st, "reading a run") == 1;
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
    if (!st) return -1;
    int rc = step_done(s, st, "updating a run");
    if (rc == 0) changed(s);
    finish(s, st);
    return rc;
}

int store_run_started(Store *s, int64_t id, int64_t pid) {
    return run_exec(s, prepare(s,
                               "UPDATE runs SET pid = ?, status = 'starting', started_at = ?, ended_at = NULL,"
                               " exit_code = -1, error = NULL, stop_requested = 0 WHERE id = ?",
                               "idi", pid, now_s(), id));
}

int store_run_set_args(Store *s, int64_t id, const char *args) {
    return run_exec(s, prepare(s, "UPDATE runs SET args = ? WHERE id = ?", "ti", args, id));
}

int store_run_set_output(Store *s, int64_t id, const char *output) {
    return run_exec(s, prepare(s, "UPDATE runs SET output = ? WHERE id = ?", "ti", output, id));
}

int store_run_status(Store *s, int64_t id, const char *status) {
    return run_exec(s,
                    prepare(s, "UPDATE runs SET status = ? WHERE id = ? AND status <> ?", "tit", status, id, status));
}

int store_run_request_stop(Store *s, int64_t id) {
    return run_exec(s, prepare(s, "UPDATE runs SET stop_requested = 1 WHERE id = ?", "i", id));
}

int store_run_ended(Store *s, int64_t id, const char *status, int64_t exit_code, const char *error) {
    return run_exec(s, prepare(s, "UPDATE runs SET status = ?, exit_code = ?, error = ?, ended_at = ? WHERE id = ?",
                               "titdi", status, exit_code, error, now_s(), id));
}

int64_t *store_run_ids(Store *s, int64_t project_id, bool active_only, int *n) {
    sqlite3_stmt *st =
        active_only
            ? prepare(s, "SELECT id FROM runs WHERE status IN ('starting','running','restarting') ORDER BY id", "")
            : prepare(s, "SELECT id FROM runs WHERE project_id = ? ORDER BY id DESC", "i", project_id);
    *n = 0;
    return st ? collect_ids(s, st, n) : NULL;
}

int64_t *store_run_ids_with_status(Store *s, const char *status, int *n) {
    sqlite3_stmt *st = prepare(s, "SELECT id FROM runs WHERE status = ? ORDER BY id", "t", status);
    *n = 0;
    return st ? collect_ids(s, st, n) : NULL;
}

/* ---- messages ------------------------------------------------------------------ */

/* Stores one message as the run's next sequence number; with the lock held. */
static int message_insert(Store *s, int64_t run_id, const char *type, const char *json, size_t len) {
    if (exec(s, "BEGIN", "storing a message") != 0) return -1;
    sqlite3_stmt *st = compile(s,
                               "INSERT INTO messages(run_id, seq, type, json)"
                               " SELECT ?1, messages + 1, ?2, ?3 FROM runs WHERE id = ?1",
                               "it", run_id, type);
    int rc = st && sqlite3_bind_text(st, 3, json, (int)len, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -1;
    if (rc == 0) rc = step_done(s, st, "storing a message");
    if (rc == 0 && sqlite3_changes(s->db) != 1) rc = -1; /* no such run */
    sqlite3_finalize(st);
    if (rc == 0) {
        st = compile(s, "UPDATE runs SET messages = messages + 1 WHERE id = ?", "i", run_id);
        rc = st ? step_done(s, st, "counting a message") : -1;
        sqlite3_finalize(st);
    }
    if (rc == 0) rc = exec(s, "COMMIT", "storing a message");
    if (rc != 0) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* The grid of the thinned middle at the latest step `step`: the smallest power of two that
 * leaves at most KEEP_SPREAD of its steps. */
static int64_t thin_stride(int64_t step) {
    int64_t span = step - KEEP_RECENT - KEEP_FIRST, stride = 1;
    while (span / stride > KEEP_SPREAD) stride *= 2;
    return stride;
}

/* After a `step` message: every THIN_EVERY steps, drops the run's step and batch messages that
 * the policy above no longer keeps. With the lock held. */
static void message_thin(Store *s, int64_t run_id, const char *json, size_t len) {
    sqlite3_stmt *st = compile(s, "SELECT json_extract(?1, '$.step')", "");
    int64_t step = 0;
    if (st && sqlite3_bind_text(st, 1, json, (int)len, SQLITE_STATIC) == SQLITE_OK &&
        step_row(s, st, "reading a step") == 1 && sqlite3_column_type(st, 0) == SQLITE_INTEGER)
        step = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (step <= KEEP_FIRST + KEEP_RECENT || step % THIN_EVERY != 0) return;
    st = compile(s,
                 "DELETE FROM messages WHERE run_id = ?1 AND type IN ('step', 'batch')"
                 " AND json_extract(json, '$.step') BETWEEN ?2 AND ?3 AND json_extract(json, '$.step') % ?4 <> 0",
                 "iiii", run_id, (int64_t)KEEP_FIRST + 1, step - KEEP_RECENT, thin_stride(step));
    if (st) step_done(s, st, "thinning a run's steps"); /* a failure leaves rows, loses none */
    sqlite3_finalize(st);
}

int store_message_add(Store *s, int64_t run_id, const char *type, const char *json, size_t len) {
    pthread_mutex_lock(&s->lock);
    int rc = message_insert(s, run_id, type, json, len);
    if (rc == 0) {
        if (strcmp(type, "step") == 0) message_thin(s, run_id, json, len);
        changed(s);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int64_t store_messages_each(Store *s, int64_t run_id, int64_t since, const char *type, int limit,
                            void (*fn)(void *ctx, int64_t seq, const char *json, int len), void *ctx) {
    sqlite3_stmt *st =
        type ? prepare(s,
                       "SELECT seq, json FROM messages WHERE run_id = ? AND seq > ? AND type = ?"
                       " ORDER BY seq LIMIT ?",
                       "iiti", run_id, since, type, (int64_t)limit)
             : prepare(s, "SELECT seq, json FROM messages WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?", "iii",
                       run_id, since, (int64_t)limit);
    if (!st) return since;
    int64_t last = since;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        last = sqlite3_column_int64(st, 0);
        fn(ctx, last, (const char *)sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 1));
    }
    if (rc != SQLITE_DONE) failed(s, "reading messages");
    finish(s, st);
    return last;
}

char *store_message_latest(Store *s, int64_t run_id, const char *type) {
    sqlite3_stmt *st = prepare(s, "SELECT json FROM messages WHERE run_id = ? AND type = ? ORDER BY seq DESC LIMIT 1",
                               "it", run_id, type);
    if (!st) return NULL;
    char *json = step_row(s, st, "reading a message") == 1 ? column_dup(st, 0) : NULL;
    finish(s, st);
    return json;
}
