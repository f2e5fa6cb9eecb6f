/* cmd_export.c — `neuralforge export`: a model, a checkpoint or LoRA
 * adapters written in another tool's format (export.h does the writing).
 *
 * Model formats (llama2c, llama2c-v1, gguf, safetensors) take the weights
 * from --model, --ckpt (a LoRA checkpoint is merged into the base it names)
 * or --model with --lora (merged). Adapter formats (gguf-lora, peft) write
 * the adapters alone, unmerged, from a LoRA --ckpt or --lora. GGUF embeds the
 * tokenizer: --tokenizer, or the one the checkpoint's run was given; the
 * safetensors directory gets a tokenizer.json's files (from either source),
 * while a tokenizer.bin has no place there. */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "checkpoint.h"
#include "commands.h"
#include "export.h"
#include "json_parse.h"
#include "model_open.h"
#include "util.h"

static bool is_adapter_format(const char *f) { return strcmp(f, "gguf-lora") == 0 || strcmp(f, "peft") == 0; }

/* The tokenizer a checkpoint's run was given (train --tokenizer), from its stored options; malloc'd, or NULL. */
static char *remembered_tokenizer(const char *options_json) {
    JsonValue options = {0};
    NfError err;
    char *path = NULL;
    if (options_json && json_parse(options_json, strlen(options_json), &options, &err) == 0) {
        const JsonValue *t = json_get(&options, "tokenizer");
        if (t && t->type == JV_STRING) path = strdup(t->text);
    }
    json_value_free(&options);
    return path;
}

/* The unmerged adapters of a LoRA checkpoint (ckpt_path) or of --lora on
 * --model, checked against their base model file. */
static int load_adapters(const char *model_path, const char *ckpt_path, const char *lora_path, ModelConfig *c,
                         Lora *lora, float **buffer, char **base_name, NfError *err) {
    char *base = NULL;
    const char *adapters = lora_path;
    if (ckpt_path) {
        Checkpoint ck;
        if (checkpoint_load(ckpt_path, &ck, false, err) != 0) return -1;
        if (!ck.is_lora) {
            checkpoint_free(&ck);
            return nf_fail(err, NF_ERR_USAGE, "'%s' is a full checkpoint; adapter formats need a LoRA checkpoint",
                           ckpt_path);
        }
        base = strdup(ck.base_path);
        checkpoint_free(&ck);
        if (!base) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        adapters = ckpt_path;
    } else if (!(base = strdup(model_path)))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    Model m;
    int rc = model_open(&m, base, err);
    if (rc == 0) {
        *c = m.config;
        rc = lora_load(adapters, base, &m.config, lora, buffer, err);
        model_free(&m);
    }
    if (rc != 0)
        free(base);
    else
        *base_name = base;
    return rc;
}

int cmd_export(int argc, char **argv, NfOut *out) {
    const char *model_path = NULL, *ckpt_path = NULL, *lora_path = NULL, *output = NULL, *format = "llama2c";
    const char *dtype_name = "f32", *tokenizer_path = NULL;
    ArgSpec specs[] = {
        {"ckpt", ARG_STRING, &ckpt_path,
         .help = "training checkpoint to export (LoRA: merged into the base it names, or the adapters alone for "
                 "gguf-lora/peft)"},
        {"model", ARG_STRING, &model_path, .help = "or a model file (any format we read)"},
        {"lora", ARG_STRING, &lora_path, .help = "LoRA checkpoint on --model: merged, or alone for gguf-lora/peft"},
        {"format", ARG_CHOICE, &format, .choices = "llama2c|llama2c-v1|gguf|safetensors|gguf-lora|peft",
         .help = "output format (default llama2c)"},
        {"dtype", ARG_CHOICE, &dtype_name, .choices = "f32|f16|q8_0",
         .help = "gguf: tensor type of the matrices (default f32)"},
        {"tokenizer", ARG_STRING, &tokenizer_path,
         .help = "gguf: the tokenizer to embed; safetensors: a tokenizer.json to copy beside the model (default: the "
                 "one the checkpoint's run was given)"},
        {"output", ARG_STRING, &output, .help = "file to write (a directory for safetensors and peft; required)"},
    };
    int n_specs = ARGS_COUNT(specs);
    int exit_status;
    if (command_parse_flags("export", "Writes a checkpoint, a model or LoRA adapters in another format.", specs,
                            n_specs, argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    bool adapters = is_adapter_format(format), gguf = strcmp(format, "gguf") == 0,
         hf_dir = strcmp(format, "safetensors") == 0;
    if (!output)
        nf_fail(&err, NF_ERR_USAGE, "export needs --output");
    else if (!!model_path + !!ckpt_path != 1)
        nf_fail(&err, NF_ERR_USAGE, "export needs exactly one of --model and --ckpt");
    else if (lora_path && !model_path)
        nf_fail(&err, NF_ERR_USAGE, "--lora needs --model (the base model)");
    else if (adapters && model_path && !lora_path)
        nf_fail(&err, NF_ERR_USAGE, "--format %s writes LoRA adapters: give --lora (with --model) or a LoRA --ckpt",
                format);
    else if (args_seen(specs, n_specs, "dtype") && !gguf)
        nf_fail(&err, NF_ERR_USAGE, "--dtype is for --format gguf");
    else if (tokenizer_path && !gguf && !hf_dir)
        nf_fail(&err, NF_ERR_USAGE, "--tokenizer is for --format gguf and safetensors (the formats that carry one)");
    else if (tokenizer_path && hf_dir && !tokenizer_path_is_hf(tokenizer_path))
        nf_fail(&err, NF_ERR_USAGE,
                "--tokenizer for --format safetensors is a tokenizer.json or its directory (its files are copied); "
                "a tokenizer.bin has no Hugging Face form");
    if (err.code) return emit_error(out, &err);

    ModelConfig c;
    ExportStats st = {0};
    uint64_t weights = 0; /* written: the model's, or the adapters' */
    int rc;
    if (adapters) {
        Lora lora;
        float *buffer = NULL;
        char *base = NULL;
        rc = load_adapters(model_path, ckpt_path, lora_path, &c, &lora, &buffer, &base, &err);
        if (rc == 0) weights = lora_param_count(&c, &lora.config);
        if (rc == 0)
            rc = strcmp(format, "peft") == 0 ? export_peft(output, &c, &lora, base, &st, &err)
                                             : export_gguf_lora(output, &c, &lora, &st, &err);
        free(buffer);
        free(base);
    } else {
        float *params = NULL;
        char *options = NULL, *remembered = NULL;
        Tokenizer tok = {0};
        bool have_tok = false;
        rc = load_flat_params(model_path, ckpt_path, lora_path, &c, &params, &options, &err);
        if (rc == 0) weights = config_param_count(&c);
        if (!tokenizer_path && (gguf || hf_dir)) remembered = remembered_tokenizer(options);
        /* --tokenizer, else what the checkpoint's run was given, else the model's own */
        const char *tp = tokenizer_path ? tokenizer_path : remembered ? remembered : model_tokenizer(model_path, NULL);
        if (rc == 0 && gguf && !tp)
            rc = nf_fail(&err, NF_ERR_USAGE, "--format gguf embeds the tokenizer: give --tokenizer (%s)",
                         ckpt_path ? "this checkpoint's run was given none" : "the one the model was trained with");
        /* safetensors: a run's tokenizer.bin is left out, as it always was */
        if (rc == 0 && (gguf || (hf_dir && tp && tokenizer_path_is_hf(tp)))) {
            rc = tokenizer_load(&tok, tp, &err);
            have_tok = rc == 0;
        }
        if (rc == 0) {
            if (strcmp(format, "llama2c") == 0)
                rc = export_llama2c(output, &c, params, 0, &st, &err);
            else if (strcmp(format, "llama2c-v1") == 0)
                rc = export_llama2c(output, &c, params, 1, &st, &err);
            else if (gguf) {
                ExportDtype dt = strcmp(dtype_name, "f16") == 0    ? EXPORT_F16
                                 : strcmp(dtype_name, "q8_0") == 0 ? EXPORT_Q8_0
                                                                   : EXPORT_F32;
                rc = export_gguf(output, &c, params, &tok, tp, dt, &st, &err);
            } else
                rc = export_safetensors(output, &c, params, have_tok ? &tok : NULL, tp, &st, &err);
        }
        if (have_tok) tokenizer_free(&tok);
        free(remembered);
        free(options);
        free(params);
    }
    if (rc != 0) return emit_error(out, &err);
    JsonBuf j;
    msg_begin(&j, "export");
    json_str(&j, "format", format);
    json_str(&j, "output", output);
    json_int(&j, "bytes", (int64_t)st.bytes);
    json_int(&j, "tensors", st.tensors);
    if (gguf) json_str(&j, "dtype", dtype_name);
    json_int(&j, "params", (int64_t)weights);
    msg_emit(out, &j);
    return 0;
}
