/* tensor.h - a dense tensor with a reusable buffer.
 *
 * Shapes are NCHW (ONNX/PyTorch order) at every boundary; ndim is 1..5.
 * The buffer is grown, never shrunk, by ds_tensor_reserve so that a tensor
 * reused frame after frame allocates (and page-faults) only once. */
#ifndef DS_TENSOR_H
#define DS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define DS_MAX_DIMS 5 /* ShuffleNet's channel shuffle is 5-D */

typedef enum ds_dtype {
    DS_F32 = 1,
    DS_U8 = 2,
} ds_dtype;

typedef struct ds_shape {
    int ndim;
    int64_t dims[DS_MAX_DIMS];
} ds_shape;

typedef struct ds_tensor {
    ds_shape shape;
    ds_dtype dtype;
    void *data;
    size_t cap; /* bytes allocated at data */
} ds_tensor;

ds_shape ds_shape_make(int ndim, const int64_t *dims);
ds_shape ds_shape_nchw(int64_t n, int64_t c, int64_t h, int64_t w);
int64_t ds_shape_numel(const ds_shape *s);
int ds_shape_equal(const ds_shape *a, const ds_shape *b);
/* "1x3x480x720" into buf; returns buf. */
char *ds_shape_str(const ds_shape *s, char *buf, size_t len);
/* Parses "1x3x480x720"; -1 with a message on bad syntax or range. */
int ds_shape_parse(const char *str, ds_shape *out, ds_error *err);

size_t ds_dtype_size(ds_dtype t);
size_t ds_tensor_bytes(const ds_tensor *t);

/* Sets shape/dtype and makes data hold at least that many bytes, reusing the
 * existing buffer when it is large enough. Contents are unspecified. */
int ds_tensor_reserve(ds_tensor *t, const ds_shape *shape, ds_dtype dtype, ds_error *err);
/* Deep copy of src into dst (dst's buffer reused when large enough). */
int ds_tensor_copy(ds_tensor *dst, const ds_tensor *src, ds_error *err);
/* u8 -> f32 of the same shape, value/255.0f (torchvision's ToTensor of a
 * camera frame). */
int ds_tensor_u8_to_f32(const ds_tensor *src, ds_tensor *dst, ds_error *err);
void ds_tensor_free(ds_tensor *t);

static inline float *ds_tensor_f32(const ds_tensor *t) { return (float *)t->data; }
static inline uint8_t *ds_tensor_u8(const ds_tensor *t) { return (uint8_t *)t->data; }

#endif
