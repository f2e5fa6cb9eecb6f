/* test_train_options.c — the rows of train's option table (train_options.h)
 * hold together: names unique, every default parses within its own range
 * (train_flags_build sets it through the parser), every option a dashboard
 * may set has a form group, a run-time default is described, the keys map
 * back to their rows, and a row without a variable is refused. */
#include "testutil.h"

#include "args.h"
#include "train_options.h"

/* One variable of each row's type. */
typedef union {
    const char *s;
    int64_t i;
    double f;
    bool b;
    StringList list;
} Slot;

static void bind_all(Slot *slots, void **dest) {
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++) dest[i] = &slots[i];
}

static void test_rows_are_consistent(void **state) {
    (void)state;
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++) {
        const TrainOption *o = &TRAIN_OPTIONS[i];
        assert_non_null(o->name);
        assert_non_null(o->help);
        for (int k = 0; k < i; k++) assert_string_not_equal(o->name, TRAIN_OPTIONS[k].name);
        if (o->dashboard) assert_non_null(o->group);
        if (o->type == ARG_INT || o->type == ARG_FLOAT) assert_true(o->min <= o->max);
        if (o->type == ARG_CHOICE) assert_non_null(o->choices);
        assert_false(o->def && o->def_text); /* one or the other */
        if (o->dash_def) assert_true(o->dashboard);
    }
}

static void test_defaults_parse_within_range(void **state) {
    (void)state;
    static Slot slots[TRAIN_OPTION_COUNT];
    void *dest[TRAIN_OPTION_COUNT];
    bind_all(slots, dest);
    static TrainFlagTable table;
    NfError err = {0};
    assert_int_equal(train_flags_build(&table, (void *const *)dest, &err), 0);
    assert_int_equal(slots[TO_BATCH].i, 4);
    assert_true(slots[TO_LR].f == 5e-4);
    assert_string_equal(slots[TO_DTYPE].s, "fp32");
    assert_false(slots[TO_SHUFFLE].b);
    assert_null(slots[TO_MODEL].s);
    /* a dashboard default must be a value the flag takes too */
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++)
        if (TRAIN_OPTIONS[i].dash_def)
            assert_int_equal(args_set_value(&table.specs[i], TRAIN_OPTIONS[i].dash_def, &err), 0);
    /* the help line carries the range and the default */
    assert_non_null(strstr(table.help[TO_BATCH], "range 1..4096; default 4"));
    assert_non_null(strstr(table.help[TO_LORA_ALPHA], "default = rank"));
    assert_non_null(strstr(table.help[TO_DIM], "--init: "));
}

static void test_keys_map_to_rows(void **state) {
    (void)state;
    for (int i = 0; i < TRAIN_OPTION_COUNT; i++) {
        char key[64];
        train_option_key(&TRAIN_OPTIONS[i], key, sizeof key);
        assert_ptr_equal(train_option_by_key(key), &TRAIN_OPTIONS[i]);
        assert_null(strchr(key, '-'));
    }
    assert_null(train_option_by_key("lr-min")); /* keys use '_' */
    assert_null(train_option_by_key("lr_mi"));
    assert_null(train_option_by_key("lr_minimum"));
    assert_null(train_option_by_key(""));
}

static void test_missing_variable_refused(void **state) {
    (void)state;
    static Slot slots[TRAIN_OPTION_COUNT];
    void *dest[TRAIN_OPTION_COUNT];
    bind_all(slots, dest);
    dest[TO_EPS] = NULL;
    static TrainFlagTable table;
    NfError err = {0};
    assert_int_equal(train_flags_build(&table, (void *const *)dest, &err), -1);
    assert_non_null(strstr(err.message, "--eps"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_are_consistent),
        cmocka_unit_test(test_defaults_parse_within_range),
        cmocka_unit_test(test_keys_map_to_rows),
        cmocka_unit_test(test_missing_variable_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
