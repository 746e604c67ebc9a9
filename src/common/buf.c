#include "buf.h"

#include <stdlib.h>
#include <string.h>

int ds_buf_reserve(ds_buf *b, size_t cap, ds_error *err)
{
    if (cap <= b->cap)
        return 0;
    size_t want = b->cap ? b->cap : 256;
    while (want < cap)
        want = want > SIZE_MAX / 2 ? cap : want * 2;
    uint8_t *p = realloc(b->data, want);
    if (!p)
        return ds_errorf(err, "out of memory growing a buffer to %zu bytes", want);
    b->data = p;
    b->cap = want;
    return 0;
}

int ds_buf_append(ds_buf *b, const void *p, size_t n, ds_error *err)
{
    if (n > SIZE_MAX - b->len)
        return ds_errorf(err, "buffer length overflow");
    if (ds_buf_reserve(b, b->len + n, err))
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void ds_buf_free(ds_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

int ds_grow(void **p, size_t *cap, size_t want, size_t elem, ds_error *err)
{
    if (want <= *cap)
        return 0;
    size_t nc = *cap ? (*cap > SIZE_MAX / 2 ? SIZE_MAX : *cap * 2) : 64;
    if (nc < want || nc > SIZE_MAX / elem)
        nc = want;
    if (nc > SIZE_MAX / elem)
        return ds_errorf(err, "array of %zu elements of %zu bytes does not fit in memory", want, elem);
    void *q = realloc(*p, nc * elem);
    if (!q)
        return ds_errorf(err, "out of memory growing an array to %zu bytes", nc * elem);
    *p = q;
    *cap = nc;
    return 0;
}
