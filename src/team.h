/* team.h — a team of threads that stays up between the short parallel steps of generated tokens.
 *
 * A generated token is some 50-150 parallel steps (its weight products, its attention), each a few to a few
 * hundred microseconds. As OpenMP parallel regions each cost 4-7 us more than a barrier inside one region on the
 * 2-core AMD EPYC VM (its start and its end: docs/performance.md, "The read speed beside each token"), which on a
 * small model is a fifth of a token. Here the other threads wait for the next step spinning, for at most
 * TEAM_SPIN_US, then asleep on a condition variable, and a step starts with one store and ends with one count.
 * Tokens run on it and on OpenMP's regions in turn, in one process: llama2.c's 15M shape 16% faster in q8 and 8%
 * in fp32, SmolLM2-135M's q8 6%, the 110M and Qwen2.5-0.5B 1-3% (docs/performance.md, "Decode's own team").
 *
 * Only decode uses it (infer.c, for the products and the attention of one row), and nothing else runs threads
 * meanwhile: OpenMP's idle threads sleep after their own short spin (wait_policy.h), and two teams spinning on two
 * cores would take turns. Everything else (prompts, training, oneDNN) stays on OpenMP. */
#ifndef NF_TEAM_H
#define NF_TEAM_H

#include "error.h"

/* How long an idle thread spins for the next step before it sleeps. Within a token the steps follow each other
 * within a few microseconds; between tokens the sampler and the output take longer, and a process sharing the
 * machine should not lose a core to a wait (the sharing target, docs/performance.md). */
#define TEAM_SPIN_US 50

typedef struct NfTeam NfTeam;

/* One step: every thread calls job(ctx, thread, threads), thread 0 the caller, each with its own index */
typedef void (*NfTeamJob)(void *ctx, int thread, int threads);

/* A team of `threads` (the caller and threads - 1 started here); *team NULL, and 0, for threads < 2 */
int nf_team_init(NfTeam **team, int threads, NfError *err);
/* Runs one step on the first `threads` of the team (at most its size; below 2, or a NULL team, the caller runs it
 * alone as job(ctx, 0, 1)) and returns when all of them have finished it */
void nf_team_run(NfTeam *team, int threads, NfTeamJob job, void *ctx);
/* Stops and joins the threads; NULL is fine */
void nf_team_free(NfTeam *team);

#endif
