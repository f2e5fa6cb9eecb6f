/* checkpoint.c — writing and verifying training checkpoints. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h> /* XXH3 through AVX2 or AVX-512 where the CPU has them (1.5-4x): chosen at run time */
#endif

#include "fileio.h"
#include "hf_model.h"
#include "model_open.h"
#include "params.h"
#include "util.h"

static const char MAGIC[8] = {'N', 'F', 'C', 'K', 'P', 'T', '0', '1'};
#define CKPT_VERSION   4   /* still read: 1 (no model block), 2 (FNV checksums), 3 (a base checksum in one stream) */
#define XXH3_VERSION   3   /* the first version whose checksums (file and LoRA base) are XXH3 */
#define PIECES_VERSION 4   /* the first whose LoRA base checksum is hashed in pieces, by all threads at once */
#define HEADER_FIXED   120 /* bytes before the model block */
#define MODEL_BLOCK    64  /* version 2: the model config beyond llama2.c's, before the options JSON */
#define LORA_BLOCK     32  /* kind 1: bytes after the options JSON, before the base path */
#define KIND_FULL      0
#define KIND_LORA      1
/* Hashing and copying go in slices this size, so a slice is hashed while it is still in the cache. */
#define SLICE_BYTES ((size_t)1 << 20)
/* A LoRA base checksum's pieces (from PIECES_VERSION): each file's bytes in pieces this size, hashed apart, each
 * thread reading its pieces in slices of PIECE_SLICE_BYTES: with two cores at once, 1 MiB slices (a Zen 5 core's
 * L2) ran 1.5x slower than 512 KiB ones, 256 KiB 1.1x, 64 KiB (more reads) 1.6x */
#define BASE_PIECE_BYTES  ((size_t)16 << 20)
#define PIECE_SLICE_BYTES ((size_t)512 << 10)

/* The checksum of a version: XXH3-64 (libxxhash, seed 0) from version 3 on, FNV-1a over little-endian 64-bit
 * words (the tail zero-padded) before it. FNV runs at ~1 GB/s, XXH3 at the speed of memory, so only files of
 * older versions pay for FNV. */
typedef struct {
    XXH3_state_t *xxh; /* NULL: FNV */
    uint64_t h;
    unsigned char tail[8];
    int n_tail;
} Checksum;

static int checksum_init(Checksum *c, uint32_t version, NfError *err) {
    *c = (Checksum){.h = 0xcbf29ce484222325ull};
    if (version < XXH3_VERSION) return 0;
    if (!(c->xxh = XXH3_createState()) || XXH3_64bits_reset(c->xxh) != XXH_OK) {
        XXH3_freeState(c->xxh);
        c->xxh = NULL;
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    return 0;
}

static void fnv_update(Checksum *c, const unsigned char *p, size_t n) {
    while (n > 0 && c->n_tail > 0 && c->n_tail < 8) {
        c->tail[c->n_tail++] = *p++;
        n--;
        if (c->n_tail == 8) {
            uint64_t w;
            memcpy(&w, c->tail, 8);
            c->h = (c->h ^ w) * 0x100000001b3ull;
            c->n_tail = 0;
        }
    }
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c->h = (c->h ^ w) * 0x100000001b3ull;
    }
    for (; n > 0; n--) c->tail[c->n_tail++] = *p++;
}

static void checksum_update(Checksum *c, const void *data, size_t n) {
    if (c->xxh)
        XXH3_64bits_update(c->xxh, data, n); /* fails only on a NULL state */
    else
        fnv_update(c, data, n);
}

/* The value; frees the state. */
static uint64_t checksum_final(Checksum *c) {
    if (c->xxh) {
        c->h = XXH3_64bits_digest(c->xxh);
        XXH3_freeState(c->xxh);
        c->xxh = NULL;
    } else if (c->n_tail > 0) {
        memset(c->tail + c->n_tail, 0, (size_t)(8 - c->n_tail));
        uint64_t w;
        memcpy(&w, c->tail, 8);
        c->h = (c->h ^ w) * 0x100000001b3ull;
        c->n_tail = 0;
    }
    return c->h;
}

int checkpoint_checksum(const void *data, size_t n, uint32_t version, uint64_t *sum, NfError *err) {
    Checksum c;
    if (checksum_init(&c, version, err) != 0) return -1;
    checksum_update(&c, data, n);
    *sum = checksum_final(&c);
    return 0;
}

typedef struct {
    unsigned char *p;
} Writer;

static void put(Writer *w, const void *v, size_t n) {
    memcpy(w->p, v, n);
    w->p += n;
}

static void encode_header(const Checkpoint *ck, unsigned char *buf, uint32_t options_len) {
    Writer w = {buf};
    uint32_t version = CKPT_VERSION, kind = ck->is_lora ? KIND_LORA : KIND_FULL;
    int32_t cfg[8] = {
        ck->config.dim,        ck->config.hidden_dim, ck->config.n_layers, ck->config.n_heads,
        ck->config.n_kv_heads, ck->config.vocab_size, ck->config.seq_len,  ck->config.shared_classifier ? 1 : 0};
    put(&w, MAGIC, 8);
    put(&w, &version, 4);
    put(&w, &kind, 4);
    put(&w, cfg, sizeof cfg);
    put(&w, &ck->step, 8);
    put(&w, &ck->tokens_seen, 8);
    put(&w, &ck->data_rng_state, 8);
    put(&w, &ck->data_epoch, 8);
    put(&w, &ck->data_position, 8);
    put(&w, &ck->best_val_loss, 8);
    put(&w, &ck->last_loss, 8);
    put(&w, &ck->n_params, 8);
    put(&w, &options_len, 4);
    uint32_t reserved = 0;
    put(&w, &reserved, 4);
}

/* The model block: what ModelConfig holds beyond the 8 fields of the fixed header (docs/formats.md). */
static void encode_model_block(const ModelConfig *c, unsigned char *buf) {
    memset(buf, 0, MODEL_BLOCK);
    Writer w = {buf};
    int32_t head_dim = config_head_size(c), context = c->rope_scaling.original_context;
    uint32_t arch = c->arch, flags = (c->qkv_bias ? 1u : 0u) | (c->qk_norm ? 2u : 0u), scaling = c->rope_scaling.type;
    float theta = config_rope_theta(c), eps = config_norm_eps(c);
    put(&w, &head_dim, 4);
    put(&w, &arch, 4);
    put(&w, &flags, 4);
    put(&w, &theta, 4);
    put(&w, &eps, 4);
    put(&w, &scaling, 4);
    put(&w, &c->rope_scaling.factor, 4);
    put(&w, &c->rope_scaling.low_freq_factor, 4);
    put(&w, &c->rope_scaling.high_freq_factor, 4);
    put(&w, &context, 4);
}

/* The config from the fixed header's 8 fields at p + 16 and, in version 2, the model block at p + HEADER_FIXED;
 * values no ModelConfig can hold are refused here, the rest by config_validate. */
static int decode_config(const unsigned char *p, uint32_t version, ModelConfig *c, NfError *err) {
    int32_t cfg[8];
    memcpy(cfg, p + 16, sizeof cfg);
    *c = (ModelConfig){.dim = cfg[0],
                       .hidden_dim = cfg[1],
                       .n_layers = cfg[2],
                       .n_heads = cfg[3],
                       .n_kv_heads = cfg[4],
                       .vocab_size = cfg[5],
                       .seq_len = cfg[6],
                       .shared_classifier = cfg[7] != 0};
    if (version < 2) return 0;
    const unsigned char *b = p + HEADER_FIXED;
    uint32_t arch, flags, scaling;
    memcpy(&c->head_dim, b, 4);
    memcpy(&arch, b + 4, 4);
    memcpy(&flags, b + 8, 4);
    memcpy(&c->rope_theta, b + 12, 4);
    memcpy(&c->norm_eps, b + 16, 4);
    memcpy(&scaling, b + 20, 4);
    memcpy(&c->rope_scaling.factor, b + 24, 4);
    memcpy(&c->rope_scaling.low_freq_factor, b + 28, 4);
    memcpy(&c->rope_scaling.high_freq_factor, b + 32, 4);
    memcpy(&c->rope_scaling.original_context, b + 36, 4);
    if (arch > ARCH_QWEN3) return nf_fail(err, NF_ERR_CHECKPOINT, "architecture %u is unknown", arch);
    if (flags > 3u) return nf_fail(err, NF_ERR_CHECKPOINT, "model flags 0x%x have unknown bits", flags);
    if (scaling > ROPE_SCALING_LLAMA3)
        return nf_fail(err, NF_ERR_CHECKPOINT, "RoPE scaling type %u is unknown", scaling);
    c->arch = (ModelArch)arch, c->rope_scaling.type = (RopeScalingType)scaling;
    c->qkv_bias = flags & 1u, c->qk_norm = flags & 2u;
    return 0;
}

static uint64_t header_bytes(uint32_t version) { return HEADER_FIXED + (version >= 2 ? MODEL_BLOCK : 0); }

/* The LoRA block of a kind-1 checkpoint, before the base path. */
static void encode_lora(const Checkpoint *ck, unsigned char *buf, uint32_t path_len) {
    Writer w = {buf};
    int32_t rank = ck->lora.rank;
    uint32_t targets = ck->lora.targets, norms = ck->lora.train_norms ? 1 : 0;
    put(&w, &rank, 4);
    put(&w, &ck->lora.alpha, 4);
    put(&w, &ck->lora.dropout, 4);
    put(&w, &targets, 4);
    put(&w, &norms, 4);
    put(&w, &path_len, 4);
    put(&w, &ck->base_checksum, 8);
}

int checkpoint_save(const char *path, const Checkpoint *ck, uint64_t *bytes, NfError *err) {
    uint32_t options_len = (uint32_t)strlen(ck->options_json ? ck->options_json : "");
    uint32_t path_len = ck->is_lora ? (uint32_t)strlen(ck->base_path) : 0;
    unsigned char header[HEADER_FIXED + MODEL_BLOCK], lora_block[LORA_BLOCK];
    encode_header(ck, header, options_len);
    encode_model_block(&ck->config, header + HEADER_FIXED);
    if (ck->is_lora) encode_lora(ck, lora_block, path_len);
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    Checksum sum;
    if (checksum_init(&sum, CKPT_VERSION, err) != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    size_t tensor_bytes = (size_t)ck->n_params * sizeof(float);
    const void *parts[7] = {
        header,    ck->options_json ? ck->options_json : "", lora_block, ck->base_path, ck->params, ck->adam_m,
        ck->adam_v};
    size_t sizes[7] = {HEADER_FIXED + MODEL_BLOCK,
                       options_len,
                       ck->is_lora ? LORA_BLOCK : 0,
                       path_len,
                       tensor_bytes,
                       tensor_bytes,
                       tensor_bytes};
    *bytes = 8;
    int rc = 0;
    /* slice by slice, so each slice is hashed and written while it is in the cache */
    for (int i = 0; rc == 0 && i < 7; i++) {
        const unsigned char *part = parts[i];
        for (size_t at = 0; rc == 0 && at < sizes[i]; at += SLICE_BYTES) {
            size_t k = sizes[i] - at < SLICE_BYTES ? sizes[i] - at : SLICE_BYTES;
            checksum_update(&sum, part + at, k);
            rc = atomic_file_write(&f, part + at, k, err);
        }
        *bytes += sizes[i];
    }
    uint64_t h = checksum_final(&sum);
    if (rc != 0 || atomic_file_write(&f, &h, 8, err) != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    return atomic_file_commit(&f, err);
}

/* Where the tensors start if the header's sizes (options, LoRA base path, n_params) describe exactly this file's
 * size, else 0: only then are buffers allocated before the checksum is known, and never larger than the file. */
static uint64_t tensor_offset(const MappedFile *f, uint32_t version, uint32_t kind, uint32_t options_len,
                              uint64_t n_params) {
    uint64_t offset = header_bytes(version) + (uint64_t)options_len;
    if (kind == KIND_LORA) {
        uint32_t plen;
        if (offset + LORA_BLOCK > f->size - 8) return 0;
        memcpy(&plen, f->data + offset + 20, 4);
        offset += LORA_BLOCK + (uint64_t)plen;
    }
    if (n_params == 0 || offset > f->size - 8 || (f->size - 8 - offset) / 12 != n_params ||
        (f->size - 8 - offset) % 12 != 0)
        return 0;
    return offset;
}

/* Files are hashed through read(2) into one reused slice (or straight into their destination), not through a
 * mapping: from the page cache read() copies at memory speed, where every 4 KiB page of a fresh mapping costs a
 * fault (0.55 s against 0.05 s for a 438 MB model on the project's VMs, docs/performance.md). */
typedef struct {
    int fd;
    const char *path;
    size_t slice_bytes;
    unsigned char *slice; /* (slice_bytes); NULL for a reader that only reads into its callers' buffers */
} SliceReader;

static int reader_open(SliceReader *r, const char *path, const char *what, size_t slice_bytes, uint64_t *size,
                       NfError *err) {
    struct stat st;
    *r = (SliceReader){.fd = open(path, O_RDONLY | O_CLOEXEC), .path = path};
    if (r->fd < 0) return nf_fail(err, NF_ERR_IO, "cannot open %s file '%s': %s", what, path, strerror(errno));
    if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(r->fd);
        return nf_fail(err, NF_ERR_IO, "%s file '%s' is not a regular file", what, path);
    }
    *size = (uint64_t)st.st_size;
    r->slice_bytes = slice_bytes;
    if (slice_bytes > 0 && !(r->slice = nf_alloc_unzeroed(slice_bytes, err))) {
        close(r->fd);
        return -1;
    }
    return 0;
}

static void reader_close(SliceReader *r) {
    close(r->fd);
    free(r->slice);
}

static int read_at(SliceReader *r, void *to, size_t n, uint64_t at, NfError *err) {
    for (size_t got = 0; got < n;) {
        ssize_t k = pread(r->fd, (unsigned char *)to + got, n - got, (off_t)(at + got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return nf_fail(err, NF_ERR_IO, "cannot read '%s': %s", r->path, strerror(errno));
        if (k == 0) return nf_fail(err, NF_ERR_IO, "'%s' changed while it was read", r->path);
        got += (size_t)k;
    }
    return 0;
}

/* Reads n bytes at `at` and hashes them, slice by slice: into dst when given, else through the reader's slice;
 * with `expect` (the mapping a header was parsed from), they must be those bytes. */
static int read_hashed(SliceReader *r, Checksum *c, uint64_t at, size_t n, void *dst, const unsigned char *expect,
                       NfError *err) {
    for (size_t done = 0; done < n; done += r->slice_bytes) {
        size_t k = n - done < r->slice_bytes ? n - done : r->slice_bytes;
        unsigned char *to = dst ? (unsigned char *)dst + done : r->slice;
        if (read_at(r, to, k, at + done, err) != 0) return -1;
        if (expect && memcmp(to, expect + done, k) != 0)
            return nf_fail(err, NF_ERR_IO, "'%s' changed while it was read", r->path);
        checksum_update(c, to, k);
    }
    return 0;
}

/* Verifies the file's checksum, reading it once: where the layout is plausible (tensor_offset), the weights
 * (and with_optimizer, the moments) are read into new buffers in the same pass. The bytes before them must be
 * those of f, which the caller parses. */
static int verify_and_copy(const char *path, const MappedFile *f, uint32_t version, uint32_t kind, uint32_t options_len,
                           Checkpoint *ck, bool with_optimizer, NfError *err) {
    uint64_t offset = tensor_offset(f, version, kind, options_len, ck->n_params), size;
    size_t tb = (size_t)ck->n_params * sizeof(float);
    if (offset != 0 && (!(ck->params = nf_alloc_unzeroed(tb, err)) ||
                        (with_optimizer &&
                         (!(ck->adam_m = nf_alloc_unzeroed(tb, err)) || !(ck->adam_v = nf_alloc_unzeroed(tb, err))))))
        return -1;
    SliceReader r;
    Checksum sum;
    if (reader_open(&r, path, "checkpoint", SLICE_BYTES, &size, err) != 0) return -1;
    if (checksum_init(&sum, version, err) != 0) {
        reader_close(&r);
        return -1;
    }
    int rc = size == f->size ? 0 : nf_fail(err, NF_ERR_IO, "'%s' changed while it was read", path);
    uint64_t stored = 0;
    if (rc == 0 && offset == 0)
        rc = read_hashed(&r, &sum, 0, f->size - 8, NULL, f->data, err);
    else if (rc == 0)
        rc = read_hashed(&r, &sum, 0, offset, NULL, f->data, err) != 0 ||
                     read_hashed(&r, &sum, offset, tb, ck->params, NULL, err) != 0 ||
                     read_hashed(&r, &sum, offset + tb, tb, ck->adam_m, NULL, err) != 0 ||
                     read_hashed(&r, &sum, offset + 2 * tb, tb, ck->adam_v, NULL, err) != 0
                 ? -1
                 : 0;
    if (rc == 0) rc = read_at(&r, &stored, 8, f->size - 8, err);
    uint64_t h = checksum_final(&sum);
    reader_close(&r);
    if (rc != 0) return -1;
    if (h != stored)
        return nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' fails its checksum: the file is corrupt", path);
    return 0;
}

int checkpoint_load(const char *path, Checkpoint *ck, bool with_optimizer, NfError *err) {
    memset(ck, 0, sizeof *ck);
    MappedFile f;
    if (mapped_file_open(&f, path, "checkpoint", err) != 0) return -1;
    int rc = -1;
    const unsigned char *p = f.data;
    if (f.size < HEADER_FIXED + 8 || memcmp(p, MAGIC, 8) != 0) {
        nf_fail(err, NF_ERR_CHECKPOINT, "'%s' is not a NeuralForge checkpoint (bad magic or too short)", path);
        goto done;
    }
    uint32_t version, kind, options_len;
    memcpy(&version, p + 8, 4);
    memcpy(&kind, p + 12, 4);
    memcpy(&ck->step, p + 48, 8);
    memcpy(&ck->tokens_seen, p + 56, 8);
    memcpy(&ck->data_rng_state, p + 64, 8);
    memcpy(&ck->data_epoch, p + 72, 8);
    memcpy(&ck->data_position, p + 80, 8);
    memcpy(&ck->best_val_loss, p + 88, 8);
    memcpy(&ck->last_loss, p + 96, 8);
    memcpy(&ck->n_params, p + 104, 8);
    memcpy(&options_len, p + 112, 4);
    if (version < 1 || version > CKPT_VERSION || (kind != KIND_FULL && kind != KIND_LORA)) {
        nf_fail(err, NF_ERR_CHECKPOINT,
                "checkpoint '%s' has version %u kind %u; this build reads versions 1 to %d, kinds 0 and 1", path,
                version, kind, CKPT_VERSION);
        goto done;
    }
    if (f.size < header_bytes(version) + 8) {
        nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' is too short for its header (truncated?)", path);
        goto done;
    }
    /* the checksum first: a damaged file is reported as damaged, whatever byte was hit */
    if (verify_and_copy(path, &f, version, kind, options_len, ck, with_optimizer, err) != 0) goto done;
    ck->version = version;
    if (decode_config(p, version, &ck->config, err) != 0 || config_validate(&ck->config, err) != 0) {
        nf_prefix(err, NF_ERR_CHECKPOINT, "checkpoint '%s' has an invalid model config: ", path);
        goto done;
    }
    uint64_t offset = header_bytes(version) + (uint64_t)options_len, path_len = 0;
    ck->is_lora = kind == KIND_LORA;
    if (ck->is_lora) {
        if (offset + LORA_BLOCK > f.size - 8) {
            nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' is too short for its LoRA block (truncated?)", path);
            goto done;
        }
        const unsigned char *b = p + offset;
        int32_t rank;
        uint32_t targets, norms, plen;
        memcpy(&rank, b, 4);
        memcpy(&ck->lora.alpha, b + 4, 4);
        memcpy(&ck->lora.dropout, b + 8, 4);
        memcpy(&targets, b + 12, 4);
        memcpy(&norms, b + 16, 4);
        memcpy(&plen, b + 20, 4);
        memcpy(&ck->base_checksum, b + 24, 8);
        ck->lora.rank = rank;
        ck->lora.targets = targets;
        ck->lora.train_norms = norms != 0;
        path_len = plen;
        if (lora_config_validate(&ck->lora, &ck->config, err) != 0 || norms > 1) {
            nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' has an invalid LoRA configuration", path);
            goto done;
        }
        offset += LORA_BLOCK;
    }
    uint64_t n = ck->is_lora ? lora_param_count(&ck->config, &ck->lora) : config_param_count(&ck->config);
    uint64_t expected = offset + path_len + 3 * 4 * n + 8;
    if (ck->n_params != n) {
        nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' says it holds %llu weights; its configuration has %llu", path,
                (unsigned long long)ck->n_params, (unsigned long long)n);
        goto done;
    }
    if (path_len > 65536 || f.size != expected) {
        nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' is %zu bytes but its header describes %llu (truncated?)", path,
                f.size, (unsigned long long)expected);
        goto done;
    }
    if (!ck->params) { /* the layout verify_and_copy found is the one just checked, so this cannot happen */
        nf_fail(err, NF_ERR_CHECKPOINT, "checkpoint '%s' has an inconsistent layout", path);
        goto done;
    }
    if (!(ck->options_json = nf_alloc(options_len + 1, err)) || !(ck->base_path = nf_alloc(path_len + 1, err)))
        goto done;
    memcpy(ck->options_json, p + header_bytes(version), options_len);
    memcpy(ck->base_path, p + offset, path_len);
    rc = 0;
done:
    mapped_file_close(&f);
    if (rc != 0) checkpoint_free(ck);
    return rc;
}

void checkpoint_free(Checkpoint *ck) {
    free(ck->options_json);
    free(ck->base_path);
    free(ck->params);
    free(ck->adam_m);
    free(ck->adam_v);
    memset(ck, 0, sizeof *ck);
}

/* base_sum: the base's checksum of the checkpoint's version. */
static int base_compare(const Checkpoint *ck, const char *ckpt_path, const char *base_path, uint64_t base_sum,
                        const ModelConfig *base_config, NfError *err) {
    if (base_sum != ck->base_checksum || !config_equal(base_config, &ck->config))
        return nf_fail(err, NF_ERR_CHECKPOINT,
                       "LoRA checkpoint '%s' was trained on another base model than '%s' (it names '%s')", ckpt_path,
                       base_path, ck->base_path);
    return 0;
}

static int exactly_one_source(const char *model_path, const char *ckpt_path, NfError *err) {
    if (!model_path == !ckpt_path) return nf_fail(err, NF_ERR_USAGE, "give exactly one of --model and --ckpt");
    return 0;
}

/* A base checksum as it is built: before PIECES_VERSION one checksum over the files' bytes one after another
 * (sum); from it, the XXH3-64 of each file's pieces (digests, n of them), whose own XXH3-64 is the value. */
typedef struct {
    uint32_t version;
    Checksum sum;
    uint64_t *digests;
    size_t n, cap;
} BaseChecksum;

/* The XXH3-64 of the piece of `size` bytes at `at` of r's file, into *digest */
static int hash_piece(SliceReader *r, uint64_t at, uint64_t size, uint64_t *digest, NfError *err) {
    Checksum c;
    if (checksum_init(&c, PIECES_VERSION, err) != 0) return -1;
    size_t k = size - at < BASE_PIECE_BYTES ? (size_t)(size - at) : BASE_PIECE_BYTES;
    int rc = read_hashed(r, &c, at, k, NULL, NULL, err);
    *digest = checksum_final(&c);
    return rc;
}

/* Appends the digests of a file's BASE_PIECE_BYTES pieces (the last may be shorter; an empty file has none).
 * The threads hash pieces at once, each reading through a SliceReader of its own: a checksum in one stream
 * took 1.1-2.0x the time of reading the file; in pieces, 0.7-0.8x (docs/performance.md). */
static int append_piece_digests(BaseChecksum *b, const char *path, NfError *err) {
    SliceReader r;
    uint64_t size;
    if (reader_open(&r, path, "model", 0, &size, err) != 0) return -1; /* the size all threads read to */
    reader_close(&r);
    size_t pieces = (size_t)((size + BASE_PIECE_BYTES - 1) / BASE_PIECE_BYTES);
    if (!nf_grow((void **)&b->digests, &b->cap, b->n + pieces, sizeof(uint64_t), 64))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    uint64_t *digests = b->digests + b->n;
    int failed = 0;
#pragma omp parallel
    {
        NfError mine = {0};
        SliceReader own;
        uint64_t own_size; /* unused: a file cut short since is found by the reads ("changed while it was read") */
        int rc = reader_open(&own, path, "model", PIECE_SLICE_BYTES, &own_size, &mine);
        bool opened = rc == 0;
        long p;
#pragma omp for schedule(dynamic)
        for (p = 0; p < (long)pieces; p++)
            if (rc == 0) rc = hash_piece(&own, (uint64_t)p * BASE_PIECE_BYTES, size, &digests[p], &mine);
        if (opened) reader_close(&own);
#pragma omp critical(base_checksum_error)
        if (rc != 0 && !failed) {
            failed = 1;
            if (err) *err = mine;
        }
    }
    if (failed) return -1;
    b->n += pieces;
    return 0;
}

static int base_checksum_file(BaseChecksum *b, const char *path, NfError *err) {
    if (b->version >= PIECES_VERSION) return append_piece_digests(b, path, err);
    SliceReader r;
    uint64_t size;
    if (reader_open(&r, path, "model", SLICE_BYTES, &size, err) != 0) return -1;
    int rc = read_hashed(&r, &b->sum, 0, (size_t)size, NULL, NULL, err);
    reader_close(&r);
    return rc;
}

/* A file's bytes; a Hugging Face directory's files (hf_model_files' order) one after another; hashed as a
 * checkpoint of `version` hashes its base: from PIECES_VERSION the XXH3-64 of the little-endian XXH3-64 digests
 * of each file's pieces in order, before it the checksum of the bytes (docs/formats.md). */
static int base_checksum_of_version(const char *path, uint32_t version, uint64_t *out, NfError *err) {
    BaseChecksum b = {.version = version};
    if (checksum_init(&b.sum, version, err) != 0) return -1;
    struct stat sb;
    int rc = 0;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char **files;
        int n;
        if ((rc = hf_model_files(path, &files, &n, err)) == 0) {
            for (int i = 0; rc == 0 && i < n; i++) rc = base_checksum_file(&b, files[i], err);
            hf_model_files_free(files, n);
        }
    } else {
        rc = base_checksum_file(&b, path, err);
    }
    if (version >= PIECES_VERSION) checksum_update(&b.sum, b.digests, b.n * sizeof(uint64_t)); /* little-endian */
    uint64_t h = checksum_final(&b.sum);
    free(b.digests);
    if (rc != 0) return -1;
    *out = h;
    return 0;
}

int model_file_checksum(const char *path, uint64_t *out, NfError *err) {
    return base_checksum_of_version(path, CKPT_VERSION, out, err);
}

int checkpoint_check_base(const Checkpoint *ck, const char *ckpt_path, const char *base_path,
                          const ModelConfig *base_config, NfError *err) {
    uint64_t sum;
    if (base_checksum_of_version(base_path, ck->version, &sum, err) != 0) return -1;
    return base_compare(ck, ckpt_path, base_path, sum, base_config, err);
}

int checkpoint_base_matches(const Checkpoint *ck, const char *ckpt_path, const char *base_path, uint64_t base_sum,
                            const ModelConfig *base_config, NfError *err) {
    if (ck->version < PIECES_VERSION && base_checksum_of_version(base_path, ck->version, &base_sum, err) != 0)
        return -1;
    return base_compare(ck, ckpt_path, base_path, base_sum, base_config, err);
}

int lora_load(const char *adapter_path, const char *base_path, const ModelConfig *base_config, Lora *lora,
              float **buffer, NfError *err) {
    Checkpoint ck;
    if (checkpoint_load(adapter_path, &ck, false, err) != 0) return -1;
    int rc = -1;
    if (!ck.is_lora)
        nf_fail(err, NF_ERR_USAGE, "'%s' is a full checkpoint, not LoRA adapters (use it with --ckpt)", adapter_path);
    else if (checkpoint_check_base(&ck, adapter_path, base_path, base_config, err) == 0)
        rc = 0;
    if (rc == 0) {
        lora->config = ck.lora;
        *buffer = ck.params;
        ck.params = NULL;
        lora_pointers(&lora->w, *buffer, &ck.config, &ck.lora);
    }
    checkpoint_free(&ck);
    return rc;
}

/* Reads a model file into a flat fp32 buffer (Q8 dequantized). */
static int flat_params_of_model(const char *path, ModelConfig *config, float **params, NfError *err) {
    Model m;
    if (model_open(&m, path, err) != 0) return -1;
    *config = m.config;
    *params = nf_alloc_array_unzeroed((size_t)config_param_count(&m.config), sizeof(float), err);
    if (*params) params_from_model(*params, &m);
    model_free(&m);
    return *params ? 0 : -1;
}

int load_flat_params(const char *model_path, const char *ckpt_path, const char *lora_path, ModelConfig *config,
                     float **params, char **options_json, NfError *err) {
    *params = NULL;
    if (options_json) *options_json = NULL;
    if (lora_path && !model_path) return nf_fail(err, NF_ERR_USAGE, "--lora needs --model (the base model)");
    if (exactly_one_source(model_path, ckpt_path, err) != 0) return -1;
    const char *adapters = lora_path;
    if (ckpt_path) {
        Checkpoint ck;
        if (checkpoint_load(ckpt_path, &ck, false, err) != 0) return -1;
        char *options = ck.options_json;
        ck.options_json = NULL;
        int rc = 0;
        if (!ck.is_lora) {
            *config = ck.config;
            *params = ck.params;
            ck.params = NULL;
        } else { /* a LoRA checkpoint on its own: merged into the base model it names */
            char *base = strdup(ck.base_path);
            rc = base ? load_flat_params(base, NULL, ckpt_path, config, params, NULL, err)
                      : nf_fail(err, NF_ERR_MEMORY, "out of memory");
            free(base);
        }
        checkpoint_free(&ck);
        if (rc == 0 && options_json)
            *options_json = options;
        else
            free(options);
        return rc;
    }
    if (flat_params_of_model(model_path, config, params, err) != 0) return -1;
    if (!adapters) return 0;
    Lora lora;
    float *buffer;
    if (lora_load(adapters, model_path, config, &lora, &buffer, err) != 0) {
        free(*params);
        *params = NULL;
        return -1;
    }
    int rc = lora_merge(*params, config, &lora, err);
    free(buffer);
    if (rc != 0) {
        free(*params);
        *params = NULL;
    }
    return rc;
}

int open_model(const char *model_path, const char *ckpt_path, Model *m, NfError *err) {
    if (exactly_one_source(model_path, ckpt_path, err) != 0) return -1;
    if (model_path) return model_open(m, model_path, err);
    ModelConfig c;
    float *params;
    if (load_flat_params(NULL, ckpt_path, NULL, &c, &params, NULL, err) != 0) return -1;
    if (model_from_params(m, &c, params, err) != 0) {
        free(params);
        return -1;
    }
    m->owned = params; /* freed with the model */
    return 0;
}

bool checkpoint_peek_config(const char *path, ModelConfig *config, bool *is_lora) {
    unsigned char h[HEADER_FIXED + MODEL_BLOCK];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    uint32_t version, kind;
    memcpy(&version, h + 8, 4);
    memcpy(&kind, h + 12, 4);
    if (got < HEADER_FIXED || memcmp(h, MAGIC, 8) != 0 || version < 1 || version > CKPT_VERSION ||
        got < header_bytes(version) || (kind != KIND_FULL && kind != KIND_LORA))
        return false;
    if (decode_config(h, version, config, NULL) != 0) return false;
    *is_lora = kind == KIND_LORA;
    return config_validate(config, NULL) == 0;
}
