/* cmd_ingest.c — `neuralforge ingest`: its flags, an `ingest_file` message
 * per source file as ingest.c reports it, progress on stderr, and the
 * closing `ingest_done`. The work is ingest.c's. */
#include <stdio.h>
#include <unistd.h>

#include "args.h"
#include "chat_template.h"
#include "commands.h"
#include "ingest.h"
#include "util.h"

typedef struct {
    NfOut *out;
    bool progress; /* a line on stderr (when it is a terminal) */
    uint64_t files, tokens;
    double start_ms, last_ms;
} Reporter;

static void report_file(void *ctx, const IngestFileReport *r) {
    Reporter *rep = ctx;
    JsonBuf j;
    msg_begin(&j, "ingest_file");
    json_str(&j, "path", r->path);
    json_str(&j, "status", ingest_status_name(r->status));
    json_int(&j, "bytes", (int64_t)r->bytes);
    json_int(&j, "documents", (int64_t)r->documents);
    json_int(&j, "tokens", (int64_t)r->tokens);
    json_int(&j, "masked_tokens", (int64_t)r->masked_tokens);
    json_bool(&j, "tokenized", r->tokenized);
    if (r->reason) json_str(&j, "reason", r->reason);
    msg_emit(rep->out, &j);
    rep->files++;
    if (r->status != INGEST_REMOVED) rep->tokens += r->tokens;
    if (rep->progress && nf_now_ms() - rep->last_ms > 200) {
        double secs = (nf_now_ms() - rep->start_ms) / 1000.0;
        fprintf(stderr, "\ringesting: %llu files, %llu tokens, %.0f tok/s ", (unsigned long long)rep->files,
                (unsigned long long)rep->tokens, secs > 0 ? rep->tokens / secs : 0.0);
        rep->last_ms = nf_now_ms();
    }
}

int cmd_ingest(int argc, char **argv, NfOut *out) {
    const char *source = NULL, *output = NULL, *tokenizer_path = NULL, *split = "eot", *chat_template = "auto";
    int64_t max_shard_mb = 64, max_file_mb = 1024;
    bool incremental = false, parse_special = false;
    ArgSpec specs[] = {
        {"source", ARG_STRING, &source,
         .help = "directory of .txt, .md, .csv and .jsonl files, read recursively (required)"},
        {"output", ARG_STRING, &output,
         .help = "directory for the shards and manifest.json (required; created if missing)"},
        {"tokenizer", ARG_STRING, &tokenizer_path,
         .help = "tokenizer.bin, builtin:bytes, tokenizer.json or its directory (required)"},
        {"parse-special", ARG_FLAG, &parse_special,
         .help = "special tokens spelled in the texts (<|eot_id|>) are control tokens, not text (chat contents stay "
                 "text)"},
        {"max-shard-mb", ARG_INT, &max_shard_mb, 1, 4096, .help = "largest shard, MiB of tokens (default 64)"},
        {"max-file-mb", ARG_INT, &max_file_mb, 1, 1048576, .help = "largest source file accepted, MiB (default 1024)"},
        {"split", ARG_CHOICE, &split, .choices = TEXT_SPLIT_CHOICES,
         .help = ".txt/.md documents end at <|endoftext|> lines (default), blank lines, or only at the end"},
        {"incremental", ARG_FLAG, &incremental,
         .help = "tokenize only files changed since the last ingest into --output"},
        {"chat-template", ARG_CHOICE, &chat_template, .choices = CHAT_TEMPLATE_CHOICES,
         .help = "template of JSONL chats (\"messages\"): auto (the tokenizer's tokenizer_config.json; llama2 for "
                 "tokenizer.bin, the default), llama3, chatml, llama2, or none (chats refused)"},
    };
    int exit_status;
    if (command_parse_flags(
            "ingest", "Turns a tree of text, CSV and JSONL files into token shards, loss masks and manifest.json.",
            specs, ARGS_COUNT(specs), argc, argv, out, &exit_status))
        return exit_status;
    NfError err = {0};
    if (!source || !output || !tokenizer_path) {
        nf_fail(&err, NF_ERR_USAGE, "ingest needs --source, --output and --tokenizer");
        return emit_error(out, &err);
    }
    IngestOptions o = {source,      output,      tokenizer_path, TEXT_SPLIT_EOT, max_shard_mb,
                       max_file_mb, incremental, parse_special,  chat_template};
    text_split_parse(split, &o.split); /* one of the choices: args_parse checked it */
    Reporter rep = {out, isatty(STDERR_FILENO), 0, 0, nf_now_ms(), nf_now_ms()};
    IngestSummary s;
    if (ingest_run(&o, report_file, &rep, &s, &err) != 0) {
        if (rep.progress) fputc('\n', stderr);
        return emit_error(out, &err);
    }
    double ms = nf_now_ms() - rep.start_ms;
    if (rep.progress) fputc('\n', stderr);
    nf_log("ingested %llu files (%llu tokenized, %llu skipped, %llu removed): %llu documents, %llu tokens "
           "(%llu masked) in %d shards, %.0f ms",
           (unsigned long long)s.files, (unsigned long long)s.tokenized, (unsigned long long)s.skipped,
           (unsigned long long)s.removed, (unsigned long long)s.documents, (unsigned long long)s.tokens,
           (unsigned long long)s.masked_tokens, s.shards, ms);
    JsonBuf j;
    msg_begin(&j, "ingest_done");
    json_int(&j, "files", (int64_t)s.files);
    json_int(&j, "tokenized", (int64_t)s.tokenized);
    json_int(&j, "skipped", (int64_t)s.skipped);
    json_int(&j, "removed", (int64_t)s.removed);
    json_int(&j, "bytes", (int64_t)s.bytes);
    json_int(&j, "documents", (int64_t)s.documents);
    json_int(&j, "tokens", (int64_t)s.tokens);
    json_int(&j, "masked_tokens", (int64_t)s.masked_tokens);
    json_int(&j, "shards", s.shards);
    json_int(&j, "generation", s.generation);
    json_str(&j, "chat_template", s.chat_template);
    json_str(&j, "output", output);
    json_number(&j, "ms", ms);
    msg_emit(out, &j);
    return 0;
}
