/* ops_ref.c - shape rules and the plain-C reference kernels (NCHW). */
#include "ops.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

/* Dilation 0 (attribute absent) means 1. */
static int dil(const ds_layer *l, int i)
{
    return l->dilation[i] > 0 ? l->dilation[i] : 1;
}

static int norm_axis(int axis, int rank, int allow_rank)
{
    int hi = allow_rank ? rank : rank - 1;
    if (axis < -rank || axis > hi)
        return -1;
    return axis < 0 ? axis + rank : axis;
}

static int fail(ds_error *err, const ds_layer *l, const char *what, const ds_shape *s)
{
    char buf[64] = "";
    if (s)
        ds_shape_str(s, buf, sizeof buf);
    return ds_errorf(err, "layer %d (%s, %s): %s%s%s", l->id, l->name ? l->name : "?",
                     ds_op_name(l->op), what, s ? " for input " : "", buf);
}

int64_t ds_pool_out_size(int64_t n, int pb, int pe, int k, int s, int d, int ceil_mode)
{
    if (k < 1 || s < 1 || d < 1 || pb < 0 || pe < 0)
        return -1;
    int64_t eff = (int64_t)d * (k - 1) + 1;
    int64_t span = n + pb + pe - eff;
    if (span < 0)
        return -1;
    int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (out - 1) * s >= n + pb)
        out--;
    return out;
}

static int spatial_out(const ds_layer *l, const ds_shape *x, int kh, int kw, int ceil_mode,
                       int64_t *oh, int64_t *ow, ds_error *err)
{
    if (l->stride[0] < 1 || l->stride[1] < 1)
        return fail(err, l, "strides must be >= 1", NULL);
    if (l->dilation[0] < 0 || l->dilation[1] < 0)
        return fail(err, l, "dilations must be >= 1", NULL);
    for (int i = 0; i < 4; i++)
        if (l->pads[i] < 0)
            return fail(err, l, "pads must be >= 0", NULL);
    *oh = ds_pool_out_size(x->dims[2], l->pads[0], l->pads[2], kh, l->stride[0], dil(l, 0),
                           ceil_mode);
    *ow = ds_pool_out_size(x->dims[3], l->pads[1], l->pads[3], kw, l->stride[1], dil(l, 1),
                           ceil_mode);
    if (*oh < 1 || *ow < 1)
        return fail(err, l, "window larger than the padded input", x);
    return 0;
}

static int is_vec(const ds_tensor *t, int64_t n)
{
    return t->data && t->dtype == DS_F32 && t->shape.ndim >= 1 && ds_shape_numel(&t->shape) == n;
}

/* bias absent (rank 0) or n float32 values */
static int bias_ok(const ds_tensor *b, int64_t n)
{
    return b->shape.ndim == 0 || is_vec(b, n);
}

int ds_op_out_shape(const ds_layer *l, int n_in, const ds_shape *in, ds_shape *out,
                    ds_error *err)
{
    if (l->op == DS_OP_INPUT)
        return fail(err, l, "the input layer is supplied, not executed", NULL);
    if ((int)l->op < 0 || l->op >= DS_OP_COUNT)
        return ds_errorf(err, "layer %d: unknown op %d", l->id, (int)l->op);
    int want = l->op == DS_OP_ADD ? 2 : 1;
    if (!in || (l->op == DS_OP_CONCAT ? n_in < 1 : n_in != want))
        return fail(err, l, "wrong number of inputs", NULL);
    for (int i = 0; i < n_in; i++)
        if (in[i].ndim < 1 || in[i].ndim > DS_MAX_DIMS || ds_shape_numel(&in[i]) < 1)
            return fail(err, l, "bad input rank or empty input", NULL);
    const ds_shape *x = &in[0];
    *out = *x;
    switch (l->op) {
    case DS_OP_CONV: {
        const ds_tensor *w = &l->weight;
        if (x->ndim != 4)
            return fail(err, l, "needs a rank-4 NCHW input", x);
        if (!w->data || w->dtype != DS_F32 || w->shape.ndim != 4 ||
            ds_shape_numel(&w->shape) < 1)
            return fail(err, l, "weight must be a float32 O x I/group x kH x kW tensor", NULL);
        int64_t o = w->shape.dims[0], cg = w->shape.dims[1];
        int64_t kh = w->shape.dims[2], kw = w->shape.dims[3];
        if (l->group < 1 || o % l->group || cg * l->group != x->dims[1])
            return fail(err, l, "input channels do not match the weight and group", x);
        if ((l->kernel[0] && l->kernel[0] != kh) || (l->kernel[1] && l->kernel[1] != kw) ||
            kh > 1 << 16 || kw > 1 << 16)
            return fail(err, l, "kernel_shape differs from the weight", NULL);
        if (!bias_ok(&l->bias, o))
            return fail(err, l, "bias must hold one float32 per output channel", NULL);
        int64_t oh, ow;
        if (spatial_out(l, x, (int)kh, (int)kw, 0, &oh, &ow, err))
            return -1;
        *out = ds_shape_nchw(x->dims[0], o, oh, ow);
        return 0;
    }
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL: {
        if (x->ndim != 4)
            return fail(err, l, "needs a rank-4 NCHW input", x);
        if (l->kernel[0] < 1 || l->kernel[1] < 1 || l->kernel[0] > 1 << 16 ||
            l->kernel[1] > 1 << 16)
            return fail(err, l, "kernel_shape must be >= 1", NULL);
        /* A window made of padding only has no value (max) or no divisor
         * (average without pads); keep pads inside the window extent. */
        for (int i = 0; i < 4; i++)
            if (l->pads[i] >= (int64_t)dil(l, i % 2) * (l->kernel[i % 2] - 1) + 1)
                return fail(err, l, "pads must be smaller than the window", NULL);
        int64_t oh, ow;
        if (spatial_out(l, x, l->kernel[0], l->kernel[1], l->ceil_mode, &oh, &ow, err))
            return -1;
        out->dims[2] = oh;
        out->dims[3] = ow;
        return 0;
    }
    case DS_OP_GLOBALAVGPOOL:
        if (x->ndim < 3)
            return fail(err, l, "needs an input of rank >= 3", x);
        for (int i = 2; i < x->ndim; i++)
            out->dims[i] = 1;
        return 0;
    case DS_OP_CONCAT: {
        int ax = norm_axis(l->axis, x->ndim, 0);
        if (ax < 0)
            return fail(err, l, "axis out of range", x);
        for (int i = 1; i < n_in; i++) {
            if (in[i].ndim != x->ndim)
                return fail(err, l, "inputs differ in rank", &in[i]);
            for (int d = 0; d < x->ndim; d++)
                if (d != ax && in[i].dims[d] != x->dims[d])
                    return fail(err, l, "inputs differ outside the concat axis", &in[i]);
            out->dims[ax] += in[i].dims[ax];
        }
        if (ds_shape_numel(out) > (int64_t)1 << 32)
            return fail(err, l, "output too large", NULL);
        return 0;
    }
    case DS_OP_ADD:
        if (!ds_shape_equal(&in[0], &in[1]))
            return fail(err, l, "inputs must have the same shape (no broadcasting)", &in[1]);
        return 0;
    case DS_OP_FLATTEN: {
        int ax = norm_axis(l->axis, x->ndim, 1);
        if (ax < 0)
            return fail(err, l, "axis out of range", x);
        int64_t a = 1, b = 1;
        for (int d = 0; d < x->ndim; d++)
            *(d < ax ? &a : &b) *= x->dims[d];
        out->ndim = 2;
        out->dims[0] = a;
        out->dims[1] = b;
        out->dims[2] = out->dims[3] = 0;
        return 0;
    }
    case DS_OP_GEMM: {
        const ds_tensor *w = &l->weight;
        if (x->ndim != 2)
            return fail(err, l, "needs a rank-2 input", x);
        if (!w->data || w->dtype != DS_F32 || w->shape.ndim != 2 || w->shape.dims[1] != x->dims[1] ||
            w->shape.dims[0] < 1)
            return fail(err, l, "weight must be float32 N x K with K the input's columns", x);
        if (!bias_ok(&l->bias, w->shape.dims[0]))
            return fail(err, l, "bias must hold N float32 values", NULL);
        out->dims[1] = w->shape.dims[0];
        return 0;
    }
    case DS_OP_LRN:
        if (x->ndim < 3)
            return fail(err, l, "needs an input of rank >= 3", x);
        if (l->lrn_size < 1 || !isfinite(l->lrn_alpha) || !isfinite(l->lrn_beta) ||
            !isfinite(l->lrn_bias))
            return fail(err, l, "size must be >= 1 and alpha, beta, bias finite", NULL);
        return 0;
    case DS_OP_SOFTMAX:
        if (norm_axis(l->axis, x->ndim, 0) < 0)
            return fail(err, l, "axis out of range", x);
        return 0;
    case DS_OP_BATCHNORM:
        if (x->ndim < 2)
            return fail(err, l, "needs an input of rank >= 2", x);
        if (!is_vec(&l->weight, x->dims[1]) || !is_vec(&l->bias, x->dims[1]))
            return fail(err, l, "scale and shift must hold one float32 per channel", x);
        return 0;
    case DS_OP_RELU:
        return 0;
    default:
        return fail(err, l, "unsupported op", NULL);
    }
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

int ds_ref_run(const ds_layer *l, int n_in, const ds_tensor *const *in, ds_tensor *out,
               ds_error *err)
{
    ds_shape shapes[64], os;
    if (n_in < 1 || n_in > 64)
        return fail(err, l, "wrong number of inputs", NULL);
    for (int i = 0; i < n_in; i++) {
        if (!in[i] || in[i]->dtype != DS_F32 || !in[i]->data)
            return fail(err, l, "inputs must be float32 tensors", NULL);
        shapes[i] = in[i]->shape;
    }
    if (ds_op_out_shape(l, n_in, shapes, &os, err) || ds_tensor_reserve(out, &os, DS_F32, err))
        return -1;
    const ds_shape *xs = &in[0]->shape;
    const float *x = ds_tensor_f32(in[0]);
    float *y = ds_tensor_f32(out);
    int64_t numel = ds_shape_numel(&os), outer, n, inner;
    switch (l->op) {
    case DS_OP_CONV:
        ref_conv(l, in[0], out);
        break;
    case DS_OP_RELU:
        for (int64_t i = 0; i < numel; i++)
            y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL: {
        const int64_t *d = xs->dims, *e = os.dims;
        ds_strides4 sx = {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1};
        ds_strides4 sy = {e[1] * e[2] * e[3], e[2] * e[3], e[3], 1};
        ds_pool_generic(l, x, d, sx, y, e, sy);
        break;
    }
    case DS_OP_GLOBALAVGPOOL: {
        int64_t plane = ds_shape_numel(xs) / (xs->dims[0] * xs->dims[1]);
        for (int64_t i = 0; i < xs->dims[0] * xs->dims[1]; i++) {
            double s = 0;
            for (int64_t j = 0; j < plane; j++)
                s += x[i * plane + j];
            y[i] = (float)(s / (double)plane);
        }
        break;
    }
    case DS_OP_CONCAT: {
        const float *xs_[64];
        int64_t ns[64];
        int ax = norm_axis(l->axis, xs->ndim, 0);
        for (int i = 0; i < n_in; i++) {
            xs_[i] = ds_tensor_f32(in[i]);
            ns[i] = in[i]->shape.dims[ax];
        }
        split_axis(xs, ax, &outer, &n, &inner);
        ds_concat_strided(n_in, xs_, ns, y, outer, inner);
        break;
    }
    case DS_OP_ADD: {
        const float *x2 = ds_tensor_f32(in[1]);
        for (int64_t i = 0; i < numel; i++)
            y[i] = x[i] + x2[i];
        break;
    }
    case DS_OP_FLATTEN:
        memmove(y, x, (size_t)numel * sizeof(float));
        break;
    case DS_OP_GEMM:
        ref_gemm(l, in[0], out);
        break;
    case DS_OP_LRN:
        split_axis(xs, 1, &outer, &n, &inner);
        ds_lrn_strided(x, y, outer, n, inner, l->lrn_size, l->lrn_alpha, l->lrn_beta,
                       l->lrn_bias);
        break;
    case DS_OP_SOFTMAX:
        split_axis(xs, norm_axis(l->axis, xs->ndim, 0), &outer, &n, &inner);
        ds_softmax_strided(x, y, outer, n, inner);
        break;
    case DS_OP_BATCHNORM:
        split_axis(xs, 1, &outer, &n, &inner);
        ds_scale_shift(x, y, outer, n, inner, ds_tensor_f32(&l->weight), ds_tensor_f32(&l->bias));
        break;
    default:
        return fail(err, l, "unsupported op", NULL);
    }
    return 0;
}
