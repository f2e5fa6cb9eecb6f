/* chat_template.c — chat templates: detection from tokenizer_config.json,
 * the check of a chat's roles, and rendering into parts (chat_template.h). */
#include "chat_template.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "hf_tokenizer.h"
#include "json_parse.h"
#include "textsplit.h"
#include "util.h"

static const char *const KIND_NAMES[] = {"none", "llama3", "chatml", "llama2"};

const char *chat_kind_name(ChatKind k) { return KIND_NAMES[k]; }

int chat_kind_parse(const char *name, ChatKind *k) {
    for (int i = 0; i < (int)(sizeof KIND_NAMES / sizeof KIND_NAMES[0]); i++)
        if (strcmp(name, KIND_NAMES[i]) == 0) {
            *k = (ChatKind)i;
            return 0;
        }
    return -1;
}

ChatKind chat_detect(const char *jinja) {
    /* Llama 3.1/3.2's template writes a date header into every system block, which llama3 does not render:
     * auto refuses it rather than render it almost right (--chat-template llama3 is then a choice) */
    if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>"))
        return strstr(jinja, "Cutting Knowledge Date") ? CHAT_NONE : CHAT_LLAMA3;
    if (strstr(jinja, "<|im_start|>")) return CHAT_CHATML;
    /* Llama 2's own has a system block; Mistral's [INST] templates differ in spacing and BOS placement and
     * have none: they are not llama2, so auto refuses them rather than render them almost right */
    if (strstr(jinja, "[INST]") && strstr(jinja, "<<SYS>>")) return CHAT_LLAMA2;
    return CHAT_NONE;
}

/* ---- detection from the tokenizer's files ---------------------------------- */

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The config's chat_template: a string, or in a list of {"name", "template"}
 * the one named "default". NULL when it has none. */
static const char *config_template(const json_t *config) {
    const json_t *t = json_object_get(config, "chat_template");
    if (json_is_string(t)) return json_string_value(t);
    for (size_t i = 0; json_is_array(t) && i < json_array_size(t); i++) {
        const json_t *item = json_array_get(t, i);
        const char *name = json_string_value(json_object_get(item, "name"));
        const char *body = json_string_value(json_object_get(item, "template"));
        if (name && body && strcmp(name, "default") == 0) return body;
    }
    return NULL;
}

/* The template in `file` (a whole tokenizer_config.json when `config`, else a chat_template.jinja): *jinja
 * malloc'd, NULL when a config has none. */
static int template_in_file(const char *file, bool config, char **jinja, NfError *err) {
    MappedFile f;
    *jinja = NULL;
    if (mapped_file_open(&f, file, config ? "tokenizer_config.json" : "chat_template.jinja", err) != 0) return -1;
    int rc = 0;
    const char *text = (const char *)f.data;
    size_t len = f.size;
    json_t *root = NULL;
    if (config) {
        /* as hf_tokenizer.c reads it: model_max_length may be 1e30 written as an integer */
        json_error_t je;
        root = json_loadb((const char *)f.data, f.size, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &je);
        if (!root)
            rc = nf_fail(err, NF_ERR_TOKENIZER, "'%s' is not valid JSON (%s)", file, je.text);
        else if (!json_is_object(root))
            rc = nf_fail(err, NF_ERR_TOKENIZER, "'%s' is not a JSON object", file);
        text = rc == 0 ? config_template(root) : NULL;
        len = text ? strlen(text) : 0;
    }
    if (rc == 0 && text && !(*jinja = nf_alloc(len + 1, err))) rc = -1;
    if (*jinja) memcpy(*jinja, text, len); /* nf_alloc zeroes: NUL-terminated */
    json_decref(root);
    mapped_file_close(&f);
    return rc;
}

int chat_template_text(const char *path, char **jinja, NfError *err) {
    *jinja = NULL;
    if (gguf_is_file(path)) return gguf_vocab_chat_template(path, jinja, err); /* a GGUF model's own */
    HfPaths files;
    if (hf_tokenizer_paths(path, &files, err) != 0) return -1;
    int rc = files.config ? template_in_file(files.config, true, jinja, err) : 0;
    if (rc == 0 && !*jinja) { /* newer model directories keep the template in a file of its own */
        char *file = nf_path_join(files.dir, "chat_template.jinja");
        if (!file)
            rc = nf_fail(err, NF_ERR_MEMORY, "out of memory");
        else if (is_file(file))
            rc = template_in_file(file, false, jinja, err);
        free(file);
    }
    hf_paths_free(&files);
    return rc;
}

/* chat_detect_for_tokenizer, and a ChatML template's default system message into default_system (cap bytes;
 * NULL: not wanted), from one reading of the template. */
static int detect(const Tokenizer *t, const char *path, ChatKind *kind, ChatDetection *how, char *default_system,
                  size_t cap, NfError *err) {
    *kind = CHAT_NONE;
    *how = CHAT_ABSENT;
    if (!t->hf) { /* tokenizer.bin and builtin:bytes: NeuralForge's Llama 2 chats, as always */
        *kind = CHAT_LLAMA2;
        *how = CHAT_FOUND;
        return 0;
    }
    char *jinja;
    if (chat_template_text(path, &jinja, err) != 0) return -1;
    if (jinja) {
        *kind = chat_detect(jinja);
        *how = *kind == CHAT_NONE ? CHAT_UNKNOWN : CHAT_FOUND;
        if (*kind == CHAT_CHATML && default_system) chat_default_system(jinja, default_system, cap);
    }
    free(jinja);
    return 0;
}

int chat_detect_for_tokenizer(const Tokenizer *t, const char *path, ChatKind *kind, ChatDetection *how, NfError *err) {
    return detect(t, path, kind, how, NULL, 0, err);
}

int chat_template_choose(const char *flag, const Tokenizer *t, const char *path, ChatTemplate *out, NfError *err) {
    memset(out, 0, sizeof *out);
    if (strcmp(flag, "auto") != 0) {
        if (chat_kind_parse(flag, &out->kind) != 0)
            return nf_fail(err, NF_ERR_USAGE, "--chat-template is one of %s, not '%s'", CHAT_TEMPLATE_CHOICES, flag);
        if (out->kind == CHAT_NONE)
            snprintf(out->refusal, sizeof out->refusal,
                     "a chat (\"messages\") under --chat-template none; name a template with --chat-template "
                     "auto|llama3|chatml|llama2");
        return 0;
    }
    ChatDetection how;
    if (detect(t, path, &out->kind, &how, out->default_system, sizeof out->default_system, err) != 0) return -1;
    if (how == CHAT_ABSENT)
        snprintf(out->refusal, sizeof out->refusal,
                 "a chat (\"messages\"), but the tokenizer '%.120s' has no chat_template (tokenizer_config.json); "
                 "name one with --chat-template llama3|chatml|llama2",
                 path);
    else if (how == CHAT_UNKNOWN)
        snprintf(out->refusal, sizeof out->refusal,
                 "a chat (\"messages\"), but the chat_template of the tokenizer '%.120s' is none that --chat-template "
                 "auto knows (llama3, chatml, llama2); name one with --chat-template llama3|chatml|llama2",
                 path);
    return 0;
}

void chat_default_system(const char *jinja, char *out, size_t cap) {
    static const char OPEN[] = "<|im_start|>system\\n", CLOSE[] = "<|im_end|>";
    out[0] = '\0';
    for (const char *at = strstr(jinja, OPEN); at; at = strstr(at + 1, OPEN)) {
        const char *text = at + strlen(OPEN), *end = strstr(text, CLOSE);
        if (!end || text == end) continue;
        /* inside one string literal: no quote before <|im_end|> (a quote ends it: an expression follows) */
        size_t n = 0;
        bool literal = true;
        for (const char *p = text; p < end && literal; p++) {
            char c = *p;
            if (c == '\'' || c == '"')
                literal = false;
            else if (c == '\\' && p + 1 < end)
                c = *++p == 'n' ? '\n' : *p; /* \n, \' and \\ as Jinja reads them */
            if (literal && n + 1 < cap) out[n++] = c;
        }
        if (literal && n + 1 < cap) {
            out[n] = '\0';
            return;
        }
        out[0] = '\0';
    }
}

int chat_with_default_system(const ChatTemplate *t, const ChatMessage *m, int *n, const ChatMessage **out,
                             ChatMessage **owned, NfError *err) {
    *owned = NULL;
    *out = m;
    if (!t->default_system[0] || (*n > 0 && m[0].role == CHAT_SYSTEM)) return 0;
    if (!(*owned = nf_alloc_array((size_t)*n + 1, sizeof **owned, err))) return -1;
    (*owned)[0] = (ChatMessage){CHAT_SYSTEM, t->default_system, strlen(t->default_system)};
    if (*n > 0) memcpy(*owned + 1, m, (size_t)*n * sizeof *m);
    (*n)++;
    *out = *owned;
    return 0;
}

/* ---- rendering ------------------------------------------------------------- */

int chat_role_parse(const char *s, size_t n) {
    static const char *const roles[] = {"system", "user", "assistant"};
    for (int r = 0; r < 3; r++)
        if (strlen(roles[r]) == n && memcmp(s, roles[r], n) == 0) return r;
    return -1;
}

static const char *role_name(ChatRole r) { return r == CHAT_SYSTEM ? "system" : r == CHAT_USER ? "user" : "assistant"; }

int chat_messages_from_json(const JsonValue *messages, ChatMessage **out, int *n, NfError *err) {
    *out = NULL;
    *n = 0;
    if (messages->type != JV_ARRAY) return nf_fail(err, NF_ERR_DATA, "\"messages\" is not an array");
    ChatMessage *m = messages->n > 0 ? nf_alloc_array((size_t)messages->n, sizeof *m, err) : NULL;
    if (messages->n > 0 && !m) return -1;
    for (int i = 0; i < messages->n; i++) {
        const JsonValue *v = &messages->items[i];
        const JsonValue *role = v->type == JV_OBJECT ? json_get(v, "role") : NULL,
                        *text = v->type == JV_OBJECT ? json_get(v, "content") : NULL;
        int r = role && role->type == JV_STRING ? chat_role_parse(role->text, role->len) : -1;
        int rc = 0;
        if (v->type != JV_OBJECT)
            rc = nf_fail(err, NF_ERR_DATA, "message %d is not an object", i + 1);
        else if (!role || role->type != JV_STRING)
            rc = nf_fail(err, NF_ERR_DATA, "message %d has no \"role\" string", i + 1);
        else if (!text || text->type != JV_STRING)
            rc = nf_fail(err, NF_ERR_DATA, "message %d has no \"content\" string", i + 1);
        else if (r < 0)
            rc = nf_fail(err, NF_ERR_DATA, "message %d has role \"%.40s\"; roles are system, user and assistant", i + 1,
                         role->text);
        if (rc != 0) {
            free(m);
            return -1;
        }
        m[i] = (ChatMessage){(ChatRole)r, text->text, text->len};
    }
    *out = m;
    *n = messages->n;
    return 0;
}

void chat_render_free(ChatRender *r) {
    free(r->text);
    free(r->parts);
    memset(r, 0, sizeof *r);
}

static int add_part(ChatRender *r, ChatPartKind kind, const char *s, size_t n, bool trained, bool fresh, NfError *err) {
    if (!nf_grow((void **)&r->parts, &r->parts_cap, r->n + 1, sizeof *r->parts, 32) ||
        !nf_grow((void **)&r->text, &r->cap, r->len + n + 1, 1, 256))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    r->parts[r->n++] = (ChatPart){kind, r->len, n, trained, fresh};
    if (n) memcpy(r->text + r->len, s, n);
    r->len += n;
    r->text[r->len] = '\0';
    return 0;
}

static int text(ChatRender *r, const char *s, size_t n, bool trained, NfError *err) {
    return add_part(r, PART_TEXT, s, n, trained, false, err);
}
static int lit(ChatRender *r, const char *s, NfError *err) { return text(r, s, strlen(s), false, err); }
static int special(ChatRender *r, const char *s, bool trained, NfError *err) {
    return add_part(r, PART_SPECIAL, s, strlen(s), trained, false, err);
}
static int token(ChatRender *r, ChatPartKind kind, bool trained, NfError *err) {
    return add_part(r, kind, "", 0, trained, false, err);
}

/* m's content, stripped of surrounding ASCII whitespace when `strip` */
static const char *content(const ChatMessage *m, bool strip, size_t *len) {
    size_t b = 0, e = m->len;
    if (strip) text_strip(m->content, &b, &e);
    *len = e - b;
    return m->content + b;
}

/* The roles' order: an optional system message, then user and assistant alternating, ending with `last`
 * (a chat to train on ends with the assistant's answer, a prompt with the user's message). */
static int check_roles(const ChatMessage *m, int n, ChatRole last, NfError *err) {
    int first = n > 0 && m[0].role == CHAT_SYSTEM ? 1 : 0;
    if (first >= n) return nf_fail(err, NF_ERR_DATA, "\"messages\" holds no user and assistant messages");
    for (int i = first; i < n; i++) {
        ChatRole due = (i - first) % 2 == 0 ? CHAT_USER : CHAT_ASSISTANT;
        if (m[i].role == due) continue;
        if (due == CHAT_USER)
            return nf_fail(err, NF_ERR_DATA,
                           "message %d has role \"%s\" where \"user\" is due (an optional system message first, then "
                           "user and assistant alternating)",
                           i + 1, role_name(m[i].role));
        return nf_fail(err, NF_ERR_DATA, "message %d has role \"%s\" where \"assistant\" is due", i + 1,
                       role_name(m[i].role));
    }
    if (m[n - 1].role != last)
        return nf_fail(err, NF_ERR_DATA,
                       last == CHAT_ASSISTANT
                           ? "the last message is from the user; a chat ends with the assistant's answer"
                           : "the last message is the assistant's; a prompt ends with the user's");
    return 0;
}

static int render_llama3(const ChatMessage *m, int n, bool prompt, ChatRender *r, NfError *err) {
    if (token(r, PART_BOS, false, err) != 0) return -1;
    for (int i = 0; i < n; i++) {
        bool answer = m[i].role == CHAT_ASSISTANT;
        size_t len;
        const char *c = content(&m[i], true, &len);
        if (special(r, "<|start_header_id|>", false, err) != 0 || lit(r, role_name(m[i].role), err) != 0 ||
            special(r, "<|end_header_id|>", false, err) != 0 || lit(r, "\n\n", err) != 0 ||
            text(r, c, len, answer, err) != 0 || special(r, "<|eot_id|>", answer, err) != 0)
            return -1;
    }
    if (!prompt) return 0;
    return special(r, "<|start_header_id|>", false, err) != 0 || lit(r, "assistant", err) != 0 ||
                   special(r, "<|end_header_id|>", false, err) != 0 || lit(r, "\n\n", err) != 0
               ? -1
               : 0;
}

static int render_chatml(const ChatMessage *m, int n, bool prompt, ChatRender *r, NfError *err) {
    for (int i = 0; i < n; i++) {
        bool answer = m[i].role == CHAT_ASSISTANT;
        size_t len;
        const char *c = content(&m[i], false, &len);
        if (special(r, "<|im_start|>", false, err) != 0 || lit(r, role_name(m[i].role), err) != 0 ||
            lit(r, "\n", err) != 0 || text(r, c, len, answer, err) != 0 || special(r, "<|im_end|>", answer, err) != 0 ||
            lit(r, "\n", err) != 0)
            return -1;
    }
    if (!prompt) return 0;
    return special(r, "<|im_start|>", false, err) != 0 || lit(r, "assistant", err) != 0 || lit(r, "\n", err) != 0 ? -1
                                                                                                                  : 0;
}

/* A prompt's last turn is its user message alone: Llama 2's template has no generation prompt, the answer
 * follows " [/INST]". */
static int render_llama2(const ChatMessage *m, int n, ChatRender *r, NfError *err) {
    int i = m[0].role == CHAT_SYSTEM ? 1 : 0;
    for (; i < n; i += 2) {
        size_t user_len;
        const char *user = content(&m[i], true, &user_len);
        if (token(r, PART_BOS, false, err) != 0 || lit(r, "[INST] ", err) != 0) return -1;
        r->parts[r->n - 1].fresh = true;
        if (i == 1) { /* the first turn of a chat with a system message */
            size_t sys_len;
            const char *sys = content(&m[0], true, &sys_len);
            if (lit(r, "<<SYS>>\n", err) != 0 || text(r, sys, sys_len, false, err) != 0 ||
                lit(r, "\n<</SYS>>\n\n", err) != 0)
                return -1;
        }
        if (text(r, user, user_len, false, err) != 0 || lit(r, " [/INST]", err) != 0) return -1;
        if (i + 1 == n) break; /* a prompt's last user message */
        size_t answer_len;
        const char *answer = content(&m[i + 1], true, &answer_len);
        if (add_part(r, PART_TEXT, answer, answer_len, true, true, err) != 0 || token(r, PART_EOS, true, err) != 0)
            return -1;
    }
    return 0;
}

/* The chat, or with `prompt` the conversation so far and the template's generation prompt. */
static int render(ChatKind kind, const ChatMessage *m, int n, bool prompt, ChatRender *r, NfError *err) {
    r->len = 0;
    r->n = 0;
    if (check_roles(m, n, prompt ? CHAT_USER : CHAT_ASSISTANT, err) != 0) return -1;
    switch (kind) {
    case CHAT_LLAMA3: return render_llama3(m, n, prompt, r, err);
    case CHAT_CHATML: return render_chatml(m, n, prompt, r, err);
    case CHAT_LLAMA2: return render_llama2(m, n, r, err);
    case CHAT_NONE: break;
    }
    return nf_fail(err, NF_ERR_DATA, "no chat template");
}

int chat_render(ChatKind kind, const ChatMessage *m, int n, ChatRender *r, NfError *err) {
    return render(kind, m, n, false, r, err);
}

int chat_render_prompt(ChatKind kind, const ChatMessage *m, int n, ChatRender *r, NfError *err) {
    return render(kind, m, n, true, r, err);
}
