/* profile.h - per-layer cost of a model at its current input size.
 *
 * Runs the whole model (one job with every layer, the graph outputs
 * requested) after one warm-up run and reports, per layer, the median time
 * over the runs and the FLOPs (ds_layer_flops).  A Relu fused into its Conv
 * is timed as part of the Conv (its own time is 0).  Workers send these
 * figures to the scheduler. */
#ifndef DS_ENGINE_PROFILE_H
#define DS_ENGINE_PROFILE_H

#include "common/error.h"
#include "engine/exec.h"
#include "model/model.h"

typedef struct ds_profile {
    int n_layers;
    double *seconds; /* median per layer (layer 0, the input: 0) */
    double *flops;   /* per layer */
    double total;    /* median of the whole-run times */
    int runs;
    int threads;
} ds_profile;

/* m's input size must be set (ds_model_set_input).  runs >= 1.  The input is
 * deterministic pseudo-random data; show_progress draws a ds_progress bar. */
int ds_profile_model(const ds_model *m, ds_backend be, int threads, int runs, int show_progress,
                     ds_profile *out, ds_error *err);
void ds_profile_free(ds_profile *p);

#endif
