/* ops_shape.h - the structural kernels (Reshape, Transpose, Slice, Pad), shared by both
 * backends: plain strided copies on whatever layout a backend stores (the
 * reference: row-major NCHW; XNNPACK: NHWC for 4-D tensors, so that a
 * reshape there is not a memcpy). */
#ifndef DS_ENGINE_OPS_SHAPE_H
#define DS_ENGINE_OPS_SHAPE_H

#include <stdint.h>

#include "common/tensor.h"
#include "model/model.h"

/* Element strides, per logical axis, of a tensor of shape s stored
 * row-major, or NHWC when nhwc and s is 4-D. */
void ds_layout_strides(const ds_shape *s, int nhwc, int64_t *st);
/* Runs a Reshape, Transpose, Slice or Pad layer l: x of shape xs stored with strides
 * xst into y (l->out_shape) stored with strides yst. */
void ds_shape_op_run(const ds_layer *l, const float *x, const ds_shape *xs, const int64_t *xst, float *y,
                     const int64_t *yst);

#endif
