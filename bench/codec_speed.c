/* codec_speed - encode/decode speed and size of the tensor codec on synthetic
 * data: a 1x64x120x180 f32 ReLU-like map with ~25% of elements changed in
 * spatial clusters, and a 1x3x480x720 u8 frame with ~27% of elements changed
 * (scattered noise plus a moving block, like decoded video).  Speeds are MB/s
 * of dense-equivalent f32 data (numel * 4 bytes) on one core, best of N.
 *
 *   build/bench/codec_speed [iterations]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "common/timing.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* ReLU of a smooth-ish field: about half the elements exactly zero. */
static void relu_map(float *x, int c, int h, int w)
{
    for (int k = 0; k < c; k++) {
        double fx = 0.05 + 0.2 * unif(), fy = 0.05 + 0.2 * unif(), ph = 6.28 * unif();
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                double v = __builtin_sin(fx * j + ph) + __builtin_cos(fy * i) + 0.3 * (unif() - 0.5);
                x[((size_t)k * h + i) * w + j] = v > 0 ? (float)v : 0.0f;
            }
    }
}

/* Copies a into b, then rewrites the elements of b inside random rectangles
 * (shared by all channels, like moving objects) until ~frac of elements
 * differ from a. */
static double perturb_f32(const float *a, float *b, int c, int h, int w, double frac)
{
    size_t n = (size_t)c * h * w, changed = 0;
    memcpy(b, a, n * sizeof *b);
    while ((double)changed < frac * (double)n) {
        int bh = 8 + (int)(rnd() % 24), bw = 8 + (int)(rnd() % 32);
        int y0 = (int)(rnd() % (uint64_t)(h - bh)), x0 = (int)(rnd() % (uint64_t)(w - bw));
        for (int k = 0; k < c; k++)
            for (int i = y0; i < y0 + bh; i++)
                for (int j = x0; j < x0 + bw; j++) {
                    size_t idx = ((size_t)k * h + i) * w + j;
                    if (a[idx] == 0 && unif() < 0.4)
                        continue; /* stays zero after ReLU */
                    float v = (float)(unif() * 2.0);
                    if (b[idx] == a[idx] && v != a[idx])
                        changed++;
                    b[idx] = v;
                }
    }
    return (double)changed / (double)n;
}

typedef struct {
    const char *name;
    ds_compress c;
    int update;
} variant;

static void run(const char *title, const ds_tensor *a, const ds_tensor *b, int iters)
{
    static const variant vs[] = {
        {"dense", DS_COMPRESS_NONE, 0},     {"dense+lz4", DS_COMPRESS_LZ4, 0},
        {"update", DS_COMPRESS_NONE, 1},    {"update+lz4", DS_COMPRESS_LZ4, 1},
        {"update+zstd1", DS_COMPRESS_ZSTD, 1},
    };
    ds_codec_scratch es = {0}, dsc = {0};
    ds_buf out = {0};
    ds_tensor cache = {0};
    ds_error err;
    double mb = (double)ds_shape_numel(&b->shape) * 4 / 1e6;
    double dense_bytes = (double)ds_tensor_bytes(b);
    printf("%s (%.2f MB dense-equivalent f32)\n", title, mb);
    printf("  %-14s %10s %8s %12s %12s\n", "variant", "bytes", "of dense", "encode MB/s", "decode MB/s");
    for (size_t v = 0; v < sizeof vs / sizeof vs[0]; v++) {
        ds_codec_opts o = {vs[v].c, 1, vs[v].update};
        double best_enc = 1e9, best_dec = 1e9;
        for (int it = 0; it < iters; it++) {
            out.len = 0;
            double t0 = ds_now();
            if (ds_codec_encode(1, b, a, &o, &es, &out, &err)) {
                fprintf(stderr, "encode: %s\n", err.msg);
                exit(1);
            }
            double t1 = ds_now();
            if (ds_tensor_copy(&cache, a, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                exit(1);
            }
            double t2 = ds_now();
            if (ds_codec_decode(out.data, out.len, &b->shape, &cache, &dsc, &err)) {
                fprintf(stderr, "decode: %s\n", err.msg);
                exit(1);
            }
            double t3 = ds_now();
            if (memcmp(cache.data, b->data, ds_tensor_bytes(b))) {
                fprintf(stderr, "decode mismatch in %s\n", vs[v].name);
                exit(1);
            }
            if (t1 - t0 < best_enc)
                best_enc = t1 - t0;
            if (t3 - t2 < best_dec)
                best_dec = t3 - t2;
        }
        printf("  %-14s %10zu %7.1f%% %12.0f %12.0f\n", vs[v].name, out.len,
               100.0 * (double)out.len / dense_bytes, mb / best_enc, mb / best_dec);
    }
    ds_codec_scratch_free(&es);
    ds_codec_scratch_free(&dsc);
    ds_buf_free(&out);
    ds_tensor_free(&cache);
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20;
    if (iters < 1)
        iters = 1;
    ds_error err;
    ds_tensor a = {0}, b = {0};
    ds_shape s = ds_shape_nchw(1, 64, 120, 180);
    if (ds_tensor_reserve(&a, &s, DS_F32, &err) || ds_tensor_reserve(&b, &s, DS_F32, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    relu_map(ds_tensor_f32(&a), 64, 120, 180);
    double f = perturb_f32(ds_tensor_f32(&a), ds_tensor_f32(&b), 64, 120, 180, 0.25);
    char title[128];
    snprintf(title, sizeof title, "f32 1x64x120x180 ReLU map, %.1f%% changed (clustered)", 100 * f);
    run(title, &a, &b, iters);

    /* u8 camera frame: noise on ~26% of pixels (all 3 channels), like the
     * re-encoded video frames of vtest.avi. */
    ds_shape fs = ds_shape_nchw(1, 3, 480, 720);
    if (ds_tensor_reserve(&a, &fs, DS_U8, &err) || ds_tensor_reserve(&b, &fs, DS_U8, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    size_t hw = 480 * 720, changed = 0;
    uint8_t *pa = ds_tensor_u8(&a), *pb = ds_tensor_u8(&b);
    for (size_t i = 0; i < 3 * hw; i++)
        pa[i] = (uint8_t)(100 + rnd() % 50);
    memcpy(pb, pa, 3 * hw);
    for (size_t i = 0; i < hw; i++)
        if (unif() < 0.26)
            for (int k = 0; k < 3; k++) {
                pb[k * hw + i] = (uint8_t)(pa[k * hw + i] + 1 + rnd() % 3);
                changed++;
            }
    snprintf(title, sizeof title, "u8 1x3x480x720 frame, %.1f%% changed (scattered)",
             100.0 * (double)changed / (double)(3 * hw));
    run(title, &a, &b, iters);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
    return 0;
}
