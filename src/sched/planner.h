/* planner.h - the master's scheduling: from the workers' layer costs, the
 * links' bandwidths and (for nsc and opt) the trainer's predictors to the
 * plan of every frame.
 *
 * Each scheduler is one descriptor (ds_sched_policy, indexed by the
 * configuration's ds_scheduler): how it plans frame 0, whose tensors travel
 * in full, and what it proposes at each evaluation of the predictors (frame
 * 1, then every DS_REPLAN_FRAMES frames, for the mean input change since the
 * previous one).  The planner switches to a proposal only when it pays: the
 * new plan, its first frame in full, must beat keeping the current one over
 * the proposal's horizon.
 *
 *   lbc  load-balanced cuts (no predictors), kept for the whole run.
 *   nsc  the original's neighbourhood search from the lbc plan: frame 0 is
 *        planned for full transfers, frame 1 for predicted updates over the
 *        rest of the run, then the plan is kept.
 *   opt  the exact optimum of the simulated pipeline (sched/cost.h) over all
 *        cut points, cache-aware: at every evaluation it re-plans for the
 *        next DS_REPLAN_FRAMES frames.
 *
 * Without predictors every scheduler plans as lbc.  Payload sizes come from
 * the predictors (changed and non-zero fractions per channel) through the
 * codec's size model, with the compression the caller names (the master's
 * slowest link's).
 *
 * What the run measures refines the prices (ds_planner_observe_*, from the
 * master's sends and the workers' reports): each link's rate and latency
 * (sched/linkrate.h; used for the links master.bandwidth does not give, and
 * logged next to the ones it does), each worker's time per frame against its
 * profile (a profile taken while other processes ran is off by their load:
 * its layer costs are scaled by measured / profiled, and the first frame of
 * a plan gives its cold start), the master's own time per frame, and the
 * bytes each link carried against the size model's for the layer crossing
 * it (the model's compression constants come from synthetic maps: a video's
 * exact u8 deltas compress to about 0.6 of them).  Until a link that the
 * plan uses is configured or measured, there is no run prediction, and the
 * plans price it at 10 MB/s.  A new planner (a new epoch) may inherit what
 * the previous one measured. */
#ifndef DS_SCHED_PLANNER_H
#define DS_SCHED_PLANNER_H

#include "codec/codec.h"
#include "common/config.h"
#include "model/model.h"
#include "sched/cost.h"
#include "sched/linkrate.h"
#include "sched/plan.h"
#include "sched/predict.h"

#define DS_REPLAN_FRAMES 10
#define DS_PLANNER_MAX_INPUT 16 /* input channels */

struct ds_planner;

/* A closed segment of the run kept aside until its links are measured. */
#define DS_PLANNER_PENDING 8
typedef struct ds_planner_pending {
    ds_plan plan;
    int frames;
    double *full, *dif; /* owned: the size model's bytes per layer */
} ds_planner_pending;

typedef struct ds_sched_policy {
    ds_scheduler id;  /* its name and need of predictors: common/config.h */
    int horizon;      /* frames a proposal is judged over; 0 = the rest of the run */
    /* Frame 0's plan and its prediction over the frames it is priced for;
     * *why names it in the log. */
    int (*first)(const struct ds_planner *p, int frames_left, ds_plan *plan, ds_sim_result *r,
                 const char **why, ds_error *err);
    /* At an evaluation of the predictors: 1 with a proposal for the next
     * horizon frames (priced with its first frame in full), 0 to keep the
     * plan, -1 on error. */
    int (*replan)(const struct ds_planner *p, int frame, int horizon, ds_plan *cand, ds_sim_result *r,
                  ds_error *err);
} ds_sched_policy;

/* The descriptor of scheduler s; NULL when s is none. */
const ds_sched_policy *ds_sched_policy_of(ds_scheduler s);

typedef struct ds_planner {
    const ds_config *cfg;
    const ds_model *model;
    const ds_sched_policy *policy; /* the configured one; lbc without predictors */
    ds_compress compress;          /* payloads are priced with this compression */
    ds_cost_model cm;
    double *costs[DS_MAX_WORKERS]; /* owned: seconds per layer per worker */
    int *allowed;                  /* cut legal after layer l */
    ds_predictors *pred;           /* NULL for lbc */
    /* Payload bytes per layer as the schedulers price them: the size
     * model's (full_raw, dif_raw: without an estimate of the updates, the
     * full sizes) times the measured ratio of the layer, if any. */
    double *full_bytes, *dif_bytes;
    double *full_raw, *dif_raw;
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
    int run_unknown;               /* a closed segment could not be priced */
    ds_planner_pending pending[DS_PLANNER_PENDING]; /* closed before their links
                                                       were measured */
    int n_pending;
    /* Measurements (ds_planner_observe_*), per link and worker of the chain: */
    double *profiled[DS_MAX_WORKERS]; /* owned: the profiles; costs = profiled x scale */
    double busy[DS_MAX_WORKERS], busy_profiled[DS_MAX_WORKERS]; /* decayed sums */
    double cold_seconds[DS_MAX_WORKERS]; /* the last plan's first frame (< 0: none) */
    ds_linkrate link[DS_MAX_WORKERS];
    int link_known[DS_MAX_WORKERS]; /* configured, or measured */
    double link_rate[DS_MAX_WORKERS], link_latency[DS_MAX_WORKERS]; /* measured */
    double source_sum, source_w;  /* the master's seconds per frame, decayed */
    double *ratio_act[2], *ratio_model[2]; /* per layer, [0] updates, [1] full:
                                              decayed bytes measured / modelled */
    /* Set by the caller after ds_planner_init: */
    int quiet;                     /* no log lines (a candidate only compared) */
    const int *ids;                /* the planned workers' ids in the whole chain
                                      (ascending; NULL: 0..n-1), for log lines */
} ds_planner;

/* Takes ownership of costs[i] (malloc'd, n_layers each); pred may be NULL
 * for lbc (ownership taken too); on failure all of it is freed. compress:
 * what payloads are priced with. */
int ds_planner_init(ds_planner *p, const ds_config *cfg, const ds_model *m, double **costs,
                    ds_predictors *pred, ds_compress compress, ds_error *err);
/* The plan for frame f, given the per-channel changed fraction of the input
 * between frame f-1 and f (NULL for frame 0). Sets *changed when the plan
 * differs from the previous frame's (the plan id then moves on). */
int ds_planner_plan(ds_planner *p, int frame, const float *input_frac, int *changed, ds_error *err);
/* Predicted seconds per frame of the whole run of n_frames frames; NaN when
 * a link the run's plans use was neither configured nor measured. */
double ds_planner_predicted_per_frame(ds_planner *p, int n_frames);

/* Measurements of the run, by the planner's frame numbers and the chain's
 * link and worker indices (link k leads into worker k; link 0 is the
 * master's).  Frames planned under an earlier plan than the current one
 * are ignored where the plan matters (bytes, compute). */
/* One transfer on link k of frame `frame`: its bytes, when it could start
 * and when it ended (seconds, one clock per link). */
void ds_planner_observe_link(ds_planner *p, int frame, int k, double bytes, double ready, double end);
/* Worker k's time on frame `frame` (decode, execute, encode: seconds). */
void ds_planner_observe_compute(ds_planner *p, int frame, int k, double seconds);
/* The master's own time on a frame before sending it (read, change, plan,
 * encode). */
void ds_planner_observe_source(ds_planner *p, double seconds);
/* Carries into p (just made, not yet planned) what an earlier planner
 * measured, for another epoch and maybe another chain: each worker's time
 * against its profile, the links between the same two workers (or from the
 * master into the same first worker), the master's own time and the
 * payload sizes.  ids, from_ids: the workers' ids in the whole chain. */
void ds_planner_inherit(ds_planner *p, const int *ids, const ds_planner *from, const int *from_ids);
/* What was measured, for the summary: "m->w0 3.9 MB/s (configured 4),
 * w0 0.48x its profile, ..." into buf ("" before any measurement). */
char *ds_planner_measured_str(const ds_planner *p, char *buf, size_t len);
/* Changed fraction per channel between two u8 NCHW frames of one shape. */
void ds_input_change(const ds_tensor *prev, const ds_tensor *cur, float *frac);
void ds_planner_free(ds_planner *p);

#endif
