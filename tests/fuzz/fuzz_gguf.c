/* fuzz_gguf.c — GGUF files through gguf_open, as `import` and `info` open
 * them; then every key's value is read as the accessors allow (strings and
 * string arrays walked with gguf_string_at) and every tensor's first and
 * last byte touched; then the model configuration and the embedded
 * vocabulary are read from it as `--model x.gguf` reads them. */
#include "fuzz.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "import.h"

static void read_value(const GgufKv *kv) {
    uint64_t u;
    double d;
    const char *s;
    uint64_t len;
    const unsigned char *next;
    gguf_kv_uint(kv, &u);
    gguf_kv_float(kv, &d);
    if (kv->type == GGUF_STRING) {
        gguf_string_at(kv->value, &s, &len, &next);
        fuzz_touch(s, len);
    }
    if (kv->type == GGUF_ARRAY && kv->array_type == GGUF_STRING) {
        const unsigned char *at = kv->value;
        for (uint64_t i = 0; i < kv->array_count; i++) {
            gguf_string_at(at, &s, &len, &next);
            fuzz_touch(s, len);
            at = next;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("model.gguf");
    fuzz_write(path, data, size);
    GgufFile g;
    NfError err;
    if (gguf_open(&g, path, &err) != 0) return 0;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        fuzz_touch(g.kv[i].key, g.kv[i].key_len);
        read_value(&g.kv[i]);
    }
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        fuzz_touch(g.tensors[i].name, g.tensors[i].name_len);
        fuzz_touch(g.tensors[i].data, g.tensors[i].bytes);
    }
    gguf_find(&g, "general.architecture");
    gguf_find_tensor(&g, "token_embd.weight");
    gguf_close(&g);
    ModelConfig c;
    import_gguf_config(path, &c, &err);
    Tokenizer t;
    if (gguf_vocab_load(&t, path, &err) == 0) tokenizer_free(&t);
    return 0;
}
