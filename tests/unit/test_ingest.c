/* test_ingest.c — the pieces of `ingest` below the command: documents of a
 * text (textsplit), JSONL records with their loss masks and the chat
 * template, CSV parsing and its three row rules, the limits and error
 * messages, and manifest.json written and read back (streamed: missing,
 * mistyped and duplicate arrays, another version, counts that would wrap when
 * added, many entries in any field order). The builtin:bytes
 * vocabulary makes ids easy to spell: byte b is id b + 3, and every encoded
 * text starts with the dummy-prefix space (id 35). */
#include "testutil.h"

#include "manifest.h"
#include "records.h"
#include "textsplit.h"
#include "tokenizer.h"

/* tokenizer.bin's control ids (llama2.c fixes them; Tokenizer.bos_id / eos_id say so at run time) */
#define TOKEN_BOS 1
#define TOKEN_EOS 2

static Tokenizer tok;
static const ChatTemplate LLAMA2 = {.kind = CHAT_LLAMA2};

static int setup(void **state) {
    (void)state;
    NfError err;
    return tokenizer_load(&tok, TOKENIZER_BUILTIN_BYTES, &err);
}

static int teardown(void **state) {
    (void)state;
    tokenizer_free(&tok);
    return 0;
}

/* A document rendered as text: '{' where counted ids start, '[' where masked
 * ones start, <s> and </s> for BOS and EOS, the dummy-prefix space as '_'. */
static void render(const Document *d, char *out, size_t cap) {
    size_t o = 0;
    int state = -1;
    for (size_t i = 0; i < d->ids.len && o + 8 < cap; i++) {
        if (d->mask[i] != state) {
            out[o++] = d->mask[i] ? '{' : '[';
            state = d->mask[i];
        }
        int id = d->ids.ids[i];
        bool prefix =
            i > 0 && id == 35 && (d->ids.ids[i - 1] == TOKEN_BOS || i == 1 || (i > 0 && d->mask[i] != d->mask[i - 1]));
        if (id == TOKEN_BOS)
            o += (size_t)snprintf(out + o, cap - o, "<s>");
        else if (id == TOKEN_EOS)
            o += (size_t)snprintf(out + o, cap - o, "</s>");
        else if (prefix)
            out[o++] = '_';
        else
            out[o++] = (char)(id - 3);
    }
    out[o] = '\0';
}

typedef struct {
    char text[16][512];
    uint64_t masked[16];
    int n;
} Collected;

static int collect(void *ctx, const Document *d, NfError *err) {
    (void)err;
    Collected *c = ctx;
    if (c->n < 16) {
        render(d, c->text[c->n], sizeof c->text[0]);
        c->masked[c->n] = d->masked;
    }
    c->n++;
    return 0;
}

static int read_all(SourceKind kind, const char *data, Collected *c, NfError *err) {
    memset(c, 0, sizeof *c);
    return records_read(kind, "f", data, strlen(data), &(RecordsOptions){&tok, &LLAMA2, TEXT_SPLIT_EOT, false}, collect,
                        c, err);
}

static void test_source_kinds_by_extension(void **state) {
    (void)state;
    assert_int_equal(source_kind("a/b.txt"), SOURCE_TEXT);
    assert_int_equal(source_kind("README.MD"), SOURCE_TEXT);
    assert_int_equal(source_kind("x.csv"), SOURCE_CSV);
    assert_int_equal(source_kind("chat.JSONL"), SOURCE_JSONL);
    assert_int_equal(source_kind("img.png"), SOURCE_UNSUPPORTED);
    assert_int_equal(source_kind("x.json"), SOURCE_UNSUPPORTED);
    assert_int_equal(source_kind("txt"), SOURCE_UNSUPPORTED);
    assert_int_equal(source_kind("dir.txt/file"), SOURCE_UNSUPPORTED);
}

static void test_text_documents_split_like_tokenize(void **state) {
    (void)state;
    Collected c;
    NfError err;
    assert_int_equal(read_all(SOURCE_TEXT, "  ab \n<|endoftext|>\n\n  \n<|endoftext|> \ncd\nef\n", &c, &err), 0);
    assert_int_equal(c.n, 2); /* the empty document between the markers is skipped */
    assert_string_equal(c.text[0], "{<s>_ab");
    assert_string_equal(c.text[1], "{<s>_cd\nef");
    assert_int_equal(c.masked[0], 0);
}

typedef struct {
    size_t lines[8];
    int n;
} Lines;

static int note_line(void *ctx, const char *doc, size_t len, size_t line, NfError *err) {
    (void)doc, (void)len, (void)err;
    Lines *l = ctx;
    l->lines[l->n++] = line;
    return 0;
}

static void test_text_split_reports_document_lines(void **state) {
    (void)state;
    const char *text = "a\n\n\nb\nc\n\n  \n d";
    Lines l = {0};
    NfError err;
    assert_int_equal(text_split(text, strlen(text), TEXT_SPLIT_BLANK, note_line, &l, &err), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.lines[0], 1);
    assert_int_equal(l.lines[1], 4);
    assert_int_equal(l.lines[2], 8);
    TextSplit s;
    assert_int_equal(text_split_parse("blank", &s), 0);
    assert_int_equal(s, TEXT_SPLIT_BLANK);
    assert_int_equal(text_split_parse("lines", &s), -1);
}

static void test_jsonl_records_and_their_masks(void **state) {
    (void)state;
    Collected c;
    NfError err;
    const char *data = "\xEF\xBB\xBF{\"text\": \"  hi \"}\r\n"
                       "\n"
                       "   \n"
                       "{\"prompt\": \"Q\", \"completion\": \"A\", \"id\": 7}\n"
                       "{\"text\": \" \"}\n"
                       "{\"prompt\": \"\", \"completion\": \"\"}\n";
    assert_int_equal(read_all(SOURCE_JSONL, data, &c, &err), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.text[0], "{<s>_hi");
    assert_string_equal(c.text[1], "[<s>_Q{_A</s>");
    assert_int_equal(c.masked[1], 3); /* BOS, the dummy-prefix space, Q */
    assert_string_equal(c.text[2], "[<s>{</s>");
}

static void test_chat_template(void **state) {
    (void)state;
    Collected c;
    NfError err;
    const char *data =
        "{\"messages\": [{\"role\": \"system\", \"content\": \" Be brief. \"}, {\"role\": \"user\", \"content\": "
        "\"Hi\"},"
        " {\"role\": \"assistant\", \"content\": \"Hello\\n\"}, {\"role\": \"user\", \"content\": \"Bye\"},"
        " {\"role\": \"assistant\", \"content\": \"Ciao\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n";
    assert_int_equal(read_all(SOURCE_JSONL, data, &c, &err), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.text[0], "[<s>_[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]{_Hello</s>"
                                   "[<s>_[INST] Bye [/INST]{_Ciao</s>");
    assert_string_equal(c.text[1], "[<s>_[INST] x [/INST]{_y</s>");
}

/* The exact ids: the prompt and the answer are encoded separately. */
static void test_chat_ids_are_the_separate_encodings(void **state) {
    (void)state;
    Document d = {0};
    NfError err;
    const char *rec =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}";
    assert_int_equal(record_from_json(&(RecordsOptions){.tok = &tok, .chat = &LLAMA2}, rec, strlen(rec), &d, &err), 1);
    TokenList want = {0};
    assert_int_equal(tokenizer_encode(&tok, "[INST] u [/INST]", 16, TOKENIZE_BOS, &want, &err), 0);
    assert_int_equal(tokenizer_encode(&tok, "a", 1, TOKENIZE_EOS, &want, &err), 0);
    assert_int_equal(d.ids.len, want.len);
    assert_memory_equal(d.ids.ids, want.ids, want.len * sizeof(int));
    assert_int_equal(d.masked, 18); /* BOS, the dummy-prefix space and the 16 bytes of the prompt */
    token_list_free(&want);
    document_free(&d);
}

static void expect_jsonl_error(const char *data, const char *mention) {
    Collected c;
    NfError err = {0};
    assert_int_equal(read_all(SOURCE_JSONL, data, &c, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    if (!strstr(err.message, mention)) fail_msg("error '%s' does not mention '%s'", err.message, mention);
}

static void test_jsonl_errors_name_file_and_line(void **state) {
    (void)state;
    expect_jsonl_error("{\"text\": \"a\"}\n{\"text\": \"b\"\n", "f line 2: invalid JSON");
    expect_jsonl_error("\n\n[1, 2]\n", "f line 3: a record is a JSON object");
    expect_jsonl_error("{\"prompt\": \"p\"}\n", "f line 1: the record has \"prompt\" but no \"completion\"");
    expect_jsonl_error("{\"completion\": \"c\"}\n", "no \"prompt\"");
    expect_jsonl_error("{\"prompt\": \"p\", \"completion\": 3}\n", "\"completion\" is not a string");
    expect_jsonl_error("{\"text\": [\"a\"]}\n", "\"text\" is not a string");
    expect_jsonl_error("{\"title\": \"a\"}\n", "none of \"text\"");
    expect_jsonl_error("{\"text\": \"a\", \"messages\": []}\n", "mixes");
    expect_jsonl_error("{\"messages\": {}}\n", "\"messages\" is not an array");
    expect_jsonl_error("{\"messages\": []}\n", "no user and assistant messages");
    expect_jsonl_error("{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}]}\n", "ends with the assistant");
    expect_jsonl_error("{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n",
                       "message 1 has role \"assistant\"");
    expect_jsonl_error(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"user\", \"content\": \"v\"}]}",
        "message 2 has role \"user\" where \"assistant\"");
    expect_jsonl_error("{\"messages\": [{\"role\": \"bot\", \"content\": \"u\"}]}",
                       "roles are system, user and assistant");
    expect_jsonl_error("{\"messages\": [{\"role\": \"user\"}]}", "message 1 has no \"content\"");
    expect_jsonl_error(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"assistant\", \"content\": "
        "\"a\"}, {\"role\": \"system\", \"content\": \"s\"}]}",
        "message 3 has role \"system\"");
}

static void test_jsonl_line_longer_than_a_record_is_refused(void **state) {
    (void)state;
    size_t n = RECORD_MAX_BYTES + 100;
    char *data = malloc(n + 1);
    memset(data, ' ', n);
    memcpy(data, "{\"text\": \"", 10);
    data[n - 2] = '"';
    data[n - 1] = '}';
    data[n] = '\0';
    Collected c;
    NfError err = {0};
    memset(&c, 0, sizeof c);
    assert_int_equal(records_read(SOURCE_JSONL, "big.jsonl", data, n,
                                  &(RecordsOptions){&tok, &LLAMA2, TEXT_SPLIT_EOT, false}, collect, &c, &err),
                     -1);
    assert_non_null(strstr(err.message, "big.jsonl line 1: the line has"));
    free(data);
}

static void test_jsonl_nul_in_a_string_is_kept(void **state) {
    (void)state;
    Document d = {0};
    NfError err;
    const char *rec = "{\"text\": \"a\\u0000b\"}";
    assert_int_equal(record_from_json(&(RecordsOptions){.tok = &tok, .chat = &LLAMA2}, rec, strlen(rec), &d, &err), 1);
    int want[] = {TOKEN_BOS, 35, 'a' + 3, 3, 'b' + 3};
    assert_int_equal(d.ids.len, 5);
    assert_memory_equal(d.ids.ids, want, sizeof want);
    document_free(&d);
}

static void test_csv_text_column(void **state) {
    (void)state;
    Collected c;
    NfError err;
    const char *data = "id,Text ,note\r\n1,\"a, \"\"b\"\"\nc\",x\r\n\r\n2,  ,y\n3,d,\n";
    assert_int_equal(read_all(SOURCE_CSV, data, &c, &err), 0);
    assert_int_equal(c.n, 2); /* the empty line and the row with a blank text are skipped */
    assert_string_equal(c.text[0], "{<s>_a, \"b\"\nc");
    assert_string_equal(c.text[1], "{<s>_d");
}

static void test_csv_prompt_completion_columns(void **state) {
    (void)state;
    Collected c;
    NfError err;
    assert_int_equal(read_all(SOURCE_CSV, "completion,prompt\nA,Q\n", &c, &err), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.text[0], "[<s>_Q{_A</s>");
}

static void test_csv_other_columns_become_name_value_lines(void **state) {
    (void)state;
    Collected c;
    NfError err;
    assert_int_equal(read_all(SOURCE_CSV, "name,age\nAnn,5\n\"B\",\"\"", &c, &err), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.text[0], "{<s>_name: Ann\nage: 5");
    assert_string_equal(c.text[1], "{<s>_name: B\nage:");
    assert_int_equal(read_all(SOURCE_CSV, "", &c, &err), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(read_all(SOURCE_CSV, "text\n", &c, &err), 0);
    assert_int_equal(c.n, 0);
}

static void expect_csv_error(const char *data, const char *mention) {
    Collected c;
    NfError err = {0};
    assert_int_equal(read_all(SOURCE_CSV, data, &c, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    if (!strstr(err.message, mention)) fail_msg("error '%s' does not mention '%s'", err.message, mention);
}

static void test_csv_errors_name_file_and_line(void **state) {
    (void)state;
    expect_csv_error("a,b\n1,2\n3\n", "f line 3: the row has 1 fields; the header has 2");
    expect_csv_error("text\n\"ok\"\n\"open\n\nstill open", "f line 3: a quoted field is not closed");
    expect_csv_error("text\n\"a\"b\n", "f line 2: text after the closing quote");
}

static void test_manifest_round_trip_and_checks(void **state) {
    (void)state;
    char dir[512];
    temp_template(dir, sizeof dir, "nf_manifest");
    assert_non_null(mkdtemp(dir));
    ManifestShard shards[2] = {{"shard_000003_00000.bin", "shard_000003_00000.mask", 10, 4},
                               {"shard_000003_00001.bin", NULL, 5, 0}};
    ManifestSource sources[2] = {{"a/x.jsonl", 100, 0xfedcba9876543210ull, 2, 9, 4, 0, 0},
                                 {"b.txt", 7, 1, 1, 6, 0, 0, 9}};
    Manifest m = {.generation = 3,
                  .tokenizer = "tok \"512\".bin",
                  .tokenizer_hash = 42,
                  .vocab_size = 512,
                  .token_width = 2,
                  .split = TEXT_SPLIT_BLANK,
                  .max_shard_mb = 1,
                  .documents = 3,
                  .tokens = 15,
                  .masked_tokens = 4,
                  .shards = shards,
                  .n_shards = 2,
                  .sources = sources,
                  .n_sources = 2};
    NfError err;
    assert_false(manifest_exists(dir));
    assert_int_equal(manifest_save(dir, &m, &err), 0);
    assert_true(manifest_exists(dir));
    Manifest r;
    assert_int_equal(manifest_load(dir, &r, &err), 0);
    assert_int_equal(r.generation, 3);
    assert_int_equal(r.version, MANIFEST_VERSION);
    assert_int_equal(r.token_width, 2);
    assert_false(r.token_legacy);
    assert_string_equal(r.tokenizer, "tok \"512\".bin");
    assert_int_equal(r.tokenizer_hash, 42);
    assert_int_equal(r.split, TEXT_SPLIT_BLANK);
    assert_int_equal(r.n_shards, 2);
    assert_string_equal(r.shards[0].mask, "shard_000003_00000.mask");
    assert_null(r.shards[1].mask);
    assert_int_equal(r.n_sources, 2);
    assert_int_equal(r.sources[0].hash, 0xfedcba9876543210ull);
    assert_int_equal(r.sources[1].offset, 9);
    manifest_free(&r);

    /* a manifest whose shard leaves the directory, or whose totals do not add up, is refused */
    shards[1].file = "../etc/passwd";
    assert_int_equal(manifest_save(dir, &m, &err), 0);
    assert_int_equal(manifest_load(dir, &r, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    assert_non_null(strstr(err.message, "leaves the directory"));
    shards[1].file = "shard_000003_00001.bin";
    m.tokens = 16;
    assert_int_equal(manifest_save(dir, &m, &err), 0);
    assert_int_equal(manifest_load(dir, &r, &err), -1);
    assert_non_null(strstr(err.message, "do not add up"));
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"format\": \"neuralforge-ingest\", \"version\": 3}", f);
    fclose(f);
    assert_int_equal(manifest_load(dir, &r, &err), -1);
    assert_non_null(strstr(err.message, "version 3"));
    unlink(path);
    rmdir(dir);
}

/* Writes text as DIR/manifest.json, loads it, and expects a bad_data error mentioning want. */
static void expect_manifest_error(const char *dir, const char *text, const char *want) {
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    Manifest m;
    NfError err = {0};
    if (manifest_load(dir, &m, &err) == 0) fail_msg("manifest accepted: %s", text);
    assert_string_equal(err.code, NF_ERR_DATA);
    if (!strstr(err.message, want)) fail_msg("error '%s' does not mention '%s'", err.message, want);
    assert_null(m.shards); /* freed */
    assert_int_equal(m.n_shards, 0);
    unlink(path);
}

#define MANIFEST_HEAD                                                                                 \
    "{\"format\": \"neuralforge-ingest\", \"version\": 1, \"generation\": 1,"                         \
    " \"tokenizer\": {\"path\": \"t\", \"hash\": \"fnv1a64:0000000000000001\", \"vocab_size\": 512}," \
    " \"split\": \"eot\", \"max_shard_mb\": 1, \"documents\": 0, \"tokens\": 0, \"masked_tokens\": 0"
#define MANIFEST_HEAD_V2(vocab, width)                                                                           \
    "{\"format\": \"neuralforge-ingest\", \"version\": 2, \"generation\": 1,"                                    \
    " \"tokenizer\": {\"path\": \"t\", \"hash\": \"fnv1a64:0000000000000001\", \"vocab_size\": " vocab "}" width \
    ", \"split\": \"eot\", \"max_shard_mb\": 1, \"documents\": 0, \"tokens\": 0, \"masked_tokens\": 0"
#define SHARD_OF(tokens) "{\"file\": \"s%d.bin\", \"mask\": null, \"tokens\": " tokens ", \"masked_tokens\": 0}"

/* The checks of the streamed reader (shards and sources come one element at a time). */
static void test_manifest_streamed_checks(void **state) {
    (void)state;
    char dir[512];
    temp_template(dir, sizeof dir, "nf_manifest");
    assert_non_null(mkdtemp(dir));
    /* the arrays must be there, and be arrays */
    expect_manifest_error(dir, MANIFEST_HEAD ", \"sources\": []}", "missing or mistyped field \"shards\"");
    expect_manifest_error(dir, MANIFEST_HEAD ", \"shards\": {}, \"sources\": []}",
                          "missing or mistyped field \"shards\"");
    expect_manifest_error(dir, MANIFEST_HEAD ", \"shards\": []}", "missing or mistyped field \"sources\"");
    expect_manifest_error(dir, MANIFEST_HEAD ", \"shards\": [], \"sources\": [1]}", "a source is not an object");
    expect_manifest_error(dir, MANIFEST_HEAD ", \"shards\": [], \"shards\": [], \"sources\": []}",
                          "duplicate object key");
    /* malformed JSON: named as the manifest's, with the offset */
    char want[64];
    snprintf(want, sizeof want, "invalid JSON at byte %zu: unexpected token near '}'", /* just after the '}' */
             sizeof(MANIFEST_HEAD ", \"shards\": [}") - 1);
    expect_manifest_error(dir, MANIFEST_HEAD ", \"shards\": [}", want);
    expect_manifest_error(dir, "[]", "invalid JSON at byte 0: '{' expected");
    /* another version is named as such even when its shards would not read as this version's */
    expect_manifest_error(dir, "{\"format\": \"neuralforge-ingest\", \"version\": 3, \"shards\": [{\"v3\": 1}]}",
                          "has version 3");
    /* version 2 lists its shards' token width, and 2-byte ids cannot address more than 65536 pieces */
    expect_manifest_error(dir, MANIFEST_HEAD_V2("512", "") ", \"shards\": [], \"sources\": []}",
                          "missing or mistyped field \"token_width\"");
    expect_manifest_error(dir, MANIFEST_HEAD_V2("512", ", \"token_width\": 3") ", \"shards\": [], \"sources\": []}",
                          "token_width is not 2 or 4");
    expect_manifest_error(dir, MANIFEST_HEAD_V2("100000", ", \"token_width\": 2") ", \"shards\": [], \"sources\": []}",
                          "token_width is 2 but the vocab_size is past 65536");
    /* counts that wrap around uint64 when added up: 256 shards of 2^56 tokens are not 0 tokens in all */
    size_t cap = 256 * 100 + 1024, o = 0;
    char *text = malloc(cap);
    o += (size_t)snprintf(text + o, cap - o, "%s, \"shards\": [", MANIFEST_HEAD);
    for (int i = 0; i < 256; i++)
        o += (size_t)snprintf(text + o, cap - o, SHARD_OF("72057594037927936") "%s", i, i < 255 ? ", " : "");
    assert_true(o + 32 < cap);
    snprintf(text + o, cap - o, "], \"sources\": []}");
    expect_manifest_error(dir, text, "the shards' token counts do not add up to the totals");
    free(text);
    /* and a valid one of many shards and sources, whose arrays grow as they come */
    cap = 3000 * 300 + 1024, o = 0;
    text = malloc(cap);
    o += (size_t)snprintf(text + o, cap - o, "{\"shards\": [");
    for (int i = 0; i < 3000; i++) o += (size_t)snprintf(text + o, cap - o, "%s" SHARD_OF("2"), i ? "," : "", i);
    o += (size_t)snprintf(text + o, cap - o, "], \"sources\": [");
    for (int i = 0; i < 3000; i++)
        o += (size_t)snprintf(text + o, cap - o,
                              "%s{\"path\": \"f%05d\", \"bytes\": 1, \"hash\": \"fnv1a64:0000000000000002\", "
                              "\"documents\": 1, \"tokens\": 2, \"masked_tokens\": 0, \"shard\": %d, \"offset\": 0}",
                              i ? "," : "", i, i);
    assert_true(o + 512 < cap);
    /* the header last: a hand-written manifest may order its fields as it likes */
    snprintf(text + o, cap - o,
             "], \"format\": \"neuralforge-ingest\", \"version\": 1, \"generation\": 1,"
             " \"tokenizer\": {\"path\": \"t\", \"hash\": \"fnv1a64:0000000000000001\", \"vocab_size\": 512},"
             " \"split\": \"eot\", \"max_shard_mb\": 1, \"documents\": 3000, \"tokens\": 6000, \"masked_tokens\": 0}");
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    Manifest m;
    NfError err;
    if (manifest_load(dir, &m, &err) != 0) fail_msg("%s", err.message);
    assert_int_equal(m.n_shards, 3000);
    assert_int_equal(m.n_sources, 3000);
    assert_string_equal(m.shards[2999].file, "s2999.bin");
    assert_string_equal(m.sources[1234].path, "f01234");
    assert_int_equal(m.sources[2999].shard, 2999);
    assert_int_equal(m.tokens, 6000);
    manifest_free(&m);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_kinds_by_extension),
        cmocka_unit_test(test_text_documents_split_like_tokenize),
        cmocka_unit_test(test_text_split_reports_document_lines),
        cmocka_unit_test(test_jsonl_records_and_their_masks),
        cmocka_unit_test(test_chat_template),
        cmocka_unit_test(test_chat_ids_are_the_separate_encodings),
        cmocka_unit_test(test_jsonl_errors_name_file_and_line),
        cmocka_unit_test(test_jsonl_line_longer_than_a_record_is_refused),
        cmocka_unit_test(test_jsonl_nul_in_a_string_is_kept),
        cmocka_unit_test(test_csv_text_column),
        cmocka_unit_test(test_csv_prompt_completion_columns),
        cmocka_unit_test(test_csv_other_columns_become_name_value_lines),
        cmocka_unit_test(test_csv_errors_name_file_and_line),
        cmocka_unit_test(test_manifest_round_trip_and_checks),
        cmocka_unit_test(test_manifest_streamed_checks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
