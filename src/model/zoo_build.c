/* zoo_build.c - the zoo's ONNX builder (see zoo_build.h).
 *
 * The ModelProto is assembled from malloc'd pieces only, so that
 * protobuf_c_message_free_unpacked can release all of it at the end. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "model/zoo_build.h"

/* ---- random numbers ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 53 random bits, never 0. */
double ds_zb_uniform(ds_zb *b)
{
    return ((double)(splitmix64(&b->rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double ds_zb_normal(ds_zb *b)
{
    if (b->have_spare) {
        b->have_spare = 0;
        return b->spare;
    }
    double r = sqrt(-2.0 * log(ds_zb_uniform(b))), t = 2.0 * M_PI * ds_zb_uniform(b);
    b->spare = r * sin(t);
    b->have_spare = 1;
    return r * cos(t);
}

/* ---- proto pieces ------------------------------------------------------ */

static void *zalloc(ds_zb *b, size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p)
        b->oom = 1;
    return p;
}

static char *zstrdup(ds_zb *b, const char *s)
{
    char *p = strdup(s);
    if (!p)
        b->oom = 1;
    return p;
}

/* Room for one more pointer in arr (n in use). */
static int grow(ds_zb *b, void ***arr, size_t n, size_t *cap)
{
    if (ds_grow((void **)arr, cap, n + 1, sizeof(void *), NULL)) {
        b->oom = 1;
        return -1;
    }
    return 0;
}

/* A float initializer; returns its data to fill, or NULL when out of memory. */
float *ds_zb_initializer(ds_zb *b, const char *name, int ndim, const int64_t *dims)
{
    Onnx__GraphProto *g = b->g;
    if (b->oom || grow(b, (void ***)&g->initializer, g->n_initializer, &b->cap_inits))
        return NULL;
    Onnx__TensorProto *t = zalloc(b, sizeof *t);
    if (!t)
        return NULL;
    onnx__tensor_proto__init(t);
    g->initializer[g->n_initializer++] = t;
    t->name = zstrdup(b, name);
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->dims = zalloc(b, (size_t)ndim * sizeof(int64_t));
    if (!t->dims)
        return NULL;
    t->n_dims = (size_t)ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->dims[i] = dims[i];
        numel *= (size_t)dims[i];
    }
    t->raw_data.data = zalloc(b, numel * sizeof(float));
    if (!t->raw_data.data)
        return NULL;
    t->raw_data.len = numel * sizeof(float);
    t->has_raw_data = 1;
    return (float *)t->raw_data.data;
}

Onnx__NodeProto *ds_zb_node_outs(ds_zb *b, const char *op, const char *name, int n_in, const char *const *inputs,
                                 int n_out)
{
    Onnx__GraphProto *g = b->g;
    if (b->oom || grow(b, (void ***)&g->node, g->n_node, &b->cap_nodes))
        return NULL;
    Onnx__NodeProto *n = zalloc(b, sizeof *n);
    if (!n)
        return NULL;
    onnx__node_proto__init(n);
    g->node[g->n_node++] = n;
    n->op_type = zstrdup(b, op);
    n->name = zstrdup(b, name);
    n->input = zalloc(b, (size_t)n_in * sizeof(char *));
    n->output = zalloc(b, (size_t)n_out * sizeof(char *));
    if (!n->input || !n->output)
        return NULL;
    for (int i = 0; i < n_in; i++)
        n->input[n->n_input++] = zstrdup(b, inputs[i]);
    for (int i = 0; i < n_out; i++) {
        char out[DS_ZB_NAME];
        if (n_out > 1)
            snprintf(out, sizeof out, "%s:%d", name, i);
        n->output[n->n_output++] = zstrdup(b, n_out > 1 ? out : name); /* outputs are named after the node */
    }
    return n;
}

Onnx__NodeProto *ds_zb_node(ds_zb *b, const char *op, const char *name, int n_in, const char *const *inputs)
{
    return ds_zb_node_outs(b, op, name, n_in, inputs, 1);
}

static Onnx__AttributeProto *attr(ds_zb *b, Onnx__NodeProto *n, const char *name,
                                  Onnx__AttributeProto__AttributeType type)
{
    if (!n || b->oom)
        return NULL;
    Onnx__AttributeProto **p = realloc(n->attribute, (n->n_attribute + 1) * sizeof *p);
    if (!p) {
        b->oom = 1;
        return NULL;
    }
    n->attribute = p;
    Onnx__AttributeProto *a = zalloc(b, sizeof *a);
    if (!a)
        return NULL;
    onnx__attribute_proto__init(a);
    p[n->n_attribute++] = a;
    a->name = zstrdup(b, name);
    a->has_type = 1;
    a->type = type;
    return a;
}

void ds_zb_attr_ints(ds_zb *b, Onnx__NodeProto *n, const char *name, int count, ...)
{
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    if (!a || !(a->ints = zalloc(b, (size_t)count * sizeof(int64_t))))
        return;
    va_list ap;
    va_start(ap, count);
    for (int i = 0; i < count; i++)
        a->ints[a->n_ints++] = va_arg(ap, int);
    va_end(ap);
}

void ds_zb_attr_int(ds_zb *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) {
        a->has_i = 1;
        a->i = v;
    }
}

void ds_zb_attr_float(ds_zb *b, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) {
        a->has_f = 1;
        a->f = v;
    }
}

/* A float tensor of 1 x channels x ? x ?: the input gets the symbolic dims
 * H and W, the output leaves them unnamed (the ONNX checker wants a shape). */
static Onnx__ValueInfoProto *value_info(ds_zb *b, const char *name, int channels, int is_input)
{
    Onnx__ValueInfoProto *v = zalloc(b, sizeof *v);
    Onnx__TypeProto *t = zalloc(b, sizeof *t);
    Onnx__TypeProto__Tensor *tt = zalloc(b, sizeof *tt);
    if (!v || !t || !tt) {
        free(v);
        free(t);
        free(tt);
        return NULL;
    }
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(t);
    onnx__type_proto__tensor__init(tt);
    v->name = zstrdup(b, name);
    v->type = t;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    Onnx__TensorShapeProto *s = zalloc(b, sizeof *s);
    if (!s)
        return v;
    onnx__tensor_shape_proto__init(s);
    tt->shape = s;
    s->dim = zalloc(b, 4 * sizeof *s->dim);
    if (!s->dim)
        return v;
    static const char *const params[4] = {NULL, NULL, "H", "W"};
    const int64_t values[4] = {1, channels, 0, 0};
    for (int i = 0; i < 4; i++) {
        Onnx__TensorShapeProto__Dimension *d = zalloc(b, sizeof *d);
        if (!d)
            return v;
        onnx__tensor_shape_proto__dimension__init(d);
        s->dim[s->n_dim++] = d;
        if (params[i] && is_input) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = zstrdup(b, params[i]);
        } else if (!params[i]) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = values[i];
        }
    }
    return v;
}

/* dst = a + b, cut to fit (names here are short; the cut only guards). */
void ds_zb_join(char *dst, size_t n, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > n - 1)
        la = n - 1;
    if (lb > n - 1 - la)
        lb = n - 1 - la;
    memcpy(dst, a, la);
    memcpy(dst + la, b, lb);
    dst[la + lb] = '\0';
}

/* ---- layers (each returns its output name, which is its node name) ----- */

void ds_zb_conv(ds_zb *b, const char *name, const char *in, int cin, int cout, int k, int s, int p, int groups,
                int bias)
{
    char wname[DS_ZB_NAME];
    ds_zb_join(wname, sizeof wname, name, ".weight");
    char bname[DS_ZB_NAME];
    ds_zb_join(bname, sizeof bname, name, ".bias");
    const char *inputs[3] = {in, wname, bname};
    Onnx__NodeProto *n = ds_zb_node(b, "Conv", name, bias ? 3 : 2, inputs);
    ds_zb_attr_int(b, n, "group", groups);
    ds_zb_attr_ints(b, n, "kernel_shape", 2, k, k);
    ds_zb_attr_ints(b, n, "pads", 4, p, p, p, p);
    ds_zb_attr_ints(b, n, "strides", 2, s, s);
    ds_zb_attr_ints(b, n, "dilations", 2, 1, 1);
    int64_t wd[4] = {cout, cin / groups, k, k};
    float *w = ds_zb_initializer(b, wname, 4, wd);
    if (!w)
        return;
    double fan_in = (double)(cin / groups) * k * k, std = sqrt(2.0 / fan_in);
    for (int64_t i = 0; i < (int64_t)cout * (cin / groups) * k * k; i++)
        w[i] = (float)(ds_zb_normal(b) * std);
    if (bias) {
        int64_t bd[1] = {cout};
        float *bv = ds_zb_initializer(b, bname, 1, bd);
        for (int i = 0; bv && i < cout; i++)
            bv[i] = (float)(0.02 * (ds_zb_uniform(b) - 0.5));
    }
}

void ds_zb_batchnorm(ds_zb *b, const char *name, const char *in, int ch, float eps)
{
    static const char *const suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    char pn[4][DS_ZB_NAME];
    const char *inputs[5] = {in, pn[0], pn[1], pn[2], pn[3]};
    for (int i = 0; i < 4; i++)
        snprintf(pn[i], sizeof pn[i], "%s.%s", name, suffix[i]);
    Onnx__NodeProto *n = ds_zb_node(b, "BatchNormalization", name, 5, inputs);
    ds_zb_attr_float(b, n, "epsilon", eps);
    ds_zb_attr_float(b, n, "momentum", 0.9f);
    int64_t d[1] = {ch};
    for (int i = 0; i < 4; i++) {
        float *v = ds_zb_initializer(b, pn[i], 1, d);
        for (int c = 0; v && c < ch; c++) {
            double u = ds_zb_uniform(b) - 0.5;
            /* gamma ~1, beta ~0, mean ~0, var ~1: near the identity. */
            v[c] = (float)(i == 0 ? 1.0 + 0.2 * u : i == 3 ? 1.0 + 0.2 * u : 0.1 * u);
        }
    }
}

void ds_zb_unary(ds_zb *b, const char *op, const char *name, const char *in)
{
    ds_zb_node(b, op, name, 1, &in);
}

void ds_zb_pool(ds_zb *b, const char *op, const char *name, const char *in, int k, int s, int p, int ceil_mode)
{
    Onnx__NodeProto *n = ds_zb_node(b, op, name, 1, &in);
    ds_zb_attr_int(b, n, "ceil_mode", ceil_mode);
    ds_zb_attr_ints(b, n, "kernel_shape", 2, k, k);
    ds_zb_attr_ints(b, n, "pads", 4, p, p, p, p);
    ds_zb_attr_ints(b, n, "strides", 2, s, s);
}

void ds_zb_binary(ds_zb *b, const char *op, const char *name, const char *x, const char *y)
{
    const char *inputs[2] = {x, y};
    ds_zb_node(b, op, name, 2, inputs);
}

void ds_zb_concat(ds_zb *b, const char *name, int n, const char *const *inputs)
{
    ds_zb_attr_int(b, ds_zb_node(b, "Concat", name, n, inputs), "axis", 1);
}

/* An initializer of data_type holding raw bytes. */
static void raw_initializer(ds_zb *b, const char *name, int data_type, int ndim, const int64_t *dims,
                            const void *data, size_t bytes)
{
    Onnx__GraphProto *g = b->g;
    if (b->oom || grow(b, (void ***)&g->initializer, g->n_initializer, &b->cap_inits))
        return;
    Onnx__TensorProto *t = zalloc(b, sizeof *t);
    if (!t)
        return;
    onnx__tensor_proto__init(t);
    g->initializer[g->n_initializer++] = t;
    t->name = zstrdup(b, name);
    t->has_data_type = 1;
    t->data_type = data_type;
    if (ndim && !(t->dims = zalloc(b, (size_t)ndim * sizeof(int64_t))))
        return;
    for (int i = 0; i < ndim; i++)
        t->dims[t->n_dims++] = dims[i];
    if (!(t->raw_data.data = zalloc(b, bytes)))
        return;
    memcpy(t->raw_data.data, data, bytes); /* raw_data is little-endian, as are our targets */
    t->raw_data.len = bytes;
    t->has_raw_data = 1;
}

void ds_zb_const_ints(ds_zb *b, const char *name, int count, const int64_t *values)
{
    int64_t d[1] = {count};
    raw_initializer(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, d, values, (size_t)count * sizeof(int64_t));
}

void ds_zb_const_float(ds_zb *b, const char *name, float value)
{
    raw_initializer(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL, &value, sizeof value);
}

void ds_zb_output(ds_zb *b, const char *name, int channels)
{
    if (b->n_outputs == DS_ZB_MAX_OUTPUTS) {
        b->oom = 1; /* a trunk bug; reported as failure to build */
        return;
    }
    ds_zb_join(b->outputs[b->n_outputs], DS_ZB_NAME, name, "");
    b->output_channels[b->n_outputs++] = channels;
}

int ds_zb_build(const char *name, ds_zb_trunk *trunk, uint64_t seed, uint8_t **onnx_bytes, size_t *len,
                ds_error *err)
{
    *onnx_bytes = NULL;
    *len = 0;
    ds_zb b;
    memset(&b, 0, sizeof b);
    b.rng = seed;
    Onnx__ModelProto *mp = zalloc(&b, sizeof *mp);
    Onnx__GraphProto *g = zalloc(&b, sizeof *g);
    Onnx__OperatorSetIdProto *ops = zalloc(&b, sizeof *ops);
    Onnx__OperatorSetIdProto **opsv = zalloc(&b, sizeof *opsv);
    if (b.oom) {
        free(mp);
        free(g);
        free(ops);
        free(opsv);
        return ds_errorf(err, "zoo:%s: out of memory", name);
    }
    onnx__model_proto__init(mp);
    onnx__graph_proto__init(g);
    onnx__operator_set_id_proto__init(ops);
    mp->graph = g;
    mp->has_ir_version = 1;
    mp->ir_version = 7;
    mp->producer_name = zstrdup(&b, "deltaslice");
    mp->producer_version = zstrdup(&b, DS_VERSION);
    ops->domain = zstrdup(&b, "");
    ops->has_version = 1;
    ops->version = 13;
    opsv[0] = ops;
    mp->opset_import = opsv;
    mp->n_opset_import = 1;
    g->name = zstrdup(&b, name);
    b.g = g;

    trunk(&b);
    g->input = zalloc(&b, sizeof *g->input);
    g->output = zalloc(&b, DS_ZB_MAX_OUTPUTS * sizeof *g->output);
    if (g->input && (g->input[0] = value_info(&b, "input", 3, 1)))
        g->n_input = 1;
    for (int i = 0; g->output && i < b.n_outputs; i++)
        if ((g->output[g->n_output] = value_info(&b, b.outputs[i], b.output_channels[i], 0)))
            g->n_output++;

    int rc = 0;
    if (b.oom || !b.n_outputs) {
        rc = ds_errorf(err, "zoo:%s: out of memory", name);
    } else {
        size_t n = protobuf_c_message_get_packed_size(&mp->base);
        *onnx_bytes = malloc(n ? n : 1);
        if (!*onnx_bytes) {
            rc = ds_errorf(err, "zoo:%s: out of memory for %zu bytes", name, n);
        } else {
            *len = protobuf_c_message_pack(&mp->base, *onnx_bytes);
        }
    }
    protobuf_c_message_free_unpacked(&mp->base, NULL);
    return rc;
}
