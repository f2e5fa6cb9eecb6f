/* tokenfile.c — the token-file header: parsing, mapping, and the streaming writer. */
#include "tokenfile.h"

#include <string.h>

/* Little-endian fields of the header. */
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) { return get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

int token_width_for(int vocab_size) { return vocab_size > TOKEN_FILE_U16_VOCAB ? 4 : 2; }

static int parse_legacy(const unsigned char *data, size_t size, const char *what, const char *path, TokenFileView *v,
                        NfError *err) {
    if (size % 2 != 0)
        return nf_fail(err, NF_ERR_DATA,
                       "%s file '%s' has no header and an odd size (%zu bytes); headerless token files hold uint16 "
                       "ids",
                       what, path, size);
    *v = (TokenFileView){data, size / 2, 2, true, 0};
    return 0;
}

int token_file_parse(const unsigned char *data, size_t size, const char *what, const char *path, TokenFileView *v,
                     NfError *err) {
    memset(v, 0, sizeof *v);
    /* the first four bytes decide: a damaged header further on is an error, not a legacy file */
    if (size < 4 || memcmp(data, TOKEN_FILE_MAGIC, 4) != 0) return parse_legacy(data, size, what, path, v, err);
    if (size < TOKEN_FILE_HEADER_BYTES)
        return nf_fail(err, NF_ERR_DATA, "%s file '%s' has a truncated header (%zu bytes; the header is %d)", what,
                       path, size, TOKEN_FILE_HEADER_BYTES);
    if (memcmp(data, TOKEN_FILE_MAGIC, TOKEN_FILE_MAGIC_BYTES) != 0)
        return nf_fail(err, NF_ERR_DATA, "%s file '%s' has a corrupt header (bad magic)", what, path);
    uint32_t version = get_u32(data + 8), width = get_u32(data + 12), vocab = get_u32(data + 24);
    uint64_t count = get_u64(data + 16);
    if (version != TOKEN_FILE_VERSION)
        return nf_fail(err, NF_ERR_DATA, "%s file '%s' has header version %u; this build reads version %d", what, path,
                       version, TOKEN_FILE_VERSION);
    if (width != 2 && width != 4)
        return nf_fail(err, NF_ERR_DATA, "%s file '%s' has token width %u; token files hold 2 or 4 bytes per id", what,
                       path, width);
    for (size_t i = 28; i < TOKEN_FILE_HEADER_BYTES; i++)
        if (data[i] != 0)
            return nf_fail(err, NF_ERR_DATA, "%s file '%s' has a corrupt header (reserved byte %zu is not zero)", what,
                           path, i);
    size_t body = size - TOKEN_FILE_HEADER_BYTES;
    if (count > body / width || count * width != body)
        return nf_fail(err, NF_ERR_DATA,
                       "%s file '%s' is %zu bytes; its header lists %llu tokens of %u bytes after the %d-byte header",
                       what, path, size, (unsigned long long)count, width, TOKEN_FILE_HEADER_BYTES);
    *v = (TokenFileView){data + TOKEN_FILE_HEADER_BYTES, count, (int)width, false, vocab};
    return 0;
}

int token_file_open(TokenFile *f, const char *path, const char *what, NfError *err) {
    memset(f, 0, sizeof *f);
    if (mapped_file_open(&f->map, path, what, err) != 0) return -1;
    if (token_file_parse(f->map.data, f->map.size, what, path, &f->view, err) != 0) {
        token_file_close(f);
        return -1;
    }
    return 0;
}

void token_file_close(TokenFile *f) {
    mapped_file_close(&f->map);
    memset(f, 0, sizeof *f);
}

static void header_bytes(const TokenWriter *w, unsigned char h[TOKEN_FILE_HEADER_BYTES]) {
    memset(h, 0, TOKEN_FILE_HEADER_BYTES);
    memcpy(h, TOKEN_FILE_MAGIC, TOKEN_FILE_MAGIC_BYTES);
    put_u32(h + 8, TOKEN_FILE_VERSION);
    put_u32(h + 12, (uint32_t)w->width);
    put_u64(h + 16, w->count);
    put_u32(h + 24, (uint32_t)w->vocab_size);
}

int token_writer_open(TokenWriter *w, const char *path, int vocab_size, bool legacy, NfError *err) {
    memset(w, 0, sizeof *w);
    if (legacy && vocab_size > TOKEN_FILE_U16_VOCAB)
        return nf_fail(err, NF_ERR_USAGE,
                       "the tokenizer has %d pieces; headerless uint16 token files hold ids up to 65535", vocab_size);
    w->width = legacy ? 2 : token_width_for(vocab_size);
    w->legacy = legacy;
    w->vocab_size = vocab_size;
    if (atomic_file_open(&w->file, path, err) != 0) return -1;
    if (legacy) return 0;
    /* a placeholder: the count is known at commit */
    unsigned char h[TOKEN_FILE_HEADER_BYTES];
    header_bytes(w, h);
    if (atomic_file_write(&w->file, h, sizeof h, err) != 0) {
        token_writer_abort(w);
        return -1;
    }
    return 0;
}

static int writer_flush(TokenWriter *w, NfError *err) {
    if (atomic_file_write(&w->file, w->buf, w->len, err) != 0) return -1;
    w->len = 0;
    return 0;
}

int token_writer_put(TokenWriter *w, const int *ids, size_t n, NfError *err) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= w->vocab_size)
            return nf_fail(err, NF_ERR_DATA, "token id %d is outside the vocabulary of %d pieces", ids[i],
                           w->vocab_size);
        if (w->len + 4 > sizeof w->buf && writer_flush(w, err) != 0) return -1;
        uint32_t id = (uint32_t)ids[i];
        for (int k = 0; k < w->width; k++) w->buf[w->len++] = (unsigned char)(id >> (8 * k));
    }
    w->count += n;
    return 0;
}

int token_writer_commit(TokenWriter *w, NfError *err) {
    int rc = writer_flush(w, err);
    if (rc == 0 && !w->legacy) {
        unsigned char h[TOKEN_FILE_HEADER_BYTES];
        header_bytes(w, h);
        rc = atomic_file_write_at(&w->file, 0, h, sizeof h, err);
    }
    if (rc == 0) rc = atomic_file_commit(&w->file, err);
    token_writer_abort(w);
    return rc;
}

void token_writer_abort(TokenWriter *w) { atomic_file_abort(&w->file); }
