/* fuzz.h — what the libFuzzer harnesses of tests/fuzz share: a private
 * temporary directory for parsers whose entry point takes a path, and the
 * tokenizer the text harnesses encode with.
 *
 * libFuzzer calls LLVMFuzzerTestOneInput with no context, so what a harness
 * sets up once (the directory, the tokenizer) lives in function-level
 * statics here: the one place in the project where that is the only way.
 * Each harness is its own process; nothing is shared between harnesses. */
#ifndef NF_FUZZ_H
#define NF_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"

/* A file name inside this process's temporary directory (made on first
 * use, removed at exit by fuzz_cleanup). It is made in $NF_FUZZ_TMP when set
 * (run.sh sets it and removes it afterwards: libFuzzer leaves by _Exit after a
 * crash, without atexit), else in /dev/shm: the harnesses write a file per
 * input, and a RAM file system keeps that cheap. */
static char fuzz_dir[256];

static inline void fuzz_cleanup(void) {
    char cmd[300];
    if (!fuzz_dir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir);
}

static inline const char *fuzz_path(const char *name) {
    static char path[512];
    if (!fuzz_dir[0]) {
        const char *base = getenv("NF_FUZZ_TMP")           ? getenv("NF_FUZZ_TMP")
                           : access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                           : getenv("TMPDIR")              ? getenv("TMPDIR")
                                                           : "/tmp";
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/nf_fuzz_XXXXXX", base);
        if (!mkdtemp(fuzz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_cleanup);
    }
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
    return path;
}

/* Writes data[0..size) to path (replacing it); a failure here is the
 * harness's, not the parser's, so it aborts. */
static inline void fuzz_write(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* The 512-piece llama2.c tokenizer of ../shared/data (NF_SHARED_DATA
 * overrides the folder, as for the e2e tests): real merges, byte fallback.
 * Without it, the built-in byte vocabulary, said once on stderr. */
static inline const Tokenizer *fuzz_tokenizer(void) {
    static Tokenizer t;
    static int loaded;
    if (!loaded) {
        const char *dir = getenv("NF_SHARED_DATA") ? getenv("NF_SHARED_DATA") : "../shared/data";
        char path[512];
        NfError err;
        snprintf(path, sizeof path, "%s/tok512.bin", dir);
        if (tokenizer_load(&t, path, &err) != 0) {
            fprintf(stderr, "fuzz: %s; using %s\n", err.message, TOKENIZER_BUILTIN_BYTES);
            if (tokenizer_load(&t, TOKENIZER_BUILTIN_BYTES, &err) != 0) abort();
        }
        loaded = 1;
    }
    return &t;
}

/* Reads the first and last byte of [p, p + n): a view that points outside
 * its buffer faults (or, on the heap, is reported by ASan) here rather than
 * being trusted silently. */
static inline unsigned fuzz_touch(const void *p, size_t n) {
    const volatile unsigned char *b = p;
    unsigned sum = 0;
    if (n) sum = b[0] + b[n - 1];
    return sum;
}

#endif
