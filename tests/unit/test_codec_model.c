/* test_codec_model - the scheduler's size model (ds_codec_predict_bytes)
 * against real encodes of synthetic clustered data: exact-ish without
 * compression, and a fit of the compression constants (k_mask, k_val in
 * codec.c, each in [0,1]) that fails when the coded constants drift from
 * what this data gives.  Data: f32 ReLU-like maps 1x16x60x90 whose changes
 * come in blobs (some channels untouched), and u8 RGB frames 1x3x120x160 with
 * noise on a
 * fraction of pixels (all channels) plus a moving block. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/codec.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* Coded constants, repeated here to compare with the fit (index [u8][c]). */
static const double coded_k_mask[2][3] = {{1.0, 0.91, 0.84}, {1.0, 0.41, 0.24}};
static const double coded_k_val[2][3] = {{1.0, 0.82, 0.74}, {1.0, 1.00, 0.95}};

typedef struct {
    double mask, val, hdr, actual[3], pred[3];
    int pixel; /* the encoder or the model chose a per-pixel mask */
} sample;

#define MAX_SAMPLES 64

static void relu_map(ds_tensor *t)
{
    int64_t c = t->shape.dims[1], h = t->shape.dims[2], w = t->shape.dims[3];
    float *x = ds_tensor_f32(t);
    for (int64_t k = 0; k < c; k++) {
        double fx = 0.1 + 0.3 * unif(), fy = 0.1 + 0.3 * unif(), ph = 6.28 * unif();
        for (int64_t i = 0; i < h; i++)
            for (int64_t j = 0; j < w; j++) {
                double v = sin(fx * (double)j + ph) + cos(fy * (double)i) + 0.3 * (unif() - 0.5);
                x[(k * h + i) * w + j] = v > 0 ? (float)v : 0.0f;
            }
    }
}

/* New values in blobs covering ~area of the plane, in a random subset of
 * channels; zeros stay zero with probability 0.5 (ReLU). */
static void blobs_f32(const ds_tensor *a, ds_tensor *b, double area)
{
    int64_t c = a->shape.dims[1], h = a->shape.dims[2], w = a->shape.dims[3];
    memcpy(b->data, a->data, ds_tensor_bytes(a));
    const float *x = ds_tensor_f32(a);
    float *y = ds_tensor_f32(b);
    int64_t covered = 0;
    while ((double)covered < area * (double)(h * w)) {
        int64_t bh = 3 + (int64_t)(rnd() % 8), bw = 3 + (int64_t)(rnd() % 12);
        int64_t y0 = (int64_t)(rnd() % (uint64_t)(h - bh)), x0 = (int64_t)(rnd() % (uint64_t)(w - bw));
        uint64_t chans = rnd() | rnd(); /* ~75% of channels */
        for (int64_t k = 0; k < c; k++) {
            if (!((chans >> k) & 1))
                continue;
            for (int64_t i = y0; i < y0 + bh; i++)
                for (int64_t j = x0; j < x0 + bw; j++) {
                    size_t idx = (size_t)((k * h + i) * w + j);
                    if (x[idx] == 0 && unif() < 0.5)
                        continue;
                    y[idx] = (float)(unif() * 2.0);
                }
        }
        covered += bh * bw;
    }
}

static void noise_u8(const ds_tensor *a, ds_tensor *b, double frac)
{
    int64_t h = a->shape.dims[2], w = a->shape.dims[3], hw = h * w;
    memcpy(b->data, a->data, ds_tensor_bytes(a));
    const uint8_t *x = ds_tensor_u8(a);
    uint8_t *y = ds_tensor_u8(b);
    for (int64_t i = 0; i < hw; i++)
        if (unif() < frac)
            for (int k = 0; k < 3; k++)
                y[k * hw + i] = (uint8_t)(x[k * hw + i] + 1 + rnd() % 4);
    int64_t y0 = (int64_t)(rnd() % (uint64_t)(h - 10)), x0 = (int64_t)(rnd() % (uint64_t)(w - 10));
    for (int k = 0; k < 3; k++)
        for (int64_t i = y0; i < y0 + 10; i++)
            for (int64_t j = x0; j < x0 + 10; j++)
                y[k * hw + i * w + j] = (uint8_t)rnd();
}

/* Mask and value bytes of the smallest raw form, from the fractions (the
 * model's formula, written out independently). */
static int model_parts(const ds_shape *s, ds_dtype t, const float *f, double *mask, double *val)
{
    int64_t planes, plane;
    ds_codec_planes(s, &planes, &plane);
    double es = (double)ds_dtype_size(t), P = (double)plane, mb = (double)((plane + 7) / 8);
    double em = (double)planes, ev = 0, fmax = 0;
    for (int64_t i = 0; i < planes; i++) {
        fmax = f[i] > fmax ? f[i] : fmax;
        if (f[i] == 0)
            continue;
        if (mb + f[i] * P * es < P * es)
            em += mb, ev += f[i] * P * es;
        else
            ev += P * es;
    }
    double dense = (double)ds_shape_numel(s) * es;
    *mask = 0, *val = dense;
    if (em + ev < dense)
        *mask = em, *val = ev;
    int64_t images = s->ndim == 4 ? s->dims[0] : 1;
    if (planes / images > 1 && (double)images * mb + fmax * dense < *mask + *val) {
        *mask = (double)images * mb, *val = fmax * dense;
        return 1;
    }
    return 0;
}

static int collect(ds_dtype t, sample *out)
{
    static const double fr[] = {0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45};
    ds_shape s = t == DS_F32 ? ds_shape_nchw(1, 16, 60, 90) : ds_shape_nchw(1, 3, 120, 160);
    ds_tensor a = {0}, b = {0};
    ds_codec_scratch sc = {0};
    ds_buf buf = {0};
    ds_error err;
    assert_int_equal(ds_tensor_reserve(&a, &s, t, &err), 0);
    assert_int_equal(ds_tensor_reserve(&b, &s, t, &err), 0);
    int n = 0;
    for (int rep = 0; rep < 3; rep++)
        for (size_t k = 0; k < sizeof fr / sizeof fr[0]; k++) {
            if (t == DS_F32) {
                relu_map(&a);
                blobs_f32(&a, &b, fr[k]);
            } else {
                for (size_t i = 0; i < ds_tensor_bytes(&a); i++)
                    ds_tensor_u8(&a)[i] = (uint8_t)(90 + rnd() % 60);
                noise_u8(&a, &b, fr[k]);
            }
            sample *sm = &out[n++];
            for (int c = 0; c < 3; c++) {
                ds_codec_opts o = {(ds_compress)c, 1, 1};
                buf.len = 0;
                assert_int_equal(ds_codec_encode(1, &b, &a, &o, &sc, &buf, &err), 0);
                sm->actual[c] = (double)buf.len;
                size_t np;
                const uint32_t *cnt = ds_codec_last_counts(&sc, &np);
                float f[64];
                assert_true(np <= 64);
                int64_t planes, plane;
                ds_codec_planes(&s, &planes, &plane);
                for (size_t i = 0; i < np; i++)
                    f[i] = (float)cnt[i] / (float)plane;
                sm->pred[c] = (double)ds_codec_predict_bytes(&s, t, f, (ds_compress)c);
                if (c == 0) {
                    ds_codec_header h;
                    assert_int_equal(ds_codec_peek(buf.data, buf.len, &h, &err), 0);
                    sm->pixel = h.mask == DS_MASK_PIXEL;
                    sm->pixel |= model_parts(&s, t, f, &sm->mask, &sm->val);
                    sm->hdr = 12 + 4 * 4 + 16;
                }
            }
        }
    ds_tensor_free(&a);
    ds_tensor_free(&b);
    ds_codec_scratch_free(&sc);
    ds_buf_free(&buf);
    return n;
}

/* Weighted least squares (relative error) of actual - hdr = km*mask + kv*val. */
static void fit(const sample *sm, int n, int c, double *km, double *kv)
{
    double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
    for (int i = 0; i < n; i++) {
        double w = 1.0 / (sm[i].actual[c] * sm[i].actual[c]);
        double y = sm[i].actual[c] - sm[i].hdr;
        a11 += w * sm[i].mask * sm[i].mask;
        a12 += w * sm[i].mask * sm[i].val;
        a22 += w * sm[i].val * sm[i].val;
        b1 += w * sm[i].mask * y;
        b2 += w * sm[i].val * y;
    }
    double det = a11 * a22 - a12 * a12;
    *km = (b1 * a22 - b2 * a12) / det;
    *kv = (a11 * b2 - a12 * b1) / det;
    /* Compression never expands what the encoder keeps: clamp to [0,1] and
     * refit the other constant alone. */
    if (*kv > 1 || *kv < 0) {
        *kv = *kv > 1 ? 1 : 0;
        *km = (b1 - a12 * *kv) / a11;
    }
    if (*km > 1 || *km < 0) {
        *km = *km > 1 ? 1 : 0;
        *kv = (b2 - a12 * *km) / a22;
        *kv = *kv > 1 ? 1 : (*kv < 0 ? 0 : *kv);
    }
}

static void check_dtype(ds_dtype t)
{
    sample sm[MAX_SAMPLES];
    int n = collect(t, sm);
    const int u8 = t == DS_U8;
    static const char *names[] = {"none", "lz4", "zstd"};
    for (int c = 0; c < 3; c++) {
        double sum = 0, worst = 0;
        for (int i = 0; i < n; i++) {
            double e = fabs(sm[i].pred[c] - sm[i].actual[c]) / sm[i].actual[c];
            sum += e;
            worst = e > worst ? e : worst;
            if (c == 0 && !sm[i].pixel) /* exact up to rounding */
                assert_true(e < 0.001);
            if (c == 0) /* max channel fraction <= union: a lower bound */
                assert_true(sm[i].pred[c] <= sm[i].actual[c] + 0.5);
        }
        if (getenv("DS_MODEL_VERBOSE"))
            for (int i = 0; i < n; i++)
                printf("  %s mask %.0f val %.0f actual %.0f pred %.0f\n", names[c], sm[i].mask, sm[i].val, sm[i].actual[c], sm[i].pred[c]);
        double km = 1, kv = 1;
        if (c)
            fit(sm, n, c, &km, &kv);
        printf("%s %-4s: mean rel. error %.3f, worst %.3f; fitted k_mask %.3f k_val %.3f "
               "(coded %.2f %.2f)\n",
               u8 ? "u8 " : "f32", names[c], sum / n, worst, km, kv, coded_k_mask[u8][c],
               coded_k_val[u8][c]);
        if (c == 0) {
            assert_true(worst < 0.35);
        } else {
            assert_true(sum / n < 0.2);
            assert_true(worst < 0.4);
            assert_true(fabs(km - coded_k_mask[u8][c]) < 0.08);
            assert_true(fabs(kv - coded_k_val[u8][c]) < 0.05);
        }
    }
}

static void test_model_f32(void **state)
{
    (void)state;
    check_dtype(DS_F32);
}

static void test_model_u8(void **state)
{
    (void)state;
    check_dtype(DS_U8);
}

static void test_model_edges(void **state)
{
    (void)state;
    ds_shape s = ds_shape_nchw(1, 2, 10, 10);
    float none[2] = {0, 0}, all[2] = {1, 1}, bad[2] = {NAN, 7};
    size_t hdr = 12 + 16 + 16;
    /* nothing changed: header + mode bytes */
    assert_int_equal(ds_codec_predict_bytes(&s, DS_F32, none, DS_COMPRESS_NONE), hdr + 2);
    /* everything changed: dense */
    assert_int_equal(ds_codec_predict_bytes(&s, DS_F32, all, DS_COMPRESS_NONE), hdr + 800);
    /* NaN -> 0, 7 -> 1: one plane dense */
    assert_int_equal(ds_codec_predict_bytes(&s, DS_F32, bad, DS_COMPRESS_NONE), hdr + 2 + 400);
    ds_shape z = {0};
    assert_int_equal(ds_codec_predict_bytes(&z, DS_F32, none, DS_COMPRESS_NONE), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_f32),
        cmocka_unit_test(test_model_u8),
        cmocka_unit_test(test_model_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
