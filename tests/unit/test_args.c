/* test_args.c — args_parse (args.h): `--name value` and `--name=value` for
 * every flag type, defaults left alone, and every rejection — unknown flag,
 * missing value, repeated flag, malformed / overflowing / out-of-range
 * integers, non-finite and out-of-range floats, a value given to a boolean
 * flag, a word outside a choice list, a positional word — each failing with
 * NF_ERR_USAGE and a message that names the flag (or the word). --help and -h
 * set help_requested. */
#include "testutil.h"

#include <math.h>

#include "args.h"

/* A fresh flag table per test: args_parse marks specs as seen. */
typedef struct {
    const char *model;
    int64_t steps;
    double temperature;
    bool verbose;
    const char *stop;
    ArgSpec specs[5];
} Flags;

static void flags_init(Flags *f) {
    memset(f, 0, sizeof *f);
    f->model = "default.bin";
    f->steps = 256;
    f->temperature = 1.0;
    f->verbose = false;
    f->stop = "eot";
    f->specs[0] = (ArgSpec){.name = "model", .type = ARG_STRING, .dest = &f->model};
    f->specs[1] = (ArgSpec){.name = "steps", .type = ARG_INT, .dest = &f->steps, .min = 1, .max = 1000000};
    f->specs[2] = (ArgSpec){.name = "temperature", .type = ARG_FLOAT, .dest = &f->temperature, .min = 0, .max = 2};
    f->specs[3] = (ArgSpec){.name = "verbose", .type = ARG_FLAG, .dest = &f->verbose};
    f->specs[4] = (ArgSpec){.name = "stop", .type = ARG_CHOICE, .dest = &f->stop, .choices = "eot|blank|none"};
}

static int parse(Flags *f, int argc, char **argv, bool *help, NfError *err) {
    return args_parse(f->specs, 5, argc, argv, help, err);
}

/* Parses argv expecting failure; checks the code and that the message contains `needle`. */
static void assert_parse_fails(int argc, char **argv, const char *needle) {
    Flags f;
    flags_init(&f);
    bool help = true;
    NfError err = {0};
    assert_int_equal(parse(&f, argc, argv, &help, &err), -1);
    assert_non_null(err.code);
    assert_string_equal(err.code, NF_ERR_USAGE);
    if (strstr(err.message, needle) == NULL) fail_msg("message '%s' does not contain '%s'", err.message, needle);
}

static void test_no_args_keeps_defaults(void **state) {
    (void)state;
    Flags f;
    flags_init(&f);
    bool help = true;
    NfError err = {0};
    assert_int_equal(parse(&f, 0, NULL, &help, &err), 0);
    assert_false(help);
    assert_string_equal(f.model, "default.bin");
    assert_int_equal(f.steps, 256);
    assert_true(f.temperature == 1.0);
    assert_false(f.verbose);
    assert_string_equal(f.stop, "eot");
    for (int i = 0; i < 5; i++) assert_false(f.specs[i].seen);
}

static void test_space_separated_values(void **state) {
    (void)state;
    char *argv[] = {"--model", "m.bin", "--steps", "12", "--temperature", "0.5", "--verbose", "--stop", "blank"};
    Flags f;
    flags_init(&f);
    bool help = true;
    NfError err = {0};
    assert_int_equal(parse(&f, 9, argv, &help, &err), 0);
    assert_false(help);
    assert_string_equal(f.model, "m.bin");
    assert_int_equal(f.steps, 12);
    assert_true(f.temperature == 0.5);
    assert_true(f.verbose);
    assert_string_equal(f.stop, "blank");
    for (int i = 0; i < 5; i++) assert_true(f.specs[i].seen);
}

static void test_equals_separated_values(void **state) {
    (void)state;
    char *argv[] = {"--model=a=b.bin", "--steps=7", "--temperature=1.25", "--stop=none"};
    Flags f;
    flags_init(&f);
    bool help = true;
    NfError err = {0};
    assert_int_equal(parse(&f, 4, argv, &help, &err), 0);
    assert_string_equal(f.model, "a=b.bin"); /* only the first '=' splits */
    assert_int_equal(f.steps, 7);
    assert_true(f.temperature == 1.25);
    assert_string_equal(f.stop, "none");
    assert_false(f.verbose);
    assert_false(f.specs[3].seen);
}

static void test_equals_with_empty_string_value(void **state) {
    (void)state;
    char *argv[] = {"--model="};
    Flags f;
    flags_init(&f);
    bool help;
    NfError err = {0};
    assert_int_equal(parse(&f, 1, argv, &help, &err), 0);
    assert_string_equal(f.model, "");
}

static void test_value_may_start_with_dash(void **state) {
    (void)state;
    char *argv[] = {"--temperature", "0", "--steps", "-3"};
    Flags f;
    flags_init(&f);
    f.specs[1].min = -5;
    bool help;
    NfError err = {0};
    assert_int_equal(parse(&f, 4, argv, &help, &err), 0);
    assert_int_equal(f.steps, -3);
    assert_true(f.temperature == 0.0);
}

static void test_int_range_bounds_are_inclusive(void **state) {
    (void)state;
    char *lo[] = {"--steps", "1"};
    char *hi[] = {"--steps=1000000"};
    Flags f;
    bool help;
    NfError err = {0};
    flags_init(&f);
    assert_int_equal(parse(&f, 2, lo, &help, &err), 0);
    assert_int_equal(f.steps, 1);
    flags_init(&f);
    assert_int_equal(parse(&f, 1, hi, &help, &err), 0);
    assert_int_equal(f.steps, 1000000);
}

static void test_unknown_flag_is_named(void **state) {
    (void)state;
    char *argv[] = {"--model", "m.bin", "--bogus", "3"};
    assert_parse_fails(4, argv, "--bogus");
    char *argv2[] = {"--bogus=3"};
    assert_parse_fails(1, argv2, "--bogus");
    /* a prefix of a real flag is not that flag */
    char *argv3[] = {"--temp", "1"};
    assert_parse_fails(2, argv3, "--temp");
}

static void test_missing_value(void **state) {
    (void)state;
    char *argv[] = {"--steps"};
    assert_parse_fails(1, argv, "--steps");
    char *argv2[] = {"--verbose", "--model"};
    assert_parse_fails(2, argv2, "--model");
}

static void test_repeated_flag(void **state) {
    (void)state;
    char *argv[] = {"--steps", "1", "--steps=2"};
    assert_parse_fails(3, argv, "--steps");
    char *argv2[] = {"--verbose", "--verbose"};
    assert_parse_fails(2, argv2, "--verbose");
}

static void test_int_out_of_range(void **state) {
    (void)state;
    char *argv[] = {"--steps", "0"};
    assert_parse_fails(2, argv, "--steps");
    char *argv2[] = {"--steps=1000001"};
    assert_parse_fails(1, argv2, "--steps");
    char *argv3[] = {"--steps=-5"};
    assert_parse_fails(1, argv3, "--steps");
}

static void test_int_malformed(void **state) {
    (void)state;
    const char *bad[] = {"12x", "abc", "", "1.5", "0x10", " ", "1e3", "--5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char word[32];
        snprintf(word, sizeof word, "--steps=%s", bad[i]);
        char *argv[] = {word};
        assert_parse_fails(1, argv, "--steps");
    }
}

static void test_int_overflow(void **state) {
    (void)state;
    char *argv[] = {"--steps", "99999999999999999999"};
    assert_parse_fails(2, argv, "--steps");
    char *argv2[] = {"--steps=-99999999999999999999"};
    assert_parse_fails(1, argv2, "--steps");
    /* refused as malformed even when the range would let the clamped value through */
    const char *big[] = {"99999999999999999999", "-99999999999999999999", "9223372036854775808"};
    for (int i = 0; i < 3; i++) {
        char *argv3[] = {"--steps", (char *)big[i]};
        Flags f;
        flags_init(&f);
        f.specs[1].min = -1e300;
        f.specs[1].max = 1e300;
        bool help;
        NfError err = {0};
        assert_int_equal(parse(&f, 2, argv3, &help, &err), -1);
        assert_string_equal(err.code, NF_ERR_USAGE);
        assert_non_null(strstr(err.message, "--steps"));
        assert_int_equal(f.steps, 256);
    }
    /* the int64 extremes themselves are fine */
    char *argv4[] = {"--steps", "9223372036854775807"};
    Flags f;
    flags_init(&f);
    f.specs[1].min = -1e300;
    f.specs[1].max = 1e300;
    bool help;
    NfError err = {0};
    assert_int_equal(parse(&f, 2, argv4, &help, &err), 0);
    assert_true(f.steps == INT64_MAX);
}

static void test_int_failure_leaves_destination_unchanged(void **state) {
    (void)state;
    char *argv[] = {"--steps", "99999999999999999999"};
    Flags f;
    flags_init(&f);
    bool help;
    NfError err = {0};
    assert_int_equal(parse(&f, 2, argv, &help, &err), -1);
    assert_int_equal(f.steps, 256);
}

static void test_float_non_finite(void **state) {
    (void)state;
    const char *bad[] = {"nan", "NaN", "inf", "-inf", "infinity", "1e999", "-1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *argv[] = {"--temperature", (char *)bad[i]};
        Flags f;
        flags_init(&f);
        f.specs[2].min = -INFINITY; /* so that only finiteness can reject it */
        f.specs[2].max = INFINITY;
        bool help;
        NfError err = {0};
        assert_int_equal(parse(&f, 2, argv, &help, &err), -1);
        assert_string_equal(err.code, NF_ERR_USAGE);
        if (!strstr(err.message, "--temperature")) fail_msg("'%s' for %s", err.message, bad[i]);
        assert_true(f.temperature == 1.0);
    }
}

static void test_float_out_of_range_and_malformed(void **state) {
    (void)state;
    char *argv[] = {"--temperature", "2.5"};
    assert_parse_fails(2, argv, "--temperature");
    char *argv2[] = {"--temperature=-0.1"};
    assert_parse_fails(1, argv2, "--temperature");
    char *argv3[] = {"--temperature=0.5x"};
    assert_parse_fails(1, argv3, "--temperature");
    char *argv4[] = {"--temperature="};
    assert_parse_fails(1, argv4, "--temperature");
}

static void test_float_accepts_exponent_and_bounds(void **state) {
    (void)state;
    char *argv[] = {"--temperature", "2e0"};
    Flags f;
    flags_init(&f);
    bool help;
    NfError err = {0};
    assert_int_equal(parse(&f, 2, argv, &help, &err), 0);
    assert_true(f.temperature == 2.0);
}

static void test_flag_with_value_rejected(void **state) {
    (void)state;
    char *argv[] = {"--verbose=1"};
    assert_parse_fails(1, argv, "--verbose");
    char *argv2[] = {"--verbose="};
    assert_parse_fails(1, argv2, "--verbose");
}

static void test_flag_does_not_consume_next_word(void **state) {
    (void)state;
    char *argv[] = {"--verbose", "--steps", "3"};
    Flags f;
    flags_init(&f);
    bool help;
    NfError err = {0};
    assert_int_equal(parse(&f, 3, argv, &help, &err), 0);
    assert_true(f.verbose);
    assert_int_equal(f.steps, 3);
}

static void test_choice_accepted(void **state) {
    (void)state;
    const char *ok[] = {"eot", "blank", "none"};
    for (int i = 0; i < 3; i++) {
        char *argv[] = {"--stop", (char *)ok[i]};
        Flags f;
        flags_init(&f);
        f.stop = NULL;
        bool help;
        NfError err = {0};
        assert_int_equal(parse(&f, 2, argv, &help, &err), 0);
        assert_string_equal(f.stop, ok[i]);
    }
}

static void test_choice_rejected(void **state) {
    (void)state;
    const char *bad[] = {"eo", "eotx", "EOT", "", "eot|blank", "blan", "|", "none "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *argv[] = {"--stop", (char *)bad[i]};
        assert_parse_fails(2, argv, "--stop");
    }
}

static void test_positional_word_rejected(void **state) {
    (void)state;
    char *argv[] = {"--steps", "3", "extra"};
    assert_parse_fails(3, argv, "extra");
    char *argv2[] = {"-x"};
    assert_parse_fails(1, argv2, "-x");
    char *argv3[] = {"--"};
    assert_parse_fails(1, argv3, "--");
}

static void test_help_sets_help_requested(void **state) {
    (void)state;
    const char *forms[] = {"--help", "-h"};
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"--steps", "5", (char *)forms[i]};
        Flags f;
        flags_init(&f);
        bool help = false;
        NfError err = {0};
        assert_int_equal(parse(&f, 3, argv, &help, &err), 0);
        assert_true(help);
        assert_int_equal(f.steps, 5);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_args_keeps_defaults),
        cmocka_unit_test(test_space_separated_values),
        cmocka_unit_test(test_equals_separated_values),
        cmocka_unit_test(test_equals_with_empty_string_value),
        cmocka_unit_test(test_value_may_start_with_dash),
        cmocka_unit_test(test_int_range_bounds_are_inclusive),
        cmocka_unit_test(test_unknown_flag_is_named),
        cmocka_unit_test(test_missing_value),
        cmocka_unit_test(test_repeated_flag),
        cmocka_unit_test(test_int_out_of_range),
        cmocka_unit_test(test_int_malformed),
        cmocka_unit_test(test_int_overflow),
        cmocka_unit_test(test_int_failure_leaves_destination_unchanged),
        cmocka_unit_test(test_float_non_finite),
        cmocka_unit_test(test_float_out_of_range_and_malformed),
        cmocka_unit_test(test_float_accepts_exponent_and_bounds),
        cmocka_unit_test(test_flag_with_value_rejected),
        cmocka_unit_test(test_flag_does_not_consume_next_word),
        cmocka_unit_test(test_choice_accepted),
        cmocka_unit_test(test_choice_rejected),
        cmocka_unit_test(test_positional_word_rejected),
        cmocka_unit_test(test_help_sets_help_requested),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
