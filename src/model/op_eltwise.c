/* op_eltwise.c - shape rules of the element-wise ops (issue 15): the
 * activations (Clip, Sigmoid, HardSigmoid, HardSwish, LeakyRelu), the
 * binary ops with ONNX multidirectional broadcasting (Add, Mul, Sub, Div)
 * and PRelu (slope broadcast to the input). */
#include "model/op_table.h"

#include <math.h>

#define FAIL(...) ds_layer_shape_err(err, m, l, in[0], __VA_ARGS__)

int ds_bcast_shape(const ds_shape *a, const ds_shape *b, ds_shape *out)
{
    int r = a->ndim > b->ndim ? a->ndim : b->ndim;
    if (r < 1 || r > DS_MAX_DIMS)
        return -1;
    ds_shape s = {0};
    s.ndim = r;
    for (int d = 0; d < r; d++) { /* right-aligned */
        int ia = d - (r - a->ndim), ib = d - (r - b->ndim);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return -1;
        s.dims[d] = da == 1 ? db : da;
    }
    *out = s;
    return 0;
}

int ds_binary_operands(const ds_layer *l, const ds_shape *const *in, const ds_shape **a,
                       const ds_shape **b)
{
    if (l->n_inputs == 2 && l->weight.shape.ndim == 0) {
        *a = in[0];
        *b = in[1];
    } else if (l->n_inputs == 1 && l->weight.shape.ndim > 0) {
        *a = l->const_first ? &l->weight.shape : in[0];
        *b = l->const_first ? in[0] : &l->weight.shape;
    } else {
        return -1;
    }
    return 0;
}

int ds_shape_unary_eltwise(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    if (l->op == DS_OP_CLIP && (isnan(l->clip_min) || isnan(l->clip_max)))
        return FAIL("clip bounds must not be NaN");
    if ((l->op == DS_OP_HARDSIGMOID || l->op == DS_OP_LEAKYRELU) && (!isfinite(l->alpha) || !isfinite(l->beta)))
        return FAIL("alpha and beta must be finite");
    l->out_shape = *in[0];
    return 0;
}

int ds_shape_binary(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *a, *b;
    char sa[64], sb[64];
    if (ds_binary_operands(l, in, &a, &b))
        return FAIL("two operands expected (%d layer inputs, %s constant)", l->n_inputs,
                    l->weight.shape.ndim ? "a" : "no");
    if (ds_bcast_shape(a, b, &l->out_shape))
        return FAIL("shapes differ: %s %c %s do not broadcast (ONNX multidirectional)",
                    ds_shape_str(a, sa, sizeof sa), "+*-/"[l->op == DS_OP_ADD ? 0 : l->op - DS_OP_MUL + 1],
                    ds_shape_str(b, sb, sizeof sb));
    return 0;
}

int ds_shape_prelu(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    ds_shape s;
    char buf[64];
    if (l->weight.shape.ndim == 0)
        return FAIL("the slope is missing");
    if (ds_bcast_shape(in[0], &l->weight.shape, &s) || !ds_shape_equal(&s, in[0]))
        return FAIL("slope %s does not broadcast to the input (ONNX unidirectional)",
                    ds_shape_str(&l->weight.shape, buf, sizeof buf));
    l->out_shape = *in[0];
    return 0;
}
