/* block_claims.h — a parallel loop over blocks whose threads even out among themselves.
 *
 * A generated token's products are each split between the threads and each ends at a barrier, so the token
 * waits, product by product, for whichever thread read its share more slowly that time. On the 2-core AMD EPYC
 * VM, under `schedule(static)`, one thread finished 14-22% of the 110M shape's product time before the other,
 * and which one changed from product to product (docs/performance.md, "Threads that even out"). Here each thread
 * first takes the blocks of its static share from the front, a few at a time, and when it has none left takes
 * blocks from the back of the other threads' shares, so the threads finish within about a block of each other.
 * A thread's own blocks stay in order, one stream of reads as under the static split, and a block is computed
 * the same way whichever thread takes it: where each block writes its own outputs, results keep every bit. */
#ifndef NF_BLOCK_CLAIMS_H
#define NF_BLOCK_CLAIMS_H

/* The most shares kept; threads beyond it (a machine with more) own none and only take from the back */
#define BLOCK_CLAIMS_MAX_SHARES 256

#include "team.h"

typedef void (*BlockRun)(void *ctx, int block);

/* run(ctx, b) once for each b in 0..blocks-1, by omp_get_max_threads() threads: team's (team.h) where team is not
 * NULL, else those of one OpenMP parallel region; in any order and on any thread: each block's work must be its
 * own. A thread takes up to per_claim blocks at a time (then runs them in order): each take is a locked
 * instruction, so small blocks are better taken a few at once, while the threads end at most about one take
 * apart. */
void block_claims_run(NfTeam *team, int blocks, int per_claim, BlockRun run, void *ctx);

#endif
