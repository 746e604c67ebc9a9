/* onnx_load.c - ONNX bytes -> layer DAG (see model.h).
 *
 * Steps: unpack with protobuf-c; index every value name (initializers, graph
 * inputs, node outputs); sort the nodes topologically (file order where it
 * allows); then turn each node into a layer (the op table's parser for its
 * op_type), an alias (Identity, Dropout, Constant) or a fold
 * (BatchNormalization into Conv, Add into MatMul).
 * Nothing is trusted: every name, count, attribute and tensor size is checked
 * and a failure names the node and op. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/onnx.pb-c.h"
#include "model/onnx_ctx.h"
#include "model/op_table.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ONNX raw_data is little-endian; this loader reads it in place"
#endif

/* One parameter tensor may hold at most 2^31 elements; attribute values are
 * bounded so that shape arithmetic cannot overflow int64. */
#define MAX_NUMEL ((int64_t)1 << 31)
#define MAX_ATTR ((int64_t)1 << 16)
#define MAX_INPUT_BYTES ((size_t)1 << 31)

enum { V_LAYER = 1, V_CONST, V_UNUSABLE, V_SVAL };

typedef struct value {
    const char *name;
    int kind;      /* 0 until resolved */
    int layer;     /* V_LAYER */
    int cst;       /* V_CONST: index into consts */
    int producer;  /* node index, -1 for initializers and graph inputs */
    int refs;      /* node inputs and graph outputs naming it */
    const char *why; /* V_UNUSABLE: what it is */
    int sv;        /* V_SVAL: index into the model's shape program */
} value;

typedef struct cst {
    Onnx__TensorProto *t;
    int refs;      /* uses through any alias; 1 = its data may be taken */
    int borrowed;  /* data not owned by the unpacked message (bound input) */
} cst;

typedef struct ds_onnx_ctx {
    const char *label;
    ds_error *err;
    Onnx__ModelProto *mp;
    Onnx__GraphProto *g;
    value *vals;
    int n_vals;
    int *table; /* open-addressing hash: value index or -1 */
    size_t table_mask;
    cst *consts;
    int n_consts;
    Onnx__TensorProto *bound_protos;
    ds_model *m;
    int *layer_refs;   /* per layer: uses of its output through any alias */
    char *from_matmul; /* per layer: a GEMM from MatMul that has no bias yet */
    int opset;
} ctx;

/* ---- errors ------------------------------------------------------------ */

static const char *node_name(const Onnx__NodeProto *n)
{
    if (n->name && n->name[0])
        return n->name;
    if (n->n_output && n->output[0] && n->output[0][0])
        return n->output[0];
    return "?";
}

static const char *op_type(const Onnx__NodeProto *n)
{
    return n->op_type && n->op_type[0] ? n->op_type : "?";
}

static int node_err(ctx *c, const Onnx__NodeProto *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int node_err(ctx *c, const Onnx__NodeProto *n, const char *fmt, ...)
{
    char msg[DS_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ds_errorf(c->err, "%s: node \"%.80s\" (%.40s): %s", c->label, node_name(n), op_type(n), msg);
}

static int graph_err(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int graph_err(ctx *c, const char *fmt, ...)
{
    char msg[DS_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ds_errorf(c->err, "%s: %s", c->label, msg);
}

/* Attribute strings are bytes: show them printable and short. */
static const char *printable(const ProtobufCBinaryData *b, char *buf, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < b->len && j + 5 < len; i++) {
        unsigned ch = b->data[i];
        if (ch >= 32 && ch < 127 && ch != '"' && ch != '\\')
            buf[j++] = (char)ch;
        else
            j += (size_t)snprintf(buf + j, len - j, "\\x%02x", ch);
    }
    buf[j] = '\0';
    return buf;
}

/* ---- value index ------------------------------------------------------- */

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int val_find(const ctx *c, const char *name)
{
    size_t i = (size_t)fnv1a(name, strlen(name)) & c->table_mask;
    for (;;) {
        int v = c->table[i];
        if (v < 0)
            return -1;
        if (!strcmp(c->vals[v].name, name))
            return v;
        i = (i + 1) & c->table_mask;
    }
}

/* Adds a value; -1 when the name exists already. */
static int val_add(ctx *c, const char *name, int producer)
{
    size_t i = (size_t)fnv1a(name, strlen(name)) & c->table_mask;
    while (c->table[i] >= 0) {
        if (!strcmp(c->vals[c->table[i]].name, name))
            return -1;
        i = (i + 1) & c->table_mask;
    }
    int v = c->n_vals++;
    memset(&c->vals[v], 0, sizeof c->vals[v]);
    c->vals[v].name = name;
    c->vals[v].producer = producer;
    c->vals[v].layer = -1;
    c->vals[v].cst = -1;
    c->vals[v].sv = -1;
    c->table[i] = v;
    return v;
}

/* ---- attributes -------------------------------------------------------- */

static const Onnx__AttributeProto *attr_find(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name))
            return n->attribute[i];
    return NULL;
}

/* Every attribute of the node must be one this loader understands. */
static int attr_check_known(ctx *c, const Onnx__NodeProto *n, const char *const *known)
{
    for (size_t i = 0; i < n->n_attribute; i++) {
        const char *name = n->attribute[i]->name ? n->attribute[i]->name : "";
        int ok = 0;
        for (const char *const *k = known; *k && !ok; k++)
            ok = !strcmp(*k, name);
        if (!ok)
            return node_err(c, n, "unsupported attribute %.60s", name);
        for (size_t j = 0; j < i; j++)
            if (n->attribute[j]->name && !strcmp(n->attribute[j]->name, name))
                return node_err(c, n, "attribute %.60s given twice", name);
    }
    return 0;
}

/* Older files leave `type` unset: then go by which field is present. */
static int attr_is(const Onnx__AttributeProto *a, Onnx__AttributeProto__AttributeType t)
{
    if (a->has_type)
        return a->type == t;
    switch (t) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return a->has_i;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return a->has_f;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return a->has_s;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return a->n_ints > 0 || !(a->has_i || a->has_f || a->has_s || a->t);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return a->t != NULL;
    default: return 0;
    }
}

static int attr_int(ctx *c, const Onnx__NodeProto *n, const char *name, int64_t def,
                    int64_t lo, int64_t hi, int64_t *out)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    *out = def;
    if (!a)
        return 0;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT))
        return node_err(c, n, "attribute %s must be an int", name);
    if (a->i < lo || a->i > hi)
        return node_err(c, n, "unsupported attribute %s=%" PRId64 " (expected %" PRId64 "..%" PRId64 ")",
                        name, a->i, lo, hi);
    *out = a->i;
    return 0;
}

static int attr_float(ctx *c, const Onnx__NodeProto *n, const char *name, float def, float *out)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    *out = def;
    if (!a)
        return 0;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT))
        return node_err(c, n, "attribute %s must be a float", name);
    if (!isfinite(a->f))
        return node_err(c, n, "unsupported attribute %s=%g", name, (double)a->f);
    *out = a->f;
    return 0;
}

/* Reads exactly `want` ints in lo..hi; *given = 0 when absent. */
static int attr_ints(ctx *c, const Onnx__NodeProto *n, const char *name, size_t want,
                     int64_t lo, int64_t hi, int *out, int *given)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    *given = 0;
    if (!a)
        return 0;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS))
        return node_err(c, n, "attribute %s must be a list of ints", name);
    if (a->n_ints != want)
        return node_err(c, n, "unsupported attribute %s with %zu values (only 2-D: %zu expected)",
                        name, a->n_ints, want);
    for (size_t i = 0; i < want; i++) {
        if (a->ints[i] < lo || a->ints[i] > hi)
            return node_err(c, n, "unsupported attribute %s value %" PRId64 " (expected %" PRId64 "..%" PRId64 ")",
                            name, a->ints[i], lo, hi);
        out[i] = (int)a->ints[i];
    }
    *given = 1;
    return 0;
}

static int attr_auto_pad(ctx *c, const Onnx__NodeProto *n, int *out)
{
    const Onnx__AttributeProto *a = attr_find(n, "auto_pad");
    *out = 0;
    if (!a)
        return 0;
    if (!attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING))
        return node_err(c, n, "attribute auto_pad must be a string");
    static const char *const modes[] = {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"};
    for (int i = 0; i < 4; i++)
        if (a->s.len == strlen(modes[i]) && !memcmp(a->s.data, modes[i], a->s.len)) {
            *out = i;
            return 0;
        }
    char buf[64];
    return node_err(c, n, "unsupported attribute auto_pad=\"%s\"", printable(&a->s, buf, sizeof buf));
}

/* ---- tensors ----------------------------------------------------------- */

static int proto_numel(const Onnx__TensorProto *t, int64_t *numel, char *why, size_t whylen)
{
    int64_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || t->dims[i] > MAX_NUMEL) {
            snprintf(why, whylen, "dimension %zu is %" PRId64, i, t->dims[i]);
            return -1;
        }
        n *= t->dims[i];
        if (n > MAX_NUMEL) {
            snprintf(why, whylen, "more than %" PRId64 " elements", MAX_NUMEL);
            return -1;
        }
    }
    *numel = n;
    return 0;
}

static const char *dtype_name(int32_t t)
{
    static const char *const names[] = {"undefined", "float", "uint8", "int8", "uint16", "int16",
                                        "int32", "int64", "string", "bool", "float16", "double",
                                        "uint32", "uint64", "complex64", "complex128", "bfloat16"};
    return t >= 0 && t < (int32_t)(sizeof names / sizeof names[0]) ? names[t] : "unknown";
}

/* Float32 data of a TensorProto into out (1..4 dims; a scalar becomes [1]).
 * take: the proto's raw_data buffer may be taken over instead of copied. */
static int proto_to_tensor(Onnx__TensorProto *t, int take, ds_tensor *out, char *why, size_t whylen)
{
    int64_t numel;
    memset(out, 0, sizeof *out);
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        snprintf(why, whylen, "external data is not supported");
        return -1;
    }
    if (!t->has_data_type || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        snprintf(why, whylen, "element type is %s, float expected", dtype_name(t->has_data_type ? t->data_type : 0));
        return -1;
    }
    if (t->n_dims > DS_MAX_DIMS) {
        snprintf(why, whylen, "%zu dimensions (at most %d supported)", t->n_dims, DS_MAX_DIMS);
        return -1;
    }
    if (proto_numel(t, &numel, why, whylen))
        return -1;
    size_t bytes = (size_t)numel * sizeof(float);
    if (t->has_raw_data && t->raw_data.len) {
        if (t->raw_data.len != bytes) {
            snprintf(why, whylen, "raw_data holds %zu bytes, %zu expected for %" PRId64 " floats",
                     t->raw_data.len, bytes, numel);
            return -1;
        }
    } else if (t->n_float_data != (size_t)numel) {
        snprintf(why, whylen, "holds %zu floats, %" PRId64 " expected", t->n_float_data, numel);
        return -1;
    }
    ds_shape s = {0};
    s.ndim = t->n_dims ? (int)t->n_dims : 1;
    s.dims[0] = 1;
    for (size_t i = 0; i < t->n_dims; i++)
        s.dims[i] = t->dims[i];
    out->shape = s;
    out->dtype = DS_F32;
    if (take && t->has_raw_data && t->raw_data.len) {
        /* protobuf-c copied raw_data into its own malloc'd buffer: adopt it
         * rather than holding the weights twice. */
        out->data = t->raw_data.data;
        out->cap = t->raw_data.len;
        t->raw_data.data = NULL;
        t->raw_data.len = 0;
        t->has_raw_data = 0;
        return 0;
    }
    out->data = malloc(bytes ? bytes : 1);
    if (!out->data) {
        snprintf(why, whylen, "out of memory for %zu bytes", bytes);
        return -1;
    }
    out->cap = bytes ? bytes : 1;
    if (bytes)
        memcpy(out->data, t->has_raw_data && t->raw_data.len ? (const void *)t->raw_data.data
                                                             : (const void *)t->float_data, bytes);
    return 0;
}

/* An int64/int32 tensor (the node tests' shapes, axes, indices) made
 * float32 in place, exactly: values beyond 2^24 are refused. */
static int int_to_float(Onnx__TensorProto *t, char *why, size_t whylen)
{
    int64_t numel;
    int32_t dt = t->has_data_type ? t->data_type : 0;
    int is64 = dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    if ((!is64 && dt != ONNX__TENSOR_PROTO__DATA_TYPE__INT32) || t->n_dims > DS_MAX_DIMS ||
        proto_numel(t, &numel, why, whylen))
        return 0; /* not one: proto_to_tensor says why */
    int raw = t->has_raw_data && t->raw_data.len;
    size_t have = raw ? t->raw_data.len / (is64 ? 8 : 4) : is64 ? t->n_int64_data : t->n_int32_data;
    if (have != (size_t)numel || (raw && t->raw_data.len % (is64 ? 8 : 4))) {
        snprintf(why, whylen, "holds %zu integers, %" PRId64 " expected", have, numel);
        return -1;
    }
    float *f = malloc((size_t)numel * sizeof *f + 1);
    if (!f) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    for (int64_t i = 0; i < numel; i++) {
        int64_t v;
        int32_t v32;
        if (is64 && raw)
            memcpy(&v, t->raw_data.data + 8 * i, 8);
        else if (is64)
            v = t->int64_data[i];
        else if (raw)
            memcpy(&v32, t->raw_data.data + 4 * i, 4), v = v32;
        else
            v = t->int32_data[i];
        if (v > (1 << 24) || v < -(1 << 24)) {
            free(f);
            snprintf(why, whylen, "integer %" PRId64 " is not exact as a float", v);
            return -1;
        }
        f[i] = (float)v;
    }
    free(t->raw_data.data); /* protobuf-c's own buffers, freed with the message otherwise */
    t->raw_data.data = (uint8_t *)f;
    t->raw_data.len = (size_t)numel * sizeof *f;
    t->has_raw_data = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    return 0;
}

int ds_onnx_read_tensor(const void *buf, size_t len, ds_tensor *out, ds_error *err)
{
    if (!buf && len)
        return ds_errorf(err, "ONNX tensor: no data");
    if (len > MAX_INPUT_BYTES)
        return ds_errorf(err, "ONNX tensor: %zu bytes is too large", len);
    Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, len, buf);
    if (!t)
        return ds_errorf(err, "ONNX tensor: not a valid TensorProto (protobuf parse failed)");
    char why[160];
    ds_tensor tmp;
    int rc = int_to_float(t, why, sizeof why);
    if (!rc)
        rc = proto_to_tensor(t, 1, &tmp, why, sizeof why);
    if (rc)
        ds_errorf(err, "ONNX tensor \"%.80s\": %s", t->name ? t->name : "", why);
    onnx__tensor_proto__free_unpacked(t, NULL);
    if (rc)
        return -1;
    ds_tensor_free(out);
    *out = tmp;
    return 0;
}

/* ---- node inputs ------------------------------------------------------- */

static int input_count(const Onnx__NodeProto *n)
{
    /* Trailing empty names are absent optional inputs. */
    int k = (int)n->n_input;
    while (k > 0 && !n->input[k - 1][0])
        k--;
    return k;
}

static int check_arity(ctx *c, const Onnx__NodeProto *n, int lo, int hi, int max_out)
{
    int k = input_count(n);
    if (k < lo || k > hi) {
        if (lo == hi)
            return node_err(c, n, "has %d inputs, %d expected", k, lo);
        return node_err(c, n, "has %d inputs, %d..%d expected", k, lo, hi);
    }
    if (n->n_output < 1 || !n->output[0][0])
        return node_err(c, n, "has no output");
    for (size_t i = (size_t)max_out; i < n->n_output; i++)
        if (n->output[i][0])
            return node_err(c, n, "output %zu (\"%.60s\") is not supported", i, n->output[i]);
    return 0;
}

/* The value behind input i of the node, or NULL for an absent optional one. */
static value *node_input(ctx *c, const Onnx__NodeProto *n, int i)
{
    if (i >= (int)n->n_input || !n->input[i][0])
        return NULL;
    return &c->vals[val_find(c, n->input[i])];
}

/* Input i must be a layer's output; returns its id or -1 with an error. */
static int layer_input(ctx *c, const Onnx__NodeProto *n, int i)
{
    value *v = node_input(c, n, i);
    if (!v)
        return node_err(c, n, "input %d is missing", i);
    if (v->kind == V_UNUSABLE)
        return node_err(c, n, "input \"%.60s\" is %s, which is not supported", v->name, v->why);
    if (v->kind == V_CONST)
        return node_err(c, n, "input \"%.60s\" is a constant; only layer outputs are supported there", v->name);
    if (v->kind == V_SVAL)
        return node_err(c, n, "input \"%.60s\" is shape arithmetic (folded, not a tensor of data); only layer "
                              "outputs are supported there", v->name);
    return v->layer;
}

/* Input i must be a float constant: converted (or taken over) into out. */
static int const_input(ctx *c, const Onnx__NodeProto *n, int i, const char *what, ds_tensor *out)
{
    value *v = node_input(c, n, i);
    memset(out, 0, sizeof *out);
    if (!v)
        return node_err(c, n, "%s (input %d) is missing", what, i);
    if (v->kind != V_CONST)
        return node_err(c, n, "%s \"%.60s\" must be an initializer or Constant", what, v->name);
    cst *k = &c->consts[v->cst];
    char why[200];
    if (proto_to_tensor(k->t, k->refs == 1 && !k->borrowed, out, why, sizeof why))
        return node_err(c, n, "%s \"%.60s\": %s", what, v->name, why);
    return 0;
}

static int new_layer(ctx *c, const Onnx__NodeProto *n, ds_op op, int n_inputs)
{
    ds_model *m = c->m;
    ds_layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->id = m->n_layers;
    l->op = op;
    l->name = strdup(node_name(n));
    l->inputs = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof(int));
    if (!l->name || !l->inputs) {
        free(l->name);
        free(l->inputs);
        return node_err(c, n, "out of memory");
    }
    l->n_inputs = n_inputs;
    l->stride[0] = l->stride[1] = 1;
    l->dilation[0] = l->dilation[1] = 1;
    l->group = 1;
    m->n_layers++;
    return l->id;
}

/* Output 0 of the node now stands for layer id. */
static void bind_output(ctx *c, const Onnx__NodeProto *n, int id)
{
    value *v = &c->vals[val_find(c, n->output[0])];
    v->kind = V_LAYER;
    v->layer = id;
    c->layer_refs[id] = v->refs;
}

static void mark_unusable(ctx *c, const Onnx__NodeProto *n, size_t from, const char *why)
{
    for (size_t i = from; i < n->n_output; i++)
        if (n->output[i][0]) {
            value *v = &c->vals[val_find(c, n->output[i])];
            v->kind = V_UNUSABLE;
            v->why = why;
        }
}

/* ---- ops: the parsers of the op table (op_table.c) ---------------------- */

static int spatial_attrs(ctx *c, const Onnx__NodeProto *n, ds_layer *l, int need_kernel)
{
    int given, kernel[2];
    if (attr_ints(c, n, "kernel_shape", 2, 1, MAX_ATTR, kernel, &given))
        return -1;
    if (need_kernel && !given)
        return node_err(c, n, "attribute kernel_shape is missing");
    if (given && !need_kernel && (kernel[0] != l->kernel[0] || kernel[1] != l->kernel[1]))
        return node_err(c, n, "kernel_shape %dx%d does not match the weight's %dx%d", kernel[0], kernel[1],
                        l->kernel[0], l->kernel[1]);
    if (given) {
        l->kernel[0] = kernel[0];
        l->kernel[1] = kernel[1];
    }
    if (attr_ints(c, n, "strides", 2, 1, MAX_ATTR, l->stride, &given))
        return -1;
    int pads_given;
    if (attr_ints(c, n, "pads", 4, 0, MAX_ATTR, l->pads, &pads_given))
        return -1;
    if (attr_auto_pad(c, n, &l->auto_pad))
        return -1;
    if (l->auto_pad && pads_given)
        return node_err(c, n, "attributes auto_pad and pads are both given");
    return 0;
}

int ds_onnx_parse_conv(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    static const char *const known[] = {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", NULL};
    if (check_arity(c, n, 2, 3, 1) || attr_check_known(c, n, known))
        return -1;
    int x = layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int id = new_layer(c, n, DS_OP_CONV, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &c->m->layers[id];
    l->inputs[0] = x;
    if (const_input(c, n, 1, "weight", &l->weight))
        return -1;
    if (l->weight.shape.ndim != 4)
        return node_err(c, n, "weight has %d dimensions; only 2-D convolution (4-D weight) is supported",
                        l->weight.shape.ndim);
    const int64_t *wd = l->weight.shape.dims;
    if (wd[0] < 1 || wd[1] < 1 || wd[2] < 1 || wd[3] < 1 || wd[2] > MAX_ATTR || wd[3] > MAX_ATTR)
        return node_err(c, n, "weight shape %" PRId64 "x%" PRId64 "x%" PRId64 "x%" PRId64 " is not supported",
                        wd[0], wd[1], wd[2], wd[3]);
    l->kernel[0] = (int)wd[2];
    l->kernel[1] = (int)wd[3];
    if (spatial_attrs(c, n, l, 0))
        return -1;
    int given;
    if (attr_ints(c, n, "dilations", 2, 1, MAX_ATTR, l->dilation, &given))
        return -1;
    int64_t group;
    if (attr_int(c, n, "group", 1, 1, MAX_NUMEL, &group))
        return -1;
    if (wd[0] % group)
        return node_err(c, n, "%" PRId64 " output channels are not divisible by group=%" PRId64, wd[0], group);
    l->group = (int)group;
    if (input_count(n) == 3 && n->input[2][0]) {
        if (const_input(c, n, 2, "bias", &l->bias))
            return -1;
        if (ds_shape_numel(&l->bias.shape) != wd[0] || l->bias.shape.ndim != 1)
            return node_err(c, n, "bias has %" PRId64 " elements, %" PRId64 " expected",
                            ds_shape_numel(&l->bias.shape), wd[0]);
    }
    bind_output(c, n, id);
    return 0;
}

int ds_onnx_parse_pool(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    static const char *const kmax[] = {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode",
                                       "dilations", "storage_order", NULL};
    static const char *const kavg[] = {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode",
                                       "count_include_pad", NULL};
    static const char *const kglobal[] = {NULL};
    int global = op == DS_OP_GLOBALAVGPOOL;
    if (check_arity(c, n, 1, 1, op == DS_OP_MAXPOOL ? 2 : 1) ||
        attr_check_known(c, n, global ? kglobal : op == DS_OP_MAXPOOL ? kmax : kavg))
        return -1;
    int x = layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int id = new_layer(c, n, op, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &c->m->layers[id];
    l->inputs[0] = x;
    if (!global) {
        if (spatial_attrs(c, n, l, 1))
            return -1;
        int64_t v;
        if (attr_int(c, n, "ceil_mode", 0, 0, 1, &v))
            return -1;
        l->ceil_mode = (int)v;
        if (op == DS_OP_MAXPOOL) {
            int dil[2], given;
            if (attr_ints(c, n, "dilations", 2, 1, MAX_ATTR, dil, &given))
                return -1;
            if (given && (dil[0] != 1 || dil[1] != 1))
                return node_err(c, n, "unsupported attribute dilations=[%d, %d] (only 1)", dil[0], dil[1]);
            if (attr_int(c, n, "storage_order", 0, 0, 0, &v))
                return -1;
            mark_unusable(c, n, 1, "the Indices output of MaxPool");
        } else {
            if (attr_int(c, n, "count_include_pad", 0, 0, 1, &v))
                return -1;
            l->count_include_pad = (int)v;
        }
    }
    bind_output(c, n, id);
    return 0;
}

int ds_onnx_parse_unary(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    static const char *const knone[] = {NULL};
    static const char *const kaxis[] = {"axis", NULL};
    static const char *const klrn[] = {"size", "alpha", "beta", "bias", NULL};
    const char *const *known = op == DS_OP_LRN ? klrn : (op == DS_OP_FLATTEN || op == DS_OP_SOFTMAX) ? kaxis : knone;
    if (check_arity(c, n, 1, 1, 1) || attr_check_known(c, n, known))
        return -1;
    int x = layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int id = new_layer(c, n, op, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &c->m->layers[id];
    l->inputs[0] = x;
    int64_t v;
    if (op == DS_OP_FLATTEN) {
        if (attr_int(c, n, "axis", 1, -DS_MAX_DIMS, DS_MAX_DIMS, &v))
            return -1;
        l->axis = (int)v;
    } else if (op == DS_OP_SOFTMAX) {
        if (attr_int(c, n, "axis", c->opset < 13 ? 1 : -1, -DS_MAX_DIMS, DS_MAX_DIMS - 1, &v))
            return -1;
        l->axis = (int)v;
    } else if (op == DS_OP_LRN) {
        if (!attr_find(n, "size"))
            return node_err(c, n, "attribute size is missing");
        if (attr_int(c, n, "size", 1, 1, 1 << 12, &v) || attr_float(c, n, "alpha", 1e-4f, &l->lrn_alpha) ||
            attr_float(c, n, "beta", 0.75f, &l->lrn_beta) || attr_float(c, n, "bias", 1.0f, &l->lrn_bias))
            return -1;
        l->lrn_size = (int)v;
    }
    bind_output(c, n, id);
    return 0;
}

int ds_onnx_parse_concat(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    static const char *const known[] = {"axis", NULL};
    if (check_arity(c, n, 1, (int)(n->n_input > 0 ? n->n_input : 1), 1) || attr_check_known(c, n, known))
        return -1;
    int k = input_count(n);
    for (int i = 0; i < k; i++)
        if (!n->input[i][0])
            return node_err(c, n, "input %d is empty", i);
    if (!attr_find(n, "axis"))
        return node_err(c, n, "attribute axis is missing");
    int64_t axis;
    if (attr_int(c, n, "axis", 1, -DS_MAX_DIMS, DS_MAX_DIMS - 1, &axis))
        return -1;
    if (axis != 1 && axis != -3)
        return node_err(c, n, "unsupported attribute axis=%" PRId64 " (only the channel axis 1 or -3)", axis);
    for (int i = 0; i < k; i++)
        if (layer_input(c, n, i) < 0)
            return -1;
    int id = new_layer(c, n, DS_OP_CONCAT, k);
    if (id < 0)
        return -1;
    ds_layer *l = &c->m->layers[id];
    for (int i = 0; i < k; i++)
        l->inputs[i] = node_input(c, n, i)->layer;
    l->axis = (int)axis;
    bind_output(c, n, id);
    return 0;
}

/* Bias of N elements from a constant of N (or 1, broadcast) elements. */
static int bias_from(ctx *c, const Onnx__NodeProto *n, ds_tensor *b, int64_t N, float scale)
{
    int64_t k = ds_shape_numel(&b->shape);
    int lead_ones = 1;
    for (int i = 0; i + 1 < b->shape.ndim; i++)
        lead_ones &= b->shape.dims[i] == 1;
    if (!(k == 1 || (k == N && lead_ones)))
        return node_err(c, n, "bias has shape with %" PRId64 " elements; %" PRId64 " (or 1) expected", k, N);
    float *src = ds_tensor_f32(b);
    float v0 = src[0];
    if ((size_t)N * sizeof(float) > b->cap) {
        float *p = realloc(b->data, (size_t)N * sizeof(float));
        if (!p)
            return node_err(c, n, "out of memory");
        b->data = p;
        b->cap = (size_t)N * sizeof(float);
        src = p;
    }
    for (int64_t i = 0; i < N; i++)
        src[i] = (k == 1 ? v0 : src[i]) * scale;
    b->shape = ds_shape_make(1, &N);
    return 0;
}

int ds_onnx_parse_gemm(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    int matmul = !strcmp(op_type(n), "MatMul"); /* Gemm's operands, no attributes, no bias */
    static const char *const kgemm[] = {"alpha", "beta", "transA", "transB", NULL};
    static const char *const knone[] = {NULL};
    if (check_arity(c, n, 2, matmul ? 2 : 3, 1) || attr_check_known(c, n, matmul ? knone : kgemm))
        return -1;
    int64_t transA = 0, transB = 0;
    float alpha = 1.0f, beta = 1.0f;
    if (!matmul && (attr_int(c, n, "transA", 0, 0, 0, &transA) || attr_int(c, n, "transB", 0, 0, 1, &transB) ||
                    attr_float(c, n, "alpha", 1.0f, &alpha) || attr_float(c, n, "beta", 1.0f, &beta)))
        return -1;
    int x = layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int id = new_layer(c, n, DS_OP_GEMM, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &c->m->layers[id];
    l->inputs[0] = x;
    ds_tensor B;
    if (const_input(c, n, 1, "weight", &B))
        return -1;
    if (B.shape.ndim != 2) {
        ds_tensor_free(&B);
        return node_err(c, n, "weight has %d dimensions; a 2-D constant is expected", B.shape.ndim);
    }
    int64_t rows = B.shape.dims[0], cols = B.shape.dims[1];
    int64_t N = transB ? rows : cols, K = transB ? cols : rows;
    if (N < 1 || K < 1) {
        ds_tensor_free(&B);
        return node_err(c, n, "weight shape %" PRId64 "x%" PRId64 " is empty", rows, cols);
    }
    if (transB) { /* already N x K */
        l->weight = B;
        if (alpha != 1.0f)
            for (int64_t i = 0; i < N * K; i++)
                ds_tensor_f32(&l->weight)[i] *= alpha;
    } else {
        int64_t dims[2] = {N, K};
        ds_shape s = ds_shape_make(2, dims);
        if (ds_tensor_reserve(&l->weight, &s, DS_F32, NULL)) {
            ds_tensor_free(&B);
            return node_err(c, n, "out of memory");
        }
        const float *src = ds_tensor_f32(&B);
        float *dst = ds_tensor_f32(&l->weight);
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < N; j++)
                dst[j * K + k] = src[k * N + j] * alpha;
        ds_tensor_free(&B);
    }
    if (!matmul && input_count(n) == 3 && n->input[2][0]) {
        if (const_input(c, n, 2, "bias", &l->bias) || bias_from(c, n, &l->bias, N, beta))
            return -1;
    }
    c->from_matmul[id] = (char)matmul;
    bind_output(c, n, id);
    return 0;
}

int ds_onnx_parse_add(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    static const char *const knone[] = {NULL};
    if (check_arity(c, n, 2, 2, 1) || attr_check_known(c, n, knone))
        return -1;
    value *a = node_input(c, n, 0), *b = node_input(c, n, 1);
    if (!a || !b)
        return node_err(c, n, "input %d is missing", a ? 1 : 0);
    if (a->kind == V_CONST || b->kind == V_CONST) {
        /* MatMul + Add(constant) = Gemm with bias. */
        int ci = a->kind == V_CONST ? 0 : 1;
        value *other = ci ? a : b;
        if (other->kind == V_LAYER && c->from_matmul[other->layer] && c->layer_refs[other->layer] == 1) {
            ds_layer *l = &c->m->layers[other->layer];
            if (const_input(c, n, ci, "bias", &l->bias) ||
                bias_from(c, n, &l->bias, l->weight.shape.dims[0], 1.0f))
                return -1;
            c->from_matmul[other->layer] = 0;
            bind_output(c, n, other->layer);
            return 0;
        }
        return ds_onnx_parse_binary(c, n, op);
    }
    int x = layer_input(c, n, 0), y = x < 0 ? -1 : layer_input(c, n, 1);
    if (y < 0)
        return -1;
    int id = new_layer(c, n, DS_OP_ADD, 2);
    if (id < 0)
        return -1;
    c->m->layers[id].inputs[0] = x;
    c->m->layers[id].inputs[1] = y;
    bind_output(c, n, id);
    return 0;
}

/* BatchNormalization's scale, B, mean and var: 1-D constants of C values,
 * var + epsilon positive. */
static int bn_params(ctx *c, const Onnx__NodeProto *n, float eps, ds_tensor p[4], int64_t *C)
{
    static const char *const what[4] = {"scale", "B", "mean", "var"};
    *C = -1;
    for (int i = 0; i < 4; i++) {
        if (const_input(c, n, i + 1, what[i], &p[i]))
            return -1;
        if (*C < 0)
            *C = ds_shape_numel(&p[i].shape);
        if (p[i].shape.ndim != 1 || ds_shape_numel(&p[i].shape) != *C)
            return node_err(c, n, "%s has %" PRId64 " elements, %" PRId64 " expected (1-D)", what[i],
                            ds_shape_numel(&p[i].shape), *C);
    }
    for (int64_t i = 0; i < *C; i++)
        if (!(ds_tensor_f32(&p[3])[i] + eps > 0) || !isfinite(ds_tensor_f32(&p[3])[i]))
            return node_err(c, n, "var[%" PRId64 "] + epsilon is not positive", i);
    return 0;
}

/* Into the preceding conv: w' = w * s, b' = (b - mean) * s + beta with
 * s = gamma/sqrt(var+eps). */
static int bn_fold(ctx *c, const Onnx__NodeProto *n, ds_layer *conv, const ds_tensor p[4], int64_t C,
                   float eps)
{
    int64_t O = conv->weight.shape.dims[0];
    if (O != C)
        return node_err(c, n, "has %" PRId64 " channels but its Conv input \"%.60s\" has %" PRId64, C,
                        conv->name, O);
    if (!conv->bias.data) {
        ds_shape s = ds_shape_make(1, &O);
        if (ds_tensor_reserve(&conv->bias, &s, DS_F32, NULL))
            return node_err(c, n, "out of memory");
        memset(conv->bias.data, 0, (size_t)O * sizeof(float));
    }
    int64_t per = ds_shape_numel(&conv->weight.shape) / O;
    float *w = ds_tensor_f32(&conv->weight), *b = ds_tensor_f32(&conv->bias);
    for (int64_t o = 0; o < O; o++) {
        double s = (double)ds_tensor_f32(&p[0])[o] / sqrt((double)ds_tensor_f32(&p[3])[o] + (double)eps);
        for (int64_t j = 0; j < per; j++)
            w[o * per + j] = (float)((double)w[o * per + j] * s);
        b[o] = (float)(((double)b[o] - (double)ds_tensor_f32(&p[2])[o]) * s + (double)ds_tensor_f32(&p[1])[o]);
    }
    bind_output(c, n, conv->id);
    return 0;
}

/* A layer of its own: scale and shift per channel, taken from p[0], p[1]. */
static int bn_layer(ctx *c, const Onnx__NodeProto *n, int x, ds_tensor p[4], int64_t C, float eps)
{
    int id = new_layer(c, n, DS_OP_BATCHNORM, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &c->m->layers[id];
    l->inputs[0] = x;
    l->weight = p[0]; /* becomes scale */
    l->bias = p[1];   /* becomes shift */
    memset(&p[0], 0, sizeof p[0]);
    memset(&p[1], 0, sizeof p[1]);
    for (int64_t i = 0; i < C; i++) {
        double s = (double)ds_tensor_f32(&l->weight)[i] / sqrt((double)ds_tensor_f32(&p[3])[i] + (double)eps);
        ds_tensor_f32(&l->bias)[i] = (float)((double)ds_tensor_f32(&l->bias)[i] - (double)ds_tensor_f32(&p[2])[i] * s);
        ds_tensor_f32(&l->weight)[i] = (float)s;
    }
    bind_output(c, n, id);
    return 0;
}

/* Folded into a Conv that nothing else reads, else a layer of its own. */
int ds_onnx_parse_batchnorm(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    static const char *const known[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    if (check_arity(c, n, 5, 5, 1) || attr_check_known(c, n, known))
        return -1;
    float eps;
    int64_t v;
    if (attr_float(c, n, "epsilon", 1e-5f, &eps) || attr_int(c, n, "training_mode", 0, 0, 0, &v) ||
        attr_int(c, n, "spatial", 1, 1, 1, &v))
        return -1;
    if (eps < 0)
        return node_err(c, n, "unsupported attribute epsilon=%g", (double)eps);
    int x = layer_input(c, n, 0);
    if (x < 0)
        return -1;
    ds_tensor p[4];
    memset(p, 0, sizeof p);
    int64_t C;
    int rc = bn_params(c, n, eps, p, &C);
    if (!rc)
        rc = c->m->layers[x].op == DS_OP_CONV && c->layer_refs[x] == 1 && !c->m->layers[x].act
                 ? bn_fold(c, n, &c->m->layers[x], p, C, eps)
                 : bn_layer(c, n, x, p, C, eps);
    for (int i = 0; i < 4; i++)
        ds_tensor_free(&p[i]);
    return rc;
}

/* Identity, Dropout: the output is another name for the input. */
static int op_alias(ctx *c, const Onnx__NodeProto *n, int dropout)
{
    if (dropout) {
        if (check_arity(c, n, 1, 3, 2))
            return -1;
        for (int i = 1; i < input_count(n); i++) {
            value *v = node_input(c, n, i);
            if (v && v->kind == V_CONST) {
                /* training_mode=true would make Dropout random. */
                Onnx__TensorProto *t = c->consts[v->cst].t;
                if (i == 2 && t->has_data_type && t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__BOOL &&
                    ((t->has_raw_data && t->raw_data.len && t->raw_data.data[0]) || (t->n_int32_data && t->int32_data[0])))
                    return node_err(c, n, "training_mode=true is not supported");
            }
        }
        mark_unusable(c, n, 1, "the mask output of Dropout");
    } else {
        static const char *const knone[] = {NULL};
        if (check_arity(c, n, 1, 1, 1) || attr_check_known(c, n, knone))
            return -1;
    }
    value *in = node_input(c, n, 0);
    value *out = &c->vals[val_find(c, n->output[0])];
    if (!in)
        return node_err(c, n, "input 0 is missing");
    if (in->kind == V_UNUSABLE)
        return node_err(c, n, "input \"%.60s\" is %s, which is not supported", in->name, in->why);
    out->kind = in->kind;
    out->layer = in->layer;
    out->cst = in->cst;
    out->sv = in->sv;
    out->why = in->why;
    if (in->kind == V_CONST)
        c->consts[in->cst].refs += out->refs - 1;
    else
        c->layer_refs[in->layer] += out->refs - 1;
    return 0;
}

static int op_constant(ctx *c, const Onnx__NodeProto *n, int cst_index)
{
    static const char *const known[] = {"value", NULL};
    if (check_arity(c, n, 0, 0, 1) || attr_check_known(c, n, known))
        return -1;
    const Onnx__AttributeProto *a = attr_find(n, "value");
    if (!a || !attr_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR) || !a->t)
        return node_err(c, n, "attribute value (a tensor) is missing");
    value *out = &c->vals[val_find(c, n->output[0])];
    c->consts[cst_index].t = a->t;
    c->consts[cst_index].refs = out->refs;
    out->kind = V_CONST;
    out->cst = cst_index;
    return 0;
}

static int do_node(ctx *c, int idx)
{
    const Onnx__NodeProto *n = c->g->node[idx];
    if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx"))
        return node_err(c, n, "unsupported operator domain \"%.60s\"", n->domain);
    const char *t = op_type(n);
    int folded = ds_onnx_try_fold(c, n); /* shape arithmetic: before the ops of the same types */
    if (folded)
        return folded < 0 ? -1 : 0;
    for (int op = 0; op < DS_OP_COUNT; op++)
        for (int k = 0; k < 2 && ds_op_defs[op].onnx_types[k]; k++)
            if (ds_op_defs[op].parse && !strcmp(t, ds_op_defs[op].onnx_types[k]))
                return ds_op_defs[op].parse(c, n, (ds_op)op);
    /* Nodes that name a value rather than compute a layer. */
    if (!strcmp(t, "Identity"))
        return op_alias(c, n, 0);
    if (!strcmp(t, "Dropout"))
        return op_alias(c, n, 1);
    if (!strcmp(t, "Constant"))
        return op_constant(c, n, (int)c->g->n_initializer + idx);
    return node_err(c, n, "unsupported op type");
}

/* ---- graph ------------------------------------------------------------- */

/* Calls f(producer, consumer, arg) for every node input made by a node
 * (not for initializers, graph inputs or absent inputs). */
static void for_each_edge(ctx *c, void (*f)(int p, int i, void *arg), void *arg)
{
    for (int i = 0; i < (int)c->g->n_node; i++)
        for (size_t k = 0; k < c->g->node[i]->n_input; k++) {
            const char *s = c->g->node[i]->input[k];
            if (!s[0])
                continue;
            int p = c->vals[val_find(c, s)].producer;
            if (p >= 0)
                f(p, i, arg);
        }
}

/* CSR adjacency producer -> consumer, built in two passes. */
typedef struct csr {
    int *indeg, *start, *fill, *edges;
} csr;

static void count_edge(int p, int i, void *arg)
{
    csr *g = arg;
    g->start[p + 1]++;
    g->indeg[i]++;
}

static void place_edge(int p, int i, void *arg)
{
    csr *g = arg;
    g->edges[g->start[p] + g->fill[p]++] = i;
}

static void heap_push(int *heap, int *hn, int v)
{
    int i = (*hn)++;
    heap[i] = v;
    while (i > 0 && heap[(i - 1) / 2] > heap[i]) { /* sift up */
        int t = heap[i];
        heap[i] = heap[(i - 1) / 2];
        heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static int heap_pop(int *heap, int *hn)
{
    int top = heap[0];
    heap[0] = heap[--*hn];
    for (int i = 0;;) { /* sift down */
        int l = 2 * i + 1, r = l + 1, s = i;
        if (l < *hn && heap[l] < heap[s])
            s = l;
        if (r < *hn && heap[r] < heap[s])
            s = r;
        if (s == i)
            break;
        int t = heap[i];
        heap[i] = heap[s];
        heap[s] = t;
        i = s;
    }
    return top;
}

/* Kahn's algorithm with a min-heap on the node index: a file already in
 * topological order keeps its order. */
static int topo_sort(ctx *c, int *order)
{
    int nn = (int)c->g->n_node;
    size_t n_edges = 0;
    for (int i = 0; i < nn; i++)
        n_edges += c->g->node[i]->n_input;
    csr g = {calloc((size_t)nn + 1, sizeof(int)), calloc((size_t)nn + 2, sizeof(int)),
             calloc((size_t)nn + 1, sizeof(int)), malloc((n_edges + 1) * sizeof(int))};
    int *heap = malloc(((size_t)nn + 1) * sizeof(int));
    int rc = -1;
    if (!g.indeg || !g.start || !g.fill || !g.edges || !heap) {
        graph_err(c, "out of memory");
        goto out;
    }
    for_each_edge(c, count_edge, &g);
    for (int i = 0; i < nn; i++)
        g.start[i + 1] += g.start[i];
    for_each_edge(c, place_edge, &g);
    int hn = 0, done = 0;
    for (int i = 0; i < nn; i++)
        if (!g.indeg[i])
            heap[hn++] = i; /* ascending: already a heap */
    while (hn) {
        int top = heap_pop(heap, &hn);
        order[done++] = top;
        for (int e = g.start[top]; e < g.start[top + 1]; e++)
            if (--g.indeg[g.edges[e]] == 0)
                heap_push(heap, &hn, g.edges[e]);
    }
    for (int i = 0; done < nn && i < nn; i++)
        if (g.indeg[i]) {
            node_err(c, c->g->node[i], "is part of a cycle (its inputs depend on its own output)");
            goto out;
        }
    rc = 0;
out:
    free(g.indeg);
    free(g.start);
    free(g.fill);
    free(g.edges);
    free(heap);
    return rc;
}

static int check_name(ctx *c, const char *s, const char *what)
{
    if (!s || !s[0])
        return graph_err(c, "%s has an empty name", what);
    return 0;
}

/* The value index and the per-layer arrays, sized for the whole graph. */
static int alloc_index(ctx *c, int n_bound)
{
    Onnx__GraphProto *g = c->g;
    size_t n_values = g->n_initializer + g->n_input + (size_t)n_bound;
    size_t n_outputs = 0; /* a layer per node output at most (Split makes one per output) */
    for (size_t i = 0; i < g->n_node; i++)
        n_outputs += g->node[i]->n_output > 0 ? g->node[i]->n_output : 1;
    n_values += n_outputs;
    if (g->n_node > (1u << 24) || n_values > (1u << 26))
        return graph_err(c, "graph is too large (%zu nodes)", g->n_node);
    size_t cap = 16;
    while (cap < 2 * n_values)
        cap *= 2;
    c->table = malloc(cap * sizeof(int));
    c->vals = malloc((n_values + 1) * sizeof(value));
    c->consts = calloc(g->n_initializer + g->n_node + (size_t)n_bound + 1, sizeof(cst));
    c->m->layers = calloc(n_outputs + 1, sizeof(ds_layer));
    c->layer_refs = calloc(n_outputs + 1, sizeof(int));
    c->from_matmul = calloc(n_outputs + 1, 1);
    if (!c->table || !c->vals || !c->consts || !c->m->layers || !c->layer_refs || !c->from_matmul)
        return graph_err(c, "out of memory");
    memset(c->table, 0xff, cap * sizeof(int));
    c->table_mask = cap - 1;
    return 0;
}

static int add_initializers(ctx *c)
{
    Onnx__GraphProto *g = c->g;
    for (size_t i = 0; i < g->n_initializer; i++) {
        Onnx__TensorProto *t = g->initializer[i];
        if (check_name(c, t->name, "an initializer"))
            return -1;
        int v = val_add(c, t->name, -1);
        if (v < 0)
            return graph_err(c, "initializer \"%.80s\" is defined twice", t->name);
        c->vals[v].kind = V_CONST;
        c->vals[v].cst = (int)i;
        c->consts[i].t = t;
    }
    return 0;
}

/* The network input's declared element type and shape (dims <= 0 free). */
static int read_input_decl(ctx *c, const Onnx__ValueInfoProto *vi)
{
    const Onnx__TypeProto *tp = vi->type;
    if (tp && tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return graph_err(c, "network input \"%.80s\" is not a tensor", vi->name);
    if (!tp || !tp->tensor_type)
        return 0;
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    if (tt->has_elem_type && tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return graph_err(c, "network input \"%.80s\" has element type %s; float expected", vi->name,
                         dtype_name(tt->elem_type));
    if (!tt->shape)
        return 0;
    if (tt->shape->n_dim < 1 || tt->shape->n_dim > DS_MAX_DIMS)
        return graph_err(c, "network input \"%.80s\" has %zu dimensions; 1..%d supported", vi->name,
                         tt->shape->n_dim, DS_MAX_DIMS);
    ds_shape *s = &c->m->input_shape;
    s->ndim = (int)tt->shape->n_dim;
    for (size_t d = 0; d < tt->shape->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
        int64_t dv = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ? dim->dim_value : 0;
        s->dims[d] = dv > 0 && dv <= MAX_NUMEL ? dv : 0;
    }
    return 0;
}

/* Graph input vi (value v) becomes constant k made from the caller's tensor
 * bt, which stays the caller's. */
static int bind_input(ctx *c, const Onnx__ValueInfoProto *vi, int v, const ds_tensor *bt, int k,
                      Onnx__TensorProto *t)
{
    onnx__tensor_proto__init(t);
    if (bt->dtype != DS_F32 || bt->shape.ndim < 1 || bt->shape.ndim > DS_MAX_DIMS)
        return graph_err(c, "bound tensor for graph input \"%.80s\" is not a 1..4-D float tensor", vi->name);
    t->n_dims = (size_t)bt->shape.ndim;
    t->dims = (int64_t *)bt->shape.dims;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->has_raw_data = 1;
    t->raw_data.data = bt->data;
    t->raw_data.len = ds_tensor_bytes(bt);
    t->name = (char *)vi->name;
    c->consts[k].t = t;
    c->consts[k].borrowed = 1;
    c->vals[v].kind = V_CONST;
    c->vals[v].cst = k;
    return 0;
}

/* Graph inputs that are not initializers: the network input (layer 0),
 * then the bound ones.  Writes the network input's name to *net. */
static int add_graph_inputs(ctx *c, const ds_tensor *bound, int n_bound, const char **net)
{
    Onnx__GraphProto *g = c->g;
    int n_real = 0;
    const char *names[3] = {0};
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        if (check_name(c, vi->name, "a graph input"))
            return -1;
        int known = val_find(c, vi->name);
        if (known >= 0) {
            if (c->vals[known].kind == V_CONST && c->vals[known].cst < (int)g->n_initializer)
                continue; /* an initializer listed as input (IR < 4 style) */
            return graph_err(c, "graph input \"%.80s\" is declared twice", vi->name);
        }
        if (n_real < 3)
            names[n_real] = vi->name;
        int v = val_add(c, vi->name, -1);
        if (n_real == 0) {
            c->vals[v].kind = V_LAYER;
            c->vals[v].layer = 0;
            if (read_input_decl(c, vi))
                return -1;
        } else if (n_real <= n_bound &&
                   bind_input(c, vi, v, &bound[n_real - 1], (int)(g->n_initializer + g->n_node) + n_real - 1,
                              &c->bound_protos[n_real - 1])) {
            return -1;
        }
        n_real++;
    }
    if (n_real == 0)
        return graph_err(c, "graph has no network input (every input is an initializer)");
    if (n_real != 1 + n_bound) {
        if (n_bound)
            return graph_err(c, "graph has %d inputs that are not initializers; %d bound tensors given", n_real,
                             n_bound);
        return graph_err(c, "graph has %d inputs that are not initializers (\"%.60s\", \"%.60s\"%s); exactly one "
                            "network input is supported", n_real, names[0], names[1], n_real > 2 ? ", ..." : "");
    }
    *net = names[0];
    return 0;
}

/* Node outputs become values; every name a node or the graph output uses
 * must exist; the uses are counted (a constant used once may give its data
 * away). */
static int resolve_names(ctx *c, int n_bound)
{
    Onnx__GraphProto *g = c->g;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        for (size_t k = 0; k < n->n_output; k++)
            if (n->output[k][0] && val_add(c, n->output[k], (int)i) < 0)
                return node_err(c, n, "output \"%.60s\" is already produced elsewhere", n->output[k]);
    }
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        for (size_t k = 0; k < n->n_input; k++) {
            if (!n->input[k][0])
                continue;
            int v = val_find(c, n->input[k]);
            if (v < 0)
                return node_err(c, n, "input \"%.60s\" is not produced by any node, initializer or graph input",
                                n->input[k]);
            c->vals[v].refs++;
        }
    }
    if (g->n_output < 1)
        return graph_err(c, "graph has no outputs");
    for (size_t i = 0; i < g->n_output; i++) {
        if (check_name(c, g->output[i]->name, "a graph output"))
            return -1;
        int v = val_find(c, g->output[i]->name);
        if (v < 0)
            return graph_err(c, "graph output \"%.80s\" is not produced by any node", g->output[i]->name);
        c->vals[v].refs++;
    }
    for (size_t i = 0; i < g->n_initializer; i++)
        c->consts[i].refs = c->vals[val_find(c, g->initializer[i]->name)].refs;
    for (int i = 0; i < n_bound; i++)
        c->consts[g->n_initializer + g->n_node + (size_t)i].refs = 1 << 30;
    return 0;
}

static int add_input_layer(ctx *c, const char *name)
{
    ds_layer *in = &c->m->layers[0];
    in->id = 0;
    in->op = DS_OP_INPUT;
    in->name = strdup(name);
    in->inputs = calloc(1, sizeof(int));
    if (!in->name || !in->inputs)
        return graph_err(c, "out of memory");
    c->m->n_layers = 1;
    c->layer_refs[0] = c->vals[val_find(c, name)].refs;
    return 0;
}

/* Every node in topological order: a layer, a fold or an alias. */
static int add_nodes(ctx *c)
{
    int *order = malloc((c->g->n_node + 1) * sizeof(int));
    if (!order)
        return graph_err(c, "out of memory");
    int rc = topo_sort(c, order);
    for (size_t i = 0; rc == 0 && i < c->g->n_node; i++)
        rc = do_node(c, order[i]);
    free(order);
    return rc ? -1 : 0;
}

static int set_outputs(ctx *c)
{
    Onnx__GraphProto *g = c->g;
    ds_model *m = c->m;
    m->outputs = malloc(g->n_output * sizeof(int));
    if (!m->outputs)
        return graph_err(c, "out of memory");
    for (size_t i = 0; i < g->n_output; i++) {
        const value *v = &c->vals[val_find(c, g->output[i]->name)];
        if (v->kind != V_LAYER)
            return graph_err(c, "graph output \"%.80s\" is %s, not a layer output", v->name,
                             v->kind == V_CONST ? "a constant" : v->why ? v->why : "unresolved");
        m->outputs[m->n_outputs++] = v->layer;
    }
    return 0;
}

/* Consumers, ascending and without repeats. */
static int link_consumers(ctx *c)
{
    ds_model *m = c->m;
    int rc = 0;
    int *count = calloc((size_t)m->n_layers, sizeof(int));
    if (!count)
        return graph_err(c, "out of memory");
    for (int i = 1; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i].n_inputs; k++) {
            int p = m->layers[i].inputs[k];
            int dup = 0;
            for (int j = 0; j < k; j++)
                dup |= m->layers[i].inputs[j] == p;
            if (!dup)
                count[p]++;
        }
    for (int i = 0; i < m->n_layers && rc == 0; i++) {
        m->layers[i].consumers = malloc(((size_t)count[i] + 1) * sizeof(int));
        if (!m->layers[i].consumers)
            rc = graph_err(c, "out of memory");
    }
    free(count);
    if (rc)
        return -1;
    for (int i = 1; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i].n_inputs; k++) {
            ds_layer *p = &m->layers[m->layers[i].inputs[k]];
            if (p->n_consumers == 0 || p->consumers[p->n_consumers - 1] != i)
                p->consumers[p->n_consumers++] = i;
        }
    return 0;
}

static int build(ctx *c, const ds_tensor *bound, int n_bound)
{
    const char *net = NULL;
    if (alloc_index(c, n_bound) || add_initializers(c) || add_graph_inputs(c, bound, n_bound, &net) ||
        resolve_names(c, n_bound) || add_input_layer(c, net) || add_nodes(c) || set_outputs(c))
        return -1;
    return link_consumers(c);
}

static int load(const void *buf, size_t len, const char *label, const ds_tensor *bound, int n_bound,
                ds_model *m, ds_error *err)
{
    ctx c;
    memset(&c, 0, sizeof c);
    memset(m, 0, sizeof *m);
    c.label = label ? label : "model";
    c.err = err;
    c.m = m;
    if (n_bound < 0 || (n_bound > 0 && !bound))
        return ds_errorf(err, "%s: bad bound-tensor list", c.label);
    if (!buf || len == 0)
        return ds_errorf(err, "%s: empty file", c.label);
    if (len > MAX_INPUT_BYTES)
        return ds_errorf(err, "%s: %zu bytes is too large for an ONNX model (limit 2 GiB)", c.label, len);
    c.mp = onnx__model_proto__unpack(NULL, len, buf);
    if (!c.mp)
        return ds_errorf(err, "%s: not an ONNX model (protobuf parse failed: truncated or garbage bytes)",
                         c.label);
    int rc = -1;
    c.g = c.mp->graph;
    if (!c.g) {
        graph_err(&c, "no graph in the model");
        goto out;
    }
    c.opset = -1;
    for (size_t i = 0; i < c.mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = c.mp->opset_import[i];
        if ((!o->domain || !o->domain[0] || !strcmp(o->domain, "ai.onnx")) && o->has_version)
            c.opset = o->version > 1000 ? 1000 : (int)o->version;
    }
    if (c.opset < 0) {
        graph_err(&c, "no opset import for the default ONNX domain");
        goto out;
    }
    if (c.opset < 9 || c.opset > 17) {
        graph_err(&c, "opset %d is not supported (9..17)", c.opset);
        goto out;
    }
    m->opset = c.opset;
    if (n_bound) {
        c.bound_protos = calloc((size_t)n_bound, sizeof(Onnx__TensorProto));
        if (!c.bound_protos) {
            graph_err(&c, "out of memory");
            goto out;
        }
    }
    m->name = strdup(c.label);
    if (!m->name) {
        graph_err(&c, "out of memory");
        goto out;
    }
    snprintf(m->hash, sizeof m->hash, "%016" PRIx64, fnv1a(buf, len));
    rc = build(&c, bound, n_bound);
out:
    free(c.table);
    free(c.vals);
    free(c.consts);
    free(c.layer_refs);
    free(c.from_matmul);
    free(c.bound_protos);
    onnx__model_proto__free_unpacked(c.mp, NULL);
    if (rc)
        ds_model_free(m);
    return rc;
}

int ds_model_load_onnx(const void *buf, size_t len, const char *label, ds_model *m, ds_error *err)
{
    return load(buf, len, label, NULL, 0, m, err);
}

int ds_model_load_onnx_bound(const void *buf, size_t len, const char *label, const ds_tensor *bound,
                             int n_bound, ds_model *m, ds_error *err)
{
    return load(buf, len, label, bound, n_bound, m, err);
}

/* ---- element-wise ops (issue 15) ---------------------------------------- */

/* Clip's bound from input i (opset 11+): absent is unbounded; else a
 * one-element float constant. */
static int clip_bound(ctx *c, const Onnx__NodeProto *n, int i, float def, float *out)
{
    *out = def;
    if (!node_input(c, n, i))
        return 0;
    ds_tensor t;
    if (const_input(c, n, i, i == 1 ? "min" : "max", &t))
        return -1;
    int64_t k = ds_shape_numel(&t.shape);
    if (k == 1)
        *out = ds_tensor_f32(&t)[0];
    ds_tensor_free(&t);
    if (k != 1)
        return node_err(c, n, "%s has %" PRId64 " elements; a scalar is expected", i == 1 ? "min" : "max", k);
    if (isnan(*out))
        return node_err(c, n, "%s is NaN", i == 1 ? "min" : "max");
    return 0;
}

/* A Conv whose output nothing else reads and which has no folded Clip yet:
 * what comes after it may be folded into it. */
static ds_layer *foldable_conv(ctx *c, int x)
{
    ds_layer *l = &c->m->layers[x];
    return l->op == DS_OP_CONV && c->layer_refs[x] == 1 && !l->act ? l : NULL;
}

/* Clip after such a Conv becomes its output clamp (XNNPACK's output_min/max).
 * Only for hi > 0, so that a Relu the XNNPACK backend fuses at run time
 * still leaves a non-empty clamp. */
static int fold_clip(ctx *c, const Onnx__NodeProto *n, int x, float lo, float hi)
{
    ds_layer *conv = foldable_conv(c, x);
    if (!conv || !(lo < hi) || !(hi > 0))
        return 0;
    conv->act = 1;
    conv->clip_min = lo;
    conv->clip_max = hi;
    bind_output(c, n, x);
    return 1;
}

/* Mul or Add of a constant k after such a Conv: into its weights and bias
 * when k is one value or one per output channel (shape ..., O, 1, 1). */
static int fold_scale_shift(ctx *c, const Onnx__NodeProto *n, int x, ds_op op, const ds_tensor *k)
{
    ds_layer *conv = foldable_conv(c, x);
    if (!conv)
        return 0;
    int64_t O = conv->weight.shape.dims[0], kn = ds_shape_numel(&k->shape);
    int r = k->shape.ndim, per_channel = kn == O && r >= 3 && k->shape.dims[r - 3] == O &&
                                         k->shape.dims[r - 2] == 1 && k->shape.dims[r - 1] == 1;
    if (kn != 1 && !per_channel)
        return 0;
    if (!conv->bias.data && op == DS_OP_ADD) {
        ds_shape s = ds_shape_make(1, &O);
        if (ds_tensor_reserve(&conv->bias, &s, DS_F32, NULL))
            return node_err(c, n, "out of memory");
        memset(conv->bias.data, 0, (size_t)O * sizeof(float));
    }
    int64_t per = ds_shape_numel(&conv->weight.shape) / O;
    float *w = ds_tensor_f32(&conv->weight), *b = conv->bias.data ? ds_tensor_f32(&conv->bias) : NULL;
    const float *kv = ds_tensor_f32(k);
    for (int64_t o = 0; o < O; o++) {
        float v = kv[kn == 1 ? 0 : o];
        if (op == DS_OP_MUL) {
            for (int64_t j = 0; j < per; j++)
                w[o * per + j] *= v;
            if (b)
                b[o] *= v;
        } else {
            b[o] += v;
        }
    }
    bind_output(c, n, x);
    return 1;
}

/* Clip, Sigmoid, HardSigmoid, HardSwish, LeakyRelu: one layer input. */
int ds_onnx_parse_eltwise(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    static const char *const knone[] = {NULL};
    static const char *const kclip6[] = {"min", "max", NULL};
    static const char *const kalpha[] = {"alpha", NULL};
    static const char *const kalphabeta[] = {"alpha", "beta", NULL};
    int clip_inputs = op == DS_OP_CLIP && c->opset >= 11;
    const char *const *known = op == DS_OP_CLIP && !clip_inputs ? kclip6
                               : op == DS_OP_LEAKYRELU          ? kalpha
                               : op == DS_OP_HARDSIGMOID        ? kalphabeta
                                                                : knone;
    if (check_arity(c, n, 1, clip_inputs ? 3 : 1, 1) || attr_check_known(c, n, known))
        return -1;
    int x = layer_input(c, n, 0);
    if (x < 0)
        return -1;
    float lo = -INFINITY, hi = INFINITY, alpha = 0, beta = 0;
    if (op == DS_OP_CLIP) {
        if (clip_inputs ? clip_bound(c, n, 1, -INFINITY, &lo) || clip_bound(c, n, 2, INFINITY, &hi)
                        : attr_float(c, n, "min", -INFINITY, &lo) || attr_float(c, n, "max", INFINITY, &hi))
            return -1;
        if (fold_clip(c, n, x, lo, hi))
            return 0;
    } else if (op == DS_OP_LEAKYRELU) {
        if (attr_float(c, n, "alpha", 0.01f, &alpha))
            return -1;
    } else if (op == DS_OP_HARDSIGMOID) {
        if (attr_float(c, n, "alpha", 0.2f, &alpha) || attr_float(c, n, "beta", 0.5f, &beta))
            return -1;
    }
    int id = new_layer(c, n, op, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &c->m->layers[id];
    l->inputs[0] = x;
    l->clip_min = lo;
    l->clip_max = hi;
    l->alpha = alpha;
    l->beta = beta;
    bind_output(c, n, id);
    return 0;
}

/* x * HardSigmoid(x) with PyTorch's alpha 1/6 and beta 1/2 is how
 * hardswish exports below opset 14, and x * Sigmoid(x) is SiLU (Swish): the
 * HardSigmoid or Sigmoid layer, read by this Mul alone, becomes one
 * HardSwish or SiLU layer (one pass, one value less to keep and cache). */
static int fold_swish(ctx *c, const Onnx__NodeProto *n, int x, int y)
{
    for (int k = 0; k < 2; k++) {
        int h = k ? x : y, other = k ? y : x;
        ds_layer *l = &c->m->layers[h];
        int hardswish = l->op == DS_OP_HARDSIGMOID && l->alpha == 1.0f / 6.0f && l->beta == 0.5f;
        if (!(hardswish || l->op == DS_OP_SIGMOID) || l->inputs[0] != other || c->layer_refs[h] != 1)
            continue;
        l->op = hardswish ? DS_OP_HARDSWISH : DS_OP_SILU;
        bind_output(c, n, h);
        return 1;
    }
    return 0;
}

/* Mul, Sub, Div, PRelu and Add of a constant: two layer inputs, or one
 * and a constant (the layer's weight). */
int ds_onnx_parse_binary(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    static const char *const knone[] = {NULL};
    if (check_arity(c, n, 2, 2, 1) || attr_check_known(c, n, knone))
        return -1;
    value *a = node_input(c, n, 0), *b = node_input(c, n, 1);
    if (!a || !b)
        return node_err(c, n, "input %d is missing", a ? 1 : 0);
    if (a->kind == V_CONST && b->kind == V_CONST)
        return node_err(c, n, "both operands are constants (constant folding is not supported)");
    int ci = a->kind == V_CONST ? 0 : b->kind == V_CONST ? 1 : -1;
    if (op == DS_OP_PRELU && ci != 1)
        return node_err(c, n, ci == 0 ? "the input X is a constant" : "the slope must be an initializer or Constant");
    int x = layer_input(c, n, ci == 0 ? 1 : 0);
    int y = x < 0 || ci >= 0 ? -1 : layer_input(c, n, 1);
    if (x < 0 || (ci < 0 && y < 0))
        return -1;
    if (ci < 0 && op == DS_OP_MUL && fold_swish(c, n, x, y))
        return 0;
    ds_tensor k = {0};
    if (ci >= 0 && const_input(c, n, ci, op == DS_OP_PRELU ? "slope" : "constant operand", &k))
        return -1;
    if (ci >= 0 && (op == DS_OP_MUL || op == DS_OP_ADD)) {
        int folded = fold_scale_shift(c, n, x, op, &k);
        if (folded) {
            ds_tensor_free(&k);
            return folded < 0 ? -1 : 0;
        }
    }
    int id = new_layer(c, n, op, ci >= 0 ? 1 : 2);
    if (id < 0) {
        ds_tensor_free(&k);
        return -1;
    }
    ds_layer *l = &c->m->layers[id];
    l->inputs[0] = x;
    if (ci < 0)
        l->inputs[1] = y;
    l->weight = k;
    l->const_first = ci == 0;
    bind_output(c, n, id);
    return 0;
}

/* ---- for the parsers in other files (onnx_ctx.h) ------------------------ */

int ds_onnx_node_err(ctx *c, const Onnx__NodeProto *n, const char *fmt, ...)
{
    char msg[DS_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return node_err(c, n, "%s", msg);
}

int ds_onnx_check(ctx *c, const Onnx__NodeProto *n, int lo, int hi, const char *const *known)
{
    return check_arity(c, n, lo, hi, 1) || attr_check_known(c, n, known) ? -1 : 0;
}

int ds_onnx_check_outs(ctx *c, const Onnx__NodeProto *n, int lo, int hi, int max_out, const char *const *known)
{
    return check_arity(c, n, lo, hi, max_out) || attr_check_known(c, n, known) ? -1 : 0;
}

void ds_onnx_bind_output(ctx *c, const Onnx__NodeProto *n, int k, int id)
{
    value *v = &c->vals[val_find(c, n->output[k])];
    v->kind = V_LAYER;
    v->layer = id;
    c->layer_refs[id] = v->refs;
}

int ds_onnx_input_count(const Onnx__NodeProto *n)
{
    return input_count(n);
}

int ds_onnx_input(ctx *c, const Onnx__NodeProto *n, int i, ds_onnx_in *in)
{
    value *v = node_input(c, n, i);
    memset(in, 0, sizeof *in);
    in->layer = in->sv = -1;
    if (!v)
        return 0;
    in->name = v->name;
    in->kind = v->kind == V_LAYER ? DS_IN_LAYER : v->kind == V_CONST ? DS_IN_CONST
             : v->kind == V_SVAL ? DS_IN_SVAL : DS_IN_UNUSABLE;
    in->layer = v->layer;
    in->sv = v->sv;
    in->why = v->why;
    if (v->kind == V_CONST) {
        in->t = c->consts[v->cst].t;
        in->bound = c->consts[v->cst].borrowed;
    }
    return 0;
}

int ds_onnx_layer_input(ctx *c, const Onnx__NodeProto *n, int i)
{
    return layer_input(c, n, i);
}

int ds_onnx_new_layer(ctx *c, const Onnx__NodeProto *n, ds_op op, int n_inputs)
{
    return new_layer(c, n, op, n_inputs);
}

void ds_onnx_bind_layer(ctx *c, const Onnx__NodeProto *n, int id)
{
    bind_output(c, n, id);
}

void ds_onnx_bind_sval(ctx *c, const Onnx__NodeProto *n, int sv)
{
    value *v = &c->vals[val_find(c, n->output[0])];
    v->kind = V_SVAL;
    v->sv = sv;
    v->why = "shape arithmetic (folded, not a tensor of data)";
}

ds_model *ds_onnx_model(ctx *c)
{
    return c->m;
}

int ds_onnx_opset(const ctx *c)
{
    return c->opset;
}
