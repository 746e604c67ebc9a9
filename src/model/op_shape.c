/* op_shape.c - shape rules of the structural ops (op table rows Reshape,
 * Transpose, Slice, Pad, Resize, ReduceMean): ONNX semantics. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/op_table.h"
#include "model/shape_prog.h"

#define FAIL(...) ds_layer_shape_err(err, m, l, in[0], __VA_ARGS__)

/* Axes of a rank-r tensor made non-negative, each once. */
static int norm_axes(ds_layer *l, int r)
{
    unsigned seen = 0;
    for (int i = 0; i < l->n_axes; i++) {
        int a = l->axes[i] < 0 ? l->axes[i] + r : l->axes[i];
        if (a < 0 || a >= r || (seen >> a & 1))
            return -1;
        seen |= 1u << a;
        l->axes[i] = a;
    }
    return 0;
}

static int reshape_target(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0];
    const ds_sval *t = ds_sprog_get(m, l->shape_sv - 1);
    if (!t)
        return FAIL("no target shape");
    if (t->rank != 1 || t->n < 1 || t->n > DS_MAX_DIMS)
        return FAIL("the target shape has %d elements; 1..%d supported", t->rank ? t->n : 0, DS_MAX_DIMS);
    ds_shape s = {.ndim = t->n};
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < t->n; i++) {
        int64_t d = t->v[i];
        if (d == 0 && !l->allowzero) {
            if (i >= x->ndim)
                return FAIL("target dim %d is 0 (copy) but the input has rank %d", i, x->ndim);
            d = x->dims[i];
        }
        if (d == -1) {
            if (infer >= 0)
                return FAIL("the target shape has more than one -1");
            infer = i;
            continue;
        }
        if (d < 1)
            return FAIL("target dim %d is %" PRId64 " (empty or negative shapes are not supported)", i, d);
        known *= d;
        if (known > ds_shape_numel(x))
            break;
        s.dims[i] = d;
    }
    int64_t numel = ds_shape_numel(x);
    if (infer >= 0 && known <= numel && numel % known == 0)
        s.dims[infer] = numel / known;
    if (known > numel || (infer >= 0 ? numel % known : known != numel)) {
        char b[64] = "";
        for (int i = 0; i < t->n; i++)
            snprintf(b + strlen(b), sizeof b - strlen(b), "%s%" PRId64, i ? "," : "", t->v[i]);
        return FAIL("cannot reshape %" PRId64 " elements to [%s]", numel, b);
    }
    l->out_shape = s;
    return 0;
}

int ds_shape_reshape(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0];
    if (l->reshape_mode == 0)
        return reshape_target(m, l, in, err);
    if (l->n_axes < 0 || l->n_axes > DS_MAX_DIMS)
        return FAIL("%d axes", l->n_axes);
    ds_shape s = {0};
    if (l->reshape_mode == 1) { /* squeeze */
        if (norm_axes(l, x->ndim))
            return FAIL("axes out of range or repeated for rank %d", x->ndim);
        for (int d = 0; d < x->ndim; d++) {
            int listed = l->n_axes == 0 && x->dims[d] == 1;
            for (int i = 0; i < l->n_axes; i++)
                listed |= l->axes[i] == d;
            if (listed && x->dims[d] != 1)
                return FAIL("axis %d has %" PRId64 " elements, 1 expected to squeeze it", d, x->dims[d]);
            if (!listed)
                s.dims[s.ndim++] = x->dims[d];
        }
        if (s.ndim == 0)
            return FAIL("squeezing to a scalar is not supported");
    } else if (l->reshape_mode == 2) { /* unsqueeze */
        int r = x->ndim + l->n_axes;
        if (r > DS_MAX_DIMS || l->n_axes < 1 || norm_axes(l, r))
            return FAIL("%d axes out of range or repeated for output rank %d (at most %d)", l->n_axes, r,
                        DS_MAX_DIMS);
        s.ndim = r;
        for (int d = 0, k = 0; d < r; d++) {
            int listed = 0;
            for (int i = 0; i < l->n_axes; i++)
                listed |= l->axes[i] == d;
            s.dims[d] = listed ? 1 : x->dims[k++];
        }
    } else {
        return FAIL("reshape mode %d", l->reshape_mode);
    }
    l->out_shape = s;
    return 0;
}

int ds_shape_transpose(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0];
    if (l->n_axes == 0) { /* default: reversed */
        l->n_axes = x->ndim;
        for (int i = 0; i < x->ndim; i++)
            l->axes[i] = x->ndim - 1 - i;
    }
    if (l->n_axes != x->ndim || norm_axes(l, x->ndim))
        return FAIL("perm of %d axes is not a permutation of rank %d", l->n_axes, x->ndim);
    ds_shape s = {.ndim = x->ndim};
    for (int i = 0; i < x->ndim; i++)
        s.dims[i] = x->dims[l->axes[i]];
    l->out_shape = s;
    return 0;
}

/* Shape program value win_sv[k] - 1 as a vector of want elements (want < 0:
 * any); NULL when absent. */
static const ds_sval *win_arg(const ds_model *m, const ds_layer *l, int k)
{
    return l->win_sv[k] ? ds_sprog_get(m, l->win_sv[k] - 1) : NULL;
}

/* ONNX Slice on one axis of dim d: start, end made non-negative and clamped
 * (to 0..d for a positive step, to -1..d-1 for a negative one). */
static int64_t slice_len(int64_t d, int64_t start, int64_t end, int64_t step, int64_t *off)
{
    if (start < 0)
        start += d;
    if (end < 0)
        end += d;
    int64_t lo = step > 0 ? 0 : -1, hi = step > 0 ? d : d - 1;
    start = start < 0 ? 0 : start > hi ? hi : start;
    end = end < lo ? lo : end > hi ? hi : end;
    *off = start;
    int64_t n = step > 0 ? (end - start + step - 1) / step : (start - end + (-step) - 1) / (-step);
    return n > 0 ? n : 0;
}

int ds_shape_window(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0];
    int r = x->ndim;
    ds_shape s = *x;
    for (int a = 0; a < r; a++) {
        l->win_off[a] = 0;
        l->win_step[a] = 1;
    }
    if (l->op == DS_OP_PAD) {
        const ds_sval *p = win_arg(m, l, 0);
        if (!p || p->rank != 1 || p->n != 2 * r)
            return FAIL("pads hold %d values; 2 x rank %d expected", p ? p->n : 0, r);
        for (int a = 0; a < r; a++) {
            int64_t b = p->v[a], e = p->v[a + r];
            if (b < -x->dims[a] || e < -x->dims[a] || b > (1 << 20) || e > (1 << 20) || x->dims[a] + b + e < 1)
                return FAIL("pads %" PRId64 ", %" PRId64 " on axis %d leave no elements or are out of range", b, e, a);
            s.dims[a] = x->dims[a] + b + e;
            l->win_off[a] = -b;
        }
        l->out_shape = s;
        return 0;
    }
    const ds_sval *st = win_arg(m, l, 0), *en = win_arg(m, l, 1), *ax = win_arg(m, l, 2), *sp = win_arg(m, l, 3);
    if (!st || !en || st->rank != 1 || en->n != st->n || (ax && ax->n != st->n) || (sp && sp->n != st->n) ||
        st->n > r)
        return FAIL("starts, ends, axes and steps must be vectors of one length <= rank %d", r);
    unsigned seen = 0;
    for (int i = 0; i < st->n; i++) {
        int64_t a = ax ? ax->v[i] : i, step = sp ? sp->v[i] : 1;
        if (a < 0)
            a += r;
        if (a < 0 || a >= r || (seen >> a & 1))
            return FAIL("axis %" PRId64 " is out of range or repeated", ax ? ax->v[i] : i);
        seen |= 1u << a;
        if (step == 0)
            return FAIL("step 0 on axis %" PRId64, a);
        s.dims[a] = slice_len(x->dims[a], st->v[i], en->v[i], step, &l->win_off[a]);
        l->win_step[a] = step;
        if (s.dims[a] < 1)
            return FAIL("the slice of axis %" PRId64 " is empty (empty tensors are not supported)", a);
    }
    l->out_shape = s;
    return 0;
}

int ds_shape_resize(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0];
    if (x->ndim != 4)
        return FAIL("a 4-D NCHW input is expected");
    ds_shape s = *x;
    const ds_sval *sz = win_arg(m, l, 0);
    if (sz) {
        if (sz->rank != 1 || sz->n != 4 || sz->v[0] != x->dims[0] || sz->v[1] != x->dims[1])
            return FAIL("sizes must hold 4 values keeping N and C");
        for (int a = 2; a < 4; a++) {
            if (sz->v[a] < 1 || sz->v[a] > (1 << 20))
                return FAIL("size %" PRId64 " is out of range", sz->v[a]);
            s.dims[a] = sz->v[a];
        }
    } else {
        for (int a = 0; a < 2; a++) {
            double o = floor((double)x->dims[2 + a] * (double)l->resize_scale[a]);
            if (!(l->resize_scale[a] > 0) || !(o >= 1 && o <= (1 << 20)))
                return FAIL("scale %g on axis %d gives an empty or too large output", (double)l->resize_scale[a],
                            2 + a);
            s.dims[2 + a] = (int64_t)o;
        }
    }
    if (l->resize_mode < 0 || l->resize_mode > 1 || l->resize_coord < 0 || l->resize_coord > 3 ||
        l->resize_nearest < 0 || l->resize_nearest > 3)
        return FAIL("unknown mode");
    l->out_shape = s;
    return 0;
}

int ds_shape_reduce(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0];
    if (l->n_axes < 0 || l->n_axes > x->ndim || norm_axes(l, x->ndim))
        return FAIL("axes out of range or repeated for rank %d", x->ndim);
    ds_shape s = {0};
    for (int d = 0; d < x->ndim; d++) {
        int reduced = l->n_axes == 0;
        for (int i = 0; i < l->n_axes; i++)
            reduced |= l->axes[i] == d;
        if (!reduced)
            s.dims[s.ndim++] = x->dims[d];
        else if (l->keepdims)
            s.dims[s.ndim++] = 1;
    }
    if (s.ndim == 0)
        return FAIL("reducing to a scalar (keepdims=0 over every axis) is not supported");
    l->out_shape = s;
    return 0;
}

double ds_flops_reduce(const ds_model *m, const ds_layer *l)
{
    return (double)ds_shape_numel(&m->layers[l->inputs[0]].out_shape);
}
