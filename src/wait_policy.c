/* wait_policy.c — the OpenMP wait policy: one re-exec at start-up with GOMP_SPINCOUNT set (wait_policy.h). */
#include "wait_policy.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool user_set(void) { return getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"); }

void wait_policy_apply(char **argv) {
    if (getenv(NF_WAIT_POLICY_ENV) || user_set()) return;
    /* The new image sees the marker and runs on. If setenv or execv fails (no /proc, no memory) this process runs
     * on with libgomp's defaults, and both variables are taken off again so that the report says so. */
    if (setenv(NF_WAIT_POLICY_ENV, "neuralforge", 1) == 0 && setenv("GOMP_SPINCOUNT", NF_GOMP_SPINCOUNT, 1) == 0)
        execv("/proc/self/exe", argv);
    unsetenv(NF_WAIT_POLICY_ENV);
    unsetenv("GOMP_SPINCOUNT");
}

static void env_or_null(JsonBuf *j, const char *key, const char *var) {
    const char *v = getenv(var);
    if (v)
        json_str(j, key, v);
    else
        json_null_value(j, key);
}

void wait_policy_json(JsonBuf *j) {
    const char *marker = getenv(NF_WAIT_POLICY_ENV);
    json_object_begin(j, "wait_policy");
    json_str(j, "source",
             marker && strcmp(marker, "neuralforge") == 0 ? "neuralforge"
             : user_set()                                 ? "user"
                                                          : "libgomp");
    env_or_null(j, "omp_wait_policy", "OMP_WAIT_POLICY");
    env_or_null(j, "gomp_spincount", "GOMP_SPINCOUNT");
    json_object_end(j);
}
