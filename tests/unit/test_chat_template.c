/* test_chat_template.c — chat_template.c: detection by markers, names and
 * roles, the parts each template renders (specials, text, trained or not),
 * prompts with each template's generation prompt,
 * and records.c's chat documents on a small tokenizer.bin whose pieces hold
 * the ChatML specials and a piece "\nH" that straddles template text and an
 * answer: the stretch is encoded as one, and the mask follows byte ranges
 * (a straddling token is trained). */
#include "testutil.h"

#include "chat_template.h"
#include "records.h"
#include "tokenizer.h"

/* A chatml template's default system message, as its string literal holds it (Qwen 2.5's and SmolLM2's shape);
 * none where the literal ends at the newline (Qwen 3's: the system message comes from the chat). */
static void test_default_system_message_of_a_template(void **state) {
    (void)state;
    char out[128];
    chat_default_system("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
                        "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are "
                        "Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}",
                        out, sizeof out);
    assert_string_equal(out, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    chat_default_system("{{ '<|im_start|>system\\nLine one\\nit\\'s two<|im_end|>\\n' }}", out, sizeof out);
    assert_string_equal(out, "Line one\nit's two");
    chat_default_system("{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}", out, sizeof out);
    assert_string_equal(out, "");
    /* prepended only when the chat has no system message of its own */
    ChatTemplate t = {.kind = CHAT_CHATML, .default_system = "Be kind."};
    ChatMessage user = {CHAT_USER, "hi", 2}, sys[2] = {{CHAT_SYSTEM, "S", 1}, {CHAT_USER, "hi", 2}}, *owned;
    const ChatMessage *m;
    int n = 1;
    assert_int_equal(chat_with_default_system(&t, &user, &n, &m, &owned, NULL), 0);
    assert_int_equal(n, 2);
    assert_true(m[0].role == CHAT_SYSTEM && m[0].len == 8 && m[1].role == CHAT_USER);
    free(owned);
    n = 2;
    assert_int_equal(chat_with_default_system(&t, sys, &n, &m, &owned, NULL), 0);
    assert_true(m == sys && n == 2 && owned == NULL);
}

static void test_detection_by_markers(void **state) {
    (void)state;
    assert_int_equal(chat_detect("{{ '<|start_header_id|>' + role + '<|end_header_id|>' }}"), CHAT_LLAMA3);
    assert_int_equal(chat_detect("{{ '<|im_start|>' + role }}"), CHAT_CHATML);
    /* Llama 3.1's system-block date header is not rendered: not llama3 for auto */
    assert_int_equal(chat_detect("{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
                                 "{{- 'Cutting Knowledge Date: December 2023\\n' }}"),
                     CHAT_NONE);
    assert_int_equal(chat_detect("{{ '<<SYS>>\\n' + system }}{{ bos_token + '[INST] ' + content + ' [/INST]' }}"),
                     CHAT_LLAMA2);
    /* Mistral's: [INST] without Llama 2's system block */
    assert_int_equal(chat_detect("{{ bos_token }}{{ '[INST] ' + content + ' [/INST]' }}{{ content + eos_token }}"),
                     CHAT_NONE);
    assert_int_equal(chat_detect("<start_of_turn>{{ role }}"), CHAT_NONE);
    assert_int_equal(chat_detect("<|start_header_id|> alone"), CHAT_NONE);
    assert_int_equal(chat_detect(""), CHAT_NONE);
}

static void test_names_and_roles(void **state) {
    (void)state;
    ChatKind k;
    const char *names[] = {"none", "llama3", "chatml", "llama2"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(chat_kind_parse(names[i], &k), 0);
        assert_string_equal(chat_kind_name(k), names[i]);
    }
    assert_int_equal(chat_kind_parse("auto", &k), -1);
    assert_int_equal(chat_kind_parse("Llama3", &k), -1);
    assert_int_equal(chat_role_parse("user", 4), CHAT_USER);
    assert_int_equal(chat_role_parse("assistant", 9), CHAT_ASSISTANT);
    assert_int_equal(chat_role_parse("system", 6), CHAT_SYSTEM);
    assert_int_equal(chat_role_parse("user\0x", 6), -1);
    assert_int_equal(chat_role_parse("tool", 4), -1);
    assert_int_equal(chat_role_parse("", 0), -1);
}

/* The parts as "kind:text:trained" lines, for comparing whole renderings. */
static void describe(const ChatRender *r, char *out, size_t cap) {
    static const char *const kinds[] = {"bos", "eos", "special", "text"};
    size_t o = 0;
    for (size_t k = 0; k < r->n && o < cap; k++) {
        const ChatPart *p = &r->parts[k];
        o += (size_t)snprintf(out + o, cap - o, "%s%s:%.*s:%d|", kinds[p->kind], p->fresh ? "*" : "", (int)p->len,
                              r->text + p->start, p->trained);
    }
}

static void test_each_template_renders_its_parts(void **state) {
    (void)state;
    ChatMessage chat[] = {{CHAT_SYSTEM, " S ", 3}, {CHAT_USER, "U\n", 2}, {CHAT_ASSISTANT, " A ", 3}};
    ChatRender r = {0};
    NfError err;
    char got[1024];
    assert_int_equal(chat_render(CHAT_LLAMA3, chat, 3, &r, &err), 0);
    describe(&r, got, sizeof got);
    assert_string_equal(got, "bos::0|special:<|start_header_id|>:0|text:system:0|special:<|end_header_id|>:0|"
                             "text:\n\n:0|text:S:0|special:<|eot_id|>:0|"
                             "special:<|start_header_id|>:0|text:user:0|special:<|end_header_id|>:0|text:\n\n:0|"
                             "text:U:0|special:<|eot_id|>:0|"
                             "special:<|start_header_id|>:0|text:assistant:0|special:<|end_header_id|>:0|"
                             "text:\n\n:0|text:A:1|special:<|eot_id|>:1|");
    assert_int_equal(chat_render(CHAT_CHATML, chat, 3, &r, &err), 0);
    describe(&r, got, sizeof got);
    assert_string_equal(got, "special:<|im_start|>:0|text:system:0|text:\n:0|text: S :0|special:<|im_end|>:0|text:\n:0|"
                             "special:<|im_start|>:0|text:user:0|text:\n:0|text:U\n:0|special:<|im_end|>:0|text:\n:0|"
                             "special:<|im_start|>:0|text:assistant:0|text:\n:0|text: A :1|special:<|im_end|>:1|"
                             "text:\n:0|");
    assert_int_equal(chat_render(CHAT_LLAMA2, chat, 3, &r, &err), 0);
    describe(&r, got, sizeof got);
    assert_string_equal(got, "bos::0|text*:[INST] :0|text:<<SYS>>\n:0|text:S:0|text:\n<</SYS>>\n\n:0|text:U:0|"
                             "text: [/INST]:0|text*:A:1|eos::1|");
    chat_render_free(&r);
}

static void test_roles_out_of_order_are_refused(void **state) {
    (void)state;
    ChatRender r = {0};
    NfError err;
    ChatMessage user_last[] = {{CHAT_USER, "u", 1}, {CHAT_ASSISTANT, "a", 1}, {CHAT_USER, "v", 1}};
    assert_int_equal(chat_render(CHAT_CHATML, user_last, 3, &r, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    assert_non_null(strstr(err.message, "the last message is from the user"));
    ChatMessage two_systems[] = {{CHAT_SYSTEM, "s", 1}, {CHAT_SYSTEM, "t", 1}, {CHAT_ASSISTANT, "a", 1}};
    assert_int_equal(chat_render(CHAT_LLAMA3, two_systems, 3, &r, &err), -1);
    assert_non_null(strstr(err.message, "message 2 has role \"system\" where \"user\" is due"));
    assert_int_equal(chat_render(CHAT_LLAMA2, two_systems, 0, &r, &err), -1);
    assert_non_null(strstr(err.message, "holds no user and assistant messages"));
    chat_render_free(&r);
}

/* A prompt: the conversation so far, ending with the user's message, then each template's generation prompt
 * (llama2 has none: the answer follows " [/INST]"); earlier answers as chat_render renders them. */
static void test_prompts_end_with_the_generation_prompt(void **state) {
    (void)state;
    ChatMessage chat[] = {{CHAT_USER, "U", 1}, {CHAT_ASSISTANT, " A ", 3}, {CHAT_USER, " V", 2}};
    ChatRender r = {0};
    NfError err;
    char got[1024];
    assert_int_equal(chat_render_prompt(CHAT_LLAMA3, chat, 3, &r, &err), 0);
    describe(&r, got, sizeof got);
    assert_string_equal(got, "bos::0|special:<|start_header_id|>:0|text:user:0|special:<|end_header_id|>:0|"
                             "text:\n\n:0|text:U:0|special:<|eot_id|>:0|"
                             "special:<|start_header_id|>:0|text:assistant:0|special:<|end_header_id|>:0|"
                             "text:\n\n:0|text:A:1|special:<|eot_id|>:1|"
                             "special:<|start_header_id|>:0|text:user:0|special:<|end_header_id|>:0|text:\n\n:0|"
                             "text:V:0|special:<|eot_id|>:0|"
                             "special:<|start_header_id|>:0|text:assistant:0|special:<|end_header_id|>:0|"
                             "text:\n\n:0|");
    assert_int_equal(chat_render_prompt(CHAT_CHATML, chat, 1, &r, &err), 0);
    describe(&r, got, sizeof got);
    assert_string_equal(got, "special:<|im_start|>:0|text:user:0|text:\n:0|text:U:0|special:<|im_end|>:0|text:\n:0|"
                             "special:<|im_start|>:0|text:assistant:0|text:\n:0|");
    assert_int_equal(chat_render_prompt(CHAT_LLAMA2, chat, 3, &r, &err), 0);
    describe(&r, got, sizeof got);
    assert_string_equal(got, "bos::0|text*:[INST] :0|text:U:0|text: [/INST]:0|text*:A:1|eos::1|"
                             "bos::0|text*:[INST] :0|text:V:0|text: [/INST]:0|");
    /* a prompt ends with the user's message; a chat to train on with the assistant's */
    assert_int_equal(chat_render_prompt(CHAT_CHATML, chat, 2, &r, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    assert_non_null(strstr(err.message, "the last message is the assistant's; a prompt ends with the user's"));
    ChatMessage system_only[] = {{CHAT_SYSTEM, "s", 1}};
    assert_int_equal(chat_render_prompt(CHAT_LLAMA2, system_only, 1, &r, &err), -1);
    assert_non_null(strstr(err.message, "holds no user and assistant messages"));
    chat_render_free(&r);
}

/* A tokenizer.bin: <unk>, <s>, </s>, the 256 byte pieces, <|im_start|>, <|im_end|> and "\nH" (merged first). */
static char *chatml_tokenizer(void) {
    unsigned char buf[8192];
    size_t o = 0;
    int32_t max_len = 12;
    memcpy(buf + o, &max_len, 4), o += 4;
    char piece[16];
    for (int i = 0; i < 3 + 256 + 3; i++) {
        float score = 0;
        if (i == 0) strcpy(piece, "<unk>");
        if (i == 1) strcpy(piece, "<s>");
        if (i == 2) strcpy(piece, "</s>");
        if (i >= 3 && i < 259) snprintf(piece, sizeof piece, "<0x%02X>", i - 3);
        if (i == 259) strcpy(piece, "<|im_start|>"), score = -1e9f;
        if (i == 260) strcpy(piece, "<|im_end|>"), score = -1e9f;
        if (i == 261) strcpy(piece, "\nH"), score = 10;
        int32_t len = (int32_t)strlen(piece);
        memcpy(buf + o, &score, 4), o += 4;
        memcpy(buf + o, &len, 4), o += 4;
        memcpy(buf + o, piece, (size_t)len), o += (size_t)len;
    }
    return write_temp_file(buf, o);
}

static void test_chatml_chat_on_a_tokenizer_bin_with_a_straddling_piece(void **state) {
    (void)state;
    char *path = chatml_tokenizer();
    Tokenizer t;
    NfError err;
    assert_int_equal(tokenizer_load(&t, path, &err), 0);
    ChatTemplate chat = {.kind = CHAT_CHATML};
    Document d = {0};
    const char *rec = "{\"messages\": [{\"role\": \"user\", \"content\": \"<|im_end|>\"}, "
                      "{\"role\": \"assistant\", \"content\": \"Hi\"}]}";
    assert_int_equal(record_from_json(&(RecordsOptions){.tok = &t, .chat = &chat}, rec, strlen(rec), &d, &err), 1);
    /* <|im_start|> [_ u s e r \n < | i m _ e n d | >] <|im_end|> [_ \n] <|im_start|> [_ a s s i s t a n t \nH i]
     * <|im_end|> [_ \n]: each stretch starts with the dummy-prefix space; the user's <|im_end|> is text */
    int want[64], n = 0, mask[64];
#define PUT(id, m) (want[n] = (id), mask[n++] = (m))
#define TEXT(s, m) \
    for (const char *c = (s); *c; c++) PUT(3 + (unsigned char)*c, m)
    PUT(259, 0);
    TEXT(" user\n<|im_end|>", 0);
    PUT(260, 0);
    TEXT(" \n", 0);
    PUT(259, 0);
    TEXT(" assistant", 0);
    PUT(261, 1); /* "\nH": template "\n" and the answer's "H": trained */
    PUT(3 + 'i', 1);
    PUT(260, 1);
    TEXT(" \n", 0);
    assert_int_equal(d.ids.len, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(d.ids.ids[i], want[i]);
        assert_int_equal(d.mask[i], mask[i]);
    }
    assert_int_equal(d.masked, n - 3);
    /* llama3 needs specials this vocabulary lacks: a clear error naming them */
    chat.kind = CHAT_LLAMA3;
    assert_int_equal(record_from_json(&(RecordsOptions){.tok = &t, .chat = &chat}, rec, strlen(rec), &d, &err), -1);
    assert_string_equal(err.code, NF_ERR_TOKENIZER);
    assert_non_null(strstr(err.message, "no <|start_header_id|> token, which chat template llama3 needs"));
    /* none: chats are refused with the run's refusal */
    chat = (ChatTemplate){.kind = CHAT_NONE, .refusal = "no chats here"};
    assert_int_equal(record_from_json(&(RecordsOptions){.tok = &t, .chat = &chat}, rec, strlen(rec), &d, &err), -1);
    assert_string_equal(err.message, "no chats here");
    document_free(&d);
    tokenizer_free(&t);
    remove_temp_file(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detection_by_markers),
        cmocka_unit_test(test_default_system_message_of_a_template),
        cmocka_unit_test(test_names_and_roles),
        cmocka_unit_test(test_each_template_renders_its_parts),
        cmocka_unit_test(test_roles_out_of_order_are_refused),
        cmocka_unit_test(test_prompts_end_with_the_generation_prompt),
        cmocka_unit_test(test_chatml_chat_on_a_tokenizer_bin_with_a_straddling_piece),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
