/* test_line_reader.c — the LineReader of protocol.h, which runner.c and
 * launch.c read a child's NDJSON with: a line split over reads arrives once,
 * whole; several lines in one read arrive in order; empty lines are
 * skipped; a partial last line is held, not delivered, at the end; a line
 * longer than NF_LINE_MAX is dropped without losing the next one. */
#include "testutil.h"

#include <fcntl.h>

#include "protocol.h"

typedef struct {
    char lines[8][64];
    size_t lens[8];
    int n;
    size_t long_len; /* the length of a line too long for lines[] */
} Got;

static void take(void *ctx, const char *line, size_t len) {
    Got *g = ctx;
    if (len >= sizeof g->lines[0]) {
        g->long_len = len;
        return;
    }
    assert_true(g->n < 8);
    memcpy(g->lines[g->n], line, len);
    g->lens[g->n++] = len;
}

/* A pipe whose read end is fds[0]; each write lands in it (small writes, no blocking). */
static void put(int fd, const char *text) { assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text)); }

static void test_lines_split_over_reads_arrive_whole_and_in_order(void **state) {
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    LineReader r;
    line_reader_init(&r);
    Got g = {0};
    put(fds[1], "{\"a\":");
    assert_int_equal(line_reader_read(&r, fds[0], take, &g), 5);
    assert_int_equal(g.n, 0);
    put(fds[1], "1}\n\n{\"b\":2}\n{\"c\"");
    assert_true(line_reader_read(&r, fds[0], take, &g) > 0);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.lines[0], "{\"a\":1}");
    assert_string_equal(g.lines[1], "{\"b\":2}");
    close(fds[1]);
    assert_int_equal(line_reader_read(&r, fds[0], take, &g), 0); /* the end: the torn line is not delivered */
    assert_int_equal(g.n, 2);
    line_reader_free(&r);
    close(fds[0]);
}

static void test_an_overlong_line_is_dropped_and_the_next_kept(void **state) {
    (void)state;
    char *path = write_temp_file("", 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < NF_LINE_MAX + 100; i++) fputc('x', f);
    fputs("\n{\"after\":1}\n", f);
    fclose(f);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    LineReader r;
    line_reader_init(&r);
    Got g = {0};
    while (line_reader_read(&r, fd, take, &g) > 0) {
    }
    assert_int_equal(g.long_len, 0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.lines[0], "{\"after\":1}");
    line_reader_free(&r);
    close(fd);
    remove_temp_file(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_split_over_reads_arrive_whole_and_in_order),
        cmocka_unit_test(test_an_overlong_line_is_dropped_and_the_next_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
