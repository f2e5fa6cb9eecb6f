/* fuzz_records.c — ingest's source readers (records_read): .txt/.md text
 * split into documents, .csv rows and .jsonl records (text, prompt and
 * completion, chat messages), tokenized with the 512-piece tokenizer. The
 * first byte picks the kind, the split mode and the chat template (llama2,
 * or chatml, whose special tokens that vocabulary lacks); the rest is the file. Each
 * document's mask must be as long as its ids, with `masked` zeros in it. */
#include "fuzz.h"
#include "records.h"

static int check_document(void *ctx, const Document *d, NfError *err) {
    (void)ctx;
    (void)err;
    uint64_t zeros = 0;
    for (size_t i = 0; i < d->ids.len; i++) zeros += d->mask[i] == 0;
    if (zeros != d->masked) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const SourceKind kinds[3] = {SOURCE_TEXT, SOURCE_CSV, SOURCE_JSONL};
    static const char *const names[3] = {"source.txt", "source.csv", "source.jsonl"};
    if (size < 1) return 0;
    int kind = data[0] % 3;
    TextSplit split = (TextSplit)(data[0] / 3 % 3);
    ChatTemplate chat = {data[0] / 9 % 2 ? CHAT_CHATML : CHAT_LLAMA2, ""};
    NfError err;
    RecordsOptions how = {fuzz_tokenizer(), &chat, split, false};
    records_read(kinds[kind], names[kind], (const char *)data + 1, size - 1, &how, check_document, NULL, &err);
    return 0;
}
