/* test_utf8.c — UTF-8 validation and the split-character stream (utf8.h):
 * utf8_valid_len accepts every shortest-form character of 1 to 4 bytes and
 * refuses overlong forms, surrogates, code points past U+10FFFF, stray
 * continuation bytes and truncated characters; utf8_lead_len classifies lead
 * bytes; Utf8Stream holds back an incomplete character until its last byte,
 * turns every byte that cannot become a character into U+FFFD without
 * swallowing the valid bytes after it, and utf8_stream_finish flushes a
 * pending partial character as U+FFFD. */
#include "testutil.h"

#include "utf8.h"

#define FFFD "\xEF\xBF\xBD"

static size_t valid_len(const char *s, size_t n) { return utf8_valid_len((const unsigned char *)s, n); }

static void test_valid_len_accepts_each_length(void **state) {
    (void)state;
    assert_int_equal(valid_len("A", 1), 1);
    assert_int_equal(valid_len("\x00", 1), 1);
    assert_int_equal(valid_len("\x7f", 1), 1);
    assert_int_equal(valid_len("\xc2\x80", 2), 2);         /* U+0080, smallest 2-byte */
    assert_int_equal(valid_len("\xdf\xbf", 2), 2);         /* U+07FF */
    assert_int_equal(valid_len("\xe0\xa0\x80", 3), 3);     /* U+0800, smallest 3-byte */
    assert_int_equal(valid_len("\xe2\x82\xac", 3), 3);     /* € */
    assert_int_equal(valid_len("\xed\x9f\xbf", 3), 3);     /* U+D7FF, just below surrogates */
    assert_int_equal(valid_len("\xee\x80\x80", 3), 3);     /* U+E000, just above */
    assert_int_equal(valid_len("\xef\xbf\xbf", 3), 3);     /* U+FFFF */
    assert_int_equal(valid_len("\xf0\x90\x80\x80", 4), 4); /* U+10000, smallest 4-byte */
    assert_int_equal(valid_len("\xf0\x9f\x98\x80", 4), 4); /* 😀 */
    assert_int_equal(valid_len("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF, the last code point */
}

static void test_valid_len_ignores_bytes_after_the_character(void **state) {
    (void)state;
    assert_int_equal(valid_len("\xc3\xa9xyz", 5), 2);
    assert_int_equal(valid_len("ab", 2), 1);
}

static void test_valid_len_rejects_overlong(void **state) {
    (void)state;
    assert_int_equal(valid_len("\xc0\x80", 2), 0);         /* U+0000 in 2 bytes */
    assert_int_equal(valid_len("\xc1\xbf", 2), 0);         /* U+007F in 2 bytes */
    assert_int_equal(valid_len("\xe0\x80\x80", 3), 0);     /* U+0000 in 3 bytes */
    assert_int_equal(valid_len("\xe0\x9f\xbf", 3), 0);     /* U+07FF in 3 bytes */
    assert_int_equal(valid_len("\xf0\x80\x80\x80", 4), 0); /* U+0000 in 4 bytes */
    assert_int_equal(valid_len("\xf0\x8f\xbf\xbf", 4), 0); /* U+FFFF in 4 bytes */
}

static void test_valid_len_rejects_surrogates(void **state) {
    (void)state;
    assert_int_equal(valid_len("\xed\xa0\x80", 3), 0); /* U+D800 */
    assert_int_equal(valid_len("\xed\xb0\x80", 3), 0); /* U+DC00 */
    assert_int_equal(valid_len("\xed\xbf\xbf", 3), 0); /* U+DFFF */
}

static void test_valid_len_rejects_beyond_10ffff(void **state) {
    (void)state;
    assert_int_equal(valid_len("\xf4\x90\x80\x80", 4), 0);     /* U+110000 */
    assert_int_equal(valid_len("\xf7\xbf\xbf\xbf", 4), 0);     /* U+1FFFFF */
    assert_int_equal(valid_len("\xf8\x88\x80\x80\x80", 5), 0); /* 5-byte form */
    assert_int_equal(valid_len("\xfc\x84\x80\x80\x80\x80", 6), 0);
    assert_int_equal(valid_len("\xfe", 1), 0);
    assert_int_equal(valid_len("\xff", 1), 0);
}

static void test_valid_len_rejects_truncated(void **state) {
    (void)state;
    assert_int_equal(valid_len("\xc3", 1), 0);
    assert_int_equal(valid_len("\xe2\x82", 2), 0);
    assert_int_equal(valid_len("\xf0\x9f\x98", 3), 0);
    /* the full bytes are in memory, but n says fewer are available */
    assert_int_equal(valid_len("\xf0\x9f\x98\x80", 3), 0);
    assert_int_equal(valid_len("\xe2\x82\xac", 1), 0);
}

static void test_valid_len_rejects_bad_continuation(void **state) {
    (void)state;
    assert_int_equal(valid_len("\x80", 1), 0); /* lone continuation byte */
    assert_int_equal(valid_len("\xbf", 1), 0);
    assert_int_equal(valid_len("\xc3"
                               "A",
                               2),
                     0); /* ASCII where a continuation belongs */
    assert_int_equal(valid_len("\xe2\x82"
                               "A",
                               3),
                     0);
    assert_int_equal(valid_len("\xf0\x9f\x98\xc3", 4), 0); /* a lead byte where a continuation belongs */
}

static void test_lead_len(void **state) {
    (void)state;
    assert_int_equal(utf8_lead_len(0x00), 1);
    assert_int_equal(utf8_lead_len('a'), 1);
    assert_int_equal(utf8_lead_len(0x7f), 1);
    assert_int_equal(utf8_lead_len(0x80), 0);
    assert_int_equal(utf8_lead_len(0xbf), 0);
    assert_int_equal(utf8_lead_len(0xc2), 2);
    assert_int_equal(utf8_lead_len(0xdf), 2);
    assert_int_equal(utf8_lead_len(0xe0), 3);
    assert_int_equal(utf8_lead_len(0xef), 3);
    assert_int_equal(utf8_lead_len(0xf0), 4);
    assert_int_equal(utf8_lead_len(0xf4), 4);
    assert_int_equal(utf8_lead_len(0xf8), 0);
    assert_int_equal(utf8_lead_len(0xff), 0);
}

/* Pushes bytes one call at a time and returns everything written, then finishes. */
typedef struct {
    char text[256];
    size_t len;
} Collected;

static size_t push(Utf8Stream *s, const char *bytes, size_t n, Collected *c) {
    char out[3 * (16 + 4)];
    assert_true(n <= 16);
    size_t w = utf8_stream_push(s, bytes, n, out);
    assert_true(w <= sizeof out);
    assert_true(c->len + w < sizeof c->text);
    memcpy(c->text + c->len, out, w);
    c->len += w;
    c->text[c->len] = '\0';
    return w;
}

static size_t finish(Utf8Stream *s, Collected *c) {
    char out[3];
    size_t w = utf8_stream_finish(s, out);
    assert_true(w <= 3);
    memcpy(c->text + c->len, out, w);
    c->len += w;
    c->text[c->len] = '\0';
    return w;
}

static void assert_collected(const Collected *c, const char *expected, size_t n) {
    assert_int_equal(c->len, n);
    assert_memory_equal(c->text, expected, n);
}

static void test_stream_ascii_passes_through(void **state) {
    (void)state;
    Utf8Stream s = {0};
    Collected c = {0};
    assert_int_equal(push(&s, "hello", 5, &c), 5);
    assert_int_equal(finish(&s, &c), 0);
    assert_collected(&c, "hello", 5);
}

static void test_stream_emoji_one_byte_at_a_time(void **state) {
    (void)state;
    const char emoji[] = "\xf0\x9f\x98\x80";
    Utf8Stream s = {0};
    Collected c = {0};
    assert_int_equal(push(&s, emoji + 0, 1, &c), 0);
    assert_int_equal(push(&s, emoji + 1, 1, &c), 0);
    assert_int_equal(push(&s, emoji + 2, 1, &c), 0);
    assert_int_equal(s.n_pending, 3);
    assert_int_equal(push(&s, emoji + 3, 1, &c), 4);
    assert_int_equal(s.n_pending, 0);
    assert_collected(&c, emoji, 4);
    assert_int_equal(finish(&s, &c), 0);
}

static void test_stream_character_split_across_pushes_with_text_around(void **state) {
    (void)state;
    Utf8Stream s = {0};
    Collected c = {0};
    assert_int_equal(push(&s, "a\xe2\x82", 3, &c), 1);
    assert_int_equal(push(&s,
                          "\xac"
                          "b",
                          2, &c),
                     4);
    assert_collected(&c,
                     "a\xe2\x82\xac"
                     "b",
                     5);
}

static void test_stream_invalid_lead_byte_gives_replacement(void **state) {
    (void)state;
    Utf8Stream s = {0};
    Collected c = {0};
    push(&s, "\xff", 1, &c);
    assert_collected(&c, FFFD, 3);
    assert_int_equal(s.n_pending, 0);

    Utf8Stream s2 = {0};
    Collected c2 = {0};
    push(&s2, "x\x80y", 3, &c2);
    assert_collected(&c2, "x" FFFD "y", 5);
}

static void test_stream_lead_then_ascii_gives_replacement_then_ascii(void **state) {
    (void)state;
    Utf8Stream s = {0};
    Collected c = {0};
    assert_int_equal(push(&s, "\xe2", 1, &c), 0);
    push(&s, "A", 1, &c);
    assert_collected(&c, FFFD "A", 4);
    assert_int_equal(s.n_pending, 0);

    /* the same with the bytes in one push and two continuation bytes missing */
    Utf8Stream s2 = {0};
    Collected c2 = {0};
    push(&s2,
         "\xf0\x9f"
         "Z",
         3, &c2);
    assert_collected(&c2, FFFD "Z", 4);
}

static void test_stream_lead_then_new_lead_restarts(void **state) {
    (void)state;
    /* an unfinished 3-byte char interrupted by a complete 2-byte char */
    Utf8Stream s = {0};
    Collected c = {0};
    push(&s, "\xe2\xc3\xa9", 3, &c);
    assert_collected(&c, FFFD "\xc3\xa9", 5);
}

static void test_stream_overlong_and_surrogate_become_replacement(void **state) {
    (void)state;
    Utf8Stream s = {0};
    Collected c = {0};
    push(&s,
         "\xc0\xaf"
         "a",
         3, &c);
    /* the output must be valid UTF-8 with the 'a' kept */
    assert_true(c.len >= 4);
    assert_memory_equal(c.text, FFFD, 3);
    assert_int_equal(c.text[c.len - 1], 'a');
    for (size_t i = 0; i < c.len;) {
        size_t l = utf8_valid_len((const unsigned char *)c.text + i, c.len - i);
        assert_true(l > 0);
        i += l;
    }

    Utf8Stream s2 = {0};
    Collected c2 = {0};
    push(&s2,
         "\xed\xa0\x80"
         "b",
         4, &c2);
    assert_true(c2.len >= 4);
    assert_memory_equal(c2.text, FFFD, 3);
    assert_int_equal(c2.text[c2.len - 1], 'b');
    for (size_t i = 0; i < c2.len; i += 3)
        if (i + 1 < c2.len) assert_memory_equal(c2.text + i, FFFD, 3);
}

static void test_stream_finish_with_pending_gives_replacement(void **state) {
    (void)state;
    Utf8Stream s = {0};
    Collected c = {0};
    push(&s, "ok\xf0\x9f\x98", 5, &c);
    assert_collected(&c, "ok", 2);
    assert_int_equal(finish(&s, &c), 3);
    assert_collected(&c, "ok" FFFD, 5);
    assert_int_equal(s.n_pending, 0);
    /* finishing again writes nothing */
    assert_int_equal(finish(&s, &c), 0);
}

static void test_stream_usable_after_finish(void **state) {
    (void)state;
    Utf8Stream s = {0};
    Collected c = {0};
    push(&s, "\xc3", 1, &c);
    finish(&s, &c);
    push(&s, "\xc3\xa9", 2, &c);
    assert_collected(&c, FFFD "\xc3\xa9", 5);
}

static void test_stream_output_bound_holds_for_worst_case(void **state) {
    (void)state;
    /* 16 invalid bytes after 3 pending ones: every byte becomes U+FFFD */
    Utf8Stream s = {0};
    Collected c = {0};
    push(&s, "\xf0\x9f\x98", 3, &c);
    char bad[16];
    memset(bad, 0xff, sizeof bad);
    size_t w = push(&s, bad, sizeof bad, &c);
    assert_int_equal(w, 3 * 17);
    for (size_t i = 0; i < c.len; i += 3) assert_memory_equal(c.text + i, FFFD, 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_len_accepts_each_length),
        cmocka_unit_test(test_valid_len_ignores_bytes_after_the_character),
        cmocka_unit_test(test_valid_len_rejects_overlong),
        cmocka_unit_test(test_valid_len_rejects_surrogates),
        cmocka_unit_test(test_valid_len_rejects_beyond_10ffff),
        cmocka_unit_test(test_valid_len_rejects_truncated),
        cmocka_unit_test(test_valid_len_rejects_bad_continuation),
        cmocka_unit_test(test_lead_len),
        cmocka_unit_test(test_stream_ascii_passes_through),
        cmocka_unit_test(test_stream_emoji_one_byte_at_a_time),
        cmocka_unit_test(test_stream_character_split_across_pushes_with_text_around),
        cmocka_unit_test(test_stream_invalid_lead_byte_gives_replacement),
        cmocka_unit_test(test_stream_lead_then_ascii_gives_replacement_then_ascii),
        cmocka_unit_test(test_stream_lead_then_new_lead_restarts),
        cmocka_unit_test(test_stream_overlong_and_surrogate_become_replacement),
        cmocka_unit_test(test_stream_finish_with_pending_gives_replacement),
        cmocka_unit_test(test_stream_usable_after_finish),
        cmocka_unit_test(test_stream_output_bound_holds_for_worst_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
