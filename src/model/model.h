/* model.h - a CNN as a DAG of layers: the unit the scheduler cuts and the
 * caches key on.
 *
 * Layer 0 is the network input.  Every computing ONNX node becomes one layer
 * (Dropout/Identity are removed; a BatchNormalization, a Mul or Add of a
 * per-channel or scalar constant, or a Clip, whose input is a Conv with no
 * other consumer is folded into that Conv).  Ids are a topological
 * order: every layer's inputs have smaller ids.  Tensors are NCHW. */
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/tensor.h"

typedef enum ds_op {
    DS_OP_INPUT = 0,
    DS_OP_CONV,
    DS_OP_RELU,
    DS_OP_MAXPOOL,
    DS_OP_AVGPOOL,
    DS_OP_GLOBALAVGPOOL,
    DS_OP_CONCAT,
    DS_OP_ADD,
    DS_OP_FLATTEN,
    DS_OP_GEMM,      /* Gemm, or MatMul followed by Add of a constant */
    DS_OP_LRN,
    DS_OP_SOFTMAX,
    DS_OP_BATCHNORM, /* not folded: y = x * scale[c] + shift[c] */
    DS_OP_CLIP,        /* clip_min..clip_max (+-INFINITY when absent) */
    DS_OP_SIGMOID,
    DS_OP_HARDSIGMOID, /* max(0, min(1, alpha x + beta)) */
    DS_OP_HARDSWISH,
    DS_OP_LEAKYRELU,   /* alpha */
    DS_OP_MUL,         /* Mul/Sub/Div (and Add): ONNX broadcasting; one operand */
    DS_OP_SUB,         /* may be a constant (weight; const_first: it comes first) */
    DS_OP_DIV,
    DS_OP_PRELU,       /* slope in weight, broadcast to the input's shape */
    DS_OP_RESHAPE,   /* Reshape, or Squeeze/Unsqueeze of data: the values in another shape */
    DS_OP_TRANSPOSE,
    DS_OP_SLICE,
    DS_OP_PAD,       /* mode constant */
    DS_OP_RESIZE,    /* Resize, Upsample: 4-D, H and W */
    DS_OP_REDUCEMEAN,
    DS_OP_SILU,      /* x * Sigmoid(x): no ONNX op of its own; folded at load from the pair */
    DS_OP_COUNT
} ds_op;

/* Adding an op takes: a value above, its entry in the op table
 * (op_table.c: name, ONNX types, parser, shape rule, FLOPs, predictor kind;
 * a _Static_assert there counts the ops) and its kernels in src/engine
 * (reference and XNNPACK backends).  Nothing else switches on the op. */

/* Predictor kinds of sched/predict.h (their numbers are the predictor
 * blob's kind byte); each op names its default in the op table. */
typedef enum ds_pred_kind {
    DS_PRED_PASS = 0,
    DS_PRED_MEAN = 1,
    DS_PRED_LINEAR = 2,
    DS_PRED_MLP = 3,
    DS_PRED_CONCAT = 4,
    DS_PRED_KIND_COUNT
} ds_pred_kind;

typedef struct ds_layer {
    int id;
    ds_op op;
    char *name;        /* ONNX node name, or its first output's name */
    int n_inputs;
    int *inputs;       /* producer layer ids, in the node's input order */
    int n_consumers;
    int *consumers;    /* consumer layer ids, ascending */
    ds_shape out_shape; /* for the input size given to ds_model_set_input */

    /* Attributes (only those of this op are meaningful). */
    int kernel[2];     /* kH, kW (conv, pools) */
    int stride[2];
    int dilation[2];
    int pads[4];       /* top, left, bottom, right */
    int group;
    int ceil_mode;
    int count_include_pad;
    int axis;          /* concat, flatten, softmax (>= 0 once shaped) */
    int lrn_size;
    float lrn_alpha, lrn_beta, lrn_bias;

    /* Parameters, owned by the model.
     * conv: weight O x (I/group) x kH x kW, bias O (ndim 0 when absent)
     * gemm: weight N x K (already transposed so that y = x W^T + b),
     *       bias N (ndim 0 when absent); alpha/beta folded in.
     * batchnorm: scale and shift, C each (from gamma/beta/mean/var/eps). */
    ds_tensor weight;
    ds_tensor bias;

    /* Element-wise ops (Clip, HardSigmoid, LeakyRelu) and binary ops with
     * a constant operand held in weight (Add, Mul, Sub, Div). */
    float clip_min, clip_max;
    float alpha, beta;
    int const_first;   /* the constant is the first operand (Sub, Div) */
    int act;           /* conv: 1 = output clamped to clip_min..clip_max (a
                        * Clip folded at load) */

    /* Conv and pools: 0 = pads as given; 1 VALID, 2 SAME_UPPER,
     * 3 SAME_LOWER: pads[] are then recomputed for the input size by
     * ds_model_set_input. */
    int auto_pad;

    /* Reshape: reshape_mode 0 takes its target from the model's shape
     * program value shape_sv - 1 (0 entries copy the input's dim unless
     * allowzero, one -1 is inferred); 1 squeezes axes[0..n_axes-1] (all unit
     * dims when n_axes is 0); 2 unsqueezes them.  Transpose: perm in
     * axes[0..n_axes-1] (n_axes 0: reversed).  Axes are >= 0 once shaped. */
    int reshape_mode;
    int shape_sv;
    int allowzero;
    int n_axes;
    int axes[DS_MAX_DIMS];

    /* Slice, Pad: y[j] = x[win_off[a] + j[a] * win_step[a]] on every axis a,
     * pad_value where that falls outside x.  Slice reads starts, ends, axes,
     * steps from the shape program values win_sv[0..3] - 1 (0: absent), Pad
     * its pads from win_sv[0] - 1; the shape rule resolves win_off/win_step. */
    int win_sv[4];
    int64_t win_off[DS_MAX_DIMS];
    int64_t win_step[DS_MAX_DIMS];
    float pad_value;

    /* Resize: resize_mode 0 nearest, 1 linear; resize_coord 0 half_pixel,
     * 1 pytorch_half_pixel, 2 align_corners, 3 asymmetric; resize_nearest
     * 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil.  Output
     * H, W from the sizes (shape program value win_sv[0] - 1) or else
     * floor(in * resize_scale[]). */
    int resize_mode, resize_coord, resize_nearest;
    float resize_scale[2];

    /* ReduceMean: over axes[0..n_axes-1] (all when n_axes is 0), keepdims.
     * (Split becomes one Slice layer per output.) */
    int keepdims;
} ds_layer;

typedef struct ds_model {
    char *name;        /* file name or "zoo:NAME" */
    char hash[17];     /* hex 64-bit hash of the ONNX bytes, for cache keys */
    int n_layers;
    ds_layer *layers;  /* layers[0] is the input (DS_OP_INPUT) */
    int n_outputs;
    int *outputs;      /* layer ids of the graph outputs */
    ds_shape input_shape; /* as declared by the file; dims <= 0 are free;
                           * ndim 0 when the file declares no shape */
    int opset;         /* default-domain opset of the file (9..17) */
    struct ds_sprog *sprog; /* shape arithmetic folded by ds_model_set_input
                             * (model/shape_prog.h); NULL when none */
} ds_model;

/* Loads "zoo:NAME" (built in memory, see zoo.h) or an .onnx file path. */
int ds_model_load(const char *spec, ds_model *m, ds_error *err);
/* Parses ONNX bytes; label names the source in error messages. */
int ds_model_load_onnx(const void *buf, size_t len, const char *label,
                       ds_model *m, ds_error *err);
/* Like ds_model_load_onnx, for files whose parameters are graph inputs (the
 * ONNX backend node tests: weights in input_1.pb, ...): graph inputs 1..n_bound
 * (file order, initializers excluded) take the f32 tensors bound[0..n_bound-1]
 * as if they were initializers; graph input 0 stays the network input. */
int ds_model_load_onnx_bound(const void *buf, size_t len, const char *label,
                             const ds_tensor *bound, int n_bound,
                             ds_model *m, ds_error *err);
/* Computes every layer's out_shape for an NCHW input of n x c x h x w.
 * Axes (concat, flatten, softmax) become non-negative and auto_pad pads are
 * filled in.  A file whose input is declared 2-D (N x C) takes n x c with
 * h = w = 1.  Declared positive dims must match.
 * Errors name the layer, its op and the offending shape. */
int ds_model_set_input(ds_model *m, int64_t n, int64_t c, int64_t h, int64_t w,
                       ds_error *err);
/* The op's shape rule (ONNX semantics) for layer id >= 1, from its
 * producers' out_shapes: sets out_shape and resolves axes, auto_pad pads and
 * a conv's absent kernel_shape; checks the input count, ranks, channel counts
 * against the weights, windows and attribute ranges.  ds_model_set_input
 * runs it on every layer; tests run it on layers built by hand. */
int ds_model_shape_layer(ds_model *m, int id, ds_error *err);
/* Whether layer id >= 1 is what its kernels may trust: weight and bias
 * (when present) float32 tensors holding their shape's data, and the shape
 * rule giving the same out_shape and attributes from the producers'
 * out_shapes (so ds_model_set_input has run).  Run once per executor. */
int ds_layer_check(const ds_model *m, int id, ds_error *err);
/* Articulation layers: ids through which every input-to-output path passes
 * (the legal single cut points; layer 0 and the last layer included).
 * Writes them ascending into ids (room for n_layers); returns their count. */
int ds_model_articulations(const ds_model *m, int *ids);
/* Multiply-accumulates x2 of one layer for its current out_shape. */
double ds_layer_flops(const ds_model *m, int id);
const char *ds_op_name(ds_op op);
/* The predictor kind the trainer fits for op by default (the scheduler's
 * ds_predictors_default_kind falls back when the shapes do not fit it). */
ds_pred_kind ds_op_pred_kind(ds_op op);
void ds_model_free(ds_model *m);

/* Reads an ONNX TensorProto (float32 data, raw_data or float_data), as found
 * in the ONNX backend test cases' input_N.pb/output_N.pb files; int64 and
 * int32 tensors (their shapes, axes, indices) become float32, exactly
 * (|v| <= 2^24, else an error). */
int ds_onnx_read_tensor(const void *buf, size_t len, ds_tensor *out, ds_error *err);

#endif
