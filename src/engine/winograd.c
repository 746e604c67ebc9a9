/* winograd.c - Winograd F(2x2, rxr) convolution over XNNPACK GEMMs. */
#include "winograd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xnnpack.h>

#define WMAX 6 /* largest tile edge n = m + r - 1 */

/* The build targets baseline x86-64 (SSE2); the transforms are plain loops
 * over channels, so give them AVX2/FMA clones picked at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VEC_CLONES
#endif

/* F(2,3) with the points 0, 1, -1, inf: B^T rows are (-1 0 1 0), (0 1 1 0),
 * (0 -1 1 0), (0 -1 0 1) and A^T rows (1 1 1 0), (0 1 -1 1) (checked against
 * the constructed matrices in ds_wino_new).  Interior tiles read the input in
 * place; one pass per channel vector keeps everything in registers. */
static const float bt23[4][4] = {{-1, 0, 1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, -1, 0, 1}};
static const float at23[2][4] = {{1, 1, 1, 0}, {0, 1, -1, 1}};

struct ds_wino {
    int m, r, n;
    int64_t c, o;
    int pt, pl;
    float bt[WMAX][WMAX]; /* input transform B^T (n x n) */
    float at[WMAX][WMAX]; /* output transform A^T (m x n) */
    float *bias;          /* o floats or NULL */
    xnn_operator_t fc[WMAX * WMAX];
    int64_t block; /* tiles per block */
    int fast23;    /* F(2,3) with the hand-written transforms */
};

int ds_wino_suitable(const ds_layer *l)
{
    const ds_tensor *w = &l->weight;
    if (l->op != DS_OP_CONV || w->shape.ndim != 4 || l->group != 1)
        return 0;
    int64_t r = w->shape.dims[2];
    if (r != w->shape.dims[3] || (r != 3 && r != 5))
        return 0;
    if (l->stride[0] != 1 || l->stride[1] != 1 || l->dilation[0] > 1 || l->dilation[1] > 1)
        return 0;
    /* few channels: the transforms cost more than the GEMMs save */
    return w->shape.dims[0] >= 16 && w->shape.dims[1] >= 16;
}

/* Toom-Cook matrices for F(m, r) on points 0, 1, -1, 2, -2 and infinity:
 * y = AT [(G g) . (BT d)] computes y_i = sum_k g_k d_{i+k}. */
static void toom_cook(int m, int r, double bt[WMAX][WMAX], double g[WMAX][WMAX],
                      double at[WMAX][WMAX])
{
    static const double pts[WMAX - 1] = {0, 1, -1, 2, -2};
    const int n = m + r - 1;
    memset(bt, 0, sizeof(double) * WMAX * WMAX);
    memset(g, 0, sizeof(double) * WMAX * WMAX);
    memset(at, 0, sizeof(double) * WMAX * WMAX);
    for (int j = 0; j < n; j++) {
        /* coefficients of prod (x - a_l) over l != j (all l for j = n-1) */
        double poly[WMAX + 1] = {1};
        int deg = 0;
        double f = 1;
        for (int l = 0; l < n - 1; l++) {
            if (l == j)
                continue;
            for (int k = deg + 1; k > 0; k--)
                poly[k] = poly[k - 1] - pts[l] * poly[k];
            poly[0] = -pts[l] * poly[0];
            deg++;
            if (j < n - 1)
                f *= pts[j] - pts[l];
        }
        for (int k = 0; k <= deg; k++)
            bt[j][k] = poly[k];
        for (int k = 0; k < r; k++)
            g[j][k] = j < n - 1 ? pow(pts[j], k) / f : (k == r - 1);
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            at[i][j] = j < n - 1 ? (i == 0 ? 1.0 : pow(pts[j], i)) : (i == m - 1);
}

/* Checks the matrices on a 1-D example (guards the construction). */
static int toom_cook_ok(int m, int r, double bt[WMAX][WMAX], double g[WMAX][WMAX],
                        double at[WMAX][WMAX])
{
    const int n = m + r - 1;
    double d[WMAX], k[WMAX], u[WMAX], v[WMAX];
    for (int i = 0; i < n; i++)
        d[i] = 0.37 * i * i - 1.3 * i + 0.5;
    for (int i = 0; i < r; i++)
        k[i] = 0.9 - 0.45 * i + 0.11 * i * i;
    for (int j = 0; j < n; j++) {
        u[j] = v[j] = 0;
        for (int i = 0; i < r; i++)
            u[j] += g[j][i] * k[i];
        for (int i = 0; i < n; i++)
            v[j] += bt[j][i] * d[i];
    }
    for (int i = 0; i < m; i++) {
        double y = 0, want = 0;
        for (int j = 0; j < n; j++)
            y += at[i][j] * u[j] * v[j];
        for (int q = 0; q < r; q++)
            want += k[q] * d[i + q];
        if (fabs(y - want) > 1e-9 * (1 + fabs(want)))
            return 0;
    }
    return 1;
}

void ds_wino_free(ds_wino *w)
{
    if (!w)
        return;
    for (int p = 0; p < WMAX * WMAX; p++)
        if (w->fc[p])
            xnn_delete_operator(w->fc[p]);
    free(w->bias);
    free(w);
}

void ds_wino_scratch_free(ds_wino_scratch *s)
{
    free(s->v);
    free(s->m);
    memset(s, 0, sizeof *s);
}

/* Geometry, transform matrices (checked) and bias of layer l's Winograd
 * form; 0 or -1 with a message. */
static int wino_setup(ds_wino *w, const ds_layer *l, double g[WMAX][WMAX], ds_error *err)
{
    const int64_t *wd = l->weight.shape.dims;
    w->r = (int)wd[2];
    w->m = 2;
    w->n = w->m + w->r - 1;
    w->o = wd[0];
    w->c = wd[1];
    w->pt = l->pads[0];
    w->pl = l->pads[1];
    const int n = w->n;
    double bt[WMAX][WMAX], at[WMAX][WMAX];
    toom_cook(w->m, w->r, bt, g, at);
    if (!toom_cook_ok(w->m, w->r, bt, g, at))
        return ds_errorf(err, "layer %d: Winograd F(%d,%d) matrices failed their check", l->id, w->m,
                         w->r);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            w->bt[i][j] = (float)bt[i][j];
            w->at[i][j] = (float)at[i][j];
        }
    if (n == 4) {
        w->fast23 = 1;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                w->fast23 &= w->bt[i][j] == bt23[i][j] && (i >= 2 || w->at[i][j] == at23[i][j]);
    }
    int64_t big = w->c > w->o ? w->c : w->o;
    w->block = (1 << 18) / (n * n * big);
    w->block = w->block < 32 ? 32 : w->block > 4096 ? 4096 : w->block;
    if (l->bias.shape.ndim) {
        w->bias = malloc((size_t)w->o * sizeof *w->bias);
        if (!w->bias)
            return ds_errorf(err, "layer %d: out of memory (Winograd)", l->id);
        memcpy(w->bias, l->bias.data, (size_t)w->o * sizeof *w->bias);
    }
    return 0;
}

/* U[p] = (G g G^T)[p] for every (out, in) pair, as an O x C matrix, packed
 * into one XNNPACK GEMM per position p; one row of positions at a time keeps
 * the temporary at n x O x C. */
static int wino_pack(ds_wino *w, const ds_layer *l, double g[WMAX][WMAX], ds_error *err)
{
    const int n = w->n, r = w->r;
    const size_t oc = (size_t)(w->o * w->c);
    float *u = malloc((size_t)n * oc * sizeof *u);
    if (!u)
        return ds_errorf(err, "layer %d: out of memory (Winograd weights)", l->id);
    const float *k = ds_tensor_f32(&l->weight);
    for (int i = 0; i < n; i++) {
        for (size_t q = 0; q < oc; q++) {
            const float *kk = k + q * (size_t)(r * r);
            double gk[WMAX]; /* (G g)[i][b] */
            for (int b = 0; b < r; b++) {
                gk[b] = 0;
                for (int a = 0; a < r; a++)
                    gk[b] += g[i][a] * kk[a * r + b];
            }
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int b = 0; b < r; b++)
                    s += gk[b] * g[j][b];
                u[(size_t)j * oc + q] = (float)s;
            }
        }
        for (int j = 0; j < n; j++) {
            enum xnn_status st = xnn_create_fully_connected_nc_f32(
                (size_t)w->c, (size_t)w->o, (size_t)w->c, (size_t)w->o, u + (size_t)j * oc, NULL,
                -INFINITY, INFINITY, 0, &w->fc[i * n + j]);
            if (st != xnn_status_success) {
                free(u);
                return ds_errorf(err, "layer %d: XNNPACK fully connected create failed (status %d)",
                                 l->id, (int)st);
            }
        }
    }
    free(u);
    return 0;
}

ds_wino *ds_wino_new(const ds_layer *l, ds_error *err)
{
    ds_wino *w = calloc(1, sizeof *w);
    if (!w) {
        ds_errorf(err, "layer %d: out of memory (Winograd)", l->id);
        return NULL;
    }
    double g[WMAX][WMAX];
    if (wino_setup(w, l, g, err) || wino_pack(w, l, g, err)) {
        ds_wino_free(w);
        return NULL;
    }
    return w;
}

typedef struct task {
    const ds_wino *w;
    const float *x;
    float *y, *v, *mm;
    int64_t h, wd, oh, ow, th, tw, t0, nb;
    int relu;
} task;


/* 8 channels at a time (GCC vector extension: AVX2 in the avx2 clone, two
 * SSE registers otherwise); the remainder one channel at a time. */
typedef float v8 __attribute__((vector_size(32)));

typedef int32_t v8i __attribute__((vector_size(32)));

/* by pointer: passing AVX vectors by value changes the ABI per clone */
#define LD8(dst, p) memcpy(&(dst), (p), sizeof(v8))
#define ST8(p, val)                                                                        \
    do {                                                                                   \
        v8 st_ = (val);                                                                    \
        memcpy((p), &st_, sizeof(v8));                                                     \
    } while (0)
#define LD1(dst, p) ((dst) = *(p))
#define ST1(p, val) (*(p) = (val))
#define RELU8(o) ((o) = (v8)((v8i)(o) & (v8i)((o) > z8)))
#define RELU1(o) ((o) = (o) > 0.0f ? (o) : 0.0f)

#define IN23_BODY(T, LD, ST, STEP)                                                         \
    for (; c + STEP <= C; c += STEP) {                                                     \
        T d[4][4], t[4][4];                                                                \
        for (int a = 0; a < 4; a++)                                                        \
            for (int b = 0; b < 4; b++)                                                    \
                LD(d[a][b], x + a * row + b * pix + c);                                    \
        for (int b = 0; b < 4; b++) {                                                      \
            t[0][b] = d[2][b] - d[0][b];                                                   \
            t[1][b] = d[1][b] + d[2][b];                                                   \
            t[2][b] = d[2][b] - d[1][b];                                                   \
            t[3][b] = d[3][b] - d[1][b];                                                   \
        }                                                                                  \
        for (int i = 0; i < 4; i++) {                                                      \
            ST(v + (i * 4 + 0) * pstride + c, t[i][2] - t[i][0]);                          \
            ST(v + (i * 4 + 1) * pstride + c, t[i][1] + t[i][2]);                          \
            ST(v + (i * 4 + 2) * pstride + c, t[i][2] - t[i][1]);                          \
            ST(v + (i * 4 + 3) * pstride + c, t[i][3] - t[i][1]);                          \
        }                                                                                  \
    }


VEC_CLONES static void input_tile23(const float *x, int64_t row, int64_t pix, float *v,
                                    int64_t pstride, int64_t C)
{
    int64_t c = 0;
    IN23_BODY(v8, LD8, ST8, 8)
    IN23_BODY(float, LD1, ST1, 1)
}

/* Any F(m, r): the same passes with the matrices of ds_wino (zero
 * coefficients skipped), STEP channels at a time. */
#define GEN_IN_BODY(T, LD, ST, STEP, ZERO)                                                 \
    for (; c + STEP <= C; c += STEP) {                                                     \
        T d[WMAX][WMAX], tmp[WMAX][WMAX];                                                  \
        for (int a = 0; a < n; a++)                                                        \
            for (int b = 0; b < n; b++) {                                                  \
                int64_t iy = iy0 + a, ix = ix0 + b;                                        \
                if (iy >= 0 && iy < t->h && ix >= 0 && ix < t->wd)                         \
                    LD(d[a][b], t->x + ((img * t->h + iy) * t->wd + ix) * C + c);          \
                else                                                                       \
                    d[a][b] = ZERO;                                                        \
            }                                                                              \
        for (int i = 0; i < n; i++)                                                        \
            for (int b = 0; b < n; b++) {                                                  \
                T acc = ZERO;                                                              \
                for (int a = 0; a < n; a++)                                                \
                    if (w->bt[i][a] != 0.0f)                                               \
                        acc += w->bt[i][a] * d[a][b];                                      \
                tmp[i][b] = acc;                                                           \
            }                                                                              \
        for (int i = 0; i < n; i++)                                                        \
            for (int j = 0; j < n; j++) {                                                  \
                T acc = ZERO;                                                              \
                for (int b = 0; b < n; b++)                                                \
                    if (w->bt[j][b] != 0.0f)                                               \
                        acc += tmp[i][b] * w->bt[j][b];                                    \
                ST(t->v + ((int64_t)(i * n + j) * B + (int64_t)tb) * C + c, acc);          \
            }                                                                              \
    }

#define GEN_OUT_BODY(T, LD, ST, STEP, ZERO, RELU)                                          \
    for (; c + STEP <= O; c += STEP) {                                                     \
        T mv[WMAX][WMAX], tmp[WMAX][WMAX];                                                 \
        for (int a = 0; a < n; a++)                                                        \
            for (int b = 0; b < n; b++)                                                    \
                LD(mv[a][b], t->mm + ((int64_t)(a * n + b) * B + (int64_t)tb) * O + c);    \
        for (int i = 0; i < m; i++)                                                        \
            for (int b = 0; b < n; b++) {                                                  \
                T acc = ZERO;                                                              \
                for (int a = 0; a < n; a++)                                                \
                    if (w->at[i][a] != 0.0f)                                               \
                        acc += w->at[i][a] * mv[a][b];                                     \
                tmp[i][b] = acc;                                                           \
            }                                                                              \
        T bv = ZERO;                                                                       \
        if (w->bias)                                                                       \
            LD(bv, w->bias + c);                                                           \
        for (int i = 0; i < m && oy0 + i < t->oh; i++)                                     \
            for (int j = 0; j < m && ox0 + j < t->ow; j++) {                               \
                T acc = bv;                                                                \
                for (int b = 0; b < n; b++)                                                \
                    if (w->at[j][b] != 0.0f)                                               \
                        acc += tmp[i][b] * w->at[j][b];                                    \
                if (t->relu)                                                               \
                    RELU(acc);                                                             \
                ST(t->y + ((img * t->oh + oy0 + i) * t->ow + ox0 + j) * O + c, acc);       \
            }                                                                              \
    }

__attribute__((always_inline)) static inline void gen_input(const task *t, size_t tb, int n,
                                                            int64_t img, int64_t iy0,
                                                            int64_t ix0);
__attribute__((always_inline)) static inline void gen_output(const task *t, size_t tb, int n,
                                                             int m, int64_t img, int64_t oy0,
                                                             int64_t ox0);

static inline void gen_input(const task *t, size_t tb, int n, int64_t img, int64_t iy0,
                             int64_t ix0)
{
    const ds_wino *w = t->w;
    const int64_t C = w->c, B = w->block;
    const v8 z8 = {0};
    int64_t c = 0;
    GEN_IN_BODY(v8, LD8, ST8, 8, z8)
    GEN_IN_BODY(float, LD1, ST1, 1, 0.0f)
}

static inline void gen_output(const task *t, size_t tb, int n, int m, int64_t img, int64_t oy0,
                              int64_t ox0)
{
    const ds_wino *w = t->w;
    const int64_t O = w->o, B = w->block;
    const v8 z8 = {0};
    int64_t c = 0;
    GEN_OUT_BODY(v8, LD8, ST8, 8, z8, RELU8)
    GEN_OUT_BODY(float, LD1, ST1, 1, 0.0f, RELU1)
}

VEC_CLONES static void input_tile(void *ctx, size_t tb)
{
    const task *t = ctx;
    const ds_wino *w = t->w;
    const int n = w->n;
    const int64_t C = w->c, B = w->block;
    int64_t tile = t->t0 + (int64_t)tb;
    int64_t img = tile / (t->th * t->tw), rem = tile % (t->th * t->tw);
    int64_t iy0 = (rem / t->tw) * w->m - w->pt, ix0 = (rem % t->tw) * w->m - w->pl;
    if (w->fast23 && iy0 >= 0 && ix0 >= 0 && iy0 + 4 <= t->h && ix0 + 4 <= t->wd) {
        input_tile23(t->x + ((img * t->h + iy0) * t->wd + ix0) * C, t->wd * C, C,
                     t->v + (int64_t)tb * C, B * C, C);
        return;
    }
    if (n == 6) /* a constant tile edge lets the compiler unroll the passes */
        gen_input(t, tb, 6, img, iy0, ix0);
    else
        gen_input(t, tb, n, img, iy0, ix0);
}

#define OUT23_BODY(T, LD, ST, STEP, ZERO, RELU)                                           \
    for (; c + STEP <= O; c += STEP) {                                                     \
        T m[4][4], t[2][4], out[2][2];                                                     \
        for (int p = 0; p < 16; p++)                                                       \
            LD(m[p / 4][p % 4], mm + p * pstride + c);                                     \
        for (int b = 0; b < 4; b++) {                                                      \
            t[0][b] = m[0][b] + m[1][b] + m[2][b];                                         \
            t[1][b] = m[1][b] - m[2][b] + m[3][b];                                         \
        }                                                                                  \
        T bv = ZERO;                                                                       \
        if (bias)                                                                          \
            LD(bv, bias + c);                                                              \
        for (int i = 0; i < 2; i++) {                                                      \
            out[i][0] = t[i][0] + t[i][1] + t[i][2] + bv;                                  \
            out[i][1] = t[i][1] - t[i][2] + t[i][3] + bv;                                  \
        }                                                                                  \
        for (int i = 0; i < ny; i++)                                                       \
            for (int j = 0; j < nx; j++) {                                                 \
                T o = out[i][j];                                                           \
                if (relu)                                                                  \
                    RELU(o);                                                               \
                ST(y + i * row + j * pix + c, o);                                          \
            }                                                                              \
    }

VEC_CLONES static void output_tile23(const float *mm, int64_t pstride, const float *bias,
                                     int relu, float *y, int64_t row, int64_t pix, int ny,
                                     int nx, int64_t O)
{
    int64_t c = 0;
    const v8 z8 = {0};
    OUT23_BODY(v8, LD8, ST8, 8, z8, RELU8)
    OUT23_BODY(float, LD1, ST1, 1, 0.0f, RELU1)
}

VEC_CLONES static void output_tile(void *ctx, size_t tb)
{
    const task *t = ctx;
    const ds_wino *w = t->w;
    const int n = w->n, m = w->m;
    const int64_t O = w->o, B = w->block;
    int64_t tile = t->t0 + (int64_t)tb;
    int64_t img = tile / (t->th * t->tw), rem = tile % (t->th * t->tw);
    int64_t oy0 = (rem / t->tw) * m, ox0 = (rem % t->tw) * m;
    if (w->fast23) {
        int ny = t->oh - oy0 < 2 ? 1 : 2, nx = t->ow - ox0 < 2 ? 1 : 2;
        output_tile23(t->mm + (int64_t)tb * O, B * O, w->bias, t->relu,
                      t->y + ((img * t->oh + oy0) * t->ow + ox0) * O, t->ow * O, O, ny, nx, O);
        return;
    }
    if (n == 6 && m == 2)
        gen_output(t, tb, 6, 2, img, oy0, ox0);
    else
        gen_output(t, tb, n, m, img, oy0, ox0);
}

static int grow(float **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    float *q = realloc(*p, need * sizeof **p);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

int ds_wino_run(ds_wino *w, const float *x, int64_t n, int64_t h, int64_t wd, float *y,
                int64_t oh, int64_t ow, int relu, pthreadpool_t pool, ds_wino_scratch *s,
                ds_error *err)
{
    const int nn = w->n * w->n;
    if (grow(&s->v, &s->v_cap, (size_t)(nn * w->block * w->c)) ||
        grow(&s->m, &s->m_cap, (size_t)(nn * w->block * w->o)))
        return ds_errorf(err, "out of memory (Winograd scratch)");
    task t = {w, x, y, s->v, s->m, h, wd, oh, ow, (oh + w->m - 1) / w->m,
              (ow + w->m - 1) / w->m, 0, 0, relu};
    const int64_t tiles = n * t.th * t.tw;
    for (t.t0 = 0; t.t0 < tiles; t.t0 += w->block) {
        t.nb = tiles - t.t0 < w->block ? tiles - t.t0 : w->block;
        pthreadpool_parallelize_1d(pool, input_tile, &t, (size_t)t.nb, 0);
        for (int p = 0; p < nn; p++) {
            enum xnn_status st = xnn_setup_fully_connected_nc_f32(
                w->fc[p], (size_t)t.nb, s->v + (size_t)p * (size_t)(w->block * w->c),
                s->m + (size_t)p * (size_t)(w->block * w->o), pool);
            if (st == xnn_status_success)
                st = xnn_run_operator(w->fc[p], pool);
            if (st != xnn_status_success)
                return ds_errorf(err, "Winograd GEMM %d failed (XNNPACK status %d)", p, (int)st);
        }
        pthreadpool_parallelize_1d(pool, output_tile, &t, (size_t)t.nb, 0);
    }
    return 0;
}
