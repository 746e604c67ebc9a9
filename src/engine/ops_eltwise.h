/* ops_eltwise.h - kernels of the element-wise ops (issue 15), shared by the
 * reference backend (NCHW) and the XNNPACK backend's plain-C fallbacks
 * (stored layout).
 *
 * Unary ops (Clip, Sigmoid, HardSigmoid, HardSwish, LeakyRelu) do not care
 * about layout.  Binary ops (Add, Mul, Sub, Div, PRelu) broadcast by ONNX
 * rules over dims given in one consistent physical order: a dim of 1 in an
 * operand is repeated along the output's dim. */
#ifndef DS_ENGINE_OPS_ELTWISE_H
#define DS_ENGINE_OPS_ELTWISE_H

#include <stdint.h>

#include "common/tensor.h"
#include "model/model.h"

/* y[i] = f(x[i]) for the activation of layer l, exact ONNX formulas. */
void ds_unary_eltwise(const ds_layer *l, const float *x, float *y, int64_t n);

/* y[i] = min(max(y[i], lo), hi): a conv's fused Clip. */
void ds_clamp(float *y, int64_t n, float lo, float hi);

/* s's dims right-aligned into 4 (leading 1s). */
void ds_bcast_dims4(const ds_shape *s, int64_t *out);

/* y = a OP b (Add, Mul, Sub, Div; PRelu: a < 0 ? a * b : a), every operand
 * described by 4 dims (ad and bd either equal to yd or 1 per dim). */
void ds_binary_bcast(ds_op op, const float *a, const int64_t *ad, const float *b, const int64_t *bd,
                     float *y, const int64_t *yd);

/* The reference kernel (NCHW) of an element-wise layer; out is reserved. */
void ds_ref_eltwise(const ds_layer *l, const ds_tensor *const *in, ds_tensor *out);

#endif
