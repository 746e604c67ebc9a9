/* ops_eltwise.c - element-wise kernels (issue 15): activations and binary
 * ops with ONNX broadcasting. */
#include "ops_eltwise.h"

#include <math.h>

void ds_unary_eltwise(const ds_layer *l, const float *x, float *y, int64_t n)
{
    const float lo = l->clip_min, hi = l->clip_max, a = l->alpha, b = l->beta;
    switch (l->op) {
    case DS_OP_CLIP: /* min(max(x, lo), hi), as ONNX (and numpy) define it; NaN stays NaN */
        for (int64_t i = 0; i < n; i++) {
            float v = x[i] < lo ? lo : x[i];
            y[i] = v > hi ? hi : v;
        }
        break;
    case DS_OP_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case DS_OP_SILU: /* the unfused pair's arithmetic, so both give the same bits */
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * (1.0f / (1.0f + expf(-x[i])));
        break;
    case DS_OP_HARDSIGMOID:
        for (int64_t i = 0; i < n; i++)
            y[i] = fmaxf(0.0f, fminf(1.0f, a * x[i] + b));
        break;
    case DS_OP_HARDSWISH: /* x * HardSigmoid(x) with alpha 1/6, beta 1/2 */
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * fmaxf(0.0f, fminf(1.0f, x[i] / 6.0f + 0.5f));
        break;
    case DS_OP_LEAKYRELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] < 0.0f ? a * x[i] : x[i];
        break;
    default:
        break;
    }
}

void ds_clamp(float *y, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = y[i] < lo ? lo : y[i] > hi ? hi : y[i];
}

void ds_bcast_dims4(const ds_shape *s, int64_t *out)
{
    for (int d = 0; d < 4; d++) {
        int k = d - (4 - s->ndim);
        out[d] = k >= 0 ? s->dims[k] : 1;
    }
}

static float apply(ds_op op, float a, float b)
{
    switch (op) {
    case DS_OP_MUL: return a * b;
    case DS_OP_SUB: return a - b;
    case DS_OP_DIV: return a / b;
    case DS_OP_PRELU: return a < 0.0f ? a * b : a;
    default: return a + b;
    }
}

/* Strides of a 4-dim operand read at the output's indices: 0 where it is
 * broadcast. */
static void bcast_strides(const int64_t *d, const int64_t *yd, int64_t *s)
{
    int64_t acc = 1;
    for (int k = 3; k >= 0; k--) {
        s[k] = d[k] == 1 && yd[k] != 1 ? 0 : acc;
        acc *= d[k];
    }
}

void ds_binary_bcast(ds_op op, const float *a, const int64_t *ad, const float *b, const int64_t *bd,
                     float *y, const int64_t *yd)
{
    int64_t sa[4], sb[4];
    bcast_strides(ad, yd, sa);
    bcast_strides(bd, yd, sb);
    for (int64_t i0 = 0; i0 < yd[0]; i0++)
        for (int64_t i1 = 0; i1 < yd[1]; i1++)
            for (int64_t i2 = 0; i2 < yd[2]; i2++) {
                const float *ap = a + i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                const float *bp = b + i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                for (int64_t i3 = 0; i3 < yd[3]; i3++)
                    *y++ = apply(op, ap[i3 * sa[3]], bp[i3 * sb[3]]);
            }
}

void ds_ref_eltwise(const ds_layer *l, const ds_tensor *const *in, ds_tensor *out)
{
    float *y = ds_tensor_f32(out);
    if (l->op != DS_OP_ADD && l->op != DS_OP_MUL && l->op != DS_OP_SUB && l->op != DS_OP_DIV &&
        l->op != DS_OP_PRELU) {
        ds_unary_eltwise(l, ds_tensor_f32(in[0]), y, ds_shape_numel(&out->shape));
        return;
    }
    const ds_tensor *a = in[0], *b = l->n_inputs == 2 ? in[1] : &l->weight;
    if (l->n_inputs == 1 && l->const_first) {
        a = &l->weight;
        b = in[0];
    }
    int64_t ad[4], bd[4], yd[4];
    ds_bcast_dims4(&a->shape, ad);
    ds_bcast_dims4(&b->shape, bd);
    ds_bcast_dims4(&out->shape, yd);
    ds_binary_bcast(l->op, ds_tensor_f32(a), ad, ds_tensor_f32(b), bd, y, yd);
}
