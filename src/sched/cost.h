/* cost.h - the cost model the schedulers optimise: a pipeline simulation.
 *
 * A plan turns every frame into a chain of stages: link m->w0 carries the
 * input, worker 0 computes its layers, link w0->w1 carries the tensor at
 * worker 0's cut, and so on up to the last worker with work (later workers
 * see nothing; the result report is small and ignored).  A worker with an
 * empty job only forwards, so its outgoing link carries what it received.
 *
 *   transfer time = bytes / bandwidth + the link's latency
 *                   (link 0 also: the master's own time on the frame)
 *   compute time  = sum of the worker's layer times
 *                   (+ its cold start on a frame that travels in full)
 *
 * Each stage serves frames in order, one at a time; a frame enters link 0
 * when the previous frame has left it and, with a window of pd_num frames in
 * flight, when frame f - pd_num has finished.  The simulation over n frames
 * gives the makespan (time per frame = makespan / n) and mean latency.
 * The first frame after a plan change travels in full (the receivers hold
 * nothing yet): its transfers use full_bytes, the others dif_bytes, and the
 * workers pay their cold start on it (buffers and kernels set up for a new
 * job, full tensors decoded), which the planner measures; 0 until then. */
#ifndef DS_SCHED_COST_H
#define DS_SCHED_COST_H

#include "sched/plan.h"

typedef struct ds_cost_model {
    int n_layers;
    int n_workers;
    const double *compute[DS_MAX_WORKERS]; /* seconds per layer, per worker */
    double bandwidth[DS_MAX_WORKERS];      /* bytes/s into worker i (m->w0, w0->w1, ...);
                                              <= 0: free */
    double hop_latency[DS_MAX_WORKERS];    /* seconds per transfer on link i (RPC, encode,
                                              decode) */
    int pd_num;                            /* frames in flight; 0 = unlimited */
    double source;                         /* the master's seconds per frame before it
                                              sends (read, input change, encode) */
    double cold[DS_MAX_WORKERS];           /* worker i's extra seconds on a full frame */
} ds_cost_model;

typedef struct ds_sim_result {
    double makespan;      /* seconds until the last frame finishes */
    double per_frame;     /* makespan / frames */
    double mean_latency;
    double stage_busy[2 * DS_MAX_WORKERS]; /* link i at 2i, worker i at 2i+1 */
} ds_sim_result;

/* Simulates n_frames frames (>= 1) under plan p. full_bytes/dif_bytes[l]:
 * payload bytes of layer l's output when the receiver holds nothing / holds
 * the previous frame's copy (dif_bytes NULL = itg: always full). first_full:
 * frame 0 of the run is the first under this plan. */
void ds_cost_simulate(const ds_cost_model *cm, const ds_plan *p, const double *full_bytes,
                      const double *dif_bytes, int n_frames, int first_full, ds_sim_result *out);

/* The scheduler's search space: allowed[l] says whether a cut after layer l
 * is legal (articulation layers; layer 0 and the last layer always are). */

/* Exhaustive optimum over every plan of allowed cuts (ties: the plan found
 * first, which puts work on earlier workers). Returns the number of plans
 * evaluated, -1 with err when the space is larger than max_plans. */
long ds_sched_optimal(const ds_cost_model *cm, const int *allowed, const double *full_bytes,
                      const double *dif_bytes, int n_frames, int first_full, long max_plans,
                      ds_plan *best, ds_sim_result *best_result, ds_error *err);

/* The original's neighbourhood search: from start, the two workers next to
 * the link with the largest total transfer time re-split their layers at
 * every allowed cut (the left one keeps at least one layer); the best split
 * is taken, and the search repeats while the simulated time improves. */
void ds_sched_nsc(const ds_cost_model *cm, const int *allowed, const double *full_bytes,
                  const double *dif_bytes, int n_frames, int first_full, const ds_plan *start,
                  ds_plan *best, ds_sim_result *best_result);

#endif
