/* fuzz_manifest.c — an ingest directory's manifest.json through
 * manifest_load, as `train`, `eval` and `ingest --incremental` read it. */
#include "fuzz.h"
#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(MANIFEST_NAME);
    fuzz_write(path, data, size);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    Manifest m;
    NfError err;
    if (manifest_load(dir, &m, &err) == 0) manifest_free(&m);
    return 0;
}
