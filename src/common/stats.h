/* stats.h - latency statistics in fixed memory, for runs without end.
 *
 * A ds_hist counts values in logarithmic buckets 1% wide from 1 us to
 * about 10^5 s (values below 1 us count in the first bucket, above in the
 * last), and keeps the exact count, sum, min and max.  A quantile is the
 * middle of its bucket clamped to [min, max], so it is within 1% of the
 * exact quantile; the mean, min and max are exact.  A ds_hist is about
 * 10 kB whatever the number of values: a week of frames costs what ten do.
 * Not thread-safe: the owner locks. */
#ifndef DS_STATS_H
#define DS_STATS_H

#include <stdint.h>

#define DS_HIST_BUCKETS 2550

typedef struct ds_hist {
    uint64_t count;
    double sum, min, max;
    uint32_t bucket[DS_HIST_BUCKETS]; /* saturates at UINT32_MAX */
} ds_hist;

void ds_hist_reset(ds_hist *h);
void ds_hist_add(ds_hist *h, double v);
/* Adds every value of from into into. */
void ds_hist_merge(ds_hist *into, const ds_hist *from);
/* q in [0, 1]; 0 for an empty histogram. */
double ds_hist_quantile(const ds_hist *h, double q);
double ds_hist_mean(const ds_hist *h);

#endif
