/* cmd_generate.c — `neuralforge generate`: text from a model.
 *
 * The prompt (after BOS) is fed through the KV-cached forward pass, then
 * tokens are sampled until EOS/BOS, --max-tokens or the model's seq_len.
 * Each generated token is streamed as a `token` message, followed by
 * `generate_done`; with --text the prompt and the generated text are printed
 * as plain text instead. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "backend.h"
#include "checkpoint.h"
#include "commands.h"
#include "infer.h"
#include "sampler.h"
#include "tokenizer.h"
#include "utf8.h"
#include "util.h"

#define MAX_STDIN_PROMPT (16u << 20)

/* Reads all of stdin (the prompt when --prompt is absent and stdin is not a terminal). */
static char *read_stdin(size_t *len, NfError *err) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        nf_fail(err, NF_ERR_MEMORY, "out of memory reading stdin");
        return NULL;
    }
    for (;;) {
        if (n + 1 == cap) {
            if (cap >= MAX_STDIN_PROMPT) {
                free(buf);
                nf_fail(err, NF_ERR_USAGE, "the prompt on stdin is larger than %u bytes", MAX_STDIN_PROMPT);
                return NULL;
            }
            if (!nf_grow((void **)&buf, &cap, cap + 1, 1, cap)) { /* doubles */
                free(buf);
                nf_fail(err, NF_ERR_MEMORY, "out of memory reading stdin");
                return NULL;
            }
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, stdin);
        n += got;
        if (got == 0) break;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

typedef struct {
    NfOut *out;
    bool text_mode;     /* raw text on stdout instead of NDJSON */
    TokenStream stream; /* NDJSON mode: whole characters per message */
    char *scratch;      /* room for one token's text after UTF-8 repair */
} TokenWriter;

/* Prints token id: its bytes in text mode, whole characters (TokenStream) in NDJSON. */
static void write_token(TokenWriter *w, const Tokenizer *t, int id) {
    if (w->text_mode) {
        unsigned char byte;
        size_t n;
        const char *bytes = tokenizer_decode_piece(t, w->stream.prev, id, &n, &byte);
        w->stream.prev = id;
        fwrite(bytes, 1, n, w->out->stream);
        fflush(w->out->stream);
        return;
    }
    size_t len = token_stream_push(&w->stream, t, id, w->scratch);
    JsonBuf j;
    msg_begin(&j, "token");
    json_int(&j, "token_id", id);
    json_str_n(&j, "text", w->scratch, len);
    msg_emit(w->out, &j);
}

int cmd_generate(int argc, char **argv, NfOut *out) {
    const char *model_path = NULL, *ckpt_path = NULL, *lora_path = NULL, *tokenizer_path = NULL, *prompt = NULL;
    int64_t max_tokens = 256, top_k = 0, seed = -1, threads = 0;
    double temperature = 1.0, top_p = 0.9;
    bool text_flag = false, parse_special = false;
    const char *quant = "none", *kv_cache = "fp32";
    ArgSpec specs[] = {
        {"model", ARG_STRING, &model_path, .help = "llama2.c model file (v0, v1 or v2)"},
        {"ckpt", ARG_STRING, &ckpt_path, .help = "or a training checkpoint (a LoRA one merged into the base it names)"},
        {"lora", ARG_STRING, &lora_path, .help = "LoRA checkpoint applied on --model, unmerged"},
        {"tokenizer", ARG_STRING, &tokenizer_path,
         .help = "tokenizer.bin, builtin:bytes, tokenizer.json or its directory (required)"},
        {"prompt", ARG_STRING, &prompt, .help = "text to continue (default: stdin if piped, else empty)"},
        {"parse-special", ARG_FLAG, &parse_special,
         .help = "special tokens spelled in the prompt (<|eot_id|>) are control tokens, not text"},
        {"max-tokens", ARG_INT, &max_tokens, 1, 1 << 20, .help = "tokens to generate (default 256)"},
        {"temperature", ARG_FLOAT, &temperature, 0, 100, .help = "0 = greedy (default 1.0)"},
        {"top-p", ARG_FLOAT, &top_p, 1e-6, 1, .help = "nucleus sampling mass (default 0.9; 1 = off)"},
        {"top-k", ARG_INT, &top_k, 0, 1 << 22, .help = "sample from the k most likely tokens (default 0 = off)"},
        {"seed", ARG_INT, &seed, 0, 9007199254740991.0, .help = "random seed (default: from the clock)"},
        {"text", ARG_FLAG, &text_flag, .help = "print plain text instead of NDJSON"},
        {"quant", ARG_CHOICE, &quant, .choices = "none|q8",
         .help = "q8: int8 weights with per-64 scales (default none)"},
        {"kv-cache", ARG_CHOICE, &kv_cache, .choices = "fp32|bf16",
         .help = "bf16: half the cache to read per token (default fp32)"},
        {"threads", ARG_INT, &threads, 0, 4096, .help = "threads (default 0 = one per core)"},
    };
    int exit_status;
    if (command_parse_flags("generate", "Generates text from a model, starting from BOS and the prompt.", specs,
                            ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (!tokenizer_path) {
        nf_fail(&err, NF_ERR_USAGE, "generate needs --tokenizer");
        return emit_error(out, &err);
    }
    nf_set_threads((int)threads);
    if (seed < 0) seed = (int64_t)(time(NULL) ^ ((int64_t)getpid() << 16)) & 0x1FFFFFFFFFFFFF;

    Model model = {0};
    Lora lora = {0};
    float *lora_buffer = NULL;
    Tokenizer tok = {0};
    TokenList prompt_ids = {0};
    InferState state = {0};
    Sampler sampler = {0};
    char *stdin_prompt = NULL;
    TokenWriter writer = {out, text_flag || isatty(fileno(out->stream)), {0}, NULL};
    int status = 0;

    if (lora_path && !model_path) {
        nf_fail(&err, NF_ERR_USAGE, "--lora needs --model (the base model)");
        goto fail;
    }
    if (open_model(model_path, ckpt_path, &model, &err) != 0 ||
        (strcmp(quant, "q8") == 0 && model_quantize_q8(&model, NF_Q8_GROUP, &err) != 0) ||
        (lora_path && lora_load(lora_path, model_path, &model.config, &lora, &lora_buffer, &err) != 0) ||
        tokenizer_load(&tok, tokenizer_path, &err) != 0 ||
        tokenizer_check_vocab(&tok, model.config.vocab_size, &err) != 0)
        goto fail;
    size_t prompt_len = 0;
    if (prompt) {
        prompt_len = strlen(prompt);
    } else if (!isatty(STDIN_FILENO)) {
        if (!(stdin_prompt = read_stdin(&prompt_len, &err))) goto fail;
        prompt = stdin_prompt;
    } else {
        prompt = "";
    }
    unsigned flags = tokenizer_default_flags(&tok) | (parse_special ? TOKENIZE_PARSE_SPECIAL : 0u);
    if (tokenizer_encode(&tok, prompt, prompt_len, flags, &prompt_ids, &err) != 0) goto fail;
    if (prompt_ids.len == 0) {
        /* nothing to continue from: start at BOS even where the tokenizer adds none */
        if (tok.bos_id < 0) {
            nf_fail(&err, NF_ERR_USAGE, "the prompt is empty and the tokenizer has no BOS to start from");
            goto fail;
        }
        if (token_list_push(&prompt_ids, tok.bos_id, &err) != 0) goto fail;
    }
    int seq_len = model.config.seq_len;
    if ((int64_t)prompt_ids.len >= seq_len) {
        nf_fail(&err, NF_ERR_USAGE, "the prompt is %zu tokens with BOS; the model's context is %d", prompt_ids.len,
                seq_len);
        goto fail;
    }
    /* positions: the prompt, then one per generated token except the last */
    int64_t positions = (int64_t)prompt_ids.len - 1 + max_tokens;
    if (positions > seq_len) positions = seq_len;
    KvCacheType kv_type = strcmp(kv_cache, "bf16") == 0 ? KV_CACHE_BF16 : KV_CACHE_F32;
    if (infer_state_init(&state, &model.config, (int)positions, kv_type, &err) != 0 ||
        sampler_init(&sampler, model.config.vocab_size, (float)temperature, (float)top_p, (int)top_k, (uint64_t)seed,
                     &err) != 0)
        goto fail;
    if (!(writer.scratch = nf_alloc(token_stream_room(&tok), &err))) goto fail;

    if (writer.text_mode && prompt_len > 0) {
        /* plain text reads as one passage: the prompt, then its continuation */
        fwrite(prompt, 1, prompt_len, out->stream);
        fflush(out->stream);
    }
    double start = nf_now_ms(), first_token_ms = 0;
    int generated = 0, n_prompt = (int)prompt_ids.len, token = prompt_ids.ids[n_prompt - 1];
    const char *stop = "max_tokens";
    token_stream_init(&writer.stream, token);
    const Lora *adapters = lora_path ? &lora : NULL;
    /* the prompt in one batch; its last position predicts the first new token */
    float *logits = infer_forward(&model, adapters, &state, prompt_ids.ids, n_prompt, 0);
    for (int pos = n_prompt - 1;;) {
        int next = sampler_sample(&sampler, logits);
        if (generated == 0) first_token_ms = nf_now_ms() - start;
        if (tokenizer_is_eot(&tok, next) || next == tok.bos_id) {
            stop = "eos";
            break;
        }
        generated++;
        write_token(&writer, &tok, next);
        if (generated == max_tokens) break;
        if (++pos == positions) {
            stop = "context";
            break;
        }
        token = next;
        logits = infer_forward(&model, adapters, &state, &token, 1, pos);
    }
    double total_ms = nf_now_ms() - start;
    double tok_s = total_ms > 0 ? generated / (total_ms / 1000.0) : 0.0;
    if (writer.text_mode) {
        fputc('\n', out->stream);
        fflush(out->stream);
    } else {
        JsonBuf j;
        msg_begin(&j, "generate_done");
        json_int(&j, "tokens", generated);
        json_int(&j, "prompt_tokens", (int64_t)prompt_ids.len);
        json_number(&j, "total_ms", total_ms);
        json_number(&j, "first_token_ms", first_token_ms);
        json_number(&j, "tok_s", tok_s);
        json_str(&j, "stop_reason", stop);
        json_int(&j, "seed", seed);
        msg_emit(out, &j);
    }
    nf_log("generated %d tokens in %.0f ms (%.1f tok/s, stop: %s, seed %lld)", generated, total_ms, tok_s, stop,
           (long long)seed);
    goto done;
fail:
    status = emit_error(out, &err);
done:
    free(writer.scratch);
    free(stdin_prompt);
    sampler_free(&sampler);
    infer_state_free(&state);
    token_list_free(&prompt_ids);
    tokenizer_free(&tok);
    free(lora_buffer);
    model_free(&model);
    return status;
}
