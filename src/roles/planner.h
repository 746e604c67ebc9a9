/* planner.h - the master's scheduling: from the workers' layer costs, the
 * links' bandwidths and (for nsc and opt) the trainer's predictors to the
 * plan of every frame.
 *
 *   lbc  load-balanced cuts (no predictors), kept for the whole run.
 *   nsc  the original's neighbourhood search from the lbc plan: frame 0 is
 *        planned for full transfers, the following frames for predicted
 *        updates, then the plan is kept.
 *   opt  the exact optimum of the simulated pipeline (sched/cost.h) over all
 *        cut points, cache-aware: every G frames it re-plans for the recent
 *        input change and switches only when the new plan, paying a full
 *        transfer on its first frame, beats the current one over the group.
 *
 * Payload sizes come from the predictors (changed and non-zero fractions per
 * channel) through the codec's size model, with the compression of the
 * slowest link. */
#ifndef DS_ROLES_PLANNER_H
#define DS_ROLES_PLANNER_H

#include "common/config.h"
#include "model/model.h"
#include "sched/cost.h"
#include "sched/plan.h"
#include "sched/predict.h"

#define DS_REPLAN_FRAMES 10
#define DS_PLANNER_MAX_INPUT 16 /* input channels */

typedef struct ds_planner {
    const ds_config *cfg;
    const ds_model *model;
    ds_cost_model cm;
    double *costs[DS_MAX_WORKERS]; /* owned: seconds per layer per worker */
    int *allowed;                  /* cut legal after layer l */
    ds_predictors *pred;           /* NULL for lbc */
    double *full_bytes, *dif_bytes;
    float **frac;                  /* per layer, per channel */
    ds_plan lbc;
    ds_plan current;
    uint32_t plan_id;
    ds_sim_result predicted;       /* of the current plan over its horizon */
    /* Input change: per-channel fractions summed since the last
     * evaluation of the predictors (every DS_REPLAN_FRAMES frames). */
    double input_sum[DS_PLANNER_MAX_INPUT];
    int input_n;
    int have_dif;                  /* dif_bytes holds an estimate */
    /* The run's prediction, segment by segment (a segment = the frames
     * under one plan; its updates priced with the mean of the estimates
     * in force for each of its frames). */
    int seg_start;
    int seg_dif_frames;
    double *seg_full, *seg_dif_sum;
    double predicted_run;          /* seconds of the closed segments */
} ds_planner;

/* Takes ownership of costs[i] (malloc'd, n_layers each); pred may be NULL
 * for lbc (ownership taken too). */
int ds_planner_init(ds_planner *p, const ds_config *cfg, const ds_model *m, double **costs,
                    ds_predictors *pred, ds_error *err);
/* The plan for frame f, given the per-channel changed fraction of the input
 * between frame f-1 and f (NULL for frame 0). Sets *changed when the plan
 * differs from the previous frame's (the plan id then moves on). */
int ds_planner_plan(ds_planner *p, int frame, const float *input_frac, int *changed, ds_error *err);
/* Predicted seconds per frame of the whole run of n_frames frames. */
double ds_planner_predicted_per_frame(ds_planner *p, int n_frames);
/* Changed fraction per channel between two u8 NCHW frames of one shape. */
void ds_input_change(const ds_tensor *prev, const ds_tensor *cur, float *frac);
void ds_planner_free(ds_planner *p);

#endif
