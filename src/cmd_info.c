/* cmd_info.c — `neuralforge info`: describes a model file, a tokenizer and/or
 * LoRA adapters as `info` messages {key: "model"|"tokenizer"|"lora", value: {...}}. */
#include <stdio.h>
#include <sys/stat.h>

#include "args.h"
#include "chat_template.h"
#include "checkpoint.h"
#include "commands.h"
#include "hf_model.h"
#include "hf_tokenizer.h"
#include "model.h"
#include "model_open.h"
#include "tokenizer.h"

/* Bytes the model was read from: its mapped file, or the files an imported model was converted from (a Hugging
 * Face directory's config.json and safetensors, hf_model_files; a GGUF file). */
static int64_t model_source_bytes(const char *path, const Model *m) {
    struct stat sb;
    if (m->file.size) return (int64_t)m->file.size;
    if (stat(path, &sb) != 0) return 0;
    if (!S_ISDIR(sb.st_mode)) return (int64_t)sb.st_size;
    char **files;
    int n;
    int64_t total = 0;
    NfError ignored; /* the model opened: its files list the same way */
    if (hf_model_files(path, &files, &n, &ignored) != 0) return 0;
    for (int i = 0; i < n; i++)
        if (stat(files[i], &sb) == 0) total += (int64_t)sb.st_size;
    hf_model_files_free(files, n);
    return total;
}

static void emit_model_info(NfOut *out, const char *path, const Model *m) {
    JsonBuf j;
    msg_begin(&j, "info");
    json_str(&j, "key", "model");
    json_object_begin(&j, "value");
    json_str(&j, "path", path);
    json_str(&j, "format", model_format_name(m->format));
    json_str(&j, "dtype", m->dtype == NF_Q8 ? "q8_0" : "f32");
    if (m->dtype == NF_Q8) json_int(&j, "group_size", m->group_size);
    json_int(&j, "file_bytes", model_source_bytes(path, m));
    json_int(&j, "params", (int64_t)config_param_count(&m->config));
    json_model_config(&j, "config", &m->config);
    json_object_end(&j);
    msg_emit(out, &j);
}

/* chat_template: what `ingest --chat-template auto` would use: the template's
 * name, "unknown" (a chat_template of another kind), or null (none). */
static void emit_tokenizer_info(NfOut *out, const char *path, const Tokenizer *t, ChatKind chat, ChatDetection how) {
    JsonBuf j;
    msg_begin(&j, "info");
    json_str(&j, "key", "tokenizer");
    json_object_begin(&j, "value");
    json_str(&j, "path", path);
    json_int(&j, "vocab_size", t->vocab_size);
    json_str(&j, "kind", tokenizer_kind_name(t->kind));
    json_int(&j, "max_token_length", t->max_token_length);
    json_int(&j, "unk_id", t->unk_id);
    json_int(&j, "bos_id", t->bos_id);
    json_int(&j, "eos_id", t->eos_id);
    json_bool(&j, "add_bos", t->add_bos);
    json_bool(&j, "add_eos", t->add_eos);
    json_array_begin(&j, "eot_ids");
    for (int i = 0; i < t->n_eot; i++) json_int(&j, NULL, t->eot_ids[i]);
    json_array_end(&j);
    json_int(&j, "byte_pieces", t->n_byte_pieces);
    /* tokenizer.json's added tokens: what --parse-special recognises (special) or always matches (not special) */
    json_array_begin(&j, "added_tokens");
    for (int i = 0; t->hf && i < hf_tokenizer_n_added(t->hf); i++) {
        int id;
        bool special;
        const char *content = hf_tokenizer_added(t->hf, i, &id, &special);
        json_object_begin(&j, NULL);
        json_int(&j, "id", id);
        json_str(&j, "content", content);
        json_bool(&j, "special", special);
        json_object_end(&j);
    }
    json_array_end(&j);
    if (how == CHAT_ABSENT)
        json_null_value(&j, "chat_template");
    else
        json_str(&j, "chat_template", how == CHAT_UNKNOWN ? "unknown" : chat_kind_name(chat));
    json_object_end(&j);
    msg_emit(out, &j);
}

static void emit_lora_info(NfOut *out, const char *path, const Checkpoint *ck) {
    JsonBuf j;
    char checksum[17];
    snprintf(checksum, sizeof checksum, "%016llx", (unsigned long long)ck->base_checksum);
    msg_begin(&j, "info");
    json_str(&j, "key", "lora");
    json_object_begin(&j, "value");
    json_str(&j, "path", path);
    json_lora_fields(&j, &ck->lora, (int64_t)ck->n_params);
    json_int(&j, "step", ck->step);
    json_str(&j, "base_path", ck->base_path);
    json_str(&j, "base_checksum", checksum);
    json_model_config(&j, "config", &ck->config);
    json_object_end(&j);
    msg_emit(out, &j);
}

int cmd_info(int argc, char **argv, NfOut *out) {
    const char *model_path = NULL, *tokenizer_path = NULL, *lora_path = NULL;
    ArgSpec specs[] = {
        {"model", ARG_STRING, &model_path, .help = "model: llama2.c file, Hugging Face directory or GGUF file"},
        {"tokenizer", ARG_STRING, &tokenizer_path,
         .help = "tokenizer.bin, builtin:bytes, tokenizer.json or its directory (default: the --model directory's "
                 "tokenizer.json)"},
        {"lora", ARG_STRING, &lora_path, .help = "LoRA checkpoint (with --model: checked against it)"},
    };
    int exit_status;
    if (command_parse_flags("info", "Describes a model, a tokenizer and/or LoRA adapters.", specs, ARGS_COUNT(specs),
                            argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (!model_path && !tokenizer_path && !lora_path) {
        nf_fail(&err, NF_ERR_USAGE, "info needs --model, --tokenizer and/or --lora");
        return emit_error(out, &err);
    }
    tokenizer_path = model_tokenizer(model_path, tokenizer_path); /* the model's own is described too */
    Model model = {0};
    Tokenizer tok = {0};
    Checkpoint adapters = {0};
    int status = 0;
    if (model_path && model_open(&model, model_path, &err) != 0) goto fail;
    ChatKind chat = CHAT_NONE;
    ChatDetection how = CHAT_ABSENT;
    if (tokenizer_path && (tokenizer_load(&tok, tokenizer_path, &err) != 0 ||
                           chat_detect_for_tokenizer(&tok, tokenizer_path, &chat, &how, &err) != 0))
        goto fail;
    if (model_path && tokenizer_path && tokenizer_check_vocab(&tok, model.config.vocab_size, &err) != 0) goto fail;
    if (lora_path) {
        if (checkpoint_load(lora_path, &adapters, false, &err) != 0) goto fail;
        if (!adapters.is_lora) {
            nf_fail(&err, NF_ERR_USAGE, "'%s' is a full checkpoint, not LoRA adapters", lora_path);
            goto fail;
        }
        if (model_path && checkpoint_check_base(&adapters, lora_path, model_path, &model.config, &err) != 0) goto fail;
    }
    if (model_path) emit_model_info(out, model_path, &model);
    if (tokenizer_path) emit_tokenizer_info(out, tokenizer_path, &tok, chat, how);
    if (lora_path) emit_lora_info(out, lora_path, &adapters);
    goto done;
fail:
    status = emit_error(out, &err);
done:
    checkpoint_free(&adapters);
    model_free(&model);
    tokenizer_free(&tok);
    return status;
}
