#!/usr/bin/python3
"""Makes tests/data/onnx_shape: the export patterns of structural ops and
shape arithmetic (as PyTorch 1.13 emits them), each a directory laid out as
the ONNX node tests are (model.onnx, test_data_set_0/input_0.pb,
output_0.pb; expected outputs from numpy), plus bad_*.onnx models the loader
must refuse.  Run with python3-onnx: tests/models/make_shape_models.py"""
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "onnx_shape")
rng = np.random.default_rng(15)
I64 = TensorProto.INT64


def c64(name, vals):
    return helper.make_node("Constant", [], [name], name=name,
                            value=numpy_helper.from_array(np.array(vals, dtype=np.int64), name))


def model(nodes, x_shape, y_name, opset, inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def write(name, m, x, y):
    d = os.path.join(OUT, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    save(m, os.path.join(d, "model.onnx"))
    for f, t in (("input_0.pb", x), ("output_0.pb", y)):
        with open(os.path.join(d, "test_data_set_0", f), "wb") as fh:
            fh.write(numpy_helper.from_array(t.astype(np.float32)).SerializeToString())


def unsq(name, src, opset):
    if opset >= 13:
        return [c64(name + "_axes", [0]), helper.make_node("Unsqueeze", [src, name + "_axes"], [name], name=name)]
    return [helper.make_node("Unsqueeze", [src], [name], name=name, axes=[0])]


def flatten_view(opset):
    """torchvision's x = self.conv(x); x.view(x.size(0), -1)"""
    x = rng.standard_normal((1, 8, 3, 3)).astype(np.float32)
    w = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Shape", ["c"], ["s"], name="shape"),
             c64("zero", 0),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0)]
    nodes += unsq("n1", "n", opset)
    nodes += [c64("minus1", [-1]),
              helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
              helper.make_node("Reshape", ["c", "target"], ["y"], name="view")]
    y = np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0]).reshape(1, -1)
    write("flatten_view_opset%d" % opset,
          model(nodes, [1, 8, 3, 3], "y", opset, [numpy_helper.from_array(w, "w")]), x, y)


def channel_shuffle(opset):
    """ShuffleNetV2's channel shuffle, 4-D: N, C, H, W = x.size();
    x.view(N, g, C // g, H * W).transpose(1, 2).reshape(N, -1, H, W)"""
    x = rng.standard_normal((1, 6, 4, 5)).astype(np.float32)
    w = rng.standard_normal((6, 6, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Shape", ["c"], ["s"], name="shape")]
    for i, d in enumerate(("n", "c_", "h", "w_")):
        nodes += [c64("i" + d, i), helper.make_node("Gather", ["s", "i" + d], [d], name="gather_" + d, axis=0)]
    nodes += [c64("groups", 2),
              helper.make_node("Div", ["c_", "groups"], ["cpg"], name="div"),
              helper.make_node("Mul", ["h", "w_"], ["hw"], name="mul"),
              helper.make_node("Cast", ["hw"], ["hw64"], name="cast", to=I64)]
    for src in ("n", "groups", "cpg", "hw64"):
        nodes += unsq("u_" + src, src, opset)
    nodes += [helper.make_node("Concat", ["u_n", "u_groups", "u_cpg", "u_hw64"], ["t1"], name="concat1", axis=0),
              helper.make_node("Reshape", ["c", "t1"], ["r1"], name="view"),
              helper.make_node("Transpose", ["r1"], ["tr"], name="transpose", perm=[0, 2, 1, 3])]
    for src in ("h", "w_"):
        nodes += unsq("v_" + src, src, opset)
    nodes += [c64("m1", [-1]), helper.make_node("Concat", ["u_n", "m1", "v_h", "v_w_"], ["t2"], name="concat2",
                                                axis=0),
              helper.make_node("Reshape", ["tr", "t2"], ["y"], name="reshape")]
    c = np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0])
    y = c.reshape(1, 2, 3, 20).transpose(0, 2, 1, 3).reshape(1, -1, 4, 5)
    write("channel_shuffle_opset%d" % opset,
          model(nodes, ["N", 6, "H", "W"], "y", opset, [numpy_helper.from_array(w, "w")]), x, y)


def channel_shuffle_5d(opset):
    """torchvision's ShuffleNetV2 channel_shuffle, as exported:
    x.view(N, g, C // g, H, W); torch.transpose(x, 1, 2).contiguous();
    x.view(N, -1, H, W)"""
    x = rng.standard_normal((1, 6, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["c"], name="relu"),
             helper.make_node("Shape", ["c"], ["s"], name="shape")]
    for i, d in enumerate(("n", "c_", "h", "w_")):
        nodes += [c64("i" + d, i), helper.make_node("Gather", ["s", "i" + d], [d], name="gather_" + d, axis=0)]
    nodes += [c64("groups", 2), helper.make_node("Div", ["c_", "groups"], ["cpg"], name="div")]
    for src in ("n", "groups", "cpg", "h", "w_"):
        nodes += unsq("u_" + src, src, opset)
    nodes += [helper.make_node("Concat", ["u_n", "u_groups", "u_cpg", "u_h", "u_w_"], ["t1"], name="concat1",
                               axis=0),
              helper.make_node("Reshape", ["c", "t1"], ["r1"], name="view"),
              helper.make_node("Transpose", ["r1"], ["tr"], name="transpose", perm=[0, 2, 1, 3, 4]),
              c64("m1", [-1]),
              helper.make_node("Concat", ["u_n", "m1", "u_h", "u_w_"], ["t2"], name="concat2", axis=0),
              helper.make_node("Reshape", ["tr", "t2"], ["y"], name="view2")]
    c = np.maximum(x, 0)
    y = c.reshape(1, 2, 3, 3, 4).transpose(0, 2, 1, 3, 4).reshape(1, -1, 3, 4)
    write("channel_shuffle_5d_opset%d" % opset, model(nodes, ["N", 6, "H", "W"], "y", opset), x, y)


def squeeze_transpose(opset):
    """Squeeze/Unsqueeze of data, Transpose with the default perm and a 4-D perm."""
    x = rng.standard_normal((2, 4, 1, 5)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    if opset >= 13:
        nodes += [c64("ax2", [2]), helper.make_node("Squeeze", ["r", "ax2"], ["sq"], name="squeeze"),
                  c64("ax0", [-1]), helper.make_node("Unsqueeze", ["sq", "ax0"], ["us"], name="unsqueeze")]
    else:
        nodes += [helper.make_node("Squeeze", ["r"], ["sq"], name="squeeze", axes=[2]),
                  helper.make_node("Unsqueeze", ["sq"], ["us"], name="unsqueeze", axes=[-1])]
    nodes += [helper.make_node("Transpose", ["us"], ["t1"], name="transpose_perm", perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["t1"], ["y"], name="transpose_default")]
    r = np.maximum(x, 0)
    y = r.reshape(2, 4, 5, 1).transpose(0, 2, 3, 1).transpose(3, 2, 1, 0)
    write("squeeze_transpose_opset%d" % opset, model(nodes, [2, 4, 1, 5], "y", opset), x, y)


def shape_fill(opset):
    """Shape(x)[2:] by Slice (opset 13) or Shape's start (15+); ConstantOfShape,
    Sub, Mul, Concat into [0, -1, W]; Reshape's allowzero (14+) given 0."""
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    if opset >= 15:
        nodes += [helper.make_node("Shape", ["r"], ["hw"], name="shape_hw", start=2)]
    else:
        nodes += [helper.make_node("Shape", ["r"], ["s"], name="shape"),
                  c64("st", [2]), c64("en", [9223372036854775807]), c64("axs", [0]),
                  helper.make_node("Slice", ["s", "st", "en", "axs"], ["hw"], name="slice")]
    fill = numpy_helper.from_array(np.array([3], dtype=np.int64), "value")
    nodes += [c64("one_len", [1]),
              helper.make_node("ConstantOfShape", ["one_len"], ["three"], name="fill", value=fill),
              c64("three_again", 3),
              helper.make_node("Sub", ["three", "three_again"], ["zero"], name="sub"),   # [0]
              helper.make_node("Concat", ["zero", "hw"], ["t0"], name="concat", axis=0),  # [0, H, W]
              c64("mask", [1, 0, 1]),
              helper.make_node("Mul", ["t0", "mask"], ["t1"], name="mul"),               # [0, 0, W]
              c64("m1", [0, -1, 0]),
              helper.make_node("Add", ["t1", "m1"], ["target"], name="add")]             # [0, -1, W]
    kw = {"allowzero": 0} if opset >= 14 else {}
    nodes += [helper.make_node("Reshape", ["r", "target"], ["y"], name="reshape", **kw)]
    y = np.maximum(x, 0).reshape(1, -1, 5)
    write("shape_fill_opset%d" % opset, model(nodes, [1, 3, 4, 5], "y", opset), x, y)


def slice_pad(opset):
    """x[:, 1:, 1:-1, ::-2] style Slices (negative, clamped, negative step),
    F.pad with a constant; the opset 9 forms take attributes."""
    x = rng.standard_normal((1, 5, 6, 7)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    big = 9223372036854775807
    if opset < 10:
        nodes += [helper.make_node("Slice", ["r"], ["s1"], name="slice1", starts=[1, 1], ends=[big, -1], axes=[1, 2])]
    else:
        nodes += [c64("st", [1, 1, -1]), c64("en", [big, -1, -big]), c64("ax", [1, -2, 3]), c64("sp", [1, 1, -2]),
                  helper.make_node("Slice", ["r", "st", "en", "ax", "sp"], ["s1"], name="slice1")]
    pads = [0, 0, 1, 2, 0, 1, 0, -1]
    if opset < 11:
        nodes += [helper.make_node("Pad", ["s1"], ["y"], name="pad", pads=pads, value=1.5)]
    else:
        nodes += [c64("pads", pads),
                  helper.make_node("Constant", [], ["cv"], name="cv",
                                   value=numpy_helper.from_array(np.array(1.5, dtype=np.float32), "cv")),
                  helper.make_node("Pad", ["s1", "pads", "cv"], ["y"], name="pad", mode="constant")]
    r = np.maximum(x, 0)
    s1 = r[:, 1:, 1:-1, :] if opset < 10 else r[:, 1:, 1:-1, ::-2]
    y = np.pad(s1, [(0, 0), (0, 1), (1, 0), (2, 0)], constant_values=1.5)[:, :, :, :-1]
    write("slice_pad_opset%d" % opset, model(nodes, [1, 5, 6, 7], "y", opset), x, y)


def bilinear_half_pixel(x, oh, ow):
    """PyTorch's bilinear, align_corners=False (ONNX pytorch_half_pixel)."""
    def taps(n, o):
        c = np.clip((np.arange(o) + 0.5) * n / o - 0.5, 0, n - 1) if o > 1 else np.zeros(1)
        i0 = np.floor(c).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), (c - i0)
    h0, h1, a = taps(x.shape[2], oh)
    w0, w1, b = taps(x.shape[3], ow)
    top = x[:, :, h0][:, :, :, w0] * (1 - b) + x[:, :, h0][:, :, :, w1] * b
    bot = x[:, :, h1][:, :, :, w0] * (1 - b) + x[:, :, h1][:, :, :, w1] * b
    return top * (1 - a[:, None]) + bot * a[:, None]


def fpn_upsample(opset):
    """FPN: F.interpolate(top, size=lateral.shape[-2:]) (sizes from shape
    arithmetic, nearest) added to the lateral; nn.Upsample(scale_factor=2,
    mode="bilinear") after it (opset 9: Upsample, nearest only there)."""
    x = rng.standard_normal((1, 4, 6, 5)).astype(np.float32)
    nodes = [helper.make_node("MaxPool", ["x"], ["top"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    if opset >= 11:
        roi = numpy_helper.from_array(np.zeros(0, dtype=np.float32), "roi")
        nodes += [helper.make_node("Shape", ["x"], ["s"], name="shape"),
                  c64("st", [2]), c64("en", [4]), c64("ax", [0]),
                  helper.make_node("Slice", ["s", "st", "en", "ax"], ["hw"], name="slice"),
                  helper.make_node("Shape", ["top"], ["ts"], name="shape_top"),
                  c64("st0", [0]), c64("en2", [2]),
                  helper.make_node("Slice", ["ts", "st0", "en2", "ax"], ["nc"], name="slice_nc"),
                  helper.make_node("Concat", ["nc", "hw"], ["sizes"], name="concat", axis=0),
                  helper.make_node("Constant", [], ["roi"], name="roi", value=roi),
                  helper.make_node("Constant", [], ["noscales"], name="noscales", value=numpy_helper.from_array(
                      np.zeros(0, dtype=np.float32), "noscales")),
                  helper.make_node("Resize", ["top", "roi", "noscales", "sizes"], ["up"], name="resize_nearest",
                                   mode="nearest", coordinate_transformation_mode="asymmetric",
                                   nearest_mode="floor"),
                  helper.make_node("Add", ["up", "x"], ["sum"], name="add"),
                  helper.make_node("Constant", [], ["sc"], name="sc", value=numpy_helper.from_array(
                      np.array([1, 1, 2, 2], dtype=np.float32), "sc")),
                  helper.make_node("Resize", ["sum", "roi", "sc"], ["y"], name="resize_linear", mode="linear",
                                   coordinate_transformation_mode="pytorch_half_pixel")]
    else:
        nodes += [helper.make_node("Constant", [], ["sc1"], name="sc1", value=numpy_helper.from_array(
                      np.array([1, 1, 2, 2], dtype=np.float32), "sc1")),
                  helper.make_node("Upsample", ["top", "sc1"], ["up0"], name="upsample", mode="nearest"),
                  helper.make_node("Pad", ["up0"], ["up"], name="pad", pads=[0, 0, 0, 0, 0, 0, 0, 1]),
                  helper.make_node("Add", ["up", "x"], ["y"], name="add")]
    top = x[:, :, :6, :4].reshape(1, 4, 3, 2, 2, 2).max(axis=(3, 5))
    if opset >= 11:  # asymmetric, floor: source index floor(o * in / out)
        up = top[:, :, np.arange(6) * 3 // 6][:, :, :, np.arange(5) * 2 // 5]
    else:
        up = np.pad(top.repeat(2, axis=2).repeat(2, axis=3), [(0, 0)] * 3 + [(0, 1)])
    s = up + x
    y = bilinear_half_pixel(s, 12, 10) if opset >= 11 else s
    write("fpn_upsample_opset%d" % opset, model(nodes, [1, 4, 6, 5], "y", opset), x, y)


def shufflenet_unit(opset):
    """ShuffleNetV2: x1, x2 = x.chunk(2, dim=1) (Split, equal or with sizes),
    cat((x1, f(x2)), 1); torchvision's head x.mean([2, 3]) (ReduceMean
    keepdims=0), then a Softmax; and a keepdims=1 mean over H."""
    x = rng.standard_normal((1, 6, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r0"], name="relu0")]
    if opset >= 13:
        nodes += [c64("halves", [3, 3]), c64("sizes_h", [1, 2]),
                  helper.make_node("Split", ["r0", "halves"], ["a", "b"], name="split", axis=1),
                  helper.make_node("Split", ["a", "sizes_h"], ["a1", "a2"], name="split_h", axis=2)]
    else:
        nodes += [helper.make_node("Split", ["r0"], ["a", "b"], name="split", axis=-3),
                  helper.make_node("Split", ["a"], ["a1", "a2"], name="split_h", axis=2, split=[1, 2])]
    nodes += [helper.make_node("ReduceMean", ["a2"], ["a2m"], name="mean_h", axes=[2], keepdims=1),
              helper.make_node("ReduceMean", ["b"], ["bm"], name="mean_b", axes=[-2]),
              helper.make_node("Concat", ["a1", "a2m", "bm"], ["cat"], name="cat", axis=1),
              helper.make_node("ReduceMean", ["cat"], ["m"], name="mean", axes=[2, -1], keepdims=0),
              helper.make_node("Softmax", ["m"], ["y"], name="softmax", axis=1)]
    r0 = np.maximum(x, 0)
    a, b = r0[:, :3], r0[:, 3:]
    a1, a2 = a[:, :, :1], a[:, :, 1:]
    cat = np.concatenate([a1, a2.mean(axis=2, keepdims=True), b.mean(axis=2, keepdims=True)], axis=1)
    m = cat.mean(axis=(2, 3))
    e = np.exp(m - m.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    write("shufflenet_unit_opset%d" % opset, model(nodes, [1, 6, 3, 4], "y", opset), x, y)


def softmax_axis(opset):
    """Softmax over H of a 4-D tensor (opset 13: one axis; before 13 only
    the last axis is one axis) after a Transpose."""
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    axis = 2 if opset >= 13 else -1
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="transpose", perm=[0, 3, 1, 2]),
             helper.make_node("Softmax", ["t"], ["y"], name="softmax", axis=axis)]
    t = x.transpose(0, 3, 1, 2)
    e = np.exp(t - t.max(axis=axis, keepdims=True))
    write("softmax_axis_opset%d" % opset, model(nodes, [1, 3, 4, 5], "y", opset), x, e / e.sum(axis=axis, keepdims=True))


def bad(name, nodes, opset=13, inits=()):
    save(model(nodes, [1, 4, 2, 2], "y", opset, inits), os.path.join(OUT, "bad_%s.onnx" % name))


def bad_models():
    relu = helper.make_node("Relu", ["x"], ["r"], name="relu")
    bad("resize_cubic", [relu, helper.make_node("Constant", [], ["sc"], name="sc", value=numpy_helper.from_array(
        np.array([1, 1, 2, 2], dtype=np.float32), "sc")),
        helper.make_node("Resize", ["r", "", "sc"], ["y"], name="resize", mode="cubic")])
    bad("pad_reflect", [relu, c64("p", [0, 0, 1, 1, 0, 0, 1, 1]),
                        helper.make_node("Pad", ["r", "p"], ["y"], name="pad", mode="reflect")])
    bad("slice_empty", [relu, c64("st", [3]), c64("en", [1]), c64("ax", [1]),
                        helper.make_node("Slice", ["r", "st", "en", "ax"], ["y"], name="slice")])
    bad("transpose_6d", [relu, helper.make_node("Transpose", ["r"], ["y"], name="tr", perm=[0, 1, 2, 3, 4, 5])])
    bad("cast_float", [relu, helper.make_node("Shape", ["r"], ["s"], name="shape"),
                       helper.make_node("Cast", ["s"], ["f"], name="cast", to=TensorProto.FLOAT),
                       helper.make_node("Reshape", ["r", "f"], ["y"], name="reshape")])
    bad("gather_axis1", [relu, helper.make_node("Shape", ["r"], ["s"], name="shape"), c64("i", 0),
                         helper.make_node("Gather", ["s", "i"], ["y"], name="gather", axis=1)])
    bad("reshape_by_layer", [relu, helper.make_node("Reshape", ["r", "r"], ["y"], name="reshape")])
    bad("reshape_bad_size", [relu, c64("t", [3, -1]), helper.make_node("Reshape", ["r", "t"], ["y"],
                                                                        name="reshape")])
    bad("squeeze_non_unit", [relu, c64("a", [1]), helper.make_node("Squeeze", ["r", "a"], ["y"], name="squeeze")])
    bad("shape_output", [relu, helper.make_node("Shape", ["r"], ["y"], name="shape")])
    bad("allowzero_zero", [relu, c64("t", [0, 16]), helper.make_node("Reshape", ["r", "t"], ["y"], name="reshape",
                                                                      allowzero=1)], opset=14)


def main():
    os.makedirs(OUT, exist_ok=True)
    for opset in (11, 13, 17):
        flatten_view(opset)
        channel_shuffle(opset)
        channel_shuffle_5d(opset)
        squeeze_transpose(opset)
        shape_fill(opset)
    for opset in (9, 13, 17):
        slice_pad(opset)
        fpn_upsample(opset)
        shufflenet_unit(opset)
        softmax_axis(opset)
    bad_models()


if __name__ == "__main__":
    sys.exit(main())
