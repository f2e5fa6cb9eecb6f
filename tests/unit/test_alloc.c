/* test_alloc.c — nf_alloc's zeroing of large buffers: the kernel's zero pages in the middle (util.c's zero_new),
 * memset at the unaligned ends, on memory that malloc hands out again after it was written. */
#include "testutil.h"

#include <malloc.h>

#include "util.h"

/* Sizes of the huge-page path (>= 4 MiB), with ends off the 4 KiB pages. */
static const size_t SIZES[] = {(size_t)4 << 20, ((size_t)5 << 20) + 12345, ((size_t)9 << 20) + 100};

static void expect_zeros(const unsigned char *p, size_t n) {
    for (size_t j = 0; j < n; j++)
        if (p[j]) fail_msg("byte %zu of %zu is 0x%02x, not 0", j, n, p[j]);
}

/* A block written, freed and handed out again by nf_alloc reads as zeros, every byte. malloc's large blocks are
 * fresh mappings (zeros anyway) unless its mmap threshold is raised, so it is: then they come from the heap and
 * the same dirty memory comes back, which the test checks happened, so that it cannot pass without zeroing (it
 * failed so with zero_new's madvise left out). */
static void test_reused_memory_is_zeroed(void **state) {
    (void)state;
    /* from the heap, which is not trimmed either (a trimmed heap grows again with fresh zero pages); AddressSanitizer's
     * allocator refuses both, and its quarantine hands no block out again at once: there only the zeros are checked */
    bool forced = false;
#if defined(__GLIBC__)
    forced = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#endif
    int reused = 0;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof SIZES / sizeof SIZES[0]; i++) {
            unsigned char *dirty = nf_alloc_unzeroed(SIZES[i], NULL);
            assert_non_null(dirty);
            memset(dirty, 0xa5, SIZES[i]);
            uintptr_t lo = (uintptr_t)dirty, hi = lo + SIZES[i];
            free(dirty);
            unsigned char *p = nf_alloc(SIZES[i], NULL);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % ((uintptr_t)2 << 20), 0); /* huge-page aligned */
            if ((uintptr_t)p < hi && (uintptr_t)p + SIZES[i] > lo) reused++;
            expect_zeros(p, SIZES[i]);
            free(p);
        }
    }
    if (forced && reused == 0) fail_msg("malloc never handed the written memory out again: the test checked nothing");
}

/* nf_alloc_array's zeroed arrays likewise, and a buffer stays usable and zero where it was not written. */
static void test_zeroed_array_is_zero_after_partial_writes(void **state) {
    (void)state;
    size_t n = ((size_t)6 << 20) / sizeof(float) + 7;
    float *a = nf_alloc_array(n, sizeof(float), NULL);
    assert_non_null(a);
    for (size_t i = 0; i < n; i += 1000) a[i] = 1.0f;
    for (size_t i = 0; i < n; i++)
        if (a[i] != (i % 1000 == 0 ? 1.0f : 0.0f)) fail_msg("element %zu is %g", i, a[i]);
    free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reused_memory_is_zeroed),
        cmocka_unit_test(test_zeroed_array_is_zero_after_partial_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
