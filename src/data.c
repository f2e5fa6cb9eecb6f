/* data.c — token files, the train/validation split and batch sampling. */
#include "data.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Expands a path to the files it names: itself, or a directory's regular files. */
static int expand_path(const char *path, char ***list, int *n, int *cap, NfError *err) {
    struct stat st;
    if (stat(path, &st) != 0) return nf_fail(err, NF_ERR_IO, "cannot open data '%s': no such file or directory", path);
    int first = *n;
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        if (!dir) return nf_fail(err, NF_ERR_IO, "cannot read data directory '%s'", path);
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.') continue;
            size_t len = strlen(path) + strlen(e->d_name) + 2;
            char *full = malloc(len);
            if (!full) break;
            snprintf(full, len, "%s/%s", path, e->d_name);
            if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) {
                free(full);
                continue;
            }
            if (*n == *cap) {
                *cap = *cap ? *cap * 2 : 16;
                char **grown = realloc(*list, (size_t)*cap * sizeof(char *));
                if (!grown) {
                    free(full);
                    break;
                }
                *list = grown;
            }
            (*list)[(*n)++] = full;
        }
        closedir(dir);
        if (*n == first) return nf_fail(err, NF_ERR_DATA, "data directory '%s' holds no files", path);
        qsort(*list + first, (size_t)(*n - first), sizeof(char *), compare_strings);
        return 0;
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        char **grown = realloc(*list, (size_t)*cap * sizeof(char *));
        if (!grown) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
        *list = grown;
    }
    (*list)[(*n)++] = strdup(path);
    return 0;
}

/* Maps one token file and checks every id. */
static int open_token_file(MappedFile *f, const char *path, int vocab_size, NfError *err) {
    if (mapped_file_open(f, path, "data", err) != 0) return -1;
    if (f->size % 2 != 0)
        return nf_fail(err, NF_ERR_DATA, "data file '%s' has an odd size (%zu bytes); token files hold uint16 ids",
                       path, f->size);
    TokenSpan s = {f->data, f->size / 2};
    for (uint64_t i = 0; i < s.len; i++)
        if (token_at(&s, i) >= vocab_size)
            return nf_fail(err, NF_ERR_DATA, "data file '%s' has token id %d at position %llu; the vocab_size is %d",
                           path, token_at(&s, i), (unsigned long long)i, vocab_size);
    return 0;
}

int token_data_open(TokenData *d, const char *const *paths, int n_paths, const char *val_path, double val_split,
                    int vocab_size, int T, NfError *err) {
    memset(d, 0, sizeof *d);
    char **files = NULL;
    int n = 0, cap = 0, rc = 0;
    for (int i = 0; rc == 0 && i < n_paths; i++) rc = expand_path(paths[i], &files, &n, &cap, err);
    int n_train_files = n; /* files after these are validation files */
    if (rc == 0 && val_path) rc = expand_path(val_path, &files, &n, &cap, err);
    if (rc == 0 && !(d->files = nf_alloc_array((size_t)n, sizeof(MappedFile), err))) rc = -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = open_token_file(&d->files[i], files[i], vocab_size, err);
        d->n_files = i + 1;
    }
    if (rc == 0 && (!(d->train = nf_alloc_array((size_t)n + 1, sizeof(TokenSpan), err)) ||
                    !(d->val = nf_alloc_array((size_t)n + 1, sizeof(TokenSpan), err))))
        rc = -1;
    if (rc == 0) {
        uint64_t total = 0;
        for (int i = 0; i < n_train_files; i++) total += d->files[i].size / 2;
        uint64_t keep = val_path ? total : total - (uint64_t)(val_split * (double)total);
        /* training spans: the first `keep` tokens; the rest (if splitting) is validation */
        uint64_t seen = 0;
        for (int i = 0; i < n_train_files; i++) {
            TokenSpan s = {d->files[i].data, d->files[i].size / 2};
            uint64_t take = seen >= keep ? 0 : (keep - seen < s.len ? keep - seen : s.len);
            if (take > 0) d->train[d->n_train++] = (TokenSpan){s.bytes, take};
            if (take < s.len && !val_path) d->val[d->n_val++] = (TokenSpan){s.bytes + 2 * take, s.len - take};
            seen += s.len;
        }
        for (int i = n_train_files; val_path && i < n; i++)
            d->val[d->n_val++] = (TokenSpan){d->files[i].data, d->files[i].size / 2};
        for (int i = 0; i < d->n_train; i++) d->train_tokens += d->train[i].len;
        for (int i = 0; i < d->n_val; i++) d->val_tokens += d->val[i].len;
        uint64_t longest = 0;
        for (int i = 0; i < d->n_train; i++)
            if (d->train[i].len > longest) longest = d->train[i].len;
        if (n_paths > 0 && longest < (uint64_t)T + 1)
            rc = nf_fail(err, NF_ERR_DATA, "the training data has no run of %d tokens (--seq %d plus one)", T + 1, T);
        uint64_t val_longest = 0;
        for (int i = 0; i < d->n_val; i++)
            if (d->val[i].len > val_longest) val_longest = d->val[i].len;
        if (rc == 0 && d->n_val > 0 && val_longest < (uint64_t)T + 1)
            rc = nf_fail(err, NF_ERR_DATA, "the validation data has fewer than %d tokens (--seq %d plus one)", T + 1,
                         T);
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    if (rc != 0) token_data_close(d);
    return rc;
}

void token_data_close(TokenData *d) {
    for (int i = 0; i < d->n_files; i++) mapped_file_close(&d->files[i]);
    free(d->files);
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
        return nf_fail(err, NF_ERR_CHECKPOINT,
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

void fixed_batch(const TokenSpan *spans, int n_spans, int k, int n_batches, int B, int T, int *tokens,
                 int *targets) {
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
