/* test_rpc_security.c - the rpc module's security (rpc.h, "security") on
 * loopback: mutual TLS, a token over TLS, plaintext with a token; who a
 * handler sees as its caller; that nothing unauthenticated reaches a
 * handler; the errors of ds_rpc_security_new.  Certificates (certs.h) are
 * made once per run into a temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "common/log.h"
#include "rpc/rpc.h"

#define WHO "/test.Sec/Who"         /* unary: records the caller */
#define WATCH "/test.Sec/Watch"     /* stream: records the caller, sends its identity */
#define REFUSE "/test.Sec/Refuse"   /* stream: always refused by its handler */
#define TOKEN "s3cret-token"

static char dir[] = "/tmp/ds_sec_XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) && ds_test_make_certs(dir) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) ? -1 : 0;
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

/* ---- handlers: what the caller looked like to each */

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static int runs; /* handler invocations */
static char seen_identity[256], seen_peer[256], seen_host[256];

static void record_caller(void)
{
    const ds_rpc_caller *c = ds_rpc_current_caller();
    pthread_mutex_lock(&seen_mu);
    runs++;
    snprintf(seen_identity, sizeof seen_identity, "%s", c ? c->identity : "(no caller)");
    snprintf(seen_peer, sizeof seen_peer, "%s", c ? c->peer : "(no caller)");
    snprintf(seen_host, sizeof seen_host, "%s", c ? c->host : "(no caller)");
    pthread_mutex_unlock(&seen_mu);
}

static int handler_runs(void)
{
    pthread_mutex_lock(&seen_mu);
    int n = runs;
    pthread_mutex_unlock(&seen_mu);
    return n;
}

static int who(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud, (void)req, (void)len;
    record_caller();
    return ds_buf_append(resp, "ok", 2, err) ? DS_RPC_INTERNAL : DS_RPC_OK;
}

static int watch(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *s, ds_error *err)
{
    (void)ud, (void)req, (void)len;
    record_caller();
    const ds_rpc_caller *c = ds_rpc_current_caller();
    const char *id = c ? c->identity : "(no caller)";
    if (ds_rpc_stream_push(s, id, strlen(id), 5, err))
        ds_rpc_stream_close(s, DS_RPC_INTERNAL, err->msg);
    else
        ds_rpc_stream_close(s, DS_RPC_OK, NULL);
    return DS_RPC_OK;
}

static int refuse(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *s, ds_error *err)
{
    (void)ud, (void)req, (void)len, (void)s;
    record_caller();
    ds_errorf(err, "another session holds this stream");
    return DS_RPC_ALREADY_EXISTS;
}

static ds_rpc_server *start_server(const ds_rpc_security *sec)
{
    ds_error err = {{0}};
    ds_rpc_server *srv = ds_rpc_server_new("127.0.0.1:0", 0, sec, &err);
    if (!srv)
        fail_msg("%s", err.msg);
    assert_int_equal(ds_rpc_server_add_unary(srv, DS_RPC_WORKER_CLOCK, ds_rpc_clock_handler, NULL,
                                             &err), 0);
    assert_int_equal(ds_rpc_server_add_unary(srv, WHO, who, NULL, &err), 0);
    assert_int_equal(ds_rpc_server_add_stream(srv, WATCH, watch, NULL, 0, &err), 0);
    assert_int_equal(ds_rpc_server_add_stream(srv, REFUSE, refuse, NULL, 0, &err), 0);
    assert_int_equal(ds_rpc_server_start(srv, 2, &err), 0);
    return srv;
}

static ds_rpc_channel *dial(const ds_rpc_server *srv, const ds_rpc_security *sec)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", ds_rpc_server_port(srv));
    ds_error err = {{0}};
    ds_rpc_channel *ch = ds_rpc_channel_new("w0", target, 0, sec, &err);
    assert_non_null(ch);
    return ch;
}

/* ---- expectations */

/* Clock answers, Who runs and sees `identity`, Watch opens, sees it too and
 * ends cleanly; nothing of the handler's caller leaks out of it. */
static void expect_accepted(const ds_rpc_server *srv, const ds_rpc_security *client,
                            const char *identity)
{
    ds_rpc_channel *ch = dial(srv, client);
    ds_error err = {{0}};
    if (ds_rpc_wait_ready(ch, 30, &err) || ds_rpc_call_ping(ch, DS_RPC_WORKER_CLOCK, 10, &err))
        fail_msg("ping as %s: %s", identity, err.msg);
    ds_buf resp = {0};
    int code = -1, before = handler_runs();
    if (ds_rpc_call_unary(ch, WHO, "?", 1, 10, &resp, &code, &err))
        fail_msg("Who as %s: %s", identity, err.msg);
    assert_int_equal(handler_runs(), before + 1);
    pthread_mutex_lock(&seen_mu);
    assert_string_equal(seen_identity, identity);
    assert_memory_equal(seen_peer, "ipv4:127.0.0.1:", 15);
    assert_string_equal(seen_host, "ipv4:127.0.0.1");
    pthread_mutex_unlock(&seen_mu);
    assert_null(ds_rpc_current_caller()); /* only on a handler's thread, while it runs */

    ds_rpc_reader *r = ds_rpc_reader_open(ch, WATCH, "", 0, &code, &err);
    if (!r)
        fail_msg("Watch as %s: %s", identity, err.msg);
    assert_int_equal(code, DS_RPC_OK);
    assert_int_equal(ds_rpc_reader_next(r, &resp, 10, &code, &err), 1);
    assert_int_equal(resp.len, strlen(identity));
    assert_memory_equal(resp.data, identity, resp.len);
    assert_int_equal(ds_rpc_reader_next(r, &resp, 10, &code, &err), 0);
    ds_rpc_reader_free(r);

    /* A stream its handler refuses: no reader, the handler's status. */
    code = DS_RPC_OK;
    assert_null(ds_rpc_reader_open(ch, REFUSE, "", 0, &code, &err));
    assert_int_equal(code, DS_RPC_ALREADY_EXISTS);
    if (!strstr(err.msg, "Refuse: ALREADY_EXISTS: another session holds this stream"))
        fail_msg("%s", err.msg);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* A unary call and a stream as `client` both fail with code, err containing
 * `why`, and no handler runs.  A connection attempt has only 0.1 s at first
 * (rpc.c's backoff), which a loaded machine (sanitizers) may miss: then the
 * call fails UNAVAILABLE for that reason, and the next attempts get longer,
 * so this tries a few times before judging the reason. */
static void expect_refused(const ds_rpc_server *srv, const ds_rpc_security *client, int want,
                           const char *why)
{
    ds_rpc_channel *ch = dial(srv, client);
    ds_error err = {{0}};
    ds_buf resp = {0};
    int code = -1, before = handler_runs();
    for (int i = 0; i < 40; i++) {
        assert_int_equal(ds_rpc_call_unary(ch, WHO, "?", 1, 10, &resp, &code, &err), -1);
        if (code == want && strstr(err.msg, why))
            break;
        sleep_s(0.05);
    }
    if (code != want || !strstr(err.msg, why))
        fail_msg("expected %s (%s), got %s: %s", ds_rpc_code_name(want), why,
                 ds_rpc_code_name(code), err.msg);
    for (int i = 0; i < 40; i++) {
        code = -1;
        assert_null(ds_rpc_reader_open(ch, WATCH, "", 0, &code, &err));
        if (code == want && strstr(err.msg, why))
            break;
        sleep_s(0.05);
    }
    if (code != want || !strstr(err.msg, why))
        fail_msg("stream: expected %s (%s), got %s: %s", ds_rpc_code_name(want), why,
                 ds_rpc_code_name(code), err.msg);
    assert_int_equal(handler_runs(), before);
    ds_buf_free(&resp);
    ds_rpc_channel_free(ch);
}

/* ---- tests */

static void test_security_new_errors(void **state)
{
    (void)state;
    ds_error err = {{0}};
    char ca[256], cert[256], key[256], bad[256];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/w0.pem", dir);
    snprintf(key, sizeof key, "%s/w0.key", dir);
    snprintf(bad, sizeof bad, "%s/not-pem.txt", dir);
    const char *what = "config.yml:9:6: tls (w0)";

    ds_rpc_security_opts o = {"/nonexistent/ca.pem", NULL, NULL, NULL, what};
    assert_null(ds_rpc_security_new(&o, &err));
    if (!strstr(err.msg, "config.yml:9:6: tls (w0): tls.ca: ") ||
        !strstr(err.msg, "/nonexistent/ca.pem"))
        fail_msg("%s", err.msg);
    o = (ds_rpc_security_opts){ca, cert, "/nonexistent/w0.key", NULL, what};
    assert_null(ds_rpc_security_new(&o, &err));
    if (!strstr(err.msg, "tls (w0): tls.key: ") || !strstr(err.msg, "/nonexistent/w0.key"))
        fail_msg("%s", err.msg);

    o = (ds_rpc_security_opts){ca, bad, key, NULL, what};
    assert_null(ds_rpc_security_new(&o, &err));
    char want[512];
    snprintf(want, sizeof want, "%s: tls.cert: %s is not a PEM file (no -----BEGIN line)", what,
             bad);
    assert_string_equal(err.msg, want);

    o = (ds_rpc_security_opts){ca, cert, NULL, NULL, what};
    assert_null(ds_rpc_security_new(&o, &err));
    assert_string_equal(err.msg,
                        "config.yml:9:6: tls (w0): tls.cert and tls.key go together (got only cert)");
    o = (ds_rpc_security_opts){ca, NULL, key, NULL, what};
    assert_null(ds_rpc_security_new(&o, &err));
    assert_non_null(strstr(err.msg, "go together (got only key)"));
    o = (ds_rpc_security_opts){NULL, cert, key, NULL, what};
    assert_null(ds_rpc_security_new(&o, &err));
    assert_non_null(strstr(err.msg, "tls (w0): tls.ca is missing"));

    /* The modes, as roles log them. */
    assert_string_equal(ds_rpc_security_mode(NULL), "plaintext");
    struct {
        ds_rpc_security_opts o;
        const char *mode;
    } modes[] = {
        {{NULL, NULL, NULL, NULL, what}, "plaintext"},
        {{NULL, NULL, NULL, "", what}, "plaintext"}, /* an empty token is none */
        {{NULL, NULL, NULL, TOKEN, what}, "plaintext + token"},
        {{ca, cert, key, NULL, what}, "mutual TLS"},
        {{ca, cert, key, TOKEN, what}, "TLS + token"},
        {{ca, NULL, NULL, TOKEN, what}, "TLS + token"},
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        ds_rpc_security *s = ds_rpc_security_new(&modes[i].o, &err);
        assert_non_null(s);
        assert_string_equal(ds_rpc_security_mode(s), modes[i].mode);
        ds_rpc_security_free(s);
    }
}

static void test_mutual_tls(void **state)
{
    (void)state;
    ds_rpc_security *server = sec_new("ca.pem", "w0.pem", "w0.key", NULL);
    ds_rpc_security *master = sec_new("ca.pem", "master.pem", "master.key", NULL);
    ds_rpc_security *no_cert = sec_new("ca.pem", NULL, NULL, NULL);
    ds_rpc_security *stranger = sec_new("ca.pem", "stranger.pem", "stranger.key", NULL);
    ds_rpc_security *distrust = sec_new("other-ca.pem", "master.pem", "master.key", NULL);
    ds_rpc_server *srv = start_server(server);

    expect_accepted(srv, master, "cn=master");
    /* Refused at the handshake: no certificate, one from another CA (with
     * our name in it), no TLS at all (the client sees the connection
     * closed); and a client that cannot verify the server's certificate
     * refuses it. */
    expect_refused(srv, no_cert, DS_RPC_UNAVAILABLE, "UNAVAILABLE");
    expect_refused(srv, stranger, DS_RPC_UNAVAILABLE, "UNAVAILABLE");
    expect_refused(srv, NULL, DS_RPC_UNAVAILABLE, "UNAVAILABLE");
    expect_refused(srv, distrust, DS_RPC_UNAVAILABLE, "certificate verify failed");
    /* The server still serves its own. */
    expect_accepted(srv, master, "cn=master");
    ds_rpc_server_free(srv);

    /* A server whose certificate does not name the host dialled. */
    ds_rpc_security *elsewhere = sec_new("ca.pem", "w1-elsewhere.pem", "w1-elsewhere.key", NULL);
    srv = start_server(elsewhere);
    expect_refused(srv, master, DS_RPC_UNAVAILABLE, "Peer name 127.0.0.1 is not in peer certificate");
    ds_rpc_server_free(srv);

    /* A TLS client of a plaintext server. */
    srv = start_server(NULL);
    expect_refused(srv, master, DS_RPC_UNAVAILABLE, "Ssl handshake failed");
    ds_rpc_server_free(srv);

    ds_rpc_security_free(elsewhere);
    ds_rpc_security_free(distrust);
    ds_rpc_security_free(stranger);
    ds_rpc_security_free(no_cert);
    ds_rpc_security_free(master);
    ds_rpc_security_free(server);
}

/* The token's checks, the same over TLS and in plaintext. */
static void expect_token_checks(const ds_rpc_server *srv, const char *ca)
{
    ds_rpc_security *right = sec_new(ca, NULL, NULL, TOKEN);
    ds_rpc_security *wrong = sec_new(ca, NULL, NULL, "s3cret-tokem");
    ds_rpc_security *prefix = sec_new(ca, NULL, NULL, "s3cret-toke");
    ds_rpc_security *longer = sec_new(ca, NULL, NULL, TOKEN "x");
    ds_rpc_security *none = ca ? sec_new(ca, NULL, NULL, NULL) : NULL;
    expect_accepted(srv, right, "token");
    expect_refused(srv, wrong, DS_RPC_UNAUTHENTICATED, "UNAUTHENTICATED: wrong auth token");
    expect_refused(srv, prefix, DS_RPC_UNAUTHENTICATED, "UNAUTHENTICATED: wrong auth token");
    expect_refused(srv, longer, DS_RPC_UNAUTHENTICATED, "UNAUTHENTICATED: wrong auth token");
    expect_refused(srv, none, DS_RPC_UNAUTHENTICATED, "UNAUTHENTICATED: no auth token (set auth.token or DELTASLICE_TOKEN)");
    /* Unknown methods are not told apart from known ones without the token. */
    ds_rpc_channel *ch = dial(srv, none);
    ds_error err = {{0}};
    ds_buf resp = {0};
    int code = -1;
    assert_int_equal(ds_rpc_wait_ready(ch, 30, &err), 0);
    assert_int_equal(ds_rpc_call_unary(ch, "/test.Sec/Nope", "", 0, 10, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_UNAUTHENTICATED);
    ds_rpc_channel_free(ch);
    ch = dial(srv, right);
    assert_int_equal(ds_rpc_wait_ready(ch, 30, &err), 0);
    assert_int_equal(ds_rpc_call_unary(ch, "/test.Sec/Nope", "", 0, 10, &resp, &code, &err), -1);
    assert_int_equal(code, DS_RPC_UNIMPLEMENTED);
    ds_rpc_channel_free(ch);
    ds_buf_free(&resp);
    ds_rpc_security_free(none);
    ds_rpc_security_free(longer);
    ds_rpc_security_free(prefix);
    ds_rpc_security_free(wrong);
    ds_rpc_security_free(right);
}

static void test_token_over_tls(void **state)
{
    (void)state;
    ds_rpc_security *server = sec_new("ca.pem", "w0.pem", "w0.key", TOKEN);
    assert_string_equal(ds_rpc_security_mode(server), "TLS + token");
    ds_rpc_server *srv = start_server(server);
    expect_token_checks(srv, "ca.pem");
    /* The right token without TLS does not get through the handshake. */
    ds_rpc_security *plain = sec_new(NULL, NULL, NULL, TOKEN);
    expect_refused(srv, plain, DS_RPC_UNAVAILABLE, "UNAVAILABLE");
    /* The server does not ask for a client certificate: one from a stranger's
     * CA changes nothing, the token decides. */
    ds_rpc_security *stranger = sec_new("ca.pem", "stranger.pem", "stranger.key", TOKEN);
    expect_accepted(srv, stranger, "token");
    ds_rpc_security_free(stranger);
    ds_rpc_security_free(plain);
    ds_rpc_server_free(srv);
    ds_rpc_security_free(server);
}

static void test_plaintext_token(void **state)
{
    (void)state;
    ds_rpc_security *server = sec_new(NULL, NULL, NULL, TOKEN);
    assert_string_equal(ds_rpc_security_mode(server), "plaintext + token");
    ds_rpc_server *srv = start_server(server);
    expect_token_checks(srv, NULL);
    ds_rpc_server_free(srv);
    ds_rpc_security_free(server);
}

/* A CA alone cannot serve TLS: such a server would answer anyone in
 * plaintext while its mode reads "mutual TLS". */
static void test_server_needs_certificate(void **state)
{
    (void)state;
    ds_rpc_security *ca_only = sec_new("ca.pem", NULL, NULL, NULL);
    ds_rpc_security *ca_token = sec_new("ca.pem", NULL, NULL, TOKEN);
    ds_error err = {{0}};
    assert_null(ds_rpc_server_new("127.0.0.1:0", 0, ca_only, &err));
    assert_string_equal(err.msg,
                        "rpc server on 127.0.0.1:0: TLS without a certificate (tls.cert, tls.key)");
    assert_null(ds_rpc_server_new("127.0.0.1:0", 0, ca_token, &err));
    assert_non_null(strstr(err.msg, "TLS without a certificate"));
    /* Channels are fine with the CA alone (token over TLS). */
    ds_rpc_channel *ch = ds_rpc_channel_new("w0", "127.0.0.1:1", 0, ca_token, &err);
    assert_non_null(ch);
    ds_rpc_channel_free(ch);
    ds_rpc_security_free(ca_token);
    ds_rpc_security_free(ca_only);
}

/* Plaintext without a token: anyone, identity "". */
static void test_plaintext(void **state)
{
    (void)state;
    ds_rpc_server *srv = start_server(NULL);
    expect_accepted(srv, NULL, "");
    /* A client's token is simply not asked for. */
    ds_rpc_security *token = sec_new(NULL, NULL, NULL, TOKEN);
    expect_accepted(srv, token, "");
    ds_rpc_security_free(token);
    ds_rpc_server_free(srv);
}

int main(void)
{
    ds_log_init("test", DS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_security_new_errors),
        cmocka_unit_test(test_mutual_tls),
        cmocka_unit_test(test_token_over_tls),
        cmocka_unit_test(test_plaintext_token),
        cmocka_unit_test(test_plaintext),
        cmocka_unit_test(test_server_needs_certificate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
