/* test_rpc_msg.c - protobuf helpers and the validators the services run on
 * every message from the network. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "rpc/rpc.h"

/* A valid 2-worker request for a model with layers 0..8:
 * w0 runs 1..3 and hands on 3; w1 runs 4..8 and returns 8. */
typedef struct fixture {
    Deltaslice__FrameRequest fr;
    Deltaslice__Job j0, j1, *jobs[2];
    int32_t ex0[3], ex1[5], out0[1], out1[1];
    ProtobufCBinaryData inputs[1];
    Deltaslice__StageTiming t0, *timings[1];
    Deltaslice__LinkBytes l0, *links[1];
} fixture;

static void make_request(fixture *f)
{
    memset(f, 0, sizeof *f);
    deltaslice__frame_request__init(&f->fr);
    deltaslice__job__init(&f->j0);
    deltaslice__job__init(&f->j1);
    deltaslice__stage_timing__init(&f->t0);
    deltaslice__link_bytes__init(&f->l0);
    for (int i = 0; i < 3; i++)
        f->ex0[i] = i + 1;
    for (int i = 0; i < 5; i++)
        f->ex1[i] = i + 4;
    f->out0[0] = 3;
    f->out1[0] = 8;
    f->j0.n_exec_ids = 3, f->j0.exec_ids = f->ex0, f->j0.n_out_ids = 1, f->j0.out_ids = f->out0;
    f->j1.n_exec_ids = 5, f->j1.exec_ids = f->ex1, f->j1.n_out_ids = 1, f->j1.out_ids = f->out1;
    f->jobs[0] = &f->j0, f->jobs[1] = &f->j1;
    static uint8_t payload[] = {1, 2, 3};
    f->inputs[0].len = sizeof payload, f->inputs[0].data = payload;
    f->t0.worker = 0, f->t0.stage = "execute", f->t0.start_us = 10, f->t0.end_us = 20;
    f->timings[0] = &f->t0;
    f->l0.link = "master->w0", f->l0.bytes = 3;
    f->links[0] = &f->l0;
    f->fr.frame_id = 42;
    f->fr.n_jobs = 2, f->fr.jobs = f->jobs;
    f->fr.n_inputs = 1, f->fr.inputs = f->inputs;
    f->fr.n_timings = 1, f->fr.timings = f->timings;
    f->fr.n_bytes = 1, f->fr.bytes = f->links;
    f->fr.dif = 1;
    f->fr.plan_id = 7;
}

static void expect_bad(fixture *f, const char *needle)
{
    ds_error err = {{0}};
    assert_int_equal(ds_rpc_validate_frame_request(&f->fr, 2, 8, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("'%s' not in '%s'", needle, err.msg);
    make_request(f);
}

static void test_frame_request(void **state)
{
    (void)state;
    fixture f;
    ds_error err = {{0}};
    make_request(&f);
    assert_int_equal(ds_rpc_validate_frame_request(&f.fr, 2, 8, &err), 0);

    /* Round trip through the wire keeps it valid and equal. */
    ds_buf b = {0};
    assert_int_equal(ds_rpc_pack(&f.fr.base, &b, &err), 0);
    Deltaslice__FrameRequest *m = (Deltaslice__FrameRequest *)ds_rpc_unpack(
        &deltaslice__frame_request__descriptor, b.data, b.len, 0, &err);
    assert_non_null(m);
    assert_int_equal(m->frame_id, 42);
    assert_int_equal(m->plan_id, 7);
    assert_true(m->dif);
    assert_int_equal(m->n_jobs, 2);
    assert_int_equal(m->jobs[1]->n_exec_ids, 5);
    assert_int_equal(m->jobs[1]->exec_ids[4], 8);
    assert_int_equal(m->inputs[0].len, 3);
    assert_string_equal(m->timings[0]->stage, "execute");
    assert_int_equal(ds_rpc_validate_frame_request(m, 2, 8, &err), 0);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    /* Size limit before parsing. */
    assert_null(ds_rpc_unpack(&deltaslice__frame_request__descriptor, b.data, b.len, b.len - 1,
                              &err));
    assert_non_null(strstr(err.msg, "exceeds the limit"));
    ds_buf_free(&b);

    /* Empty jobs are allowed (pass-through workers). */
    f.j1.n_exec_ids = 0;
    assert_int_equal(ds_rpc_validate_frame_request(&f.fr, 2, 8, &err), 0);
    make_request(&f);

    f.fr.n_jobs = 1;
    expect_bad(&f, "1 jobs for 2 workers");
    f.jobs[1] = NULL;
    expect_bad(&f, "job 1 missing");
    f.ex1[4] = 9;
    expect_bad(&f, "exec_ids[4] = 9 outside [1, 8]");
    f.ex0[0] = 0;
    expect_bad(&f, "exec_ids[0] = 0 outside");
    f.ex0[2] = 2;
    expect_bad(&f, "not strictly ascending");
    f.ex1[0] = 3; /* 3 is already w0's */
    expect_bad(&f, "already run by an earlier job");
    f.out1[0] = -1;
    expect_bad(&f, "out_ids[0] = -1");
    f.inputs[0].len = 0;
    expect_bad(&f, "inputs[0] is empty");
    f.fr.n_inputs = 10; /* more inputs than layers: checked before any is read */
    expect_bad(&f, "10 inputs for a model of 9 layers");
    f.t0.worker = 2;
    expect_bad(&f, "worker 2 out of range");
    f.t0.stage = "";
    expect_bad(&f, "stage is empty");
    f.t0.end_us = 5;
    expect_bad(&f, "bad interval");
    f.l0.link = "";
    expect_bad(&f, "link name is empty");
    assert_int_equal(ds_rpc_validate_frame_request(&f.fr, 0, 8, &err), -1);
    assert_int_equal(ds_rpc_validate_frame_request(&f.fr, 2, -1, &err), -1);
}

static void test_finish_report(void **state)
{
    (void)state;
    ds_error err = {{0}};
    Deltaslice__FinishReport r = DELTASLICE__FINISH_REPORT__INIT;
    static uint8_t out[] = {9, 9};
    ProtobufCBinaryData outputs[1] = {{sizeof out, out}};
    r.frame_id = 3, r.worker = 1, r.ok = 1;
    r.n_outputs = 1, r.outputs = outputs;
    assert_int_equal(ds_rpc_validate_finish_report(&r, 2, 8, &err), 0);
    r.worker = 2;
    assert_int_equal(ds_rpc_validate_finish_report(&r, 2, 8, &err), -1);
    assert_non_null(strstr(err.msg, "worker 2 out of range"));
    r.worker = 1;
    r.error = "boom";
    assert_int_equal(ds_rpc_validate_finish_report(&r, 2, 8, &err), -1);
    r.ok = 0;
    assert_int_equal(ds_rpc_validate_finish_report(&r, 2, 8, &err), -1);
    assert_non_null(strstr(err.msg, "failed frame carries outputs"));
    r.n_outputs = 0;
    assert_int_equal(ds_rpc_validate_finish_report(&r, 2, 8, &err), 0);
    r.error = "";
    assert_int_equal(ds_rpc_validate_finish_report(&r, 2, 8, &err), -1);
    assert_non_null(strstr(err.msg, "error is empty"));
}

static void test_small_messages(void **state)
{
    (void)state;
    ds_error err = {{0}};
    double sec[3] = {0, 0.01, 0.02}, fl[3] = {0, 1e6, 2e6};
    Deltaslice__LayerCosts c = DELTASLICE__LAYER_COSTS__INIT;
    c.n_seconds = 3, c.seconds = sec, c.n_flops = 3, c.flops = fl, c.threads = 1;
    c.host = "pi";
    assert_int_equal(ds_rpc_validate_layer_costs(&c, 3, &err), 0);
    assert_int_equal(ds_rpc_validate_layer_costs(&c, 4, &err), -1);
    sec[1] = NAN;
    assert_int_equal(ds_rpc_validate_layer_costs(&c, 3, &err), -1);
    assert_non_null(strstr(err.msg, "seconds[1]"));
    sec[1] = 0.01, fl[2] = -1;
    assert_int_equal(ds_rpc_validate_layer_costs(&c, 3, &err), -1);
    fl[2] = 1, c.threads = 0;
    assert_int_equal(ds_rpc_validate_layer_costs(&c, 3, &err), -1);

    Deltaslice__LayerCostsRequest q = DELTASLICE__LAYER_COSTS_REQUEST__INIT;
    q.model_hash = "abc", q.rows = 480, q.cols = 720;
    assert_int_equal(ds_rpc_validate_costs_request(&q, &err), 0);
    q.rows = 0;
    assert_int_equal(ds_rpc_validate_costs_request(&q, &err), -1);
    q.rows = 480, q.model_hash = "";
    assert_int_equal(ds_rpc_validate_costs_request(&q, &err), -1);

    Deltaslice__PredictorsRequest p = DELTASLICE__PREDICTORS_REQUEST__INIT;
    p.model_hash = "abc", p.video = "clip.mp4", p.rows = 48, p.cols = 72, p.frame_num = 400;
    assert_int_equal(ds_rpc_validate_predictors_request(&p, &err), 0);
    p.cols = DS_RPC_MAX_FRAME_DIM + 1;
    assert_int_equal(ds_rpc_validate_predictors_request(&p, &err), -1);

    Deltaslice__Ack a = DELTASLICE__ACK__INIT;
    a.ok = 1;
    assert_int_equal(ds_rpc_validate_ack(&a, &err), 0);
    a.ok = 0;
    assert_int_equal(ds_rpc_validate_ack(&a, &err), -1);
    a.error = "queue full";
    assert_int_equal(ds_rpc_validate_ack(&a, &err), 0);

    Deltaslice__ClockProbe cp = DELTASLICE__CLOCK_PROBE__INIT;
    cp.client_send_us = 1, cp.server_recv_us = 5, cp.server_send_us = 6;
    assert_int_equal(ds_rpc_validate_clock_probe(&cp, &err), 0);
    cp.server_send_us = 4;
    assert_int_equal(ds_rpc_validate_clock_probe(&cp, &err), -1);

    /* Malformed bytes: a clear error, no message. */
    static const uint8_t junk[] = {0x0a, 0x80};
    assert_null(ds_rpc_unpack(&deltaslice__finish_report__descriptor, junk, sizeof junk, 0, &err));
    assert_string_equal(err.msg, "malformed deltaslice.FinishReport (2 bytes)");
    /* Field number 0 (as an overlong varint) is refused, also nested: protobuf-c
     * would accept it and then fail on its own re-encoding (found by fuzz_wire). */
    static const uint8_t zero[] = {0x80, 0x00, 0x00};
    assert_null(ds_rpc_unpack(&deltaslice__ack__descriptor, zero, sizeof zero, 0, &err));
    assert_non_null(strstr(err.msg, "field number 0"));
    static const uint8_t nested[] = {0x12, 0x03, 0x80, 0x00, 0x00};
    assert_null(ds_rpc_unpack(&deltaslice__frame_request__descriptor, nested, sizeof nested, 0,
                              &err));
    assert_non_null(strstr(err.msg, "field number 0"));
    /* Unknown fields with real numbers are kept (newer peers). */
    static const uint8_t unknown[] = {0x08, 0x01, 0xf8, 0x01, 0x05};
    Deltaslice__Ack *u = (Deltaslice__Ack *)ds_rpc_unpack(&deltaslice__ack__descriptor, unknown,
                                                          sizeof unknown, 0, &err);
    assert_non_null(u);
    assert_true(u->ok);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    /* Zero bytes is the all-default message. */
    Deltaslice__Ack *e = (Deltaslice__Ack *)ds_rpc_unpack(&deltaslice__ack__descriptor, NULL, 0,
                                                          0, &err);
    assert_non_null(e);
    assert_false(e->ok);
    protobuf_c_message_free_unpacked(&e->base, NULL);
    assert_string_equal(ds_rpc_code_name(DS_RPC_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
    assert_string_equal(ds_rpc_code_name(99), "UNKNOWN_STATUS");
}

/* The typed server halves: a request unpacked and validated in one step
 * (bad bytes and bad fields both refused), replies that read back. */
static void test_typed_messages(void **state)
{
    (void)state;
    ds_error err = {{0}};
    ds_buf b = {0};
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x01};

    /* Submit: the frame request as the validator checks it, and the Ack. */
    fixture f;
    make_request(&f);
    assert_int_equal(ds_rpc_pack(&f.fr.base, &b, &err), 0);
    Deltaslice__FrameRequest *m = ds_rpc_read_frame_request(b.data, b.len, 2, 8, &err);
    assert_non_null(m);
    assert_int_equal(m->frame_id, 42);
    ds_rpc_free_frame_request(m);
    assert_null(ds_rpc_read_frame_request(b.data, b.len, 3, 8, &err)); /* 2 jobs, 3 workers */
    assert_non_null(strstr(err.msg, "2 jobs for 3 workers"));
    assert_null(ds_rpc_read_frame_request(junk, sizeof junk, 2, 8, &err));
    assert_non_null(strstr(err.msg, "malformed deltaslice.FrameRequest"));
    ds_rpc_free_frame_request(NULL);
    assert_int_equal(ds_rpc_write_ack(&b, &err), 0);
    Deltaslice__Ack *ack = (Deltaslice__Ack *)ds_rpc_unpack(&deltaslice__ack__descriptor, b.data,
                                                            b.len, 0, &err);
    assert_non_null(ack);
    assert_true(ack->ok);
    protobuf_c_message_free_unpacked(&ack->base, NULL);

    /* Costs. */
    Deltaslice__LayerCostsRequest cq = DELTASLICE__LAYER_COSTS_REQUEST__INIT;
    cq.model_hash = "0123456789abcdef";
    cq.rows = 72;
    cq.cols = 96;
    assert_int_equal(ds_rpc_pack(&cq.base, &b, &err), 0);
    ds_rpc_costs_query q;
    assert_int_equal(ds_rpc_read_costs_query(b.data, b.len, &q, &err), 0);
    assert_string_equal(q.model_hash, "0123456789abcdef");
    assert_int_equal(q.rows, 72);
    assert_int_equal(q.cols, 96);
    cq.rows = 0;
    assert_int_equal(ds_rpc_pack(&cq.base, &b, &err), 0);
    assert_int_equal(ds_rpc_read_costs_query(b.data, b.len, &q, &err), -1);
    assert_non_null(strstr(err.msg, "frame size 0x96"));
    double sec[3] = {0, 1e-3, 2e-3}, flops[3] = {0, 10, 20};
    assert_int_equal(ds_rpc_write_costs(sec, flops, 3, 2, "pi", &b, &err), 0);
    Deltaslice__LayerCosts *c = (Deltaslice__LayerCosts *)ds_rpc_unpack(
        &deltaslice__layer_costs__descriptor, b.data, b.len, 0, &err);
    assert_non_null(c);
    assert_int_equal(ds_rpc_validate_layer_costs(c, 3, &err), 0);
    assert_true(c->seconds[2] == 2e-3 && c->flops[1] == 10 && c->threads == 2);
    assert_string_equal(c->host, "pi");
    protobuf_c_message_free_unpacked(&c->base, NULL);

    /* Predictors. */
    Deltaslice__PredictorsRequest pq = DELTASLICE__PREDICTORS_REQUEST__INIT;
    pq.model_hash = "abc";
    pq.video = "clip.mp4";
    pq.rows = 10;
    pq.cols = 20;
    pq.frame_num = 8;
    assert_int_equal(ds_rpc_pack(&pq.base, &b, &err), 0);
    ds_rpc_predictors_query p;
    assert_int_equal(ds_rpc_read_predictors_query(b.data, b.len, &p, &err), 0);
    assert_string_equal(p.model_hash, "abc");
    assert_string_equal(p.video, "clip.mp4");
    assert_true(p.rows == 10 && p.cols == 20 && p.frame_num == 8);
    pq.model_hash = "";
    assert_int_equal(ds_rpc_pack(&pq.base, &b, &err), 0);
    assert_int_equal(ds_rpc_read_predictors_query(b.data, b.len, &p, &err), -1);
    assert_non_null(strstr(err.msg, "model hash is empty"));
    static const uint8_t blob[] = {9, 8, 7};
    assert_int_equal(ds_rpc_write_predictors(blob, sizeof blob, &b, &err), 0);
    Deltaslice__Predictors *pr = (Deltaslice__Predictors *)ds_rpc_unpack(
        &deltaslice__predictors__descriptor, b.data, b.len, 0, &err);
    assert_non_null(pr);
    assert_int_equal(pr->blob.len, 3);
    assert_memory_equal(pr->blob.data, blob, 3);
    protobuf_c_message_free_unpacked(&pr->base, NULL);

    /* Results: the stream request, and the reports on the stream. */
    ds_rpc_results_request rq;
    assert_int_equal(ds_rpc_read_results_request(NULL, 0, &rq, &err), -1);
    assert_non_null(strstr(err.msg, "without a session id"));
    assert_int_equal(ds_rpc_read_results_request(junk, sizeof junk, &rq, &err), -1);
    Deltaslice__ResultStreamRequest rs = DELTASLICE__RESULT_STREAM_REQUEST__INIT;
    rs.session_id = 0x1234567890ULL;
    rs.epoch = 3;
    rs.takeover = 1;
    assert_int_equal(ds_rpc_pack(&rs.base, &b, &err), 0);
    assert_int_equal(ds_rpc_read_results_request(b.data, b.len, &rq, &err), 0);
    assert_true(rq.session_id == 0x1234567890ULL);
    assert_int_equal(rq.epoch, 3);
    assert_int_equal(rq.takeover, 1);
    Deltaslice__FinishReport r = DELTASLICE__FINISH_REPORT__INIT;
    r.frame_id = 5;
    r.worker = 1;
    r.ok = 1;
    assert_int_equal(ds_rpc_pack(&r.base, &b, &err), 0);
    Deltaslice__FinishReport *got = ds_rpc_read_finish_report(b.data, b.len, 2, 8, &err);
    assert_non_null(got);
    assert_int_equal(got->frame_id, 5);
    ds_rpc_free_finish_report(got);
    assert_null(ds_rpc_read_finish_report(b.data, b.len, 1, 8, &err)); /* worker 1 of 1 */
    assert_non_null(strstr(err.msg, "worker 1 out of range"));
    ds_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_request),
        cmocka_unit_test(test_finish_report),
        cmocka_unit_test(test_small_messages),
        cmocka_unit_test(test_typed_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
