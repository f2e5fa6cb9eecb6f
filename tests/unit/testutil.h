/* testutil.h — shared helpers for the cmocka unit tests: temporary files and
 * the location of ../shared/data. Header-only so each test stays one file. */
#ifndef NF_TESTUTIL_H
#define NF_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model.h"

/* A mkstemp/mkdtemp template "$TMPDIR/<prefix>_XXXXXX" (TMPDIR, else /tmp), so a suite run's files land in
 * the folder tests/run_tests.sh gives it and checks is empty afterwards. */
static inline char *temp_template(char *buf, size_t cap, const char *prefix) {
    const char *dir = getenv("TMPDIR");
    int n = snprintf(buf, cap, "%s/%s_XXXXXX", dir && dir[0] ? dir : "/tmp", prefix);
    assert_true(n > 0 && (size_t)n < cap);
    return buf;
}

/* Writes bytes to a fresh temporary file; returns its malloc'd path. */
static inline char *write_temp_file(const void *data, size_t n) {
    char buf[512];
    char *path = strdup(temp_template(buf, sizeof buf, "nf_test"));
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    if (n) assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
    return path;
}

static inline void remove_temp_file(char *path) {
    unlink(path);
    free(path);
}

/* Path of a file in ../shared/data (NF_SHARED_DATA overrides), or NULL when
 * the folder is absent. Tests that need it skip loudly, except under CI. */
static inline const char *shared_data_path(const char *name, char *buf, size_t cap) {
    const char *dir = getenv("NF_SHARED_DATA");
    snprintf(buf, cap, "%s/%s", dir ? dir : "../shared/data", name);
    if (access(buf, R_OK) == 0) return buf;
    if (getenv("CI")) fail_msg("CI needs %s (../shared/data is missing)", buf);
    fprintf(stderr, "SKIP: %s not found (../shared/data absent)\n", buf);
    return NULL;
}

/* Loads ../shared/data/<name> as a model; false (skipped loudly) when absent. */
static inline bool load_shared_model(Model *m, const char *name) {
    char buf[512];
    const char *path = shared_data_path(name, buf, sizeof buf);
    if (!path) return false;
    NfError err = {0};
    if (model_load(m, path, &err) != 0) fail_msg("%s: %s", name, err.message);
    return true;
}

/* A growable byte buffer for building model and tokenizer files in tests. */
typedef struct {
    unsigned char *data;
    size_t len, cap;
} Bytes;

static inline void bytes_put(Bytes *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        b->data = realloc(b->data, cap);
        assert_non_null(b->data);
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void put_i32(Bytes *b, int32_t v) { bytes_put(b, &v, 4); }
static inline void put_f32(Bytes *b, float v) { bytes_put(b, &v, 4); }

#endif
