/* test_checkpoint.c — the LoRA base checksum (model_file_checksum): a file's 16 MiB pieces hashed by all threads at
 * once come to what docs/formats.md says, computed here piece by piece in one thread. */
#include <xxhash.h>

#include "checkpoint.h"
#include "testutil.h"

#define PIECE ((size_t)16 << 20)

/* n bytes of xorshift noise */
static unsigned char *noise(size_t n, uint64_t seed) {
    unsigned char *b = malloc(n ? n : 1);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        b[i] = (unsigned char)(seed >> 32);
    }
    return b;
}

/* docs/formats.md's rule in one thread: the XXH3-64 of the little-endian XXH3-64 digests of the pieces */
static uint64_t pieces_checksum(const unsigned char *data, size_t n) {
    size_t pieces = (n + PIECE - 1) / PIECE;
    uint64_t digests[8];
    assert_true(pieces <= 8);
    for (size_t p = 0; p < pieces; p++) {
        size_t k = n - p * PIECE < PIECE ? n - p * PIECE : PIECE;
        uint64_t d = XXH3_64bits(data + p * PIECE, k);
        memcpy(&digests[p], &d, 8); /* the hosts built for are little-endian */
    }
    return XXH3_64bits(digests, pieces * sizeof(uint64_t));
}

static void check_size(size_t n) {
    unsigned char *data = noise(n, 0x9e3779b97f4a7c15ull + n);
    char *path = write_temp_file(data, n);
    uint64_t sum = 0;
    NfError err = {0};
    assert_int_equal(model_file_checksum(path, &sum, &err), 0);
    if (sum != pieces_checksum(data, n)) fail_msg("%zu bytes: %016llx", n, (unsigned long long)sum);
    if (n > 0) assert_true(sum != XXH3_64bits(data, n)); /* not the sequential checksum of version 3 */
    remove_temp_file(path);
    free(data);
}

static void test_base_checksum_is_the_pieces_digest(void **state) {
    (void)state;
    check_size(0);
    check_size(1000);
    check_size(PIECE);
    check_size(PIECE + 1);
    check_size(3 * PIECE + 12345); /* more pieces than threads, the last one short */
}

static void test_base_checksum_of_a_missing_file_is_an_io_error(void **state) {
    (void)state;
    uint64_t sum = 7;
    NfError err = {0};
    assert_int_equal(model_file_checksum("/nonexistent/model.bin", &sum, &err), -1);
    assert_string_equal(err.code, NF_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/model.bin"));
    assert_true(sum == 7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_checksum_is_the_pieces_digest),
        cmocka_unit_test(test_base_checksum_of_a_missing_file_is_an_io_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
