/* test_tokenizer_train.c — BPE training (tokenizer_train.h) on small texts in
 * memory: the layout of ids and scores, words that never span a space or a
 * class boundary, runs of spaces, the 16-character cap, invalid UTF-8 and
 * U+2581 read as the encoder reads them, character coverage, a vocabulary
 * filled by characters alone, stopping early, independence from the order of
 * the inputs, progress reports, and errors. Trained vocabularies are saved and
 * loaded with tokenizer_load, so the encoder of tokenizer.c is what checks
 * that training and encoding agree. */
#include "testutil.h"

#include "tokenizer.h"
#include "tokenizer_train.h"
#include "utf8.h"

static TokTrainOptions options(int vocab_size) {
    TokTrainOptions o = {vocab_size, 1.0, NULL, NULL};
    return o;
}

/* Text repeated `times` times, as one buffer the caller frees. */
static char *repeat(const char *s, int times, size_t *n) {
    size_t len = strlen(s);
    char *buf = malloc(len * (size_t)times + 1);
    for (int i = 0; i < times; i++) memcpy(buf + len * (size_t)i, s, len);
    buf[len * (size_t)times] = '\0';
    *n = len * (size_t)times;
    return buf;
}

static void train_ok(const char *text, size_t n, const TokTrainOptions *o, TrainedVocab *v) {
    TextSpan span = {(const unsigned char *)text, n};
    NfError err = {0};
    if (tokenizer_train(&span, 1, o, v, &err) != 0) fail_msg("tokenizer_train: %s", err.message);
}

/* Saves v and loads it back with the encoder's loader. */
static void load_trained(const TrainedVocab *v, Tokenizer *t) {
    char *path = write_temp_file("", 0);
    NfError err = {0};
    if (trained_vocab_save(v, path, &err) != 0) fail_msg("save: %s", err.message);
    if (tokenizer_load(t, path, &err) != 0) fail_msg("load: %s", err.message);
    remove_temp_file(path);
}

static bool piece_is(const TrainedVocab *v, int id, const char *s) {
    return v->piece_len[id] == strlen(s) && memcmp(v->blob + v->piece_start[id], s, strlen(s)) == 0;
}

static int count_chars(const unsigned char *s, size_t n) {
    int chars = 0;
    for (size_t i = 0; i < n; i += utf8_lead_len(s[i])) chars++;
    return chars;
}

static void assert_round_trip(const Tokenizer *t, const char *text, size_t n) {
    TokenList ids = {0};
    NfError err = {0};
    assert_int_equal(tokenizer_encode(t, text, n, 0, &ids, &err), 0);
    size_t len;
    char *back = tokenizer_decode(t, ids.ids, ids.len, &len, &err);
    assert_non_null(back);
    assert_int_equal(len, n);
    assert_memory_equal(back, text, n);
    free(back);
    token_list_free(&ids);
}

static const char *const STORY =
    "Once upon a time, there was a little cat. The cat sat on the mat, and the mat was red.\n"
    "The little cat liked the red mat: it sat there 12 times a day!\n\n";

static void test_layout_and_scores(void **state) {
    (void)state;
    size_t n;
    char *text = repeat(STORY, 20, &n);
    TokTrainOptions o = options(300);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    assert_int_equal(v.vocab_size, 300);
    assert_int_equal(v.vocab_size, TOKTRAIN_FIXED_PIECES + v.characters + v.merges);
    assert_true(v.merges > 0);
    assert_int_equal(v.bytes, n);
    assert_true(piece_is(&v, 0, "<unk>") && piece_is(&v, 1, "\n<s>\n") && piece_is(&v, 2, "\n</s>\n"));
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        assert_true(piece_is(&v, 3 + b, name));
    }
    for (int id = 0; id < v.vocab_size; id++) {
        float want = id < TOKTRAIN_FIXED_PIECES ? 0.0f : -(float)(id - TOKTRAIN_FIXED_PIECES);
        assert_true(v.scores[id] == want);
        assert_true((int)v.piece_len[id] <= v.max_token_length);
        int chars = count_chars(v.blob + v.piece_start[id], v.piece_len[id]);
        if (id >= TOKTRAIN_FIXED_PIECES + v.characters)
            assert_true(chars >= 2);
        else if (id >= TOKTRAIN_FIXED_PIECES)
            assert_int_equal(chars, 1);
    }
    /* the most frequent character first: the space */
    assert_true(piece_is(&v, TOKTRAIN_FIXED_PIECES, " "));
    Tokenizer t;
    load_trained(&v, &t);
    assert_int_equal(t.vocab_size, 300);
    assert_int_equal(t.n_byte_pieces, 256);
    assert_int_equal(t.max_token_length, v.max_token_length);
    assert_round_trip(&t, text, n);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static int char_kind(unsigned char c) {
    if (c >= '0' && c <= '9') return 1;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return 2;
    if (c == '\n') return 3;
    return 4;
}

static void test_pieces_never_span_a_space_or_a_class_boundary(void **state) {
    (void)state;
    size_t n;
    char *text = repeat("abc123 abc123, abc.abc\nabc\n\n12ab ", 50, &n);
    TokTrainOptions o = options(400);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    assert_true(v.vocab_size < 400); /* the words are learned whole, then nothing occurs twice */
    for (int id = TOKTRAIN_FIXED_PIECES; id < v.vocab_size; id++) {
        const unsigned char *p = v.blob + v.piece_start[id];
        uint32_t len = v.piece_len[id], i = 0;
        while (i < len && p[i] == ' ') i++;
        if (i == len) continue; /* spaces only */
        assert_true(i <= 1);    /* one leading space at most before other characters */
        for (uint32_t k = i + 1; k < len; k++) {
            assert_true(p[k] != ' ');
            assert_int_equal(char_kind(p[k]), char_kind(p[i]));
        }
    }
    Tokenizer t;
    load_trained(&v, &t);
    assert_true(tokenizer_find(&t, " abc", 4) >= 0);
    assert_true(tokenizer_find(&t, "123", 3) >= 0);
    assert_true(tokenizer_find(&t, "\n\n", 2) >= 0);
    assert_true(tokenizer_find(&t, "abc123", 6) < 0);
    assert_round_trip(&t, text, n);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static void test_whole_words_encode_as_one_piece_each(void **state) {
    (void)state;
    size_t n;
    char *text = repeat("the cat sat on the mat ", 30, &n);
    TokTrainOptions o = options(1000);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    /* every word became one piece, then no pair occurred twice: stopped early */
    assert_true(v.vocab_size < 1000);
    Tokenizer t;
    load_trained(&v, &t);
    TokenList ids = {0};
    NfError err = {0};
    assert_int_equal(tokenizer_encode(&t, "the cat sat", 11, 0, &ids, &err), 0);
    assert_int_equal(ids.len, 3);
    assert_int_equal(ids.ids[0], tokenizer_find(&t, " the", 4));
    assert_int_equal(ids.ids[1], tokenizer_find(&t, " cat", 4));
    assert_int_equal(ids.ids[2], tokenizer_find(&t, " sat", 4));
    token_list_free(&ids);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static void test_ties_go_to_the_earlier_pieces_and_single_pairs_never_merge(void **state) {
    (void)state;
    /* " ab" and " cd" 10 times each: every pair occurs 10 times. Ids: space 259
     * (21 with the dummy prefix), then a, b, c, d (10 each, by their bytes). */
    size_t n;
    char *text = repeat("ab cd ", 10, &n);
    text = realloc(text, n + 16);
    memcpy(text + n, "only", 4); /* its pairs occur once: never merged */
    n += 4;
    TokTrainOptions o = options(400);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    const char *want[] = {" ", "a", "b", "c", "d", "l", "n", "o", "y", " a", " c", " ab", " cd"};
    assert_int_equal(v.vocab_size, TOKTRAIN_FIXED_PIECES + 13);
    for (int i = 0; i < 13; i++) assert_true(piece_is(&v, TOKTRAIN_FIXED_PIECES + i, want[i]));
    trained_vocab_free(&v);
    free(text);
}

static void test_runs_of_spaces_give_whitespace_pieces(void **state) {
    (void)state;
    size_t n;
    char *text = repeat("if x:\n    return y\n        pass\n", 40, &n);
    TokTrainOptions o = options(400);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    Tokenizer t;
    load_trained(&v, &t);
    /* 4 spaces before a word: a piece of 3 spaces, then " return" */
    assert_true(tokenizer_find(&t, "   ", 3) >= 0);
    assert_true(tokenizer_find(&t, " return", 7) >= 0);
    assert_true(tokenizer_find(&t, "    return", 10) < 0);
    assert_true(v.space_merges >= 2);
    for (int id = v.vocab_size - v.space_merges; id < v.vocab_size; id++)
        assert_true(v.piece_len[id] >= 2 && v.blob[v.piece_start[id]] == ' ' &&
                    v.blob[v.piece_start[id] + v.piece_len[id] - 1] == ' ');
    /* the encoder splits "    return" as training did: three spaces, then " return" */
    TokenList ids = {0};
    NfError err = {0};
    assert_int_equal(tokenizer_encode(&t, "x:\n    return", 13, 0, &ids, &err), 0);
    assert_true(ids.len >= 2);
    assert_int_equal(ids.ids[ids.len - 2], tokenizer_find(&t, "   ", 3));
    assert_int_equal(ids.ids[ids.len - 1], tokenizer_find(&t, " return", 7));
    token_list_free(&ids);
    assert_round_trip(&t, text, n);
    const char *spaced = "  two leading spaces, and trailing   ";
    assert_round_trip(&t, spaced, strlen(spaced));
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static void test_long_runs_are_capped_at_16_characters(void **state) {
    (void)state;
    char run[201];
    memset(run, 'a', 200);
    run[200] = '\0';
    size_t n;
    char *text = repeat(run, 10, &n);
    TokTrainOptions o = options(400);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    for (int id = 0; id < v.vocab_size; id++)
        assert_true(count_chars(v.blob + v.piece_start[id], v.piece_len[id]) <= TOKTRAIN_MAX_PIECE_CHARS);
    Tokenizer t;
    load_trained(&v, &t);
    assert_true(tokenizer_find(&t, run, 16) >= 0);
    for (size_t k = 1; k <= 200; k += 7) assert_round_trip(&t, run, k);
    assert_round_trip(&t, text, n);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static void test_invalid_utf8_and_u2581_are_kept_byte_for_byte(void **state) {
    (void)state;
    /* 0xFF and a lone continuation byte are characters of their own; U+2581 is itself */
    size_t n;
    char *text = repeat("ab\xFF\x80 cd\xE2\x96\x81"
                        "ef ",
                        40, &n);
    TokTrainOptions o = options(300);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    Tokenizer t;
    load_trained(&v, &t);
    assert_true(tokenizer_find(&t, "\xEF\xBF\xBD", 3) < 0);
    assert_true(tokenizer_find(&t, "\xFF", 1) >= 0);
    assert_true(tokenizer_find(&t, "\xE2\x96\x81", 3) >= 0);
    /* decode(encode(x)) is x, byte for byte */
    TokenList ids = {0};
    NfError err = {0};
    assert_int_equal(tokenizer_encode(&t, text, 13, 0, &ids, &err), 0);
    size_t len;
    char *back = tokenizer_decode(&t, ids.ids, ids.len, &len, &err);
    const char *want = "ab\xFF\x80 cd\xE2\x96\x81"
                       "ef ";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(back, want, len);
    free(back);
    token_list_free(&ids);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static void test_coverage_leaves_rare_characters_to_bytes(void **state) {
    (void)state;
    size_t n;
    char *text = repeat("hello there ", 100, &n);
    text = realloc(text, n + 8);
    memcpy(text + n, "caf\xC3\xA9 ", 6); /* one rare é */
    n += 6;
    TokTrainOptions o = options(300);
    o.character_coverage = 0.999;
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    /* sorted e, space, h, l, o, r, t (1202 of 1206 characters), a, c, f: 0.999 is reached before é */
    assert_int_equal(v.dropped_characters, 1);
    Tokenizer t;
    load_trained(&v, &t);
    assert_true(tokenizer_find(&t, "\xC3\xA9", 2) < 0);
    TokenList ids = {0};
    NfError err = {0};
    assert_int_equal(tokenizer_encode(&t, "\xC3\xA9", 2, 0, &ids, &err), 0);
    assert_int_equal(ids.len, 3); /* the space, then é as its two bytes */
    assert_int_equal(ids.ids[1], 3 + 0xC3);
    assert_int_equal(ids.ids[2], 3 + 0xA9);
    assert_round_trip(&t, text, n);
    token_list_free(&ids);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);

    /* coverage 1: every character that fits gets a piece */
    text = repeat("hello there caf\xC3\xA9 ", 3, &n);
    o.character_coverage = 1.0;
    train_ok(text, n, &o, &v);
    assert_int_equal(v.dropped_characters, 0);
    load_trained(&v, &t);
    assert_true(tokenizer_find(&t, "\xC3\xA9", 2) >= 0);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static void test_characters_can_fill_the_vocabulary(void **state) {
    (void)state;
    /* 300 distinct CJK characters, each more frequent than the next, and a space */
    char *text = malloc(300 * 3 * 301 / 2 + 400);
    size_t n = 0;
    for (int c = 0; c < 300; c++) {
        for (int k = 0; k < 300 - c; k++) {
            uint32_t cp = 0x4E00 + (uint32_t)c;
            text[n++] = (char)(0xE0 | (cp >> 12));
            text[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            text[n++] = (char)(0x80 | (cp & 0x3F));
        }
        text[n++] = ' ';
    }
    TokTrainOptions o = options(270);
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    assert_int_equal(v.vocab_size, 270);
    assert_int_equal(v.characters, 11);
    assert_int_equal(v.merges, 0);
    assert_int_equal(v.dropped_characters, 290);
    assert_true(piece_is(&v, TOKTRAIN_FIXED_PIECES, " "));                /* 301 with the dummy prefix */
    assert_true(piece_is(&v, TOKTRAIN_FIXED_PIECES + 1, "\xE4\xB8\x80")); /* U+4E00, 300 */
    Tokenizer t;
    load_trained(&v, &t);
    assert_round_trip(&t, text, n);
    tokenizer_free(&t);
    trained_vocab_free(&v);

    /* the space piece (llama2.c's dummy prefix) wins the last place over a more frequent character */
    o.vocab_size = TOKTRAIN_MIN_VOCAB;
    train_ok(text, 30, &o, &v);
    assert_int_equal(v.characters, 1);
    load_trained(&v, &t);
    assert_int_equal(tokenizer_find(&t, " ", 1), TOKTRAIN_FIXED_PIECES);
    tokenizer_free(&t);
    trained_vocab_free(&v);
    free(text);
}

static void assert_same_vocab(const TrainedVocab *a, const TrainedVocab *b) {
    assert_int_equal(a->vocab_size, b->vocab_size);
    for (int id = 0; id < a->vocab_size; id++) {
        assert_int_equal(a->piece_len[id], b->piece_len[id]);
        assert_memory_equal(a->blob + a->piece_start[id], b->blob + b->piece_start[id], a->piece_len[id]);
        assert_true(a->scores[id] == b->scores[id]);
    }
}

static void test_input_order_does_not_change_the_result(void **state) {
    (void)state;
    size_t n1, n2;
    char *a = repeat(STORY, 7, &n1);
    char *b = repeat("Zebras zigzag; 99 zebras zigzag quickly.\n", 9, &n2);
    TextSpan ab[2] = {{(const unsigned char *)a, n1}, {(const unsigned char *)b, n2}};
    TextSpan ba[2] = {ab[1], ab[0]};
    TokTrainOptions o = options(330);
    TrainedVocab v1, v2, v3;
    NfError err = {0};
    assert_int_equal(tokenizer_train(ab, 2, &o, &v1, &err), 0);
    assert_int_equal(tokenizer_train(ba, 2, &o, &v2, &err), 0);
    assert_int_equal(tokenizer_train(ab, 2, &o, &v3, &err), 0);
    assert_same_vocab(&v1, &v2);
    assert_same_vocab(&v1, &v3);
    trained_vocab_free(&v1);
    trained_vocab_free(&v2);
    trained_vocab_free(&v3);
    free(a);
    free(b);
}

typedef struct {
    uint64_t counted; /* last bytes_done */
    uint64_t total;
    int merges;     /* last merges */
    int vocab_size; /* last vocab_size */
    int calls;
    bool monotonic;
} ProgressLog;

static void log_progress(void *ctx, const TokTrainProgress *p) {
    ProgressLog *l = ctx;
    l->calls++;
    if (p->phase == TOKTRAIN_COUNTING) {
        if (p->bytes_done < l->counted) l->monotonic = false;
        l->counted = p->bytes_done;
        l->total = p->bytes_total;
    } else {
        if (p->merges < l->merges || p->vocab_size < l->vocab_size || p->vocab_size > p->target ||
            p->merges > p->merges_max)
            l->monotonic = false;
        l->merges = p->merges;
        l->vocab_size = p->vocab_size;
    }
}

static void test_progress_reports(void **state) {
    (void)state;
    size_t n;
    char *text = repeat(STORY, 20, &n);
    ProgressLog log = {0, 0, 0, 0, 0, true};
    TokTrainOptions o = {320, 1.0, log_progress, &log};
    TrainedVocab v;
    train_ok(text, n, &o, &v);
    assert_true(log.monotonic);
    assert_int_equal(log.counted, n);
    assert_int_equal(log.total, n);
    assert_int_equal(log.merges, v.merges);
    assert_int_equal(log.vocab_size, v.vocab_size);
    assert_true(log.calls >= v.merges + 2);
    trained_vocab_free(&v);
    free(text);
}

static void test_errors(void **state) {
    (void)state;
    TrainedVocab v;
    NfError err = {0};
    TextSpan empty[2] = {{NULL, 0}, {NULL, 0}};
    TokTrainOptions o = options(300);
    assert_int_equal(tokenizer_train(empty, 2, &o, &v, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    assert_int_equal(tokenizer_train(empty, 0, &o, &v, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    TextSpan text = {(const unsigned char *)"hello", 5};
    o.vocab_size = TOKTRAIN_MIN_VOCAB - 1;
    assert_int_equal(tokenizer_train(&text, 1, &o, &v, &err), -1);
    assert_string_equal(err.code, NF_ERR_USAGE);
    assert_non_null(strstr(err.message, "--vocab-size"));
    o.vocab_size = TOKTRAIN_MAX_VOCAB + 1;
    assert_int_equal(tokenizer_train(&text, 1, &o, &v, &err), -1);
    assert_string_equal(err.code, NF_ERR_USAGE);
    o.vocab_size = 300;
    o.character_coverage = 0.0;
    assert_int_equal(tokenizer_train(&text, 1, &o, &v, &err), -1);
    assert_string_equal(err.code, NF_ERR_USAGE);
    /* the size bound is checked before a byte is read */
    o.character_coverage = 1.0;
    TextSpan huge[2] = {{(const unsigned char *)"x", TOKTRAIN_MAX_INPUT_BYTES}, {(const unsigned char *)"y", 1}};
    assert_int_equal(tokenizer_train(huge, 2, &o, &v, &err), -1);
    assert_string_equal(err.code, NF_ERR_DATA);
    assert_non_null(strstr(err.message, "1 GiB"));
    /* the smallest vocabulary: the fixed pieces and the space */
    o.vocab_size = TOKTRAIN_MIN_VOCAB;
    assert_int_equal(tokenizer_train(&text, 1, &o, &v, &err), 0);
    assert_int_equal(v.vocab_size, TOKTRAIN_MIN_VOCAB);
    assert_true(piece_is(&v, TOKTRAIN_FIXED_PIECES, " "));
    trained_vocab_free(&v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_scores),
        cmocka_unit_test(test_pieces_never_span_a_space_or_a_class_boundary),
        cmocka_unit_test(test_whole_words_encode_as_one_piece_each),
        cmocka_unit_test(test_ties_go_to_the_earlier_pieces_and_single_pairs_never_merge),
        cmocka_unit_test(test_runs_of_spaces_give_whitespace_pieces),
        cmocka_unit_test(test_long_runs_are_capped_at_16_characters),
        cmocka_unit_test(test_invalid_utf8_and_u2581_are_kept_byte_for_byte),
        cmocka_unit_test(test_coverage_leaves_rare_characters_to_bytes),
        cmocka_unit_test(test_characters_can_fill_the_vocabulary),
        cmocka_unit_test(test_input_order_does_not_change_the_result),
        cmocka_unit_test(test_progress_reports),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
