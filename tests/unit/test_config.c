/* The configuration loader: the repository's config.yml, the embedded
 * default, and one test per class of error (each must name
 * file:line:column and the key, in one line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
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
    assert_true(cfg.master.bandwidth[0] == 4.0 && cfg.master.bandwidth[1] == 1.0);
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
                            "config.yml:5:19: master.ifr_num: expected an integer in 1..100000000, got \"50\"");
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
                            "video_path, frame_size, mode, check, master, worker, trainer, log_level, "
                            "trace_dir, cache_dir, codec, max_message_mb, tls, auth, insecure)");
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

int main(void)
{
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
