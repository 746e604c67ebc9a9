/* op_table.c - the op table: per op its name, ONNX types, parser, shape
 * rule (ONNX semantics), FLOP count and default predictor kind. */
#include "model/op_table.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

/* Attribute values the loader accepts are below this; hand-built layers are
 * held to it too, so that shape arithmetic stays far from overflow. */
#define MAX_ATTR (1 << 16)

int ds_layer_shape_err(ds_error *err, const ds_model *m, const ds_layer *l, const ds_shape *in,
                       const char *fmt, ...)
{
    char msg[300], shape[64] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (in)
        ds_shape_str(in, shape, sizeof shape);
    return ds_errorf(err, "%s: layer %d \"%.80s\" (%s): input %s: %s", m->name ? m->name : "model",
                     l->id, l->name ? l->name : "?", ds_op_name(l->op), in ? shape : "-", msg);
}

#define FAIL(...) ds_layer_shape_err(err, m, l, in[0], __VA_ARGS__)

/* ---- windows (conv, pools) --------------------------------------------- */

/* Output size along one axis (ONNX and PyTorch formulas); -1 when the
 * window does not fit. */
static int64_t window_out(int64_t in, int k, int s, int d, int pb, int pe, int ceil_mode)
{
    int64_t eff = (int64_t)(k - 1) * d + 1;
    int64_t span = in + pb + pe - eff;
    if (span < 0)
        return -1;
    int64_t out = span / s + 1;
    if (ceil_mode && span % s) {
        out++;
        /* PyTorch: the last window must start inside the input or its
         * leading padding. */
        if ((out - 1) * s >= in + pb)
            out--;
    }
    return out;
}

static void same_pads(int64_t in, int k, int s, int d, int lower, int *pb, int *pe)
{
    int64_t out = (in + s - 1) / s;
    int64_t total = (out - 1) * s + (int64_t)(k - 1) * d + 1 - in;
    if (total < 0)
        total = 0;
    int64_t small = total / 2, big = total - small;
    *pb = (int)(lower ? big : small);
    *pe = (int)(lower ? small : big);
}

/* N x out_ch x OH x OW for l's kernel, strides, dilations and pads (auto_pad
 * resolved here); pools keep their pads inside the window, as a window of
 * padding only has no value (max) or no divisor (average). */
static int shape_window(const ds_model *m, ds_layer *l, const ds_shape *const *in, int64_t out_ch,
                        ds_error *err)
{
    const ds_shape *x = in[0];
    int pool = l->op != DS_OP_CONV;
    for (int a = 0; a < 2; a++) {
        if (l->kernel[a] < 1 || l->kernel[a] > MAX_ATTR || l->stride[a] < 1 || l->stride[a] > MAX_ATTR ||
            l->dilation[a] < 1 || l->dilation[a] > MAX_ATTR)
            return FAIL("kernel %dx%d, strides %dx%d, dilations %dx%d: each must be 1..%d", l->kernel[0],
                        l->kernel[1], l->stride[0], l->stride[1], l->dilation[0], l->dilation[1], MAX_ATTR);
    }
    if (l->auto_pad) {
        for (int a = 0; a < 2; a++) {
            if (l->auto_pad == 1)
                l->pads[a] = l->pads[a + 2] = 0;
            else
                same_pads(x->dims[2 + a], l->kernel[a], l->stride[a], l->dilation[a], l->auto_pad == 3,
                          &l->pads[a], &l->pads[a + 2]);
        }
    }
    for (int i = 0; i < 4; i++) {
        int64_t extent = (int64_t)(l->kernel[i % 2] - 1) * l->dilation[i % 2] + 1;
        if (l->pads[i] < 0 || l->pads[i] > MAX_ATTR || (pool && l->pads[i] >= extent))
            return FAIL("pads %d,%d,%d,%d: each must be >= 0%s", l->pads[0], l->pads[1], l->pads[2], l->pads[3],
                        pool ? " and smaller than the window" : "");
    }
    int64_t out[2];
    for (int a = 0; a < 2; a++) {
        out[a] = window_out(x->dims[2 + a], l->kernel[a], l->stride[a], l->dilation[a], l->pads[a],
                            l->pads[a + 2], pool ? l->ceil_mode : 0);
        if (out[a] < 1)
            return FAIL("kernel %dx%d (dilation %dx%d) is larger than the padded input (pads %d,%d,%d,%d)",
                        l->kernel[0], l->kernel[1], l->dilation[0], l->dilation[1], l->pads[0], l->pads[1],
                        l->pads[2], l->pads[3]);
    }
    l->out_shape = ds_shape_nchw(x->dims[0], out_ch, out[0], out[1]);
    return 0;
}

/* bias absent (rank 0) or n values */
static int bias_fits(const ds_tensor *b, int64_t n)
{
    return b->shape.ndim == 0 || ds_shape_numel(&b->shape) == n;
}

static int shape_conv(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0];
    const ds_tensor *w = &l->weight;
    const int64_t *wd = w->shape.dims;
    char buf[64];
    if (x->ndim != 4)
        return FAIL("a 4-D NCHW input is expected");
    if (w->shape.ndim != 4 || ds_shape_numel(&w->shape) < 1 || wd[2] > MAX_ATTR || wd[3] > MAX_ATTR)
        return FAIL("the weight %s is not a 2-D convolution's O x I/group x kH x kW",
                    ds_shape_str(&w->shape, buf, sizeof buf));
    if (l->group < 1 || wd[0] % l->group)
        return FAIL("%" PRId64 " output channels are not divisible by group=%d", wd[0], l->group);
    if (x->dims[1] != wd[1] * l->group)
        return FAIL("%" PRId64 " channels, but the weight %s with group=%d expects %" PRId64, x->dims[1],
                    ds_shape_str(&w->shape, buf, sizeof buf), l->group, wd[1] * l->group);
    for (int a = 0; a < 2; a++) {
        if (l->kernel[a] == 0) /* absent: the weight's */
            l->kernel[a] = (int)wd[2 + a];
        else if (l->kernel[a] != wd[2 + a])
            return FAIL("kernel_shape %dx%d differs from the weight's %" PRId64 "x%" PRId64, l->kernel[0],
                        l->kernel[1], wd[2], wd[3]);
    }
    if (!bias_fits(&l->bias, wd[0]))
        return FAIL("bias has %" PRId64 " values, %" PRId64 " expected", ds_shape_numel(&l->bias.shape), wd[0]);
    if (l->act && !(l->clip_min < l->clip_max))
        return FAIL("fused clip bounds %g..%g are empty", (double)l->clip_min, (double)l->clip_max);
    return shape_window(m, l, in, wd[0], err);
}

static int shape_pool(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    if (in[0]->ndim != 4)
        return FAIL("a 4-D NCHW input is expected");
    return shape_window(m, l, in, in[0]->dims[1], err);
}

/* ONNX: N x C x D1 x ... -> N x C x 1 x ... */
static int shape_global_pool(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    if (in[0]->ndim < 3)
        return FAIL("an input of rank >= 3 (N x C x D1 ...) is expected");
    l->out_shape = *in[0];
    for (int i = 2; i < in[0]->ndim; i++)
        l->out_shape.dims[i] = 1;
    return 0;
}

static int shape_same(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    (void)m;
    (void)err;
    l->out_shape = *in[0];
    return 0;
}

/* ONNX: N x C x D1 x ..., across channels. */
static int shape_lrn(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    if (in[0]->ndim < 3)
        return FAIL("an input of rank >= 3 (N x C x D1 ...) is expected");
    if (l->lrn_size < 1 || l->lrn_size > MAX_ATTR || !isfinite(l->lrn_alpha) || !isfinite(l->lrn_beta) ||
        !isfinite(l->lrn_bias))
        return FAIL("size must be 1..%d and alpha, beta, bias finite", MAX_ATTR);
    l->out_shape = *in[0];
    return 0;
}

static int shape_batchnorm(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    if (in[0]->ndim < 2)
        return FAIL("an input of rank >= 2 (channels on axis 1) is expected");
    int64_t c = in[0]->dims[1];
    if (l->weight.shape.ndim < 1 || l->bias.shape.ndim < 1 || ds_shape_numel(&l->weight.shape) != c ||
        ds_shape_numel(&l->bias.shape) != c)
        return FAIL("channel axis 1 has %" PRId64 " channels; scale and shift hold %" PRId64 " and %" PRId64, c,
                    ds_shape_numel(&l->weight.shape), ds_shape_numel(&l->bias.shape));
    l->out_shape = *in[0];
    return 0;
}

/* ONNX: equal ranks, equal dims but on the axis. */
static int shape_concat(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    char buf[64];
    int r = in[0]->ndim, axis = l->axis < 0 ? l->axis + r : l->axis;
    if (axis < 0 || axis >= r)
        return FAIL("axis %d is out of range for rank %d", l->axis, r);
    ds_shape s = *in[0];
    for (int k = 1; k < l->n_inputs; k++) {
        const ds_shape *o = in[k];
        int same = o->ndim == r;
        for (int d = 0; same && d < r; d++)
            same = d == axis || o->dims[d] == s.dims[d];
        if (!same)
            return FAIL("input %d has shape %s; only the dim on axis %d may differ", k,
                        ds_shape_str(o, buf, sizeof buf), axis);
        s.dims[axis] += o->dims[axis];
    }
    l->axis = axis;
    l->out_shape = s;
    return 0;
}

static int shape_flatten(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    int r = in[0]->ndim, axis = l->axis < 0 ? l->axis + r : l->axis;
    if (axis < 0 || axis > r)
        return FAIL("axis %d is out of range", l->axis);
    l->axis = axis;
    int64_t dims[2] = {1, 1};
    for (int i = 0; i < r; i++)
        dims[i >= axis] *= in[0]->dims[i];
    l->out_shape = ds_shape_make(2, dims);
    return 0;
}

static int shape_gemm(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    const ds_shape *x = in[0], *ws = &l->weight.shape;
    char buf[64];
    if (x->ndim != 2)
        return FAIL("a 2-D input is expected (a Flatten is needed before it)");
    if (ws->ndim != 2 || ws->dims[0] < 1 || ws->dims[1] < 1)
        return FAIL("the weight %s is not N x K", ds_shape_str(ws, buf, sizeof buf));
    if (x->dims[1] != ws->dims[1])
        return FAIL("K=%" PRId64 " does not match the weight's K=%" PRId64 " (weight N x K %s)", x->dims[1],
                    ws->dims[1], ds_shape_str(ws, buf, sizeof buf));
    if (!bias_fits(&l->bias, ws->dims[0]))
        return FAIL("bias has %" PRId64 " values, %" PRId64 " expected", ds_shape_numel(&l->bias.shape),
                    ws->dims[0]);
    int64_t dims[2] = {x->dims[0], ws->dims[0]};
    l->out_shape = ds_shape_make(2, dims);
    return 0;
}

static int shape_softmax(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err)
{
    int r = in[0]->ndim, axis = l->axis < 0 ? l->axis + r : l->axis;
    if (axis < 0 || axis >= r)
        return FAIL("axis %d is out of range", l->axis);
    if (m->opset < 13)
        /* Before opset 13 Softmax flattened everything from axis on;
         * that equals a one-axis softmax only when the rest is 1. */
        for (int i = axis + 1; i < r; i++)
            if (in[0]->dims[i] != 1)
                return FAIL("opset %d Softmax over several axes (axis=%d) is not supported", m->opset, l->axis);
    l->axis = axis;
    l->out_shape = *in[0];
    return 0;
}

/* ---- FLOPs ------------------------------------------------------------- */

static double flops_none(const ds_model *m, const ds_layer *l)
{
    (void)m;
    (void)l;
    return 0; /* no arithmetic: a copy at most */
}

static double flops_conv(const ds_model *m, const ds_layer *l)
{
    (void)m;
    return 2.0 * (double)ds_shape_numel(&l->out_shape) * (double)l->weight.shape.dims[1] * l->kernel[0] *
           l->kernel[1];
}

static double flops_gemm(const ds_model *m, const ds_layer *l)
{
    (void)m;
    return 2.0 * (double)ds_shape_numel(&l->out_shape) * (double)l->weight.shape.dims[1];
}

static double flops_pool(const ds_model *m, const ds_layer *l)
{
    (void)m;
    return (double)ds_shape_numel(&l->out_shape) * l->kernel[0] * l->kernel[1];
}

static double flops_global_pool(const ds_model *m, const ds_layer *l)
{
    return (double)ds_shape_numel(&m->layers[l->inputs[0]].out_shape);
}

static double flops_lrn(const ds_model *m, const ds_layer *l)
{
    (void)m;
    return (double)ds_shape_numel(&l->out_shape) * l->lrn_size;
}

static double flops_silu(const ds_model *m, const ds_layer *l)
{
    (void)m;
    return 2.0 * (double)ds_shape_numel(&l->out_shape); /* the Sigmoid and the Mul it replaces */
}

/* ---- the table --------------------------------------------------------- */

/* Adding an op: a ds_op value, its entry here, its kernels in src/engine. */
_Static_assert(DS_OP_COUNT == 29, "an op was added or removed: update ds_op_defs");

const ds_op_def ds_op_defs[DS_OP_COUNT] = {
    [DS_OP_INPUT] = {.name = "Input", .arity = 0, .flops = flops_none, .pred = DS_PRED_PASS},
    [DS_OP_CONV] = {.name = "Conv", .onnx_types = {"Conv"}, .arity = 1, .parse = ds_onnx_parse_conv,
                    .shape = shape_conv, .flops = flops_conv, .pred = DS_PRED_MLP},
    [DS_OP_RELU] = {.name = "Relu", .onnx_types = {"Relu"}, .arity = 1, .parse = ds_onnx_parse_unary,
                    .shape = shape_same, .pred = DS_PRED_LINEAR},
    [DS_OP_MAXPOOL] = {.name = "MaxPool", .onnx_types = {"MaxPool"}, .arity = 1, .parse = ds_onnx_parse_pool,
                       .shape = shape_pool, .flops = flops_pool, .pred = DS_PRED_LINEAR},
    [DS_OP_AVGPOOL] = {.name = "AveragePool", .onnx_types = {"AveragePool"}, .arity = 1,
                       .parse = ds_onnx_parse_pool, .shape = shape_pool, .flops = flops_pool,
                       .pred = DS_PRED_LINEAR},
    [DS_OP_GLOBALAVGPOOL] = {.name = "GlobalAveragePool", .onnx_types = {"GlobalAveragePool"}, .arity = 1,
                             .parse = ds_onnx_parse_pool, .shape = shape_global_pool,
                             .flops = flops_global_pool, .pred = DS_PRED_LINEAR},
    [DS_OP_CONCAT] = {.name = "Concat", .onnx_types = {"Concat"}, .arity = -1, .parse = ds_onnx_parse_concat,
                      .shape = shape_concat, .pred = DS_PRED_CONCAT},
    [DS_OP_ADD] = {.name = "Add", .onnx_types = {"Add"}, .arity = -1, .parse = ds_onnx_parse_add,
                   .shape = ds_shape_binary, .pred = DS_PRED_LINEAR},
    [DS_OP_FLATTEN] = {.name = "Flatten", .onnx_types = {"Flatten"}, .arity = 1, .parse = ds_onnx_parse_unary,
                       .shape = shape_flatten, .flops = flops_none, .pred = DS_PRED_MEAN},
    [DS_OP_GEMM] = {.name = "Gemm", .onnx_types = {"Gemm", "MatMul"}, .arity = 1, .parse = ds_onnx_parse_gemm,
                    .shape = shape_gemm, .flops = flops_gemm, .pred = DS_PRED_MLP},
    [DS_OP_LRN] = {.name = "LRN", .onnx_types = {"LRN"}, .arity = 1, .parse = ds_onnx_parse_unary,
                   .shape = shape_lrn, .flops = flops_lrn, .pred = DS_PRED_LINEAR},
    [DS_OP_SOFTMAX] = {.name = "Softmax", .onnx_types = {"Softmax"}, .arity = 1, .parse = ds_onnx_parse_unary,
                       .shape = shape_softmax, .pred = DS_PRED_LINEAR},
    [DS_OP_BATCHNORM] = {.name = "BatchNormalization", .onnx_types = {"BatchNormalization"}, .arity = 1,
                         .parse = ds_onnx_parse_batchnorm, .shape = shape_batchnorm, .pred = DS_PRED_LINEAR},
    [DS_OP_CLIP] = {.name = "Clip", .onnx_types = {"Clip"}, .arity = 1, .parse = ds_onnx_parse_eltwise,
                    .shape = ds_shape_unary_eltwise, .pred = DS_PRED_LINEAR},
    [DS_OP_SIGMOID] = {.name = "Sigmoid", .onnx_types = {"Sigmoid"}, .arity = 1, .parse = ds_onnx_parse_eltwise,
                       .shape = ds_shape_unary_eltwise, .pred = DS_PRED_LINEAR},
    [DS_OP_HARDSIGMOID] = {.name = "HardSigmoid", .onnx_types = {"HardSigmoid"}, .arity = 1,
                           .parse = ds_onnx_parse_eltwise, .shape = ds_shape_unary_eltwise, .pred = DS_PRED_LINEAR},
    [DS_OP_HARDSWISH] = {.name = "HardSwish", .onnx_types = {"HardSwish"}, .arity = 1,
                         .parse = ds_onnx_parse_eltwise, .shape = ds_shape_unary_eltwise, .pred = DS_PRED_LINEAR},
    [DS_OP_LEAKYRELU] = {.name = "LeakyRelu", .onnx_types = {"LeakyRelu"}, .arity = 1,
                         .parse = ds_onnx_parse_eltwise, .shape = ds_shape_unary_eltwise, .pred = DS_PRED_LINEAR},
    [DS_OP_MUL] = {.name = "Mul", .onnx_types = {"Mul"}, .arity = -1, .parse = ds_onnx_parse_binary,
                   .shape = ds_shape_binary, .pred = DS_PRED_LINEAR},
    [DS_OP_SUB] = {.name = "Sub", .onnx_types = {"Sub"}, .arity = -1, .parse = ds_onnx_parse_binary,
                   .shape = ds_shape_binary, .pred = DS_PRED_LINEAR},
    [DS_OP_DIV] = {.name = "Div", .onnx_types = {"Div"}, .arity = -1, .parse = ds_onnx_parse_binary,
                   .shape = ds_shape_binary, .pred = DS_PRED_LINEAR},
    [DS_OP_PRELU] = {.name = "PRelu", .onnx_types = {"PRelu"}, .arity = 1, .parse = ds_onnx_parse_binary,
                     .shape = ds_shape_prelu, .pred = DS_PRED_LINEAR},
    /* Squeeze and Unsqueeze of data become Reshape layers too, through
     * ds_onnx_try_fold (which folds them when they are shape arithmetic). */
    [DS_OP_RESHAPE] = {.name = "Reshape", .onnx_types = {"Reshape"}, .arity = 1,
                       .parse = ds_onnx_parse_reshape, .shape = ds_shape_reshape, .flops = flops_none,
                       .pred = DS_PRED_MEAN},
    [DS_OP_TRANSPOSE] = {.name = "Transpose", .onnx_types = {"Transpose"}, .arity = 1,
                         .parse = ds_onnx_parse_transpose, .shape = ds_shape_transpose, .flops = flops_none,
                         .pred = DS_PRED_LINEAR},
    [DS_OP_SLICE] = {.name = "Slice", .onnx_types = {"Slice"}, .arity = 1, .parse = ds_onnx_parse_window,
                     .shape = ds_shape_window, .flops = flops_none, .pred = DS_PRED_LINEAR},
    [DS_OP_PAD] = {.name = "Pad", .onnx_types = {"Pad"}, .arity = 1, .parse = ds_onnx_parse_window,
                   .shape = ds_shape_window, .flops = flops_none, .pred = DS_PRED_LINEAR},
    [DS_OP_RESIZE] = {.name = "Resize", .onnx_types = {"Resize", "Upsample"}, .arity = 1,
                      .parse = ds_onnx_parse_resize, .shape = ds_shape_resize, .pred = DS_PRED_LINEAR},
    /* Split: a Slice layer per output (ds_onnx_parse_split). */
    [DS_OP_REDUCEMEAN] = {.name = "ReduceMean", .onnx_types = {"ReduceMean", "Split"}, .arity = 1,
                          .parse = ds_onnx_parse_reduce, .shape = ds_shape_reduce, .flops = ds_flops_reduce,
                          .pred = DS_PRED_LINEAR},
    /* From Sigmoid + Mul (onnx_load.c): one pass over the data, one value
     * less to keep; no ONNX type of its own, so no parser. */
    [DS_OP_SILU] = {.name = "SiLU", .arity = 1, .shape = ds_shape_unary_eltwise, .flops = flops_silu,
                    .pred = DS_PRED_LINEAR},
};
