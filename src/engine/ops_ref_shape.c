/* ops_ref_shape.c - Reshape and Transpose as strided copies (ops_shape.h). */
#include "ops_shape.h"

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

void ds_shape_op_run(const ds_layer *l, const float *x, const ds_shape *xs, const int64_t *xst, float *y,
                     const int64_t *yst)
{
    const ds_shape *ys = &l->out_shape;
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
