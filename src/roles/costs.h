/* costs.h - a worker's per-layer costs, profiled once and kept on disk.
 *
 * Cached in <cache_dir>/costs-<model hash>-<rows>x<cols>-t<threads>-<host>-<cpu>-<binary>.txt
 * (one "seconds flops" line per layer; <cpu> is the CPUs the process may use,
 * affinity and cgroup quota, see common/cpulimit.h; <binary> identifies the
 * executable's build), so a restarted worker answers at once and a different
 * machine, size, thread count, CPU limit or build profiles anew. */
#ifndef DS_ROLES_COSTS_H
#define DS_ROLES_COSTS_H

#include "common/config.h"
#include "common/error.h"
#include "model/model.h"

typedef struct ds_layer_costs {
    int n_layers;
    double *seconds; /* per layer; [0] (the input) is 0 */
    double *flops;
    char host[256];
} ds_layer_costs;

/* m's input size must be set. Profiles cfg->worker.prof_niter runs with
 * cfg->worker.threads threads when no cached profile matches. */
int ds_layer_costs_load_or_profile(const ds_model *m, const ds_config *cfg, ds_layer_costs *c,
                                   ds_error *err);
void ds_layer_costs_free(ds_layer_costs *c);

#endif
