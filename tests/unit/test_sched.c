/* Plans and the load-balanced scheduler (the original's test cases). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "sched/plan.h"

/* costs are per layer 1..n; costs[0] stands for the input. */
static void expect_counts(const double *layer_costs, int n, const double *caps, int k, const int *want)
{
    double costs[32] = {0};
    memcpy(costs + 1, layer_costs, sizeof(double) * (size_t)n);
    ds_plan p;
    ds_error err;
    assert_int_equal(ds_plan_lbc(n + 1, costs, NULL, k, caps, &p, &err), 0);
    int counts[DS_MAX_WORKERS];
    ds_plan_counts(&p, counts);
    for (int i = 0; i < k; i++)
        if (counts[i] != want[i])
            fail_msg("worker %d gets %d layers, expected %d", i, counts[i], want[i]);
}

static void test_lbc_original_cases(void **state)
{
    (void)state;
    expect_counts((double[]){2, 1, 3}, 3, (double[]){1, 2}, 2, (int[]){1, 2});
    expect_counts((double[]){2, 1, 1, 3, 4}, 5, (double[]){1, 2}, 2, (int[]){3, 2});
    expect_counts((double[]){2, 1, 1, 3, 4}, 5, (double[]){1, 2, 0.1}, 3, (int[]){3, 2, 0});
    expect_counts((double[]){2, 1, 1, 3, 4}, 5, (double[]){0.1, 1, 2}, 3, (int[]){0, 3, 2});
}

static void test_lbc_single_worker_and_allowed(void **state)
{
    (void)state;
    expect_counts((double[]){2, 1, 3}, 3, (double[]){1}, 1, (int[]){3});
    /* Only cuts after layers 1 and 4 are legal (a DAG's articulations). */
    double costs[] = {0, 1, 1, 1, 1, 1, 1};
    int allowed[] = {1, 1, 0, 0, 1, 0, 1};
    ds_plan p;
    ds_error err;
    assert_int_equal(ds_plan_lbc(7, costs, allowed, 2, (double[]){1, 1}, &p, &err), 0);
    assert_int_equal(p.cut[0], 4); /* target 3: after 4 (gap 1) beats after 1 (gap 2) */
    assert_int_equal(p.cut[1], 6);
}

static void test_lbc_rejects_bad_input(void **state)
{
    (void)state;
    double costs[] = {0, 1, 1};
    ds_plan p;
    ds_error err;
    assert_int_equal(ds_plan_lbc(3, costs, NULL, 2, (double[]){0, 0}, &p, &err), -1);
    assert_string_equal(err.msg, "lbc: every worker has zero capability");
    assert_int_equal(ds_plan_lbc(3, costs, NULL, 2, (double[]){1, -1}, &p, &err), -1);
    assert_int_equal(ds_plan_lbc(3, (double[]){0, 1, -2}, NULL, 1, (double[]){1}, &p, &err), -1);
    assert_int_equal(ds_plan_lbc(3, costs, NULL, 0, (double[]){1}, &p, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lbc_original_cases),
        cmocka_unit_test(test_lbc_single_worker_and_allowed),
        cmocka_unit_test(test_lbc_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
