/* util.h — small helpers every module uses: checked allocation, sizes with
 * overflow checks, a monotonic clock and the FNV-1a hash. */
#ifndef NF_UTIL_H
#define NF_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "error.h"

/* Allocation that reports failure through err instead of returning NULL
 * silently; zeroed, starting on a cache line (64 bytes), freed with free(). */
void *nf_alloc(size_t bytes, NfError *err); /* zeroed */
/* Not zeroed: for a buffer the caller fills whole at once (a copy), which faults its pages in as zeroing would,
 * without writing every byte twice. */
void *nf_alloc_unzeroed(size_t bytes, NfError *err);
void *nf_alloc_array_unzeroed(size_t count, size_t elem, NfError *err);
void *nf_alloc_array(size_t count, size_t elem, NfError *err); /* zeroed, overflow-checked */
/* Hands the whole pages inside [p, p + bytes) back to the kernel: memory
 * about to be freed, or a read-only file mapping already read (its pages
 * stay in the page cache, out of this process's RSS). Reading them again
 * gives zeros (anonymous memory) or the file again. A large buffer converted
 * piece by piece into another so goes as the new one grows. */
void nf_release_pages(const void *p, size_t bytes);

/* a*b with overflow detection: returns false if it does not fit. */
bool nf_mul_size(size_t a, size_t b, size_t *out);

/* The one growable array: makes room for `need` elements of `elem` bytes in *items, whose capacity is *cap
 * elements. When it must grow, the capacity becomes `first` (or *cap when not 0), doubled until need fits, and
 * *items is realloc'd to it. False when the size overflows or memory runs out: *items and *cap are then
 * untouched, still the caller's to free. Called as nf_grow((void **)&a->items, &a->cap, a->n + 1, ...). */
bool nf_grow(void **items, size_t *cap, size_t need, size_t elem, size_t first);

/* Resizes *items to n elements of elem bytes (for arrays that grow together under one capacity, after nf_grow
 * grew the first); false (untouched) on overflow or out of memory. */
bool nf_resize(void **items, size_t n, size_t elem);

/* FNV-1a, 64-bit, over bytes: h = (h ^ byte) * 0x100000001b3, starting from
 * NF_FNV1A64_INIT; chain calls to hash data in pieces. Not cryptographic:
 * ingest uses it to notice changed source files. */
#define NF_FNV1A64_INIT 0xcbf29ce484222325ull
uint64_t nf_fnv1a64(uint64_t h, const void *data, size_t n);

/* FNV-1a, 32-bit: the hash of the tokenizers' piece tables. */
uint32_t nf_fnv1a32(const void *data, size_t n);

/* "dir/name", malloc'd (NULL when memory runs out). */
char *nf_path_join(const char *dir, const char *name);

/* Monotonic wall clock in milliseconds. */
double nf_now_ms(void);

/* The median of v[0..n-1] (n > 0; the mean of the middle two when n is even), which it sorts ascending. */
double nf_sort_median(double *v, size_t n);

/* A condition variable whose timed waits run on the monotonic clock (a step of the wall clock, NTP's, must
 * neither end them early nor stretch them), and the deadline ms milliseconds from now on that clock. */
void nf_cond_init_monotonic(pthread_cond_t *cond);
struct timespec nf_deadline_ms(long ms);

/* This program's absolute path (/proc/self/exe) into out (cap bytes). */
int nf_self_exe(char *out, size_t cap, NfError *err);

/* Process pid's state letter and parent from /proc/PID/stat ("pid (comm) state ppid ...", where comm may hold
 * anything); either pointer may be NULL. False (errno from the open) when it cannot be read: gone, mostly. */
bool nf_proc_stat(int pid, char *state, int *ppid);

#endif
