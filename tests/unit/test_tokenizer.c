/* test_tokenizer.c — tokenizer.bin loading and SentencePiece-style BPE
 * (tokenizer.h). Small tokenizer files are written by the tests in llama2.c's
 * layout (ids 0-2 <unk>, "\n<s>\n", "\n</s>\n", then the 256 "<0xXX>" byte
 * pieces at ids 3..258, then normal pieces) to check: merges take the
 * highest score and the leftmost pair on ties, the dummy-prefix space, byte
 * fallback for characters outside the vocabulary, invalid UTF-8 kept as its
 * own bytes, BOS/EOS, empty text, decode(encode(x)) == x, and
 * tokenizer_decode_piece's leading-space and byte-piece rules. Every kind of
 * corrupt file must fail with NF_ERR_TOKENIZER. The real tok512.bin and the
 * Llama 2 tokenizer are checked for their shape, for known ids (from
 * SentencePiece) and for round trips, including a 1 MB input. */
#include "testutil.h"

#include <math.h>

#include "tokenizer.h"

/* tokenizer.bin's control ids (llama2.c fixes them; Tokenizer.bos_id / eos_id say so at run time) */
#define TOKEN_BOS 1
#define TOKEN_EOS 2
#define TOKEN_UNK 0

/* ---- writing tokenizer files ------------------------------------------------ */

static void put_piece_n(Bytes *b, float score, const char *s, int32_t len) {
    put_f32(b, score);
    put_i32(b, len);
    bytes_put(b, s, (size_t)len);
}

static void put_piece(Bytes *b, float score, const char *s) { put_piece_n(b, score, s, (int32_t)strlen(s)); }

/* Header plus the control pieces and (optionally) the 256 byte pieces, as llama2.c writes them. */
static void put_standard_start(Bytes *b, int32_t max_token_length, bool byte_pieces) {
    put_i32(b, max_token_length);
    put_piece(b, 0.0f, "<unk>");
    put_piece(b, 0.0f, "\n<s>\n");
    put_piece(b, 0.0f, "\n</s>\n");
    if (byte_pieces)
        for (int i = 0; i < 256; i++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", i);
            put_piece(b, 0.0f, name);
        }
}

#define BYTE_ID(x)   (3 + (int)(unsigned char)(x))
#define FIRST_NORMAL 259

typedef struct {
    const char *piece;
    float score;
} PieceDef;

/* Loads a tokenizer made of the standard start and `pieces` (ids FIRST_NORMAL + i). */
static void load_synthetic(Tokenizer *t, const PieceDef *pieces, int n) {
    Bytes b = {0};
    put_standard_start(&b, 16, true);
    for (int i = 0; i < n; i++) put_piece(&b, pieces[i].score, pieces[i].piece);
    char *path = write_temp_file(b.data, b.len);
    free(b.data);
    NfError err = {0};
    int rc = tokenizer_load(t, path, &err);
    remove_temp_file(path);
    if (rc != 0) fail_msg("tokenizer_load: %s", err.message);
    assert_int_equal(t->vocab_size, FIRST_NORMAL + n);
    assert_int_equal(t->n_byte_pieces, 256);
}

/* The vocabulary most tests use. */
enum { SP = FIRST_NORMAL, A, B, C, SP_A, AB, SP_AB, BC, EURO, CAPS_X };
static const PieceDef BASE[] = {
    {" ", -1.0f},   {"a", -2.0f},  {"b", -3.0f},
    {"c", -4.0f},   {" a", -5.0f}, {"ab", -6.0f},
    {" ab", -7.0f}, {"bc", -8.0f}, {"\xe2\x82\xac", -9.0f},
    {"X", -10.0f},
};
#define N_BASE ((int)(sizeof BASE / sizeof *BASE))

static void encode_ok(const Tokenizer *t, const char *text, size_t n, bool bos, bool eos, TokenList *out) {
    NfError err = {0};
    memset(out, 0, sizeof *out);
    if (tokenizer_encode(t, text, n, (bos ? TOKENIZE_BOS : 0u) | (eos ? TOKENIZE_EOS : 0u), out, &err) != 0)
        fail_msg("encode: %s", err.message);
}

static void assert_ids(const Tokenizer *t, const char *text, const int *expected, size_t n_expected) {
    TokenList l;
    encode_ok(t, text, strlen(text), false, false, &l);
    bool same = l.len == n_expected;
    for (size_t i = 0; same && i < n_expected; i++) same = l.ids[i] == expected[i];
    if (!same) {
        char got[256] = "", want[256] = "";
        for (size_t i = 0; i < l.len && strlen(got) < 200; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", l.ids[i]);
        for (size_t i = 0; i < n_expected && strlen(want) < 200; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%d ", expected[i]);
        token_list_free(&l);
        fail_msg("encoding '%s': got [%s] expected [%s]", text, got, want);
    }
    token_list_free(&l);
}

#define ASSERT_IDS(t, text, ...)                                              \
    do {                                                                      \
        const int expected_[] = {__VA_ARGS__};                                \
        assert_ids(t, text, expected_, sizeof expected_ / sizeof *expected_); \
    } while (0)

static void assert_round_trip(const Tokenizer *t, const char *text, size_t n) {
    TokenList l;
    encode_ok(t, text, n, false, false, &l);
    NfError err = {0};
    size_t len = 0;
    char *back = tokenizer_decode(t, l.ids, l.len, &len, &err);
    assert_non_null(back);
    if (len != n || memcmp(back, text, n) != 0) fail_msg("round trip of '%.*s' gave '%s'", (int)n, text, back);
    assert_int_equal(back[len], '\0');
    free(back);
    token_list_free(&l);
}

/* ---- encoding ----------------------------------------------------------------- */

static void test_dummy_prefix_space_is_added(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    ASSERT_IDS(&t, "a", SP_A);
    ASSERT_IDS(&t, "c", SP, C);
    ASSERT_IDS(&t, " c", SP, SP, C);
    tokenizer_free(&t);
}

static void test_merges_follow_vocabulary(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    ASSERT_IDS(&t, "ab", SP_AB); /* " a"+"b" and " "+"ab" both lead to " ab" */
    ASSERT_IDS(&t, "ab ab", SP_AB, SP_AB);
    ASSERT_IDS(&t, "cab", SP, C, AB);
    ASSERT_IDS(&t, "abc", SP_AB, C); /* " ab" then no "abc" piece */
    tokenizer_free(&t);
}

static void test_merge_picks_highest_score(void **state) {
    (void)state;
    /* " abc": pairs "ab" and "bc" compete; the better-scored one wins */
    const PieceDef bc_wins[] = {{" ", -1}, {"a", -1}, {"b", -1}, {"c", -1}, {"ab", -5}, {"bc", -2}};
    const PieceDef ab_wins[] = {{" ", -1}, {"a", -1}, {"b", -1}, {"c", -1}, {"ab", -2}, {"bc", -5}};
    Tokenizer t;
    load_synthetic(&t, bc_wins, 6);
    ASSERT_IDS(&t, "abc", FIRST_NORMAL + 0, FIRST_NORMAL + 1, FIRST_NORMAL + 5);
    tokenizer_free(&t);
    load_synthetic(&t, ab_wins, 6);
    ASSERT_IDS(&t, "abc", FIRST_NORMAL + 0, FIRST_NORMAL + 4, FIRST_NORMAL + 3);
    tokenizer_free(&t);
}

static void test_merge_order_is_score_not_position(void **state) {
    (void)state;
    /* "abcd": "cd" (best) merges first, then "ab"; "bc" (worst) never gets its chance */
    const PieceDef defs[] = {{" ", 0},   {"a", 0},   {"b", 0},   {"c", 0},     {"d", 0},
                             {"ab", -2}, {"bc", -3}, {"cd", -1}, {"abcd", -9}, {" ab", -8}};
    Tokenizer t;
    load_synthetic(&t, defs, 10);
    /* " a b c d" -> cd -> ab -> " ab" -> " ab"+"cd" is not a piece */
    ASSERT_IDS(&t, "abcd", FIRST_NORMAL + 9, FIRST_NORMAL + 7);
    tokenizer_free(&t);
}

static void test_score_ties_merge_leftmost(void **state) {
    (void)state;
    const PieceDef defs[] = {{" ", -1}, {"a", -1}, {"b", -1}, {"aa", -3}, {"ba", -4}, {"ab", -4}};
    Tokenizer t;
    load_synthetic(&t, defs, 6);
    /* " aaa": both "aa" pairs score the same; the left one merges */
    ASSERT_IDS(&t, "aaa", FIRST_NORMAL + 0, FIRST_NORMAL + 3, FIRST_NORMAL + 1);
    /* " bab": "ba" and "ab" tie; "ba" is to the left */
    ASSERT_IDS(&t, "bab", FIRST_NORMAL + 0, FIRST_NORMAL + 4, FIRST_NORMAL + 2);
    /* " aaaa": the left "aa" first, then the remaining right pair */
    ASSERT_IDS(&t, "aaaa", FIRST_NORMAL + 0, FIRST_NORMAL + 3, FIRST_NORMAL + 3);
    tokenizer_free(&t);
}

static void test_merge_through_symbol_not_in_vocab(void **state) {
    (void)state;
    /* "q" alone is not a piece, but "qu" is: the pair still merges */
    const PieceDef defs[] = {{" ", -1}, {"u", -1}, {"qu", -2}};
    Tokenizer t;
    load_synthetic(&t, defs, 3);
    ASSERT_IDS(&t, "qu", FIRST_NORMAL + 0, FIRST_NORMAL + 2);
    ASSERT_IDS(&t, "q", FIRST_NORMAL + 0, BYTE_ID('q'));
    tokenizer_free(&t);
}

static void test_byte_fallback_for_unknown_characters(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    ASSERT_IDS(&t, "a\nb", SP_A, BYTE_ID('\n'), B);
    /* a 3-byte character outside the vocabulary: three byte pieces */
    ASSERT_IDS(&t, "\xe4\xb8\xad", SP, BYTE_ID(0xe4), BYTE_ID(0xb8), BYTE_ID(0xad));
    /* a 4-byte one */
    ASSERT_IDS(&t, "\xf0\x9f\x98\x80", SP, BYTE_ID(0xf0), BYTE_ID(0x9f), BYTE_ID(0x98), BYTE_ID(0x80));
    /* a multibyte character that is a piece stays whole */
    ASSERT_IDS(&t, "\xe2\x82\xac", SP, EURO);
    /* case matters */
    ASSERT_IDS(&t, "A", SP, BYTE_ID('A'));
    ASSERT_IDS(&t, "X", SP, CAPS_X);
    tokenizer_free(&t);
}

static void test_invalid_utf8_falls_back_to_its_own_bytes(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    /* as llama2.c's run.c: the byte itself, so decoding gives it back (SentencePiece would say U+FFFD) */
    ASSERT_IDS(&t, "a\xff", SP_A, BYTE_ID(0xff));
    /* a truncated 2-byte character before ASCII: its byte, then the letter */
    ASSERT_IDS(&t,
               "\xc3"
               "b",
               SP, BYTE_ID(0xc3), B);
    tokenizer_free(&t);

    /* U+FFFD as a piece is not used for invalid bytes */
    const PieceDef defs[] = {{" ", -1}, {"\xef\xbf\xbd", -1}};
    load_synthetic(&t, defs, 2);
    ASSERT_IDS(&t, "\x80\x80", FIRST_NORMAL, BYTE_ID(0x80), BYTE_ID(0x80));
    tokenizer_free(&t);
}

static void test_lower_one_eighths_block_is_kept(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    /* U+2581 is a character like any other (SentencePiece reads it as a space, which loses it) */
    ASSERT_IDS(&t,
               "\xe2\x96\x81"
               "a",
               SP, BYTE_ID(0xe2), BYTE_ID(0x96), BYTE_ID(0x81), A);
    tokenizer_free(&t);
}

static void test_control_and_byte_pieces_never_match_text(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    assert_int_equal(tokenizer_find(&t, "<unk>", 5), -1);
    assert_int_equal(tokenizer_find(&t, "\n<s>\n", 5), -1);
    assert_int_equal(tokenizer_find(&t, "\n</s>\n", 6), -1);
    assert_int_equal(tokenizer_find(&t, "<0x41>", 6), -1);
    assert_int_equal(tokenizer_find(&t, "ab", 2), AB);
    assert_int_equal(tokenizer_find(&t, " ab", 3), SP_AB);
    assert_int_equal(tokenizer_find(&t, "abc", 3), -1);
    assert_int_equal(tokenizer_find(&t, "a", 1), A);
    TokenList l;
    encode_ok(&t, "\n<s>\n", 5, false, false, &l);
    for (size_t i = 0; i < l.len; i++) assert_true(l.ids[i] > TOKEN_EOS);
    token_list_free(&l);
    tokenizer_free(&t);
}

static void test_byte_piece_table(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    for (int i = 0; i < 256; i++) assert_int_equal(t.byte_piece[i], 3 + i);
    tokenizer_free(&t);
}

static void test_bos_and_eos(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    TokenList l;
    encode_ok(&t, "ab", 2, true, false, &l);
    assert_int_equal(l.len, 2);
    assert_int_equal(l.ids[0], TOKEN_BOS);
    assert_int_equal(l.ids[1], SP_AB);
    token_list_free(&l);
    encode_ok(&t, "ab", 2, false, true, &l);
    assert_int_equal(l.len, 2);
    assert_int_equal(l.ids[0], SP_AB);
    assert_int_equal(l.ids[1], TOKEN_EOS);
    token_list_free(&l);
    encode_ok(&t, "ab", 2, true, true, &l);
    assert_int_equal(l.len, 3);
    assert_int_equal(l.ids[0], TOKEN_BOS);
    assert_int_equal(l.ids[2], TOKEN_EOS);
    token_list_free(&l);
    tokenizer_free(&t);
}

/* "<s>" / "</s>" in the text: control ids only with TOKENIZE_PARSE_SPECIAL; each part keeps its dummy prefix. */
static void test_parse_special(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    assert_int_equal(t.bos_id, TOKEN_BOS);
    assert_true(t.add_bos && !t.add_eos);
    TokenList l = {0};
    NfError err;
    assert_int_equal(tokenizer_encode(&t, "ab</s>ab<s>", 11, TOKENIZE_PARSE_SPECIAL, &l, &err), 0);
    int want[] = {SP_AB, TOKEN_EOS, SP_AB, TOKEN_BOS};
    assert_int_equal(l.len, 4);
    assert_memory_equal(l.ids, want, sizeof want);
    l.len = 0;
    assert_int_equal(tokenizer_encode(&t, "ab</s>", 6, 0, &l, &err), 0);
    for (size_t i = 0; i < l.len; i++) assert_true(l.ids[i] != TOKEN_EOS);
    token_list_free(&l);
    tokenizer_free(&t);
}

static void test_empty_text(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    TokenList l;
    encode_ok(&t, "", 0, false, false, &l);
    assert_int_equal(l.len, 0);
    token_list_free(&l);
    encode_ok(&t, "", 0, true, false, &l);
    assert_int_equal(l.len, 1);
    assert_int_equal(l.ids[0], TOKEN_BOS);
    token_list_free(&l);
    encode_ok(&t, "", 0, true, true, &l);
    assert_int_equal(l.len, 2);
    assert_int_equal(l.ids[0], TOKEN_BOS);
    assert_int_equal(l.ids[1], TOKEN_EOS);
    token_list_free(&l);
    tokenizer_free(&t);
}

static void test_encode_appends_to_existing_list(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    TokenList l;
    encode_ok(&t, "a", 1, false, false, &l);
    NfError err = {0};
    assert_int_equal(tokenizer_encode(&t, "c", 1, 0, &l, &err), 0);
    assert_int_equal(l.len, 3);
    assert_int_equal(l.ids[0], SP_A);
    assert_int_equal(l.ids[1], SP);
    assert_int_equal(l.ids[2], C);
    token_list_free(&l);
    tokenizer_free(&t);
}

static void test_round_trip_synthetic(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    const char *texts[] = {
        "a",
        "ab",
        "abc ab  cab",
        " leading space",
        "trailing  ",
        "\n",
        "line\nbreaks\n\n",
        "tab\there",
        "\xe2\x82\xac 5",
        "\xe4\xb8\xad\xe6\x96\x87",
        "\xf0\x9f\x98\x80\xf0\x9f\x8e\x89",
        "  ",
        "X<0x41><s>",
        "\x01\x7f",
        "caf\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) assert_round_trip(&t, texts[i], strlen(texts[i]));
    /* an embedded NUL byte survives too */
    assert_round_trip(&t, "a\0b", 3);
    tokenizer_free(&t);
}

/* ---- decoding ------------------------------------------------------------------ */

static void test_decode_piece_drops_leading_space_at_start_and_after_bos(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    unsigned char byte;
    size_t len;
    const char *p = tokenizer_decode_piece(&t, -1, SP_AB, &len, &byte);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "ab", 2);
    p = tokenizer_decode_piece(&t, TOKEN_BOS, SP_AB, &len, &byte);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "ab", 2);
    p = tokenizer_decode_piece(&t, A, SP_AB, &len, &byte);
    assert_int_equal(len, 3);
    assert_memory_equal(p, " ab", 3);
    p = tokenizer_decode_piece(&t, -1, AB, &len, &byte);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "ab", 2);
    /* a lone space piece at the start becomes empty */
    tokenizer_decode_piece(&t, -1, SP, &len, &byte);
    assert_int_equal(len, 0);
    tokenizer_free(&t);
}

static void test_decode_piece_byte_pieces_are_raw_bytes(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    unsigned char byte = 0;
    size_t len;
    const int bytes[] = {0x00, 0x0A, 0x20, 0x41, 0x80, 0xFF};
    for (int i = 0; i < 6; i++) {
        const char *p = tokenizer_decode_piece(&t, A, BYTE_ID(bytes[i]), &len, &byte);
        assert_int_equal(len, 1);
        assert_int_equal((unsigned char)p[0], bytes[i]);
    }
    /* a byte-piece space at the start is data, not the dummy prefix */
    const char *p = tokenizer_decode_piece(&t, -1, BYTE_ID(' '), &len, &byte);
    assert_int_equal(len, 1);
    assert_int_equal(p[0], ' ');
    tokenizer_free(&t);
}

static void test_decode_piece_control_and_invalid_ids_are_empty(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    unsigned char byte;
    size_t len = 99;
    tokenizer_decode_piece(&t, -1, TOKEN_BOS, &len, &byte);
    assert_int_equal(len, 0);
    len = 99;
    tokenizer_decode_piece(&t, A, TOKEN_EOS, &len, &byte);
    assert_int_equal(len, 0);
    len = 99;
    tokenizer_decode_piece(&t, A, -5, &len, &byte);
    assert_int_equal(len, 0);
    len = 99;
    tokenizer_decode_piece(&t, A, t.vocab_size, &len, &byte);
    assert_int_equal(len, 0);
    tokenizer_free(&t);
}

static void test_decode_sequence(void **state) {
    (void)state;
    Tokenizer t;
    load_synthetic(&t, BASE, N_BASE);
    const int ids[] = {TOKEN_BOS, SP_AB, SP, C, BYTE_ID('\n'), EURO, TOKEN_EOS, 100000, -1};
    NfError err = {0};
    size_t len = 0;
    char *s = tokenizer_decode(&t, ids, sizeof ids / sizeof *ids, &len, &err);
    assert_non_null(s);
    assert_int_equal(len, strlen("ab c\n\xe2\x82\xac"));
    assert_string_equal(s, "ab c\n\xe2\x82\xac");
    free(s);
    s = tokenizer_decode(&t, NULL, 0, &len, &err);
    assert_non_null(s);
    assert_int_equal(len, 0);
    assert_string_equal(s, "");
    free(s);
    tokenizer_free(&t);
}

/* ---- corrupt files --------------------------------------------------------------- */

static void assert_load_fails_bytes(const void *data, size_t n, const char *what) {
    char *path = write_temp_file(data, n);
    Tokenizer t;
    NfError err = {0};
    int rc = tokenizer_load(&t, path, &err);
    remove_temp_file(path);
    if (rc != -1) fail_msg("%s: loaded (rc %d)", what, rc);
    assert_non_null(err.code);
    assert_string_equal(err.code, NF_ERR_TOKENIZER);
    assert_true(strlen(err.message) > 0);
    /* nothing is left allocated */
    assert_null(t.blob);
    assert_null(t.lookup);
    assert_int_equal(t.vocab_size, 0);
}

static void assert_load_fails(Bytes *b, const char *what) {
    assert_load_fails_bytes(b->data, b->len, what);
    free(b->data);
    memset(b, 0, sizeof *b);
}

static void test_load_empty_file(void **state) {
    (void)state;
    assert_load_fails_bytes("", 0, "empty file");
}

static void test_load_two_byte_file(void **state) {
    (void)state;
    assert_load_fails_bytes("\x07\x00", 2, "2-byte file");
}

static void test_load_bad_max_token_length(void **state) {
    (void)state;
    const int32_t bad[] = {0, -1, 65537, 1 << 30, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        Bytes b = {0};
        put_standard_start(&b, bad[i], false);
        put_piece(&b, 0.0f, "a");
        assert_load_fails(&b, "max_token_length");
    }
}

static void test_load_piece_length_negative(void **state) {
    (void)state;
    Bytes b = {0};
    put_standard_start(&b, 8, false);
    put_f32(&b, 0.0f);
    put_i32(&b, -1);
    bytes_put(&b, "abcd", 4);
    assert_load_fails(&b, "negative length");
    put_standard_start(&b, 8, false);
    put_f32(&b, 0.0f);
    put_i32(&b, INT32_MIN);
    assert_load_fails(&b, "INT32_MIN length");
}

static void test_load_piece_length_over_max(void **state) {
    (void)state;
    Bytes b = {0};
    put_standard_start(&b, 6, false); /* "\n</s>\n" is 6: fits */
    put_piece(&b, 0.0f, "1234567");   /* 7 > 6 */
    assert_load_fails(&b, "length over max_token_length");
}

static void test_load_piece_past_eof(void **state) {
    (void)state;
    Bytes b = {0};
    put_standard_start(&b, 16, false);
    put_f32(&b, 0.0f);
    put_i32(&b, 10);
    bytes_put(&b, "abc", 3); /* 7 bytes short */
    assert_load_fails(&b, "piece past EOF");
    /* a record cut inside its 8-byte score/length prefix */
    put_standard_start(&b, 16, false);
    put_f32(&b, 0.0f);
    bytes_put(&b, "\x01\x00", 2);
    assert_load_fails(&b, "record prefix past EOF");
}

static void test_load_nan_and_infinite_score(void **state) {
    (void)state;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        Bytes b = {0};
        put_standard_start(&b, 16, false);
        put_piece(&b, bad[i], "a");
        assert_load_fails(&b, "non-finite score");
    }
}

static void test_load_fewer_than_three_pieces(void **state) {
    (void)state;
    for (int n = 0; n < 3; n++) {
        Bytes b = {0};
        put_i32(&b, 8);
        const char *names[] = {"<unk>", "\n<s>\n", "\n</s>\n"};
        for (int i = 0; i < n; i++) put_piece(&b, 0.0f, names[i]);
        assert_load_fails(&b, "fewer than 3 pieces");
    }
}

static void test_load_missing_file_is_io_error(void **state) {
    (void)state;
    Tokenizer t;
    NfError err = {0};
    assert_int_equal(tokenizer_load(&t, "/nonexistent/nf_tokenizer.bin", &err), -1);
    assert_string_equal(err.code, NF_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/nf_tokenizer.bin"));
}

static void test_load_minimal_valid(void **state) {
    (void)state;
    Bytes b = {0};
    put_standard_start(&b, 6, false);
    char *path = write_temp_file(b.data, b.len);
    free(b.data);
    Tokenizer t;
    NfError err = {0};
    assert_int_equal(tokenizer_load(&t, path, &err), 0);
    remove_temp_file(path);
    assert_int_equal(t.vocab_size, 3);
    assert_int_equal(t.max_token_length, 6);
    assert_int_equal(t.n_byte_pieces, 0);
    /* without byte pieces, unknown bytes become <unk> */
    TokenList l;
    encode_ok(&t, "z", 1, false, false, &l);
    assert_int_equal(l.len, 2);
    assert_int_equal(l.ids[0], TOKEN_UNK);
    assert_int_equal(l.ids[1], TOKEN_UNK);
    token_list_free(&l);
    assert_int_equal(tokenizer_check_vocab(&t, 3, &err), 0);
    assert_int_equal(tokenizer_check_vocab(&t, 4, &err), -1);
    assert_string_equal(err.code, NF_ERR_TOKENIZER);
    tokenizer_free(&t);
}

/* ---- real tokenizers -------------------------------------------------------------- */

static bool load_shared(Tokenizer *t, const char *name) {
    char buf[512];
    const char *path = shared_data_path(name, buf, sizeof buf);
    if (!path) return false;
    NfError err = {0};
    if (tokenizer_load(t, path, &err) != 0) fail_msg("%s: %s", name, err.message);
    return true;
}

static void test_tok512_shape(void **state) {
    (void)state;
    Tokenizer t;
    if (!load_shared(&t, "tok512.bin")) {
        skip();
        return;
    }
    assert_int_equal(t.vocab_size, 512);
    assert_int_equal(t.max_token_length, 7);
    assert_int_equal(t.n_byte_pieces, 256);
    for (int i = 0; i < 256; i++) assert_int_equal(t.byte_piece[i], 3 + i);
    assert_int_equal(tokenizer_check_vocab(&t, 512, NULL), 0);
    tokenizer_free(&t);
}

static void test_tok512_round_trip(void **state) {
    (void)state;
    Tokenizer t;
    if (!load_shared(&t, "tok512.bin")) {
        skip();
        return;
    }
    const char *text = "Once upon a time";
    TokenList l;
    encode_ok(&t, text, strlen(text), true, false, &l);
    /* every word is one piece: " Once" 403, " upon" 407, " a" 261, " time" 378 */
    const int expected[] = {TOKEN_BOS, 403, 407, 261, 378};
    assert_int_equal(l.len, 5);
    for (size_t i = 0; i < 5; i++) assert_int_equal(l.ids[i], expected[i]);
    size_t len;
    char *back = tokenizer_decode(&t, l.ids, l.len, &len, NULL);
    assert_non_null(back);
    assert_string_equal(back, text);
    free(back);
    token_list_free(&l);
    assert_round_trip(&t, "Lily and Ben went to the park.\nThey saw a big dog! \xe2\x82\xac\xf0\x9f\x98\x80",
                      strlen("Lily and Ben went to the park.\nThey saw a big dog! \xe2\x82\xac\xf0\x9f\x98\x80"));
    tokenizer_free(&t);
}

static void test_llama2_known_ids(void **state) {
    (void)state;
    Tokenizer t;
    if (!load_shared(&t, "llama2_tokenizer.bin")) {
        skip();
        return;
    }
    assert_int_equal(t.vocab_size, 32000);
    /* ids from SentencePiece with llama2_tokenizer.model */
    ASSERT_IDS(&t, "Once upon a time", 9038, 2501, 263, 931);
    ASSERT_IDS(&t, "ab ab ab ", 633, 633, 633, 29871);
    /* an invalid byte is its byte piece <0xFF> (258), not U+FFFD (30140) as in SentencePiece */
    ASSERT_IDS(&t, "hello\xff", 22172, 258);
    ASSERT_IDS(&t,
               "a\xff"
               "b",
               263, 258, 29890);
    tokenizer_free(&t);
}

static void test_llama2_one_megabyte_round_trip(void **state) {
    (void)state;
    Tokenizer t;
    if (!load_shared(&t, "llama2_tokenizer.bin")) {
        skip();
        return;
    }
    const size_t reps = 349526; /* 3 * reps > 1 MiB */
    size_t n = 3 * reps;
    char *text = malloc(n);
    assert_non_null(text);
    for (size_t i = 0; i < reps; i++) memcpy(text + 3 * i, "ab ", 3);
    TokenList l;
    encode_ok(&t, text, n, false, false, &l);
    /* SentencePiece: "▁ab" (633) per repetition, then the trailing "▁" (29871) */
    assert_int_equal(l.len, reps + 1);
    for (size_t i = 0; i < reps; i++)
        if (l.ids[i] != 633) fail_msg("id %zu is %d, expected 633", i, l.ids[i]);
    assert_int_equal(l.ids[reps], 29871);
    size_t len;
    NfError err = {0};
    char *back = tokenizer_decode(&t, l.ids, l.len, &len, &err);
    assert_non_null(back);
    assert_int_equal(len, n);
    assert_memory_equal(back, text, n);
    free(back);
    token_list_free(&l);
    free(text);
    tokenizer_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dummy_prefix_space_is_added),
        cmocka_unit_test(test_merges_follow_vocabulary),
        cmocka_unit_test(test_merge_picks_highest_score),
        cmocka_unit_test(test_merge_order_is_score_not_position),
        cmocka_unit_test(test_score_ties_merge_leftmost),
        cmocka_unit_test(test_merge_through_symbol_not_in_vocab),
        cmocka_unit_test(test_byte_fallback_for_unknown_characters),
        cmocka_unit_test(test_invalid_utf8_falls_back_to_its_own_bytes),
        cmocka_unit_test(test_lower_one_eighths_block_is_kept),
        cmocka_unit_test(test_control_and_byte_pieces_never_match_text),
        cmocka_unit_test(test_byte_piece_table),
        cmocka_unit_test(test_bos_and_eos),
        cmocka_unit_test(test_parse_special),
        cmocka_unit_test(test_empty_text),
        cmocka_unit_test(test_encode_appends_to_existing_list),
        cmocka_unit_test(test_round_trip_synthetic),
        cmocka_unit_test(test_decode_piece_drops_leading_space_at_start_and_after_bos),
        cmocka_unit_test(test_decode_piece_byte_pieces_are_raw_bytes),
        cmocka_unit_test(test_decode_piece_control_and_invalid_ids_are_empty),
        cmocka_unit_test(test_decode_sequence),
        cmocka_unit_test(test_load_empty_file),
        cmocka_unit_test(test_load_two_byte_file),
        cmocka_unit_test(test_load_bad_max_token_length),
        cmocka_unit_test(test_load_piece_length_negative),
        cmocka_unit_test(test_load_piece_length_over_max),
        cmocka_unit_test(test_load_piece_past_eof),
        cmocka_unit_test(test_load_nan_and_infinite_score),
        cmocka_unit_test(test_load_fewer_than_three_pieces),
        cmocka_unit_test(test_load_missing_file_is_io_error),
        cmocka_unit_test(test_load_minimal_valid),
        cmocka_unit_test(test_tok512_shape),
        cmocka_unit_test(test_tok512_round_trip),
        cmocka_unit_test(test_llama2_known_ids),
        cmocka_unit_test(test_llama2_one_megabyte_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
