/* cmd_eval.c — `neuralforge eval`: mean loss and perplexity of a model or
 * checkpoint on token data, over a fixed, evenly spaced set of windows
 * (masked targets of ingested instruction data left out).
 * LoRA adapters are merged into the base first. */
#include <math.h>
#include <stdlib.h>

#include "args.h"
#include "backend.h"
#include "checkpoint.h"
#include "commands.h"
#include "data.h"
#include "train_model.h"
#include "util.h"

int cmd_eval(int argc, char **argv, NfOut *out) {
    const char *model_path = NULL, *ckpt_path = NULL, *lora_path = NULL;
    StringList data = {0};
    int64_t batch = 4, seq = 0, batches = 20, threads = 0;
    ArgSpec specs[] = {
        {"model", ARG_STRING, &model_path, .help = "model file to evaluate"},
        {"ckpt", ARG_STRING, &ckpt_path, .help = "or a training checkpoint (a LoRA one on the base it names)"},
        {"lora", ARG_STRING, &lora_path, .help = "LoRA checkpoint to apply on --model"},
        {"data", ARG_LIST, &data, .help = "token file or directory (repeatable; required)"},
        {"batch", ARG_INT, &batch, 1, 4096, .help = "sequences per batch (default 4)"},
        {"seq", ARG_INT, &seq, 0, NF_MAX_SEQ_LEN, .help = "tokens per sequence (default: the model's seq_len)"},
        {"batches", ARG_INT, &batches, 1, 1e6, .help = "batches to average (default 20)"},
        {"threads", ARG_INT, &threads, 0, 4096, .help = "threads (default 0 = one per core)"},
    };
    int exit_status;
    if (command_parse_flags("eval", "Evaluates a model or checkpoint: mean loss and perplexity.", specs,
                            ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (data.n == 0) {
        nf_fail(&err, NF_ERR_USAGE, "eval needs --data");
        return emit_error(out, &err);
    }
    nf_set_threads((int)threads);
    ModelConfig c;
    float *params = NULL;
    TokenData d = {0};
    Activations acts = {0};
    int *tokens = NULL, *targets = NULL, status = 0;
    if (load_flat_params(model_path, ckpt_path, lora_path, &c, &params, NULL, &err) != 0) goto fail;
    if (seq == 0) seq = c.seq_len;
    if (seq > c.seq_len) {
        nf_fail(&err, NF_ERR_USAGE, "--seq %lld is longer than the model's seq_len %d", (long long)seq, c.seq_len);
        goto fail;
    }
    int B = (int)batch, T = (int)seq;
    if (token_data_open(&d, data.items, data.n, NULL, 0.0, c.vocab_size, T, &err) != 0 ||
        activations_init(&acts, &c, NULL, B, T, false, &err) != 0 ||
        !(tokens = nf_alloc_array((size_t)B * T, sizeof(int), &err)) ||
        !(targets = nf_alloc_array((size_t)B * T, sizeof(int), &err)))
        goto fail;
    Net net;
    net_full(&net, NULL, &c, params, NULL);
    /* the mean of the batches' means; with masked data, the mean over every counted target */
    double start = nf_now_ms(), total = 0.0, weighted = 0.0;
    int64_t counted = 0;
    for (int k = 0; k < batches; k++) {
        fixed_batch(d.train, d.n_train, k, (int)batches, B, T, tokens, targets);
        int n = d.train_masked ? model_counted_targets(targets, B * T) : B * T;
        if (n == 0) continue;
        double mean = model_forward(&net, &acts, tokens, targets, 0.0f, 0);
        total += mean;
        weighted += mean * n;
        counted += n;
    }
    if (counted == 0) {
        nf_fail(&err, NF_ERR_DATA, "every target of the evaluated windows is masked; evaluate more --batches");
        goto fail;
    }
    double loss = d.train_masked ? weighted / (double)counted : total / (double)batches, ms = nf_now_ms() - start;
    JsonBuf j;
    msg_begin(&j, "eval");
    json_number(&j, "loss", loss);
    json_number(&j, "ppl", exp(loss));
    json_int(&j, "batches", batches);
    json_int(&j, "tokens", batches * B * T);
    json_int(&j, "targets", counted);
    json_number(&j, "ms", ms);
    msg_emit(out, &j);
    nf_log("eval: loss %.4f, perplexity %.2f over %lld tokens", loss, exp(loss), (long long)(batches * B * T));
    goto done;
fail:
    status = emit_error(out, &err);
done:
    free(tokens);
    free(targets);
    activations_free(&acts);
    token_data_close(&d);
    free(params);
    return status;
}
