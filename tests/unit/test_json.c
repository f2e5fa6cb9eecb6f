/* test_json.c — the JsonBuf writer (json.h): commas and nesting of objects
 * and arrays, string escaping (quote, backslash, \n, \t, \r, control bytes
 * as \u00XX, DEL, invalid UTF-8 bytes as \ufffd, U+2028/U+2029 as escapes,
 * other valid multibyte UTF-8 passed through unchanged), keys escaped like
 * values, numbers (non-finite ones as null), int64 extremes, booleans and
 * null, and that nesting deeper than JSON_MAX_DEPTH marks the buffer failed
 * without touching memory outside it.
 *
 * And the reader (json_parse.h): values, key order, json_get and
 * json_value_equal; surrogate pairs decoded, lone or misordered surrogates and
 * invalid UTF-8 refused; \u0000 kept with the string's length (refused in
 * keys); duplicate keys refused; 32 levels of nesting accepted, 33 refused;
 * numbers' texts (integers exact at the int64 bounds, beyond them refused;
 * reals read back as the same double and never look like integers); malformed
 * input refused as a usage error with its byte offset; the writer's output
 * read back.
 *
 * And json_parse_each: the listed arrays' elements come one at a time, equal
 * to json_parse's, the other members into rest; every prefix of a sample and
 * every one-byte corruption of it refused or accepted exactly as json_parse
 * does (run under ASan too); duplicate top-level keys, a top level that is not
 * one object, trailing bytes and broken glue refused with their offsets; the
 * depth bound counted from the top; a callback's error passed through. */
#include "testutil.h"

#include <math.h>

#include "json.h"
#include "json_parse.h"

/* Escapes n bytes as a top-level string value and compares the whole text. */
static void assert_string_json(const char *in, size_t n, const char *expected) {
    JsonBuf j;
    json_init(&j);
    json_str_n(&j, NULL, in, n);
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
    json_str(&j, "event", "token");
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
    json_null_value(&j, "x");
    json_object_end(&j);
    json_int(&j, NULL, 4);
    json_array_end(&j);
    json_str(&j, "after", "y");
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
    assert_string_json("a\x7f"
                       "b",
                       3, "\"a\\u007fb\"");
}

static void test_printable_ascii_passes_through(void **state) {
    (void)state;
    assert_string_json("Hello, world! /<>{}[]~", 22, "\"Hello, world! /<>{}[]~\"");
}

static void test_invalid_utf8_bytes_become_replacement_escape(void **state) {
    (void)state;
    /* lone continuation, invalid lead, truncated 2-byte char before ASCII, overlong "/" */
    assert_string_json("\x80", 1, "\"\\ufffd\"");
    assert_string_json("a\xff"
                       "b",
                       3, "\"a\\ufffdb\"");
    assert_string_json("\xc3"
                       "A",
                       2, "\"\\ufffdA\"");
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
    assert_string_json("a\xe2\x80\xa8"
                       "b\xe2\x80\xa9",
                       8, "\"a\\u2028b\\u2029\"");
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
    json_str(&j, "path", NULL);
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
    json_null_value(&j, NULL);
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

/* ---- the reader (json_parse.h) -------------------------------------------- */

static void parse_ok(const char *text, size_t n, JsonValue *v) {
    NfError err = {0};
    int rc = json_parse(text, n, v, &err);
    if (rc != 0) fail_msg("json_parse refused %.*s: %s", (int)n, text, err.message);
}

/* Refused as a usage error whose message starts "invalid JSON at byte " and contains want (if given). */
static void parse_fails(const char *text, size_t n, const char *want) {
    JsonValue v;
    NfError err = {0};
    if (json_parse(text, n, &v, &err) == 0) fail_msg("json_parse accepted %.*s", (int)n, text);
    assert_string_equal(err.code, NF_ERR_USAGE);
    assert_memory_equal(err.message, "invalid JSON at byte ", 21);
    if (want && !strstr(err.message, want)) fail_msg("message '%s' lacks '%s'", err.message, want);
    assert_int_equal(v.n, 0); /* left empty */
    assert_null(v.text);
}

#define PARSE_OK(lit, v)       parse_ok(lit, sizeof(lit) - 1, v)
#define PARSE_FAILS(lit, want) parse_fails(lit, sizeof(lit) - 1, want)

static void test_parse_values_and_key_order(void **state) {
    (void)state;
    JsonValue v;
    PARSE_OK(" {\"z\": [1, \"x\", true, false, null, {\"b\": {}}], \"a\": -2.5, \"m\": \"\"}\n", &v);
    assert_int_equal(v.type, JV_OBJECT);
    assert_int_equal(v.n, 3);
    assert_string_equal(v.keys[0], "z"); /* the text's order, not sorted */
    assert_string_equal(v.keys[1], "a");
    assert_string_equal(v.keys[2], "m");
    const JsonValue *z = json_get(&v, "z");
    assert_non_null(z);
    assert_int_equal(z->type, JV_ARRAY);
    assert_int_equal(z->n, 6);
    assert_int_equal(z->items[0].type, JV_NUMBER);
    assert_string_equal(z->items[0].text, "1");
    assert_int_equal(z->items[1].type, JV_STRING);
    assert_string_equal(z->items[1].text, "x");
    assert_int_equal(z->items[1].len, 1);
    assert_true(z->items[2].type == JV_BOOL && z->items[2].boolean);
    assert_true(z->items[3].type == JV_BOOL && !z->items[3].boolean);
    assert_int_equal(z->items[4].type, JV_NULL);
    assert_int_equal(z->items[5].type, JV_OBJECT);
    const JsonValue *b = json_get(&z->items[5], "b");
    assert_true(b && b->type == JV_OBJECT && b->n == 0);
    assert_string_equal(json_get(&v, "a")->text, "-2.5");
    assert_int_equal(json_get(&v, "m")->len, 0);
    assert_string_equal(json_get(&v, "m")->text, "");
    assert_null(json_get(&v, "nope"));
    assert_null(json_get(z, "z")); /* not an object */
    json_value_free(&v);
    assert_int_equal(v.n, 0);

    /* any value at the top */
    PARSE_OK("\"top\"", &v);
    assert_true(v.type == JV_STRING && v.len == 3);
    json_value_free(&v);
    PARSE_OK("null", &v);
    assert_int_equal(v.type, JV_NULL);
    json_value_free(&v);
}

static void test_parse_escapes_and_surrogate_pairs(void **state) {
    (void)state;
    JsonValue v;
    PARSE_OK("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20ac\"", &v);
    assert_int_equal(v.len, 13);
    assert_memory_equal(v.text, "\"\\/\b\f\n\r\t\xc3\xa9\xe2\x82\xac", 13);
    json_value_free(&v);
    PARSE_OK("\"\\ud83d\\ude00\"", &v); /* U+1F600 */
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.text, "\xf0\x9f\x98\x80", 4);
    json_value_free(&v);
    PARSE_OK("\"\\uDBFF\\uDFFF\"", &v); /* U+10FFFF, upper-case hex */
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.text, "\xf4\x8f\xbf\xbf", 4);
    json_value_free(&v);
    /* UTF-8 in the text passes through */
    PARSE_OK("\"\xc3\xa9\xf0\x9f\x98\x80\"", &v);
    assert_int_equal(v.len, 6);
    json_value_free(&v);
}

static void test_parse_refuses_lone_and_misordered_surrogates(void **state) {
    (void)state;
    PARSE_FAILS("\"\\ud800\"", "\\uD800");
    PARSE_FAILS("\"\\ud800\\u0041\"", NULL); /* the old reader made U+2441 of this */
    PARSE_FAILS("\"\\udc00\"", NULL);
    PARSE_FAILS("\"\\ude00\\ud83d\"", NULL); /* the pair's halves swapped */
    PARSE_FAILS("\"\\ud83d\\ud83d\"", NULL);
    PARSE_FAILS("\"a\\ud83d\"", NULL);
    PARSE_FAILS("{\"\\udfff\": 1}", NULL);
}

static void test_parse_refuses_invalid_utf8(void **state) {
    (void)state;
    PARSE_FAILS("\"\xff\"", "0xff");
    PARSE_FAILS("\"\x80\"", NULL);             /* a lone continuation byte */
    PARSE_FAILS("\"\xc0\xaf\"", NULL);         /* overlong "/" */
    PARSE_FAILS("\"\xed\xa0\x80\"", NULL);     /* a surrogate written in UTF-8 */
    PARSE_FAILS("\"x\xe2\x82\"", NULL);        /* truncated */
    PARSE_FAILS("\"\xf4\x90\x80\x80\"", NULL); /* above U+10FFFF */
    PARSE_FAILS("{\"k\xfe\": 1}", NULL);
}

static void test_parse_keeps_nul_with_length(void **state) {
    (void)state;
    JsonValue v;
    PARSE_OK("[\"a\\u0000b\", \"\\u0000\"]", &v);
    assert_int_equal(v.items[0].len, 3);
    assert_memory_equal(v.items[0].text, "a\0b", 4); /* still NUL-terminated after the length */
    assert_int_equal(v.items[1].len, 1);
    assert_int_equal(v.items[1].text[0], 0);
    json_value_free(&v);
    /* keys are C strings: a NUL in one is refused, not cut short */
    PARSE_FAILS("{\"a\\u0000b\": 1}", "NUL");
    /* a raw NUL byte is not JSON, inside a string or out */
    PARSE_FAILS("\"a\0b\"", NULL);
    PARSE_FAILS("[1,\0 2]", NULL);
}

static void test_parse_refuses_duplicate_keys(void **state) {
    (void)state;
    PARSE_FAILS("{\"lr\": 1, \"lr\": 2}", "duplicate");
    PARSE_FAILS("[{\"a\": {\"x\": 1, \"y\": 2, \"x\": 3}}]", "duplicate");
    JsonValue v;
    PARSE_OK("[{\"a\": 1}, {\"a\": 2}]", &v); /* the same key in two objects is fine */
    json_value_free(&v);
}

/* n arrays nested, a 1 in the innermost. */
static char *nested(int n) {
    char *s = malloc((size_t)2 * n + 2);
    for (int i = 0; i < n; i++) s[i] = '[';
    s[n] = '1';
    for (int i = 0; i < n; i++) s[n + 1 + i] = ']';
    s[2 * n + 1] = '\0';
    return s;
}

static void test_parse_depth_bound(void **state) {
    (void)state;
    char *ok = nested(32), *deep = nested(33), *hostile = nested(1000000);
    JsonValue v;
    parse_ok(ok, strlen(ok), &v);
    const JsonValue *x = &v;
    for (int i = 0; i < 32; i++) x = &x->items[0];
    assert_string_equal(x->text, "1");
    json_value_free(&v);
    parse_fails(deep, strlen(deep), "at byte 32: nested more than 32 levels");
    parse_fails(hostile, strlen(hostile), "nested");
    /* brackets inside strings do not count */
    char mixed[256];
    snprintf(mixed, sizeof mixed, "{\"a\": \"%s\", \"b\": [[1]]}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{");
    parse_ok(mixed, strlen(mixed), &v);
    json_value_free(&v);
    PARSE_OK("[\"\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"]", &v);
    json_value_free(&v);
    free(ok);
    free(deep);
    free(hostile);
}

static void test_parse_integers_exact(void **state) {
    (void)state;
    JsonValue v;
    PARSE_OK("[9223372036854775807, -9223372036854775808, 0, -0, 123456789012345678, 16777217]", &v);
    const char *want[] = {"9223372036854775807", "-9223372036854775808", "0", "0", "123456789012345678", "16777217"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(v.items[i].type, JV_NUMBER);
        assert_string_equal(v.items[i].text, want[i]);
        assert_int_equal(v.items[i].len, strlen(want[i]));
    }
    json_value_free(&v);
    /* beyond int64: refused rather than rounded (no writer of ours emits one) */
    PARSE_FAILS("9223372036854775808", "too big integer");
    PARSE_FAILS("[-9223372036854775809]", "too big");
    PARSE_FAILS("18446744073709551615", NULL);
}

static void test_parse_reals_round_trip(void **state) {
    (void)state;
    const double values[] = {0.1,           0.3,   0.1 + 0.2,    3e-4,   1e-5,
                             1.0 / 3.0,     2.5,   1e300,        5e-324, 1.7976931348623157e308,
                             123456789.125, -1e-7, 6.02214076e23};
    JsonBuf j;
    json_init(&j);
    json_array_begin(&j, NULL);
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        char num[40];
        snprintf(num, sizeof num, "%.17g", values[i]);
        json_raw(&j, NULL, num, strlen(num));
    }
    json_array_end(&j);
    JsonValue v;
    parse_ok(j.data, j.len, &v);
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        char *end;
        assert_true(strtod(v.items[i].text, &end) == values[i]);
        assert_int_equal(*end, '\0');
        assert_true(strpbrk(v.items[i].text, ".e") != NULL);
    }
    /* the fewest digits that read back: 0.1 stays 0.1, not 0.10000000000000001 */
    assert_string_equal(v.items[0].text, "0.1");
    assert_string_equal(v.items[2].text, "0.30000000000000004");
    assert_string_equal(v.items[3].text, "0.0003");
    json_value_free(&v);
    json_free(&j);

    /* a real that looks like an integer keeps a ".0", so integer readers still refuse it */
    PARSE_OK("[1.0, 1e3, -0.0, 1E2, 2.50]", &v);
    assert_string_equal(v.items[0].text, "1.0");
    assert_string_equal(v.items[1].text, "1000.0");
    assert_string_equal(v.items[2].text, "-0.0");
    assert_string_equal(v.items[3].text, "100.0");
    assert_string_equal(v.items[4].text, "2.5");
    json_value_free(&v);
    PARSE_FAILS("1e400", "overflow");
}

static void test_parse_malformed_input_gives_offset(void **state) {
    (void)state;
    PARSE_FAILS("", NULL);
    PARSE_FAILS("   ", NULL);
    PARSE_FAILS("[1, 2] x", "at byte 8: end of file expected");
    PARSE_FAILS("{\"a\": 1", NULL);
    PARSE_FAILS("\"abc", NULL);
    PARSE_FAILS("[1,]", NULL);
    PARSE_FAILS("{\"a\" 1}", NULL);
    PARSE_FAILS("{a: 1}", NULL);
    PARSE_FAILS("\"a\tb\"", "control character");
    PARSE_FAILS("\"\\x\"", NULL);
    PARSE_FAILS("\"\\u12\"", NULL);
    PARSE_FAILS("nul", NULL);
    PARSE_FAILS("01", NULL);
    PARSE_FAILS("+1", NULL);
    PARSE_FAILS("1.", NULL);
    PARSE_FAILS("[.5]", NULL);
    PARSE_FAILS("NaN", NULL);
    /* the length bounds the text: what follows is not read */
    JsonValue v;
    parse_ok("[1]garbage", 3, &v);
    json_value_free(&v);
    parse_fails("[1]", 2, NULL);
}

static void test_parse_equal(void **state) {
    (void)state;
    JsonValue a, b, c, d;
    PARSE_OK("{\"x\": [1, \"s\\u0000\", null, 0.5], \"y\": {}}", &a);
    PARSE_OK("{ \"x\" : [ 1 , \"s\\u0000\" , null , 5e-1 ] , \"y\" : { } }", &b);
    PARSE_OK("{\"y\": {}, \"x\": [1, \"s\\u0000\", null, 0.5]}", &c); /* another order */
    PARSE_OK("{\"x\": [1, \"s\", null, 0.5], \"y\": {}}", &d);        /* no NUL */
    assert_true(json_value_equal(&a, &b));
    assert_false(json_value_equal(&a, &c));
    assert_false(json_value_equal(&a, &d));
    json_value_free(&a);
    json_value_free(&b);
    json_value_free(&c);
    json_value_free(&d);
}

/* What the writer writes, the reader reads back. */
static void test_parse_reads_the_writers_output(void **state) {
    (void)state;
    JsonBuf j;
    json_init(&j);
    json_object_begin(&j, NULL);
    json_str_n(&j, "s", "a\"\\\n\x01\0\xc3\xa9\xe2\x80\xa8", 11);
    json_int(&j, "max", INT64_MAX);
    json_int(&j, "min", INT64_MIN);
    json_number(&j, "lr", 3e-4);
    json_float(&j, "eps", 1e-5f);
    json_number(&j, "nan", NAN);
    json_array_begin(&j, "list");
    for (int i = 0; i < 1000; i++) json_int(&j, NULL, i);
    json_array_end(&j);
    json_object_end(&j);
    JsonValue v;
    parse_ok(j.data, j.len, &v);
    const JsonValue *s = json_get(&v, "s");
    assert_int_equal(s->len, 11);
    assert_memory_equal(s->text, "a\"\\\n\x01\0\xc3\xa9\xe2\x80\xa8", 11);
    assert_string_equal(json_get(&v, "max")->text, "9223372036854775807");
    assert_string_equal(json_get(&v, "min")->text, "-9223372036854775808");
    assert_true(strtod(json_get(&v, "lr")->text, NULL) == strtod("0.0003", NULL));
    assert_true(strtof(json_get(&v, "eps")->text, NULL) == 1e-5f);
    assert_int_equal(json_get(&v, "nan")->type, JV_NULL);
    const JsonValue *list = json_get(&v, "list");
    assert_int_equal(list->n, 1000);
    for (int i = 0; i < 1000; i++) assert_int_equal(atoi(list->items[i].text), i);
    json_value_free(&v);
    json_free(&j);
}

/* ---- json_parse_each --------------------------------------------------------- */

/* What the callbacks saw: a log line per call ("key[index]=<compact value>" and "key end n"), and
 * each element compared with the same element of json_parse's tree of the whole text (when given). */
typedef struct {
    char log[1024];
    const JsonValue *whole; /* json_parse of the same text, or NULL */
    int rest_seen;          /* rest->n when the last element came */
    const JsonValue *rest;
    int fail_at; /* the element (counting all calls) whose callback fails, or -1 */
    int calls;
} EachLog;

static void log_value(char *out, size_t cap, const JsonValue *v) {
    size_t o = strlen(out);
    switch (v->type) {
    case JV_NULL: snprintf(out + o, cap - o, "null"); break;
    case JV_BOOL: snprintf(out + o, cap - o, v->boolean ? "true" : "false"); break;
    case JV_NUMBER: snprintf(out + o, cap - o, "%s", v->text); break;
    case JV_STRING: snprintf(out + o, cap - o, "\"%s\"", v->text); break;
    case JV_ARRAY:
    case JV_OBJECT:
        snprintf(out + o, cap - o, "%c", v->type == JV_ARRAY ? '[' : '{');
        for (int i = 0; i < v->n; i++) {
            o = strlen(out);
            if (v->type == JV_OBJECT)
                snprintf(out + o, cap - o, "%s%s:", i ? "," : "", v->keys[i]);
            else if (i)
                snprintf(out + o, cap - o, ",");
            log_value(out, cap, &v->items[i]);
        }
        o = strlen(out);
        snprintf(out + o, cap - o, "%c", v->type == JV_ARRAY ? ']' : '}');
        break;
    }
}

static int log_element(void *ctx, const char *key, size_t index, JsonValue *v, NfError *err) {
    EachLog *l = ctx;
    if (l->calls++ == l->fail_at) return nf_fail(err, NF_ERR_DATA, "element %zu of %s refused", index, key);
    size_t o = strlen(l->log);
    snprintf(l->log + o, sizeof l->log - o, "%s[%zu]=", key, index);
    log_value(l->log, sizeof l->log, v);
    o = strlen(l->log);
    snprintf(l->log + o, sizeof l->log - o, " ");
    if (l->whole) {
        const JsonValue *array = json_get(l->whole, key);
        assert_true(array && array->type == JV_ARRAY && (int)index < array->n);
        assert_true(json_value_equal(v, &array->items[index]));
    }
    l->rest_seen = l->rest->n;
    return 0;
}

static int log_end(void *ctx, const char *key, size_t n, NfError *err) {
    (void)err;
    EachLog *l = ctx;
    size_t o = strlen(l->log);
    snprintf(l->log + o, sizeof l->log - o, "%s end %zu ", key, n);
    return 0;
}

static const char *const STREAM_AB[] = {"a", "b", NULL};

/* json_parse_each of text[0, n) with STREAM_AB; fills log, returns the result. */
static int each(const char *text, size_t n, EachLog *l, JsonValue *rest, NfError *err) {
    JsonStream stream = {STREAM_AB, log_element, log_end};
    l->rest = rest;
    return json_parse_each(text, n, &stream, l, rest, err);
}

static void each_fails(const char *text, size_t n, const char *want) {
    EachLog l = {.fail_at = -1};
    JsonValue rest;
    NfError err = {0};
    if (each(text, n, &l, &rest, &err) == 0) fail_msg("json_parse_each accepted %.*s", (int)n, text);
    assert_string_equal(err.code, NF_ERR_USAGE);
    assert_memory_equal(err.message, "invalid JSON at byte ", 21);
    if (want && !strstr(err.message, want)) fail_msg("message '%s' lacks '%s'", err.message, want);
    assert_int_equal(rest.n, 0); /* left empty */
    assert_null(rest.items);
}

#define EACH_FAILS(lit, want) each_fails(lit, sizeof(lit) - 1, want)

/* Refused with json_parse's very message (offset included): the errors jansson finds inside keys and values. */
static void each_fails_like_parse(const char *text, size_t n) {
    JsonValue v;
    NfError err = {0};
    if (json_parse(text, n, &v, &err) == 0) fail_msg("json_parse accepted %.*s", (int)n, text);
    each_fails(text, n, err.message);
}

#define EACH_FAILS_LIKE_PARSE(lit) each_fails_like_parse(lit, sizeof(lit) - 1)

static const char SAMPLE[] =
    "{\"format\": \"x\", \"a\": [1, {\"k\": [true, null], \"s\": \"\\u00e9\\ud83d\\ude00\"}, \"t\", -2.5e3, []],"
    " \"mid\": {\"a\": [9]}, \"b\" :[ ] ,\"c\": [\"not streamed\"], \"n\": null}";

static void test_each_streams_the_listed_arrays(void **state) {
    (void)state;
    JsonValue whole;
    parse_ok(SAMPLE, sizeof SAMPLE - 1, &whole);
    EachLog l = {.whole = &whole, .fail_at = -1};
    JsonValue rest;
    NfError err = {0};
    if (each(SAMPLE, sizeof SAMPLE - 1, &l, &rest, &err) != 0) fail_msg("%s", err.message);
    assert_string_equal(l.log, "a[0]=1 a[1]={k:[true,null],s:\"\xc3\xa9\xf0\x9f\x98\x80\"} a[2]=\"t\" a[3]=-2500.0 "
                               "a[4]=[] a end 5 b end 0 ");
    assert_int_equal(l.rest_seen, 1); /* while "a" streamed, rest held "format" */
    /* the rest: every member not streamed, in order, as json_parse reads them */
    assert_int_equal(rest.type, JV_OBJECT);
    assert_int_equal(rest.n, 4);
    const char *keys[] = {"format", "mid", "c", "n"};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(rest.keys[i], keys[i]);
        assert_true(json_value_equal(&rest.items[i], json_get(&whole, keys[i])));
    }
    assert_null(json_get(&rest, "a"));
    json_value_free(&rest);

    /* nothing listed: rest is json_parse's tree */
    JsonStream none = {NULL, log_element, NULL};
    assert_int_equal(json_parse_each(SAMPLE, sizeof SAMPLE - 1, &none, &l, &rest, &err), 0);
    assert_true(json_value_equal(&rest, &whole));
    json_value_free(&rest);
    json_value_free(&whole);

    /* a listed key whose value is not an array goes whole into rest, for the caller to refuse by type */
    memset(l.log, 0, sizeof l.log);
    const char *text = " {\"a\": {\"x\": [1]}, \"b\": \"[]\"}\n";
    assert_int_equal(each(text, strlen(text), &l, &rest, &err), 0);
    assert_string_equal(l.log, "");
    assert_int_equal(rest.n, 2);
    assert_int_equal(json_get(&rest, "a")->type, JV_OBJECT);
    assert_int_equal(json_get(&rest, "b")->type, JV_STRING);
    json_value_free(&rest);
    /* the empty object */
    assert_int_equal(each(" { } ", 5, &l, &rest, &err), 0);
    assert_true(rest.type == JV_OBJECT && rest.n == 0);
    json_value_free(&rest);
}

/* Every prefix of SAMPLE is refused cleanly (ASan build: without touching a byte past it),
 * and so is every one-byte corruption that breaks it: never a crash or a leak. */
static void test_each_truncated_or_corrupted_at_every_byte(void **state) {
    (void)state;
    size_t n = sizeof SAMPLE - 1;
    for (size_t cut = 0; cut < n; cut++) {
        char *copy = malloc(cut ? cut : 1); /* exactly cut bytes: ASan sees any read past them */
        memcpy(copy, SAMPLE, cut);
        EachLog l = {.fail_at = -1};
        JsonValue rest;
        NfError err = {0};
        if (each(copy, cut, &l, &rest, &err) == 0) fail_msg("accepted the first %zu bytes", cut);
        size_t at = strtoull(err.message + 21, NULL, 10);
        if (strncmp(err.message, "invalid JSON at byte ", 21) != 0 || at > cut)
            fail_msg("cut at %zu: '%s'", cut, err.message);
        assert_int_equal(rest.n, 0);
        free(copy);
    }
    const char replace[] = "{}[]\",: x0\\\x01\xff";
    for (size_t i = 0; i < n; i++) {
        for (const char *c = replace; *c; c++) {
            char *copy = malloc(n);
            memcpy(copy, SAMPLE, n);
            copy[i] = *c;
            EachLog l = {.fail_at = -1};
            JsonValue rest;
            NfError err = {0};
            JsonValue whole;
            NfError err2 = {0};
            /* json_parse_each accepts exactly what json_parse accepts as an object */
            bool parses = json_parse(copy, n, &whole, &err2) == 0 && whole.type == JV_OBJECT;
            if (parses) l.whole = &whole;
            int rc = each(copy, n, &l, &rest, &err);
            if ((rc == 0) != parses)
                fail_msg("byte %zu as 0x%02x: json_parse %s, json_parse_each %s", i, (unsigned char)*c,
                         parses ? "accepts" : "refuses", err.message);
            if (rc == 0)
                json_value_free(&rest);
            else
                assert_int_equal(rest.n, 0);
            if (parses) json_value_free(&whole);
            free(copy);
        }
    }
}

static void test_each_refuses_duplicate_keys(void **state) {
    (void)state;
    EACH_FAILS("{\"x\": 1, \"y\": 2, \"x\": 3}", "at byte 17: duplicate object key");
    EACH_FAILS("{\"a\": [1], \"x\": 1, \"a\": [2]}", "at byte 19: duplicate"); /* streamed twice */
    EACH_FAILS("{\"a\": [1], \"a\": 2}", "duplicate");                         /* streamed, then not */
    EACH_FAILS("{\"\\u0061\": 1, \"a\": [2]}", "duplicate");                   /* the same key escaped */
    EACH_FAILS("{\"a\": [{\"k\": 1, \"k\": 2}]}", "duplicate");                /* inside an element */
    EACH_FAILS("{\"m\": {\"k\": 1, \"k\": 2}}", "duplicate");                  /* inside a member */
    EachLog l = {.fail_at = -1};
    JsonValue rest;
    NfError err;
    const char *ok = "{\"a\": [{\"k\": 1}, {\"k\": 2}], \"k\": {\"k\": 3}}"; /* the same key at other levels */
    assert_int_equal(each(ok, strlen(ok), &l, &rest, &err), 0);
    json_value_free(&rest);
}

static void test_each_refuses_what_is_not_one_object(void **state) {
    (void)state;
    EACH_FAILS("", "at byte 0: '{' expected near end of file");
    EACH_FAILS("  ", "at byte 2: '{' expected near end of file");
    EACH_FAILS("[1]", "at byte 0: '{' expected");
    EACH_FAILS("\"a\"", "'{' expected");
    EACH_FAILS("1", "'{' expected");
    EACH_FAILS("{} x", "at byte 3: end of file expected");
    EACH_FAILS("{}{}", "at byte 2: end of file expected");
    EACH_FAILS("{\"a\": [1]} ]", "end of file expected");
    EACH_FAILS("{,}", "at byte 1: string expected");
    EACH_FAILS("{\"x\": 1,}", "at byte 8: string expected");
    EACH_FAILS("{x: 1}", "string expected");
    EACH_FAILS("{\"x\" 1}", "at byte 5: ':' expected");
    EACH_FAILS("{\"x\": 1 \"y\": 2}", "at byte 8: '}' or ',' expected");
    EACH_FAILS("{\"a\": [1 2]}", "at byte 9: ']' or ',' expected");
    EACH_FAILS("{\"a\": [1", "at byte 8: ']' or ',' expected near end of file");
    EACH_FAILS("{\"a\": [1x]}", "']' or ','");
    EACH_FAILS("{\"a\\u0000b\": 1}", "at byte 1: NUL byte in object key");
    /* what jansson finds in a key or value: json_parse's message, offset included */
    EACH_FAILS_LIKE_PARSE("{\"x\": }");
    EACH_FAILS_LIKE_PARSE("{\"a\": [1,]}");
    EACH_FAILS_LIKE_PARSE("{\"a\": [,1]}");
    EACH_FAILS_LIKE_PARSE("{\"a\": [tru]}");
    EACH_FAILS_LIKE_PARSE("{\"a\": [\"\\ud800\"]}");
    EACH_FAILS_LIKE_PARSE("{\"a\": [\"\xff\"]}");
    EACH_FAILS_LIKE_PARSE("{\"k\xfe\": 1}");
    EACH_FAILS_LIKE_PARSE("{\"k\": \"abc");
    EACH_FAILS_LIKE_PARSE("{\"a\": [1,\0 2]}");
    EACH_FAILS_LIKE_PARSE("{\"a\": [9223372036854775808]}");
    EACH_FAILS_LIKE_PARSE("{\"a\": [{\"x\": 1e400}]}");
    /* the length bounds the text */
    EachLog l = {.fail_at = -1};
    JsonValue rest;
    NfError err;
    assert_int_equal(each("{\"a\": [1]}garbage", 10, &l, &rest, &err), 0);
    assert_string_equal(l.log, "a[0]=1 a end 1 ");
    json_value_free(&rest);
    each_fails("{\"a\": [1]}", 9, "near end of file");
}

static void test_each_depth_bound(void **state) {
    (void)state;
    /* the object and the streamed array count: an element may nest 30 more levels */
    char ok[256], deep[256];
    snprintf(ok, sizeof ok, "{\"a\": [%.30s1%.30s]}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    snprintf(deep, sizeof deep, "{\"a\": [%.31s1%.31s]}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    EachLog l = {.fail_at = -1};
    JsonValue rest;
    NfError err;
    assert_int_equal(each(ok, strlen(ok), &l, &rest, &err), 0);
    json_value_free(&rest);
    each_fails(deep, strlen(deep), "at byte 37: nested more than 32 levels deep"); /* json_parse's offset */
    parse_fails(deep, strlen(deep), "at byte 37: nested more than 32 levels deep");
    char *hostile = nested(1000000);
    hostile[0] = '{'; /* not JSON either way: the depth is refused first */
    each_fails(hostile, strlen(hostile), "nested");
    free(hostile);
}

/* A callback's error stops the parse and comes back as it was; rest is freed. */
static void test_each_passes_callback_errors_through(void **state) {
    (void)state;
    EachLog l = {.fail_at = 2};
    JsonValue rest;
    NfError err = {0};
    const char *text = "{\"x\": 1, \"a\": [1, 2, 3, 4], \"y\": 2}";
    assert_int_equal(each(text, strlen(text), &l, &rest, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    assert_string_equal(err.message, "element 2 of a refused");
    assert_string_equal(l.log, "a[0]=1 a[1]=2 ");
    assert_int_equal(l.calls, 3);
    assert_int_equal(rest.n, 0);
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
        cmocka_unit_test(test_parse_values_and_key_order),
        cmocka_unit_test(test_parse_escapes_and_surrogate_pairs),
        cmocka_unit_test(test_parse_refuses_lone_and_misordered_surrogates),
        cmocka_unit_test(test_parse_refuses_invalid_utf8),
        cmocka_unit_test(test_parse_keeps_nul_with_length),
        cmocka_unit_test(test_parse_refuses_duplicate_keys),
        cmocka_unit_test(test_parse_depth_bound),
        cmocka_unit_test(test_parse_integers_exact),
        cmocka_unit_test(test_parse_reals_round_trip),
        cmocka_unit_test(test_parse_malformed_input_gives_offset),
        cmocka_unit_test(test_parse_equal),
        cmocka_unit_test(test_parse_reads_the_writers_output),
        cmocka_unit_test(test_each_streams_the_listed_arrays),
        cmocka_unit_test(test_each_truncated_or_corrupted_at_every_byte),
        cmocka_unit_test(test_each_refuses_duplicate_keys),
        cmocka_unit_test(test_each_refuses_what_is_not_one_object),
        cmocka_unit_test(test_each_depth_bound),
        cmocka_unit_test(test_each_passes_callback_errors_through),
        cmocka_unit_test(test_nesting_past_max_depth_sets_failed_without_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
