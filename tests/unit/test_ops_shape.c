/* test_ops_shape.c - shape arithmetic folded at ds_model_set_input, and the
 * Reshape (Squeeze/Unsqueeze) and Transpose layers on both backends.
 *
 * The models are tests/data/onnx_shape (made by
 * tests/models/make_shape_models.py with python3-onnx): the patterns
 * PyTorch exports (x.view(x.size(0), -1), ShuffleNet's 5-D channel shuffle,
 * Shape/Slice/ConstantOfShape arithmetic) in opset 11, 13 and 17 forms, each
 * with its input and numpy's expected output; bad_*.onnx must be refused
 * with a message naming the node and op. */
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
#include "model/shape_prog.h"

#define DIR DS_SOURCE_DIR "/tests/data/onnx_shape"

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void read_pb(const char *c, const char *file, ds_tensor *t)
{
    char path[512];
    size_t len = 0;
    ds_error err = {0};
    snprintf(path, sizeof path, "%s/%s/test_data_set_0/%s", DIR, c, file);
    uint8_t *b = slurp(path, &len);
    assert_non_null(b);
    if (ds_onnx_read_tensor(b, len, t, &err))
        fail_msg("%s: %s", path, err.msg);
    free(b);
}

/* Loads case c, runs it on both backends, compares with the expected output. */
static void run_case(const char *c)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model.onnx", c);
    ds_model m;
    ds_error err = {0};
    ds_tensor x = {0}, want = {0}, got = {0};
    read_pb(c, "input_0.pb", &x);
    read_pb(c, "output_0.pb", &want);
    char full[600];
    snprintf(full, sizeof full, "%s/%s", DIR, path);
    if (ds_model_load(full, &m, &err) ||
        ds_model_set_input(&m, x.shape.dims[0], x.shape.dims[1], x.shape.dims[2], x.shape.dims[3], &err))
        fail_msg("%s: %s", c, err.msg);
    int *ids = malloc((size_t)m.n_layers * sizeof *ids);
    for (int i = 1; i < m.n_layers; i++) {
        ids[i - 1] = i;
        assert_true(ds_layer_flops(&m, i) >= 0);
    }
    ds_job job = {m.n_layers - 1, ids, 1, m.outputs};
    int in_id = 0;
    const ds_tensor *inp[1] = {&x};
    for (int be = 0; be < 2; be++) {
        ds_executor *ex = ds_executor_new(&m, (ds_backend)be, 1 + be, &err);
        if (!ex || ds_executor_run(ex, &job, 1, &in_id, inp, &got, &err))
            fail_msg("%s (%s): %s", c, ds_backend_name((ds_backend)be), err.msg);
        ds_executor_free(ex);
        assert_int_equal(got.shape.ndim, want.shape.ndim);
        for (int d = 0; d < want.shape.ndim; d++)
            assert_int_equal(got.shape.dims[d], want.shape.dims[d]);
        for (int64_t i = 0; i < ds_shape_numel(&want.shape); i++) {
            float g = ds_tensor_f32(&got)[i], w = ds_tensor_f32(&want)[i];
            if (!(fabsf(g - w) <= 1e-5f + 1e-4f * fabsf(w)))
                fail_msg("%s (%s): element %lld is %g, expected %g", c, ds_backend_name((ds_backend)be),
                         (long long)i, (double)g, (double)w);
        }
    }
    free(ids);
    ds_tensor_free(&x);
    ds_tensor_free(&want);
    ds_tensor_free(&got);
    ds_model_free(&m);
}

static void test_export_patterns(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int opsets[3];
    } pats[] = {{"flatten_view", {11, 13, 17}}, {"channel_shuffle", {11, 13, 17}},
                {"channel_shuffle_5d", {11, 13, 17}},
                {"squeeze_transpose", {11, 13, 17}}, {"shape_fill", {11, 13, 17}}, {"slice_pad", {9, 13, 17}},
                {"fpn_upsample", {9, 13, 17}}, {"shufflenet_unit", {9, 13, 17}},
                {"softmax_axis", {9, 13, 17}}};
    for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++)
        for (size_t o = 0; o < 3; o++) {
            char c[64];
            snprintf(c, sizeof c, "%s_opset%d", pats[p].name, pats[p].opsets[o]);
            run_case(c);
        }
}

/* Shape arithmetic never becomes a layer: view(x.size(0), -1) is Conv + Reshape. */
static void test_folds_are_not_layers(void **state)
{
    (void)state;
    ds_model m;
    ds_error err = {0};
    if (ds_model_load(DIR "/channel_shuffle_opset13/model.onnx", &m, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(m.n_layers, 5); /* input, conv, reshape, transpose, reshape */
    assert_int_equal(m.layers[1].op, DS_OP_CONV);
    assert_int_equal(m.layers[2].op, DS_OP_RESHAPE);
    assert_int_equal(m.layers[3].op, DS_OP_TRANSPOSE);
    assert_int_equal(m.layers[4].op, DS_OP_RESHAPE);
    /* The sizes follow the input size of each run. */
    assert_int_equal(ds_model_set_input(&m, 2, 6, 8, 3, &err), 0);
    assert_int_equal(m.layers[2].out_shape.ndim, 4);
    assert_int_equal(m.layers[2].out_shape.dims[0], 2);
    assert_int_equal(m.layers[2].out_shape.dims[1], 2);
    assert_int_equal(m.layers[2].out_shape.dims[2], 3);
    assert_int_equal(m.layers[2].out_shape.dims[3], 24);
    assert_int_equal(m.layers[3].out_shape.dims[1], 3);
    assert_int_equal(m.layers[4].out_shape.dims[1], 6);
    assert_int_equal(m.layers[4].out_shape.dims[2], 8);
    assert_int_equal(m.layers[4].out_shape.dims[3], 3);
    assert_true(ds_layer_flops(&m, 3) == 0);
    assert_int_equal(ds_op_pred_kind(DS_OP_RESHAPE), DS_PRED_MEAN);
    assert_int_equal(ds_model_set_input(&m, 1, 6, 4, 5, &err), 0);
    assert_int_equal(m.layers[2].out_shape.dims[3], 20);
    for (int i = 1; i < m.n_layers; i++)
        assert_int_equal(ds_layer_check(&m, i, &err), 0);
    /* 7 channels do not split into 2 groups of 3. */
    assert_int_equal(ds_model_set_input(&m, 1, 7, 4, 5, &err), -1);
    ds_model_free(&m);
}

/* Each bad model fails at load or at set_input naming the node and op. */
static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *file, *needle;
    } bad[] = {
        {"transpose_6d", "node \"tr\" (Transpose): unsupported attribute perm of 6 axes"},
        {"cast_float", "node \"cast\" (Cast): Cast of a shape to a non-integer type"},
        {"gather_axis1", "node \"gather\" (Gather): unsupported attribute axis=1"},
        {"reshape_by_layer", "node \"reshape\" (Reshape): the target shape (input 1) must be a constant"},
        {"reshape_bad_size", "\"reshape\" (Reshape): input 1x4x2x2: cannot reshape 16 elements to [3,-1]"},
        {"squeeze_non_unit", "\"squeeze\" (Reshape): input 1x4x2x2: axis 1 has 4 elements"},
        {"shape_output", "graph output \"y\" is shape arithmetic"},
        {"allowzero_zero", "\"reshape\" (Reshape): input 1x4x2x2: target dim 0 is 0"},
        {"resize_cubic", "node \"resize\" (Resize): unsupported attribute mode=\"cubic\""},
        {"pad_reflect", "node \"pad\" (Pad): unsupported attribute mode=\"reflect\" (only constant)"},
        {"slice_empty", "\"slice\" (Slice): input 1x4x2x2: the slice of axis 1 is empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/bad_%s.onnx", DIR, bad[i].file);
        ds_model m;
        ds_error err = {0};
        int rc = ds_model_load(path, &m, &err);
        if (!rc) {
            rc = ds_model_set_input(&m, 1, 4, 2, 2, &err);
            ds_model_free(&m);
        }
        if (rc != -1 || !strstr(err.msg, bad[i].needle))
            fail_msg("%s: got \"%s\", expected \"%s\"", bad[i].file, err.msg, bad[i].needle);
    }
}

/* The shape program's arithmetic on constants: Python slices, broadcasting,
 * truncating division, negative gather indices. */
static void test_sprog_arith(void **state)
{
    (void)state;
    ds_model m = {0};
    ds_error err = {0};
    ds_sval v = {.op = DS_SV_CONST, .name = "v", .rank = 1, .n = 4, .v = {10, 20, 30, 40}};
    int a = ds_sprog_add(&m, &v);
    ds_sval k = {.op = DS_SV_CONST, .name = "k", .rank = 0, .n = 1, .v = {-1}};
    int ki = ds_sprog_add(&m, &k);
    ds_sval s0 = {.op = DS_SV_CONST, .name = "s", .rank = 1, .n = 1, .v = {-1}};
    ds_sval e0 = {.op = DS_SV_CONST, .name = "e", .rank = 1, .n = 1, .v = {INT64_MIN}};
    ds_sval st = {.op = DS_SV_CONST, .name = "st", .rank = 1, .n = 1, .v = {-2}};
    int si = ds_sprog_add(&m, &s0), ei = ds_sprog_add(&m, &e0), sti = ds_sprog_add(&m, &st);
    ds_sval g = {.op = DS_SV_GATHER, .name = "g", .n_in = 2, .in = {a, ki}};
    ds_sval sl = {.op = DS_SV_SLICE, .name = "sl", .n_in = 5, .in = {a, si, ei, -1, sti}};
    ds_sval d = {.op = DS_SV_DIV, .name = "d", .n_in = 2, .in = {a, ki}};
    int gi = ds_sprog_add(&m, &g), sli = ds_sprog_add(&m, &sl), di = ds_sprog_add(&m, &d);
    int cur = 0;
    assert_int_equal(ds_sprog_eval(&m, 0, &cur, &err), 0);
    const ds_sval *r = ds_sprog_get(&m, gi);
    assert_int_equal(r->rank, 0);
    assert_int_equal(r->v[0], 40);
    r = ds_sprog_get(&m, sli); /* [40, 20] */
    assert_int_equal(r->n, 2);
    assert_int_equal(r->v[0], 40);
    assert_int_equal(r->v[1], 20);
    r = ds_sprog_get(&m, di);
    assert_int_equal(r->n, 4);
    assert_int_equal(r->v[3], -40);
    ds_sval z = {.op = DS_SV_CONST, .name = "z", .rank = 0, .n = 1, .v = {0}};
    int zi = ds_sprog_add(&m, &z);
    ds_sval bad = {.op = DS_SV_DIV, .name = "bad", .n_in = 2, .in = {a, zi}};
    ds_sprog_add(&m, &bad);
    assert_int_equal(ds_sprog_eval(&m, 0, &cur, &err), -1);
    assert_non_null(strstr(err.msg, "node \"bad\" (Div, shape arithmetic): division by zero"));
    ds_sprog_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_patterns),
        cmocka_unit_test(test_folds_are_not_layers),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_sprog_arith),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
