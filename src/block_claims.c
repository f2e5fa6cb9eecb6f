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

/* Takes up to `most` blocks from the front (the owner) or the back (any other thread) of s: how many (the first in
 * *block), 0 once s is empty. Only the take itself must be atomic; the blocks' results are published by the
 * region's closing barrier. */
static int share_take(Share *s, bool from_front, int most, int *block) {
    uint64_t r = atomic_load_explicit(&s->range, memory_order_relaxed);
    for (;;) {
        int first = (int)(uint32_t)r, end = (int)(uint32_t)(r >> 32);
        if (first >= end) return 0;
        int n = end - first < most ? end - first : most;
        uint64_t taken = from_front ? share_range(first + n, end) : share_range(first, end - n);
        if (atomic_compare_exchange_weak_explicit(&s->range, &r, taken, memory_order_relaxed, memory_order_relaxed)) {
            *block = from_front ? first : end - n;
            return n;
        }
    }
}

/* One thread's part: its own share from the front, then the others' from the back */
typedef struct {
    Share *share;
    int shares, per_claim;
    BlockRun run;
    void *ctx;
} Claims;

static void claims_take(void *arg, int t, int threads) {
    (void)threads;
    const Claims *c = arg;
    int own = t < c->shares ? t : -1, block, n;
    if (own >= 0)
        while ((n = share_take(&c->share[own], true, c->per_claim, &block)) > 0)
            for (int b = block; b < block + n; b++) c->run(c->ctx, b);
    for (int i = 1; i <= c->shares; i++) { /* the next shares first, so that two idle threads rarely meet */
        int s = (t + i) % c->shares;
        if (s != own)
            while ((n = share_take(&c->share[s], false, c->per_claim, &block)) > 0)
                for (int b = block; b < block + n; b++) c->run(c->ctx, b);
    }
}

void block_claims_run(NfTeam *team, int blocks, int per_claim, BlockRun run, void *ctx) {
    if (blocks <= 0) return;
    if (per_claim < 1) per_claim = 1;
    int shares = omp_get_max_threads();
    if (shares < 2) { /* no threads to wake */
        for (int b = 0; b < blocks; b++) run(ctx, b);
        return;
    }
    if (shares > BLOCK_CLAIMS_MAX_SHARES) shares = BLOCK_CLAIMS_MAX_SHARES;
    /* a team smaller than `shares` leaves some shares ownerless: the others take all of those from the back */
    Share share[BLOCK_CLAIMS_MAX_SHARES];
    for (int t = 0; t < shares; t++)
        atomic_init(&share[t].range,
                    share_range((int)((int64_t)blocks * t / shares), (int)((int64_t)blocks * (t + 1) / shares)));
    Claims claims = {share, shares, per_claim, run, ctx};
    if (team) {
        nf_team_run(team, shares, claims_take, &claims);
        return;
    }
#pragma omp parallel
    claims_take(&claims, omp_get_thread_num(), omp_get_num_threads());
}
