/* shape_prog.h - shape arithmetic folded when the input size is known.
 *
 * PyTorch exports x.view(x.size(0), -1) and friends as Shape -> Gather ->
 * Unsqueeze -> Concat -> Reshape: integer arithmetic on tensor shapes, which
 * depend on the input size that ds_model_set_input fixes.  The loader turns
 * such nodes (and the integer constants they read) into values of the
 * model's shape program instead of layers; ds_model_set_input evaluates each
 * value once the layers it reads are shaped, and the layers that consume
 * one (a Reshape's target) read its result in their shape rule.
 *
 * A value is an int64 scalar (rank 0) or vector (rank 1) of at most
 * DS_SV_MAX elements: shapes, never data. */
#ifndef DS_MODEL_SHAPE_PROG_H
#define DS_MODEL_SHAPE_PROG_H

#include <stdint.h>

#include "common/error.h"

struct ds_model;

#define DS_SV_MAX 16

typedef enum ds_sv_op {
    DS_SV_CONST = 0,  /* v[] as loaded */
    DS_SV_SHAPE,      /* Shape(layer)[a:b] (b clamped; a, b may be negative) */
    DS_SV_GATHER,     /* in[0][in[1]] (axis 0, negative indices from the end) */
    DS_SV_UNSQUEEZE,  /* scalar -> [1] */
    DS_SV_SQUEEZE,    /* [1] -> scalar */
    DS_SV_CONCAT,     /* in[0..n_in-1] end to end (axis 0) */
    DS_SV_ADD,        /* element-wise, a scalar or [1] broadcast */
    DS_SV_SUB,
    DS_SV_MUL,
    DS_SV_DIV,        /* truncating, as ONNX runtimes do on integers */
    DS_SV_IDENT,      /* Cast between integer types */
    DS_SV_FILL,       /* ConstantOfShape(in[0]) = a, a 1-D shape */
    DS_SV_SLICE,      /* in[0][in[1]:in[2]:in[4]] (axes in[3] must be 0) */
    DS_SV_OP_COUNT
} ds_sv_op;

typedef struct ds_sval {
    ds_sv_op op;
    char *name;      /* the node (or constant) it came from, for errors */
    int born;        /* layers that existed when it was made: it reads only those */
    int layer;       /* DS_SV_SHAPE */
    int n_in;
    int in[DS_SV_MAX]; /* operand values (-1: absent optional) */
    int64_t a, b;    /* DS_SV_SHAPE: start, end; DS_SV_FILL: the fill value */
    int rank;        /* result: 0 scalar, 1 vector */
    int n;           /* result: element count */
    int64_t v[DS_SV_MAX];
} ds_sval;

typedef struct ds_sprog {
    int n, cap;
    ds_sval *v;
} ds_sprog;

/* Appends a copy of *v (name duplicated) to m's program; returns its index
 * or -1 when out of memory. */
int ds_sprog_add(struct ds_model *m, const ds_sval *v);
/* Evaluates, in order, the values made before layer `upto` existed
 * (born <= upto) that are not evaluated yet; *cursor (0 at first) keeps the
 * place.  Errors name the node. */
int ds_sprog_eval(struct ds_model *m, int upto, int *cursor, ds_error *err);
/* Value i (0-based) of m's program, evaluated; NULL when there is none. */
const ds_sval *ds_sprog_get(const struct ds_model *m, int i);
void ds_sprog_free(struct ds_model *m);

#endif
