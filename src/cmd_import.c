/* cmd_import.c — `neuralforge import`: a llama.cpp GGUF model or a Hugging
 * Face Llama directory becomes a llama2.c model file that NeuralForge
 * trains, evaluates and samples (import.h does the reading), and
 * optionally the GGUF's vocabulary becomes a tokenizer.bin. */
#include <stdlib.h>

#include "args.h"
#include "commands.h"
#include "export.h"
#include "import.h"
#include "protocol.h"

int cmd_import(int argc, char **argv, NfOut *out) {
    const char *input = NULL, *output = NULL, *tokenizer_out = NULL;
    ArgSpec specs[] = {
        {"input", ARG_STRING, &input,
         .help = "GGUF file, or Hugging Face model directory (config.json + safetensors); required"},
        {"output", ARG_STRING, &output, .help = "llama2.c model file to write (required)"},
        {"tokenizer-output", ARG_STRING, &tokenizer_out,
         .help = "GGUF: also write its vocabulary as a tokenizer.bin here"},
    };
    int exit_status;
    if (command_parse_flags("import", "Reads a GGUF or Hugging Face Llama model into a llama2.c model file.", specs,
                            ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (!input || !output) {
        nf_fail(&err, NF_ERR_USAGE, "import needs --input and --output");
        return emit_error(out, &err);
    }
    ModelConfig c;
    float *params = NULL;
    ImportInfo info;
    ExportStats st;
    if (import_model(input, tokenizer_out, &c, &params, &info, &err) != 0) return emit_error(out, &err);
    int rc = export_llama2c(output, &c, params, 0, &st, &err);
    free(params);
    if (rc != 0) return emit_error(out, &err);
    JsonBuf j;
    msg_begin(&j, "import");
    json_str(&j, "input", input);
    json_str(&j, "format", info.format);
    json_str(&j, "source_dtypes", info.dtypes);
    json_str(&j, "output", output);
    json_int(&j, "bytes", (int64_t)st.bytes);
    json_int(&j, "tensors", info.tensors);
    json_model_config(&j, "config", &c);
    json_int(&j, "params", (int64_t)config_param_count(&c));
    json_float(&j, "rms_eps", (float)info.rms_eps);
    if (tokenizer_out) {
        json_str(&j, "tokenizer_output", tokenizer_out);
        json_int(&j, "vocab_size", info.vocab_written);
    }
    msg_emit(out, &j);
    return 0;
}
