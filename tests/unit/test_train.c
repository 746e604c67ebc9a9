/* test_train - regressions on known data, collection on real and generated
 * clips (fractions, the input layer against the true pixel change, looping),
 * the fit on a clip, and the cache (keys, hits, misses, damaged files). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "train/train.h"
#include "video/video.h"

#define SAMPLE DS_SOURCE_DIR "/data/sample.mp4"
#define ROWS 72
#define COLS 96

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void test_linear_exact(void **state)
{
    (void)state;
    enum { N = 50 };
    float x[N * 2], y[N];
    double coef[3];
    ds_error err;
    for (int i = 0; i < N; i++) {
        x[i] = (float)urand();
        y[i] = 0.5f * x[i] + 0.1f;
    }
    assert_int_equal(ds_fit_linear(x, y, N, 1, coef, &err), 0);
    assert_float_equal(coef[0], 0.5, 1e-6);
    assert_float_equal(coef[1], 0.1, 1e-6);
    /* Two inputs (the Add model). */
    for (int i = 0; i < N; i++) {
        x[2 * i] = (float)urand();
        x[2 * i + 1] = (float)urand();
        y[i] = (float)(0.3 * x[2 * i] + 0.6 * x[2 * i + 1] + 0.05);
    }
    assert_int_equal(ds_fit_linear(x, y, N, 2, coef, &err), 0);
    assert_float_equal(coef[0], 0.3, 1e-5);
    assert_float_equal(coef[1], 0.6, 1e-5);
    assert_float_equal(coef[2], 0.05, 1e-5);
    /* An input without variance gets slope 0 and the intercept the mean. */
    double mean = 0;
    for (int i = 0; i < N; i++) {
        x[i] = 0.25f;
        y[i] = (float)urand();
        mean += y[i] / N;
    }
    assert_int_equal(ds_fit_linear(x, y, N, 1, coef, &err), 0);
    assert_float_equal(coef[0], 0.0, 1e-9);
    assert_float_equal(coef[1], mean, 1e-6);
    /* A single sample is a constant. */
    assert_int_equal(ds_fit_linear(x, y, 1, 1, coef, &err), 0);
    assert_float_equal(coef[1], y[0], 1e-7);
    assert_int_equal(ds_fit_linear(x, y, 0, 1, coef, &err), -1);
}

static double sig(double z) { return 1 / (1 + exp(-z)); }

static void test_mlp_beats_constant(void **state)
{
    (void)state;
    enum { N = 200, F = 6, O = 4 };
    static float x[N * F], y[N * O];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < F; j++)
            x[i * F + j] = (float)urand();
        /* A saturating response to two of the features, different gain and
         * offset per output channel, plus a little noise. */
        double h = sig(6 * x[i * F] - 4 * x[i * F + 3] + 0.5);
        for (int c = 0; c < O; c++)
            y[i * O + c] = (float)(0.2 * (c + 1) * h + 0.1 * c + 0.01 * (urand() - 0.5));
    }
    double w[F], w0, v[O], b[O];
    ds_error err;
    assert_int_equal(ds_fit_mlp(x, y, N, F, O, w, &w0, v, b, &err), 0);
    double sse = 0, sst = 0;
    for (int c = 0; c < O; c++) {
        double mean = 0;
        for (int i = 0; i < N; i++)
            mean += y[i * O + c] / N;
        for (int i = 0; i < N; i++) {
            double z = w0;
            for (int j = 0; j < F; j++)
                z += w[j] * x[i * F + j];
            double e = v[c] * sig(z) + b[c] - y[i * O + c];
            sse += e * e;
            sst += (y[i * O + c] - mean) * (y[i * O + c] - mean);
        }
    }
    print_message("mlp fit: SSE %.5f vs constant %.5f (R2 %.4f)\n", sse, sst, 1 - sse / sst);
    assert_true(sse < 0.05 * sst); /* the constant explains nothing of it */
    /* The unused features matter less than the two that drive y. */
    assert_true(fabs(w[0]) > fabs(w[1]) && fabs(w[3]) > fabs(w[2]));
    assert_true(w[0] * w[3] < 0);
    /* Constant targets: the fit is that constant. */
    for (int i = 0; i < N * O; i++)
        y[i] = 0.3f;
    assert_int_equal(ds_fit_mlp(x, y, N, F, O, w, &w0, v, b, &err), 0);
    for (int i = 0; i < 5; i++) {
        double z = w0;
        for (int j = 0; j < F; j++)
            z += w[j] * x[i * F + j];
        assert_float_equal(v[1] * sig(z) + b[1], 0.3, 1e-4);
    }
    assert_int_equal(ds_fit_mlp(x, y, N, 0, O, w, &w0, v, b, &err), -1);
}

/* A fitted slope beyond [0,1] is clamped when evaluated. */
static void test_clamp(void **state)
{
    (void)state;
    enum { N = 20 };
    float x[N], y[N];
    double coef[2];
    ds_error err;
    for (int i = 0; i < N; i++) {
        x[i] = 0.4f * (float)i / N;
        y[i] = 2.0f * x[i] + 0.2f; /* up to 0.96 on these samples */
    }
    assert_int_equal(ds_fit_linear(x, y, N, 1, coef, &err), 0);
    double a = coef[0], b = coef[1];
    int in_ch = 1;
    ds_layer_pred lp = {.kind = DS_PRED_LINEAR, .n_in = 1, .n_out = 1, .in_ch = &in_ch, .a = &a,
                        .b = &b};
    float in = 0.9f, out = -1;
    const float *ins[1] = {&in};
    ds_layer_pred_eval(&lp, ins, &out);
    assert_true(out == 1.0f); /* 2*0.9+0.2 */
    b = -0.5;
    in = 0.1f;
    ds_layer_pred_eval(&lp, ins, &out);
    assert_true(out == 0.0f);
    in = 0.5f;
    ds_layer_pred_eval(&lp, ins, &out);
    assert_float_equal(out, 0.5, 1e-6);
}

/* ------------------------------------------------------------ on a clip */

static ds_model alexnet;
static char tmpdir[64];
static char short_clip[128];

static int setup(void **state)
{
    (void)state;
    ds_log_init("test", DS_LOG_WARN);
    ds_error err;
    memset(&alexnet, 0, sizeof alexnet);
    if (ds_model_load("zoo:alexnet", &alexnet, &err) ||
        ds_model_set_input(&alexnet, 1, 3, ROWS, COLS, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds_test_train.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    /* Five frames of a moving test pattern: collection loops over it. */
    snprintf(short_clip, sizeof short_clip, "%s/short.mp4", tmpdir);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "ffmpeg -loglevel error -y -f lavfi -i testsrc=size=%dx%d:rate=10 -frames:v 5 "
             "-pix_fmt yuv420p %s",
             COLS, ROWS, short_clip);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make a clip with ffmpeg\n");
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ds_model_free(&alexnet);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Per-channel changed fraction of consecutive frames, straight from the
 * decoder (HWC u8). */
static void pixel_change(const ds_tensor *a, const ds_tensor *b, double *frac)
{
    const uint8_t *x = ds_tensor_u8(a), *y = ds_tensor_u8(b);
    size_t px = (size_t)ROWS * COLS;
    for (int c = 0; c < 3; c++) {
        size_t n = 0;
        for (size_t i = 0; i < px; i++)
            n += x[i * 3 + (size_t)c] != y[i * 3 + (size_t)c];
        frac[c] = (double)n / (double)px;
    }
}

static float at(const float *rows, const ds_train_data *d, int t, int layer, int c)
{
    return rows[(size_t)t * (size_t)d->width + (size_t)d->offset[layer] + (size_t)c];
}

static void test_collect_sample(void **state)
{
    (void)state;
    enum { FRAMES = 10 };
    ds_train_cfg c = {SAMPLE, FRAMES, 1, NULL, 0, NULL};
    ds_train_data d;
    ds_error err;
    assert_int_equal(ds_train_collect(&alexnet, &c, &d, &err), 0);
    assert_int_equal(d.n_frames, FRAMES);
    assert_int_equal(d.n_layers, alexnet.n_layers);
    assert_int_equal(d.channels[0], 3);
    assert_int_equal(d.channels[1], 64);
    for (size_t i = 0; i < (size_t)FRAMES * (size_t)d.width; i++) {
        assert_true(d.change[i] >= 0.0f && d.change[i] <= 1.0f);
        assert_true(d.nonzero[i] >= 0.0f && d.nonzero[i] <= 1.0f);
    }
    /* Layer 0 is the true pixel change; frame 0's change row is its
     * non-zero row. */
    ds_video *v = ds_video_open(SAMPLE, ROWS, COLS, &err);
    assert_non_null(v);
    ds_tensor f[2];
    memset(f, 0, sizeof f);
    for (int t = 0; t < FRAMES; t++) {
        assert_int_equal(ds_video_read(v, &f[t & 1], &err), 1);
        if (!t)
            continue;
        double want[3];
        pixel_change(&f[t & 1], &f[(t - 1) & 1], want);
        for (int ch = 0; ch < 3; ch++)
            assert_float_equal(at(d.change, &d, t, 0, ch), want[ch], 1e-6);
    }
    assert_memory_equal(d.change, d.nonzero, sizeof(float) * (size_t)d.width);
    /* A static camera: some pixels change, far from all; after a ReLU about
     * half the outputs are zero. */
    double in_change = 0, relu_nz = 0;
    for (int t = 1; t < FRAMES; t++)
        for (int ch = 0; ch < 3; ch++)
            in_change += at(d.change, &d, t, 0, ch) / (3.0 * (FRAMES - 1));
    for (int ch = 0; ch < 64; ch++)
        relu_nz += at(d.nonzero, &d, 3, 2, ch) / 64.0;
    print_message("sample 72x96: input change %.3f, relu1 non-zero %.3f\n", in_change, relu_nz);
    assert_true(in_change > 0.01 && in_change < 0.9);
    assert_true(relu_nz > 0.05 && relu_nz < 0.95);
    /* A ReLU changes no more than its Conv: where the conv output stays
     * bit-identical, so does max(x, 0). */
    for (int t = 1; t < FRAMES; t++)
        for (int ch = 0; ch < 64; ch++)
            assert_true(at(d.change, &d, t, 2, ch) <= at(d.change, &d, t, 1, ch));

    /* Fit on the clip and report. */
    ds_predictors *p = NULL;
    assert_int_equal(ds_train_fit(&alexnet, &d, 2, &p, &err), 0);
    assert_int_equal(ds_predictors_check(p, &alexnet, &err), 0);
    ds_buf table = {0};
    assert_int_equal(ds_train_report(&alexnet, p, &d, &table, &err), 0);
    assert_int_equal(ds_buf_append(&table, "", 1, &err), 0);
    print_message("fit on %d frames of the sample at %dx%d:\n", FRAMES, ROWS, COLS);
    for (char *line = (char *)table.data, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = 0; /* cmocka's message buffer is short: one line at a time */
        print_message("%s\n", line);
    }
    assert_float_equal(p->layers[0].r2, 1.0, 1e-12);
    assert_float_equal(p->layers[0].mae, 0.0, 1e-12);
    for (int i = 0; i < alexnet.n_layers; i++)
        assert_true(p->layers[i].mae >= 0 && p->layers[i].mae <= 1);
    ds_buf_free(&table);
    ds_predictors_free(p);
    ds_tensor_free(&f[0]);
    ds_tensor_free(&f[1]);
    ds_video_close(v);
    ds_train_data_free(&d);
}

static void test_collect_loops(void **state)
{
    (void)state;
    enum { FRAMES = 12 };
    ds_train_cfg c = {short_clip, FRAMES, 1, NULL, 0, NULL};
    ds_train_data d;
    ds_error err;
    assert_int_equal(ds_train_collect(&alexnet, &c, &d, &err), 0);
    /* Frames 0..4, 0..4, 0, 1: rows 6..9 repeat rows 1..4 exactly (the
     * executor is deterministic), row 5 is the jump from frame 4 to 0. */
    size_t W = (size_t)d.width;
    assert_memory_equal(d.change + 6 * W, d.change + 1 * W, 4 * W * sizeof(float));
    assert_memory_equal(d.nonzero + 5 * W, d.nonzero, 5 * W * sizeof(float));
    assert_true(at(d.change, &d, 5, 0, 0) > 0.0f);
    /* testsrc moves: every frame changes some pixels. */
    for (int t = 1; t < FRAMES; t++)
        assert_true(at(d.change, &d, t, 0, 1) > 0.0f);
    /* Frames in parallel (5 at a time: 12 = 5 + 5 + 2) give the same data. */
    ds_train_data d5;
    c.threads = 5;
    assert_int_equal(ds_train_collect(&alexnet, &c, &d5, &err), 0);
    assert_memory_equal(d5.change, d.change, FRAMES * W * sizeof(float));
    assert_memory_equal(d5.nonzero, d.nonzero, FRAMES * W * sizeof(float));
    ds_train_data_free(&d5);
    c.threads = 1;
    ds_train_data_free(&d);
    /* Too few frames, a missing video, a cancelled run. */
    c.frames = 2;
    assert_int_equal(ds_train_collect(&alexnet, &c, &d, &err), -1);
    assert_non_null(strstr(err.msg, "at least"));
    c.frames = 5;
    c.video = "/nonexistent/clip.mp4";
    assert_int_equal(ds_train_collect(&alexnet, &c, &d, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/clip.mp4"));
    atomic_int cancel = 1;
    c.video = short_clip;
    c.cancel = &cancel;
    assert_int_equal(ds_train_collect(&alexnet, &c, &d, &err), -1);
    assert_non_null(strstr(err.msg, "cancelled"));
}

/* A DAG (GoogLeNet: Concat layers) collects and fits; a Concat layer's
 * collected fractions are its inputs' fractions side by side, so its
 * one-step prediction is exact. */
static void test_dag(void **state)
{
    (void)state;
    ds_model g;
    ds_error err;
    memset(&g, 0, sizeof g);
    assert_int_equal(ds_model_load("zoo:googlenet", &g, &err), 0);
    assert_int_equal(ds_model_set_input(&g, 1, 3, 64, 96, &err), 0);
    ds_train_cfg c = {SAMPLE, 7, 2, NULL, 0, NULL}; /* odd: a last step of one frame */
    ds_train_data d;
    assert_int_equal(ds_train_collect(&g, &c, &d, &err), 0);
    ds_predictors *p = NULL;
    assert_int_equal(ds_train_fit(&g, &d, 2, &p, &err), 0);
    int concats = 0;
    double *r2 = malloc(sizeof(double) * (size_t)g.n_layers);
    double *mae = malloc(sizeof(double) * (size_t)g.n_layers);
    assert_int_equal(ds_train_quality(&g, p, &d, 1, NULL, NULL, r2, mae, &err), 0);
    for (int i = 0; i < g.n_layers; i++) {
        if (g.layers[i].op != DS_OP_CONCAT)
            continue;
        assert_int_equal(p->layers[i].kind, DS_PRED_CONCAT);
        assert_float_equal(mae[i], 0.0, 1e-7);
        concats++;
    }
    assert_true(concats >= 9);
    free(r2);
    free(mae);
    ds_predictors_free(p);
    ds_train_data_free(&d);
    ds_model_free(&g);
}

static void test_cache(void **state)
{
    (void)state;
    ds_error err;
    char k1[256], k2[256];
    /* Keys: equal for equal inputs, different when anything changes. */
    assert_int_equal(ds_train_cache_key(&alexnet, short_clip, 6, k1, sizeof k1, &err), 0);
    assert_int_equal(ds_train_cache_key(&alexnet, short_clip, 6, k2, sizeof k2, &err), 0);
    assert_string_equal(k1, k2);
    assert_non_null(strstr(k1, alexnet.hash));
    assert_non_null(strstr(k1, "72x96"));
    assert_int_equal(ds_train_cache_key(&alexnet, short_clip, 7, k2, sizeof k2, &err), 0);
    assert_string_not_equal(k1, k2);
    assert_int_equal(ds_train_cache_key(&alexnet, SAMPLE, 6, k2, sizeof k2, &err), 0);
    assert_string_not_equal(k1, k2);
    char copy[160];
    snprintf(copy, sizeof copy, "%s/copy.mp4", tmpdir);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "cp -p %s %s", short_clip, copy);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(ds_train_cache_key(&alexnet, copy, 6, k2, sizeof k2, &err), 0);
    assert_string_not_equal(k1, k2); /* another file */
    struct stat st;
    assert_int_equal(stat(short_clip, &st), 0);
    snprintf(cmd, sizeof cmd, "touch -d '2001-01-01' %s", short_clip);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(ds_train_cache_key(&alexnet, short_clip, 6, k2, sizeof k2, &err), 0);
    assert_string_not_equal(k1, k2); /* modified */
    ds_model other;
    memset(&other, 0, sizeof other);
    assert_int_equal(ds_model_load("zoo:alexnet", &other, &err), 0);
    assert_int_equal(ds_model_set_input(&other, 1, 3, ROWS + 8, COLS, &err), 0);
    assert_int_equal(ds_train_cache_key(&other, short_clip, 6, k1, sizeof k1, &err), 0);
    assert_string_not_equal(k1, k2); /* frame size */
    assert_int_equal(ds_train_cache_key(&alexnet, "/nonexistent.mp4", 6, k1, sizeof k1, &err),
                     -1);
    /* A clip over 2 GiB (sparse here) has a key too: 64-bit off_t on 32-bit targets. */
    char big[160];
    snprintf(big, sizeof big, "%s/big.mp4", tmpdir);
    FILE *bf = fopen(big, "wb");
    assert_non_null(bf);
    assert_int_equal(ftruncate(fileno(bf), (off_t)3 << 30), 0);
    assert_int_equal(fclose(bf), 0);
    if (ds_train_cache_key(&alexnet, big, 6, k1, sizeof k1, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(unlink(big), 0);

    /* Runs: miss, hit on predictors, hit on data, damaged files rebuilt. */
    char cache[128];
    snprintf(cache, sizeof cache, "%s/cache/sub", tmpdir);
    ds_train_cfg c = {short_clip, 6, 1, cache, 0, NULL};
    ds_train_stats s;
    ds_predictors *p1 = NULL, *p2 = NULL, *p3 = NULL;
    assert_int_equal(ds_train_run(&alexnet, &c, &p1, &s, &err), 0);
    assert_int_equal(s.data_cached + s.pred_cached, 0);
    assert_true(s.collect_s > 0);
    assert_int_equal(ds_train_run(&alexnet, &c, &p2, &s, &err), 0);
    assert_int_equal(s.pred_cached, 1);
    ds_buf b1 = {0}, b2 = {0}, b3 = {0};
    assert_int_equal(ds_predictors_encode(p1, &b1, &err), 0);
    assert_int_equal(ds_predictors_encode(p2, &b2, &err), 0);
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);
    /* Without the predictors file the data is reused and the fit repeats
     * bit for bit. */
    char key[256], path[512];
    assert_int_equal(ds_train_cache_key(&alexnet, short_clip, 6, key, sizeof key, &err), 0);
    snprintf(path, sizeof path, "%s/%s.pred", cache, key);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(ds_train_run(&alexnet, &c, &p3, &s, &err), 0);
    assert_int_equal(s.data_cached, 1);
    assert_int_equal(s.pred_cached, 0);
    assert_int_equal(ds_predictors_encode(p3, &b3, &err), 0);
    assert_int_equal(b3.len, b1.len);
    assert_memory_equal(b3.data, b1.data, b1.len);
    ds_predictors_free(p3);
    p3 = NULL;
    /* A damaged predictors file and a damaged data file: rebuilt. */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 40, SEEK_SET);
    fputc(0x55, f);
    fclose(f);
    assert_int_equal(ds_predictors_load(path, &alexnet, &p3, &err), -1);
    assert_non_null(strstr(err.msg, "checksum"));
    char dpath[512];
    snprintf(dpath, sizeof dpath, "%s/%s.data", cache, key);
    assert_int_equal(truncate(dpath, 100), 0);
    ds_train_data d;
    assert_int_equal(ds_train_data_load(dpath, &alexnet, 6, &d, &err), -1);
    assert_int_equal(ds_train_run(&alexnet, &c, &p3, &s, &err), 0);
    assert_int_equal(s.data_cached + s.pred_cached, 0);
    /* Data file round trip, and a frame count that does not match. */
    assert_int_equal(ds_train_data_load(dpath, &alexnet, 6, &d, &err), 0);
    ds_train_data d2;
    assert_int_equal(ds_train_data_load(dpath, &alexnet, 7, &d2, &err), -1);
    assert_non_null(strstr(err.msg, "6 frames"));
    assert_int_equal(ds_train_data_load(dpath, &other, 6, &d2, &err), -1);
    char p2path[512];
    snprintf(p2path, sizeof p2path, "%s/again.data", tmpdir);
    assert_int_equal(ds_train_data_save(&d, p2path, &err), 0);
    assert_int_equal(ds_train_data_load(p2path, &alexnet, 6, &d2, &err), 0);
    assert_memory_equal(d.change, d2.change, sizeof(float) * 6 * (size_t)d.width);
    assert_memory_equal(d.nonzero, d2.nonzero, sizeof(float) * 6 * (size_t)d.width);
    ds_train_data_free(&d2);
    ds_train_data_free(&d);
    ds_model_free(&other);
    ds_buf_free(&b1);
    ds_buf_free(&b2);
    ds_buf_free(&b3);
    ds_predictors_free(p1);
    ds_predictors_free(p2);
    ds_predictors_free(p3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_exact),   cmocka_unit_test(test_mlp_beats_constant),
        cmocka_unit_test(test_clamp),          cmocka_unit_test(test_collect_sample),
        cmocka_unit_test(test_collect_loops),  cmocka_unit_test(test_dag),
        cmocka_unit_test(test_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
