/* generation.h — what `generate` and `chat` share: their common flags,
 * loading the model and its tokenizer, the KV cache and sampler, the loop
 * that feeds a prompt and samples a reply (streamed as `token` messages or
 * plain text), and a chat's prompt through its template.
 *
 * A reply ends at an end-of-turn token (tokenizer_is_eot: EOS, <|eot_id|>,
 * <|im_end|>, ...) or BOS ("eos"), after --max-tokens ("max_tokens"), or at
 * the end of the KV cache ("context"); the stop token is not part of it. */
#ifndef NF_GENERATION_H
#define NF_GENERATION_H

#include <stdbool.h>
#include <stdint.h>

#include "args.h"
#include "chat_template.h"
#include "infer.h"
#include "json.h"
#include "protocol.h"
#include "records.h"
#include "sampler.h"
#include "tokenizer.h"

/* The flags both commands take. */
typedef struct {
    const char *model_path, *ckpt_path, *lora_path, *tokenizer_path, *quant, *kv_cache;
    int64_t max_tokens, top_k, seed, threads;
    double temperature, top_p;
    bool text, logprobs;
} GenerationOptions;

/* The defaults, before parsing. */
#define GENERATION_DEFAULTS \
    { .max_tokens = 256, .seed = -1, .temperature = 1.0, .top_p = 0.9, .quant = "none", .kv_cache = "fp32" }

/* The flags' ArgSpecs (o: a GenerationOptions *), inside a command's ArgSpec array initializer: the model's,
 * and sampling and output (max_tokens_help says what --max-tokens counts). Unformatted: clang-format would break
 * the last initializer's braces apart. */
/* clang-format off */
#define GENERATION_MODEL_SPECS(o)                                                                                      \
    {"model", ARG_STRING, &(o)->model_path,                                                                            \
     .help = "llama2.c model file (v0, v1 or v2), Hugging Face directory or GGUF file"},                               \
    {"ckpt", ARG_STRING, &(o)->ckpt_path,                                                                              \
     .help = "or a training checkpoint (a LoRA one merged into the base it names)"},                                   \
    {"lora", ARG_STRING, &(o)->lora_path, .help = "LoRA checkpoint applied on --model, unmerged"},                     \
    {"tokenizer", ARG_STRING, &(o)->tokenizer_path,                                                                    \
     .help = "tokenizer.bin, builtin:bytes, tokenizer.json or its directory (default: the model's own)"},             \
    {"quant", ARG_CHOICE, &(o)->quant, .choices = "none|q8",                                                           \
     .help = "q8: int8 weights with per-64 scales (default none)"},                                                    \
    {"kv-cache", ARG_CHOICE, &(o)->kv_cache, .choices = "fp32|bf16",                                                   \
     .help = "bf16: half the cache to read per token (default fp32)"},                                                 \
    {"threads", ARG_INT, &(o)->threads, 0, 4096, .help = "threads (default 0 = one per core)"}

#define GENERATION_SAMPLING_SPECS(o, max_tokens_help)                                                                  \
    {"max-tokens", ARG_INT, &(o)->max_tokens, 1, 1 << 20, .help = max_tokens_help},                                    \
    {"temperature", ARG_FLOAT, &(o)->temperature, 0, 100, .help = "0 = greedy (default 1.0)"},                         \
    {"top-p", ARG_FLOAT, &(o)->top_p, 1e-6, 1, .help = "nucleus sampling mass (default 0.9; 1 = off)"},                \
    {"top-k", ARG_INT, &(o)->top_k, 0, 1 << 22, .help = "sample from the k most likely tokens (default 0 = off)"},     \
    {"seed", ARG_INT, &(o)->seed, 0, 9007199254740991.0, .help = "random seed (default: from the clock)"},             \
    {"text", ARG_FLAG, &(o)->text, .help = "print plain text instead of NDJSON (the default on a terminal)"},          \
    {"logprobs", ARG_FLAG, &(o)->logprobs,                                                                             \
     .help = "each token message carries logprob: its log-probability under the model (temperature 1)"}
/* clang-format on */

/* Where generated tokens go: NDJSON `token` messages, or their bytes as plain text. */
typedef struct {
    NfOut *out;
    bool text_mode;     /* raw text on stdout instead of NDJSON */
    TokenStream stream; /* NDJSON mode: whole characters per message */
    char *scratch;      /* room for one token's text after UTF-8 repair */
} TokenWriter;

/* What a generation loaded and allocated. */
typedef struct {
    Model model;
    Lora lora;
    float *lora_buffer;
    const Lora *adapters; /* &lora under --lora, else NULL */
    Tokenizer tok;
    const char *tokenizer_path;
    InferState state; /* the KV cache: state.max_positions positions */
    Sampler sampler;
    TokenWriter writer;
    float *logits_copy; /* (vocab_size) under --logprobs: the logits before the sampler overwrites them */
} Generator;

typedef struct {
    int generated;    /* tokens of the reply, the stop token not counted */
    int cached;       /* positions of the KV cache that now hold the prompt and the reply's tokens fed back */
    const char *stop; /* "eos", "max_tokens" or "context" */
    double total_ms, first_token_ms;
} GenerationResult;

/* The tokenizer's path for `command`: --tokenizer, else the one that comes with --model (a Hugging Face
 * directory's tokenizer.json, a GGUF file's vocabulary: model_tokenizer); an error without either. */
const char *generation_tokenizer_path(const GenerationOptions *o, const char *command, NfError *err);

/* Threads and the seed (o->seed < 0 becomes one from the clock, which the messages report), the model
 * (quantized, with adapters) and the tokenizer, whose vocabulary must be the model's. The output is plain
 * text under --text or when `out` is a terminal. */
int generator_open(Generator *g, GenerationOptions *o, const char *command, NfOut *out, NfError *err);

/* The KV cache for `positions` positions (at most the model's seq_len), the sampler and the writer. */
int generator_prepare(Generator *g, const GenerationOptions *o, int positions, NfError *err);

/* Runs ids[0..n) (n >= 1) at positions pos .. pos+n-1, whose cache before pos must hold what came before
 * them, then samples a reply: each token written as it comes and, when reply is not NULL, appended to it.
 * pos + n must leave the cache a position. Errors: memory only (appending to reply). */
int generator_run(Generator *g, const GenerationOptions *o, const int *ids, int n, int pos, TokenList *reply,
                  GenerationResult *res, NfError *err);

/* The result's fields into the message being written (generate_done, turn): tokens, prompt_tokens, total_ms,
 * first_token_ms, tok_s, stop_reason, seed. */
void generation_result_json(JsonBuf *j, const GenerationResult *r, int64_t prompt_tokens, int64_t seed);

/* --chat-template `flag` (auto|llama3|chatml|llama2) for the generator's tokenizer; a tokenizer whose
 * template auto does not know, or that has none, is a usage error naming the flag. */
int generator_chat_template(const Generator *g, const char *flag, ChatTemplate *t, NfError *err);

/* The conversation m[0..n) (ending with the user's message; the template's default system message first when
 * it has none) and the template's generation prompt as ids, into d (its mask unused): chat_render_prompt,
 * encoded as ingest encodes a chat (document_from_chat). */
int generator_chat_prompt(const Generator *g, const ChatTemplate *t, const ChatMessage *m, int n, ChatRender *scratch,
                          Document *d, NfError *err);

void generator_free(Generator *g);

#endif
