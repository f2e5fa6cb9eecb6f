/* grad_sync.h — a step's gradients summed over the ranks in buckets, overlapped with the backward pass.
 *
 * Backward runs the layers last to first; as soon as one is done its
 * gradients are final (on the step's last micro-batch), so their sum over
 * the ranks can run while the layers before it are still being computed.
 * A bucket is one layer's gradients (its pieces of every per-layer segment
 * of the flat buffer, params.h or lora.h); the final norm and a separate
 * classifier, which backward does first, go with the last layer's; the
 * embedding (and a classifier shared with it) forms the last bucket, final
 * only when backward returns. A
 * communication thread of each rank makes the collectives, bucket after
 * bucket in the same order on every rank, on a communicator of its own
 * (Open MPI progresses a non-blocking collective only inside MPI calls, so
 * a thread in a blocking one is what keeps the transfer moving while the
 * loop computes). Under --zero 1 each piece is reduce-scattered instead, so
 * every rank gets only its shard of the sum (train.c's dist_shards). */
#ifndef NF_GRAD_SYNC_H
#define NF_GRAD_SYNC_H

#include "dist.h"
#include "error.h"
#include "params.h"

typedef struct GradSync GradSync;

/* Starts the communication thread for grads (n floats, laid out as seg[0 .. n_seg) over n_layers layers).
 * shards: --zero 1's (reduce-scatter), or NULL (all-reduce). Several ranks only; a collective: every rank calls it. */
GradSync *grad_sync_create(Dist *d, float *grads, size_t n, const ParamSegment *seg, int n_seg, int n_layers,
                           const DistShards *shards, NfError *err);
/* backward's hook (NetGrads.layer_done): layer's gradients are final, and those of the layers after it. */
void grad_sync_layer_done(void *sync, int layer);
/* After the step's backward: the buckets not started yet (the last one, and every one when no backward ran
 * with the hook) started, then every one waited for. Then grads holds the sum over the ranks: all of it, or
 * under --zero 1 this rank's shard of it at grads[0 ...), as dist_reduce_scatter leaves it. *waited_ms: how
 * long this call waited; *busy_ms: how long the collectives ran this step, overlapped with backward or not. */
int grad_sync_finish(GradSync *s, double *waited_ms, double *busy_ms, NfError *err);
/* Stops the thread (between steps: it is idle then). */
void grad_sync_free(GradSync *s);

#endif
