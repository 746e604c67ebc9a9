/* winograd.h - Winograd convolution F(m x m, r x r) on NHWC tensors.
 *
 * For stride-1, undilated, ungrouped r x r convolutions (r = 3 or 5) with
 * enough channels, Winograd's minimal filtering cuts the multiplications per
 * output by r^2 m^2 / (m + r - 1)^2 (2.25x for F(2,3), 2.8x for F(2,5)).
 * The n x n = (m+r-1)^2 element-wise products become n^2 matrix products
 * run by XNNPACK fully-connected operators over blocks of tiles; the small
 * input and output transforms run in C, vectorised over channels.  The
 * transform matrices come from the Toom-Cook construction on the points
 * 0, 1, -1, 2, -2 plus infinity.  Errors stay near float rounding for m = 2
 * (tested against the reference kernel). */
#ifndef DS_ENGINE_WINOGRAD_H
#define DS_ENGINE_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>

#include <pthreadpool.h>

#include "common/error.h"
#include "model/model.h"

typedef struct ds_wino ds_wino;

/* Scratch shared by every Winograd layer of one backend (grown, reused). */
typedef struct ds_wino_scratch {
    float *v, *m;
    size_t v_cap, m_cap; /* floats */
} ds_wino_scratch;

/* Whether layer l (conv) is run with Winograd. */
int ds_wino_suitable(const ds_layer *l);
/* Transforms and packs the weights; NULL with a message on failure. */
ds_wino *ds_wino_new(const ds_layer *l, ds_error *err);
/* x: N x H x W x C, y: N x OH x OW x O (NHWC). */
int ds_wino_run(ds_wino *w, const float *x, int64_t n, int64_t h, int64_t wd, float *y,
                int64_t oh, int64_t ow, int relu, pthreadpool_t pool, ds_wino_scratch *s,
                ds_error *err);
void ds_wino_free(ds_wino *w);
void ds_wino_scratch_free(ds_wino_scratch *s);

#endif
