/* grad_sync.c — the gradients' sum over the ranks, bucket by bucket on a communication thread (see grad_sync.h).
 * A build without MPI (NF_NO_MPI: dist.h) has one rank, so train.c never asks for it: the end of the file. */
#include "grad_sync.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#ifndef NF_NO_MPI
#include <mpi.h>

/* A run of the flat buffer that one bucket sums: a layer's piece of one segment, or adjacent ones joined. */
typedef struct {
    size_t offset, count;
} Piece;

struct GradSync {
    Dist *d;
    MPI_Comm comm; /* the thread's own: collectives of two threads must not share one */
    float *grads;
    const DistShards *shards; /* --zero 1's; NULL: all-reduce */
    Piece *by_offset;         /* --zero 1: the pieces in layout order, to gather the shard's sums (finish) */
    int *counts;              /* --zero 1: (size) one call's part of each rank */
    Piece *pieces;            /* bucket after bucket: layer L-1 (and the classifier), ..., layer 0, the embedding */
    int n_pieces, n_layers;
    int *bucket_end; /* (L + 1) bucket b holds pieces [bucket_end[b - 1], bucket_end[b]) */
    bool locks, running;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t work, progress;
    /* this step's, under lock */
    int released, next, done; /* pieces the thread may take, it took, it finished */
    int rc;                   /* the first MPI failure */
    double busy_ms;           /* time in the collectives */
    bool quit;
};

/* The bucket segment g belongs to, whole or sliced by layer. Backward computes the final norm's gradient and a
 * separate classifier's first, before the last layer's: they go with it, in bucket 0. The embedding's is done
 * last (and a shared classifier's is the embedding's): the last bucket. Every other segment of params.h's and
 * lora.h's layouts is (L, ...), one slice per layer. */
typedef enum { WITH_LAST_LAYER, PER_LAYER, AT_THE_END } SegmentBucket;

static SegmentBucket bucket_of(const ParamSegment *g, int L) {
    if (strcmp(g->name, "wcls") == 0 || strcmp(g->name, "rms_final") == 0) return WITH_LAST_LAYER;
    if (strcmp(g->name, "token_embedding") == 0 || g->count % (size_t)L != 0) return AT_THE_END;
    return PER_LAYER;
}

/* Whether bucket b (of L + 1) sums segment g, or its slice of it. */
static bool in_bucket(const ParamSegment *g, int b, int L) {
    SegmentBucket k = bucket_of(g, L);
    return g->count > 0 && (k == PER_LAYER ? b < L : k == WITH_LAST_LAYER ? b == 0 : b == L);
}

/* The buckets: a layer's slices of the per-layer segments (with the whole of those that go with it), in layout
 * order, joined where adjacent. */
static int plan(GradSync *s, size_t n, const ParamSegment *seg, int n_seg, int L, NfError *err) {
    if (!(s->pieces = nf_alloc_array((size_t)(L + 1) * (size_t)n_seg, sizeof *s->pieces, err)) ||
        !(s->bucket_end = nf_alloc_array((size_t)L + 1, sizeof *s->bucket_end, err)))
        return -1;
    size_t total = 0;
    for (int b = 0; b <= L; b++) {
        int first = s->n_pieces;
        for (int i = 0; i < n_seg; i++) {
            const ParamSegment *g = &seg[i];
            if (!in_bucket(g, b, L)) continue;
            bool layered = bucket_of(g, L) == PER_LAYER;
            size_t count = layered ? g->count / (size_t)L : g->count;
            size_t offset = g->offset + (layered ? (size_t)(L - 1 - b) * count : 0);
            Piece *last = s->n_pieces > first ? &s->pieces[s->n_pieces - 1] : NULL;
            if (last && last->offset + last->count == offset)
                last->count += count;
            else
                s->pieces[s->n_pieces++] = (Piece){offset, count};
            total += count;
        }
        s->bucket_end[b] = s->n_pieces;
    }
    if (total != n) return nf_fail(err, NF_ERR_DIST, "the gradient buckets cover %zu of %zu floats", total, n);
    return 0;
}

/* Sums grads[offset, offset + count) over the ranks in place; under --zero 1 only this rank's part of it, which
 * lands at grads + offset (MPI_IN_PLACE's rule) until shard_gather moves it. */
static int sum_run(GradSync *s, size_t offset, size_t count) {
    if (!s->shards) return MPI_Allreduce(MPI_IN_PLACE, s->grads + offset, (int)count, MPI_FLOAT, MPI_SUM, s->comm);
    const DistShards *sh = s->shards;
    size_t end = offset + count;
    for (int r = 0; r < s->d->size; r++) { /* the shards lie in rank order: so do the parts */
        size_t lo = (size_t)sh->displs[r], hi = lo + (size_t)sh->counts[r];
        size_t a = offset > lo ? offset : lo, b = end < hi ? end : hi;
        s->counts[r] = b > a ? (int)(b - a) : 0;
    }
    return MPI_Reduce_scatter(MPI_IN_PLACE, s->grads + offset, s->counts, MPI_FLOAT, MPI_SUM, s->comm);
}

static int sum_piece(GradSync *s, const Piece *p) {
    int rc = MPI_SUCCESS;
    for (size_t at = 0; rc == MPI_SUCCESS && at < p->count; at += DIST_CALL_FLOATS)
        rc = sum_run(s, p->offset + at, p->count - at < DIST_CALL_FLOATS ? p->count - at : DIST_CALL_FLOATS);
    return rc;
}

/* --zero 1, every piece summed: this rank's part of each call's sum, at the call's offset, moved to its place in
 * the shard at grads[0 ...). In layout order each part moves down (to offset - lo at most) and lands before the
 * next call's offset, so no move overwrites a part still to move: one extra buffer the size of the shard
 * would have cost half of what --zero 1 saves. */
static void shard_gather(GradSync *s) {
    size_t lo = s->shards->lo, hi = s->shards->hi;
    for (int i = 0; i < s->n_pieces; i++) {
        const Piece *p = &s->by_offset[i];
        for (size_t at = p->offset; at < p->offset + p->count; at += DIST_CALL_FLOATS) {
            size_t end = p->offset + p->count - at < DIST_CALL_FLOATS ? p->offset + p->count : at + DIST_CALL_FLOATS;
            size_t a = at > lo ? at : lo, b = end < hi ? end : hi;
            if (b > a) memmove(s->grads + (a - lo), s->grads + at, (b - a) * sizeof *s->grads);
        }
    }
}

static int by_offset(const void *a, const void *b) {
    size_t x = ((const Piece *)a)->offset, y = ((const Piece *)b)->offset;
    return x < y ? -1 : x > y;
}

static void *sync_main(void *arg) {
    GradSync *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->quit && s->next >= s->released) pthread_cond_wait(&s->work, &s->lock);
        if (s->quit) break;
        const Piece *p = &s->pieces[s->next++];
        bool failed = s->rc != MPI_SUCCESS;
        pthread_mutex_unlock(&s->lock);
        double start = nf_now_ms();
        int rc = failed ? MPI_SUCCESS : sum_piece(s, p); /* after a failure the sums mean nothing: skip them */
        double ms = nf_now_ms() - start;
        pthread_mutex_lock(&s->lock);
        s->busy_ms += ms;
        if (rc != MPI_SUCCESS && s->rc == MPI_SUCCESS) s->rc = rc;
        s->done++;
        pthread_cond_signal(&s->progress);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

GradSync *grad_sync_create(Dist *d, float *grads, size_t n, const ParamSegment *seg, int n_seg, int n_layers,
                           const DistShards *shards, NfError *err) {
    GradSync *s = calloc(1, sizeof *s);
    if (!s) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory");
        return NULL;
    }
    *s = (GradSync){.d = d, .comm = MPI_COMM_NULL, .grads = grads, .shards = shards, .n_layers = n_layers};
    dist_wait_begin(d, "the gradients' communicator");
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &s->comm);
    dist_wait_end(d);
    if (rc != MPI_SUCCESS) {
        s->comm = MPI_COMM_NULL;
        dist_mpi_failed(rc, "making the gradients' communicator", err);
        grad_sync_free(s);
        return NULL;
    }
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    if (plan(s, n, seg, n_seg, n_layers, err) != 0 ||
        (shards && (!(s->by_offset = nf_alloc_array((size_t)s->n_pieces, sizeof *s->by_offset, err)) ||
                    !(s->counts = nf_alloc_array((size_t)d->size, sizeof(int), err))))) {
        grad_sync_free(s);
        return NULL;
    }
    if (shards) {
        memcpy(s->by_offset, s->pieces, (size_t)s->n_pieces * sizeof *s->pieces);
        qsort(s->by_offset, (size_t)s->n_pieces, sizeof *s->by_offset, by_offset);
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    s->locks = true;
    /* the thread inherits the blocked stop signals: they stay with the training loop */
    if (pthread_create(&s->thread, NULL, sync_main, s) != 0) {
        nf_fail(err, NF_ERR_DIST, "cannot start the gradients' communication thread");
        grad_sync_free(s);
        return NULL;
    }
    s->running = true;
    return s;
}

void grad_sync_layer_done(void *sync, int layer) {
    GradSync *s = sync;
    int end = s->bucket_end[s->n_layers - 1 - layer];
    pthread_mutex_lock(&s->lock);
    if (end > s->released) {
        s->released = end;
        pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->lock);
}

int grad_sync_finish(GradSync *s, double *waited_ms, double *busy_ms, NfError *err) {
    double start = nf_now_ms();
    dist_wait_begin(s->d, "the gradients");
    pthread_mutex_lock(&s->lock);
    s->released = s->n_pieces;
    pthread_cond_signal(&s->work);
    while (s->done < s->n_pieces) pthread_cond_wait(&s->progress, &s->lock);
    int rc = s->rc;
    *busy_ms = s->busy_ms;
    s->released = s->next = s->done = 0;
    s->rc = MPI_SUCCESS;
    s->busy_ms = 0;
    pthread_mutex_unlock(&s->lock);
    dist_wait_end(s->d);
    *waited_ms = nf_now_ms() - start;
    if (rc != MPI_SUCCESS) return dist_mpi_failed(rc, "summing the gradients", err);
    if (s->shards) shard_gather(s);
    return 0;
}

void grad_sync_free(GradSync *s) {
    if (!s) return;
    if (s->running) {
        pthread_mutex_lock(&s->lock);
        s->quit = true;
        pthread_cond_signal(&s->work);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    if (s->locks) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->work);
        pthread_cond_destroy(&s->progress);
    }
    if (s->comm != MPI_COMM_NULL) MPI_Comm_free(&s->comm);
    free(s->pieces);
    free(s->bucket_end);
    free(s->by_offset);
    free(s->counts);
    free(s);
}

#else /* NF_NO_MPI: one rank, nothing to sum (train.c's setup_overlap asks only with several) */

GradSync *grad_sync_create(Dist *d, float *grads, size_t n, const ParamSegment *seg, int n_seg, int n_layers,
                           const DistShards *shards, NfError *err) {
    (void)d, (void)grads, (void)n, (void)seg, (void)n_seg, (void)n_layers, (void)shards;
    nf_fail(err, NF_ERR_DIST, "the gradients' overlapped sum needs MPI, and this build has none");
    return NULL;
}

void grad_sync_layer_done(void *sync, int layer) { (void)sync, (void)layer; }

int grad_sync_finish(GradSync *s, double *waited_ms, double *busy_ms, NfError *err) {
    (void)s, (void)err;
    *waited_ms = *busy_ms = 0;
    return 0;
}

void grad_sync_free(GradSync *s) { (void)s; }

#endif
