/* model.c - the layer DAG once loaded: shapes, cut points, costs, loading
 * from a path or the zoo. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "model/model.h"
#include "model/op_table.h"
#include "model/shape_prog.h"
#include "model/zoo.h"

/* Feature maps beyond 2^31 elements are refused (no frame comes near). */
#define MAX_NUMEL ((int64_t)1 << 31)

const char *ds_op_name(ds_op op)
{
    return (unsigned)op < DS_OP_COUNT ? ds_op_defs[op].name : "?";
}

ds_pred_kind ds_op_pred_kind(ds_op op)
{
    return (unsigned)op < DS_OP_COUNT ? ds_op_defs[op].pred : DS_PRED_LINEAR;
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
    ds_sprog_free(m);
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

/* ---- shapes (the rules are the op table's) ----------------------------- */

/* Runs l's shape rule on its producers' out_shapes in m; l may be a copy. */
static int shape_of(const ds_model *m, ds_layer *l, ds_error *err)
{
    if ((unsigned)l->op >= DS_OP_COUNT || !ds_op_defs[l->op].shape)
        return ds_layer_shape_err(err, m, l, NULL, "op %d has no shape rule", (int)l->op);
    const ds_op_def *d = &ds_op_defs[l->op];
    if (d->arity >= 0 ? l->n_inputs != d->arity : l->n_inputs < 1)
        return ds_layer_shape_err(err, m, l, NULL, "%d inputs, %s%d expected", l->n_inputs,
                                  d->arity < 0 ? "at least " : "", d->arity < 0 ? 1 : d->arity);
    const ds_shape *small[16], **in = small;
    if (l->n_inputs > 16 && !(in = malloc((size_t)l->n_inputs * sizeof *in)))
        return ds_layer_shape_err(err, m, l, NULL, "out of memory");
    int rc = 0;
    for (int k = 0; k < l->n_inputs && !rc; k++) {
        int p = l->inputs[k];
        if (p < 0 || p >= l->id || m->layers[p].out_shape.ndim < 1)
            rc = ds_layer_shape_err(err, m, l, NULL, "input %d (layer %d) has no shape yet", k, p);
        else
            in[k] = &m->layers[p].out_shape;
    }
    if (!rc)
        rc = d->shape(m, l, in, err);
    int64_t numel = 1;
    for (int k = 0; !rc && k < l->out_shape.ndim; k++) {
        numel *= l->out_shape.dims[k];
        if (numel > MAX_NUMEL)
            rc = ds_layer_shape_err(err, m, l, in[0], "output of more than 2^31 elements");
    }
    if (in != small)
        free(in);
    return rc;
}

int ds_model_shape_layer(ds_model *m, int id, ds_error *err)
{
    if (!m || id < 1 || id >= m->n_layers)
        return ds_errorf(err, "%s: no layer %d to shape", m && m->name ? m->name : "model", id);
    return shape_of(m, &m->layers[id], err);
}

/* A parameter tensor the kernels read: absent (rank 0) or float32 data of
 * its shape. */
static int param_ok(const ds_tensor *t)
{
    return t->shape.ndim == 0 ||
           (t->dtype == DS_F32 && t->data && ds_shape_numel(&t->shape) >= 1 && t->cap >= ds_tensor_bytes(t));
}

int ds_layer_check(const ds_model *m, int id, ds_error *err)
{
    if (!m || id < 1 || id >= m->n_layers)
        return ds_errorf(err, "%s: no layer %d", m && m->name ? m->name : "model", id);
    const ds_layer *l = &m->layers[id];
    if (l->op == DS_OP_INPUT)
        return 0; /* supplied, never computed */
    if (!param_ok(&l->weight) || !param_ok(&l->bias))
        return ds_layer_shape_err(err, m, l, NULL, "weight or bias is not a float32 tensor holding its data");
    ds_layer again = *l; /* shares the parameters; the rule only reads them */
    if (shape_of(m, &again, err))
        return -1;
    if (!ds_shape_equal(&again.out_shape, &l->out_shape) || again.axis != l->axis ||
        memcmp(again.pads, l->pads, sizeof l->pads) || memcmp(again.kernel, l->kernel, sizeof l->kernel)) {
        char a[64], b[64];
        return ds_layer_shape_err(err, m, l, &m->layers[l->inputs[0]].out_shape,
                                  "out_shape %s or attributes differ from the shape rule's (%s): "
                                  "ds_model_set_input not run?",
                                  ds_shape_str(&l->out_shape, a, sizeof a),
                                  ds_shape_str(&again.out_shape, b, sizeof b));
    }
    return 0;
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
    int sv = 0; /* shape arithmetic runs as soon as the layers it reads are shaped */
    for (int i = 1; i < m->n_layers; i++)
        if (ds_sprog_eval(m, i, &sv, err) || ds_model_shape_layer(m, i, err))
            return -1;
    return ds_sprog_eval(m, m->n_layers, &sv, err);
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
    if (l->out_shape.ndim == 0 || (unsigned)l->op >= DS_OP_COUNT)
        return 0;
    if (ds_op_defs[l->op].flops)
        return ds_op_defs[l->op].flops(m, l);
    return (double)ds_shape_numel(&l->out_shape); /* one per output element */
}
