/* test_train_service - a real trainer process: it trains at start-up, hands
 * out predictors the client decodes for its model, refuses requests for
 * another model, video or frame count (FAILED_PRECONDITION) and malformed
 * ones (INVALID_ARGUMENT), trains on request for another frame size, keeps
 * answering clock probes, caches its work, and stops with status 0 on
 * SIGTERM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/model.h"
#include "rpc/rpc.h"
#include "sched/predict.h"

#define ROWS 72
#define COLS 96
#define FRAMES 8

static pid_t pid;
static char tmp_dir[] = "/tmp/ds_trainer_XXXXXX";
static ds_model model;
static ds_rpc_channel *ch;

/* Forked before gRPC starts in this process (gRPC is not fork-safe). */
static int start(void **state)
{
    (void)state;
    const char *bin = getenv("DS_BIN");
    if (!bin || !mkdtemp(tmp_dir))
        return -1;
    int port = 38000 + (int)(getpid() % 1000);
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/c.yml", tmp_dir);
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port: {trainer: %d, worker: [1]}\nnet: {m->t: 'localhost:%d', m->w0: 'localhost:1'}\ndnn: zoo:alexnet\n"
            "video_path: %s/data/sample.mp4\nframe_size: [%d, %d]\n"
            "trainer: {frame_num: %d, threads: 1}\ncache_dir: %s/cache\nlog_level: warn\n",
            port, port, DS_SOURCE_DIR, ROWS, COLS, FRAMES, tmp_dir);
    fclose(f);
    pid = fork();
    if (pid == 0) {
        execl(bin, bin, "trainer", "-c", cfg, (char *)NULL);
        _exit(127);
    }
    ds_error err;
    memset(&model, 0, sizeof model);
    if (ds_model_load("zoo:alexnet", &model, &err) ||
        ds_model_set_input(&model, 1, 3, ROWS, COLS, &err))
        return -1;
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port); /* no resolver: c-ares leaks */
    ch = ds_rpc_channel_new("trainer", target, 0, NULL, &err);
    return ch && ds_rpc_wait_ready(ch, 60, &err) == 0 ? 0 : -1;
}

static int stop(void **state)
{
    (void)state;
    ds_rpc_channel_free(ch);
    ds_model_free(&model);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    return system(cmd) ? -1 : 0;
}

/* Calls Predictors; returns the status code, the blob in blob. */
static int call(const char *hash, const char *video, unsigned rows, unsigned cols,
                unsigned frames, ds_buf *blob, ds_error *err)
{
    Deltaslice__PredictorsRequest r = DELTASLICE__PREDICTORS_REQUEST__INIT;
    r.model_hash = (char *)hash;
    r.video = (char *)video;
    r.rows = rows;
    r.cols = cols;
    r.frame_num = frames;
    ds_buf req = {0}, resp = {0};
    assert_int_equal(ds_rpc_pack(&r.base, &req, err), 0);
    int code = -1;
    ds_rpc_call_unary(ch, DS_RPC_TRAINER_PREDICTORS, req.data, req.len, 120, &resp, &code, err);
    if (code == DS_RPC_OK) {
        Deltaslice__Predictors *p = (Deltaslice__Predictors *)ds_rpc_unpack(
            &deltaslice__predictors__descriptor, resp.data, resp.len, 0, err);
        assert_non_null(p);
        blob->len = 0;
        assert_int_equal(ds_buf_append(blob, p->blob.data, p->blob.len, err), 0);
        protobuf_c_message_free_unpacked(&p->base, NULL);
    }
    ds_buf_free(&req);
    ds_buf_free(&resp);
    return code;
}

static void test_predictors(void **state)
{
    (void)state;
    ds_buf blob = {0};
    ds_error err;
    /* The master names the video by its own path: the file name counts. */
    int code = call(model.hash, "/elsewhere/sample.mp4", ROWS, COLS, FRAMES, &blob, &err);
    if (code != DS_RPC_OK)
        fail_msg("Predictors: %d %s", code, err.msg);
    ds_predictors *p = NULL;
    assert_int_equal(ds_predictors_decode(blob.data, blob.len, &model, &p, &err), 0);
    float in[3] = {0.2f, 0.2f, 0.2f};
    float *lf[64];
    for (int i = 0; i < model.n_layers; i++)
        lf[i] = malloc(sizeof(float) * (size_t)ds_predict_channels(&model.layers[i].out_shape));
    assert_int_equal(ds_predictors_eval(p, &model, in, lf, &err), 0);
    for (int i = 0; i < model.n_layers; i++) {
        assert_true(lf[i][0] >= 0.0f && lf[i][0] <= 1.0f);
        free(lf[i]);
    }
    ds_predictors_free(p);
    /* 0 frames / empty video: the trainer's choice. */
    assert_int_equal(call(model.hash, "", ROWS, COLS, 0, &blob, &err), DS_RPC_OK);

    /* Mismatches. */
    assert_int_equal(call("0123456789abcdef", "sample.mp4", ROWS, COLS, FRAMES, &blob, &err),
                     DS_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "model hash"));
    assert_int_equal(call(model.hash, "other.mp4", ROWS, COLS, FRAMES, &blob, &err),
                     DS_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "video"));
    assert_int_equal(call(model.hash, "sample.mp4", ROWS, COLS, FRAMES + 1, &blob, &err),
                     DS_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "frame_num"));
    /* Malformed. */
    assert_int_equal(call(model.hash, "sample.mp4", 0, COLS, FRAMES, &blob, &err),
                     DS_RPC_INVALID_ARGUMENT);
    assert_int_equal(call(model.hash, "sample.mp4", 16384, 16384, FRAMES, &blob, &err),
                     DS_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "larger"));
    /* Too small for the model: a clear failure, not a crash. */
    assert_int_equal(call(model.hash, "sample.mp4", 8, 8, FRAMES, &blob, &err),
                     DS_RPC_FAILED_PRECONDITION);
    ds_buf resp = {0};
    int c = 0;
    ds_rpc_call_unary(ch, DS_RPC_TRAINER_PREDICTORS, "\xff\xff\xff", 3, 10, &resp, &c, &err);
    assert_int_equal(c, DS_RPC_INVALID_ARGUMENT);

    /* Another frame size: trained on request, for a model of that size. */
    assert_int_equal(call(model.hash, "sample.mp4", 64, 80, FRAMES, &blob, &err), DS_RPC_OK);
    ds_model m2;
    memset(&m2, 0, sizeof m2);
    assert_int_equal(ds_model_load("zoo:alexnet", &m2, &err), 0);
    assert_int_equal(ds_model_set_input(&m2, 1, 3, 64, 80, &err), 0);
    assert_int_equal(ds_predictors_decode(blob.data, blob.len, &m2, &p, &err), 0);
    ds_predictors_free(p);
    ds_model_free(&m2);

    /* The typed call the master makes gives the same blob (both cached). */
    ds_buf typed = {0};
    assert_int_equal(ds_rpc_call_predictors(ch, model.hash, "sample.mp4", 64, 80, FRAMES, 120,
                                            &typed, &err), 0);
    assert_int_equal(typed.len, blob.len);
    assert_memory_equal(typed.data, blob.data, blob.len);
    assert_int_equal(ds_rpc_call_predictors(ch, model.hash, "other.mp4", 64, 80, FRAMES, 120,
                                            &typed, &err), -1);
    if (!strstr(err.msg, "trainer (") || !strstr(err.msg, ") Predictors: FAILED_PRECONDITION"))
        fail_msg("%s", err.msg);
    ds_buf_free(&typed);

    /* Clock probes still answered. */
    Deltaslice__ClockProbe probe = DELTASLICE__CLOCK_PROBE__INIT;
    probe.client_send_us = 1;
    ds_buf req = {0};
    assert_int_equal(ds_rpc_pack(&probe.base, &req, &err), 0);
    assert_int_equal(ds_rpc_call_unary(ch, DS_RPC_TRAINER_CLOCK, req.data, req.len, 10, &resp,
                                       &c, &err),
                     0);
    ds_buf_free(&req);
    ds_buf_free(&resp);
    int64_t offset, rtt;
    assert_int_equal(ds_rpc_call_clock(ch, DS_RPC_TRAINER_CLOCK, 2, &offset, &rtt, &err), 0);

    /* Both sizes are cached: 2 data files and 2 predictor files. */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/cache", tmp_dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n_data = 0, n_pred = 0;
    for (struct dirent *e; (e = readdir(d));) {
        n_data += strstr(e->d_name, ".data") != NULL;
        n_pred += strstr(e->d_name, ".pred") != NULL;
    }
    closedir(d);
    assert_int_equal(n_data, 2);
    assert_int_equal(n_pred, 2);
    ds_buf_free(&blob);

    /* SIGTERM: a clean stop. */
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    pid = -1;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_predictors)};
    return cmocka_run_group_tests(tests, start, stop);
}
