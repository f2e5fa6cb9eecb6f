/* test_util.c — util.h's small helpers that have no module of their own to be tested with: nf_sort_median's
 * middle value (the mean of the middle two for an even count), with the values left sorted. */
#include "testutil.h"

#include "util.h"

static void test_median_of_odd_and_even_counts(void **state) {
    (void)state;
    double odd[] = {5.0, 1.0, 3.0}, even[] = {4.0, 8.0, 1.0, 2.0}, one[] = {7.5};
    assert_true(nf_sort_median(odd, 3) == 3.0);
    assert_true(odd[0] == 1.0 && odd[1] == 3.0 && odd[2] == 5.0);
    assert_true(nf_sort_median(even, 4) == 3.0); /* (2 + 4) / 2 */
    assert_true(even[0] == 1.0 && even[3] == 8.0);
    assert_true(nf_sort_median(one, 1) == 7.5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median_of_odd_and_even_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
