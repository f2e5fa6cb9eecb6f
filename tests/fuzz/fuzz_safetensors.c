/* fuzz_safetensors.c — safetensors files (the 8-byte length, the JSON
 * header, the tensor bytes) through st_open, as `import` opens them; then
 * every tensor's first and last byte touched. */
#include "fuzz.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("model.safetensors");
    fuzz_write(path, data, size);
    StFile f;
    NfError err;
    if (st_open(&f, path, &err) != 0) return 0;
    for (int i = 0; i < f.n_tensors; i++) fuzz_touch(f.tensors[i].data, f.tensors[i].bytes);
    st_find(&f, "model.embed_tokens.weight");
    st_close(&f);
    return 0;
}
