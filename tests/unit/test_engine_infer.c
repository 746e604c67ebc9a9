/* test_engine_infer.c - 'deltaslice infer' end to end: its output file
 * equals the executor's answer in process (same backend, bit for bit), the
 * reference backend agrees within 1e-5 of the largest magnitude, --layers
 * writes intermediate layers, and bad input fails with a message and the
 * documented exit status. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/exec.h"
#include "model/model.h"

static char dir[256];

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static float *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    float *p = malloc((size_t)len + 4);
    size_t got = fread(p, 1, (size_t)len, f);
    fclose(f);
    assert_int_equal(got, (size_t)len);
    *n = (size_t)len / 4;
    return p;
}

static const char *bin(void)
{
    const char *b = getenv("DS_BIN");
    return b ? b : DS_BINARY_DIR "/deltaslice";
}

static void test_infer_matches_executor(void **state)
{
    (void)state;
    const int H = 64, W = 96;
    ds_model m;
    ds_error err = {0};
    memset(&m, 0, sizeof m);
    if (ds_model_load("zoo:alexnet", &m, &err) || ds_model_set_input(&m, 1, 3, H, W, &err))
        fail_msg("%s", err.msg);
    ds_tensor x = {0}, y = {0};
    assert_int_equal(ds_tensor_reserve(&x, &m.layers[0].out_shape, DS_F32, NULL), 0);
    for (int64_t i = 0; i < ds_shape_numel(&x.shape); i++)
        ds_tensor_f32(&x)[i] = (float)((i * 7919) % 1000) / 1000.0f;
    char in[300], out[300], out_ref[300], out_l[300];
    snprintf(in, sizeof in, "%s/in.f32", dir);
    snprintf(out, sizeof out, "%s/out.f32", dir);
    snprintf(out_ref, sizeof out_ref, "%s/out_ref.f32", dir);
    snprintf(out_l, sizeof out_l, "%s/out_l.f32", dir);
    FILE *f = fopen(in, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(x.data, 4, (size_t)ds_shape_numel(&x.shape), f),
                     (size_t)ds_shape_numel(&x.shape));
    fclose(f);

    int ids[64];
    for (int i = 1; i < m.n_layers; i++)
        ids[i - 1] = i;
    ds_executor *ex = ds_executor_new(&m, DS_BACKEND_XNNPACK, 1, &err);
    assert_non_null(ex);
    ds_job job = {m.n_layers - 1, ids, 1, m.outputs};
    int in0 = 0;
    const ds_tensor *inp[1] = {&x};
    assert_int_equal(ds_executor_run(ex, &job, 1, &in0, inp, &y, &err), 0);

    assert_int_equal(sh("%s infer zoo:alexnet --input %s --shape 1x3x%dx%d --output %s >%s/log "
                        "2>&1",
                        bin(), in, H, W, out, dir),
                     0);
    size_t n;
    float *got = slurp(out, &n);
    assert_non_null(got);
    assert_int_equal(n, (size_t)ds_shape_numel(&y.shape));
    assert_memory_equal(got, y.data, n * 4);

    assert_int_equal(sh("%s infer zoo:alexnet -i %s -s 1x3x%dx%d -o %s --backend reference "
                        "--threads 2 >/dev/null 2>&1",
                        bin(), in, H, W, out_ref),
                     0);
    size_t nr;
    float *ref = slurp(out_ref, &nr);
    assert_int_equal(nr, n);
    double mx = 0, d = 0;
    /* Ternaries, not fmax: GCC 12.2 on arm64 (bookworm's) crashes vectorising an
     * fmax reduction of floats widened to double (ICE in vect_transform_reduction). */
    for (size_t i = 0; i < n; i++) {
        double a = fabs((double)ref[i]), e = fabs((double)ref[i] - got[i]);
        mx = a > mx ? a : mx;
        d = e > d ? e : d;
    }
    assert_true(mx > 0);
    assert_true(d <= 1e-5 * mx);

    /* --layers 1,13: the first conv (pre-Relu, negative values kept) then the output */
    assert_int_equal(sh("%s infer zoo:alexnet -i %s -s 1x3x%dx%d -o %s --layers 1,%d "
                        ">%s/layers.txt 2>/dev/null",
                        bin(), in, H, W, out_l, m.outputs[0], dir),
                     0);
    size_t nl;
    float *lay = slurp(out_l, &nl);
    size_t n1 = (size_t)ds_shape_numel(&m.layers[1].out_shape);
    assert_int_equal(nl, n1 + n);
    int neg = 0;
    for (size_t i = 0; i < n1; i++)
        neg += lay[i] < 0;
    assert_true(neg > 0);
    assert_memory_equal(lay + n1, got, n * 4);

    ds_executor_free(ex);
    free(got);
    free(ref);
    free(lay);
    ds_tensor_free(&x);
    ds_tensor_free(&y);
    ds_model_free(&m);
}

static void test_infer_errors(void **state)
{
    (void)state;
    char in[300];
    snprintf(in, sizeof in, "%s/small.f32", dir);
    FILE *f = fopen(in, "wb");
    float z[10] = {0};
    fwrite(z, 4, 10, f);
    fclose(f);
    /* file size does not match the shape: runtime failure, message names both */
    assert_int_equal(sh("%s infer zoo:alexnet -i %s -s 1x3x64x64 -o %s/o.f32 2>%s/err.txt",
                        bin(), in, dir, dir),
                     1);
    assert_int_equal(sh("grep -q 'needs 49152' %s/err.txt", dir), 0);
    /* usage errors */
    assert_int_equal(sh("%s infer zoo:alexnet -i %s -o x 2>/dev/null", bin(), in), 2);
    assert_int_equal(sh("%s infer zoo:alexnet -i %s -s 3x64x64 -o x 2>/dev/null", bin(), in), 2);
    assert_int_equal(sh("%s infer zoo:alexnet -i %s -s 1x3x8x8 -o x --backend gpu 2>/dev/null",
                        bin(), in),
                     2);
    assert_int_equal(sh("%s infer zoo:alexnet -i %s -s 1x3x8x8 -o x --threads 0 2>/dev/null",
                        bin(), in),
                     2);
    assert_int_equal(sh("%s infer --help | grep -q 'float32'", bin()), 0);
    /* unknown model, input too small for the network */
    assert_int_equal(sh("%s infer zoo:nope -i %s -s 1x1x2x5 -o %s/o.f32 2>/dev/null", bin(), in,
                        dir),
                     1);
    assert_int_equal(sh("%s infer zoo:alexnet -i %s -s 1x1x2x5 -o %s/o.f32 2>/dev/null", bin(),
                        in, dir),
                     1);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/ds_test_infer_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_matches_executor),
        cmocka_unit_test(test_infer_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
