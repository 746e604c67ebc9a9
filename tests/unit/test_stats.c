/* The fixed-size latency histogram: quantiles within 1% of the exact ones
 * on several distributions, exact mean/min/max, merging, the edges (empty,
 * tiny, huge, NaN values) and memory that does not grow with the count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/stats.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The exact quantile the histogram approximates: the value of rank
 * ceil(q * n) of sorted v. */
static double exact(const double *sorted, int n, double q)
{
    int rank = (int)ceil(q * n);
    return sorted[rank < 1 ? 0 : rank - 1];
}

static void check_distribution(double (*draw)(void), int n)
{
    ds_hist *h = malloc(sizeof *h);
    double *v = malloc(sizeof *v * (size_t)n), sum = 0;
    assert_non_null(h);
    assert_non_null(v);
    ds_hist_reset(h);
    for (int i = 0; i < n; i++) {
        v[i] = draw();
        sum += v[i];
        ds_hist_add(h, v[i]);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    assert_int_equal(h->count, n);
    assert_true(fabs(ds_hist_mean(h) - sum / n) <= 1e-12 * fabs(sum / n));
    assert_true(h->min == v[0]);
    assert_true(h->max == v[n - 1]);
    static const double qs[] = {0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double want = exact(v, n, qs[i]), got = ds_hist_quantile(h, qs[i]);
        if (fabs(got - want) > 0.01 * want)
            fail_msg("q %.2f: got %.9g, exact %.9g", qs[i], got, want);
    }
    assert_true(ds_hist_quantile(h, 0) == v[0]);
    assert_true(ds_hist_quantile(h, 1) == v[n - 1]);
    free(v);
    free(h);
}

static double uniform(void) /* 10 .. 100 ms */
{
    return 0.01 + 0.09 * (double)rand() / RAND_MAX;
}

static double heavy_tail(void) /* mostly 50 ms, sometimes seconds */
{
    double u = ((double)rand() + 1) / ((double)RAND_MAX + 2);
    return 0.05 / pow(u, 0.7);
}

static double two_modes(void) /* a fast path and a re-send */
{
    return rand() % 10 ? 0.048 + 0.004 * rand() / RAND_MAX : 2.1 + 0.5 * rand() / RAND_MAX;
}

static void test_quantiles_within_one_percent(void **state)
{
    (void)state;
    srand(7);
    check_distribution(uniform, 10000);
    check_distribution(heavy_tail, 10000);
    check_distribution(two_modes, 5000);
    check_distribution(uniform, 3);
}

static void test_edges(void **state)
{
    (void)state;
    ds_hist h;
    ds_hist_reset(&h);
    assert_true(ds_hist_quantile(&h, 0.5) == 0);
    assert_true(ds_hist_mean(&h) == 0);
    ds_hist_add(&h, NAN); /* ignored */
    assert_int_equal(h.count, 0);
    ds_hist_add(&h, 0);
    ds_hist_add(&h, 1e-9);
    ds_hist_add(&h, 1e9); /* beyond the last bucket: counted there */
    assert_int_equal(h.count, 3);
    assert_true(h.min == 0);
    assert_true(h.max == 1e9);
    assert_true(ds_hist_quantile(&h, 0.5) <= 1e-6); /* clamped into [min, max] */
    assert_true(ds_hist_quantile(&h, 0.99) == 1e9);
    ds_hist_reset(&h);
    ds_hist_add(&h, 0.0421);
    assert_true(ds_hist_quantile(&h, 0.5) == 0.0421); /* one value: itself */
}

static void test_merge(void **state)
{
    (void)state;
    ds_hist a, b, all;
    ds_hist_reset(&a);
    ds_hist_reset(&b);
    ds_hist_reset(&all);
    for (int i = 1; i <= 1000; i++) {
        double v = i * 1e-3;
        ds_hist_add(i % 3 ? &a : &b, v);
        ds_hist_add(&all, v);
    }
    ds_hist_merge(&a, &b);
    assert_int_equal(a.count, all.count);
    assert_true(a.min == all.min && a.max == all.max);
    assert_memory_equal(a.bucket, all.bucket, sizeof a.bucket);
    for (double q = 0.05; q < 1; q += 0.05)
        assert_true(ds_hist_quantile(&a, q) == ds_hist_quantile(&all, q));
    ds_hist empty;
    ds_hist_reset(&empty);
    ds_hist_merge(&empty, &all); /* into an empty one: min/max taken over */
    assert_true(empty.min == all.min && empty.max == all.max);
}

/* A million values cost what one does: the structure has no pointers. */
static void test_fixed_size(void **state)
{
    (void)state;
    ds_hist *h = malloc(sizeof *h);
    assert_non_null(h);
    ds_hist_reset(h);
    for (int i = 0; i < 1000000; i++)
        ds_hist_add(h, 0.05 + (i % 100) * 1e-4);
    assert_int_equal(h->count, 1000000);
    assert_true(sizeof *h < 16 * 1024);
    double p50 = ds_hist_quantile(h, 0.5);
    assert_true(fabs(p50 - 0.05495) < 0.01 * 0.05495);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles_within_one_percent),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_fixed_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
