/* dist.h — the processes of a data-parallel training run, on MPI (Open MPI).
 *
 * Launched by mpirun, `train` is one of `size` ranks: dist_init joins them,
 * and the training loop (train.c) calls the few collectives below. Launched
 * any other way, a process is rank 0 of 1, nothing here calls MPI, and every
 * collective leaves its data as it is. Only train runs under mpirun (main.c
 * refuses the other commands there).
 *
 * Faults: in a run of several ranks, a watchdog thread in each ends the job
 * with an `error` when a rank on its host is gone (its pid, checked four
 * times a second: mpirun kills the others about two seconds after one dies,
 * so this must be quick), or when one collective has waited longer than the
 * timeout (a rank hung, or was lost on another host). Of the ranks that see
 * a loss, the lowest-numbered one still alive on that host writes the error.
 * MPI errors return codes (MPI_ERRORS_RETURN) and become NF_ERR_DIST.
 *
 * A build without MPI (NF_NO_MPI, where no mpicc was found: the arm64 cross
 * build) has every process rank 0 of 1, and refuses to run under a launcher. */
#ifndef NF_DIST_H
#define NF_DIST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "protocol.h"

/* The most one MPI call moves: MPI's counts are ints, and a reduction's
 * temporary buffers (Open MPI allocates them per call, as large as the data)
 * stay this small (16 MiB). */
#define DIST_CALL_FLOATS (1 << 22)

typedef struct {
    int rank, size;
    bool mpi; /* MPI was initialized (mpirun launched this process) */
    /* the watchdog (size > 1) */
    bool watching;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool finishing;         /* the run is ending: ranks may now exit */
    double waiting_since;   /* nf_now_ms() when the pending collective began; 0: none pending */
    const char *waiting_on; /* what that collective carries ("the gradients") */
    int64_t step;           /* the step being trained, for the messages */
    double timeout_s;       /* --dist-timeout */
    NfOut *out;             /* where the watchdog's error goes */
    int *peer_pid;          /* (size) each rank's pid */
    bool *peer_local;       /* (size) each rank runs on this host */
} Dist;

/* Whether an MPI launcher (mpirun, or srun with PMIx) started this process: its environment says so. */
bool dist_launched(void);
/* The world size mpirun gave this process (its environment), before MPI starts; 0 when it did not say. */
int dist_launched_size(void);

/* Whether this build has MPI (it was built without NF_NO_MPI). */
bool dist_has_mpi(void);
/* Refuses (NF_ERR_DIST) a process an MPI launcher started when this build has no MPI: the N copies would each do
 * the whole job. main.c asks before any command; dist_init asks too. */
int dist_check_build(NfError *err);

/* Joins the run's ranks (size 1 without a launcher). On failure d is a single process again. */
int dist_init(Dist *d, NfError *err);
/* Starts the watchdog (several ranks only): errors go to out, a collective may wait timeout_s. */
int dist_watch(Dist *d, NfOut *out, double timeout_s, NfError *err);
/* The step the messages of a lost rank name. */
void dist_set_step(Dist *d, int64_t step);
/* How many ranks run on this machine (this one included). */
int dist_ranks_here(const Dist *d);
/* Ends the run: a barrier (every rank got here), the watchdog stopped, MPI finalized. */
void dist_finalize(Dist *d);

/* The watchdog's clock for a wait outside these functions (grad_sync.c's): what names what the ranks exchange. */
void dist_wait_begin(Dist *d, const char *what);
void dist_wait_end(Dist *d);
/* An MPI return code rc != MPI_SUCCESS as an NF_ERR_DIST error ("<what> failed: <MPI's text>"); returns -1. */
int dist_mpi_failed(int rc, const char *what, NfError *err);

/* x[i] = the sum of every rank's x[i] (in place). */
int dist_sum_floats(Dist *d, float *x, size_t n, const char *what, NfError *err);
int dist_sum_doubles(Dist *d, double *x, int n, const char *what, NfError *err);
/* x[i] = the largest of every rank's x[i]. */
int dist_max_ints(Dist *d, int *x, int n, const char *what, NfError *err);
/* After a phase every rank went through, failed or not (err: this rank's
 * error when failed): 0 when no rank failed. Otherwise the lowest-numbered
 * failing rank emits its error, so the stream holds it once, and every rank
 * returns a non-zero exit status. One process: emits err when failed. */
int dist_settle(Dist *d, NfOut *out, int failed, const NfError *err);
/* all[r] = rank r's mine. */
int dist_gather_ints(Dist *d, int mine, int *all, NfError *err);

/* The flat buffers sharded by rank (--zero 1): rank r owns [lo_r, lo_r + count_r). */
typedef struct {
    int *counts, *displs; /* (size) per rank, in floats (MPI counts are ints) */
    size_t lo, hi;        /* this rank's: [displs[rank], displs[rank] + counts[rank]) */
} DistShards;
/* Cuts n floats into size slices of whole 64-byte lines (the last one shorter). */
int dist_shards(const Dist *d, size_t n, DistShards *s, NfError *err);
void dist_shards_free(DistShards *s);
/* x (n floats, every rank's whole gradient) summed over ranks; each rank's slice of the sum lands at x[0 ...). */
int dist_reduce_scatter(Dist *d, float *x, const DistShards *s, NfError *err);
/* x (n floats): every rank's slice (its own at x + displs[rank]) copied to every rank. */
int dist_all_gather(Dist *d, float *x, const DistShards *s, NfError *err);
/* Rank 0's full (n floats) gets every rank's slice (mine: this rank's); full is NULL on the other ranks. */
int dist_gather_to_root(Dist *d, const float *mine, float *full, const DistShards *s, NfError *err);
/* Rank 0's x[0 .. n) to every rank. */
int dist_broadcast_ints(Dist *d, int *x, int n, NfError *err);

#endif
