/* Real worker processes under hostile requests: each bad call gets an error
 * status (or, for a bad payload, a failed-frame report) and the worker goes
 * on serving the next good request; SIGTERM stops it with status 0.  A
 * second worker pins master sessions (a second master refused, take-over,
 * frame and epoch windows, Costs while a session is open), a third the same
 * refusals under mutual TLS, where identities differ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "codec/codec.h"
#include "dif/dif.h"
#include "model/model.h"
#include "rpc/rpc.h"

#define ROWS 72
#define COLS 96

static pid_t worker_pid, session_pid, tls_pid;
static char tmp_dir[] = "/tmp/ds_worker_XXXXXX";
static int port, session_port, tls_port;
static ds_model model;
static ds_rpc_channel *ch, *session_ch, *master_ch, *intruder_ch;
static ds_rpc_reader *results;
static ds_rpc_security *master_sec, *intruder_sec;
/* The "sessions" worker's two master sessions. */
#define S1 0x00a1b2c3d4e5f601ULL
#define S2 0x00a1b2c3d4e5f602ULL
static ds_rpc_reader *s1_results, *s2_results;
static ds_tensor s1_last; /* S1's last frame: the worker's cached input */

/* A port nothing listens on (bound then released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int p = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        p = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return p;
}

/* Writes tmp_dir/name.yml for worker 0 on port (extra: more top-level
 * keys) and starts `deltaslice worker` with it. */
static pid_t spawn_worker(const char *bin, const char *name, int on_port, const char *extra)
{
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/%s.yml", tmp_dir, name);
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port: {worker: [%d]}\nnet: {m->w0: 'localhost:%d'}\ndnn: zoo:alexnet\n"
            "video_path: none.mp4\nframe_size: [%d, %d]\nworker: {prof_niter: 1}\n"
            "cache_dir: %s/cache-%s\nmax_message_mb: 1\nlog_level: error\n%s",
            on_port, on_port, ROWS, COLS, tmp_dir, name, extra);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        execl(bin, bin, "worker", "-i", "0", "-c", cfg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static ds_rpc_security *client_security(const char *name)
{
    char ca[256], cert[256], key[256];
    snprintf(ca, sizeof ca, "%s/ca.pem", tmp_dir);
    snprintf(cert, sizeof cert, "%s/%s.pem", tmp_dir, name);
    snprintf(key, sizeof key, "%s/%s.key", tmp_dir, name);
    ds_rpc_security_opts o = {ca, cert, key, NULL, name};
    ds_error err;
    return ds_rpc_security_new(&o, &err);
}

static ds_rpc_channel *connect_worker(int on_port, const ds_rpc_security *sec)
{
    char target[64];
    snprintf(target, sizeof target, "localhost:%d", on_port);
    ds_error err;
    ds_rpc_channel *c = ds_rpc_channel_new("w0", target, 0, sec, &err);
    if (c && ds_rpc_wait_ready(c, 60, &err)) {
        fprintf(stderr, "worker on port %d: %s\n", on_port, err.msg);
        ds_rpc_channel_free(c);
        return NULL;
    }
    return c;
}

/* Forked before gRPC starts in this process (gRPC is not fork-safe). */
static int start_worker(void **state)
{
    (void)state;
    const char *bin = getenv("DS_BIN");
    if (!bin || !mkdtemp(tmp_dir) || ds_test_make_certs(tmp_dir))
        return -1;
    port = free_port();
    session_port = free_port();
    tls_port = free_port();
    /* The TLS worker finds its own files through {role}: w0.pem, w0.key. */
    if ((worker_pid = spawn_worker(bin, "c", port, "")) < 0 ||
        (session_pid = spawn_worker(bin, "sessions", session_port, "")) < 0 ||
        (tls_pid = spawn_worker(bin, "tls", tls_port,
                                "tls: {ca: ca.pem, cert: '{role}.pem', key: '{role}.key'}\n")) < 0)
        return -1;
    ds_error err;
    if (ds_model_load("zoo:alexnet", &model, &err) || ds_model_set_input(&model, 1, 3, ROWS, COLS, &err))
        return -1;
    if (!(master_sec = client_security("master")) || !(intruder_sec = client_security("intruder")))
        return -1;
    ch = connect_worker(port, NULL);
    session_ch = connect_worker(session_port, NULL);
    master_ch = connect_worker(tls_port, master_sec);
    intruder_ch = connect_worker(tls_port, intruder_sec);
    return ch && session_ch && master_ch && intruder_ch ? 0 : -1;
}

static void stop_process(pid_t pid)
{
    if (pid > 0 && waitpid(pid, NULL, WNOHANG) == 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

static int stop_worker(void **state)
{
    (void)state;
    /* A failed test leaves the worker running: it would hold ctest's
     * output pipe open. */
    stop_process(worker_pid);
    stop_process(session_pid);
    stop_process(tls_pid);
    ds_rpc_reader_free(results);
    ds_rpc_reader_free(s1_results);
    ds_rpc_reader_free(s2_results);
    ds_tensor_free(&s1_last);
    ds_rpc_channel_free(ch);
    ds_rpc_channel_free(session_ch);
    ds_rpc_channel_free(master_ch);
    ds_rpc_channel_free(intruder_ch);
    ds_rpc_security_free(master_sec);
    ds_rpc_security_free(intruder_sec);
    ds_model_free(&model);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd))
        return -1;
    return 0;
}

#define SESSION 0x5e55107ULL
static uint32_t epoch = 1; /* of the frames frame_request writes */

/* A frame request of master session `session`, epoch `ep`, for a single
 * worker running the whole model. */
static void frame_request_of(ds_buf *out, uint64_t session, uint32_t ep, uint64_t frame_id,
                             int bad_layer, const uint8_t *payload, size_t payload_len)
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
    r.session_id = session;
    r.epoch = ep;
    ds_error err;
    assert_int_equal(ds_rpc_pack(&r.base, out, &err), 0);
}

static void frame_request(ds_buf *out, uint64_t frame_id, int bad_layer, const uint8_t *payload,
                          size_t payload_len)
{
    frame_request_of(out, SESSION, epoch, frame_id, bad_layer, payload, payload_len);
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

static int submit_to(ds_rpc_channel *c, const ds_buf *req, ds_error *err)
{
    ds_buf resp = {0};
    int code = -1;
    ds_rpc_call_unary(c, DS_RPC_WORKER_SUBMIT, req->data, req->len, 30, &resp, &code, err);
    ds_buf_free(&resp);
    return code;
}

static int submit(const ds_buf *req, ds_error *err)
{
    return submit_to(ch, req, err);
}

/* Next finish report on result stream r: frame id and ok. */
static void expect_report_on(ds_rpc_reader *r_stream, uint64_t frame_id, int ok)
{
    ds_buf msg = {0};
    ds_error err;
    int code;
    int rc = ds_rpc_reader_next(r_stream, &msg, 60, &code, &err);
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

static void expect_report(uint64_t frame_id, int ok)
{
    expect_report_on(results, frame_id, ok);
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
                                       &costs, NULL, &err), 0);
    assert_true(costs.threads >= 1 && costs.host[0]);
    for (int l = 0; l < model.n_layers; l++)
        assert_true(costs.seconds[l] >= 0);
    free(costs.seconds);
    assert_int_equal(ds_rpc_call_costs(ch, model.hash, ROWS, COLS, (size_t)model.n_layers + 1, 60,
                                       &costs, NULL, &err), -1);
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

/* ---- master sessions (the "sessions" worker; these tests run in order) */


static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Costs of the model at rows x cols: the call's status. */
static int costs_at(ds_rpc_channel *c, int rows, int cols, ds_error *err)
{
    Deltaslice__LayerCostsRequest cq = DELTASLICE__LAYER_COSTS_REQUEST__INIT;
    cq.model_hash = model.hash;
    cq.rows = rows;
    cq.cols = cols;
    ds_buf req = {0}, resp = {0};
    assert_int_equal(ds_rpc_pack(&cq.base, &req, err), 0);
    int code = -1;
    ds_rpc_call_unary(c, DS_RPC_WORKER_COSTS, req.data, req.len, 60, &resp, &code, err);
    ds_buf_free(&req);
    ds_buf_free(&resp);
    return code;
}

/* Pixels of a frame: a pattern of seed, then `tweak` pixels changed. */
static void frame_pixels(ds_tensor *t, uint8_t seed, int tweak)
{
    ds_shape s = ds_shape_nchw(1, 3, ROWS, COLS);
    ds_error err;
    ds_tensor_free(t);
    assert_int_equal(ds_tensor_reserve(t, &s, DS_U8, &err), 0);
    uint8_t *p = t->data;
    int64_t n = ds_shape_numel(&s);
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + seed);
    for (int k = 0; k < tweak; k++)
        p[(k * 997) % n] ^= 0x5a;
}

/* cur as the worker's input payload: in full (ref NULL), or as an exact
 * update against ref, which only a worker holding ref can apply. */
static void encode_input(ds_buf *out, const ds_tensor *cur, const ds_tensor *ref)
{
    ds_codec_opts o = {DS_COMPRESS_NONE, 1, ds_dif_link_update(1)};
    ds_codec_scratch sc = {0};
    ds_error err;
    out->len = 0;
    assert_int_equal(ds_codec_encode(0, cur, ref, &o, &sc, out, &err), 0);
    ds_codec_scratch_free(&sc);
    ds_codec_header h;
    assert_int_equal(ds_codec_peek(out->data, out->len, &h, &err), 0);
    assert_int_equal(h.encoding, ref ? DS_ENC_UPDATE : DS_ENC_DENSE);
}

/* S1's next frame as an update against its last one: accepted and finished
 * only if the worker still holds S1's state. */
static void s1_update_frame(uint64_t frame_id)
{
    ds_tensor cur = {0};
    ds_buf payload = {0}, req = {0};
    ds_error err;
    frame_pixels(&cur, 1, (int)frame_id * 10);
    encode_input(&payload, &cur, &s1_last);
    frame_request_of(&req, S1, 1, frame_id, 0, payload.data, payload.len);
    if (submit_to(session_ch, &req, &err) != DS_RPC_OK)
        fail_msg("S1 frame %llu: %s", (unsigned long long)frame_id, err.msg);
    expect_report_on(s1_results, frame_id, 1);
    ds_tensor_free(&s1_last);
    s1_last = cur;
    ds_buf_free(&payload);
    ds_buf_free(&req);
}

/* The open session's id is never shown to a caller. */
static void assert_no_session_id(const char *msg, uint64_t id)
{
    char hex[32], bare[32], dec[32];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)id);
    snprintf(bare, sizeof bare, "%llx", (unsigned long long)id);
    snprintf(dec, sizeof dec, "%llu", (unsigned long long)id);
    if (strstr(msg, hex) || strstr(msg, bare) || strstr(msg, dec))
        fail_msg("the open session's id %s shows in: %s", hex, msg);
}

/* A second master session is refused while the first one's stream is
 * alive; the first goes on as if nothing happened. */
static void test_second_master_refused(void **state)
{
    (void)state;
    ds_error err;
    ds_buf payload = {0}, req = {0};
    int code = -1;
    ds_rpc_results_request q1 = {S1, 1, 0};
    s1_results = ds_rpc_open_results(session_ch, &q1, &code, &err);
    if (!s1_results)
        fail_msg("%s", err.msg);
    assert_int_equal(code, DS_RPC_OK);
    assert_int_equal(costs_at(session_ch, ROWS, COLS, &err), DS_RPC_OK);
    frame_pixels(&s1_last, 1, 0);
    encode_input(&payload, &s1_last, NULL);
    frame_request_of(&req, S1, 1, 0, 0, payload.data, payload.len);
    assert_int_equal(submit_to(session_ch, &req, &err), DS_RPC_OK);
    expect_report_on(s1_results, 0, 1);

    ds_rpc_results_request q2 = {S2, 1, 0};
    code = -1;
    assert_null(ds_rpc_open_results(session_ch, &q2, &code, &err));
    assert_int_equal(code, DS_RPC_ALREADY_EXISTS);
    if (!strstr(err.msg, "Results: ALREADY_EXISTS: worker0 serves another master session "
                         "(opened by an anonymous client from ") ||
        !strstr(err.msg, "); set master.takeover: true to replace it (same credentials only)"))
        fail_msg("%s", err.msg);
    assert_no_session_id(err.msg, S1);

    /* A frame of the refused session: refused, naming its own id only. */
    frame_request_of(&req, S2, 1, 1, 0, payload.data, payload.len);
    assert_int_equal(submit_to(session_ch, &req, &err), DS_RPC_FAILED_PRECONDITION);
    if (!strstr(err.msg, "frame 1 belongs to master session 00a1b2c3d4e5f602, not to the open one"))
        fail_msg("%s", err.msg);
    assert_no_session_id(err.msg, S1);

    /* S1's stream and caches are untouched: an update frame finishes. */
    s1_update_frame(1);
    ds_buf_free(&payload);
    ds_buf_free(&req);
}

/* Frame ids and epochs far ahead of the session are refused without
 * touching the order: the next real frame is still accepted. */
static void test_frame_windows(void **state)
{
    (void)state;
    ds_error err;
    ds_buf payload = {0}, req = {0};
    encode_input(&payload, &s1_last, NULL);
    const uint64_t ids[] = {1 + (1ULL << 20) + 1, 1ULL << 40, 1ULL << 63, UINT64_MAX};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        frame_request_of(&req, S1, 1, ids[i], 0, payload.data, payload.len);
        int code = submit_to(session_ch, &req, &err);
        if (code != DS_RPC_OUT_OF_RANGE || !strstr(err.msg, "too far ahead of the session"))
            fail_msg("frame %llu: %s: %s", (unsigned long long)ids[i], ds_rpc_code_name(code),
                     err.msg);
    }
    frame_request_of(&req, S1, 1 + 1025, 2, 0, payload.data, payload.len);
    assert_int_equal(submit_to(session_ch, &req, &err), DS_RPC_OUT_OF_RANGE);
    if (!strstr(err.msg, "frame 2 of epoch 1026 is too far ahead of the session (frame 1, epoch 1)"))
        fail_msg("%s", err.msg);
    s1_update_frame(2);
    ds_buf_free(&payload);
    ds_buf_free(&req);
}

/* Costs for another frame size would set the worker up afresh: refused
 * while a session is open; its frames go on from the cached state. */
static void test_costs_while_open(void **state)
{
    (void)state;
    ds_error err;
    assert_int_equal(costs_at(session_ch, 64, 80, &err), DS_RPC_FAILED_PRECONDITION);
    if (!strstr(err.msg, "Costs: FAILED_PRECONDITION: worker0 serves a master session at 72x96; "
                         "costs for 64x80 only once it ends"))
        fail_msg("%s", err.msg);
    assert_int_equal(costs_at(session_ch, ROWS, COLS, &err), DS_RPC_OK);
    s1_update_frame(3);
}

/* Take-over with the same identity (plaintext: ""): the old stream ends
 * ABORTED and its frames are refused; the session re-opening its own
 * stream needs no take-over; once no stream is open, any size may be set
 * up. */
static void test_takeover(void **state)
{
    (void)state;
    ds_error err;
    ds_buf payload = {0}, req = {0}, msg = {0};
    int code = -1;
    ds_rpc_results_request q2 = {S2, 7, 1};
    s2_results = ds_rpc_open_results(session_ch, &q2, &code, &err);
    if (!s2_results)
        fail_msg("%s", err.msg);
    assert_int_equal(ds_rpc_reader_next(s1_results, &msg, 30, &code, &err), -1);
    assert_int_equal(code, DS_RPC_ABORTED);
    if (!strstr(err.msg, "taken over by another master session"))
        fail_msg("%s", err.msg);

    ds_tensor cur = {0};
    frame_pixels(&cur, 1, 40);
    encode_input(&payload, &cur, &s1_last);
    frame_request_of(&req, S1, 1, 4, 0, payload.data, payload.len);
    assert_int_equal(submit_to(session_ch, &req, &err), DS_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "belongs to master session 00a1b2c3d4e5f601"));
    assert_no_session_id(err.msg, S2);

    encode_input(&payload, &cur, NULL); /* a new session's caches start empty */
    frame_request_of(&req, S2, 7, 0, 0, payload.data, payload.len);
    assert_int_equal(submit_to(session_ch, &req, &err), DS_RPC_OK);
    expect_report_on(s2_results, 0, 1);

    /* The same session taking its worker back: no take-over asked.  (An
     * epoch near the top of its range is still inside its own window.) */
    ds_rpc_results_request again = {S2, 0xfffffff0u, 0};
    ds_rpc_reader *r = ds_rpc_open_results(session_ch, &again, &code, &err);
    if (!r)
        fail_msg("%s", err.msg);
    assert_int_equal(ds_rpc_reader_next(s2_results, &msg, 30, &code, &err), -1);
    assert_int_equal(code, DS_RPC_ABORTED);
    assert_non_null(strstr(err.msg, "replaced by a new result stream"));
    ds_rpc_reader_free(s2_results);
    s2_results = r;
    frame_request_of(&req, S2, 0xfffffff0u, 1, 0, payload.data, payload.len);
    if (submit_to(session_ch, &req, &err) != DS_RPC_OK)
        fail_msg("%s", err.msg);
    expect_report_on(s2_results, 1, 1);

    /* The session ends (its stream is gone): another size is set up. */
    ds_rpc_reader_free(s2_results);
    s2_results = NULL;
    for (int i = 0; i < 400 && (code = costs_at(session_ch, 64, 80, &err)) ==
                                   DS_RPC_FAILED_PRECONDITION; i++)
        sleep_s(0.05);
    if (code != DS_RPC_OK)
        fail_msg("%s", err.msg);
    ds_tensor_free(&cur);
    ds_buf_free(&payload);
    ds_buf_free(&req);
    ds_buf_free(&msg);
}

/* Under mutual TLS identities differ: another certificate may neither open
 * a second session nor take over; the same one may take over. */
static void test_takeover_needs_same_identity(void **state)
{
    (void)state;
    ds_error err;
    ds_buf msg = {0};
    int code = -1;
    ds_rpc_results_request mine = {0x7171, 1, 0};
    ds_rpc_reader *r = ds_rpc_open_results(master_ch, &mine, &code, &err);
    if (!r)
        fail_msg("%s", err.msg);
    ds_rpc_results_request theirs = {0x7272, 1, 0};
    assert_null(ds_rpc_open_results(intruder_ch, &theirs, &code, &err));
    assert_int_equal(code, DS_RPC_ALREADY_EXISTS);
    if (!strstr(err.msg, "serves another master session (opened by \"cn=master\" from ") ||
        !strstr(err.msg, "set master.takeover: true"))
        fail_msg("%s", err.msg);
    theirs.takeover = 1;
    assert_null(ds_rpc_open_results(intruder_ch, &theirs, &code, &err));
    assert_int_equal(code, DS_RPC_ALREADY_EXISTS);
    if (!strstr(err.msg, "(opened by \"cn=master\" from ") ||
        !strstr(err.msg, "only the same identity may take over"))
        fail_msg("%s", err.msg);
    /* Still open: the same certificate takes over. */
    ds_rpc_results_request again = {0x7373, 1, 1};
    ds_rpc_reader *r2 = ds_rpc_open_results(master_ch, &again, &code, &err);
    if (!r2)
        fail_msg("%s", err.msg);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 30, &code, &err), -1);
    assert_int_equal(code, DS_RPC_ABORTED);
    assert_non_null(strstr(err.msg, "taken over by another master session"));
    ds_rpc_reader_free(r);
    ds_rpc_reader_free(r2);
    ds_buf_free(&msg);
}

/* After all that, SIGTERM still stops both workers with status 0 (under
 * the sanitizers: nothing leaked on the way). */
static void test_stop_after_sessions(void **state)
{
    (void)state;
    pid_t pids[2] = {session_pid, tls_pid};
    for (int i = 0; i < 2; i++) {
        int status;
        assert_int_equal(kill(pids[i], SIGTERM), 0);
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("worker %d ended with status 0x%x", (int)pids[i], status);
    }
    session_pid = tls_pid = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_requests),
        cmocka_unit_test(test_second_master_refused),
        cmocka_unit_test(test_frame_windows),
        cmocka_unit_test(test_costs_while_open),
        cmocka_unit_test(test_takeover),
        cmocka_unit_test(test_takeover_needs_same_identity),
        cmocka_unit_test(test_stop_after_sessions),
    };
    return cmocka_run_group_tests(tests, start_worker, stop_worker);
}
