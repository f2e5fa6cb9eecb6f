/* test_tokenfile.c — the token-file header (tokenfile.h): what the writer
 * puts in it for each width, read back by the parser; legacy headerless
 * files; and every way a header can be wrong (truncated, bad magic, another
 * version, width 3, reserved bytes, a count that disagrees with the size,
 * one that would overflow), each a bad_data error. */
#include "testutil.h"

#include "tokenfile.h"

/* Writes ids with a TokenWriter into a fresh temporary path; returns the path. */
static char *write_ids(const int *ids, size_t n, int vocab, bool legacy) {
    char *path = write_temp_file(NULL, 0);
    TokenWriter w;
    NfError err = {0};
    if (token_writer_open(&w, path, vocab, legacy, &err) != 0) fail_msg("%s", err.message);
    /* in two calls: the count adds up across them */
    if (token_writer_put(&w, ids, n / 2, &err) != 0 || token_writer_put(&w, ids + n / 2, n - n / 2, &err) != 0 ||
        token_writer_commit(&w, &err) != 0)
        fail_msg("%s", err.message);
    return path;
}

static void roundtrip(int vocab, bool legacy, int want_width) {
    int ids[5] = {1, 0, vocab - 1, 258, vocab / 2};
    char *path = write_ids(ids, 5, vocab, legacy);
    TokenFile f;
    NfError err = {0};
    if (token_file_open(&f, path, "data", &err) != 0) fail_msg("%s", err.message);
    assert_int_equal(f.view.width, want_width);
    assert_int_equal(f.view.legacy, legacy);
    assert_int_equal(f.view.count, 5);
    assert_int_equal(f.map.size, (legacy ? 0 : TOKEN_FILE_HEADER_BYTES) + 5 * want_width);
    assert_int_equal(f.view.vocab_size, legacy ? 0 : vocab);
    for (int i = 0; i < 5; i++) assert_int_equal(token_id_at(f.view.tokens, f.view.width, i), ids[i]);
    if (!legacy) {
        /* the bytes docs/formats.md lists */
        assert_memory_equal(f.map.data, "\xFF\xFFNFTOK\0", 8);
        assert_int_equal(f.map.data[8], 1);
        assert_int_equal(f.map.data[12], want_width);
        assert_int_equal(f.map.data[16], 5);
    }
    token_file_close(&f);
    remove_temp_file(path);
}

static void test_roundtrip_each_width(void **state) {
    (void)state;
    roundtrip(259, false, 2);
    roundtrip(65536, false, 2); /* id 65535 still fits 2 bytes */
    roundtrip(65537, false, 4);
    roundtrip(151936, false, 4); /* Qwen 3's vocabulary */
    roundtrip(32000, true, 2);
    assert_int_equal(token_width_for(65536), 2);
    assert_int_equal(token_width_for(65537), 4);
}

static void test_writer_refusals(void **state) {
    (void)state;
    TokenWriter w;
    NfError err = {0};
    /* a headerless file cannot hold ids past 65535 */
    assert_int_equal(token_writer_open(&w, "/tmp/nf_never_written", 70000, true, &err), -1);
    assert_non_null(strstr(err.message, "65535"));
    char *path = write_temp_file(NULL, 0);
    assert_int_equal(token_writer_open(&w, path, 100, false, &err), 0);
    int bad[2] = {5, 100};
    assert_int_equal(token_writer_put(&w, bad, 2, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    assert_non_null(strstr(err.message, "token id 100"));
    token_writer_abort(&w);
    remove_temp_file(path);
}

/* A valid header for count ids of width bytes, followed by count * width bytes of id 1. */
static unsigned char *image(uint32_t version, uint32_t width, uint64_t count, size_t body, size_t *size) {
    *size = TOKEN_FILE_HEADER_BYTES + body;
    unsigned char *d = calloc(1, *size);
    memcpy(d, TOKEN_FILE_MAGIC, TOKEN_FILE_MAGIC_BYTES);
    memcpy(d + 8, &version, 4); /* the build machine is little-endian, as the format */
    memcpy(d + 12, &width, 4);
    memcpy(d + 16, &count, 8);
    for (size_t i = 0; width && i < body; i += width) d[TOKEN_FILE_HEADER_BYTES + i] = 1;
    return d;
}

static void expect_parse_error(const unsigned char *d, size_t size, const char *want) {
    TokenFileView v;
    NfError err = {0};
    if (token_file_parse(d, size, "data", "t.bin", &v, &err) == 0) fail_msg("accepted; wanted '%s'", want);
    assert_string_equal(err.code, NF_ERR_DATA);
    if (!strstr(err.message, want)) fail_msg("error '%s' does not mention '%s'", err.message, want);
}

static void test_parse_errors(void **state) {
    (void)state;
    size_t size;
    unsigned char *d = image(1, 4, 3, 12, &size);
    TokenFileView v;
    NfError err = {0};
    assert_int_equal(token_file_parse(d, size, "data", "t.bin", &v, &err), 0);
    assert_int_equal(v.count, 3);
    assert_int_equal(token_id_at(v.tokens, 4, 2), 1);
    expect_parse_error(d, 100, "truncated header (100 bytes");
    expect_parse_error(d, size - 1, "its header lists 3 tokens of 4 bytes");
    d[5] = 'X';
    expect_parse_error(d, size, "bad magic");
    d[5] = 'O';
    d[500] = 7;
    expect_parse_error(d, size, "reserved byte 500");
    free(d);
    d = image(9, 2, 6, 12, &size);
    expect_parse_error(d, size, "header version 9");
    free(d);
    d = image(1, 3, 4, 12, &size);
    expect_parse_error(d, size, "token width 3");
    free(d);
    d = image(1, 2, 7, 12, &size);
    expect_parse_error(d, size, "lists 7 tokens");
    free(d);
    /* count * width wraps around 2^64 to the body's size: still refused */
    d = image(1, 4, (1ull << 62) + 3, 12, &size);
    expect_parse_error(d, size, "tokens of 4 bytes");
    free(d);
}

static void test_legacy_files(void **state) {
    (void)state;
    TokenFileView v;
    NfError err = {0};
    const unsigned char ids[6] = {1, 0, 0x34, 0x12, 0xFF, 0xFF};
    assert_int_equal(token_file_parse(ids, 6, "data", "t.bin", &v, &err), 0);
    assert_true(v.legacy);
    assert_int_equal(v.count, 3);
    assert_int_equal(token_id_at(v.tokens, 2, 1), 0x1234);
    assert_int_equal(token_file_parse(ids, 0, "data", "t.bin", &v, &err), 0);
    assert_int_equal(v.count, 0);
    expect_parse_error(ids, 5, "odd size (5 bytes)");
    /* FF FF 'N' 'F' commits to a header: a short file is a truncated header, not ids 65535, 17998 */
    expect_parse_error((const unsigned char *)TOKEN_FILE_MAGIC, 4, "truncated header");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_each_width),
        cmocka_unit_test(test_writer_refusals),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_legacy_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
