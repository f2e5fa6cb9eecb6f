/* wait_policy.h — how the OpenMP threads wait between parallel regions, chosen for a shared machine.
 *
 * libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it loads (before main), so the policy is set by
 * re-executing this program once at the start of a command that runs parallel work (main.c's table) with the
 * chosen values in its environment. A user's own
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept as it is, and NF_WAIT_POLICY_SET marks a process that already
 * went through this, so nothing re-executes twice (train's --restart-every, mpirun's ranks and the dashboard's
 * runs inherit the marker). docs/performance.md has the measurements behind the value. */
#ifndef NF_WAIT_POLICY_H
#define NF_WAIT_POLICY_H

#include "json.h"

/* The spin count neuralforge gives libgomp (its own default is 300000). */
#define NF_GOMP_SPINCOUNT "1000"
/* The marker's variable: "neuralforge" after the re-exec. */
#define NF_WAIT_POLICY_ENV "NF_WAIT_POLICY_SET"

/* Re-executes /proc/self/exe with argv and the chosen GOMP_SPINCOUNT, unless the user set OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT or the marker is present. Returns only when it did not re-execute (or execv failed: the
 * program then runs on with libgomp's defaults, which wait_policy_json reports). */
void wait_policy_apply(char **argv);

/* Adds "wait_policy": {"source": "neuralforge"|"user"|"libgomp", "omp_wait_policy": value or null,
 * "gomp_spincount": value or null}: what this process's libgomp read from its environment. */
void wait_policy_json(JsonBuf *j);

#endif
