/* cmd_export.c — `neuralforge export`: writes a model or checkpoint as a
 * llama2.c legacy (v0) model file, the one every llama2.c run.c loads: a
 * negative vocab_size marks a separate classifier, and the freq_cis tables
 * are filled in for readers that use them. LoRA adapters are merged:
 * W + (alpha/r) B A. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "checkpoint.h"
#include "commands.h"
#include "fileio.h"
#include "params.h"
#include "util.h"

static int write_llama2c(const char *path, const ModelConfig *c, const float *params, uint64_t *bytes,
                         NfError *err) {
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    int32_t header[7] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                         c->shared_classifier ? c->vocab_size : -c->vocab_size, c->seq_len};
    ParamSegment seg[PARAM_SEGMENTS_MAX];
    int n = param_segments(c, seg);
    /* everything up to rms_final, then freq_cis, then the separate classifier if any */
    size_t before_cls = seg[10].offset + seg[10].count;
    int hs = config_head_size(c);
    size_t half = (size_t)hs / 2;
    float *freq = nf_alloc_array(2 * (size_t)c->seq_len * half, sizeof(float), err);
    if (!freq) goto fail;
    for (int pos = 0; pos < c->seq_len; pos++)
        for (size_t i = 0; i < half; i++) {
            float angle = pos * (1.0f / powf(10000.0f, (float)(2 * i) / (float)hs));
            freq[(size_t)pos * half + i] = cosf(angle);
            freq[(size_t)c->seq_len * half + (size_t)pos * half + i] = sinf(angle);
        }
    if (atomic_file_write(&f, header, sizeof header, err) != 0 ||
        atomic_file_write(&f, params, before_cls * sizeof(float), err) != 0 ||
        atomic_file_write(&f, freq, 2 * (size_t)c->seq_len * half * sizeof(float), err) != 0 ||
        (n == PARAM_SEGMENTS_MAX && atomic_file_write(&f, params + seg[11].offset, seg[11].count * sizeof(float), err) != 0))
        goto fail;
    free(freq);
    *bytes = sizeof header + (config_param_count(c) + 2 * (uint64_t)c->seq_len * half) * sizeof(float);
    return atomic_file_commit(&f, err);
fail:
    free(freq);
    atomic_file_abort(&f);
    return -1;
}

int cmd_export(int argc, char **argv, NfOut *out) {
    const char *model_path = NULL, *ckpt_path = NULL, *lora_path = NULL, *output = NULL, *format = "llama2c";
    ArgSpec specs[] = {
        {"ckpt", ARG_STRING, &ckpt_path, .help = "training checkpoint to export (LoRA: merged into the base it names)"},
        {"model", ARG_STRING, &model_path, .help = "or a model file (any format we read)"},
        {"lora", ARG_STRING, &lora_path, .help = "LoRA checkpoint to merge into --model"},
        {"format", ARG_CHOICE, &format, .choices = "llama2c", .help = "output format (default llama2c)"},
        {"output", ARG_STRING, &output, .help = "file to write (required)"},
    };
    int n_specs = (int)(sizeof specs / sizeof specs[0]);
    NfError err = {0};
    int parsed = args_parse_command("export", "Writes a checkpoint or model in another format.", specs, n_specs, argc, argv, &err);
    if (parsed == ARGS_HELP) return 0;
    if (parsed == ARGS_ERROR) return emit_error(out, &err);
    if (!output) {
        nf_fail(&err, NF_ERR_USAGE, "export needs --output");
        return emit_error(out, &err);
    }
    ModelConfig c;
    float *params;
    uint64_t bytes;
    if (load_flat_params(model_path, ckpt_path, lora_path, &c, &params, &err) != 0) return emit_error(out, &err);
    int rc = write_llama2c(output, &c, params, &bytes, &err);
    free(params);
    if (rc != 0) return emit_error(out, &err);
    JsonBuf j;
    msg_begin(&j, "export");
    json_string(&j, "path", output);
    json_string(&j, "format", format);
    json_int(&j, "bytes", (int64_t)bytes);
    json_int(&j, "params", (int64_t)config_param_count(&c));
    msg_emit(out, &j);
    return 0;
}
