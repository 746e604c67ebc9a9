/* ops.h - the kernels of one layer: shape rules and the plain-C reference.
 *
 * The reference kernels run on NCHW float32 tensors with straightforward
 * loops and exact ONNX semantics; they are the yardstick the fast (XNNPACK)
 * path is tested against.  Element-wise ops (Relu, Add, BatchNorm, Softmax,
 * Concat, Flatten) accept any rank 1..4; Conv, pools, LRN need rank 4
 * (LRN: rank >= 3, channels on axis 1).
 *
 * The strided helpers below work on a tensor seen as outer x n x inner, so the
 * same code serves NCHW (channels: inner = H*W) and NHWC (inner = 1). */
#ifndef DS_ENGINE_OPS_H
#define DS_ENGINE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/tensor.h"
#include "model/model.h"

/* Output shape of layer l for the given input shapes (NCHW, logical order).
 * Checks the input count, ranks, channel counts against the weights, window
 * sizes and attribute ranges; -1 with a message naming the layer otherwise. */
int ds_op_out_shape(const ds_layer *l, int n_in, const ds_shape *in, ds_shape *out,
                    ds_error *err);

/* Runs layer l on NCHW inputs; out is reserved here (its buffer reused). */
int ds_ref_run(const ds_layer *l, int n_in, const ds_tensor *const *in, ds_tensor *out,
               ds_error *err);

/* Pool window geometry of one spatial axis: output size for input size n with
 * pads pb/pe, kernel k, stride s, dilation d (PyTorch/ONNX rule: with
 * ceil_mode the last window must start inside the input or the leading pad).
 * Returns -1 if the window does not fit. */
int64_t ds_pool_out_size(int64_t n, int pb, int pe, int k, int s, int d, int ceil_mode);

/* Strided layout of a rank-4 tensor for the generic pool kernel. */
typedef struct ds_strides4 {
    int64_t n, c, h, w;
} ds_strides4;

/* Max or average pooling of x (logical dims N,C,H,W at strides sx) into y
 * (dims N,C,OH,OW at strides sy), exact ONNX semantics (count_include_pad
 * counts pads, never the ceil_mode overhang, as PyTorch does). */
void ds_pool_generic(const ds_layer *l, const float *x, const int64_t *xdims, ds_strides4 sx,
                     float *y, const int64_t *ydims, ds_strides4 sy);

/* y[o][c][i] = x[o][c][i] * scale[c] + shift[c]. */
void ds_scale_shift(const float *x, float *y, int64_t outer, int64_t c, int64_t inner,
                    const float *scale, const float *shift);
/* Softmax over the middle axis of outer x n x inner. */
void ds_softmax_strided(const float *x, float *y, int64_t outer, int64_t n, int64_t inner);
/* LRN across the middle (channel) axis of outer x c x inner. */
void ds_lrn_strided(const float *x, float *y, int64_t outer, int64_t c, int64_t inner,
                    int size, float alpha, float beta, float bias);
/* Concatenation along the middle axis: input i is outer x n[i] x inner. */
void ds_concat_strided(int n_in, const float *const *x, const int64_t *n, float *y,
                       int64_t outer, int64_t inner);

#endif
