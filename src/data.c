/* data.c — token files, the train/validation split and batch sampling. */
#include "data.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "manifest.h"
#include "util.h"

/* One file to map: a token file, and its mask when it has one. */
typedef struct {
    char *path;      /* token file (tokenfile.h) */
    char *mask_path; /* its loss mask (one byte per token), or NULL */
    int64_t tokens;  /* tokens a manifest lists for it, or -1 (no manifest) */
    int64_t masked;  /* masked tokens a manifest lists, or -1 */
    const char *dir; /* the manifest's directory (for messages), or NULL */
    int width;       /* the width its manifest lists (2 or 4, with the header), or 0: no manifest, any format */
    bool legacy;     /* its manifest is version 1: headerless uint16 */
} DataFile;

typedef struct {
    DataFile *items;
    int n;
    size_t cap;
} DataFiles;

static void data_files_free(DataFiles *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].path);
        free(l->items[i].mask_path);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* Appends a file; takes ownership of path and mask_path. */
static int add_file(DataFiles *l, char *path, char *mask_path, int64_t tokens, int64_t masked, const char *dir,
                    int width, bool legacy, NfError *err) {
    if (!path) {
        free(mask_path);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    if (!nf_grow((void **)&l->items, &l->cap, (size_t)l->n + 1, sizeof *l->items, 16)) {
        free(path);
        free(mask_path);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    l->items[l->n++] = (DataFile){path, mask_path, tokens, masked, dir, width, legacy};
    return 0;
}

static int compare_data_files(const void *a, const void *b) {
    return strcmp(((const DataFile *)a)->path, ((const DataFile *)b)->path);
}

/* A directory that ingest wrote: exactly the shards its manifest lists. */
static int expand_manifest(const char *path, DataFiles *l, NfError *err) {
    Manifest m;
    if (manifest_load(path, &m, err) != 0) return -1;
    int rc = 0;
    if (m.n_shards == 0)
        rc = nf_fail(err, NF_ERR_DATA, "data directory '%s' holds no tokens (its manifest lists no shards)", path);
    for (int i = 0; rc == 0 && i < m.n_shards; i++) {
        const ManifestShard *s = &m.shards[i];
        char *mask = NULL;
        if (s->mask && !(mask = nf_path_join(path, s->mask))) rc = nf_fail(err, NF_ERR_MEMORY, "out of memory");
        if (rc == 0)
            rc = add_file(l, nf_path_join(path, s->file), mask, (int64_t)s->tokens, (int64_t)s->masked_tokens, path,
                          m.token_width, m.token_legacy, err);
    }
    manifest_free(&m);
    return rc;
}

/* Expands a path to the files it names: itself, a directory's regular
 * files, or the shards of a directory with a manifest.json. */
static int expand_path(const char *path, DataFiles *l, NfError *err) {
    struct stat st;
    if (stat(path, &st) != 0) return nf_fail(err, NF_ERR_IO, "cannot open data '%s': no such file or directory", path);
    int first = l->n;
    if (S_ISDIR(st.st_mode)) {
        if (manifest_exists(path)) return expand_manifest(path, l, err);
        DIR *dir = opendir(path);
        if (!dir) return nf_fail(err, NF_ERR_IO, "cannot read data directory '%s'", path);
        struct dirent *e;
        int rc = 0;
        while (rc == 0 && (e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char *full = nf_path_join(path, e->d_name);
            if (!full) {
                rc = nf_fail(err, NF_ERR_MEMORY, "out of memory");
                break;
            }
            if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) {
                free(full);
                continue;
            }
            rc = add_file(l, full, NULL, -1, -1, NULL, 0, false, err);
        }
        closedir(dir);
        if (rc != 0) return -1;
        if (l->n == first) return nf_fail(err, NF_ERR_DATA, "data directory '%s' holds no files", path);
        qsort(l->items + first, (size_t)(l->n - first), sizeof(DataFile), compare_data_files);
        return 0;
    }
    return add_file(l, strdup(path), NULL, -1, -1, NULL, 0, false, err);
}

/* A manifest's shards are in the format it lists: version 1's headerless uint16, version 2's header and width. */
static int check_listed_format(const TokenFileView *v, const DataFile *df, NfError *err) {
    if (df->width == 0 || (df->legacy ? v->legacy : !v->legacy && v->width == df->width)) return 0;
    const char *has = v->legacy ? "has no header" : v->width == 2 ? "holds 2-byte ids" : "holds 4-byte ids";
    const char *listed = df->legacy       ? "headerless uint16 shards (version 1)"
                         : df->width == 2 ? "2-byte ids"
                                          : "4-byte ids";
    return nf_fail(err, NF_ERR_DATA, "data file '%s' %s; the manifest of '%s' lists %s", df->path, has, df->dir,
                   listed);
}

/* Maps one token file (and its mask) and checks every id and mask byte,
 * and the counts its manifest lists. */
static int open_token_file(TokenFile *f, MappedFile *mask, const DataFile *df, int vocab_size, NfError *err) {
    const char *path = df->path;
    if (token_file_open(f, path, "data", err) != 0 || check_listed_format(&f->view, df, err) != 0) return -1;
    TokenSpan s = {f->view.tokens, f->view.width, NULL, f->view.count};
    if (df->tokens >= 0 && s.len != (uint64_t)df->tokens)
        return nf_fail(err, NF_ERR_DATA, "data file '%s' holds %llu tokens; the manifest of '%s' lists %lld", path,
                       (unsigned long long)s.len, df->dir, (long long)df->tokens);
    for (uint64_t i = 0; i < s.len; i++) {
        uint32_t id = token_id_at(s.bytes, s.width, i);
        if (id >= (uint32_t)vocab_size)
            return nf_fail(err, NF_ERR_DATA, "data file '%s' has token id %u at position %llu; the vocab_size is %d",
                           path, id, (unsigned long long)i, vocab_size);
    }
    if (!df->mask_path) return 0;
    if (mapped_file_open(mask, df->mask_path, "mask", err) != 0) return -1;
    if (mask->size != s.len)
        return nf_fail(err, NF_ERR_DATA, "mask file '%s' has %zu bytes; its shard '%s' has %llu tokens", df->mask_path,
                       mask->size, path, (unsigned long long)s.len);
    uint64_t zeros = 0;
    for (uint64_t i = 0; i < s.len; i++) {
        if (mask->data[i] > 1)
            return nf_fail(err, NF_ERR_DATA, "mask file '%s' has byte %d at position %llu; masks hold 0 or 1",
                           df->mask_path, mask->data[i], (unsigned long long)i);
        zeros += mask->data[i] == 0;
    }
    if (df->masked >= 0 && zeros != (uint64_t)df->masked)
        return nf_fail(err, NF_ERR_DATA, "mask file '%s' masks %llu tokens; the manifest of '%s' lists %lld",
                       df->mask_path, (unsigned long long)zeros, df->dir, (long long)df->masked);
    return 0;
}

/* Targets of the spans that the loss counts (every token but each span's first, unless masked). */
static uint64_t counted_targets(const TokenSpan *spans, int n) {
    uint64_t counted = 0;
    for (int i = 0; i < n; i++) {
        if (spans[i].len < 2) continue;
        if (!spans[i].mask) {
            counted += spans[i].len - 1;
            continue;
        }
        for (uint64_t k = 1; k < spans[i].len; k++) counted += spans[i].mask[k];
    }
    return counted;
}

int token_data_open(TokenData *d, const char *const *paths, int n_paths, const char *val_path, double val_split,
                    int vocab_size, int T, NfError *err) {
    memset(d, 0, sizeof *d);
    DataFiles files = {0};
    int rc = 0;
    for (int i = 0; rc == 0 && i < n_paths; i++) rc = expand_path(paths[i], &files, err);
    int n_train_files = files.n; /* files after these are validation files */
    if (rc == 0 && val_path) rc = expand_path(val_path, &files, err);
    int n = files.n;
    if (rc == 0 && (!(d->files = nf_alloc_array((size_t)n, sizeof(TokenFile), err)) ||
                    !(d->masks = nf_alloc_array((size_t)n, sizeof(MappedFile), err))))
        rc = -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        d->n_files = i + 1;
        rc = open_token_file(&d->files[i], &d->masks[i], &files.items[i], vocab_size, err);
    }
    if (rc == 0 && (!(d->train = nf_alloc_array((size_t)n + 1, sizeof(TokenSpan), err)) ||
                    !(d->val = nf_alloc_array((size_t)n + 1, sizeof(TokenSpan), err))))
        rc = -1;
    if (rc == 0) {
        uint64_t total = 0;
        for (int i = 0; i < n_train_files; i++) total += d->files[i].view.count;
        uint64_t keep = val_path ? total : total - (uint64_t)(val_split * (double)total);
        /* training spans: the first `keep` tokens; the rest (if splitting) is validation */
        uint64_t seen = 0;
        for (int i = 0; i < n_train_files; i++) {
            const TokenFileView *v = &d->files[i].view;
            TokenSpan s = {v->tokens, v->width, d->masks[i].data, v->count};
            uint64_t take = seen >= keep ? 0 : (keep - seen < s.len ? keep - seen : s.len);
            if (take > 0) d->train[d->n_train++] = (TokenSpan){s.bytes, s.width, s.mask, take};
            if (take < s.len && !val_path)
                d->val[d->n_val++] =
                    (TokenSpan){s.bytes + (size_t)s.width * take, s.width, s.mask ? s.mask + take : NULL, s.len - take};
            seen += s.len;
        }
        for (int i = n_train_files; val_path && i < n; i++)
            d->val[d->n_val++] =
                (TokenSpan){d->files[i].view.tokens, d->files[i].view.width, d->masks[i].data, d->files[i].view.count};
        for (int i = 0; i < d->n_train; i++) {
            d->train_tokens += d->train[i].len;
            d->train_masked |= d->train[i].mask != NULL;
        }
        for (int i = 0; i < d->n_val; i++) {
            d->val_tokens += d->val[i].len;
            d->val_masked |= d->val[i].mask != NULL;
        }
        uint64_t longest = 0;
        for (int i = 0; i < d->n_train; i++)
            if (d->train[i].len > longest) longest = d->train[i].len;
        if (n_paths > 0 && longest < (uint64_t)T + 1)
            rc = nf_fail(err, NF_ERR_DATA, "the training data has no run of %d tokens (--seq %d plus one)", T + 1, T);
        uint64_t val_longest = 0;
        for (int i = 0; i < d->n_val; i++)
            if (d->val[i].len > val_longest) val_longest = d->val[i].len;
        if (rc == 0 && d->n_val > 0 && val_longest < (uint64_t)T + 1)
            rc =
                nf_fail(err, NF_ERR_DATA, "the validation data has fewer than %d tokens (--seq %d plus one)", T + 1, T);
        if (rc == 0 && d->train_masked && counted_targets(d->train, d->n_train) == 0)
            rc = nf_fail(err, NF_ERR_DATA, "every target of the training data is masked: nothing to learn");
        if (rc == 0 && d->val_masked && counted_targets(d->val, d->n_val) == 0)
            rc = nf_fail(err, NF_ERR_DATA, "every target of the validation data is masked: nothing to measure");
    }
    data_files_free(&files);
    if (rc != 0) token_data_close(d);
    return rc;
}

void token_data_close(TokenData *d) {
    for (int i = 0; i < d->n_files; i++) {
        token_file_close(&d->files[i]);
        mapped_file_close(&d->masks[i]);
    }
    free(d->files);
    free(d->masks);
    free(d->train);
    free(d->val);
    memset(d, 0, sizeof *d);
}

/* Windows of T+1 tokens at stride T in a span. */
static uint64_t span_windows(const TokenSpan *s, int T) { return s->len > (uint64_t)T ? (s->len - 1) / T : 0; }

/* Valid random starts in a span. */
static uint64_t span_starts(const TokenSpan *s, int T) { return s->len > (uint64_t)T ? s->len - T : 0; }

static void copy_window(const TokenSpan *s, uint64_t start, int T, int *tokens, int *targets) {
    for (int t = 0; t < T; t++) {
        tokens[t] = token_at(s, start + t);
        targets[t] = token_at(s, start + t + 1);
    }
    if (s->mask)
        for (int t = 0; t < T; t++)
            if (!s->mask[start + t + 1]) targets[t] = -1;
}

/* Locates global index i among spans counted by `count`; returns the span and the local index. */
static const TokenSpan *locate(const TokenSpan *spans, int n, int T, uint64_t (*count)(const TokenSpan *, int),
                               uint64_t i, uint64_t *local) {
    for (int k = 0; k < n; k++) {
        uint64_t c = count(&spans[k], T);
        if (i < c) {
            *local = i;
            return &spans[k];
        }
        i -= c;
    }
    *local = 0;
    return &spans[0];
}

static void shuffle_epoch(BatchSampler *s) {
    Rng rng;
    rng_seed(&rng, s->seed ^ (0x5DEECE66Dull * (uint64_t)(s->epoch + 1)));
    for (uint64_t i = 0; i < s->n_windows; i++) s->order[i] = i;
    for (uint64_t i = s->n_windows; i > 1; i--) {
        uint64_t j = rng_below(&rng, i);
        uint64_t tmp = s->order[i - 1];
        s->order[i - 1] = s->order[j];
        s->order[j] = tmp;
    }
}

int batch_sampler_init(BatchSampler *s, const TokenData *d, int T, bool shuffle, uint64_t seed, NfError *err) {
    memset(s, 0, sizeof *s);
    s->shuffle = shuffle;
    s->seed = seed;
    rng_seed(&s->rng, seed);
    if (!shuffle) return 0;
    for (int i = 0; i < d->n_train; i++) s->n_windows += span_windows(&d->train[i], T);
    if (!(s->order = nf_alloc_array(s->n_windows, sizeof(uint64_t), err))) return -1;
    shuffle_epoch(s);
    return 0;
}

void batch_sampler_free(BatchSampler *s) {
    free(s->order);
    memset(s, 0, sizeof *s);
}

int batch_sampler_restore(BatchSampler *s, uint64_t rng_state, int64_t epoch, uint64_t position, NfError *err) {
    if (s->shuffle && (position > s->n_windows || epoch < 0))
        return nf_fail(
            err, NF_ERR_CHECKPOINT,
            "the checkpoint's data position (epoch %lld, window %llu) does not fit this data's %llu windows; "
            "resume with the run's own --data, --seq and --shuffle",
            (long long)epoch, (unsigned long long)position, (unsigned long long)s->n_windows);
    s->rng.state = rng_state;
    if (s->shuffle) {
        s->epoch = epoch;
        s->position = position;
        shuffle_epoch(s);
    }
    return 0;
}

void batch_sampler_next(BatchSampler *s, const TokenData *d, int B, int T, int *tokens, int *targets) {
    for (int b = 0; b < B; b++) {
        uint64_t local;
        const TokenSpan *span;
        if (s->shuffle) {
            if (s->position == s->n_windows) {
                s->epoch++;
                s->position = 0;
                shuffle_epoch(s);
            }
            span = locate(d->train, d->n_train, T, span_windows, s->order[s->position++], &local);
            local *= (uint64_t)T;
        } else {
            uint64_t total = 0;
            for (int i = 0; i < d->n_train; i++) total += span_starts(&d->train[i], T);
            span = locate(d->train, d->n_train, T, span_starts, rng_below(&s->rng, total), &local);
        }
        copy_window(span, local, T, tokens + (size_t)b * T, targets + (size_t)b * T);
    }
}

void fixed_batch(const TokenSpan *spans, int n_spans, int k, int n_batches, int B, int T, int *tokens, int *targets) {
    uint64_t total = 0;
    for (int i = 0; i < n_spans; i++) total += span_starts(&spans[i], T);
    uint64_t windows = (uint64_t)n_batches * (uint64_t)B;
    for (int b = 0; b < B; b++) {
        uint64_t j = (uint64_t)k * B + b;
        uint64_t start = windows > 1 ? (uint64_t)((double)j * (double)(total - 1) / (double)(windows - 1)) : 0;
        uint64_t local;
        const TokenSpan *span = locate(spans, n_spans, T, span_starts, start, &local);
        copy_window(span, local, T, tokens + (size_t)b * T, targets + (size_t)b * T);
    }
}
