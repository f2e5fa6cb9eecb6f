/* test_store.c — the dashboard's database (store.c): the thinning of a long
 * run's step and batch messages, ids never reused, the migration of a
 * database of the first schema, and a project's delete naming its runs. */
#include <sqlite3.h>
#include <sys/stat.h>

#include "store.h"
#include "testutil.h"

static char *temp_db(void) {
    char *path = write_temp_file(NULL, 0);
    unlink(path); /* store_open creates it */
    return path;
}

static void remove_db(char *path) {
    char side[600];
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    remove_temp_file(path);
}

static void open_store(Store *s, const char *path) {
    NfError err = {0};
    if (store_open(s, path, &err) != 0) fail_msg("store_open: %s", err.message);
}

typedef struct {
    int64_t steps[8192];
    int n;
} Steps;

static void collect_step(void *ctx, int64_t seq, const char *json, int len) {
    (void)seq, (void)len;
    Steps *st = ctx;
    const char *at = strstr(json, "\"step\":");
    assert_non_null(at);
    assert_true(st->n < 8192);
    st->steps[st->n++] = atoll(at + 7);
}

static void add(Store *s, int64_t run, const char *type, const char *fmt, int64_t step) {
    char json[256];
    int n = snprintf(json, sizeof json, fmt, step);
    assert_int_equal(store_message_add(s, run, type, json, (size_t)n), 0);
}

/* A 20,000-step run keeps its first and latest 1,000 steps and an even grid between. */
static void test_long_run_is_thinned(void **state) {
    (void)state;
    char *path = temp_db();
    Store s;
    open_store(&s, path);
    int64_t project = store_project_create(&s, "p", NULL, "builtin:bytes", "{}");
    int64_t run = store_run_create(&s, project, "train", "[]", NULL);
    assert_true(project > 0 && run > 0);
    add(&s, run, "init", "{\"type\":\"init\",\"resume_step\":%lld}", 0);
    const int64_t total = 20000;
    for (int64_t step = 1; step <= total; step++) {
        add(&s, run, "batch",
            "{\"type\":\"batch\",\"step\":%lld,\"micro_step\":1,\"loss\":2.5,\"tokens\":16,\"targets\":16}", step);
        add(&s, run, "step", "{\"type\":\"step\",\"step\":%lld,\"total\":20000,\"loss\":2.5,\"lr\":0.001,\"ms\":0.2}",
            step);
    }
    add(&s, run, "done", "{\"type\":\"done\",\"total_steps\":%lld}", total);
    RunRow r;
    assert_true(store_run_get(&s, run, &r));
    assert_int_equal(r.messages, 2 * total + 2); /* the sequence counts every message */
    run_row_free(&r);
    Steps *steps = calloc(1, sizeof *steps), *batches = calloc(1, sizeof *batches);
    store_messages_each(&s, run, 0, "step", 100000, collect_step, steps);
    store_messages_each(&s, run, 0, "batch", 100000, collect_step, batches);
    assert_int_equal(steps->n, batches->n);
    assert_true(steps->n <= 3500);
    for (int i = 0; i < 1000; i++) assert_int_equal(steps->steps[i], i + 1);
    for (int i = 0; i < 1000; i++) assert_int_equal(steps->steps[steps->n - 1000 + i], total - 999 + i);
    for (int i = 1; i < steps->n; i++) {
        assert_int_equal(batches->steps[i], steps->steps[i]);
        assert_true(steps->steps[i] > steps->steps[i - 1]);
        assert_true(steps->steps[i] - steps->steps[i - 1] <= 32); /* 18,000 steps on a grid of 1,000 */
    }
    char *last = store_message_latest(&s, run, "step");
    assert_non_null(strstr(last, "\"step\":20000,"));
    free(last);
    char *done = store_message_latest(&s, run, "done");
    char *init = store_message_latest(&s, run, "init");
    assert_true(done && init); /* other types are all kept */
    free(done), free(init), free(steps), free(batches);
    store_close(&s);
    remove_db(path);
}

/* Deleted ids stay used: projects and runs, also across a reopen; a delete names its runs. */
static void test_ids_are_never_reused(void **state) {
    (void)state;
    char *path = temp_db();
    Store s;
    open_store(&s, path);
    int64_t a = store_project_create(&s, "a", NULL, "builtin:bytes", "{}");
    int64_t b = store_project_create(&s, "b", NULL, "builtin:bytes", "{}");
    int64_t r1 = store_run_create(&s, b, "tokenize", "[]", NULL);
    int64_t r2 = store_run_create(&s, b, "train", "[]", NULL);
    assert_int_equal(store_message_add(&s, r2, "init", "{}", 2), 0);
    int64_t *runs;
    int n;
    assert_int_equal(store_project_delete(&s, b, &runs, &n), 0);
    assert_int_equal(n, 2);
    assert_true(runs[0] == r1 && runs[1] == r2);
    free(runs);
    RunRow r;
    assert_false(store_run_get(&s, r2, &r));
    assert_true(store_project_create(&s, "c", NULL, "builtin:bytes", "{}") > b);
    assert_true(store_run_create(&s, a, "tokenize", "[]", NULL) > r2);
    /* failures come back (and are logged), they do not pass for success */
    assert_int_equal(store_project_create(&s, NULL, NULL, "builtin:bytes", "{}"), -1);
    assert_int_equal(store_run_create(&s, a, NULL, "[]", NULL), -1);
    assert_int_equal(store_message_add(&s, 999999, "init", "{}", 2), -1);
    assert_int_equal(store_project_update(&s, a, NULL, false, NULL, NULL, NULL), 0);
    store_close(&s);
    open_store(&s, path);
    int64_t d = store_project_create(&s, "d", NULL, "builtin:bytes", "{}");
    assert_true(d > b + 1);
    assert_int_equal(store_runs_reserve(&s, 1000), 0); /* ids with files still around */
    assert_int_equal(store_run_create(&s, d, "tokenize", "[]", NULL), 1001);
    assert_int_equal(store_runs_reserve(&s, 10), 0); /* never lowers */
    assert_int_equal(store_run_create(&s, d, "tokenize", "[]", NULL), 1002);
    store_close(&s);
    remove_db(path);
}

/* A database of the first schema (no AUTOINCREMENT, user_version 0) keeps its rows and gains it. */
static void test_first_schema_is_migrated(void **state) {
    (void)state;
    char *path = temp_db();
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(
            db,
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE projects(id INTEGER PRIMARY KEY, name TEXT NOT NULL, model TEXT, tokenizer TEXT NOT NULL,"
            "  options TEXT NOT NULL, created_at REAL NOT NULL);"
            "CREATE TABLE runs(id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT "
            "NOT NULL,"
            "  pid INTEGER, args TEXT NOT NULL, output TEXT, created_at REAL NOT NULL, started_at REAL, ended_at REAL,"
            "  exit_code INTEGER NOT NULL DEFAULT -1, error TEXT, stop_requested INTEGER NOT NULL DEFAULT 0,"
            "  messages INTEGER NOT NULL DEFAULT 0);"
            "CREATE INDEX runs_by_project ON runs(project_id, id);"
            "CREATE TABLE messages(run_id INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, json TEXT NOT "
            "NULL,"
            "  PRIMARY KEY(run_id, seq));"
            "CREATE INDEX messages_by_type ON messages(run_id, type, seq);"
            "INSERT INTO projects VALUES(7, 'old', NULL, 'builtin:bytes', '{\"steps\":5}', 1.5);"
            "INSERT INTO runs VALUES(9, 7, 'train', 'stopped', 123, '[\"train\"]', NULL, 1.5, 2.5, 3.5, 0, NULL, 1, 1);"
            "INSERT INTO messages VALUES(9, 1, 'init', '{\"type\":\"init\"}');",
            NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    Store s;
    open_store(&s, path);
    ProjectRow p;
    assert_true(store_project_get(&s, 7, &p));
    assert_string_equal(p.name, "old");
    assert_string_equal(p.options, "{\"steps\":5}");
    project_row_free(&p);
    RunRow r;
    assert_true(store_run_get(&s, 9, &r));
    assert_string_equal(r.status, "stopped");
    assert_true(r.stop_requested && r.messages == 1 && r.pid == 123 && r.ended_at == 3.5);
    run_row_free(&r);
    char *init = store_message_latest(&s, 9, "init");
    assert_string_equal(init, "{\"type\":\"init\"}");
    free(init);
    int64_t next = store_project_create(&s, "new", NULL, "builtin:bytes", "{}");
    assert_int_equal(next, 8);
    int64_t *runs;
    int n;
    assert_int_equal(store_project_delete(&s, next, &runs, &n), 0);
    free(runs);
    assert_int_equal(store_project_create(&s, "newer", NULL, "builtin:bytes", "{}"), 9);
    assert_int_equal(store_run_create(&s, 7, "tokenize", "[]", NULL), 10);
    store_close(&s);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 2", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    NfError err = {0};
    assert_int_not_equal(store_open(&s, path, &err), 0); /* newer than this code: refused */
    assert_non_null(strstr(err.message, "schema version 2"));
    remove_db(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_run_is_thinned),
        cmocka_unit_test(test_ids_are_never_reused),
        cmocka_unit_test(test_first_schema_is_migrated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
