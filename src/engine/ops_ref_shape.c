/* ops_ref_shape.c - Reshape, Transpose, Slice, Pad, Resize, ReduceMean as loops on
 * a stored layout (ops_shape.h). */
#include "ops_shape.h"

#include <math.h>
#include <stdlib.h>

void ds_layout_strides(const ds_shape *s, int nhwc, int64_t *st)
{
    if (nhwc && s->ndim == 4) {
        st[1] = 1;
        st[3] = s->dims[1];
        st[2] = s->dims[3] * s->dims[1];
        st[0] = s->dims[2] * st[2];
        return;
    }
    int64_t k = 1;
    for (int i = s->ndim - 1; i >= 0; i--) {
        st[i] = k;
        k *= s->dims[i];
    }
}

/* y[j] = x[j] over the multi-index j of dims (rank r), each side with its
 * own strides; the last axis is the inner loop. */
static void copy_strided(const float *x, const int64_t *xst, float *y, const int64_t *yst, const int64_t *dims, int r)
{
    int64_t j[DS_MAX_DIMS] = {0}, outer = 1;
    for (int i = 0; i + 1 < r; i++)
        outer *= dims[i];
    int64_t n = dims[r - 1], xs = xst[r - 1], ys = yst[r - 1];
    for (int64_t o = 0; o < outer; o++) {
        int64_t xo = 0, yo = 0;
        for (int i = 0; i + 1 < r; i++) {
            xo += j[i] * xst[i];
            yo += j[i] * yst[i];
        }
        for (int64_t k = 0; k < n; k++)
            y[yo + k * ys] = x[xo + k * xs];
        for (int i = r - 2; i >= 0 && ++j[i] == dims[i]; i--)
            j[i] = 0;
    }
}

/* Slice and Pad: y[j] = x[off + j * step] per axis, fill outside x. */
static void window_copy(const ds_layer *l, const float *x, const ds_shape *xs, const int64_t *xst, float *y,
                        const int64_t *yst)
{
    const ds_shape *ys = &l->out_shape;
    int r = ys->ndim;
    int64_t j[DS_MAX_DIMS] = {0}, numel = ds_shape_numel(ys);
    for (int64_t e = 0; e < numel; e++) {
        int64_t xo = 0, yo = 0;
        int inside = 1;
        for (int a = 0; a < r; a++) {
            int64_t i = l->win_off[a] + j[a] * l->win_step[a];
            inside &= i >= 0 && i < xs->dims[a];
            xo += i * xst[a];
            yo += j[a] * yst[a];
        }
        y[yo] = inside ? x[xo] : l->pad_value;
        for (int a = r - 1; a >= 0 && ++j[a] == ys->dims[a]; a--)
            j[a] = 0;
    }
}

/* ONNX Resize's source coordinate of output index o on one axis. */
static double source_coord(const ds_layer *l, int64_t o, int64_t in, int64_t out, double scale)
{
    switch (l->resize_coord) {
    case 0: return ((double)o + 0.5) / scale - 0.5;
    case 1: return out > 1 ? ((double)o + 0.5) / scale - 0.5 : 0.0;
    case 2: { /* ONNX's reference takes the unrounded in * scale as the resized length */
        double len = (double)in * scale;
        return out == 1 || len <= 1 ? 0.0 : (double)o * (double)(in - 1) / (len - 1);
    }
    default: return (double)o / scale;
    }
}

static int64_t nearest_index(const ds_layer *l, double x, int64_t in)
{
    double f = floor(x);
    int64_t i;
    switch (l->resize_nearest) {
    case 0: i = (int64_t)(x - f == 0.5 ? f : floor(x + 0.5)); break;
    case 1: i = (int64_t)(x - f == 0.5 ? f + 1 : floor(x + 0.5)); break;
    case 2: i = (int64_t)f; break;
    default: i = (int64_t)ceil(x); break;
    }
    return i < 0 ? 0 : i >= in ? in - 1 : i;
}

/* Per output index of one axis: the two source indices and the weight of
 * the second (nearest: the same index twice, weight 0). */
static void axis_taps(const ds_layer *l, int64_t in, int64_t out, double scale, int64_t *i0, int64_t *i1, float *w)
{
    for (int64_t o = 0; o < out; o++) {
        double x = source_coord(l, o, in, out, scale);
        if (l->resize_mode == 0) {
            i0[o] = i1[o] = nearest_index(l, x, in);
            w[o] = 0;
            continue;
        }
        x = x < 0 ? 0 : x > (double)(in - 1) ? (double)(in - 1) : x;
        i0[o] = (int64_t)floor(x);
        i1[o] = i0[o] + 1 < in ? i0[o] + 1 : i0[o];
        w[o] = (float)(x - (double)i0[o]);
    }
}

/* Resize of H and W: nearest or (bi)linear, ONNX coordinate modes. */
static void resize_copy(const ds_layer *l, const float *x, const ds_shape *xs, const int64_t *xst, float *y,
                        const int64_t *yst)
{
    const ds_shape *ys = &l->out_shape;
    int64_t H = xs->dims[2], W = xs->dims[3], OH = ys->dims[2], OW = ys->dims[3];
    int64_t *ix = malloc((size_t)(2 * OH + 2 * OW) * sizeof *ix);
    float *wt = malloc((size_t)(OH + OW) * sizeof *wt);
    if (!ix || !wt) { /* a few KB; the executor checks nothing here */
        free(ix);
        free(wt);
        return;
    }
    int sized = l->win_sv[0] != 0;
    axis_taps(l, H, OH, sized ? (double)OH / (double)H : l->resize_scale[0], ix, ix + OH, wt);
    axis_taps(l, W, OW, sized ? (double)OW / (double)W : l->resize_scale[1], ix + 2 * OH, ix + 2 * OH + OW, wt + OH);
    const int64_t *h0 = ix, *h1 = ix + OH, *w0 = ix + 2 * OH, *w1 = ix + 2 * OH + OW;
    for (int64_t n = 0; n < ys->dims[0]; n++)
        for (int64_t c = 0; c < ys->dims[1]; c++) {
            const float *xp = x + n * xst[0] + c * xst[1];
            float *yp = y + n * yst[0] + c * yst[1];
            for (int64_t oh = 0; oh < OH; oh++) {
                const float *r0 = xp + h0[oh] * xst[2], *r1 = xp + h1[oh] * xst[2];
                float a = wt[oh];
                for (int64_t ow = 0; ow < OW; ow++) {
                    float b = wt[OH + ow];
                    float top = r0[w0[ow] * xst[3]] + b * (r0[w1[ow] * xst[3]] - r0[w0[ow] * xst[3]]);
                    float bot = r1[w0[ow] * xst[3]] + b * (r1[w1[ow] * xst[3]] - r1[w0[ow] * xst[3]]);
                    yp[oh * yst[2] + ow * yst[3]] = top + a * (bot - top);
                }
            }
        }
    free(ix);
    free(wt);
}

/* ReduceMean: every input element added into its output element (the
 * output strides of reduced axes are 0), then divided by the count. */
static void reduce_mean(const ds_layer *l, const float *x, const ds_shape *xs, const int64_t *xst, float *y,
                        const int64_t *yst)
{
    const ds_shape *ys = &l->out_shape;
    int64_t ys_of_x[DS_MAX_DIMS], count = 1;
    for (int d = 0, k = 0; d < xs->ndim; d++) {
        int reduced = l->n_axes == 0;
        for (int i = 0; i < l->n_axes; i++)
            reduced |= l->axes[i] == d;
        ys_of_x[d] = reduced ? 0 : yst[k];
        if (reduced)
            count *= xs->dims[d];
        k += !reduced || l->keepdims;
    }
    int64_t numel = ds_shape_numel(ys), total = ds_shape_numel(xs), j[DS_MAX_DIMS] = {0};
    double *acc = calloc((size_t)numel, sizeof *acc);
    if (!acc) /* the executor gives no error path here; a few KB */
        return;
    /* acc is indexed by the output's stored offset: those are 0..numel-1. */
    for (int64_t e = 0; e < total; e++) {
        int64_t xo = 0, yo = 0;
        for (int d = 0; d < xs->ndim; d++) {
            xo += j[d] * xst[d];
            yo += j[d] * ys_of_x[d];
        }
        acc[yo] += x[xo];
        for (int d = xs->ndim - 1; d >= 0 && ++j[d] == xs->dims[d]; d--)
            j[d] = 0;
    }
    for (int64_t i = 0; i < numel; i++)
        y[i] = (float)(acc[i] / (double)count);
    free(acc);
}

void ds_shape_op_run(const ds_layer *l, const float *x, const ds_shape *xs, const int64_t *xst, float *y,
                     const int64_t *yst)
{
    const ds_shape *ys = &l->out_shape;
    if (l->op == DS_OP_REDUCEMEAN) {
        reduce_mean(l, x, xs, xst, y, yst);
        return;
    }
    if (l->op == DS_OP_RESIZE) {
        resize_copy(l, x, xs, xst, y, yst);
        return;
    }
    if (l->op == DS_OP_SLICE || l->op == DS_OP_PAD) {
        window_copy(l, x, xs, xst, y, yst);
        return;
    }
    if (l->op == DS_OP_TRANSPOSE) {
        int64_t xp[DS_MAX_DIMS];
        for (int k = 0; k < ys->ndim; k++)
            xp[k] = xst[l->axes[k]]; /* output axis k walks input axis perm[k] */
        copy_strided(x, xp, y, yst, ys->dims, ys->ndim);
        return;
    }
    /* Reshape: the same row-major order of elements on both sides.  Walk
     * the output; the input multi-index advances as an odometer. */
    int64_t i[DS_MAX_DIMS] = {0}, xo = 0, numel = ds_shape_numel(ys);
    int64_t j[DS_MAX_DIMS] = {0}, yo = 0;
    int rx = xs->ndim, ry = ys->ndim;
    for (int64_t e = 0; e < numel; e++) {
        y[yo] = x[xo];
        for (int d = rx - 1; d >= 0; d--) {
            xo += xst[d];
            if (++i[d] < xs->dims[d])
                break;
            xo -= i[d] * xst[d];
            i[d] = 0;
        }
        for (int d = ry - 1; d >= 0; d--) {
            yo += yst[d];
            if (++j[d] < ys->dims[d])
                break;
            yo -= j[d] * yst[d];
            j[d] = 0;
        }
    }
}
