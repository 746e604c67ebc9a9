/* codec.h - the wire payload of one tensor (dense, update or sparse).
 *
 * A sender keeps, per layer, the last tensor it sent (ref); a receiver keeps
 * the last one it received (its cache).  An UPDATE payload carries a change
 * mask and, for the changed elements, their new values or exact integer
 * deltas (DELTA flag, below), never floating-point differences, so the
 * receiver's cache becomes bit-identical to the sender's cur (DESIGN §3.1).
 * "Changed" compares bit patterns (memcmp semantics): -0.0 vs 0.0 and NaN
 * payloads travel exactly.  A payload never depends on a cache unless its
 * encoding is UPDATE; a tensor without a reference goes out as DENSE or
 * SPARSE (mask + values against an all-zero base), whichever is smaller.
 *
 * Payload format, version 1, all integers little-endian:
 *
 *   off size field
 *   0   1    magic 0xD5
 *   1   1    version (1)
 *   2   1    dtype: 1 f32, 2 u8 (ds_dtype values)
 *   3   1    encoding: 0 DENSE, 1 UPDATE (base = receiver's cache),
 *                      2 SPARSE (base = all zeros)
 *   4   1    mask kind: 0 NONE (DENSE only), 1 ELEM (per plane), 2 PIXEL;
 *                         | 0x40 = DELTA (UPDATE only, see below)
 *   5   1    compression: 0 none, 1 lz4 (one block), 2 zstd (one frame that
 *                         declares its content size); | 0x80 = f32 values
 *                         byte-shuffled (only with lz4/zstd and f32)
 *   6   1    zstd level (int8, informational; 0 unless compression is zstd)
 *   7   1    ndim, 1..4
 *   8   4    layer id (0..INT32_MAX)
 *   12  4*ndim dims, each 1..2^31, NCHW; numel <= 2^31
 *   ..  8    raw size: bytes of the uncompressed body
 *   ..  8    stored size: bytes of the body that follow; must end the payload
 *   ..       body (raw size bytes, or its lz4/zstd compression)
 *
 * Planes: the tensor is split into `planes` planes of `plane` elements
 * (plane = product of the last two dims when ndim >= 3, else the last dim).
 * For PIXEL masks, images = dims[0] when ndim == 4 else 1, and each image has
 * channels = planes / images planes that share one mask.
 * A mask of m bits is ceil(m/8) bytes, bit i = byte i/8 bit i%8 (LSB first);
 * padding bits in the last byte must be zero.  es = 4 (f32) or 1 (u8).
 *
 * Body, DENSE:   numel values (NCHW order).
 * Body, ELEM:    mode[planes] (1 byte each: 0 SAME = keep base plane,
 *                1 DENSE = plane values follow, 2 MASK), then the masks of all
 *                MASK planes (plane bits each, plane order), then the values
 *                of all planes in plane order: DENSE planes all `plane`
 *                values, MASK planes the values at set bits in index order.
 * Body, PIXEL:   images masks of `plane` bits, then for each image, for each
 *                of its channels, the values at the set bits of its mask.
 * The raw size must equal exactly what the modes and mask popcounts imply.
 * With the DELTA flag (ds_codec_opts.update = DS_CODEC_EXACT_DELTA) every
 * value of an UPDATE body is an exact integer delta against the receiver's
 * cached element: f32 bit patterns XORed (new = old ^ v), u8 modulo 256
 * (new = old + v).  These are bit-exact like copying (no floating-point
 * arithmetic, hence no drift, which is DESIGN §3.1's concern), and the small
 * deltas of sensor noise compress far better.  Measured, vtest.avi 720x480
 * frames 1-29 as u8 updates: zstd-1 35.1% -> 19.5% of dense u8, lz4 38.1%
 * -> 30.2%; a random-weight AlexNet conv1 (+ReLU) on those frames: zstd-1
 * 26.5% -> 22.7% of dense f32, lz4 28.2% -> 26.0%.  It loses on values with
 * few distinct bit patterns (an 8-bit frame / 255 as f32: zstd 13.0% ->
 * 15.5%).  dif mode uses it on every link (ds_dif_link_update); without
 * compression it changes nothing.
 * With the shuffle flag the values of the body (the whole body for DENSE)
 * are byte-shuffled before compression: the V values are stored as V first
 * bytes, then V second bytes, then third, then fourth (little-endian byte
 * order); raw size and all offsets are unchanged.  The encoder sets it when
 * an lz4 probe of a sample says it helps: 11-16% smaller with lz4/zstd on
 * conv+ReLU outputs (exponent bytes repeat), but worse on an 8-bit frame
 * stored as f32 (few distinct values, whole 4-byte values repeat).
 *
 * The encoder picks, by uncompressed size: DENSE vs the ELEM form (with a
 * per-plane SAME/DENSE/MASK choice) vs the PIXEL form (only when channels >
 * 1).  Compression is applied only when it makes the body smaller; the header
 * says what was applied.  Measured on vtest.avi 720x480 RGB u8 frames: 27% of
 * elements and 29% of pixels change, so PIXEL (0.33 of dense u8) beats ELEM
 * (0.39); after a conv+ReLU 76% of pixels but 33% of elements change and
 * ELEM wins.  Run-length masks measured no smaller than bitmasks on both and
 * are slower to decode on scattered changes, so masks are bitmaps.  Frames
 * 1-29 of that clip as u8 updates: PIXEL chosen for 26 of 29, 40% of dense
 * u8 = 10% of dense f32 = 16.5% of the original system's per-channel CSR
 * bytes (lz4 15.6%, zstd-1 14.4%).
 *
 * The decoder validates the whole payload (header limits, expected shape,
 * raw size against the bound for the shape, decompressed size, modes, mask
 * padding, value counts, trailing bytes) before it writes the cache; on any
 * error the cache is unchanged.  Not thread-safe per scratch: one scratch per
 * thread. */
#ifndef DS_CODEC_H
#define DS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/tensor.h"

#define DS_CODEC_MAGIC 0xD5
#define DS_CODEC_VERSION 1
/* Largest element count a payload may declare. */
#define DS_CODEC_MAX_NUMEL ((int64_t)1 << 31)
/* Largest header: 12 + 4 * DS_MAX_DIMS + 16. */
#define DS_CODEC_MAX_HEADER 48

typedef enum ds_compress {
    DS_COMPRESS_NONE = 0,
    DS_COMPRESS_LZ4 = 1,
    DS_COMPRESS_ZSTD = 2,
} ds_compress;

typedef enum ds_codec_encoding {
    DS_ENC_DENSE = 0,
    DS_ENC_UPDATE = 1,
    DS_ENC_SPARSE = 2,
} ds_codec_encoding;

typedef enum ds_codec_mask {
    DS_MASK_NONE = 0,
    DS_MASK_ELEM = 1,
    DS_MASK_PIXEL = 2,
} ds_codec_mask;

/* What an encoder may send besides DENSE.  Without a reference the payload
 * is DENSE or SPARSE (new values) for both update kinds. */
typedef enum ds_codec_update {
    DS_CODEC_DENSE_ONLY = 0,  /* always DENSE */
    DS_CODEC_NEW_VALUES = 1,  /* UPDATE carries the new values */
    DS_CODEC_EXACT_DELTA = 2, /* UPDATE carries exact XOR/mod-256 deltas
                               * (DELTA flag) */
} ds_codec_update;

typedef struct ds_codec_opts {
    ds_compress compress;
    int zstd_level; /* 0 means 1; clamped to zstd's range */
    ds_codec_update update;
} ds_codec_opts;

typedef struct ds_codec_header {
    int version;
    int layer_id;
    ds_dtype dtype;
    ds_shape shape;
    ds_codec_encoding encoding;
    ds_codec_mask mask;
    int exact_delta;      /* UPDATE values are deltas (DELTA flag) */
    ds_compress compress;
    int shuffled;         /* f32 values byte-shuffled inside the compression */
    int zstd_level;
    uint64_t raw_size;    /* uncompressed body bytes */
    uint64_t stored_size; /* body bytes in the payload */
    size_t header_size;   /* offset of the body */
} ds_codec_header;

/* Reusable working memory for encode and decode (masks, bodies, zstd
 * contexts).  Zero-initialise (`ds_codec_scratch s = {0};`); grown on demand
 * and kept, so steady-state calls do not allocate.  Fields are private. */
typedef struct ds_codec_scratch {
    uint64_t *bits;        /* per-plane change masks, plane_words each */
    size_t bits_cap;       /* words */
    uint64_t *pix;         /* per-image OR of channel masks */
    size_t pix_cap;        /* words */
    uint32_t *counts;      /* changed elements per plane of the last encode */
    size_t counts_cap;
    size_t counts_len;
    ds_buf body;           /* uncompressed body (encode and decode) */
    ds_buf aux;            /* byte-shuffled values */
    void *zc;              /* ZSTD_CCtx */
    void *zd;              /* ZSTD_DCtx */
} ds_codec_scratch;

void ds_codec_scratch_free(ds_codec_scratch *s);

/* Encodes cur against ref (the tensor the receiver holds for this layer;
 * NULL = the receiver holds nothing, so the payload is DENSE or SPARSE) and
 * APPENDS the payload to out.  ref must have cur's dtype and shape.  o NULL =
 * no compression, DS_CODEC_NEW_VALUES. */
int ds_codec_encode(int layer_id, const ds_tensor *cur, const ds_tensor *ref,
                    const ds_codec_opts *o, ds_codec_scratch *s, ds_buf *out,
                    ds_error *err);

/* Changed elements per plane found by the last ds_codec_encode on s (against
 * ref, or nonzero elements when ref was NULL); *nplanes gets their number.
 * Valid until the next encode; the trainer's per-channel changed fractions
 * are counts[i] / plane. */
const uint32_t *ds_codec_last_counts(const ds_codec_scratch *s, size_t *nplanes);

/* Parses and validates the header of p[0..n) (limits, field values, sizes
 * against the shape's bound and against n); does not touch the body. */
int ds_codec_peek(const uint8_t *p, size_t n, ds_codec_header *h, ds_error *err);

/* Decodes p[0..n) into cache, the receiver's tensor for this layer.
 * expected: the shape the receiver expects (NULL = accept the header's; pass
 * it for untrusted input, since a few-byte SPARSE payload may otherwise make
 * cache as large as 2^31 elements).
 * DENSE and SPARSE overwrite cache (reshaping it); UPDATE needs cache to hold
 * a tensor of the payload's dtype and shape and overwrites changed elements
 * in place.  On error cache is unchanged. */
int ds_codec_decode(const uint8_t *p, size_t n, const ds_shape *expected,
                    ds_tensor *cache, ds_codec_scratch *s, ds_error *err);

/* Plane geometry used by the format (see above). */
void ds_codec_planes(const ds_shape *shape, int64_t *planes, int64_t *plane);

/* Size model for the scheduler: predicted payload bytes of an UPDATE of a
 * tensor of this shape and dtype whose plane i has changed fraction
 * changed_fraction[i] (planes = ds_codec_planes; for NCHW with N = 1 that is
 * one fraction per channel).  Formula, with f_i the fraction, P the plane
 * size, es the element size, mb = ceil(P/8):
 *   elem  = planes + sum_i plane_bytes(f_i),
 *           plane_bytes(f) = 0 if f == 0, else min(P*es, mb + f*P*es)
 *   pixel = images*mb + max_i(f_i) * numel*es      (channels > 1 only;
 *           the union of correlated channels is at least the largest one)
 *   raw   = min(numel*es, elem, pixel)
 * and with compression c the mask part (planes + masks) and the value part
 * are scaled by constants fitted on clustered synthetic maps
 * (k_mask[dtype][c], k_val[dtype][c]; 1 for none), never above the raw form;
 * plus the header.  Fractions outside [0,1] are clamped. */
size_t ds_codec_predict_bytes(const ds_shape *s, ds_dtype t,
                              const float *changed_fraction, ds_compress c);

const char *ds_compress_name(ds_compress c);
/* "none" | "lz4" | "zstd" -> c; -1 with a message when unknown. */
int ds_compress_parse(const char *name, ds_compress *c, ds_error *err);

#endif
