/* ingest.c — the walk over --source, change detection against the last
 * manifest, tokenizing or reusing each file's tokens, packing them into
 * shards, the manifest switch and the cleanup after it. */
#include "ingest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "manifest.h"
#include "records.h"
#include "tokenfile.h"
#include "tokenizer.h"
#include "util.h"

const char *ingest_status_name(IngestStatus s) {
    switch (s) {
    case INGEST_NEW: return "new";
    case INGEST_CHANGED: return "changed";
    case INGEST_UNCHANGED: return "unchanged";
    case INGEST_REMOVED: return "removed";
    case INGEST_SKIPPED: return "skipped";
    }
    return "?";
}

/* ---- the source tree ------------------------------------------------------- */

typedef struct {
    char *rel;  /* path relative to --source */
    char *full; /* --source/rel */
    SourceKind kind;
    const char *skip; /* why it is skipped, or NULL */
    uint64_t size;
} SourceEntry;

typedef struct {
    SourceEntry *items;
    int n;
    size_t cap;
    dev_t out_dev; /* the output directory, never walked into */
    ino_t out_ino;
} SourceList;

static void sources_free(SourceList *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].rel);
        free(l->items[i].full);
    }
    free(l->items);
}

static int add_source(SourceList *l, char *rel, char *full, SourceKind kind, const char *skip, uint64_t size,
                      NfError *err) {
    if (!nf_grow((void **)&l->items, &l->cap, (size_t)l->n + 1, sizeof *l->items, 64)) {
        free(rel);
        free(full);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    l->items[l->n++] = (SourceEntry){rel, full, kind, skip, size};
    return 0;
}

static int walk(SourceList *l, const char *dir_full, const char *dir_rel, int depth, NfError *err) {
    if (depth > INGEST_MAX_DEPTH)
        return nf_fail(err, NF_ERR_DATA, "'%s' is nested more than %d directories deep", dir_full, INGEST_MAX_DEPTH);
    DIR *dir = opendir(dir_full);
    if (!dir) return nf_fail(err, NF_ERR_IO, "cannot read directory '%s': %s", dir_full, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.') continue; /* hidden files and directories, . and .. */
        char *full = nf_path_join(dir_full, e->d_name),
             *rel = dir_rel ? nf_path_join(dir_rel, e->d_name) : strdup(e->d_name);
        struct stat st;
        if (!full || !rel) {
            free(full);
            free(rel);
            rc = nf_fail(err, NF_ERR_MEMORY, "out of memory");
            break;
        }
        if (lstat(full, &st) != 0) {
            rc = nf_fail(err, NF_ERR_IO, "cannot stat '%s': %s", full, strerror(errno));
            free(full);
            free(rel);
            break;
        }
        bool link = S_ISLNK(st.st_mode);
        if (link && stat(full, &st) != 0) {
            rc = add_source(l, rel, full, SOURCE_UNSUPPORTED, "broken symbolic link", 0, err);
        } else if (S_ISDIR(st.st_mode)) {
            if (link)
                rc = add_source(l, rel, full, SOURCE_UNSUPPORTED, "symbolic link to a directory", 0, err);
            else if (st.st_dev == l->out_dev && st.st_ino == l->out_ino) {
                free(full); /* the output directory inside the source */
                free(rel);
            } else {
                rc = walk(l, full, rel, depth + 1, err);
                free(full);
                free(rel);
            }
        } else if (!S_ISREG(st.st_mode)) {
            rc = add_source(l, rel, full, SOURCE_UNSUPPORTED, "not a regular file", 0, err);
        } else {
            SourceKind kind = source_kind(rel);
            rc = add_source(l, rel, full, kind, kind == SOURCE_UNSUPPORTED ? "unsupported extension" : NULL,
                            (uint64_t)st.st_size, err);
        }
    }
    closedir(dir);
    return rc;
}

static int compare_entries(const void *a, const void *b) {
    return strcmp(((const SourceEntry *)a)->rel, ((const SourceEntry *)b)->rel);
}

/* ---- the output directory ---------------------------------------------------- */

/* mkdir -p */
static int make_dirs(const char *path, NfError *err) {
    char *p = strdup(path);
    if (!p) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        bool end = *s == '\0';
        if (*s != '/' && !end) continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            rc = nf_fail(err, NF_ERR_IO, "cannot create directory '%s': %s", p, strerror(errno));
        if (end) break;
        *s = '/';
    }
    free(p);
    return rc;
}

/* A name that ingest writes into its output directory. */
static bool ours(const char *name) {
    return strncmp(name, "shard_", 6) == 0 || strcmp(name, INGEST_LOCK_NAME) == 0 ||
           strncmp(name, MANIFEST_NAME ".tmp.", strlen(MANIFEST_NAME) + 5) == 0;
}

/* The generation of a shard file name shard_GGGGGG_SSSSS.*, or -1. */
static int64_t shard_generation(const char *name) {
    if (strncmp(name, "shard_", 6) != 0 || strspn(name + 6, "0123456789") != 6 || name[12] != '_') return -1;
    return strtoll(name + 6, NULL, 10);
}

/* Checks the directory: without a manifest it may hold only what ingest
 * writes (what a crashed first run left); returns the highest shard
 * generation found in it (0 if none). */
static int scan_output(const char *out, bool has_manifest, int64_t *max_generation, NfError *err) {
    DIR *dir = opendir(out);
    if (!dir) return nf_fail(err, NF_ERR_IO, "cannot read directory '%s': %s", out, strerror(errno));
    *max_generation = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        int64_t g = shard_generation(e->d_name);
        if (g > *max_generation) *max_generation = g;
        if (!has_manifest && !ours(e->d_name) && rc == 0)
            rc = nf_fail(err, NF_ERR_USAGE,
                         "--output '%s' holds '%s', which ingest did not write, and no manifest.json; give a new or "
                         "empty directory",
                         out, e->d_name);
    }
    closedir(dir);
    return rc;
}

/* One ingest at a time per output directory: a write lock on .ingest.lock,
 * released when the process ends. Returns the lock's descriptor. */
static int lock_output(const char *out, NfError *err) {
    char *path = nf_path_join(out, INGEST_LOCK_NAME);
    if (!path) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    free(path);
    if (fd < 0) return nf_fail(err, NF_ERR_IO, "cannot create the lock file in '%s': %s", out, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        close(fd);
        return nf_fail(err, NF_ERR_IO, "another ingest is writing '%s'", out);
    }
    return fd;
}

/* Deletes the shard files (and temporary manifests) that m does not list. */
static void remove_unlisted(const char *out, const Manifest *m) {
    DIR *dir = opendir(out);
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        const char *name = e->d_name;
        bool listed = false;
        if (strncmp(name, "shard_", 6) != 0 && strncmp(name, MANIFEST_NAME ".tmp.", strlen(MANIFEST_NAME) + 5) != 0)
            continue;
        for (int i = 0; i < m->n_shards && !listed; i++)
            listed =
                strcmp(m->shards[i].file, name) == 0 || (m->shards[i].mask && strcmp(m->shards[i].mask, name) == 0);
        if (listed) continue;
        char *path = nf_path_join(out, name);
        if (path) unlink(path);
        free(path);
    }
    closedir(dir);
}

/* ---- packing tokens into shards ---------------------------------------------- */

typedef struct {
    const char *dir;
    int64_t generation;
    uint64_t capacity; /* tokens a shard holds at most */
    int vocab_size;    /* of the tokenizer: the shards' width follows from it */
    int bos_id;        /* the tokenizer's BOS, where units start; -1: none, a source's run is one unit */
    TokenWriter tok;   /* the open shard's token file */
    AtomicFile mask;   /* and its mask */
    bool open;
    uint64_t used, used_masked; /* tokens, masked tokens in the open shard */
    ManifestShard *shards;      /* committed shards, in order */
    int n_shards;
    size_t cap;
    unsigned char mbuf[32768];
    size_t mlen;
    /* where the current source starts, once its first token is written */
    bool mark_pending;
    uint64_t mark_shard, mark_offset;
} Packer;

static char *shard_name(int64_t generation, int index, const char *ext) {
    char name[64];
    snprintf(name, sizeof name, "shard_%06lld_%05d.%s", (long long)generation, index, ext);
    return strdup(name);
}

static int packer_flush_mask(Packer *p, NfError *err) {
    if (atomic_file_write(&p->mask, p->mbuf, p->mlen, err) != 0) return -1;
    p->mlen = 0;
    return 0;
}

static int packer_open(Packer *p, NfError *err) {
    if (p->n_shards >= 99999) return nf_fail(err, NF_ERR_DATA, "more than 99999 shards: raise --max-shard-mb");
    char *tn = shard_name(p->generation, p->n_shards, "bin"), *mn = shard_name(p->generation, p->n_shards, "mask");
    char *tp = tn ? nf_path_join(p->dir, tn) : NULL, *mp = mn ? nf_path_join(p->dir, mn) : NULL;
    int rc = tp && mp ? 0 : nf_fail(err, NF_ERR_MEMORY, "out of memory");
    if (rc == 0 && token_writer_open(&p->tok, tp, p->vocab_size, false, err) != 0) rc = -1;
    if (rc == 0 && atomic_file_open(&p->mask, mp, err) != 0) {
        token_writer_abort(&p->tok);
        rc = -1;
    }
    free(tn);
    free(mn);
    free(tp);
    free(mp);
    if (rc != 0) return -1;
    p->open = true;
    p->used = p->used_masked = 0;
    return 0;
}

/* Commits the open shard: its token file, and its mask file if it masks anything. */
static int packer_close(Packer *p, NfError *err) {
    if (!p->open) return 0;
    p->open = false;
    if (!nf_grow((void **)&p->shards, &p->cap, (size_t)p->n_shards + 1, sizeof *p->shards, 16)) {
        token_writer_abort(&p->tok);
        atomic_file_abort(&p->mask);
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    }
    ManifestShard *s = &p->shards[p->n_shards];
    memset(s, 0, sizeof *s);
    int rc = packer_flush_mask(p, err);
    if (rc == 0)
        rc = token_writer_commit(&p->tok, err);
    else
        token_writer_abort(&p->tok);
    if (rc == 0 && p->used_masked > 0)
        rc = atomic_file_commit(&p->mask, err);
    else
        atomic_file_abort(&p->mask);
    if (rc != 0) return -1;
    s->file = shard_name(p->generation, p->n_shards, "bin");
    s->mask = p->used_masked > 0 ? shard_name(p->generation, p->n_shards, "mask") : NULL;
    s->tokens = p->used;
    s->masked_tokens = p->used_masked;
    p->n_shards++;
    if (!s->file || (p->used_masked > 0 && !s->mask)) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    return 0;
}

/* Tokens come either as ints (a fresh document) or as little-endian ids of
 * `width` bytes (copied from a shard); mask NULL means every token counts. */
typedef struct {
    const int *ids;
    const unsigned char *bytes;
    int width;
    const unsigned char *mask;
} TokenRun;

static int run_token(const TokenRun *r, uint64_t i) {
    return r->ids ? r->ids[i] : (int)token_id_at(r->bytes, r->width, i);
}

/* Appends tokens [from, to) of r to the open shard. */
static int packer_put(Packer *p, const TokenRun *r, uint64_t from, uint64_t to, NfError *err) {
    if (p->mark_pending && from < to) {
        p->mark_pending = false;
        p->mark_shard = (uint64_t)p->n_shards;
        p->mark_offset = p->used;
    }
    for (uint64_t i = from; i < to; i++) {
        if (p->mlen + 1 > sizeof p->mbuf && packer_flush_mask(p, err) != 0) return -1;
        int id = run_token(r, i);
        unsigned char m = r->mask ? r->mask[i] : 1;
        if (token_writer_put(&p->tok, &id, 1, err) != 0) return -1;
        p->mbuf[p->mlen++] = m;
        p->used_masked += m == 0;
    }
    p->used += to - from;
    return 0;
}

/* One unit (a BOS and what follows it up to the next BOS): into the open
 * shard if it fits, else into a new one; a unit longer than a shard is
 * split across shards. */
static int packer_unit(Packer *p, const TokenRun *r, uint64_t from, uint64_t to, NfError *err) {
    if (p->open && p->used > 0 && p->used + (to - from) > p->capacity && packer_close(p, err) != 0) return -1;
    while (from < to) {
        if (!p->open && packer_open(p, err) != 0) return -1;
        uint64_t take = p->capacity - p->used < to - from ? p->capacity - p->used : to - from;
        if (packer_put(p, r, from, from + take, err) != 0) return -1;
        from += take;
        if (p->used == p->capacity && packer_close(p, err) != 0) return -1;
    }
    return 0;
}

/* A run of n tokens, cut into units at each BOS. */
static int packer_add(Packer *p, const TokenRun *r, uint64_t n, NfError *err) {
    uint64_t start = 0;
    for (uint64_t i = 1; i <= n; i++) {
        if (i < n && (p->bos_id < 0 || run_token(r, i) != p->bos_id)) continue;
        if (packer_unit(p, r, start, i, err) != 0) return -1;
        start = i;
    }
    return 0;
}

static void packer_free(Packer *p) {
    token_writer_abort(&p->tok);
    atomic_file_abort(&p->mask);
    for (int i = 0; i < p->n_shards; i++) {
        free(p->shards[i].file);
        free(p->shards[i].mask);
    }
    free(p->shards);
}

/* Deletes the shards this run committed (after a failure). */
static void packer_discard(Packer *p) {
    for (int i = 0; i < p->n_shards; i++) {
        const char *names[2] = {p->shards[i].file, p->shards[i].mask};
        for (int k = 0; k < 2; k++) {
            char *path = names[k] ? nf_path_join(p->dir, names[k]) : NULL;
            if (path) unlink(path);
            free(path);
        }
    }
}

/* ---- the last run's shards, for reuse --------------------------------------- */

typedef struct {
    Manifest m;
    TokenFile *tok;   /* (m.n_shards) mapped shards; unmapped where missing, malformed or the wrong size */
    MappedFile *mask; /* (m.n_shards) their masks */
    bool *ok;         /* (m.n_shards) shard mapped and its sizes as listed */
} OldRun;

static void old_run_free(OldRun *o) {
    for (int i = 0; o->tok && i < o->m.n_shards; i++) {
        token_file_close(&o->tok[i]);
        mapped_file_close(&o->mask[i]);
    }
    free(o->tok);
    free(o->mask);
    free(o->ok);
    manifest_free(&o->m);
}

/* Maps the last run's shards; one that is missing or has the wrong size is
 * marked unusable (its sources are tokenized again), not an error. */
static int old_run_map(OldRun *o, const char *out, NfError *err) {
    int n = o->m.n_shards;
    if (n == 0) return 0;
    if (!(o->tok = nf_alloc_array((size_t)n, sizeof(TokenFile), err)) ||
        !(o->mask = nf_alloc_array((size_t)n, sizeof(MappedFile), err)) ||
        !(o->ok = nf_alloc_array((size_t)n, sizeof(bool), err)))
        return -1;
    for (int i = 0; i < n; i++) {
        const ManifestShard *s = &o->m.shards[i];
        char *tp = nf_path_join(out, s->file), *mp = s->mask ? nf_path_join(out, s->mask) : NULL;
        NfError ignored;
        bool ok = tp && token_file_open(&o->tok[i], tp, "shard", &ignored) == 0 && o->tok[i].view.count == s->tokens &&
                  o->tok[i].view.legacy == o->m.token_legacy && o->tok[i].view.width == o->m.token_width;
        if (ok && s->mask)
            ok = mp && mapped_file_open(&o->mask[i], mp, "mask", &ignored) == 0 && o->mask[i].size == s->tokens;
        o->ok[i] = ok;
        free(tp);
        free(mp);
    }
    return 0;
}

static const ManifestSource *old_source(const OldRun *o, const char *rel) {
    int lo = 0, hi = o->m.n_sources - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(o->m.sources[mid].path, rel);
        if (c == 0) return &o->m.sources[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* Walks the token range of source s through the old shards: with p NULL,
 * checks that it is there, starts with BOS and masks as many tokens as
 * listed; with p, copies it into the packer. */
static int old_range(const OldRun *o, const ManifestSource *s, int bos_id, Packer *p, bool *usable, NfError *err) {
    uint64_t left = s->tokens, masked = 0, offset = s->offset;
    *usable = false;
    for (uint64_t k = s->shard; left > 0; k++, offset = 0) {
        if (k >= (uint64_t)o->m.n_shards || !o->ok[k] || offset > o->m.shards[k].tokens) return 0;
        uint64_t avail = o->m.shards[k].tokens - offset, take = avail < left ? avail : left;
        const TokenFileView *v = &o->tok[k].view;
        TokenRun r = {NULL, v->tokens + (size_t)v->width * offset, v->width,
                      o->mask[k].data ? o->mask[k].data + offset : NULL};
        if (left == s->tokens && (take == 0 || (bos_id >= 0 && run_token(&r, 0) != bos_id))) return 0;
        if (p) {
            if (packer_add(p, &r, take, err) != 0) return -1;
        } else if (r.mask) {
            for (uint64_t i = 0; i < take; i++) masked += r.mask[i] == 0;
        }
        left -= take;
    }
    *usable = p != NULL || masked == s->masked_tokens;
    return 0;
}

/* ---- the run ------------------------------------------------------------------- */

typedef struct {
    Packer *p;
    uint64_t documents, tokens, masked;
} DocCounter;

static int pack_document(void *ctx, const Document *d, NfError *err) {
    DocCounter *c = ctx;
    TokenRun r = {d->ids.ids, NULL, 0, d->mask};
    if (packer_add(c->p, &r, d->ids.len, err) != 0) return -1;
    c->documents++;
    c->tokens += d->ids.len;
    c->masked += d->masked;
    return 0;
}

/* The id every document starts with, where the packer cuts units: BOS when the tokenizer adds it, else -1. */
static int unit_start(const Tokenizer *t) { return t->add_bos ? t->bos_id : -1; }

/* Everything a run holds, freed in one place. */
typedef struct {
    Tokenizer tok;
    ChatTemplate chat;
    SourceList src;
    OldRun old;
    bool have_old;
    Packer packer;
    Manifest next;
    int lock_fd;
} Run;

static void run_free(Run *r) {
    tokenizer_free(&r->tok);
    sources_free(&r->src);
    old_run_free(&r->old);
    packer_free(&r->packer);
    r->next.shards = NULL; /* the packer's */
    r->next.n_shards = 0;
    manifest_free(&r->next);
    if (r->lock_fd >= 0) close(r->lock_fd);
}

static int ingest_file(Run *r, const IngestOptions *o, const SourceEntry *e, IngestReportFn report, void *ctx,
                       IngestSummary *sum, NfError *err) {
    uint64_t max = (uint64_t)o->max_file_mb << 20;
    if (e->size > max)
        return nf_fail(err, NF_ERR_DATA, "source file '%s' has %llu bytes; --max-file-mb %lld allows %llu", e->full,
                       (unsigned long long)e->size, (long long)o->max_file_mb, (unsigned long long)max);
    MappedFile f;
    if (mapped_file_open(&f, e->full, "source", err) != 0) return -1;
    ManifestSource *s = &r->next.sources[r->next.n_sources];
    memset(s, 0, sizeof *s);
    s->bytes = f.size;
    s->hash = nf_fnv1a64(NF_FNV1A64_INIT, f.data, f.size);
    const ManifestSource *old = r->have_old ? old_source(&r->old, e->rel) : NULL;
    IngestStatus status = !old                                             ? INGEST_NEW
                          : old->bytes == s->bytes && old->hash == s->hash ? INGEST_UNCHANGED
                                                                           : INGEST_CHANGED;
    Packer *p = &r->packer;
    p->mark_pending = true;
    p->mark_shard = (uint64_t)p->n_shards;
    p->mark_offset = p->open ? p->used : 0;
    bool reuse = false;
    int rc = status == INGEST_UNCHANGED ? old_range(&r->old, old, p->bos_id, NULL, &reuse, err) : 0;
    if (rc == 0 && reuse) {
        rc = old_range(&r->old, old, p->bos_id, p, &reuse, err);
        s->documents = old->documents;
        s->tokens = old->tokens;
        s->masked_tokens = old->masked_tokens;
    } else if (rc == 0) {
        DocCounter c = {p, 0, 0, 0};
        RecordsOptions how = {&r->tok, &r->chat, o->split, o->parse_special};
        rc = records_read(e->kind, e->full, (const char *)f.data, f.size, &how, pack_document, &c, err);
        s->documents = c.documents;
        s->tokens = c.tokens;
        s->masked_tokens = c.masked;
        sum->tokenized++;
    }
    mapped_file_close(&f);
    if (rc != 0) return -1;
    if (p->mark_pending) { /* no tokens: where they would be */
        p->mark_shard = (uint64_t)p->n_shards;
        p->mark_offset = p->open ? p->used : 0;
    }
    s->shard = p->mark_shard;
    s->offset = p->mark_offset;
    if (!(s->path = strdup(e->rel))) return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    r->next.n_sources++;
    sum->files++;
    sum->bytes += s->bytes;
    r->next.documents += s->documents;
    r->next.tokens += s->tokens;
    r->next.masked_tokens += s->masked_tokens;
    IngestFileReport rep = {e->rel, status, NULL, s->bytes, s->documents, s->tokens, s->masked_tokens, !reuse};
    report(ctx, &rep);
    return 0;
}

/* The output directory made ready: created, locked, checked; the last
 * manifest read when it will be used (or when --incremental needs it). */
static int prepare_output(Run *r, const IngestOptions *o, uint64_t tok_hash, int64_t *generation, NfError *err) {
    struct stat out_st, src_st;
    if (make_dirs(o->output, err) != 0) return -1;
    if (stat(o->output, &out_st) != 0 || !S_ISDIR(out_st.st_mode))
        return nf_fail(err, NF_ERR_USAGE, "--output '%s' is not a directory", o->output);
    if (stat(o->source, &src_st) == 0 && src_st.st_dev == out_st.st_dev && src_st.st_ino == out_st.st_ino)
        return nf_fail(err, NF_ERR_USAGE, "--output is the --source directory; write the shards somewhere else");
    r->src.out_dev = out_st.st_dev;
    r->src.out_ino = out_st.st_ino;
    /* refuse a directory of someone else's files before leaving a lock file in it; then look again, locked */
    int64_t max_generation = 0;
    if (scan_output(o->output, manifest_exists(o->output), &max_generation, err) != 0) return -1;
    if ((r->lock_fd = lock_output(o->output, err)) < 0) return -1;
    bool has_manifest = manifest_exists(o->output);
    if (scan_output(o->output, has_manifest, &max_generation, err) != 0) return -1;
    int64_t last = 0;
    if (has_manifest) {
        NfError why;
        if (manifest_load(o->output, &r->old.m, &why) == 0) {
            last = r->old.m.generation;
            r->have_old = o->incremental;
        } else if (o->incremental) {
            return nf_fail(err, why.code, "%s; run ingest without --incremental to rebuild '%s'", why.message,
                           o->output);
        }
    }
    if (r->have_old &&
        (r->old.m.tokenizer_hash != tok_hash || r->old.m.split != o->split || r->old.m.chat_template != r->chat.kind))
        return nf_fail(err, NF_ERR_USAGE,
                       "--incremental: '%s' was ingested with %s; run without --incremental to rebuild it", o->output,
                       r->old.m.tokenizer_hash != tok_hash ? "another tokenizer (a different file)"
                       : r->old.m.split != o->split        ? "another --split"
                                                           : "another chat template (--chat-template)");
    if (r->have_old && old_run_map(&r->old, o->output, err) != 0) return -1;
    *generation = (last > max_generation ? last : max_generation) + 1;
    return 0;
}

int ingest_run(const IngestOptions *o, IngestReportFn report, void *ctx, IngestSummary *sum, NfError *err) {
    memset(sum, 0, sizeof *sum);
    Run r = {.lock_fd = -1};
    int rc = 0;
    struct stat st;
    if (stat(o->source, &st) != 0) {
        rc = nf_fail(err, NF_ERR_IO, "cannot open --source '%s': %s", o->source, strerror(errno));
        goto done;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = nf_fail(err, NF_ERR_USAGE, "--source '%s' is not a directory", o->source);
        goto done;
    }
    if (tokenizer_load(&r.tok, o->tokenizer_path, err) != 0) goto fail;
    if (chat_template_choose(o->chat_template ? o->chat_template : "auto", &r.tok, o->tokenizer_path, &r.chat, err) !=
        0)
        goto fail;
    uint64_t tok_hash;
    int64_t generation = 0;
    if (tokenizer_hash(o->tokenizer_path, &tok_hash, err) != 0 ||
        prepare_output(&r, o, tok_hash, &generation, err) != 0)
        goto fail;
    if (walk(&r.src, o->source, NULL, 0, err) != 0) goto fail;
    qsort(r.src.items, (size_t)r.src.n, sizeof(SourceEntry), compare_entries);

    r.next.generation = generation;
    r.next.split = o->split;
    r.next.chat_template = r.chat.kind;
    r.next.vocab_size = r.tok.vocab_size;
    r.next.token_width = token_width_for(r.tok.vocab_size);
    r.next.tokenizer_hash = tok_hash;
    r.next.max_shard_mb = o->max_shard_mb;
    if (!(r.next.tokenizer = strdup(o->tokenizer_path)) ||
        (r.src.n > 0 && !(r.next.sources = nf_alloc_array((size_t)r.src.n, sizeof(ManifestSource), err)))) {
        rc = nf_fail(err, NF_ERR_MEMORY, "out of memory");
        goto done;
    }
    r.packer.dir = o->output;
    r.packer.generation = generation;
    r.packer.vocab_size = r.tok.vocab_size;
    r.packer.capacity = ((uint64_t)o->max_shard_mb << 20) / (uint64_t)r.next.token_width;
    r.packer.bos_id = unit_start(&r.tok);

    for (int i = 0; i < r.src.n; i++) {
        const SourceEntry *e = &r.src.items[i];
        if (e->skip) {
            IngestFileReport rep = {e->rel, INGEST_SKIPPED, e->skip, e->size, 0, 0, 0, false};
            report(ctx, &rep);
            sum->skipped++;
            continue;
        }
        if (ingest_file(&r, o, e, report, ctx, sum, err) != 0) goto fail;
    }
    if (packer_close(&r.packer, err) != 0) goto fail;
    /* files of the last run that are gone (or are no longer ingested) */
    for (int i = 0, k = 0; r.have_old && i < r.old.m.n_sources; i++) {
        /* both lists are sorted by path: a merge */
        const ManifestSource *s = &r.old.m.sources[i];
        while (k < r.next.n_sources && strcmp(r.next.sources[k].path, s->path) < 0) k++;
        if (k < r.next.n_sources && strcmp(r.next.sources[k].path, s->path) == 0) continue;
        IngestFileReport rep = {s->path,   INGEST_REMOVED,   NULL, s->bytes, s->documents,
                                s->tokens, s->masked_tokens, false};
        report(ctx, &rep);
        sum->removed++;
    }
    r.next.shards = r.packer.shards;
    r.next.n_shards = r.packer.n_shards;
    if (manifest_save(o->output, &r.next, err) != 0) goto fail;
    /* the switch is made: the last run's shards and any orphans go */
    remove_unlisted(o->output, &r.next);
    sum->documents = r.next.documents;
    sum->tokens = r.next.tokens;
    sum->masked_tokens = r.next.masked_tokens;
    sum->shards = r.next.n_shards;
    sum->generation = generation;
    sum->chat_template = chat_kind_name(r.chat.kind);
    goto done;
fail:
    rc = -1;
    packer_discard(&r.packer);
done:
    run_free(&r);
    return rc;
}
