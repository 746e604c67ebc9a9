/* ops.h - the kernels of one layer: the plain-C reference, and the checks
 * both backends share.
 *
 * Shapes are the model's: a layer's out_shape and its attributes come from
 * its op's shape rule (model/op_table.c, run by ds_model_set_input) and are
 * checked once per backend by ds_ops_check_model; the kernels then trust
 * them.  The reference kernels run on NCHW float32 tensors with
 * straightforward loops and exact ONNX semantics; they are the yardstick the
 * fast (XNNPACK) path is tested against.
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

/* Most inputs a layer may have (the kernels' input arrays). */
#define DS_OPS_MAX_INPUTS 64

/* Every layer of m is one the kernels may trust (ds_layer_check) and has at
 * most DS_OPS_MAX_INPUTS inputs.  Run once when a backend is created. */
int ds_ops_check_model(const ds_model *m, ds_error *err);

/* The inputs handed to layer id are its n_inputs producers' values: float32
 * tensors of their out_shapes. */
int ds_ops_check_inputs(const ds_model *m, int id, int n_in, const ds_tensor *const *in,
                        ds_error *err);

/* Runs layer id of m (checked) on NCHW inputs; out is reserved here with the
 * layer's out_shape (its buffer reused). */
int ds_ref_run(const ds_model *m, int id, int n_in, const ds_tensor *const *in, ds_tensor *out,
               ds_error *err);

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
