/* chat_probe.c — a test tool (not shipped) that shows what chat_template.c
 * renders, for tests/e2e/test_chat.py to compare with the models' own
 * templates rendered by Jinja (tests/js/chat_render.mjs):
 *   chat_probe TEMPLATE < chats.jsonl
 * For each line {"messages": [...]} it prints one JSON line
 *   {"parts": [[KIND, TEXT, TRAINED, FRESH], ...]}   KIND: bos, eos, special, text
 * or {"error": MESSAGE} when the chat is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "json_parse.h"

static void print_parts(const ChatRender *r) {
    static const char *const kinds[] = {"bos", "eos", "special", "text"};
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_array_begin(&j, "parts");
    for (size_t k = 0; k < r->n; k++) {
        const ChatPart *p = &r->parts[k];
        json_array_begin(&j, NULL);
        json_str(&j, NULL, kinds[p->kind]);
        json_str_n(&j, NULL, r->text + p->start, p->len);
        json_bool(&j, NULL, p->trained);
        json_bool(&j, NULL, p->fresh);
        json_array_end(&j);
    }
    json_array_end(&j);
    json_object_end(&j);
    puts(j.data);
    json_free(&j);
}

static void print_error(const NfError *err) {
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_str(&j, "error", err->message);
    json_object_end(&j);
    puts(j.data);
    json_free(&j);
}

int main(int argc, char **argv) {
    ChatKind kind;
    if (argc != 2 || chat_kind_parse(argv[1], &kind) != 0 || kind == CHAT_NONE) {
        fprintf(stderr, "usage: chat_probe llama3|chatml|llama2 < chats.jsonl\n");
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        JsonValue v = {0};
        NfError err = {0};
        ChatMessage *m = NULL;
        int count = 0;
        ChatRender r = {0};
        const JsonValue *messages = NULL;
        if (json_parse(line, (size_t)n, &v, &err) != 0 || !(messages = json_get(&v, "messages")) ||
            chat_messages_from_json(messages, &m, &count, &err) != 0 || chat_render(kind, m, count, &r, &err) != 0) {
            if (!messages && !err.message[0]) snprintf(err.message, sizeof err.message, "no \"messages\"");
            print_error(&err);
        } else {
            print_parts(&r);
        }
        chat_render_free(&r);
        free(m);
        json_value_free(&v);
    }
    free(line);
    return 0;
}
