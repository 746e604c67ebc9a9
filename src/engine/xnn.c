/* xnn.c - XNNPACK operators on NHWC tensors, plain C for the rest. */
#include "backend_xnn.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <pthreadpool.h>
#include <xnnpack.h>

#include "ops.h"
#include "ops_eltwise.h"
#include "ops_shape.h"
#include "winograd.h"
#include "xnn_eltwise.h"

typedef struct xlayer {
    xnn_operator_t op;      /* the layer's operator (conv: without Relu) */
    xnn_operator_t op_relu; /* conv with the Relu fused as a clamp */
    int64_t h, w;           /* input size a pool operator was made for */
    int fallback;           /* pool: plain C (XNNPACK lacks the semantics) */
    ds_wino *wino;          /* conv run as Winograd (Relu fused or not) */
    struct band_op {        /* conv run in bands of output rows */
        xnn_operator_t op;
        int pt, pb, relu;   /* vertical pads of the band, Relu fused */
    } band[6];
    int n_band;
} xlayer;

/* Above this many bytes of XNNPACK indirection pointers (output pixels x
 * kernel taps x 8: 20 MB for AlexNet's first conv at 480x720), a conv with
 * small weights runs in bands of output rows, each needing a fraction. */
static size_t band_limit = 2u << 20;

void ds_xnn_set_band_limit(size_t bytes)
{
    band_limit = bytes;
}

struct ds_xnn {
    const ds_model *m;
    pthreadpool_t pool;
    xlayer *l;
    int winograd;
    ds_wino_scratch ws;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static enum xnn_status init_status;

static void init_xnn(void)
{
    init_status = xnn_initialize(NULL);
}

ds_xnn *ds_xnn_new(const ds_model *m, int threads, ds_error *err)
{
    pthread_once(&init_once, init_xnn);
    if (init_status != xnn_status_success) {
        ds_errorf(err, "XNNPACK initialisation failed (status %d)", (int)init_status);
        return NULL;
    }
    if (!m || m->n_layers < 1 || threads < 1 || threads > 1024) {
        ds_errorf(err, "XNNPACK backend: bad model or thread count %d", threads);
        return NULL;
    }
    if (ds_ops_check_model(m, err)) /* once: the kernels trust the layers from here on */
        return NULL;
    ds_xnn *x = calloc(1, sizeof *x);
    if (!x || !(x->l = calloc((size_t)m->n_layers, sizeof *x->l))) {
        free(x);
        ds_errorf(err, "out of memory creating the XNNPACK backend");
        return NULL;
    }
    x->m = m;
    const char *env = getenv("DS_WINOGRAD");
    x->winograd = !(env && !strcmp(env, "0"));
    if (threads > 1 && !(x->pool = pthreadpool_create((size_t)threads))) {
        ds_xnn_free(x);
        ds_errorf(err, "cannot create a pool of %d threads", threads);
        return NULL;
    }
    return x;
}

void ds_xnn_free(ds_xnn *x)
{
    if (!x)
        return;
    if (x->l)
        for (int i = 0; i < x->m->n_layers; i++) {
            if (x->l[i].op)
                xnn_delete_operator(x->l[i].op);
            if (x->l[i].op_relu)
                xnn_delete_operator(x->l[i].op_relu);
            ds_wino_free(x->l[i].wino);
            for (int b = 0; b < x->l[i].n_band; b++)
                xnn_delete_operator(x->l[i].band[b].op);
        }
    ds_wino_scratch_free(&x->ws);
    if (x->pool)
        pthreadpool_destroy(x->pool);
    free(x->l);
    free(x);
}

void ds_nchw_to_nhwc(const float *src, float *dst, int64_t n, int64_t c, int64_t hw)
{
    enum { B = 32 };
    for (int64_t i = 0; i < n; i++) {
        const float *s = src + i * c * hw;
        float *d = dst + i * c * hw;
        for (int64_t p0 = 0; p0 < hw; p0 += B) {
            int64_t p1 = p0 + B < hw ? p0 + B : hw;
            for (int64_t k = 0; k < c; k++)
                for (int64_t p = p0; p < p1; p++)
                    d[p * c + k] = s[k * hw + p];
        }
    }
}

void ds_nhwc_to_nchw(const float *src, float *dst, int64_t n, int64_t c, int64_t hw)
{
    enum { B = 32 };
    for (int64_t i = 0; i < n; i++) {
        const float *s = src + i * c * hw;
        float *d = dst + i * c * hw;
        for (int64_t p0 = 0; p0 < hw; p0 += B) {
            int64_t p1 = p0 + B < hw ? p0 + B : hw;
            for (int64_t k = 0; k < c; k++)
                for (int64_t p = p0; p < p1; p++)
                    d[k * hw + p] = s[p * c + k];
        }
    }
}

static int xfail(ds_error *err, const ds_layer *l, const char *what, enum xnn_status st)
{
    return ds_errorf(err, "layer %d (%s, %s): XNNPACK %s failed (status %d)", l->id,
                     l->name ? l->name : "?", ds_op_name(l->op), what, (int)st);
}

static int dil(const ds_layer *l, int i)
{
    return l->dilation[i] > 0 ? l->dilation[i] : 1;
}

/* A conv's output clamp: its folded Clip, and the runtime-fused Relu. */
static float conv_min(const ds_layer *l, int relu)
{
    float lo = l->act ? l->clip_min : -INFINITY;
    return relu && lo < 0.0f ? 0.0f : lo;
}

static int make_conv(const ds_layer *l, int relu, int pt, int pb, xnn_operator_t *op,
                     ds_error *err)
{
    const int64_t *wd = l->weight.shape.dims;
    const int64_t O = wd[0], Cg = wd[1], KH = wd[2], KW = wd[3], G = l->group;
    const float *w = ds_tensor_f32(&l->weight);
    /* ONNX OIHW -> XNNPACK's [group][out][kh][kw][in] */
    float *t = malloc((size_t)(O * Cg * KH * KW) * sizeof *t);
    if (!t)
        return ds_errorf(err, "layer %d: out of memory packing conv weights", l->id);
    for (int64_t o = 0; o < O; o++)
        for (int64_t ic = 0; ic < Cg; ic++)
            for (int64_t kh = 0; kh < KH; kh++)
                for (int64_t kw = 0; kw < KW; kw++)
                    t[((o * KH + kh) * KW + kw) * Cg + ic] = w[((o * Cg + ic) * KH + kh) * KW + kw];
    enum xnn_status st = xnn_create_convolution2d_nhwc_f32(
        (uint32_t)pt, (uint32_t)l->pads[3], (uint32_t)pb, (uint32_t)l->pads[1], (uint32_t)KH, (uint32_t)KW, (uint32_t)l->stride[0], (uint32_t)l->stride[1],
        (uint32_t)dil(l, 0), (uint32_t)dil(l, 1), (uint32_t)G, (size_t)Cg, (size_t)(O / G),
        (size_t)(Cg * G), (size_t)O, t, l->bias.shape.ndim ? ds_tensor_f32(&l->bias) : NULL,
        conv_min(l, relu), l->act ? l->clip_max : INFINITY, 0, op);
    free(t);
    return st == xnn_status_success ? 0 : xfail(err, l, "convolution create", st);
}

/* Creates the pool operator for input size h x w (ceil_mode becomes extra
 * bottom/right padding, which XNNPACK ignores like the overhang). */
static void make_pool(const ds_layer *l, xlayer *s, const int64_t *xd, const int64_t *yd)
{
    if (s->op)
        xnn_delete_operator(s->op);
    s->op = NULL;
    s->fallback = 0;
    s->h = xd[2];
    s->w = xd[3];
    int64_t eb = (yd[2] - 1) * l->stride[0] + (int64_t)dil(l, 0) * (l->kernel[0] - 1) + 1 -
                 (xd[2] + l->pads[0] + l->pads[2]);
    int64_t er = (yd[3] - 1) * l->stride[1] + (int64_t)dil(l, 1) * (l->kernel[1] - 1) + 1 -
                 (xd[3] + l->pads[1] + l->pads[3]);
    if (eb < 0)
        eb = 0;
    if (er < 0)
        er = 0;
    uint32_t pt = (uint32_t)l->pads[0], pl = (uint32_t)l->pads[1];
    uint32_t pb = (uint32_t)(l->pads[2] + eb), pr = (uint32_t)(l->pads[3] + er);
    size_t C = (size_t)xd[1];
    enum xnn_status st;
    int padded = (pt | pl | pb | pr) != 0;
    if (l->op == DS_OP_MAXPOOL) {
        /* XNNPACK reads a padded position as the nearest edge pixel: that
         * pixel is inside an undilated window, not always inside a dilated one */
        if (padded && (dil(l, 0) > 1 || dil(l, 1) > 1)) {
            s->fallback = 1;
            return;
        }
        st = xnn_create_max_pooling2d_nhwc_f32(pt, pr, pb, pl, (uint32_t)l->kernel[0],
                                               (uint32_t)l->kernel[1], (uint32_t)l->stride[0],
                                               (uint32_t)l->stride[1], (uint32_t)dil(l, 0),
                                               (uint32_t)dil(l, 1), C, C, C, -INFINITY,
                                               INFINITY, 0, &s->op);
    } else {
        /* XNNPACK divides by the count of in-image pixels: right unless pads
         * are to be counted; it has no dilated average pooling. */
        if ((l->count_include_pad && padded) || dil(l, 0) > 1 || dil(l, 1) > 1) {
            s->fallback = 1;
            return;
        }
        st = xnn_create_average_pooling2d_nhwc_f32(
            pt, pr, pb, pl, (uint32_t)l->kernel[0], (uint32_t)l->kernel[1],
            (uint32_t)l->stride[0], (uint32_t)l->stride[1], C, C, C, -INFINITY, INFINITY, 0,
            &s->op);
    }
    if (st != xnn_status_success) { /* e.g. 1x1 windows: plain C handles them */
        s->op = NULL;
        s->fallback = 1;
    }
}

static int run_op(ds_xnn *x, const ds_layer *l, xnn_operator_t op, enum xnn_status st,
                  ds_error *err)
{
    if (st != xnn_status_success)
        return xfail(err, l, "setup", st);
    st = xnn_run_operator(op, x->pool);
    return st == xnn_status_success ? 0 : xfail(err, l, "run", st);
}

static int banded(const ds_layer *l, const int64_t *xd, const int64_t *yd)
{
    const int64_t *wd = l->weight.shape.dims;
    double ind = (double)yd[2] * (double)yd[3] * (double)(wd[2] * wd[3]) * 8.0;
    size_t wbytes = (size_t)ds_shape_numel(&l->weight.shape) * sizeof(float);
    (void)xd;
    /* 1x1 stride-1 convs are plain GEMMs without indirection */
    return ind > (double)band_limit && wbytes <= (1u << 20) && yd[2] > 1 &&
           !(wd[2] == 1 && wd[3] == 1 && l->stride[0] == 1 && l->stride[1] == 1);
}

static int run_banded(ds_xnn *x, const ds_layer *l, xlayer *s, int relu, const float *xp,
                      const int64_t *xd, float *yp, const int64_t *yd, ds_error *err)
{
    const int64_t H = xd[2], W = xd[3], C = xd[1], OH = yd[2], OW = yd[3], O = yd[1];
    const int64_t KH = l->weight.shape.dims[2], KW = l->weight.shape.dims[3];
    const int sh = l->stride[0], dh = dil(l, 0);
    int64_t rows = (int64_t)(band_limit / (size_t)(OW * KH * KW * 8));
    if (rows < 1)
        rows = 1;
    for (int64_t img = 0; img < xd[0]; img++)
        for (int64_t r0 = 0; r0 < OH; r0 += rows) {
            int64_t r1 = r0 + rows < OH ? r0 + rows : OH;
            int64_t top = r0 * sh - l->pads[0], bot = (r1 - 1) * sh - l->pads[0] + (KH - 1) * dh;
            int pt = top < 0 ? (int)-top : 0, pb = bot > H - 1 ? (int)(bot - (H - 1)) : 0;
            int64_t first = top < 0 ? 0 : top, last = bot > H - 1 ? H - 1 : bot;
            struct band_op *b = NULL;
            for (int i = 0; i < s->n_band; i++)
                if (s->band[i].pt == pt && s->band[i].pb == pb && s->band[i].relu == relu)
                    b = &s->band[i];
            if (!b) {
                if (s->n_band == (int)(sizeof s->band / sizeof s->band[0]))
                    return ds_errorf(err, "layer %d: too many conv band shapes", l->id);
                b = &s->band[s->n_band];
                if (make_conv(l, relu, pt, pb, &b->op, err))
                    return -1;
                b->pt = pt;
                b->pb = pb;
                b->relu = relu;
                s->n_band++;
            }
            enum xnn_status st = xnn_setup_convolution2d_nhwc_f32(
                b->op, 1, (size_t)(last - first + 1), (size_t)W,
                xp + ((img * H + first) * W) * C, yp + ((img * OH + r0) * OW) * O, x->pool);
            if (run_op(x, l, b->op, st, err))
                return -1;
        }
    return 0;
}

/* physical (NHWC) position of logical axis ax of a rank-4 tensor */
static int phys_axis(int ax)
{
    static const int map[4] = {0, 3, 1, 2};
    return map[ax];
}

/* outer x n x inner of the stored layout around logical axis ax */
static void split_stored(const ds_shape *s, int ax, int64_t *outer, int64_t *n, int64_t *inner)
{
    int64_t pd[DS_MAX_DIMS] = {1, 1, 1, 1};
    int p = ax;
    if (s->ndim == 4) {
        pd[0] = s->dims[0];
        pd[1] = s->dims[2];
        pd[2] = s->dims[3];
        pd[3] = s->dims[1];
        p = phys_axis(ax);
    } else {
        for (int d = 0; d < s->ndim; d++)
            pd[d] = s->dims[d];
    }
    *outer = *inner = 1;
    for (int d = 0; d < s->ndim; d++) {
        if (d < p)
            *outer *= pd[d];
        else if (d > p)
            *inner *= pd[d];
    }
    *n = pd[p];
}

/* ---- one function per op family; x, layer l, its state s ---- */

static int xnn_conv(ds_xnn *x, const ds_layer *l, xlayer *s, int fuse_relu, const ds_tensor *in,
                    ds_tensor *out, ds_error *err)
{
    const int64_t *xd = in->shape.dims, *yd = out->shape.dims;
    const float *xp = ds_tensor_f32(in);
    float *yp = ds_tensor_f32(out);
    if (x->winograd && ds_wino_suitable(l)) {
        if (!s->wino && !(s->wino = ds_wino_new(l, err)))
            return -1;
        if (ds_wino_run(s->wino, xp, xd[0], xd[2], xd[3], yp, yd[2], yd[3], fuse_relu && !l->act, x->pool,
                        &x->ws, err))
            return -1;
        if (l->act) /* Winograd fuses a Relu only: the folded Clip after it */
            ds_clamp(yp, ds_shape_numel(&out->shape), conv_min(l, fuse_relu), l->clip_max);
        return 0;
    }
    if (banded(l, xd, yd))
        return run_banded(x, l, s, fuse_relu, xp, xd, yp, yd, err);
    xnn_operator_t *op = fuse_relu ? &s->op_relu : &s->op;
    if (!*op && make_conv(l, fuse_relu, l->pads[0], l->pads[2], op, err))
        return -1;
    enum xnn_status st = xnn_setup_convolution2d_nhwc_f32(*op, (size_t)xd[0], (size_t)xd[2],
                                                          (size_t)xd[3], xp, yp, x->pool);
    return run_op(x, l, *op, st, err);
}

/* Relu: element-wise over the flat data, whatever the layout (Add and the
 * other element-wise ops: xnn_eltwise.c). */
static int xnn_eltwise(ds_xnn *x, const ds_layer *l, xlayer *s, const ds_tensor *const *in,
                       ds_tensor *out, ds_error *err)
{
    size_t numel = (size_t)ds_shape_numel(&out->shape);
    const float *xp = ds_tensor_f32(in[0]);
    float *yp = ds_tensor_f32(out);
    enum xnn_status st;
    if (!s->op && (st = xnn_create_clamp_nc_f32(1, 1, 1, 0.0f, INFINITY, 0, &s->op)) != xnn_status_success)
        return xfail(err, l, "clamp create", st);
    st = xnn_setup_clamp_nc_f32(s->op, numel, xp, yp, x->pool);
    return run_op(x, l, s->op, st, err);
}

static int xnn_pool(ds_xnn *x, const ds_layer *l, xlayer *s, const ds_tensor *in, ds_tensor *out,
                    ds_error *err)
{
    const int64_t *xd = in->shape.dims, *yd = out->shape.dims;
    const float *xp = ds_tensor_f32(in);
    float *yp = ds_tensor_f32(out);
    if ((!s->op && !s->fallback) || s->h != xd[2] || s->w != xd[3])
        make_pool(l, s, xd, yd);
    if (s->fallback) {
        /* NHWC strides */
        ds_strides4 sx = {xd[1] * xd[2] * xd[3], 1, xd[3] * xd[1], xd[1]};
        ds_strides4 sy = {yd[1] * yd[2] * yd[3], 1, yd[3] * yd[1], yd[1]};
        ds_pool_generic(l, xp, xd, sx, yp, yd, sy);
        return 0;
    }
    enum xnn_status st;
    if (l->op == DS_OP_MAXPOOL)
        st = xnn_setup_max_pooling2d_nhwc_f32(s->op, (size_t)xd[0], (size_t)xd[2], (size_t)xd[3], xp,
                                              yp, x->pool);
    else
        st = xnn_setup_average_pooling2d_nhwc_f32(s->op, (size_t)xd[0], (size_t)xd[2],
                                                  (size_t)xd[3], xp, yp, x->pool);
    return run_op(x, l, s->op, st, err);
}

static int xnn_global_pool(ds_xnn *x, const ds_layer *l, xlayer *s, const ds_tensor *in,
                           ds_tensor *out, ds_error *err)
{
    const int64_t *xd = in->shape.dims;
    const float *xp = ds_tensor_f32(in);
    float *yp = ds_tensor_f32(out);
    enum xnn_status st;
    if (in->shape.ndim != 4) { /* rank 3: stored as its shape says */
        int64_t plane = ds_shape_numel(&in->shape) / (xd[0] * xd[1]);
        for (int64_t i = 0; i < xd[0] * xd[1]; i++) {
            double sum = 0;
            for (int64_t j = 0; j < plane; j++)
                sum += xp[i * plane + j];
            yp[i] = (float)(sum / (double)plane);
        }
        return 0;
    }
    if (!s->op) {
        size_t C = (size_t)xd[1];
        st = xnn_create_global_average_pooling_nwc_f32(C, C, C, -INFINITY, INFINITY, 0, &s->op);
        if (st != xnn_status_success)
            return xfail(err, l, "global average pooling create", st);
    }
    st = xnn_setup_global_average_pooling_nwc_f32(s->op, (size_t)xd[0], (size_t)(xd[2] * xd[3]), xp,
                                                  yp, x->pool);
    return run_op(x, l, s->op, st, err);
}

static int xnn_gemm(ds_xnn *x, const ds_layer *l, xlayer *s, const ds_tensor *in, ds_tensor *out,
                    ds_error *err)
{
    enum xnn_status st;
    if (!s->op) {
        size_t K = (size_t)l->weight.shape.dims[1], N = (size_t)l->weight.shape.dims[0];
        st = xnn_create_fully_connected_nc_f32(K, N, K, N, ds_tensor_f32(&l->weight),
                                               l->bias.shape.ndim ? ds_tensor_f32(&l->bias) : NULL,
                                               -INFINITY, INFINITY, 0, &s->op);
        if (st != xnn_status_success)
            return xfail(err, l, "fully connected create", st);
    }
    st = xnn_setup_fully_connected_nc_f32(s->op, (size_t)in->shape.dims[0], ds_tensor_f32(in),
                                          ds_tensor_f32(out), x->pool);
    return run_op(x, l, s->op, st, err);
}

/* Plain C on the stored layout: Concat, Flatten, LRN, Softmax, BatchNorm. */
static void plain_op(const ds_layer *l, int n_in, const ds_tensor *const *in, ds_tensor *out)
{
    const ds_shape *xs = &in[0]->shape;
    const float *xp = ds_tensor_f32(in[0]);
    float *yp = ds_tensor_f32(out);
    int64_t outer = 1, n, inner = 1;
    if (l->op == DS_OP_CONCAT) {
        const float *srcs[DS_OPS_MAX_INPUTS];
        int64_t ns[DS_OPS_MAX_INPUTS];
        for (int i = 0; i < n_in; i++) {
            srcs[i] = ds_tensor_f32(in[i]);
            split_stored(&in[i]->shape, l->axis, &outer, &ns[i], &inner);
        }
        ds_concat_strided(n_in, srcs, ns, yp, outer, inner);
    } else if (l->op == DS_OP_FLATTEN) {
        if (xs->ndim == 4)
            ds_nhwc_to_nchw(xp, yp, xs->dims[0], xs->dims[1], xs->dims[2] * xs->dims[3]);
        else
            memmove(yp, xp, (size_t)ds_shape_numel(&out->shape) * sizeof *yp);
    } else {
        split_stored(xs, l->op == DS_OP_SOFTMAX ? l->axis : 1, &outer, &n, &inner);
        if (l->op == DS_OP_LRN)
            ds_lrn_strided(xp, yp, outer, n, inner, l->lrn_size, l->lrn_alpha, l->lrn_beta,
                           l->lrn_bias);
        else if (l->op == DS_OP_SOFTMAX)
            ds_softmax_strided(xp, yp, outer, n, inner);
        else
            ds_scale_shift(xp, yp, outer, n, inner, ds_tensor_f32(&l->weight),
                           ds_tensor_f32(&l->bias));
    }
}

int ds_xnn_run(ds_xnn *x, int id, int fuse_relu, int n_in, const ds_tensor *const *in,
               ds_tensor *out, ds_error *err)
{
    if (!x)
        return ds_errorf(err, "XNNPACK backend: none");
    if (ds_ops_check_inputs(x->m, id, n_in, in, err))
        return -1;
    const ds_layer *l = &x->m->layers[id];
    xlayer *s = &x->l[id];
    if (ds_tensor_reserve(out, &l->out_shape, DS_F32, err))
        return -1;
    switch (l->op) {
    case DS_OP_CONV:
        return xnn_conv(x, l, s, fuse_relu, in[0], out, err);
    case DS_OP_RELU:
        return xnn_eltwise(x, l, s, in, out, err);
    case DS_OP_MAXPOOL:
    case DS_OP_AVGPOOL:
        return xnn_pool(x, l, s, in[0], out, err);
    case DS_OP_GLOBALAVGPOOL:
        return xnn_global_pool(x, l, s, in[0], out, err);
    case DS_OP_GEMM:
        return xnn_gemm(x, l, s, in[0], out, err);
    case DS_OP_CONCAT:
    case DS_OP_FLATTEN:
    case DS_OP_LRN:
    case DS_OP_SOFTMAX:
    case DS_OP_BATCHNORM:
        plain_op(l, n_in, in, out);
        return 0;
    case DS_OP_ADD:
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
        return ds_xnn_eltwise_run(x->pool, l, &s->op, in, out, err);
    case DS_OP_RESHAPE:
    case DS_OP_TRANSPOSE:
    case DS_OP_SLICE:
    case DS_OP_PAD:
    case DS_OP_RESIZE:
    case DS_OP_REDUCEMEAN: { /* on the stored layout: 4-D tensors are NHWC */
        int64_t xst[DS_MAX_DIMS], yst[DS_MAX_DIMS];
        ds_layout_strides(&in[0]->shape, 1, xst);
        ds_layout_strides(&l->out_shape, 1, yst);
        ds_shape_op_run(l, ds_tensor_f32(in[0]), &in[0]->shape, xst, ds_tensor_f32(out), yst);
        return 0;
    }
    default:
        return ds_errorf(err, "layer %d (%s): op not supported by the XNNPACK backend", id,
                         ds_op_name(l->op));
    }
}
