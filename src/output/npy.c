/* npy.c - NumPy .npy files (format 1.0) for float32 and uint8 tensors.
 *
 * The header is byte for byte what numpy.save (1.24 and later) writes: the
 * dict repr "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }",
 * numpy's spare room for growing the first axis (21 digits), then spaces and
 * a newline up to a multiple of 64 bytes counted from the file's start.  So
 * a file written here and one numpy writes for the same array compare equal
 * with cmp. */
#include "output/output.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAGIC         "\x93NUMPY"
#define NPY_MAGIC_LEN     6
#define NPY_ALIGN         64
#define NPY_GROWTH_DIGITS 21    /* numpy.lib.format.GROWTH_AXIS_MAX_DIGITS */
#define NPY_MAX_HEADER    65535 /* a version 1.0 header's length is a uint16 */
#define NPY_MAX_NUMEL     ((int64_t)1 << 32)
#define SWAP_CHUNK        4096 /* floats swapped per write on a big-endian host */

static int big_endian(void)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return 1;
#else
    return 0;
#endif
}

static void swap32(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &p[i], 4);
        v = __builtin_bswap32(v);
        memcpy(&p[i], &v, 4);
    }
}

/* The whole header (magic to newline) into out; its length, or 0 when the
 * shape cannot be written. */
static size_t npy_header(const ds_tensor *t, char *out, size_t cap)
{
    char shape[160];
    size_t n = 0;
    shape[n++] = '(';
    for (int i = 0; i < t->shape.ndim; i++)
        n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%" PRId64, i ? ", " : "",
                              t->shape.dims[i]);
    n += (size_t)snprintf(shape + n, sizeof shape - n, "%s)", t->shape.ndim == 1 ? "," : "");
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       t->dtype == DS_F32 ? "<f4" : "|u1", shape);
    if (len < 0 || (size_t)len >= sizeof dict)
        return 0;
    /* numpy's spare room: spaces for the first axis to grow to 21 digits. */
    char first[24];
    int digits = snprintf(first, sizeof first, "%" PRId64, t->shape.dims[0]);
    size_t dict_len =
        (size_t)len + (digits < NPY_GROWTH_DIGITS ? (size_t)(NPY_GROWTH_DIGITS - digits) : 0);
    /* numpy: padlen = 64 - (10 + hlen) % 64 with hlen = dict + newline, so
     * an already aligned header still gets 64 spaces. */
    size_t pad = NPY_ALIGN - (NPY_MAGIC_LEN + 4 + dict_len + 1) % NPY_ALIGN;
    size_t total = NPY_MAGIC_LEN + 4 + dict_len + pad + 1;
    if (total > cap || total - NPY_MAGIC_LEN - 4 > NPY_MAX_HEADER)
        return 0;
    size_t hlen = total - NPY_MAGIC_LEN - 4;
    memcpy(out, NPY_MAGIC, NPY_MAGIC_LEN);
    out[6] = 1; /* version 1.0 */
    out[7] = 0;
    out[8] = (char)(hlen & 0xff); /* little-endian uint16 */
    out[9] = (char)(hlen >> 8);
    memcpy(out + 10, dict, (size_t)len);
    memset(out + 10 + len, ' ', total - 10 - (size_t)len - 1);
    out[total - 1] = '\n';
    return total;
}

static int write_data(FILE *f, const ds_tensor *t, const char *path, ds_error *err)
{
    size_t numel = (size_t)ds_shape_numel(&t->shape);
    if (t->dtype == DS_F32 && big_endian()) {
        float chunk[SWAP_CHUNK];
        for (size_t i = 0; i < numel; i += SWAP_CHUNK) {
            size_t n = numel - i < SWAP_CHUNK ? numel - i : SWAP_CHUNK;
            memcpy(chunk, ds_tensor_f32(t) + i, n * sizeof(float));
            swap32(chunk, n);
            if (fwrite(chunk, sizeof(float), n, f) != n)
                return ds_errorf(err, "%s: cannot write: %s", path, strerror(errno));
        }
        return 0;
    }
    size_t bytes = numel * ds_dtype_size(t->dtype);
    if (bytes && fwrite(t->data, 1, bytes, f) != bytes)
        return ds_errorf(err, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

int ds_npy_write(const char *path, const ds_tensor *t, ds_error *err)
{
    if (t->dtype != DS_F32 && t->dtype != DS_U8)
        return ds_errorf(err, "%s: only float32 and uint8 tensors are written as .npy", path);
    if (t->shape.ndim < 1 || t->shape.ndim > DS_MAX_DIMS)
        return ds_errorf(err, "%s: a tensor of %d dimensions cannot be written", path,
                         t->shape.ndim);
    for (int i = 0; i < t->shape.ndim; i++)
        if (t->shape.dims[i] < 0)
            return ds_errorf(err, "%s: negative dimension %" PRId64, path, t->shape.dims[i]);
    char header[512];
    size_t hlen = npy_header(t, header, sizeof header);
    if (!hlen)
        return ds_errorf(err, "%s: shape too long for a .npy header", path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return ds_errorf(err, "%s: cannot create: %s", path, strerror(errno));
    int rc = 0;
    if (fwrite(header, 1, hlen, f) != hlen)
        rc = ds_errorf(err, "%s: cannot write: %s", path, strerror(errno));
    else
        rc = write_data(f, t, path, err);
    /* fclose flushes: a full disk often shows only here. */
    if (fclose(f) != 0 && !rc)
        rc = ds_errorf(err, "%s: cannot write: %s", path, strerror(errno));
    return rc;
}

/* --- reading: a small parser for the header's Python dict literal --- */

typedef struct hparse {
    const char *p, *end;
} hparse;

static void skip_space(hparse *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n'))
        h->p++;
}

static int eat(hparse *h, char c)
{
    skip_space(h);
    if (h->p < h->end && *h->p == c) {
        h->p++;
        return 1;
    }
    return 0;
}

/* A quoted string ('...' or "...", no escapes: numpy's keys and dtypes have
 * none) into out. */
static int parse_str(hparse *h, char *out, size_t cap)
{
    skip_space(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return -1;
    char q = *h->p++;
    size_t n = 0;
    while (h->p < h->end && *h->p != q) {
        if (n + 1 >= cap || *h->p == '\\')
            return -1;
        out[n++] = *h->p++;
    }
    if (h->p >= h->end)
        return -1;
    h->p++;
    out[n] = '\0';
    return 0;
}

/* A tuple of non-negative integers: "()", "(5,)", "(1, 3, 4)". */
static int parse_shape(hparse *h, ds_shape *s)
{
    if (!eat(h, '('))
        return -1;
    s->ndim = 0;
    for (;;) {
        if (eat(h, ')'))
            return 0;
        skip_space(h);
        if (h->p >= h->end || *h->p < '0' || *h->p > '9' || s->ndim == DS_MAX_DIMS)
            return -1;
        int64_t v = 0;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
            v = v * 10 + (*h->p++ - '0');
            if (v > NPY_MAX_NUMEL)
                return -1;
        }
        s->dims[s->ndim++] = v;
        if (!eat(h, ',')) {
            if (!eat(h, ')'))
                return -1;
            return 0;
        }
    }
}

typedef struct npy_meta {
    char descr[16];
    int fortran; /* -1 = key missing */
    ds_shape shape;
    int have_shape;
} npy_meta;

static int parse_dict(const char *text, size_t len, npy_meta *m)
{
    hparse h = {text, text + len};
    m->descr[0] = '\0';
    m->fortran = -1;
    m->have_shape = 0;
    if (!eat(&h, '{'))
        return -1;
    while (!eat(&h, '}')) {
        char key[32];
        if (parse_str(&h, key, sizeof key) || !eat(&h, ':'))
            return -1;
        skip_space(&h);
        if (!strcmp(key, "descr")) {
            if (parse_str(&h, m->descr, sizeof m->descr))
                return -1;
        } else if (!strcmp(key, "fortran_order")) {
            if ((size_t)(h.end - h.p) >= 4 && !memcmp(h.p, "True", 4)) {
                m->fortran = 1;
                h.p += 4;
            } else if ((size_t)(h.end - h.p) >= 5 && !memcmp(h.p, "False", 5)) {
                m->fortran = 0;
                h.p += 5;
            } else {
                return -1;
            }
        } else if (!strcmp(key, "shape")) {
            if (parse_shape(&h, &m->shape))
                return -1;
            m->have_shape = 1;
        } else {
            return -1;
        }
        if (!eat(&h, ',')) {
            if (!eat(&h, '}'))
                return -1;
            break;
        }
    }
    skip_space(&h);
    return h.p == h.end && m->descr[0] && m->fortran >= 0 && m->have_shape ? 0 : -1;
}

/* The dtype of descr: '<f4' (or '>f4', swapped on reading), '|u1'. */
static int parse_descr(const char *d, ds_dtype *t, int *swap)
{
    *swap = 0;
    if (!strcmp(d, "|u1") || !strcmp(d, "<u1") || !strcmp(d, ">u1") || !strcmp(d, "u1")) {
        *t = DS_U8;
        return 0;
    }
    if (!strcmp(d, "<f4") || !strcmp(d, ">f4")) {
        *t = DS_F32;
        *swap = (d[0] == '>') != big_endian();
        return 0;
    }
    return -1;
}

/* Reads the magic, version and header of f into m. */
static int read_header(FILE *f, const char *path, npy_meta *m, ds_error *err)
{
    unsigned char pre[12];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN))
        return ds_errorf(err, "%s: not a .npy file (no \\x93NUMPY magic)", path);
    size_t hlen;
    if (pre[6] == 1 && pre[7] == 0) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    } else if ((pre[6] == 2 || pre[6] == 3) && pre[7] == 0) { /* 4-byte length */
        if (fread(pre + 10, 1, 2, f) != 2)
            return ds_errorf(err, "%s: .npy header cut short", path);
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        if (hlen > (1u << 20))
            return ds_errorf(err, "%s: .npy header of %zu bytes is too long", path, hlen);
    } else {
        return ds_errorf(err, "%s: .npy format version %d.%d is not supported", path, pre[6],
                         pre[7]);
    }
    char *text = malloc(hlen + 1);
    if (!text)
        return ds_errorf(err, "%s: out of memory reading the .npy header", path);
    int rc = 0;
    if (fread(text, 1, hlen, f) != hlen)
        rc = ds_errorf(err, "%s: .npy header cut short", path);
    else if (parse_dict(text, hlen, m))
        rc = ds_errorf(err, "%s: malformed .npy header", path);
    free(text);
    return rc;
}

int ds_npy_read(const char *path, ds_tensor *t, ds_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ds_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    npy_meta m;
    ds_dtype dtype = DS_F32;
    int swap = 0, rc = read_header(f, path, &m, err);
    if (!rc && parse_descr(m.descr, &dtype, &swap))
        rc = ds_errorf(err, "%s: dtype '%s' is not supported (float32 '<f4' or uint8 '|u1')", path,
                       m.descr);
    else if (!rc && m.fortran)
        rc = ds_errorf(err, "%s: Fortran-order arrays are not supported", path);
    else if (!rc && m.shape.ndim == 0)
        rc = ds_errorf(err, "%s: a 0-D array is not a tensor", path);
    int64_t numel = 1;
    for (int i = 0; !rc && i < m.shape.ndim; i++) {
        int64_t d = m.shape.dims[i]; /* each <= NPY_MAX_NUMEL: no overflow below */
        if (d && numel > NPY_MAX_NUMEL / d)
            rc = ds_errorf(err, "%s: array too large (over %" PRId64 " elements)", path,
                           NPY_MAX_NUMEL);
        else
            numel *= d;
    }
    if (!rc && ds_tensor_reserve(t, &m.shape, dtype, err))
        rc = ds_error_prefix(err, "%s", path);
    if (!rc) {
        size_t want = ds_tensor_bytes(t);
        size_t got = want ? fread(t->data, 1, want, f) : 0;
        char extra;
        if (got != want)
            rc = ds_errorf(err, "%s: data cut short (%zu of %zu bytes)", path, got, want);
        else if (fread(&extra, 1, 1, f) == 1)
            rc = ds_errorf(err, "%s: data longer than the shape says", path);
        else if (ferror(f))
            rc = ds_errorf(err, "%s: read error", path);
        else if (swap)
            swap32(ds_tensor_f32(t), (size_t)numel);
    }
    fclose(f);
    return rc;
}
