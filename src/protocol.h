/* protocol.h — the NDJSON stream on stdout: one JSON object a line.
 *
 * Every message is an object whose first field is "type". A command builds
 * it with msg_begin + json_* calls and sends it with msg_emit, which writes
 * the whole line at once and flushes, so a reader never sees half a message.
 * msg_emit is the only writer of stdout: when stdout fails, it is the one
 * place that notices and moves the stream to stderr.
 * Human-readable logs go to stderr through nf_log. docs/protocol.md is the
 * contract for every message type and field. */
#ifndef NF_PROTOCOL_H
#define NF_PROTOCOL_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "args.h"
#include "error.h"
#include "json.h"
#include "lora.h"
#include "model.h"

typedef struct {
    FILE *stream; /* where NDJSON lines go: stdout */
    /* set by msg_emit when a write to stream fails (EPIPE: its reader is
     * gone); from then on every line goes to stderr instead. train treats
     * it as a stop request. */
    bool closed;
    bool tee;   /* msg_tee_stderr: every line also goes to stderr */
    bool noted; /* the NF_STDERR_NOTE line is written */
    /* a rank of a data-parallel run (dist.h): rank 0 writes the stream, the
     * others (muted) only their errors; every error names its rank (-1: not
     * a rank of such a run, no name) */
    bool muted;
    int rank;
} NfOut;

/* The stderr line (printf format, the process id) after which this
 * process's NDJSON messages are on stderr too (a closed stdout, or
 * msg_tee_stderr): runner.c imports them from a dashboard run's log when
 * the server died and the run outlived it. */
#define NF_STDERR_NOTE "neuralforge: the NDJSON messages of process %ld from here on are on stderr"

void msg_begin(JsonBuf *j, const char *type);
/* Closes the object, writes it as one line and frees the buffer. A line
 * stdout refuses goes to stderr, and so does every later one (out->closed). */
void msg_emit(NfOut *out, JsonBuf *j);

/* Writes a whole line (without its newline) that another process wrote, as
 * msg_emit writes its own: the launcher relays rank 0's stream (launch.h). */
void msg_relay(NfOut *out, const char *line, size_t len);

/* The lines a child writes to a pipe, as they arrive (runner.c reads a run's
 * stream, launch.c mpirun's): a partial line is kept until its newline. */
#define NF_LINE_MAX (16u << 20) /* a longer line is dropped */
typedef struct {
    char *buf;
    size_t cap, len;
    bool overlong; /* the line being read is dropped */
} LineReader;
void line_reader_init(LineReader *r);
/* One read of fd; each whole, non-empty line (without its newline) goes to
 * on_line. Returns what read returned (EINTR retried): 0 at the end, -1 on
 * an error, also when out of memory. */
ssize_t line_reader_read(LineReader *r, int fd, void (*on_line)(void *ctx, const char *line, size_t len), void *ctx);
void line_reader_free(LineReader *r);

/* From now on every message also goes to stderr (after NF_STDERR_NOTE):
 * train's last messages when it stops on a signal its supervisor may have
 * sent by dying, as a write into the dying supervisor's pipe can still
 * succeed and be lost with it. */
void msg_tee_stderr(NfOut *out);

/* Emits {"type":"error","code":...,"message":...} (with "rank" and the
 * message beginning "rank R: " for a rank, even a muted one) and returns the
 * exit status for it: 2 for usage errors, 1 for everything else. */
int emit_error(NfOut *out, const NfError *err);

/* The start every command shares: parses argv against its flags. True when the command is over before it
 * began: --help was printed (*status 0) or a flag was wrong (its NDJSON error emitted, *status non-zero). */
bool command_parse_flags(const char *command, const char *summary, ArgSpec *specs, int n_specs, int argc, char **argv,
                         NfOut *out, int *status);

/* Writes a model configuration as the object `key` (the shape every message uses). */
void json_model_config(JsonBuf *j, const char *key, const ModelConfig *c);
/* A LoRA configuration's fields, into the object being written: rank, alpha,
 * scale, dropout, targets, train_norms, params. */
void json_lora_fields(JsonBuf *j, const LoraConfig *lc, int64_t params);

/* A line of human-readable text on stderr. */
void nf_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
