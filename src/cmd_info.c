/* cmd_info.c — `neuralforge info`: describes a model file and/or a tokenizer
 * as `info` messages {key: "model"|"tokenizer", value: {...}}. */
#include "args.h"
#include "commands.h"
#include "model.h"
#include "tokenizer.h"

static void emit_model_info(NfOut *out, const char *path, const Model *m) {
    JsonBuf j;
    msg_begin(&j, "info");
    json_string(&j, "key", "model");
    json_object_begin(&j, "value");
    json_string(&j, "path", path);
    json_string(&j, "format", model_format_name(m->format));
    json_string(&j, "dtype", m->dtype == NF_Q8 ? "q8_0" : "f32");
    if (m->dtype == NF_Q8) json_int(&j, "group_size", m->group_size);
    json_int(&j, "file_bytes", (int64_t)m->file.size);
    json_int(&j, "params", (int64_t)config_param_count(&m->config));
    json_model_config(&j, "config", &m->config);
    json_object_end(&j);
    msg_emit(out, &j);
}

static void emit_tokenizer_info(NfOut *out, const char *path, const Tokenizer *t) {
    JsonBuf j;
    msg_begin(&j, "info");
    json_string(&j, "key", "tokenizer");
    json_object_begin(&j, "value");
    json_string(&j, "path", path);
    json_int(&j, "vocab_size", t->vocab_size);
    json_int(&j, "max_token_length", t->max_token_length);
    json_int(&j, "unk_id", TOKEN_UNK);
    json_int(&j, "bos_id", TOKEN_BOS);
    json_int(&j, "eos_id", TOKEN_EOS);
    json_int(&j, "byte_pieces", t->n_byte_pieces);
    json_object_end(&j);
    msg_emit(out, &j);
}

int cmd_info(int argc, char **argv, NfOut *out) {
    const char *model_path = NULL, *tokenizer_path = NULL;
    ArgSpec specs[] = {
        {"model", ARG_STRING, &model_path, .help = "llama2.c model file (v0, v1 or v2)"},
        {"tokenizer", ARG_STRING, &tokenizer_path, .help = "llama2.c tokenizer.bin or builtin:bytes"},
    };
    NfError err = {0};
    bool help;
    if (args_parse(specs, 2, argc, argv, &help, &err) != 0) return emit_error(out, &err);
    if (help) {
        args_print_help("info", "Describes a model and/or a tokenizer.", specs, 2);
        return 0;
    }
    if (!model_path && !tokenizer_path) {
        nf_fail(&err, NF_ERR_USAGE, "info needs --model and/or --tokenizer");
        return emit_error(out, &err);
    }
    Model model = {0};
    Tokenizer tok = {0};
    int status = 0;
    if (model_path && model_load(&model, model_path, &err) != 0) goto fail;
    if (tokenizer_path && tokenizer_load(&tok, tokenizer_path, &err) != 0) goto fail;
    if (model_path && tokenizer_path && tokenizer_check_vocab(&tok, model.config.vocab_size, &err) != 0) goto fail;
    if (model_path) emit_model_info(out, model_path, &model);
    if (tokenizer_path) emit_tokenizer_info(out, tokenizer_path, &tok);
    goto done;
fail:
    status = emit_error(out, &err);
done:
    model_free(&model);
    tokenizer_free(&tok);
    return status;
}
