/* xnn_eltwise.c - element-wise layers on the XNNPACK backend's layout. */
#include "xnn_eltwise.h"

#include <math.h>
#include <stdlib.h>

#include "backend_xnn.h"
#include "ops_eltwise.h"

static int xerr(ds_error *err, const ds_layer *l, const char *what, enum xnn_status st)
{
    return ds_errorf(err, "layer %d (%s, %s): XNNPACK %s failed (status %d)", l->id, l->name ? l->name : "?",
                     ds_op_name(l->op), what, (int)st);
}

/* Activations: one nc operator over numel x 1; NULL op (XNNPACK lacks it or
 * refuses the parameters): plain C. */
static int unary(pthreadpool_t pool, const ds_layer *l, xnn_operator_t *op, const ds_tensor *in, ds_tensor *out,
                 ds_error *err)
{
    size_t n = (size_t)ds_shape_numel(&out->shape);
    const float *x = ds_tensor_f32(in);
    float *y = ds_tensor_f32(out);
    enum xnn_status st = xnn_status_success;
    if (!*op) {
        if (l->op == DS_OP_CLIP && l->clip_min < l->clip_max)
            st = xnn_create_clamp_nc_f32(1, 1, 1, l->clip_min, l->clip_max, 0, op);
        else if (l->op == DS_OP_SIGMOID || l->op == DS_OP_SILU)
            st = xnn_create_sigmoid_nc_f32(1, 1, 1, 0, op);
        else if (l->op == DS_OP_HARDSWISH)
            st = xnn_create_hardswish_nc_f32(1, 1, 1, 0, op);
        else if (l->op == DS_OP_LEAKYRELU)
            st = xnn_create_leaky_relu_nc_f32(1, 1, 1, l->alpha, 0, op);
        if (st != xnn_status_success)
            *op = NULL;
    }
    if (!*op) {
        ds_unary_eltwise(l, x, y, (int64_t)n);
        return 0;
    }
    switch (l->op) {
    case DS_OP_CLIP: st = xnn_setup_clamp_nc_f32(*op, n, x, y, pool); break;
    case DS_OP_SIGMOID:
    case DS_OP_SILU: st = xnn_setup_sigmoid_nc_f32(*op, n, x, y, pool); break;
    case DS_OP_HARDSWISH: st = xnn_setup_hardswish_nc_f32(*op, n, x, y, pool); break;
    default: st = xnn_setup_leaky_relu_nc_f32(*op, n, x, y, pool); break;
    }
    if (st != xnn_status_success)
        return xerr(err, l, "setup", st);
    st = xnn_run_operator(*op, pool);
    if (st != xnn_status_success)
        return xerr(err, l, "run", st);
    if (l->op == DS_OP_SILU) /* x * sigmoid(x): XNNPACK's sigmoid, then the Mul's product */
        for (size_t i = 0; i < n; i++)
            y[i] *= x[i];
    return 0;
}

/* Operand t of a rank-4 result as physical N,H,W,C dims and data: a rank-4
 * layer value is stored NHWC already; a constant or a lower-rank value is
 * row-major in its logical (padded NCHW) order and is transposed into *tmp
 * unless that changes nothing (C == 1 or H*W == 1). */
static const float *as_nhwc(const ds_tensor *t, int stored_nhwc, int64_t *pd, float **tmp)
{
    int64_t d[4];
    ds_bcast_dims4(&t->shape, d);
    pd[0] = d[0];
    pd[1] = d[2];
    pd[2] = d[3];
    pd[3] = d[1];
    *tmp = NULL;
    if (stored_nhwc || d[1] == 1 || d[2] * d[3] == 1)
        return ds_tensor_f32(t);
    if (!(*tmp = malloc((size_t)ds_shape_numel(&t->shape) * sizeof(float))))
        return NULL;
    ds_nchw_to_nhwc(ds_tensor_f32(t), *tmp, d[0], d[1], d[2] * d[3]);
    return *tmp;
}

/* PRelu with one slope or one per channel (the stored layout's last axis:
 * C of a rank-4 value, else the last dim): XNNPACK's prelu_nc.  Returns 1
 * for other slopes (plain C then). */
static int prelu(pthreadpool_t pool, const ds_layer *l, xnn_operator_t *op, const ds_tensor *in, ds_tensor *out,
                 ds_error *err)
{
    const ds_shape *xs = &in->shape;
    int64_t sd[4], kn = ds_shape_numel(&l->weight.shape);
    ds_bcast_dims4(&l->weight.shape, sd);
    int64_t ch = xs->dims[xs->ndim == 4 ? 1 : xs->ndim - 1];
    if (!(kn == 1 || (kn == ch && sd[xs->ndim == 4 ? 1 : 3] == ch)))
        return 1;
    enum xnn_status st;
    if (!*op) {
        float *slope = malloc((size_t)ch * sizeof *slope);
        if (!slope)
            return ds_errorf(err, "layer %d (%s): out of memory", l->id, ds_op_name(l->op));
        for (int64_t c = 0; c < ch; c++)
            slope[c] = ds_tensor_f32(&l->weight)[kn == 1 ? 0 : c];
        st = xnn_create_prelu_nc_f32((size_t)ch, (size_t)ch, (size_t)ch, slope, 0, op); /* packs a copy */
        free(slope);
        if (st != xnn_status_success) {
            *op = NULL;
            return 1;
        }
    }
    st = xnn_setup_prelu_nc_f32(*op, (size_t)(ds_shape_numel(xs) / ch), ds_tensor_f32(in), ds_tensor_f32(out),
                                pool);
    if (st != xnn_status_success)
        return xerr(err, l, "setup", st);
    st = xnn_run_operator(*op, pool);
    return st == xnn_status_success ? 0 : xerr(err, l, "run", st);
}

static int binary(pthreadpool_t pool, const ds_layer *l, xnn_operator_t *op, const ds_tensor *const *in,
                  ds_tensor *out, ds_error *err)
{
    if (l->op == DS_OP_PRELU) {
        int r = prelu(pool, l, op, in[0], out, err);
        if (r != 1)
            return r;
    }
    const ds_tensor *t[2] = {in[0], l->n_inputs == 2 ? in[1] : &l->weight};
    int is_layer[2] = {1, l->n_inputs == 2};
    if (l->n_inputs == 1 && l->const_first) {
        t[0] = &l->weight;
        t[1] = in[0];
        is_layer[0] = 0;
        is_layer[1] = 1;
    }
    int64_t pd[2][4], yd[4];
    const float *p[2];
    float *tmp[2] = {NULL, NULL};
    int rc = 0;
    if (out->shape.ndim == 4) {
        for (int k = 0; k < 2; k++)
            if (!(p[k] = as_nhwc(t[k], is_layer[k] && t[k]->shape.ndim == 4, pd[k], &tmp[k])))
                rc = ds_errorf(err, "layer %d (%s): out of memory", l->id, ds_op_name(l->op));
        const int64_t *d = out->shape.dims;
        yd[0] = d[0];
        yd[1] = d[2];
        yd[2] = d[3];
        yd[3] = d[1];
    } else { /* below rank 4 everything is stored as its shape says */
        for (int k = 0; k < 2; k++) {
            ds_bcast_dims4(&t[k]->shape, pd[k]);
            p[k] = ds_tensor_f32(t[k]);
        }
        ds_bcast_dims4(&out->shape, yd);
    }
    enum xnn_status st = xnn_status_success;
    if (!rc && !*op && l->op != DS_OP_PRELU) {
        if (l->op == DS_OP_ADD)
            st = xnn_create_add_nd_f32(-INFINITY, INFINITY, 0, op);
        else if (l->op == DS_OP_MUL)
            st = xnn_create_multiply_nd_f32(-INFINITY, INFINITY, 0, op);
        else if (l->op == DS_OP_SUB)
            st = xnn_create_subtract_nd_f32(-INFINITY, INFINITY, 0, op);
        else
            st = xnn_create_divide_nd_f32(-INFINITY, INFINITY, 0, op);
        if (st != xnn_status_success) {
            *op = NULL;
            rc = xerr(err, l, "create", st);
        }
    }
    if (!rc && !*op) {
        ds_binary_bcast(l->op, p[0], pd[0], p[1], pd[1], ds_tensor_f32(out), yd);
    } else if (!rc) {
        size_t s0[4], s1[4];
        for (int k = 0; k < 4; k++) {
            s0[k] = (size_t)pd[0][k];
            s1[k] = (size_t)pd[1][k];
        }
        float *y = ds_tensor_f32(out);
        switch (l->op) {
        case DS_OP_ADD: st = xnn_setup_add_nd_f32(*op, 4, s0, 4, s1, p[0], p[1], y, pool); break;
        case DS_OP_MUL: st = xnn_setup_multiply_nd_f32(*op, 4, s0, 4, s1, p[0], p[1], y, pool); break;
        case DS_OP_SUB: st = xnn_setup_subtract_nd_f32(*op, 4, s0, 4, s1, p[0], p[1], y, pool); break;
        default: st = xnn_setup_divide_nd_f32(*op, 4, s0, 4, s1, p[0], p[1], y, pool); break;
        }
        if (st != xnn_status_success)
            rc = xerr(err, l, "setup", st);
        else if ((st = xnn_run_operator(*op, pool)) != xnn_status_success)
            rc = xerr(err, l, "run", st);
    }
    free(tmp[0]);
    free(tmp[1]);
    return rc;
}

int ds_xnn_eltwise_run(pthreadpool_t pool, const ds_layer *l, xnn_operator_t *op, const ds_tensor *const *in,
                       ds_tensor *out, ds_error *err)
{
    if (l->op == DS_OP_ADD || l->op == DS_OP_MUL || l->op == DS_OP_SUB || l->op == DS_OP_DIV ||
        l->op == DS_OP_PRELU)
        return binary(pool, l, op, in, out, err);
    return unary(pool, l, op, in[0], out, err);
}
