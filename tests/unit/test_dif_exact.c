/* Exact difference execution (DESIGN §3): 300 frames of the bundled clip
 * (30 under emulation) through a master-side sender and three chained dif
 * nodes, over AlexNet and GoogLeNet, with the plan changing every few frames
 * (moved cuts, empty jobs, workers that had no work before).  After every
 * frame each sender's copy of a transmitted tensor is bit-identical to its
 * receiver's, and the final output is bit-identical to a full itg run of the
 * same frame. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dif/dif.h"
#include "emulated.h"
#include "sched/plan.h"
#include "video/video.h"

#define NODES 3
#define FRAMES 300
#define FRAMES_EMULATED 30 /* and a new plan every 2 frames: 15 plans */
#define PLAN_EVERY_EMULATED 2
#define PLAN_EVERY 7

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* Random plan: cuts at articulation layers, often leaving a node empty. */
static void random_plan(const int *art, int n_art, int last, ds_plan *p)
{
    p->n_workers = NODES;
    int prev = 0;
    for (int i = 0; i < NODES - 1; i++) {
        int c;
        do
            c = art[rng() % (uint32_t)n_art];
        while (c < prev);
        if (rng() % 4 == 0)
            c = prev; /* an empty job */
        p->cut[i] = c;
        prev = c;
    }
    p->cut[NODES - 1] = last;
}

static void assert_same_tensor(const ds_tensor *a, const ds_tensor *b, const char *what, int frame)
{
    if (!a || !b || a->dtype != b->dtype || !ds_shape_equal(&a->shape, &b->shape) ||
        memcmp(a->data, b->data, ds_tensor_bytes(a)) != 0)
        fail_msg("frame %d: %s differ", frame, what);
}

static void run_model(const char *spec, int rows, int cols)
{
    ds_error err;
    ds_model m;
    if (ds_model_load(spec, &m, &err) || ds_model_set_input(&m, 1, 3, rows, cols, &err))
        fail_msg("%s", err.msg);
    int *art = malloc(sizeof(int) * (size_t)m.n_layers);
    int n_art = ds_model_articulations(&m, art);
    int last = m.n_layers - 1;

    ds_dif_node *node[NODES];
    for (int i = 0; i < NODES; i++) {
        node[i] = ds_dif_node_new(&m, DS_BACKEND_XNNPACK, 1, &err);
        assert_non_null(node[i]);
    }
    ds_executor *full = ds_executor_new(&m, DS_BACKEND_XNNPACK, 1, &err);
    assert_non_null(full);
    int *all = malloc(sizeof(int) * (size_t)m.n_layers);
    for (int i = 1; i < m.n_layers; i++)
        all[i - 1] = i;
    ds_job full_job = {m.n_layers - 1, all, m.n_outputs, m.outputs};
    ds_tensor *want = calloc((size_t)m.n_outputs, sizeof *want);

    ds_dif_cache master_cache;
    assert_int_equal(ds_dif_cache_init(&master_cache, m.n_layers, &err), 0);
    ds_codec_opts dif = {DS_COMPRESS_LZ4, 1, DS_CODEC_EXACT_DELTA}; /* as the roles send */
    ds_payloads hop[NODES + 1];
    memset(hop, 0, sizeof hop);
    ds_dif_cache result_cache;
    assert_int_equal(ds_dif_cache_init(&result_cache, m.n_layers, &err), 0);

    char path[512];
    snprintf(path, sizeof path, "%s/data/sample.mp4", DS_SOURCE_DIR);
    ds_video *v = ds_video_open(path, rows, cols, &err);
    if (!v)
        fail_msg("%s", err.msg);
    ds_tensor hwc = {0}, u8 = {0}, f32 = {0};
    ds_plan plan = {0};
    ds_plan_jobs jobs = {0};
    uint32_t plan_id = 0;
    int empty_seen = 0, late_seen = 0;
    int had_work[NODES] = {0};

    const int frames = ds_test_emulated() ? FRAMES_EMULATED : FRAMES;
    const int plan_every = ds_test_emulated() ? PLAN_EVERY_EMULATED : PLAN_EVERY;
    for (int f = 0; f < frames; f++) {
        int r = ds_video_read(v, &hwc, &err);
        if (r == 0 && ds_video_rewind(v, &err) == 0)
            r = ds_video_read(v, &hwc, &err);
        if (r != 1)
            fail_msg("frame %d: %s", f, err.msg);
        assert_int_equal(ds_frame_u8_hwc_to_nchw(&hwc, &u8, &err), 0);

        if (f % plan_every == 0) {
            ds_plan_jobs_free(&jobs);
            random_plan(art, n_art, last, &plan);
            if (ds_plan_jobs_make(&m, &plan, &jobs, &err))
                fail_msg("%s", err.msg);
            plan_id++;
            for (int i = 0; i < jobs.last_active; i++)
                empty_seen += jobs.job[i].n_exec == 0;
            for (int i = 0; i <= jobs.last_active; i++) {
                late_seen += f > 0 && !had_work[i] && jobs.job[i].n_exec > 0;
                had_work[i] |= jobs.job[i].n_exec > 0;
            }
        }
        /* The master: sender of layer 0. */
        ds_dif_cache_use(&master_cache, (ds_dif_key){1, 0, plan_id});
        ds_payloads_reset(&hop[0]);
        assert_int_equal(ds_dif_send(&master_cache, 0, &u8, &dif, &hop[0].buf, &err), 0);
        assert_int_equal(ds_payloads_close_one(&hop[0], &err), 0);

        for (int i = 0; i <= jobs.last_active; i++) {
            ds_plan_job *pj = &jobs.job[i];
            ds_job j = {pj->n_exec, pj->exec_ids, pj->n_out, pj->out_ids};
            const uint8_t *in[8];
            size_t len[8];
            for (int k = 0; k < hop[i].n; k++) {
                in[k] = hop[i].buf.data + hop[i].off[k];
                len[k] = hop[i].off[k + 1] - hop[i].off[k];
            }
            if (ds_dif_node_run(node[i], (ds_dif_key){1, 0, plan_id}, &j, hop[i].n, in, len, &dif, &hop[i + 1], NULL, &err))
                fail_msg("frame %d node %d: %s", f, i, err.msg);
        }
        /* Sender and receiver copies of every tensor that travelled between
         * two working nodes are bit-identical. */
        for (int i = 0, sender = -1; i <= jobs.last_active; i++) {
            if (jobs.job[i].n_exec == 0)
                continue;
            int layer = jobs.job[i].in_ids[0];
            const ds_tensor *got = ds_dif_node_received(node[i], layer);
            const ds_tensor *sent = sender < 0 ? &master_cache.tensor[0] : ds_dif_node_sent(node[sender], layer);
            assert_same_tensor(got, sent, "sender and receiver copies", f);
            sender = i;
        }
        /* The final outputs equal a full run. */
        assert_int_equal(ds_tensor_u8_to_f32(&u8, &f32, &err), 0);
        int zero = 0;
        const ds_tensor *fin = &f32;
        assert_int_equal(ds_executor_run(full, &full_job, 1, &zero, &fin, want, &err), 0);
        ds_payloads *res = &hop[jobs.last_active + 1];
        assert_int_equal(res->n, m.n_outputs);
        ds_dif_cache_use(&result_cache, (ds_dif_key){1, 0, plan_id}); /* results are updates too */
        for (int k = 0; k < res->n; k++) {
            int id;
            assert_int_equal(ds_dif_receive(&result_cache, res->buf.data + res->off[k],
                                            res->off[k + 1] - res->off[k], NULL, &id, &err), 0);
            assert_int_equal(id, m.outputs[k]);
            assert_same_tensor(&result_cache.tensor[id], &want[k], "dif and itg outputs", f);
        }
    }
    /* The random plans did exercise empty jobs and late starters. */
    assert_true(empty_seen > 0);
    assert_true(late_seen > 0);

    ds_video_close(v);
    ds_tensor_free(&hwc);
    ds_tensor_free(&u8);
    ds_tensor_free(&f32);
    for (int k = 0; k < m.n_outputs; k++)
        ds_tensor_free(&want[k]);
    free(want);
    for (int i = 0; i <= NODES; i++)
        ds_payloads_free(&hop[i]);
    ds_dif_cache_free(&master_cache);
    ds_dif_cache_free(&result_cache);
    ds_plan_jobs_free(&jobs);
    for (int i = 0; i < NODES; i++)
        ds_dif_node_free(node[i]);
    ds_executor_free(full);
    free(all);
    free(art);
    ds_model_free(&m);
}

static void test_alexnet(void **state)
{
    (void)state;
    run_model("zoo:alexnet", 72, 96);
}

static void test_googlenet(void **state)
{
    (void)state;
    run_model("zoo:googlenet", 64, 96);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alexnet),
        cmocka_unit_test(test_googlenet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
