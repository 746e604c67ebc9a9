/* test_train_service - a real trainer process: it trains at start-up, hands
 * out predictors the client decodes for its model, refuses requests for
 * another model, video or frame count (FAILED_PRECONDITION) and malformed
 * ones (INVALID_ARGUMENT), trains on request for another frame size, keeps
 * answering clock probes, caches its work, evicts the least recently used
 * size but never the configured one, lets a client (a host) wait for one
 * training at a time and keeps a thread for clock probes while trainings
 * run, and stops with status 0 on SIGTERM (cancelling a training).
 *
 * The trainer logs at info into tmp_dir/log: the tests read it to see what
 * it evicted and trained, and to know when a request is training. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
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
static int port;
static char tmp_dir[] = "/tmp/ds_trainer_XXXXXX";
static char log_path[64];
static ds_model model;
static ds_rpc_channel *ch;

/* Forked before gRPC starts in this process (gRPC is not fork-safe). */
static int start(void **state)
{
    (void)state;
    const char *bin = getenv("DS_BIN");
    if (!bin || !mkdtemp(tmp_dir))
        return -1;
    port = 38000 + (int)(getpid() % 1000);
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/c.yml", tmp_dir);
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -1;
    /* Listening on every interface (plaintext, hence insecure) lets a
     * non-loopback address of this machine be a third client host. */
    fprintf(f,
            "port: {trainer: %d, worker: [1]}\nnet: {m->t: 'localhost:%d', m->w0: 'localhost:1'}\ndnn: zoo:alexnet\n"
            "video_path: %s/data/sample.mp4\nframe_size: [%d, %d]\n"
            "trainer: {frame_num: %d, threads: 1, listen: 0.0.0.0}\ninsecure: true\n"
            "cache_dir: %s/cache\nlog_level: info\n",
            port, port, DS_SOURCE_DIR, ROWS, COLS, FRAMES, tmp_dir);
    fclose(f);
    snprintf(log_path, sizeof log_path, "%s/log", tmp_dir);
    pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(127);
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
    if (getenv("DS_KEEP_LOG")) { /* for debugging a failure */
        snprintf(cmd, sizeof cmd, "cat %s >&2", log_path);
        (void)!system(cmd);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    return system(cmd) ? -1 : 0;
}

/* Calls Predictors on channel c; returns the status code, the blob in blob. */
static int call_on(ds_rpc_channel *c, const char *hash, const char *video, unsigned rows,
                   unsigned cols, unsigned frames, ds_buf *blob, ds_error *err)
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
    ds_rpc_call_unary(c, DS_RPC_TRAINER_PREDICTORS, req.data, req.len, 120, &resp, &code, err);
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

static int call(const char *hash, const char *video, unsigned rows, unsigned cols,
                unsigned frames, ds_buf *blob, ds_error *err)
{
    return call_on(ch, hash, video, rows, cols, frames, blob, err);
}

/* How many times the trainer's log so far contains needle. */
static int log_count(const char *needle)
{
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    int n = 0;
    for (char line[1024]; fgets(line, sizeof line, f);)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* Waits until the log contains needle (a bound for slow emulation, not a
 * timing check). */
static void wait_log(const char *needle)
{
    for (int i = 0; i < 12000 && !log_count(needle); i++)
        usleep(10000);
    if (!log_count(needle))
        fail_msg("the trainer never logged '%s'", needle);
}

/* Asks c for a size: it must be sent (trained first if need be). */
static void assert_served(ds_rpc_channel *c, int rows, int cols)
{
    ds_buf blob = {0};
    ds_error err;
    int code = call_on(c, model.hash, "sample.mp4", (unsigned)rows, (unsigned)cols, FRAMES,
                       &blob, &err);
    if (code != DS_RPC_OK)
        fail_msg("Predictors %dx%d: %d %s", rows, cols, code, err.msg);
    ds_buf_free(&blob);
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
}

/* The trainer holds 8 sizes.  After test_predictors: 72x96 (configured,
 * trained first, so the least recently used from here on), 8x8 (failed)
 * and 64x80. */
static void test_lru(void **state)
{
    (void)state;
    static const int fill[5][2] = {{64, 64}, {64, 72}, {72, 64}, {72, 72}, {64, 88}};
    for (int i = 0; i < 5; i++)
        assert_served(ch, fill[i][0], fill[i][1]);
    assert_int_equal(log_count("evicted"), 0);
    assert_served(ch, 64, 80); /* used again: now the most recent */
    /* Three new sizes evict, least recently used first, what is not the
     * configured size: the failed 8x8, then 64x64 and 64x72 (not 64x80). */
    assert_served(ch, 80, 64);
    assert_served(ch, 80, 72);
    assert_served(ch, 72, 80);
    assert_int_equal(log_count("evicted predictors for 8x8 (least recently used)"), 1);
    assert_int_equal(log_count("evicted predictors for 64x64 (least recently used)"), 1);
    assert_int_equal(log_count("evicted predictors for 64x72 (least recently used)"), 1);
    assert_int_equal(log_count("evicted"), 3);
    /* The configured size and 64x80 are still held: served, not trained. */
    assert_served(ch, ROWS, COLS);
    assert_served(ch, 64, 80);
    char line[64];
    snprintf(line, sizeof line, "request for %dx%d from", ROWS, COLS);
    assert_int_equal(log_count(line), 0);
    assert_int_equal(log_count("request for 64x80 from"), 1);
    /* An evicted size is trained again (from the cache) and evicts the next. */
    assert_served(ch, 64, 64);
    assert_int_equal(log_count("request for 64x64 from"), 2);
    assert_int_equal(log_count("evicted predictors for 72x64 (least recently used)"), 1);
}

typedef struct pending {
    ds_rpc_channel *c;
    int rows, cols;
    int code;
    ds_error err;
} pending;

static void *pending_thread(void *arg)
{
    pending *p = arg;
    ds_buf blob = {0};
    p->code = call_on(p->c, model.hash, "sample.mp4", (unsigned)p->rows, (unsigned)p->cols,
                      FRAMES, &blob, &p->err);
    ds_buf_free(&blob);
    return NULL;
}

/* A channel to the trainer from another address of this machine, so
 * another client host to the trainer: [::1] (which = 0) or the first
 * non-loopback IPv4 address (which = 1); host is its name in the trainer's
 * messages.  NULL when there is none. */
static ds_rpc_channel *other_host(int which, char *host, size_t size)
{
    char target[INET6_ADDRSTRLEN + 16];
    ds_error err;
    if (which == 0) {
        snprintf(target, sizeof target, "[::1]:%d", port);
        snprintf(host, size, "ipv6:[::1]");
    } else {
        struct ifaddrs *ifs;
        char addr[INET_ADDRSTRLEN] = "";
        if (getifaddrs(&ifs))
            return NULL;
        for (struct ifaddrs *i = ifs; i && !addr[0]; i = i->ifa_next)
            if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) &&
                !(i->ifa_flags & IFF_LOOPBACK))
                inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, addr,
                          sizeof addr);
        freeifaddrs(ifs);
        if (!addr[0])
            return NULL;
        snprintf(target, sizeof target, "%s:%d", addr, port);
        snprintf(host, size, "ipv4:%s", addr);
    }
    ds_rpc_channel *c = ds_rpc_channel_new("trainer", target, 0, NULL, &err);
    if (c && ds_rpc_wait_ready(c, 10, &err)) {
        ds_rpc_channel_free(c);
        c = NULL;
    }
    return c;
}

/* While a long training runs for one client: its second request for an
 * untrained size is refused at once, trained sizes are served, another
 * client's request waits, a third client is refused (two wait in all) and
 * clock probes are answered.  SIGTERM cancels the trainings. */
static void test_clients(void **state)
{
    (void)state;
    /* 720x1280 trains for seconds (minutes emulated) and is cancelled at
     * the end: long enough to make the checks while it runs. */
    pending big = {ch, 720, 1280, -1, {{0}}};
    pthread_t big_th;
    assert_int_equal(pthread_create(&big_th, NULL, pending_thread, &big), 0);
    wait_log("request for 720x1280 from ipv4:127.0.0.1: training");

    ds_buf blob = {0};
    ds_error err;
    assert_int_equal(call(model.hash, "sample.mp4", 88, 88, FRAMES, &blob, &err),
                     DS_RPC_RESOURCE_EXHAUSTED);
    if (!strstr(err.msg, "one training at a time per client: 720x1280 is training for "
                         "ipv4:127.0.0.1"))
        fail_msg("%s", err.msg);
    assert_served(ch, ROWS, COLS);

    char host6[64], host3[64];
    ds_rpc_channel *ch6 = other_host(0, host6, sizeof host6);
    ds_rpc_channel *ch3 = other_host(1, host3, sizeof host3);
    pending second = {ch6, 96, 96, -1, {{0}}};
    pthread_t second_th;
    if (ch6) {
        assert_int_equal(pthread_create(&second_th, NULL, pending_thread, &second), 0);
        char needle[128];
        snprintf(needle, sizeof needle, "request for 96x96 from %s: training", host6);
        wait_log(needle);
        assert_served(ch6, 64, 80);
        assert_int_equal(call_on(ch6, model.hash, "sample.mp4", 88, 88, FRAMES, &blob, &err),
                         DS_RPC_RESOURCE_EXHAUSTED);
        snprintf(needle, sizeof needle, "96x96 is training for %s", host6);
        if (!strstr(err.msg, needle))
            fail_msg("%s", err.msg);
        if (ch3) { /* two requests wait: a third client is refused */
            assert_int_equal(call_on(ch3, model.hash, "sample.mp4", 88, 88, FRAMES, &blob,
                                     &err), DS_RPC_RESOURCE_EXHAUSTED);
            if (!strstr(err.msg, "2 requests from other clients already wait for trainings"))
                fail_msg("%s (from %s)", err.msg, host3);
        } else {
            print_message("no non-loopback IPv4 address: the limit of 2 waiting requests "
                          "in all is not tested\n");
        }
    } else {
        print_message("no IPv6 loopback: a second client is not tested\n");
    }
    /* The handler thread left answers clock probes. */
    int64_t offset, rtt;
    assert_int_equal(ds_rpc_call_clock(ch, DS_RPC_TRAINER_CLOCK, 2, &offset, &rtt, &err), 0);
    assert_int_equal(log_count("request for 88x88"), 0);
    ds_buf_free(&blob);

    /* SIGTERM: a clean stop; the training is cancelled, and so are the
     * requests waiting. */
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    pid = -1;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(pthread_join(big_th, NULL), 0);
    assert_int_not_equal(big.code, DS_RPC_OK);
    if (ch6) {
        assert_int_equal(pthread_join(second_th, NULL), 0);
        assert_int_not_equal(second.code, DS_RPC_OK);
    }
    ds_rpc_channel_free(ch6);
    ds_rpc_channel_free(ch3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_predictors),
                                       cmocka_unit_test(test_lru),
                                       cmocka_unit_test(test_clients)};
    return cmocka_run_group_tests(tests, start, stop);
}
