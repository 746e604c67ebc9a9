/* plan.h - how a model is split over the chain of workers.
 *
 * A plan gives each worker a contiguous range of layer ids: worker i runs
 * the layers (cut[i-1], cut[i]] with cut[-1] = 0 (layer 0 is the input, which
 * the master supplies), so cut[] is non-decreasing and cut[N-1] is the last
 * layer.  A worker whose range is empty hands its inputs through.  For a DAG
 * model every cut must be an articulation layer (everything later depends on
 * earlier layers only through it), so exactly one tensor crosses each cut. */
#ifndef DS_PLAN_H
#define DS_PLAN_H

#include "common/chain.h"
#include "common/error.h"
#include "model/model.h"

typedef struct ds_plan {
    int n_workers;
    int cut[DS_MAX_WORKERS];
} ds_plan;

/* One worker's share of a frame: the layers it executes, in order, the
 * layers it receives and the layers whose outputs it hands on. */
typedef struct ds_plan_job {
    int n_exec;
    int *exec_ids;
    int n_in;
    int *in_ids;
    int n_out;
    int *out_ids;
} ds_plan_job;

typedef struct ds_plan_jobs {
    int n_workers;
    int last_active;  /* the last worker with work: it reports the result */
    ds_plan_job job[DS_MAX_WORKERS];
} ds_plan_jobs;

/* Derives every worker's job after checking the plan against the model:
 * cuts in range, non-decreasing, ending at the last layer, each an
 * articulation layer. The last active worker's outputs are the
 * model's outputs; workers after it get nothing. */
int ds_plan_jobs_make(const ds_model *m, const ds_plan *p, ds_plan_jobs *out, ds_error *err);
void ds_plan_jobs_free(ds_plan_jobs *j);
/* "[0..5] [6..8]"-style text into buf, for logs. */
char *ds_plan_str(const ds_plan *p, char *buf, size_t len);

/* Load-balanced plan (the original's lbc): worker i's share of the total
 * cost matches its share of the capabilities. Walking the workers in
 * order, each cut goes after the allowed layer whose cumulative cost is
 * nearest to the cumulative target. costs[l] is layer l's cost (costs[0],
 * the input, is ignored); allowed[l] says whether a cut after layer l is
 * legal (NULL = every layer). */
int ds_plan_lbc(int n_layers, const double *costs, const int *allowed, int n_workers,
                const double *capability, ds_plan *out, ds_error *err);
/* Layers per worker of a plan (the original's representation). */
void ds_plan_counts(const ds_plan *p, int *counts);

#endif
