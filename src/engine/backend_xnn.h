/* backend_xnn.h - the fast path: XNNPACK operators on NHWC tensors.
 *
 * Internal layout: a rank-4 tensor keeps its logical NCHW shape in
 * ds_tensor.shape but its data is stored NHWC; tensors of other ranks are
 * stored as their shape says.  The executor converts at the job boundary
 * only.  Operators are created on a layer's first run (packing its weights)
 * and reused; pools whose padding depends on the input size are re-created
 * when the input size changes.  Ops XNNPACK lacks (LRN, Softmax, Concat,
 * BatchNorm, pools with count_include_pad over padding) run in plain C on the
 * NHWC data.  Stride-1 3x3 and 5x5 convolutions with >= 16 channels run as
 * Winograd F(2x2, rxr) (winograd.h); environment DS_WINOGRAD=0 turns that
 * off (for comparisons).  One ds_xnn per thread. */
#ifndef DS_ENGINE_BACKEND_XNN_H
#define DS_ENGINE_BACKEND_XNN_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/tensor.h"
#include "model/model.h"

typedef struct ds_xnn ds_xnn;

/* threads <= 1 runs on the caller's thread (no pool).  Checks m's layers
 * once (ds_ops_check_model); the runs then trust their shapes. */
ds_xnn *ds_xnn_new(const ds_model *m, int threads, ds_error *err);
/* Runs layer id on internal-layout inputs (its producers' values) into out
 * (reserved here with the layer's out_shape).
 * fuse_relu (conv only) clamps the output at 0: the conv's Relu consumer then
 * needs no run of its own. */
int ds_xnn_run(ds_xnn *x, int id, int fuse_relu, int n_in, const ds_tensor *const *in,
               ds_tensor *out, ds_error *err);
void ds_xnn_free(ds_xnn *x);

/* Convs whose XNNPACK indirection buffer would exceed this many bytes (and
 * whose weights are small) run in bands of output rows.  Process-wide; for
 * tests, which set it tiny to exercise the banded path. */
void ds_xnn_set_band_limit(size_t bytes);

/* Layout conversion of n images of c channels x hw pixels. */
void ds_nchw_to_nhwc(const float *src, float *dst, int64_t n, int64_t c, int64_t hw);
void ds_nhwc_to_nchw(const float *src, float *dst, int64_t n, int64_t c, int64_t hw);

#endif
