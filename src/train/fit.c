/* fit.c - fitting predictors to collected fractions, and their quality. */
#include <lbfgs.h>
#include <math.h>
#include <pthreadpool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "train/train.h"

/* L2 penalty on the MLP's hidden weights: Conv layers have up to hundreds of
 * input channels and a few hundred frames, so a touch of shrinkage keeps the
 * hidden unit from fitting noise in rarely changing channels. */
#define MLP_L2 1e-4
#define MLP_MAX_ITER 300

int ds_train_holdout_first(int n_frames)
{
    int first = n_frames - (int)(n_frames * DS_TRAIN_HOLDOUT + 0.5);
    if (first > n_frames - 1)
        first = n_frames - 1;
    if (first < 2) /* row 0 is not a change; keep one row to fit on */
        first = 2;
    return first;
}

/* ------------------------------------------------------------- linear */

int ds_fit_linear(const float *x, const float *y, int n, int k, double *coef, ds_error *err)
{
    if (n < 1 || k < 0 || k > 4096)
        return ds_errorf(err, "linear fit: %d samples of %d inputs", n, k);
    size_t kk = (size_t)k;
    double *A = calloc(kk * kk + 2 * kk + 1, sizeof *A);
    if (!A)
        return ds_errorf(err, "linear fit: out of memory");
    double *r = A + kk * kk, *mx = r + kk, my = 0;
    for (int i = 0; i < n; i++) {
        my += y[i];
        for (size_t j = 0; j < kk; j++)
            mx[j] += x[(size_t)i * kk + j];
    }
    my /= n;
    for (size_t j = 0; j < kk; j++)
        mx[j] /= n;
    /* Centred normal equations: better conditioned than raw moments. */
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * kk;
        double dy = y[i] - my;
        for (size_t j = 0; j < kk; j++) {
            double dj = xi[j] - mx[j];
            r[j] += dj * dy;
            for (size_t l = 0; l < kk; l++)
                A[j * kk + l] += dj * (xi[l] - mx[l]);
        }
    }
    double trace = 0;
    for (size_t j = 0; j < kk; j++)
        trace += A[j * kk + j];
    /* A tiny ridge makes directions without variance come out as slope 0
     * and leaves well-posed problems exact to ~1e-12 relative. */
    double ridge = 1e-12 * (k ? trace / k : 0) + 1e-300;
    for (size_t j = 0; j < kk; j++)
        A[j * kk + j] += ridge;
    for (size_t j = 0; j < kk; j++) { /* Gaussian elimination, partial pivoting */
        size_t p = j;
        for (size_t i = j + 1; i < kk; i++)
            if (fabs(A[i * kk + j]) > fabs(A[p * kk + j]))
                p = i;
        if (p != j) {
            for (size_t l = 0; l < kk; l++) {
                double t = A[j * kk + l];
                A[j * kk + l] = A[p * kk + l];
                A[p * kk + l] = t;
            }
            double t = r[j];
            r[j] = r[p];
            r[p] = t;
        }
        double piv = A[j * kk + j];
        for (size_t i = j + 1; i < kk; i++) {
            double f = A[i * kk + j] / piv;
            for (size_t l = j; l < kk; l++)
                A[i * kk + l] -= f * A[j * kk + l];
            r[i] -= f * r[j];
        }
    }
    double b = my;
    for (size_t j = kk; j-- > 0;) {
        double s = r[j];
        for (size_t l = j + 1; l < kk; l++)
            s -= A[j * kk + l] * coef[l];
        coef[j] = s / A[j * kk + j];
        if (!isfinite(coef[j]))
            coef[j] = 0;
    }
    for (size_t j = 0; j < kk; j++)
        b -= coef[j] * mx[j];
    coef[k] = b;
    free(A);
    return 0;
}

/* ----------------------------------------------------------------- MLP */

typedef struct mlp_problem {
    const float *x, *y;
    int n, f, o;
    double scale; /* 1 / (n o var): the loss reads as a fraction of the variance */
} mlp_problem;

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

/* theta = [w (f), w0, v (o), b (o)];
 * loss = scale/2 sum r^2 + L2/2 |w|^2, scale = 1/(n o var(y)): normalised so
 * that L-BFGS's relative stopping tests mean the same whatever the level of
 * change of the layer. */
static lbfgsfloatval_t mlp_eval(void *inst, const lbfgsfloatval_t *th, lbfgsfloatval_t *g,
                                const int nvar, const lbfgsfloatval_t step)
{
    (void)step;
    const mlp_problem *P = inst;
    size_t f = (size_t)P->f, o = (size_t)P->o;
    const double *w = th, *v = th + f + 1, *b = v + o;
    double w0 = th[f];
    memset(g, 0, (size_t)nvar * sizeof *g);
    double *gw = g, *gv = g + f + 1, *gb = gv + o;
    double loss = 0, scale = P->scale;
    for (int i = 0; i < P->n; i++) {
        const float *xi = P->x + (size_t)i * f;
        const float *yi = P->y + (size_t)i * o;
        double z = w0;
        for (size_t j = 0; j < f; j++)
            z += w[j] * xi[j];
        double h = sigmoid(z), gh = 0;
        for (size_t c = 0; c < o; c++) {
            double r = v[c] * h + b[c] - yi[c];
            loss += r * r;
            gv[c] += r * h;
            gb[c] += r;
            gh += r * v[c];
        }
        double gz = gh * h * (1 - h) * scale;
        for (size_t j = 0; j < f; j++)
            gw[j] += gz * xi[j];
        g[f] += gz;
    }
    loss *= 0.5 * scale;
    for (size_t c = 0; c < o; c++) {
        gv[c] *= scale;
        gb[c] *= scale;
    }
    for (size_t j = 0; j < f; j++) {
        loss += 0.5 * MLP_L2 * w[j] * w[j];
        gw[j] += MLP_L2 * w[j];
    }
    return loss;
}

/* Best v, b for fixed hidden activations h (per-channel least squares). */
static void mlp_output_fit(const mlp_problem *P, const double *h, double *v, double *b)
{
    double mh = 0, shh = 0;
    for (int i = 0; i < P->n; i++)
        mh += h[i];
    mh /= P->n;
    for (int i = 0; i < P->n; i++)
        shh += (h[i] - mh) * (h[i] - mh);
    for (int c = 0; c < P->o; c++) {
        double my = 0, shy = 0;
        for (int i = 0; i < P->n; i++)
            my += P->y[(size_t)i * (size_t)P->o + (size_t)c];
        my /= P->n;
        for (int i = 0; i < P->n; i++)
            shy += (h[i] - mh) * (P->y[(size_t)i * (size_t)P->o + (size_t)c] - my);
        v[c] = shh > 1e-18 ? shy / shh : 0.0;
        b[c] = my - v[c] * mh;
    }
}

/* Variance of y over samples and outputs together. */
static double output_variance(const float *y, int n, int n_out)
{
    double var = 0;
    for (int c = 0; c < n_out; c++) {
        double my = 0;
        for (int i = 0; i < n; i++)
            my += y[(size_t)i * (size_t)n_out + (size_t)c];
        my /= n;
        for (int i = 0; i < n; i++) {
            double e = y[(size_t)i * (size_t)n_out + (size_t)c] - my;
            var += e * e;
        }
    }
    return var / ((double)n * n_out);
}

/* The starting point: hidden unit on the mean feature, scaled so that z
 * spans about +-2 over the samples (the logistic's useful range), and the
 * best output weights for it.  h: n doubles of scratch. */
static void mlp_start(const mlp_problem *P, double *h, lbfgsfloatval_t *th)
{
    const int n = P->n, n_feat = P->f, n_out = P->o;
    double mu = 0, hv = 0;
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n_feat; j++)
            s += P->x[(size_t)i * (size_t)n_feat + (size_t)j];
        h[i] = s / n_feat;
        mu += h[i];
    }
    mu /= n;
    for (int i = 0; i < n; i++)
        hv += (h[i] - mu) * (h[i] - mu);
    double sd = sqrt(hv / n), s = 2.0 / (sd > 1e-3 ? sd : 1e-3);
    for (int j = 0; j < n_feat; j++)
        th[j] = s / n_feat;
    th[n_feat] = -s * mu;
    for (int i = 0; i < n; i++)
        h[i] = sigmoid(s * (h[i] - mu));
    mlp_output_fit(P, h, th + n_feat + 1, th + n_feat + 1 + n_out);
}

/* Runs L-BFGS from th; best gets th's start or its end, whichever has the
 * lower loss.  Any outcome (converged, iteration limit, a line-search
 * stop) leaves the last accepted point in th. */
static void mlp_minimise(mlp_problem *P, int nvar, lbfgsfloatval_t *th, lbfgsfloatval_t *g,
                         lbfgsfloatval_t *best)
{
    double start_loss = mlp_eval(P, th, g, nvar, 0);
    memcpy(best, th, (size_t)nvar * sizeof *th);
    lbfgs_parameter_t par;
    lbfgs_parameter_init(&par);
    par.max_iterations = MLP_MAX_ITER;
    par.epsilon = 1e-7;
    par.past = 5;
    par.delta = 1e-7;
    lbfgsfloatval_t fx = 0;
    int ret = lbfgs(nvar, th, &fx, mlp_eval, NULL, P, &par);
    double end_loss = mlp_eval(P, th, g, nvar, 0);
    if (isfinite(end_loss) && end_loss < start_loss)
        memcpy(best, th, (size_t)nvar * sizeof *th);
    else if (ret < 0 && ret != LBFGSERR_ROUNDING_ERROR && ret != LBFGSERR_MAXIMUMLINESEARCH)
        ds_log_debug("mlp fit: L-BFGS stopped with %d; keeping the start", ret);
}

int ds_fit_mlp(const float *x, const float *y, int n, int n_feat, int n_out, double *w,
               double *w0, double *v, double *b, ds_error *err)
{
    if (n < 1 || n_feat < 1 || n_out < 1)
        return ds_errorf(err, "mlp fit: %d samples, %d features, %d outputs", n, n_feat, n_out);
    int nvar = n_feat + 1 + 2 * n_out;
    lbfgsfloatval_t *th = lbfgs_malloc(nvar), *g = lbfgs_malloc(nvar), *best = NULL;
    double *h = malloc((size_t)n * sizeof *h);
    int ok = th && g && h;
    if (ok) {
        double var = output_variance(y, n, n_out);
        mlp_problem P = {x, y, n, n_feat, n_out,
                         1.0 / ((double)n * n_out * (var > 1e-12 ? var : 1e-12))};
        mlp_start(&P, h, th);
        ok = (best = lbfgs_malloc(nvar)) != NULL;
        if (ok)
            mlp_minimise(&P, nvar, th, g, best);
    }
    int finite = ok;
    for (int j = 0; ok && j < nvar; j++)
        finite &= isfinite(best[j]);
    if (finite) {
        memcpy(w, best, (size_t)n_feat * sizeof *w);
        *w0 = best[n_feat];
        memcpy(v, best + n_feat + 1, (size_t)n_out * sizeof *v);
        memcpy(b, best + n_feat + 1 + n_out, (size_t)n_out * sizeof *b);
    }
    lbfgs_free(th);
    lbfgs_free(g);
    lbfgs_free(best);
    free(h);
    if (!ok)
        return ds_errorf(err, "mlp fit: out of memory");
    return finite ? 0 : ds_errorf(err, "mlp fit: parameters are not finite");
}

/* ----------------------------------------------------------- per layer */

typedef struct fit_job {
    const ds_model *m;
    const ds_train_data *d;
    ds_predictors *p;
    int first; /* first held-out row */
    int *failed;
    ds_error *errs; /* [n_layers] */
} fit_job;

static float cell(const ds_train_data *d, int row, int layer, int c)
{
    return d->change[(size_t)row * (size_t)d->width + (size_t)d->offset[layer] + (size_t)c];
}

static int fit_layer(const fit_job *J, int id, ds_error *err)
{
    const ds_model *m = J->m;
    const ds_train_data *d = J->d;
    ds_layer_pred *lp = &J->p->layers[id];
    const ds_layer *l = &m->layers[id];
    int n = J->first - 1; /* rows 1 .. first-1 */
    for (int c = 0; c < lp->n_out; c++) {
        double s = 0;
        for (int t = 0; t < d->n_frames; t++)
            s += d->nonzero[(size_t)t * (size_t)d->width + (size_t)d->offset[id] + (size_t)c];
        lp->nonzero[c] = s / d->n_frames;
    }
    if (lp->kind == DS_PRED_LINEAR) {
        int k = lp->n_in;
        float *x = malloc((size_t)n * (size_t)k * sizeof *x), *y = malloc((size_t)n * sizeof *y);
        double *coef = malloc(((size_t)k + 1) * sizeof *coef);
        int rc = 0;
        if (!x || !y || !coef)
            rc = ds_errorf(err, "out of memory");
        for (int c = 0; c < lp->n_out && !rc; c++) {
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < k; j++)
                    x[(size_t)i * (size_t)k + (size_t)j] = cell(d, i + 1, l->inputs[j], c);
                y[i] = cell(d, i + 1, id, c);
            }
            rc = ds_fit_linear(x, y, n, k, coef, err);
            if (!rc) {
                memcpy(lp->a + (size_t)c * (size_t)k, coef, (size_t)k * sizeof *coef);
                lp->b[c] = coef[k];
            }
        }
        free(x);
        free(y);
        free(coef);
        return rc;
    }
    if (lp->kind == DS_PRED_MLP) {
        size_t f = (size_t)lp->n_feat, o = (size_t)lp->n_out;
        float *x = malloc((size_t)n * f * sizeof *x), *y = malloc((size_t)n * o * sizeof *y);
        int rc = 0;
        if (!x || !y)
            rc = ds_errorf(err, "out of memory");
        for (int i = 0; i < n && !rc; i++) {
            float *xi = x + (size_t)i * f;
            for (int k = 0; k < lp->n_in; k++) {
                int src = l->inputs[k];
                memcpy(xi, d->change + (size_t)(i + 1) * (size_t)d->width + (size_t)d->offset[src],
                       (size_t)lp->in_ch[k] * sizeof *xi);
                xi += lp->in_ch[k];
            }
            memcpy(y + (size_t)i * o,
                   d->change + (size_t)(i + 1) * (size_t)d->width + (size_t)d->offset[id],
                   o * sizeof *y);
        }
        if (!rc)
            rc = ds_fit_mlp(x, y, n, lp->n_feat, lp->n_out, lp->w, &lp->w0, lp->v, lp->b, err);
        free(x);
        free(y);
        return rc;
    }
    return 0; /* pass, mean, concat: nothing to fit */
}

static void fit_task(void *ctx, size_t i)
{
    const fit_job *J = ctx;
    if (fit_layer(J, (int)i, &J->errs[i]))
        J->failed[i] = 1;
}

int ds_train_fit(const ds_model *m, const ds_train_data *d, int threads, ds_predictors **out,
                 ds_error *err)
{
    if (strcmp(d->model_hash, m->hash) != 0 || d->n_layers != m->n_layers)
        return ds_errorf(err, "train: data collected for model %s, not %s", d->model_hash,
                         m->hash);
    for (int i = 0; i < m->n_layers; i++)
        if (d->channels[i] != ds_predict_channels(&m->layers[i].out_shape))
            return ds_errorf(err, "train: data has %d channels for layer %d, the model %d",
                             d->channels[i], i, ds_predict_channels(&m->layers[i].out_shape));
    if (d->n_frames < DS_TRAIN_MIN_FRAMES)
        return ds_errorf(err, "train: %d frames, need at least %d", d->n_frames,
                         DS_TRAIN_MIN_FRAMES);
    ds_predictors *p = ds_predictors_new(m, err);
    if (!p)
        return -1;
    int L = m->n_layers;
    int *failed = calloc((size_t)L, sizeof *failed);
    ds_error *errs = calloc((size_t)L, sizeof *errs);
    double *r2 = malloc((size_t)L * sizeof *r2), *mae = malloc((size_t)L * sizeof *mae);
    if (!failed || !errs || !r2 || !mae) {
        ds_errorf(err, "train: out of memory");
        goto fail;
    }
    fit_job J = {m, d, p, ds_train_holdout_first(d->n_frames), failed, errs};
    pthreadpool_t pool = threads > 1 ? pthreadpool_create((size_t)threads) : NULL;
    if (pool) {
        /* Layers are independent given the true input fractions. */
        pthreadpool_parallelize_1d(pool, fit_task, &J, (size_t)L, 0);
        pthreadpool_destroy(pool);
    } else {
        for (int i = 0; i < L; i++)
            fit_task(&J, (size_t)i);
    }
    for (int i = 0; i < L; i++)
        if (failed[i]) {
            ds_errorf(err, "train: fitting layer %d (%s): %s", i, m->layers[i].name, errs[i].msg);
            goto fail;
        }
    if (ds_train_quality(m, p, d, J.first, r2, mae, NULL, NULL, err))
        goto fail;
    for (int i = 0; i < L; i++) {
        p->layers[i].r2 = r2[i];
        p->layers[i].mae = mae[i];
    }
    free(failed);
    free(errs);
    free(r2);
    free(mae);
    *out = p;
    return 0;
fail:
    free(failed);
    free(errs);
    free(r2);
    free(mae);
    ds_predictors_free(p);
    return -1;
}

/* ------------------------------------------------------------- quality */

typedef struct acc {
    double sse, sae, sst;
    long count;
} acc;

int ds_train_quality(const ds_model *m, const ds_predictors *p, const ds_train_data *d, int first,
                     double *r2_chain, double *mae_chain, double *r2_step, double *mae_step,
                     ds_error *err)
{
    if (ds_predictors_check(p, m, err))
        return -1;
    if (d->n_layers != m->n_layers || first < 1 || first >= d->n_frames)
        return ds_errorf(err, "train: quality over rows %d..%d of %d", first, d->n_frames - 1,
                         d->n_frames);
    int L = m->n_layers;
    size_t W = (size_t)d->width;
    float *pred = malloc(W * sizeof *pred), *step = malloc(W * sizeof *step);
    double *mean = calloc(W, sizeof *mean);
    float **lf = malloc((size_t)L * sizeof *lf);
    const float **in = malloc((size_t)(L > 64 ? L : 64) * sizeof *in);
    acc *ac = calloc(2 * (size_t)L, sizeof *ac);
    int rc = -1, max_in = 0;
    for (int i = 0; i < L; i++)
        if (m->layers[i].n_inputs > max_in)
            max_in = m->layers[i].n_inputs;
    if (!pred || !step || !mean || !lf || !in || !ac || max_in > (L > 64 ? L : 64)) {
        ds_errorf(err, "train: out of memory");
        goto out;
    }
    for (int i = 0; i < L; i++)
        lf[i] = pred + d->offset[i];
    int rows = d->n_frames - first;
    for (int t = first; t < d->n_frames; t++)
        for (size_t j = 0; j < W; j++)
            mean[j] += d->change[(size_t)t * W + j] / rows;
    for (int t = first; t < d->n_frames; t++) {
        const float *row = d->change + (size_t)t * W;
        if (ds_predictors_eval(p, m, row, lf, err))
            goto out;
        memcpy(step, row, (size_t)d->channels[0] * sizeof *step);
        for (int i = 1; i < L; i++) {
            const ds_layer *l = &m->layers[i];
            for (int k = 0; k < l->n_inputs; k++)
                in[k] = row + d->offset[l->inputs[k]];
            ds_layer_pred_eval(&p->layers[i], in, step + d->offset[i]);
        }
        for (int i = 0; i < L; i++)
            for (int c = 0; c < d->channels[i]; c++) {
                size_t j = (size_t)d->offset[i] + (size_t)c;
                double y = row[j], dm = y - mean[j];
                double e1 = pred[j] - y, e2 = step[j] - y;
                ac[i].sse += e1 * e1;
                ac[i].sae += fabs(e1);
                ac[i].sst += dm * dm;
                ac[i].count++;
                ac[L + i].sse += e2 * e2;
                ac[L + i].sae += fabs(e2);
                ac[L + i].sst += dm * dm;
                ac[L + i].count++;
            }
    }
    for (int i = 0; i < L; i++)
        for (int s = 0; s < 2; s++) {
            const acc *a = &ac[s * L + i];
            /* No variance: R2 is undefined unless the prediction is exact. */
            double r2 = a->sst > 1e-18 ? 1.0 - a->sse / a->sst : a->sse < 1e-18 ? 1.0 : NAN;
            double mae = a->count ? a->sae / (double)a->count : NAN;
            double *r = s ? r2_step : r2_chain, *e = s ? mae_step : mae_chain;
            if (r)
                r[i] = r2;
            if (e)
                e[i] = mae;
        }
    rc = 0;
out:
    free(pred);
    free(step);
    free(mean);
    free(lf);
    free(in);
    free(ac);
    return rc;
}

/* -------------------------------------------------------------- report */

static int appendf(ds_buf *o, ds_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int appendf(ds_buf *o, ds_error *err, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return ds_errorf(err, "report: format error");
    return ds_buf_append(o, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, err);
}

/* A table cell: 4 decimals, "-" when unknown. */
static void num(char *buf, double v)
{
    if (isnan(v))
        snprintf(buf, 16, "-");
    else
        snprintf(buf, 16, "%.4f", v);
}

int ds_train_report(const ds_model *m, const ds_predictors *p, const ds_train_data *d,
                    ds_buf *out, ds_error *err)
{
    if (ds_predictors_check(p, m, err))
        return -1;
    int L = m->n_layers;
    double *r2s = NULL, *maes = NULL;
    int first = 0;
    if (d) {
        first = ds_train_holdout_first(d->n_frames);
        r2s = malloc((size_t)L * sizeof *r2s);
        maes = malloc((size_t)L * sizeof *maes);
        if (!r2s || !maes) {
            free(r2s);
            free(maes);
            return ds_errorf(err, "report: out of memory");
        }
        if (ds_train_quality(m, p, d, first, NULL, NULL, r2s, maes, err)) {
            free(r2s);
            free(maes);
            return -1;
        }
    }
    int rc = appendf(out, err, "%3s %-28s %-13s %-6s %5s %7s %7s %7s %7s %7s %7s\n", "id",
                     "layer", "op", "pred", "ch", "change", "nonzero", "R2", "MAE", "R2step",
                     "MAEstep");
    for (int i = 0; i < L && !rc; i++) {
        const ds_layer_pred *lp = &p->layers[i];
        double ch = NAN, nz = 0;
        for (int c = 0; c < lp->n_out; c++)
            nz += lp->nonzero[c] / lp->n_out;
        if (d) {
            ch = 0;
            for (int t = first; t < d->n_frames; t++)
                for (int c = 0; c < lp->n_out; c++)
                    ch += cell(d, t, i, c);
            ch /= (double)(d->n_frames - first) * lp->n_out;
        }
        char f[6][16];
        num(f[0], ch);
        num(f[1], nz);
        num(f[2], lp->r2);
        num(f[3], lp->mae);
        num(f[4], d ? r2s[i] : NAN);
        num(f[5], d ? maes[i] : NAN);
        rc = appendf(out, err, "%3d %-28.28s %-13s %-6s %5d %7s %7s %7s %7s %7s %7s\n", i,
                     m->layers[i].name, ds_op_name(m->layers[i].op), ds_pred_kind_name(lp->kind),
                     lp->n_out, f[0], f[1], f[2], f[3], f[4], f[5]);
    }
    free(r2s);
    free(maes);
    return rc;
}
