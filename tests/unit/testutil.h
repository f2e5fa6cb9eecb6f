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

/* Writes bytes to a fresh temporary file; returns its malloc'd path. */
static inline char *write_temp_file(const void *data, size_t n) {
    char *path = strdup("/tmp/nf_test_XXXXXX");
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

#endif
