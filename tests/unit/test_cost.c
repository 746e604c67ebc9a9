/* The pipeline cost model, the optimal planner against an independent brute
 * force, NSC never beating the optimum, and NSC's search step (the
 * original's: every cut next to the slowest link). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched/cost.h"

static void test_simulation_by_hand(void **state)
{
    (void)state;
    /* 3 layers; worker 0 runs 1..1, worker 1 runs 2..3. */
    double c0[] = {0, 1, 5, 5}, c1[] = {0, 1, 2, 1};
    ds_cost_model cm = {4, 2, {c0, c1}, {10, 5}, {0}, 0, 0, {0}};
    double full[] = {20, 10, 40, 8}, dif[] = {10, 5, 20, 4};
    ds_plan p = {2, {1, 3}};
    ds_sim_result r;
    /* Stages per dif frame: link0 10/10 = 1, w0 1, link1 5/5 = 1, w1 3. */
    ds_cost_simulate(&cm, &p, full, dif, 1, 0, &r);
    assert_true(fabs(r.makespan - 6) < 1e-12);
    assert_true(fabs(r.mean_latency - 6) < 1e-12);
    /* Unlimited window, 4 frames: bottleneck w1 (3 s) -> 6 + 3*3 = 15. */
    ds_cost_simulate(&cm, &p, full, dif, 4, 0, &r);
    assert_true(fabs(r.makespan - 15) < 1e-12);
    /* First frame in full: link0 2, w0 1, link1 2, w1 3 = 8, then +3 each. */
    ds_cost_simulate(&cm, &p, full, dif, 4, 1, &r);
    assert_true(fabs(r.makespan - 17) < 1e-12);
    /* One frame in flight: frames strictly one after another, 4 x 6. */
    cm.pd_num = 1;
    ds_cost_simulate(&cm, &p, full, dif, 4, 0, &r);
    assert_true(fabs(r.makespan - 24) < 1e-12);
    /* An empty worker 0 forwards the input: link1 carries layer 0. */
    cm.pd_num = 0;
    ds_plan q = {2, {0, 3}};
    ds_cost_simulate(&cm, &q, full, dif, 1, 0, &r);
    assert_true(fabs(r.makespan - (1 + 0 + 2 + 4)) < 1e-12);
    /* Everything on worker 0: worker 1 sees nothing. */
    ds_plan all0 = {2, {3, 3}};
    ds_cost_simulate(&cm, &all0, full, dif, 1, 0, &r);
    assert_true(fabs(r.makespan - (1 + 11)) < 1e-12);
}

static void test_measured_terms_by_hand(void **state)
{
    (void)state;
    /* The plan of test_simulation_by_hand; the master spends 0.5 s on each
     * frame before link 0, link 0 takes 0.25 s more per transfer, and
     * worker 1 needs 2 s more on the first frame (cold). */
    double c0[] = {0, 1, 5, 5}, c1[] = {0, 1, 2, 1};
    ds_cost_model cm = {4, 2, {c0, c1}, {10, 5}, {0.25, 0}, 0, 0.5, {0, 2}};
    double full[] = {20, 10, 40, 8}, dif[] = {10, 5, 20, 4};
    ds_plan p = {2, {1, 3}};
    ds_sim_result r;
    /* A dif frame alone: link0 0.5 + 1 + 0.25, w0 1, link1 1, w1 3; no cold. */
    ds_cost_simulate(&cm, &p, full, dif, 1, 0, &r);
    assert_true(fabs(r.makespan - 6.75) < 1e-12);
    /* First in full: link0 0.5 + 2 + 0.25 = 2.75, w0 1 (3.75), link1 2
     * (5.75), w1 3 + 2 cold (10.75); then w1 is the bottleneck: +3 each. */
    ds_cost_simulate(&cm, &p, full, dif, 4, 1, &r);
    assert_true(fabs(r.makespan - 19.75) < 1e-12);
    /* itg: every frame in full, only the first one cold. */
    ds_cost_simulate(&cm, &p, full, NULL, 2, 1, &r);
    assert_true(fabs(r.makespan - 13.75) < 1e-12);
    assert_true(fabs(r.stage_busy[3] - (5 + 3)) < 1e-12);
}

/* Independent brute force over 3 workers with nested loops. */
static double brute(const ds_cost_model *cm, const int *allowed, const double *full, const double *dif,
                    int frames, ds_plan *best)
{
    double best_t = INFINITY;
    int last = cm->n_layers - 1;
    for (int a = 0; a <= last; a++)
        for (int b = a; b <= last; b++) {
            if ((a && a != last && !allowed[a]) || (b && b != last && !allowed[b]))
                continue;
            ds_plan p = {3, {a, b, last}};
            ds_sim_result r;
            ds_cost_simulate(cm, &p, full, dif, frames, 1, &r);
            if (r.per_frame < best_t - 1e-12) {
                best_t = r.per_frame;
                *best = p;
            }
        }
    return best_t;
}

static double rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (double)((*s >> 8) & 0xffff) / 65536.0;
}

static void test_optimal_matches_brute_force(void **state)
{
    (void)state;
    unsigned seed = 7;
    for (int trial = 0; trial < 200; trial++) {
        int n = 3 + (int)(rnd(&seed) * 12);
        double c[3][16], full[16], dif[16];
        int allowed[16];
        for (int l = 0; l < n; l++) {
            for (int w = 0; w < 3; w++)
                c[w][l] = l ? rnd(&seed) * (w + 1) : 0;
            full[l] = 1 + rnd(&seed) * 100;
            dif[l] = full[l] * rnd(&seed);
            allowed[l] = rnd(&seed) < 0.7;
        }
        ds_cost_model cm = {n, 3, {c[0], c[1], c[2]}, {1 + rnd(&seed) * 50, 1 + rnd(&seed) * 50, 1 + rnd(&seed) * 50},
                            {0.01, 0.01, 0.01}, (int)(rnd(&seed) * 3), 0, {0}};
        ds_plan bf, opt, nsc;
        ds_sim_result ro, rn;
        ds_error err;
        double t = brute(&cm, allowed, full, dif, 10, &bf);
        assert_true(ds_sched_optimal(&cm, allowed, full, dif, 10, 1, 100000, &opt, &ro, &err) > 0);
        if (fabs(ro.per_frame - t) > 1e-9)
            fail_msg("trial %d: opt %.9f, brute force %.9f", trial, ro.per_frame, t);
        ds_plan start = {3, {0, 0, n - 1}};
        ds_sched_nsc(&cm, allowed, full, dif, 10, 1, &start, &nsc, &rn);
        assert_true(rn.per_frame >= ro.per_frame - 1e-9);
        for (int i = 0; i < 3; i++)
            assert_true(opt.cut[i] == 0 || opt.cut[i] == n - 1 || allowed[opt.cut[i]]);
    }
}

/* AlexNet at 480x720 on the testbed's links, m->w0 4 MB/s and w0->w1 1 MB/s,
 * two equal workers (layer times of one core, 1 thread). The load-balanced
 * plan cuts after the second MaxPool (layer 6, 980 kB); its neighbours'
 * tensors are larger (ReLU 4 MB, Conv 2 MB), so moving the cut one layer at
 * a time stays there. The original's NSC tries every cut next to the 1 MB/s
 * link and moves everything to worker 0 (w0:1..13), where nothing crosses
 * that link. */
static void test_nsc_moves_alexnet_cut_past_the_slow_link(void **state)
{
    (void)state;
    double c[14] = {0, 0.0120, 0, 0.00015, 0.0215, 0, 0.0017, 0.0084, 0, 0.0154, 0, 0.0098, 0, 0.00005};
    /* Full tensors: the input as u8, the rest f32 (the dag's sizes). */
    double full[14] = {1036800, 5453312, 5453312, 1344256, 4032768, 4032768, 979968, 1959936,
                       1959936, 1306624, 1306624, 1306624, 1306624, 301056};
    /* Updates after frame 0: about a third of a full tensor (zstd). */
    double dif[14];
    for (int l = 0; l < 14; l++)
        dif[l] = full[l] * (l ? 0.35 : 0.2);
    int allowed[14];
    for (int l = 0; l < 14; l++)
        allowed[l] = 1;
    ds_cost_model cm = {14, 2, {c, c}, {4e6, 1e6}, {0.002, 0.002}, 2, 0, {0}};
    ds_plan lbc = {2, {6, 13}}, got;
    ds_sim_result r0, r, rn;
    /* Frame 0 (full tensors, planned on its own), then 49 frames of updates. */
    for (int phase = 0; phase < 2; phase++) {
        const double *d = phase ? dif : NULL;
        int frames = phase ? 49 : 1;
        ds_cost_simulate(&cm, &lbc, full, d, frames, 1, &r0);
        for (int step = -1; step <= 1; step += 2) {
            ds_plan nb = {2, {6 + step, 13}};
            ds_cost_simulate(&cm, &nb, full, d, frames, 1, &rn);
            if (rn.per_frame <= r0.per_frame)
                fail_msg("phase %d: the cut after layer %d is not worse than after 6", phase, 6 + step);
        }
        ds_sched_nsc(&cm, allowed, full, d, frames, 1, &lbc, &got, &r);
        if (got.cut[0] != 13 || got.cut[1] != 13)
            fail_msg("phase %d: nsc cut after %d, expected 13 (w0:1..13)", phase, got.cut[0]);
        assert_true(r.per_frame < r0.per_frame);
    }
}

/* The left worker of the re-split link keeps at least one layer, as in the
 * original: with a slow worker 0 and fast links opt empties worker 0, nsc
 * leaves it the first layer. */
static void test_nsc_left_worker_keeps_a_layer(void **state)
{
    (void)state;
    double slow[5] = {0, 1, 1, 1, 1}, fast[5] = {0, 0.1, 0.1, 0.1, 0.1}, b[5] = {10, 10, 10, 10, 10};
    ds_cost_model cm = {5, 2, {slow, fast}, {1e6, 1e6}, {0}, 0, 0, {0}};
    ds_plan start = {2, {2, 4}}, nsc, opt;
    ds_sim_result rn, ro;
    ds_error err;
    assert_true(ds_sched_optimal(&cm, NULL, b, b, 10, 1, 1000, &opt, &ro, &err) > 0);
    assert_int_equal(opt.cut[0], 0);
    ds_sched_nsc(&cm, NULL, b, b, 10, 1, &start, &nsc, &rn);
    assert_int_equal(nsc.cut[0], 1);
    assert_int_equal(nsc.cut[1], 4);
}

static void test_optimal_refuses_huge_spaces(void **state)
{
    (void)state;
    double c[200] = {0}, b[200] = {0};
    ds_cost_model cm = {200, 8, {c, c, c, c, c, c, c, c}, {1, 1, 1, 1, 1, 1, 1, 1}, {0}, 0, 0, {0}};
    ds_plan p;
    ds_sim_result r;
    ds_error err;
    assert_int_equal(ds_sched_optimal(&cm, NULL, b, b, 2, 1, 1000000, &p, &r, &err), -1);
    assert_non_null(strstr(err.msg, "exceed the limit"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simulation_by_hand),
        cmocka_unit_test(test_measured_terms_by_hand),
        cmocka_unit_test(test_optimal_matches_brute_force),
        cmocka_unit_test(test_nsc_moves_alexnet_cut_past_the_slow_link),
        cmocka_unit_test(test_nsc_left_worker_keeps_a_layer),
        cmocka_unit_test(test_optimal_refuses_huge_spaces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
