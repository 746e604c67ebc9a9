/* xnn_eltwise.h - the XNNPACK backend's element-wise ops (issue 15): Clip,
 * Sigmoid, HardSwish, LeakyRelu as XNNPACK's nc operators over the flat
 * data; Add, Mul, Sub, Div as its nd operators with broadcasting on the
 * stored layout (rank-4 values NHWC, see backend_xnn.h); PRelu with a scalar
 * or per-channel slope as its prelu_nc; HardSigmoid, other PRelu slopes and
 * what XNNPACK refuses in plain C (ops_eltwise.h) on the same layout. */
#ifndef DS_ENGINE_XNN_ELTWISE_H
#define DS_ENGINE_XNN_ELTWISE_H

#include <pthreadpool.h>
#include <xnnpack.h>

#include "common/error.h"
#include "common/tensor.h"
#include "model/model.h"

/* Runs element-wise layer l on stored-layout inputs into out (reserved with
 * its out_shape).  *op is the layer's operator: created on the first run,
 * kept and deleted by the caller. */
int ds_xnn_eltwise_run(pthreadpool_t pool, const ds_layer *l, xnn_operator_t *op,
                       const ds_tensor *const *in, ds_tensor *out, ds_error *err);

#endif
