/* fuzz_tokenizer.c — tokenizer.bin files through tokenizer_load, as every
 * command that takes --tokenizer opens them; a vocabulary that loads then
 * encodes and decodes a fixed text, so a loaded table that is inconsistent
 * (lookup, byte pieces, scores) shows up as well. */
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("tokenizer.bin");
    fuzz_write(path, data, size);
    Tokenizer t;
    NfError err;
    if (tokenizer_load(&t, path, &err) != 0) return 0;
    static const char text[] = "Once upon a time, \xe2\x96\x81 <0x41> \xff\n\xe4\xb8\xad";
    TokenList ids = {0};
    if (tokenizer_encode(&t, text, sizeof text - 1, TOKENIZE_BOS | TOKENIZE_EOS, &ids, &err) == 0) {
        size_t len;
        char *back = tokenizer_decode(&t, ids.ids, ids.len, &len, &err);
        free(back);
    }
    token_list_free(&ids);
    tokenizer_check_vocab(&t, 512, &err);
    tokenizer_free(&t);
    return 0;
}
