/* nf_probe.c — a test tool (not shipped) that exposes internals to the
 * end-to-end tests, which compare them with PyTorch and SentencePiece:
 *   nf_probe logits MODEL|CKPT OUT.f32 TOKEN...
 *                                             logits (T, V) float32 of the KV-cached forward
 *   nf_probe encode TOKENIZER IN.txt OUT.i32 ids of the text, no BOS, int32
 *   nf_probe decode TOKENIZER IN.i32 OUT.txt the text of int32 ids
 *   nf_probe stream TOKENIZER IN.i32 OUT.txt the same through generate's streaming decoder (TokenStream):
 *                                             what its `token` messages concatenate to
 *   nf_probe grads MODEL OUT.f32 B T TOKEN... TARGET...
 *                                             mean loss, then d loss / d params in the flat layout
 *   nf_probe grads-hf MODEL OUTDIR B T TOKEN... TARGET...
 *                                             the same as a Hugging Face directory (export_safetensors: HF
 *                                             names and row order) of gradients, and OUTDIR/loss.txt
 *   nf_probe logits-q8 MODEL OUT.f32 TOKEN... logits with the model quantized as generate --quant q8 does
 *   nf_probe logits-kv-bf16 MODEL OUT.f32 TOKEN...
 *                                             logits with a bf16 KV cache, as generate --kv-cache bf16
 *   nf_probe logits-lora MODEL ADAPTER OUT.f32 TOKEN...
 *                                             logits with a LoRA checkpoint applied unmerged
 *   nf_probe lora-grads MODEL ADAPTERS.f32 OUT.f32 RANK ALPHA TARGETS NORMS B T TOKEN... TARGET...
 *                                             adapters in lora.h layout on a frozen model: mean
 *                                             loss, d loss / d adapters, d loss / d embeddings (N, D)
 *   nf_probe lora-grads-hf MODEL ADAPTERS.f32 OUTDIR RANK ALPHA TARGETS B T TOKEN... TARGET...
 *                                             d loss / d adapters as a PEFT directory (export_peft: PEFT
 *                                             names, HF row order), and OUTDIR/loss.txt */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "export.h"
#include "fileio.h"
#include "infer.h"
#include "model.h"
#include "model_open.h"
#include "params.h"
#include "tokenizer.h"
#include "train_model.h"

static int die(const char *msg) {
    fprintf(stderr, "nf_probe: %s\n", msg);
    return 1;
}

static int write_all(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Logits (T, V) of the tokens at positions 0..T-1, with optional adapters. */
static int write_logits(const Model *m, const Lora *lora, KvCacheType kv_type, const char *out_path, char **token_args,
                        int T) {
    NfError err;
    int V = m->config.vocab_size;
    if (T > m->config.seq_len) return die("more tokens than the model's seq_len");
    InferState s;
    if (infer_state_init(&s, &m->config, T, kv_type, &err) != 0) return die(err.message);
    float *all = malloc((size_t)T * V * sizeof(float));
    for (int t = 0; t < T; t++) {
        int token = atoi(token_args[t]);
        if (token < 0 || token >= V) return die("token out of range");
        memcpy(all + (size_t)t * V, infer_forward(m, lora, &s, &token, 1, t), (size_t)V * sizeof(float));
    }
    int rc = write_all(out_path, all, (size_t)T * V * sizeof(float));
    free(all);
    infer_state_free(&s);
    return rc == 0 ? 0 : die("cannot write output");
}

static int probe_logits_q8(int argc, char **argv) {
    if (argc < 5) return die("usage: logits-q8 MODEL OUT TOKEN...");
    NfError err;
    Model m;
    if (model_open(&m, argv[2], &err) != 0 || model_quantize_q8(&m, &err) != 0) return die(err.message);
    int rc = write_logits(&m, NULL, KV_CACHE_F32, argv[3], argv + 4, argc - 4);
    model_free(&m);
    return rc;
}

static int probe_logits_lora(int argc, char **argv) {
    if (argc < 6) return die("usage: logits-lora MODEL ADAPTER OUT TOKEN...");
    NfError err;
    Model m;
    Lora lora;
    float *buffer;
    if (model_load(&m, argv[2], &err) != 0 || lora_load(argv[3], argv[2], &m.config, &lora, &buffer, &err) != 0)
        return die(err.message);
    int rc = write_logits(&m, &lora, KV_CACHE_F32, argv[4], argv + 5, argc - 5);
    free(buffer);
    model_free(&m);
    return rc;
}

/* OUTDIR/loss.txt: the loss in full precision */
static int write_loss(const char *dir, double loss) {
    char path[4096];
    snprintf(path, sizeof path, "%s/loss.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "%.17g\n", loss);
    return fclose(f) == 0 ? 0 : -1;
}

static int probe_lora_grads(int argc, char **argv) {
    /* lora-grads-hf has no NORMS argument: PEFT cannot hold trained norms */
    bool hf = strcmp(argv[1], "lora-grads-hf") == 0;
    int at = hf ? 8 : 9;
    if (argc < at + 2)
        return die("usage: lora-grads MODEL ADAPTERS OUT RANK ALPHA TARGETS NORMS B T TOKEN... TARGET... or "
                   "lora-grads-hf MODEL ADAPTERS OUTDIR RANK ALPHA TARGETS B T TOKEN... TARGET...");
    LoraConfig lc = {.rank = atoi(argv[5]),
                     .alpha = (float)atof(argv[6]),
                     .targets = (unsigned)atoi(argv[7]),
                     .train_norms = !hf && atoi(argv[8]) != 0};
    int B = atoi(argv[at]), T = atoi(argv[at + 1]);
    if (B < 1 || T < 1 || argc != at + 2 + 2 * B * T) return die("need B*T tokens and B*T targets");
    NfError err;
    ModelConfig c;
    float *base;
    if (load_flat_params(argv[2], NULL, NULL, &c, &base, NULL, &err) != 0) return die(err.message);
    if (lora_config_validate(&lc, &c, &err) != 0) return die(err.message);
    size_t n = (size_t)lora_param_count(&c, &lc), N = (size_t)B * T, D = (size_t)c.dim;
    MappedFile f;
    if (mapped_file_open(&f, argv[3], "adapters", &err) != 0) return die(err.message);
    if (f.size != n * sizeof(float)) return die("adapter file size does not fit the LoRA layout");
    float *adapters = malloc(n * sizeof(float)), *out = calloc(1 + n + N * D, sizeof(float));
    memcpy(adapters, f.data, f.size);
    mapped_file_close(&f);
    int *tokens = malloc(sizeof(int) * 2 * N), *targets = tokens + N;
    for (size_t i = 0; i < 2 * N; i++) {
        tokens[i] = atoi(argv[at + 2 + i]);
        if (i < N ? tokens[i] < 0 || tokens[i] >= c.vocab_size : tokens[i] >= c.vocab_size) /* targets < 0: masked */
            return die("token out of range");
    }
    if ((int)T > c.seq_len) return die("T is longer than the model's seq_len");
    Lora lora = {.config = lc};
    lora_pointers(&lora.w, adapters, &c, &lc);
    Net net;
    NetGrads g;
    ParamPointers base_w;
    param_pointers(&base_w, base, &c);
    net_lora(&net, &g, &c, &base_w, &lora, out + 1);
    Activations a;
    if (activations_init(&a, &c, &lc, B, T, false, &err) != 0) return die(err.message);
    out[0] = (float)model_forward(&net, &a, tokens, targets, 1.0f, 0);
    model_backward(&net, &g, NF_SET, &a, tokens);
    memcpy(out + 1 + n, a.dresid, N * D * sizeof(float)); /* d loss / d resid[0]: the embeddings' gradient */
    int rc;
    if (hf) { /* the gradients as adapters, written as PEFT writes adapters */
        Lora grads = {.config = lc};
        lora_pointers(&grads.w, out + 1, &c, &lc);
        ExportStats st;
        rc = export_peft(argv[4], &c, &grads, "", &st, &err) == 0 ? write_loss(argv[4], out[0]) : die(err.message);
    } else {
        rc = write_all(argv[4], out, (1 + n + N * D) * sizeof(float));
    }
    activations_free(&a);
    free(tokens);
    free(out);
    free(adapters);
    free(base);
    return rc == 0 ? 0 : die("cannot write output");
}

static int probe_logits(int argc, char **argv) {
    if (argc < 5) return die("usage: logits|logits-kv-bf16 MODEL OUT TOKEN...");
    NfError err;
    Model m;
    /* a checkpoint or a model file, told apart by the checkpoint magic */
    FILE *f = fopen(argv[2], "rb");
    char magic[8] = {0};
    if (f) {
        if (fread(magic, 1, 8, f) != 8) magic[0] = 0;
        fclose(f);
    }
    bool is_ckpt = memcmp(magic, "NFCKPT01", 8) == 0;
    if (open_model(is_ckpt ? NULL : argv[2], is_ckpt ? argv[2] : NULL, &m, &err) != 0) return die(err.message);
    KvCacheType kv_type = strcmp(argv[1], "logits-kv-bf16") == 0 ? KV_CACHE_BF16 : KV_CACHE_F32;
    int rc = write_logits(&m, NULL, kv_type, argv[3], argv + 4, argc - 4);
    model_free(&m);
    return rc;
}

static int probe_encode(int argc, char **argv) {
    if (argc != 5) return die("usage: encode TOKENIZER IN OUT");
    NfError err;
    Tokenizer t;
    MappedFile text;
    TokenList ids = {0};
    if (tokenizer_load(&t, argv[2], &err) != 0 || mapped_file_open(&text, argv[3], "text", &err) != 0 ||
        tokenizer_encode(&t, (const char *)text.data, text.size, 0, &ids, &err) != 0)
        return die(err.message);
    int rc = write_all(argv[4], ids.ids, ids.len * sizeof(int));
    token_list_free(&ids);
    mapped_file_close(&text);
    tokenizer_free(&t);
    return rc == 0 ? 0 : die("cannot write output");
}

static int probe_decode(int argc, char **argv) {
    if (argc != 5) return die("usage: decode TOKENIZER IN OUT");
    NfError err;
    Tokenizer t;
    MappedFile ids;
    if (tokenizer_load(&t, argv[2], &err) != 0 || mapped_file_open(&ids, argv[3], "ids", &err) != 0)
        return die(err.message);
    size_t len;
    char *text = tokenizer_decode(&t, (const int *)ids.data, ids.size / sizeof(int), &len, &err);
    if (!text) return die(err.message);
    int rc = write_all(argv[4], text, len);
    free(text);
    mapped_file_close(&ids);
    tokenizer_free(&t);
    return rc == 0 ? 0 : die("cannot write output");
}

static int probe_stream(int argc, char **argv) {
    if (argc != 5) return die("usage: stream TOKENIZER IN OUT");
    NfError err;
    Tokenizer t;
    MappedFile ids;
    if (tokenizer_load(&t, argv[2], &err) != 0 || mapped_file_open(&ids, argv[3], "ids", &err) != 0)
        return die(err.message);
    FILE *f = fopen(argv[4], "wb");
    char *room = malloc(token_stream_room(&t));
    if (!f || !room) return die("cannot write output");
    TokenStream s;
    token_stream_init(&s, -1);
    const int *id = (const int *)ids.data;
    for (size_t i = 0; i < ids.size / sizeof(int); i++) fwrite(room, 1, token_stream_push(&s, &t, id[i], room), f);
    int rc = fclose(f);
    free(room);
    mapped_file_close(&ids);
    tokenizer_free(&t);
    return rc == 0 ? 0 : die("cannot write output");
}

static int probe_grads(int argc, char **argv) {
    if (argc < 6) return die("usage: grads|grads-hf MODEL OUT B T TOKEN... TARGET...");
    int B = atoi(argv[4]), T = atoi(argv[5]);
    if (B < 1 || T < 1 || argc != 6 + 2 * B * T) return die("need B*T tokens and B*T targets");
    NfError err;
    Model m;
    if (model_open(&m, argv[2], &err) != 0) return die(err.message);
    size_t n = (size_t)config_param_count(&m.config);
    float *out = calloc(1 + 2 * n, sizeof(float)), *params = out + 1 + n, *grads = out + 1;
    int *tokens = malloc(sizeof(int) * 2 * B * T), *targets = tokens + B * T;
    for (int i = 0; i < 2 * B * T; i++) tokens[i] = atoi(argv[6 + i]);
    params_from_model(params, &m);
    Net net;
    NetGrads g;
    net_full(&net, &g, &m.config, params, grads);
    Activations a;
    if (activations_init(&a, &m.config, NULL, B, T, false, &err) != 0) return die(err.message);
    out[0] = (float)model_forward(&net, &a, tokens, targets, 1.0f, 0);
    model_backward(&net, &g, NF_SET, &a, tokens);
    int rc;
    if (strcmp(argv[1], "grads-hf") == 0) { /* the gradients as weights, written as export writes weights */
        ExportStats st;
        rc = export_safetensors(argv[3], &m.config, grads, NULL, NULL, &st, &err) == 0 ? write_loss(argv[3], out[0])
                                                                                       : die(err.message);
    } else {
        rc = write_all(argv[3], out, (1 + n) * sizeof(float));
    }
    activations_free(&a);
    free(tokens);
    free(out);
    model_free(&m);
    return rc == 0 ? 0 : die("cannot write output");
}

int main(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "grads") == 0 || strcmp(argv[1], "grads-hf") == 0))
        return probe_grads(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "logits") == 0 || strcmp(argv[1], "logits-kv-bf16") == 0))
        return probe_logits(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "logits-lora") == 0) return probe_logits_lora(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "logits-q8") == 0) return probe_logits_q8(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "lora-grads") == 0 || strcmp(argv[1], "lora-grads-hf") == 0))
        return probe_lora_grads(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "encode") == 0) return probe_encode(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "decode") == 0) return probe_decode(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "stream") == 0) return probe_stream(argc, argv);
    return die("usage: nf_probe logits|encode|decode ...");
}
