/* util.c — checked allocation, overflow-safe sizes, the clock, FNV-1a, NfError. */
#define _DEFAULT_SOURCE /* madvise's MADV_HUGEPAGE */
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int nf_fail(NfError *err, const char *code, const char *fmt, ...) {
    if (!err) return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int nf_prefix(NfError *err, const char *code, const char *fmt, ...) {
    if (!err) return -1;
    char why[sizeof err->message];
    memcpy(why, err->message, sizeof why);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->message)
        snprintf(err->message + n, sizeof err->message - (size_t)n, "%s", why);
    if (code) err->code = code;
    return -1;
}

bool nf_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

bool nf_grow(void **items, size_t *cap, size_t need, size_t elem, size_t first) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : first;
    while (c < need) {
        if (c > SIZE_MAX / 2) return false;
        c *= 2;
    }
    size_t bytes;
    if (!nf_mul_size(c, elem, &bytes)) return false;
    void *grown = realloc(*items, bytes);
    if (!grown) return false;
    *items = grown;
    *cap = c;
    return true;
}

bool nf_resize(void **items, size_t n, size_t elem) {
    size_t bytes;
    if (!nf_mul_size(n, elem, &bytes)) return false;
    void *grown = realloc(*items, bytes);
    if (!grown) return false;
    *items = grown;
    return true;
}

/* Every buffer starts on a cache line, and a large one (weights, moments,
 * activations) on a transparent huge page, asked for as such:
 *  - rows whose length is a multiple of 16 floats then start on lines, so
 *    threads writing neighbouring heads of a row never share a line, and an
 *    AVX-512 load never straddles two. calloc's buffers start 16 bytes into
 *    a line: attention ran 15-20% slower for it (docs/performance.md).
 *  - touching a huge page the first time takes 512 times fewer page faults
 *    than its 4 KiB pages, which was most of a first training step's time
 *    on a virtual machine.
 * Zeroed here, so the pages are faulted in now rather than at first use
 * (nf_alloc_unzeroed: by the caller's copy into it, which comes next). */
#define HUGE_PAGE  ((size_t)2 << 20)
#define CACHE_LINE 64

static void *alloc_aligned(size_t bytes, bool zero, NfError *err) {
    size_t align = bytes >= 2 * HUGE_PAGE ? HUGE_PAGE : CACHE_LINE;
    size_t padded = bytes ? (bytes - 1) / align * align + align : align; /* aligned_alloc wants a multiple */
    void *p = bytes <= SIZE_MAX - align ? aligned_alloc(align, padded) : NULL;
    if (!p) {
        nf_fail(err, NF_ERR_MEMORY, "cannot allocate %zu bytes", bytes);
        return NULL;
    }
    if (align == HUGE_PAGE) madvise(p, padded, MADV_HUGEPAGE); /* a hint: failure changes nothing */
    if (zero) memset(p, 0, padded);
    return p;
}

void *nf_alloc(size_t bytes, NfError *err) { return alloc_aligned(bytes, true, err); }
void *nf_alloc_unzeroed(size_t bytes, NfError *err) { return alloc_aligned(bytes, false, err); }

void nf_release_pages(const void *p, size_t bytes) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + bytes) / page * page;
    if (end > start) madvise((void *)start, end - start, MADV_DONTNEED); /* advice: failing only costs memory */
}

static void *alloc_array(size_t count, size_t elem, bool zero, NfError *err) {
    size_t bytes;
    if (!nf_mul_size(count, elem, &bytes)) {
        nf_fail(err, NF_ERR_MEMORY, "allocation of %zu x %zu bytes overflows", count, elem);
        return NULL;
    }
    return alloc_aligned(bytes, zero, err);
}

void *nf_alloc_array(size_t count, size_t elem, NfError *err) { return alloc_array(count, elem, true, err); }
void *nf_alloc_array_unzeroed(size_t count, size_t elem, NfError *err) { return alloc_array(count, elem, false, err); }

double nf_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double nf_sort_median(double *v, size_t n) {
    qsort(v, n, sizeof *v, ascending);
    return (v[(n - 1) / 2] + v[n / 2]) / 2;
}

void nf_cond_init_monotonic(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

struct timespec nf_deadline_ms(long ms) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    return t;
}

int nf_self_exe(char *out, size_t cap, NfError *err) {
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0) {
        out[0] = '\0';
        return nf_fail(err, NF_ERR_IO, "cannot find this program's path (/proc/self/exe)");
    }
    out[n] = '\0';
    return 0;
}

bool nf_proc_stat(int pid, char *state, int *ppid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char s = 0;
    int parent = -1;
    const char *paren = strrchr(buf, ')'); /* the fields after the command's name, which may hold ')' and spaces */
    if (!paren || sscanf(paren + 1, " %c %d", &s, &parent) != 2) {
        errno = EIO; /* there, but unreadable: not "gone" */
        return false;
    }
    if (state) *state = s;
    if (ppid) *ppid = parent;
    return true;
}

uint32_t nf_fnv1a32(const void *data, size_t n) {
    const unsigned char *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

char *nf_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

uint64_t nf_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
