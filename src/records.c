/* records.c — source files (.txt, .md, .jsonl, .csv) to documents with loss masks. */
#include "records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_parse.h"
#include "util.h"

SourceKind source_kind(const char *path) {
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash) || dot == path || (slash && dot == slash + 1)) return SOURCE_UNSUPPORTED;
    char ext[8];
    size_t n = strlen(dot + 1);
    if (n == 0 || n >= sizeof ext) return SOURCE_UNSUPPORTED;
    /* the terminator written apart: with it in the loop, gcc 12's aarch64 vectorizer warned of a write past ext */
    for (size_t i = 0; i < n; i++) {
        char c = dot[1 + i];
        ext[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    ext[n] = '\0';
    if (strcmp(ext, "txt") == 0 || strcmp(ext, "md") == 0) return SOURCE_TEXT;
    if (strcmp(ext, "csv") == 0) return SOURCE_CSV;
    if (strcmp(ext, "jsonl") == 0) return SOURCE_JSONL;
    return SOURCE_UNSUPPORTED;
}

/* ---- documents ------------------------------------------------------------ */

/* The tokenizer's API is used in this function, special_id and piece_bytes only. */

/* The ids of text[0..n), no BOS/EOS; special tokens spelled in it are their ids only when `specials`. */
static int encode_text(const Tokenizer *t, const char *text, size_t n, bool specials, TokenList *out, NfError *err) {
    return tokenizer_encode(t, text, n, specials ? TOKENIZE_PARSE_SPECIAL : 0, out, err);
}

static void document_reset(Document *d) {
    d->ids.len = 0;
    d->masked = 0;
}

void document_free(Document *d) {
    token_list_free(&d->ids);
    free(d->mask);
    memset(d, 0, sizeof *d);
}

/* Marks ids [from, ids.len) counted or not. */
static int mark(Document *d, size_t from, bool counted, NfError *err) {
    if (!nf_grow((void **)&d->mask, &d->mask_cap, d->ids.len, 1, 256))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    memset(d->mask + from, counted ? 1 : 0, d->ids.len - from);
    if (!counted) d->masked += d->ids.len - from;
    return 0;
}

/* Appends one id. */
static int document_add_token(Document *d, int id, bool counted, NfError *err) {
    size_t from = d->ids.len;
    if (token_list_push(&d->ids, id, err) != 0) return -1;
    return mark(d, from, counted, err);
}

/* Appends one control id; nothing when the tokenizer has none (id -1). */
static int document_add_control(Document *d, int id, bool counted, NfError *err) {
    return id < 0 ? 0 : document_add_token(d, id, counted, err);
}

/* Appends the ids of text[0..n) (no BOS/EOS; nothing when n is 0); special tokens spelled in it are
 * control ids only when `specials` (texts: when the command was given --parse-special). */
static int document_add_text(Document *d, const Tokenizer *t, const char *text, size_t n, bool counted, bool specials,
                             NfError *err) {
    size_t from = d->ids.len;
    if (encode_text(t, text, n, specials, &d->ids, err) != 0) return -1;
    return mark(d, from, counted, err);
}

/* A text document: BOS and the text (and EOS), as the tokenizer's add_bos / add_eos say, every id counted. */
static int text_document(Document *d, const RecordsOptions *o, const char *text, size_t n, NfError *err) {
    const Tokenizer *t = o->tok;
    document_reset(d);
    if (t->add_bos && document_add_control(d, t->bos_id, true, err) != 0) return -1;
    if (document_add_text(d, t, text, n, true, o->parse_special, err) != 0) return -1;
    return t->add_eos ? document_add_control(d, t->eos_id, true, err) : 0;
}

/* A prompt (masked, with the BOS before it) and its answer (counted, with the EOS after it), appended. */
static int add_turn(Document *d, const RecordsOptions *o, const char *prompt, size_t prompt_len, const char *answer,
                    size_t answer_len, NfError *err) {
    const Tokenizer *t = o->tok;
    if ((t->add_bos && document_add_control(d, t->bos_id, false, err) != 0) ||
        document_add_text(d, t, prompt, prompt_len, false, o->parse_special, err) != 0 ||
        document_add_text(d, t, answer, answer_len, true, o->parse_special, err) != 0)
        return -1;
    return document_add_control(d, t->eos_id, true, err);
}

/* ---- JSONL ---------------------------------------------------------------- */

/* s[0..n) stripped of surrounding ASCII whitespace. */
static const char *stripped(const char *s, size_t n, size_t *len) {
    size_t b = 0, e = n;
    text_strip(s, &b, &e);
    *len = e - b;
    return s + b;
}

/* A growable byte buffer (chat prompts, CSV rows). */
typedef struct {
    char *data;
    size_t len, cap;
} Bytes;

static int bytes_add(Bytes *b, const char *s, size_t n, NfError *err) {
    if (!nf_grow((void **)&b->data, &b->cap, b->len + n + 1, 1, 256))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* ---- chats ---------------------------------------------------------------- */

/* The id of the special token spelled s[0..n) (a tokenizer.bin piece, or what that spelling parses to as
 * one special token), or -1 with err set naming the template that needs it. */
static int special_id(const Tokenizer *t, const char *s, size_t n, ChatKind kind, NfError *err) {
    int id = tokenizer_find(t, s, n);
    if (id < 0 && t->hf) {
        TokenList one = {0};
        if (encode_text(t, s, n, true, &one, err) != 0) return -1;
        if (one.len == 1) id = one.ids[0];
        token_list_free(&one);
    }
    if (id < 0)
        nf_fail(err, NF_ERR_TOKENIZER, "the tokenizer has no %.*s token, which chat template %s needs", (int)n, s,
                chat_kind_name(kind));
    return id;
}

/* The bytes of each id in ids[from..len) as it follows the one before (-1 for the first): their lengths. */
static size_t piece_bytes(const Tokenizer *t, const TokenList *ids, size_t from, size_t i) {
    unsigned char byte;
    size_t len;
    tokenizer_decode_piece(t, i > from ? ids->ids[i - 1] : -1, ids->ids[i], &len, &byte);
    return len;
}

/* Whether bytes [b, e) of the render overlap a trained text part of parts[first..last]. */
static bool overlaps_trained(const ChatRender *r, size_t first, size_t last, size_t b, size_t e) {
    for (size_t k = first; k <= last; k++) {
        const ChatPart *p = &r->parts[k];
        if (p->trained && p->len > 0 && b < p->start + p->len && p->start < e) return true;
    }
    return false;
}

/* Text parts first..last, which lie back to back in r->text, encoded as one
 * stretch; a token is trained when any of its bytes is in a trained part (so
 * a token that straddles template text and an answer is trained: every
 * byte of an answer is a target). A stretch that is all trained or all
 * masked needs no byte ranges. */
static int add_stretch(Document *d, const Tokenizer *t, const ChatRender *r, size_t first, size_t last, NfError *err) {
    size_t b = r->parts[first].start, e = r->parts[last].start + r->parts[last].len, from = d->ids.len;
    bool mixed = false;
    for (size_t k = first + 1; k <= last; k++) mixed |= r->parts[k].trained != r->parts[first].trained;
    if (!mixed) return document_add_text(d, t, r->text + b, e - b, r->parts[first].trained, false, err);
    if (encode_text(t, r->text + b, e - b, false, &d->ids, err) != 0) return -1;
    if (!nf_grow((void **)&d->mask, &d->mask_cap, d->ids.len, 1, 256))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    /* the pieces must spell the stretch, or the mask would be misplaced; bytes beyond it can only be a prefix
     * the tokenizer adds (a dummy-prefix space its decoder keeps), so the ranges start that much earlier */
    size_t total = 0;
    for (size_t i = from; i < d->ids.len; i++) total += piece_bytes(t, &d->ids, from, i);
    if (total < e - b)
        return nf_fail(err, NF_ERR_TOKENIZER, "the tokens of a chat's text do not spell it (%zu bytes of %zu)", total,
                       e - b);
    size_t pos = b; /* where the next piece starts, counted from b - (total - (e - b)) */
    for (size_t i = from, skip = total - (e - b); i < d->ids.len; i++) {
        size_t len = piece_bytes(t, &d->ids, from, i), in = len < skip ? len : skip; /* bytes of the prefix */
        skip -= in;
        bool trained = overlaps_trained(r, first, last, pos, pos + (len - in ? len - in : 1));
        d->mask[i] = trained;
        d->masked += !trained;
        pos += len - in;
    }
    return 0;
}

int document_from_chat(const Tokenizer *t, ChatKind kind, const ChatRender *r, Document *d, NfError *err) {
    document_reset(d);
    for (size_t k = 0; k < r->n; k++) {
        const ChatPart *p = &r->parts[k];
        if (p->kind == PART_BOS || p->kind == PART_EOS) { /* the template's, whatever add_bos / add_eos say */
            if (document_add_control(d, p->kind == PART_BOS ? t->bos_id : t->eos_id, p->trained, err) != 0) return -1;
            continue;
        }
        if (p->kind == PART_SPECIAL) {
            int id = special_id(t, r->text + p->start, p->len, kind, err);
            if (id < 0 || document_add_token(d, id, p->trained, err) != 0) return -1;
            continue;
        }
        size_t last = k;
        while (last + 1 < r->n && r->parts[last + 1].kind == PART_TEXT && !r->parts[last + 1].fresh) last++;
        if (add_stretch(d, t, r, k, last, err) != 0) return -1;
        k = last;
    }
    return 0;
}

/* {"messages": [...]}: the chat through the run's template (chat_template.h). */
static int chat_document(const Tokenizer *t, const ChatTemplate *chat, const JsonValue *messages, Document *d,
                         NfError *err) {
    if (chat->kind == CHAT_NONE && messages->type == JV_ARRAY) return nf_fail(err, NF_ERR_DATA, "%s", chat->refusal);
    ChatMessage *m = NULL, *with_system = NULL;
    const ChatMessage *chat_m = NULL;
    int n = 0, rc = chat_messages_from_json(messages, &m, &n, err);
    if (rc == 0) rc = chat_with_default_system(chat, m, &n, &chat_m, &with_system, err);
    ChatRender r = {0};
    if (rc == 0 && chat_render(chat->kind, chat_m, n, &r, err) != 0) rc = -1;
    if (rc == 0) rc = document_from_chat(t, chat->kind, &r, d, err);
    chat_render_free(&r);
    free(with_system);
    free(m);
    return rc;
}

static const JsonValue *string_field(const JsonValue *obj, const char *key, NfError *err) {
    const JsonValue *v = json_get(obj, key);
    if (!v) {
        nf_fail(err, NF_ERR_DATA, "the record has \"%s\" but no \"%s\"",
                strcmp(key, "prompt") == 0 ? "completion" : "prompt", key);
        return NULL;
    }
    if (v->type != JV_STRING) {
        nf_fail(err, NF_ERR_DATA, "\"%s\" is not a string", key);
        return NULL;
    }
    return v;
}

int record_from_json(const RecordsOptions *o, const char *line, size_t len, Document *d, NfError *err) {
    document_reset(d);
    JsonValue v = {0};
    if (json_parse(line, len, &v, err) != 0) {
        err->code = NF_ERR_DATA;
        return -1;
    }
    int rc = -1;
    const JsonValue *text = json_get(&v, "text"), *prompt = json_get(&v, "prompt"),
                    *completion = json_get(&v, "completion"), *messages = json_get(&v, "messages");
    int kinds = (text != NULL) + (prompt || completion) + (messages != NULL);
    if (v.type != JV_OBJECT) {
        nf_fail(err, NF_ERR_DATA, "a record is a JSON object");
    } else if (kinds == 0) {
        nf_fail(err, NF_ERR_DATA, "the record has none of \"text\", \"prompt\"/\"completion\" and \"messages\"");
    } else if (kinds > 1) {
        nf_fail(err, NF_ERR_DATA, "the record mixes %s",
                text && messages ? "\"text\" and \"messages\""
                : text           ? "\"text\" and \"prompt\"/\"completion\""
                                 : "\"prompt\"/\"completion\" and \"messages\"");
    } else if (text) {
        size_t n;
        const char *s = text->type == JV_STRING ? stripped(text->text, text->len, &n) : NULL;
        if (!s)
            nf_fail(err, NF_ERR_DATA, "\"text\" is not a string");
        else if (n == 0)
            rc = 0;
        else
            rc = text_document(d, o, s, n, err) == 0 ? 1 : -1;
    } else if (messages) {
        rc = chat_document(o->tok, o->chat, messages, d, err) == 0 ? 1 : -1;
    } else {
        const JsonValue *p = string_field(&v, "prompt", err), *c = p ? string_field(&v, "completion", err) : NULL;
        if (p && c) rc = add_turn(d, o, p->text, p->len, c->text, c->len, err) == 0 ? 1 : -1;
    }
    json_value_free(&v);
    return rc;
}

/* Prefixes err's message with "PATH line N: ". */
static int located(NfError *err, const char *path, size_t line) {
    return nf_prefix(err, NULL, "%s line %zu: ", path, line);
}

static size_t skip_bom(const char *data, size_t size) {
    return size >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
}

static int read_jsonl(const char *path, const char *data, size_t size, const RecordsOptions *o, DocumentFn fn,
                      void *ctx, NfError *err) {
    Document d = {0};
    int rc = 0;
    size_t pos = skip_bom(data, size), line = 1;
    for (; rc == 0 && pos < size; line++) {
        const char *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size, len = end - pos;
        if (len > 0 && data[end - 1] == '\r') len--;
        size_t b = 0, e = len;
        text_strip(data + pos, &b, &e);
        if (len > RECORD_MAX_BYTES) {
            rc = nf_fail(err, NF_ERR_DATA, "%s line %zu: the line has %zu bytes; a record may have up to %zu", path,
                         line, len, RECORD_MAX_BYTES);
        } else if (b < e) {
            int made = record_from_json(o, data + pos, len, &d, err);
            if (made < 0)
                rc = located(err, path, line);
            else if (made > 0)
                rc = fn(ctx, &d, err);
        }
        pos = nl ? end + 1 : size;
    }
    document_free(&d);
    return rc;
}

/* ---- CSV ------------------------------------------------------------------ */

typedef struct {
    Bytes text;    /* the unescaped fields, each NUL-terminated, back to back */
    size_t *start; /* (n) offset of each field in text */
    size_t *len;   /* (n) bytes of each field */
    int n;
    size_t cap;
} CsvRecord;

static void csv_free(CsvRecord *r) {
    free(r->text.data);
    free(r->start);
    free(r->len);
}

static int csv_end_field(CsvRecord *r, size_t start, NfError *err) {
    size_t cap = r->cap; /* start and len grow together under one capacity: r->cap moves once both have */
    if (!nf_grow((void **)&r->start, &cap, (size_t)r->n + 1, sizeof *r->start, 16) ||
        !nf_resize((void **)&r->len, cap, sizeof *r->len))
        return nf_fail(err, NF_ERR_MEMORY, "out of memory");
    r->cap = cap;
    r->start[r->n] = start;
    r->len[r->n] = r->text.len - start;
    r->n++;
    return bytes_add(&r->text, "\0", 1, err); /* each field NUL-terminated */
}

/* One record of RFC 4180 CSV from *pos: fields split at ',', records at
 * '\n' or "\r\n"; a field in double quotes may hold ',', newlines and ""
 * (a quote). *line counts the newlines passed. */
static int csv_record(const char *s, size_t size, size_t *pos, size_t *line, CsvRecord *r, NfError *err) {
    size_t first = *pos, first_line = *line;
    r->text.len = 0;
    r->n = 0;
    for (;;) {
        size_t field = r->text.len, run = *pos;
        if (*pos < size && s[*pos] == '"') {
            (*pos)++;
            for (;;) {
                if (*pos >= size)
                    return nf_fail(err, NF_ERR_DATA, "line %zu: a quoted field is not closed", first_line);
                if (*pos - first > RECORD_MAX_BYTES) break;
                char c = s[*pos];
                if (c == '"' && *pos + 1 < size && s[*pos + 1] == '"') {
                    if (bytes_add(&r->text, "\"", 1, err) != 0) return -1;
                    *pos += 2;
                    continue;
                }
                if (c == '"') {
                    (*pos)++;
                    break;
                }
                /* a run of ordinary bytes at once */
                size_t end = *pos + 1;
                while (end < size && s[end] != '"' && end - first <= RECORD_MAX_BYTES) end++;
                for (size_t k = *pos; k < end; k++) *line += s[k] == '\n';
                if (bytes_add(&r->text, s + *pos, end - *pos, err) != 0) return -1;
                *pos = end;
            }
            bool at_end = *pos >= size || s[*pos] == ',' || s[*pos] == '\n' ||
                          (s[*pos] == '\r' && (*pos + 1 >= size || s[*pos + 1] == '\n'));
            if (!at_end && *pos - first <= RECORD_MAX_BYTES)
                return nf_fail(err, NF_ERR_DATA, "line %zu: text after the closing quote of a field", *line);
        } else {
            while (*pos < size && s[*pos] != ',' && s[*pos] != '\n') (*pos)++;
            size_t end = *pos;
            if (end > run && s[end - 1] == '\r' && (end == size || s[end] == '\n')) end--;
            if (*pos - first <= RECORD_MAX_BYTES && bytes_add(&r->text, s + run, end - run, err) != 0) return -1;
        }
        if (*pos - first > RECORD_MAX_BYTES)
            return nf_fail(err, NF_ERR_DATA, "line %zu: the record is longer than %zu bytes, a record's limit",
                           first_line, RECORD_MAX_BYTES);
        if (csv_end_field(r, field, err) != 0) return -1;
        if (*pos < size && s[*pos] == ',') {
            (*pos)++;
            continue;
        }
        if (*pos < size && s[*pos] == '\r') (*pos)++;
        if (*pos < size && s[*pos] == '\n') {
            (*pos)++;
            (*line)++;
        }
        return 0;
    }
}

static const char *csv_field(const CsvRecord *r, int i, size_t *len) {
    *len = r->len[i];
    return r->text.data + r->start[i];
}

/* The column named `name` (case-insensitive, surrounding whitespace ignored), or -1. */
static int csv_column(const CsvRecord *header, const char *name) {
    for (int i = 0; i < header->n; i++) {
        size_t len;
        const char *s = stripped(csv_field(header, i, &len), header->len[i], &len);
        if (len != strlen(name)) continue;
        bool same = true;
        for (size_t k = 0; k < len && same; k++) {
            char c = s[k];
            same = (c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c) == name[k];
        }
        if (same) return i;
    }
    return -1;
}

/* One row's document into d: 1 made, 0 none (an empty text), -1 error. */
static int csv_document(const CsvRecord *header, const CsvRecord *row, int text_col, int prompt_col, int completion_col,
                        const RecordsOptions *o, Bytes *text, Document *d, NfError *err) {
    size_t len, plen, clen;
    document_reset(d);
    if (text_col >= 0) {
        const char *s = csv_field(row, text_col, &len);
        s = stripped(s, len, &len);
        if (len == 0) return 0;
        return text_document(d, o, s, len, err) == 0 ? 1 : -1;
    }
    if (prompt_col >= 0 && completion_col >= 0) {
        const char *p = csv_field(row, prompt_col, &plen), *c = csv_field(row, completion_col, &clen);
        return add_turn(d, o, p, plen, c, clen, err) == 0 ? 1 : -1;
    }
    /* every column as "name: value" lines */
    text->len = 0;
    for (int i = 0; i < header->n; i++) {
        size_t nlen, vlen;
        const char *name = csv_field(header, i, &nlen), *value = csv_field(row, i, &vlen);
        name = stripped(name, nlen, &nlen);
        if ((i > 0 && bytes_add(text, "\n", 1, err) != 0) || bytes_add(text, name, nlen, err) != 0 ||
            bytes_add(text, ": ", 2, err) != 0 || bytes_add(text, value, vlen, err) != 0)
            return -1;
    }
    const char *s = stripped(text->data, text->len, &len);
    if (len == 0) return 0;
    return text_document(d, o, s, len, err) == 0 ? 1 : -1;
}

/* Prefixes err's message ("line N: ...") with the file's path. */
static int in_file(NfError *err, const char *path) { return nf_prefix(err, NULL, "%s ", path); }

static int read_csv(const char *path, const char *data, size_t size, const RecordsOptions *o, DocumentFn fn, void *ctx,
                    NfError *err) {
    CsvRecord header = {0}, row = {0};
    Document d = {0};
    Bytes text = {0};
    size_t pos = skip_bom(data, size), line = 1;
    int rc = 0;
    if (pos < size && csv_record(data, size, &pos, &line, &header, err) != 0) rc = in_file(err, path);
    int text_col = csv_column(&header, "text"), prompt_col = csv_column(&header, "prompt"),
        completion_col = csv_column(&header, "completion");
    while (rc == 0 && pos < size) {
        size_t row_line = line;
        if (csv_record(data, size, &pos, &line, &row, err) != 0) {
            rc = in_file(err, path);
            break;
        }
        if (row.n == 1 && row.len[0] == 0) continue; /* an empty line */
        if (row.n != header.n) {
            rc = nf_fail(err, NF_ERR_DATA, "%s line %zu: the row has %d fields; the header has %d", path, row_line,
                         row.n, header.n);
            break;
        }
        int made = csv_document(&header, &row, text_col, prompt_col, completion_col, o, &text, &d, err);
        if (made < 0)
            rc = located(err, path, row_line);
        else if (made > 0)
            rc = fn(ctx, &d, err);
    }
    document_free(&d);
    free(text.data);
    csv_free(&header);
    csv_free(&row);
    return rc;
}

/* ---- text ----------------------------------------------------------------- */

typedef struct {
    const char *path;
    const RecordsOptions *o;
    Document d;
    DocumentFn fn;
    void *ctx;
} TextReader;

static int text_doc(void *ctx, const char *doc, size_t len, size_t line, NfError *err) {
    TextReader *r = ctx;
    if (len > DOCUMENT_MAX_BYTES)
        return nf_fail(err, NF_ERR_DATA,
                       "%s line %zu: a document of %zu bytes; ingest takes documents of up to %zu (separate them "
                       "with <|endoftext|> lines, or --split blank)",
                       r->path, line, len, DOCUMENT_MAX_BYTES);
    if (text_document(&r->d, r->o, doc, len, err) != 0) return located(err, r->path, line);
    return r->fn(r->ctx, &r->d, err);
}

int records_read(SourceKind kind, const char *path, const char *data, size_t size, const RecordsOptions *o,
                 DocumentFn fn, void *ctx, NfError *err) {
    if (kind == SOURCE_JSONL) return read_jsonl(path, data, size, o, fn, ctx, err);
    if (kind == SOURCE_CSV) return read_csv(path, data, size, o, fn, ctx, err);
    if (kind != SOURCE_TEXT) return nf_fail(err, NF_ERR_DATA, "%s: not a source ingest reads", path);
    TextReader r = {.path = path, .o = o, .fn = fn, .ctx = ctx};
    int rc = text_split(data, size, o->split, text_doc, &r, err);
    document_free(&r.d);
    return rc;
}
