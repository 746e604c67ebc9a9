/* A real worker process under hostile requests: each bad call gets an error
 * status (or, for a bad payload, a failed-frame report) and the worker goes
 * on serving the next good request; SIGTERM stops it with status 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codec/codec.h"
#include "model/model.h"
#include "rpc/rpc.h"

#define ROWS 72
#define COLS 96

static pid_t worker_pid;
static char tmp_dir[] = "/tmp/ds_worker_XXXXXX";
static int port;
static ds_model model;
static ds_rpc_channel *ch;
static ds_rpc_reader *results;

/* Forked before gRPC starts in this process (gRPC is not fork-safe). */
static int start_worker(void **state)
{
    (void)state;
    const char *bin = getenv("DS_BIN");
    if (!bin || !mkdtemp(tmp_dir))
        return -1;
    port = 37000 + (int)(getpid() % 1000) * 2;
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/c.yml", tmp_dir);
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port: {worker: [%d]}\nnet: {m->w0: 'localhost:%d'}\ndnn: zoo:alexnet\n"
            "video_path: none.mp4\nframe_size: [%d, %d]\nworker: {prof_niter: 1}\n"
            "cache_dir: %s/cache\nmax_message_mb: 1\nlog_level: error\n",
            port, port, ROWS, COLS, tmp_dir);
    fclose(f);
    worker_pid = fork();
    if (worker_pid == 0) {
        execl(bin, bin, "worker", "-i", "0", "-c", cfg, (char *)NULL);
        _exit(127);
    }
    ds_error err;
    if (ds_model_load("zoo:alexnet", &model, &err) || ds_model_set_input(&model, 1, 3, ROWS, COLS, &err))
        return -1;
    char target[64];
    snprintf(target, sizeof target, "localhost:%d", port);
    ch = ds_rpc_channel_new("w0", target, 0, NULL, &err);
    return ch && ds_rpc_wait_ready(ch, 60, &err) == 0 ? 0 : -1;
}

static int stop_worker(void **state)
{
    (void)state;
    /* A failed test leaves the worker running: it would hold ctest's
     * output pipe open. */
    if (worker_pid > 0 && waitpid(worker_pid, NULL, WNOHANG) == 0) {
        kill(worker_pid, SIGTERM);
        waitpid(worker_pid, NULL, 0);
    }
    ds_rpc_reader_free(results);
    ds_rpc_channel_free(ch);
    ds_model_free(&model);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd))
        return -1;
    return 0;
}

#define SESSION 0x5e55107ULL
static uint32_t epoch = 1; /* of the frames frame_request writes */

/* A frame request for a single worker running the whole model. */
static void frame_request(ds_buf *out, uint64_t frame_id, int bad_layer, const uint8_t *payload,
                          size_t payload_len)
{
    int exec[64], n = 0;
    for (int i = 1; i < model.n_layers; i++)
        exec[n++] = bad_layer && i == model.n_layers - 1 ? 99 : i;
    int out_id = model.n_layers - 1;
    Deltaslice__Job job = DELTASLICE__JOB__INIT, *jobs[1] = {&job};
    job.n_exec_ids = (size_t)n;
    job.exec_ids = exec;
    job.n_out_ids = 1;
    job.out_ids = &out_id;
    ProtobufCBinaryData in = {payload_len, (uint8_t *)payload};
    Deltaslice__FrameRequest r = DELTASLICE__FRAME_REQUEST__INIT;
    r.frame_id = frame_id;
    r.n_jobs = 1;
    r.jobs = jobs;
    r.n_inputs = 1;
    r.inputs = &in;
    r.dif = 1;
    r.plan_id = 1;
    r.session_id = SESSION;
    r.epoch = epoch;
    ds_error err;
    assert_int_equal(ds_rpc_pack(&r.base, out, &err), 0);
}

static void encoded_frame(ds_buf *out, uint8_t seed)
{
    ds_tensor t = {0};
    ds_shape s = ds_shape_nchw(1, 3, ROWS, COLS);
    ds_error err;
    assert_int_equal(ds_tensor_reserve(&t, &s, DS_U8, &err), 0);
    for (int64_t i = 0; i < ds_shape_numel(&s); i++)
        ((uint8_t *)t.data)[i] = (uint8_t)(i * 7 + seed);
    ds_codec_scratch sc = {0};
    out->len = 0;
    assert_int_equal(ds_codec_encode(0, &t, NULL, NULL, &sc, out, &err), 0);
    ds_codec_scratch_free(&sc);
    ds_tensor_free(&t);
}

static int submit(const ds_buf *req, ds_error *err)
{
    ds_buf resp = {0};
    int code = -1;
    ds_rpc_call_unary(ch, DS_RPC_WORKER_SUBMIT, req->data, req->len, 30, &resp, &code, err);
    ds_buf_free(&resp);
    return code;
}

/* Next finish report on the result stream: frame id and ok. */
static void expect_report(uint64_t frame_id, int ok)
{
    ds_buf msg = {0};
    ds_error err;
    int code;
    int rc = ds_rpc_reader_next(results, &msg, 60, &code, &err);
    if (rc != 1)
        fail_msg("no report for frame %llu: %s", (unsigned long long)frame_id, err.msg);
    Deltaslice__FinishReport *r = (Deltaslice__FinishReport *)ds_rpc_unpack(
        &deltaslice__finish_report__descriptor, msg.data, msg.len, 0, &err);
    assert_non_null(r);
    assert_int_equal(r->frame_id, frame_id);
    if (!!r->ok != ok)
        fail_msg("frame %llu: ok=%d (%s), expected %d", (unsigned long long)frame_id, r->ok, r->error, ok);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ds_buf_free(&msg);
}

static void test_hostile_requests(void **state)
{
    (void)state;
    int code0;
    ds_error err;
    ds_buf req = {0}, payload = {0};

    /* Garbage instead of a FrameRequest. */
    ds_buf junk = {0};
    assert_int_equal(ds_buf_append(&junk, "\xff\xff\xff\xff garbage", 12, &err), 0);
    assert_int_equal(submit(&junk, &err), DS_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "Submit: INVALID_ARGUMENT"));

    /* A frame before any master session is open: refused (the worker may
     * have restarted under a running master). */
    encoded_frame(&payload, 1);
    frame_request(&req, 0, 0, payload.data, payload.len);
    assert_int_equal(submit(&req, &err), DS_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "no master session is open here"));

    /* A stream request without a session id; then open the session (epoch
     * 1), ask for costs of the wrong model, then the right one. */
    Deltaslice__ResultStreamRequest rs = DELTASLICE__RESULT_STREAM_REQUEST__INIT;
    assert_int_equal(ds_rpc_pack(&rs.base, &req, &err), 0);
    ds_rpc_reader *bad = ds_rpc_reader_open(ch, DS_RPC_WORKER_RESULTS, req.data, req.len, NULL, &err);
    ds_buf msg = {0};
    assert_true(!bad || ds_rpc_reader_next(bad, &msg, 30, &code0, &err) == -1);
    ds_rpc_reader_free(bad);
    ds_rpc_results_request open = {SESSION, 1, 0};
    results = ds_rpc_open_results(ch, &open, NULL, &err);
    assert_non_null(results);
    Deltaslice__LayerCostsRequest cq = DELTASLICE__LAYER_COSTS_REQUEST__INIT;
    cq.model_hash = "0123456789abcdef";
    cq.rows = ROWS;
    cq.cols = COLS;
    assert_int_equal(ds_rpc_pack(&cq.base, &req, &err), 0);
    ds_buf resp = {0};
    int code;
    assert_int_equal(ds_rpc_call_unary(ch, DS_RPC_WORKER_COSTS, req.data, req.len, 60, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_FAILED_PRECONDITION);
    cq.model_hash = model.hash;
    assert_int_equal(ds_rpc_pack(&cq.base, &req, &err), 0);
    assert_int_equal(ds_rpc_call_unary(ch, DS_RPC_WORKER_COSTS, req.data, req.len, 60, &resp, &code, &err), 0);

    /* A good frame. */
    frame_request(&req, 0, 0, payload.data, payload.len);
    assert_int_equal(submit(&req, &err), DS_RPC_OK);
    expect_report(0, 1);

    /* The same frame again: out of order. */
    assert_int_equal(submit(&req, &err), DS_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "frame 0 arrives after frame 0"));

    /* An unknown layer id in the job. */
    frame_request(&req, 1, 1, payload.data, payload.len);
    assert_int_equal(submit(&req, &err), DS_RPC_INVALID_ARGUMENT);

    /* Over the 1 MiB message limit of this worker's config. */
    ds_buf big = {0};
    assert_int_equal(ds_buf_reserve(&big, 2 << 20, &err), 0);
    memset(big.data, 0, 2 << 20);
    frame_request(&req, 1, 0, big.data, 2 << 20);
    assert_int_equal(submit(&req, &err), DS_RPC_RESOURCE_EXHAUSTED);
    ds_buf_free(&big);

    /* A frame of another session: refused. */
    frame_request(&req, 1, 0, payload.data, payload.len);
    Deltaslice__FrameRequest *other = (Deltaslice__FrameRequest *)ds_rpc_unpack(
        &deltaslice__frame_request__descriptor, req.data, req.len, 0, &err);
    assert_non_null(other);
    other->session_id = SESSION + 1;
    ds_buf other_req = {0};
    assert_int_equal(ds_rpc_pack(&other->base, &other_req, &err), 0);
    protobuf_c_message_free_unpacked(&other->base, NULL);
    assert_int_equal(submit(&other_req, &err), DS_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "belongs to master session"));
    ds_buf_free(&other_req);

    /* A well-formed request whose tensor payload is garbage: accepted, then
     * reported failed; the rest of its epoch is refused (this worker's
     * caches are out of step), the next epoch runs fine from a full input. */
    uint8_t bad_payload[64];
    memset(bad_payload, 0xd5, sizeof bad_payload);
    frame_request(&req, 1, 0, bad_payload, sizeof bad_payload);
    assert_int_equal(submit(&req, &err), DS_RPC_OK);
    expect_report(1, 0);
    encoded_frame(&payload, 2);
    frame_request(&req, 2, 0, payload.data, payload.len);
    assert_int_equal(submit(&req, &err), DS_RPC_ABORTED);
    assert_non_null(strstr(err.msg, "epoch 1 broke at frame 1"));
    epoch = 2;
    frame_request(&req, 1, 0, payload.data, payload.len); /* a re-send: same id, new epoch */
    assert_int_equal(submit(&req, &err), DS_RPC_OK);
    expect_report(1, 1);
    frame_request(&req, 2, 0, payload.data, payload.len);
    assert_int_equal(submit(&req, &err), DS_RPC_OK);
    expect_report(2, 1);
    epoch = 1; /* an older epoch: refused */
    frame_request(&req, 3, 0, payload.data, payload.len);
    assert_int_equal(submit(&req, &err), DS_RPC_ABORTED);
    assert_non_null(strstr(err.msg, "of epoch 1, but epoch 2 has begun"));
    epoch = 2;

    /* The typed calls the master makes: Submit, Costs (checked against the
     * layer count asked for), Clock. */
    frame_request(&req, 3, 0, payload.data, payload.len);
    assert_int_equal(ds_rpc_call_submit(ch, &req, 30, &resp, &err), 0);
    expect_report(3, 1);
    assert_int_equal(ds_rpc_call_submit(ch, &req, 30, &resp, &err), -1);
    assert_non_null(strstr(err.msg, "frame 3 arrives after frame 3"));
    ds_rpc_costs costs;
    assert_int_equal(ds_rpc_call_costs(ch, model.hash, ROWS, COLS, (size_t)model.n_layers, 60,
                                       &costs, &err), 0);
    assert_true(costs.threads >= 1 && costs.host[0]);
    for (int l = 0; l < model.n_layers; l++)
        assert_true(costs.seconds[l] >= 0);
    free(costs.seconds);
    assert_int_equal(ds_rpc_call_costs(ch, model.hash, ROWS, COLS, (size_t)model.n_layers + 1, 60,
                                       &costs, &err), -1);
    if (!strstr(err.msg, "w0 (localhost:") || !strstr(err.msg, ") Costs: layer costs: "))
        fail_msg("%s", err.msg);
    assert_null(costs.seconds);
    int64_t offset, rtt;
    assert_int_equal(ds_rpc_call_clock(ch, DS_RPC_WORKER_CLOCK, 3, &offset, &rtt, &err), 0);
    assert_true(rtt >= 0 && offset > -1000000 && offset < 1000000); /* one machine */

    ds_buf_free(&junk);
    ds_buf_free(&msg);
    ds_buf_free(&req);
    ds_buf_free(&resp);
    ds_buf_free(&payload);

    /* SIGTERM: orderly stop, status 0. */
    ds_rpc_reader_free(results);
    results = NULL;
    assert_int_equal(kill(worker_pid, SIGTERM), 0);
    int status;
    assert_int_equal(waitpid(worker_pid, &status, 0), worker_pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_requests),
    };
    return cmocka_run_group_tests(tests, start_worker, stop_worker);
}
