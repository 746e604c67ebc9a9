/* zoo_build.h - the pieces the zoo's trunks are written with; internal to
 * src/model (zoo.c and the zoo_*.c files that hold a family of trunks each).
 *
 * A trunk is a function that appends nodes and initializers to a graph.
 * Every layer helper names its node's single output after the node, takes
 * its input names, and draws its weights from the builder's seeded stream
 * in the order it is called, so a trunk's bytes depend only on its seed.
 * Out of memory is sticky (b->oom) and checked once at the end, so trunk
 * code never tests return values it does not need. */
#ifndef DS_MODEL_ZOO_BUILD_H
#define DS_MODEL_ZOO_BUILD_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "model/onnx.pb-c.h"

#define DS_ZB_NAME 160 /* room for every node name the trunks make */
#define DS_ZB_MAX_OUTPUTS 4

typedef struct ds_zb {
    Onnx__GraphProto *g;
    size_t cap_nodes, cap_inits;
    uint64_t rng;
    int have_spare;
    double spare;
    int oom;
    int n_outputs; /* graph outputs, declared by ds_zb_output */
    char outputs[DS_ZB_MAX_OUTPUTS][DS_ZB_NAME];
    int output_channels[DS_ZB_MAX_OUTPUTS];
} ds_zb;

/* A trunk: appends its layers reading "input" and declares its outputs. */
typedef void ds_zb_trunk(ds_zb *b);

/* The seeded stream: uniform in (0, 1) and standard normal. */
double ds_zb_uniform(ds_zb *b);
double ds_zb_normal(ds_zb *b);

/* dst = a + b, cut to n bytes. */
void ds_zb_join(char *dst, size_t n, const char *a, const char *b);

/* A node of op type op named name (its output has the same name), or NULL
 * when out of memory; attributes are added with ds_zb_attr_*. */
Onnx__NodeProto *ds_zb_node(ds_zb *b, const char *op, const char *name, int n_in, const char *const *inputs);
/* The same with n_out outputs named name:0 .. name:n_out-1 (Split). */
Onnx__NodeProto *ds_zb_node_outs(ds_zb *b, const char *op, const char *name, int n_in, const char *const *inputs,
                                 int n_out);
void ds_zb_attr_int(ds_zb *b, Onnx__NodeProto *n, const char *name, int64_t v);
void ds_zb_attr_float(ds_zb *b, Onnx__NodeProto *n, const char *name, float v);
void ds_zb_attr_ints(ds_zb *b, Onnx__NodeProto *n, const char *name, int count, ...);

/* A float32 initializer of the given dims; returns its data to fill (zeroed),
 * or NULL when out of memory. */
float *ds_zb_initializer(ds_zb *b, const char *name, int ndim, const int64_t *dims);
/* An int64 1-D initializer holding count values (shapes, axes, split sizes). */
void ds_zb_const_ints(ds_zb *b, const char *name, int count, const int64_t *values);
/* A float32 scalar initializer (Clip's min and max). */
void ds_zb_const_float(ds_zb *b, const char *name, float value);

/* Conv name.weight (cout x cin/groups x k x k, He-normal) and, with bias,
 * name.bias (small uniform); square kernel, stride s, padding p. */
void ds_zb_conv(ds_zb *b, const char *name, const char *in, int cin, int cout, int k, int s, int p, int groups,
                int bias);
/* BatchNormalization with name.weight/bias/running_mean/running_var mildly
 * random around the identity. */
void ds_zb_batchnorm(ds_zb *b, const char *name, const char *in, int ch, float eps);
/* A one-input node without attributes (Relu, Sigmoid, GlobalAveragePool, ...). */
void ds_zb_unary(ds_zb *b, const char *op, const char *name, const char *in);
/* MaxPool / AveragePool, square kernel k, stride s, padding p. */
void ds_zb_pool(ds_zb *b, const char *op, const char *name, const char *in, int k, int s, int p, int ceil_mode);
/* A two-input node without attributes (Add, Mul). */
void ds_zb_binary(ds_zb *b, const char *op, const char *name, const char *x, const char *y);
/* Concat of n inputs along axis 1. */
void ds_zb_concat(ds_zb *b, const char *name, int n, const char *const *inputs);

/* Declares a graph output: a 1 x channels x ? x ? float tensor. */
void ds_zb_output(ds_zb *b, const char *name, int channels);

/* Runs trunk into a fresh opset-13 model named name, packed into
 * *onnx_bytes (malloc'd) of *len bytes. */
int ds_zb_build(const char *name, ds_zb_trunk *trunk, uint64_t seed, uint8_t **onnx_bytes, size_t *len,
                ds_error *err);

#endif
