/* block_claims.c — static shares first, then blocks taken from the back of the others' shares (block_claims.h). */
#include "block_claims.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <omp.h>

/* One thread's share of the blocks still to run: the next from the front in the low 32 bits, one past the last in
 * the high 32; empty when they meet. A cache line each, so that an owner taking its blocks does not contend with
 * the other owners; only a thread taking from the back touches another's line. */
typedef struct {
    _Alignas(64) _Atomic uint64_t range;
} Share;

static uint64_t share_range(int first, int end) { return (uint64_t)(uint32_t)first | (uint64_t)(uint32_t)end << 32; }

/* Takes one block from the front (the owner) or the back (any other thread) of s: false once s is empty. Only the
 * claim itself must be atomic; the blocks' results are published by the region's closing barrier. */
static bool share_take(Share *s, bool from_front, int *block) {
    uint64_t r = atomic_load_explicit(&s->range, memory_order_relaxed);
    for (;;) {
        uint32_t first = (uint32_t)r, end = (uint32_t)(r >> 32);
        if (first >= end) return false;
        uint64_t taken = from_front ? share_range((int)first + 1, (int)end) : share_range((int)first, (int)end - 1);
        if (atomic_compare_exchange_weak_explicit(&s->range, &r, taken, memory_order_relaxed, memory_order_relaxed)) {
            *block = from_front ? (int)first : (int)end - 1;
            return true;
        }
    }
}

void block_claims_run(int blocks, BlockRun run, void *ctx) {
    if (blocks <= 0) return;
    int shares = omp_get_max_threads();
    if (shares < 2) { /* no region to wake */
        for (int b = 0; b < blocks; b++) run(ctx, b);
        return;
    }
    if (shares > BLOCK_CLAIMS_MAX_SHARES) shares = BLOCK_CLAIMS_MAX_SHARES;
    Share share[BLOCK_CLAIMS_MAX_SHARES];
    for (int t = 0; t < shares; t++)
        atomic_init(&share[t].range,
                    share_range((int)((int64_t)blocks * t / shares), (int)((int64_t)blocks * (t + 1) / shares)));
        /* a team smaller than `shares` leaves some shares ownerless: the others take all of those from the back */
#pragma omp parallel
    {
        int t = omp_get_thread_num(), own = t < shares ? t : -1, block;
        if (own >= 0)
            while (share_take(&share[own], true, &block)) run(ctx, block);
        for (int i = 1; i <= shares; i++) { /* the next shares first, so that two idle threads rarely meet */
            int s = (t + i) % shares;
            if (s != own)
                while (share_take(&share[s], false, &block)) run(ctx, block);
        }
    }
}
