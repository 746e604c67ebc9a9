/* profile.c - per-layer medians over repeated whole-model runs. */
#include "profile.h"

#include <stdlib.h>
#include <string.h>

#include "common/progress.h"
#include "common/timing.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void ds_profile_free(ds_profile *p)
{
    free(p->seconds);
    free(p->flops);
    memset(p, 0, sizeof *p);
}

int ds_profile_model(const ds_model *m, ds_backend be, int threads, int runs, int show_progress,
                     ds_profile *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    if (!m || m->n_layers < 2)
        return ds_errorf(err, "profile: model has no layers to run");
    if (runs < 1 || runs > 100000)
        return ds_errorf(err, "profile: run count %d out of range 1..100000", runs);
    const int n = m->n_layers;
    int rc = -1;
    int *ids = malloc((size_t)n * sizeof *ids);
    double *samples = malloc((size_t)n * (size_t)runs * sizeof *samples);
    double *col = malloc((size_t)(runs > n ? runs : n) * sizeof *col);
    double *acc = calloc((size_t)n, sizeof *acc);
    ds_tensor *outs = calloc((size_t)(m->n_outputs > 0 ? m->n_outputs : 1), sizeof *outs);
    ds_tensor x = {0};
    ds_executor *ex = NULL;
    out->seconds = calloc((size_t)n, sizeof *out->seconds);
    out->flops = calloc((size_t)n, sizeof *out->flops);
    if (!ids || !samples || !col || !acc || !outs || !out->seconds || !out->flops) {
        ds_errorf(err, "profile: out of memory");
        goto done;
    }
    out->n_layers = n;
    out->runs = runs;
    out->threads = threads;
    for (int i = 0; i < n - 1; i++)
        ids[i] = i + 1;
    for (int i = 0; i < n; i++)
        out->flops[i] = i ? ds_layer_flops(m, i) : 0;
    if (ds_tensor_reserve(&x, &m->layers[0].out_shape, DS_F32, err))
        goto done;
    uint32_t s = 12345;
    for (int64_t i = 0; i < ds_shape_numel(&x.shape); i++) {
        s = s * 1664525u + 1013904223u;
        ds_tensor_f32(&x)[i] = (float)(s >> 8) / 16777216.0f;
    }
    if (!(ex = ds_executor_new(m, be, threads, err)))
        goto done;
    int in_id = 0;
    const ds_tensor *inp[1] = {&x};
    ds_job job = {n - 1, ids, m->n_outputs, m->outputs};
    if (ds_executor_run(ex, &job, 1, &in_id, inp, outs, err)) /* warm-up */
        goto done;
    ds_executor_set_timing(ex, acc);
    ds_progress bar;
    if (show_progress)
        ds_progress_begin(&bar, "profile", runs);
    for (int r = 0; r < runs; r++) {
        memset(acc, 0, (size_t)n * sizeof *acc);
        double t0 = ds_now();
        if (ds_executor_run(ex, &job, 1, &in_id, inp, outs, err))
            goto done;
        col[r] = ds_now() - t0;
        for (int i = 0; i < n; i++)
            samples[(size_t)i * (size_t)runs + (size_t)r] = acc[i];
        if (show_progress)
            ds_progress_step(&bar, r + 1);
    }
    if (show_progress)
        ds_progress_end(&bar);
    out->total = median(col, runs);
    for (int i = 0; i < n; i++)
        out->seconds[i] = median(samples + (size_t)i * (size_t)runs, runs);
    rc = 0;
done:
    ds_executor_free(ex);
    if (outs)
        for (int i = 0; i < m->n_outputs; i++)
            ds_tensor_free(&outs[i]);
    free(outs);
    ds_tensor_free(&x);
    free(ids);
    free(samples);
    free(col);
    free(acc);
    if (rc)
        ds_profile_free(out);
    return rc;
}
