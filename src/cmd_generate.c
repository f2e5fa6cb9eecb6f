/* cmd_generate.c — `neuralforge generate`: text from a model.
 *
 * The prompt (after BOS) is fed through the KV-cached forward pass, then
 * tokens are sampled until an end-of-turn token, --max-tokens or the model's
 * seq_len (generation.c). With --chat the prompt is one user message (after
 * --system) through the model's chat template and its generation prompt.
 * Each generated token is streamed as a `token` message, followed by
 * `generate_done`; with --text the prompt and the generated text are printed
 * as plain text instead (under --chat, the reply alone). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "fileio.h"
#include "generation.h"
#include "json_parse.h"
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

/* The flags' values. */
typedef struct {
    GenerationOptions gen;
    const char *prompt, *system, *chat_template, *messages;
    bool parse_special, chat;
} GenerateOptions;

/* A generation's state: the generator, the prompt's text and its ids. */
typedef struct {
    Generator gen;
    const char *prompt; /* --prompt, stdin's text or "" */
    size_t prompt_len;
    char *stdin_prompt;  /* the prompt read from stdin, or NULL */
    Document prompt_doc; /* the prompt's ids (its mask unused) */
} Generation;

static void generation_free(Generation *g) {
    free(g->stdin_prompt);
    document_free(&g->prompt_doc);
    generator_free(&g->gen);
}

#define MAX_MESSAGES_FILE (16u << 20) /* --messages: as much as a prompt on stdin */

/* --messages FILE: a JSON array of {"role", "content"} (the conversation so far, the user's turn last) as
 * messages pointing into *doc, which the caller frees. */
static int read_messages(const char *path, JsonValue *doc, ChatMessage **m, int *n, NfError *err) {
    MappedFile f;
    if (mapped_file_open(&f, path, "messages", err) != 0) return -1;
    int rc = f.size > MAX_MESSAGES_FILE ? nf_fail(err, NF_ERR_USAGE, "larger than %u bytes", MAX_MESSAGES_FILE)
                                        : json_parse((const char *)f.data, f.size, doc, err);
    mapped_file_close(&f);
    if (rc == 0 && doc->type != JV_ARRAY) rc = nf_fail(err, NF_ERR_USAGE, "not a JSON array of messages");
    if (rc == 0) rc = chat_messages_from_json(doc, m, n, err);
    return rc == 0 ? 0 : nf_prefix(err, NF_ERR_USAGE, "--messages '%s': ", path);
}

/* --chat: the prompt as the user's message after the --system one (or the --messages conversation), with the
 * generation prompt. */
static int encode_chat(Generation *g, const GenerateOptions *o, NfError *err) {
    ChatTemplate tmpl;
    if (generator_chat_template(&g->gen, o->chat_template, &tmpl, err) != 0) return -1;
    ChatMessage one[2], *m = one, *from_file = NULL;
    JsonValue doc = {0};
    int n = 0;
    if (o->messages) {
        if (read_messages(o->messages, &doc, &from_file, &n, err) != 0) {
            json_value_free(&doc);
            return -1;
        }
        m = from_file;
    } else {
        if (o->system) m[n++] = (ChatMessage){CHAT_SYSTEM, o->system, strlen(o->system)};
        m[n++] = (ChatMessage){CHAT_USER, g->prompt, g->prompt_len};
    }
    ChatRender r = {0};
    int rc = n > 0 && m[n - 1].role == CHAT_USER
                 ? generator_chat_prompt(&g->gen, &tmpl, m, n, &r, &g->prompt_doc, err)
                 : nf_fail(err, NF_ERR_USAGE, "--messages '%s' must end with the user's message", o->messages);
    chat_render_free(&r);
    free(from_file);
    json_value_free(&doc);
    return rc;
}

/* The prompt's text (--prompt, else stdin when piped, else empty) and its ids, which must leave room. */
static int encode_prompt(Generation *g, const GenerateOptions *o, NfError *err) {
    if (o->messages) {
        g->prompt = ""; /* the conversation comes from the file */
    } else if (o->prompt) {
        g->prompt = o->prompt;
        g->prompt_len = strlen(o->prompt);
    } else if (!isatty(STDIN_FILENO)) {
        if (!(g->stdin_prompt = read_stdin(&g->prompt_len, err))) return -1;
        g->prompt = g->stdin_prompt;
    } else {
        g->prompt = "";
    }
    const Tokenizer *t = &g->gen.tok;
    TokenList *ids = &g->prompt_doc.ids;
    if (o->chat) {
        if (encode_chat(g, o, err) != 0) return -1;
    } else {
        unsigned flags = tokenizer_default_flags(t) | (o->parse_special ? TOKENIZE_PARSE_SPECIAL : 0u);
        if (tokenizer_encode(t, g->prompt, g->prompt_len, flags, ids, err) != 0) return -1;
    }
    if (ids->len == 0) {
        /* nothing to continue from: start at BOS even where the tokenizer adds none */
        if (t->bos_id < 0)
            return nf_fail(err, NF_ERR_USAGE, "the prompt is empty and the tokenizer has no BOS to start from");
        if (token_list_push(ids, t->bos_id, err) != 0) return -1;
    }
    int seq_len = g->gen.model.config.seq_len;
    if ((int64_t)ids->len >= seq_len)
        return nf_fail(err, NF_ERR_USAGE, "the prompt is %zu tokens with BOS; the model's context is %d", ids->len,
                       seq_len);
    return 0;
}

/* `generate_done` (or the final newline of --text), and the log line. */
static void report_done(NfOut *out, const Generation *g, const GenerateOptions *o, const GenerationResult *r) {
    if (g->gen.writer.text_mode) {
        fputc('\n', out->stream);
        fflush(out->stream);
    } else {
        JsonBuf j;
        msg_begin(&j, "generate_done");
        generation_result_json(&j, r, (int64_t)g->prompt_doc.ids.len, o->gen.seed);
        msg_emit(out, &j);
    }
    nf_log("generated %d tokens in %.0f ms (%.1f tok/s, stop: %s, seed %lld)", r->generated, r->total_ms,
           r->total_ms > 0 ? r->generated / (r->total_ms / 1000.0) : 0.0, r->stop, (long long)o->gen.seed);
}

/* Flags that only mean something with others. */
static int check_flags(const GenerateOptions *o, const ArgSpec *specs, int n_specs, NfError *err) {
    if (!o->chat && (o->system || args_seen(specs, n_specs, "chat-template")))
        return nf_fail(err, NF_ERR_USAGE, "--%s needs --chat", o->system ? "system" : "chat-template");
    if (o->messages && !o->chat) return nf_fail(err, NF_ERR_USAGE, "--messages needs --chat");
    if (o->messages && (o->prompt || o->system))
        return nf_fail(err, NF_ERR_USAGE, "--messages holds the whole conversation: it excludes --%s",
                       o->prompt ? "prompt" : "system");
    if (o->chat && o->parse_special)
        return nf_fail(err, NF_ERR_USAGE,
                       "--parse-special does not apply to --chat: a chat's messages are plain text, the template "
                       "adds its special tokens");
    return 0;
}

int cmd_generate(int argc, char **argv, NfOut *out) {
    GenerateOptions o = {.gen = GENERATION_DEFAULTS, .chat_template = "auto"};
    ArgSpec specs[] = {
        GENERATION_MODEL_SPECS(&o.gen),
        {"prompt", ARG_STRING, &o.prompt, .help = "text to continue (default: stdin if piped, else empty)"},
        {"parse-special", ARG_FLAG, &o.parse_special,
         .help = "special tokens spelled in the prompt (<|eot_id|>) are control tokens, not text"},
        {"chat", ARG_FLAG, &o.chat,
         .help = "the prompt is a user message: rendered with the chat template, the reply stops at end-of-turn"},
        {"system", ARG_STRING, &o.system, .help = "--chat: a system message before the prompt"},
        {"messages", ARG_STRING, &o.messages,
         .help = "--chat: a JSON file of the conversation so far ([{\"role\", \"content\"}, ...], the user's "
                 "message last) instead of --prompt"},
        {"chat-template", ARG_CHOICE, &o.chat_template, .choices = "auto|llama3|chatml|llama2",
         .help = "--chat: the template (default auto: the tokenizer's tokenizer_config.json)"},
        GENERATION_SAMPLING_SPECS(&o.gen, "tokens to generate (default 256)"),
    };
    int exit_status;
    if (command_parse_flags("generate", "Generates text from a model, starting from BOS and the prompt.", specs,
                            ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    Generation g = {0};
    int status = 0;
    if (check_flags(&o, specs, ARGS_COUNT(specs), &err) != 0 ||
        generator_open(&g.gen, &o.gen, "generate", out, &err) != 0 || encode_prompt(&g, &o, &err) != 0) {
        status = emit_error(out, &err);
    } else {
        /* the cache holds the prompt, then one position per generated token except the last */
        int64_t positions = (int64_t)g.prompt_doc.ids.len - 1 + o.gen.max_tokens;
        int seq_len = g.gen.model.config.seq_len;
        GenerationResult result;
        if (generator_prepare(&g.gen, &o.gen, positions > seq_len ? seq_len : (int)positions, &err) != 0) {
            status = emit_error(out, &err);
        } else {
            if (g.gen.writer.text_mode && g.prompt_len > 0 && !o.chat) {
                /* plain text reads as one passage: the prompt, then its continuation */
                fwrite(g.prompt, 1, g.prompt_len, out->stream);
                fflush(out->stream);
            }
            if (generator_run(&g.gen, &o.gen, g.prompt_doc.ids.ids, (int)g.prompt_doc.ids.len, 0, NULL, &result,
                              &err) != 0)
                status = emit_error(out, &err);
            else
                report_done(out, &g, &o, &result);
        }
    }
    generation_free(&g);
    return status;
}
