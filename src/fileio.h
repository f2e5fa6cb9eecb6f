/* fileio.h — reading files through mmap and writing them atomically.
 *
 * Every file NeuralForge writes goes through AtomicFile: the bytes go to a
 * temporary file beside the target, which is fsynced and then renamed over
 * it, and the directory is fsynced. A crash at any point leaves either the
 * old file or the complete new one, never a torn one. */
#ifndef NF_FILEIO_H
#define NF_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "error.h"

typedef struct {
    const unsigned char *data; /* read-only view of the whole file (not NULL, even when size is 0) */
    size_t size;
} MappedFile;

/* Maps a regular file read-only. `what` names it in errors ("model", "tokenizer"). */
int mapped_file_open(MappedFile *mf, const char *path, const char *what, NfError *err);
void mapped_file_close(MappedFile *mf);

typedef struct {
    FILE *fp; /* buffered writes go here */
    char *final_path;
    char *temp_path;
} AtomicFile;

int atomic_file_open(AtomicFile *af, const char *path, NfError *err);
int atomic_file_write(AtomicFile *af, const void *data, size_t bytes, NfError *err);
/* Overwrites bytes already written at `offset` (a header completed once the length is known); later writes
 * append at the end again. */
int atomic_file_write_at(AtomicFile *af, long offset, const void *data, size_t bytes, NfError *err);
/* Flushes, fsyncs, renames over the target and fsyncs the directory. */
int atomic_file_commit(AtomicFile *af, NfError *err);
/* Drops the temporary file; the target is untouched. Safe after commit. */
void atomic_file_abort(AtomicFile *af);

#endif
