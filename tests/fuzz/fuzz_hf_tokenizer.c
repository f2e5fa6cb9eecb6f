/* fuzz_hf_tokenizer.c — tokenizer.json files through tokenizer_load, as
 * every command that takes --tokenizer opens them. The input is the JSON,
 * optionally followed by a NUL byte and a text: a tokenizer that loads then
 * encodes that text (or a fixed one) with and without --parse-special,
 * decodes it whole and through generate's streaming decoder, so the
 * vocabulary, merges, added tokens, regexes and decoder tables a file can
 * produce are all exercised, not only the parser. */
#include <string.h>

#include "fuzz.h"

static void encode_decode(const Tokenizer *t, const char *text, size_t n, unsigned flags) {
    TokenList ids = {0};
    NfError err;
    if (tokenizer_encode(t, text, n, flags, &ids, &err) == 0) {
        size_t len;
        free(tokenizer_decode(t, ids.ids, ids.len, &len, &err));
        char *room = malloc(token_stream_room(t));
        TokenStream s;
        token_stream_init(&s, -1);
        for (size_t i = 0; room && i < ids.len; i++) token_stream_push(&s, t, ids.ids[i], room);
        free(room);
    }
    token_list_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char fixed[] = "Once upon a time, <|endoftext|> \xe2\x96\x81 <s> 123 \xff\n\xe4\xb8\xad it's";
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    const char *path = fuzz_path("tokenizer.json");
    fuzz_write(path, data, json_len);
    Tokenizer t;
    NfError err;
    if (tokenizer_load(&t, path, &err) != 0) return 0;
    const char *text = nul ? (const char *)nul + 1 : fixed;
    size_t n = nul ? size - json_len - 1 : sizeof fixed - 1;
    encode_decode(&t, text, n, 0);
    encode_decode(&t, text, n, TOKENIZE_BOS | TOKENIZE_EOS | TOKENIZE_PARSE_SPECIAL);
    tokenizer_free(&t);
    return 0;
}
