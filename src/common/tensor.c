#include "tensor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 4 Gi elements: far above any frame or feature map we run, and small enough
 * that byte counts cannot overflow size_t on 32-bit ARM. */
#define DS_MAX_NUMEL ((int64_t)1 << 32)

ds_shape ds_shape_make(int ndim, const int64_t *dims)
{
    ds_shape s = {0};
    s.ndim = ndim;
    for (int i = 0; i < ndim && i < DS_MAX_DIMS; i++)
        s.dims[i] = dims[i];
    return s;
}

ds_shape ds_shape_nchw(int64_t n, int64_t c, int64_t h, int64_t w)
{
    ds_shape s = {4, {n, c, h, w}};
    return s;
}

int64_t ds_shape_numel(const ds_shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->dims[i];
    return n;
}

int ds_shape_equal(const ds_shape *a, const ds_shape *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i])
            return 0;
    return 1;
}

char *ds_shape_str(const ds_shape *s, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->ndim && used < len; i++) {
        int n = snprintf(buf + used, len - used, "%s%" PRId64, i ? "x" : "", s->dims[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}

int ds_shape_parse(const char *str, ds_shape *out, ds_error *err)
{
    ds_shape s = {0};
    const char *p = str;
    int64_t numel = 1;
    while (*p) {
        if (s.ndim == DS_MAX_DIMS)
            return ds_errorf(err, "shape \"%s\": more than %d dimensions", str, DS_MAX_DIMS);
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v <= 0 || v > DS_MAX_NUMEL)
            return ds_errorf(err, "shape \"%s\": expected positive integers joined by 'x'", str);
        numel *= v;
        if (numel > DS_MAX_NUMEL)
            return ds_errorf(err, "shape \"%s\": too many elements", str);
        s.dims[s.ndim++] = v;
        p = end;
        if (*p == 'x' && p[1])
            p++;
        else if (*p)
            return ds_errorf(err, "shape \"%s\": expected positive integers joined by 'x'", str);
    }
    if (s.ndim == 0)
        return ds_errorf(err, "shape is empty");
    *out = s;
    return 0;
}

size_t ds_dtype_size(ds_dtype t)
{
    return t == DS_U8 ? 1 : 4;
}

size_t ds_tensor_bytes(const ds_tensor *t)
{
    return (size_t)ds_shape_numel(&t->shape) * ds_dtype_size(t->dtype);
}

int ds_tensor_reserve(ds_tensor *t, const ds_shape *shape, ds_dtype dtype, ds_error *err)
{
    int64_t numel = ds_shape_numel(shape);
    if (shape->ndim < 0 || shape->ndim > DS_MAX_DIMS || numel < 0 || numel > DS_MAX_NUMEL)
        return ds_errorf(err, "tensor of %" PRId64 " elements is out of range", numel);
    size_t bytes = (size_t)numel * ds_dtype_size(dtype);
    if (bytes > t->cap) {
        void *p = realloc(t->data, bytes ? bytes : 1);
        if (!p)
            return ds_errorf(err, "out of memory allocating a tensor of %zu bytes", bytes);
        t->data = p;
        t->cap = bytes;
    }
    t->shape = *shape;
    t->dtype = dtype;
    return 0;
}

int ds_tensor_copy(ds_tensor *dst, const ds_tensor *src, ds_error *err)
{
    if (ds_tensor_reserve(dst, &src->shape, src->dtype, err))
        return -1;
    size_t n = ds_tensor_bytes(src);
    if (n)
        memcpy(dst->data, src->data, n);
    return 0;
}

int ds_tensor_u8_to_f32(const ds_tensor *src, ds_tensor *dst, ds_error *err)
{
    if (src->dtype != DS_U8)
        return ds_errorf(err, "expected a u8 tensor");
    if (ds_tensor_reserve(dst, &src->shape, DS_F32, err))
        return -1;
    const uint8_t *in = src->data;
    float *out = dst->data;
    int64_t n = ds_shape_numel(&src->shape);
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)in[i] / 255.0f;
    return 0;
}

void ds_tensor_free(ds_tensor *t)
{
    free(t->data);
    memset(t, 0, sizeof *t);
}
