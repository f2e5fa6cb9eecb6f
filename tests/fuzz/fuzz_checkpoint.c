/* fuzz_checkpoint.c — checkpoints through checkpoint_load (with the
 * optimizer state, as `train --resume` loads them).
 *
 * A checkpoint ends with a checksum over everything before it, so almost
 * every mutation would stop at the checksum. The harness therefore stores
 * the right checksum (checkpoint_checksum of the rest, by the version the
 * input says it is: FNV-1a before 3, XXH3 from 3) in the last 8 bytes before
 * loading, unless the input's last byte is 0xEE: then the file is loaded as
 * given, so a wrong checksum is fuzzed too. */
#include <string.h>

#include "checkpoint.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("run.ckpt");
    NfError err;
    if (size >= 8 && data[size - 1] != 0xEE) {
        uint8_t *copy = malloc(size);
        uint64_t sum;
        if (!copy) abort();
        memcpy(copy, data, size);
        uint32_t version = 0;
        if (size >= 12) memcpy(&version, data + 8, 4);
        if (checkpoint_checksum(copy, size - 8, version, &sum, &err) != 0) abort();
        memcpy(copy + size - 8, &sum, 8);
        fuzz_write(path, copy, size);
        free(copy);
    } else {
        fuzz_write(path, data, size);
    }
    Checkpoint ck;
    if (checkpoint_load(path, &ck, true, &err) != 0) return 0;
    fuzz_touch(ck.options_json, strlen(ck.options_json));
    fuzz_touch(ck.params, ck.n_params * sizeof(float));
    fuzz_touch(ck.adam_v, ck.n_params * sizeof(float));
    checkpoint_free(&ck);
    return 0;
}
