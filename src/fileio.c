/* fileio.c — mmap reading and atomic writing. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int mapped_file_open(MappedFile *mf, const char *path, const char *what, NfError *err) {
    memset(mf, 0, sizeof *mf);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return nf_fail(err, NF_ERR_IO, "cannot open %s file '%s': %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return nf_fail(err, NF_ERR_IO, "cannot stat %s file '%s': %s", what, path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return nf_fail(err, NF_ERR_IO, "%s file '%s' is not a regular file", what, path);
    }
    mf->size = (size_t)st.st_size;
    /* an empty file is a valid, empty view: parsers do `data + size` and
     * `data + offset` arithmetic, which on NULL is undefined behaviour */
    static const unsigned char empty[1];
    mf->data = empty;
    if (mf->size > 0) {
        void *p = mmap(NULL, mf->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return nf_fail(err, NF_ERR_IO, "cannot map %s file '%s': %s", what, path, strerror(e));
        }
        mf->data = p;
    }
    close(fd); /* the mapping stays valid */
    return 0;
}

void mapped_file_close(MappedFile *mf) {
    if (mf->size > 0) munmap((void *)mf->data, mf->size);
    memset(mf, 0, sizeof *mf);
}

int atomic_file_open(AtomicFile *af, const char *path, NfError *err) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path);
    af->final_path = malloc(n + 1);
    af->temp_path = malloc(n + 32);
    if (!af->final_path || !af->temp_path) {
        atomic_file_abort(af);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    memcpy(af->final_path, path, n + 1);
    snprintf(af->temp_path, n + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(af->temp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        nf_fail(err, NF_ERR_IO, "cannot create '%s': %s", af->temp_path, strerror(e));
        atomic_file_abort(af);
        return -1;
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        close(fd);
        unlink(af->temp_path);
        atomic_file_abort(af);
        return nf_fail(err, NF_ERR_IO, "cannot open '%s' for writing", path);
    }
    return 0;
}

/* Errors name the file being written (the temporary one is removed on
 * failure) and errno's reason: "No space left on device" on a full disk. */
int atomic_file_write(AtomicFile *af, const void *data, size_t bytes, NfError *err) {
    if (bytes && fwrite(data, 1, bytes, af->fp) != bytes)
        return nf_fail(err, NF_ERR_IO, "cannot write '%s': %s", af->final_path, strerror(errno));
    return 0;
}

int atomic_file_write_at(AtomicFile *af, long offset, const void *data, size_t bytes, NfError *err) {
    if (fseek(af->fp, offset, SEEK_SET) != 0 || (bytes && fwrite(data, 1, bytes, af->fp) != bytes) ||
        fseek(af->fp, 0, SEEK_END) != 0)
        return nf_fail(err, NF_ERR_IO, "cannot write '%s': %s", af->final_path, strerror(errno));
    return 0;
}

int atomic_file_commit(AtomicFile *af, NfError *err) {
    int rc = 0;
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0)
        rc = nf_fail(err, NF_ERR_IO, "cannot write '%s': %s", af->final_path, strerror(errno));
    if (fclose(af->fp) != 0 && rc == 0)
        rc = nf_fail(err, NF_ERR_IO, "cannot write '%s': %s", af->final_path, strerror(errno));
    af->fp = NULL;
    if (rc == 0 && rename(af->temp_path, af->final_path) != 0)
        rc = nf_fail(err, NF_ERR_IO, "cannot rename '%s' to '%s': %s", af->temp_path, af->final_path, strerror(errno));
    if (rc == 0) {
        /* The rename is durable only once the directory entry is on disk. */
        char *dir_copy = strdup(af->final_path);
        if (dir_copy) {
            int dfd = open(dirname(dir_copy), O_RDONLY | O_DIRECTORY);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            free(dir_copy);
        }
        free(af->temp_path);
        af->temp_path = NULL;
    }
    atomic_file_abort(af);
    return rc;
}

void atomic_file_abort(AtomicFile *af) {
    if (af->fp) fclose(af->fp);
    if (af->temp_path) unlink(af->temp_path);
    free(af->temp_path);
    free(af->final_path);
    memset(af, 0, sizeof *af);
}
