#include "plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int plan_validate(const ds_model *m, const ds_plan *p, ds_error *err)
{
    if (p->n_workers < 1 || p->n_workers > DS_MAX_WORKERS)
        return ds_errorf(err, "plan: %d workers (expected 1..%d)", p->n_workers, DS_MAX_WORKERS);
    int last = m->n_layers - 1;
    int *art = malloc(sizeof(int) * (size_t)m->n_layers);
    char *is_art = calloc((size_t)m->n_layers, 1);
    if (!art || !is_art) {
        free(art);
        free(is_art);
        return ds_errorf(err, "out of memory");
    }
    int n_art = ds_model_articulations(m, art);
    for (int i = 0; i < n_art; i++)
        is_art[art[i]] = 1;
    free(art);
    int rc = 0, prev = 0;
    for (int i = 0; i < p->n_workers && !rc; i++) {
        int c = p->cut[i];
        if (c < prev || c > last)
            rc = ds_errorf(err, "plan: worker %d ends at layer %d (expected %d..%d)", i, c, prev, last);
        else if (!is_art[c])
            rc = ds_errorf(err, "plan: worker %d ends at layer %d (%s), which is not a cut point of "
                           "the DAG (not an articulation layer)", i, c, m->layers[c].name);
        prev = c;
    }
    if (!rc && p->cut[p->n_workers - 1] != last)
        rc = ds_errorf(err, "plan: the last worker ends at layer %d, expected the last layer %d",
                       p->cut[p->n_workers - 1], last);
    free(is_art);
    return rc;
}

static int *id_range(int from, int to) /* [from, to] */
{
    int n = to - from + 1;
    int *ids = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; ids && i < n; i++)
        ids[i] = from + i;
    return ids;
}

static int *id_copy(const int *src, int n)
{
    int *ids = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (ids && n)
        memcpy(ids, src, sizeof(int) * (size_t)n);
    return ids;
}

int ds_plan_jobs_make(const ds_model *m, const ds_plan *p, ds_plan_jobs *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    if (plan_validate(m, p, err))
        return -1;
    out->n_workers = p->n_workers;
    int prev = 0;
    out->last_active = 0;
    for (int i = 0; i < p->n_workers; i++)
        if (p->cut[i] > (i ? p->cut[i - 1] : 0))
            out->last_active = i;
    for (int i = 0; i <= out->last_active; i++) {
        ds_plan_job *j = &out->job[i];
        int c = p->cut[i];
        /* Articulation cuts: exactly one tensor, the cut layer's, crosses. */
        j->n_in = 1;
        j->in_ids = id_copy(&prev, 1);
        j->n_exec = c - prev;
        j->exec_ids = id_range(prev + 1, c);
        if (i == out->last_active) {
            j->n_out = m->n_outputs;
            j->out_ids = id_copy(m->outputs, m->n_outputs);
        } else {
            j->n_out = 1;
            j->out_ids = id_copy(&c, 1);
        }
        if (!j->in_ids || !j->exec_ids || !j->out_ids) {
            ds_plan_jobs_free(out);
            return ds_errorf(err, "out of memory");
        }
        prev = c;
    }
    return 0;
}

void ds_plan_jobs_free(ds_plan_jobs *j)
{
    for (int i = 0; i < DS_MAX_WORKERS; i++) {
        free(j->job[i].exec_ids);
        free(j->job[i].in_ids);
        free(j->job[i].out_ids);
    }
    memset(j, 0, sizeof *j);
}

char *ds_plan_str(const ds_plan *p, char *buf, size_t len)
{
    size_t used = 0;
    int prev = 0;
    buf[0] = '\0';
    for (int i = 0; i < p->n_workers && used < len; i++) {
        int n = p->cut[i] > prev
                    ? snprintf(buf + used, len - used, "%sw%d:%d..%d", i ? " " : "", i, prev + 1, p->cut[i])
                    : snprintf(buf + used, len - used, "%sw%d:-", i ? " " : "", i);
        if (n < 0)
            break;
        used += (size_t)n;
        prev = p->cut[i];
    }
    return buf;
}

void ds_plan_counts(const ds_plan *p, int *counts)
{
    int prev = 0;
    for (int i = 0; i < p->n_workers; i++) {
        counts[i] = p->cut[i] - prev;
        prev = p->cut[i];
    }
}

int ds_plan_lbc(int n_layers, const double *costs, const int *allowed, int n_workers,
                const double *capability, ds_plan *out, ds_error *err)
{
    if (n_workers < 1 || n_workers > DS_MAX_WORKERS)
        return ds_errorf(err, "lbc: %d workers (expected 1..%d)", n_workers, DS_MAX_WORKERS);
    if (n_layers < 2)
        return ds_errorf(err, "lbc: the model has no layer to run");
    double total_cap = 0, total_cost = 0;
    for (int i = 0; i < n_workers; i++) {
        if (!(capability[i] >= 0) || !isfinite(capability[i]))
            return ds_errorf(err, "lbc: capability of worker %d is %g (expected >= 0)", i, capability[i]);
        total_cap += capability[i];
    }
    if (total_cap <= 0)
        return ds_errorf(err, "lbc: every worker has zero capability");
    for (int l = 1; l < n_layers; l++) {
        if (!(costs[l] >= 0) || !isfinite(costs[l]))
            return ds_errorf(err, "lbc: cost of layer %d is %g (expected >= 0)", l, costs[l]);
        total_cost += costs[l];
    }
    out->n_workers = n_workers;
    double target = 0, cum = 0;
    int cut = 0;
    for (int i = 0; i < n_workers - 1; i++) {
        target += total_cost * capability[i] / total_cap;
        /* Advance to the allowed cut whose cumulative cost is nearest the
         * target; ties keep the earlier cut. */
        double best_gap = fabs(cum - target);
        int best = cut;
        double c = cum;
        for (int l = cut + 1; l < n_layers; l++) {
            c += costs[l];
            if (allowed && !allowed[l])
                continue;
            double gap = fabs(c - target);
            if (gap < best_gap) {
                best_gap = gap;
                best = l;
            }
            if (c > target)
                break;
        }
        for (int l = cut + 1; l <= best; l++)
            cum += costs[l];
        cut = best;
        out->cut[i] = cut;
    }
    out->cut[n_workers - 1] = n_layers - 1;
    return 0;
}
