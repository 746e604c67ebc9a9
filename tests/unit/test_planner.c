/* test_planner - the master's planner and the schedulers' descriptors on a
 * small chain model: the first plan of every scheduler (against lbc's cuts,
 * nsc's search and a brute force over every plan), when the predictors are
 * evaluated (frame 1, then every DS_REPLAN_FRAMES frames, on the mean input
 * change), a switch only when the new plan pays its full first frame, nsc
 * planning the updates once, and no predictors meaning lbc. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/planner.h"

#define N_LAYERS 6
#define FRAMES 40

/* 0 input 1x3x16x16 (u8)  1 relu  2 maxpool 1x3x8x8  3 relu  4 maxpool
 * 1x3x4x4  5 relu: a chain, so every layer is a legal cut. */
static void make_chain(ds_model *m)
{
    static const ds_op ops[N_LAYERS] = {DS_OP_INPUT, DS_OP_RELU, DS_OP_MAXPOOL,
                                        DS_OP_RELU,  DS_OP_MAXPOOL, DS_OP_RELU};
    static const int side[N_LAYERS] = {16, 16, 8, 8, 4, 4};
    memset(m, 0, sizeof *m);
    m->name = strdup("chain");
    snprintf(m->hash, sizeof m->hash, "0123456789abcdef");
    m->n_layers = N_LAYERS;
    m->layers = calloc(N_LAYERS, sizeof *m->layers);
    for (int i = 0; i < N_LAYERS; i++) {
        ds_layer *l = &m->layers[i];
        char name[16];
        snprintf(name, sizeof name, "l%d", i);
        l->id = i;
        l->op = ops[i];
        l->name = strdup(name);
        l->n_inputs = i ? 1 : 0;
        l->inputs = i ? malloc(sizeof(int)) : NULL;
        if (i)
            l->inputs[0] = i - 1;
        l->n_consumers = i + 1 < N_LAYERS;
        l->consumers = l->n_consumers ? malloc(sizeof(int)) : NULL;
        if (l->n_consumers)
            l->consumers[0] = i + 1;
        l->out_shape = ds_shape_nchw(1, 3, side[i], side[i]);
    }
    m->n_outputs = 1;
    m->outputs = malloc(sizeof(int));
    m->outputs[0] = N_LAYERS - 1;
}

/* Seconds per layer of each worker, links in MB/s. */
typedef struct scenario {
    double cost[2][N_LAYERS];
    const char *bandwidth;
} scenario;

/* Worker 1 is four times as fast; the link into it is slow. */
static const scenario slow_second_link = {
    {{0, 0.020, 0.010, 0.020, 0.010, 0.020}, {0, 0.005, 0.0025, 0.005, 0.0025, 0.005}}, "1, 0.05"};
/* Equal workers, a tight link between them: busy input makes the updates
 * at early cuts expensive, and a full copy of the pooled map there costs
 * about 40 ms. */
static const scenario tight_link = {
    {{0, 0.005, 0.005, 0.005, 0.005, 0.005}, {0, 0.005, 0.005, 0.005, 0.005, 0.005}}, "1, 0.02"};
/* Equal workers, equal links. */
static const scenario equal = {
    {{0, 0.010, 0.010, 0.010, 0.010, 0.010}, {0, 0.010, 0.010, 0.010, 0.010, 0.010}}, "1, 1"};
/* Equal workers, links not configured. */
static const scenario unmeasured = {
    {{0, 0.010, 0.010, 0.010, 0.010, 0.010}, {0, 0.010, 0.010, 0.010, 0.010, 0.010}}, NULL};

typedef struct fixture {
    ds_model m;
    ds_config cfg;
    ds_planner p;
} fixture;

static void setup_run(fixture *f, const scenario *s, const char *sched, const char *mode, int with_pred,
                      int frames)
{
    make_chain(&f->m);
    char text[512], bw[64] = "";
    if (s->bandwidth) /* NULL: not configured, the planner measures the links */
        snprintf(bw, sizeof bw, ", bandwidth: [%s]", s->bandwidth);
    snprintf(text, sizeof text,
             "port: {worker: [1, 2]}\nnet: {m->w0: 'h:1', w0->w1: 'h:2', m->w1: 'h:2', m->t: 'h:3'}\n"
             "video_path: v.mp4\ninsecure: true\nmode: %s\nmaster: {ifr_num: %d, pd_num: 2, scheduler: %s%s}\n",
             mode, frames, sched, bw);
    ds_error err;
    if (ds_config_parse(text, strlen(text), "test.yml", ".", &f->cfg, &err))
        fail_msg("%s", err.msg);
    double *costs[DS_MAX_WORKERS] = {0};
    for (int w = 0; w < 2; w++) {
        costs[w] = malloc(sizeof(double) * N_LAYERS);
        memcpy(costs[w], s->cost[w], sizeof(double) * N_LAYERS);
    }
    ds_predictors *pred = NULL;
    if (with_pred)
        assert_non_null(pred = ds_predictors_new(&f->m, &err)); /* change passes through unchanged */
    if (ds_planner_init(&f->p, &f->cfg, &f->m, costs, pred, DS_COMPRESS_NONE, &err))
        fail_msg("%s", err.msg);
}

static void setup_planner(fixture *f, const scenario *s, const char *sched, const char *mode, int with_pred)
{
    setup_run(f, s, sched, mode, with_pred, FRAMES);
}

static void teardown_planner(fixture *f)
{
    ds_planner_free(&f->p);
    ds_config_free(&f->cfg);
    ds_model_free(&f->m);
}

static int same_plan(const ds_plan *a, const ds_plan *b)
{
    return a->n_workers == b->n_workers && !memcmp(a->cut, b->cut, sizeof a->cut);
}

/* The best of every plan of 2 workers, as cost.h's simulation prices it. */
static double brute_force(const ds_planner *p, const double *dif, int frames, ds_plan *best)
{
    double best_t = INFINITY;
    for (int a = 0; a < N_LAYERS; a++) {
        ds_plan q = {2, {a, N_LAYERS - 1}};
        ds_sim_result r;
        ds_cost_simulate(&p->cm, &q, p->full_bytes, dif, frames, 1, &r);
        if (r.makespan < best_t) {
            best_t = r.makespan;
            *best = q;
        }
    }
    return best_t;
}

static void test_descriptors(void **state)
{
    (void)state;
    for (int s = 0; s < DS_SCHED_COUNT; s++) {
        const ds_sched_policy *d = ds_sched_policy_of((ds_scheduler)s);
        assert_non_null(d);
        assert_int_equal(d->id, s);
        assert_non_null(d->first);
        assert_non_null(d->replan);
        assert_true(d->horizon >= 0);
    }
    assert_null(ds_sched_policy_of(DS_SCHED_COUNT));
    assert_null(ds_sched_policy_of((ds_scheduler)-1));
    assert_string_equal(ds_scheduler_name(DS_SCHED_OPT), "opt");
    assert_int_equal(ds_scheduler_needs_predictors(DS_SCHED_LBC), 0);
    assert_int_equal(ds_scheduler_needs_predictors(DS_SCHED_NSC), 1);
    assert_int_equal(ds_scheduler_needs_predictors(DS_SCHED_OPT), 1);
    assert_int_equal(ds_scheduler_needs_predictors(DS_SCHED_COUNT), 0);
    /* Only opt looks a fixed number of frames ahead. */
    assert_int_equal(ds_sched_policy_of(DS_SCHED_OPT)->horizon, DS_REPLAN_FRAMES);
    assert_int_equal(ds_sched_policy_of(DS_SCHED_NSC)->horizon, 0);
}

static void test_first_plan_per_scheduler(void **state)
{
    (void)state;
    static const char *const modes[] = {"itg", "dif"};
    for (int mo = 0; mo < 2; mo++) {
        int dif = mo == 1;
        fixture f;
        ds_error err;
        int changed = 0;
        ds_sim_result r;

        /* lbc: the load-balanced cuts, priced over the whole run. Worker 1
         * is 4x as fast, so it gets 4/5 of the cost: cut after layer 1. */
        setup_planner(&f, &slow_second_link, "lbc", modes[mo], 0);
        assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
        assert_int_equal(changed, 1);
        assert_int_equal(f.p.plan_id, 1);
        ds_plan want = {2, {1, N_LAYERS - 1}};
        assert_true(same_plan(&f.p.current, &want));
        assert_true(same_plan(&f.p.current, &f.p.lbc));
        ds_cost_simulate(&f.p.cm, &f.p.lbc, f.p.full_bytes, NULL, FRAMES, 1, &r);
        assert_true(r.makespan == f.p.predicted.makespan);
        ds_plan lbc = f.p.lbc;
        teardown_planner(&f);

        /* opt: the best plan for frame 0 alone (dif: later frames are
         * updates) or for every frame in full (itg). Here everything goes
         * to the fast worker 1, behind the input, the smallest tensor. */
        setup_planner(&f, &slow_second_link, "opt", modes[mo], 1);
        assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
        assert_int_equal(changed, 1);
        ds_plan best;
        double t = brute_force(&f.p, NULL, dif ? 1 : FRAMES, &best);
        assert_true(fabs(f.p.predicted.makespan - t) < 1e-12);
        assert_true(same_plan(&f.p.current, &best));
        ds_plan to_w1 = {2, {0, N_LAYERS - 1}};
        assert_true(same_plan(&f.p.current, &to_w1));
        assert_false(same_plan(&f.p.current, &lbc)); /* the scenario tells them apart */
        teardown_planner(&f);

        /* nsc: the search from the lbc plan, for frame 0 alone in both modes. */
        setup_planner(&f, &slow_second_link, "nsc", modes[mo], 1);
        assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
        ds_plan nsc;
        ds_sched_nsc(&f.p.cm, f.p.allowed, f.p.full_bytes, NULL, 1, 1, &f.p.lbc, &nsc, &r);
        assert_true(same_plan(&f.p.current, &nsc));
        assert_true(r.makespan == f.p.predicted.makespan);
        /* The search only accepts improvements: never worse than lbc, never
         * better than the optimum (it keeps a layer on the left worker, as
         * the original does, so here it cannot empty worker 0). */
        ds_sim_result lbc_r;
        ds_cost_simulate(&f.p.cm, &lbc, f.p.full_bytes, NULL, 1, 1, &lbc_r);
        assert_true(f.p.predicted.makespan <= lbc_r.makespan);
        assert_true(f.p.predicted.makespan >= brute_force(&f.p, NULL, 1, &best) - 1e-12);
        teardown_planner(&f);
    }
}

/* Input change of frame k (the same in every channel): still, then busy,
 * then calm. */
static float change_at(int k)
{
    return k < 12 ? 0.001f * (float)(k % 3 + 1) : k < 25 ? 0.9f : 0.05f;
}

static float still(int k)
{
    return 0.001f * (float)(k % 3 + 1);
}

static void test_replan_cadence(void **state)
{
    (void)state;
    fixture f;
    ds_error err;
    int changed;
    setup_planner(&f, &slow_second_link, "opt", "dif", 1);
    const ds_shape *in = &f.m.layers[0].out_shape;
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    double sum = 0, expect = 0;
    int n = 0;
    for (int k = 1; k < FRAMES; k++) {
        float frac[3] = {change_at(k), change_at(k), change_at(k)};
        sum += frac[0];
        n++;
        assert_int_equal(ds_planner_plan(&f.p, k, frac, &changed, &err), 0);
        if (k == 1 || k % DS_REPLAN_FRAMES == 0) {
            /* The predictors see the mean change since the last evaluation. */
            float mean = (float)(sum / n), m3[3] = {mean, mean, mean};
            expect = (double)ds_codec_predict_bytes(in, DS_U8, m3, DS_COMPRESS_NONE);
            sum = 0;
            n = 0;
        }
        if (f.p.dif_bytes[0] != expect)
            fail_msg("frame %d: input update priced %.0f bytes, want %.0f", k, f.p.dif_bytes[0], expect);
    }
    teardown_planner(&f);

    /* itg: nothing is re-planned, whatever the input does. */
    setup_planner(&f, &slow_second_link, "opt", "itg", 1);
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    for (int k = 1; k < FRAMES; k++) {
        float frac[3] = {change_at(k), change_at(k), change_at(k)};
        assert_int_equal(ds_planner_plan(&f.p, k, frac, &changed, &err), 0);
        assert_int_equal(changed, 0);
        assert_int_equal(f.p.have_dif, 0);
    }
    assert_int_equal(f.p.plan_id, 1);
    teardown_planner(&f);
}

/* Runs sched over the input changes; at every evaluation checks the switch
 * rule against an independent computation. Counts switches, and proposals
 * better per frame in steady state that were refused (the full first frame
 * did not pay). */
static void run_checked(const scenario *s, const char *sched, int frames, float (*change)(int), int *switches,
                        int *refused, int *switch_frames)
{
    fixture f;
    ds_error err;
    int changed;
    setup_run(&f, s, sched, "dif", 1, frames);
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    for (int k = 1; k < frames; k++) {
        float frac[3] = {change(k), change(k), change(k)};
        ds_plan before = f.p.current;
        uint32_t id = f.p.plan_id;
        assert_int_equal(ds_planner_plan(&f.p, k, frac, &changed, &err), 0);
        int evaluated = k == 1 || k % DS_REPLAN_FRAMES == 0;
        if (!evaluated) {
            assert_int_equal(changed, 0);
            continue;
        }
        int left = frames - k;
        int opt = !strcmp(sched, "opt");
        int horizon = opt && left > DS_REPLAN_FRAMES ? DS_REPLAN_FRAMES : left;
        ds_sim_result keep, cr;
        ds_cost_simulate(&f.p.cm, &before, f.p.full_bytes, f.p.dif_bytes, horizon, 0, &keep);
        ds_plan cand;
        if (opt) {
            assert_true(ds_sched_optimal(&f.p.cm, f.p.allowed, f.p.full_bytes, f.p.dif_bytes, horizon, 1,
                                         100000, &cand, &cr, &err) > 0);
        } else if (k == 1) {
            ds_sched_nsc(&f.p.cm, f.p.allowed, f.p.full_bytes, f.p.dif_bytes, horizon, 1, &f.p.lbc, &cand, &cr);
        } else {
            cand = before; /* nsc proposes nothing after frame 1 */
            cr = keep;
        }
        int pays = !same_plan(&cand, &before) && cr.makespan < keep.makespan;
        if (changed != pays)
            fail_msg("%s frame %d: changed %d, but the proposal %s (%.6f s vs keeping %.6f s)", sched, k,
                     changed, pays ? "pays" : "does not pay", cr.makespan, keep.makespan);
        assert_true(same_plan(&f.p.current, pays ? &cand : &before));
        assert_int_equal(f.p.plan_id, id + (uint32_t)pays);
        if (pays) {
            ++*switches;
            switch_frames[*switches - 1 < 8 ? *switches - 1 : 7] = k;
            assert_true(f.p.predicted.makespan == cr.makespan);
        } else {
            assert_true(f.p.predicted.makespan == keep.makespan);
            *refused += !same_plan(&cand, &before);
        }
    }
    teardown_planner(&f);
}

static void test_switch_only_when_it_pays(void **state)
{
    (void)state;
    int switches = 0, refused = 0, frames[8] = {0};
    run_checked(&slow_second_link, "opt", FRAMES, change_at, &switches, &refused, frames);
    run_checked(&equal, "opt", FRAMES, change_at, &switches, &refused, frames);
    run_checked(&tight_link, "opt", FRAMES, change_at, &switches, &refused, frames);
    assert_true(switches >= 1);
    /* A still input and 34 frames: the last evaluation (frame 30) looks 4
     * frames ahead, too few to pay a full copy at the plan's cut, so a plan
     * that is worse in steady state wins the search from scratch and the
     * planner keeps its own. */
    int before = refused;
    run_checked(&tight_link, "opt", 34, still, &switches, &refused, frames);
    assert_true(refused > before);
}

static void test_nsc_plans_updates_once(void **state)
{
    (void)state;
    int switches = 0, refused = 0, frames[8] = {0};
    run_checked(&slow_second_link, "nsc", FRAMES, change_at, &switches, &refused, frames);
    run_checked(&equal, "nsc", FRAMES, change_at, &switches, &refused, frames);
    run_checked(&tight_link, "nsc", FRAMES, change_at, &switches, &refused, frames);
    assert_true(switches >= 1);
    for (int i = 0; i < switches && i < 8; i++)
        assert_int_equal(frames[i], 1);
    /* opt moves later in the same run: nsc's silence is its policy. */
    int opt_switches = 0, opt_frames[8] = {0};
    run_checked(&tight_link, "opt", FRAMES, change_at, &opt_switches, &refused, opt_frames);
    int later = 0;
    for (int i = 0; i < opt_switches && i < 8; i++)
        later |= opt_frames[i] > 1;
    assert_true(later);
}

static void test_no_predictors_means_lbc(void **state)
{
    (void)state;
    static const char *const scheds[] = {"nsc", "opt"};
    for (int s = 0; s < 2; s++) {
        fixture f;
        ds_error err;
        int changed;
        setup_planner(&f, &slow_second_link, scheds[s], "dif", 0);
        assert_int_equal(f.p.policy->id, DS_SCHED_LBC);
        assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
        assert_true(same_plan(&f.p.current, &f.p.lbc));
        /* Without predictors a payload is the raw tensor. */
        assert_true(f.p.full_bytes[0] == 3 * 16 * 16);
        assert_true(f.p.full_bytes[1] == 4 * 3 * 16 * 16);
        for (int k = 1; k < FRAMES; k++) {
            float frac[3] = {change_at(k), change_at(k), change_at(k)};
            assert_int_equal(ds_planner_plan(&f.p, k, frac, &changed, &err), 0);
            assert_int_equal(changed, 0);
        }
        assert_int_equal(f.p.plan_id, 1);
        assert_int_equal(f.p.have_dif, 0);
        teardown_planner(&f);
    }
}

static void test_run_prediction(void **state)
{
    (void)state;
    /* lbc never switches: the run is one segment priced like frame 0's plan. */
    fixture f;
    ds_error err;
    int changed;
    setup_planner(&f, &equal, "lbc", "itg", 0);
    for (int k = 0; k < FRAMES; k++)
        assert_int_equal(ds_planner_plan(&f.p, k, NULL, &changed, &err), 0);
    ds_sim_result r;
    ds_cost_simulate(&f.p.cm, &f.p.lbc, f.p.full_bytes, NULL, FRAMES, 1, &r);
    assert_true(fabs(ds_planner_predicted_per_frame(&f.p, FRAMES) - r.makespan / FRAMES) < 1e-12);
    /* Asking twice gives the same figure (the open segment is not closed). */
    assert_true(fabs(ds_planner_predicted_per_frame(&f.p, FRAMES) - r.makespan / FRAMES) < 1e-12);
    assert_true(ds_planner_predicted_per_frame(&f.p, 0) == 0);
    teardown_planner(&f);
}

/* Transfers of link k at `rate` bytes/s and `latency` s, one a second from
 * t0: a large one, then smaller ones (sizes apart, so the line is fitted).
 * They are of frames planned before the plan in force: they measure the
 * link, not the sizes of what the current plan sends. */
static void feed_link(ds_planner *p, int k, double rate, double latency, int frames, double t0)
{
    double t = t0;
    for (int f = 0; f < frames; f++) {
        double bytes = f == 0 ? 768 : 100 + 50 * (f % 3);
        ds_planner_observe_link(p, -1, k, bytes, t, t + bytes / rate + latency);
        t += 1;
    }
}

static void test_unconfigured_links_are_measured(void **state)
{
    (void)state;
    fixture f;
    ds_error err;
    int changed;
    /* Nothing configured: the first plan weighs compute only, and there is
     * no prediction until the links the plan uses are measured. */
    setup_planner(&f, &unmeasured, "lbc", "itg", 0);
    assert_int_equal(f.cfg.master.bandwidth_given, 0);
    /* Plans price an unknown link at 10 MB/s, not as free. */
    assert_true(f.p.cm.bandwidth[0] == 10e6 && f.p.cm.bandwidth[1] == 10e6);
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    ds_plan halves = {2, {3, N_LAYERS - 1}};
    assert_true(same_plan(&f.p.current, &halves)); /* both links carry a tensor */
    assert_true(isnan(ds_planner_predicted_per_frame(&f.p, FRAMES)));
    char text[256];
    assert_string_equal(ds_planner_measured_str(&f.p, text, sizeof text), "");
    feed_link(&f.p, 0, 2e3, 0.004, 2, 100); /* too few transfers: still nothing */
    assert_true(isnan(ds_planner_predicted_per_frame(&f.p, FRAMES)));
    feed_link(&f.p, 0, 2e3, 0.004, DS_LINKRATE_MIN, 200);
    assert_true(isnan(ds_planner_predicted_per_frame(&f.p, FRAMES))); /* w0->w1 unknown */
    feed_link(&f.p, 1, 500, 0.001, DS_LINKRATE_MIN, 200);
    for (int k = 1; k < FRAMES; k++)
        assert_int_equal(ds_planner_plan(&f.p, k, NULL, &changed, &err), 0);
    /* The prediction is the simulation with the measured links. */
    assert_true(fabs(f.p.cm.bandwidth[0] - 2e3) < 1e-6 && fabs(f.p.cm.hop_latency[0] - 0.004) < 1e-9);
    assert_true(fabs(f.p.cm.bandwidth[1] - 500) < 1e-6 && fabs(f.p.cm.hop_latency[1] - 0.001) < 1e-9);
    ds_cost_model cm = f.p.cm;
    cm.bandwidth[0] = 2e3, cm.hop_latency[0] = 0.004, cm.bandwidth[1] = 500, cm.hop_latency[1] = 0.001;
    ds_sim_result r;
    ds_cost_simulate(&cm, &halves, f.p.full_bytes, NULL, FRAMES, 1, &r);
    double got = ds_planner_predicted_per_frame(&f.p, FRAMES);
    if (!(fabs(got - r.per_frame) < 1e-12))
        fail_msg("predicted %.6f s per frame, the measured links give %.6f", got, r.per_frame);
    assert_non_null(strstr(ds_planner_measured_str(&f.p, text, sizeof text), "m->w0 0.002 MB/s, w0->w1 0.0005 MB/s"));
    teardown_planner(&f);

    /* Configured bandwidths stay what the planner prices with. */
    setup_planner(&f, &equal, "lbc", "itg", 0);
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    double before = ds_planner_predicted_per_frame(&f.p, FRAMES);
    feed_link(&f.p, 0, 2e3, 0.004, 5, 100);
    assert_true(f.p.cm.bandwidth[0] == 1e6 && f.p.cm.hop_latency[0] == 0.002);
    assert_true(ds_planner_predicted_per_frame(&f.p, FRAMES) == before);
    assert_non_null(strstr(ds_planner_measured_str(&f.p, text, sizeof text), "m->w0 0.002 MB/s (configured 1)"));
    teardown_planner(&f);
}

/* Profiles taken while other processes ran are off by their load: the
 * workers' measured times scale them, and the first frame gives the cold
 * start. */
static void test_compute_measured(void **state)
{
    (void)state;
    fixture f;
    ds_error err;
    int changed;
    setup_planner(&f, &equal, "lbc", "itg", 0);
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    ds_plan halves = {2, {3, N_LAYERS - 1}};
    assert_true(same_plan(&f.p.current, &halves));
    double profiled[2] = {0.030, 0.020}; /* jobs: layers 1..3, 4..5 */
    double before = ds_planner_predicted_per_frame(&f.p, FRAMES);
    ds_planner_observe_compute(&f.p, 0, 0, 0.5); /* cold */
    ds_planner_observe_compute(&f.p, 0, 1, 0.2);
    for (int k = 1; k < 6; k++) { /* worker 0 at half its profile, worker 1 at twice */
        ds_planner_observe_compute(&f.p, k, 0, profiled[0] * 0.5);
        ds_planner_observe_compute(&f.p, k, 1, profiled[1] * 2);
    }
    for (int l = 1; l < N_LAYERS; l++) {
        assert_true(fabs(f.p.cm.compute[0][l] - 0.005) < 1e-12);
        assert_true(fabs(f.p.cm.compute[1][l] - 0.020) < 1e-12);
    }
    assert_true(fabs(f.p.cm.cold[0] - (0.5 - 0.015)) < 1e-12);
    assert_true(fabs(f.p.cm.cold[1] - (0.2 - 0.040)) < 1e-12);
    ds_planner_observe_source(&f.p, 0.010);
    ds_planner_observe_source(&f.p, 0.010);
    assert_true(fabs(f.p.cm.source - 0.010) < 1e-12);
    /* By hand: the measured model simulated over the run. */
    double c0[N_LAYERS], c1[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++)
        c0[l] = l ? 0.005 : 0, c1[l] = l ? 0.020 : 0;
    ds_cost_model cm = f.p.cm;
    cm.compute[0] = c0, cm.compute[1] = c1;
    cm.cold[0] = 0.485, cm.cold[1] = 0.16, cm.source = 0.010;
    ds_sim_result r;
    ds_cost_simulate(&cm, &halves, f.p.full_bytes, NULL, FRAMES, 1, &r);
    double got = ds_planner_predicted_per_frame(&f.p, FRAMES);
    if (!(fabs(got - r.per_frame) < 1e-12) || got == before)
        fail_msg("predicted %.6f s per frame (%.6f before measuring), the measurements give %.6f", got, before,
                 r.per_frame);
    char text[256];
    assert_non_null(strstr(ds_planner_measured_str(&f.p, text, sizeof text),
                           "w0 0.50x its profile (+0.485 s cold), w1 2.00x its profile (+0.160 s cold), "
                           "master 10.0 ms per frame"));
    /* A worker off its plan's frames (a frame planned before the plan in
     * force) or a bad time changes nothing. */
    ds_planner_observe_compute(&f.p, -1, 0, 9.0);
    ds_planner_observe_compute(&f.p, 7, 0, NAN);
    ds_planner_observe_compute(&f.p, 7, 5, 1.0);
    assert_true(fabs(f.p.cm.compute[0][1] - 0.005) < 1e-12);
    teardown_planner(&f);
}

/* The bytes a link carried against the size model's for the layer that
 * crossed it: the updates of the input cost what they measured. */
static void test_payload_sizes_measured(void **state)
{
    (void)state;
    fixture f;
    ds_error err;
    int changed;
    setup_planner(&f, &slow_second_link, "opt", "dif", 1);
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    double full0 = f.p.full_raw[0];
    ds_planner_observe_link(&f.p, 0, 0, 0.75 * full0, 0, 1); /* frame 0 in full */
    float frac[3] = {0.5f, 0.5f, 0.5f};
    for (int k = 1; k < DS_REPLAN_FRAMES; k++) {
        assert_int_equal(ds_planner_plan(&f.p, k, frac, &changed, &err), 0);
        ds_planner_observe_link(&f.p, k, 0, 0.5 * f.p.dif_raw[0], k, k + 0.5);
    }
    double model = f.p.dif_raw[0];
    assert_true(model > 0 && f.p.dif_bytes[0] == model); /* priced before the evaluation */
    assert_int_equal(ds_planner_plan(&f.p, DS_REPLAN_FRAMES, frac, &changed, &err), 0);
    assert_true(fabs(f.p.dif_bytes[0] - 0.5 * model) < 1e-9);
    assert_true(fabs(f.p.full_bytes[0] - 0.75 * full0) < 1e-9);
    assert_true(f.p.dif_bytes[1] == f.p.dif_raw[1]); /* no measurement: the model */
    char text[256];
    assert_non_null(strstr(ds_planner_measured_str(&f.p, text, sizeof text), "input updates 0.50x the size model"));
    teardown_planner(&f);
}

/* Plans switched before the links were measured are priced once they are:
 * then the run's prediction is the one of a twin whose configuration gives
 * the rates measured. */
static void test_early_plans_priced_later(void **state)
{
    (void)state;
    static const scenario configured = {
        {{0, 0.010, 0.010, 0.010, 0.010, 0.010}, {0, 0.010, 0.010, 0.010, 0.010, 0.010}}, "10, 10"};
    fixture f, twin;
    ds_error err;
    int changed, twin_changed;
    setup_planner(&f, &unmeasured, "opt", "dif", 1);
    setup_planner(&twin, &configured, "opt", "dif", 1);
    assert_int_equal(ds_planner_plan(&f.p, 0, NULL, &changed, &err), 0);
    assert_int_equal(ds_planner_plan(&twin.p, 0, NULL, &twin_changed, &err), 0);
    int switches = 0;
    for (int k = 1; k < FRAMES; k++) {
        float frac[3] = {change_at(k), change_at(k), change_at(k)};
        assert_int_equal(ds_planner_plan(&f.p, k, frac, &changed, &err), 0);
        assert_int_equal(ds_planner_plan(&twin.p, k, frac, &twin_changed, &err), 0);
        assert_int_equal(changed, twin_changed);
        switches += changed;
    }
    /* Frame 0 alone on one worker, then the pipeline over both. */
    assert_true(switches >= 1 && f.p.n_pending >= 1);
    assert_true(isnan(ds_planner_predicted_per_frame(&f.p, FRAMES)));
    feed_link(&f.p, 0, 10e6, 0.002, DS_LINKRATE_MIN, 100);
    feed_link(&f.p, 1, 10e6, 0.002, DS_LINKRATE_MIN, 100);
    double got = ds_planner_predicted_per_frame(&f.p, FRAMES), want = ds_planner_predicted_per_frame(&twin.p, FRAMES);
    if (!(fabs(got - want) <= 1e-9 * want))
        fail_msg("predicted %.9f s per frame, the configured twin %.9f", got, want);
    assert_true(ds_planner_predicted_per_frame(&f.p, FRAMES) == got); /* asking does not close anything */
    teardown_planner(&f);
    teardown_planner(&twin);
}

/* A new epoch's planner starts from what the previous one measured, for
 * the same workers and the same links only. */
static void test_inherit_measurements(void **state)
{
    (void)state;
    fixture a, b, c;
    ds_error err;
    int changed;
    setup_planner(&a, &unmeasured, "lbc", "itg", 0);
    assert_int_equal(ds_planner_plan(&a.p, 0, NULL, &changed, &err), 0);
    feed_link(&a.p, 0, 2e3, 0.004, 4, 100);
    feed_link(&a.p, 1, 500, 0.001, 4, 100);
    for (int k = 1; k < 4; k++) {
        ds_planner_observe_compute(&a.p, k, 0, 0.030 * 0.5);
        ds_planner_observe_compute(&a.p, k, 1, 0.020 * 3);
    }
    ds_planner_observe_source(&a.p, 0.007);
    const int ids[2] = {0, 1};
    /* The same chain: everything carries over. */
    setup_planner(&b, &unmeasured, "lbc", "itg", 0);
    ds_planner_inherit(&b.p, ids, &a.p, ids);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(b.p.link_known[k], 1);
        assert_true(b.p.cm.bandwidth[k] == a.p.cm.bandwidth[k] && b.p.cm.hop_latency[k] == a.p.cm.hop_latency[k]);
        for (int l = 0; l < N_LAYERS; l++)
            assert_true(b.p.cm.compute[k][l] == a.p.cm.compute[k][l]);
    }
    assert_true(fabs(b.p.cm.compute[1][1] - 0.030) < 1e-12);
    assert_true(b.p.cm.source == 0.007);
    assert_int_equal(ds_planner_plan(&b.p, 0, NULL, &changed, &err), 0);
    assert_false(isnan(ds_planner_predicted_per_frame(&b.p, FRAMES)));
    /* Before: worker 5 fed worker 1.  Worker 1 keeps its measurement, but
     * the link w0->w1 is not w5->w1, nor is m->w0 the same as m->w5. */
    const int before[2] = {5, 1};
    setup_planner(&c, &unmeasured, "lbc", "itg", 0);
    ds_planner_inherit(&c.p, ids, &a.p, before);
    assert_int_equal(c.p.link_known[0], 0);
    assert_int_equal(c.p.link_known[1], 0);
    assert_true(c.p.cm.bandwidth[1] == 10e6);
    assert_true(fabs(c.p.cm.compute[1][1] - 0.030) < 1e-12); /* worker 1: 3x its profile */
    assert_true(c.p.cm.compute[0][1] == 0.010);              /* worker 0 was not measured */
    teardown_planner(&a);
    teardown_planner(&b);
    teardown_planner(&c);
}

static void test_init_failure_releases(void **state)
{
    (void)state;
    /* An unknown scheduler is refused; what init took is freed (ASan). */
    ds_model m;
    make_chain(&m);
    ds_config cfg;
    ds_error err;
    const char *text = "port: {worker: [1]}\nnet: {m->w0: 'h:1'}\nvideo_path: v.mp4\ninsecure: true\n";
    assert_int_equal(ds_config_parse(text, strlen(text), "t.yml", ".", &cfg, &err), 0);
    cfg.master.scheduler = DS_SCHED_COUNT;
    double *costs[DS_MAX_WORKERS] = {calloc(N_LAYERS, sizeof(double))};
    ds_predictors *pred = ds_predictors_new(&m, &err);
    ds_planner p;
    assert_int_equal(ds_planner_init(&p, &cfg, &m, costs, pred, DS_COMPRESS_NONE, &err), -1);
    assert_non_null(strstr(err.msg, "unknown scheduler"));
    assert_null(costs[0]);
    ds_config_free(&cfg);
    ds_model_free(&m);
}

int main(void)
{
    ds_log_init("test", DS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptors),
        cmocka_unit_test(test_first_plan_per_scheduler),
        cmocka_unit_test(test_replan_cadence),
        cmocka_unit_test(test_switch_only_when_it_pays),
        cmocka_unit_test(test_nsc_plans_updates_once),
        cmocka_unit_test(test_no_predictors_means_lbc),
        cmocka_unit_test(test_run_prediction),
        cmocka_unit_test(test_unconfigured_links_are_measured),
        cmocka_unit_test(test_compute_measured),
        cmocka_unit_test(test_payload_sizes_measured),
        cmocka_unit_test(test_inherit_measurements),
        cmocka_unit_test(test_early_plans_priced_later),
        cmocka_unit_test(test_init_failure_releases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
