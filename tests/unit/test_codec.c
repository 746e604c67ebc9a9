/* test_codec - round trips, choice of encoding, exactness over many frames,
 * and strict rejection of malformed payloads (cache left unchanged). */
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

static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static ds_tensor make(int ndim, const int64_t *dims, ds_dtype t)
{
    ds_tensor x = {0};
    ds_shape s = ds_shape_make(ndim, dims);
    ds_error err;
    assert_int_equal(ds_tensor_reserve(&x, &s, t, &err), 0);
    memset(x.data, 0, ds_tensor_bytes(&x));
    return x;
}

static ds_tensor make4(int64_t n, int64_t c, int64_t h, int64_t w, ds_dtype t)
{
    int64_t d[4] = {n, c, h, w};
    return make(4, d, t);
}

static size_t numel(const ds_tensor *x) { return (size_t)ds_shape_numel(&x->shape); }

/* Random value: ~half exact zeros (ReLU-like), some -0.0 and NaNs with
 * payloads so that bit-exactness is exercised. */
static void set_random(ds_tensor *x, size_t i)
{
    if (x->dtype == DS_U8) {
        ds_tensor_u8(x)[i] = (uint8_t)rnd();
        return;
    }
    uint64_t r = rnd() % 100;
    float v;
    if (r < 40)
        v = 0.0f;
    else if (r < 45)
        v = -0.0f;
    else if (r < 48) {
        uint32_t bits = 0x7fc00000u | (uint32_t)(rnd() & 0x3fffff);
        memcpy(&v, &bits, 4);
    } else
        v = (float)(rnd() % 100000) / 1000.0f;
    ds_tensor_f32(x)[i] = v;
}

static void fill_random(ds_tensor *x)
{
    for (size_t i = 0; i < numel(x); i++)
        set_random(x, i);
}

/* Changes elements of x inside a few random boxes (clustered, all channels)
 * plus a few scattered ones; the result differs from before by bit pattern
 * in most touched places. */
static void perturb(ds_tensor *x)
{
    int64_t planes, plane;
    ds_codec_planes(&x->shape, &planes, &plane);
    int64_t w = x->shape.dims[x->shape.ndim - 1], h = plane / w;
    int boxes = 1 + (int)(rnd() % 3);
    for (int b = 0; b < boxes; b++) {
        int64_t bh = 1 + (int64_t)(rnd() % (uint64_t)(h < 6 ? h : 6));
        int64_t bw = 1 + (int64_t)(rnd() % (uint64_t)(w < 9 ? w : 9));
        int64_t y0 = (int64_t)(rnd() % (uint64_t)(h - bh + 1));
        int64_t x0 = (int64_t)(rnd() % (uint64_t)(w - bw + 1));
        for (int64_t p = 0; p < planes; p++)
            for (int64_t i = y0; i < y0 + bh; i++)
                for (int64_t j = x0; j < x0 + bw; j++)
                    set_random(x, (size_t)(p * plane + i * w + j));
    }
    for (int k = 0; k < 3; k++)
        set_random(x, (size_t)(rnd() % numel(x)));
}

static void encode_ok(int id, const ds_tensor *cur, const ds_tensor *ref, ds_compress c,
                      int update, ds_codec_scratch *s, ds_buf *out)
{
    ds_codec_opts o = {c, 1, update};
    ds_error err = {{0}};
    out->len = 0;
    int rc = ds_codec_encode(id, cur, ref, &o, s, out, &err);
    if (rc)
        fail_msg("encode failed: %s", err.msg);
}

static void decode_ok(const ds_buf *in, const ds_shape *expected, ds_tensor *cache,
                      ds_codec_scratch *s)
{
    ds_error err = {{0}};
    int rc = ds_codec_decode(in->data, in->len, expected, cache, s, &err);
    if (rc)
        fail_msg("decode failed: %s", err.msg);
}

static void assert_same(const ds_tensor *a, const ds_tensor *b)
{
    assert_int_equal(a->dtype, b->dtype);
    assert_true(ds_shape_equal(&a->shape, &b->shape));
    assert_memory_equal(a->data, b->data, ds_tensor_bytes(a));
}

static ds_codec_header peek_ok(const ds_buf *b)
{
    ds_codec_header h;
    ds_error err = {{0}};
    if (ds_codec_peek(b->data, b->len, &h, &err))
        fail_msg("peek failed: %s", err.msg);
    return h;
}

/* Encodes cur against ref (and against nothing), decodes each into a copy of
 * ref (resp. an empty cache) and checks bit equality, for every compression
 * and with updates on and off. */
static void roundtrip_all(const ds_tensor *ref, const ds_tensor *cur)
{
    static const ds_compress cs[] = {DS_COMPRESS_NONE, DS_COMPRESS_LZ4, DS_COMPRESS_ZSTD};
    ds_codec_scratch es = {0}, dsc = {0};
    ds_buf out = {0};
    ds_error err;
    for (size_t ci = 0; ci < 3; ci++)
        for (int update = 0; update <= DS_CODEC_EXACT_DELTA; update++)
            for (int with_ref = 0; with_ref <= 1; with_ref++) {
                encode_ok(7, cur, with_ref ? ref : NULL, cs[ci], update, &es, &out);
                ds_codec_header h = peek_ok(&out);
                assert_int_equal(h.layer_id, 7);
                assert_int_equal(h.dtype, cur->dtype);
                assert_true(ds_shape_equal(&h.shape, &cur->shape));
                if (!update)
                    assert_int_equal(h.encoding, DS_ENC_DENSE);
                if (!with_ref)
                    assert_int_not_equal(h.encoding, DS_ENC_UPDATE);
                assert_int_equal(h.exact_delta,
                                 update == DS_CODEC_EXACT_DELTA && h.encoding == DS_ENC_UPDATE);
                assert_true(h.compress == DS_COMPRESS_NONE || h.compress == cs[ci]);
                ds_tensor cache = {0};
                if (with_ref)
                    assert_int_equal(ds_tensor_copy(&cache, ref, &err), 0);
                decode_ok(&out, &cur->shape, &cache, &dsc);
                assert_same(&cache, cur);
                /* and again with no expected shape */
                if (with_ref)
                    assert_int_equal(ds_tensor_copy(&cache, ref, &err), 0);
                decode_ok(&out, NULL, &cache, &dsc);
                assert_same(&cache, cur);
                ds_tensor_free(&cache);
            }
    ds_codec_scratch_free(&es);
    ds_codec_scratch_free(&dsc);
    ds_buf_free(&out);
}

static void test_roundtrip_dtypes(void **state)
{
    (void)state;
    ds_dtype ts[] = {DS_F32, DS_U8};
    for (int t = 0; t < 2; t++) {
        ds_tensor a = make4(1, 4, 16, 24, ts[t]), b = make4(1, 4, 16, 24, ts[t]);
        fill_random(&a);
        assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
        perturb(&b);
        roundtrip_all(&a, &b);
        /* batch of 2 images (pixel masks per image) */
        ds_tensor c = make4(2, 3, 7, 9, ts[t]), d = make4(2, 3, 7, 9, ts[t]);
        fill_random(&c);
        assert_int_equal(ds_tensor_copy(&d, &c, NULL), 0);
        perturb(&d);
        roundtrip_all(&c, &d);
        ds_tensor_free(&a);
        ds_tensor_free(&b);
        ds_tensor_free(&c);
        ds_tensor_free(&d);
    }
}

static void test_roundtrip_edge_shapes(void **state)
{
    (void)state;
    int64_t shapes[][5] = {
        {4, 1, 1, 1, 1}, {4, 1, 1, 8, 8}, {1, 1, 0, 0, 0},  {1, 65, 0, 0, 0},
        {1, 100, 0, 0, 0}, {2, 3, 70, 0, 0}, {3, 5, 3, 13, 0}, {4, 1, 2, 1, 129},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int t = 1; t <= 2; t++) {
            ds_tensor a = make((int)shapes[k][0], shapes[k] + 1, (ds_dtype)t);
            ds_tensor b = make((int)shapes[k][0], shapes[k] + 1, (ds_dtype)t);
            fill_random(&a);
            /* none changed */
            assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
            roundtrip_all(&a, &b);
            /* all changed */
            for (size_t i = 0; i < numel(&b); i++) {
                if (t == DS_U8)
                    ds_tensor_u8(&b)[i] = (uint8_t)(ds_tensor_u8(&a)[i] + 1);
                else
                    ds_tensor_f32(&b)[i] = (float)i + 0.5f;
            }
            roundtrip_all(&a, &b);
            /* some changed */
            assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
            perturb(&b);
            roundtrip_all(&a, &b);
            ds_tensor_free(&a);
            ds_tensor_free(&b);
        }
}

static void test_signed_zero_and_nan(void **state)
{
    (void)state;
    ds_tensor a = make4(1, 2, 4, 4, DS_F32), b = make4(1, 2, 4, 4, DS_F32);
    float *pa = ds_tensor_f32(&a), *pb = ds_tensor_f32(&b);
    uint32_t nan1 = 0x7fc00001u, nan2 = 0x7fc00002u, nan3 = 0xffc12345u;
    memcpy(&pa[0], &nan1, 4);
    memcpy(&pb[0], &nan2, 4); /* NaN -> other NaN: changed */
    memcpy(&pa[1], &nan1, 4);
    memcpy(&pb[1], &nan1, 4); /* same NaN: unchanged */
    pa[2] = 0.0f;
    pb[2] = -0.0f; /* +0 -> -0: changed */
    pa[17] = -0.0f;
    pb[17] = 0.0f;
    memcpy(&pb[20], &nan3, 4);
    roundtrip_all(&a, &b);
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    encode_ok(1, &b, &a, DS_COMPRESS_NONE, 1, &s, &out);
    size_t np;
    const uint32_t *cnt = ds_codec_last_counts(&s, &np);
    assert_int_equal(np, 2);
    assert_int_equal(cnt[0], 2);
    assert_int_equal(cnt[1], 2);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
}

/* 100 frames: sender encodes against its last sent tensor, receiver decodes
 * into its cache; both must be bit-identical after every frame.  Every few
 * frames the receiver "loses" its cache (plan change) and gets a full
 * tensor. */
static void test_exact_over_100_frames(void **state)
{
    (void)state;
    ds_dtype ts[] = {DS_F32, DS_U8};
    ds_compress cs[] = {DS_COMPRESS_NONE, DS_COMPRESS_LZ4, DS_COMPRESS_ZSTD};
    for (int t = 0; t < 2; t++) {
        ds_tensor cur = make4(1, 6, 20, 30, ts[t]), sent = {0}, cache = {0};
        fill_random(&cur);
        ds_codec_scratch es = {0}, dsc = {0};
        ds_buf out = {0};
        int have = 0;
        for (int f = 0; f < 100; f++) {
            perturb(&cur);
            if (f % 17 == 16) { /* plan change: receiver dropped the layer */
                ds_tensor_free(&cache);
                have = 0;
            }
            int upd = f % 6 < 3 ? 1 : DS_CODEC_EXACT_DELTA;
            encode_ok(3, &cur, have ? &sent : NULL, cs[f % 3], upd, &es, &out);
            ds_codec_header h = peek_ok(&out);
            if (!have)
                assert_int_not_equal(h.encoding, DS_ENC_UPDATE);
            decode_ok(&out, &cur.shape, &cache, &dsc);
            assert_int_equal(ds_tensor_copy(&sent, &cur, NULL), 0);
            have = 1;
            assert_same(&sent, &cache);
        }
        ds_tensor_free(&cur);
        ds_tensor_free(&sent);
        ds_tensor_free(&cache);
        ds_codec_scratch_free(&es);
        ds_codec_scratch_free(&dsc);
        ds_buf_free(&out);
    }
}

/* Raw body size of each form, computed independently of the encoder. */
static void form_sizes(const ds_tensor *cur, const ds_tensor *ref, uint64_t *dense,
                       uint64_t *elem, uint64_t *pixel)
{
    size_t es = ds_dtype_size(cur->dtype);
    int64_t planes, plane;
    ds_codec_planes(&cur->shape, &planes, &plane);
    int64_t images = cur->shape.ndim == 4 ? cur->shape.dims[0] : 1, ch = planes / images;
    uint64_t mb = (uint64_t)(plane + 7) / 8;
    *dense = numel(cur) * es;
    *elem = (uint64_t)planes;
    *pixel = ch > 1 ? (uint64_t)images * mb : UINT64_MAX;
    const uint8_t *c = cur->data, *r = ref->data;
    for (int64_t p = 0; p < planes; p++) {
        uint64_t n = 0;
        for (int64_t i = 0; i < plane; i++)
            n += memcmp(c + (p * plane + i) * es, r + (p * plane + i) * es, es) != 0;
        if (n) {
            uint64_t m = mb + n * es, d = (uint64_t)plane * es;
            *elem += m < d ? m : d;
        }
    }
    if (ch > 1)
        for (int64_t im = 0; im < images; im++)
            for (int64_t i = 0; i < plane; i++) {
                int any = 0;
                for (int64_t k = 0; k < ch; k++) {
                    size_t off = (size_t)(((im * ch + k) * plane) + i) * es;
                    any |= memcmp(c + off, r + off, es) != 0;
                }
                *pixel += any ? (uint64_t)ch * es : 0;
            }
}

static void check_choice(const ds_tensor *ref, const ds_tensor *cur, ds_codec_encoding want_enc,
                         ds_codec_mask want_mask)
{
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    encode_ok(2, cur, ref, DS_COMPRESS_NONE, 1, &s, &out);
    ds_codec_header h = peek_ok(&out);
    uint64_t d, e, p;
    form_sizes(cur, ref, &d, &e, &p);
    uint64_t best = d < e ? d : e;
    best = best < p ? best : p;
    assert_int_equal(h.raw_size, best);
    assert_int_equal(h.encoding, want_enc);
    assert_int_equal(h.mask, want_mask);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
}

static void test_picks_smallest(void **state)
{
    (void)state;
    /* all changed: dense */
    ds_tensor a = make4(1, 8, 16, 16, DS_F32), b = make4(1, 8, 16, 16, DS_F32);
    for (size_t i = 0; i < numel(&b); i++)
        ds_tensor_f32(&b)[i] = 1.0f + (float)i;
    check_choice(&a, &b, DS_ENC_DENSE, DS_MASK_NONE);
    /* none changed: update of mode bytes only */
    check_choice(&b, &b, DS_ENC_UPDATE, DS_MASK_ELEM);
    /* one channel changed a little, others not: per-element masks */
    assert_int_equal(ds_tensor_copy(&a, &b, NULL), 0);
    for (int i = 0; i < 30; i++)
        ds_tensor_f32(&b)[3 * 256 + i * 7] = -1.0f;
    check_choice(&a, &b, DS_ENC_UPDATE, DS_MASK_ELEM);
    /* one channel changed completely: that plane dense inside an update */
    for (int i = 0; i < 256; i++)
        ds_tensor_f32(&b)[5 * 256 + i] = -2.0f;
    check_choice(&a, &b, DS_ENC_UPDATE, DS_MASK_ELEM);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
    /* RGB frame, noise on the same pixels in all channels: pixel mask */
    ds_tensor u = make4(1, 3, 24, 32, DS_U8), v = make4(1, 3, 24, 32, DS_U8);
    fill_random(&u);
    assert_int_equal(ds_tensor_copy(&v, &u, NULL), 0);
    for (int i = 0; i < 24 * 32; i++)
        if (rnd() % 4 == 0)
            for (int k = 0; k < 3; k++)
                ds_tensor_u8(&v)[k * 768 + i] ^= 1;
    check_choice(&u, &v, DS_ENC_UPDATE, DS_MASK_PIXEL);
    /* no reference: a mostly-zero map goes out SPARSE, not dense */
    ds_tensor z = make4(1, 4, 16, 16, DS_F32), zero = make4(1, 4, 16, 16, DS_F32);
    ds_tensor_f32(&z)[5] = 3.0f;
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    encode_ok(2, &z, NULL, DS_COMPRESS_NONE, 1, &s, &out);
    ds_codec_header h = peek_ok(&out);
    assert_int_equal(h.encoding, DS_ENC_SPARSE);
    uint64_t d, e, p;
    form_sizes(&z, &zero, &d, &e, &p);
    assert_int_equal(h.raw_size, e < p ? e : p);
    size_t np;
    const uint32_t *cnt = ds_codec_last_counts(&s, &np);
    assert_int_equal(np, 4);
    assert_int_equal(cnt[0], 1);
    assert_int_equal(cnt[1] + cnt[2] + cnt[3], 0);
    /* compression is only kept when it shrinks the body */
    encode_ok(2, &z, NULL, DS_COMPRESS_LZ4, 1, &s, &out);
    h = peek_ok(&out);
    assert_true(h.compress == DS_COMPRESS_NONE || h.stored_size < h.raw_size);
    encode_ok(2, &zero, NULL, DS_COMPRESS_LZ4, 0, &s, &out); /* dense zeros compress */
    h = peek_ok(&out);
    assert_int_equal(h.compress, DS_COMPRESS_LZ4);
    assert_true(h.stored_size < h.raw_size / 10);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
    ds_tensor_free(&z);
    ds_tensor_free(&zero);
    ds_tensor_free(&u);
    ds_tensor_free(&v);
}

/* ---- malformed payloads ------------------------------------------------- */

/* Decodes p into a cache that starts as `base` and expects failure with a
 * message containing `needle` (NULL: any), and the cache unchanged. */
static void expect_reject(const uint8_t *p, size_t n, const ds_shape *expected,
                          const ds_tensor *base, const char *needle)
{
    ds_tensor cache = {0};
    ds_codec_scratch s = {0};
    ds_error err = {{0}};
    if (base)
        assert_int_equal(ds_tensor_copy(&cache, base, NULL), 0);
    int rc = ds_codec_decode(p, n, expected, &cache, &s, &err);
    if (rc == 0)
        fail_msg("malformed payload of %zu bytes accepted (wanted \"%s\")", n,
                 needle ? needle : "");
    assert_int_equal(rc, -1);
    assert_true(strlen(err.msg) > 10);
    if (needle && !strstr(err.msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
    if (base)
        assert_same(&cache, base);
    else
        assert_null(cache.data);
    ds_tensor_free(&cache);
    ds_codec_scratch_free(&s);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    ds_compress cs[] = {DS_COMPRESS_NONE, DS_COMPRESS_LZ4, DS_COMPRESS_ZSTD};
    for (int t = 1; t <= 2; t++) {
        ds_tensor a = make4(1, 3, 8, 12, (ds_dtype)t), b = make4(1, 3, 8, 12, (ds_dtype)t);
        fill_random(&a);
        assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
        perturb(&b);
        ds_codec_scratch s = {0};
        ds_buf out = {0};
        for (int c = 0; c < 3; c++)
            for (int mode = 0; mode < 4; mode++) {
                /* mode 0 dense, 1 update, 2 sparse, 3 update with deltas */
                encode_ok(9, &b, mode % 2 ? &a : NULL, cs[c], mode == 3 ? DS_CODEC_EXACT_DELTA : mode != 0,
                          &s, &out);
                for (size_t cut = 0; cut < out.len; cut++)
                    expect_reject(out.data, cut, &b.shape, &a, NULL);
                /* one trailing byte */
                assert_int_equal(ds_buf_append(&out, "x", 1, NULL), 0);
                expect_reject(out.data, out.len, &b.shape, &a, "trailing");
            }
        ds_codec_scratch_free(&s);
        ds_buf_free(&out);
        ds_tensor_free(&a);
        ds_tensor_free(&b);
    }
}

static void test_bad_header_fields(void **state)
{
    (void)state;
    ds_tensor a = make4(1, 3, 8, 12, DS_F32), b = make4(1, 3, 8, 12, DS_F32);
    fill_random(&a);
    assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
    for (int i = 0; i < 20; i++) /* changes in one channel: per-element masks */
        set_random(&b, (size_t)(96 + rnd() % 96));
    ds_tensor_f32(&b)[100] = 5.0f;
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    encode_ok(4, &b, &a, DS_COMPRESS_NONE, 1, &s, &out);
    ds_codec_header h = peek_ok(&out);
    assert_int_equal(h.encoding, DS_ENC_UPDATE);
    assert_int_equal(h.mask, DS_MASK_ELEM);
    uint8_t buf[8192];
    size_t n = out.len;
    assert_true(n <= sizeof buf);
    size_t raw_off = 12 + 4 * 4;
#define MUTATE(stmt, needle)                                                   \
    do {                                                                       \
        memcpy(buf, out.data, n);                                              \
        stmt;                                                                  \
        expect_reject(buf, n, &b.shape, &a, needle);                           \
    } while (0)
    MUTATE(buf[0] = 0x00, "magic");
    MUTATE(buf[1] = 2, "version");
    MUTATE(buf[2] = 3, "dtype");
    MUTATE(buf[2] = DS_U8, NULL); /* u8 vs f32 cache / raw size */
    MUTATE(buf[3] = 3, "encoding");
    MUTATE(buf[3] = DS_ENC_DENSE, "mask kind");
    MUTATE(buf[4] = 3, "mask kind");
    MUTATE(buf[4] = DS_MASK_NONE, "mask kind");
    MUTATE(buf[5] = 3, "compression");
    MUTATE(buf[5] = DS_COMPRESS_LZ4, NULL);
    MUTATE(buf[6] = 1, "zstd level");
    MUTATE(buf[7] = 0, "dims");
    MUTATE(buf[7] = DS_MAX_DIMS + 1, "dims");
    MUTATE(buf[7] = 3, NULL);
    MUTATE(buf[11] = 0x80, "layer id");
    MUTATE(buf[12] = 0, "dim 0");
    MUTATE((buf[16] = 0xff, buf[17] = 0xff, buf[18] = 0xff, buf[19] = 0xff), "dim 1");
    MUTATE((buf[20] = 0, buf[21] = 0, buf[22] = 0, buf[23] = 0x40), "2^31");
    MUTATE(buf[13] = 1, "shape"); /* dim0 = 257: disagrees with expected */
    MUTATE(buf[raw_off] ^= 1, NULL);          /* lying raw size */
    MUTATE(buf[raw_off + 7] = 0x80, "raw size");
    MUTATE(buf[raw_off + 8] ^= 1, NULL);      /* lying stored size */
    MUTATE(buf[raw_off + 15] = 0x80, "truncated");
    /* body: mode byte out of range, and a mode flip changes value counts */
    MUTATE(buf[h.header_size] = 3, "mode");
    MUTATE(buf[h.header_size] = (uint8_t)(buf[h.header_size] == 1 ? 2 : 1), NULL);
#undef MUTATE
    /* padding bits of a 1-D mask: 13 elements, 2 mask bytes */
    int64_t d13 = 13;
    ds_tensor p = make(1, &d13, DS_F32), q = make(1, &d13, DS_F32);
    ds_tensor_f32(&q)[3] = 1.0f;
    encode_ok(4, &q, &p, DS_COMPRESS_NONE, 1, &s, &out);
    h = peek_ok(&out);
    assert_int_equal(h.mask, DS_MASK_ELEM);
    assert_int_equal(out.data[h.header_size], 2);
    memcpy(buf, out.data, out.len);
    buf[h.header_size + 2] |= 0x80; /* bit 15 of a 13-bit mask */
    expect_reject(buf, out.len, &q.shape, &p, "padding");
    /* the same bit as a real change implies one more value than present */
    memcpy(buf, out.data, out.len);
    buf[h.header_size + 2] |= 0x10; /* bit 12 */
    expect_reject(buf, out.len, &q.shape, &p, "values");
    ds_tensor_free(&p);
    ds_tensor_free(&q);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
}

static void test_cache_and_shape_mismatch(void **state)
{
    (void)state;
    ds_tensor a = make4(1, 3, 8, 12, DS_F32), b = make4(1, 3, 8, 12, DS_F32);
    fill_random(&a);
    assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
    perturb(&b);
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    encode_ok(6, &b, &a, DS_COMPRESS_LZ4, 1, &s, &out);
    /* update without a cache */
    expect_reject(out.data, out.len, &b.shape, NULL, "update for layer 6 but no cached tensor");
    /* update against a cache of another shape or dtype */
    ds_tensor other = make4(1, 3, 12, 8, DS_F32), other_t = make4(1, 3, 8, 12, DS_U8);
    expect_reject(out.data, out.len, NULL, &other, "cached tensor");
    expect_reject(out.data, out.len, NULL, &other_t, "cached tensor");
    /* payload shape disagrees with what the receiver expects */
    ds_shape want = ds_shape_nchw(1, 3, 8, 13);
    expect_reject(out.data, out.len, &want, &a, "shape");
    /* a dense payload of the wrong shape */
    encode_ok(6, &b, NULL, DS_COMPRESS_NONE, 0, &s, &out);
    expect_reject(out.data, out.len, &want, &a, "shape");
    /* encoder refuses a reference of another shape */
    ds_error err;
    ds_codec_opts o = {DS_COMPRESS_NONE, 0, 1};
    assert_int_equal(ds_codec_encode(6, &b, &other, &o, &s, &out, &err), -1);
    assert_non_null(strstr(err.msg, "reference"));
    ds_tensor_free(&other);
    ds_tensor_free(&other_t);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
}

static void test_corrupt_compressed_body(void **state)
{
    (void)state;
    ds_tensor a = make4(1, 4, 32, 32, DS_F32), b = make4(1, 4, 32, 32, DS_F32);
    for (size_t i = 0; i < numel(&a); i++)
        ds_tensor_f32(&a)[i] = (float)(i % 7);
    assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
    perturb(&b);
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    ds_compress cs[] = {DS_COMPRESS_LZ4, DS_COMPRESS_ZSTD};
    for (int c = 0; c < 2; c++)
        for (int update = 0; update <= 1; update++) {
            encode_ok(8, &b, &a, cs[c], update, &s, &out);
            ds_codec_header h = peek_ok(&out);
            assert_int_equal(h.compress, cs[c]);
            uint8_t *buf = malloc(out.len);
            assert_non_null(buf);
            /* flip bytes across the body: each is rejected or decodes to a
             * valid tensor; never a crash (ASan checks the rest) */
            for (size_t k = h.header_size; k < out.len; k += 3) {
                memcpy(buf, out.data, out.len);
                buf[k] ^= 0x5a;
                ds_tensor cache = {0};
                ds_error err;
                assert_int_equal(ds_tensor_copy(&cache, &a, NULL), 0);
                if (ds_codec_decode(buf, out.len, &b.shape, &cache, &s, &err))
                    assert_same(&cache, &a);
                ds_tensor_free(&cache);
            }
            /* raw size that lies by one byte in either direction */
            size_t raw_off = h.header_size - 16;
            for (int delta = -1; delta <= 1; delta += 2) {
                memcpy(buf, out.data, out.len);
                uint64_t r = h.raw_size + (uint64_t)(int64_t)delta;
                for (int i = 0; i < 8; i++)
                    buf[raw_off + i] = (uint8_t)(r >> (8 * i));
                expect_reject(buf, out.len, &b.shape, &a, NULL);
            }
            free(buf);
        }
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
}

static void test_encode_rejects_bad_input(void **state)
{
    (void)state;
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    ds_error err;
    ds_tensor a = make4(1, 1, 2, 2, DS_F32);
    assert_int_equal(ds_codec_encode(-1, &a, NULL, NULL, &s, &out, &err), -1);
    a.dtype = (ds_dtype)9;
    assert_int_equal(ds_codec_encode(1, &a, NULL, NULL, &s, &out, &err), -1);
    a.dtype = DS_F32;
    a.shape.dims[2] = 0;
    assert_int_equal(ds_codec_encode(1, &a, NULL, NULL, &s, &out, &err), -1);
    assert_int_equal(out.len, 0);
    ds_compress c;
    assert_int_equal(ds_compress_parse("zstd", &c, &err), 0);
    assert_int_equal(c, DS_COMPRESS_ZSTD);
    assert_int_equal(ds_compress_parse("gzip", &c, &err), -1);
    a.shape.dims[2] = 2;
    ds_tensor_free(&a);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
}

/* Payloads are appended: several tensors in one buffer decode one by one. */
static void test_append(void **state)
{
    (void)state;
    ds_tensor a = make4(1, 2, 3, 4, DS_F32), b = make4(1, 2, 3, 4, DS_U8);
    fill_random(&a);
    fill_random(&b);
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    ds_error err;
    assert_int_equal(ds_codec_encode(1, &a, NULL, NULL, &s, &out, &err), 0);
    size_t first = out.len;
    ds_codec_opts o = {DS_COMPRESS_ZSTD, 3, 1};
    assert_int_equal(ds_codec_encode(2, &b, NULL, &o, &s, &out, &err), 0);
    ds_tensor x = {0}, y = {0};
    assert_int_equal(ds_codec_decode(out.data, first, NULL, &x, &s, &err), 0);
    assert_int_equal(ds_codec_decode(out.data + first, out.len - first, NULL, &y, &s, &err), 0);
    assert_same(&x, &a);
    assert_same(&y, &b);
    ds_tensor_free(&x);
    ds_tensor_free(&y);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
}

/* f32 values of a ReLU map travel byte-shuffled inside lz4/zstd; an 8-bit
 * frame stored as f32 does not (the probe picks); both round-trip exactly,
 * and the flag is rejected where it cannot apply. */
static void test_shuffle(void **state)
{
    (void)state;
    ds_tensor a = make4(1, 8, 32, 32, DS_F32), b = make4(1, 8, 32, 32, DS_F32);
    for (size_t i = 0; i < numel(&a); i++)
        ds_tensor_f32(&a)[i] = rnd() % 2 ? (float)(rnd() % 1000000) / 500000.0f : 0.0f;
    assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
    for (size_t i = 0; i < numel(&b); i += 1 + rnd() % 5)
        ds_tensor_f32(&b)[i] = (float)(rnd() % 1000000) / 500000.0f;
    ds_tensor f = make4(1, 3, 32, 32, DS_F32), g = make4(1, 3, 32, 32, DS_F32);
    for (size_t i = 0; i < numel(&f); i++)
        ds_tensor_f32(&f)[i] = (float)(rnd() % 256) / 255.0f;
    assert_int_equal(ds_tensor_copy(&g, &f, NULL), 0);
    for (size_t i = 0; i < numel(&g); i += 1 + rnd() % 4)
        ds_tensor_f32(&g)[i] = (float)(rnd() % 256) / 255.0f;
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    ds_compress cs[] = {DS_COMPRESS_LZ4, DS_COMPRESS_ZSTD};
    for (int c = 0; c < 2; c++)
        for (int update = 0; update <= 1; update++) {
            encode_ok(1, &b, &a, cs[c], update, &s, &out);
            ds_codec_header h = peek_ok(&out);
            assert_int_equal(h.compress, cs[c]);
            if (update) /* changed values of a ReLU map: shuffling helps */
                assert_int_equal(h.shuffled, 1);
            ds_tensor cache = {0};
            assert_int_equal(ds_tensor_copy(&cache, &a, NULL), 0);
            decode_ok(&out, &b.shape, &cache, &s);
            assert_same(&cache, &b);
            for (size_t cut = h.header_size; cut < out.len; cut += 97)
                expect_reject(out.data, cut, &b.shape, &a, "truncated");
            encode_ok(1, &g, &f, cs[c], update, &s, &out);
            h = peek_ok(&out);
            assert_int_equal(h.shuffled, 0);
            assert_int_equal(ds_tensor_copy(&cache, &f, NULL), 0);
            decode_ok(&out, &g.shape, &cache, &s);
            assert_same(&cache, &g);
            ds_tensor_free(&cache);
        }
    /* flag on an uncompressed f32 payload, and on a compressed u8 one */
    encode_ok(1, &b, &a, DS_COMPRESS_NONE, 1, &s, &out);
    out.data[5] |= 0x80;
    expect_reject(out.data, out.len, &b.shape, &a, "shuffle");
    ds_tensor u = make4(1, 2, 16, 16, DS_U8);
    encode_ok(1, &u, NULL, DS_COMPRESS_LZ4, 0, &s, &out);
    assert_int_equal(out.data[5], DS_COMPRESS_LZ4);
    out.data[5] |= 0x80;
    expect_reject(out.data, out.len, &u.shape, NULL, "shuffle");
    ds_tensor_free(&u);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
    ds_tensor_free(&f);
    ds_tensor_free(&g);
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
}

/* Exact deltas (XOR for f32 bit patterns, mod 256 for u8): bit-exact, and
 * smaller under zstd for noise-like changes; the flag only fits UPDATE. */
static void test_exact_delta(void **state)
{
    (void)state;
    ds_tensor a = make4(1, 3, 40, 60, DS_U8), b = make4(1, 3, 40, 60, DS_U8);
    for (size_t i = 0; i < numel(&a); i++)
        ds_tensor_u8(&a)[i] = (uint8_t)(90 + rnd() % 60);
    assert_int_equal(ds_tensor_copy(&b, &a, NULL), 0);
    for (size_t i = 0; i < 2400; i++)
        if (rnd() % 4 == 0)
            for (int k = 0; k < 3; k++)
                ds_tensor_u8(&b)[k * 2400 + i] += (uint8_t)(1 + rnd() % 3);
    ds_tensor_u8(&b)[7] = 255; /* wraps modulo 256 */
    ds_tensor_u8(&a)[7] = 3;
    ds_codec_scratch s = {0};
    ds_buf out = {0};
    size_t sizes[2];
    for (int m = 0; m < 2; m++) {
        encode_ok(1, &b, &a, DS_COMPRESS_ZSTD, m ? DS_CODEC_EXACT_DELTA : 1, &s, &out);
        ds_codec_header h = peek_ok(&out);
        assert_int_equal(h.encoding, DS_ENC_UPDATE);
        assert_int_equal(h.exact_delta, m);
        sizes[m] = out.len;
        ds_tensor cache = {0};
        assert_int_equal(ds_tensor_copy(&cache, &a, NULL), 0);
        decode_ok(&out, &b.shape, &cache, &s);
        assert_same(&cache, &b);
        ds_tensor_free(&cache);
    }
    assert_true(sizes[1] < sizes[0] * 3 / 4);
    /* the flag on SPARSE and DENSE payloads */
    ds_tensor z = make4(1, 3, 40, 60, DS_U8);
    ds_tensor_u8(&z)[100] = 9;
    encode_ok(1, &z, NULL, DS_COMPRESS_NONE, DS_CODEC_EXACT_DELTA, &s, &out);
    assert_int_equal(peek_ok(&out).encoding, DS_ENC_SPARSE);
    out.data[4] |= 0x40;
    expect_reject(out.data, out.len, &b.shape, &a, "delta");
    ds_tensor_free(&z);
    encode_ok(1, &b, &a, DS_COMPRESS_NONE, 0, &s, &out);
    out.data[4] |= 0x40;
    expect_reject(out.data, out.len, &b.shape, &a, "delta");
    ds_codec_scratch_free(&s);
    ds_buf_free(&out);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_dtypes),
        cmocka_unit_test(test_roundtrip_edge_shapes),
        cmocka_unit_test(test_signed_zero_and_nan),
        cmocka_unit_test(test_exact_over_100_frames),
        cmocka_unit_test(test_picks_smallest),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bad_header_fields),
        cmocka_unit_test(test_cache_and_shape_mismatch),
        cmocka_unit_test(test_corrupt_compressed_body),
        cmocka_unit_test(test_encode_rejects_bad_input),
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_shuffle),
        cmocka_unit_test(test_exact_delta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
