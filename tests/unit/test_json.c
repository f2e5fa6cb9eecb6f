/* test_json.c — the JsonBuf writer (json.h): commas and nesting of objects
 * and arrays, string escaping (quote, backslash, \n, \t, \r, control bytes
 * as \u00XX, DEL, invalid UTF-8 bytes as \ufffd, U+2028/U+2029 as escapes,
 * other valid multibyte UTF-8 passed through unchanged), keys escaped like
 * values, numbers (non-finite ones as null), int64 extremes, booleans and
 * null, and that nesting deeper than JSON_MAX_DEPTH marks the buffer failed
 * without touching memory outside it. */
#include "testutil.h"

#include <math.h>

#include "json.h"

/* Escapes n bytes as a top-level string value and compares the whole text. */
static void assert_string_json(const char *in, size_t n, const char *expected) {
    JsonBuf j;
    json_init(&j);
    json_string_n(&j, NULL, in, n);
    assert_false(j.failed);
    assert_string_equal(j.data, expected);
    assert_int_equal(j.len, strlen(expected));
    json_free(&j);
}

static void test_empty_object_and_array(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_array_begin(&j, "a");
    json_array_end(&j);
    json_object_begin(&j, "o");
    json_object_end(&j);
    json_object_end(&j);
    assert_string_equal(j.data, "{\"a\":[],\"o\":{}}");
    assert_int_equal(j.depth, 0);
    json_free(&j);
}

static void test_object_fields_get_commas_between_not_after(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_string(&j, "event", "token");
    json_int(&j, "id", 42);
    json_bool(&j, "done", false);
    json_object_end(&j);
    assert_string_equal(j.data, "{\"event\":\"token\",\"id\":42,\"done\":false}");
    json_free(&j);
}

static void test_nested_arrays_and_objects_place_commas_per_level(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_array_begin(&j, "ids");
    json_int(&j, NULL, 1);
    json_int(&j, NULL, 2);
    json_array_begin(&j, NULL);
    json_int(&j, NULL, 3);
    json_array_end(&j);
    json_object_begin(&j, NULL);
    json_null(&j, "x");
    json_object_end(&j);
    json_int(&j, NULL, 4);
    json_array_end(&j);
    json_string(&j, "after", "y");
    json_object_end(&j);
    assert_string_equal(j.data, "{\"ids\":[1,2,[3],{\"x\":null},4],\"after\":\"y\"}");
    assert_int_equal(j.depth, 0);
    assert_false(j.failed);
    json_free(&j);
}

static void test_top_level_scalar_has_no_comma(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_int(&j, NULL, 7);
    assert_string_equal(j.data, "7");
    json_free(&j);
}

static void test_long_output_grows_buffer(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    for (int i = 0; i < 1000; i++) json_int(&j, NULL, 123456789);
    json_array_end(&j);
    assert_false(j.failed);
    assert_int_equal(j.len, 2 + 1000 * 9 + 999);
    assert_int_equal(strlen(j.data), j.len);
    assert_memory_equal(j.data, "[123456789,123456789,", 21);
    assert_string_equal(j.data + j.len - 11, ",123456789]");
    json_free(&j);
}

static void test_escape_quote_and_backslash(void **state) {
    (void)state;
    assert_string_json("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
}

static void test_escape_newline_tab_carriage_return(void **state) {
    (void)state;
    assert_string_json("l1\nl2\tx\r", 8, "\"l1\\nl2\\tx\\r\"");
}

static void test_escape_control_bytes_as_u00xx(void **state) {
    (void)state;
    const char in[] = {0x00, 0x01, 0x1b, 0x1f, 0x08, 0x0c};
    assert_string_json(in, sizeof in, "\"\\u0000\\u0001\\u001b\\u001f\\u0008\\u000c\"");
}

static void test_escape_del(void **state) {
    (void)state;
    assert_string_json("a\x7f" "b", 3, "\"a\\u007fb\"");
}

static void test_printable_ascii_passes_through(void **state) {
    (void)state;
    assert_string_json("Hello, world! /<>{}[]~", 22, "\"Hello, world! /<>{}[]~\"");
}

static void test_invalid_utf8_bytes_become_replacement_escape(void **state) {
    (void)state;
    /* lone continuation, invalid lead, truncated 2-byte char before ASCII, overlong "/" */
    assert_string_json("\x80", 1, "\"\\ufffd\"");
    assert_string_json("a\xff" "b", 3, "\"a\\ufffdb\"");
    assert_string_json("\xc3" "A", 2, "\"\\ufffdA\"");
    assert_string_json("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");
    /* a 3-byte lead at the very end: truncated */
    assert_string_json("x\xe2\x82", 3, "\"x\\ufffd\\ufffd\"");
    /* UTF-16 surrogate encoded in UTF-8 */
    assert_string_json("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");
}

static void test_valid_multibyte_utf8_passes_through(void **state) {
    (void)state;
    const char *s = "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad"; /* é € 😀 中 */
    size_t n = strlen(s);
    char expected[64];
    snprintf(expected, sizeof expected, "\"%s\"", s);
    assert_string_json(s, n, expected);
}

static void test_line_and_paragraph_separators_are_escaped(void **state) {
    (void)state;
    assert_string_json("a\xe2\x80\xa8" "b\xe2\x80\xa9", 8, "\"a\\u2028b\\u2029\"");
    /* their neighbours U+2027 and U+202A are ordinary characters */
    assert_string_json("\xe2\x80\xa7\xe2\x80\xaa", 6, "\"\xe2\x80\xa7\xe2\x80\xaa\"");
}

static void test_string_n_stops_at_n_and_keeps_embedded_nul(void **state) {
    (void)state;
    assert_string_json("ab\0cd", 4, "\"ab\\u0000c\"");
}

static void test_null_string_pointer_writes_null(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_string(&j, "path", NULL);
    json_object_end(&j);
    assert_string_equal(j.data, "{\"path\":null}");
    json_free(&j);
}

static void test_key_with_special_chars_is_escaped(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_int(&j, "k\"e\\y\n\x01", 1);
    json_int(&j, "\xff", 2);
    json_object_end(&j);
    assert_string_equal(j.data, "{\"k\\\"e\\\\y\\n\\u0001\":1,\"\\ufffd\":2}");
    json_free(&j);
}

static void test_numbers(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    json_number(&j, NULL, 0.0);
    json_number(&j, NULL, 1.5);
    json_number(&j, NULL, -2.25);
    json_number(&j, NULL, 1e30);
    json_number(&j, NULL, 123456789.0);
    json_array_end(&j);
    assert_string_equal(j.data, "[0,1.5,-2.25,1e+30,123456789]");
    json_free(&j);

    /* a value that is not exact in binary round-trips to float precision */
    json_init(&j);
    json_number(&j, NULL, 0.1);
    assert_true(fabs(strtod(j.data, NULL) - 0.1) < 1e-9);
    json_free(&j);

    /* float32 values in their shortest form that reads back as the same float */
    json_init(&j);
    json_array_begin(&j, NULL);
    json_float(&j, NULL, 0.1f);
    json_float(&j, NULL, 16.0f);
    json_float(&j, NULL, 1.0f / 3.0f);
    json_float(&j, NULL, 16777217.0f);
    json_array_end(&j);
    assert_string_equal(j.data, "[0.1,16,0.33333334,16777216]");
    json_free(&j);
}

static void test_non_finite_numbers_become_null(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_number(&j, "nan", NAN);
    json_number(&j, "inf", INFINITY);
    json_number(&j, "ninf", -INFINITY);
    json_number(&j, "ok", 2.0);
    json_object_end(&j);
    assert_string_equal(j.data, "{\"nan\":null,\"inf\":null,\"ninf\":null,\"ok\":2}");
    json_free(&j);
}

static void test_int64_extremes(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    json_int(&j, NULL, INT64_MAX);
    json_int(&j, NULL, INT64_MIN);
    json_int(&j, NULL, 0);
    json_int(&j, NULL, -1);
    json_array_end(&j);
    assert_string_equal(j.data, "[9223372036854775807,-9223372036854775808,0,-1]");
    json_free(&j);
}

static void test_bool_and_null(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    json_bool(&j, NULL, true);
    json_bool(&j, NULL, false);
    json_null(&j, NULL);
    json_array_end(&j);
    assert_string_equal(j.data, "[true,false,null]");
    json_free(&j);
}

static void test_escape_into_appends_body_without_quotes(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_escape_into(&j, "a\"\n", 3);
    assert_string_equal(j.data, "a\\\"\\n");
    json_free(&j);
}

static void test_nesting_to_max_depth_works(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    for (int i = 0; i < JSON_MAX_DEPTH; i++) json_array_begin(&j, NULL);
    json_int(&j, NULL, 1);
    json_int(&j, NULL, 2);
    for (int i = 0; i < JSON_MAX_DEPTH; i++) json_array_end(&j);
    assert_false(j.failed);
    char expected[2 * JSON_MAX_DEPTH + 8];
    size_t o = 0;
    for (int i = 0; i < JSON_MAX_DEPTH; i++) expected[o++] = '[';
    memcpy(expected + o, "1,2", 3);
    o += 3;
    for (int i = 0; i < JSON_MAX_DEPTH; i++) expected[o++] = ']';
    expected[o] = '\0';
    assert_string_equal(j.data, expected);
    json_free(&j);
}

/* Deeper than JSON_MAX_DEPTH must only set `failed`. Items added at that depth
 * index has_items[depth - 1]; this checks it stays within the array (the
 * UBSan build reports an out-of-bounds index otherwise). Kept last: a
 * sanitizer abort here would stop the tests after it. */
static void test_nesting_past_max_depth_sets_failed_without_overflow(void **state) {
    (void)state;
    struct {
        JsonBuf j;
        unsigned char guard[64];
    } box;
    memset(box.guard, 0xA5, sizeof box.guard);
    json_init(&box.j);
    for (int i = 0; i < JSON_MAX_DEPTH + 24; i++) json_array_begin(&box.j, NULL);
    json_int(&box.j, NULL, 1);
    json_int(&box.j, NULL, 2);
    for (int i = 0; i < JSON_MAX_DEPTH + 24; i++) json_array_end(&box.j);
    assert_true(box.j.failed);
    for (size_t i = 0; i < sizeof box.guard; i++) assert_int_equal(box.guard[i], 0xA5);
    json_free(&box.j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_object_and_array),
        cmocka_unit_test(test_object_fields_get_commas_between_not_after),
        cmocka_unit_test(test_nested_arrays_and_objects_place_commas_per_level),
        cmocka_unit_test(test_top_level_scalar_has_no_comma),
        cmocka_unit_test(test_long_output_grows_buffer),
        cmocka_unit_test(test_escape_quote_and_backslash),
        cmocka_unit_test(test_escape_newline_tab_carriage_return),
        cmocka_unit_test(test_escape_control_bytes_as_u00xx),
        cmocka_unit_test(test_escape_del),
        cmocka_unit_test(test_printable_ascii_passes_through),
        cmocka_unit_test(test_invalid_utf8_bytes_become_replacement_escape),
        cmocka_unit_test(test_valid_multibyte_utf8_passes_through),
        cmocka_unit_test(test_line_and_paragraph_separators_are_escaped),
        cmocka_unit_test(test_string_n_stops_at_n_and_keeps_embedded_nul),
        cmocka_unit_test(test_null_string_pointer_writes_null),
        cmocka_unit_test(test_key_with_special_chars_is_escaped),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_non_finite_numbers_become_null),
        cmocka_unit_test(test_int64_extremes),
        cmocka_unit_test(test_bool_and_null),
        cmocka_unit_test(test_escape_into_appends_body_without_quotes),
        cmocka_unit_test(test_nesting_to_max_depth_works),
        cmocka_unit_test(test_nesting_past_max_depth_sets_failed_without_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
