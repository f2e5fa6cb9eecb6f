/* generation.c — the generation loop `generate` and `chat` share (generation.h). */
#include "generation.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "model_open.h"
#include "util.h"

const char *generation_tokenizer_path(const GenerationOptions *o, const char *command, NfError *err) {
    const char *path = model_tokenizer(o->model_path, o->tokenizer_path);
    if (!path)
        nf_fail(err, NF_ERR_USAGE,
                "%s needs --tokenizer (a Hugging Face model directory or a GGUF file brings its own)", command);
    return path;
}

/* Prints token id: its bytes in text mode, whole characters (TokenStream) in NDJSON, with its log-probability
 * unless that is NAN. */
static void write_token(TokenWriter *w, const Tokenizer *t, int id, double logprob) {
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
    if (!isnan(logprob)) json_number(&j, "logprob", logprob);
    msg_emit(w->out, &j);
}

int generator_open(Generator *g, GenerationOptions *o, const char *command, NfOut *out, NfError *err) {
    memset(g, 0, sizeof *g);
    g->writer = (TokenWriter){out, o->text || isatty(fileno(out->stream)), {0}, NULL};
    if (o->logprobs && g->writer.text_mode)
        return nf_fail(err, NF_ERR_USAGE,
                       "--logprobs is a field of the NDJSON token messages, which plain text "
                       "(--text, or stdout a terminal) does not print");
    if (!(g->tokenizer_path = generation_tokenizer_path(o, command, err))) return -1;
    if (o->lora_path && !o->model_path) return nf_fail(err, NF_ERR_USAGE, "--lora needs --model (the base model)");
    nf_set_threads((int)o->threads);
    if (o->seed < 0) o->seed = (int64_t)(time(NULL) ^ ((int64_t)getpid() << 16)) & 0x1FFFFFFFFFFFFF;
    if (open_model(o->model_path, o->ckpt_path, &g->model, err) != 0 ||
        (strcmp(o->quant, "q8") == 0 && model_quantize_q8(&g->model, err) != 0) ||
        (o->lora_path &&
         lora_load(o->lora_path, o->model_path, &g->model.config, &g->lora, &g->lora_buffer, err) != 0) ||
        tokenizer_load(&g->tok, g->tokenizer_path, err) != 0)
        return -1;
    g->adapters = o->lora_path ? &g->lora : NULL;
    return tokenizer_check_vocab(&g->tok, g->model.config.vocab_size, err);
}

int generator_prepare(Generator *g, const GenerationOptions *o, int positions, NfError *err) {
    KvCacheType kv_type = strcmp(o->kv_cache, "bf16") == 0 ? KV_CACHE_BF16 : KV_CACHE_F32;
    if (infer_state_init(&g->state, &g->model.config, positions, kv_type, err) != 0 ||
        sampler_init(&g->sampler, g->model.config.vocab_size, (float)o->temperature, (float)o->top_p, (int)o->top_k,
                     (uint64_t)o->seed, err) != 0)
        return -1;
    infer_adapt_threads(&g->state, (int)o->threads);
    if (o->logprobs && !(g->logits_copy = nf_alloc_array((size_t)g->model.config.vocab_size, sizeof(float), err)))
        return -1;
    return (g->writer.scratch = nf_alloc(token_stream_room(&g->tok), err)) ? 0 : -1;
}

/* log softmax(logits)[id] over n logits, accumulated in double. */
static double log_prob(const float *logits, int n, int id) {
    float max = logits[0];
    for (int i = 1; i < n; i++) max = logits[i] > max ? logits[i] : max;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - max);
    return (double)logits[id] - max - log(sum);
}

/* The next token from logits (which the sampler overwrites); *logprob its log-probability under --logprobs,
 * else NAN. */
static int sample(Generator *g, float *logits, bool logprobs, double *logprob) {
    int v = g->model.config.vocab_size;
    if (logprobs) memcpy(g->logits_copy, logits, (size_t)v * sizeof(float));
    int next = sampler_sample(&g->sampler, logits);
    *logprob = logprobs ? log_prob(g->logits_copy, v, next) : NAN;
    return next;
}

/* The prompt in one batch (its last position predicts the first new token), then a token at a time until an
 * end-of-turn token (or BOS), --max-tokens or the cache's end; each token written as it comes. */
int generator_run(Generator *g, const GenerationOptions *o, const int *ids, int n, int pos, TokenList *reply,
                  GenerationResult *res, NfError *err) {
    *res = (GenerationResult){0, 0, "max_tokens", 0, 0};
    double start = nf_now_ms();
    int token = ids[n - 1];
    token_stream_init(&g->writer.stream, token);
    float *logits = infer_forward(&g->model, g->adapters, &g->state, ids, n, pos);
    int rc = 0;
    res->cached = pos + n;
    for (pos += n - 1;;) {
        double logprob;
        int next = sample(g, logits, o->logprobs, &logprob);
        if (res->generated == 0) res->first_token_ms = nf_now_ms() - start;
        if (tokenizer_is_eot(&g->tok, next) || next == g->tok.bos_id) {
            res->stop = "eos";
            break;
        }
        res->generated++;
        write_token(&g->writer, &g->tok, next, logprob);
        if (reply && token_list_push(reply, next, err) != 0) {
            rc = -1;
            break;
        }
        if (res->generated == o->max_tokens) break;
        if (++pos == g->state.max_positions) {
            res->stop = "context";
            break;
        }
        token = next;
        logits = infer_forward(&g->model, g->adapters, &g->state, &token, 1, pos);
        res->cached++;
    }
    res->total_ms = nf_now_ms() - start;
    return rc;
}

void generation_result_json(JsonBuf *j, const GenerationResult *r, int64_t prompt_tokens, int64_t seed) {
    json_int(j, "tokens", r->generated);
    json_int(j, "prompt_tokens", prompt_tokens);
    json_number(j, "total_ms", r->total_ms);
    json_number(j, "first_token_ms", r->first_token_ms);
    json_number(j, "tok_s", r->total_ms > 0 ? r->generated / (r->total_ms / 1000.0) : 0.0);
    json_str(j, "stop_reason", r->stop);
    json_int(j, "seed", seed);
}

int generator_chat_template(const Generator *g, const char *flag, ChatTemplate *t, NfError *err) {
    if (chat_template_choose(flag, &g->tok, g->tokenizer_path, t, err) != 0) return -1;
    return t->kind == CHAT_NONE ? nf_fail(err, NF_ERR_USAGE, "%s", t->refusal) : 0;
}

int generator_chat_prompt(const Generator *g, const ChatTemplate *t, const ChatMessage *m, int n, ChatRender *scratch,
                          Document *d, NfError *err) {
    ChatMessage *owned;
    const ChatMessage *chat;
    int rc = chat_with_default_system(t, m, &n, &chat, &owned, err) == 0 &&
                     chat_render_prompt(t->kind, chat, n, scratch, err) == 0
                 ? document_from_chat(&g->tok, t->kind, scratch, d, err)
                 : -1;
    free(owned);
    return rc;
}

void generator_free(Generator *g) {
    free(g->writer.scratch);
    free(g->logits_copy);
    sampler_free(&g->sampler);
    infer_state_free(&g->state);
    tokenizer_free(&g->tok);
    free(g->lora_buffer);
    model_free(&g->model);
}
