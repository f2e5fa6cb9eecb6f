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
#include "model_open.h"
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

/* The flags' values. */
typedef struct {
    const char *model_path, *ckpt_path, *lora_path, *tokenizer_path, *prompt, *quant, *kv_cache;
    int64_t max_tokens, top_k, seed, threads;
    double temperature, top_p;
    bool text, parse_special;
} GenerateOptions;

/* A generation's state: what it loaded, the prompt's ids, the cache and the sampler. */
typedef struct {
    Model model;
    Lora lora;
    float *lora_buffer;
    Tokenizer tok;
    const char *prompt; /* --prompt, stdin's text or "" */
    size_t prompt_len;
    char *stdin_prompt; /* the prompt read from stdin, or NULL */
    TokenList prompt_ids;
    int positions; /* cache positions: the prompt, then one per generated token except the last */
    InferState state;
    Sampler sampler;
    TokenWriter writer;
} Generation;

static void generation_free(Generation *g) {
    free(g->writer.scratch);
    free(g->stdin_prompt);
    sampler_free(&g->sampler);
    infer_state_free(&g->state);
    token_list_free(&g->prompt_ids);
    tokenizer_free(&g->tok);
    free(g->lora_buffer);
    model_free(&g->model);
}

/* The model (quantized, with adapters) and the tokenizer, whose vocabulary must be the model's. */
static int load_model_and_tokenizer(Generation *g, const GenerateOptions *o, NfError *err) {
    if (o->lora_path && !o->model_path) return nf_fail(err, NF_ERR_USAGE, "--lora needs --model (the base model)");
    if (open_model(o->model_path, o->ckpt_path, &g->model, err) != 0 ||
        (strcmp(o->quant, "q8") == 0 && model_quantize_q8(&g->model, NF_Q8_GROUP, err) != 0) ||
        (o->lora_path &&
         lora_load(o->lora_path, o->model_path, &g->model.config, &g->lora, &g->lora_buffer, err) != 0) ||
        tokenizer_load(&g->tok, o->tokenizer_path, err) != 0)
        return -1;
    return tokenizer_check_vocab(&g->tok, g->model.config.vocab_size, err);
}

/* The prompt's text (--prompt, else stdin when piped, else empty) and its ids, which must leave room. */
static int encode_prompt(Generation *g, const GenerateOptions *o, NfError *err) {
    if (o->prompt) {
        g->prompt = o->prompt;
        g->prompt_len = strlen(o->prompt);
    } else if (!isatty(STDIN_FILENO)) {
        if (!(g->stdin_prompt = read_stdin(&g->prompt_len, err))) return -1;
        g->prompt = g->stdin_prompt;
    } else {
        g->prompt = "";
    }
    unsigned flags = tokenizer_default_flags(&g->tok) | (o->parse_special ? TOKENIZE_PARSE_SPECIAL : 0u);
    if (tokenizer_encode(&g->tok, g->prompt, g->prompt_len, flags, &g->prompt_ids, err) != 0) return -1;
    if (g->prompt_ids.len == 0) {
        /* nothing to continue from: start at BOS even where the tokenizer adds none */
        if (g->tok.bos_id < 0)
            return nf_fail(err, NF_ERR_USAGE, "the prompt is empty and the tokenizer has no BOS to start from");
        if (token_list_push(&g->prompt_ids, g->tok.bos_id, err) != 0) return -1;
    }
    int seq_len = g->model.config.seq_len;
    if ((int64_t)g->prompt_ids.len >= seq_len)
        return nf_fail(err, NF_ERR_USAGE, "the prompt is %zu tokens with BOS; the model's context is %d",
                       g->prompt_ids.len, seq_len);
    int64_t positions = (int64_t)g->prompt_ids.len - 1 + o->max_tokens;
    g->positions = positions > seq_len ? seq_len : (int)positions;
    return 0;
}

/* The KV cache, the sampler and the writer's scratch. */
static int prepare_sampling(Generation *g, const GenerateOptions *o, NfError *err) {
    KvCacheType kv_type = strcmp(o->kv_cache, "bf16") == 0 ? KV_CACHE_BF16 : KV_CACHE_F32;
    if (infer_state_init(&g->state, &g->model.config, g->positions, kv_type, err) != 0 ||
        sampler_init(&g->sampler, g->model.config.vocab_size, (float)o->temperature, (float)o->top_p, (int)o->top_k,
                     (uint64_t)o->seed, err) != 0)
        return -1;
    return (g->writer.scratch = nf_alloc(token_stream_room(&g->tok), err)) ? 0 : -1;
}

typedef struct {
    int generated;
    const char *stop; /* "max_tokens", "eos" or "context" */
    double total_ms, first_token_ms;
} GenerationResult;

/* The prompt in one batch (its last position predicts the first new token), then a token at a time until an
 * end-of-turn token (or BOS), --max-tokens or the context's end; each token written as it comes. */
static GenerationResult generate_tokens(Generation *g, const GenerateOptions *o) {
    GenerationResult res = {0, "max_tokens", 0, 0};
    double start = nf_now_ms();
    int n_prompt = (int)g->prompt_ids.len, token = g->prompt_ids.ids[n_prompt - 1];
    token_stream_init(&g->writer.stream, token);
    const Lora *adapters = o->lora_path ? &g->lora : NULL;
    float *logits = infer_forward(&g->model, adapters, &g->state, g->prompt_ids.ids, n_prompt, 0);
    for (int pos = n_prompt - 1;;) {
        int next = sampler_sample(&g->sampler, logits);
        if (res.generated == 0) res.first_token_ms = nf_now_ms() - start;
        if (tokenizer_is_eot(&g->tok, next) || next == g->tok.bos_id) {
            res.stop = "eos";
            break;
        }
        res.generated++;
        write_token(&g->writer, &g->tok, next);
        if (res.generated == o->max_tokens) break;
        if (++pos == g->positions) {
            res.stop = "context";
            break;
        }
        token = next;
        logits = infer_forward(&g->model, adapters, &g->state, &token, 1, pos);
    }
    res.total_ms = nf_now_ms() - start;
    return res;
}

/* `generate_done` (or the final newline of --text), and the log line. */
static void report_done(NfOut *out, const Generation *g, const GenerateOptions *o, const GenerationResult *r) {
    double tok_s = r->total_ms > 0 ? r->generated / (r->total_ms / 1000.0) : 0.0;
    if (g->writer.text_mode) {
        fputc('\n', out->stream);
        fflush(out->stream);
    } else {
        JsonBuf j;
        msg_begin(&j, "generate_done");
        json_int(&j, "tokens", r->generated);
        json_int(&j, "prompt_tokens", (int64_t)g->prompt_ids.len);
        json_number(&j, "total_ms", r->total_ms);
        json_number(&j, "first_token_ms", r->first_token_ms);
        json_number(&j, "tok_s", tok_s);
        json_str(&j, "stop_reason", r->stop);
        json_int(&j, "seed", o->seed);
        msg_emit(out, &j);
    }
    nf_log("generated %d tokens in %.0f ms (%.1f tok/s, stop: %s, seed %lld)", r->generated, r->total_ms, tok_s,
           r->stop, (long long)o->seed);
}

int cmd_generate(int argc, char **argv, NfOut *out) {
    GenerateOptions o = {
        .max_tokens = 256, .seed = -1, .temperature = 1.0, .top_p = 0.9, .quant = "none", .kv_cache = "fp32"};
    ArgSpec specs[] = {
        {"model", ARG_STRING, &o.model_path, .help = "llama2.c model file (v0, v1 or v2)"},
        {"ckpt", ARG_STRING, &o.ckpt_path,
         .help = "or a training checkpoint (a LoRA one merged into the base it names)"},
        {"lora", ARG_STRING, &o.lora_path, .help = "LoRA checkpoint applied on --model, unmerged"},
        {"tokenizer", ARG_STRING, &o.tokenizer_path,
         .help = "tokenizer.bin, builtin:bytes, tokenizer.json or its directory (default: a GGUF --model's own)"},
        {"prompt", ARG_STRING, &o.prompt, .help = "text to continue (default: stdin if piped, else empty)"},
        {"parse-special", ARG_FLAG, &o.parse_special,
         .help = "special tokens spelled in the prompt (<|eot_id|>) are control tokens, not text"},
        {"max-tokens", ARG_INT, &o.max_tokens, 1, 1 << 20, .help = "tokens to generate (default 256)"},
        {"temperature", ARG_FLOAT, &o.temperature, 0, 100, .help = "0 = greedy (default 1.0)"},
        {"top-p", ARG_FLOAT, &o.top_p, 1e-6, 1, .help = "nucleus sampling mass (default 0.9; 1 = off)"},
        {"top-k", ARG_INT, &o.top_k, 0, 1 << 22, .help = "sample from the k most likely tokens (default 0 = off)"},
        {"seed", ARG_INT, &o.seed, 0, 9007199254740991.0, .help = "random seed (default: from the clock)"},
        {"text", ARG_FLAG, &o.text, .help = "print plain text instead of NDJSON"},
        {"quant", ARG_CHOICE, &o.quant, .choices = "none|q8",
         .help = "q8: int8 weights with per-64 scales (default none)"},
        {"kv-cache", ARG_CHOICE, &o.kv_cache, .choices = "fp32|bf16",
         .help = "bf16: half the cache to read per token (default fp32)"},
        {"threads", ARG_INT, &o.threads, 0, 4096, .help = "threads (default 0 = one per core)"},
    };
    int exit_status;
    if (command_parse_flags("generate", "Generates text from a model, starting from BOS and the prompt.", specs,
                            ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    o.tokenizer_path = model_tokenizer(o.model_path, o.tokenizer_path);
    if (!o.tokenizer_path) {
        nf_fail(&err, NF_ERR_USAGE, "generate needs --tokenizer (a GGUF --model brings its own)");
        return emit_error(out, &err);
    }
    nf_set_threads((int)o.threads);
    if (o.seed < 0) o.seed = (int64_t)(time(NULL) ^ ((int64_t)getpid() << 16)) & 0x1FFFFFFFFFFFFF;

    Generation g = {.writer = {out, o.text || isatty(fileno(out->stream)), {0}, NULL}};
    int status = 0;
    if (load_model_and_tokenizer(&g, &o, &err) != 0 || encode_prompt(&g, &o, &err) != 0 ||
        prepare_sampling(&g, &o, &err) != 0) {
        status = emit_error(out, &err);
    } else {
        if (g.writer.text_mode && g.prompt_len > 0) {
            /* plain text reads as one passage: the prompt, then its continuation */
            fwrite(g.prompt, 1, g.prompt_len, out->stream);
            fflush(out->stream);
        }
        GenerationResult result = generate_tokens(&g, &o);
        report_done(out, &g, &o, &result);
    }
    generation_free(&g);
    return status;
}
