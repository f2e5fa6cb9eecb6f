/* test_hf_tokenizer.c — tokenizer.json (hf_tokenizer.h, bpe.h, pretok.h) on
 * small files written by the tests: GPT-2's byte<->unicode map, merges taken
 * lowest rank first and leftmost on ties in both spellings ("a b" and
 * ["a", "b"]), ignore_merges, byte_fallback and <unk>, added tokens (special
 * only with TOKENIZE_PARSE_SPECIAL, longest first, lstrip/rstrip), the
 * SentencePiece-style normalizer and decoder, and refusals that name the
 * part (NF_ERR_TOKENIZER). test_hf_tokenizer.py checks the real tokenizers
 * against HF itself. */
#include "testutil.h"

#include "bpe.h"
#include "hf_tokenizer.h"
#include "tokenizer.h"

/* Writes json as DIR/tokenizer.json in a fresh directory; returns the malloc'd file path. */
static char *write_json(const char *json) {
    char dir[512];
    temp_template(dir, sizeof dir, "nf_hftok");
    assert_non_null(mkdtemp(dir));
    char *path = malloc(strlen(dir) + 32);
    sprintf(path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    return path;
}

static void remove_json(char *path) {
    unlink(path);
    *strrchr(path, '/') = '\0';
    rmdir(path);
    free(path);
}

static int load(Tokenizer *t, const char *json, NfError *err) {
    char *path = write_json(json);
    int rc = tokenizer_load(t, path, err);
    remove_json(path);
    return rc;
}

static void load_ok(Tokenizer *t, const char *json) {
    NfError err = {0};
    if (load(t, json, &err) != 0) fail_msg("load: %s", err.message);
}

/* The ids of text as a space-separated string, e.g. "3 4 5". */
static const char *ids_of(const Tokenizer *t, const char *text, unsigned flags) {
    static char buf[512];
    TokenList l = {0};
    NfError err = {0};
    if (tokenizer_encode(t, text, strlen(text), flags, &l, &err) != 0) fail_msg("encode: %s", err.message);
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < l.len && o < sizeof buf - 16; i++) o += (size_t)sprintf(buf + o, i ? " %d" : "%d", l.ids[i]);
    token_list_free(&l);
    return buf;
}

static void assert_round_trip(const Tokenizer *t, const char *text) {
    TokenList l = {0};
    NfError err = {0};
    assert_int_equal(tokenizer_encode(t, text, strlen(text), 0, &l, &err), 0);
    size_t len;
    char *back = tokenizer_decode(t, l.ids, l.len, &len, &err);
    assert_non_null(back);
    assert_int_equal(len, strlen(text));
    assert_memory_equal(back, text, len);
    free(back);
    token_list_free(&l);
}

/* ---- GPT-2's byte alphabet ---------------------------------------------------- */

static uint32_t decode_cp(const char *s, size_t n) {
    return n == 1 ? (unsigned char)s[0] : ((unsigned char)s[0] & 0x1Fu) << 6 | ((unsigned char)s[1] & 0x3Fu);
}

static void test_byte_alphabet_is_gpt2s(void **state) {
    (void)state;
    char c[2];
    assert_int_equal(decode_cp(c, byte_level_char(' ', c)), 0x120);  /* Ġ */
    assert_int_equal(decode_cp(c, byte_level_char('\n', c)), 0x10A); /* Ċ */
    assert_int_equal(decode_cp(c, byte_level_char(0, c)), 0x100);
    assert_int_equal(decode_cp(c, byte_level_char(0x7F, c)), 0x121);
    assert_int_equal(decode_cp(c, byte_level_char(0xAD, c)), 0x143); /* the last of the 68 remapped bytes */
    assert_int_equal(decode_cp(c, byte_level_char('a', c)), 'a');
    assert_int_equal(decode_cp(c, byte_level_char(0xE9, c)), 0xE9);
    /* a bijection between the 256 bytes and 256 characters */
    for (int b = 0; b < 256; b++) {
        size_t n = byte_level_char((unsigned char)b, c);
        assert_int_equal(byte_level_byte(decode_cp(c, n)), b);
    }
    assert_int_equal(byte_level_byte(0x20), -1); /* space is not of the alphabet: it is spelled Ġ */
    assert_int_equal(byte_level_byte(0x144), -1);
}

/* ---- merges --------------------------------------------------------------------- */

/* A SentencePiece-style model with no normalizer: words are the whole text. ab merges before bc (rank 0 < 1). */
#define SP_MODEL(merges, extra)                                                                                \
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"c\":3,\"ab\":4,\"bc\":5,\"abc\":6," \
    "\"aa\":7}," extra "\"unk_token\":\"<unk>\",\"merges\":" merges "},"                                       \
    "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true}]}"

static void test_merges_lowest_rank_first(void **state) {
    (void)state;
    Tokenizer t;
    load_ok(&t, SP_MODEL("[\"a b\",\"b c\",\"ab c\"]", ""));
    assert_string_equal(ids_of(&t, "abc", 0), "6"); /* ab, then ab+c */
    assert_string_equal(ids_of(&t, "bc", 0), "5");
    tokenizer_free(&t);
    load_ok(&t, SP_MODEL("[\"b c\",\"a b\",\"ab c\"]", ""));
    assert_string_equal(ids_of(&t, "abc", 0), "1 5"); /* bc first: a bc has no merge */
    tokenizer_free(&t);
}

static void test_merges_leftmost_on_ties(void **state) {
    (void)state;
    Tokenizer t;
    load_ok(&t, SP_MODEL("[\"a a\"]", ""));
    assert_string_equal(ids_of(&t, "aaa", 0), "7 1");
    assert_string_equal(ids_of(&t, "aaaa", 0), "7 7");
    tokenizer_free(&t);
}

static void test_merges_as_pairs_are_the_same(void **state) {
    (void)state;
    Tokenizer a, b;
    load_ok(&a, SP_MODEL("[\"a b\",\"b c\",\"ab c\"]", ""));
    load_ok(&b, SP_MODEL("[[\"a\",\"b\"],[\"b\",\"c\"],[\"ab\",\"c\"]]", ""));
    static const char *const texts[] = {"abc", "cba", "abcabc", "aabbcc", "b"};
    for (int i = 0; i < 5; i++) {
        char want[512];
        snprintf(want, sizeof want, "%s", ids_of(&a, texts[i], 0));
        assert_string_equal(ids_of(&b, texts[i], 0), want);
    }
    tokenizer_free(&a);
    tokenizer_free(&b);
}

static void test_ignore_merges_takes_whole_words(void **state) {
    (void)state;
    Tokenizer t;
    /* no merge reaches "abc" ("b c" first leaves a+bc), but ignore_merges takes the word as it is */
    load_ok(&t, SP_MODEL("[\"b c\"]", "\"ignore_merges\":true,"));
    assert_string_equal(ids_of(&t, "abc", 0), "6");
    tokenizer_free(&t);
    load_ok(&t, SP_MODEL("[\"b c\"]", ""));
    assert_string_equal(ids_of(&t, "abc", 0), "1 5");
    tokenizer_free(&t);
}

static void test_unknown_characters_are_unk_fused(void **state) {
    (void)state;
    Tokenizer t;
    load_ok(&t, SP_MODEL("[]", "\"fuse_unk\":true,"));
    assert_string_equal(ids_of(&t, "axyb", 0), "1 0 2");
    tokenizer_free(&t);
    load_ok(&t, SP_MODEL("[]", ""));
    assert_string_equal(ids_of(&t, "axyb", 0), "1 0 0 2");
    tokenizer_free(&t);
}

/* ---- SentencePiece style ---------------------------------------------------------- */

static const char LLAMA2_LIKE[] =
    "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},"
    "\"pre_tokenizer\":null,"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xe2\x96\x81\"},"
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","
    "\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"vocab\":{\"<unk>\":0,\"<s>\":1,"
    "\"</s>\":2,\"<0x41>\":3,\"<0xC3>\":4,\"<0xA9>\":5,\"\xe2\x96\x81\":6,\"h\":7,\"i\":8,\"\xe2\x96\x81h\":9,"
    "\"\xe2\x96\x81hi\":10},\"merges\":[\"\xe2\x96\x81 h\",\"\xe2\x96\x81h i\"]},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\","
    "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
    "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\","
    "\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}]}";

static void test_sentencepiece_style(void **state) {
    (void)state;
    Tokenizer t;
    load_ok(&t, LLAMA2_LIKE);
    assert_int_equal(t.kind, TOKENIZER_HF_SENTENCEPIECE);
    /* no tokenizer_config.json: BOS is what the template puts first, and it is added */
    assert_int_equal(t.bos_id, 1);
    assert_true(t.add_bos);
    assert_int_equal(t.eos_id, -1);
    assert_string_equal(ids_of(&t, "hi", 0), "10");
    assert_string_equal(ids_of(&t, "hi hi", TOKENIZE_BOS), "1 10 10");
    assert_string_equal(ids_of(&t, "A\xc3\xa9", 0), "6 3 4 5"); /* byte fallback */
    assert_string_equal(ids_of(&t, "\xff", 0), "6 0");          /* no <0xFF>: <unk> */
    assert_round_trip(&t, "hi hi  hi");
    assert_round_trip(&t, " hi");
    assert_round_trip(&t, "A\xc3\xa9 hi");
    assert_int_equal(t.n_byte_pieces, 3);
    tokenizer_free(&t);
}

/* ---- added tokens -------------------------------------------------------------------- */

/* A byte-level model over three letters, with added tokens (ids 10-13). */
static const char BYTE_LEVEL[] =
    "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"\xc4\xa0\":2,\"<\":3,\">\":4,\"x\":5,\"\xc4\xa0"
    "a\":6,"
    "\"|\":7},\"merges\":[[\"\xc4\xa0\",\"a\"]]},"
    "\"added_tokens\":[{\"id\":10,\"content\":\"<x>\",\"special\":true},"
    "{\"id\":11,\"content\":\"<x>>\",\"special\":true},"
    "{\"id\":12,\"content\":\"|b|\",\"special\":false},"
    "{\"id\":13,\"content\":\"<s>\",\"special\":true,\"lstrip\":true,\"rstrip\":true}]}";

static void test_added_tokens_split_the_text(void **state) {
    (void)state;
    Tokenizer t;
    load_ok(&t, BYTE_LEVEL);
    assert_int_equal(t.kind, TOKENIZER_HF_BYTE_LEVEL);
    assert_int_equal(t.vocab_size, 14);
    /* special: text unless parsed; longest first */
    assert_string_equal(ids_of(&t, "a<x>", 0), "0 3 5 4");
    assert_string_equal(ids_of(&t, "a<x>", TOKENIZE_PARSE_SPECIAL), "0 10");
    assert_string_equal(ids_of(&t, "a<x>>", TOKENIZE_PARSE_SPECIAL), "0 11");
    /* not special: always a token */
    assert_string_equal(ids_of(&t, "a|b|a", 0), "0 12 0");
    /* lstrip / rstrip take the spaces around */
    assert_string_equal(ids_of(&t, "a <s> a", TOKENIZE_PARSE_SPECIAL), "0 13 0");
    /* as text: "a", " <", "s" (no such character in the vocabulary and no <unk>: dropped, as HF drops it), ">",
     * " a" */
    assert_string_equal(ids_of(&t, "a <s> a", 0), "0 2 3 4 6");
    tokenizer_free(&t);
}

static void test_added_tokens_decode_to_their_text(void **state) {
    (void)state;
    Tokenizer t;
    load_ok(&t, BYTE_LEVEL);
    int ids[] = {0, 10, 2, 6, 12};
    size_t len;
    NfError err;
    char *s = tokenizer_decode(&t, ids, 5, &len, &err);
    assert_string_equal(s, "a<x>  a|b|");
    free(s);
    tokenizer_free(&t);
}

/* ---- refusals ------------------------------------------------------------------------- */

static void assert_refused(const char *json, const char *mention) {
    Tokenizer t;
    NfError err = {0};
    assert_int_equal(load(&t, json, &err), -1);
    assert_string_equal(err.code, NF_ERR_TOKENIZER);
    if (!strstr(err.message, mention)) fail_msg("'%s' does not mention '%s'", err.message, mention);
}

static void test_refusals_name_the_part(void **state) {
    (void)state;
    assert_refused("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "Unigram");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                   "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}}",
                   "BertPreTokenizer");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                   "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}",
                   "regex");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}", "merge 0");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "given twice");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "has no integer id");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0.5},\"merges\":[]}}", "has no integer id");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]", "not valid JSON");
    assert_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\ud800\":0},\"merges\":[]}}", "not valid JSON");
    assert_refused("[1]", "not a JSON object");
}

static void test_escaped_vocabulary_strings(void **state) {
    (void)state;
    Tokenizer t;
    /* the vocab scanner decodes every escape: \u00e9 is é, a surrogate pair is one character */
    load_ok(&t, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u00e9\":0,\"\\ud83d\\ude00\":1,\"\\\"\\n\":2},"
                "\"merges\":[]}}");
    assert_string_equal(ids_of(&t, "\xc3\xa9\xf0\x9f\x98\x80", 0), "0 1");
    tokenizer_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_alphabet_is_gpt2s),
        cmocka_unit_test(test_merges_lowest_rank_first),
        cmocka_unit_test(test_merges_leftmost_on_ties),
        cmocka_unit_test(test_merges_as_pairs_are_the_same),
        cmocka_unit_test(test_ignore_merges_takes_whole_words),
        cmocka_unit_test(test_unknown_characters_are_unk_fused),
        cmocka_unit_test(test_sentencepiece_style),
        cmocka_unit_test(test_added_tokens_split_the_text),
        cmocka_unit_test(test_added_tokens_decode_to_their_text),
        cmocka_unit_test(test_refusals_name_the_part),
        cmocka_unit_test(test_escaped_vocabulary_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
