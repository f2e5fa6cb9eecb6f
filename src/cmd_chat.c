/* cmd_chat.c — `neuralforge chat`: a multi-turn chat with a model, one user
 * message a line of stdin (a terminal or a pipe; EOF ends it).
 *
 * Each turn renders the whole conversation with the model's chat template
 * and its generation prompt (generator_chat_prompt: the encoding ingest
 * trains on), so the prompt is always the template's own rendering. The KV
 * cache is kept across turns: the rendering's ids that equal the cached ones
 * (the longest common prefix) are not run again, only the rest (the end of
 * the last reply as the template closes it, the new message, the generation
 * prompt). Where a reply's tokens are not the tokenizer's encoding of its
 * text, the prefix ends there and the rest is run again: the cache always
 * holds exactly the rendering. A reply ends at the template's end-of-turn
 * token, --max-tokens or the end of the cache (--context); a turn whose
 * prompt does not fit the cache ends the chat with an error. Messages: the
 * reply's `token` messages as generate streams them, then one `turn`
 * (docs/protocol.md); plain text (--text, or stdout a terminal) prints each
 * reply on a line. On a terminal, "> " on stderr asks for each message. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "generation.h"
#include "util.h"

#define CHAT_MAX_MESSAGE ((size_t)1 << 20) /* bytes of one line of stdin */
#define CHAT_MAX_CONTEXT 4096              /* --context's default cap: the cache is allocated up front */

typedef struct {
    GenerationOptions gen;
    const char *system, *chat_template;
    int64_t context;
    bool prompt_ids;
} ChatOptions;

/* The conversation: messages whose contents it owns. */
typedef struct {
    ChatMessage *m;
    char **text; /* (n) each message's content, malloc'd */
    int n;
    size_t m_cap, text_cap;
} Conversation;

typedef struct {
    Generator gen;
    ChatTemplate tmpl;
    Conversation conv;
    ChatRender render;
    Document prompt;  /* this turn's prompt ids (the mask unused) */
    TokenList cached; /* the ids at the KV cache's positions 0 .. cached.len */
    TokenList reply;
    char *line;
    size_t line_cap;
} Chat;

static void chat_free(Chat *c) {
    for (int i = 0; i < c->conv.n; i++) free(c->conv.text[i]);
    free(c->conv.m);
    free(c->conv.text);
    chat_render_free(&c->render);
    document_free(&c->prompt);
    token_list_free(&c->cached);
    token_list_free(&c->reply);
    free(c->line);
    generator_free(&c->gen);
}

/* Appends a message whose content, text[0..n) (malloc'd, NUL-terminated), the conversation takes over (and
 * frees on failure). */
static int conversation_take(Conversation *v, ChatRole role, char *text, size_t n, NfError *err) {
    if (!nf_grow((void **)&v->m, &v->m_cap, (size_t)v->n + 1, sizeof *v->m, 16) ||
        !nf_grow((void **)&v->text, &v->text_cap, (size_t)v->n + 1, sizeof *v->text, 16)) {
        free(text);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    v->m[v->n] = (ChatMessage){role, text, n};
    v->text[v->n++] = text;
    return 0;
}

/* Appends a message with a copy of s[0..n). */
static int conversation_add(Conversation *v, ChatRole role, const char *s, size_t n, NfError *err) {
    char *copy = nf_alloc(n + 1, err); /* zeroed: NUL-terminated */
    if (!copy) return -1;
    memcpy(copy, s, n);
    return conversation_take(v, role, copy, n, err);
}

/* The next line of stdin without its line end into c->line: 1, 0 at EOF, -1 for a line over the limit. */
static int read_line(Chat *c, size_t *len, NfError *err) {
    size_t n = 0;
    int ch = EOF;
    while ((ch = getchar()) != EOF && ch != '\n') {
        if (n == CHAT_MAX_MESSAGE)
            return nf_fail(err, NF_ERR_USAGE, "a message on stdin is longer than %zu bytes", CHAT_MAX_MESSAGE);
        if (!nf_grow((void **)&c->line, &c->line_cap, n + 2, 1, 256))
            return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        c->line[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) return 0;
    if (n > 0 && c->line[n - 1] == '\r') n--; /* a CRLF line end */
    if (n > 0) c->line[n] = '\0';
    *len = n;
    return 1;
}

/* How many leading ids a and b share. */
static size_t common_prefix(const TokenList *a, const TokenList *b) {
    size_t n = 0;
    while (n < a->len && n < b->len && a->ids[n] == b->ids[n]) n++;
    return n;
}

/* The `turn` message. */
static void report_turn(Chat *c, const ChatOptions *o, int turn, size_t processed, const GenerationResult *r,
                        const char *text, size_t text_len) {
    NfOut *out = c->gen.writer.out;
    if (c->gen.writer.text_mode) {
        fputc('\n', out->stream);
        fflush(out->stream);
        return;
    }
    JsonBuf j;
    msg_begin(&j, "turn");
    json_int(&j, "turn", turn);
    json_int(&j, "prompt_tokens_processed", (int64_t)processed);
    generation_result_json(&j, r, (int64_t)c->prompt.ids.len, o->gen.seed);
    json_str_n(&j, "text", text, text_len);
    if (o->prompt_ids) {
        json_array_begin(&j, "prompt_ids");
        for (size_t i = 0; i < c->prompt.ids.len; i++) json_int(&j, NULL, c->prompt.ids.ids[i]);
        json_array_end(&j);
    }
    msg_emit(out, &j);
}

/* After a reply: the cache holds the prompt and the reply's tokens fed back (all but a last one that was not
 * run); the reply's text becomes the assistant's message. */
static int close_turn(Chat *c, const ChatOptions *o, int turn, size_t processed, const GenerationResult *r,
                      NfError *err) {
    TokenList *ids = &c->prompt.ids;
    c->cached.len = 0;
    for (size_t i = 0; i < (size_t)r->cached; i++)
        if (token_list_push(&c->cached, i < ids->len ? ids->ids[i] : c->reply.ids[i - ids->len], err) != 0) return -1;
    size_t len;
    char *text = tokenizer_decode(&c->gen.tok, c->reply.ids, c->reply.len, &len, err);
    if (!text) return -1;
    report_turn(c, o, turn, processed, r, text, len);
    return conversation_take(&c->conv, CHAT_ASSISTANT, text, len, err);
}

/* One user message: the conversation's prompt, its new ids through the model, the reply. */
static int chat_turn(Chat *c, const ChatOptions *o, int turn, size_t len, NfError *err) {
    if (conversation_add(&c->conv, CHAT_USER, c->line, len, err) != 0 ||
        generator_chat_prompt(&c->gen, &c->tmpl, c->conv.m, c->conv.n, &c->render, &c->prompt, err) != 0)
        return -1;
    TokenList *ids = &c->prompt.ids;
    int positions = c->gen.state.max_positions;
    if (ids->len >= (size_t)positions)
        return nf_fail(err, NF_ERR_USAGE,
                       "turn %d: the conversation is %zu tokens with this message; the context holds %d (--context, "
                       "at most the model's seq_len %d)",
                       turn, ids->len, positions, c->gen.model.config.seq_len);
    size_t keep = common_prefix(&c->cached, ids);
    if (keep == ids->len) keep--; /* the last id runs again: its logits start the reply */
    c->reply.len = 0;
    GenerationResult r;
    if (generator_run(&c->gen, &o->gen, ids->ids + keep, (int)(ids->len - keep), (int)keep, &c->reply, &r, err) != 0)
        return -1;
    return close_turn(c, o, turn, ids->len - keep, &r, err);
}

/* The template, the cache, and a first rendering (the system message and an empty one) so that a template
 * the vocabulary cannot spell is refused before anyone types. */
static int chat_start(Chat *c, const ChatOptions *o, ArgSpec *specs, int n_specs, NfError *err) {
    if (o->prompt_ids && c->gen.writer.text_mode)
        return nf_fail(err, NF_ERR_USAGE,
                       "--prompt-ids is a field of the NDJSON turn messages, which plain text "
                       "(--text, or stdout a terminal) does not print");
    if (generator_chat_template(&c->gen, o->chat_template, &c->tmpl, err) != 0) return -1;
    int seq_len = c->gen.model.config.seq_len;
    int64_t context = o->context;
    if (!args_seen(specs, n_specs, "context"))
        context = seq_len < CHAT_MAX_CONTEXT ? seq_len : CHAT_MAX_CONTEXT;
    else if (context > seq_len)
        return nf_fail(err, NF_ERR_USAGE, "--context %lld is more than the model's seq_len %d", (long long)context,
                       seq_len);
    if (o->system && conversation_add(&c->conv, CHAT_SYSTEM, o->system, strlen(o->system), err) != 0) return -1;
    ChatMessage probe[2];
    int n = 0;
    if (o->system) probe[n++] = c->conv.m[0];
    probe[n++] = (ChatMessage){CHAT_USER, "", 0};
    if (generator_chat_prompt(&c->gen, &c->tmpl, probe, n, &c->render, &c->prompt, err) != 0) return -1;
    return generator_prepare(&c->gen, &o->gen, (int)context, err);
}

/* Turns until EOF; on a terminal, "> " on stderr asks for each. Empty lines are skipped. */
static int chat_loop(Chat *c, const ChatOptions *o, NfError *err) {
    bool terminal = isatty(STDIN_FILENO);
    for (int turn = 1;;) {
        if (terminal) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        size_t len;
        int got = read_line(c, &len, err);
        if (got < 0) return -1;
        if (got == 0) {
            if (terminal) fputc('\n', stderr);
            return 0;
        }
        if (len == 0) continue;
        if (chat_turn(c, o, turn++, len, err) != 0) return -1;
    }
}

int cmd_chat(int argc, char **argv, NfOut *out) {
    ChatOptions o = {.gen = GENERATION_DEFAULTS, .chat_template = "auto"}; /* --context: chat_start picks its default */
    ArgSpec specs[] = {
        GENERATION_MODEL_SPECS(&o.gen),
        {"system", ARG_STRING, &o.system, .help = "a system message first"},
        {"chat-template", ARG_CHOICE, &o.chat_template, .choices = "auto|llama3|chatml|llama2",
         .help = "the template (default auto: the tokenizer's tokenizer_config.json)"},
        {"context", ARG_INT, &o.context, 1, NF_MAX_SEQ_LEN,
         .help = "positions of the KV cache, the conversation's limit (default: seq_len, at most 4096)"},
        {"prompt-ids", ARG_FLAG, &o.prompt_ids,
         .help = "each turn message carries prompt_ids: the rendered conversation the reply continues"},
        GENERATION_SAMPLING_SPECS(&o.gen, "tokens per reply (default 256)"),
    };
    int exit_status;
    if (command_parse_flags("chat", "Chats with a model: a user message a line of stdin, the replies as they come.",
                            specs, ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    Chat c = {0};
    int status = 0;
    if (generator_open(&c.gen, &o.gen, "chat", out, &err) != 0 ||
        chat_start(&c, &o, specs, ARGS_COUNT(specs), &err) != 0 || chat_loop(&c, &o, &err) != 0)
        status = emit_error(out, &err);
    chat_free(&c);
    return status;
}
