/* zoo.c - writes the built-in trunks as ONNX (see zoo.h).
 *
 * The ModelProto is assembled from malloc'd pieces only, so that
 * protobuf_c_message_free_unpacked can release all of it at the end. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "model/onnx.pb-c.h"
#include "model/zoo.h"

typedef struct zb {
    Onnx__GraphProto *g;
    size_t cap_nodes, cap_inits;
    uint64_t rng;
    int have_spare;
    double spare;
    int oom;
} zb;

/* ---- random numbers ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 53 random bits, never 0. */
static double uniform(zb *b)
{
    return ((double)(splitmix64(&b->rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double normal(zb *b)
{
    if (b->have_spare) {
        b->have_spare = 0;
        return b->spare;
    }
    double r = sqrt(-2.0 * log(uniform(b))), t = 2.0 * M_PI * uniform(b);
    b->spare = r * sin(t);
    b->have_spare = 1;
    return r * cos(t);
}

/* ---- proto pieces ------------------------------------------------------ */

static void *zalloc(zb *b, size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p)
        b->oom = 1;
    return p;
}

static char *zstrdup(zb *b, const char *s)
{
    char *p = strdup(s);
    if (!p)
        b->oom = 1;
    return p;
}

/* Room for one more pointer in arr (n in use). */
static int grow(zb *b, void ***arr, size_t n, size_t *cap)
{
    if (ds_grow((void **)arr, cap, n + 1, sizeof(void *), NULL)) {
        b->oom = 1;
        return -1;
    }
    return 0;
}

/* A float initializer; returns its data to fill, or NULL when out of memory. */
static float *initializer(zb *b, const char *name, int ndim, const int64_t *dims)
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

static Onnx__NodeProto *node(zb *b, const char *op, const char *name, int n_in, const char *const *inputs)
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
    n->output = zalloc(b, sizeof(char *));
    if (!n->input || !n->output)
        return NULL;
    for (int i = 0; i < n_in; i++)
        n->input[n->n_input++] = zstrdup(b, inputs[i]);
    n->output[n->n_output++] = zstrdup(b, name); /* a node's output is named after it */
    return n;
}

static Onnx__AttributeProto *attr(zb *b, Onnx__NodeProto *n, const char *name,
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

static void attr_ints(zb *b, Onnx__NodeProto *n, const char *name, int count, ...)
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

static void attr_int(zb *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) {
        a->has_i = 1;
        a->i = v;
    }
}

static void attr_float(zb *b, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) {
        a->has_f = 1;
        a->f = v;
    }
}

/* A float tensor of 1 x channels x ? x ?: the input gets the symbolic dims
 * H and W, the output leaves them unnamed (the ONNX checker wants a shape). */
static Onnx__ValueInfoProto *value_info(zb *b, const char *name, int channels, int is_input)
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
static void join(char *dst, size_t n, const char *a, const char *b)
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

static void conv(zb *b, const char *name, const char *in, int cin, int cout, int k, int s, int p, int bias)
{
    char wname[160];
    join(wname, sizeof wname, name, ".weight");
    char bname[160];
    join(bname, sizeof bname, name, ".bias");
    const char *inputs[3] = {in, wname, bname};
    Onnx__NodeProto *n = node(b, "Conv", name, bias ? 3 : 2, inputs);
    attr_int(b, n, "group", 1);
    attr_ints(b, n, "kernel_shape", 2, k, k);
    attr_ints(b, n, "pads", 4, p, p, p, p);
    attr_ints(b, n, "strides", 2, s, s);
    attr_ints(b, n, "dilations", 2, 1, 1);
    int64_t wd[4] = {cout, cin, k, k};
    float *w = initializer(b, wname, 4, wd);
    if (!w)
        return;
    double fan_in = (double)cin * k * k, std = sqrt(2.0 / fan_in);
    for (int64_t i = 0; i < (int64_t)cout * cin * k * k; i++)
        w[i] = (float)(normal(b) * std);
    if (bias) {
        int64_t bd[1] = {cout};
        float *bv = initializer(b, bname, 1, bd);
        for (int i = 0; bv && i < cout; i++)
            bv[i] = (float)(0.02 * (uniform(b) - 0.5));
    }
}

static void batchnorm(zb *b, const char *name, const char *in, int ch, float eps)
{
    static const char *const suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    char pn[4][160];
    const char *inputs[5] = {in, pn[0], pn[1], pn[2], pn[3]};
    for (int i = 0; i < 4; i++)
        snprintf(pn[i], sizeof pn[i], "%s.%s", name, suffix[i]);
    Onnx__NodeProto *n = node(b, "BatchNormalization", name, 5, inputs);
    attr_float(b, n, "epsilon", eps);
    attr_float(b, n, "momentum", 0.9f);
    int64_t d[1] = {ch};
    for (int i = 0; i < 4; i++) {
        float *v = initializer(b, pn[i], 1, d);
        for (int c = 0; v && c < ch; c++) {
            double u = uniform(b) - 0.5;
            /* gamma ~1, beta ~0, mean ~0, var ~1: near the identity. */
            v[c] = (float)(i == 0 ? 1.0 + 0.2 * u : i == 3 ? 1.0 + 0.2 * u : 0.1 * u);
        }
    }
}

static void unary(zb *b, const char *op, const char *name, const char *in)
{
    node(b, op, name, 1, &in);
}

static void pool(zb *b, const char *op, const char *name, const char *in, int k, int s, int p, int ceil_mode)
{
    Onnx__NodeProto *n = node(b, op, name, 1, &in);
    attr_int(b, n, "ceil_mode", ceil_mode);
    attr_ints(b, n, "kernel_shape", 2, k, k);
    attr_ints(b, n, "pads", 4, p, p, p, p);
    attr_ints(b, n, "strides", 2, s, s);
}

/* torchvision BasicConv2d: conv (no bias) + BN(eps 1e-3) + relu.  Writes
 * the relu's name into out. */
static void basic_conv(zb *b, const char *prefix, const char *in, int cin, int cout, int k, int s, int p,
                       char *out, size_t outlen)
{
    char c[160], bn[160];
    join(c, sizeof c, prefix, ".conv");
    join(bn, sizeof bn, prefix, ".bn");
    join(out, outlen, prefix, ".relu");
    conv(b, c, in, cin, cout, k, s, p, 0);
    batchnorm(b, bn, c, cout, 1e-3f);
    unary(b, "Relu", out, bn);
}

/* ---- the trunks -------------------------------------------------------- */

/* Writes the last layer's output name into last. */
static void build_alexnet(zb *b, char *last, size_t len)
{
    conv(b, "features.0", "input", 3, 64, 11, 4, 2, 1);
    unary(b, "Relu", "features.1", "features.0");
    pool(b, "MaxPool", "features.2", "features.1", 3, 2, 0, 0);
    conv(b, "features.3", "features.2", 64, 192, 5, 1, 2, 1);
    unary(b, "Relu", "features.4", "features.3");
    pool(b, "MaxPool", "features.5", "features.4", 3, 2, 0, 0);
    conv(b, "features.6", "features.5", 192, 384, 3, 1, 1, 1);
    unary(b, "Relu", "features.7", "features.6");
    conv(b, "features.8", "features.7", 384, 256, 3, 1, 1, 1);
    unary(b, "Relu", "features.9", "features.8");
    conv(b, "features.10", "features.9", 256, 256, 3, 1, 1, 1);
    unary(b, "Relu", "features.11", "features.10");
    pool(b, "MaxPool", "features.12", "features.11", 3, 2, 0, 0);
    snprintf(last, len, "features.12");
}

/* cfg: channel counts, 0 = maxpool 2/2. */
static void build_vgg(zb *b, const int *cfg, int n, char *last, size_t len)
{
    char prev[32] = "input", cur[32];
    int ch = 3, idx = 0;
    for (int i = 0; i < n; i++) {
        snprintf(cur, sizeof cur, "features.%d", idx++);
        if (cfg[i] == 0) {
            pool(b, "MaxPool", cur, prev, 2, 2, 0, 0);
        } else {
            conv(b, cur, prev, ch, cfg[i], 3, 1, 1, 1);
            ch = cfg[i];
            char relu[32];
            snprintf(relu, sizeof relu, "features.%d", idx++);
            unary(b, "Relu", relu, cur);
            snprintf(cur, sizeof cur, "%s", relu);
        }
        snprintf(prev, sizeof prev, "%s", cur);
    }
    snprintf(last, len, "%s", prev);
}

static void inception(zb *b, const char *name, const char *in, int cin, int c1, int c3r, int c3, int c5r, int c5,
                      int pp, char *out, size_t outlen)
{
    char p[160], o1[160], t[160], o2[160], o3[160], mp[160], o4[160];
    join(p, sizeof p, name, ".branch1");
    basic_conv(b, p, in, cin, c1, 1, 1, 0, o1, sizeof o1);
    join(p, sizeof p, name, ".branch2.0");
    basic_conv(b, p, in, cin, c3r, 1, 1, 0, t, sizeof t);
    join(p, sizeof p, name, ".branch2.1");
    basic_conv(b, p, t, c3r, c3, 3, 1, 1, o2, sizeof o2);
    join(p, sizeof p, name, ".branch3.0");
    basic_conv(b, p, in, cin, c5r, 1, 1, 0, t, sizeof t);
    /* torchvision's known quirk: a 3x3 conv where the paper has 5x5. */
    join(p, sizeof p, name, ".branch3.1");
    basic_conv(b, p, t, c5r, c5, 3, 1, 1, o3, sizeof o3);
    join(mp, sizeof mp, name, ".branch4.0");
    pool(b, "MaxPool", mp, in, 3, 1, 1, 1);
    join(p, sizeof p, name, ".branch4.1");
    basic_conv(b, p, mp, cin, pp, 1, 1, 0, o4, sizeof o4);
    join(out, outlen, name, ".concat");
    const char *inputs[4] = {o1, o2, o3, o4};
    Onnx__NodeProto *n = node(b, "Concat", out, 4, inputs);
    attr_int(b, n, "axis", 1);
}

static void build_googlenet(zb *b, char *last, size_t len)
{
    char x[160], y[160];
    basic_conv(b, "conv1", "input", 3, 64, 7, 2, 3, x, sizeof x);
    pool(b, "MaxPool", "maxpool1", x, 3, 2, 0, 1);
    basic_conv(b, "conv2", "maxpool1", 64, 64, 1, 1, 0, x, sizeof x);
    basic_conv(b, "conv3", x, 64, 192, 3, 1, 1, y, sizeof y);
    pool(b, "MaxPool", "maxpool2", y, 3, 2, 0, 1);
    static const struct {
        const char *name;
        int cin, c1, c3r, c3, c5r, c5, pp;
        const char *pool_after; /* maxpool following this block */
        int pk;
    } blocks[] = {
        {"inception3a", 192, 64, 96, 128, 16, 32, 32, NULL, 0},
        {"inception3b", 256, 128, 128, 192, 32, 96, 64, "maxpool3", 3},
        {"inception4a", 480, 192, 96, 208, 16, 48, 64, NULL, 0},
        {"inception4b", 512, 160, 112, 224, 24, 64, 64, NULL, 0},
        {"inception4c", 512, 128, 128, 256, 24, 64, 64, NULL, 0},
        {"inception4d", 512, 112, 144, 288, 32, 64, 64, NULL, 0},
        {"inception4e", 528, 256, 160, 320, 32, 128, 128, "maxpool4", 2},
        {"inception5a", 832, 256, 160, 320, 32, 128, 128, NULL, 0},
        {"inception5b", 832, 384, 192, 384, 48, 128, 128, NULL, 0},
    };
    snprintf(x, sizeof x, "maxpool2");
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        inception(b, blocks[i].name, x, blocks[i].cin, blocks[i].c1, blocks[i].c3r, blocks[i].c3, blocks[i].c5r,
                  blocks[i].c5, blocks[i].pp, y, sizeof y);
        if (blocks[i].pool_after) {
            pool(b, "MaxPool", blocks[i].pool_after, y, blocks[i].pk, 2, 0, 1);
            snprintf(y, sizeof y, "%s", blocks[i].pool_after);
        }
        snprintf(x, sizeof x, "%s", y);
    }
    snprintf(last, len, "%s", x);
}

static void bottleneck(zb *b, const char *name, const char *in, int cin, int planes, int stride, int downsample,
                       char *out, size_t outlen)
{
    char c1[160], b1[160], r1[160], c2[160], b2[160], r2[160], c3[160], b3[160], d0[160], d1[160], add[160];
    join(c1, sizeof c1, name, ".conv1");
    join(b1, sizeof b1, name, ".bn1");
    join(r1, sizeof r1, name, ".relu1");
    join(c2, sizeof c2, name, ".conv2");
    join(b2, sizeof b2, name, ".bn2");
    join(r2, sizeof r2, name, ".relu2");
    join(c3, sizeof c3, name, ".conv3");
    join(b3, sizeof b3, name, ".bn3");
    join(d0, sizeof d0, name, ".downsample.0");
    join(d1, sizeof d1, name, ".downsample.1");
    join(add, sizeof add, name, ".add");
    join(out, outlen, name, ".relu3");
    conv(b, c1, in, cin, planes, 1, 1, 0, 0);
    batchnorm(b, b1, c1, planes, 1e-5f);
    unary(b, "Relu", r1, b1);
    conv(b, c2, r1, planes, planes, 3, stride, 1, 0);
    batchnorm(b, b2, c2, planes, 1e-5f);
    unary(b, "Relu", r2, b2);
    conv(b, c3, r2, planes, planes * 4, 1, 1, 0, 0);
    batchnorm(b, b3, c3, planes * 4, 1e-5f);
    const char *identity = in;
    if (downsample) {
        conv(b, d0, in, cin, planes * 4, 1, stride, 0, 0);
        batchnorm(b, d1, d0, planes * 4, 1e-5f);
        identity = d1;
    }
    const char *inputs[2] = {b3, identity};
    node(b, "Add", add, 2, inputs);
    unary(b, "Relu", out, add);
}

static void build_resnet50(zb *b, char *last, size_t len)
{
    conv(b, "conv1", "input", 3, 64, 7, 2, 3, 0);
    batchnorm(b, "bn1", "conv1", 64, 1e-5f);
    unary(b, "Relu", "relu", "bn1");
    pool(b, "MaxPool", "maxpool", "relu", 3, 2, 1, 0);
    static const int blocks[4] = {3, 4, 6, 3};
    char x[160] = "maxpool", y[160], name[64];
    int cin = 64;
    for (int s = 0; s < 4; s++) {
        int planes = 64 << s;
        for (int i = 0; i < blocks[s]; i++) {
            snprintf(name, sizeof name, "layer%d.%d", s + 1, i);
            bottleneck(b, name, x, cin, planes, i == 0 && s > 0 ? 2 : 1, i == 0, y, sizeof y);
            cin = planes * 4;
            snprintf(x, sizeof x, "%s", y);
        }
    }
    snprintf(last, len, "%s", x);
}

/* ---- entry points ------------------------------------------------------ */

static const char *const names[] = {"alexnet", "vgg16", "vgg19", "googlenet", "resnet50", NULL};

const char *const *ds_zoo_names(void)
{
    return names;
}

int ds_zoo_build(const char *name, uint64_t seed, uint8_t **onnx_bytes, size_t *len, ds_error *err)
{
    static const int vgg16[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
    static const int vgg19[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0,
                                512, 512, 512, 512, 0, 512, 512, 512, 512, 0};
    *onnx_bytes = NULL;
    *len = 0;
    int which = -1;
    for (int i = 0; name && names[i]; i++)
        if (!strcmp(name, names[i]))
            which = i;
    if (which < 0)
        return ds_errorf(err, "zoo: unknown model \"%.60s\" (known: alexnet, vgg16, vgg19, googlenet, resnet50)",
                         name ? name : "");

    zb b;
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

    char last[160] = "";
    static const int out_channels[] = {256, 512, 512, 1024, 2048};
    switch (which) {
    case 0: build_alexnet(&b, last, sizeof last); break;
    case 1: build_vgg(&b, vgg16, (int)(sizeof vgg16 / sizeof vgg16[0]), last, sizeof last); break;
    case 2: build_vgg(&b, vgg19, (int)(sizeof vgg19 / sizeof vgg19[0]), last, sizeof last); break;
    case 3: build_googlenet(&b, last, sizeof last); break;
    default: build_resnet50(&b, last, sizeof last); break;
    }
    g->input = zalloc(&b, sizeof *g->input);
    g->output = zalloc(&b, sizeof *g->output);
    if (g->input && (g->input[0] = value_info(&b, "input", 3, 1)))
        g->n_input = 1;
    if (g->output && (g->output[0] = value_info(&b, last, out_channels[which], 0)))
        g->n_output = 1;

    int rc = 0;
    if (b.oom) {
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
