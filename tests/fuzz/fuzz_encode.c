/* fuzz_encode.c — the encoder on arbitrary bytes, with the 512-piece
 * tokenizer of stories260K (fuzz.h): tokenizer_encode must accept any
 * bytes, and its ids must decode back to exactly those bytes (tokenizer.h
 * promises it: invalid UTF-8 and U+2581 are kept, not replaced). */
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const Tokenizer *t = fuzz_tokenizer();
    TokenList ids = {0};
    NfError err;
    if (tokenizer_encode(t, (const char *)data, size, TOKENIZE_BOS, &ids, &err) != 0) {
        fprintf(stderr, "encode failed: %s\n", err.message);
        abort();
    }
    size_t len;
    char *back = tokenizer_decode(t, ids.ids, ids.len, &len, &err);
    if (!back) abort();
    if (len != size || memcmp(back, data, size) != 0) {
        fprintf(stderr, "decode(encode(x)) != x: %zu bytes in, %zu out\n", size, len);
        abort();
    }
    free(back);
    token_list_free(&ids);
    return 0;
}
