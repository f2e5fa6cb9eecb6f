/* json_probe.c — a test tool (not shipped) that measures the JSON reader's
 * memory and time, for tests/e2e/test_json_limits.py:
 *   json_probe parse FILE       json_parse of the whole file (read into memory first)
 *   json_probe manifest DIR     manifest_load of DIR/manifest.json (which maps the file itself)
 * Prints one JSON line: input bytes, the growth of peak RSS over the RSS
 * before the call (bytes), that growth / input bytes, the heap still held by
 * the result (bytes, from mallinfo2), and the call's wall time (ms).
 *
 * Peak RSS is VmHWM, reset through /proc/self/clear_refs just before the call
 * (so reading the input does not count); RSS counts touched pages, so a buffer
 * reserved by doubling but not written (jansson's lexer buffer) costs only what
 * was written. For `manifest`, RSS also holds the mapped file's pages, which
 * are the input, not the reader's: they are subtracted (every page of it is
 * read, so all of it is resident until the file is closed). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json_parse.h"
#include "manifest.h"

static int die(const char *msg) {
    fprintf(stderr, "json_probe: %s\n", msg);
    return 1;
}

/* A field of /proc/self/status in bytes, or -1. */
static long long status_bytes(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') kb = atoll(line + n + 1);
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* Resets VmHWM to the current RSS (Linux 4.0 and later). */
static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long long heap_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return (long long)(m.uordblks + m.hblkhd);
}

typedef struct {
    long long rss0, heap0;
    double t0;
} Mark;

static int start(Mark *m) {
    if (reset_peak() != 0) return -1;
    m->rss0 = status_bytes("VmRSS");
    m->heap0 = heap_in_use();
    m->t0 = now_ms();
    return m->rss0 < 0 ? -1 : 0;
}

static void report(const Mark *m, long long input, long long resident_input) {
    double ms = now_ms() - m->t0;
    long long growth = status_bytes("VmHWM") - m->rss0 - resident_input;
    printf("{\"bytes\":%lld,\"peak_growth\":%lld,\"ratio\":%.4f,\"result_heap\":%lld,\"ms\":%.1f}\n", input, growth,
           (double)growth / (double)input, heap_in_use() - m->heap0, ms);
}

static int probe_parse(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return die("cannot open the file");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc(size > 0 ? (size_t)size : 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) return die("cannot read the file");
    fclose(f);
    Mark m;
    if (start(&m) != 0) return die("cannot reset the peak RSS");
    JsonValue v;
    NfError err;
    if (json_parse(text, (size_t)size, &v, &err) != 0) return die(err.message);
    report(&m, size, 0);
    json_value_free(&v);
    free(text);
    return 0;
}

static int probe_manifest(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return die("cannot open the manifest");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    Mark m;
    if (start(&m) != 0) return die("cannot reset the peak RSS");
    Manifest man;
    NfError err;
    if (manifest_load(dir, &man, &err) != 0) return die(err.message);
    long long page = sysconf(_SC_PAGESIZE), pages = ((long long)size + page - 1) / page * page;
    report(&m, size, pages);
    manifest_free(&man);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "parse") == 0) return probe_parse(argv[2]);
    if (argc == 3 && strcmp(argv[1], "manifest") == 0) return probe_manifest(argv[2]);
    return die("usage: json_probe parse FILE | manifest DIR");
}
