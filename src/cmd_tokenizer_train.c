/* cmd_tokenizer_train.c — `neuralforge tokenizer-train`: text files -> a BPE
 * tokenizer.bin with byte fallback (tokenizer_train.c learns it).
 *
 * Messages: `tokenizer_train_progress` at each whole percent of the merges
 * that fit the target, then one `tokenizer_train` when the file is written.
 * A progress line goes to stderr when stderr is a terminal. */
#include <stdio.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "fileio.h"
#include "tokenizer_train.h"
#include "util.h"

typedef struct {
    NfOut *out;
    bool tty;           /* stderr is a terminal: show a progress line there */
    double last_tty_ms; /* when that line was last drawn */
    int last_percent;   /* the percent of merges last reported on stdout, -1 before the first */
} Progress;

static void on_progress(void *ctx, const TokTrainProgress *p) {
    Progress *pr = ctx;
    bool last = false;
    if (p->phase == TOKTRAIN_MERGING) {
        int percent = p->merges_max > 0 ? (int)((int64_t)p->merges * 100 / p->merges_max) : 100;
        last = p->vocab_size >= p->target;
        if (percent != pr->last_percent) {
            pr->last_percent = percent;
            JsonBuf j;
            msg_begin(&j, "tokenizer_train_progress");
            json_int(&j, "merges", p->merges);
            json_int(&j, "vocab_size", p->vocab_size);
            json_int(&j, "target", p->target);
            msg_emit(pr->out, &j);
        }
    } else {
        last = p->bytes_done == p->bytes_total;
    }
    if (!pr->tty || (!last && nf_now_ms() - pr->last_tty_ms < 200)) return;
    pr->last_tty_ms = nf_now_ms();
    if (p->phase == TOKTRAIN_COUNTING)
        fprintf(stderr, "\rcounting words %5.1f%%", p->bytes_total ? 100.0 * p->bytes_done / p->bytes_total : 100.0);
    else
        fprintf(stderr, "\rmerges %d/%d, vocabulary %d/%d   ", p->merges, p->merges_max, p->vocab_size, p->target);
}

int cmd_tokenizer_train(int argc, char **argv, NfOut *out) {
    StringList inputs = {0};
    const char *output = NULL;
    int64_t vocab_size = 0;
    double coverage = 1.0;
    ArgSpec specs[] = {
        {"input", ARG_LIST, &inputs, .help = "text file to learn from (repeatable; required)"},
        {"vocab-size", ARG_INT, &vocab_size, TOKTRAIN_MIN_VOCAB, TOKTRAIN_MAX_VOCAB,
         .help = "pieces in the tokenizer, 260 ... 65536 (required)"},
        {"output", ARG_STRING, &output, .help = "tokenizer.bin to write (required)"},
        {"character-coverage", ARG_FLOAT, &coverage, 0.5, 1.0,
         .help = "share of the text's characters that get a piece (default 1: all that fit)"},
    };
    int n_specs = ARGS_COUNT(specs);
    int exit_status;
    if (command_parse_flags("tokenizer-train",
                            "Learns a BPE tokenizer with byte fallback from text; writes a llama2.c tokenizer.bin.",
                            specs, n_specs, argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (inputs.n == 0 || !output || !args_seen(specs, n_specs, "vocab-size")) {
        nf_fail(&err, NF_ERR_USAGE, "tokenizer-train needs --input, --vocab-size and --output");
        return emit_error(out, &err);
    }

    MappedFile files[ARG_LIST_MAX] = {{0}};
    TextSpan texts[ARG_LIST_MAX];
    TrainedVocab vocab = {0};
    AtomicFile file = {0};
    Progress progress = {out, isatty(STDERR_FILENO) != 0, 0.0, -1};
    int status = 0;
    double start = nf_now_ms();
    uint64_t total = 0;
    for (int i = 0; i < inputs.n; i++) {
        if (mapped_file_open(&files[i], inputs.items[i], "input", &err) != 0) goto fail;
        texts[i] = (TextSpan){files[i].data, files[i].size};
        total += files[i].size;
    }
    if (total > TOKTRAIN_MAX_INPUT_BYTES) {
        nf_fail(&err, NF_ERR_DATA, "the inputs hold %llu bytes; tokenizer-train reads at most 1 GiB (%llu bytes)",
                (unsigned long long)total, (unsigned long long)TOKTRAIN_MAX_INPUT_BYTES);
        goto fail;
    }

    /* the output is created first, so a bad path fails before the work */
    if (atomic_file_open(&file, output, &err) != 0) goto fail;

    TokTrainOptions opt = {(int)vocab_size, coverage, on_progress, &progress};
    int rc = tokenizer_train(texts, inputs.n, &opt, &vocab, &err);
    if (progress.tty) fputc('\n', stderr); /* end the progress line */
    if (rc != 0) goto fail;
    if (trained_vocab_write(&vocab, &file, &err) != 0 || atomic_file_commit(&file, &err) != 0) goto fail;
    double ms = nf_now_ms() - start;

    nf_log("tokenizer-train: %d pieces (%d characters, %d merges) from %llu bytes, %llu distinct words, in %.0f ms",
           vocab.vocab_size, vocab.characters, vocab.merges, (unsigned long long)vocab.bytes,
           (unsigned long long)vocab.words, ms);
    if (vocab.vocab_size < vocab_size)
        nf_log(
            "tokenizer-train: stopped at %d of %d pieces: no pair that occurs twice (and makes a piece of at most %d "
            "characters) is left to merge",
            vocab.vocab_size, (int)vocab_size, TOKTRAIN_MAX_PIECE_CHARS);
    if (vocab.dropped_characters > 0)
        nf_log("tokenizer-train: %d rare characters have no piece and fall back to bytes", vocab.dropped_characters);

    JsonBuf j;
    msg_begin(&j, "tokenizer_train");
    json_array_begin(&j, "inputs");
    for (int i = 0; i < inputs.n; i++) json_str(&j, NULL, inputs.items[i]);
    json_array_end(&j);
    json_int(&j, "bytes", (int64_t)vocab.bytes);
    json_int(&j, "vocab_size", vocab.vocab_size);
    json_int(&j, "target", vocab_size);
    json_int(&j, "merges", vocab.merges);
    json_int(&j, "characters", vocab.characters);
    json_int(&j, "words", (int64_t)vocab.words);
    json_str(&j, "output", output);
    json_int(&j, "ms", (int64_t)(ms + 0.5));
    msg_emit(out, &j);
    goto done;
fail:
    status = emit_error(out, &err);
done:
    atomic_file_abort(&file);
    trained_vocab_free(&vocab);
    for (int i = 0; i < inputs.n; i++) mapped_file_close(&files[i]);
    return status;
}
