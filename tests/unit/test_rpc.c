/* test_rpc.c - the gRPC wrapper on loopback: unary calls, statuses, deadlines,
 * late servers, streams, limits, shutdown and thread clean-up. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "rpc/rpc.h"

#define ECHO "/test.Svc/Echo"
#define FAIL "/test.Svc/Fail"
#define SLOW "/test.Svc/Slow"
#define PARSE "/test.Svc/Parse"
#define COUNT "/test.Svc/Count"
#define HOLD "/test.Svc/Hold"
#define ODD "/test.Svc/Odd"
#define SLOW_HOLD "/test.Svc/SlowHold"

static int baseline_threads;

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* A port nothing listens on (bound then released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- handlers */

static int echo(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud;
    return ds_buf_append(resp, req, len, err) ? DS_RPC_INTERNAL : DS_RPC_OK;
}

static int fail_handler(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud, (void)resp;
    ds_errorf(err, "frame %.*s is out of order", (int)len, (const char *)req);
    return DS_RPC_FAILED_PRECONDITION;
}

static int slow(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud;
    sleep_s(0.4);
    return ds_buf_append(resp, req, len, err) ? DS_RPC_INTERNAL : DS_RPC_OK;
}

/* Unpacks a FrameRequest the way the worker will, and answers with its id. */
static int parse(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud;
    Deltaslice__FrameRequest *m = (Deltaslice__FrameRequest *)ds_rpc_unpack(
        &deltaslice__frame_request__descriptor, req, len, 0, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    int bad = ds_rpc_validate_frame_request(m, 2, 8, err);
    Deltaslice__Ack ack = DELTASLICE__ACK__INIT;
    ack.ok = 1;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    if (bad)
        return DS_RPC_INVALID_ARGUMENT;
    return ds_rpc_pack(&ack.base, resp, err) ? DS_RPC_INTERNAL : DS_RPC_OK;
}

/* Streams N messages "0".."N-1" (N = the request as text), then ends OK. */
static int count(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *s, ds_error *err)
{
    (void)ud;
    char txt[16] = {0};
    if (len == 0 || len >= sizeof txt)
        return ds_errorf(err, "bad count"), DS_RPC_INVALID_ARGUMENT;
    memcpy(txt, req, len);
    int n = atoi(txt);
    for (int i = 0; i < n; i++) {
        char msg[16];
        int k = snprintf(msg, sizeof msg, "%d", i);
        if (ds_rpc_stream_push(s, msg, (size_t)k, 5.0, err)) {
            ds_rpc_stream_close(s, DS_RPC_INTERNAL, err->msg);
            return DS_RPC_OK;
        }
    }
    ds_rpc_stream_close(s, DS_RPC_OK, NULL);
    return DS_RPC_OK;
}

/* Keeps the stream for the test to push on later. */
static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static ds_rpc_stream *held;

static int hold(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *s, ds_error *err)
{
    (void)ud, (void)req, (void)len, (void)err;
    pthread_mutex_lock(&held_mu);
    held = s;
    pthread_mutex_unlock(&held_mu);
    return DS_RPC_OK;
}

/* Like hold, but takes its time accepting. */
static int slow_hold(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *s, ds_error *err)
{
    sleep_s(0.2);
    return hold(ud, req, len, s, err);
}

/* Closes the stream itself, then returns an error anyway: its own status
 * stands and nothing is closed twice. */
static int odd(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *s, ds_error *err)
{
    (void)ud, (void)req, (void)len;
    if (ds_rpc_stream_push(s, "x", 1, 1, err) == 0)
        ds_rpc_stream_close(s, DS_RPC_OK, NULL);
    else
        ds_rpc_stream_close(s, DS_RPC_INTERNAL, err->msg);
    ds_errorf(err, "ignored");
    return DS_RPC_ABORTED;
}

static ds_rpc_stream *wait_held(void)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&held_mu);
        ds_rpc_stream *s = held;
        held = NULL;
        pthread_mutex_unlock(&held_mu);
        if (s)
            return s;
        sleep_s(0.01);
    }
    return NULL;
}

static ds_rpc_server *start_server(const char *addr, size_t max_msg)
{
    ds_error err = {{0}};
    ds_rpc_server *srv = ds_rpc_server_new(addr, max_msg, NULL, &err);
    assert_non_null(srv);
    assert_int_equal(ds_rpc_server_add_unary(srv, ECHO, echo, NULL, &err), 0);
    assert_int_equal(ds_rpc_server_add_unary(srv, FAIL, fail_handler, NULL, &err), 0);
    assert_int_equal(ds_rpc_server_add_unary(srv, SLOW, slow, NULL, &err), 0);
    assert_int_equal(ds_rpc_server_add_unary(srv, PARSE, parse, NULL, &err), 0);
    assert_int_equal(ds_rpc_server_add_stream(srv, COUNT, count, NULL, 8, &err), 0);
    assert_int_equal(ds_rpc_server_add_stream(srv, HOLD, hold, NULL, 4, &err), 0);
    assert_int_equal(ds_rpc_server_add_stream(srv, ODD, odd, NULL, 0, &err), 0);
    assert_int_equal(ds_rpc_server_add_stream(srv, SLOW_HOLD, slow_hold, NULL, 0, &err), 0);
    assert_int_equal(ds_rpc_server_start(srv, 2, &err), 0);
    return srv;
}

static ds_rpc_channel *connect_to(const ds_rpc_server *srv, size_t max_msg)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", ds_rpc_server_port(srv));
    ds_error err = {{0}};
    ds_rpc_channel *ch = ds_rpc_channel_new("w0", target, max_msg, NULL, &err);
    assert_non_null(ch);
    return ch;
}

/* ---- tests */

static void test_unary_echo(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    assert_true(ds_rpc_server_port(srv) > 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    assert_int_equal(ds_rpc_wait_ready(ch, 5, &err), 0);
    ds_buf resp = {0};
    int code = -1;
    for (int i = 0; i < 20; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "hello %d", i);
        assert_int_equal(ds_rpc_call_unary(ch, ECHO, msg, (size_t)n, 5, &resp, &code, &err), 0);
        assert_int_equal(code, DS_RPC_OK);
        assert_int_equal(resp.len, (size_t)n);
        assert_memory_equal(resp.data, msg, (size_t)n);
    }
    /* Empty messages are messages too; a 3 MB one crosses gRPC's 4 MiB-ish
     * default slices and exercises multi-slice reads. */
    assert_int_equal(ds_rpc_call_unary(ch, ECHO, "", 0, 5, &resp, &code, &err), 0);
    assert_int_equal(resp.len, 0);
    size_t big = 3u << 20;
    uint8_t *b = malloc(big);
    for (size_t i = 0; i < big; i++)
        b[i] = (uint8_t)(i * 7 + (i >> 9));
    assert_int_equal(ds_rpc_call_unary(ch, ECHO, b, big, 10, &resp, &code, &err), 0);
    assert_int_equal(resp.len, big);
    assert_memory_equal(resp.data, b, big);
    free(b);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

static void test_error_status(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_buf resp = {0};
    int code = -1;
    assert_int_equal(ds_rpc_call_unary(ch, FAIL, "17", 2, 5, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_FAILED_PRECONDITION);
    char want[128];
    snprintf(want, sizeof want, "w0 (127.0.0.1:%d) Fail: FAILED_PRECONDITION: frame 17 is out of order",
             ds_rpc_server_port(srv));
    assert_string_equal(err.msg, want);

    assert_int_equal(ds_rpc_call_unary(ch, "/test.Svc/Nope", "x", 1, 5, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_UNIMPLEMENTED);
    assert_non_null(strstr(err.msg, "unknown method /test.Svc/Nope"));
    /* The server keeps serving. */
    assert_int_equal(ds_rpc_call_unary(ch, ECHO, "ok", 2, 5, &resp, &code, &err), 0);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

static void test_deadline(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_buf resp = {0};
    int code = -1;
    double t0 = ds_now();
    assert_int_equal(ds_rpc_call_unary(ch, SLOW, "z", 1, 0.1, &resp, &code, &err), -1);
    double dt = ds_now() - t0;
    assert_int_equal(code, DS_RPC_DEADLINE_EXCEEDED);
    assert_true(dt < 0.35);
    assert_non_null(strstr(err.msg, "Slow: DEADLINE_EXCEEDED"));
    assert_int_equal(ds_rpc_call_unary(ch, SLOW, "z", 1, 5, &resp, &code, &err), 0);
    assert_int_equal(resp.len, 1);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

static void test_unavailable(void **state)
{
    (void)state;
    int port = free_port();
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    ds_error err = {{0}};
    ds_rpc_channel *ch = ds_rpc_channel_new("w1", target, 0, NULL, &err);
    assert_non_null(ch);
    ds_buf resp = {0};
    int code = -1;
    assert_int_equal(ds_rpc_call_unary(ch, DS_RPC_WORKER_SUBMIT, "x", 1, 5, &resp, &code, &err),
                     -1);
    assert_int_equal(code, DS_RPC_UNAVAILABLE);
    char want[96];
    snprintf(want, sizeof want, "w1 (%s) Submit: UNAVAILABLE", target);
    assert_memory_equal(err.msg, want, strlen(want));
    double t0 = ds_now();
    assert_int_equal(ds_rpc_wait_ready(ch, 0.5, &err), -1);
    assert_true(ds_now() - t0 < 1.5);
    assert_non_null(strstr(err.msg, "not reachable after"));
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
}

typedef struct late_arg {
    int port;
    ds_rpc_server *srv;
} late_arg;

static void *late_server(void *p)
{
    late_arg *a = p;
    sleep_s(0.4);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", a->port);
    a->srv = start_server(addr, 0);
    return NULL;
}

static void test_client_before_server(void **state)
{
    (void)state;
    late_arg a = {free_port(), NULL};
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", a.port);
    ds_error err = {{0}};
    ds_rpc_channel *ch = ds_rpc_channel_new("w0", target, 0, NULL, &err);
    assert_non_null(ch);
    pthread_t th;
    pthread_create(&th, NULL, late_server, &a);
    /* Capture the log to check the wait is announced exactly once. */
    FILE *log = tmpfile();
    assert_non_null(log);
    int saved = dup(2);
    dup2(fileno(log), 2);
    ds_log_set_level(DS_LOG_INFO);
    double t0 = ds_now();
    int rc = ds_rpc_wait_ready(ch, 10, &err);
    double dt = ds_now() - t0;
    ds_log_set_level(DS_LOG_WARN);
    dup2(saved, 2);
    close(saved);
    pthread_join(th, NULL);
    assert_int_equal(rc, 0);
    char text[4096] = {0}, want[96];
    rewind(log);
    size_t got = fread(text, 1, sizeof text - 1, log);
    fclose(log);
    text[got] = 0;
    snprintf(want, sizeof want, "waiting for w0 at %s", target);
    const char *hit = strstr(text, want);
    assert_non_null(hit);
    assert_null(strstr(hit + 1, want));
    assert_true(dt >= 0.3);
    assert_true(dt < 4.0); /* backoff is capped at 2 s */
    ds_buf resp = {0};
    assert_int_equal(ds_rpc_call_unary(ch, ECHO, "late", 4, 5, &resp, NULL, &err), 0);
    assert_int_equal(resp.len, 4);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(a.srv);
}

static void test_stream_in_order(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_rpc_reader *r = ds_rpc_reader_open(ch, COUNT, "100", 3, NULL, &err);
    assert_non_null(r);
    ds_buf msg = {0};
    int code = -1;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 1);
        char want[16];
        int n = snprintf(want, sizeof want, "%d", i);
        assert_int_equal(msg.len, (size_t)n);
        assert_memory_equal(msg.data, want, (size_t)n);
    }
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 0);
    assert_int_equal(code, DS_RPC_OK);
    /* Asking again repeats the end. */
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 0);
    ds_rpc_reader_free(r);

    /* A rejected stream request ends with the handler's status. */
    code = DS_RPC_OK;
    assert_null(ds_rpc_reader_open(ch, COUNT, "", 0, &code, &err));
    assert_int_equal(code, DS_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "Count: INVALID_ARGUMENT: bad count"));

    r = ds_rpc_reader_open(ch, ODD, "", 0, NULL, &err);
    assert_non_null(r);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 1);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 0);
    assert_int_equal(code, DS_RPC_OK);
    ds_rpc_reader_free(r);
    ds_buf_free(&msg);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

/* The server pushes later from another thread; the reader times out while
 * nothing comes; the server shutting down ends the stream without a hang. */
static void test_stream_push_and_shutdown(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_rpc_reader *r = ds_rpc_reader_open(ch, HOLD, "m", 1, NULL, &err);
    assert_non_null(r);
    ds_rpc_stream *s = wait_held();
    assert_non_null(s);
    assert_true(ds_rpc_stream_alive(s));
    assert_non_null(strstr(ds_rpc_stream_peer(s), "127.0.0.1"));
    ds_buf msg = {0};
    int code = -1;
    assert_int_equal(ds_rpc_reader_next(r, &msg, 0.05, &code, &err), DS_RPC_TIMEOUT);
    assert_int_equal(ds_rpc_stream_push(s, "a", 1, 1, &err), 0);
    assert_int_equal(ds_rpc_stream_push(s, "bb", 2, 1, &err), 0);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 1);
    assert_memory_equal(msg.data, "a", 1);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 1);
    assert_memory_equal(msg.data, "bb", 2);

    double t0 = ds_now();
    ds_rpc_server_shutdown(srv);
    assert_true(ds_now() - t0 < 2.0);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), -1);
    assert_true(code != DS_RPC_OK);
    assert_false(ds_rpc_stream_alive(s));
    assert_int_equal(ds_rpc_stream_push(s, "c", 1, 1, &err), -1);
    assert_non_null(strstr(err.msg, "server shutting down"));
    ds_rpc_server_free(srv);
    ds_rpc_stream_close(s, DS_RPC_OK, NULL); /* still valid after the server is gone */
    ds_rpc_reader_free(r);
    ds_buf_free(&msg);
    ds_rpc_channel_free(ch);
}

typedef struct pusher_arg {
    ds_rpc_stream *s;
    atomic_int pushed;
    ds_error err;
} pusher_arg;

static void *pusher(void *p)
{
    pusher_arg *a = p;
    char payload[1024] = {0};
    while (ds_rpc_stream_push(a->s, payload, sizeof payload, -1, &a->err) == 0)
        atomic_fetch_add(&a->pushed, 1);
    return NULL;
}

/* Shutdown with a producer blocked on a full queue (the reader never reads):
 * the producer is woken with an error and everything is joined. */
static void test_shutdown_with_blocked_pusher(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_rpc_reader *r = ds_rpc_reader_open(ch, HOLD, "m", 1, NULL, &err);
    assert_non_null(r);
    pusher_arg a = {.s = wait_held()};
    assert_non_null(a.s);
    pthread_t th;
    pthread_create(&th, NULL, pusher, &a);
    sleep_s(0.3); /* flow control and the 4-message queue fill up */
    double t0 = ds_now();
    ds_rpc_server_free(srv);
    pthread_join(th, NULL);
    assert_true(ds_now() - t0 < 2.0);
    assert_true(atomic_load(&a.pushed) > 4);
    assert_non_null(strstr(a.err.msg, "Hold stream to"));
    ds_rpc_stream_close(a.s, DS_RPC_OK, NULL);
    ds_rpc_reader_free(r);
    ds_rpc_channel_free(ch);
}

/* ds_rpc_reader_open returns only once the handler accepted the stream:
 * what the client sends next cannot overtake it (the worker resets its
 * session when the master's result stream arrives). */
static void test_open_waits_for_handler(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_rpc_reader *r = ds_rpc_reader_open(ch, SLOW_HOLD, "m", 1, NULL, &err);
    assert_non_null(r);
    pthread_mutex_lock(&held_mu);
    ds_rpc_stream *s = held;
    held = NULL;
    pthread_mutex_unlock(&held_mu);
    assert_non_null(s);
    assert_int_equal(ds_rpc_stream_push(s, "hi", 2, 1, &err), 0);
    ds_buf msg = {0};
    int code = -1;
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 1);
    assert_memory_equal(msg.data, "hi", 2);
    ds_rpc_stream_close(s, DS_RPC_OK, NULL);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 0);
    ds_rpc_reader_free(r);
    ds_buf_free(&msg);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

/* The client goes away: the server side notices and pushes fail. */
static void test_peer_disconnect(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_rpc_reader *r = ds_rpc_reader_open(ch, HOLD, "m", 1, NULL, &err);
    assert_non_null(r);
    ds_rpc_stream *s = wait_held();
    assert_non_null(s);
    ds_rpc_reader_free(r);
    for (int i = 0; i < 200 && ds_rpc_stream_alive(s); i++)
        sleep_s(0.01);
    assert_false(ds_rpc_stream_alive(s));
    assert_int_equal(ds_rpc_stream_push(s, "x", 1, 1, &err), -1);
    assert_non_null(strstr(err.msg, "peer disconnected"));
    ds_rpc_stream_close(s, DS_RPC_OK, NULL);

    /* A reader cancelled from another thread's point of view. */
    r = ds_rpc_reader_open(ch, HOLD, "m", 1, NULL, &err);
    s = wait_held();
    assert_non_null(s);
    ds_rpc_reader_cancel(r);
    ds_buf msg = {0};
    int code = -1;
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), -1);
    assert_int_equal(code, DS_RPC_CANCELLED);
    ds_rpc_reader_free(r);
    ds_rpc_stream_close(s, DS_RPC_OK, NULL);
    ds_buf_free(&msg);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

/* An idle stream survives keepalive pings (the server accepts them instead
 * of answering "too many pings") and still delivers afterwards. */
static void test_idle_stream_keepalive(void **state)
{
    (void)state;
    ds_rpc_set_keepalive(0.1);
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_rpc_set_keepalive(30);
    ds_error err = {{0}};
    ds_rpc_reader *r = ds_rpc_reader_open(ch, HOLD, "m", 1, NULL, &err);
    assert_non_null(r);
    ds_rpc_stream *s = wait_held();
    assert_non_null(s);
    ds_buf msg = {0};
    int code = -1;
    /* Without the server's consent the pings get the connection closed
     * ("too many pings") after about 3 s here. */
    assert_int_equal(ds_rpc_reader_next(r, &msg, 4.0, &code, &err), DS_RPC_TIMEOUT);
    assert_true(ds_rpc_stream_alive(s));
    assert_int_equal(ds_rpc_stream_push(s, "after", 5, 1, &err), 0);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 1);
    assert_int_equal(msg.len, 5);
    ds_rpc_stream_close(s, DS_RPC_OK, NULL);
    assert_int_equal(ds_rpc_reader_next(r, &msg, 5, &code, &err), 0);
    ds_rpc_reader_free(r);
    ds_buf_free(&msg);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

static void test_oversized(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 64 << 10);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_buf resp = {0};
    int code = -1;
    size_t n = 100 << 10;
    uint8_t *b = calloc(1, n);
    assert_int_equal(ds_rpc_call_unary(ch, ECHO, b, n, 5, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err.msg, "w0 ("));
    assert_int_equal(ds_rpc_call_unary(ch, ECHO, "next", 4, 5, &resp, &code, &err), 0);
    assert_int_equal(resp.len, 4);
    /* The client's own limit applies before anything is sent. */
    ds_rpc_channel *small = connect_to(srv, 1000);
    assert_int_equal(ds_rpc_call_unary(small, ECHO, b, 1001, 5, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_RESOURCE_EXHAUSTED);
    /* Under its limit both ways, the small channel works. */
    assert_int_equal(ds_rpc_call_unary(small, ECHO, b, 900, 5, &resp, &code, &err), 0);
    ds_rpc_channel_free(small);
    free(b);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

static void test_malformed_request(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    ds_buf resp = {0}, req = {0};
    int code = -1;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    assert_int_equal(ds_rpc_call_unary(ch, PARSE, junk, sizeof junk, 5, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "Parse: INVALID_ARGUMENT: malformed deltaslice.FrameRequest"));

    /* Well-formed protobuf, invalid content: one job for two workers. */
    Deltaslice__FrameRequest fr = DELTASLICE__FRAME_REQUEST__INIT;
    Deltaslice__Job job = DELTASLICE__JOB__INIT, *jobs[2] = {&job, &job};
    fr.frame_id = 9;
    fr.n_jobs = 1;
    fr.jobs = jobs;
    assert_int_equal(ds_rpc_pack(&fr.base, &req, &err), 0);
    assert_int_equal(ds_rpc_call_unary(ch, PARSE, req.data, req.len, 5, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "frame 9: 1 jobs for 2 workers"));

    /* And a good one. */
    fr.n_jobs = 2;
    int32_t ex0[] = {1, 2}, ex1[] = {3}, out0[] = {2}, out1[] = {3};
    Deltaslice__Job j0 = DELTASLICE__JOB__INIT, j1 = DELTASLICE__JOB__INIT;
    j0.n_exec_ids = 2, j0.exec_ids = ex0, j0.n_out_ids = 1, j0.out_ids = out0;
    j1.n_exec_ids = 1, j1.exec_ids = ex1, j1.n_out_ids = 1, j1.out_ids = out1;
    jobs[0] = &j0, jobs[1] = &j1;
    assert_int_equal(ds_rpc_pack(&fr.base, &req, &err), 0);
    assert_int_equal(ds_rpc_call_unary(ch, PARSE, req.data, req.len, 5, &resp, &code, &err), 0);
    Deltaslice__Ack *ack = (Deltaslice__Ack *)ds_rpc_unpack(&deltaslice__ack__descriptor,
                                                            resp.data, resp.len, 0, &err);
    assert_non_null(ack);
    assert_true(ack->ok);
    assert_int_equal(ds_rpc_validate_ack(ack, &err), 0);
    protobuf_c_message_free_unpacked(&ack->base, NULL);
    ds_buf_free(&req);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

typedef struct caller_arg {
    ds_rpc_channel *ch;
    int ok;
} caller_arg;

static void *caller(void *p)
{
    caller_arg *a = p;
    ds_buf resp = {0};
    ds_error err;
    for (int i = 0; i < 50; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "%p %d", p, i);
        if (ds_rpc_call_unary(a->ch, ECHO, msg, (size_t)n, 5, &resp, NULL, &err) == 0 &&
            resp.len == (size_t)n && !memcmp(resp.data, msg, (size_t)n))
            a->ok++;
    }
    ds_buf_free(&resp);
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    caller_arg a[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (caller_arg){ch, 0};
        pthread_create(&th[i], NULL, caller, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].ok, 50);
    }
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

static void test_bad_setup(void **state)
{
    (void)state;
    ds_error err = {{0}};
    ds_rpc_server *a = ds_rpc_server_new("127.0.0.1:0", 0, NULL, &err);
    assert_non_null(a);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ds_rpc_server_port(a));
    ds_rpc_server *b = ds_rpc_server_new(addr, 0, NULL, &err);
    assert_null(b);
    assert_non_null(strstr(err.msg, "cannot listen on"));
    assert_int_equal(ds_rpc_server_add_unary(a, "NoSlash", echo, NULL, &err), -1);
    assert_int_equal(ds_rpc_server_add_unary(a, ECHO, echo, NULL, &err), 0);
    assert_int_equal(ds_rpc_server_add_unary(a, ECHO, echo, NULL, &err), -1);
    assert_null(ds_rpc_channel_new("w0", "127.0.0.1:1", DS_RPC_MAX_MAX_MSG + 1, NULL, &err));
    ds_rpc_server_free(a); /* never started */
}

/* Every server, channel and reader above is gone: so are the threads. */
static void test_threads_joined(void **state)
{
    (void)state;
    int n = thread_count();
    for (int i = 0; i < 200 && n != baseline_threads; i++) {
        sleep_s(0.01);
        n = thread_count();
    }
    assert_int_equal(n, baseline_threads);
}

typedef struct cancel_arg {
    ds_rpc_channel *ch; /* NULL: ds_rpc_interrupt */
} cancel_arg;

static void *cancel_soon(void *p)
{
    cancel_arg *a = p;
    sleep_s(0.1);
    if (a->ch)
        ds_rpc_channel_cancel(a->ch);
    else
        ds_rpc_interrupt();
    return NULL;
}

/* A Slow call on ch (its handler takes 0.4 s) that `a` cancels after 0.1 s
 * ends at once with CANCELLED; err holds its message. */
static void expect_cancelled_call(ds_rpc_channel *ch, cancel_arg *a, ds_error *err)
{
    ds_buf resp = {0};
    int code = -1;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_soon, a), 0);
    double t0 = ds_now();
    assert_int_equal(ds_rpc_call_unary(ch, SLOW, "z", 1, 5, &resp, &code, err), -1);
    assert_true(ds_now() - t0 < 0.35);
    assert_int_equal(code, DS_RPC_CANCELLED);
    pthread_join(th, NULL);
    ds_buf_free(&resp);
}

/* ds_rpc_channel_cancel ends the call in progress on that channel at once;
 * the channel's next call works. */
static void test_channel_cancel(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    cancel_arg a = {ch};
    expect_cancelled_call(ch, &a, &err);
    assert_non_null(strstr(err.msg, "Slow: CANCELLED"));
    ds_buf resp = {0};
    int code = -1;
    assert_int_equal(ds_rpc_call_unary(ch, SLOW, "y", 1, 5, &resp, &code, &err), 0);
    assert_int_equal(resp.len, 1);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

/* Last: ds_rpc_interrupt is for good.  A call in progress ends at once
 * (CANCELLED, not after the handler's 0.4 s), and so does waiting for an
 * unreachable peer. */
static void test_interrupt(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server("127.0.0.1:0", 0);
    ds_rpc_channel *ch = connect_to(srv, 0);
    ds_error err = {{0}};
    cancel_arg a = {NULL};
    expect_cancelled_call(ch, &a, &err);
    assert_true(ds_rpc_interrupted());
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", free_port());
    ds_rpc_channel *gone = ds_rpc_channel_new("w1", target, 0, NULL, &err);
    double t0 = ds_now();
    assert_int_equal(ds_rpc_wait_ready(gone, 30, &err), -1);
    assert_true(ds_now() - t0 < 0.5);
    assert_non_null(strstr(err.msg, "interrupted while connecting"));
    ds_rpc_channel_free(gone);
    ds_rpc_channel_free(ch);
    ds_rpc_server_free(srv);
}

int main(void)
{
    ds_log_init("test", DS_LOG_WARN);
    baseline_threads = thread_count();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_echo),
        cmocka_unit_test(test_error_status),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_unavailable),
        cmocka_unit_test(test_client_before_server),
        cmocka_unit_test(test_stream_in_order),
        cmocka_unit_test(test_stream_push_and_shutdown),
        cmocka_unit_test(test_shutdown_with_blocked_pusher),
        cmocka_unit_test(test_open_waits_for_handler),
        cmocka_unit_test(test_peer_disconnect),
        cmocka_unit_test(test_idle_stream_keepalive),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_malformed_request),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_bad_setup),
        cmocka_unit_test(test_channel_cancel),
        cmocka_unit_test(test_threads_joined),
        cmocka_unit_test(test_interrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
