/* enospc_shim.c — a full disk, for tests: an LD_PRELOAD library that makes
 * writes to chosen files fail with ENOSPC, as a full filesystem would,
 * without a filesystem to fill (mounting a small tmpfs needs privileges a
 * test machine may not grant).
 *
 *   NF_ENOSPC_PATH   fnmatch(3) pattern of the files concerned, matched
 *                    against the path /proc/self/fd/N names ("*" also
 *                    matches "/"); unset: the shim does nothing
 *   NF_ENOSPC_AFTER  bytes those files may receive in all, in this process
 *                    (default 0); the write that crosses the line writes what
 *                    fits and reports ENOSPC, later ones write nothing
 *   NF_ENOSPC_FSYNC  "1": fsync/fdatasync of those files fail with ENOSPC
 *                    too (the disk that fills at writeback)
 *
 * Covered: write, pwrite, writev, fwrite, fsync, fdatasync. fwrite is
 * intercepted itself because glibc's stdio writes through an internal
 * alias of write that LD_PRELOAD cannot replace; AtomicFile writes with
 * fwrite only. Other stdio writers (fputc, fprintf) are not covered. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long used; /* bytes the matching files received */

static bool matches(int fd) {
    const char *pattern = getenv("NF_ENOSPC_PATH");
    if (!pattern || fd < 0) return false;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return false;
    path[n] = '\0';
    return fnmatch(pattern, path, 0) == 0;
}

static unsigned long long limit(void) {
    const char *v = getenv("NF_ENOSPC_AFTER");
    return v ? strtoull(v, NULL, 10) : 0;
}

/* How many of `want` bytes a matching file may still take (all of them for
 * other files); counts them as taken. */
static size_t allow(int fd, size_t want) {
    if (!matches(fd)) return want;
    pthread_mutex_lock(&lock);
    unsigned long long cap = limit(), left = used < cap ? cap - used : 0;
    size_t granted = want < left ? want : (size_t)left;
    used += granted;
    pthread_mutex_unlock(&lock);
    return granted;
}

/* libc's own function of that name (looked up once; a race only looks it up twice) */
#define REAL(name)                                                      \
    (*({                                                                \
        static __typeof__(&name) real_;                                 \
        if (!real_) real_ = (__typeof__(&name))dlsym(RTLD_NEXT, #name); \
        &real_;                                                         \
    }))

ssize_t write(int fd, const void *buf, size_t n) {
    size_t ok = allow(fd, n);
    if (ok == 0 && n > 0) {
        errno = ENOSPC;
        return -1;
    }
    return REAL(write)(fd, buf, ok);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset) {
    size_t ok = allow(fd, n);
    if (ok == 0 && n > 0) {
        errno = ENOSPC;
        return -1;
    }
    return REAL(pwrite)(fd, buf, ok, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += iov[i].iov_len;
    size_t ok = allow(fd, total);
    if (ok == total) return REAL(writev)(fd, iov, count);
    if (ok == 0) {
        errno = ENOSPC;
        return -1;
    }
    ssize_t done = 0; /* a short write: the first ok bytes, buffer by buffer */
    for (int i = 0; i < count && (size_t)done < ok; i++) {
        size_t part = iov[i].iov_len < ok - (size_t)done ? iov[i].iov_len : ok - (size_t)done;
        ssize_t w = REAL(write)(fd, iov[i].iov_base, part);
        if (w < 0) return done > 0 ? done : -1;
        done += w;
    }
    return done;
}

size_t fwrite(const void *buf, size_t size, size_t n, FILE *f) {
    if (size == 0 || n == 0) return REAL(fwrite)(buf, size, n, f);
    size_t ok = allow(fileno(f), size * n) / size; /* whole items only */
    size_t done = ok > 0 ? REAL(fwrite)(buf, size, ok, f) : 0;
    if (done < n && done == ok) errno = ENOSPC;
    return done;
}

static int sync_result(int fd, int (*real)(int)) {
    const char *v = getenv("NF_ENOSPC_FSYNC");
    if (v && strcmp(v, "1") == 0 && matches(fd)) {
        errno = ENOSPC;
        return -1;
    }
    return real(fd);
}

int fsync(int fd) { return sync_result(fd, REAL(fsync)); }
int fdatasync(int fd) { return sync_result(fd, REAL(fdatasync)); }
