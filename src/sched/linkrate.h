/* linkrate.h - a link's rate and per-transfer latency, measured from the
 * run's own transfers (for links whose bandwidth the configuration does not
 * give, and to check the ones it does).
 *
 * Each observation is one transfer: its payload bytes, when it could start
 * (the sender had it ready) and when it ended, on one clock.  A link carries
 * one transfer at a time, so a transfer ready while the previous one was
 * still on the link starts when that one ended; its duration is counted from
 * there, not from when it was queued.
 *
 * The estimate is a least-squares line, duration = bytes / rate + latency,
 * over the transfers seen, older ones weighing less (each new transfer
 * scales the earlier weights by 1 - DS_LINKRATE_DECAY, so a link that slows
 * down mid-run is followed within some tens of transfers).  A line needs
 * transfers of different sizes (a first frame in full, then updates); when
 * their sizes are too alike, or the fitted line is implausible (rate or
 * latency below zero, latency above the shortest transfer), the latency
 * is taken as the smaller of the caller's default and the shortest transfer
 * and the rate from the bytes over the remaining time.  A link whose
 * transfers take no measurable time gets the rate DS_LINKRATE_MAX. */
#ifndef DS_SCHED_LINKRATE_H
#define DS_SCHED_LINKRATE_H

#define DS_LINKRATE_MIN 3          /* transfers before an estimate */
#define DS_LINKRATE_DECAY (1.0 / 64)
#define DS_LINKRATE_MAX 1e11       /* bytes/s: faster than anything measurable here */

typedef struct ds_linkrate {
    int n;                  /* transfers seen */
    double w;               /* sum of weights */
    double sx, sy, sxx, sxy; /* weighted sums: x = bytes, y = seconds */
    double min_bytes, max_bytes, min_seconds;
    double last_end;        /* when the previous transfer ended */
} ds_linkrate;

void ds_linkrate_init(ds_linkrate *r);
/* One transfer of `bytes` ready at `ready`, ended at `end` (seconds).  A
 * transfer with end < ready or without bytes is ignored. */
void ds_linkrate_add(ds_linkrate *r, double bytes, double ready, double end);
/* 1 with the estimate in *bytes_per_s and *latency (seconds per transfer)
 * once DS_LINKRATE_MIN transfers were seen, else 0 (outputs untouched).
 * default_latency: the latency assumed when the transfers cannot tell it. */
int ds_linkrate_get(const ds_linkrate *r, double default_latency, double *bytes_per_s, double *latency);

#endif
