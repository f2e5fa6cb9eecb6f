/* fuzz_tokenfile.c — token files (tokenfile.h) through token_file_parse, as
 * data.c and ingest --incremental read them: what is accepted must have
 * exactly count ids of its width inside the input, so every id is read
 * (ASan sees any byte past the end), and the sum is kept so the reads are
 * not optimized away. */
#include "fuzz.h"
#include "tokenfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a copy of exactly `size` bytes, so a read past the input is a heap overflow ASan reports */
    unsigned char *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    TokenFileView v;
    NfError err;
    if (token_file_parse(copy, size, "data", "fuzz.bin", &v, &err) == 0) {
        if ((v.width != 2 && v.width != 4) || (v.legacy && v.width != 2)) abort();
        if ((size_t)(v.tokens - copy) + v.count * (uint64_t)v.width != size) abort();
        volatile uint64_t sum = 0;
        for (uint64_t i = 0; i < v.count; i++) sum += token_id_at(v.tokens, v.width, i);
        (void)sum;
    }
    free(copy);
    return 0;
}
