/* shape_prog.c - the shape program: integer shape arithmetic evaluated by
 * ds_model_set_input (see shape_prog.h). */
#include "model/shape_prog.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

/* Shape arithmetic stays far from int64 overflow: operands and results are
 * bounded like the loader's attributes. */
#define SV_LIMIT ((int64_t)1 << 40)

int ds_sprog_add(ds_model *m, const ds_sval *v)
{
    ds_sprog *p = m->sprog;
    if (!p && !(p = m->sprog = calloc(1, sizeof *p)))
        return -1;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        ds_sval *nv = realloc(p->v, (size_t)cap * sizeof *nv);
        if (!nv)
            return -1;
        p->v = nv;
        p->cap = cap;
    }
    ds_sval *d = &p->v[p->n];
    *d = *v;
    d->name = strdup(v->name ? v->name : "?");
    if (!d->name)
        return -1;
    return p->n++;
}

const ds_sval *ds_sprog_get(const ds_model *m, int i)
{
    return m->sprog && i >= 0 && i < m->sprog->n ? &m->sprog->v[i] : NULL;
}

void ds_sprog_free(ds_model *m)
{
    if (!m->sprog)
        return;
    for (int i = 0; i < m->sprog->n; i++)
        free(m->sprog->v[i].name);
    free(m->sprog->v);
    free(m->sprog);
    m->sprog = NULL;
}

static const char *const op_names[DS_SV_OP_COUNT] = {
    "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Add",
    "Sub", "Mul", "Div", "Cast", "ConstantOfShape", "Slice"};

#define FAIL(...) sv_err(err, m, v, __VA_ARGS__)

static int sv_err(ds_error *err, const ds_model *m, const ds_sval *v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int sv_err(ds_error *err, const ds_model *m, const ds_sval *v, const char *fmt, ...)
{
    char msg[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ds_errorf(err, "%s: node \"%.80s\" (%s, shape arithmetic): %s", m->name ? m->name : "model",
                     v->name, op_names[v->op], msg);
}

/* Element i of x, a scalar or [1] broadcast to any length. */
static int64_t at(const ds_sval *x, int i)
{
    return x->n == 1 ? x->v[0] : x->v[i];
}

static int eval_arith(const ds_model *m, ds_sval *v, const ds_sval *x, const ds_sval *y, ds_error *err)
{
    if (x->n != y->n && x->n != 1 && y->n != 1)
        return FAIL("operands of %d and %d elements do not broadcast", x->n, y->n);
    v->n = x->n > y->n ? x->n : y->n;
    v->rank = x->rank > y->rank ? x->rank : y->rank;
    for (int i = 0; i < v->n; i++) {
        int64_t a = at(x, i), b = at(y, i), r;
        switch (v->op) {
        case DS_SV_ADD: r = a + b; break;
        case DS_SV_SUB: r = a - b; break;
        case DS_SV_MUL:
            if (a && (a > SV_LIMIT || a < -SV_LIMIT || b > SV_LIMIT / (a < 0 ? -a : a) ||
                      b < -SV_LIMIT / (a < 0 ? -a : a)))
                return FAIL("%" PRId64 " * %" PRId64 " is out of range", a, b);
            r = a * b;
            break;
        default:
            if (b == 0)
                return FAIL("division by zero");
            r = a / b;
            break;
        }
        if (r > SV_LIMIT || r < -SV_LIMIT)
            return FAIL("result %" PRId64 " is out of range", r);
        v->v[i] = r;
    }
    return 0;
}

/* Python-style slice bounds of ONNX Slice/Shape: negative from the end,
 * clamped to 0..len (to -1..len-1 for a negative step's end). */
static int64_t clamp_index(int64_t i, int64_t len, int end_of_negative)
{
    if (i < 0)
        i += len;
    int64_t lo = end_of_negative ? -1 : 0, hi = end_of_negative ? len - 1 : len;
    return i < lo ? lo : i > hi ? hi : i;
}

static int eval_one(ds_model *m, ds_sval *v, ds_error *err)
{
    const ds_sval *in[DS_SV_MAX] = {0};
    for (int k = 0; k < v->n_in; k++)
        if (v->in[k] >= 0)
            in[k] = &m->sprog->v[v->in[k]];
    switch (v->op) {
    case DS_SV_CONST:
        return 0;
    case DS_SV_SHAPE: {
        const ds_shape *s = &m->layers[v->layer].out_shape;
        int64_t a = clamp_index(v->a, s->ndim, 0), b = clamp_index(v->b, s->ndim, 0);
        v->rank = 1;
        v->n = 0;
        for (int64_t i = a; i < b; i++)
            v->v[v->n++] = s->dims[i];
        return 0;
    }
    case DS_SV_GATHER:
        if (in[0]->rank != 1)
            return FAIL("gathering from a scalar");
        v->rank = in[1]->rank;
        v->n = in[1]->n;
        for (int i = 0; i < v->n; i++) {
            int64_t k = in[1]->v[i];
            if (k < -in[0]->n || k >= in[0]->n)
                return FAIL("index %" PRId64 " is out of range for %d elements", k, in[0]->n);
            v->v[i] = in[0]->v[k < 0 ? k + in[0]->n : k];
        }
        return 0;
    case DS_SV_UNSQUEEZE:
    case DS_SV_SQUEEZE:
    case DS_SV_IDENT:
        if (v->op == DS_SV_UNSQUEEZE && in[0]->rank != 0)
            return FAIL("only a scalar can be unsqueezed here");
        if (v->op == DS_SV_SQUEEZE && (in[0]->rank != 1 || in[0]->n != 1))
            return FAIL("only a one-element vector can be squeezed here");
        v->rank = v->op == DS_SV_IDENT ? in[0]->rank : v->op == DS_SV_UNSQUEEZE;
        v->n = in[0]->n;
        memcpy(v->v, in[0]->v, sizeof v->v);
        return 0;
    case DS_SV_CONCAT:
        v->rank = 1;
        v->n = 0;
        for (int k = 0; k < v->n_in; k++) {
            if (in[k]->rank != 1)
                return FAIL("input %d is a scalar", k);
            if (v->n + in[k]->n > DS_SV_MAX)
                return FAIL("more than %d elements", DS_SV_MAX);
            memcpy(v->v + v->n, in[k]->v, (size_t)in[k]->n * sizeof v->v[0]);
            v->n += in[k]->n;
        }
        return 0;
    case DS_SV_ADD:
    case DS_SV_SUB:
    case DS_SV_MUL:
    case DS_SV_DIV:
        return eval_arith(m, v, in[0], in[1], err);
    case DS_SV_FILL:
        if (in[0]->rank != 1 || in[0]->n > 1 || (in[0]->n == 1 && (in[0]->v[0] < 0 || in[0]->v[0] > DS_SV_MAX)))
            return FAIL("only a vector of 0..%d elements is supported", DS_SV_MAX);
        v->rank = in[0]->n;
        v->n = in[0]->n ? (int)in[0]->v[0] : 1;
        for (int i = 0; i < v->n; i++)
            v->v[i] = v->a;
        return 0;
    case DS_SV_SLICE: {
        int64_t st = in[4] ? at(in[4], 0) : 1;
        if (in[0]->rank != 1 || in[1]->n != 1 || in[2]->n != 1 || (in[3] && (in[3]->n != 1 || (in[3]->v[0] != 0 &&
                                                                                               in[3]->v[0] != -1))) ||
            (in[4] && in[4]->n != 1) || st == 0)
            return FAIL("only a slice of a vector along axis 0 with a nonzero step is supported");
        int64_t len = in[0]->n, a = clamp_index(in[1]->v[0], len, st < 0), b = clamp_index(in[2]->v[0], len, st < 0);
        v->rank = 1;
        v->n = 0;
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
            v->v[v->n++] = in[0]->v[i];
        return 0;
    }
    default:
        return FAIL("unknown shape operation");
    }
}

int ds_sprog_eval(ds_model *m, int upto, int *cursor, ds_error *err)
{
    for (; m->sprog && *cursor < m->sprog->n && m->sprog->v[*cursor].born <= upto; ++*cursor)
        if (eval_one(m, &m->sprog->v[*cursor], err))
            return -1;
    return 0;
}
