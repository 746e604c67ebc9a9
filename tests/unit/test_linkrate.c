/* test_linkrate - a link's rate and latency from its transfers: the line
 * through transfers of different sizes, transfers queued behind each other
 * counted from when the link was free, alike sizes and instant transfers
 * falling back to a rate over the caller's latency, too few transfers giving
 * nothing, and a link that slows down followed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sched/linkrate.h"

#define MB 1e6

static int close_to(double a, double b, double rel)
{
    return fabs(a - b) <= rel * fabs(b);
}

/* A 4 MB/s link with 3 ms per transfer: a full frame, then updates of
 * varying size, each sent when the previous one has ended. */
static void test_line_through_sizes(void **state)
{
    (void)state;
    ds_linkrate r;
    ds_linkrate_init(&r);
    double rate = 0, latency = 0, t = 10;
    static const double sizes[] = {800e3, 130e3, 60e3, 210e3, 90e3, 150e3};
    for (int i = 0; i < 6; i++) {
        double d = sizes[i] / (4 * MB) + 0.003;
        ds_linkrate_add(&r, sizes[i], t, t + d);
        t += d + 0.05; /* idle between frames */
        assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), i + 1 >= DS_LINKRATE_MIN);
    }
    assert_true(close_to(rate, 4 * MB, 1e-6));
    assert_true(close_to(latency, 0.003, 1e-6));
}

/* Transfers handed to the link while the previous one was on it: each takes
 * its own time from when the link was free, not from when it was queued. */
static void test_queued_transfers(void **state)
{
    (void)state;
    ds_linkrate r;
    ds_linkrate_init(&r);
    double end = 0;
    for (int i = 0; i < 8; i++) {
        double bytes = i % 2 ? 100e3 : 300e3;
        double ready = i * 0.01; /* far faster than the link drains */
        double start = ready > end ? ready : end;
        end = start + bytes / (1 * MB) + 0.002;
        ds_linkrate_add(&r, bytes, ready, end);
    }
    double rate, latency;
    assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), 1);
    assert_true(close_to(rate, 1 * MB, 1e-6));
    assert_true(close_to(latency, 0.002, 1e-6));
}

/* Alike sizes cannot separate rate and latency: the latency is the
 * caller's default (or the shortest transfer, if shorter), the rate what
 * remains; a transfer without measurable time means the fastest rate. */
static void test_alike_sizes_and_instant_links(void **state)
{
    (void)state;
    ds_linkrate r;
    ds_linkrate_init(&r);
    for (int i = 0; i < 4; i++)
        ds_linkrate_add(&r, 1e6, i, i + 0.252); /* 1 MB in 0.25 s + 2 ms */
    double rate, latency;
    assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), 1);
    assert_true(close_to(latency, 0.002, 1e-9));
    assert_true(close_to(rate, 4 * MB, 1e-9));
    /* A default longer than any transfer: the shortest transfer bounds it. */
    assert_int_equal(ds_linkrate_get(&r, 1.0, &rate, &latency), 1);
    assert_true(close_to(latency, 0.252, 1e-9));
    assert_true(rate == DS_LINKRATE_MAX);

    ds_linkrate_init(&r);
    for (int i = 0; i < 3; i++)
        ds_linkrate_add(&r, 5e5, i, i); /* loopback below the clock's resolution */
    assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), 1);
    assert_true(rate == DS_LINKRATE_MAX);
    assert_true(latency == 0);
}

static void test_too_few_or_bad_transfers(void **state)
{
    (void)state;
    ds_linkrate r;
    ds_linkrate_init(&r);
    double rate = -1, latency = -1;
    assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), 0);
    ds_linkrate_add(&r, 0, 0, 1);     /* no bytes */
    ds_linkrate_add(&r, 1e5, 2, 1);   /* ended before it could start */
    ds_linkrate_add(&r, NAN, 0, 1);
    ds_linkrate_add(&r, 1e5, 0, 0.1);
    ds_linkrate_add(&r, 2e5, 1, 1.2);
    assert_int_equal(r.n, 2);
    assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), 0);
    assert_true(rate == -1 && latency == -1); /* untouched */
}

/* A link that drops from 4 to 1 MB/s: older transfers fade, and within a
 * few hundred transfers the estimate is the new rate. */
static void test_follows_a_slower_link(void **state)
{
    (void)state;
    ds_linkrate r;
    ds_linkrate_init(&r);
    double t = 0, rate, latency;
    for (int i = 0; i < 600; i++) {
        double bw = i < 300 ? 4 * MB : 1 * MB, bytes = 50e3 + (i % 7) * 40e3;
        double d = bytes / bw + 0.002;
        ds_linkrate_add(&r, bytes, t, t + d);
        t += d + 0.01;
        if (i == 299) {
            assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), 1);
            assert_true(close_to(rate, 4 * MB, 1e-6));
        }
    }
    assert_int_equal(ds_linkrate_get(&r, 0.002, &rate, &latency), 1);
    assert_true(close_to(rate, 1 * MB, 0.02));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_through_sizes),
        cmocka_unit_test(test_queued_transfers),
        cmocka_unit_test(test_alike_sizes_and_instant_links),
        cmocka_unit_test(test_too_few_or_bad_transfers),
        cmocka_unit_test(test_follows_a_slower_link),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
