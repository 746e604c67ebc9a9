/* test_subscribe.c - the master's results subscription (master_subscribe.c):
 * a real server on an ephemeral loopback port, clients through src/rpc.
 * Every subscriber receives the published results in order with their
 * values bit for bit; one that reads nothing has its oldest results dropped
 * and counted (Result.dropped) without holding up publishing or the
 * others; a ninth is refused until a place frees; stop delivers what is
 * queued and ends every stream OK; token and mutual TLS refuse the wrong
 * clients.  Certificates (certs.h) are made once into a temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "common/log.h"
#include "output/output.h"
#include "roles/master.h"
#include "rpc/rpc.h"

#define TOKEN "subscribe-token"

static char dir[] = "/tmp/ds_subscribe_XXXXXX";

static int setup(void **state)
{
    (void)state;
    ds_log_set_level(DS_LOG_WARN);
    return mkdtemp(dir) && ds_test_make_certs(dir) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) ? -1 : 0;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ds_rpc_security_new from file names in dir (NULL = none). */
static ds_rpc_security *sec_new(const char *ca, const char *cert, const char *key,
                                const char *token)
{
    char p[3][256];
    const char *name[3] = {ca, cert, key};
    for (int i = 0; i < 3; i++)
        if (name[i])
            snprintf(p[i], sizeof p[i], "%s/%s", dir, name[i]);
    ds_rpc_security_opts o = {ca ? p[0] : NULL, cert ? p[1] : NULL, key ? p[2] : NULL, token,
                              "test"};
    ds_error err = {{0}};
    ds_rpc_security *s = ds_rpc_security_new(&o, &err);
    if (!s)
        fail_msg("ds_rpc_security_new: %s", err.msg);
    return s;
}

static ds_subscribers *start(ds_rpc_security *sec)
{
    ds_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.master.listen = (char *)"127.0.0.1";
    cfg.port_master = 0; /* ephemeral */
    ds_error err = {{0}};
    ds_subscribers *s = ds_subscribers_start(&cfg, sec, &err);
    if (!s)
        fail_msg("ds_subscribers_start: %s", err.msg);
    assert_true(ds_subscribers_port(s) > 0);
    return s;
}

/* ---- results: two outputs whose values follow from the frame id */

typedef struct fake {
    ds_tensor t[2];
    int layer_ids[2];
    const char *names[2];
    const ds_tensor *values[2];
    ds_result r;
} fake;

static float value_of(uint64_t frame, int out, size_t i)
{
    return (float)frame * 0.5f + (float)out * 1000.0f - (float)i / 7.0f;
}

/* Frame `frame` with a [1,10] output and a [1,c,8,8] one. */
static void fake_make(fake *f, uint64_t frame, int c)
{
    ds_error err = {{0}};
    int64_t d0[2] = {1, 10};
    ds_shape s0 = ds_shape_make(2, d0), s1 = ds_shape_nchw(1, c, 8, 8);
    assert_int_equal(ds_tensor_reserve(&f->t[0], &s0, DS_F32, &err), 0);
    assert_int_equal(ds_tensor_reserve(&f->t[1], &s1, DS_F32, &err), 0);
    for (int o = 0; o < 2; o++) {
        size_t n = (size_t)ds_shape_numel(&f->t[o].shape);
        for (size_t i = 0; i < n; i++)
            ds_tensor_f32(&f->t[o])[i] = value_of(frame, o, i);
        f->values[o] = &f->t[o];
    }
    f->layer_ids[0] = 13;
    f->layer_ids[1] = 7;
    f->names[0] = "fc";
    f->names[1] = "pool";
    f->r = (ds_result){frame, (int64_t)frame + 100, 1764691200000000 + (int64_t)frame,
                       0.25 + (double)frame, 2, f->layer_ids, f->names, f->values};
}

static void fake_free(fake *f)
{
    ds_tensor_free(&f->t[0]);
    ds_tensor_free(&f->t[1]);
}

static void publish(ds_subscribers *s, uint64_t frame, int c)
{
    fake f = {0};
    fake_make(&f, frame, c);
    ds_subscribers_publish(s, &f.r);
    fake_free(&f); /* publish keeps nothing of r */
}

/* ---- clients */

typedef struct client {
    ds_rpc_channel *ch;
    ds_rpc_reader *r;
    ds_buf msg;
    int received;
} client;

static ds_rpc_channel *dial(ds_subscribers *s, const ds_rpc_security *sec)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", ds_subscribers_port(s));
    ds_error err = {{0}};
    ds_rpc_channel *ch = ds_rpc_channel_new("master", target, 0, sec, &err);
    if (!ch || ds_rpc_wait_ready(ch, 30, &err))
        fail_msg("%s", err.msg);
    return ch;
}

/* Opens the stream with an empty SubscribeRequest; NULL with *code. */
static ds_rpc_reader *subscribe(ds_rpc_channel *ch, int *code, ds_error *err)
{
    Deltaslice__SubscribeRequest q = DELTASLICE__SUBSCRIBE_REQUEST__INIT;
    ds_buf req = {0};
    assert_int_equal(ds_rpc_pack(&q.base, &req, err), 0);
    ds_rpc_reader *r = ds_rpc_reader_open(ch, DS_RPC_MASTER_RESULTS, req.data, req.len, code, err);
    ds_buf_free(&req);
    return r;
}

static void client_open(client *c, ds_subscribers *s, const ds_rpc_security *sec)
{
    memset(c, 0, sizeof *c);
    c->ch = dial(s, sec);
    ds_error err = {{0}};
    int code = -1;
    if (!(c->r = subscribe(c->ch, &code, &err)))
        fail_msg("subscribe: %s", err.msg);
}

static void client_close(client *c)
{
    ds_rpc_reader_free(c->r);
    ds_rpc_channel_free(c->ch);
    ds_buf_free(&c->msg);
}

/* The next Result (the test fails on anything else). */
static Deltaslice__Result *next_result(client *c)
{
    ds_error err = {{0}};
    int code = -1;
    int rc = ds_rpc_reader_next(c->r, &c->msg, 30, &code, &err);
    if (rc != 1)
        fail_msg("reader_next: %d (%s) %s", rc, ds_rpc_code_name(code), err.msg);
    Deltaslice__Result *m = (Deltaslice__Result *)ds_rpc_unpack(&deltaslice__result__descriptor,
                                                                c->msg.data, c->msg.len, 0, &err);
    if (!m)
        fail_msg("%s", err.msg);
    c->received++;
    return m;
}

/* m is frame `frame` of fake_make(c) in every field, values bit for bit. */
static void expect_frame(const Deltaslice__Result *m, uint64_t frame, int c)
{
    fake f = {0};
    fake_make(&f, frame, c);
    assert_int_equal(m->frame_id, frame);
    assert_int_equal(m->source_frame, f.r.source_frame);
    assert_int_equal(m->capture_us, f.r.capture_us);
    assert_true(m->latency_s == f.r.latency);
    assert_int_equal(m->n_outputs, 2);
    for (int o = 0; o < 2; o++) {
        const Deltaslice__Output *out = m->outputs[o];
        assert_int_equal(out->layer, f.layer_ids[o]);
        assert_string_equal(out->name, f.names[o]);
        assert_int_equal(out->n_shape, (size_t)f.t[o].shape.ndim);
        for (int d = 0; d < f.t[o].shape.ndim; d++)
            assert_int_equal(out->shape[d], f.t[o].shape.dims[d]);
        size_t n = (size_t)ds_shape_numel(&f.t[o].shape);
        assert_int_equal(out->data.len, n * 4);
        for (size_t i = 0; i < n; i++) { /* little-endian float32 */
            const uint8_t *p = out->data.data + 4 * i;
            uint32_t bits = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                            (uint32_t)p[3] << 24;
            float v;
            memcpy(&v, &bits, 4);
            if (memcmp(&v, &ds_tensor_f32(&f.t[o])[i], 4))
                fail_msg("frame %llu output %d value %zu: %g, want %g", (unsigned long long)frame,
                         o, i, (double)v, (double)ds_tensor_f32(&f.t[o])[i]);
        }
    }
    fake_free(&f);
}

/* The server ended the stream with OK. */
static void expect_end_ok(client *c)
{
    ds_error err = {{0}};
    int code = -1;
    int rc = ds_rpc_reader_next(c->r, &c->msg, 30, &code, &err);
    if (rc != 0)
        fail_msg("expected a clean end, got %d (%s) %s", rc, ds_rpc_code_name(code), err.msg);
}

/* ---- tests */

/* Three subscribers get every result in order, in batches smaller than
 * their queues (so none may be dropped); results queued when stop comes
 * still arrive, then the streams end OK. */
static void test_in_order(void **state)
{
    (void)state;
    ds_subscribers *s = start(NULL);
    assert_int_equal(ds_subscribers_count(s), 0);
    publish(s, 999, 1); /* nobody listens: dropped silently */
    enum { N_CLIENTS = 3, BATCH = 10, BATCHES = 5, LAST = 5 };
    client c[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++)
        client_open(&c[i], s, NULL);
    assert_int_equal(ds_subscribers_count(s), N_CLIENTS);
    uint64_t frame = 0;
    for (int b = 0; b < BATCHES; b++) {
        for (int k = 0; k < BATCH; k++)
            publish(s, frame + (uint64_t)k, 2);
        for (int i = 0; i < N_CLIENTS; i++)
            for (int k = 0; k < BATCH; k++) {
                Deltaslice__Result *m = next_result(&c[i]);
                expect_frame(m, frame + (uint64_t)k, 2);
                assert_int_equal(m->dropped, 0);
                protobuf_c_message_free_unpacked(&m->base, NULL);
            }
        frame += BATCH;
    }
    for (int k = 0; k < LAST; k++)
        publish(s, frame + (uint64_t)k, 2);
    ds_subscribers_stop(s);
    for (int i = 0; i < N_CLIENTS; i++) {
        for (int k = 0; k < LAST; k++) {
            Deltaslice__Result *m = next_result(&c[i]);
            expect_frame(m, frame + (uint64_t)k, 2);
            assert_int_equal(m->dropped, 0);
            protobuf_c_message_free_unpacked(&m->base, NULL);
        }
        expect_end_ok(&c[i]);
        assert_int_equal(c[i].received, BATCH * BATCHES + LAST);
        client_close(&c[i]);
    }
}

/* A reads nothing while N large results are published; B reads every batch.
 * Publishing goes on (it never waits for A), B misses nothing, and A, once
 * it reads, gets the newest result last with every gap counted: the i-th
 * result it receives is frame i + dropped.  A third that never reads does
 * not keep stop waiting: its stream is cancelled. */
static void test_slow_subscriber(void **state)
{
    (void)state;
    ds_subscribers *s = start(NULL);
    client a, b, never;
    client_open(&a, s, NULL);
    client_open(&b, s, NULL);
    client_open(&never, s, NULL);
    enum { C = 1024, BATCH = 16, N = 40 * BATCH }; /* 256 KiB results, 160 MiB in all */
    for (uint64_t frame = 0; frame < N; frame += BATCH) {
        for (int k = 0; k < BATCH; k++)
            publish(s, frame + (uint64_t)k, C);
        for (int k = 0; k < BATCH; k++) {
            Deltaslice__Result *m = next_result(&b);
            assert_int_equal(m->frame_id, frame + (uint64_t)k);
            assert_int_equal(m->dropped, 0);
            protobuf_c_message_free_unpacked(&m->base, NULL);
        }
    }
    uint64_t last = 0, dropped = 0;
    int i = 0;
    do {
        Deltaslice__Result *m = next_result(&a);
        if (m->frame_id != i + m->dropped)
            fail_msg("result %d: frame %llu with %llu dropped", i, (unsigned long long)m->frame_id,
                     (unsigned long long)m->dropped);
        if (i == 0 || m->frame_id == N - 1)
            expect_frame(m, m->frame_id, C);
        assert_true(m->dropped >= dropped);
        last = m->frame_id;
        dropped = m->dropped;
        i++;
        protobuf_c_message_free_unpacked(&m->base, NULL);
    } while (last != N - 1);
    assert_true(dropped > 0);
    assert_int_equal((uint64_t)a.received + dropped, N);
    /* `never` still reads nothing: stop does not wait for it for ever. */
    ds_subscribers_stop(s);
    expect_end_ok(&a);
    expect_end_ok(&b);
    ds_error err = {{0}};
    int code = -1, rc;
    while ((rc = ds_rpc_reader_next(never.r, &never.msg, 30, &code, &err)) == 1)
        never.received++;
    assert_int_equal(rc, -1); /* cancelled at the server's shutdown */
    assert_true(never.received < N);
    client_close(&a);
    client_close(&b);
    client_close(&never);
}

/* At most 8 subscribers; a place frees when one leaves. */
static void test_limit(void **state)
{
    (void)state;
    ds_subscribers *s = start(NULL);
    client c[8];
    for (int i = 0; i < 8; i++)
        client_open(&c[i], s, NULL);
    assert_int_equal(ds_subscribers_count(s), 8);
    ds_rpc_channel *ch = dial(s, NULL);
    ds_error err = {{0}};
    int code = -1;
    assert_null(subscribe(ch, &code, &err));
    assert_int_equal(code, DS_RPC_RESOURCE_EXHAUSTED);
    if (!strstr(err.msg, "Results: RESOURCE_EXHAUSTED: the master serves at most 8 results subscribers"))
        fail_msg("%s", err.msg);
    assert_int_equal(ds_subscribers_count(s), 8);

    /* The client cancels: the server learns of it asynchronously. */
    client_close(&c[3]);
    for (int i = 0; i < 600 && ds_subscribers_count(s) != 7; i++)
        sleep_s(0.05);
    assert_int_equal(ds_subscribers_count(s), 7);
    ds_rpc_reader *r = subscribe(ch, &code, &err);
    if (!r)
        fail_msg("after one left: %s", err.msg);
    assert_int_equal(ds_subscribers_count(s), 8);
    publish(s, 1, 1);
    client fresh = {.ch = ch, .r = r};
    Deltaslice__Result *m = next_result(&fresh);
    expect_frame(m, 1, 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    ds_subscribers_stop(s);
    expect_end_ok(&fresh);
    client_close(&fresh);
    for (int i = 0; i < 8; i++)
        if (i != 3) {
            m = next_result(&c[i]);
            protobuf_c_message_free_unpacked(&m->base, NULL);
            expect_end_ok(&c[i]);
            client_close(&c[i]);
        }
}

/* A request that is not a SubscribeRequest; a subscription during stop. */
static void test_bad_request(void **state)
{
    (void)state;
    ds_subscribers *s = start(NULL);
    ds_rpc_channel *ch = dial(s, NULL);
    ds_error err = {{0}};
    int code = -1;
    assert_null(ds_rpc_reader_open(ch, DS_RPC_MASTER_RESULTS, "\xff\xff\xff", 3, &code, &err));
    assert_int_equal(code, DS_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "malformed deltaslice.SubscribeRequest"));
    assert_int_equal(ds_subscribers_count(s), 0);
    ds_rpc_channel_free(ch);
    ds_subscribers_stop(s);
    /* NULL: nothing. */
    ds_subscribers_publish(NULL, NULL);
    assert_int_equal(ds_subscribers_count(NULL), 0);
    ds_subscribers_stop(NULL);
}

/* The port is taken: a clear error naming the config keys. */
static void test_port_in_use(void **state)
{
    (void)state;
    ds_subscribers *s = start(NULL);
    ds_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.master.listen = (char *)"127.0.0.1";
    cfg.port_master = ds_subscribers_port(s);
    ds_error err = {{0}};
    assert_null(ds_subscribers_start(&cfg, NULL, &err));
    if (!strstr(err.msg, "output.subscribe (master.listen, port.master)") ||
        !strstr(err.msg, "cannot listen on 127.0.0.1:"))
        fail_msg("%s", err.msg);
    ds_subscribers_stop(s);
}

/* Tries to subscribe as `client` until the answer is `want` (a first
 * connection attempt may time out on a loaded machine: UNAVAILABLE for
 * another reason); no subscriber is added. */
static void expect_refused(ds_subscribers *s, const ds_rpc_security *client_sec, int want,
                           const char *why)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", ds_subscribers_port(s));
    ds_error err = {{0}};
    ds_rpc_channel *ch = ds_rpc_channel_new("master", target, 0, client_sec, &err);
    assert_non_null(ch);
    int code = -1;
    for (int i = 0; i < 40; i++) {
        assert_null(subscribe(ch, &code, &err));
        if (code == want && strstr(err.msg, why))
            break;
        sleep_s(0.05);
    }
    if (code != want || !strstr(err.msg, why))
        fail_msg("expected %s (%s), got %s: %s", ds_rpc_code_name(want), why,
                 ds_rpc_code_name(code), err.msg);
    assert_int_equal(ds_subscribers_count(s), 0);
    ds_rpc_channel_free(ch);
}

/* Subscribes as `client_sec`, receives one result, ends OK at stop. */
static void expect_served(ds_subscribers *s, const ds_rpc_security *client_sec)
{
    client c;
    client_open(&c, s, client_sec);
    publish(s, 42, 1);
    Deltaslice__Result *m = next_result(&c);
    expect_frame(m, 42, 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    ds_subscribers_stop(s);
    expect_end_ok(&c);
    client_close(&c);
}

static void test_token(void **state)
{
    (void)state;
    ds_rpc_security *server = sec_new(NULL, NULL, NULL, TOKEN);
    ds_rpc_security *wrong = sec_new(NULL, NULL, NULL, "not-the-token");
    ds_rpc_security *right = sec_new(NULL, NULL, NULL, TOKEN);
    ds_subscribers *s = start(server);
    expect_refused(s, NULL, DS_RPC_UNAUTHENTICATED, "no auth token");
    expect_refused(s, wrong, DS_RPC_UNAUTHENTICATED, "wrong auth token");
    expect_served(s, right);
    ds_rpc_security_free(right);
    ds_rpc_security_free(wrong);
    ds_rpc_security_free(server);
}

static void test_mutual_tls(void **state)
{
    (void)state;
    ds_rpc_security *server = sec_new("ca.pem", "master.pem", "master.key", NULL);
    ds_rpc_security *stranger = sec_new("ca.pem", "stranger.pem", "stranger.key", NULL);
    ds_rpc_security *no_cert = sec_new("ca.pem", NULL, NULL, NULL);
    ds_rpc_security *ours = sec_new("ca.pem", "w0.pem", "w0.key", NULL);
    ds_subscribers *s = start(server);
    expect_refused(s, stranger, DS_RPC_UNAVAILABLE, "UNAVAILABLE");
    expect_refused(s, no_cert, DS_RPC_UNAVAILABLE, "UNAVAILABLE");
    expect_refused(s, NULL, DS_RPC_UNAVAILABLE, "UNAVAILABLE");
    expect_served(s, ours);
    ds_rpc_security_free(ours);
    ds_rpc_security_free(no_cert);
    ds_rpc_security_free(stranger);
    ds_rpc_security_free(server);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),    cmocka_unit_test(test_slow_subscriber),
        cmocka_unit_test(test_limit),       cmocka_unit_test(test_bad_request),
        cmocka_unit_test(test_port_in_use), cmocka_unit_test(test_token),
        cmocka_unit_test(test_mutual_tls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
