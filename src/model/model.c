/* model.c - the layer DAG once loaded: shapes, cut points, costs, loading
 * from a path or the zoo. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/file.h"
#include "model/model.h"
#include "model/zoo.h"

/* Feature maps beyond 2^31 elements are refused (no frame comes near). */
#define MAX_NUMEL ((int64_t)1 << 31)

const char *ds_op_name(ds_op op)
{
    static const char *const names[DS_OP_COUNT] = {
        "Input", "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
        "Add", "Flatten", "Gemm", "LRN", "Softmax", "BatchNormalization",
    };
    return (int)op >= 0 && op < DS_OP_COUNT ? names[op] : "?";
}

void ds_model_free(ds_model *m)
{
    if (!m)
        return;
    for (int i = 0; m->layers && i < m->n_layers; i++) {
        ds_layer *l = &m->layers[i];
        free(l->name);
        free(l->inputs);
        free(l->consumers);
        ds_tensor_free(&l->weight);
        ds_tensor_free(&l->bias);
    }
    free(m->layers);
    free(m->outputs);
    free(m->name);
    memset(m, 0, sizeof *m);
}

/* ---- loading ----------------------------------------------------------- */

int ds_model_load(const char *spec, ds_model *m, ds_error *err)
{
    if (!spec || !spec[0])
        return ds_errorf(err, "no model given");
    if (!strncmp(spec, "zoo:", 4)) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (ds_zoo_build(spec + 4, 1, &bytes, &len, err))
            return -1;
        int rc = ds_model_load_onnx(bytes, len, spec, m, err);
        free(bytes);
        return rc;
    }
    ds_buf buf = {0};
    if (ds_read_file(spec, (uint64_t)1 << 31, &buf, err)) /* protobuf's 2 GiB limit */
        return -1;
    int rc = buf.len ? ds_model_load_onnx(buf.data, buf.len, spec, m, err)
                     : ds_errorf(err, "%s: empty file, not an ONNX model", spec);
    ds_buf_free(&buf);
    return rc;
}

/* ---- shapes ------------------------------------------------------------ */

static int layer_err(ds_error *err, const ds_model *m, const ds_layer *l, const ds_shape *in, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));
static int layer_err(ds_error *err, const ds_model *m, const ds_layer *l, const ds_shape *in, const char *fmt, ...)
{
    char msg[300], shape[64] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (in)
        ds_shape_str(in, shape, sizeof shape);
    return ds_errorf(err, "%s: layer %d \"%.80s\" (%s): input %s: %s", m->name ? m->name : "model", l->id,
                     l->name ? l->name : "?", ds_op_name(l->op), in ? shape : "-", msg);
}

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

static int normalize_axis(int axis, int rank, int inclusive_end)
{
    int a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a > rank - (inclusive_end ? 0 : 1))
        return -1;
    return a;
}

static int shape_spatial(ds_model *m, ds_layer *l, const ds_shape *in, ds_error *err)
{
    char buf[64];
    if (in->ndim != 4)
        return layer_err(err, m, l, in, "a 4-D NCHW input is expected");
    if (l->op == DS_OP_CONV) {
        const int64_t *wd = l->weight.shape.dims;
        if (in->dims[1] != wd[1] * l->group)
            return layer_err(err, m, l, in, "%" PRId64 " channels, but the weight %s with group=%d expects %" PRId64,
                             in->dims[1], ds_shape_str(&l->weight.shape, buf, sizeof buf), l->group,
                             wd[1] * l->group);
    }
    if (l->auto_pad) {
        for (int a = 0; a < 2; a++) {
            if (l->auto_pad == 1)
                l->pads[a] = l->pads[a + 2] = 0;
            else
                same_pads(in->dims[2 + a], l->kernel[a], l->stride[a], l->dilation[a], l->auto_pad == 3,
                          &l->pads[a], &l->pads[a + 2]);
        }
    }
    int64_t out[2];
    for (int a = 0; a < 2; a++) {
        int d = l->op == DS_OP_CONV ? l->dilation[a] : 1;
        out[a] = window_out(in->dims[2 + a], l->kernel[a], l->stride[a], d, l->pads[a], l->pads[a + 2],
                            l->op == DS_OP_CONV ? 0 : l->ceil_mode);
        if (out[a] < 1)
            return layer_err(err, m, l, in, "kernel %dx%d (dilation %dx%d) is larger than the padded input "
                             "(pads %d,%d,%d,%d)", l->kernel[0], l->kernel[1], l->op == DS_OP_CONV ? l->dilation[0] : 1,
                             l->op == DS_OP_CONV ? l->dilation[1] : 1, l->pads[0], l->pads[1], l->pads[2], l->pads[3]);
    }
    int64_t ch = l->op == DS_OP_CONV ? l->weight.shape.dims[0] : in->dims[1];
    l->out_shape = ds_shape_nchw(in->dims[0], ch, out[0], out[1]);
    return 0;
}

static int shape_layer(ds_model *m, ds_layer *l, ds_error *err)
{
    const ds_shape *in = &m->layers[l->inputs[0]].out_shape;
    char buf[64], buf2[64];
    switch (l->op) {
    case DS_OP_INPUT:
        return 0;
    case DS_OP_CONV:
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL:
        return shape_spatial(m, l, in, err);
    case DS_OP_GLOBALAVGPOOL:
        if (in->ndim != 4)
            return layer_err(err, m, l, in, "a 4-D NCHW input is expected");
        l->out_shape = ds_shape_nchw(in->dims[0], in->dims[1], 1, 1);
        return 0;
    case DS_OP_RELU:
        l->out_shape = *in;
        return 0;
    case DS_OP_LRN:
        if (in->ndim != 4)
            return layer_err(err, m, l, in, "a 4-D NCHW input is expected");
        l->out_shape = *in;
        return 0;
    case DS_OP_BATCHNORM:
        if (in->ndim < 2 || in->dims[1] != l->weight.shape.dims[0])
            return layer_err(err, m, l, in, "channel axis 1 must have %" PRId64 " channels", l->weight.shape.dims[0]);
        l->out_shape = *in;
        return 0;
    case DS_OP_ADD:
        for (int k = 1; k < l->n_inputs; k++) {
            const ds_shape *o = &m->layers[l->inputs[k]].out_shape;
            if (!ds_shape_equal(in, o))
                return layer_err(err, m, l, in, "shapes differ: %s + %s (no broadcasting)",
                                 ds_shape_str(in, buf, sizeof buf), ds_shape_str(o, buf2, sizeof buf2));
        }
        l->out_shape = *in;
        return 0;
    case DS_OP_CONCAT: {
        int axis = normalize_axis(l->axis, in->ndim, 0);
        if (in->ndim != 4 || axis != 1)
            return layer_err(err, m, l, in, "only the channel axis of 4-D inputs is supported (axis=%d)", l->axis);
        l->axis = 1;
        ds_shape s = *in;
        for (int k = 1; k < l->n_inputs; k++) {
            const ds_shape *o = &m->layers[l->inputs[k]].out_shape;
            if (o->ndim != 4 || o->dims[0] != s.dims[0] || o->dims[2] != s.dims[2] || o->dims[3] != s.dims[3])
                return layer_err(err, m, l, in, "input %d has shape %s; only the channel dim may differ", k,
                                 ds_shape_str(o, buf, sizeof buf));
            s.dims[1] += o->dims[1];
        }
        l->out_shape = s;
        return 0;
    }
    case DS_OP_FLATTEN: {
        int axis = normalize_axis(l->axis, in->ndim, 1);
        if (axis < 0)
            return layer_err(err, m, l, in, "axis %d is out of range", l->axis);
        l->axis = axis;
        int64_t a = 1, b = 1;
        for (int i = 0; i < in->ndim; i++)
            *(i < axis ? &a : &b) *= in->dims[i];
        int64_t dims[2] = {a, b};
        l->out_shape = ds_shape_make(2, dims);
        return 0;
    }
    case DS_OP_GEMM: {
        if (in->ndim != 2)
            return layer_err(err, m, l, in, "a 2-D input is expected (a Flatten is needed before it)");
        if (in->dims[1] != l->weight.shape.dims[1])
            return layer_err(err, m, l, in, "K=%" PRId64 " does not match the weight's K=%" PRId64 " (weight N x K %s)",
                             in->dims[1], l->weight.shape.dims[1], ds_shape_str(&l->weight.shape, buf, sizeof buf));
        int64_t dims[2] = {in->dims[0], l->weight.shape.dims[0]};
        l->out_shape = ds_shape_make(2, dims);
        return 0;
    }
    case DS_OP_SOFTMAX: {
        int axis = normalize_axis(l->axis, in->ndim, 0);
        if (axis < 0)
            return layer_err(err, m, l, in, "axis %d is out of range", l->axis);
        if (m->opset < 13)
            /* Before opset 13 Softmax flattened everything from axis on;
             * that equals a one-axis softmax only when the rest is 1. */
            for (int i = axis + 1; i < in->ndim; i++)
                if (in->dims[i] != 1)
                    return layer_err(err, m, l, in, "opset %d Softmax over several axes (axis=%d) is not supported",
                                     m->opset, l->axis);
        l->axis = axis;
        l->out_shape = *in;
        return 0;
    }
    default:
        return layer_err(err, m, l, in, "unknown op");
    }
}

int ds_model_set_input(ds_model *m, int64_t n, int64_t c, int64_t h, int64_t w, ds_error *err)
{
    const char *name = m->name ? m->name : "model";
    if (m->n_layers < 1)
        return ds_errorf(err, "%s: no layers", name);
    if (n < 1 || c < 1 || h < 1 || w < 1 || n > MAX_NUMEL || c > MAX_NUMEL || h > MAX_NUMEL || w > MAX_NUMEL ||
        n * c > MAX_NUMEL || n * c * h > MAX_NUMEL || n * c * h * w > MAX_NUMEL)
        return ds_errorf(err, "%s: input %" PRId64 "x%" PRId64 "x%" PRId64 "x%" PRId64 " is out of range", name, n, c,
                         h, w);
    ds_shape s = ds_shape_nchw(n, c, h, w);
    const ds_shape *decl = &m->input_shape;
    if (decl->ndim == 2) {
        if (h != 1 || w != 1)
            return ds_errorf(err, "%s: the network input is 2-D (N x C); got %" PRId64 "x%" PRId64 "x%" PRId64
                             "x%" PRId64, name, n, c, h, w);
        s.ndim = 2;
    } else if (decl->ndim != 0 && decl->ndim != 4) {
        return ds_errorf(err, "%s: the network input is declared %d-D; only 4-D (or 2-D) inputs are supported", name,
                         decl->ndim);
    }
    for (int i = 0; i < decl->ndim; i++)
        if (decl->dims[i] > 0 && decl->dims[i] != s.dims[i]) {
            char a[64], b[64];
            return ds_errorf(err, "%s: input %s does not fit the declared input shape %s", name,
                             ds_shape_str(&s, a, sizeof a), ds_shape_str(decl, b, sizeof b));
        }
    m->layers[0].out_shape = s;
    for (int i = 1; i < m->n_layers; i++) {
        ds_layer *l = &m->layers[i];
        if (shape_layer(m, l, err))
            return -1;
        int64_t numel = 1;
        for (int d = 0; d < l->out_shape.ndim; d++) {
            numel *= l->out_shape.dims[d];
            if (numel > MAX_NUMEL)
                return layer_err(err, m, l, &m->layers[l->inputs[0]].out_shape,
                                 "output of more than 2^31 elements");
        }
    }
    return 0;
}

/* ---- articulations ----------------------------------------------------- */

int ds_model_articulations(const ds_model *m, int *ids)
{
    /* Dominators of a virtual sink fed by every output: ids are a
     * topological order, so one pass with the Cooper-Harvey-Kennedy
     * intersection (walk the larger id up) suffices. */
    int n = m->n_layers;
    if (n < 1)
        return 0;
    int *idom = malloc((size_t)n * sizeof(int));
    if (!idom)
        return 0;
    idom[0] = 0;
    for (int v = 1; v < n; v++) {
        int d = -1;
        for (int k = 0; k < m->layers[v].n_inputs; k++) {
            int p = m->layers[v].inputs[k];
            if (d < 0) {
                d = p;
                continue;
            }
            while (d != p) {
                while (d > p)
                    d = idom[d];
                while (p > d)
                    p = idom[p];
            }
        }
        idom[v] = d < 0 ? 0 : d;
    }
    int d = -1;
    for (int k = 0; k < m->n_outputs; k++) {
        int p = m->outputs[k];
        if (d < 0) {
            d = p;
            continue;
        }
        while (d != p) {
            while (d > p)
                d = idom[d];
            while (p > d)
                p = idom[p];
        }
    }
    int count = 0;
    if (d >= 0) {
        for (int v = d; v != 0; v = idom[v])
            ids[count++] = v;
        ids[count++] = 0;
    }
    free(idom);
    /* Collected from the sink upwards: reverse into ascending order. */
    for (int i = 0; i < count / 2; i++) {
        int t = ids[i];
        ids[i] = ids[count - 1 - i];
        ids[count - 1 - i] = t;
    }
    return count;
}

/* ---- costs ------------------------------------------------------------- */

double ds_layer_flops(const ds_model *m, int id)
{
    if (id < 0 || id >= m->n_layers)
        return 0;
    const ds_layer *l = &m->layers[id];
    double out = (double)ds_shape_numel(&l->out_shape);
    if (l->out_shape.ndim == 0)
        return 0;
    switch (l->op) {
    case DS_OP_INPUT:
    case DS_OP_FLATTEN:
        return 0; /* no arithmetic: a copy at most */
    case DS_OP_CONV:
        return 2.0 * out * (double)l->weight.shape.dims[1] * l->kernel[0] * l->kernel[1];
    case DS_OP_GEMM:
        return 2.0 * out * (double)l->weight.shape.dims[1];
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL:
        return out * l->kernel[0] * l->kernel[1];
    case DS_OP_GLOBALAVGPOOL:
        return (double)ds_shape_numel(&m->layers[l->inputs[0]].out_shape);
    case DS_OP_LRN:
        return out * l->lrn_size;
    default:
        return out;
    }
}
