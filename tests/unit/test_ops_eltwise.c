/* test_ops_eltwise.c - the element-wise ops of issue 15 (Clip, Sigmoid,
 * HardSigmoid, HardSwish, LeakyRelu, Mul, Sub, Div, Add with broadcasting,
 * PRelu) and the load-time folds around them, on both backends, against
 * straightforward formulas. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/exec.h"
#include "model/model.h"
#include "model/onnx.pb-c.h"
#include "model/op_table.h"

#include "onnx_builder.h"

static void run_be(ds_model *m, ds_backend be, const float *x, const int64_t *dims, ds_tensor *y)
{
    ds_error err = {0};
    ds_tensor in = {0};
    ds_shape s = ds_shape_nchw(dims[0], dims[1], dims[2], dims[3]);
    assert_int_equal(ds_tensor_reserve(&in, &s, DS_F32, &err), 0);
    memcpy(in.data, x, ds_tensor_bytes(&in));
    int *ids = malloc((size_t)m->n_layers * sizeof *ids);
    assert_non_null(ids);
    for (int i = 1; i < m->n_layers; i++)
        ids[i - 1] = i;
    ds_job job = {m->n_layers - 1, ids, 1, m->outputs};
    int in_id = 0;
    const ds_tensor *inp[1] = {&in};
    ds_executor *ex = ds_executor_new(m, be, be == DS_BACKEND_XNNPACK ? 2 : 1, &err);
    if (!ex)
        fail_msg("%s", err.msg);
    if (ds_executor_run(ex, &job, 1, &in_id, inp, y, &err))
        fail_msg("%s", err.msg);
    ds_executor_free(ex);
    free(ids);
    ds_tensor_free(&in);
}

/* Loads b, sets the input, runs both backends and compares with want
 * (numel values; tolerance of float rounding). */
static void check_model(tb *b, const int64_t *dims, const float *x, const float *want, int64_t numel, int n_layers)
{
    ds_model m;
    ds_error err;
    if (tb_load(b, &m, &err))
        fail_msg("%s", err.msg);
    if (n_layers > 0)
        assert_int_equal(m.n_layers, n_layers);
    if (ds_model_set_input(&m, dims[0], dims[1], dims[2], dims[3], &err))
        fail_msg("%s", err.msg);
    for (int be = 0; be < 2; be++) {
        ds_tensor y = {0};
        run_be(&m, (ds_backend)be, x, dims, &y);
        assert_int_equal(ds_shape_numel(&y.shape), numel);
        for (int64_t i = 0; i < numel; i++) {
            double g = ds_tensor_f32(&y)[i], w = want[i];
            if (!(fabs(g - w) <= 1e-5 + 1e-5 * fabs(w)))
                fail_msg("backend %d element %lld: %.9g, expected %.9g", be, (long long)i, g, w);
        }
        ds_tensor_free(&y);
    }
    ds_model_free(&m);
}

#define N1 2
#define C1 3
#define H1 4
#define W1 5
#define NUMEL1 (N1 * C1 * H1 * W1)
static const int64_t dims1[4] = {N1, C1, H1, W1};

static void input1(float *x)
{
    fill(x, NUMEL1, 7);
    for (int i = 0; i < NUMEL1; i++)
        x[i] *= 8.0f; /* -8..8: both sides of every bend */
}

/* ---- activations -------------------------------------------------------- */

static void test_clip(void **state)
{
    (void)state;
    float x[NUMEL1], want[NUMEL1];
    input1(x);
    /* opset 13: ReLU6 with constant inputs */
    tb b = tb_new(13);
    tb_input(&b, "x", N1, C1, H1, W1);
    tb_init(&b, "lo", 0, NULL, (float[]){0.0f});
    tb_init(&b, "hi", 0, NULL, (float[]){6.0f});
    tb_node(&b, "Clip", "relu6", "x,lo,hi", "y");
    tb_output(&b, "y");
    for (int i = 0; i < NUMEL1; i++)
        want[i] = x[i] < 0 ? 0 : x[i] > 6 ? 6 : x[i];
    check_model(&b, dims1, x, want, NUMEL1, 2);
    /* bounds from Constant nodes, as PyTorch exports ReLU6 */
    b = tb_new(17);
    tb_input(&b, "x", N1, C1, H1, W1);
    Onnx__NodeProto *k = tb_node(&b, "Constant", "k0", "", "lo");
    attr(k, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR)->t = tensor("lo", 0, NULL, (float[]){0.0f});
    k = tb_node(&b, "Constant", "k1", "", "hi");
    attr(k, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR)->t = tensor("hi", 0, NULL, (float[]){6.0f});
    tb_node(&b, "Clip", "relu6", "x,lo,hi", "y");
    tb_output(&b, "y");
    check_model(&b, dims1, x, want, NUMEL1, 2);
    /* a missing bound is unbounded */
    b = tb_new(17);
    tb_input(&b, "x", N1, C1, H1, W1);
    tb_init(&b, "hi", 1, (int64_t[]){1}, (float[]){1.5f});
    tb_node(&b, "Clip", "c", "x,,hi", "y");
    tb_output(&b, "y");
    for (int i = 0; i < NUMEL1; i++)
        want[i] = x[i] > 1.5f ? 1.5f : x[i];
    check_model(&b, dims1, x, want, NUMEL1, 2);
    /* opset 9: attributes */
    b = tb_new(9);
    tb_input(&b, "x", N1, C1, H1, W1);
    Onnx__NodeProto *n = tb_node(&b, "Clip", "c", "x", "y");
    a_float(n, "min", -1.0f);
    tb_output(&b, "y");
    for (int i = 0; i < NUMEL1; i++)
        want[i] = x[i] < -1 ? -1 : x[i];
    check_model(&b, dims1, x, want, NUMEL1, 2);
    /* a bound that is a layer output, a bound of two values, an attribute at opset 13 */
    b = tb_new(13);
    tb_input(&b, "x", N1, C1, H1, W1);
    tb_node(&b, "Relu", "r", "x", "rx");
    tb_node(&b, "Clip", "c", "x,rx", "y");
    tb_output(&b, "y");
    expect_load_error(&b, (const char *const[]){"node \"c\" (Clip)", "min", "initializer or Constant", NULL});
    b = tb_new(13);
    tb_input(&b, "x", N1, C1, H1, W1);
    tb_init(&b, "lo", 1, (int64_t[]){2}, (float[]){0, 1});
    tb_node(&b, "Clip", "c", "x,lo", "y");
    tb_output(&b, "y");
    expect_load_error(&b, (const char *const[]){"node \"c\" (Clip)", "min has 2 elements", NULL});
    b = tb_new(13);
    tb_input(&b, "x", N1, C1, H1, W1);
    a_float(tb_node(&b, "Clip", "c", "x", "y"), "min", 0.0f);
    tb_output(&b, "y");
    expect_load_error(&b, (const char *const[]){"node \"c\" (Clip)", "unsupported attribute min", NULL});
}

static void test_activations(void **state)
{
    (void)state;
    float x[NUMEL1], want[NUMEL1];
    input1(x);
    const char *ops[] = {"Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "HardSigmoid", "LeakyRelu"};
    for (int k = 0; k < 6; k++) {
        tb b = tb_new(k & 1 ? 17 : 13);
        tb_input(&b, "x", N1, C1, H1, W1);
        Onnx__NodeProto *n = tb_node(&b, ops[k], "act", "x", "y");
        float alpha = k == 1 ? 0.2f : 0.01f, beta = 0.5f;
        if (k == 4) { /* attributes given */
            a_float(n, "alpha", alpha = 0.3f);
            a_float(n, "beta", beta = 0.25f);
        } else if (k == 5) {
            a_float(n, "alpha", alpha = 0.5f);
        }
        tb_output(&b, "y");
        for (int i = 0; i < NUMEL1; i++) {
            double v = x[i];
            switch (k) {
            case 0: want[i] = (float)(1.0 / (1.0 + exp(-v))); break;
            case 1: case 4: want[i] = (float)fmax(0, fmin(1, alpha * v + beta)); break;
            case 2: want[i] = (float)(v * fmax(0, fmin(1, v / 6 + 0.5))); break;
            default: want[i] = (float)(v < 0 ? alpha * v : v); break;
            }
        }
        check_model(&b, dims1, x, want, NUMEL1, 2);
    }
    tb b = tb_new(13);
    tb_input(&b, "x", N1, C1, H1, W1);
    a_float(tb_node(&b, "LeakyRelu", "lr", "x", "y"), "beta", 1.0f);
    tb_output(&b, "y");
    expect_load_error(&b, (const char *const[]){"node \"lr\" (LeakyRelu)", "unsupported attribute beta", NULL});
    b = tb_new(13);
    tb_input(&b, "x", N1, C1, H1, W1);
    a_float(tb_node(&b, "Sigmoid", "s", "x", "y"), "alpha", 1.0f);
    tb_output(&b, "y");
    expect_load_error(&b, (const char *const[]){"node \"s\" (Sigmoid)", "unsupported attribute alpha", NULL});
}

/* ---- broadcasting -------------------------------------------------------- */

static void test_bcast_shapes(void **state)
{
    (void)state;
    struct {
        int ra;
        int64_t a[4];
        int rb;
        int64_t b[4];
        int ro; /* 0: no broadcast */
        int64_t o[4];
    } t[] = {
        {4, {2, 3, 4, 5}, 4, {2, 3, 1, 1}, 4, {2, 3, 4, 5}},
        {4, {2, 3, 4, 5}, 3, {3, 1, 1}, 4, {2, 3, 4, 5}},
        {4, {2, 3, 4, 5}, 1, {1}, 4, {2, 3, 4, 5}},
        {4, {2, 3, 4, 5}, 1, {5}, 4, {2, 3, 4, 5}},
        {2, {4, 1}, 1, {3}, 2, {4, 3}},
        {4, {1, 3, 1, 5}, 4, {2, 1, 4, 1}, 4, {2, 3, 4, 5}},
        {4, {2, 3, 4, 5}, 1, {4}, 0, {0}},
        {2, {2, 3}, 2, {3, 2}, 0, {0}},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        ds_shape a = ds_shape_make(t[i].ra, t[i].a), b = ds_shape_make(t[i].rb, t[i].b), o;
        for (int swap = 0; swap < 2; swap++) {
            int rc = swap ? ds_bcast_shape(&b, &a, &o) : ds_bcast_shape(&a, &b, &o);
            if (!t[i].ro) {
                assert_int_equal(rc, -1);
                continue;
            }
            assert_int_equal(rc, 0);
            ds_shape want = ds_shape_make(t[i].ro, t[i].o);
            assert_true(ds_shape_equal(&o, &want));
        }
    }
}

/* Naive broadcast of y = a op b over 4-D index space (dims padded). */
static float bop(char op, float a, float b)
{
    return op == '*' ? a * b : op == '-' ? a - b : op == '/' ? a / b : op == 'p' ? (a < 0 ? a * b : a) : a + b;
}

static float at4(const float *p, const int64_t *d, int i0, int i1, int i2, int i3)
{
    int64_t ix[4] = {i0, i1, i2, i3}, off = 0;
    for (int k = 0; k < 4; k++)
        off = off * d[k] + (d[k] == 1 ? 0 : ix[k]);
    return p[off];
}

/* squeeze-excite: x * GlobalAveragePool(x), two layers of different shapes */
static void test_mul_squeeze_excite(void **state)
{
    (void)state;
    float x[NUMEL1], want[NUMEL1], s[N1 * C1];
    input1(x);
    for (int i = 0; i < N1 * C1; i++) {
        double a = 0;
        for (int j = 0; j < H1 * W1; j++)
            a += x[i * H1 * W1 + j];
        s[i] = (float)(a / (H1 * W1));
    }
    const char *ops[] = {"Mul", "Sub", "Div", "Add"};
    for (int k = 0; k < 4; k++)
        for (int swap = 0; swap < 2; swap++) {
            tb b = tb_new(13);
            tb_input(&b, "x", N1, C1, H1, W1);
            tb_node(&b, "GlobalAveragePool", "gap", "x", "s");
            tb_node(&b, ops[k], "op", swap ? "s,x" : "x,s", "y");
            tb_output(&b, "y");
            for (int i = 0; i < NUMEL1; i++) {
                float a = x[i], c = s[i / (H1 * W1)];
                want[i] = bop("*-/+"[k], swap ? c : a, swap ? a : c);
            }
            check_model(&b, dims1, x, want, NUMEL1, 3);
        }
}

/* tensor x constant, either side, several constant shapes */
static void test_binary_const(void **state)
{
    (void)state;
    float x[NUMEL1], want[NUMEL1], cst[NUMEL1];
    input1(x);
    fill(cst, NUMEL1, 99);
    for (int i = 0; i < NUMEL1; i++)
        cst[i] += cst[i] < 0 ? -0.5f : 0.5f; /* away from 0 for Div */
    struct {
        int r;
        int64_t d[4];
    } shapes[] = {{3, {C1, 1, 1}}, {4, {1, C1, 1, 1}}, {1, {1}}, {1, {W1}}, {3, {C1, H1, W1}}, {4, {N1, 1, H1, 1}}};
    const char *ops[] = {"Mul", "Sub", "Div", "Add", "PRelu"};
    for (int k = 0; k < 5; k++)
        for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
            for (int first = 0; first < (k == 4 ? 1 : 2); first++) {
                tb b = tb_new(13);
                tb_input(&b, "x", N1, C1, H1, W1);
                tb_init(&b, "c", shapes[sh].r, shapes[sh].d, cst);
                tb_node(&b, ops[k], "op", first ? "c,x" : "x,c", "y");
                tb_output(&b, "y");
                int64_t cd[4];
                for (int d = 0; d < 4; d++) {
                    int j = d - (4 - shapes[sh].r);
                    cd[d] = j >= 0 ? shapes[sh].d[j] : 1;
                }
                int i = 0;
                for (int i0 = 0; i0 < N1; i0++)
                    for (int i1 = 0; i1 < C1; i1++)
                        for (int i2 = 0; i2 < H1; i2++)
                            for (int i3 = 0; i3 < W1; i3++, i++) {
                                float a = x[i], c = at4(cst, cd, i0, i1, i2, i3);
                                want[i] = bop("*-/+p"[k], first ? c : a, first ? a : c);
                            }
                check_model(&b, dims1, x, want, NUMEL1, 2);
            }
    /* shapes that do not broadcast fail at set_input, naming the layer */
    tb b = tb_new(13);
    tb_input(&b, "x", N1, C1, H1, W1);
    tb_init(&b, "c", 1, (int64_t[]){4}, cst);
    tb_node(&b, "Mul", "m", "x,c", "y");
    tb_output(&b, "y");
    ds_model m;
    ds_error err;
    assert_int_equal(tb_load(&b, &m, &err), 0);
    assert_int_equal(ds_model_set_input(&m, N1, C1, H1, W1, &err), -1);
    assert_non_null(strstr(err.msg, "\"m\" (Mul)"));
    assert_non_null(strstr(err.msg, "do not broadcast"));
    ds_model_free(&m);
    /* PRelu's slope broadcasts to X only (not X to the slope) */
    b = tb_new(13);
    tb_input(&b, "x", 1, C1, H1, W1);
    tb_init(&b, "c", 4, (int64_t[]){2, C1, 1, 1}, cst);
    tb_node(&b, "PRelu", "pr", "x,c", "y");
    tb_output(&b, "y");
    assert_int_equal(tb_load(&b, &m, &err), 0);
    assert_int_equal(ds_model_set_input(&m, 1, C1, H1, W1, &err), -1);
    assert_non_null(strstr(err.msg, "\"pr\" (PRelu)"));
    ds_model_free(&m);
    /* a layer as PRelu slope; two constants */
    b = tb_new(13);
    tb_input(&b, "x", 1, C1, H1, W1);
    tb_node(&b, "Relu", "r", "x", "rx");
    tb_node(&b, "PRelu", "pr", "x,rx", "y");
    tb_output(&b, "y");
    expect_load_error(&b, (const char *const[]){"node \"pr\" (PRelu)", "slope must be an initializer", NULL});
    b = tb_new(13);
    tb_input(&b, "x", 1, C1, H1, W1);
    tb_init(&b, "c", 1, (int64_t[]){1}, cst);
    tb_node(&b, "Div", "d", "c,c", "y");
    tb_output(&b, "y");
    expect_load_error(&b, (const char *const[]){"node \"d\" (Div)", "is not int64 or int32 (shape arithmetic is on integers)", NULL});
}

/* SiLU as PyTorch exports it: Sigmoid + Mul of x and its own sigmoid loads
 * as one SiLU layer, whose result has the same bits as the pair's (kept
 * apart when the sigmoid is read elsewhere too), on both backends. */
static void test_silu(void **state)
{
    (void)state;
    float x[NUMEL1], want[NUMEL1];
    input1(x);
    for (int opset = 13; opset <= 17; opset += 4) {
        tb b = tb_new(opset);
        tb_input(&b, "x", N1, C1, H1, W1);
        tb_node(&b, "Sigmoid", "sig", "x", "s");
        tb_node(&b, "Mul", "silu", "s,x", "y");
        tb_output(&b, "y");
        for (int i = 0; i < NUMEL1; i++)
            want[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
        check_model(&b, dims1, x, want, NUMEL1, 2);
    }
    ds_model m[2];
    ds_error err;
    for (int k = 0; k < 2; k++) {
        tb b = tb_new(13);
        tb_input(&b, "x", N1, C1, H1, W1);
        tb_node(&b, "Sigmoid", "sig", "x", "s");
        tb_node(&b, "Mul", "silu", "x,s", "y");
        tb_output(&b, "y");
        if (k)
            tb_output(&b, "s"); /* read twice: no fold */
        if (tb_load(&b, &m[k], &err) || ds_model_set_input(&m[k], N1, C1, H1, W1, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(m[k].n_layers, k ? 3 : 2);
        assert_int_equal(m[k].layers[1].op, k ? DS_OP_SIGMOID : DS_OP_SILU);
    }
    for (int be = 0; be < 2; be++) {
        ds_tensor y[2];
        memset(y, 0, sizeof y);
        for (int k = 0; k < 2; k++)
            run_be(&m[k], (ds_backend)be, x, dims1, &y[k]);
        assert_memory_equal(y[0].data, y[1].data, NUMEL1 * sizeof(float));
        ds_tensor_free(&y[0]);
        ds_tensor_free(&y[1]);
    }
    ds_model_free(&m[0]);
    ds_model_free(&m[1]);
}

/* Hardswish as PyTorch exports it below opset 14: x * HardSigmoid(x) with
 * alpha 1/6, beta 1/2 becomes one HardSwish layer; other alphas, a
 * HardSigmoid read twice or of another tensor stay two layers. */
static void test_fold_hardswish(void **state)
{
    (void)state;
    float x[NUMEL1], want[NUMEL1];
    input1(x);
    for (int variant = 0; variant < 4; variant++) {
        tb b = tb_new(13);
        tb_input(&b, "x", N1, C1, H1, W1);
        tb_node(&b, "Relu", "r", "x", "rx");
        float alpha = variant == 1 ? 0.2f : 1.0f / 6.0f;
        Onnx__NodeProto *hs = tb_node(&b, "HardSigmoid", "hs", variant == 3 ? "rx" : "x", "h");
        a_float(hs, "alpha", alpha);
        a_float(hs, "beta", 0.5f);
        tb_node(&b, "Mul", "mul", variant == 0 ? "h,x" : "x,h", "m"); /* the fold looks at both operands */
        if (variant == 2) /* the HardSigmoid is also an output */
            tb_node(&b, "Add", "add", "m,h", "y");
        else
            tb_node(&b, "Add", "add", "m,rx", "y");
        tb_output(&b, "y");
        for (int i = 0; i < NUMEL1; i++) {
            float v = x[i], r = v > 0 ? v : 0, hv = fmaxf(0, fminf(1, alpha * (variant == 3 ? r : v) + 0.5f));
            want[i] = v * hv + (variant == 2 ? hv : r);
        }
        /* input, relu, [hardswish] or [hardsigmoid, mul], add */
        check_model(&b, dims1, x, want, NUMEL1, variant == 0 ? 4 : 5);
    }
}

/* ---- folds at load ------------------------------------------------------ */

enum { FC = 3, FO = 4, FK = 3, FH = 6, FW = 6, FN = FO * FH * FW };

/* x -> Conv (3x3, pad 1, bias when given) -> "c"; the caller adds the rest. */
static tb conv_graph(int opset, const float *w, const float *bias)
{
    tb b = tb_new(opset);
    tb_input(&b, "x", 1, FC, FH, FW);
    tb_init(&b, "W", 4, (int64_t[]){FO, FC, FK, FK}, w);
    if (bias)
        tb_init(&b, "B", 1, (int64_t[]){FO}, bias);
    Onnx__NodeProto *n = tb_node(&b, "Conv", "conv", bias ? "x,W,B" : "x,W", "c");
    a_ints(n, "pads", 4, (int64_t[]){1, 1, 1, 1});
    return b;
}

static void test_fold_scale_shift_clip(void **state)
{
    (void)state;
    float x[FC * FH * FW], w[FO * FC * FK * FK], bias[FO], sc[FO], sh[FO], conv[FN], want[FN];
    fill(x, FC * FH * FW, 1);
    fill(w, FO * FC * FK * FK, 2);
    fill(bias, FO, 3);
    fill(sc, FO, 4);
    fill(sh, FO, 5);
    const int64_t dims[4] = {1, FC, FH, FW};
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        naive_conv(x, FC, FH, FW, w, with_bias ? bias : NULL, FO, FK, 1, conv);
        /* Conv -> Mul(scale[O,1,1], constant first) -> Add(shift[1,O,1,1]) -> Add(2.5) -> Mul(0.5) -> Clip(0,6):
         * one layer */
        tb b = conv_graph(13, w, with_bias ? bias : NULL);
        tb_init(&b, "s", 3, (int64_t[]){FO, 1, 1}, sc);
        tb_init(&b, "t", 4, (int64_t[]){1, FO, 1, 1}, sh);
        tb_init(&b, "k", 0, NULL, (float[]){2.5f});
        tb_init(&b, "h", 1, (int64_t[]){1}, (float[]){0.5f});
        tb_init(&b, "lo", 0, NULL, (float[]){0.0f});
        tb_init(&b, "hi", 0, NULL, (float[]){6.0f});
        tb_node(&b, "Mul", "mul", "s,c", "m");
        tb_node(&b, "Add", "add", "m,t", "a");
        tb_node(&b, "Add", "add2", "a,k", "a2");
        tb_node(&b, "Mul", "mul2", "a2,h", "m2");
        tb_node(&b, "Clip", "relu6", "m2,lo,hi", "y");
        tb_output(&b, "y");
        for (int i = 0; i < FN; i++) {
            int o = i / (FH * FW);
            float v = ((conv[i] * sc[o] + sh[o]) + 2.5f) * 0.5f;
            want[i] = v < 0 ? 0 : v > 6 ? 6 : v;
        }
        check_model(&b, dims, x, want, FN, 2);
    }
    /* a Conv whose output has two consumers is not folded */
    naive_conv(x, FC, FH, FW, w, bias, FO, FK, 1, conv);
    tb b = conv_graph(13, w, bias);
    tb_init(&b, "s", 3, (int64_t[]){FO, 1, 1}, sc);
    tb_node(&b, "Mul", "mul", "c,s", "m");
    tb_node(&b, "Add", "res", "m,c", "y");
    tb_output(&b, "y");
    for (int i = 0; i < FN; i++)
        want[i] = conv[i] * sc[i / (FH * FW)] + conv[i];
    check_model(&b, dims, x, want, FN, 4);
    /* ... nor is it when the conv's output is also a graph output */
    b = conv_graph(13, w, bias);
    tb_node(&b, "Clip", "clip", "c", "y");
    tb_output(&b, "y");
    tb_output(&b, "c");
    check_model(&b, dims, x, conv, FN, 3);
    /* a constant that is not per channel (varies along W) stays a layer */
    float row[FW];
    fill(row, FW, 6);
    b = conv_graph(13, w, bias);
    tb_init(&b, "r", 4, (int64_t[]){1, 1, 1, FW}, row);
    tb_node(&b, "Mul", "mul", "c,r", "y");
    tb_output(&b, "y");
    for (int i = 0; i < FN; i++)
        want[i] = conv[i] * row[i % FW];
    check_model(&b, dims, x, want, FN, 3);
    /* Clip folds; a Mul after the clamp does not; Sub never does */
    b = conv_graph(11, w, bias);
    tb_init(&b, "lo", 0, NULL, (float[]){-0.5f});
    tb_init(&b, "s", 3, (int64_t[]){FO, 1, 1}, sc);
    tb_node(&b, "Clip", "clip", "c,lo", "cl");
    tb_node(&b, "Mul", "mul", "cl,s", "m");
    tb_node(&b, "Sub", "sub", "m,s", "y");
    tb_output(&b, "y");
    for (int i = 0; i < FN; i++) {
        int o = i / (FH * FW);
        want[i] = (conv[i] < -0.5f ? -0.5f : conv[i]) * sc[o] - sc[o];
    }
    check_model(&b, dims, x, want, FN, 4);
    /* Clip then Relu: the XNNPACK backend fuses the Relu into the clamp */
    b = conv_graph(9, w, bias);
    Onnx__NodeProto *n = tb_node(&b, "Clip", "clip", "c", "cl");
    a_float(n, "min", -0.5f);
    a_float(n, "max", 0.75f);
    tb_node(&b, "Relu", "relu", "cl", "y");
    tb_output(&b, "y");
    for (int i = 0; i < FN; i++)
        want[i] = conv[i] < 0 ? 0 : conv[i] > 0.75f ? 0.75f : conv[i];
    check_model(&b, dims, x, want, FN, 3);
}

/* The Winograd path (3x3, >= 16 channels) with a folded Clip. */
static void test_fold_clip_winograd(void **state)
{
    (void)state;
    enum { C = 16, O = 16, H = 8, W = 8, N = O * H * W };
    static float x[C * H * W], w[O * C * 9], bias[O], conv[N], want[N];
    fill(x, C * H * W, 11);
    fill(w, O * C * 9, 12);
    fill(bias, O, 13);
    naive_conv(x, C, H, W, w, bias, O, 3, 1, conv);
    for (int relu = 0; relu < 2; relu++) {
        tb b = tb_new(13);
        tb_input(&b, "x", 1, C, H, W);
        tb_init(&b, "W", 4, (int64_t[]){O, C, 3, 3}, w);
        tb_init(&b, "B", 1, (int64_t[]){O}, bias);
        tb_init(&b, "lo", 0, NULL, (float[]){-1.0f});
        tb_init(&b, "hi", 0, NULL, (float[]){1.0f});
        a_ints(tb_node(&b, "Conv", "conv", "x,W,B", "c"), "pads", 4, (int64_t[]){1, 1, 1, 1});
        tb_node(&b, "Clip", "clip", "c,lo,hi", relu ? "cl" : "y");
        if (relu)
            tb_node(&b, "Relu", "relu", "cl", "y");
        tb_output(&b, "y");
        for (int i = 0; i < N; i++) {
            float lo = relu ? 0.0f : -1.0f;
            want[i] = conv[i] < lo ? lo : conv[i] > 1.0f ? 1.0f : conv[i];
        }
        check_model(&b, (int64_t[]){1, C, H, W}, x, want, N, 2 + relu);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_bcast_shapes),
        cmocka_unit_test(test_mul_squeeze_excite),
        cmocka_unit_test(test_binary_const),
        cmocka_unit_test(test_silu),
        cmocka_unit_test(test_fold_hardswish),
        cmocka_unit_test(test_fold_scale_shift_clip),
        cmocka_unit_test(test_fold_clip_winograd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
