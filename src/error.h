/* error.h — the one way failures travel in NeuralForge.
 *
 * Functions that can fail take an NfError* and return 0 on success, -1 on
 * failure after filling it in. Only the command at the top turns an NfError
 * into an NDJSON `error` line and an exit status, so library code never
 * prints or exits on its own. */
#ifndef NF_ERROR_H
#define NF_ERROR_H

#include <stdarg.h>

/* Stable machine-readable codes: docs/protocol.md lists them. */
#define NF_ERR_USAGE      "usage"     /* unknown flag, bad or out-of-range value */
#define NF_ERR_IO         "io"        /* a file could not be opened, read or written */
#define NF_ERR_MODEL      "bad_model" /* a model file is malformed or inconsistent */
#define NF_ERR_TOKENIZER  "bad_tokenizer"
#define NF_ERR_DATA       "bad_data" /* token or text data that cannot be used */
#define NF_ERR_MEMORY     "out_of_memory"
#define NF_ERR_CHECKPOINT "bad_checkpoint"    /* corrupt, truncated or mismatched checkpoint */
#define NF_ERR_TRAINING   "training_diverged" /* NaN or infinite loss */
#define NF_ERR_DIST       "distributed"       /* train under mpirun: a rank lost or hung, or MPI failed */

typedef struct {
    const char *code;  /* one of the NF_ERR_* strings */
    char message[512]; /* one line, human readable */
} NfError;

/* Fills err (if not NULL) and returns -1, so callers can `return nf_fail(...)`. */
int nf_fail(NfError *err, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Says where a failure happened: err's message (the reason) becomes the formatted prefix followed by that
 * reason, e.g. nf_prefix(err, NF_ERR_MODEL, "'%s': ", path). code replaces err's code, or NULL keeps it.
 * Returns -1 (nothing happens when err is NULL). */
int nf_prefix(NfError *err, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
