/* test_engine.c - kernels and executor on hand-built layers: the reference
 * kernels against hand-computed values, the XNNPACK path against the
 * reference on random shapes and attributes, job validation, pass-through,
 * buffer reuse and Conv+Relu fusion that never hides a requested output. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/backend_xnn.h"
#include "engine/exec.h"
#include "engine/ops.h"

/* ---- a tiny model built by hand ---- */

#define MAXL 16

typedef struct tmodel {
    ds_model m;
    ds_layer l[MAXL];
    int in[MAXL][MAXL];
    int cons[MAXL][MAXL];
} tmodel;

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static int rint_(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }
static float rflt(void) { return (float)((double)rnd() / 4294967296.0 * 2.0 - 1.0); }

static void fill(ds_tensor *t, const ds_shape *s)
{
    assert_int_equal(ds_tensor_reserve(t, s, DS_F32, NULL), 0);
    for (int64_t i = 0; i < ds_shape_numel(s); i++)
        ds_tensor_f32(t)[i] = rflt();
}

static void tm_init(tmodel *t, ds_shape in)
{
    memset(t, 0, sizeof *t);
    t->m.name = "hand";
    t->m.opset = 17;
    t->m.layers = t->l;
    t->m.n_layers = 1;
    t->l[0].op = DS_OP_INPUT;
    t->l[0].name = "input";
    t->l[0].out_shape = in;
    t->l[0].inputs = t->in[0];
    t->l[0].consumers = t->cons[0];
}

/* Appends a layer of op over the given producers; attributes are set by the
 * caller afterwards, then tm_shape() fills its out_shape (the model's shape
 * rule, which the executors check and then trust). */
static ds_layer *tm_add(tmodel *t, ds_op op, int n_in, ...)
{
    int id = t->m.n_layers++;
    assert_true(id < MAXL);
    ds_layer *l = &t->l[id];
    l->id = id;
    l->op = op;
    l->name = "layer";
    l->inputs = t->in[id];
    l->consumers = t->cons[id];
    l->n_inputs = n_in;
    l->stride[0] = l->stride[1] = 1;
    l->dilation[0] = l->dilation[1] = 1;
    l->group = 1;
    l->axis = 1;
    va_list ap;
    va_start(ap, n_in);
    for (int i = 0; i < n_in; i++) {
        int p = va_arg(ap, int);
        l->inputs[i] = p;
        t->l[p].consumers[t->l[p].n_consumers++] = id;
    }
    va_end(ap);
    return l;
}

static int tm_shape(tmodel *t, ds_layer *l)
{
    return ds_model_shape_layer(&t->m, l->id, NULL);
}

static void tm_free(tmodel *t)
{
    for (int i = 0; i < t->m.n_layers; i++) {
        ds_tensor_free(&t->l[i].weight);
        ds_tensor_free(&t->l[i].bias);
    }
}

static double max_abs(const ds_tensor *t)
{
    double m = 0;
    for (int64_t i = 0; i < ds_shape_numel(&t->shape); i++)
        m = fmax(m, fabs(ds_tensor_f32(t)[i]));
    return m;
}

/* Relative difference (to b's largest magnitude) of two tensors. */
static double rel_diff(const ds_tensor *a, const ds_tensor *b)
{
    assert_true(ds_shape_equal(&a->shape, &b->shape));
    double d = 0, m = max_abs(b);
    for (int64_t i = 0; i < ds_shape_numel(&a->shape); i++)
        d = fmax(d, fabs((double)ds_tensor_f32(a)[i] - ds_tensor_f32(b)[i]));
    return m > 0 ? d / m : d;
}

/* Runs exec_ids on both backends with inputs for in_ids; compares out_ids. */
static void both_backends(tmodel *t, int n_in, const int *in_ids, ds_tensor *ins, int n_exec,
                          const int *exec_ids, int n_out, const int *out_ids, int threads)
{
    ds_error err = {0};
    const ds_tensor *inp[MAXL];
    for (int i = 0; i < n_in; i++)
        inp[i] = &ins[i];
    ds_tensor ref[MAXL] = {0}, fast[MAXL] = {0};
    ds_job job = {n_exec, exec_ids, n_out, out_ids};
    ds_executor *er = ds_executor_new(&t->m, DS_BACKEND_REFERENCE, 1, &err);
    ds_executor *ex = ds_executor_new(&t->m, DS_BACKEND_XNNPACK, threads, &err);
    assert_non_null(er);
    assert_non_null(ex);
    int rc = ds_executor_run(er, &job, n_in, in_ids, inp, ref, &err);
    if (rc)
        fail_msg("reference: %s", err.msg);
    rc = ds_executor_run(ex, &job, n_in, in_ids, inp, fast, &err);
    if (rc)
        fail_msg("xnnpack: %s", err.msg);
    for (int i = 0; i < n_out; i++) {
        double d = rel_diff(&fast[i], &ref[i]);
        if (d > 1e-5) {
            const ds_layer *l = &t->l[out_ids[i]];
            char a[64], b[64];
            fail_msg("%s out %d: rel diff %g (in %s out %s k %dx%d s %d,%d d %d,%d p %d,%d,%d,%d "
                     "g %d ceil %d cip %d axis %d)",
                     ds_op_name(l->op), out_ids[i], d,
                     ds_shape_str(&t->l[l->inputs[0]].out_shape, a, sizeof a),
                     ds_shape_str(&l->out_shape, b, sizeof b), l->kernel[0], l->kernel[1],
                     l->stride[0], l->stride[1], l->dilation[0], l->dilation[1], l->pads[0],
                     l->pads[1], l->pads[2], l->pads[3], l->group, l->ceil_mode,
                     l->count_include_pad, l->axis);
        }
        assert_true(ds_shape_equal(&fast[i].shape, &t->l[out_ids[i]].out_shape));
        ds_tensor_free(&fast[i]);
        ds_tensor_free(&ref[i]);
    }
    ds_executor_free(er);
    ds_executor_free(ex);
}

/* One op on the network input, random input of shape in. */
static void single(tmodel *t, ds_shape in, int threads)
{
    ds_tensor x = {0};
    fill(&x, &in);
    int in_ids[1] = {0}, ex_ids[1] = {1}, out_ids[1] = {1};
    both_backends(t, 1, in_ids, &x, 1, ex_ids, 1, out_ids, threads);
    ds_tensor_free(&x);
}

static ds_shape rand4(int maxc, int maxhw)
{
    return ds_shape_nchw(rint_(1, 2), rint_(1, maxc), rint_(1, maxhw), rint_(1, maxhw));
}

/* ---- reference kernels against hand-computed values ---- */

static void run_ref1(tmodel *t, const float *x, ds_tensor *y)
{
    ds_tensor xt = {0};
    assert_int_equal(ds_tensor_reserve(&xt, &t->l[0].out_shape, DS_F32, NULL), 0);
    memcpy(xt.data, x, ds_tensor_bytes(&xt));
    const ds_tensor *in[1] = {&xt};
    ds_error err;
    if (ds_model_shape_layer(&t->m, 1, &err) || ds_ref_run(&t->m, 1, 1, in, y, &err))
        fail_msg("%s", err.msg);
    ds_tensor_free(&xt);
}

static void test_ref_values(void **state)
{
    (void)state;
    tmodel t;
    ds_tensor y = {0};
    const float x9[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

    /* conv 2x2 of ones, pad 1 left/top only, bias 0.5 */
    tm_init(&t, ds_shape_nchw(1, 1, 3, 3));
    ds_layer *l = tm_add(&t, DS_OP_CONV, 1, 0);
    ds_shape ws = ds_shape_nchw(1, 1, 2, 2);
    int64_t one = 1;
    ds_shape bs = ds_shape_make(1, &one);
    assert_int_equal(ds_tensor_reserve(&l->weight, &ws, DS_F32, NULL), 0);
    assert_int_equal(ds_tensor_reserve(&l->bias, &bs, DS_F32, NULL), 0);
    for (int i = 0; i < 4; i++)
        ds_tensor_f32(&l->weight)[i] = 1;
    ds_tensor_f32(&l->bias)[0] = 0.5f;
    l->kernel[0] = l->kernel[1] = 2;
    l->pads[0] = l->pads[1] = 1;
    run_ref1(&t, x9, &y);
    const float conv_want[9] = {1.5, 3.5, 5.5, 5.5, 12.5, 16.5, 11.5, 24.5, 28.5};
    assert_int_equal(y.shape.dims[2], 3);
    for (int i = 0; i < 9; i++)
        assert_float_equal(ds_tensor_f32(&y)[i], conv_want[i], 1e-6);
    tm_free(&t);

    /* maxpool 2x2 s2 ceil_mode on 3x3: windows clipped at the border */
    tm_init(&t, ds_shape_nchw(1, 1, 3, 3));
    l = tm_add(&t, DS_OP_MAXPOOL, 1, 0);
    l->kernel[0] = l->kernel[1] = 2;
    l->stride[0] = l->stride[1] = 2;
    l->ceil_mode = 1;
    run_ref1(&t, x9, &y);
    const float mp_want[4] = {5, 6, 8, 9};
    assert_int_equal(y.shape.dims[2], 2);
    for (int i = 0; i < 4; i++)
        assert_float_equal(ds_tensor_f32(&y)[i], mp_want[i], 0);

    /* avgpool 2x2 s1 pads 1: with and without counting pads */
    l->op = DS_OP_AVGPOOL;
    l->ceil_mode = 0;
    l->stride[0] = l->stride[1] = 2;
    l->pads[0] = l->pads[1] = l->pads[2] = l->pads[3] = 1;
    run_ref1(&t, x9, &y); /* out 2x2: windows {1}, {2,3}, {4,7}, {5,6,8,9} */
    const float ap_want[4] = {1, 2.5, 5.5, 7};
    for (int i = 0; i < 4; i++)
        assert_float_equal(ds_tensor_f32(&y)[i], ap_want[i], 1e-6);
    l->count_include_pad = 1;
    run_ref1(&t, x9, &y);
    const float apc_want[4] = {0.25, 1.25, 2.75, 7};
    for (int i = 0; i < 4; i++)
        assert_float_equal(ds_tensor_f32(&y)[i], apc_want[i], 1e-6);
    tm_free(&t);

    /* LRN size 3 over 3 channels of one pixel, against the ONNX formula */
    tm_init(&t, ds_shape_nchw(1, 3, 1, 1));
    l = tm_add(&t, DS_OP_LRN, 1, 0);
    l->lrn_size = 3;
    l->lrn_alpha = 0.3f;
    l->lrn_beta = 0.75f;
    l->lrn_bias = 2.0f;
    const float xc[3] = {1, 2, 3};
    run_ref1(&t, xc, &y);
    double sq[3] = {1 + 4, 1 + 4 + 9, 4 + 9};
    for (int i = 0; i < 3; i++)
        assert_float_equal(ds_tensor_f32(&y)[i], xc[i] / pow(2.0 + 0.1 * sq[i], 0.75), 1e-6);

    /* softmax over channels, and batchnorm scale/shift */
    l->op = DS_OP_SOFTMAX;
    l->axis = 1;
    run_ref1(&t, xc, &y);
    double z = exp(1) + exp(2) + exp(3);
    for (int i = 0; i < 3; i++)
        assert_float_equal(ds_tensor_f32(&y)[i], exp(xc[i]) / z, 1e-6);
    tm_free(&t);

    ds_tensor_free(&y);
}

/* ---- XNNPACK vs reference on random shapes ---- */

static void rand_conv(tmodel *t, ds_shape in, int fuse_check)
{
    ds_layer *l;
    for (;;) {
        tm_init(t, in);
        l = tm_add(t, DS_OP_CONV, 1, 0);
        int C = (int)in.dims[1];
        int g = (int)(rnd() % 3) == 0 ? C : ((rnd() % 2) && C % 2 == 0 ? 2 : 1);
        int og = rint_(1, 4);
        l->group = g;
        l->kernel[0] = rint_(1, 5);
        l->kernel[1] = rint_(1, 5);
        l->stride[0] = rint_(1, 3);
        l->stride[1] = rint_(1, 3);
        l->dilation[0] = rint_(1, 2);
        l->dilation[1] = rint_(1, 2);
        for (int i = 0; i < 4; i++)
            l->pads[i] = rint_(0, 2);
        ds_shape ws = ds_shape_nchw(g * og, C / g, l->kernel[0], l->kernel[1]);
        fill(&l->weight, &ws);
        if (rnd() % 2) {
            int64_t o = g * og;
            ds_shape bs = ds_shape_make(1, &o);
            fill(&l->bias, &bs);
        }
        if (tm_shape(t, l) == 0)
            break;
        tm_free(t);
    }
    if (fuse_check) {
        ds_layer *r = tm_add(t, DS_OP_RELU, 1, 1);
        assert_int_equal(tm_shape(t, r), 0);
    }
}

static void test_conv_random(void **state)
{
    (void)state;
    for (int it = 0; it < 150; it++) {
        tmodel t;
        ds_shape in = rand4(8, 14);
        rand_conv(&t, in, 0);
        single(&t, in, 1 + it % 2);
        tm_free(&t);
    }
}

/* With a tiny indirection limit every conv with spatial taps runs in bands
 * of output rows (operators reused across bands of the same shape). */
static void test_conv_banded(void **state)
{
    (void)state;
    ds_xnn_set_band_limit(2048);
    for (int it = 0; it < 60; it++) {
        tmodel t;
        ds_shape in = rand4(8, 20);
        rand_conv(&t, in, it % 2);
        int in_ids[1] = {0}, ex_ids[2] = {1, 2}, out_ids[1] = {t.m.n_layers - 1};
        ds_tensor x = {0};
        fill(&x, &in);
        both_backends(&t, 1, in_ids, &x, t.m.n_layers - 1, ex_ids, 1, out_ids, 1 + it % 2);
        ds_tensor_free(&x);
        tm_free(&t);
    }
    ds_xnn_set_band_limit(2u << 20);
}

/* Stride-1 3x3 and 5x5 convs with >= 16 channels take the Winograd path. */
static void test_conv_winograd(void **state)
{
    (void)state;
    for (int it = 0; it < 24; it++) {
        tmodel t;
        ds_shape in = ds_shape_nchw(rint_(1, 2), rint_(16, 40), rint_(1, 19), rint_(1, 23));
        int k = it % 3 == 2 ? 5 : 3;
        tm_init(&t, in);
        ds_layer *l = tm_add(&t, DS_OP_CONV, 1, 0);
        l->kernel[0] = l->kernel[1] = k;
        for (int i = 0; i < 4; i++)
            l->pads[i] = rint_(0, k / 2 + 1);
        int64_t o = rint_(16, 48);
        ds_shape ws = ds_shape_nchw(o, in.dims[1], k, k);
        fill(&l->weight, &ws);
        if (it % 2) {
            ds_shape bs = ds_shape_make(1, &o);
            fill(&l->bias, &bs);
        }
        if (tm_shape(&t, l)) {
            tm_free(&t);
            continue;
        }
        assert_int_equal(tm_shape(&t, tm_add(&t, DS_OP_RELU, 1, 1)), 0);
        ds_tensor x = {0};
        fill(&x, &in);
        int in_ids[1] = {0}, ex_ids[2] = {1, 2}, out_relu[1] = {2}, out_conv[1] = {1};
        both_backends(&t, 1, in_ids, &x, 2, ex_ids, 1, out_relu, 1 + it % 2);
        both_backends(&t, 1, in_ids, &x, 1, ex_ids, 1, out_conv, 1);
        ds_tensor_free(&x);
        tm_free(&t);
    }
}

static void test_conv_relu_fusion(void **state)
{
    (void)state;
    for (int it = 0; it < 40; it++) {
        tmodel t;
        ds_shape in = rand4(6, 12);
        rand_conv(&t, in, 1);
        ds_tensor x = {0};
        fill(&x, &in);
        int in_ids[1] = {0}, ex_ids[2] = {1, 2};
        int out_relu[1] = {2}, out_both[2] = {1, 2}, out_conv[1] = {1};
        both_backends(&t, 1, in_ids, &x, 2, ex_ids, 1, out_relu, 1); /* fused */
        both_backends(&t, 1, in_ids, &x, 2, ex_ids, 2, out_both, 1); /* conv requested */
        both_backends(&t, 1, in_ids, &x, 1, ex_ids, 1, out_conv, 1); /* relu elsewhere */
        ds_tensor_free(&x);
        tm_free(&t);
    }
}

/* The conv output obtained next to its Relu keeps its negative values. */
static void test_fusion_keeps_requested_conv(void **state)
{
    (void)state;
    tmodel t;
    ds_shape in = ds_shape_nchw(1, 3, 8, 8);
    tm_init(&t, in);
    ds_layer *l = tm_add(&t, DS_OP_CONV, 1, 0);
    l->kernel[0] = l->kernel[1] = 3;
    ds_shape ws = ds_shape_nchw(4, 3, 3, 3);
    fill(&l->weight, &ws);
    assert_int_equal(tm_shape(&t, l), 0);
    ds_layer *r = tm_add(&t, DS_OP_RELU, 1, 1);
    assert_int_equal(tm_shape(&t, r), 0);
    ds_tensor x = {0}, out[2] = {0};
    fill(&x, &in);
    const ds_tensor *inp[1] = {&x};
    int in_ids[1] = {0}, ex_ids[2] = {1, 2}, out_ids[2] = {1, 2};
    ds_job job = {2, ex_ids, 2, out_ids};
    ds_error err;
    ds_executor *ex = ds_executor_new(&t.m, DS_BACKEND_XNNPACK, 1, &err);
    assert_non_null(ex);
    assert_int_equal(ds_executor_run(ex, &job, 1, in_ids, inp, out, &err), 0);
    int neg = 0;
    for (int64_t i = 0; i < ds_shape_numel(&out[0].shape); i++) {
        float c = ds_tensor_f32(&out[0])[i], y = ds_tensor_f32(&out[1])[i];
        neg += c < 0;
        assert_true(y == (c > 0 ? c : 0));
    }
    assert_true(neg > 0);
    ds_executor_free(ex);
    ds_tensor_free(&x);
    ds_tensor_free(&out[0]);
    ds_tensor_free(&out[1]);
    tm_free(&t);
}

static void test_pools_random(void **state)
{
    (void)state;
    for (int it = 0; it < 300; it++) {
        tmodel t;
        ds_shape in = rand4(6, 12);
        tm_init(&t, in);
        ds_layer *l = tm_add(&t, it % 2 ? DS_OP_MAXPOOL : DS_OP_AVGPOOL, 1, 0);
        l->kernel[0] = rint_(1, 4);
        l->kernel[1] = rint_(1, 4);
        l->stride[0] = rint_(1, 3);
        l->stride[1] = rint_(1, 3);
        l->dilation[0] = l->dilation[1] = (l->op == DS_OP_MAXPOOL && rnd() % 4 == 0) ? 2 : 1;
        for (int i = 0; i < 4; i++)
            l->pads[i] = rint_(0, l->kernel[i % 2] - 1);
        l->ceil_mode = (int)(rnd() % 2);
        l->count_include_pad = (int)(rnd() % 2);
        if (tm_shape(&t, l) == 0)
            single(&t, in, 1 + it % 2);
        tm_free(&t);
    }
}

static void test_simple_ops_random(void **state)
{
    (void)state;
    static const ds_op ops[] = {DS_OP_RELU,     DS_OP_GLOBALAVGPOOL, DS_OP_FLATTEN,
                                DS_OP_LRN,      DS_OP_SOFTMAX,       DS_OP_BATCHNORM};
    for (int it = 0; it < 120; it++) {
        tmodel t;
        ds_shape in = rand4(9, 9);
        tm_init(&t, in);
        ds_layer *l = tm_add(&t, ops[it % 6], 1, 0);
        l->axis = rint_(-4, 3);
        if (l->op == DS_OP_FLATTEN)
            l->axis = rint_(0, 4);
        l->lrn_size = rint_(1, 6);
        l->lrn_alpha = 1e-3f * (float)rint_(1, 100);
        l->lrn_beta = 0.5f + 0.25f * (float)rint_(0, 2);
        l->lrn_bias = 1.0f + (float)rint_(0, 2);
        int64_t c = in.dims[1];
        ds_shape cs = ds_shape_make(1, &c);
        fill(&l->weight, &cs);
        fill(&l->bias, &cs);
        assert_int_equal(tm_shape(&t, l), 0);
        single(&t, in, 1 + it % 2);
        tm_free(&t);
    }
}

static void test_multi_input_ops(void **state)
{
    (void)state;
    for (int it = 0; it < 60; it++) {
        tmodel t;
        ds_shape a = rand4(6, 8);
        tm_init(&t, a);
        int n = it % 3 == 0 ? 2 : rint_(2, 4);
        int ax = rint_(0, 3);
        ds_shape sh[4];
        for (int i = 0; i < n; i++) {
            sh[i] = a;
            if (it % 3)
                sh[i].dims[ax] = rint_(1, 5);
            ds_layer *p = tm_add(&t, DS_OP_INPUT, 0); /* producers, supplied as inputs */
            p->out_shape = sh[i];
        }
        ds_layer *l = it % 3 == 0 ? tm_add(&t, DS_OP_ADD, 2, 1, 2)
                                  : tm_add(&t, DS_OP_CONCAT, 0);
        if (l->op == DS_OP_CONCAT) {
            l->axis = rint_(0, 1) ? ax : ax - 4;
            for (int i = 0; i < n; i++) {
                l->inputs[i] = 1 + i;
                t.l[1 + i].consumers[t.l[1 + i].n_consumers++] = l->id;
            }
            l->n_inputs = n;
        }
        assert_int_equal(tm_shape(&t, l), 0);
        ds_tensor xs[4] = {0};
        int in_ids[4], ex_ids[1] = {l->id}, out_ids[1] = {l->id};
        for (int i = 0; i < n; i++) {
            fill(&xs[i], &sh[i]);
            in_ids[i] = 1 + i;
        }
        both_backends(&t, n, in_ids, xs, 1, ex_ids, 1, out_ids, 1);
        for (int i = 0; i < n; i++)
            ds_tensor_free(&xs[i]);
        tm_free(&t);
    }
}

/* Gemm on 2-D inputs, and a flatten -> gemm -> softmax head after a pool. */
static void test_gemm_head(void **state)
{
    (void)state;
    for (int it = 0; it < 40; it++) {
        tmodel t;
        ds_shape in = rand4(6, 6);
        tm_init(&t, in);
        ds_layer *p = tm_add(&t, DS_OP_MAXPOOL, 1, 0);
        p->kernel[0] = p->kernel[1] = 1;
        assert_int_equal(tm_shape(&t, p), 0);
        ds_layer *f = tm_add(&t, DS_OP_FLATTEN, 1, 1);
        assert_int_equal(tm_shape(&t, f), 0);
        ds_layer *g = tm_add(&t, DS_OP_GEMM, 1, 2);
        ds_shape ws = ds_shape_make(2, (int64_t[]){rint_(1, 20), f->out_shape.dims[1]});
        fill(&g->weight, &ws);
        if (it % 2) {
            ds_shape bs = ds_shape_make(1, &ws.dims[0]);
            fill(&g->bias, &bs);
        }
        assert_int_equal(tm_shape(&t, g), 0);
        ds_layer *s = tm_add(&t, DS_OP_SOFTMAX, 1, 3);
        s->axis = 1;
        assert_int_equal(tm_shape(&t, s), 0);
        ds_tensor x = {0};
        fill(&x, &in);
        int in_ids[1] = {0}, ex_ids[4] = {1, 2, 3, 4}, out_ids[2] = {3, 4};
        both_backends(&t, 1, in_ids, &x, 4, ex_ids, 2, out_ids, 1 + it % 2);
        ds_tensor_free(&x);
        tm_free(&t);
    }
}

/* ---- executor contract ---- */

/* input -> conv -> relu -> maxpool -> conv -> relu -> add(pool, relu2) */
static void chain(tmodel *t)
{
    ds_shape in = ds_shape_nchw(1, 3, 16, 20);
    tm_init(t, in);
    ds_layer *c1 = tm_add(t, DS_OP_CONV, 1, 0);
    c1->kernel[0] = c1->kernel[1] = 3;
    c1->pads[0] = c1->pads[1] = c1->pads[2] = c1->pads[3] = 1;
    ds_shape w1 = ds_shape_nchw(8, 3, 3, 3);
    fill(&c1->weight, &w1);
    assert_int_equal(tm_shape(t, c1), 0);
    assert_int_equal(tm_shape(t, tm_add(t, DS_OP_RELU, 1, 1)), 0);
    ds_layer *mp = tm_add(t, DS_OP_MAXPOOL, 1, 2);
    mp->kernel[0] = mp->kernel[1] = 2;
    mp->stride[0] = mp->stride[1] = 2;
    assert_int_equal(tm_shape(t, mp), 0);
    ds_layer *c2 = tm_add(t, DS_OP_CONV, 1, 3);
    c2->kernel[0] = c2->kernel[1] = 1;
    ds_shape w2 = ds_shape_nchw(8, 8, 1, 1);
    fill(&c2->weight, &w2);
    assert_int_equal(tm_shape(t, c2), 0);
    assert_int_equal(tm_shape(t, tm_add(t, DS_OP_RELU, 1, 4)), 0);
    assert_int_equal(tm_shape(t, tm_add(t, DS_OP_ADD, 2, 3, 5)), 0);
}

static void test_job_validation(void **state)
{
    (void)state;
    tmodel t;
    chain(&t);
    ds_error err;
    int in0[1] = {0}, bad_in[2] = {0, 0}, in3[1] = {3}, in_oob[1] = {7};
    int ok_ex[6] = {1, 2, 3, 4, 5, 6}, out6[1] = {6};
    ds_job ok = {6, ok_ex, 1, out6};
    assert_int_equal(ds_job_validate(&t.m, &ok, 1, in0, &err), 0);
    /* layer 6 needs layer 3, neither executed nor supplied */
    int ex_skip[2] = {5, 6};
    int in4[1] = {4};
    ds_job j1 = {2, ex_skip, 1, out6};
    assert_int_equal(ds_job_validate(&t.m, &j1, 1, in4, &err), -1);
    assert_non_null(strstr(err.msg, "needs layer 3"));
    /* producers from a later position are not available */
    int ex_order[3] = {5, 4, 6};
    ds_job j2 = {3, ex_order, 1, out6};
    assert_int_equal(ds_job_validate(&t.m, &j2, 1, in3, &err), -1);
    /* executed twice, executing layer 0, ids out of range */
    int ex_twice[3] = {1, 2, 2};
    int out2[1] = {2};
    ds_job j3 = {3, ex_twice, 1, out2};
    assert_int_equal(ds_job_validate(&t.m, &j3, 1, in0, &err), -1);
    int ex_zero[1] = {0};
    ds_job j4 = {1, ex_zero, 0, NULL};
    assert_int_equal(ds_job_validate(&t.m, &j4, 1, in0, &err), -1);
    int ex_oob[1] = {99};
    ds_job j5 = {1, ex_oob, 0, NULL};
    assert_int_equal(ds_job_validate(&t.m, &j5, 1, in0, &err), -1);
    ds_job j6 = {0, NULL, 0, NULL};
    assert_int_equal(ds_job_validate(&t.m, &j6, 1, in_oob, &err), -1);
    assert_int_equal(ds_job_validate(&t.m, &j6, 2, bad_in, &err), -1);
    assert_int_equal(ds_job_validate(&t.m, &j6, -1, in0, &err), -1);
    /* output neither executed nor supplied; supplied and executed */
    int ex12[2] = {1, 2}, out3[1] = {3};
    ds_job j7 = {2, ex12, 1, out3};
    assert_int_equal(ds_job_validate(&t.m, &j7, 1, in0, &err), -1);
    assert_non_null(strstr(err.msg, "output layer 3"));
    int in01[2] = {0, 1};
    assert_int_equal(ds_job_validate(&t.m, &j7, 2, in01, &err), -1);
    /* a pass-through job is valid */
    ds_job j8 = {0, NULL, 1, in3};
    assert_int_equal(ds_job_validate(&t.m, &j8, 1, in3, &err), 0);

    /* the executor checks input shapes too */
    ds_executor *ex = ds_executor_new(&t.m, DS_BACKEND_XNNPACK, 1, &err);
    assert_non_null(ex);
    ds_tensor x = {0}, out = {0};
    ds_shape wrong = ds_shape_nchw(1, 3, 16, 21);
    fill(&x, &wrong);
    const ds_tensor *inp[1] = {&x};
    assert_int_equal(ds_executor_run(ex, &ok, 1, in0, inp, &out, &err), -1);
    assert_non_null(strstr(err.msg, "1x3x16x20"));
    assert_int_equal(ds_executor_run(ex, &j1, 1, in4, inp, &out, &err), -1);
    /* and still works afterwards */
    fill(&x, &t.l[0].out_shape);
    assert_int_equal(ds_executor_run(ex, &ok, 1, in0, inp, &out, &err), 0);
    ds_executor_free(ex);
    ds_tensor_free(&x);
    ds_tensor_free(&out);
    tm_free(&t);
}

static void test_pass_through_and_reuse(void **state)
{
    (void)state;
    tmodel t;
    chain(&t);
    ds_error err;
    for (int be = 0; be < 2; be++) {
        ds_executor *ex = ds_executor_new(&t.m, (ds_backend)be, 2, &err);
        assert_non_null(ex);
        ds_tensor x = {0}, y = {0}, full = {0};
        fill(&x, &t.l[0].out_shape);
        const ds_tensor *inp[1] = {&x};
        int in0[1] = {0}, ex_all[6] = {1, 2, 3, 4, 5, 6}, out6[1] = {6};
        /* empty job: the input comes back bit for bit */
        ds_job pass = {0, NULL, 1, in0};
        assert_int_equal(ds_executor_run(ex, &pass, 1, in0, inp, &y, &err), 0);
        assert_true(ds_shape_equal(&x.shape, &y.shape));
        assert_memory_equal(x.data, y.data, ds_tensor_bytes(&x));
        /* full run twice: same bits, no pool growth the second time */
        ds_job full_job = {6, ex_all, 1, out6};
        assert_int_equal(ds_executor_run(ex, &full_job, 1, in0, inp, &full, &err), 0);
        size_t pool = ds_executor_pool_bytes(ex);
        void *outbuf = full.data;
        assert_int_equal(ds_executor_run(ex, &full_job, 1, in0, inp, &y, &err), 0);
        assert_int_equal(ds_executor_pool_bytes(ex), pool);
        assert_memory_equal(full.data, y.data, ds_tensor_bytes(&full));
        assert_int_equal(ds_executor_run(ex, &full_job, 1, in0, inp, &full, &err), 0);
        assert_ptr_equal(full.data, outbuf);
        assert_int_equal(ds_executor_pool_bytes(ex), pool);
        /* intermediates are released: the pool holds at most the three
         * largest tensors live at once, not one buffer per layer */
        size_t all = 0;
        for (int i = 0; i < t.m.n_layers; i++)
            all += (size_t)ds_shape_numel(&t.l[i].out_shape) * 4;
        assert_true(pool < all);
        /* split in two jobs at layer 3, with the DAG edge 3 -> 6 handed on */
        int ex_a[3] = {1, 2, 3}, out_a[1] = {3}, ex_b[3] = {4, 5, 6};
        ds_job ja = {3, ex_a, 1, out_a}, jb = {3, ex_b, 1, out6};
        ds_tensor mid = {0};
        assert_int_equal(ds_executor_run(ex, &ja, 1, in0, inp, &mid, &err), 0);
        const ds_tensor *inb[1] = {&mid};
        assert_int_equal(ds_executor_run(ex, &jb, 1, out_a, inb, &y, &err), 0);
        assert_memory_equal(full.data, y.data, ds_tensor_bytes(&full));
        ds_tensor_free(&mid);
        ds_tensor_free(&x);
        ds_tensor_free(&y);
        ds_tensor_free(&full);
        ds_executor_free(ex);
    }
    tm_free(&t);
}

static void test_bad_layers(void **state)
{
    (void)state;
    tmodel t;
    ds_error err;
    /* conv whose weight does not match the input channels */
    tm_init(&t, ds_shape_nchw(1, 3, 8, 8));
    ds_layer *l = tm_add(&t, DS_OP_CONV, 1, 0);
    ds_shape ws = ds_shape_nchw(4, 2, 3, 3);
    fill(&l->weight, &ws);
    assert_int_equal(tm_shape(&t, l), -1);
    assert_int_equal(ds_model_shape_layer(&t.m, 1, &err), -1);
    assert_non_null(strstr(err.msg, "channels"));
    assert_non_null(strstr(err.msg, "(Conv)"));
    /* window larger than the input; zero stride; pads as large as the window */
    ws = ds_shape_nchw(4, 3, 9, 3);
    fill(&l->weight, &ws);
    assert_int_equal(tm_shape(&t, l), -1);
    l->op = DS_OP_MAXPOOL;
    l->kernel[0] = l->kernel[1] = 2;
    l->stride[0] = 0;
    assert_int_equal(tm_shape(&t, l), -1);
    l->stride[0] = 1;
    l->pads[0] = 2;
    assert_int_equal(tm_shape(&t, l), -1);
    l->pads[0] = 0;
    assert_int_equal(tm_shape(&t, l), 0);
    /* gemm on a 4-D input */
    l->op = DS_OP_GEMM;
    assert_int_equal(tm_shape(&t, l), -1);
    l->op = DS_OP_MAXPOOL;
    assert_int_equal(tm_shape(&t, l), 0); /* 1x3x7x7 */
    /* add of different shapes or of one input, concat axis out of range,
     * batchnorm without scale and shift */
    ds_layer *add = tm_add(&t, DS_OP_ADD, 2, 0, 1);
    assert_int_equal(ds_model_shape_layer(&t.m, add->id, &err), -1);
    assert_non_null(strstr(err.msg, "1x3x8x8 + 1x3x7x7"));
    add->n_inputs = 1;
    assert_int_equal(tm_shape(&t, add), -1);
    ds_layer *cat = tm_add(&t, DS_OP_CONCAT, 2, 0, 0);
    cat->axis = 4;
    assert_int_equal(tm_shape(&t, cat), -1);
    cat->axis = -5;
    assert_int_equal(tm_shape(&t, cat), -1);
    cat->axis = -1;
    assert_int_equal(tm_shape(&t, cat), 0);
    assert_int_equal(cat->axis, 3);
    assert_true(ds_shape_equal(&cat->out_shape, &(ds_shape){4, {1, 3, 8, 16}}));
    ds_layer *bn = tm_add(&t, DS_OP_BATCHNORM, 1, 0);
    assert_int_equal(tm_shape(&t, bn), -1);
    tm_free(&t);

    /* the executors check every layer once: an out_shape that is not its
     * rule's, or a weight without data, is refused up front */
    chain(&t);
    for (int be = 0; be < 2; be++) {
        t.l[5].out_shape.dims[3]++;
        assert_null(ds_executor_new(&t.m, (ds_backend)be, 1, &err));
        assert_non_null(strstr(err.msg, "(Relu)"));
        t.l[5].out_shape.dims[3]--;
        void *w = t.l[4].weight.data;
        t.l[4].weight.data = NULL;
        assert_null(ds_executor_new(&t.m, (ds_backend)be, 1, &err));
        assert_non_null(strstr(err.msg, "weight"));
        t.l[4].weight.data = w;
        ds_executor *ex = ds_executor_new(&t.m, (ds_backend)be, 1, &err);
        assert_non_null(ex);
        ds_executor_free(ex);
    }
    tm_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_values),
        cmocka_unit_test(test_conv_random),
        cmocka_unit_test(test_conv_winograd),
        cmocka_unit_test(test_conv_banded),
        cmocka_unit_test(test_conv_relu_fusion),
        cmocka_unit_test(test_fusion_keeps_requested_conv),
        cmocka_unit_test(test_pools_random),
        cmocka_unit_test(test_simple_ops_random),
        cmocka_unit_test(test_multi_input_ops),
        cmocka_unit_test(test_gemm_head),
        cmocka_unit_test(test_job_validation),
        cmocka_unit_test(test_pass_through_and_reuse),
        cmocka_unit_test(test_bad_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
