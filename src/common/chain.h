/* chain.h - the longest chain of workers: sizes the configuration's
 * per-worker arrays and the plans' cut points alike (config.h, sched/plan.h),
 * so it lives below both. */
#ifndef DS_CHAIN_H
#define DS_CHAIN_H

#define DS_MAX_WORKERS 16

#endif
