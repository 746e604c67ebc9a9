/* The configuration loader: the repository's config.yml, the embedded
 * default, and one test per class of error (each must name
 * file:line:column and the key, in one line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "common/config.h"

static const char base[] =
    "port: {master: 11110, trainer: 22220, worker: [33330, 33331]}\n"
    "net: {m->t: 'localhost:22220', m->w0: 'localhost:33330', m->w1: 'localhost:33331', w0->w1: 'localhost:33331'}\n"
    "dnn: zoo:alexnet\n"
    "video_path: data/sample.mp4\n";

static void test_repo_config(void **state)
{
    (void)state;
    ds_config cfg;
    ds_error err = {{0}};
    int rc = ds_config_load(DS_SOURCE_DIR "/config.yml", &cfg, &err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.n_workers, 2);
    assert_int_equal(cfg.port_worker[1], 33331);
    assert_string_equal(cfg.route_master_worker[0], "localhost:33330");
    assert_string_equal(cfg.route_worker[0][1], "localhost:33331");
    assert_string_equal(cfg.route_master_trainer, "localhost:22220");
    assert_string_equal(cfg.dnn, "zoo:alexnet");
    assert_string_equal(cfg.video_path, DS_SOURCE_DIR "/data/sample.mp4");
    assert_int_equal(cfg.frame_rows, 480);
    assert_int_equal(cfg.frame_cols, 720);
    assert_int_equal(cfg.mode, DS_MODE_DIF);
    assert_int_equal(cfg.check, 0);
    assert_int_equal(cfg.master.ifr_num, 50);
    assert_int_equal(cfg.master.pd_num, 2);
    assert_int_equal(cfg.master.scheduler, DS_SCHED_LBC);
    /* Loopback links: none claimed, the master measures them (and the codec
     * takes them as fast). */
    assert_int_equal(cfg.master.bandwidth_given, 0);
    assert_true(cfg.master.bandwidth[0] == 1e6 && cfg.master.bandwidth[1] == 1e6);
    assert_int_equal(cfg.worker.prof_niter, 5);
    assert_int_equal(cfg.trainer.frame_num, 400);
    assert_int_equal(cfg.codec.compress, DS_COMPRESS_AUTO);
    assert_true(cfg.max_message_bytes == (size_t)1024 << 20);
    ds_config_free(&cfg);
}

static void test_embedded_default_matches_repo(void **state)
{
    (void)state;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir("/"), 0); /* no config.yml here */
    ds_config a, b;
    ds_error err = {{0}};
    assert_int_equal(ds_config_load(NULL, &a, &err), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_string_equal(a.path, "<embedded config.yml>");
    assert_int_equal(ds_config_load(DS_SOURCE_DIR "/config.yml", &b, &err), 0);
    assert_string_equal(a.video_path, b.video_path);
    assert_string_equal(a.dnn, b.dnn);
    assert_int_equal(a.n_workers, b.n_workers);
    assert_int_equal(a.master.ifr_num, b.master.ifr_num);
    ds_config_free(&a);
    ds_config_free(&b);
}

static void test_defaults_and_extras(void **state)
{
    (void)state;
    const char text[] =
        "port: {worker: [1000]}\n"
        "net: {m->w0: 'pi.local:1000'}\n"
        "insecure: true\n"
        "video_path: /v.mp4\n"
        "frame_size: null\n"
        "mode: itg\n"
        "check: yes\n"
        "worker: {threads: 2}\n"
        "log_level: debug\n"
        "trace_dir: ''\n"
        "codec: {compress: zstd, zstd_level: 3}\n"
        "max_message_mb: 64\n";
    ds_config cfg;
    ds_error err = {{0}};
    assert_int_equal(ds_config_parse(text, strlen(text), "t.yml", "/etc", &cfg, &err), 0);
    assert_int_equal(cfg.n_workers, 1);
    assert_null(cfg.route_master_trainer);
    assert_int_equal(ds_config_needs_trainer(&cfg), 0);
    assert_string_equal(cfg.video_path, "/v.mp4");
    assert_int_equal(cfg.frame_rows, 0);
    assert_int_equal(cfg.mode, DS_MODE_ITG);
    assert_int_equal(cfg.check, 1);
    assert_int_equal(cfg.worker.threads, 2);
    assert_int_equal(cfg.log_level, DS_LOG_DEBUG);
    assert_string_equal(cfg.trace_dir, "");
    assert_string_equal(cfg.cache_dir, "/etc/.cache");
    assert_int_equal(cfg.codec.compress, DS_COMPRESS_CHOICE_ZSTD);
    assert_int_equal(cfg.codec.zstd_level, 3);
    assert_true(cfg.max_message_bytes == (size_t)64 << 20);
    assert_int_equal(cfg.master.pd_num, 2);
    ds_config_free(&cfg);
}

/* Parses base + extra (or just text when replace) and checks the message. */
static void expect_error(const char *text, const char *expected)
{
    ds_config cfg;
    ds_error err = {{0}};
    int rc = ds_config_parse(text, strlen(text), "config.yml", ".", &cfg, &err);
    if (rc == 0)
        fail_msg("accepted a bad configuration; expected: %s", expected);
    if (strcmp(err.msg, expected) != 0)
        fail_msg("message\n  got:      %s\n  expected: %s", err.msg, expected);
    assert_null(strchr(err.msg, '\n'));
}

static void expect_error_after_base(const char *extra, const char *expected)
{
    char text[2048];
    snprintf(text, sizeof text, "%s%s", base, extra);
    expect_error(text, expected);
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_error_after_base("master: {pd_num: two}\n",
                            "config.yml:5:18: master.pd_num: expected an integer >= 0, got \"two\"");
    expect_error_after_base("check: maybe\n", "config.yml:5:8: check: expected true or false, got \"maybe\"");
    expect_error_after_base("mode: fast\n", "config.yml:5:7: mode: expected itg or dif, got \"fast\"");
    expect_error_after_base("frame_size: 480\n", "config.yml:5:13: frame_size: expected a list, got \"480\"");
    expect_error_after_base("master: [1]\n", "config.yml:5:9: master: expected a mapping, got a list");
    expect_error_after_base("master: {itv_time: soon}\n",
                            "config.yml:5:20: master.itv_time: expected a number >= 0, got \"soon\"");
    expect_error_after_base("master: {ifr_num: '50'}\n",
                            "config.yml:5:19: master.ifr_num: expected an integer in 0..100000000, got \"50\"");
    expect_error_after_base("master: {scheduler: best}\n",
                            "config.yml:5:21: master.scheduler: expected lbc, nsc or opt, got \"best\"");
    expect_error_after_base("trace_dir: [a]\n", "config.yml:5:12: trace_dir: expected a string, got a list");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error_after_base("master: {pd_num: -1}\n",
                            "config.yml:5:18: master.pd_num: expected an integer >= 0, got \"-1\"");
    expect_error_after_base("worker: {threads: 0}\n",
                            "config.yml:5:19: worker.threads: expected an integer in 1..256, got \"0\"");
    expect_error_after_base("frame_size: [480, 7]\n",
                            "config.yml:5:19: frame_size[1]: expected an integer in 16..16384, got \"7\"");
    expect_error_after_base("frame_size: [480]\n",
                            "config.yml:5:13: frame_size: expected a list of 2..2 items, got 1");
    expect_error_after_base("codec: {zstd_level: 30}\n",
                            "config.yml:5:21: codec.zstd_level: expected an integer in 1..19, got \"30\"");
    expect_error_after_base("master: {bandwidth: [4, 0]}\n",
                            "config.yml:5:25: master.bandwidth[1]: expected a number > 0, got \"0\"");
    expect_error("port: {worker: [70000]}\n",
                 "config.yml:1:17: port.worker[0]: expected an integer in 1..65535, got \"70000\"");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_error_after_base("colour: red\n",
                            "config.yml:5:1: colour: unknown key (expected one of: port, net, dnn, "
                            "video_path, video, frame_size, mode, check, master, worker, trainer, output, "
                            "status_interval, log_level, trace_dir, cache_dir, codec, max_message_mb, "
                            "tls, auth, insecure)");
    expect_error_after_base("worker: {prof_iter: 5}\n",
                            "config.yml:5:10: worker.prof_iter: unknown key (expected one of: prof_niter, threads, listen, tls)");
    expect_error_after_base("master: {ifr_num: 5, ifr_num: 6}\n", "config.yml:5:22: master.ifr_num: duplicate key");
}

static void test_routes(void **state)
{
    (void)state;
    expect_error("port: {worker: [1, 2]}\nnet: {m->w0: 'a:1', w0->w1: 'b:2'}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:2:6: net: missing route m->w1 for worker 1");
    expect_error("port: {worker: [1, 2]}\nnet: {m->w0: 'a:1', m->w1: 'b:2'}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:2:6: net: missing route w0->w1");
    expect_error("port: {worker: [1]}\nnet: {m->w0: 'a:1'}\nvideo_path: v\nmaster: {scheduler: nsc}\ninsecure: true\n",
                 "config.yml:2:6: net: missing route m->t (scheduler nsc needs the trainer)");
    expect_error("port: {worker: [1]}\nnet: {m->w0: 'a:1', m->w2: 'c:3'}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:2:21: net: worker w2 is not configured: worker ids are 0..0 (port.worker has 1 entries)");
    expect_error("port: {worker: [1, 2]}\nnet: {m->w0: 'a:1', m->w1: 'b:2', w1->w0: 'b:2'}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:2:35: net.w1->w0: a worker only reaches later workers (w1->w2, ...)");
    expect_error("port: {worker: [1, 2]}\nnet: {m->w0: 'a:1', m->w1: 'b:2', w0->w1: 'b:2', w0->w2: 'c:3'}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:2:50: net: worker w2 is not configured: worker ids are 0..1 (port.worker has 2 entries)");
    expect_error("port: {worker: [1]}\nnet: {m->w0: 'nowhere'}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:2:14: net.m->w0: expected \"host:port\", got \"nowhere\"");
    expect_error("port: {worker: [1]}\nnet: {m->x: 'a:1'}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:2:7: net.m->x: expected a route like m->t, m->w0 or w0->w1");
    expect_error("port: {worker: [1]}\nvideo_path: v\ninsecure: true\n",
                 "config.yml:1:1: net: missing (expected routes m->w0, ..., w0->w1, ...)");

    /* An extra route past a worker (the master may route around it). */
    static const char extra[] =
        "port: {worker: [1, 2, 3]}\n"
        "net: {m->w0: 'a:1', m->w1: 'b:2', m->w2: 'c:3', w0->w1: 'b:2', w1->w2: 'c:3', w0->w2: 'c:4'}\n"
        "video_path: v\ninsecure: true\n";
    ds_config cfg;
    ds_error err;
    assert_int_equal(ds_config_parse(extra, strlen(extra), "config.yml", ".", &cfg, &err), 0);
    assert_string_equal(cfg.route_worker[0][2], "c:4");
    assert_string_equal(cfg.route_worker[1][2], "c:3");
    assert_null(cfg.route_worker[0][0]);
    ds_config_free(&cfg);
}

static void test_bandwidth_count(void **state)
{
    (void)state;
    expect_error_after_base("master: {bandwidth: [4]}\n",
                            "config.yml:5:21: master.bandwidth: expected 2 entries (one per link m->w0, w0->w1, ...), got 1");
    /* Given: the planner prices with it (absent: it measures the links). */
    char text[2048];
    snprintf(text, sizeof text, "%smaster: {bandwidth: [4, 0.5]}\n", base);
    ds_config cfg;
    ds_error err = {{0}};
    assert_int_equal(ds_config_parse(text, strlen(text), "config.yml", ".", &cfg, &err), 0);
    assert_int_equal(cfg.master.bandwidth_given, 1);
    assert_true(cfg.master.bandwidth[0] == 4.0 && cfg.master.bandwidth[1] == 0.5);
    ds_config_free(&cfg);
}

static void test_syntax_and_files(void **state)
{
    (void)state;
    expect_error("port: {worker: [1]\n", "config.yml:2:1: YAML syntax error: did not find expected ',' or '}' while parsing a flow mapping");
    expect_error("", "config.yml:1:1: the configuration is empty");
    expect_error("- a\n- b\n", "config.yml:1:1: (top level): expected a mapping of keys, got a list");
    ds_config cfg;
    ds_error err = {{0}};
    assert_int_equal(ds_config_load("/nonexistent/x.yml", &cfg, &err), -1);
    assert_string_equal(err.msg, "/nonexistent/x.yml: cannot open: No such file or directory");
}

/* Parses text (base_dir /etc/ds) into cfg; fails the test on an error. */
static void parse_ok(const char *text, ds_config *cfg)
{
    ds_error err = {{0}};
    if (ds_config_parse(text, strlen(text), "config.yml", "/etc/ds", cfg, &err))
        fail_msg("rejected: %s", err.msg);
}

static void parse_ok_after_base(const char *extra, ds_config *cfg)
{
    char text[2048];
    snprintf(text, sizeof text, "%s%s", base, extra);
    parse_ok(text, cfg);
}

#define NO_TLS "is not a loopback address and %s has no TLS: set tls: {ca, cert, key} " \
               "(scripts/make-certs.sh writes them) or insecure: true"

static void test_tls_blocks(void **state)
{
    (void)state;
    static const char missing_ca[] = "missing ca (the CA certificate that signed every role's; "
                                     "scripts/make-certs.sh makes one)";
    char want[512];
    snprintf(want, sizeof want, "config.yml:5:6: tls: %s", missing_ca);
    expect_error_after_base("tls: {cert: c.pem, key: k.pem}\n", want);
    snprintf(want, sizeof want, "config.yml:5:15: master.tls: %s", missing_ca);
    expect_error_after_base("master: {tls: {cert: c.pem, key: k.pem}}\n", want);
    expect_error_after_base("tls: {ca: a.pem, cert: c.pem}\n",
                            "config.yml:5:6: tls: cert and key go together (got only cert)");
    expect_error_after_base("worker: {tls: {ca: a.pem, key: k.pem}}\n",
                            "config.yml:5:15: worker.tls: cert and key go together (got only key)");
    expect_error_after_base("tls: {ca: a.pem, pass: x}\n",
                            "config.yml:5:18: tls.pass: unknown key (expected one of: ca, cert, key)");
    expect_error_after_base("trainer: {tls: {ca: a.pem, crt: x}}\n",
                            "config.yml:5:28: trainer.tls.crt: unknown key (expected one of: ca, cert, key)");
    expect_error_after_base("tls: {ca: ''}\n",
                            "config.yml:5:11: tls.ca: expected a non-empty string, got an empty value");
    expect_error_after_base("tls: a.pem\n", "config.yml:5:6: tls: expected a mapping, got \"a.pem\"");
    expect_error_after_base("worker: {tls: [a]}\n",
                            "config.yml:5:15: worker.tls: expected a mapping, got a list");
    expect_error_after_base("tls: {ca: a.pem, ca: b.pem}\n", "config.yml:5:18: tls.ca: duplicate key");

    /* Paths are relative to the config file's folder; a CA alone is a block
     * (the master of a token over TLS needs no certificate). */
    ds_config cfg;
    parse_ok_after_base("tls: {ca: a.pem, cert: /abs/c.pem, key: k/k.pem}\n"
                        "master: {tls: {ca: m.pem}}\nauth: {token: t}\n",
                        &cfg);
    assert_string_equal(cfg.tls.ca, "/etc/ds/a.pem");
    assert_string_equal(cfg.tls.cert, "/abs/c.pem");
    assert_string_equal(cfg.tls.key, "/etc/ds/k/k.pem");
    assert_string_equal(cfg.master.tls.ca, "/etc/ds/m.pem");
    assert_null(cfg.master.tls.cert);
    assert_null(cfg.trainer.tls.ca);
    ds_config_free(&cfg);

    /* Who needs a certificate: servers always, the master unless a token
     * authenticates it. */
    expect_error_after_base("tls: {ca: a.pem}\n",
                            "config.yml:5:6: tls: master has no cert and key: mutual TLS needs the "
                            "master's certificate too (or set auth.token for token mode, where the "
                            "master needs only ca)");
    expect_error_after_base("tls: {ca: a.pem}\nauth: {token: t}\n",
                            "config.yml:5:6: tls: trainer has no cert and key: a server presents "
                            "its certificate in every TLS mode");
    expect_error("port: {worker: [1]}\nnet: {m->w0: 'localhost:1'}\nvideo_path: v\n"
                 "tls: {ca: a.pem, cert: c, key: k}\nworker: {tls: {ca: a.pem}}\n",
                 "config.yml:5:15: tls: w0 has no cert and key: a server presents its "
                 "certificate in every TLS mode");
}

/* {role} and a role's own block replacing the shared one (never mixing
 * with it). */
static void test_role_tls(void **state)
{
    (void)state;
    ds_config cfg;
    ds_role_tls t;
    ds_error err = {{0}};
    parse_ok_after_base("tls: {ca: ca.pem, cert: 'certs/{role}.pem', key: 'certs/{role}.key'}\n"
                        "master: {tls: {ca: '/m/ca.pem', cert: m.pem, key: m.key}}\n"
                        "trainer: {tls: {ca: 't-{role}.pem', cert: t.pem, key: t.key}}\n",
                        &cfg);
    assert_int_equal(ds_config_role_tls(&cfg, "w1", &t, &err), 0);
    assert_string_equal(t.ca, "/etc/ds/ca.pem");
    assert_string_equal(t.cert, "/etc/ds/certs/w1.pem");
    assert_string_equal(t.key, "/etc/ds/certs/w1.key");
    assert_string_equal(t.what, "config.yml:5:6: tls (w1)");
    assert_int_equal(ds_config_role_tls(&cfg, "master", &t, &err), 0);
    assert_string_equal(t.ca, "/m/ca.pem");
    assert_string_equal(t.cert, "/etc/ds/m.pem");
    assert_string_equal(t.key, "/etc/ds/m.key");
    assert_string_equal(t.what, "config.yml:6:15: master.tls (master)");
    assert_int_equal(ds_config_role_tls(&cfg, "trainer", &t, &err), 0);
    assert_string_equal(t.ca, "/etc/ds/t-trainer.pem");
    assert_string_equal(t.cert, "/etc/ds/t.pem"); /* not the shared block's */
    assert_string_equal(t.key, "/etc/ds/t.key");
    assert_string_equal(t.what, "config.yml:7:16: trainer.tls (trainer)");
    ds_config_free(&cfg);

    parse_ok_after_base("tls: {ca: ca.pem, cert: c.pem, key: c.key}\n"
                        "worker: {tls: {ca: w.pem, cert: '{role}.pem', key: '{role}.key'}}\n",
                        &cfg);
    assert_int_equal(ds_config_role_tls(&cfg, "w0", &t, &err), 0);
    assert_string_equal(t.ca, "/etc/ds/w.pem");
    assert_string_equal(t.cert, "/etc/ds/w0.pem");
    assert_string_equal(t.what, "config.yml:6:15: worker.tls (w0)");
    assert_int_equal(ds_config_role_tls(&cfg, "master", &t, &err), 0);
    assert_string_equal(t.ca, "/etc/ds/ca.pem");
    assert_string_equal(t.cert, "/etc/ds/c.pem");
    ds_config_free(&cfg);

    /* No TLS at all: nothing, and errors still name the file. */
    parse_ok(base, &cfg);
    assert_int_equal(ds_config_role_tls(&cfg, "w0", &t, &err), 0);
    assert_string_equal(t.ca, "");
    assert_string_equal(t.cert, "");
    assert_string_equal(t.what, "config.yml: tls (w0)");
    ds_config_free(&cfg);
}

static void test_auth_token(void **state)
{
    (void)state;
    ds_config cfg;
    parse_ok(base, &cfg);
    assert_null(cfg.auth_token);
    ds_config_free(&cfg);
    parse_ok_after_base("auth: {token: 'from file'}\n", &cfg);
    assert_string_equal(cfg.auth_token, "from file");
    ds_config_free(&cfg);
    expect_error_after_base("auth: {token: ''}\n",
                            "config.yml:5:15: auth.token: expected a non-empty string, got an empty value");
    expect_error_after_base("auth: {secret: x}\n",
                            "config.yml:5:8: auth.secret: unknown key (expected one of: token)");
    expect_error_after_base("auth: x\n", "config.yml:5:7: auth: expected a mapping, got \"x\"");

    /* The environment wins over the file; an empty variable is none. */
    assert_int_equal(setenv("DELTASLICE_TOKEN", "from env", 1), 0);
    parse_ok_after_base("auth: {token: 'from file'}\n", &cfg);
    assert_string_equal(cfg.auth_token, "from env");
    ds_config_free(&cfg);
    parse_ok(base, &cfg);
    assert_string_equal(cfg.auth_token, "from env");
    ds_config_free(&cfg);
    assert_int_equal(setenv("DELTASLICE_TOKEN", "", 1), 0);
    parse_ok_after_base("auth: {token: 'from file'}\n", &cfg);
    assert_string_equal(cfg.auth_token, "from file");
    ds_config_free(&cfg);
    assert_int_equal(unsetenv("DELTASLICE_TOKEN"), 0);
}

static void test_takeover_key(void **state)
{
    (void)state;
    ds_config cfg;
    parse_ok(base, &cfg);
    assert_int_equal(cfg.master.takeover, 0);
    assert_int_equal(cfg.insecure, 0);
    ds_config_free(&cfg);
    parse_ok_after_base("master: {takeover: true}\ninsecure: yes\n", &cfg);
    assert_int_equal(cfg.master.takeover, 1);
    assert_int_equal(cfg.insecure, 1);
    ds_config_free(&cfg);
    expect_error_after_base("master: {takeover: perhaps}\n",
                            "config.yml:5:20: master.takeover: expected true or false, got \"perhaps\"");
    expect_error_after_base("insecure: 1\n", "config.yml:5:11: insecure: expected true or false, got \"1\"");
    expect_error_after_base("master: {take_over: true}\n",
                            "config.yml:5:10: master.take_over: unknown key (expected one of: ifr_num, "
                            "pd_num, itv_time, scheduler, bandwidth, threads, connect_timeout, "
                            "no_workers, takeover, drop, listen, tls)");
    expect_error_after_base("trainer: {port: 1}\n",
                            "config.yml:5:11: trainer.port: unknown key (expected one of: frame_num, "
                            "threads, video_path, listen, tls)");
}

/* Without TLS, what a role dials must be loopback, unless insecure: true. */
static void test_loopback_routes(void **state)
{
    (void)state;
    char want[512];
    snprintf(want, sizeof want, "config.yml:2:14: net.m->w0: 'a:1' " NO_TLS, "master");
    expect_error("port: {worker: [1]}\nnet: {m->w0: 'a:1'}\nvideo_path: v\n", want);
    /* The master's TLS covers its own routes, not a worker's. */
    snprintf(want, sizeof want, "config.yml:3:59: net.w0->w1: 'pi2.lan:2' " NO_TLS, "w0");
    expect_error("port: {worker: [1, 2]}\nmaster: {tls: {ca: ca.pem}}\n"
                 "net: {m->w0: 'localhost:1', m->w1: 'localhost:2', w0->w1: 'pi2.lan:2'}\nvideo_path: v\n"
                 "auth: {token: t}\n",
                 want);
    snprintf(want, sizeof want, "config.yml:2:13: net.m->t: '10.0.0.9:22220' " NO_TLS, "master");
    expect_error("port: {worker: [1]}\nnet: {m->t: '10.0.0.9:22220', m->w0: 'localhost:1'}\nvideo_path: v\n",
                 want);

    /* Loopback in its spellings needs nothing. */
    ds_config cfg;
    parse_ok("port: {worker: [1, 2, 3, 4]}\n"
             "net: {m->w0: '127.0.0.1:1', m->w1: '[::1]:2', m->w2: 'ip6-localhost:3', "
             "m->w3: '127.1.2.3:4', w0->w1: 'localhost:2', w1->w2: '127.0.0.1:3', "
             "w2->w3: '127.1.2.3:4'}\nvideo_path: v\n",
             &cfg);
    ds_config_free(&cfg);
    /* Names that merely start like loopback are not. */
    snprintf(want, sizeof want, "config.yml:2:14: net.m->w0: 'localhost.example.com:1' " NO_TLS,
             "master");
    expect_error("port: {worker: [1]}\nnet: {m->w0: 'localhost.example.com:1'}\nvideo_path: v\n", want);
    snprintf(want, sizeof want, "config.yml:2:14: net.m->w0: '127.example.com:1' " NO_TLS, "master");
    expect_error("port: {worker: [1]}\nnet: {m->w0: '127.example.com:1'}\nvideo_path: v\n", want);

    /* insecure, or TLS for every role concerned, allows any host. */
    parse_ok("port: {worker: [1]}\nnet: {m->w0: 'a:1'}\nvideo_path: v\ninsecure: true\n", &cfg);
    ds_config_free(&cfg);
    parse_ok("port: {worker: [1]}\nnet: {m->w0: 'a:1'}\nvideo_path: v\ntls: {ca: c, cert: c, key: k}\n",
             &cfg);
    ds_config_free(&cfg);
    parse_ok("port: {worker: [1]}\nnet: {m->w0: 'a:1'}\nvideo_path: v\nmaster: {tls: {ca: c}}\n"
             "worker: {tls: {ca: c, cert: c, key: k}}\nauth: {token: t}\n",
             &cfg);
    ds_config_free(&cfg);
    /* The master may dial, but the worker would listen in plaintext on
     * every interface. */
    snprintf(want, sizeof want, "config.yml:2:7: net.m->w0: 'a:1' " NO_TLS, "w0");
    expect_error("port: {worker: [1]}\nnet: {m->w0: 'a:1'}\nvideo_path: v\nmaster: {tls: {ca: c}}\n"
                 "auth: {token: t}\n",
                 want);
    snprintf(want, sizeof want, "config.yml:2:6: net.m->t: 'gpu:9' " NO_TLS, "trainer");
    expect_error("port: {worker: [1]}\nnet: {m->t: 'gpu:9', m->w0: 'localhost:1'}\nvideo_path: v\n"
                 "master: {tls: {ca: c}}\nauth: {token: t}\n",
                 want);
}

/* worker.listen and trainer.listen: hosts to bind, loopback unless TLS or
 * insecure. */
static void test_listen(void **state)
{
    (void)state;
    char want[512];
    snprintf(want, sizeof want, "config.yml:5:18: worker.listen: '0.0.0.0' " NO_TLS, "w0");
    expect_error_after_base("worker: {listen: 0.0.0.0}\n", want);
    snprintf(want, sizeof want, "config.yml:5:30: worker.listen[1]: '10.0.0.5' " NO_TLS, "w1");
    expect_error_after_base("worker: {listen: [127.0.0.1, 10.0.0.5]}\n", want);
    expect_error_after_base("worker: {listen: [127.0.0.1]}\n",
                            "config.yml:5:18: worker.listen: expected a list of 2..2 items, got 1");
    expect_error_after_base("worker: {listen: [127.0.0.1, 127.0.0.1, 127.0.0.1]}\n",
                            "config.yml:5:18: worker.listen: expected a list of 2..2 items, got 3");
    expect_error_after_base("worker: {listen: ''}\n",
                            "config.yml:5:18: worker.listen: expected a non-empty string, got an empty value");
    expect_error_after_base("worker: {listen: [127.0.0.1, {a: b}]}\n",
                            "config.yml:5:30: worker.listen[1]: expected a non-empty string, got a mapping");
    snprintf(want, sizeof want, "config.yml:5:19: trainer.listen: '0.0.0.0' " NO_TLS, "trainer");
    expect_error_after_base("trainer: {listen: 0.0.0.0}\n", want);

    ds_config cfg;
    parse_ok_after_base("worker: {listen: [127.0.0.1, '::1']}\ntrainer: {listen: localhost}\n", &cfg);
    assert_string_equal(cfg.listen_worker[0], "127.0.0.1");
    assert_string_equal(cfg.listen_worker[1], "::1");
    assert_string_equal(cfg.listen_trainer, "localhost");
    ds_config_free(&cfg);
    parse_ok_after_base("worker: {listen: '[::1]'}\n", &cfg);
    assert_string_equal(cfg.listen_worker[0], "[::1]");
    assert_string_equal(cfg.listen_worker[1], "[::1]");
    ds_config_free(&cfg);
    parse_ok_after_base("worker: {listen: 0.0.0.0}\ntrainer: {listen: 10.1.1.1}\ninsecure: true\n", &cfg);
    assert_string_equal(cfg.listen_worker[0], "0.0.0.0");
    assert_string_equal(cfg.listen_worker[1], "0.0.0.0");
    assert_string_equal(cfg.listen_trainer, "10.1.1.1");
    ds_config_free(&cfg);
    parse_ok_after_base("worker: {listen: [0.0.0.0, localhost], tls: {ca: c, cert: c, key: k}}\n"
                        "trainer: {listen: '::', tls: {ca: c, cert: c, key: k}}\n",
                        &cfg);
    assert_string_equal(cfg.listen_worker[0], "0.0.0.0");
    assert_string_equal(cfg.listen_worker[1], "localhost");
    assert_string_equal(cfg.listen_trainer, "::");
    ds_config_free(&cfg);
}

/* Where servers bind when the file does not say: what the routes to them
 * imply. */
static void test_listen_defaults(void **state)
{
    (void)state;
    ds_config cfg;
    parse_ok(base, &cfg); /* every route names localhost */
    assert_string_equal(cfg.listen_worker[0], "localhost");
    assert_string_equal(cfg.listen_worker[1], "localhost");
    assert_string_equal(cfg.listen_trainer, "localhost");
    ds_config_free(&cfg);

    /* One loopback host: that one; mixed loopback names: localhost. */
    parse_ok("port: {worker: [1, 2]}\nnet: {m->t: '127.0.0.1:9', m->w0: '127.0.0.1:1', "
             "m->w1: '127.0.0.2:2', w0->w1: '127.0.0.2:2'}\nvideo_path: v\n",
             &cfg);
    assert_string_equal(cfg.listen_worker[0], "127.0.0.1");
    assert_string_equal(cfg.listen_worker[1], "127.0.0.2");
    assert_string_equal(cfg.listen_trainer, "127.0.0.1");
    ds_config_free(&cfg);
    parse_ok("port: {worker: [1, 2]}\nnet: {m->w0: '[::1]:1', m->w1: 'localhost:2', "
             "w0->w1: '127.0.0.1:2'}\nvideo_path: v\n",
             &cfg);
    assert_string_equal(cfg.listen_worker[0], "::1");
    assert_string_equal(cfg.listen_worker[1], "localhost");
    assert_string_equal(cfg.listen_trainer, "localhost"); /* no m->t */
    ds_config_free(&cfg);

    /* A route from elsewhere: every interface (with insecure or TLS). */
    parse_ok("port: {worker: [1, 2]}\nnet: {m->t: 'gpu:9', m->w0: 'localhost:1', "
             "m->w1: 'localhost:2', w0->w1: 'pi2.lan:2'}\nvideo_path: v\ninsecure: true\n",
             &cfg);
    assert_string_equal(cfg.listen_worker[0], "localhost");
    assert_string_equal(cfg.listen_worker[1], "0.0.0.0");
    assert_string_equal(cfg.listen_trainer, "0.0.0.0");
    ds_config_free(&cfg);
    parse_ok("port: {worker: [1]}\nnet: {m->w0: 'pi.lan:1'}\nvideo_path: v\n"
             "tls: {ca: c, cert: c, key: k}\n",
             &cfg);
    assert_string_equal(cfg.listen_worker[0], "0.0.0.0");
    ds_config_free(&cfg);

    char addr[64];
    ds_config_listen_addr("0.0.0.0", 33330, addr, sizeof addr);
    assert_string_equal(addr, "0.0.0.0:33330");
    ds_config_listen_addr("::1", 5, addr, sizeof addr);
    assert_string_equal(addr, "[::1]:5");
    ds_config_listen_addr("[::1]", 5, addr, sizeof addr);
    assert_string_equal(addr, "[::1]:5");
    ds_config_listen_addr("localhost", 5, addr, sizeof addr);
    assert_string_equal(addr, "localhost:5");
}

static void test_is_loopback(void **state)
{
    (void)state;
    const char *yes[] = {"localhost", "ip6-localhost", "127.0.0.1", "127.255.0.9", "::1", "[::1]",
                         "0:0:0:0:0:0:0:1"};
    const char *no[] = {"0.0.0.0", "::", "10.0.0.1", "localhost.example.com", "127.example.com",
                        "127.0.0.1.nip.io", "[::2]", "pi.local", "128.0.0.1", ""};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!ds_config_is_loopback(yes[i]))
            fail_msg("%s is loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (ds_config_is_loopback(no[i]))
            fail_msg("%s is not loopback", no[i]);
}

/* base with another video_path and extra keys, parsed into *cfg. */
static int parse_with_video(const char *video, const char *extra, ds_config *cfg, ds_error *err)
{
    char text[2048];
    snprintf(text, sizeof text,
             "port: {master: 11110, trainer: 22220, worker: [33330, 33331]}\n"
             "net: {m->t: 'localhost:22220', m->w0: 'localhost:33330', m->w1: 'localhost:33331', "
             "w0->w1: 'localhost:33331'}\n"
             "video_path: '%s'\n%s",
             video, extra);
    return ds_config_parse(text, strlen(text), "config.yml", "/etc/ds", cfg, err);
}

static void test_source_kinds(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        ds_source_kind kind;
    } cases[] = {
        {"clip.mp4", DS_SOURCE_FILE},        {"/srv/v.avi", DS_SOURCE_FILE},
        {"/dev/video0", DS_SOURCE_CAMERA},   {"lavfi:testsrc2=rate=30", DS_SOURCE_VIRTUAL},
        {"rtsp://cam/stream", DS_SOURCE_STREAM}, {"RTSP://cam/1", DS_SOURCE_STREAM},
        {"https://x/v.m3u8", DS_SOURCE_STREAM},  {"udp://0.0.0.0:5000", DS_SOURCE_STREAM},
        {"tcp://h:1", DS_SOURCE_STREAM},     {"srt://h:1", DS_SOURCE_STREAM},
        {"rtmp://h/live", DS_SOURCE_STREAM}, {"http:/not-a-url", DS_SOURCE_FILE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (ds_source_kind_of(cases[i].path) != cases[i].kind)
            fail_msg("%s: kind %d, expected %d", cases[i].path, ds_source_kind_of(cases[i].path),
                     cases[i].kind);
    assert_string_equal(ds_source_kind_name(DS_SOURCE_STREAM), "stream");
}

static void test_live_defaults(void **state)
{
    (void)state;
    ds_config cfg;
    ds_error err = {{0}};
    /* A file: 50 frames, looping, every frame; paths resolved. */
    assert_int_equal(parse_with_video("clip.mp4", "", &cfg, &err), 0);
    assert_int_equal(cfg.video.kind, DS_SOURCE_FILE);
    assert_string_equal(cfg.video_path, "/etc/ds/clip.mp4");
    assert_string_equal(cfg.trainer.video_path, "/etc/ds/clip.mp4");
    assert_int_equal(cfg.master.ifr_num, 50);
    assert_int_equal(cfg.master.drop, DS_DROP_NONE);
    assert_int_equal(cfg.video.loop, 1);
    assert_true(cfg.video.timeout == 10);
    assert_true(cfg.status_interval == 10);
    assert_int_equal(cfg.output.top_k, 5);
    assert_null(cfg.output.jsonl);
    assert_int_equal(ds_config_wants_outputs(&cfg), 0);
    assert_string_equal(cfg.master.listen, "localhost");
    ds_config_free(&cfg);
    /* A file read once: until its end. */
    assert_int_equal(parse_with_video("clip.mp4", "video: {loop: false}\n", &cfg, &err), 0);
    assert_int_equal(cfg.master.ifr_num, 0);
    ds_config_free(&cfg);
    /* Live: without end, newest frame first, URLs untouched. */
    assert_int_equal(parse_with_video("rtsp://cam.local/stream1", "", &cfg, &err), 0);
    assert_string_equal(cfg.video_path, "rtsp://cam.local/stream1");
    assert_int_equal(cfg.master.ifr_num, 0);
    assert_int_equal(cfg.master.drop, DS_DROP_LATEST);
    assert_int_equal(cfg.video.loop, 0);
    assert_null(cfg.trainer.video_path);
    ds_config_free(&cfg);
    /* ... unless told otherwise. */
    assert_int_equal(parse_with_video("/dev/video0",
                                      "master: {ifr_num: 100, drop: none}\n"
                                      "video: {format: mjpeg, fps: 15, input_size: [720, 1280], timeout: 2.5}\n"
                                      "trainer: {video_path: rec.mp4}\n"
                                      "output: {jsonl: '-', tensors: out, labels: l.txt, top_k: 3, subscribe: true}\n"
                                      "status_interval: 0\n",
                                      &cfg, &err),
                     0);
    assert_int_equal(cfg.video.kind, DS_SOURCE_CAMERA);
    assert_int_equal(cfg.master.ifr_num, 100);
    assert_int_equal(cfg.master.drop, DS_DROP_NONE);
    assert_string_equal(cfg.video.format, "mjpeg");
    assert_true(cfg.video.fps == 15);
    assert_int_equal(cfg.video.input_rows, 720);
    assert_int_equal(cfg.video.input_cols, 1280);
    assert_true(cfg.video.timeout == 2.5);
    assert_string_equal(cfg.trainer.video_path, "/etc/ds/rec.mp4");
    assert_string_equal(cfg.output.jsonl, "-");
    assert_string_equal(cfg.output.tensors, "/etc/ds/out");
    assert_string_equal(cfg.output.labels, "/etc/ds/l.txt");
    assert_int_equal(cfg.output.top_k, 3);
    assert_int_equal(cfg.output.subscribe, 1);
    assert_int_equal(ds_config_wants_outputs(&cfg), 1);
    assert_true(cfg.status_interval == 0);
    ds_config_free(&cfg);
}

static void test_live_errors(void **state)
{
    (void)state;
    ds_config cfg;
    ds_error err = {{0}};
    assert_int_equal(parse_with_video("lavfi:testsrc2", "video: {loop: true}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:15: video.loop: only a file can loop; "
                                 "lavfi:testsrc2 is a virtual device");
    assert_int_equal(parse_with_video("/dev/video0", "master: {scheduler: nsc}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:9: master.scheduler: nsc learns from a recorded clip, and "
                                 "/dev/video0 is a camera: set trainer.video_path to a file recorded from it");
    assert_int_equal(parse_with_video("clip.mp4", "master: {drop: oldest}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:16: master.drop: expected none or latest, got \"oldest\"");
    assert_int_equal(parse_with_video("clip.mp4", "master: {ifr_num: -1}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:19: master.ifr_num: expected an integer in 0..100000000, got \"-1\"");
    assert_int_equal(parse_with_video("clip.mp4", "video: {fps: 0}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:14: video.fps: expected a number > 0, got \"0\"");
    assert_int_equal(parse_with_video("clip.mp4", "video: {input_size: [720]}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:21: video.input_size: expected a list of 2..2 items, got 1");
    assert_int_equal(parse_with_video("clip.mp4", "video: {size: 1}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:9: video.size: unknown key (expected one of: loop, format, "
                                 "fps, input_size, timeout)");
    assert_int_equal(parse_with_video("clip.mp4", "output: {npy: d}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:10: output.npy: unknown key (expected one of: jsonl, tensors, "
                                 "labels, top_k, subscribe)");
    assert_int_equal(parse_with_video("clip.mp4", "output: {top_k: 0}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:17: output.top_k: expected an integer in 1..1000, got \"0\"");
    assert_int_equal(parse_with_video("clip.mp4", "status_interval: -1\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:18: status_interval: expected a number >= 0, got \"-1\"");
    /* The subscription server follows the listen rule of every server. */
    assert_int_equal(parse_with_video("clip.mp4", "master: {listen: 0.0.0.0}\n", &cfg, &err), -1);
    assert_string_equal(err.msg, "config.yml:4:18: master.listen: '0.0.0.0' is not a loopback address and "
                                 "master has no TLS: set tls: {ca, cert, key} (scripts/make-certs.sh writes "
                                 "them) or insecure: true");
    assert_int_equal(parse_with_video("clip.mp4", "master: {listen: 0.0.0.0}\ninsecure: true\n", &cfg, &err), 0);
    assert_string_equal(cfg.master.listen, "0.0.0.0");
    ds_config_free(&cfg);
}

int main(void)
{
    /* A developer's own token must not change what these tests expect. */
    unsetenv("DELTASLICE_TOKEN");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repo_config),
        cmocka_unit_test(test_embedded_default_matches_repo),
        cmocka_unit_test(test_defaults_and_extras),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_bandwidth_count),
        cmocka_unit_test(test_syntax_and_files),
        cmocka_unit_test(test_tls_blocks),
        cmocka_unit_test(test_role_tls),
        cmocka_unit_test(test_auth_token),
        cmocka_unit_test(test_takeover_key),
        cmocka_unit_test(test_loopback_routes),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_listen_defaults),
        cmocka_unit_test(test_is_loopback),
        cmocka_unit_test(test_source_kinds),
        cmocka_unit_test(test_live_defaults),
        cmocka_unit_test(test_live_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
