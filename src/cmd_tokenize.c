/* cmd_tokenize.c — `neuralforge tokenize`: text file -> llama2.c token file.
 *
 * The text is split into documents (at `<|endoftext|>` lines, at runs of
 * blank lines, or not at all), each document is stripped of surrounding
 * whitespace, encoded with BOS in front, and the ids are written as
 * little-endian uint16, the format llama2.c's pretokenized shards use. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "fileio.h"
#include "tokenizer.h"
#include "util.h"

#define EOT_MARKER "<|endoftext|>"

static bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Narrows [*b, *e) to exclude leading and trailing ASCII whitespace. */
static void strip(const char *text, size_t *b, size_t *e) {
    while (*b < *e && is_space((unsigned char)text[*b])) (*b)++;
    while (*e > *b && is_space((unsigned char)text[*e - 1])) (*e)--;
}

typedef struct {
    const Tokenizer *tok;
    AtomicFile *file;
    TokenList ids;         /* reused for every document */
    uint64_t tokens, documents;
} DocumentWriter;

static int write_document(DocumentWriter *w, const char *text, size_t b, size_t e, NfError *err) {
    strip(text, &b, &e);
    if (b == e) return 0;
    w->ids.len = 0;
    if (tokenizer_encode(w->tok, text + b, e - b, true, false, &w->ids, err) != 0) return -1;
    /* little-endian uint16, written in chunks */
    unsigned char buf[8192];
    size_t n = 0;
    for (size_t i = 0; i < w->ids.len; i++) {
        buf[n++] = (unsigned char)(w->ids.ids[i] & 0xFF);
        buf[n++] = (unsigned char)(w->ids.ids[i] >> 8);
        if (n == sizeof buf) {
            if (atomic_file_write(w->file, buf, n, err) != 0) return -1;
            n = 0;
        }
    }
    if (atomic_file_write(w->file, buf, n, err) != 0) return -1;
    w->tokens += w->ids.len;
    w->documents++;
    return 0;
}

/* Is line [b, e) a document separator in this split mode? */
static bool is_separator(const char *text, size_t b, size_t e, const char *split) {
    strip(text, &b, &e);
    if (strcmp(split, "eot") == 0) return e - b == strlen(EOT_MARKER) && memcmp(text + b, EOT_MARKER, e - b) == 0;
    if (strcmp(split, "blank") == 0) return b == e;
    return false;
}

static void show_progress(size_t done, size_t total, double start_ms) {
    double secs = (nf_now_ms() - start_ms) / 1000.0;
    fprintf(stderr, "\rtokenizing %5.1f%%  %.1f MB/s", total ? 100.0 * done / total : 100.0,
            secs > 0 ? done / 1e6 / secs : 0.0);
}

int cmd_tokenize(int argc, char **argv, NfOut *out) {
    const char *input = NULL, *output = NULL, *tokenizer_path = NULL, *split = "eot";
    ArgSpec specs[] = {
        {"input", ARG_STRING, &input, .help = "text file to tokenize (required)"},
        {"output", ARG_STRING, &output, .help = "token file to write, uint16 little-endian (required)"},
        {"tokenizer", ARG_STRING, &tokenizer_path, .help = "llama2.c tokenizer.bin or builtin:bytes (required)"},
        {"split", ARG_CHOICE, &split, .choices = "eot|blank|none",
         .help = "documents end at <|endoftext|> lines (default), blank lines, or only at the end"},
    };
    int n_specs = (int)(sizeof specs / sizeof specs[0]);
    NfError err = {0};
    int parsed = args_parse_command("tokenize", "Writes llama2.c token data: BOS, then each document's ids.", specs, n_specs, argc, argv, &err);
    if (parsed == ARGS_HELP) return 0;
    if (parsed == ARGS_ERROR) return emit_error(out, &err);
    if (!input || !output || !tokenizer_path) {
        nf_fail(&err, NF_ERR_USAGE, "tokenize needs --input, --output and --tokenizer");
        return emit_error(out, &err);
    }
    Tokenizer tok = {0};
    MappedFile text = {0};
    AtomicFile file = {0};
    DocumentWriter writer = {&tok, &file, {0}, 0, 0};
    int status = 0;
    if (tokenizer_load(&tok, tokenizer_path, &err) != 0) goto fail;
    if (tok.vocab_size > 65536) {
        nf_fail(&err, NF_ERR_TOKENIZER, "the tokenizer has %d pieces; uint16 token files hold ids up to 65535",
                tok.vocab_size);
        goto fail;
    }
    if (mapped_file_open(&text, input, "input", &err) != 0) goto fail;
    if (atomic_file_open(&file, output, &err) != 0) goto fail;

    const char *t = (const char *)text.data;
    bool progress = isatty(STDERR_FILENO);
    double start = nf_now_ms(), last_report = start;
    size_t doc_start = 0, line = 0;
    while (line < text.size) {
        const char *nl = memchr(t + line, '\n', text.size - line);
        size_t line_end = nl ? (size_t)(nl - t) : text.size;
        if (is_separator(t, line, line_end, split)) {
            if (write_document(&writer, t, doc_start, line, &err) != 0) goto fail;
            doc_start = line_end;
        }
        line = nl ? line_end + 1 : text.size;
        if (progress && nf_now_ms() - last_report > 200) {
            show_progress(line, text.size, start);
            last_report = nf_now_ms();
        }
    }
    if (write_document(&writer, t, doc_start, text.size, &err) != 0) goto fail;
    if (atomic_file_commit(&file, &err) != 0) goto fail;
    if (progress) {
        show_progress(text.size, text.size, start);
        fputc('\n', stderr);
    }
    nf_log("tokenized %zu bytes into %llu tokens in %llu documents (%.0f ms)", text.size,
           (unsigned long long)writer.tokens, (unsigned long long)writer.documents, nf_now_ms() - start);

    JsonBuf j;
    msg_begin(&j, "tokenize");
    json_string(&j, "input", input);
    json_string(&j, "output", output);
    json_int(&j, "tokens", (int64_t)writer.tokens);
    json_int(&j, "bytes", (int64_t)text.size);
    json_int(&j, "documents", (int64_t)writer.documents);
    msg_emit(out, &j);
    goto done;
fail:
    atomic_file_abort(&file);
    status = emit_error(out, &err);
done:
    token_list_free(&writer.ids);
    mapped_file_close(&text);
    tokenizer_free(&tok);
    return status;
}
