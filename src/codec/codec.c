/* codec.c - tensor wire codec (format: codec.h). */
#include "codec.h"

#include <inttypes.h>
#include <limits.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "codec.c writes masks and values in host order: little-endian hosts only"
#endif

#define ALL_ONES (~(uint64_t)0)

/* ---- small helpers ------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Word i of a mask of mb bytes, zero-filled past its end (payload masks are
 * byte-granular and unaligned). */
static inline uint64_t mask_word(const uint8_t *m, size_t mb, size_t i)
{
    uint64_t w = 0;
    size_t off = i * 8;
    memcpy(&w, m + off, mb - off >= 8 ? 8 : mb - off);
    return w;
}

static int grow(void **p, size_t *cap, size_t want, size_t elem, ds_error *err)
{
    if (want <= *cap)
        return 0;
    void *q = realloc(*p, want * elem);
    if (!q)
        return ds_errorf(err, "codec: out of memory for %zu bytes of scratch", want * elem);
    *p = q;
    *cap = want;
    return 0;
}

void ds_codec_planes(const ds_shape *shape, int64_t *planes, int64_t *plane)
{
    int64_t numel = ds_shape_numel(shape);
    int64_t pl = shape->ndim >= 3 ? shape->dims[shape->ndim - 2] * shape->dims[shape->ndim - 1]
                                  : shape->dims[shape->ndim - 1];
    *plane = pl;
    *planes = pl > 0 ? numel / pl : 0;
}

static int64_t shape_images(const ds_shape *shape)
{
    return shape->ndim == 4 ? shape->dims[0] : 1;
}

const char *ds_compress_name(ds_compress c)
{
    switch (c) {
    case DS_COMPRESS_NONE: return "none";
    case DS_COMPRESS_LZ4: return "lz4";
    case DS_COMPRESS_ZSTD: return "zstd";
    }
    return "?";
}

int ds_compress_parse(const char *name, ds_compress *c, ds_error *err)
{
    static const ds_compress all[] = {DS_COMPRESS_NONE, DS_COMPRESS_LZ4, DS_COMPRESS_ZSTD};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, ds_compress_name(all[i]))) {
            *c = all[i];
            return 0;
        }
    return ds_errorf(err, "unknown compression \"%s\" (expected none, lz4 or zstd)", name);
}

void ds_codec_scratch_free(ds_codec_scratch *s)
{
    free(s->bits);
    free(s->pix);
    free(s->counts);
    ds_buf_free(&s->body);
    ds_buf_free(&s->aux);
    ZSTD_freeCCtx(s->zc);
    ZSTD_freeDCtx(s->zd);
    memset(s, 0, sizeof *s);
}

const uint32_t *ds_codec_last_counts(const ds_codec_scratch *s, size_t *nplanes)
{
    *nplanes = s->counts_len;
    return s->counts;
}

/* ---- encode kernels ----------------------------------------------------- */

/* Portable popcount: without -mpopcnt __builtin_popcountll is a libgcc call. */
static inline int popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int)((x * 0x0101010101010101ull) >> 56);
}

/* Packs 64 flag bytes (each 0 or 1) into a word, bit j = fl[j]; adds their
 * sum to *cnt.  Multiplying 8 flag bytes by 0x0102040810204080 moves byte i
 * to bit 56+i without carries into the top byte. */
static inline uint64_t pack_flags(const uint8_t *fl, uint32_t *cnt)
{
    uint64_t m = 0;
    uint32_t c = 0;
    for (int k = 0; k < 8; k++) {
        uint64_t x;
        memcpy(&x, fl + 8 * k, 8);
        m |= ((x * 0x0102040810204080ull) >> 56) << (8 * k);
        c += (uint32_t)((x * 0x0101010101010101ull) >> 56);
    }
    *cnt += c;
    return m;
}

/* Flags of 64 elements: fl[j] = cur[j] differs from ref[j] bit for bit (ref
 * NULL: from zero).  Written as simple loops over fixed-size blocks so that
 * the compiler vectorises them. */
static inline void flags64(const uint8_t *cur, const uint8_t *ref, size_t es, uint8_t *fl)
{
    if (es == 4) {
        for (int j = 0; j < 64; j++) {
            uint32_t a, b = 0;
            memcpy(&a, cur + 4 * j, 4);
            if (ref)
                memcpy(&b, ref + 4 * j, 4);
            fl[j] = a != b;
        }
    } else {
        for (int j = 0; j < 64; j++)
            fl[j] = cur[j] != (ref ? ref[j] : 0);
    }
}

/* Change mask of one plane of n elements into w (ceil(n/64) words, bits past
 * n zero); returns the number of changed elements. */
static inline uint32_t mask_plane(const uint8_t *cur, const uint8_t *ref, size_t n, size_t es,
                                  uint64_t *w)
{
    uint32_t cnt = 0;
    uint8_t fl[64];
    size_t full = n / 64, i;
    if (ref)
        for (i = 0; i < full; i++) {
            flags64(cur + i * 64 * es, ref + i * 64 * es, es, fl);
            w[i] = pack_flags(fl, &cnt);
        }
    else
        for (i = 0; i < full; i++) {
            flags64(cur + i * 64 * es, NULL, es, fl);
            w[i] = pack_flags(fl, &cnt);
        }
    size_t rest = n - full * 64;
    if (rest) { /* the tail through zero-padded copies */
        uint8_t a[256] = {0}, b[256] = {0};
        memcpy(a, cur + full * 64 * es, rest * es);
        if (ref)
            memcpy(b, ref + full * 64 * es, rest * es);
        flags64(a, b, es, fl);
        w[full] = pack_flags(fl, &cnt);
    }
    return cnt;
}

/* Exact element deltas (DELTA flag): f32 bit patterns XORed, u8 subtracted
 * modulo 256.  Integer operations, so old (op) delta restores new bit for
 * bit; no floating-point arithmetic is involved. */
static inline void put_delta(uint8_t *d, const uint8_t *cur, const uint8_t *ref, size_t es)
{
    if (es == 4) {
        uint32_t a, b;
        memcpy(&a, cur, 4);
        memcpy(&b, ref, 4);
        a ^= b;
        memcpy(d, &a, 4);
    } else {
        d[0] = (uint8_t)(cur[0] - ref[0]);
    }
}

static inline void apply_delta(uint8_t *d, const uint8_t *v, size_t es)
{
    if (es == 4) {
        uint32_t a, x;
        memcpy(&a, d, 4);
        memcpy(&x, v, 4);
        a ^= x;
        memcpy(d, &a, 4);
    } else {
        d[0] = (uint8_t)(d[0] + v[0]);
    }
}

/* Appends the elements of src at the set bits of w (nw words) to dst, or
 * their deltas against ref when ref is not NULL; returns bytes written. */
static inline size_t gather(uint8_t *dst, const uint8_t *src, const uint8_t *ref,
                            const uint64_t *w, size_t nw, size_t es)
{
    uint8_t *d = dst;
    for (size_t i = 0; i < nw; i++) {
        uint64_t m = w[i];
        const uint8_t *s = src + i * 64 * es;
        const uint8_t *r = ref ? ref + i * 64 * es : NULL;
        if (m == ALL_ONES) {
            if (r)
                for (size_t j = 0; j < 64; j++)
                    put_delta(d + j * es, s + j * es, r + j * es, es);
            else
                memcpy(d, s, 64 * es);
            d += 64 * es;
            continue;
        }
        while (m) {
            int j = __builtin_ctzll(m);
            if (r)
                put_delta(d, s + (size_t)j * es, r + (size_t)j * es, es);
            else
                memcpy(d, s + (size_t)j * es, es);
            d += es;
            m &= m - 1;
        }
    }
    return (size_t)(d - dst);
}

/* Writes the elements at the set bits of the mask (mb bytes) from vals into
 * dst (applies them as deltas when delta); returns bytes read from vals. */
static inline size_t scatter(uint8_t *dst, const uint8_t *vals, const uint8_t *mask, size_t mb,
                             size_t es, int delta)
{
    const uint8_t *v = vals;
    size_t nw = (mb + 7) / 8;
    for (size_t i = 0; i < nw; i++) {
        uint64_t m = mask_word(mask, mb, i);
        uint8_t *d = dst + i * 64 * es;
        if (m == ALL_ONES) {
            if (delta)
                for (size_t j = 0; j < 64; j++)
                    apply_delta(d + j * es, v + j * es, es);
            else
                memcpy(d, v, 64 * es);
            v += 64 * es;
            continue;
        }
        while (m) {
            int j = __builtin_ctzll(m);
            if (delta)
                apply_delta(d + (size_t)j * es, v, es);
            else
                memcpy(d + (size_t)j * es, v, es);
            v += es;
            m &= m - 1;
        }
    }
    return (size_t)(v - vals);
}

/* Two instantiations so that es is a constant inside the loops. */
static uint32_t mask_plane_es(const uint8_t *cur, const uint8_t *ref, size_t n, size_t es,
                              uint64_t *w)
{
    return es == 4 ? mask_plane(cur, ref, n, 4, w) : mask_plane(cur, ref, n, 1, w);
}

static size_t gather_es(uint8_t *dst, const uint8_t *src, const uint8_t *ref, const uint64_t *w,
                        size_t nw, size_t es)
{
    if (ref)
        return es == 4 ? gather(dst, src, ref, w, nw, 4) : gather(dst, src, ref, w, nw, 1);
    return es == 4 ? gather(dst, src, NULL, w, nw, 4) : gather(dst, src, NULL, w, nw, 1);
}

static size_t scatter_es(uint8_t *dst, const uint8_t *vals, const uint8_t *mask, size_t mb,
                         size_t es, int delta)
{
    if (delta)
        return es == 4 ? scatter(dst, vals, mask, mb, 4, 1) : scatter(dst, vals, mask, mb, 1, 1);
    return es == 4 ? scatter(dst, vals, mask, mb, 4, 0) : scatter(dst, vals, mask, mb, 1, 0);
}

/* A whole plane of n values: copy, or deltas (encode: ref given; decode:
 * delta set). */
static void plane_put(uint8_t *d, const uint8_t *cur, const uint8_t *ref, size_t n, size_t es)
{
    if (!ref) {
        memcpy(d, cur, n * es);
    } else if (es == 4) {
        for (size_t i = 0; i < n; i++)
            put_delta(d + 4 * i, cur + 4 * i, ref + 4 * i, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            put_delta(d + i, cur + i, ref + i, 1);
    }
}

static void plane_apply(uint8_t *d, const uint8_t *v, size_t n, size_t es, int delta)
{
    if (!delta) {
        memcpy(d, v, n * es);
    } else if (es == 4) {
        for (size_t i = 0; i < n; i++)
            apply_delta(d + 4 * i, v + 4 * i, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            apply_delta(d + i, v + i, 1);
    }
}

/* Byte planes of n 4-byte values: dst[k*n + i] = src[4*i + k].  Exponent
 * and high mantissa bytes of neighbouring floats repeat, so lz4/zstd find
 * them once they are adjacent. */
static void shuffle4(uint8_t *restrict dst, const uint8_t *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[4 * i];
        dst[n + i] = src[4 * i + 1];
        dst[2 * n + i] = src[4 * i + 2];
        dst[3 * n + i] = src[4 * i + 3];
    }
}

static void unshuffle4(uint8_t *restrict dst, const uint8_t *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[4 * i] = src[i];
        dst[4 * i + 1] = src[n + i];
        dst[4 * i + 2] = src[2 * n + i];
        dst[4 * i + 3] = src[3 * n + i];
    }
}

/* Whether lz4 packs a sample of n 4-byte values smaller byte-shuffled than
 * as they are.  Shuffling wins on
 * conv/ReLU outputs (the exponent bytes repeat) and loses on values with few
 * distinct bit patterns (an 8-bit frame / 255), where whole 4-byte values
 * repeat; a 16 KiB lz4 probe of each costs ~0.05 ms. */
static int shuffle_helps(const uint8_t *vals, size_t n)
{
    enum { SAMPLE = 4096 }; /* values */
    size_t k = n < SAMPLE ? n : SAMPLE, start = (n - k) / 2;
    if (k < 64)
        return 0;
    uint8_t a[4 * SAMPLE], b[4 * SAMPLE], tmp[LZ4_COMPRESSBOUND(4 * SAMPLE)];
    memcpy(a, vals + 4 * start, 4 * k);
    shuffle4(b, a, k);
    int plain = LZ4_compress_default((const char *)a, (char *)tmp, (int)(4 * k), (int)sizeof tmp);
    int sh = LZ4_compress_default((const char *)b, (char *)tmp, (int)(4 * k), (int)sizeof tmp);
    return sh > 0 && plain > 0 && sh < plain;
}

/* ---- encode ------------------------------------------------------------- */

static int check_tensor(const ds_tensor *t, const char *what, int layer_id, ds_error *err)
{
    if (t->dtype != DS_F32 && t->dtype != DS_U8)
        return ds_errorf(err, "codec: layer %d: %s has unknown dtype %d", layer_id, what,
                         (int)t->dtype);
    if (t->shape.ndim < 1 || t->shape.ndim > DS_MAX_DIMS)
        return ds_errorf(err, "codec: layer %d: %s has %d dims (expected 1..%d)", layer_id,
                         what, t->shape.ndim, DS_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < t->shape.ndim; i++) {
        if (t->shape.dims[i] < 1 || t->shape.dims[i] > DS_CODEC_MAX_NUMEL)
            return ds_errorf(err, "codec: layer %d: %s dim %d is %" PRId64, layer_id, what, i,
                             t->shape.dims[i]);
        numel *= t->shape.dims[i];
        if (numel > DS_CODEC_MAX_NUMEL)
            return ds_errorf(err, "codec: layer %d: %s has more than 2^31 elements", layer_id,
                             what);
    }
    if (!t->data)
        return ds_errorf(err, "codec: layer %d: %s has no data", layer_id, what);
    return 0;
}

static size_t header_size(int ndim)
{
    return 12 + 4 * (size_t)ndim + 16;
}

#define SHUFFLED 0x80 /* compression byte flag: f32 values byte-shuffled */
#define DELTA 0x40    /* mask byte flag: UPDATE values are exact deltas */

static void write_header(uint8_t *p, int layer_id, const ds_tensor *t, ds_codec_encoding enc,
                         ds_codec_mask mask, int delta, ds_compress c, int shuffled,
                         int level, uint64_t raw, uint64_t stored)
{
    p[0] = DS_CODEC_MAGIC;
    p[1] = DS_CODEC_VERSION;
    p[2] = (uint8_t)t->dtype;
    p[3] = (uint8_t)enc;
    p[4] = (uint8_t)((unsigned)mask | (delta ? DELTA : 0));
    p[5] = (uint8_t)((unsigned)c | (shuffled ? SHUFFLED : 0));
    p[6] = (uint8_t)(int8_t)(c == DS_COMPRESS_ZSTD ? level : 0);
    p[7] = (uint8_t)t->shape.ndim;
    put_u32(p + 8, (uint32_t)layer_id);
    for (int i = 0; i < t->shape.ndim; i++)
        put_u32(p + 12 + 4 * i, (uint32_t)t->shape.dims[i]);
    size_t o = 12 + 4 * (size_t)t->shape.ndim;
    put_u64(p + o, raw);
    put_u64(p + o + 8, stored);
}

/* Compresses body into dst (capacity cap); returns the compressed size, or 0
 * when compression is unavailable for this size or would not shrink it. */
static size_t compress_body(ds_codec_scratch *s, ds_compress c, int level, const uint8_t *body,
                            size_t raw, uint8_t *dst, size_t cap, ds_error *err, int *failed)
{
    *failed = 0;
    if (c == DS_COMPRESS_LZ4) {
        if (raw > LZ4_MAX_INPUT_SIZE || cap > INT_MAX)
            return 0;
        int r = LZ4_compress_default((const char *)body, (char *)dst, (int)raw, (int)cap);
        return r > 0 && (size_t)r < raw ? (size_t)r : 0;
    }
    if (c == DS_COMPRESS_ZSTD) {
        if (!s->zc && !(s->zc = ZSTD_createCCtx())) {
            *failed = 1;
            ds_errorf(err, "codec: cannot create a zstd context");
            return 0;
        }
        size_t r = ZSTD_compressCCtx(s->zc, dst, cap, body, raw, level);
        if (ZSTD_isError(r)) {
            *failed = 1;
            ds_errorf(err, "codec: zstd compression failed: %s", ZSTD_getErrorName(r));
            return 0;
        }
        return r < raw ? r : 0;
    }
    return 0;
}

static size_t compress_bound(ds_compress c, size_t raw)
{
    if (c == DS_COMPRESS_LZ4)
        return raw <= LZ4_MAX_INPUT_SIZE ? (size_t)LZ4_compressBound((int)raw) : 0;
    if (c == DS_COMPRESS_ZSTD)
        return ZSTD_compressBound(raw);
    return 0;
}

int ds_codec_encode(int layer_id, const ds_tensor *cur, const ds_tensor *ref,
                    const ds_codec_opts *o, ds_codec_scratch *s, ds_buf *out, ds_error *err)
{
    static const ds_codec_opts defaults = {DS_COMPRESS_NONE, 0, 1};
    if (!o)
        o = &defaults;
    if (layer_id < 0)
        return ds_errorf(err, "codec: negative layer id %d", layer_id);
    if (!cur || check_tensor(cur, "tensor", layer_id, err))
        return cur ? -1 : ds_errorf(err, "codec: layer %d: no tensor to encode", layer_id);
    if (ref) {
        if (check_tensor(ref, "reference", layer_id, err))
            return -1;
        if (ref->dtype != cur->dtype || !ds_shape_equal(&ref->shape, &cur->shape)) {
            char a[64], b[64];
            return ds_errorf(err, "codec: layer %d: reference %s %s differs from tensor %s %s",
                             layer_id, ref->dtype == DS_U8 ? "u8" : "f32",
                             ds_shape_str(&ref->shape, a, sizeof a),
                             cur->dtype == DS_U8 ? "u8" : "f32",
                             ds_shape_str(&cur->shape, b, sizeof b));
        }
    }
    if (o->compress != DS_COMPRESS_NONE && o->compress != DS_COMPRESS_LZ4 &&
        o->compress != DS_COMPRESS_ZSTD)
        return ds_errorf(err, "codec: unknown compression %d", (int)o->compress);
    int level = o->zstd_level ? o->zstd_level : 1;
    int lo = ZSTD_minCLevel() < -127 ? -127 : ZSTD_minCLevel();
    if (level < lo)
        level = lo;
    if (level > ZSTD_maxCLevel())
        level = ZSTD_maxCLevel();

    const size_t es = ds_dtype_size(cur->dtype);
    const size_t numel = (size_t)ds_shape_numel(&cur->shape);
    int64_t planes64, plane64;
    ds_codec_planes(&cur->shape, &planes64, &plane64);
    const size_t planes = (size_t)planes64, plane = (size_t)plane64;
    const size_t images = (size_t)shape_images(&cur->shape), channels = planes / images;
    const size_t pw = (plane + 63) / 64, mb = (plane + 7) / 8;
    const uint8_t *cd = cur->data, *rd = ref ? ref->data : NULL;

    ds_codec_encoding enc = DS_ENC_DENSE;
    ds_codec_mask mk = DS_MASK_NONE;
    uint64_t dense_size = (uint64_t)numel * es, raw = dense_size;
    s->counts_len = 0;
    if (o->allow_update) {
        if (grow((void **)&s->bits, &s->bits_cap, planes * pw, sizeof *s->bits, err) ||
            grow((void **)&s->counts, &s->counts_cap, planes, sizeof *s->counts, err))
            return -1;
        uint64_t elem_size = planes;
        for (size_t p = 0; p < planes; p++) {
            uint32_t c = mask_plane_es(cd + p * plane * es, rd ? rd + p * plane * es : NULL,
                                       plane, es, s->bits + p * pw);
            s->counts[p] = c;
            if (c) {
                uint64_t m = mb + (uint64_t)c * es, d = (uint64_t)plane * es;
                elem_size += m < d ? m : d;
            }
        }
        s->counts_len = planes;
        uint64_t pix_size = UINT64_MAX;
        if (channels > 1) {
            if (grow((void **)&s->pix, &s->pix_cap, images * pw, sizeof *s->pix, err))
                return -1;
            pix_size = (uint64_t)images * mb;
            for (size_t im = 0; im < images; im++) {
                uint64_t *u = s->pix + im * pw;
                memcpy(u, s->bits + im * channels * pw, pw * sizeof *u);
                for (size_t ch = 1; ch < channels; ch++) {
                    const uint64_t *w = s->bits + (im * channels + ch) * pw;
                    for (size_t i = 0; i < pw; i++)
                        u[i] |= w[i];
                }
                uint64_t pc = 0;
                for (size_t i = 0; i < pw; i++)
                    pc += (uint64_t)popcount64(u[i]);
                pix_size += pc * channels * es;
            }
        }
        /* With exact deltas and compression even an all-changed plane is
         * worth an update: XOR deltas compress far better than values. */
        uint64_t dense_cmp = raw;
        if (rd && o->allow_update == DS_CODEC_EXACT_DELTA && o->compress != DS_COMPRESS_NONE)
            dense_cmp = raw + planes + (uint64_t)images * mb + 1;
        if (elem_size < dense_cmp && elem_size <= pix_size) {
            enc = rd ? DS_ENC_UPDATE : DS_ENC_SPARSE;
            mk = DS_MASK_ELEM;
            raw = elem_size;
        } else if (pix_size < dense_cmp) {
            enc = rd ? DS_ENC_UPDATE : DS_ENC_SPARSE;
            mk = DS_MASK_PIXEL;
            raw = pix_size;
        }
    }

    /* The uncompressed body: the tensor itself when dense, else built in
     * s->body. */
    const uint8_t *body = cd;
    size_t voff = 0; /* offset of the values in the body */
    const int delta = o->allow_update == DS_CODEC_EXACT_DELTA && enc == DS_ENC_UPDATE;
    const uint8_t *dref = delta ? rd : NULL;
    if (enc != DS_ENC_DENSE) {
        if (raw > SIZE_MAX || ds_buf_reserve(&s->body, (size_t)raw, err))
            return -1;
        uint8_t *b = s->body.data;
        size_t off = 0;
        if (mk == DS_MASK_ELEM) {
            uint8_t *modes = b;
            off = planes;
            for (size_t p = 0; p < planes; p++) {
                uint32_t c = s->counts[p];
                modes[p] = c == 0 ? 0 : (mb + (uint64_t)c * es < (uint64_t)plane * es ? 2 : 1);
                if (modes[p] == 2) {
                    memcpy(b + off, s->bits + p * pw, mb);
                    off += mb;
                }
            }
            voff = off;
            for (size_t p = 0; p < planes; p++) {
                const uint8_t *src = cd + p * plane * es;
                const uint8_t *ref = dref ? dref + p * plane * es : NULL;
                if (modes[p] == 1) {
                    plane_put(b + off, src, ref, plane, es);
                    off += plane * es;
                } else if (modes[p] == 2) {
                    off += gather_es(b + off, src, ref, s->bits + p * pw, pw, es);
                }
            }
        } else {
            for (size_t im = 0; im < images; im++) {
                memcpy(b + off, s->pix + im * pw, mb);
                off += mb;
            }
            voff = off;
            for (size_t im = 0; im < images; im++)
                for (size_t ch = 0; ch < channels; ch++)
                    off += gather_es(b + off, cd + (im * channels + ch) * plane * es,
                                     dref ? dref + (im * channels + ch) * plane * es : NULL,
                                     s->pix + im * pw, pw, es);
        }
        if (off != raw)
            return ds_errorf(err, "codec: layer %d: internal size mismatch %zu vs %" PRIu64,
                             layer_id, off, raw);
        s->body.len = off;
        body = b;
    }

    const size_t hs = header_size(cur->shape.ndim);
    size_t bound = compress_bound(o->compress, (size_t)raw);
    size_t need = hs + (bound > raw ? bound : (size_t)raw);
    if (ds_buf_reserve(out, out->len + need, err))
        return ds_error_prefix(err, "codec: layer %d", layer_id);
    uint8_t *dst = out->data + out->len;
    ds_compress applied = DS_COMPRESS_NONE;
    size_t stored = (size_t)raw;
    int shuffled = 0;
    if (o->compress != DS_COMPRESS_NONE) {
        const uint8_t *src = body;
        if (es == 4 && shuffle_helps(body + voff, ((size_t)raw - voff) / 4)) {
            if (ds_buf_reserve(&s->aux, (size_t)raw, err))
                return ds_error_prefix(err, "codec: layer %d", layer_id);
            memcpy(s->aux.data, body, voff);
            shuffle4(s->aux.data + voff, body + voff, ((size_t)raw - voff) / 4);
            src = s->aux.data;
            shuffled = 1;
        }
        int failed;
        size_t z = compress_body(s, o->compress, level, src, (size_t)raw, dst + hs, need - hs,
                                 err, &failed);
        if (failed)
            return ds_error_prefix(err, "codec: layer %d", layer_id);
        if (z) {
            applied = o->compress;
            stored = z;
        } else {
            shuffled = 0;
        }
    }
    if (applied == DS_COMPRESS_NONE)
        memcpy(dst + hs, body, (size_t)raw);
    write_header(dst, layer_id, cur, enc, mk, delta, applied, shuffled, level, raw, stored);
    out->len += hs + stored;
    return 0;
}

/* ---- decode ------------------------------------------------------------- */

/* Header fields up to the dims (checked against expected when given), then
 * the sizes. */
static int parse_header(const uint8_t *p, size_t n, const ds_shape *expected,
                        ds_codec_header *h, ds_error *err)
{
    memset(h, 0, sizeof *h);
    if (!p || n < 12)
        return ds_errorf(err, "codec payload: %zu bytes is shorter than a header", n);
    if (p[0] != DS_CODEC_MAGIC)
        return ds_errorf(err, "codec payload: bad magic byte 0x%02x (expected 0x%02x)", p[0],
                         DS_CODEC_MAGIC);
    if (p[1] != DS_CODEC_VERSION)
        return ds_errorf(err, "codec payload: unsupported version %u (expected %d)", p[1],
                         DS_CODEC_VERSION);
    uint32_t id = get_u32(p + 8);
    if (id > INT32_MAX)
        return ds_errorf(err, "codec payload: layer id %" PRIu32 " out of range", id);
    h->version = p[1];
    h->layer_id = (int)id;
    int L = h->layer_id;
    if (p[2] != DS_F32 && p[2] != DS_U8)
        return ds_errorf(err, "codec payload for layer %d: unknown dtype %u", L, p[2]);
    h->dtype = (ds_dtype)p[2];
    if (p[3] > DS_ENC_SPARSE)
        return ds_errorf(err, "codec payload for layer %d: unknown encoding %u", L, p[3]);
    h->encoding = (ds_codec_encoding)p[3];
    if ((p[4] & ~DELTA) > DS_MASK_PIXEL)
        return ds_errorf(err, "codec payload for layer %d: unknown mask kind %u", L, p[4]);
    h->mask = (ds_codec_mask)(p[4] & ~DELTA);
    h->exact_delta = (p[4] & DELTA) != 0;
    if (h->exact_delta && p[3] != DS_ENC_UPDATE)
        return ds_errorf(err, "codec payload for layer %d: delta flag on a non-update", L);
    if ((h->encoding == DS_ENC_DENSE) != (h->mask == DS_MASK_NONE))
        return ds_errorf(err, "codec payload for layer %d: mask kind %u does not fit encoding %u",
                         L, p[4], p[3]);
    if ((p[5] & ~SHUFFLED) > DS_COMPRESS_ZSTD)
        return ds_errorf(err, "codec payload for layer %d: unknown compression %u", L, p[5]);
    h->compress = (ds_compress)(p[5] & ~SHUFFLED);
    h->shuffled = (p[5] & SHUFFLED) != 0;
    if (h->shuffled && (h->compress == DS_COMPRESS_NONE || h->dtype != DS_F32))
        return ds_errorf(err, "codec payload for layer %d: shuffle flag without compression or f32", L);
    h->zstd_level = (int8_t)p[6];
    if (h->compress != DS_COMPRESS_ZSTD && p[6] != 0)
        return ds_errorf(err, "codec payload for layer %d: zstd level %d without zstd", L,
                         h->zstd_level);
    if (p[7] < 1 || p[7] > DS_MAX_DIMS)
        return ds_errorf(err, "codec payload for layer %d: %u dims (expected 1..%d)", L, p[7],
                         DS_MAX_DIMS);
    h->shape.ndim = p[7];
    h->header_size = header_size(h->shape.ndim);
    if (n < h->header_size)
        return ds_errorf(err, "codec payload for layer %d: truncated header (%zu of %zu bytes)",
                         L, n, h->header_size);
    int64_t numel = 1;
    for (int i = 0; i < h->shape.ndim; i++) {
        uint32_t d = get_u32(p + 12 + 4 * i);
        if (d < 1 || d > (uint32_t)DS_CODEC_MAX_NUMEL)
            return ds_errorf(err, "codec payload for layer %d: dim %d is %" PRIu32, L, i, d);
        h->shape.dims[i] = d;
        numel *= d;
        if (numel > DS_CODEC_MAX_NUMEL)
            return ds_errorf(err, "codec payload for layer %d: more than 2^31 elements", L);
    }
    if ((uint64_t)numel * ds_dtype_size(h->dtype) > SIZE_MAX) /* 32-bit hosts */
        return ds_errorf(err, "codec payload for layer %d: tensor too large for this host", L);
    if (expected && !ds_shape_equal(expected, &h->shape)) {
        char a[64], b[64];
        return ds_errorf(err, "codec payload for layer %d: shape %s but the layer is %s", L,
                         ds_shape_str(&h->shape, a, sizeof a), ds_shape_str(expected, b, sizeof b));
    }
    size_t o = 12 + 4 * (size_t)h->shape.ndim;
    h->raw_size = get_u64(p + o);
    h->stored_size = get_u64(p + o + 8);

    uint64_t es = ds_dtype_size(h->dtype);
    int64_t planes, plane;
    ds_codec_planes(&h->shape, &planes, &plane);
    uint64_t mb = ((uint64_t)plane + 7) / 8, images = (uint64_t)shape_images(&h->shape);
    uint64_t lo, hi;
    if (h->mask == DS_MASK_NONE)
        lo = hi = (uint64_t)numel * es;
    else if (h->mask == DS_MASK_ELEM)
        lo = (uint64_t)planes, hi = (uint64_t)planes * (1 + mb) + (uint64_t)numel * es;
    else
        lo = images * mb, hi = images * mb + (uint64_t)numel * es;
    if (h->raw_size < lo || h->raw_size > hi)
        return ds_errorf(err,
                         "codec payload for layer %d: raw size %" PRIu64
                         " outside %" PRIu64 "..%" PRIu64 " for its shape",
                         L, h->raw_size, lo, hi);
    size_t body = n - h->header_size;
    if (h->stored_size != body)
        return ds_errorf(err,
                         "codec payload for layer %d: body is %zu bytes but the header says %" PRIu64
                         " (%s)",
                         L, body, h->stored_size, body < h->stored_size ? "truncated" : "trailing bytes");
    if (h->compress == DS_COMPRESS_NONE && h->stored_size != h->raw_size)
        return ds_errorf(err,
                         "codec payload for layer %d: uncompressed body of %" PRIu64
                         " bytes but raw size %" PRIu64, L, h->stored_size, h->raw_size);
    if (h->compress != DS_COMPRESS_NONE && h->stored_size == 0)
        return ds_errorf(err, "codec payload for layer %d: empty compressed body", L);
    if (h->compress == DS_COMPRESS_LZ4 &&
        (h->raw_size > LZ4_MAX_INPUT_SIZE || h->stored_size > INT_MAX))
        return ds_errorf(err, "codec payload for layer %d: too large for lz4", L);
    /* Bound the decompressed size by the stored size before anything is
     * allocated for it: lz4 expands at most ~255x; a zstd body is one frame
     * that declares its content size. */
    if (h->compress == DS_COMPRESS_LZ4 && h->raw_size > h->stored_size * 256 + 64)
        return ds_errorf(err, "codec payload for layer %d: raw size %" PRIu64
                         " impossible for %" PRIu64 " bytes of lz4", L, h->raw_size, h->stored_size);
    if (h->compress == DS_COMPRESS_ZSTD) {
        const uint8_t *z = p + h->header_size;
        size_t fs = ZSTD_findFrameCompressedSize(z, (size_t)h->stored_size);
        if (ZSTD_isError(fs) || fs != h->stored_size)
            return ds_errorf(err, "codec payload for layer %d: zstd body is not one complete frame", L);
        unsigned long long cs = ZSTD_getFrameContentSize(z, (size_t)h->stored_size);
        if (cs != h->raw_size)
            return ds_errorf(err, "codec payload for layer %d: zstd frame content size does not match raw size %" PRIu64,
                             L, h->raw_size);
    }
    return 0;
}

int ds_codec_peek(const uint8_t *p, size_t n, ds_codec_header *h, ds_error *err)
{
    return parse_header(p, n, NULL, h, err);
}

/* Popcount of a payload mask of `bits` bits, or -1 if padding bits are set. */
static int64_t mask_count(const uint8_t *m, size_t bits)
{
    size_t mb = (bits + 7) / 8;
    int64_t c = 0;
    size_t i = 0;
    for (; i + 8 <= mb; i += 8) {
        uint64_t w;
        memcpy(&w, m + i, 8);
        c += popcount64(w);
    }
    for (; i < mb; i++)
        c += popcount64(m[i]);
    if (bits % 8 && (m[mb - 1] >> (bits % 8)))
        return -1;
    return c;
}

int ds_codec_decode(const uint8_t *p, size_t n, const ds_shape *expected, ds_tensor *cache,
                    ds_codec_scratch *s, ds_error *err)
{
    ds_codec_header h;
    if (parse_header(p, n, expected, &h, err))
        return -1;
    int L = h.layer_id;
    char a[64], b[64];
    if (h.encoding == DS_ENC_UPDATE) {
        if (!cache->data || cache->shape.ndim < 1)
            return ds_errorf(err, "codec: update for layer %d but no cached tensor", L);
        if (cache->dtype != h.dtype || !ds_shape_equal(&cache->shape, &h.shape))
            return ds_errorf(err,
                             "codec: update for layer %d is %s %s but the cached tensor is %s %s",
                             L, h.dtype == DS_U8 ? "u8" : "f32",
                             ds_shape_str(&h.shape, a, sizeof a),
                             cache->dtype == DS_U8 ? "u8" : "f32",
                             ds_shape_str(&cache->shape, b, sizeof b));
    }

    /* The uncompressed body. */
    const uint8_t *body = p + h.header_size;
    const size_t raw = (size_t)h.raw_size;
    if (h.compress != DS_COMPRESS_NONE) {
        if (h.raw_size > SIZE_MAX || ds_buf_reserve(&s->body, raw ? raw : 1, err))
            return ds_error_prefix(err, "codec payload for layer %d", L);
        size_t got;
        if (h.compress == DS_COMPRESS_LZ4) {
            int r = LZ4_decompress_safe((const char *)body, (char *)s->body.data,
                                        (int)h.stored_size, (int)raw);
            if (r < 0)
                return ds_errorf(err, "codec payload for layer %d: corrupt lz4 body", L);
            got = (size_t)r;
        } else {
            if (!s->zd && !(s->zd = ZSTD_createDCtx()))
                return ds_errorf(err, "codec: cannot create a zstd context");
            size_t r = ZSTD_decompressDCtx(s->zd, s->body.data, raw, body, (size_t)h.stored_size);
            if (ZSTD_isError(r))
                return ds_errorf(err, "codec payload for layer %d: corrupt zstd body: %s", L,
                                 ZSTD_getErrorName(r));
            got = r;
        }
        if (got != raw)
            return ds_errorf(err,
                             "codec payload for layer %d: body decompressed to %zu bytes, raw size says %zu",
                             L, got, raw);
        body = s->body.data;
    }

    const size_t es = ds_dtype_size(h.dtype);
    const size_t numel = (size_t)ds_shape_numel(&h.shape);
    int64_t planes64, plane64;
    ds_codec_planes(&h.shape, &planes64, &plane64);
    const size_t planes = (size_t)planes64, plane = (size_t)plane64;
    const size_t images = (size_t)shape_images(&h.shape), channels = planes / images;
    const size_t mb = (plane + 7) / 8;

    /* Validate the body completely before touching the cache. */
    if (h.mask == DS_MASK_ELEM) {
        uint64_t nmask = 0, ndense = 0;
        for (size_t q = 0; q < planes; q++) {
            if (body[q] > 2)
                return ds_errorf(err, "codec payload for layer %d: plane %zu has unknown mode %u",
                                 L, q, body[q]);
            nmask += body[q] == 2;
            ndense += body[q] == 1;
        }
        uint64_t vals_off = planes + nmask * mb;
        if (vals_off > raw)
            return ds_errorf(err, "codec payload for layer %d: %" PRIu64
                             " masks do not fit in a body of %zu bytes", L, nmask, raw);
        uint64_t nvals = ndense * plane;
        for (uint64_t k = 0; k < nmask; k++) {
            int64_t c = mask_count(body + planes + k * mb, plane);
            if (c < 0)
                return ds_errorf(err, "codec payload for layer %d: mask %" PRIu64
                                 " has padding bits set", L, k);
            nvals += (uint64_t)c;
        }
        if (vals_off + nvals * es != raw)
            return ds_errorf(err, "codec payload for layer %d: masks imply %" PRIu64
                             " values but the body holds %" PRIu64 " bytes for them",
                             L, nvals, raw - vals_off);
    } else if (h.mask == DS_MASK_PIXEL) {
        uint64_t nvals = 0;
        for (size_t im = 0; im < images; im++) {
            int64_t c = mask_count(body + im * mb, plane);
            if (c < 0)
                return ds_errorf(err, "codec payload for layer %d: pixel mask %zu has padding bits set",
                                 L, im);
            nvals += (uint64_t)c * channels;
        }
        if (images * mb + nvals * es != raw)
            return ds_errorf(err, "codec payload for layer %d: masks imply %" PRIu64
                             " values but the body holds %zu bytes for them",
                             L, nvals, raw - images * mb);
    }

    if (h.shuffled) {
        size_t voff = 0;
        if (h.mask == DS_MASK_ELEM) {
            voff = planes;
            for (size_t q = 0; q < planes; q++)
                voff += body[q] == 2 ? mb : 0;
        } else if (h.mask == DS_MASK_PIXEL) {
            voff = images * mb;
        }
        if (ds_buf_reserve(&s->aux, raw, err))
            return ds_error_prefix(err, "codec payload for layer %d", L);
        memcpy(s->aux.data, body, voff);
        unshuffle4(s->aux.data + voff, body + voff, (raw - voff) / 4);
        body = s->aux.data;
    }

    /* Apply. */
    if (h.encoding != DS_ENC_UPDATE && ds_tensor_reserve(cache, &h.shape, h.dtype, err))
        return ds_error_prefix(err, "codec payload for layer %d", L);
    uint8_t *dst = cache->data;
    if (h.encoding == DS_ENC_DENSE) {
        memcpy(dst, body, numel * es);
        return 0;
    }
    if (h.encoding == DS_ENC_SPARSE)
        memset(dst, 0, numel * es);
    if (h.mask == DS_MASK_ELEM) {
        const uint8_t *m = body + planes;
        size_t nmask = 0;
        for (size_t q = 0; q < planes; q++)
            nmask += body[q] == 2;
        const uint8_t *v = m + nmask * mb;
        for (size_t q = 0; q < planes; q++) {
            uint8_t *d = dst + q * plane * es;
            if (body[q] == 1) {
                plane_apply(d, v, plane, es, h.exact_delta);
                v += plane * es;
            } else if (body[q] == 2) {
                v += scatter_es(d, v, m, mb, es, h.exact_delta);
                m += mb;
            }
        }
    } else {
        const uint8_t *v = body + images * mb;
        for (size_t im = 0; im < images; im++)
            for (size_t ch = 0; ch < channels; ch++)
                v += scatter_es(dst + (im * channels + ch) * plane * es, v, body + im * mb, mb, es,
                                h.exact_delta);
    }
    return 0;
}

/* ---- size model --------------------------------------------------------- */

/* Compression factors of the mask part and the value part, fitted by
 * tests/unit/test_codec_model.c on clustered synthetic maps (it prints the
 * fit and fails when these drift from it); index [u8][compress]. */
static const double k_mask[2][3] = {{1.0, 0.91, 0.84}, {1.0, 0.41, 0.24}};
static const double k_val[2][3] = {{1.0, 0.82, 0.74}, {1.0, 1.00, 0.95}};

size_t ds_codec_predict_bytes(const ds_shape *s, ds_dtype t, const float *changed_fraction,
                              ds_compress c)
{
    if (!s || s->ndim < 1 || s->ndim > DS_MAX_DIMS)
        return 0;
    for (int i = 0; i < s->ndim; i++)
        if (s->dims[i] < 1 || s->dims[i] > DS_CODEC_MAX_NUMEL)
            return 0;
    if ((unsigned)c > DS_COMPRESS_ZSTD)
        c = DS_COMPRESS_NONE;
    double es = (double)ds_dtype_size(t);
    double numel = (double)ds_shape_numel(s);
    int64_t planes, plane;
    ds_codec_planes(s, &planes, &plane);
    int64_t images = shape_images(s), channels = planes / images;
    double P = (double)plane, mb = (double)((plane + 7) / 8);
    double elem_mask = (double)planes, elem_val = 0, fmax = 0;
    for (int64_t i = 0; i < planes; i++) {
        double f = changed_fraction ? changed_fraction[i] : 1.0;
        f = f > 1 ? 1 : (f > 0 ? f : 0); /* also maps NaN to 0 */
        if (f > fmax)
            fmax = f;
        if (f == 0)
            continue;
        if (mb + f * P * es < P * es)
            elem_mask += mb, elem_val += f * P * es;
        else
            elem_val += P * es;
    }
    double dense = numel * es;
    const int u8 = t == DS_U8;
    double kv = k_val[u8][c], km = k_mask[u8][c];
    double best_raw = dense, best = dense * kv;
    double elem_raw = elem_mask + elem_val;
    if (elem_raw < best_raw)
        best_raw = elem_raw, best = elem_mask * km + elem_val * kv;
    if (channels > 1) {
        double pm = (double)images * mb, pv = fmax * dense;
        if (pm + pv < best_raw)
            best_raw = pm + pv, best = pm * km + pv * kv;
    }
    if (best > best_raw)
        best = best_raw;
    return header_size(s->ndim) + (size_t)(best + 0.5);
}
