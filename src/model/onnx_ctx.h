/* onnx_ctx.h - the loader's services to parsers kept in files of their own
 * (onnx_ops_*.c); internal to src/model.  Each wraps the onnx_load.c helper
 * of the same role; errors name the node and op. */
#ifndef DS_MODEL_ONNX_CTX_H
#define DS_MODEL_ONNX_CTX_H

#include "model/model.h"
#include "model/onnx.pb-c.h"

struct ds_onnx_ctx;

/* What input i of a node is. */
enum { DS_IN_ABSENT = 0, DS_IN_LAYER, DS_IN_CONST, DS_IN_SVAL, DS_IN_UNUSABLE };

typedef struct ds_onnx_in {
    int kind;
    const char *name;
    int layer;                  /* DS_IN_LAYER */
    const Onnx__TensorProto *t; /* DS_IN_CONST */
    int bound;                  /* DS_IN_CONST: a bound graph input (float32 only) */
    int sv;                     /* DS_IN_SVAL: index into the model's shape program */
    const char *why;            /* DS_IN_UNUSABLE */
} ds_onnx_in;

int ds_onnx_node_err(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* lo..hi inputs, one output, attributes among known (NULL-terminated). */
int ds_onnx_check(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, int lo, int hi, const char *const *known);
/* The same for a node of up to max_out outputs. */
int ds_onnx_check_outs(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, int lo, int hi, int max_out,
                       const char *const *known);
/* Inputs given, trailing absent ones not counted. */
int ds_onnx_input_count(const Onnx__NodeProto *n);
int ds_onnx_input(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, int i, ds_onnx_in *in);
/* Input i as a layer id, or -1 with an error. */
int ds_onnx_layer_input(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, int i);
int ds_onnx_new_layer(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, ds_op op, int n_inputs);
/* Output 0 of the node is layer id / shape program value sv. */
void ds_onnx_bind_layer(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, int id);
void ds_onnx_bind_sval(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, int sv);
/* Output k (non-empty) of the node is layer id. */
void ds_onnx_bind_output(struct ds_onnx_ctx *c, const Onnx__NodeProto *n, int k, int id);
ds_model *ds_onnx_model(struct ds_onnx_ctx *c);
int ds_onnx_opset(const struct ds_onnx_ctx *c);

#endif
