/* ops_ref.c - the plain-C reference kernels (NCHW) and the checks both backends share. */
#include "ops.h"
#include "ops_shape.h"

#include <math.h>
#include <string.h>

#include "ops_eltwise.h"

/* Dilation 0 (attribute absent) means 1. */
static int dil(const ds_layer *l, int i)
{
    return l->dilation[i] > 0 ? l->dilation[i] : 1;
}

static int fail(ds_error *err, const ds_layer *l, const char *what)
{
    return ds_errorf(err, "layer %d (%s, %s): %s", l->id, l->name ? l->name : "?", ds_op_name(l->op),
                     what);
}

int ds_ops_check_model(const ds_model *m, ds_error *err)
{
    if (!m || m->n_layers < 1 || !m->layers)
        return ds_errorf(err, "engine: empty model");
    for (int id = 1; id < m->n_layers; id++) {
        if (m->layers[id].n_inputs > DS_OPS_MAX_INPUTS)
            return fail(err, &m->layers[id], "more inputs than the kernels take");
        if (ds_layer_check(m, id, err))
            return -1;
    }
    return 0;
}

int ds_ops_check_inputs(const ds_model *m, int id, int n_in, const ds_tensor *const *in,
                        ds_error *err)
{
    if (!m || id < 1 || id >= m->n_layers)
        return ds_errorf(err, "engine: bad layer id %d", id);
    const ds_layer *l = &m->layers[id];
    if (l->op == DS_OP_INPUT)
        return fail(err, l, "the input layer is supplied, not executed");
    if (!in || n_in != l->n_inputs)
        return fail(err, l, "wrong number of inputs");
    for (int i = 0; i < n_in; i++)
        if (!in[i] || in[i]->dtype != DS_F32 || !in[i]->data ||
            !ds_shape_equal(&in[i]->shape, &m->layers[l->inputs[i]].out_shape))
            return fail(err, l, "an input is not a float32 tensor of its producer's out_shape");
    return 0;
}

/* ---- strided helpers (shared with the NHWC path) ---- */

void ds_scale_shift(const float *x, float *y, int64_t outer, int64_t c, int64_t inner,
                    const float *scale, const float *shift)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < c; k++) {
            const float *xp = x + (o * c + k) * inner;
            float *yp = y + (o * c + k) * inner;
            float a = scale[k], b = shift[k];
            for (int64_t i = 0; i < inner; i++)
                yp[i] = xp[i] * a + b;
        }
}

void ds_softmax_strided(const float *x, float *y, int64_t outer, int64_t n, int64_t inner)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *xp = x + o * n * inner + i;
            float *yp = y + o * n * inner + i;
            float mx = -INFINITY;
            for (int64_t k = 0; k < n; k++)
                if (xp[k * inner] > mx)
                    mx = xp[k * inner];
            double sum = 0;
            for (int64_t k = 0; k < n; k++) {
                float e = expf(xp[k * inner] - mx);
                yp[k * inner] = e;
                sum += e;
            }
            float inv = (float)(1.0 / sum);
            for (int64_t k = 0; k < n; k++)
                yp[k * inner] *= inv;
        }
}

void ds_lrn_strided(const float *x, float *y, int64_t outer, int64_t c, int64_t inner,
                    int size, float alpha, float beta, float bias)
{
    int64_t lo = (size - 1) / 2, hi = size / 2; /* floor and ceil of (size-1)/2 */
    float a = alpha / (float)size;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *xp = x + o * c * inner + i;
            float *yp = y + o * c * inner + i;
            for (int64_t k = 0; k < c; k++) {
                int64_t b = k - lo < 0 ? 0 : k - lo, e = k + hi >= c ? c - 1 : k + hi;
                float sq = 0;
                for (int64_t j = b; j <= e; j++)
                    sq += xp[j * inner] * xp[j * inner];
                yp[k * inner] = xp[k * inner] / powf(bias + a * sq, beta);
            }
        }
}

void ds_concat_strided(int n_in, const float *const *x, const int64_t *n, float *y,
                       int64_t outer, int64_t inner)
{
    int64_t total = 0;
    for (int i = 0; i < n_in; i++)
        total += n[i];
    for (int64_t o = 0; o < outer; o++) {
        float *yp = y + o * total * inner;
        for (int i = 0; i < n_in; i++) {
            size_t len = (size_t)(n[i] * inner);
            memcpy(yp, x[i] + o * len, len * sizeof(float));
            yp += len;
        }
    }
}

void ds_pool_generic(const ds_layer *l, const float *x, const int64_t *xd, ds_strides4 sx,
                     float *y, const int64_t *yd, ds_strides4 sy)
{
    const int kh = l->kernel[0], kw = l->kernel[1], sh = l->stride[0], sw = l->stride[1];
    const int dh = dil(l, 0), dw = dil(l, 1);
    const int64_t H = xd[2], W = xd[3];
    const int is_max = l->op == DS_OP_MAXPOOL;
    for (int64_t n = 0; n < xd[0]; n++)
        for (int64_t c = 0; c < xd[1]; c++) {
            const float *xp = x + n * sx.n + c * sx.c;
            float *ypc = y + n * sy.n + c * sy.c;
            for (int64_t oh = 0; oh < yd[2]; oh++)
                for (int64_t ow = 0; ow < yd[3]; ow++) {
                    int64_t h0 = oh * sh - l->pads[0], w0 = ow * sw - l->pads[1];
                    float mx = -INFINITY, sum = 0;
                    int64_t valid_h = 0, valid_w = 0, pad_h = 0, pad_w = 0;
                    for (int i = 0; i < kh; i++) {
                        int64_t h = h0 + (int64_t)i * dh;
                        pad_h += h >= -l->pads[0] && h < H + l->pads[2];
                        valid_h += h >= 0 && h < H;
                    }
                    for (int j = 0; j < kw; j++) {
                        int64_t w = w0 + (int64_t)j * dw;
                        pad_w += w >= -l->pads[1] && w < W + l->pads[3];
                        valid_w += w >= 0 && w < W;
                    }
                    for (int i = 0; i < kh; i++) {
                        int64_t h = h0 + (int64_t)i * dh;
                        if (h < 0 || h >= H)
                            continue;
                        for (int j = 0; j < kw; j++) {
                            int64_t w = w0 + (int64_t)j * dw;
                            if (w < 0 || w >= W)
                                continue;
                            float v = xp[h * sx.h + w * sx.w];
                            if (v > mx)
                                mx = v;
                            sum += v;
                        }
                    }
                    float r;
                    if (is_max) {
                        r = mx;
                    } else {
                        int64_t cnt = l->count_include_pad ? pad_h * pad_w : valid_h * valid_w;
                        r = cnt ? sum / (float)cnt : 0.0f;
                    }
                    ypc[oh * sy.h + ow * sy.w] = r;
                }
        }
}

/* ---- reference kernels ---- */

static void ref_conv(const ds_layer *l, const ds_tensor *xt, ds_tensor *yt)
{
    const int64_t N = xt->shape.dims[0], C = xt->shape.dims[1], H = xt->shape.dims[2],
                  W = xt->shape.dims[3];
    const int64_t O = yt->shape.dims[1], OH = yt->shape.dims[2], OW = yt->shape.dims[3];
    const int64_t G = l->group, Cg = C / G, Og = O / G;
    const int64_t KH = l->weight.shape.dims[2], KW = l->weight.shape.dims[3];
    const int sh = l->stride[0], sw = l->stride[1], dh = dil(l, 0), dw = dil(l, 1);
    const float *x = ds_tensor_f32(xt), *wt = ds_tensor_f32(&l->weight);
    const float *b = l->bias.shape.ndim ? ds_tensor_f32(&l->bias) : NULL;
    float *y = ds_tensor_f32(yt);
    for (int64_t n = 0; n < N; n++)
        for (int64_t oc = 0; oc < O; oc++) {
            float *yp = y + (n * O + oc) * OH * OW;
            float bv = b ? b[oc] : 0.0f;
            for (int64_t i = 0; i < OH * OW; i++)
                yp[i] = bv;
            int64_t g = oc / Og;
            for (int64_t ic = 0; ic < Cg; ic++) {
                const float *xp = x + (n * C + g * Cg + ic) * H * W;
                for (int64_t kh = 0; kh < KH; kh++)
                    for (int64_t kw = 0; kw < KW; kw++) {
                        float wv = wt[((oc * Cg + ic) * KH + kh) * KW + kw];
                        int64_t woff = kw * dw - l->pads[1];
                        /* output columns whose input column is inside 0..W-1 */
                        int64_t lo = 0, hi = OW;
                        while (lo < OW && lo * sw + woff < 0)
                            lo++;
                        while (hi > lo && (hi - 1) * sw + woff >= W)
                            hi--;
                        for (int64_t oh = 0; oh < OH; oh++) {
                            int64_t h = oh * sh + kh * dh - l->pads[0];
                            if (h < 0 || h >= H)
                                continue;
                            const float *xr = xp + h * W + woff;
                            float *yr = yp + oh * OW;
                            for (int64_t ow = lo; ow < hi; ow++)
                                yr[ow] += wv * xr[ow * sw];
                        }
                    }
            }
        }
}

static void ref_gemm(const ds_layer *l, const ds_tensor *xt, ds_tensor *yt)
{
    const int64_t M = xt->shape.dims[0], K = xt->shape.dims[1], N = yt->shape.dims[1];
    const float *x = ds_tensor_f32(xt), *w = ds_tensor_f32(&l->weight);
    const float *b = l->bias.shape.ndim ? ds_tensor_f32(&l->bias) : NULL;
    float *y = ds_tensor_f32(yt);
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < N; j++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++)
                s += x[m * K + k] * w[j * K + k];
            y[m * N + j] = s + (b ? b[j] : 0.0f);
        }
}

/* outer x n x inner view of shape s around axis ax */
static void split_axis(const ds_shape *s, int ax, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = *inner = 1;
    for (int d = 0; d < s->ndim; d++) {
        if (d < ax)
            *outer *= s->dims[d];
        else if (d > ax)
            *inner *= s->dims[d];
    }
    *n = s->dims[ax];
}

static void ref_pool(const ds_layer *l, const ds_tensor *xt, ds_tensor *yt)
{
    const int64_t *d = xt->shape.dims, *e = yt->shape.dims;
    ds_strides4 sx = {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1};
    ds_strides4 sy = {e[1] * e[2] * e[3], e[2] * e[3], e[3], 1};
    ds_pool_generic(l, ds_tensor_f32(xt), d, sx, ds_tensor_f32(yt), e, sy);
}

static void ref_global_pool(const ds_tensor *xt, ds_tensor *yt)
{
    const ds_shape *xs = &xt->shape;
    const float *x = ds_tensor_f32(xt);
    float *y = ds_tensor_f32(yt);
    int64_t plane = ds_shape_numel(xs) / (xs->dims[0] * xs->dims[1]);
    for (int64_t i = 0; i < xs->dims[0] * xs->dims[1]; i++) {
        double s = 0;
        for (int64_t j = 0; j < plane; j++)
            s += x[i * plane + j];
        y[i] = (float)(s / (double)plane);
    }
}

static void ref_concat(const ds_layer *l, int n_in, const ds_tensor *const *in, ds_tensor *yt)
{
    const float *xs[DS_OPS_MAX_INPUTS];
    int64_t ns[DS_OPS_MAX_INPUTS], outer, n, inner;
    for (int i = 0; i < n_in; i++) {
        xs[i] = ds_tensor_f32(in[i]);
        ns[i] = in[i]->shape.dims[l->axis];
    }
    split_axis(&in[0]->shape, l->axis, &outer, &n, &inner);
    ds_concat_strided(n_in, xs, ns, ds_tensor_f32(yt), outer, inner);
}

/* LRN, Softmax, BatchNorm: one axis against the rest. */
static void ref_axis_op(const ds_layer *l, const ds_tensor *xt, ds_tensor *yt)
{
    int64_t outer, n, inner;
    const float *x = ds_tensor_f32(xt);
    float *y = ds_tensor_f32(yt);
    split_axis(&xt->shape, l->op == DS_OP_SOFTMAX ? l->axis : 1, &outer, &n, &inner);
    if (l->op == DS_OP_LRN)
        ds_lrn_strided(x, y, outer, n, inner, l->lrn_size, l->lrn_alpha, l->lrn_beta, l->lrn_bias);
    else if (l->op == DS_OP_SOFTMAX)
        ds_softmax_strided(x, y, outer, n, inner);
    else
        ds_scale_shift(x, y, outer, n, inner, ds_tensor_f32(&l->weight), ds_tensor_f32(&l->bias));
}

int ds_ref_run(const ds_model *m, int id, int n_in, const ds_tensor *const *in, ds_tensor *out,
               ds_error *err)
{
    if (ds_ops_check_inputs(m, id, n_in, in, err))
        return -1;
    const ds_layer *l = &m->layers[id];
    if (ds_tensor_reserve(out, &l->out_shape, DS_F32, err))
        return -1;
    const float *x = ds_tensor_f32(in[0]);
    float *y = ds_tensor_f32(out);
    int64_t numel = ds_shape_numel(&l->out_shape);
    switch (l->op) {
    case DS_OP_CONV:
        ref_conv(l, in[0], out);
        if (l->act) /* a folded Clip */
            ds_clamp(y, numel, l->clip_min, l->clip_max);
        break;
    case DS_OP_RELU:
        for (int64_t i = 0; i < numel; i++)
            y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL:
        ref_pool(l, in[0], out);
        break;
    case DS_OP_GLOBALAVGPOOL:
        ref_global_pool(in[0], out);
        break;
    case DS_OP_CONCAT:
        ref_concat(l, n_in, in, out);
        break;
    case DS_OP_ADD: /* ONNX broadcasting (ops_eltwise.c) */
        ds_ref_eltwise(l, in, out);
        break;
    case DS_OP_FLATTEN:
        memmove(y, x, (size_t)numel * sizeof(float));
        break;
    case DS_OP_GEMM:
        ref_gemm(l, in[0], out);
        break;
    case DS_OP_LRN:
    case DS_OP_SOFTMAX:
    case DS_OP_BATCHNORM:
        ref_axis_op(l, in[0], out);
        break;
    case DS_OP_CLIP:
    case DS_OP_SIGMOID:
    case DS_OP_HARDSIGMOID:
    case DS_OP_HARDSWISH:
    case DS_OP_SILU:
    case DS_OP_LEAKYRELU:
    case DS_OP_MUL:
    case DS_OP_SUB:
    case DS_OP_DIV:
    case DS_OP_PRELU:
        ds_ref_eltwise(l, in, out);
        break;
    case DS_OP_RESHAPE:
        memmove(y, x, (size_t)numel * sizeof(float));
        break;
    case DS_OP_TRANSPOSE:
    case DS_OP_SLICE:
    case DS_OP_PAD:
    case DS_OP_RESIZE:
    case DS_OP_REDUCEMEAN: {
        int64_t xst[DS_MAX_DIMS], yst[DS_MAX_DIMS];
        ds_layout_strides(&in[0]->shape, 0, xst);
        ds_layout_strides(&l->out_shape, 0, yst);
        ds_shape_op_run(l, x, &in[0]->shape, xst, y, yst);
        break;
    }
    default:
        return fail(err, l, "no reference kernel for this op");
    }
    return 0;
}
