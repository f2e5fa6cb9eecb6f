/* fuzz_config.c — a --config file: json_parse, then args_apply_json over a
 * flag table with one flag of every kind (train's own rows are in
 * train_options.c; these are its kinds and ranges), as `train --config` reads
 * it. Values that are accepted are then written back with args_to_json, as
 * train stores its options in checkpoints, and that text must parse again. */
#include "args.h"
#include "fuzz.h"
#include "json.h"
#include "json_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *model = NULL, *schedule = "cosine";
    int64_t steps = 100, seed = 1337;
    double lr = 3e-4, dropout = 0.0;
    bool init = false;
    StringList sources = {0};
    ArgSpec specs[] = {
        {"model", ARG_STRING, &model, .help = "a string"},
        {"steps", ARG_INT, &steps, 1, 1e12, .help = "an integer"},
        {"seed", ARG_INT, &seed, 0, 9007199254740991.0, .help = "an integer up to 2^53 - 1"},
        {"lr", ARG_FLOAT, &lr, 0, 10, .help = "a float"},
        {"dropout", ARG_FLOAT, &dropout, 0, 0.999, .help = "a float in [0, 1)"},
        {"init", ARG_FLAG, &init, .help = "a flag"},
        {"schedule", ARG_CHOICE, &schedule, .choices = "cosine|linear|constant", .help = "a choice"},
        {"data", ARG_LIST, &sources, .help = "a repeatable string"},
        {"config", ARG_STRING, &model, .help = "refused as a key"},
    };
    int n_specs = (int)(sizeof specs / sizeof specs[0]);
    JsonValue config;
    NfError err;
    if (json_parse((const char *)data, size, &config, &err) != 0) return 0;
    if (args_apply_json(specs, n_specs, &config, &err) == 0) {
        JsonBuf out;
        json_init(&out);
        json_object_begin(&out, NULL);
        args_to_json(specs, n_specs, &out, "options");
        json_object_end(&out);
        JsonValue again;
        if (json_parse(out.data, strlen(out.data), &again, &err) != 0) {
            fprintf(stderr, "args_to_json wrote JSON its reader refuses: %s\n%s\n", err.message, out.data);
            abort();
        }
        json_value_free(&again);
        json_free(&out);
    }
    json_value_free(&config);
    return 0;
}
