/* protocol.c — writing NDJSON lines and stderr logs; reading a child's lines. */
#include "protocol.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "util.h"

void msg_begin(JsonBuf *j, const char *type) {
    json_init(j);
    json_object_begin(j, NULL);
    json_str(j, "type", type);
}

static bool write_line(FILE *f, const char *line, size_t len) {
    flockfile(f); /* a rank's watchdog thread (dist.c) may write its error meanwhile: whole lines */
    /* the line and its '\n' in one write where the stream is unbuffered (stderr), as nf_log does */
    fprintf(f, "%.*s\n", (int)len, line);
    bool ok = fflush(f) == 0 && !ferror(f);
    funlockfile(f);
    return ok;
}

static void note_stderr(NfOut *out) {
    if (!out->noted) nf_log(NF_STDERR_NOTE, (long)getpid());
    out->noted = true;
}

/* One whole line onto the stream (msg_emit's, and msg_relay's for another process's lines). */
static void put_line(NfOut *out, const char *line, size_t len) {
    if (!out->closed && !write_line(out->stream, line, len)) {
        /* nobody reads stdout any more (the dashboard died: EPIPE, with SIGPIPE
         * ignored): keep every message, on stderr, which a dashboard run
         * appends to the run's log */
        out->closed = true;
        note_stderr(out);
    }
    if (out->closed || out->tee) write_line(stderr, line, len);
}

static void emit_line(NfOut *out, JsonBuf *j) {
    json_object_end(j);
    /* Out of memory while building: say so rather than print a partial object. */
    static const char oom[] = "{\"type\":\"error\",\"code\":\"out_of_memory\",\"message\":\"cannot build message\"}";
    if (j->failed)
        put_line(out, oom, sizeof oom - 1);
    else
        put_line(out, j->data, j->len);
    json_free(j);
}

void msg_emit(NfOut *out, JsonBuf *j) {
    if (out->muted)
        json_free(j);
    else
        emit_line(out, j);
}

void msg_relay(NfOut *out, const char *line, size_t len) { put_line(out, line, len); }

void line_reader_init(LineReader *r) { memset(r, 0, sizeof *r); }

void line_reader_free(LineReader *r) {
    free(r->buf);
    r->buf = NULL;
}

ssize_t line_reader_read(LineReader *r, int fd, void (*on_line)(void *ctx, const char *line, size_t len), void *ctx) {
    if (!r->buf && !(r->buf = malloc(r->cap = 65536))) return -1;
    if (r->len == r->cap) {
        if (r->cap >= NF_LINE_MAX) { /* a line this long is dropped: no message of ours is */
            r->overlong = true;
            r->len = 0;
        } else if (!nf_grow((void **)&r->buf, &r->cap, r->cap + 1, 1, r->cap)) { /* doubles */
            return -1;
        }
    }
    ssize_t n;
    while ((n = read(fd, r->buf + r->len, r->cap - r->len)) < 0 && errno == EINTR) {
    }
    if (n <= 0) return n;
    size_t start = 0, end = r->len + (size_t)n;
    for (size_t i = r->len; i < end; i++)
        if (r->buf[i] == '\n') {
            if (!r->overlong && i > start) on_line(ctx, r->buf + start, i - start);
            r->overlong = false;
            start = i + 1;
        }
    memmove(r->buf, r->buf + start, end - start);
    r->len = end - start;
    return n;
}

void msg_tee_stderr(NfOut *out) {
    note_stderr(out);
    out->tee = true;
}

void msg_tee_if_supervised(NfOut *out) {
    int sig = 0;
    if (prctl(PR_GET_PDEATHSIG, &sig) == 0 && sig != 0) msg_tee_stderr(out);
}

int emit_error(NfOut *out, const NfError *err) {
    JsonBuf j;
    msg_begin(&j, "error");
    json_str(&j, "code", err->code ? err->code : "error");
    if (out->rank >= 0) {
        char message[sizeof err->message + 32];
        snprintf(message, sizeof message, "rank %d: %s", out->rank, err->message);
        json_str(&j, "message", message);
        json_int(&j, "rank", out->rank);
        nf_log("error: %s", message);
    } else {
        json_str(&j, "message", err->message);
        nf_log("error: %s", err->message);
    }
    emit_line(out, &j);
    return err->code && strcmp(err->code, NF_ERR_USAGE) == 0 ? 2 : 1;
}

void json_model_config(JsonBuf *j, const char *key, const ModelConfig *c) {
    json_object_begin(j, key);
    json_int(j, "dim", c->dim);
    json_int(j, "hidden_dim", c->hidden_dim);
    json_int(j, "n_layers", c->n_layers);
    json_int(j, "n_heads", c->n_heads);
    json_int(j, "n_kv_heads", c->n_kv_heads);
    json_int(j, "vocab_size", c->vocab_size);
    json_int(j, "seq_len", c->seq_len);
    json_int(j, "head_size", config_head_size(c));
    json_bool(j, "shared_classifier", c->shared_classifier);
    json_str(j, "arch", model_arch_name(c->arch));
    json_bool(j, "qkv_bias", c->qkv_bias);
    json_bool(j, "qk_norm", c->qk_norm);
    json_float(j, "rope_theta", config_rope_theta(c));
    json_float(j, "rms_norm_eps", config_norm_eps(c));
    if (c->rope_scaling.type == ROPE_SCALING_LLAMA3) {
        json_object_begin(j, "rope_scaling");
        json_str(j, "type", "llama3");
        json_float(j, "factor", c->rope_scaling.factor);
        json_float(j, "low_freq_factor", c->rope_scaling.low_freq_factor);
        json_float(j, "high_freq_factor", c->rope_scaling.high_freq_factor);
        json_int(j, "original_context", c->rope_scaling.original_context);
        json_object_end(j);
    } else {
        json_null_value(j, "rope_scaling");
    }
    json_object_end(j);
}

void json_lora_fields(JsonBuf *j, const LoraConfig *lc, int64_t params) {
    json_int(j, "rank", lc->rank);
    json_float(j, "alpha", lc->alpha);
    json_float(j, "scale", lora_scale(lc));
    json_float(j, "dropout", lc->dropout);
    json_array_begin(j, "targets");
    for (int t = 0; t < LORA_TARGETS; t++)
        if (lc->targets & (1u << t)) json_str(j, NULL, lora_target_name((LoraTarget)t));
    json_array_end(j);
    json_bool(j, "train_norms", lc->train_norms);
    json_int(j, "params", params);
}

void nf_log(const char *fmt, ...) {
    /* one write for the whole line: stderr is unbuffered, so a vfprintf and then a '\n' were two, and another
     * process writing the same file (a --processes launcher relaying its ranks' lines, which mpirun interleaves
     * with the ranks' stderr) could land between them, gluing a message to this line */
    char small[2048], *line = small;
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(small, sizeof small - 1, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= sizeof small - 1 && (line = malloc((size_t)n + 2)) != NULL)
        vsnprintf(line, (size_t)n + 1, fmt, again);
    va_end(again);
    if (n < 0) return;
    size_t len = line ? (size_t)n : sizeof small - 2; /* out of memory for a long line: its start */
    if (!line) line = small;
    line[len] = '\n';
    fwrite(line, 1, len + 1, stderr);
    if (line != small) free(line);
}

bool command_parse_flags(const char *command, const char *summary, ArgSpec *specs, int n_specs, int argc, char **argv,
                         NfOut *out, int *status) {
    NfError err = {0};
    int parsed = args_parse_command(command, summary, specs, n_specs, argc, argv, &err);
    *status = parsed == ARGS_ERROR ? emit_error(out, &err) : 0;
    return parsed != ARGS_OK;
}
