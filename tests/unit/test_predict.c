/* test_predict - predictor kinds per op, evaluation (clamping, MLP, concat,
 * mean), the portable blob's exact bytes, round trips, and rejection of
 * malformed blobs (every truncation, every field). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/predict.h"

/* A small DAG covering every kind:
 *   0 input 1x3x4x4   1 conv{0} 1x4x4x4   2 relu{1}   3 maxpool{2} 1x4x2x2
 *   4 conv{3} 1x4x2x2   5 add{3,4}   6 concat{3,5} 1x8x2x2   7 flatten{6} 1x32
 *   8 gemm{7} 1x10   9 softmax{8} 1x10 */
static void add_layer(ds_model *m, int id, ds_op op, int n_in, const int *in, int64_t c, int64_t h,
                      int64_t w, int ndim)
{
    ds_layer *l = &m->layers[id];
    char name[32];
    snprintf(name, sizeof name, "l%d", id);
    l->id = id;
    l->op = op;
    l->name = strdup(name);
    l->n_inputs = n_in;
    l->inputs = n_in ? malloc((size_t)n_in * sizeof(int)) : NULL;
    for (int k = 0; k < n_in; k++)
        l->inputs[k] = in[k];
    l->axis = 1;
    l->out_shape = ndim == 4 ? ds_shape_nchw(1, c, h, w) : ds_shape_make(2, (int64_t[]){1, c});
}

static void make_model(ds_model *m, const char *hash)
{
    memset(m, 0, sizeof *m);
    m->name = strdup("test-dag");
    snprintf(m->hash, sizeof m->hash, "%s", hash);
    m->n_layers = 10;
    m->layers = calloc(10, sizeof *m->layers);
    add_layer(m, 0, DS_OP_INPUT, 0, NULL, 3, 4, 4, 4);
    add_layer(m, 1, DS_OP_CONV, 1, (int[]){0}, 4, 4, 4, 4);
    add_layer(m, 2, DS_OP_RELU, 1, (int[]){1}, 4, 4, 4, 4);
    add_layer(m, 3, DS_OP_MAXPOOL, 1, (int[]){2}, 4, 2, 2, 4);
    add_layer(m, 4, DS_OP_CONV, 1, (int[]){3}, 4, 2, 2, 4);
    add_layer(m, 5, DS_OP_ADD, 2, (int[]){3, 4}, 4, 2, 2, 4);
    add_layer(m, 6, DS_OP_CONCAT, 2, (int[]){3, 5}, 8, 2, 2, 4);
    add_layer(m, 7, DS_OP_FLATTEN, 1, (int[]){6}, 32, 0, 0, 2);
    add_layer(m, 8, DS_OP_GEMM, 1, (int[]){7}, 10, 0, 0, 2);
    add_layer(m, 9, DS_OP_SOFTMAX, 1, (int[]){8}, 10, 0, 0, 2);
}

#define HASH "0123456789abcdef"

static void test_kinds(void **state)
{
    (void)state;
    ds_model m;
    make_model(&m, HASH);
    static const ds_pred_kind want[10] = {DS_PRED_PASS,   DS_PRED_MLP,  DS_PRED_LINEAR,
                                          DS_PRED_LINEAR, DS_PRED_MLP,  DS_PRED_LINEAR,
                                          DS_PRED_CONCAT, DS_PRED_MEAN, DS_PRED_MLP,
                                          DS_PRED_LINEAR};
    ds_error err;
    ds_predictors *p = ds_predictors_new(&m, &err);
    assert_non_null(p);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ds_predictors_default_kind(&m, i), want[i]);
        assert_int_equal(p->layers[i].kind, want[i]);
    }
    assert_int_equal(p->layers[7].n_out, 1); /* flatten output is one plane */
    assert_int_equal(p->layers[1].n_feat, 3);
    assert_int_equal(p->layers[8].n_feat, 1);
    assert_int_equal(p->layers[5].n_in, 2);
    /* Kinds that do not fit are refused with the layer named. */
    assert_int_equal(ds_predictors_set_kind(p, &m, 3, DS_PRED_CONCAT, &err), -1);
    assert_non_null(strstr(err.msg, "layer 3"));
    assert_int_equal(ds_predictors_set_kind(p, &m, 0, DS_PRED_LINEAR, &err), -1);
    assert_int_equal(ds_predictors_set_kind(p, &m, 7, DS_PRED_LINEAR, &err), -1);
    assert_int_equal(ds_predictors_set_kind(p, &m, 3, DS_PRED_MLP, &err), 0);
    assert_int_equal(p->layers[3].n_feat, 4);
    ds_predictors_free(p);
    ds_model_free(&m);
}

/* Fills every parameter with a deterministic pattern. */
static void fill(ds_predictors *p, uint32_t seed)
{
    for (int i = 0; i < p->n_layers; i++) {
        ds_layer_pred *lp = &p->layers[i];
        for (int c = 0; c < lp->n_out; c++) {
            seed = seed * 1664525u + 1013904223u;
            lp->nonzero[c] = (seed >> 8) / 16777216.0;
            if (lp->b)
                lp->b[c] = ((int)(seed % 200) - 100) / 300.0;
            if (lp->v)
                lp->v[c] = ((int)(seed % 77) - 30) / 50.0;
            for (int k = 0; lp->a && k < lp->n_in; k++)
                lp->a[c * lp->n_in + k] = ((int)((seed >> (k + 3)) % 100) - 20) / 70.0;
        }
        for (int j = 0; j < lp->n_feat; j++)
            lp->w[j] = ((int)((seed >> (j % 16)) % 50) - 25) / 10.0;
        lp->w0 = -0.25 * i;
        lp->r2 = i == 3 ? NAN : 1.0 - 0.01 * i;
        lp->mae = 0.001 * i;
    }
}

static void test_eval(void **state)
{
    (void)state;
    ds_model m;
    make_model(&m, HASH);
    ds_error err;
    ds_predictors *p = ds_predictors_new(&m, &err);
    assert_non_null(p);
    fill(p, 7);
    float buf[3 + 4 * 5 + 8 + 1 + 10 + 10], *lf[10];
    int ch[10] = {3, 4, 4, 4, 4, 4, 8, 1, 1, 1}, off = 0;
    for (int i = 0; i < 10; i++) {
        lf[i] = buf + off;
        off += ch[i];
    }
    /* Layer 1 (MLP) by hand; layer 2 (LINEAR) with clamping at both ends. */
    ds_layer_pred *c1 = &p->layers[1];
    c1->w[0] = 1.0;
    c1->w[1] = -2.0;
    c1->w[2] = 0.5;
    c1->w0 = 0.1;
    for (int c = 0; c < 4; c++) {
        c1->v[c] = 0.8 - 0.2 * c;
        c1->b[c] = 0.05 * c;
    }
    ds_layer_pred *r2 = &p->layers[2];
    double a[4] = {2.0, -1.0, 0.5, 1.0}, b[4] = {0.5, 0.1, 0.0, -0.3};
    for (int c = 0; c < 4; c++) {
        r2->a[c] = a[c];
        r2->b[c] = b[c];
    }
    float in[3] = {0.2f, 0.1f, 1.7f}; /* 1.7 is clamped to 1 */
    assert_int_equal(ds_predictors_eval(p, &m, in, lf, &err), 0);
    assert_true(lf[0][2] == 1.0f);
    double z = 0.1 + 0.2 - 0.2 + 0.5, h = 1 / (1 + exp(-z));
    for (int c = 0; c < 4; c++) {
        double y = (0.8 - 0.2 * c) * h + 0.05 * c;
        y = y < 0 ? 0 : y > 1 ? 1 : y;
        assert_float_equal(lf[1][c], y, 1e-6);
        double l2 = a[c] * lf[1][c] + b[c];
        l2 = l2 < 0 ? 0 : l2 > 1 ? 1 : l2;
        assert_float_equal(lf[2][c], l2, 1e-6);
    }
    assert_true(lf[2][0] == 1.0f); /* 2*x + 0.5 > 1 */
    /* Every output is in [0,1]; concat copies its inputs in order; flatten
     * averages all channels. */
    for (int i = 0; i < off; i++)
        if (!(buf[i] >= 0.0f && buf[i] <= 1.0f))
            fail_msg("fraction %d is %g", i, buf[i]);
    for (int c = 0; c < 4; c++) {
        assert_true(lf[6][c] == lf[3][c]);
        assert_true(lf[6][4 + c] == lf[5][c]);
    }
    double mean = 0;
    for (int c = 0; c < 8; c++)
        mean += lf[6][c] / 8.0;
    assert_float_equal(lf[7][0], mean, 1e-6);
    /* Add: two-input linear model per channel. */
    ds_layer_pred *ad = &p->layers[5];
    for (int c = 0; c < 4; c++) {
        double y = ad->a[c * 2] * lf[3][c] + ad->a[c * 2 + 1] * lf[4][c] + ad->b[c];
        y = y < 0 ? 0 : y > 1 ? 1 : y;
        assert_float_equal(lf[5][c], y, 1e-6);
    }
    /* Non-zero fractions per layer. */
    assert_non_null(ds_predictors_nonzero(p, 9));
    assert_null(ds_predictors_nonzero(p, 10));
    assert_null(ds_predictors_nonzero(p, -1));
    /* Another model (hash, channels) is refused. */
    ds_model m2;
    make_model(&m2, "fedcba9876543210");
    assert_int_equal(ds_predictors_eval(p, &m2, in, lf, &err), -1);
    assert_non_null(strstr(err.msg, "model"));
    ds_model_free(&m2);
    make_model(&m2, HASH);
    m2.layers[4].out_shape.dims[1] = 5;
    assert_int_equal(ds_predictors_eval(p, &m2, in, lf, &err), -1);
    ds_model_free(&m2);
    ds_predictors_free(p);
    ds_model_free(&m);
}

static void test_crc(void **state)
{
    (void)state;
    assert_int_equal(ds_crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(ds_crc32(ds_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
}

static void assert_same(const ds_predictors *a, const ds_predictors *b)
{
    assert_string_equal(a->model_hash, b->model_hash);
    assert_int_equal(a->n_layers, b->n_layers);
    for (int i = 0; i < a->n_layers; i++) {
        const ds_layer_pred *x = &a->layers[i], *y = &b->layers[i];
        assert_int_equal(x->kind, y->kind);
        assert_int_equal(x->n_out, y->n_out);
        assert_int_equal(x->n_feat, y->n_feat);
        assert_int_equal(x->n_in, y->n_in);
        assert_memory_equal(x->nonzero, y->nonzero, sizeof(double) * (size_t)x->n_out);
        if (x->a)
            assert_memory_equal(x->a, y->a, sizeof(double) * (size_t)(x->n_out * x->n_in));
        if (x->b)
            assert_memory_equal(x->b, y->b, sizeof(double) * (size_t)x->n_out);
        if (x->v)
            assert_memory_equal(x->v, y->v, sizeof(double) * (size_t)x->n_out);
        if (x->w)
            assert_memory_equal(x->w, y->w, sizeof(double) * (size_t)x->n_feat);
        if (x->kind == DS_PRED_MLP) /* w0 is stored for MLPs only */
            assert_memory_equal(&x->w0, &y->w0, sizeof x->w0);
        assert_memory_equal(&x->r2, &y->r2, sizeof x->r2);
        assert_memory_equal(&x->mae, &y->mae, sizeof x->mae);
    }
}

static void test_roundtrip_and_bytes(void **state)
{
    (void)state;
    ds_model m;
    make_model(&m, HASH);
    ds_error err;
    ds_predictors *p = ds_predictors_new(&m, &err), *q = NULL;
    fill(p, 1);
    ds_buf b = {0};
    assert_int_equal(ds_predictors_encode(p, &b, &err), 0);
    /* Exact bytes of the header and of layer 0's record: the same on any
     * machine (little-endian, byte-wise IEEE doubles). */
    static const uint8_t head[] = {'D', 'S', 'P', 'R', 1, 0, 0, 0, '0', '1', '2', '3', '4', '5',
                                   '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f', 10, 0, 0, 0,
                                   /* layer 0: pass, 0 inputs, 3 channels, 0 features */
                                   0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
                                   /* r2 = 1.0, mae = 0.0 */
                                   0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_true(b.len > sizeof head);
    assert_memory_equal(b.data, head, sizeof head);
    /* Size: header, records, params, CRC. */
    size_t want = 28 + 4;
    for (int i = 0; i < 10; i++) {
        const ds_layer_pred *lp = &p->layers[i];
        want += 28 + 8 * (size_t)lp->n_out;
        if (lp->kind == DS_PRED_LINEAR)
            want += 8 * (size_t)lp->n_out * (size_t)(lp->n_in + 1);
        if (lp->kind == DS_PRED_MLP)
            want += 8 * (size_t)(lp->n_feat + 1 + 2 * lp->n_out);
    }
    assert_int_equal(b.len, want);
    assert_int_equal(ds_predictors_decode(b.data, b.len, &m, &q, &err), 0);
    assert_same(p, q);
    /* Re-encoding gives the same bytes. */
    ds_buf b2 = {0};
    assert_int_equal(ds_predictors_encode(q, &b2, &err), 0);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    ds_buf_free(&b2);
    ds_predictors_free(q);
    ds_buf_free(&b);
    ds_predictors_free(p);
    ds_model_free(&m);
}

static void test_truncated(void **state)
{
    (void)state;
    ds_model m;
    make_model(&m, HASH);
    ds_error err;
    ds_predictors *p = ds_predictors_new(&m, &err), *q = (ds_predictors *)0x1;
    fill(p, 3);
    ds_buf b = {0};
    assert_int_equal(ds_predictors_encode(p, &b, &err), 0);
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees overreads */
        memcpy(copy, b.data, n);
        assert_int_equal(ds_predictors_decode(copy, n, &m, &q, &err), -1);
        assert_ptr_equal(q, (ds_predictors *)0x1); /* untouched on failure */
        free(copy);
    }
    /* Every single flipped byte is caught (by the CRC at the latest). */
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x40;
        assert_int_equal(ds_predictors_decode(b.data, b.len, &m, &q, &err), -1);
        b.data[i] ^= 0x40;
    }
    ds_buf_free(&b);
    ds_predictors_free(p);
    ds_model_free(&m);
}

/* Patches the blob at off with n bytes and fixes the CRC so that the field
 * check itself is what rejects it; expects an error containing want. */
static void expect_reject(const ds_buf *good, const ds_model *m, size_t off, const void *bytes,
                          size_t n, const char *want)
{
    uint8_t *c = malloc(good->len);
    memcpy(c, good->data, good->len);
    memcpy(c + off, bytes, n);
    uint32_t crc = ds_crc32(0, c, good->len - 4);
    for (int i = 0; i < 4; i++)
        c[good->len - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
    ds_predictors *q = NULL;
    ds_error err = {{0}};
    int rc = ds_predictors_decode(c, good->len, m, &q, &err);
    if (rc != -1 || !strstr(err.msg, want))
        fail_msg("patch at %zu: rc %d, message \"%s\", wanted \"%s\"", off, rc, err.msg, want);
    assert_null(q);
    free(c);
}

static void test_bad_fields(void **state)
{
    (void)state;
    ds_model m;
    make_model(&m, HASH);
    ds_error err;
    ds_predictors *p = ds_predictors_new(&m, &err);
    fill(p, 5);
    ds_buf b = {0};
    assert_int_equal(ds_predictors_encode(p, &b, &err), 0);
    const uint8_t v2[2] = {2, 0}, flag[1] = {1}, nl[4] = {9, 0, 0, 0}, big[4] = {0xff, 0xff, 0xff,
                                                                                0x7f};
    expect_reject(&b, &m, 0, "DSPQ", 4, "magic");
    expect_reject(&b, &m, 4, v2, 2, "version 2");
    expect_reject(&b, &m, 6, flag, 1, "flags");
    expect_reject(&b, &m, 8, "fedcba9876543210", 16, "for model fedcba9876543210");
    expect_reject(&b, &m, 8, "0123456789ABCDEF", 16, "hex");
    expect_reject(&b, &m, 24, nl, 4, "9 layers");
    expect_reject(&b, &m, 24, big, 4, "layers");
    /* Layer 0's record starts at 28; layer 1's after 28 + 3*8 bytes. */
    size_t l0 = 28, l1 = l0 + 28 + 3 * 8;
    const uint8_t lin[1] = {DS_PRED_LINEAR}, k9[1] = {9}, one[1] = {1}, four[4] = {4, 0, 0, 0};
    expect_reject(&b, &m, l0, lin, 1, "layer 0");
    expect_reject(&b, &m, l0, k9, 1, "bad kind 9");
    expect_reject(&b, &m, l0 + 2, one, 1, "reserved");
    expect_reject(&b, &m, l0 + 1, one, 1, "1 inputs");
    expect_reject(&b, &m, l0 + 4, four, 4, "4 channels");
    expect_reject(&b, &m, l1 + 8, four, 4, "4 features"); /* conv: 3 features */
    expect_reject(&b, &m, l1 + 4, big, 4, "channels");
    /* A NaN parameter (layer 1's first hidden weight), an infinite r2, a
     * non-zero fraction outside [0,1] (layer 0's first). */
    const uint8_t nan[8] = {0, 0, 0, 0, 0, 0, 0xf8, 0x7f}, inf[8] = {0, 0, 0, 0, 0, 0, 0xf0, 0x7f},
                  two[8] = {0, 0, 0, 0, 0, 0, 0, 0x40};
    expect_reject(&b, &m, l1 + 28, nan, 8, "not finite");
    expect_reject(&b, &m, l1 + 12, inf, 8, "infinite");
    expect_reject(&b, &m, l0 + 28, two, 8, "outside [0,1]");
    /* Trailing bytes (CRC fixed): appended garbage after the last layer. */
    ds_buf longer = {0};
    assert_int_equal(ds_buf_append(&longer, b.data, b.len - 4, &err), 0);
    assert_int_equal(ds_buf_append(&longer, "\0\0\0\0\0\0\0\0", 8, &err), 0);
    uint32_t crc = ds_crc32(0, longer.data, longer.len);
    uint8_t cb[4] = {(uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16), (uint8_t)(crc >> 24)};
    assert_int_equal(ds_buf_append(&longer, cb, 4, &err), 0);
    ds_predictors *q = NULL;
    assert_int_equal(ds_predictors_decode(longer.data, longer.len, &m, &q, &err), -1);
    assert_non_null(strstr(err.msg, "trailing"));
    /* The right blob against a model of another shape. */
    ds_model m2;
    make_model(&m2, HASH);
    m2.layers[4].out_shape.dims[1] = 5;
    assert_int_equal(ds_predictors_decode(b.data, b.len, &m2, &q, &err), -1);
    assert_non_null(strstr(err.msg, "layer 4"));
    /* Sizes do not matter, channel counts do: a wider Gemm is still one
     * plane. */
    ds_model_free(&m2);
    make_model(&m2, HASH);
    m2.layers[8].out_shape.dims[1] = 11;
    assert_int_equal(ds_predictors_decode(b.data, b.len, &m2, &q, &err), 0);
    ds_predictors_free(q);
    q = NULL;
    ds_model_free(&m2);
    ds_buf_free(&longer);
    ds_buf_free(&b);
    ds_predictors_free(p);
    ds_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_crc),          cmocka_unit_test(test_roundtrip_and_bytes),
        cmocka_unit_test(test_truncated),    cmocka_unit_test(test_bad_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
