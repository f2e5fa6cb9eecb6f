/* chat_template.h — the chat templates `ingest` renders `messages` records
 * with (llama3, chatml, llama2), which one a tokenizer's
 * tokenizer_config.json asks for (`--chat-template auto`), and the check of
 * a chat's roles.
 *
 * A chat is an optional system message, then user and assistant messages
 * alternating, starting with user and ending with assistant. Rendering
 * gives parts, in order: BOS/EOS (the tokenizer's ids), special tokens of
 * the template (<|eot_id|>, <|im_start|>, ...: spelled out, the tokenizer
 * turns each into its one id) and text (template text and message content,
 * both plain text: a user who types <|eot_id|> gets those characters,
 * never the control token). Each part is trained (the loss counts it) or
 * not: exactly the assistant's content and its end-of-turn token are.
 *
 *   llama3  BOS, then per message
 *             <|start_header_id|> ROLE <|end_header_id|> "\n\n" CONTENT <|eot_id|>
 *           CONTENT stripped of surrounding whitespace (the template's `trim`)
 *   chatml  per message  <|im_start|> ROLE "\n" CONTENT <|im_end|> "\n"
 *           CONTENT as given (Qwen 2.5 / 3, SmolLM2)
 *   llama2  per (user, assistant) turn
 *             BOS "[INST] " [<<SYS>>\n SYSTEM \n<</SYS>>\n\n] USER " [/INST]" | ANSWER EOS
 *           contents stripped; the system block on the first turn only; the
 *           answer's text starts a fresh encoding (`fresh`), as NeuralForge
 *           has always encoded it (SentencePiece's dummy-prefix space on
 *           both halves), so tokenizer.bin ids stay what they were.
 * The llama3 and chatml templates need those special tokens in the
 * vocabulary; their text parts that follow one another are encoded as one
 * stretch, as Hugging Face tokenizes the rendered string (split at special
 * tokens, then pre-tokenized). docs/formats.md has examples. */
#ifndef NF_CHAT_TEMPLATE_H
#define NF_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "tokenizer.h"

struct JsonValue; /* json_parse.h */

typedef enum { CHAT_NONE, CHAT_LLAMA3, CHAT_CHATML, CHAT_LLAMA2 } ChatKind;

/* `ingest --chat-template` values, in ArgSpec's choices syntax. */
#define CHAT_TEMPLATE_CHOICES "auto|llama3|chatml|llama2|none"

/* "none", "llama3", "chatml", "llama2" */
const char *chat_kind_name(ChatKind k);

/* A template name (not "auto") into *k; -1 when it names none. */
int chat_kind_parse(const char *name, ChatKind *k);

/* The template a Jinja chat_template is, by its markers (as llama.cpp's
 * llm_chat_detect_template): <|start_header_id|> with <|end_header_id|>
 * is llama3, <|im_start|> chatml, [INST] llama2; CHAT_NONE for another. */
ChatKind chat_detect(const char *jinja);

/* The Jinja chat_template of the tokenizer.json at `path` (a file or its directory): tokenizer_config.json's
 * chat_template beside it (a string, or the entry named "default" of a list), or else the text of
 * chat_template.jinja there. *jinja is malloc'd, NULL when there is none. Errors: a file that cannot be read, a
 * config that is not a JSON object. */
int chat_template_text(const char *path, char **jinja, NfError *err);

typedef enum {
    CHAT_FOUND,   /* the tokenizer names a known template (or is a tokenizer.bin: llama2, as always) */
    CHAT_ABSENT,  /* a Hugging Face tokenizer with no chat_template */
    CHAT_UNKNOWN, /* a chat_template of another kind */
} ChatDetection;

/* What template `auto` finds for tokenizer t, loaded from --tokenizer
 * `path`: for a tokenizer.json, the chat_template of tokenizer_config.json
 * beside it (a string, or the entry named "default" of a list), or else the
 * text of chat_template.jinja there; for tokenizer.bin and builtin:bytes,
 * llama2. *kind is CHAT_NONE unless CHAT_FOUND. Errors: a config that
 * cannot be read or parsed. */
int chat_detect_for_tokenizer(const Tokenizer *t, const char *path, ChatKind *kind, ChatDetection *how, NfError *err);

/* The template a run uses: `kind`, or when it is CHAT_NONE, `refusal`: the
 * error a `messages` record gets (why there is no template, naming the flag).
 * default_system: the system message a chatml template writes when a chat
 * has none (Qwen 2.5's "You are Qwen, ...", SmolLM2's), read from the
 * template's text; "" when it writes none. */
typedef struct {
    ChatKind kind;
    char refusal[320];
    char default_system[512];
} ChatTemplate;

/* --chat-template `flag` (one of CHAT_TEMPLATE_CHOICES) for tokenizer t, loaded from `path`. */
int chat_template_choose(const char *flag, const Tokenizer *t, const char *path, ChatTemplate *out, NfError *err);

/* The system message a chatml Jinja template writes when a chat has none: the text of a string literal
 * '<|im_start|>system\n...<|im_end|>' in it, unescaped, into out (cap bytes); "" when there is none. */
void chat_default_system(const char *jinja, char *out, size_t cap);

typedef enum { CHAT_SYSTEM, CHAT_USER, CHAT_ASSISTANT } ChatRole;

/* "system", "user", "assistant" (exactly, with no NUL inside) into a role; -1 otherwise. */
int chat_role_parse(const char *s, size_t n);

typedef struct {
    ChatRole role;
    const char *content; /* content[0..len), as the record has it */
    size_t len;
} ChatMessage;

/* The chat m[0..*n) as template t renders it: with t's default system message first when the chat has none.
 * *out is m itself, or a new array (*owned, to free; NULL otherwise) of *n messages. Errors: memory. */
int chat_with_default_system(const ChatTemplate *t, const ChatMessage *m, int *n, const ChatMessage **out,
                             ChatMessage **owned, NfError *err);

/* A record's "messages" (an array of {"role", "content"} objects; other
 * members are ignored) as messages pointing into the JSON's strings: *out
 * (malloc'd, n of them) lives no longer than `messages`. Errors: bad_data. */
int chat_messages_from_json(const struct JsonValue *messages, ChatMessage **out, int *n, NfError *err);

typedef enum { PART_BOS, PART_EOS, PART_SPECIAL, PART_TEXT } ChatPartKind;

typedef struct {
    ChatPartKind kind;
    size_t start, len; /* PART_SPECIAL, PART_TEXT: its bytes in ChatRender.text */
    bool trained;      /* the loss counts its tokens */
    bool fresh;        /* PART_TEXT: encoded on its own, not joined to the text part before it */
} ChatPart;

typedef struct {
    char *text; /* every special's and text part's bytes, in order, NUL-terminated */
    size_t len, cap;
    ChatPart *parts;
    size_t n, parts_cap;
} ChatRender;

/* The chat m[0..n) through template `kind` (not CHAT_NONE) into r (reset
 * first). Errors (bad_data): roles out of order, no messages, a last
 * message that is not the assistant's. */
int chat_render(ChatKind kind, const ChatMessage *m, int n, ChatRender *r, NfError *err);

/* A prompt to generate the next answer from (`chat`, `generate --chat`):
 * the conversation m[0..n), which ends with the user's message, then the
 * template's generation prompt, as Hugging Face's add_generation_prompt:
 *   llama3  <|start_header_id|> "assistant" <|end_header_id|> "\n\n"
 *   chatml  <|im_start|> "assistant\n"
 *   llama2  nothing: the answer follows the last " [/INST]"
 * Every earlier answer is rendered as chat_render renders it, with its
 * end-of-turn token. Errors (bad_data): roles out of order, no messages, a
 * last message that is not the user's. */
int chat_render_prompt(ChatKind kind, const ChatMessage *m, int n, ChatRender *r, NfError *err);

void chat_render_free(ChatRender *r);

#endif
