/* stats.c - the fixed-size latency histogram (see stats.h). */
#include "stats.h"

#include <math.h>
#include <string.h>

#define LOWEST 1e-6   /* seconds: the first bucket's upper edge */
#define GROWTH 1.01   /* each bucket 1% wider than the last */

static int bucket_of(double v)
{
    if (!(v > LOWEST))
        return 0;
    double b = ceil(log(v / LOWEST) / log(GROWTH));
    return b >= DS_HIST_BUCKETS - 1 ? DS_HIST_BUCKETS - 1 : (int)b;
}

/* The middle of bucket b (geometric: the values are spread on a log scale). */
static double bucket_middle(int b)
{
    return b == 0 ? LOWEST : LOWEST * pow(GROWTH, b - 0.5);
}

void ds_hist_reset(ds_hist *h)
{
    memset(h, 0, sizeof *h);
}

void ds_hist_add(ds_hist *h, double v)
{
    if (isnan(v))
        return;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (h->count == 0 || v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
    uint32_t *c = &h->bucket[bucket_of(v)];
    if (*c < UINT32_MAX)
        (*c)++;
}

void ds_hist_merge(ds_hist *into, const ds_hist *from)
{
    if (from->count == 0)
        return;
    if (into->count == 0 || from->min < into->min)
        into->min = from->min;
    if (into->count == 0 || from->max > into->max)
        into->max = from->max;
    into->count += from->count;
    into->sum += from->sum;
    for (int b = 0; b < DS_HIST_BUCKETS; b++) {
        uint64_t s = (uint64_t)into->bucket[b] + from->bucket[b];
        into->bucket[b] = s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
    }
}

double ds_hist_quantile(const ds_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    /* The bucket holding the value of rank ceil(q * count) (1-based); the
     * buckets' total may fall short of count once one saturated. */
    uint64_t total = 0;
    for (int b = 0; b < DS_HIST_BUCKETS; b++)
        total += h->bucket[b];
    uint64_t rank = (uint64_t)ceil(q * (double)total), seen = 0;
    if (rank == 0)
        rank = 1;
    for (int b = 0; b < DS_HIST_BUCKETS; b++) {
        seen += h->bucket[b];
        if (seen >= rank) {
            if (b == DS_HIST_BUCKETS - 1) /* the overflow bucket has no middle */
                return h->max;
            double v = bucket_middle(b);
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double ds_hist_mean(const ds_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0;
}
