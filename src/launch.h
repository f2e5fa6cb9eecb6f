/* launch.h — `train --processes N` outside mpirun: this process becomes the
 * launcher of N data-parallel ranks. It runs `mpirun -np N <this program>
 * train <the same words>`, relays rank 0's NDJSON stream and ends with
 * mpirun's exit status, writing nothing of its own unless mpirun fails
 * without an error from the ranks.
 *
 * Why not mpirun alone (measured, Open MPI 4.1): mpirun answers SIGINT or
 * SIGTERM by killing its ranks a second or two later, and aborts the job
 * when the reader of its stdout is gone (a dashboard that died), so such a
 * stop loses the last messages and the final checkpoint of any step longer
 * than that. The launcher instead takes the stop signals itself and sends
 * SIGINT to the ranks on this host (one is enough: the ranks agree on the
 * stop, train.c), which checkpoint, write `done` and exit 0; and it reads
 * mpirun's stdout through a pipe that stays open as long as mpirun runs,
 * moving the lines to stderr when its own stdout fails (protocol.h), so a
 * run outlives the death of its supervisor as train alone does.
 *
 * The ranks get --bind-to none (a rank with several threads must not be
 * pinned to one core, mpirun's default for 2 ranks) and, on a local run
 * with --threads 0, OMP_NUM_THREADS = this process's threads / N (at least
 * 1), so N ranks share the cores the run was given. */
#ifndef NF_LAUNCH_H
#define NF_LAUNCH_H

#include "error.h"
#include "protocol.h"

typedef struct {
    int processes;        /* --processes: 0 (none asked), 1 (this process), N > 1 */
    const char *hostfile; /* --hostfile, or NULL: every rank on this host */
    int threads;          /* --threads: per rank when > 0 */
} LaunchOptions;

/* The rules of --processes and --hostfile. mpi_size: the ranks mpirun
 * started this process among, 0 when no MPI launcher started it. Under
 * mpirun a non-zero --processes must equal mpi_size (the ranks a launcher
 * starts see its words); outside, N > 1 needs mpirun on PATH. */
int launch_check(const LaunchOptions *l, int mpi_size, NfError *err);

/* Runs the ranks through mpirun (argv: train's words) and returns the exit status for this process. */
int launch_train(const LaunchOptions *l, int argc, char **argv, NfOut *out);

#endif
