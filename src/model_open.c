/* model_open.c — `--model` in any format (see model_open.h). */
#include "model_open.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "gguf_vocab.h"
#include "hf_model.h"
#include "import.h"
#include "params.h"
#include "util.h"

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int model_open(Model *m, const char *path, NfError *err) {
    if (gguf_is_file(path)) return import_gguf_model(m, path, err);
    if (!is_dir(path)) return model_load(m, path, err);
    ModelConfig c;
    float *params;
    ImportInfo info;
    if (import_model(path, NULL, &c, &params, &info, err) != 0) return -1;
    if (model_from_params(m, &c, params, err) != 0) {
        free(params);
        return -1;
    }
    m->owned = params; /* freed with the model */
    m->format = MODEL_HF;
    return 0;
}

int model_peek_config(const char *path, ModelConfig *c, NfError *err) {
    if (is_dir(path)) return hf_model_read_config(path, c, err);     /* config.json alone, not the weights */
    if (gguf_is_file(path)) return import_gguf_config(path, c, err); /* the metadata alone */
    Model m;
    if (model_open(&m, path, err) != 0) return -1;
    *c = m.config;
    model_free(&m);
    return 0;
}

const char *model_tokenizer(const char *model_path, const char *tokenizer_flag) {
    if (tokenizer_flag) return tokenizer_flag;
    if (!model_path) return NULL;
    if (is_dir(model_path)) {
        char *json = nf_path_join(model_path, "tokenizer.json");
        struct stat sb;
        bool found = json && stat(json, &sb) == 0 && S_ISREG(sb.st_mode);
        free(json);
        return found ? model_path : NULL; /* tokenizer_load reads a directory holding tokenizer.json */
    }
    if (gguf_is_file(model_path) && gguf_vocab_present(model_path)) return model_path; /* its vocabulary */
    return NULL;
}
