/* op_table.h - what each op is, in one place (internal to src/model).
 *
 * ds_op_defs[op] holds, per op: its name, the ONNX op types read into it,
 * the function that turns such a node into a layer (attributes checked; in
 * onnx_load.c, next to the helpers it uses), its shape rule, its FLOP count
 * and the predictor kind the trainer fits by default.  The loader dispatches
 * on it, ds_model_set_input runs the shape rules, the engine re-checks a
 * layer with them once (ds_layer_check) and then trusts out_shape. */
#ifndef DS_MODEL_OP_TABLE_H
#define DS_MODEL_OP_TABLE_H

#include "model/model.h"
#include "model/onnx.pb-c.h"

struct ds_onnx_ctx; /* the loader's state (onnx_load.c) */

/* Reads node n into a new layer of op (or folds it into an earlier one);
 * errors name the node and op. */
typedef int (*ds_op_parse_fn)(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);

/* Sets l->out_shape from its inputs' shapes in[0..l->n_inputs-1] and
 * resolves the attributes that depend on them (negative axes, auto_pad
 * pads, a conv's kernel from its weight); checks ranks, channel counts
 * against the weights, window sizes and attribute ranges.  Errors go
 * through ds_layer_shape_err. */
typedef int (*ds_op_shape_fn)(const ds_model *m, ds_layer *l, const ds_shape *const *in,
                              ds_error *err);

/* Multiply-accumulates x2 for the layer's out_shape (NULL: one per output
 * element). */
typedef double (*ds_op_flops_fn)(const ds_model *m, const ds_layer *l);

typedef struct ds_op_def {
    const char *name;          /* ds_op_name */
    const char *onnx_types[2]; /* ONNX op_types read into this op (unused slots NULL) */
    int arity;                 /* inputs it takes; -1: one or more */
    ds_op_parse_fn parse;      /* NULL: not read from a node (the input) */
    ds_op_shape_fn shape;
    ds_op_flops_fn flops;
    ds_pred_kind pred;
} ds_op_def;

extern const ds_op_def ds_op_defs[DS_OP_COUNT];

/* The parse functions of the table (onnx_load.c). */
int ds_onnx_parse_conv(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_pool(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_unary(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_concat(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_add(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_gemm(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_batchnorm(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
/* Structural ops and shape folding (onnx_ops_shape.c). */
int ds_onnx_parse_reshape(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_transpose(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_window(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op); /* Slice, Pad */
int ds_onnx_parse_resize(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op); /* Resize, Upsample */
/* ReduceMean; Split (listed in its row for dispatch) becomes Slice layers. */
int ds_onnx_parse_reduce(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
/* Folds node n into the model's shape program (shape_prog.h) when it is
 * shape arithmetic: Shape, or an integer op (Gather, Unsqueeze, Squeeze,
 * Concat, Add, Sub, Mul, Div, Cast, ConstantOfShape, Slice) none of whose
 * inputs is a layer; Squeeze and Unsqueeze of a layer become Reshape
 * layers here too.  Returns 1 done, 0 not such a node, -1 error. */
int ds_onnx_try_fold(struct ds_onnx_ctx *c, const Onnx__NodeProto *n);

/* Shape rules of the structural ops (op_shape.c). */
int ds_shape_reshape(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
int ds_shape_transpose(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
int ds_shape_window(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
int ds_shape_resize(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
int ds_shape_reduce(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
double ds_flops_reduce(const ds_model *m, const ds_layer *l);

/* The parse functions and shape rules of the element-wise ops (issue 15):
 * parsers in onnx_load.c, shape rules in op_eltwise.c. */
int ds_onnx_parse_eltwise(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_onnx_parse_binary(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op);
int ds_shape_unary_eltwise(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
int ds_shape_binary(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
int ds_shape_prelu(const ds_model *m, ds_layer *l, const ds_shape *const *in, ds_error *err);
/* ONNX multidirectional broadcast of a and b (right-aligned; dims equal or
 * 1); -1 when they do not broadcast. */
int ds_bcast_shape(const ds_shape *a, const ds_shape *b, ds_shape *out);
/* The two operand shapes of a binary layer in ONNX order (a constant operand
 * is the layer's weight); -1 when it does not have exactly two. */
int ds_binary_operands(const ds_layer *l, const ds_shape *const *in, const ds_shape **a,
                       const ds_shape **b);

/* "MODEL: layer ID "NAME" (OP): input SHAPE: message" (in: the first
 * input's shape, or NULL). */
int ds_layer_shape_err(ds_error *err, const ds_model *m, const ds_layer *l, const ds_shape *in,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
