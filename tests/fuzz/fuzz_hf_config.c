/* fuzz_hf_config.c — a Hugging Face directory's config.json through
 * hf_model_read_config, as every --model naming a directory reads it first:
 * whatever it holds is a configuration that passes config_validate or a
 * refusal, never a crash or a huge allocation. */
#include <string.h>

#include "fuzz.h"
#include "hf_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("config.json");
    fuzz_write(path, data, size);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    ModelConfig c;
    NfError err;
    if (hf_model_read_config(dir, &c, &err) == 0 && config_validate(&c, NULL) != 0) abort();
    return 0;
}
