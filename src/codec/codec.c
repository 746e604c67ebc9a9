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

/* ---- kernels: masks, gather/scatter, deltas, shuffle -------------------- */

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

/* ---- geometry and plane modes -------------------------------------------- */

/* The format's view of a tensor (codec.h, "Planes"). */
typedef struct geom {
    size_t es;               /* element size */
    size_t numel;
    size_t planes, plane;    /* planes of `plane` elements */
    size_t images, channels; /* PIXEL: images of `channels` planes */
    size_t pw;               /* words of a plane mask in scratch */
    size_t mb;               /* bytes of a plane mask in a payload */
} geom;

static geom geom_of(const ds_shape *shape, ds_dtype t)
{
    int64_t planes, plane;
    ds_codec_planes(shape, &planes, &plane);
    geom g;
    g.es = ds_dtype_size(t);
    g.numel = (size_t)ds_shape_numel(shape);
    g.planes = (size_t)planes;
    g.plane = (size_t)plane;
    g.images = (size_t)shape_images(shape);
    g.channels = g.planes / g.images;
    g.pw = (g.plane + 63) / 64;
    g.mb = (g.plane + 7) / 8;
    return g;
}

/* The mode byte of a plane in an ELEM body. */
typedef enum plane_mode {
    PLANE_SAME = 0,  /* keep the base plane */
    PLANE_DENSE = 1, /* all `plane` values follow */
    PLANE_MASK = 2,  /* a mask, then the values at its set bits */
} plane_mode;

/* The smaller form for a plane with `changed` changed elements. */
static plane_mode plane_mode_for(uint32_t changed, const geom *g)
{
    if (!changed)
        return PLANE_SAME;
    return g->mb + (uint64_t)changed * g->es < (uint64_t)g->plane * g->es ? PLANE_MASK : PLANE_DENSE;
}

/* Mask and value bytes of a plane in that mode. */
static uint64_t plane_bytes(plane_mode m, uint32_t changed, const geom *g)
{
    switch (m) {
    case PLANE_SAME: return 0;
    case PLANE_DENSE: return (uint64_t)g->plane * g->es;
    case PLANE_MASK: return g->mb + (uint64_t)changed * g->es;
    }
    return 0;
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

/* ---- ELEM masks: one mask per plane -------------------------------------- */

/* Encode: the change mask and count of every plane into scratch; *size =
 * the ELEM body's size. */
static int elem_measure(ds_codec_scratch *s, const geom *g, const uint8_t *cd, const uint8_t *rd,
                        uint64_t *size, ds_error *err)
{
    if (ds_grow((void **)&s->bits, &s->bits_cap, g->planes * g->pw, sizeof *s->bits, err) ||
        ds_grow((void **)&s->counts, &s->counts_cap, g->planes, sizeof *s->counts, err))
        return ds_error_prefix(err, "codec");
    const size_t pb = g->plane * g->es;
    uint64_t sz = g->planes; /* the mode bytes */
    for (size_t p = 0; p < g->planes; p++) {
        uint32_t c = mask_plane_es(cd + p * pb, rd ? rd + p * pb : NULL, g->plane, g->es,
                                   s->bits + p * g->pw);
        s->counts[p] = c;
        sz += plane_bytes(plane_mode_for(c, g), c, g);
    }
    s->counts_len = g->planes;
    *size = sz;
    return 0;
}

/* Encode: writes the ELEM body (modes, masks of the MASK planes, values) to
 * b; values are deltas against dref when it is not NULL.  *voff = offset of
 * the values; returns the body's size. */
static size_t elem_build(const ds_codec_scratch *s, const geom *g, const uint8_t *cd,
                         const uint8_t *dref, uint8_t *b, size_t *voff)
{
    const size_t pb = g->plane * g->es;
    size_t off = g->planes;
    for (size_t p = 0; p < g->planes; p++) {
        b[p] = (uint8_t)plane_mode_for(s->counts[p], g);
        if (b[p] == PLANE_MASK) {
            memcpy(b + off, s->bits + p * g->pw, g->mb);
            off += g->mb;
        }
    }
    *voff = off;
    for (size_t p = 0; p < g->planes; p++) {
        const uint8_t *src = cd + p * pb, *ref = dref ? dref + p * pb : NULL;
        if (b[p] == PLANE_DENSE) {
            plane_put(b + off, src, ref, g->plane, g->es);
            off += pb;
        } else if (b[p] == PLANE_MASK) {
            off += gather_es(b + off, src, ref, s->bits + p * g->pw, g->pw, g->es);
        }
    }
    return off;
}

/* Decode: checks the modes, the mask padding and that the values fill the
 * body exactly; *voff = offset of the values. */
static int elem_check(const geom *g, const uint8_t *body, size_t raw, int L, size_t *voff,
                      ds_error *err)
{
    uint64_t nmask = 0, ndense = 0;
    for (size_t q = 0; q < g->planes; q++) {
        if (body[q] > PLANE_MASK)
            return ds_errorf(err, "codec payload for layer %d: plane %zu has unknown mode %u", L,
                             q, body[q]);
        nmask += body[q] == PLANE_MASK;
        ndense += body[q] == PLANE_DENSE;
    }
    uint64_t vals_off = g->planes + nmask * g->mb;
    if (vals_off > raw)
        return ds_errorf(err, "codec payload for layer %d: %" PRIu64
                         " masks do not fit in a body of %zu bytes", L, nmask, raw);
    uint64_t nvals = ndense * g->plane;
    for (uint64_t k = 0; k < nmask; k++) {
        int64_t c = mask_count(body + g->planes + k * g->mb, g->plane);
        if (c < 0)
            return ds_errorf(err, "codec payload for layer %d: mask %" PRIu64
                             " has padding bits set", L, k);
        nvals += (uint64_t)c;
    }
    if (vals_off + nvals * g->es != raw)
        return ds_errorf(err, "codec payload for layer %d: masks imply %" PRIu64
                         " values but the body holds %" PRIu64 " bytes for them",
                         L, nvals, raw - vals_off);
    *voff = (size_t)vals_off;
    return 0;
}

/* Decode: applies a checked ELEM body to dst. */
static void elem_apply(const geom *g, const uint8_t *body, size_t voff, int delta, uint8_t *dst)
{
    const uint8_t *m = body + g->planes, *v = body + voff;
    for (size_t q = 0; q < g->planes; q++) {
        uint8_t *d = dst + q * g->plane * g->es;
        if (body[q] == PLANE_DENSE) {
            plane_apply(d, v, g->plane, g->es, delta);
            v += g->plane * g->es;
        } else if (body[q] == PLANE_MASK) {
            v += scatter_es(d, v, m, g->mb, g->es, delta);
            m += g->mb;
        }
    }
}

/* ---- PIXEL masks: one mask per image, shared by its channels ------------- */

/* Encode: each image's mask, the OR of its channels' masks (elem_measure
 * ran first); *size = the PIXEL body's size, UINT64_MAX when there is one
 * channel (ELEM is then never larger). */
static int pixel_measure(ds_codec_scratch *s, const geom *g, uint64_t *size, ds_error *err)
{
    *size = UINT64_MAX;
    if (g->channels <= 1)
        return 0;
    if (ds_grow((void **)&s->pix, &s->pix_cap, g->images * g->pw, sizeof *s->pix, err))
        return ds_error_prefix(err, "codec");
    uint64_t sz = (uint64_t)g->images * g->mb;
    for (size_t im = 0; im < g->images; im++) {
        uint64_t *u = s->pix + im * g->pw;
        memcpy(u, s->bits + im * g->channels * g->pw, g->pw * sizeof *u);
        for (size_t ch = 1; ch < g->channels; ch++) {
            const uint64_t *w = s->bits + (im * g->channels + ch) * g->pw;
            for (size_t i = 0; i < g->pw; i++)
                u[i] |= w[i];
        }
        uint64_t pc = 0;
        for (size_t i = 0; i < g->pw; i++)
            pc += (uint64_t)popcount64(u[i]);
        sz += pc * g->channels * g->es;
    }
    *size = sz;
    return 0;
}

/* Encode: writes the PIXEL body (image masks, then values image by image,
 * channel by channel) to b; *voff and the result as for elem_build. */
static size_t pixel_build(const ds_codec_scratch *s, const geom *g, const uint8_t *cd,
                          const uint8_t *dref, uint8_t *b, size_t *voff)
{
    const size_t pb = g->plane * g->es;
    size_t off = 0;
    for (size_t im = 0; im < g->images; im++) {
        memcpy(b + off, s->pix + im * g->pw, g->mb);
        off += g->mb;
    }
    *voff = off;
    for (size_t im = 0; im < g->images; im++)
        for (size_t ch = 0; ch < g->channels; ch++) {
            size_t q = im * g->channels + ch;
            off += gather_es(b + off, cd + q * pb, dref ? dref + q * pb : NULL,
                             s->pix + im * g->pw, g->pw, g->es);
        }
    return off;
}

/* Decode: checks the mask padding and that the values fill the body
 * exactly; *voff = offset of the values. */
static int pixel_check(const geom *g, const uint8_t *body, size_t raw, int L, size_t *voff,
                       ds_error *err)
{
    uint64_t nvals = 0;
    for (size_t im = 0; im < g->images; im++) {
        int64_t c = mask_count(body + im * g->mb, g->plane);
        if (c < 0)
            return ds_errorf(err, "codec payload for layer %d: pixel mask %zu has padding bits set",
                             L, im);
        nvals += (uint64_t)c * g->channels;
    }
    if (g->images * g->mb + nvals * g->es != raw)
        return ds_errorf(err, "codec payload for layer %d: masks imply %" PRIu64
                         " values but the body holds %zu bytes for them",
                         L, nvals, raw - g->images * g->mb);
    *voff = g->images * g->mb;
    return 0;
}

/* Decode: applies a checked PIXEL body to dst. */
static void pixel_apply(const geom *g, const uint8_t *body, size_t voff, int delta, uint8_t *dst)
{
    const uint8_t *v = body + voff;
    for (size_t im = 0; im < g->images; im++)
        for (size_t ch = 0; ch < g->channels; ch++)
            v += scatter_es(dst + (im * g->channels + ch) * g->plane * g->es, v,
                            body + im * g->mb, g->mb, g->es, delta);
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

/* The arguments of ds_codec_encode. */
static int check_encode_args(int layer_id, const ds_tensor *cur, const ds_tensor *ref,
                             const ds_codec_opts *o, ds_error *err)
{
    if (layer_id < 0)
        return ds_errorf(err, "codec: negative layer id %d", layer_id);
    if (!cur)
        return ds_errorf(err, "codec: layer %d: no tensor to encode", layer_id);
    if (check_tensor(cur, "tensor", layer_id, err))
        return -1;
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
    return 0;
}

/* The zstd level used: 0 means 1, clamped to zstd's range and to int8 (the
 * header's byte). */
static int zstd_level(int asked)
{
    int level = asked ? asked : 1;
    int lo = ZSTD_minCLevel() < -127 ? -127 : ZSTD_minCLevel();
    if (level < lo)
        level = lo;
    if (level > ZSTD_maxCLevel())
        level = ZSTD_maxCLevel();
    return level;
}

/* What a payload is: encoding, mask kind, delta flag and body layout. */
typedef struct form {
    ds_codec_encoding enc;
    ds_codec_mask mask;
    int delta;    /* UPDATE values are exact deltas */
    uint64_t raw; /* body bytes before compression */
    size_t voff;  /* offset of the values in the body */
} form;

/* Chooses the smallest uncompressed form: DENSE, ELEM or PIXEL (codec.h);
 * leaves the masks it measured in scratch for the body. */
static int choose_form(ds_codec_scratch *s, const geom *g, const uint8_t *cd, const uint8_t *rd,
                       const ds_codec_opts *o, form *f, ds_error *err)
{
    *f = (form){DS_ENC_DENSE, DS_MASK_NONE, 0, (uint64_t)g->numel * g->es, 0};
    s->counts_len = 0;
    if (o->update == DS_CODEC_DENSE_ONLY)
        return 0;
    uint64_t elem_size = 0, pix_size = 0;
    if (elem_measure(s, g, cd, rd, &elem_size, err) || pixel_measure(s, g, &pix_size, err))
        return -1;
    /* With exact deltas and compression even an all-changed plane is worth
     * an update: XOR deltas compress far better than values. */
    uint64_t dense_cmp = f->raw;
    if (rd && o->update == DS_CODEC_EXACT_DELTA && o->compress != DS_COMPRESS_NONE)
        dense_cmp = f->raw + g->planes + (uint64_t)g->images * g->mb + 1;
    if (elem_size < dense_cmp && elem_size <= pix_size)
        f->mask = DS_MASK_ELEM, f->raw = elem_size;
    else if (pix_size < dense_cmp)
        f->mask = DS_MASK_PIXEL, f->raw = pix_size;
    else
        return 0;
    f->enc = rd ? DS_ENC_UPDATE : DS_ENC_SPARSE;
    f->delta = o->update == DS_CODEC_EXACT_DELTA && f->enc == DS_ENC_UPDATE;
    return 0;
}

/* Builds the body of a non-DENSE form in s->body (values as deltas against
 * rd when f->delta); sets f->voff. */
static int build_body(ds_codec_scratch *s, const geom *g, const uint8_t *cd, const uint8_t *rd,
                      form *f, int layer_id, ds_error *err)
{
    if (f->raw > SIZE_MAX || ds_buf_reserve(&s->body, (size_t)f->raw, err))
        return -1;
    const uint8_t *dref = f->delta ? rd : NULL;
    size_t off = f->mask == DS_MASK_ELEM ? elem_build(s, g, cd, dref, s->body.data, &f->voff)
                                         : pixel_build(s, g, cd, dref, s->body.data, &f->voff);
    if (off != f->raw)
        return ds_errorf(err, "codec: layer %d: internal size mismatch %zu vs %" PRIu64,
                         layer_id, off, f->raw);
    s->body.len = off;
    return 0;
}

static size_t header_size(int ndim)
{
    return 12 + 4 * (size_t)ndim + 16;
}

#define SHUFFLED 0x80 /* compression byte flag: f32 values byte-shuffled */
#define DELTA 0x40    /* mask byte flag: UPDATE values are exact deltas */

static void write_header(uint8_t *p, int layer_id, const ds_tensor *t, const form *f,
                         ds_compress c, int shuffled, int level, uint64_t stored)
{
    p[0] = DS_CODEC_MAGIC;
    p[1] = DS_CODEC_VERSION;
    p[2] = (uint8_t)t->dtype;
    p[3] = (uint8_t)f->enc;
    p[4] = (uint8_t)((unsigned)f->mask | (f->delta ? DELTA : 0));
    p[5] = (uint8_t)((unsigned)c | (shuffled ? SHUFFLED : 0));
    p[6] = (uint8_t)(int8_t)(c == DS_COMPRESS_ZSTD ? level : 0);
    p[7] = (uint8_t)t->shape.ndim;
    put_u32(p + 8, (uint32_t)layer_id);
    for (int i = 0; i < t->shape.ndim; i++)
        put_u32(p + 12 + 4 * i, (uint32_t)t->shape.dims[i]);
    size_t o = 12 + 4 * (size_t)t->shape.ndim;
    put_u64(p + o, f->raw);
    put_u64(p + o + 8, stored);
}

static size_t compress_bound(ds_compress c, size_t raw)
{
    if (c == DS_COMPRESS_LZ4)
        return raw <= LZ4_MAX_INPUT_SIZE ? (size_t)LZ4_compressBound((int)raw) : 0;
    if (c == DS_COMPRESS_ZSTD)
        return ZSTD_compressBound(raw);
    return 0;
}

/* Compresses src (raw bytes) into dst (capacity cap); *z = the compressed
 * size, 0 when this compression is unavailable for the size or would not
 * shrink it. */
static int deflate_body(ds_codec_scratch *s, ds_compress c, int level, const uint8_t *src,
                        size_t raw, uint8_t *dst, size_t cap, size_t *z, ds_error *err)
{
    *z = 0;
    if (c == DS_COMPRESS_LZ4) {
        if (raw > LZ4_MAX_INPUT_SIZE || cap > INT_MAX)
            return 0;
        int r = LZ4_compress_default((const char *)src, (char *)dst, (int)raw, (int)cap);
        *z = r > 0 && (size_t)r < raw ? (size_t)r : 0;
    } else if (c == DS_COMPRESS_ZSTD) {
        if (!s->zc && !(s->zc = ZSTD_createCCtx()))
            return ds_errorf(err, "codec: cannot create a zstd context");
        size_t r = ZSTD_compressCCtx(s->zc, dst, cap, src, raw, level);
        if (ZSTD_isError(r))
            return ds_errorf(err, "codec: zstd compression failed: %s", ZSTD_getErrorName(r));
        *z = r < raw ? r : 0;
    }
    return 0;
}

/* Compresses the body into dst when that makes it smaller, byte-shuffling
 * f32 values first when a probe says it helps.  *stored = 0: the body goes
 * as it is. */
static int compress_values(ds_codec_scratch *s, ds_compress c, int level, size_t es,
                           const uint8_t *body, const form *f, uint8_t *dst, size_t cap,
                           size_t *stored, int *shuffled, ds_error *err)
{
    const size_t raw = (size_t)f->raw, nv = (raw - f->voff) / 4;
    const uint8_t *src = body;
    *shuffled = 0;
    if (es == 4 && shuffle_helps(body + f->voff, nv)) {
        if (ds_buf_reserve(&s->aux, raw, err))
            return -1;
        memcpy(s->aux.data, body, f->voff);
        shuffle4(s->aux.data + f->voff, body + f->voff, nv);
        src = s->aux.data;
        *shuffled = 1;
    }
    if (deflate_body(s, c, level, src, raw, dst, cap, stored, err))
        return -1;
    if (!*stored)
        *shuffled = 0;
    return 0;
}

/* Appends header + (compressed) body to out. */
static int emit(int layer_id, const ds_tensor *cur, const form *f, const uint8_t *body,
                ds_compress c, int level, ds_codec_scratch *s, ds_buf *out, ds_error *err)
{
    const size_t hs = header_size(cur->shape.ndim), raw = (size_t)f->raw;
    const size_t bound = compress_bound(c, raw);
    const size_t need = hs + (bound > raw ? bound : raw);
    if (ds_buf_reserve(out, out->len + need, err))
        return ds_error_prefix(err, "codec: layer %d", layer_id);
    uint8_t *dst = out->data + out->len;
    size_t stored = 0;
    int shuffled = 0;
    if (c != DS_COMPRESS_NONE &&
        compress_values(s, c, level, ds_dtype_size(cur->dtype), body, f, dst + hs, need - hs,
                        &stored, &shuffled, err))
        return ds_error_prefix(err, "codec: layer %d", layer_id);
    ds_compress applied = stored ? c : DS_COMPRESS_NONE;
    if (!stored) {
        memcpy(dst + hs, body, raw);
        stored = raw;
    }
    write_header(dst, layer_id, cur, f, applied, shuffled, level, stored);
    out->len += hs + stored;
    return 0;
}

int ds_codec_encode(int layer_id, const ds_tensor *cur, const ds_tensor *ref,
                    const ds_codec_opts *o, ds_codec_scratch *s, ds_buf *out, ds_error *err)
{
    static const ds_codec_opts defaults = {DS_COMPRESS_NONE, 0, DS_CODEC_NEW_VALUES};
    if (!o)
        o = &defaults;
    if (check_encode_args(layer_id, cur, ref, o, err))
        return -1;
    const int level = zstd_level(o->zstd_level);
    const geom g = geom_of(&cur->shape, cur->dtype);
    const uint8_t *rd = ref ? ref->data : NULL;
    form f;
    if (choose_form(s, &g, cur->data, rd, o, &f, err))
        return -1;
    /* The uncompressed body: the tensor itself when dense. */
    const uint8_t *body = cur->data;
    if (f.enc != DS_ENC_DENSE) {
        if (build_body(s, &g, cur->data, rd, &f, layer_id, err))
            return -1;
        body = s->body.data;
    }
    return emit(layer_id, cur, &f, body, o->compress, level, s, out, err);
}

/* ---- decode ------------------------------------------------------------- */

/* Bytes 0..7 and the layer id. */
static int parse_fields(const uint8_t *p, size_t n, ds_codec_header *h, ds_error *err)
{
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
    return 0;
}

/* The dims (checked against expected when given) and the two sizes. */
static int parse_dims(const uint8_t *p, size_t n, const ds_shape *expected, ds_codec_header *h,
                      ds_error *err)
{
    int L = h->layer_id;
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
    return 0;
}

/* The raw size against the bounds of the mask kind for the shape. */
static int check_raw_size(const ds_codec_header *h, ds_error *err)
{
    uint64_t es = ds_dtype_size(h->dtype), numel = (uint64_t)ds_shape_numel(&h->shape);
    int64_t planes, plane;
    ds_codec_planes(&h->shape, &planes, &plane);
    uint64_t mb = ((uint64_t)plane + 7) / 8, images = (uint64_t)shape_images(&h->shape);
    uint64_t lo, hi;
    if (h->mask == DS_MASK_NONE)
        lo = hi = numel * es;
    else if (h->mask == DS_MASK_ELEM)
        lo = (uint64_t)planes, hi = (uint64_t)planes * (1 + mb) + numel * es;
    else
        lo = images * mb, hi = images * mb + numel * es;
    if (h->raw_size < lo || h->raw_size > hi)
        return ds_errorf(err,
                         "codec payload for layer %d: raw size %" PRIu64
                         " outside %" PRIu64 "..%" PRIu64 " for its shape",
                         h->layer_id, h->raw_size, lo, hi);
    return 0;
}

/* The stored size against the payload's length and the compression; bounds
 * the decompressed size by the stored size before anything is allocated for
 * it: lz4 expands at most ~255x; a zstd body is one frame that declares its
 * content size. */
static int check_stored_size(const uint8_t *p, size_t n, const ds_codec_header *h, ds_error *err)
{
    int L = h->layer_id;
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

static int parse_header(const uint8_t *p, size_t n, const ds_shape *expected,
                        ds_codec_header *h, ds_error *err)
{
    memset(h, 0, sizeof *h);
    if (parse_fields(p, n, h, err) || parse_dims(p, n, expected, h, err) ||
        check_raw_size(h, err) || check_stored_size(p, n, h, err))
        return -1;
    return 0;
}

int ds_codec_peek(const uint8_t *p, size_t n, ds_codec_header *h, ds_error *err)
{
    return parse_header(p, n, NULL, h, err);
}

/* An UPDATE needs a cached tensor of its dtype and shape. */
static int check_update_target(const ds_codec_header *h, const ds_tensor *cache, ds_error *err)
{
    if (h->encoding != DS_ENC_UPDATE)
        return 0;
    int L = h->layer_id;
    if (!cache->data || cache->shape.ndim < 1)
        return ds_errorf(err, "codec: update for layer %d but no cached tensor", L);
    if (cache->dtype != h->dtype || !ds_shape_equal(&cache->shape, &h->shape)) {
        char a[64], b[64];
        return ds_errorf(err,
                         "codec: update for layer %d is %s %s but the cached tensor is %s %s",
                         L, h->dtype == DS_U8 ? "u8" : "f32",
                         ds_shape_str(&h->shape, a, sizeof a),
                         cache->dtype == DS_U8 ? "u8" : "f32",
                         ds_shape_str(&cache->shape, b, sizeof b));
    }
    return 0;
}

/* The uncompressed body: *body = stored (no compression) or s->body. */
static int inflate_body(const ds_codec_header *h, const uint8_t *stored, ds_codec_scratch *s,
                        const uint8_t **body, ds_error *err)
{
    int L = h->layer_id;
    *body = stored;
    if (h->compress == DS_COMPRESS_NONE)
        return 0;
    const size_t raw = (size_t)h->raw_size;
    if (h->raw_size > SIZE_MAX || ds_buf_reserve(&s->body, raw ? raw : 1, err))
        return ds_error_prefix(err, "codec payload for layer %d", L);
    size_t got;
    if (h->compress == DS_COMPRESS_LZ4) {
        int r = LZ4_decompress_safe((const char *)stored, (char *)s->body.data,
                                    (int)h->stored_size, (int)raw);
        if (r < 0)
            return ds_errorf(err, "codec payload for layer %d: corrupt lz4 body", L);
        got = (size_t)r;
    } else {
        if (!s->zd && !(s->zd = ZSTD_createDCtx()))
            return ds_errorf(err, "codec: cannot create a zstd context");
        size_t r = ZSTD_decompressDCtx(s->zd, s->body.data, raw, stored, (size_t)h->stored_size);
        if (ZSTD_isError(r))
            return ds_errorf(err, "codec payload for layer %d: corrupt zstd body: %s", L,
                             ZSTD_getErrorName(r));
        got = r;
    }
    if (got != raw)
        return ds_errorf(err,
                         "codec payload for layer %d: body decompressed to %zu bytes, raw size says %zu",
                         L, got, raw);
    *body = s->body.data;
    return 0;
}

/* Validates the body completely (before the cache is touched); *voff = the
 * offset of its values. */
static int check_body(const ds_codec_header *h, const geom *g, const uint8_t *body, size_t *voff,
                      ds_error *err)
{
    *voff = 0;
    if (h->mask == DS_MASK_ELEM)
        return elem_check(g, body, (size_t)h->raw_size, h->layer_id, voff, err);
    if (h->mask == DS_MASK_PIXEL)
        return pixel_check(g, body, (size_t)h->raw_size, h->layer_id, voff, err);
    return 0; /* DENSE: parse_header checked raw == numel * es */
}

/* Undoes the byte shuffle of the values into s->aux; *body points there. */
static int unshuffle_body(const ds_codec_header *h, size_t voff, ds_codec_scratch *s,
                          const uint8_t **body, ds_error *err)
{
    const size_t raw = (size_t)h->raw_size;
    if (ds_buf_reserve(&s->aux, raw, err))
        return ds_error_prefix(err, "codec payload for layer %d", h->layer_id);
    memcpy(s->aux.data, *body, voff);
    unshuffle4(s->aux.data + voff, *body + voff, (raw - voff) / 4);
    *body = s->aux.data;
    return 0;
}

/* Writes a checked body into the cache. */
static int apply_body(const ds_codec_header *h, const geom *g, const uint8_t *body, size_t voff,
                      ds_tensor *cache, ds_error *err)
{
    if (h->encoding != DS_ENC_UPDATE && ds_tensor_reserve(cache, &h->shape, h->dtype, err))
        return ds_error_prefix(err, "codec payload for layer %d", h->layer_id);
    uint8_t *dst = cache->data;
    if (h->encoding == DS_ENC_DENSE) {
        memcpy(dst, body, g->numel * g->es);
        return 0;
    }
    if (h->encoding == DS_ENC_SPARSE)
        memset(dst, 0, g->numel * g->es);
    if (h->mask == DS_MASK_ELEM)
        elem_apply(g, body, voff, h->exact_delta, dst);
    else
        pixel_apply(g, body, voff, h->exact_delta, dst);
    return 0;
}

int ds_codec_decode(const uint8_t *p, size_t n, const ds_shape *expected, ds_tensor *cache,
                    ds_codec_scratch *s, ds_error *err)
{
    ds_codec_header h;
    const uint8_t *body;
    size_t voff;
    if (parse_header(p, n, expected, &h, err) || check_update_target(&h, cache, err) ||
        inflate_body(&h, p + h.header_size, s, &body, err))
        return -1;
    const geom g = geom_of(&h.shape, h.dtype);
    if (check_body(&h, &g, body, &voff, err) ||
        (h.shuffled && unshuffle_body(&h, voff, s, &body, err)))
        return -1;
    return apply_body(&h, &g, body, voff, cache, err);
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
