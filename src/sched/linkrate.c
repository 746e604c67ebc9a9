#include "linkrate.h"

#include <math.h>
#include <string.h>

/* Sizes spread less than this (standard deviation over mean) cannot tell a
 * rate from a latency. */
#define MIN_SPREAD 0.2

void ds_linkrate_init(ds_linkrate *r)
{
    memset(r, 0, sizeof *r);
    r->last_end = -INFINITY;
}

void ds_linkrate_add(ds_linkrate *r, double bytes, double ready, double end)
{
    if (!(bytes > 0) || !(end >= ready))
        return;
    /* Queued behind the previous transfer: it starts when that one ended. */
    double start = r->last_end > ready && r->last_end <= end ? r->last_end : ready;
    double seconds = end - start;
    r->last_end = fmax(r->last_end, end);
    double keep = 1.0 - DS_LINKRATE_DECAY;
    r->w = r->w * keep + 1;
    r->sx = r->sx * keep + bytes;
    r->sy = r->sy * keep + seconds;
    r->sxx = r->sxx * keep + bytes * bytes;
    r->sxy = r->sxy * keep + bytes * seconds;
    if (r->n == 0 || bytes < r->min_bytes)
        r->min_bytes = bytes;
    if (r->n == 0 || bytes > r->max_bytes)
        r->max_bytes = bytes;
    if (r->n == 0 || seconds < r->min_seconds)
        r->min_seconds = seconds;
    r->n++;
}

int ds_linkrate_get(const ds_linkrate *r, double default_latency, double *bytes_per_s, double *latency)
{
    if (r->n < DS_LINKRATE_MIN)
        return 0;
    double mx = r->sx / r->w, my = r->sy / r->w;
    double var = r->sxx / r->w - mx * mx, cov = r->sxy / r->w - mx * my;
    if (var > MIN_SPREAD * MIN_SPREAD * mx * mx && cov > 0) {
        double slope = cov / var, icpt = my - slope * mx;
        if (icpt >= 0 && icpt <= r->min_seconds && 1 / slope <= DS_LINKRATE_MAX) {
            *bytes_per_s = 1 / slope;
            *latency = icpt;
            return 1;
        }
    }
    double lat = fmin(default_latency > 0 ? default_latency : 0, r->min_seconds);
    double rest = my - lat;
    *latency = lat;
    *bytes_per_s = rest > mx / DS_LINKRATE_MAX ? mx / rest : DS_LINKRATE_MAX;
    return 1;
}
