/* fuzz_model.c — model files (llama2.c v0, v1, v2) through model_load, as
 * `info`, `generate` and `train --model` open them; then the first and last
 * row of every matrix is read, so a size check that lets a view run past
 * the file shows up here. */
#include <stdlib.h>

#include "fuzz.h"
#include "model.h"

static void read_rows(const Tensor *t, size_t rows, int cols, float *buf) {
    tensor_row_f32(t, 0, cols, buf);
    tensor_row_f32(t, rows - 1, cols, buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("model.bin");
    fuzz_write(path, data, size);
    Model m;
    NfError err;
    if (model_load(&m, path, &err) != 0) return 0;
    const ModelConfig *c = &m.config;
    int kv = config_kv_dim(c);
    float *buf = malloc(sizeof(float) * (size_t)(c->hidden_dim > c->dim ? c->hidden_dim : c->dim));
    if (!buf) abort();
    read_rows(&m.weights.token_embedding, (size_t)c->vocab_size, c->dim, buf);
    read_rows(&m.weights.wcls, (size_t)c->vocab_size, c->dim, buf);
    fuzz_touch(m.weights.rms_final, sizeof(float) * (size_t)c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m.weights.layers[l];
        fuzz_touch(w->rms_att, sizeof(float) * (size_t)c->dim);
        fuzz_touch(w->rms_ffn, sizeof(float) * (size_t)c->dim);
        read_rows(&w->wq, (size_t)c->dim, c->dim, buf);
        read_rows(&w->wk, (size_t)kv, c->dim, buf);
        read_rows(&w->wv, (size_t)kv, c->dim, buf);
        read_rows(&w->wo, (size_t)c->dim, c->dim, buf);
        read_rows(&w->w1, (size_t)c->hidden_dim, c->dim, buf);
        read_rows(&w->w2, (size_t)c->dim, c->hidden_dim, buf);
        read_rows(&w->w3, (size_t)c->hidden_dim, c->dim, buf);
    }
    free(buf);
    model_free(&m);
    return 0;
}
