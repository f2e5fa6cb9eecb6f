/* server.c — the dashboard's HTTP API, events and static files (see server.h and docs/dashboard.md). */
#define _GNU_SOURCE
#include "server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "fileio.h"
#include "gguf.h"
#include "gguf_vocab.h"
#include "json.h"
#include "json_parse.h"
#include "tokenizer.h"
#include "train_options.h"
#include "util.h"

#define MAX_BODY     (1u << 20)
#define MAX_UPLOAD   (64u << 20)
#define MAX_PATH_LEN (PATH_MAX + 256)

/* ---- small helpers -------------------------------------------------------------- */

/* A plain file name: letters, digits, '.', '_', '-', not starting with '.', at most 100 bytes. */
static bool plain_name(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 100 || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* No NUL (C strings would cut the text short there) and no control characters: C0, DEL, C1. */
static bool printable(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F) return false;
        if (c == 0xC2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9F)
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* A tokenizer under D/tokenizers/: a file (tokenizer.bin, tokenizer.json), or a directory holding a
 * tokenizer.json (a Hugging Face model directory, with its tokenizer_config.json beside it). */
static bool is_tokenizer(const char *path) {
    struct stat sb;
    char json[MAX_PATH_LEN + 32];
    if (stat(path, &sb) != 0) return false;
    if (S_ISREG(sb.st_mode)) return true;
    snprintf(json, sizeof json, "%s/tokenizer.json", path);
    return S_ISDIR(sb.st_mode) && is_file(json);
}

static int make_dirs(const char *path) { /* mkdir -p for paths under the data directory */
    char tmp[MAX_PATH_LEN];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void project_dir(const Server *srv, int64_t id, const char *sub, char *out, size_t cap) {
    snprintf(out, cap, "%s/projects/%lld%s%s", srv->data_dir, (long long)id, sub ? "/" : "", sub ? sub : "");
}

/* ---- per-request state ---------------------------------------------------------- */

typedef struct {
    char *body; /* JSON bodies, up to MAX_BODY: len bytes of cap */
    size_t len, cap;
    bool too_large;
    int upload_fd; /* uploads stream to a temporary file */
    char upload_tmp[MAX_PATH_LEN];
    char upload_final[MAX_PATH_LEN];
    size_t upload_bytes;
    int upload_status; /* 0, or the HTTP status that refused it */
    char upload_error[200];
    unsigned refused; /* 0, or the status a request guard answers once the body is drained */
    const char *refusal;
} Request;

static void request_free(Request *rq) {
    if (!rq) return;
    if (rq->upload_fd > 0) {
        close(rq->upload_fd);
        unlink(rq->upload_tmp);
    }
    free(rq->body);
    free(rq);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    request_free(*con_cls);
    *con_cls = NULL;
}

/* Every response goes out through here, so every one carries the same headers: no framing, no
 * script or plugin from elsewhere, no Referer, no caching, no type sniffing. */
static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r) {
    static const char *const HEADERS[][2] = {
        {"Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {"Cache-Control", "no-store"},
        {"X-Content-Type-Options", "nosniff"},
    };
    for (size_t i = 0; i < sizeof HEADERS / sizeof HEADERS[0]; i++)
        MHD_add_response_header(r, HEADERS[i][0], HEADERS[i][1]);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type, const char *body,
                               size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    return queue(c, status, r);
}

static enum MHD_Result respond_json(struct MHD_Connection *c, unsigned status, JsonBuf *j) {
    if (j->failed) return respond(c, 500, "application/json", "{\"error\":\"out of memory\"}", 25);
    enum MHD_Result ok = respond(c, status, "application/json", j->data ? j->data : "null", j->data ? j->len : 4);
    json_free(j);
    return ok;
}

static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_str(&j, "error", msg);
    json_object_end(&j);
    return respond_json(c, status, &j);
}

/* ---- request guards ------------------------------------------------------------- */

/* a equals the secret b; the time taken depends on b's length only, not on where a first differs */
static bool secret_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = na != nb;
    for (size_t i = 0; i < nb; i++) diff |= (unsigned char)((i < na ? a[i] : 0) ^ b[i]);
    return diff == 0;
}

/* The session cookie's name carries the port: browsers keep cookies per host, not per port, so two
 * servers on 127.0.0.1 would otherwise overwrite each other's. */
static void cookie_name(const Server *srv, char *out, size_t cap) { snprintf(out, cap, "nf_session_%u", srv->port); }

/* The API's credentials: the header `Authorization: Bearer <token>` (scripts) or the session cookie
 * that GET /?token= set (the page). A token in the query string is no longer taken: it would ride
 * in download and event URLs, browser history and logs. */
static bool authorized(const Server *srv, struct MHD_Connection *c) {
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth && strncmp(auth, "Bearer ", 7) == 0) return secret_equal(auth + 7, srv->token);
    char name[32];
    cookie_name(srv, name, sizeof name);
    const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, name);
    return cookie && secret_equal(cookie, srv->session);
}

/* DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 reaches this server
 * as same-origin, but its requests still say `Host: attacker.example:<port>`. On loopback only the
 * names this server is really reached under pass; a remote bind turns the check off (see server.h). */
static bool host_ok(const Server *srv, struct MHD_Connection *c) {
    if (!srv->check_host) return true;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!host) return false;
    const char *names[] = {srv->host, "localhost", "127.0.0.1"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char want[96];
        snprintf(want, sizeof want, "%s:%u", names[i], srv->port);
        if (strcasecmp(host, want) == 0) return true;
    }
    return false;
}

static bool safe_method(const char *method) { return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0; }

/* Cross-site request forgery: a state-changing request from a browser must come from this server's
 * own page. Browsers send Origin with every POST/PATCH/PUT/DELETE, and Sec-Fetch-Site where they
 * know it; a client that sends neither (curl, scripts) is not a browser being driven by a page. */
static bool origin_ok(struct MHD_Connection *c, const char *method) {
    if (safe_method(method)) return true;
    const char *site = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
    if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0)
        return false; /* same-site: another port */
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!origin) return true;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    return host && strncasecmp(origin, "http://", 7) == 0 && strcasecmp(origin + 7, host) == 0;
}

/* The media type of a Content-Type value (before any ';' parameters) is want. */
static bool media_type_is(const char *value, const char *want) {
    size_t n = strlen(want);
    if (!value || strncasecmp(value, want, n) != 0) return false;
    value += n;
    while (*value == ' ' || *value == '\t') value++;
    return *value == '\0' || *value == ';';
}

/* A page on another site can send a body without a CORS preflight only as a form or a "simple"
 * fetch: text/plain, urlencoded or multipart. Asking for application/json (and octet-stream for
 * uploads) rules all of those out; we never answer a preflight. Without a Content-Type only an
 * empty body passes (checked once the body is in). */
static bool content_type_ok(struct MHD_Connection *c, bool is_upload) {
    const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (is_upload) return media_type_is(type, "application/octet-stream");
    return !type || media_type_is(type, "application/json");
}

/* GET /?token=T: the token, traded on a visit for an HttpOnly SameSite=Strict session cookie, and a redirect to
 * / that drops the token from the address bar and history. A wrong token only loses the query. */
static enum MHD_Result token_exchange(const Server *srv, struct MHD_Connection *c, const char *token) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, "/");
    if (secret_equal(token, srv->token)) {
        char name[32], cookie[128];
        cookie_name(srv, name, sizeof name);
        snprintf(cookie, sizeof cookie, "%s=%s; HttpOnly; SameSite=Strict; Path=/", name, srv->session);
        MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, cookie);
    }
    return queue(c, 303, r);
}

/* ---- JSON views ------------------------------------------------------------------ */

/* Calls fn for each entry of dir with a plain name (sorted), with its path. */
static void each_plain_entry(const char *dir, void (*fn)(void *ctx, const char *name, const char *path), void *ctx) {
    struct dirent **entries = NULL;
    int n = scandir(dir, &entries, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        char path[MAX_PATH_LEN];
        int len = snprintf(path, sizeof path, "%s/%s", dir, entries[i]->d_name);
        if (len > 0 && (size_t)len < sizeof path && plain_name(entries[i]->d_name)) fn(ctx, entries[i]->d_name, path);
        free(entries[i]);
    }
    free(entries);
}

typedef struct {
    JsonBuf *j;
    bool sizes;
    bool (*usable)(const char *path);
} DirList;

static void list_entry(void *ctx, const char *name, const char *path) {
    DirList *l = ctx;
    struct stat sb;
    if (!l->usable(path) || stat(path, &sb) != 0) return;
    if (l->sizes) {
        json_object_begin(l->j, NULL);
        json_str(l->j, "name", name);
        json_int(l->j, "bytes", (int64_t)sb.st_size);
        json_object_end(l->j);
    } else
        json_str(l->j, NULL, name);
}

/* The plain names in dir that `usable` accepts (a regular file, or for tokenizers is_tokenizer) as the array
 * key: names, or with sizes {"name", "bytes"}. */
static void list_dir_json(JsonBuf *j, const char *key, const char *dir, bool sizes, bool (*usable)(const char *)) {
    DirList l = {j, sizes, usable};
    json_array_begin(j, key);
    each_plain_entry(dir, list_entry, &l);
    json_array_end(j);
}

/* What a name in D/models/ is, by what model_open reads it as: a Hugging Face model directory (a
 * config.json in it), a GGUF file (its magic), or any other regular file, a llama2.c model file. */
typedef enum { BASE_NONE, BASE_LLAMA2C, BASE_HF, BASE_GGUF } BaseKind;
static const char *const BASE_KIND_NAMES[] = {NULL, "llama2c", "hf", "gguf"};

/* *own_tokenizer: an HF directory that holds a tokenizer.json, or a GGUF file that embeds a vocabulary, which its
 * projects may use as theirs. */
static BaseKind base_kind(const char *path, bool *own_tokenizer) {
    struct stat sb;
    char sub[MAX_PATH_LEN + 32];
    *own_tokenizer = false;
    if (stat(path, &sb) != 0) return BASE_NONE;
    if (S_ISDIR(sb.st_mode)) {
        snprintf(sub, sizeof sub, "%s/config.json", path);
        if (!is_file(sub)) return BASE_NONE;
        snprintf(sub, sizeof sub, "%s/tokenizer.json", path);
        *own_tokenizer = is_file(sub);
        return BASE_HF;
    }
    if (!S_ISREG(sb.st_mode)) return BASE_NONE;
    if (!gguf_is_file(path)) return BASE_LLAMA2C;
    *own_tokenizer = gguf_vocab_present(path);
    return BASE_GGUF;
}

/* A project whose tokenizer is its base model's own stores this (no plain name, no builtin); the API shows null. */
#define TOKENIZER_OF_MODEL ""

/* The one place a project's tokenizer is resolved, for every run it starts and for its JSON: path gets
 * what a run's --tokenizer is given, shown (when not NULL) the name effective_tokenizer reports:
 * builtin:bytes, tokenizers/NAME, or models/NAME for a base model's own (an HF directory's
 * tokenizer.json). Returns false, with why, when the project's tokenizer is its model's and the model
 * has none the dashboard can use. */
static bool project_tokenizer(const Server *srv, const ProjectRow *p, char *path, size_t cap, char *shown,
                              size_t shown_cap, char *why, size_t why_cap) {
    char dummy[8];
    if (!shown) shown = dummy, shown_cap = sizeof dummy;
    if (strcmp(p->tokenizer, TOKENIZER_BUILTIN_BYTES) == 0) {
        snprintf(path, cap, "%s", p->tokenizer);
        snprintf(shown, shown_cap, "%s", p->tokenizer);
        return true;
    }
    if (strcmp(p->tokenizer, TOKENIZER_OF_MODEL) != 0) {
        snprintf(path, cap, "%s/tokenizers/%s", srv->data_dir, p->tokenizer);
        snprintf(shown, shown_cap, "tokenizers/%s", p->tokenizer);
        return true;
    }
    if (!p->model) {
        snprintf(why, why_cap,
                 "\"tokenizer\": a project that trains from scratch needs one (null means the base "
                 "model's own)");
        return false;
    }
    bool own;
    snprintf(path, cap, "%s/models/%s", srv->data_dir, p->model);
    BaseKind kind = base_kind(path, &own);
    if (!own)
        snprintf(why, why_cap,
                 "\"tokenizer\": the base model '%s' has no tokenizer of its own (a tokenizer.json, or a GGUF "
                 "file's vocabulary): choose a tokenizer from tokenizers/",
                 p->model);
    else
        snprintf(shown, shown_cap, "models/%s", p->model);
    return (kind == BASE_HF || kind == BASE_GGUF) && own;
}

static void list_model(void *ctx, const char *name, const char *path) {
    bool own_tokenizer;
    BaseKind kind = base_kind(path, &own_tokenizer);
    if (kind == BASE_NONE) return;
    json_object_begin(ctx, NULL);
    json_str(ctx, "name", name);
    json_str(ctx, "kind", BASE_KIND_NAMES[kind]);
    json_bool(ctx, "has_tokenizer", own_tokenizer);
    json_object_end(ctx);
}

/* The project's token data: the sources ingest's manifest.json lists, with their counts; *total gets the tokens. */
static void data_json(JsonBuf *j, const char *data_dir, int64_t *total) {
    char path[MAX_PATH_LEN];
    snprintf(path, sizeof path, "%s/manifest.json", data_dir);
    MappedFile f;
    JsonValue m = {0};
    NfError err;
    *total = 0;
    json_array_begin(j, "data");
    if (mapped_file_open(&f, path, "manifest", &err) == 0) {
        if (json_parse((const char *)f.data, f.size, &m, &err) == 0) {
            const JsonValue *sources = json_get(&m, "sources");
            for (int i = 0; sources && sources->type == JV_ARRAY && i < sources->n; i++) {
                const JsonValue *src = &sources->items[i], *name = json_get(src, "path"),
                                *tokens = json_get(src, "tokens"), *masked = json_get(src, "masked_tokens");
                if (!name || name->type != JV_STRING || !tokens || tokens->type != JV_NUMBER) continue;
                json_object_begin(j, NULL);
                json_str(j, "name", name->text);
                json_int(j, "tokens", atoll(tokens->text));
                json_int(j, "masked_tokens", masked && masked->type == JV_NUMBER ? atoll(masked->text) : 0);
                json_object_end(j);
                *total += atoll(tokens->text);
            }
        }
        json_value_free(&m);
        mapped_file_close(&f);
    }
    json_array_end(j);
}

static void project_json(Server *srv, JsonBuf *j, const ProjectRow *p) {
    char dir[MAX_PATH_LEN];
    json_object_begin(j, NULL);
    json_int(j, "id", p->id);
    json_str(j, "name", p->name);
    json_str(j, "model", p->model);
    char tok[MAX_PATH_LEN], shown[MAX_PATH_LEN], why[300];
    json_str(j, "tokenizer", strcmp(p->tokenizer, TOKENIZER_OF_MODEL) == 0 ? NULL : p->tokenizer);
    json_str(j, "effective_tokenizer",
             project_tokenizer(srv, p, tok, sizeof tok, shown, sizeof shown, why, sizeof why) ? shown : NULL);
    json_raw(j, "options", p->options, strlen(p->options));
    json_int(j, "created_at", (int64_t)(p->created_at * 1000));
    project_dir(srv, p->id, "uploads", dir, sizeof dir);
    list_dir_json(j, "uploads", dir, true, is_file);
    project_dir(srv, p->id, "data", dir, sizeof dir);
    int64_t tokens;
    data_json(j, dir, &tokens);
    json_int(j, "tokens", tokens);
    json_object_end(j);
}

/* The training checkpoint a train run writes (the value after --ckpt in its args). */
static bool run_checkpoint_path(const RunRow *r, char *out, size_t cap) {
    if (strcmp(r->kind, "train") != 0) return false;
    JsonValue args = {0};
    NfError err;
    bool found = false;
    if (json_parse(r->args, strlen(r->args), &args, &err) == 0 && args.type == JV_ARRAY)
        for (int i = 0; i + 1 < args.n && !found; i++)
            if (args.items[i].type == JV_STRING && strcmp(args.items[i].text, "--ckpt") == 0 &&
                args.items[i + 1].type == JV_STRING) {
                snprintf(out, cap, "%s", args.items[i + 1].text);
                found = true;
            }
    json_value_free(&args);
    return found;
}

static void raw_or_null(JsonBuf *j, const char *key, char *json) {
    if (json)
        json_raw(j, key, json, strlen(json));
    else
        json_null_value(j, key);
    free(json);
}

static void run_json(Server *srv, JsonBuf *j, const RunRow *r) {
    char ckpt[MAX_PATH_LEN];
    json_object_begin(j, NULL);
    json_int(j, "id", r->id);
    json_int(j, "project_id", r->project_id);
    json_str(j, "kind", r->kind);
    json_str(j, "status", r->status);
    if (r->pid > 0)
        json_int(j, "pid", r->pid);
    else
        json_null_value(j, "pid");
    json_raw(j, "args", r->args, strlen(r->args));
    json_int(j, "created_at", (int64_t)(r->created_at * 1000));
    json_int(j, "started_at", (int64_t)(r->started_at * 1000));
    json_int(j, "ended_at", (int64_t)(r->ended_at * 1000));
    json_int(j, "exit_code", r->exit_code);
    json_str(j, "error", r->error);
    raw_or_null(j, "last", store_message_latest(&srv->store, r->id, "step"));
    const char *final_type = strcmp(r->kind, "train") == 0      ? "done"
                             : strcmp(r->kind, "generate") == 0 ? "generate_done"
                             : strcmp(r->kind, "tokenize") == 0 ? "ingest_done"
                                                                : r->kind;
    raw_or_null(j, "final", store_message_latest(&srv->store, r->id, final_type));
    raw_or_null(j, "checkpoint", store_message_latest(&srv->store, r->id, "checkpoint"));
    json_int(j, "messages", r->messages);
    bool resumable = !run_status_active(r->status) && strcmp(r->status, "done") != 0 &&
                     run_checkpoint_path(r, ckpt, sizeof ckpt) && is_file(ckpt);
    json_bool(j, "resumable", resumable);
    const char *slash = r->output ? strrchr(r->output, '/') : NULL;
    json_str(j, "output", slash ? slash + 1 : r->output); /* the file's name, not its path */
    json_object_end(j);
}

static enum MHD_Result respond_run(Server *srv, struct MHD_Connection *c, unsigned status, int64_t id) {
    RunRow r;
    if (!store_run_get(&srv->store, id, &r)) return respond_error(c, 404, "no run %lld", (long long)id);
    JsonBuf j;
    json_init(&j);
    run_json(srv, &j, &r);
    run_row_free(&r);
    return respond_json(c, status, &j);
}

/* ---- building runs -------------------------------------------------------------- */

typedef struct {
    char *words[128];
    int n;
} Args;

static void args_add(Args *a, const char *w) {
    if (a->n < 127) a->words[a->n++] = strdup(w ? w : "");
}

static void args_free(Args *a) {
    for (int i = 0; i < a->n; i++) free(a->words[i]);
    a->n = 0;
}

static char *args_json(const Args *a) {
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    for (int i = 0; i < a->n; i++) json_str(&j, NULL, a->words[i]);
    json_array_end(&j);
    if (j.failed) {
        json_free(&j);
        return NULL;
    }
    return j.data;
}

/* Adds a project's option (a row of train_options.h the dashboard may set) to train's words.
 * Returns 0, or -1 with why. Values are checked by train's own parser later (train_args). */
static int option_words(const ProjectRow *p, const char *key, const JsonValue *v, Args *a, char *why, size_t why_cap) {
    const TrainOption *o = train_option_by_key(key);
    if (!o || !o->dashboard) {
        snprintf(why, why_cap, "unknown option '%s'", key);
        return -1;
    }
    if (p->model && strcmp(o->group, "shape") == 0) {
        snprintf(why, why_cap, "option '%s' sets the shape of a model trained from scratch; this project fine-tunes %s",
                 key, p->model);
        return -1;
    }
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", o->name);
    if (v->type == JV_NULL) return 0; /* train's default */
    if (o->type == ARG_FLAG) {
        if (v->type != JV_BOOL) {
            snprintf(why, why_cap, "option '%s' must be true or false", key);
            return -1;
        }
        if (v->boolean) args_add(a, flag);
        return 0;
    }
    if (v->type != JV_NUMBER && v->type != JV_STRING) {
        snprintf(why, why_cap, "option '%s' must be a %s", key,
                 o->type == ARG_INT || o->type == ARG_FLOAT ? "number" : "string");
        return -1;
    }
    args_add(a, flag);
    args_add(a, v->text);
    return 0;
}

/* train's command line for a project (ckpt: where the run checkpoints). The
 * same words are checked by train's own parser before anything runs, the
 * memory budget included (budget.h). Returns 0, or the HTTP status of the
 * refusal (why says it): 413 for a run over the memory budget, else 400. */
static int train_args(Server *srv, const ProjectRow *p, const char *ckpt, Args *a, char *why, size_t why_cap) {
    char path[MAX_PATH_LEN];
    JsonValue opts = {0};
    NfError err;
    if (json_parse(p->options, strlen(p->options), &opts, &err) != 0 || opts.type != JV_OBJECT) {
        snprintf(why, why_cap, "options must be a JSON object");
        json_value_free(&opts);
        return 400;
    }
    args_add(a, "train");
    if (p->model) {
        snprintf(path, sizeof path, "%s/models/%s", srv->data_dir, p->model);
        args_add(a, "--model");
        args_add(a, path);
    } else {
        Tokenizer tok;
        if (!project_tokenizer(srv, p, path, sizeof path, NULL, 0, why, why_cap)) {
            json_value_free(&opts);
            return 400;
        }
        if (tokenizer_load(&tok, path, &err) != 0) {
            snprintf(why, why_cap, "tokenizer: %s", err.message);
            json_value_free(&opts);
            return 400;
        }
        char vocab[16];
        snprintf(vocab, sizeof vocab, "%d", tok.vocab_size);
        tokenizer_free(&tok);
        args_add(a, "--init");
        args_add(a, "--vocab-size");
        args_add(a, vocab);
    }
    for (int i = 0; i < opts.n; i++) {
        if (option_words(p, opts.keys[i], &opts.items[i], a, why, why_cap) != 0) {
            json_value_free(&opts);
            return 400;
        }
    }
    /* a dashboard run's own defaults (a checkpoint clock), where the project sets none */
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++) {
        const TrainOption *o = &TRAIN_OPTIONS[i];
        char key[64], flag[64];
        train_option_key(o, key, sizeof key);
        if (!o->dash_def || json_get(&opts, key)) continue;
        snprintf(flag, sizeof flag, "--%s", o->name);
        args_add(a, flag);
        args_add(a, o->dash_def);
    }
    json_value_free(&opts);
    project_dir(srv, p->id, "data", path, sizeof path);
    args_add(a, "--data");
    args_add(a, path);
    if (!project_tokenizer(srv, p, path, sizeof path, NULL, 0, why, why_cap)) return 400;
    args_add(a, "--tokenizer");
    args_add(a, path);
    if (srv->max_memory[0]) {
        args_add(a, "--max-memory");
        args_add(a, srv->max_memory);
    }
    args_add(a, "--ckpt"); /* last: api_train names the folder once the run has an id */
    args_add(a, ckpt);
    /* train's own parser, on the very words the run will get */
    if (train_command_check(a->n - 1, a->words + 1, &err) != 0) {
        snprintf(why, why_cap, "%s", err.message);
        return strcmp(err.code, NF_ERR_MEMORY) == 0 ? 413 : 400;
    }
    return 0;
}

/* The newest run of a project for which match says yes (ctx: its scratch), or false. */
static bool find_run(Server *srv, int64_t project_id, bool (*match)(const RunRow *r, void *ctx), void *ctx) {
    int n;
    int64_t *ids = store_run_ids(&srv->store, project_id, false, &n);
    bool found = false;
    for (int i = 0; ids && i < n && !found; i++) {
        RunRow r;
        if (!store_run_get(&srv->store, ids[i], &r)) continue;
        found = match(&r, ctx);
        run_row_free(&r);
    }
    free(ids);
    return found;
}

typedef struct {
    char *path;
    size_t cap;
} PathOut;

static bool has_checkpoint(const RunRow *r, void *ctx) {
    PathOut *o = ctx;
    return run_checkpoint_path(r, o->path, o->cap) && is_file(o->path);
}
static bool is_active_train(const RunRow *r, void *ctx) {
    return (void)ctx, strcmp(r->kind, "train") == 0 && run_status_active(r->status);
}
static bool is_active(const RunRow *r, void *ctx) { return (void)ctx, run_status_active(r->status); }

/* The newest train run of a project that left a checkpoint; its path in out. */
static bool latest_checkpoint(Server *srv, int64_t project_id, char *out, size_t cap) {
    PathOut o = {out, cap};
    return find_run(srv, project_id, has_checkpoint, &o);
}

static bool project_has_active_train(Server *srv, int64_t project_id) {
    return find_run(srv, project_id, is_active_train, NULL);
}
static bool project_has_active_run(Server *srv, int64_t project_id) {
    return find_run(srv, project_id, is_active, NULL);
}

/* Gives a recorded run its words (and output file, if any) and hands it to the queue, which starts
 * it now or when a slot frees; responds 201 with it (status "queued" while it waits). */
static enum MHD_Result start_run(Server *srv, struct MHD_Connection *c, int64_t id, Args *a, const char *output) {
    char *words = args_json(a);
    args_free(a);
    NfError err = {0};
    int rc = words ? store_run_set_args(&srv->store, id, words) : nf_fail(&err, NF_ERR_MEMORY, "out of memory");
    free(words);
    if (rc == 0 && output) rc = store_run_set_output(&srv->store, id, output);
    if (rc == 0) rc = runqueue_submit(&srv->queue, id, &err);
    if (rc != 0) {
        const char *why = err.code ? err.message : "cannot record the run";
        store_run_ended(&srv->store, id, "error", -1, why);
        return respond_error(c, 500, "%s", why);
    }
    return respond_run(srv, c, 201, id);
}

/* Records a run of a project and starts it. */
static enum MHD_Result launch(Server *srv, struct MHD_Connection *c, int64_t project_id, const char *kind, Args *a) {
    int64_t id = store_run_create(&srv->store, project_id, kind, "[]", NULL);
    if (id < 0) {
        args_free(a);
        return respond_error(c, 500, "cannot record the run");
    }
    return start_run(srv, c, id, a, NULL);
}

/* ---- request bodies ----------------------------------------------------------- */

static const JsonValue *field(const JsonValue *body, const char *key, JsonType type) {
    const JsonValue *v = json_get(body, key);
    return v && v->type == type ? v : NULL;
}

static bool number_in(const JsonValue *body, const char *key, double lo, double hi, double *out, char *why,
                      size_t cap) {
    const JsonValue *v = json_get(body, key);
    if (!v || v->type == JV_NULL) return true;
    char *end;
    double x = v->type == JV_NUMBER ? strtod(v->text, &end) : 0;
    if (v->type != JV_NUMBER || *end || x < lo || x > hi) {
        snprintf(why, cap, "\"%s\" must be a number from %g to %g", key, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

/* ---- handlers ------------------------------------------------------------------ */

static enum MHD_Result api_status(Server *srv, struct MHD_Connection *c) {
    char dir[MAX_PATH_LEN];
    JsonBuf j;
    int n;
    int64_t *active = store_run_ids(&srv->store, 0, true, &n);
    free(active);
    json_init(&j);
    json_object_begin(&j, NULL);
    json_str(&j, "version", "neuralforge");
    json_str(&j, "data_dir", srv->data_dir);
    snprintf(dir, sizeof dir, "%s/models", srv->data_dir);
    json_array_begin(&j, "models");
    each_plain_entry(dir, list_model, &j);
    json_array_end(&j);
    snprintf(dir, sizeof dir, "%s/tokenizers", srv->data_dir);
    list_dir_json(&j, "tokenizers", dir, false, is_tokenizer);
    json_int(&j, "active_runs", n);
    json_object_end(&j);
    return respond_json(c, 200, &j);
}

/* Checks model/tokenizer names of a project body against the data directory. *tokenizer: NULL when the
 * body has none, TOKENIZER_OF_MODEL for null (the base model's own). */
static bool check_sources(Server *srv, const JsonValue *body, bool *set_model, const char **model,
                          const char **tokenizer, char *why, size_t cap) {
    const JsonValue *m = json_get(body, "model"), *t = json_get(body, "tokenizer");
    char path[MAX_PATH_LEN];
    *set_model = m != NULL;
    *model = m && m->type == JV_STRING ? m->text : NULL;
    *tokenizer = !t ? NULL : t->type == JV_STRING ? t->text : TOKENIZER_OF_MODEL;
    if (m && m->type != JV_NULL && m->type != JV_STRING)
        return snprintf(why, cap, "\"model\" must be a name in models/ or null"), false;
    if (t && t->type != JV_STRING && t->type != JV_NULL)
        return snprintf(why, cap, "\"tokenizer\" must be a name in tokenizers/, builtin:bytes, or null (the model's)"),
               false;
    if (*model) {
        bool own;
        struct stat sb;
        snprintf(path, sizeof path, "%s/models/%s", srv->data_dir, *model);
        if (!plain_name(*model) || stat(path, &sb) != 0)
            return snprintf(why, cap, "\"model\": no model '%.100s' in the data directory's models/", *model), false;
        if (base_kind(path, &own) == BASE_NONE)
            return snprintf(why, cap,
                            "\"model\": '%.100s' in models/ is neither a llama2.c model file, a GGUF file nor a "
                            "Hugging Face model directory (a config.json in it)",
                            *model),
                   false;
    }
    if (*tokenizer && **tokenizer && strcmp(*tokenizer, TOKENIZER_BUILTIN_BYTES) != 0) {
        snprintf(path, sizeof path, "%s/tokenizers/%s", srv->data_dir, *tokenizer);
        if (!plain_name(*tokenizer) || !is_tokenizer(path))
            return snprintf(why, cap, "\"tokenizer\": no tokenizer '%.100s' in the data directory's tokenizers/",
                            *tokenizer),
                   false;
    }
    return true;
}

/* A new project's tokenizer when its body names none: an HF or GGUF base model's own (project_tokenizer
 * says whether there is one), else builtin:bytes. */
static const char *default_tokenizer(const Server *srv, const char *model) {
    char path[MAX_PATH_LEN];
    bool own;
    if (!model) return TOKENIZER_BUILTIN_BYTES;
    snprintf(path, sizeof path, "%s/models/%s", srv->data_dir, model);
    return base_kind(path, &own) == BASE_LLAMA2C ? TOKENIZER_BUILTIN_BYTES : TOKENIZER_OF_MODEL;
}

static enum MHD_Result respond_project(Server *srv, struct MHD_Connection *c, unsigned status, int64_t id) {
    ProjectRow p;
    if (!store_project_get(&srv->store, id, &p)) return respond_error(c, 404, "no project %lld", (long long)id);
    JsonBuf j;
    json_init(&j);
    project_json(srv, &j, &p);
    project_row_free(&p);
    return respond_json(c, status, &j);
}

/* The options of a body as compact JSON text (validated when a run's command line is checked). */
static char *options_text(const JsonValue *opts) {
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    for (int i = 0; i < opts->n; i++) {
        const JsonValue *v = &opts->items[i];
        if (v->type == JV_NUMBER)
            json_raw(&j, opts->keys[i], v->text, strlen(v->text));
        else if (v->type == JV_STRING)
            json_str(&j, opts->keys[i], v->text);
        else if (v->type == JV_BOOL)
            json_bool(&j, opts->keys[i], v->boolean);
        else
            json_null_value(&j, opts->keys[i]);
    }
    json_object_end(&j);
    if (j.failed) {
        json_free(&j);
        return NULL;
    }
    return j.data;
}

/* Validates a project as it would be after the change: its train command line, through train's
 * parser. Returns 0, or the HTTP status of the refusal (train_args). */
static int project_valid(Server *srv, const ProjectRow *p, char *why, size_t cap) {
    Args a = {0};
    char ckpt[MAX_PATH_LEN];
    project_dir(srv, p->id, "runs/check/model.ckpt", ckpt, sizeof ckpt);
    int refused = train_args(srv, p, ckpt, &a, why, cap);
    args_free(&a);
    return refused;
}

static enum MHD_Result api_project_write(Server *srv, struct MHD_Connection *c, int64_t id, const JsonValue *body) {
    char why[600];
    bool set_model;
    const char *model, *tokenizer;
    if (body->type != JV_OBJECT) return respond_error(c, 400, "the body must be a JSON object");
    const JsonValue *name = json_get(body, "name"), *opts = json_get(body, "options");
    if (name && (name->type != JV_STRING || name->len == 0 || name->len > 100))
        return respond_error(c, 400, "\"name\" must be 1 to 100 characters");
    if (name && !printable(name->text, name->len))
        return respond_error(c, 400, "\"name\" must not contain NUL or control characters");
    if (opts && opts->type != JV_OBJECT) return respond_error(c, 400, "\"options\" must be an object of train options");
    for (int i = 0; opts && i < opts->n; i++)
        if (opts->items[i].type == JV_ARRAY || opts->items[i].type == JV_OBJECT)
            return respond_error(c, 400, "option '%s' must be a number, a string or a boolean", opts->keys[i]);
    if (!check_sources(srv, body, &set_model, &model, &tokenizer, why, sizeof why))
        return respond_error(c, 400, "%s", why);
    char *options = opts ? options_text(opts) : NULL;
    if (opts && !options) return respond_error(c, 500, "out of memory");
    ProjectRow p;
    bool creating = id == 0;
    if (creating) {
        if (!name) {
            free(options);
            return respond_error(c, 400, "\"name\" is required");
        }
        p = (ProjectRow){.id = 0,
                         .name = strdup(name->text),
                         .model = model ? strdup(model) : NULL,
                         .tokenizer = strdup(tokenizer ? tokenizer : default_tokenizer(srv, model)),
                         .options = strdup(options ? options : "{}")};
    } else {
        if (!store_project_get(&srv->store, id, &p)) {
            free(options);
            return respond_error(c, 404, "no project %lld", (long long)id);
        }
        if (name) free(p.name), p.name = strdup(name->text);
        if (set_model) free(p.model), p.model = model ? strdup(model) : NULL;
        if (tokenizer) free(p.tokenizer), p.tokenizer = strdup(tokenizer);
        if (options) free(p.options), p.options = strdup(options);
    }
    int refused = project_valid(srv, &p, why, sizeof why);
    bool valid = refused == 0;
    if (valid && creating) {
        id = store_project_create(&srv->store, p.name, p.model, p.tokenizer, p.options);
        char dir[MAX_PATH_LEN];
        const char *subs[] = {"uploads", "data", "runs", "exports"};
        for (int i = 0; id > 0 && i < 4; i++) {
            project_dir(srv, id, subs[i], dir, sizeof dir);
            make_dirs(dir);
        }
    } else if (valid &&
               store_project_update(&srv->store, id, name ? p.name : NULL, set_model, p.model, tokenizer, options) != 0)
        id = -1;
    project_row_free(&p);
    free(options);
    if (!valid) return respond_error(c, (unsigned)refused, "%s", why);
    if (id <= 0) return respond_error(c, 500, "cannot store the project");
    return respond_project(srv, c, creating ? 201 : 200, id);
}

static enum MHD_Result api_projects_list(Server *srv, struct MHD_Connection *c) {
    int n;
    int64_t *ids = store_project_ids(&srv->store, &n);
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    for (int i = 0; ids && i < n; i++) {
        ProjectRow p;
        if (!store_project_get(&srv->store, ids[i], &p)) continue;
        project_json(srv, &j, &p);
        project_row_free(&p);
    }
    json_array_end(&j);
    free(ids);
    return respond_json(c, 200, &j);
}

static enum MHD_Result api_project_delete(Server *srv, struct MHD_Connection *c, int64_t id) {
    ProjectRow p;
    if (!store_project_get(&srv->store, id, &p)) return respond_error(c, 404, "no project %lld", (long long)id);
    project_row_free(&p);
    if (project_has_active_run(srv, id)) return respond_error(c, 409, "a run of this project is active: stop it first");
    char dir[MAX_PATH_LEN];
    project_dir(srv, id, NULL, dir, sizeof dir);
    int64_t *runs;
    int n;
    if (store_project_delete(&srv->store, id, &runs, &n) != 0)
        return respond_error(c, 500, "cannot delete the project");
    for (int i = 0; i < n; i++) { /* the runs' logs go with them: nothing of the project stays behind */
        char log[MAX_PATH_LEN];
        runner_log_path(&srv->runner, runs[i], log, sizeof log);
        unlink(log);
    }
    free(runs);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return respond(c, 204, "application/json", "", 0);
}

static enum MHD_Result api_runs_list(Server *srv, struct MHD_Connection *c, int64_t project_id) {
    int n;
    int64_t *ids = store_run_ids(&srv->store, project_id, false, &n);
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    for (int i = 0; ids && i < n; i++) {
        RunRow r;
        if (!store_run_get(&srv->store, ids[i], &r)) continue;
        run_json(srv, &j, &r);
        run_row_free(&r);
    }
    json_array_end(&j);
    free(ids);
    return respond_json(c, 200, &j);
}

static enum MHD_Result api_train(Server *srv, struct MHD_Connection *c, const ProjectRow *p) {
    char why[600], dir[MAX_PATH_LEN], ckpt[MAX_PATH_LEN + 64];
    if (project_has_active_train(srv, p->id)) return respond_error(c, 409, "this project is already training");
    project_dir(srv, p->id, "data", dir, sizeof dir);
    JsonBuf scratch;
    int64_t tokens;
    json_init(&scratch);
    data_json(&scratch, dir, &tokens);
    json_free(&scratch);
    if (tokens == 0) return respond_error(c, 409, "no token data yet: upload a text file and tokenize it");
    /* the words are checked before the run is recorded; its id then names the folder, which is the
     * last word (train_args ends with --ckpt PATH) */
    Args a = {0};
    project_dir(srv, p->id, "runs", dir, sizeof dir);
    int refused = train_args(srv, p, "to be named", &a, why, sizeof why);
    if (refused) { /* nothing recorded, nothing started */
        args_free(&a);
        return respond_error(c, (unsigned)refused, "%s", why);
    }
    int64_t id = store_run_create(&srv->store, p->id, "train", "[]", NULL);
    if (id < 0) {
        args_free(&a);
        return respond_error(c, 500, "cannot record the run");
    }
    snprintf(ckpt, sizeof ckpt, "%s/%lld", dir, (long long)id);
    make_dirs(ckpt);
    snprintf(ckpt + strlen(ckpt), sizeof ckpt - strlen(ckpt), "/model.ckpt");
    free(a.words[a.n - 1]);
    a.words[a.n - 1] = strdup(ckpt);
    return start_run(srv, c, id, &a, NULL);
}

/* Every upload of the project goes through ingest into data/ (incremental: unchanged files are not
 * tokenized again), so train reads one manifest; JSONL prompts come with their loss masks. */
static enum MHD_Result api_tokenize(Server *srv, struct MHD_Connection *c, const ProjectRow *p, const JsonValue *body) {
    const JsonValue *up = field(body, "upload", JV_STRING);
    char in[MAX_PATH_LEN], out[MAX_PATH_LEN], tok[MAX_PATH_LEN], file[MAX_PATH_LEN + 128];
    if (!up || !plain_name(up->text)) return respond_error(c, 400, "\"upload\" must name an uploaded file");
    project_dir(srv, p->id, "uploads", in, sizeof in);
    snprintf(file, sizeof file, "%s/%s", in, up->text);
    if (!is_file(file)) return respond_error(c, 404, "no upload '%s'", up->text);
    project_dir(srv, p->id, "data", out, sizeof out);
    char why[300];
    if (!project_tokenizer(srv, p, tok, sizeof tok, NULL, 0, why, sizeof why)) return respond_error(c, 400, "%s", why);
    Args a = {0};
    args_add(&a, "ingest");
    args_add(&a, "--source");
    args_add(&a, in);
    args_add(&a, "--output");
    args_add(&a, out);
    args_add(&a, "--tokenizer");
    args_add(&a, tok);
    args_add(&a, "--incremental");
    return launch(srv, c, p->id, "tokenize", &a);
}

/* A chat request's conversation, checked, as the JSON text `generate --messages` reads: an array of
 * {"role", "content"} (system, user or assistant), a system message only first, the last the user's.
 * system (a string, or NULL) becomes the first message. NULL, with why, when the body breaks a rule. */
static char *chat_messages_text(const JsonValue *messages, const JsonValue *system, char *why, size_t cap) {
    enum { MAX_MESSAGES = 1000 };
    if (messages->type != JV_ARRAY || messages->n < 1 || messages->n > MAX_MESSAGES)
        return snprintf(why, cap, "\"messages\" must be an array of 1 to %d messages", MAX_MESSAGES), NULL;
    if (system && system->type != JV_STRING) return snprintf(why, cap, "\"system\" must be a string"), NULL;
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    if (system) {
        json_object_begin(&j, NULL);
        json_str(&j, "role", "system");
        json_str(&j, "content", system->text);
        json_object_end(&j);
    }
    for (int i = 0; i < messages->n; i++) {
        const JsonValue *m = &messages->items[i];
        const JsonValue *role = m->type == JV_OBJECT ? field(m, "role", JV_STRING) : NULL;
        const JsonValue *content = m->type == JV_OBJECT ? field(m, "content", JV_STRING) : NULL;
        const char *rule = NULL;
        if (!role || !content || m->n != 2)
            rule = "must be an object of exactly \"role\" and \"content\" (a string)";
        else if (strcmp(role->text, "system") != 0 && strcmp(role->text, "user") != 0 &&
                 strcmp(role->text, "assistant") != 0)
            rule = "has a \"role\" other than system, user or assistant";
        else if (strcmp(role->text, "system") == 0 && (i > 0 || system))
            rule = system ? "is a system message besides \"system\": give it once"
                          : "is a system message: only the first message may be one";
        else if (i == messages->n - 1 && strcmp(role->text, "user") != 0)
            rule = "is the last message and must be the user's (the reply answers it)";
        if (rule) {
            json_free(&j);
            return snprintf(why, cap, "\"messages\"[%d] %s", i, rule), NULL;
        }
        json_object_begin(&j, NULL);
        json_str(&j, "role", role->text);
        json_str(&j, "content", content->text);
        json_object_end(&j);
    }
    json_array_end(&j);
    if (j.failed) {
        json_free(&j);
        return snprintf(why, cap, "out of memory"), NULL;
    }
    return j.data;
}

/* Writes a chat run's conversation to D/projects/<project>/chats/<run>.json (atomically, 0600: it is
 * what the user typed); path gets its name. */
static int write_chat(Server *srv, int64_t project_id, int64_t run_id, const char *text, char *path, size_t cap,
                      NfError *err) {
    char dir[MAX_PATH_LEN];
    project_dir(srv, project_id, "chats", dir, sizeof dir);
    if (make_dirs(dir) != 0) return nf_fail(err, NF_ERR_IO, "cannot create '%s': %s", dir, strerror(errno));
    snprintf(path, cap, "%s/%lld.json", dir, (long long)run_id);
    AtomicFile af;
    if (atomic_file_open(&af, path, err) != 0) return -1;
    if (fchmod(fileno(af.fp), 0600) != 0) {
        atomic_file_abort(&af);
        return nf_fail(err, NF_ERR_IO, "cannot chmod '%s': %s", path, strerror(errno));
    }
    if (atomic_file_write(&af, text, strlen(text), err) != 0 || atomic_file_commit(&af, err) != 0) {
        atomic_file_abort(&af);
        return -1;
    }
    return 0;
}

/* generate's words for where the weights come from: base, checkpoint (merged) or lora. Returns 0, or
 * the HTTP status of the refusal with why. */
static unsigned source_words(Server *srv, const ProjectRow *p, const char *src, Args *a, char *why, size_t cap) {
    char path[MAX_PATH_LEN], ckpt[MAX_PATH_LEN];
    bool has_ckpt = latest_checkpoint(srv, p->id, ckpt, sizeof ckpt);
    bool base = strcmp(src, "base") == 0, lora = strcmp(src, "lora") == 0;
    if (!base && !lora && strcmp(src, "checkpoint") != 0)
        return snprintf(why, cap, "\"source\" must be base, checkpoint or lora"), 400;
    if ((base || lora) && !p->model)
        return snprintf(why, cap, "\"source\": this project trains from scratch, so it has no base model"), 400;
    if (!base && !has_ckpt) return snprintf(why, cap, "no checkpoint yet: train first"), 409;
    if (base || lora) {
        snprintf(path, sizeof path, "%s/models/%s", srv->data_dir, p->model);
        args_add(a, "--model");
        args_add(a, path);
    }
    if (!base) {
        args_add(a, lora ? "--lora" : "--ckpt");
        args_add(a, ckpt);
    }
    return 0;
}

/* POST /api/projects/:id/generate: a "prompt" continued, or (with "messages") the next assistant turn
 * of a chat, through the model's chat template (generate --chat --messages FILE). */
static enum MHD_Result api_generate(Server *srv, struct MHD_Connection *c, const ProjectRow *p, const JsonValue *body) {
    char why[300], tok[MAX_PATH_LEN], num[32];
    const JsonValue *prompt = json_get(body, "prompt"), *source = json_get(body, "source");
    const JsonValue *messages = json_get(body, "messages"), *system = json_get(body, "system");
    double temperature = 0.8, top_p = 0.9, top_k = 0, max_tokens = 200;
    if (prompt && (prompt->type != JV_STRING || strlen(prompt->text) > 65536))
        return respond_error(c, 400, "\"prompt\" must be a string of at most 64 KiB");
    if (prompt && messages) return respond_error(c, 400, "give \"prompt\" or \"messages\" (a chat), not both");
    if (system && !messages) return respond_error(c, 400, "\"system\" goes with \"messages\" (a chat)");
    if (!number_in(body, "temperature", 0, 100, &temperature, why, sizeof why) ||
        !number_in(body, "top_p", 1e-6, 1, &top_p, why, sizeof why) ||
        !number_in(body, "top_k", 0, 1 << 22, &top_k, why, sizeof why) ||
        !number_in(body, "max_tokens", 1, 65536, &max_tokens, why, sizeof why))
        return respond_error(c, 400, "%s", why);
    if (source && source->type != JV_STRING)
        return respond_error(c, 400, "\"source\" must be base, checkpoint or lora");
    char *chat = messages ? chat_messages_text(messages, system, why, sizeof why) : NULL;
    if (messages && !chat) return respond_error(c, 400, "%s", why);
    Args a = {0};
    args_add(&a, "generate");
    unsigned refused = source_words(srv, p, source ? source->text : "checkpoint", &a, why, sizeof why);
    if (!refused && !project_tokenizer(srv, p, tok, sizeof tok, NULL, 0, why, sizeof why)) refused = 400;
    if (refused) {
        args_free(&a);
        free(chat);
        return respond_error(c, refused, "%s", why);
    }
    args_add(&a, "--tokenizer");
    args_add(&a, tok);
    const char *flags[] = {"--temperature", "--top-p", "--top-k", "--max-tokens"};
    double values[] = {temperature, top_p, top_k, max_tokens};
    for (int i = 0; i < 4; i++) {
        snprintf(num, sizeof num, i >= 2 ? "%.0f" : "%.9g", values[i]);
        args_add(&a, flags[i]);
        args_add(&a, num);
    }
    if (!chat) {
        args_add(&a, "--prompt");
        args_add(&a, prompt ? prompt->text : "");
        return launch(srv, c, p->id, "generate", &a);
    }
    /* the file is named after the run, so the run is recorded first; it starts once the file is whole */
    int64_t id = store_run_create(&srv->store, p->id, "generate", "[]", NULL);
    char file[MAX_PATH_LEN + 64];
    NfError err = {0};
    if (id < 0 || write_chat(srv, p->id, id, chat, file, sizeof file, &err) != 0) {
        free(chat);
        args_free(&a);
        if (id < 0) return respond_error(c, 500, "cannot record the run");
        store_run_ended(&srv->store, id, "error", -1, err.message);
        return respond_error(c, 500, "%s", err.message);
    }
    free(chat);
    args_add(&a, "--chat");
    args_add(&a, "--messages");
    args_add(&a, file);
    return start_run(srv, c, id, &a, NULL);
}

static enum MHD_Result api_export(Server *srv, struct MHD_Connection *c, const ProjectRow *p, const JsonValue *body) {
    const JsonValue *format = field(body, "format", JV_STRING), *dtype = json_get(body, "dtype");
    static const char *const formats[] = {"llama2c", "llama2c-v1", "gguf", "safetensors", "gguf-lora", "peft"};
    static const char *const suffix[] = {".bin", ".v1.bin", ".gguf", "", ".lora.gguf", ""};
    int f = -1;
    for (int i = 0; format && i < 6; i++)
        if (strcmp(format->text, formats[i]) == 0) f = i;
    if (f < 0)
        return respond_error(c, 400,
                             "\"format\" must be one of llama2c, llama2c-v1, gguf, safetensors, gguf-lora, peft");
    if (dtype && dtype->type != JV_NULL && (f != 2 || dtype->type != JV_STRING))
        return respond_error(c, 400, "\"dtype\" applies to the gguf format only");
    char ckpt[MAX_PATH_LEN], out[MAX_PATH_LEN + 64], dir[MAX_PATH_LEN];
    if (!latest_checkpoint(srv, p->id, ckpt, sizeof ckpt))
        return respond_error(c, 409, "no checkpoint yet: train first");
    project_dir(srv, p->id, "exports", dir, sizeof dir);
    int64_t next = store_run_create(&srv->store, p->id, "export", "[]", NULL);
    if (next < 0) return respond_error(c, 500, "cannot record the run");
    snprintf(out, sizeof out, "%s/%lld%s", dir, (long long)next,
             f == 3   ? ".safetensors"
             : f == 5 ? ".peft"
                      : suffix[f]);
    Args a = {0};
    args_add(&a, "export");
    args_add(&a, "--ckpt");
    args_add(&a, ckpt);
    args_add(&a, "--format");
    args_add(&a, formats[f]);
    if (dtype && dtype->type == JV_STRING) {
        args_add(&a, "--dtype");
        args_add(&a, dtype->text);
    }
    args_add(&a, "--output");
    args_add(&a, out);
    return start_run(srv, c, next, &a, out);
}

static enum MHD_Result api_resume(Server *srv, struct MHD_Connection *c, int64_t id) {
    RunRow r;
    if (!store_run_get(&srv->store, id, &r)) return respond_error(c, 404, "no run %lld", (long long)id);
    char ckpt[MAX_PATH_LEN];
    bool ok = strcmp(r.kind, "train") == 0 && !run_status_active(r.status) && strcmp(r.status, "done") != 0 &&
              run_checkpoint_path(&r, ckpt, sizeof ckpt) && is_file(ckpt);
    bool active = run_status_active(r.status) || project_has_active_train(srv, r.project_id);
    char *args = ok && !active ? strdup(r.args) : NULL;
    run_row_free(&r);
    if (!ok) return respond_error(c, 409, "only a stopped or interrupted training run with a checkpoint resumes");
    if (active || !args) {
        free(args);
        return respond_error(c, 409, "this project is already training");
    }
    /* the same words plus --resume (once) */
    if (!strstr(args, "\"--resume\"")) {
        size_t n = strlen(args);
        char *more = realloc(args, n + 16);
        if (!more) {
            free(args);
            return respond_error(c, 500, "out of memory");
        }
        args = more;
        snprintf(args + n - 1, 16, ",\"--resume\"]");
    }
    int rc = store_run_set_args(&srv->store, id, args);
    free(args);
    NfError err;
    if (rc == 0) rc = store_run_status(&srv->store, id, "queued");
    if (rc != 0 || runqueue_submit(&srv->queue, id, &err) != 0) return respond_error(c, 500, "cannot resume the run");
    return respond_run(srv, c, 200, id);
}

/* Appends {"seq", "message"} to the open array j (the messages endpoint). */
static void append_message(void *ctx, int64_t seq, const char *json, int len) {
    JsonBuf *j = ctx;
    json_object_begin(j, NULL);
    json_int(j, "seq", seq);
    json_raw(j, "message", json, (size_t)len);
    json_object_end(j);
}

/* ---- Server-Sent Events -------------------------------------------------------- */

typedef struct {
    Server *srv;
    int64_t run_id;
    int64_t since;   /* last message sequence sent */
    char status[16]; /* last status sent */
    uint64_t generation;
    JsonBuf pending; /* formatted events not yet handed to MHD */
    size_t sent;     /* of pending */
    bool finished;   /* the run ended and everything went out */
} EventStream;

static void append_event(void *ctx, int64_t seq, const char *json, int len) {
    EventStream *es = ctx;
    char head[64];
    int n = snprintf(head, sizeof head, "id: %lld\nevent: message\ndata: ", (long long)seq);
    json_raw(&es->pending, NULL, head, (size_t)n);
    json_raw(&es->pending, NULL, json, (size_t)len);
    json_raw(&es->pending, NULL, "\n\n", 2);
}

/* Fills pending with what is new: messages after since, then a changed status. */
static void collect_events(EventStream *es) {
    RunRow r;
    if (!store_run_get(&es->srv->store, es->run_id, &r)) {
        es->finished = true;
        return;
    }
    bool ended = !run_status_active(r.status);
    es->since = store_messages_each(&es->srv->store, es->run_id, es->since, NULL, 200, append_event, es);
    bool caught_up = es->since >= r.messages;
    if (strcmp(r.status, es->status) != 0 && caught_up) {
        JsonBuf j;
        json_init(&j);
        run_json(es->srv, &j, &r);
        json_raw(&es->pending, NULL, "event: status\ndata: ", 20);
        if (!j.failed) json_raw(&es->pending, NULL, j.data, j.len);
        json_raw(&es->pending, NULL, "\n\n", 2);
        json_free(&j);
        snprintf(es->status, sizeof es->status, "%s", r.status);
    }
    if (ended && caught_up && strcmp(r.status, es->status) == 0) es->finished = true;
    run_row_free(&r);
}

/* Blocks until there is something to send. A quiet stream gets a comment line every third of the
 * idle timeout, so the timeout never cuts it (and a closed connection is noticed). */
static ssize_t events_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    EventStream *es = cls;
    double keep_alive_ms = es->srv->idle_timeout * 1000.0 / 3, since_out = nf_now_ms();
    while (es->sent == es->pending.len) {
        if (es->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        json_free(&es->pending);
        json_init(&es->pending);
        es->sent = 0;
        collect_events(es);
        if (es->pending.failed) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (es->pending.len > 0) break;
        if (es->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        double left = since_out + keep_alive_ms - nf_now_ms();
        if (left <= 0) {
            json_raw(&es->pending, NULL, ": keep-alive\n\n", 14);
            break;
        }
        store_wait(&es->srv->store, &es->generation, left < 1000 ? (int)left + 1 : 1000);
    }
    size_t n = es->pending.len - es->sent < max ? es->pending.len - es->sent : max;
    memcpy(buf, es->pending.data + es->sent, n);
    es->sent += n;
    return (ssize_t)n;
}

static void events_free(void *cls) {
    EventStream *es = cls;
    json_free(&es->pending);
    free(es);
}

static enum MHD_Result api_events(Server *srv, struct MHD_Connection *c, int64_t run_id) {
    RunRow r;
    if (!store_run_get(&srv->store, run_id, &r)) return respond_error(c, 404, "no run %lld", (long long)run_id);
    run_row_free(&r);
    const char *since = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    const char *last_id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    EventStream *es = calloc(1, sizeof *es);
    if (!es) return respond_error(c, 500, "out of memory");
    es->srv = srv;
    es->run_id = run_id;
    es->since = last_id ? atoll(last_id) : since ? atoll(since) : 0;
    if (es->since < 0) es->since = 0;
    json_init(&es->pending);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, events_read, es, events_free);
    if (!resp) {
        events_free(es);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    return queue(c, 200, resp);
}

/* ---- files ---------------------------------------------------------------------- */

static enum MHD_Result send_file(struct MHD_Connection *c, const char *path, const char *type, const char *attachment) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        return respond_error(c, 404, "not found");
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (attachment) {
        char disp[300];
        snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", attachment);
        MHD_add_response_header(r, "Content-Disposition", disp);
    }
    return queue(c, 200, r);
}

static enum MHD_Result api_download(Server *srv, struct MHD_Connection *c, int64_t id) {
    RunRow r;
    if (!store_run_get(&srv->store, id, &r)) return respond_error(c, 404, "no run %lld", (long long)id);
    char path[MAX_PATH_LEN];
    bool ok = strcmp(r.kind, "export") == 0 && strcmp(r.status, "done") == 0 && r.output;
    if (ok) snprintf(path, sizeof path, "%s", r.output);
    run_row_free(&r);
    if (!ok) return respond_error(c, 409, "only a finished export has a file to download");
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return respond_error(c, 409, "this export is a directory (%s): copy it from the data directory", path);
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    return send_file(c, path, "application/octet-stream", name);
}

static enum MHD_Result serve_static(Server *srv, struct MHD_Connection *c, const char *url) {
    static const struct {
        const char *url, *file, *type;
    } FILES[] = {
        {"/", "index.html", "text/html; charset=utf-8"},
        {"/index.html", "index.html", "text/html; charset=utf-8"},
        {"/app.js", "app.js", "text/javascript; charset=utf-8"},
        {"/style.css", "style.css", "text/css; charset=utf-8"},
        {"/vendor/uPlot.iife.min.js", "node_modules/uplot/dist/uPlot.iife.min.js", "text/javascript; charset=utf-8"},
        {"/vendor/uPlot.min.css", "node_modules/uplot/dist/uPlot.min.css", "text/css; charset=utf-8"},
    };
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++)
        if (strcmp(url, FILES[i].url) == 0) {
            char path[MAX_PATH_LEN];
            snprintf(path, sizeof path, "%s/%s", srv->web_dir, FILES[i].file);
            return send_file(c, path, FILES[i].type, NULL);
        }
    return respond_error(c, 404, "not found");
}

/* ---- uploads -------------------------------------------------------------------- */

/* First call of an upload: checks the name (?name=) and opens the temporary file. */
static void upload_begin(Server *srv, Request *rq, int64_t project_id, struct MHD_Connection *c) {
    /* the decoded value's real length: `evil.txt%00.sh` decodes to a NUL in the middle, which
     * strlen would cut to an innocent `evil.txt` */
    const char *name = NULL;
    size_t name_len = 0;
    if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, "name", 4, &name, &name_len) != MHD_YES) name = NULL;
    ProjectRow p;
    if (!store_project_get(&srv->store, project_id, &p)) {
        rq->upload_status = 404;
        snprintf(rq->upload_error, sizeof rq->upload_error, "no project %lld", (long long)project_id);
        return;
    }
    project_row_free(&p);
    if (name && strlen(name) != name_len) {
        rq->upload_status = 400;
        snprintf(rq->upload_error, sizeof rq->upload_error, "?name= must not contain NUL (%%00)");
        return;
    }
    if (!name || !plain_name(name) ||
        !(ends_with(name, ".txt") || ends_with(name, ".md") || ends_with(name, ".jsonl"))) {
        rq->upload_status = 400;
        snprintf(rq->upload_error, sizeof rq->upload_error,
                 "?name= must be a plain file name ending in .txt, .md or .jsonl");
        return;
    }
    char dir[PATH_MAX];
    project_dir(srv, project_id, "uploads", dir, sizeof dir);
    make_dirs(dir);
    snprintf(rq->upload_final, sizeof rq->upload_final, "%s/%s", dir, name);
    snprintf(rq->upload_tmp, sizeof rq->upload_tmp, "%s/.upload-XXXXXX", dir);
    rq->upload_fd = mkstemp(rq->upload_tmp);
    if (rq->upload_fd < 0) {
        rq->upload_status = 500;
        snprintf(rq->upload_error, sizeof rq->upload_error, "cannot store the upload");
    }
}

static void upload_data(Request *rq, const char *data, size_t n) {
    if (rq->upload_status) return;
    if (rq->upload_bytes + n > MAX_UPLOAD) {
        rq->upload_status = 413;
        snprintf(rq->upload_error, sizeof rq->upload_error, "uploads are limited to %u MiB", MAX_UPLOAD >> 20);
        return;
    }
    while (n > 0) {
        ssize_t w = write(rq->upload_fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rq->upload_status = 500;
            snprintf(rq->upload_error, sizeof rq->upload_error, "cannot store the upload: %s", strerror(errno));
            return;
        }
        data += w, n -= (size_t)w, rq->upload_bytes += (size_t)w;
    }
}

static enum MHD_Result upload_end(struct MHD_Connection *c, Request *rq) {
    if (rq->upload_status) return respond_error(c, rq->upload_status, "%s", rq->upload_error);
    if (fsync(rq->upload_fd) != 0 || rename(rq->upload_tmp, rq->upload_final) != 0)
        return respond_error(c, 500, "cannot store the upload");
    close(rq->upload_fd);
    rq->upload_fd = 0;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_str(&j, "name", strrchr(rq->upload_final, '/') + 1);
    json_int(&j, "bytes", (int64_t)rq->upload_bytes);
    json_object_end(&j);
    return respond_json(c, 201, &j);
}

/* GET /api/options: train's option table (train_options.h), from which the page builds its Config form */
static enum MHD_Result api_options(struct MHD_Connection *c) {
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    train_options_json(&j, "options");
    json_object_end(&j);
    return respond_json(c, 200, &j);
}

/* ---- routing -------------------------------------------------------------------- */

/* Splits "/api/projects/12/train" into at most 5 words. */
static int split_path(const char *url, char words[5][64]) {
    int n = 0;
    const char *p = url;
    while (*p == '/') p++;
    while (*p && n < 5) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= 64) return -1;
        memcpy(words[n], p, len);
        words[n][len] = '\0';
        n++;
        p += len;
        while (*p == '/') p++;
    }
    return *p ? -1 : n;
}

/* Whether a string in v holds a NUL byte: every name, prompt and option becomes a C string (an
 * argv word, a path) that would silently end there. */
static bool has_nul(const JsonValue *v) {
    if (v->type == JV_STRING) return strlen(v->text) != v->len;
    for (int i = 0; (v->type == JV_ARRAY || v->type == JV_OBJECT) && i < v->n; i++)
        if (has_nul(&v->items[i])) return true;
    return false;
}

static int64_t parse_id(const char *s) {
    char *end;
    long long v = strtoll(s, &end, 10);
    return *s && !*end && v > 0 ? (int64_t)v : -1;
}

static enum MHD_Result route(Server *srv, struct MHD_Connection *c, const char *method, char w[5][64], int n,
                             Request *rq) {
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    JsonValue body = {0};
    NfError err;
    if ((post || strcmp(method, "PATCH") == 0) && rq->len > 0 && json_parse(rq->body, rq->len, &body, &err) != 0)
        return respond_error(c, 400, "the body is not JSON: %s", err.message);
    if (has_nul(&body)) {
        json_value_free(&body);
        return respond_error(c, 400, "strings in the body must not contain NUL (\\u0000)");
    }
    enum MHD_Result result;
    int64_t id = n >= 3 ? parse_id(w[2]) : 0;
    if (n == 2 && strcmp(w[1], "status") == 0 && get)
        result = api_status(srv, c);
    else if (n == 2 && strcmp(w[1], "options") == 0 && get)
        result = api_options(c);
    else if (n == 2 && strcmp(w[1], "projects") == 0 && get)
        result = api_projects_list(srv, c);
    else if (n == 2 && strcmp(w[1], "projects") == 0 && post)
        result = api_project_write(srv, c, 0, &body);
    else if (n >= 3 && strcmp(w[1], "projects") == 0 && id > 0) {
        ProjectRow p;
        if (!store_project_get(&srv->store, id, &p))
            result = respond_error(c, 404, "no project %lld", (long long)id);
        else {
            if (n == 3 && get)
                result = respond_project(srv, c, 200, id);
            else if (n == 3 && strcmp(method, "PATCH") == 0)
                result = api_project_write(srv, c, id, &body);
            else if (n == 3 && strcmp(method, "DELETE") == 0)
                result = api_project_delete(srv, c, id);
            else if (n == 4 && strcmp(w[3], "runs") == 0 && get)
                result = api_runs_list(srv, c, id);
            else if (n == 4 && post && strcmp(w[3], "train") == 0) {
                pthread_mutex_lock(&srv->launch);
                result = api_train(srv, c, &p);
                pthread_mutex_unlock(&srv->launch);
            } else if (n == 4 && post && strcmp(w[3], "tokenize") == 0)
                result = api_tokenize(srv, c, &p, &body);
            else if (n == 4 && post && strcmp(w[3], "generate") == 0)
                result = api_generate(srv, c, &p, &body);
            else if (n == 4 && post && strcmp(w[3], "export") == 0)
                result = api_export(srv, c, &p, &body);
            else
                result = respond_error(c, 404, "no such endpoint");
            project_row_free(&p);
        }
    } else if (n >= 3 && strcmp(w[1], "runs") == 0 && id > 0) {
        if (n == 3 && get)
            result = respond_run(srv, c, 200, id);
        else if (n == 4 && get && strcmp(w[3], "events") == 0)
            result = api_events(srv, c, id);
        else if (n == 4 && get && strcmp(w[3], "download") == 0)
            result = api_download(srv, c, id);
        else if (n == 4 && get && strcmp(w[3], "messages") == 0) {
            const char *since = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
            const char *type = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "type");
            RunRow r;
            if (!store_run_get(&srv->store, id, &r))
                result = respond_error(c, 404, "no run %lld", (long long)id);
            else {
                run_row_free(&r);
                JsonBuf j;
                json_init(&j);
                json_array_begin(&j, NULL);
                store_messages_each(&srv->store, id, since ? atoll(since) : 0, type, 100000, append_message, &j);
                json_array_end(&j);
                result = respond_json(c, 200, &j);
            }
        } else if (n == 4 && post && strcmp(w[3], "stop") == 0) {
            /* a queued run is cancelled (it never starts); a started one gets SIGINT */
            if (!runqueue_cancel(&srv->queue, id) && runner_stop(&srv->runner, id) != 0)
                result = respond_error(c, 409, "run %lld is not active", (long long)id);
            else
                result = respond_run(srv, c, 200, id);
        } else if (n == 4 && post && strcmp(w[3], "resume") == 0) {
            pthread_mutex_lock(&srv->launch);
            result = api_resume(srv, c, id);
            pthread_mutex_unlock(&srv->launch);
        } else
            result = respond_error(c, 404, "no such endpoint");
    } else
        result = respond_error(c, 404, "no such endpoint");
    json_value_free(&body);
    return result;
}

/* The guards every request passes on its first call (headers only), in order: Host, Origin, then for
 * the API the token and the body's media type. The answer waits until the body is drained. */
static void guard(const Server *srv, struct MHD_Connection *c, const char *method, bool api, bool is_upload,
                  Request *rq) {
    if (!host_ok(srv, c)) {
        rq->refused = 403;
        rq->refusal = "the Host header names another server (DNS rebinding?): use the URL neuralforge serve printed";
    } else if (!origin_ok(c, method)) {
        rq->refused = 403;
        rq->refusal = "a page from another origin may not change anything here";
    } else if (api && !authorized(srv, c)) {
        rq->refused = 401;
        rq->refusal = "a valid token is required: open the URL neuralforge serve printed";
    } else if (api && !safe_method(method) && !content_type_ok(c, is_upload)) {
        rq->refused = 415;
        rq->refusal = is_upload ? "uploads need Content-Type: application/octet-stream"
                                : "request bodies need Content-Type: application/json";
    }
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    Server *srv = cls;
    Request *rq = *con_cls;
    char w[5][64];
    int n = split_path(url, w);
    bool api = n >= 1 && strcmp(w[0], "api") == 0;
    bool is_upload =
        api && n == 4 && strcmp(w[1], "projects") == 0 && strcmp(w[3], "uploads") == 0 && strcmp(method, "POST") == 0;
    if (!rq) { /* first call: headers only */
        if (!(rq = calloc(1, sizeof *rq))) return MHD_NO;
        *con_cls = rq;
        guard(srv, c, method, api, is_upload, rq);
        if (!rq->refused && is_upload) upload_begin(srv, rq, parse_id(w[2]), c);
        return MHD_YES;
    }
    if (*upload_size > 0) { /* body data */
        if (rq->refused) {  /* drained unread */
        } else if (is_upload && rq->upload_fd > 0)
            upload_data(rq, upload, *upload_size);
        else if (!is_upload && !rq->too_large) {
            if (rq->len + *upload_size > MAX_BODY)
                rq->too_large = true;
            else {
                if (!nf_grow((void **)&rq->body, &rq->cap, rq->len + *upload_size + 1, 1, 4096)) return MHD_NO;
                memcpy(rq->body + rq->len, upload, *upload_size);
                rq->len += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->refused) return respond_error(c, rq->refused, "%s", rq->refusal);
    if (!api) {
        if (strcmp(method, "GET") != 0) return respond_error(c, 405, "method not allowed");
        const char *token = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
        if (token && (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0)) return token_exchange(srv, c, token);
        return serve_static(srv, c, url);
    }
    if (n < 0) return respond_error(c, 404, "no such endpoint");
    if (is_upload)
        return rq->upload_fd > 0 || rq->upload_status ? upload_end(c, rq) : respond_error(c, 500, "upload failed");
    if (rq->too_large) return respond_error(c, 413, "request bodies are limited to 1 MiB");
    if (rq->len > 0 && !MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE))
        return respond_error(c, 415, "request bodies need Content-Type: application/json");
    return route(srv, c, method, w, n, rq);
}

/* ---- start and stop ------------------------------------------------------------- */

/* Connections a slow or hostile client holds (one thread and one descriptor each) must not lock
 * everyone else out: idle ones are closed after idle_timeout, one IP address gets at most half of
 * all, and all are many. A thread per connection costs little while it waits, so 1000 is fine; the
 * descriptors are raised to fit (the soft limit is often 1024). Every local client is 127.0.0.1,
 * so the half kept for other addresses does not protect local users from each other: there the
 * timeout does. */
static void set_connection_limits(Server *srv) {
    enum { MAX_CONNECTIONS = 1000, FD_RESERVE = 200 }; /* the reserve: database, logs, run pipes, files sent */
    struct rlimit rl;
    rlim_t want = MAX_CONNECTIONS + FD_RESERVE, have = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < want && rl.rlim_cur != RLIM_INFINITY) {
            rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        have = rl.rlim_cur;
    }
    rlim_t fit = have > FD_RESERVE + 64 ? have - FD_RESERVE : 64;
    srv->max_connections = fit < MAX_CONNECTIONS ? (unsigned)fit : MAX_CONNECTIONS;
    srv->max_per_client = srv->max_connections / 2;
    if (srv->max_connections < MAX_CONNECTIONS)
        nf_log("serve: only %llu file descriptors (ulimit -n): at most %u connections", (unsigned long long)have,
               srv->max_connections);
}

/* The largest N of the N.log files in dir (runner_log_path's names), 0 if none. */
static int64_t highest_log_id(const char *dir) {
    int64_t top = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char *end;
        long long id = strtoll(e->d_name, &end, 10);
        /* a stray huge number would exhaust the ids: those are not ours */
        if (end != e->d_name && strcmp(end, ".log") == 0 && id > top && id < (1LL << 53)) top = id;
    }
    if (d) closedir(d);
    return top;
}

static void server_close(Server *srv);

/* A data directory serves one server at a time: a second over the same one would start the queued runs again and
 * take the first's live runs for orphans. The lock (fcntl, on D/serve.lock) lasts while the process does, however
 * it ends; forked runs do not inherit it. Returns the lock's descriptor, or -1 with err set. */
static int lock_data_dir(const char *data_dir, NfError *err) {
    char path[MAX_PATH_LEN];
    snprintf(path, sizeof path, "%s/serve.lock", data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return nf_fail(err, NF_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &lock) == 0) return fd;
    int e = errno;
    struct flock holder = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    bool known = fcntl(fd, F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK;
    close(fd);
    if (e != EACCES && e != EAGAIN) return nf_fail(err, NF_ERR_IO, "cannot lock '%s': %s", path, strerror(e));
    if (known)
        return nf_fail(err, NF_ERR_USAGE, "--data-dir '%s' is in use by another neuralforge serve (pid %ld)", data_dir,
                       (long)holder.l_pid);
    return nf_fail(err, NF_ERR_USAGE, "--data-dir '%s' is in use by another neuralforge serve", data_dir);
}

/* The listening socket, bound before any run is recovered or started, so that a port in use is refused with
 * nothing started; libmicrohttpd serves it (MHD_OPTION_LISTEN_SOCKET). Returns it, or -1 with err set. */
static int listen_on(const struct sockaddr_in *addr, const char *host, int port, NfError *err) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0) return nf_fail(err, NF_ERR_IO, "cannot open a socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on); /* a restart need not wait out TIME_WAIT */
    if (bind(fd, (const struct sockaddr *)addr, sizeof *addr) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        return nf_fail(err, NF_ERR_IO, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    return fd;
}

/* libmicrohttpd's fatal errors abort the process: its reason in the log first */
static void mhd_panic(void *cls, const char *file, unsigned int line, const char *reason) {
    (void)cls;
    nf_log("serve: libmicrohttpd failed at %s:%u: %s", file ? file : "?", line, reason ? reason : "?");
    abort();
}

/* The store and the runner, the data directory locked: what server_start opens before it binds. */
static int open_data_dir(Server *srv, NfError *err) {
    char path[MAX_PATH_LEN];
    const char *subs[] = {"models", "tokenizers", "projects", "logs"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", srv->data_dir, subs[i]);
        if (make_dirs(path) != 0) return nf_fail(err, NF_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    }
    if ((srv->lock_fd = lock_data_dir(srv->data_dir, err)) < 0) return -1;
    snprintf(path, sizeof path, "%s/nf.db", srv->data_dir);
    if (store_open(&srv->store, path, err) != 0) return -1;
    if (runner_init(&srv->runner, &srv->store, srv->data_dir, err) != 0) return -1;
    /* logs left by runs deleted before ids were never reused (schema 0) must not be appended to */
    if (store_runs_reserve(&srv->store, highest_log_id(srv->runner.log_dir)) != 0)
        return nf_fail(err, NF_ERR_IO, "cannot update the database in '%s'", srv->data_dir);
    return 0;
}

int server_start(Server *srv, const char *host, int port, NfError *err) {
    srv->lock_fd = srv->listen_fd = -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        return nf_fail(err, NF_ERR_USAGE, "--host '%s' is not an IPv4 address", host);
    snprintf(srv->host, sizeof srv->host, "%s", host);
    srv->check_host = (ntohl(addr.sin_addr.s_addr) >> 24) == 127;
    pthread_mutex_init(&srv->launch, NULL); /* before anything server_close undoes: it destroys this too */
    if (open_data_dir(srv, err) != 0 || (srv->listen_fd = listen_on(&addr, host, port, err)) < 0) {
        server_close(srv);
        return -1;
    }
    struct sockaddr_in bound;
    socklen_t len = sizeof bound;
    srv->port =
        getsockname(srv->listen_fd, (struct sockaddr *)&bound, &len) == 0 ? ntohs(bound.sin_port) : (uint16_t)port;
    /* the queue first: an orphan that recovery waits for frees its slot through the queue's hook */
    runqueue_init(&srv->queue, &srv->store, &srv->runner, srv->max_trainings, srv->max_jobs);
    runner_recover(&srv->runner);
    runqueue_dispatch(&srv->queue); /* runs left queued by the last server */
    set_connection_limits(srv);
    MHD_set_panic_func(mhd_panic, NULL);
    /* poll, not select: select cannot watch a descriptor numbered past 1023 */
    srv->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC, srv->port, NULL,
        NULL, handle, srv, MHD_OPTION_LISTEN_SOCKET, srv->listen_fd, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
        MHD_OPTION_CONNECTION_LIMIT, srv->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, srv->max_per_client,
        MHD_OPTION_CONNECTION_TIMEOUT, srv->idle_timeout, MHD_OPTION_END);
    srv->listen_fd = -1; /* libmicrohttpd's now (even where it failed: left open rather than maybe closed twice) */
    if (!srv->daemon) {  /* out of threads or memory: the runs just recovered or started are stopped again */
        nf_fail(err, NF_ERR_IO, "cannot start serving on %s:%u", host, srv->port);
        return server_stop(srv) ? -1 : -2;
    }
    return 0;
}

/* What server_start opened, closed (each part only if it was). */
static void server_close(Server *srv) {
    pthread_mutex_destroy(&srv->launch);
    store_close(&srv->store);
    if (srv->listen_fd >= 0) close(srv->listen_fd); /* not yet given to libmicrohttpd, or handed back by quiesce */
    if (srv->lock_fd >= 0) close(srv->lock_fd);
    srv->listen_fd = srv->lock_fd = -1;
}

bool server_stop(Server *srv) {
    if (srv->daemon) { /* no new connections; the socket comes back to be closed after MHD_stop_daemon */
        MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
        if (fd != MHD_INVALID_SOCKET) srv->listen_fd = fd;
    }
    runqueue_close(&srv->queue); /* queued runs stay queued for the next start */
    int live = runner_shutdown(&srv->runner, srv->stop_wait);
    if (srv->daemon) MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    if (live > 0) return false; /* their threads write to the store until the process ends; the lock stays too */
    server_close(srv);
    return true;
}
