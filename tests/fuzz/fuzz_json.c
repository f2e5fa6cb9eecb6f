/* fuzz_json.c — the JSON reader (json_parse), behind --config, checkpoint
 * options, ingest's JSONL records, manifests and safetensors headers. A
 * value that parses is compared with itself and searched, which walks
 * every node it built. */
#include "fuzz.h"
#include "json_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    JsonValue v;
    NfError err;
    if (json_parse((const char *)data, size, &v, &err) != 0) return 0;
    if (!json_value_equal(&v, &v)) abort();
    json_get(&v, "text");
    json_value_free(&v);
    return 0;
}
