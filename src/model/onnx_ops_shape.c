/* onnx_ops_shape.c - the loader's structural nodes: shape arithmetic folded
 * into the model's shape program (shape_prog.h), and the Reshape,
 * Squeeze/Unsqueeze and Transpose layers. */
#include <inttypes.h>
#include <string.h>

#include "model/onnx_ctx.h"
#include "model/op_table.h"
#include "model/shape_prog.h"

typedef struct ds_onnx_ctx ctx;

#define ERR(...) ds_onnx_node_err(c, n, __VA_ARGS__)

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name))
            return n->attribute[i];
    return NULL;
}

static int is_int_type(int32_t t)
{
    return t == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 || t == ONNX__TENSOR_PROTO__DATA_TYPE__INT32 ||
           t == ONNX__TENSOR_PROTO__DATA_TYPE__INT16 || t == ONNX__TENSOR_PROTO__DATA_TYPE__INT8 ||
           t == ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 || t == ONNX__TENSOR_PROTO__DATA_TYPE__UINT16 ||
           t == ONNX__TENSOR_PROTO__DATA_TYPE__UINT32;
}

/* An int64/int32 constant of rank <= 1 into v (bound graph inputs of the
 * node tests arrive as float32: taken when integral). */
static int const_values(ctx *c, const Onnx__NodeProto *n, const ds_onnx_in *in, ds_sval *v)
{
    const Onnx__TensorProto *t = in->t;
    int32_t dt = t->has_data_type ? t->data_type : 0;
    int64_t numel = 1;
    for (size_t i = 0; i < t->n_dims; i++)
        numel *= t->dims[i] >= 0 && t->dims[i] <= DS_SV_MAX ? t->dims[i] : DS_SV_MAX + 1;
    if (t->n_dims > 1 || numel > DS_SV_MAX)
        return ERR("constant \"%.60s\" is not a scalar or vector of at most %d elements", in->name, DS_SV_MAX);
    size_t esz = dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 ? 8 : 4;
    int raw = t->has_raw_data && t->raw_data.len;
    if (raw && t->raw_data.len != (size_t)numel * esz)
        return ERR("constant \"%.60s\": raw_data holds %zu bytes", in->name, t->raw_data.len);
    for (int64_t i = 0; i < numel; i++) {
        int64_t x;
        if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
            if (!raw && t->n_int64_data != (size_t)numel)
                return ERR("constant \"%.60s\" holds %zu values", in->name, t->n_int64_data);
            if (raw)
                memcpy(&x, t->raw_data.data + 8 * i, 8);
            else
                x = t->int64_data[i];
        } else if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT32) {
            int32_t y;
            if (!raw && t->n_int32_data != (size_t)numel)
                return ERR("constant \"%.60s\" holds %zu values", in->name, t->n_int32_data);
            if (raw)
                memcpy(&y, t->raw_data.data + 4 * i, 4);
            else
                y = t->int32_data[i];
            x = y;
        } else if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && in->bound && raw) {
            float f;
            memcpy(&f, t->raw_data.data + 4 * i, 4);
            if (!(f == (float)(int64_t)f))
                return ERR("bound input \"%.60s\" holds %g, not an integer", in->name, (double)f);
            x = (int64_t)f;
        } else {
            return ERR("constant \"%.60s\" is not int64 or int32 (shape arithmetic is on integers)", in->name);
        }
        v->v[i] = x;
    }
    v->rank = (int)t->n_dims;
    v->n = (int)numel;
    return 0;
}

/* Input i as a shape program value: *sv its index, -1 when absent.
 * Returns 1 when it is a layer (not shape arithmetic), -1 on error. */
static int sval_input(ctx *c, const Onnx__NodeProto *n, int i, int *sv)
{
    ds_onnx_in in;
    ds_onnx_input(c, n, i, &in);
    *sv = -1;
    switch (in.kind) {
    case DS_IN_ABSENT: return 0;
    case DS_IN_LAYER: return 1;
    case DS_IN_SVAL: *sv = in.sv; return 0;
    case DS_IN_UNUSABLE: return ERR("input \"%.60s\" is %s, which is not supported", in.name, in.why);
    default: break;
    }
    ds_sval v = {.op = DS_SV_CONST, .name = (char *)in.name, .born = 0};
    if (const_values(c, n, &in, &v))
        return -1;
    if ((*sv = ds_sprog_add(ds_onnx_model(c), &v)) < 0)
        return ERR("out of memory");
    return 0;
}

/* The values of a constant input (or attribute name before opset
 * attr_until) into out[0..*count-1]; *count -1 when absent. */
static int const_ints(ctx *c, const Onnx__NodeProto *n, int i, const char *name, int attr_until, int64_t *out,
                      int max, int *count)
{
    *count = -1;
    if (ds_onnx_opset(c) < attr_until) {
        const Onnx__AttributeProto *a = attr(n, name);
        if (!a)
            return 0;
        if ((int)a->n_ints > max)
            return ERR("attribute %s has %zu values (at most %d)", name, a->n_ints, max);
        for (size_t k = 0; k < a->n_ints; k++)
            out[k] = a->ints[k];
        *count = (int)a->n_ints;
        return 0;
    }
    int sv, r = sval_input(c, n, i, &sv);
    if (r)
        return r < 0 ? -1 : ERR("%s (input %d) must be a constant, not a layer's output", name, i);
    if (sv < 0)
        return 0;
    const ds_sval *v = ds_sprog_get(ds_onnx_model(c), sv);
    if (v->op != DS_SV_CONST)
        return ERR("%s (input %d) must be a constant, not computed from shapes", name, i);
    if (v->n > max)
        return ERR("%s has %d values (at most %d)", name, v->n, max);
    memcpy(out, v->v, (size_t)v->n * sizeof *out);
    *count = v->n;
    return 0;
}

/* ---- layers -------------------------------------------------------------- */

/* Squeeze (mode 1) and Unsqueeze (mode 2) of a layer: a Reshape layer. */
static int squeeze_layer(ctx *c, const Onnx__NodeProto *n, int mode)
{
    static const char *const kaxes[] = {"axes", NULL};
    static const char *const knone[] = {NULL};
    int new_form = ds_onnx_opset(c) >= 13;
    if (ds_onnx_check(c, n, 1, new_form ? 2 : 1, new_form ? knone : kaxes))
        return -1;
    int64_t axes[DS_MAX_DIMS + 1];
    int na;
    int x = ds_onnx_layer_input(c, n, 0);
    if (x < 0 || const_ints(c, n, 1, "axes", 13, axes, DS_MAX_DIMS, &na))
        return -1;
    if (mode == 2 && na < 1)
        return ERR("axes are missing");
    int id = ds_onnx_new_layer(c, n, DS_OP_RESHAPE, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &ds_onnx_model(c)->layers[id];
    l->inputs[0] = x;
    l->reshape_mode = mode;
    l->n_axes = na < 0 ? 0 : na;
    for (int i = 0; i < l->n_axes; i++) {
        if (axes[i] < -DS_MAX_DIMS || axes[i] >= DS_MAX_DIMS)
            return ERR("axis %" PRId64 " is out of range (at most %d dimensions)", axes[i], DS_MAX_DIMS);
        l->axes[i] = (int)axes[i];
    }
    ds_onnx_bind_layer(c, n, id);
    return 0;
}

int ds_onnx_parse_reshape(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    static const char *const known[] = {"allowzero", NULL};
    if (ds_onnx_check(c, n, 2, 2, known))
        return -1;
    const Onnx__AttributeProto *az = attr(n, "allowzero");
    if (az && (az->i < 0 || az->i > 1))
        return ERR("unsupported attribute allowzero=%" PRId64, az->i);
    int x = ds_onnx_layer_input(c, n, 0), sv;
    if (x < 0)
        return -1;
    int r = sval_input(c, n, 1, &sv);
    if (r)
        return r < 0 ? -1 : ERR("the target shape (input 1) must be a constant or shape arithmetic, not a layer's "
                                "output");
    if (sv < 0)
        return ERR("the target shape (input 1) is missing");
    int id = ds_onnx_new_layer(c, n, DS_OP_RESHAPE, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &ds_onnx_model(c)->layers[id];
    l->inputs[0] = x;
    l->shape_sv = sv + 1;
    l->allowzero = az ? (int)az->i : 0;
    ds_onnx_bind_layer(c, n, id);
    return 0;
}

int ds_onnx_parse_transpose(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    static const char *const known[] = {"perm", NULL};
    if (ds_onnx_check(c, n, 1, 1, known))
        return -1;
    int x = ds_onnx_layer_input(c, n, 0);
    if (x < 0)
        return -1;
    const Onnx__AttributeProto *a = attr(n, "perm");
    if (a && a->n_ints > DS_MAX_DIMS)
        return ERR("unsupported attribute perm of %zu axes (at most %d dimensions)", a->n_ints, DS_MAX_DIMS);
    int id = ds_onnx_new_layer(c, n, DS_OP_TRANSPOSE, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &ds_onnx_model(c)->layers[id];
    l->inputs[0] = x;
    l->n_axes = a ? (int)a->n_ints : 0;
    for (int i = 0; i < l->n_axes; i++) {
        if (a->ints[i] < -DS_MAX_DIMS || a->ints[i] >= DS_MAX_DIMS)
            return ERR("unsupported attribute perm value %" PRId64, a->ints[i]);
        l->axes[i] = (int)a->ints[i];
    }
    ds_onnx_bind_layer(c, n, id);
    return 0;
}

/* ---- shape arithmetic ---------------------------------------------------- */

static const struct {
    const char *type;
    ds_sv_op op;
} fold_types[] = {
    {"Gather", DS_SV_GATHER}, {"Unsqueeze", DS_SV_UNSQUEEZE}, {"Squeeze", DS_SV_SQUEEZE},
    {"Concat", DS_SV_CONCAT}, {"Add", DS_SV_ADD}, {"Sub", DS_SV_SUB}, {"Mul", DS_SV_MUL},
    {"Div", DS_SV_DIV}, {"Cast", DS_SV_IDENT}, {"ConstantOfShape", DS_SV_FILL}, {"Slice", DS_SV_SLICE},
};

static int fold_shape(ctx *c, const Onnx__NodeProto *n, ds_sval *v)
{
    static const char *const known[] = {"start", "end", NULL};
    if (ds_onnx_check(c, n, 1, 1, known))
        return -1;
    int x = ds_onnx_layer_input(c, n, 0);
    if (x < 0)
        return -1;
    const Onnx__AttributeProto *s = attr(n, "start"), *e = attr(n, "end");
    v->layer = x;
    v->a = s ? s->i : 0;
    v->b = e ? e->i : DS_MAX_DIMS;
    return 0;
}

/* The node's attributes for op v->op, checked; the operands already read. */
static int fold_attrs(ctx *c, const Onnx__NodeProto *n, ds_sval *v, int k)
{
    static const char *const kaxis[] = {"axis", NULL}, *const kaxes[] = {"axes", NULL}, *const knone[] = {NULL},
                             *const kto[] = {"to", NULL}, *const kvalue[] = {"value", NULL};
    int new_axes = ds_onnx_opset(c) >= 13;
    switch (v->op) {
    case DS_SV_GATHER:
    case DS_SV_CONCAT: {
        if (ds_onnx_check(c, n, v->op == DS_SV_GATHER ? 2 : 1, v->op == DS_SV_GATHER ? 2 : DS_SV_MAX, kaxis))
            return -1;
        const Onnx__AttributeProto *a = attr(n, "axis");
        if ((a ? a->i : 0) != 0 && !(v->op == DS_SV_CONCAT && a->i == -1))
            return ERR("unsupported attribute axis=%" PRId64 " on a shape (only 0)", a->i);
        return 0;
    }
    case DS_SV_UNSQUEEZE:
    case DS_SV_SQUEEZE: {
        if (ds_onnx_check(c, n, 1, new_axes ? 2 : 1, new_axes ? knone : kaxes))
            return -1;
        int64_t axes[DS_MAX_DIMS + 1];
        int na;
        if (const_ints(c, n, 1, "axes", 13, axes, DS_MAX_DIMS, &na))
            return -1;
        if (!(na < 0 && v->op == DS_SV_SQUEEZE) && !(na == 1 && (axes[0] == 0 || axes[0] == -1)))
            return ERR("only axes [0] are supported on a shape value");
        v->n_in = 1;
        return 0;
    }
    case DS_SV_ADD:
    case DS_SV_SUB:
    case DS_SV_MUL:
    case DS_SV_DIV:
        return ds_onnx_check(c, n, 2, 2, knone);
    case DS_SV_IDENT: {
        if (ds_onnx_check(c, n, 1, 1, kto))
            return -1;
        const Onnx__AttributeProto *a = attr(n, "to");
        if (!a || !is_int_type((int32_t)a->i))
            return ERR("Cast of a shape to a non-integer type is not supported");
        return 0;
    }
    case DS_SV_FILL: {
        if (ds_onnx_check(c, n, 1, 1, kvalue))
            return -1;
        const Onnx__AttributeProto *a = attr(n, "value");
        if (a && a->t) {
            ds_onnx_in in = {.kind = DS_IN_CONST, .name = "value", .t = a->t};
            ds_sval f = {0};
            if (const_values(c, n, &in, &f))
                return -1;
            if (f.n != 1)
                return ERR("attribute value must hold one element");
            v->a = f.v[0];
        }
        return 0;
    }
    case DS_SV_SLICE:
        if (ds_onnx_opset(c) < 10)
            return ERR("the opset %d form (attributes) on a shape is not supported", ds_onnx_opset(c));
        if (ds_onnx_check(c, n, 3, 5, knone))
            return -1;
        if (k > 3 && v->in[3] < 0)
            return ERR("axes are missing");
        return 0;
    default:
        return ERR("not shape arithmetic");
    }
}

int ds_onnx_try_fold(ctx *c, const Onnx__NodeProto *n)
{
    const char *t = n->op_type ? n->op_type : "";
    ds_sval v = {.name = (char *)(n->name && n->name[0] ? n->name : n->n_output ? n->output[0] : "?"),
                 .born = ds_onnx_model(c)->n_layers};
    if (!strcmp(t, "Shape")) {
        v.op = DS_SV_SHAPE;
        if (fold_shape(c, n, &v))
            return -1;
    } else {
        size_t f = 0;
        while (f < sizeof fold_types / sizeof fold_types[0] && strcmp(t, fold_types[f].type))
            f++;
        if (f == sizeof fold_types / sizeof fold_types[0])
            return 0;
        v.op = fold_types[f].op;
        int k = ds_onnx_input_count(n);
        if (k > DS_SV_MAX)
            return 0; /* a wide Concat: of layers */
        /* A layer among the inputs: not shape arithmetic. */
        for (int i = 0; i < k; i++) {
            ds_onnx_in in;
            ds_onnx_input(c, n, i, &in);
            if (in.kind == DS_IN_LAYER) {
                if (v.op == DS_SV_SQUEEZE || v.op == DS_SV_UNSQUEEZE)
                    return i == 0 ? (squeeze_layer(c, n, v.op == DS_SV_SQUEEZE ? 1 : 2) ? -1 : 1) : 0;
                return 0;
            }
        }
        /* Squeeze/Unsqueeze read axes, not values, from input 1. */
        int operands = (v.op == DS_SV_SQUEEZE || v.op == DS_SV_UNSQUEEZE) ? 1 : k;
        for (int i = 0; i < operands; i++)
            if (sval_input(c, n, i, &v.in[i]))
                return -1;
        v.n_in = operands;
        if (fold_attrs(c, n, &v, k))
            return -1;
        for (int i = 0; i < v.n_in; i++)
            if (v.in[i] < 0 && !(v.op == DS_SV_SLICE && i >= 3))
                return ERR("input %d is missing", i);
    }
    int sv = ds_sprog_add(ds_onnx_model(c), &v);
    if (sv < 0)
        return ERR("out of memory");
    ds_onnx_bind_sval(c, n, sv);
    return 1;
}

/* ---- Slice, Pad ---------------------------------------------------------- */

/* Attribute ints (the opset < 10/11 forms) as a constant shape program value. */
static int attr_sval(ctx *c, const Onnx__NodeProto *n, const char *name, int *sv)
{
    const Onnx__AttributeProto *a = attr(n, name);
    *sv = 0;
    if (!a)
        return 0;
    if (a->n_ints > DS_SV_MAX)
        return ERR("attribute %s has %zu values (at most %d)", name, a->n_ints, DS_SV_MAX);
    ds_sval v = {.op = DS_SV_CONST, .name = (char *)name, .rank = 1, .n = (int)a->n_ints};
    for (size_t i = 0; i < a->n_ints; i++)
        v.v[i] = a->ints[i];
    int k = ds_sprog_add(ds_onnx_model(c), &v);
    if (k < 0)
        return ERR("out of memory");
    *sv = k + 1;
    return 0;
}

/* Input i as win_sv (value index + 1, 0 when absent): a constant or shape
 * arithmetic, never a layer. */
static int input_sval(ctx *c, const Onnx__NodeProto *n, int i, const char *what, int *out)
{
    int sv, r = sval_input(c, n, i, &sv);
    if (r)
        return r < 0 ? -1 : ERR("%s (input %d) must be a constant or shape arithmetic, not a layer's output",
                                what, i);
    *out = sv + 1;
    return 0;
}

/* A float32 scalar constant (Pad's constant_value). */
static int const_float(ctx *c, const Onnx__NodeProto *n, int i, float *out)
{
    ds_onnx_in in;
    ds_onnx_input(c, n, i, &in);
    if (in.kind == DS_IN_ABSENT)
        return 0;
    const Onnx__TensorProto *t = in.t;
    if (in.kind != DS_IN_CONST || !t->has_data_type || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return ERR("constant_value \"%.60s\" must be a float constant", in.name);
    if (t->has_raw_data && t->raw_data.len == 4)
        memcpy(out, t->raw_data.data, 4);
    else if (!(t->has_raw_data && t->raw_data.len) && t->n_float_data == 1)
        *out = t->float_data[0];
    else
        return ERR("constant_value \"%.60s\" must hold one float", in.name);
    return 0;
}

int ds_onnx_parse_window(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    static const char *const kslice9[] = {"starts", "ends", "axes", NULL};
    static const char *const kpad10[] = {"mode", "pads", "value", NULL};
    static const char *const kmode[] = {"mode", NULL};
    static const char *const knone[] = {NULL};
    int opset = ds_onnx_opset(c), sv[4] = {0};
    float value = 0;
    if (op == DS_OP_SLICE) {
        if (opset < 10 ? ds_onnx_check(c, n, 1, 1, kslice9) : ds_onnx_check(c, n, 3, 5, knone))
            return -1;
        if (opset < 10) {
            if (!attr(n, "starts") || !attr(n, "ends"))
                return ERR("attributes starts and ends are required");
            if (attr_sval(c, n, "starts", &sv[0]) || attr_sval(c, n, "ends", &sv[1]) ||
                attr_sval(c, n, "axes", &sv[2]))
                return -1;
        } else {
            static const char *const what[4] = {"starts", "ends", "axes", "steps"};
            for (int i = 0; i < 4; i++)
                if (input_sval(c, n, i + 1, what[i], &sv[i]))
                    return -1;
            if (!sv[0] || !sv[1])
                return ERR("starts and ends are required");
        }
    } else {
        if (opset < 11 ? ds_onnx_check(c, n, 1, 1, kpad10) : ds_onnx_check(c, n, 2, 3, kmode))
            return -1;
        const Onnx__AttributeProto *mode = attr(n, "mode");
        if (mode && !(mode->s.len == 8 && !memcmp(mode->s.data, "constant", 8)))
            return ERR("unsupported attribute mode=\"%.*s\" (only constant)", (int)(mode->s.len < 20 ? mode->s.len : 20),
                       (const char *)mode->s.data);
        if (opset < 11) {
            const Onnx__AttributeProto *v = attr(n, "value");
            if (!attr(n, "pads"))
                return ERR("attribute pads is missing");
            if (attr_sval(c, n, "pads", &sv[0]))
                return -1;
            value = v ? v->f : 0.0f;
        } else if (input_sval(c, n, 1, "pads", &sv[0]) || const_float(c, n, 2, &value)) {
            return -1;
        }
    }
    int x = ds_onnx_layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int id = ds_onnx_new_layer(c, n, op, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &ds_onnx_model(c)->layers[id];
    l->inputs[0] = x;
    memcpy(l->win_sv, sv, sizeof sv);
    l->pad_value = value;
    ds_onnx_bind_layer(c, n, id);
    return 0;
}

/* ---- Resize, Upsample ---------------------------------------------------- */

/* A string attribute's index in names (def when absent), -1 with an error
 * when it is none of them. */
static int attr_choice(ctx *c, const Onnx__NodeProto *n, const char *name, const char *const *names, int count,
                       int def)
{
    const Onnx__AttributeProto *a = attr(n, name);
    if (!a)
        return def;
    for (int i = 0; i < count; i++)
        if (names[i] && a->s.len == strlen(names[i]) && !memcmp(a->s.data, names[i], a->s.len))
            return i;
    ERR("unsupported attribute %s=\"%.*s\"", name, (int)(a->s.len < 40 ? a->s.len : 40), (const char *)a->s.data);
    return -1;
}

/* Resize's scales: a float constant of 4 values (or none, when sizes are
 * given: *given 0). */
static int resize_scales(ctx *c, const Onnx__NodeProto *n, int i, float *s, int *given)
{
    ds_onnx_in in;
    ds_onnx_input(c, n, i, &in);
    *given = 0;
    if (in.kind == DS_IN_ABSENT)
        return 0;
    const Onnx__TensorProto *t = in.t;
    if (in.kind != DS_IN_CONST || !t->has_data_type || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return ERR("scales \"%.60s\" must be a float constant", in.name);
    int raw = t->has_raw_data && t->raw_data.len;
    size_t k = raw ? t->raw_data.len / 4 : t->n_float_data;
    if (k == 0)
        return 0; /* empty: sizes are used */
    if (k != 4 || (raw && t->raw_data.len != 16))
        return ERR("scales \"%.60s\" must hold 4 values (N, C, H, W)", in.name);
    for (size_t j = 0; j < 4; j++) {
        if (raw)
            memcpy(&s[j], t->raw_data.data + 4 * j, 4);
        else
            s[j] = t->float_data[j];
    }
    *given = 1;
    return 0;
}

int ds_onnx_parse_resize(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    static const char *const kold[] = {"mode", NULL};
    static const char *const knew[] = {"mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                                       "exclude_outside", "extrapolation_value", NULL};
    static const char *const modes[] = {"nearest", "linear", "bilinear"};
    static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"};
    static const char *const nearest[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    int upsample = !strcmp(n->op_type, "Upsample"), opset = ds_onnx_opset(c);
    int old = upsample || opset < 11; /* Upsample and Resize-10: X, scales; asymmetric, floor */
    if (old ? ds_onnx_check(c, n, 2, 2, kold) : ds_onnx_check(c, n, opset < 13 ? 3 : 2, 4, knew))
        return -1;
    int mode = attr_choice(c, n, "mode", modes, 3, 0);
    int coord = old ? 3 : attr_choice(c, n, "coordinate_transformation_mode", coords, 4, 0);
    int near = old ? 2 : attr_choice(c, n, "nearest_mode", nearest, 4, 0);
    if (mode < 0 || coord < 0 || near < 0)
        return -1;
    if (mode == 2 && !upsample)
        return ERR("unsupported attribute mode=\"bilinear\" (Resize takes linear)");
    const Onnx__AttributeProto *ex = attr(n, "exclude_outside");
    if (ex && ex->i != 0)
        return ERR("unsupported attribute exclude_outside=%" PRId64, ex->i);
    float s[4];
    int given, sizes = 0;
    if (resize_scales(c, n, old ? 1 : 2, s, &given))
        return -1;
    if (!old && input_sval(c, n, 3, "sizes", &sizes))
        return -1;
    if (given == !!sizes)
        return ERR("exactly one of scales and sizes must be given");
    if (given && (s[0] != 1.0f || s[1] != 1.0f))
        return ERR("scales %g, %g on N and C are not supported (only 1)", (double)s[0], (double)s[1]);
    int x = ds_onnx_layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int id = ds_onnx_new_layer(c, n, DS_OP_RESIZE, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &ds_onnx_model(c)->layers[id];
    l->inputs[0] = x;
    l->resize_mode = mode ? 1 : 0;
    l->resize_coord = coord;
    l->resize_nearest = near;
    l->resize_scale[0] = given ? s[2] : 0;
    l->resize_scale[1] = given ? s[3] : 0;
    l->win_sv[0] = sizes;
    ds_onnx_bind_layer(c, n, id);
    return 0;
}

/* ---- ReduceMean, Split --------------------------------------------------- */

static int add_const(ctx *c, const Onnx__NodeProto *n, int rank, int64_t v0)
{
    ds_sval v = {.op = DS_SV_CONST, .name = (char *)(n->name ? n->name : "?"), .born = ds_onnx_model(c)->n_layers,
                 .rank = rank, .n = 1, .v = {v0}};
    int k = ds_sprog_add(ds_onnx_model(c), &v);
    if (k < 0)
        ERR("out of memory");
    return k;
}

static int add_op(ctx *c, const Onnx__NodeProto *n, ds_sv_op op, int a, int b)
{
    ds_sval v = {.op = op, .name = (char *)(n->name ? n->name : "?"), .born = ds_onnx_model(c)->n_layers,
                 .n_in = 2, .in = {a, b}};
    int k = ds_sprog_add(ds_onnx_model(c), &v);
    if (k < 0)
        ERR("out of memory");
    return k;
}

/* Split: output k is a Slice layer of the input along axis; with no split
 * sizes, equal parts computed from the input's shape at set_input. */
static int parse_split(ctx *c, const Onnx__NodeProto *n)
{
    static const char *const kold[] = {"axis", "split", NULL};
    static const char *const knew[] = {"axis", NULL};
    int opset = ds_onnx_opset(c), K = (int)n->n_output;
    if (K < 1 || K > 64)
        return ERR("%d outputs (1..64 supported)", K);
    if (ds_onnx_check_outs(c, n, 1, opset < 13 ? 1 : 2, K, opset < 13 ? kold : knew))
        return -1;
    for (int k = 0; k < K; k++)
        if (!n->output[k][0])
            return ERR("output %d is unnamed", k);
    const Onnx__AttributeProto *ax = attr(n, "axis");
    int64_t axis = ax ? ax->i : 0, sizes[64];
    if (axis < -DS_MAX_DIMS || axis >= DS_MAX_DIMS)
        return ERR("unsupported attribute axis=%" PRId64, axis);
    int ns;
    if (const_ints(c, n, 1, "split", 13, sizes, 64, &ns))
        return -1;
    if (ns >= 0 && ns != K)
        return ERR("split has %d sizes for %d outputs", ns, K);
    int x = ds_onnx_layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int axes = add_const(c, n, 1, axis), len = -1, whole = -1;
    if (axes < 0)
        return -1;
    if (ns < 0) { /* equal parts: len = Shape(x)[axis] / K */
        ds_sval sh = {.op = DS_SV_SHAPE, .name = (char *)(n->name ? n->name : "?"),
                      .born = ds_onnx_model(c)->n_layers, .layer = x, .a = axis,
                      .b = axis + 1 < 0 ? axis + 1 : DS_MAX_DIMS};
        int kk = add_const(c, n, 1, K);
        if ((whole = ds_sprog_add(ds_onnx_model(c), &sh)) < 0 || kk < 0 || (len = add_op(c, n, DS_SV_DIV, whole, kk)) < 0)
            return ERR("out of memory");
    }
    int64_t off = 0;
    for (int k = 0; k < K; k++) {
        int start, end;
        if (ns >= 0) {
            if (sizes[k] < 1)
                return ERR("split size %" PRId64 " (empty outputs are not supported)", sizes[k]);
            start = add_const(c, n, 1, off);
            off += sizes[k];
            end = add_const(c, n, 1, off);
        } else {
            int kk = add_const(c, n, 1, k);
            start = kk < 0 ? -1 : add_op(c, n, DS_SV_MUL, len, kk);
            end = k == K - 1 ? whole : start < 0 ? -1 : add_op(c, n, DS_SV_ADD, start, len);
        }
        if (start < 0 || end < 0)
            return -1;
        int id = ds_onnx_new_layer(c, n, DS_OP_SLICE, 1);
        if (id < 0)
            return -1;
        ds_layer *l = &ds_onnx_model(c)->layers[id];
        l->inputs[0] = x;
        l->win_sv[0] = start + 1;
        l->win_sv[1] = end + 1;
        l->win_sv[2] = axes + 1;
        ds_onnx_bind_output(c, n, k, id);
    }
    return 0;
}

int ds_onnx_parse_reduce(ctx *c, const Onnx__NodeProto *n, ds_op op)
{
    (void)op;
    if (!strcmp(n->op_type, "Split"))
        return parse_split(c, n);
    static const char *const known[] = {"axes", "keepdims", NULL};
    if (ds_onnx_check(c, n, 1, 1, known))
        return -1;
    const Onnx__AttributeProto *ax = attr(n, "axes"), *kd = attr(n, "keepdims");
    if (ax && (ax->n_ints < 1 || ax->n_ints > DS_MAX_DIMS))
        return ERR("unsupported attribute axes with %zu values (1..%d)", ax ? ax->n_ints : 0, DS_MAX_DIMS);
    if (kd && kd->i != 0 && kd->i != 1)
        return ERR("unsupported attribute keepdims=%" PRId64, kd->i);
    int x = ds_onnx_layer_input(c, n, 0);
    if (x < 0)
        return -1;
    int id = ds_onnx_new_layer(c, n, DS_OP_REDUCEMEAN, 1);
    if (id < 0)
        return -1;
    ds_layer *l = &ds_onnx_model(c)->layers[id];
    l->inputs[0] = x;
    l->keepdims = kd ? (int)kd->i : 1;
    l->n_axes = ax ? (int)ax->n_ints : 0;
    for (int i = 0; i < l->n_axes; i++) {
        if (ax->ints[i] < -DS_MAX_DIMS || ax->ints[i] >= DS_MAX_DIMS)
            return ERR("unsupported attribute axes value %" PRId64, ax->ints[i]);
        l->axes[i] = (int)ax->ints[i];
    }
    ds_onnx_bind_layer(c, n, id);
    return 0;
}
