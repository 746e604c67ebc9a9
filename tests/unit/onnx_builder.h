/* onnx_builder.h - a tiny ONNX graph builder for the loader's tests (every
 * piece malloc'd, freed as the packed model is unpacked), their seeded test
 * data and a naive convolution to compare with.  Include after
 * cmocka.h (expect_load_error asserts). */
#ifndef DS_TEST_ONNX_BUILDER_H
#define DS_TEST_ONNX_BUILDER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/onnx.pb-c.h"

typedef struct tb {
    Onnx__ModelProto *m;
    Onnx__GraphProto *g;
} tb;

static inline char *xdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

#define PUSH(arr, n, v)                                                  \
    do {                                                                 \
        void *np_ = realloc((arr), ((n) + 1) * sizeof *(arr));           \
        assert_non_null(np_);                                            \
        (arr) = np_;                                                     \
        (arr)[(n)++] = (v);                                              \
    } while (0)

static inline Onnx__ValueInfoProto *vinfo(const char *name, int ndim, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = calloc(1, sizeof *v);
    Onnx__TypeProto *t = calloc(1, sizeof *t);
    Onnx__TypeProto__Tensor *tt = calloc(1, sizeof *tt);
    Onnx__TensorShapeProto *s = calloc(1, sizeof *s);
    assert_true(v && t && tt && s);
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(t);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(s);
    v->name = xdup(name);
    v->type = t;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = 1;
    tt->shape = s;
    for (int i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = calloc(1, sizeof *d);
        assert_non_null(d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] > 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        PUSH(s->dim, s->n_dim, d);
    }
    return v;
}

static inline tb tb_new(int opset)
{
    tb b;
    b.m = calloc(1, sizeof *b.m);
    b.g = calloc(1, sizeof *b.g);
    Onnx__OperatorSetIdProto *o = calloc(1, sizeof *o);
    assert_true(b.m && b.g && o);
    onnx__model_proto__init(b.m);
    onnx__graph_proto__init(b.g);
    onnx__operator_set_id_proto__init(o);
    o->has_version = 1;
    o->version = opset;
    PUSH(b.m->opset_import, b.m->n_opset_import, o);
    b.m->has_ir_version = 1;
    b.m->ir_version = 7;
    b.m->graph = b.g;
    return b;
}

static inline void tb_input(tb *b, const char *name, int64_t n, int64_t c, int64_t h, int64_t w)
{
    int64_t d[4] = {n, c, h, w};
    PUSH(b->g->input, b->g->n_input, vinfo(name, 4, d));
}

static inline void tb_output(tb *b, const char *name)
{
    PUSH(b->g->output, b->g->n_output, vinfo(name, 0, NULL));
}

static inline Onnx__TensorProto *tensor(const char *name, int ndim, const int64_t *dims, const float *data)
{
    Onnx__TensorProto *t = calloc(1, sizeof *t);
    assert_non_null(t);
    onnx__tensor_proto__init(t);
    t->name = xdup(name);
    t->has_data_type = 1;
    t->data_type = 1;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        PUSH(t->dims, t->n_dims, dims[i]);
        numel *= (size_t)dims[i];
    }
    t->has_raw_data = 1;
    t->raw_data.len = numel * sizeof(float);
    t->raw_data.data = malloc(t->raw_data.len);
    assert_non_null(t->raw_data.data);
    memcpy(t->raw_data.data, data, t->raw_data.len);
    return t;
}

static inline Onnx__TensorProto *tb_init(tb *b, const char *name, int ndim, const int64_t *dims, const float *data)
{
    Onnx__TensorProto *t = tensor(name, ndim, dims, data);
    PUSH(b->g->initializer, b->g->n_initializer, t);
    return t;
}

/* inputs and outputs: comma-separated names ("" items allowed). */
static inline Onnx__NodeProto *tb_node(tb *b, const char *op, const char *name, const char *ins, const char *outs)
{
    Onnx__NodeProto *n = calloc(1, sizeof *n);
    assert_non_null(n);
    onnx__node_proto__init(n);
    n->op_type = xdup(op);
    n->name = xdup(name);
    for (int k = 0; k < 2; k++) {
        const char *p = k ? outs : ins;
        while (p && *p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char *s = strndup(p, len);
            assert_non_null(s);
            if (k)
                PUSH(n->output, n->n_output, s);
            else
                PUSH(n->input, n->n_input, s);
            p = e ? e + 1 : NULL;
        }
    }
    PUSH(b->g->node, b->g->n_node, n);
    return n;
}

static inline Onnx__AttributeProto *attr(Onnx__NodeProto *n, const char *name, int type)
{
    Onnx__AttributeProto *a = calloc(1, sizeof *a);
    assert_non_null(a);
    onnx__attribute_proto__init(a);
    a->name = xdup(name);
    a->has_type = 1;
    a->type = (Onnx__AttributeProto__AttributeType)type;
    PUSH(n->attribute, n->n_attribute, a);
    return a;
}

static inline void a_ints(Onnx__NodeProto *n, const char *name, int count, const int64_t *v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    for (int i = 0; i < count; i++)
        PUSH(a->ints, a->n_ints, v[i]);
}

static inline void a_int(Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static inline void a_float(Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static inline void a_str(Onnx__NodeProto *n, const char *name, const char *v)
{
    Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.len = strlen(v);
    a->s.data = (uint8_t *)xdup(v);
}

static inline uint8_t *tb_pack(tb *b, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(&b->m->base);
    uint8_t *buf = malloc(*len + 1);
    assert_non_null(buf);
    protobuf_c_message_pack(&b->m->base, buf);
    protobuf_c_message_free_unpacked(&b->m->base, NULL);
    return buf;
}

/* Loads the built graph; returns the loader's result (err filled). */
static inline int tb_load(tb *b, ds_model *m, ds_error *err)
{
    size_t len;
    uint8_t *buf = tb_pack(b, &len);
    err->msg[0] = '\0';
    int rc = ds_model_load_onnx(buf, len, "t.onnx", m, err);
    free(buf);
    return rc;
}

static inline void expect_load_error(tb *b, const char *const *needles)
{
    ds_model m;
    ds_error err;
    int rc = tb_load(b, &m, &err);
    if (rc == 0)
        ds_model_free(&m);
    assert_int_equal(rc, -1);
    for (const char *const *n = needles; *n; n++) {
        if (!strstr(err.msg, *n))
            fail_msg("error \"%s\" lacks \"%s\"", err.msg, *n);
    }
    assert_null(strchr(err.msg, '\n'));
}

/* ---- test data and a reference convolution */

static inline float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static inline void fill(float *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = frand(&seed);
}

/* Naive NCHW conv, stride 1, symmetric pad p, group 1. */
static inline void naive_conv(const float *x, int C, int H, int W, const float *w, const float *bias, int O, int k, int p,
                       float *y)
{
    int OH = H + 2 * p - k + 1, OW = W + 2 * p - k + 1;
    for (int o = 0; o < O; o++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                double acc = bias ? bias[o] : 0;
                for (int c = 0; c < C; c++)
                    for (int a = 0; a < k; a++)
                        for (int bb = 0; bb < k; bb++) {
                            int yy = i + a - p, xx = j + bb - p;
                            if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                                acc += (double)x[(c * H + yy) * W + xx] * w[((o * C + c) * k + a) * k + bb];
                        }
                y[(o * OH + i) * OW + j] = (float)acc;
            }
}

#endif
