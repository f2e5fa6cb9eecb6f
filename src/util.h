/* util.h — small helpers every module uses: checked allocation, sizes with
 * overflow checks and a monotonic clock. */
#ifndef NF_UTIL_H
#define NF_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Allocation that reports failure through err instead of returning NULL silently. */
void *nf_alloc(size_t bytes, NfError *err);            /* zeroed */
void *nf_alloc_array(size_t count, size_t elem, NfError *err); /* zeroed, overflow-checked */

/* a*b with overflow detection: returns false if it does not fit. */
bool nf_mul_size(size_t a, size_t b, size_t *out);

/* Monotonic wall clock in milliseconds. */
double nf_now_ms(void);

#endif
