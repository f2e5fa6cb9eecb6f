/* cmd_tokenize.c — `neuralforge tokenize`: text file -> token file, or
 * (--ids) the whole file's ids as one NDJSON message.
 *
 * The text is split into documents by textsplit.c (at `<|endoftext|>`
 * lines, at runs of blank lines, or not at all; stripped of surrounding
 * whitespace), each is encoded with BOS in front (and EOS after) as the
 * tokenizer's add_bos / add_eos say, and the ids are written as a token
 * file (tokenfile.h): a header and ids of 2 or 4 bytes, or with --format
 * llama2c the headerless uint16 of llama2.c's pretokenized shards.
 * --ids encodes the file exactly as it is: no splitting, no trimming, no BOS/EOS. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "fileio.h"
#include "textsplit.h"
#include "tokenfile.h"
#include "tokenizer.h"
#include "util.h"

typedef struct {
    const Tokenizer *tok;
    unsigned flags; /* tokenizer_encode's: the tokenizer's BOS/EOS, --parse-special */
    TokenWriter *file;
    TokenList ids; /* reused for every document */
    uint64_t tokens, documents;
    /* progress on stderr (when it is a terminal) */
    bool progress;
    const char *text; /* the whole input, to tell how far a document is */
    size_t size;
    double start_ms, last_report_ms;
} DocumentWriter;

static void show_progress(size_t done, size_t total, double start_ms);

/* A TextDocumentFn: BOS and the document's ids. */
static int write_document(void *ctx, const char *doc, size_t len, size_t line, NfError *err) {
    (void)line;
    DocumentWriter *w = ctx;
    w->ids.len = 0;
    if (tokenizer_encode(w->tok, doc, len, w->flags, &w->ids, err) != 0) return -1;
    if (token_writer_put(w->file, w->ids.ids, w->ids.len, err) != 0) return -1;
    w->tokens += w->ids.len;
    w->documents++;
    if (w->progress && nf_now_ms() - w->last_report_ms > 200) {
        show_progress((size_t)(doc + len - w->text), w->size, w->start_ms);
        w->last_report_ms = nf_now_ms();
    }
    return 0;
}

static void show_progress(size_t done, size_t total, double start_ms) {
    double secs = (nf_now_ms() - start_ms) / 1000.0;
    fprintf(stderr, "\rtokenizing %5.1f%%  %.1f MB/s", total ? 100.0 * done / total : 100.0,
            secs > 0 ? done / 1e6 / secs : 0.0);
}

/* --ids: the ids of the whole text, one `ids` message. */
static int emit_ids(NfOut *out, const Tokenizer *tok, const MappedFile *text, unsigned flags, NfError *err) {
    TokenList ids = {0};
    if (tokenizer_encode(tok, (const char *)text->data, text->size, flags, &ids, err) != 0) {
        token_list_free(&ids);
        return -1;
    }
    JsonBuf j;
    msg_begin(&j, "ids");
    json_array_begin(&j, "ids");
    for (size_t i = 0; i < ids.len; i++) json_int(&j, NULL, ids.ids[i]);
    json_array_end(&j);
    json_int(&j, "tokens", (int64_t)ids.len);
    token_list_free(&ids);
    if (j.failed) {
        json_free(&j);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory writing the ids");
    }
    msg_emit(out, &j);
    return 0;
}

int cmd_tokenize(int argc, char **argv, NfOut *out) {
    const char *input = NULL, *output = NULL, *tokenizer_path = NULL, *split = "eot", *format = "neuralforge";
    bool ids_only = false, parse_special = false;
    ArgSpec specs[] = {
        {"input", ARG_STRING, &input, .help = "text file to tokenize (required)"},
        {"output", ARG_STRING, &output, .help = "token file to write (required unless --ids)"},
        {"tokenizer", ARG_STRING, &tokenizer_path,
         .help = "tokenizer.bin, builtin:bytes, tokenizer.json or its directory (required)"},
        {"split", ARG_CHOICE, &split, .choices = TEXT_SPLIT_CHOICES,
         .help = "documents end at <|endoftext|> lines (default), blank lines, or only at the end"},
        {"format", ARG_CHOICE, &format, .choices = "neuralforge|llama2c",
         .help = "a header and ids of 2 or 4 bytes (default), or llama2.c's headerless uint16 (up to 65536 pieces)"},
        {"ids", ARG_FLAG, &ids_only,
         .help = "print the whole file's ids as one NDJSON `ids` message (no BOS/EOS, no splitting) instead"},
        {"parse-special", ARG_FLAG, &parse_special,
         .help = "special tokens spelled in the text (<|eot_id|>) are control tokens, not text"},
    };
    int exit_status;
    if (command_parse_flags("tokenize", "Writes token data: BOS, then each document's ids.", specs, ARGS_COUNT(specs),
                            argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (!input || (!output && !ids_only) || !tokenizer_path) {
        nf_fail(&err, NF_ERR_USAGE, "tokenize needs --input, --tokenizer and --output (or --ids)");
        return emit_error(out, &err);
    }
    if (ids_only &&
        (output || args_seen(specs, ARGS_COUNT(specs), "split") || args_seen(specs, ARGS_COUNT(specs), "format"))) {
        nf_fail(&err, NF_ERR_USAGE,
                "--ids prints the ids of the whole file: it takes no --output, --split or --format");
        return emit_error(out, &err);
    }
    Tokenizer tok = {0};
    MappedFile text = {0};
    TokenWriter file = {0};
    bool legacy = strcmp(format, "llama2c") == 0;
    int width = 0; /* of the ids written */
    DocumentWriter writer = {.tok = &tok, .file = &file};
    TextSplit mode = TEXT_SPLIT_EOT;
    text_split_parse(split, &mode); /* one of the choices: args_parse checked it */
    int status = 0;
    if (tokenizer_load(&tok, tokenizer_path, &err) != 0) goto fail;
    unsigned special = parse_special ? TOKENIZE_PARSE_SPECIAL : 0u;
    if (ids_only) {
        if (mapped_file_open(&text, input, "input", &err) != 0 || emit_ids(out, &tok, &text, special, &err) != 0)
            goto fail;
        goto done;
    }
    writer.flags = tokenizer_default_flags(&tok) | special;
    if (legacy && tok.vocab_size > TOKEN_FILE_U16_VOCAB) {
        nf_fail(&err, NF_ERR_USAGE,
                "--format llama2c: the tokenizer has %d pieces; headerless uint16 files hold ids up to 65535",
                tok.vocab_size);
        goto fail;
    }
    if (mapped_file_open(&text, input, "input", &err) != 0) goto fail;
    if (token_writer_open(&file, output, tok.vocab_size, legacy, &err) != 0) goto fail;

    bool progress = isatty(STDERR_FILENO);
    double start = nf_now_ms();
    writer.progress = progress;
    writer.text = (const char *)text.data;
    writer.size = text.size;
    writer.start_ms = writer.last_report_ms = start;
    if (text_split(writer.text, text.size, mode, write_document, &writer, &err) != 0) goto fail;
    width = file.width;
    if (token_writer_commit(&file, &err) != 0) goto fail;
    if (progress) {
        show_progress(text.size, text.size, start);
        fputc('\n', stderr);
    }
    nf_log("tokenized %zu bytes into %llu tokens in %llu documents (%.0f ms)", text.size,
           (unsigned long long)writer.tokens, (unsigned long long)writer.documents, nf_now_ms() - start);

    JsonBuf j;
    msg_begin(&j, "tokenize");
    json_str(&j, "input", input);
    json_str(&j, "output", output);
    json_int(&j, "tokens", (int64_t)writer.tokens);
    json_int(&j, "bytes", (int64_t)text.size);
    json_int(&j, "documents", (int64_t)writer.documents);
    json_str(&j, "format", format);
    json_int(&j, "width", width);
    msg_emit(out, &j);
    goto done;
fail:
    token_writer_abort(&file);
    status = emit_error(out, &err);
done:
    token_list_free(&writer.ids);
    mapped_file_close(&text);
    tokenizer_free(&tok);
    return status;
}
