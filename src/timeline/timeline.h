/* timeline.h - merges per-service trace files (common/trace.h) into one
 * timeline of the chain, written as Chrome trace-event JSON or an SVG Gantt.
 *
 * Tracks, in chain order:
 *   m          the master's own stages (read, plan, encode)
 *   m→w0       master send start .. worker0 arrival (receive start, else
 *              decode start)
 *   w0:receive worker0's receive (the RPC handler; overlaps decode)
 *   w0         worker0's own stages (decode, execute, encode)
 *   w0→w1      worker0 send start .. worker1 arrival
 *   ...
 *   wK→m       result return: worker K send start .. the end of the master's
 *              "finish" stage (the result's arrival)
 *   latency    the master's "finish" stage: frame in flight .. result
 *   trainer, then services with other names.
 * A stage a service is not known to write ("cache" on a worker, say) gets
 * its own track "w0:cache" right after the service's track, so nothing is
 * dropped silently.  A send whose receiver left no trace is drawn as the send
 * slice alone (marked send_only).  Slices of one track that overlap in time
 * (frames pipelined in one service) go to extra lanes of that track.
 *
 * Clocks: every file's times are moved onto the master's clock.  "# clock
 * PEER OFFSET RTT" in service S's file says PEER's clock = S's clock +
 * OFFSET; the line with the smallest RTT per pair of services wins (NTP-style
 * estimates are good to RTT/2).  Offsets chain (worker1 -> worker0 ->
 * master).  A service with no path to the master shares the master's clock.
 *
 * Input is untrusted: every line is checked (length, syntax, number ranges,
 * name characters, counts) and a bad one fails with "FILE:LINE: reason".
 * Unpaired start/finish events are not fatal (a killed service leaves them):
 * they are counted and reported through the warning callback. */
#ifndef DS_TIMELINE_H
#define DS_TIMELINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

#define DS_TM_MAX_LINE 1024   /* longest accepted line, bytes */
#define DS_TM_MAX_NAME 63     /* longest service, peer or stage name */
#define DS_TM_MAX_FILES 256
#define DS_TM_MAX_STAGES 64   /* distinct stage names over all files */
#define DS_TM_MAX_LANES 8     /* per track; more overlap is drawn overlapped */

typedef struct ds_timeline ds_timeline;

/* One slice of the merged timeline; times on the master's clock, in µs. */
typedef struct ds_tm_slice {
    int track;           /* index into the tracks, chain order */
    int lane;            /* 0.. lanes of that track - 1 */
    uint64_t frame;
    const char *stage;   /* stage name, or "transfer" for links */
    const char *service; /* who wrote it (the sender for links) */
    int64_t start_us, end_us;
    int send_only;       /* link whose receiver left no arrival event */
} ds_tm_slice;

typedef struct ds_tm_track {
    char name[2 * DS_TM_MAX_NAME + 8]; /* "m", "m→w0", "w0", "w1→m", "w0:cache", ... */
    int lanes;
} ds_tm_track;

/* Receives one line per warning (unpaired events, negative transfer times,
 * files without a clock path to the master). */
typedef void (*ds_tm_warn_fn)(void *ctx, const char *msg);

ds_timeline *ds_timeline_new(ds_tm_warn_fn warn, void *ctx);
/* Parses one trace file.  A second file of the same service is an error. */
int ds_timeline_add_file(ds_timeline *tl, const char *path, ds_error *err);
/* Same from memory; label names it in messages. */
int ds_timeline_add_text(ds_timeline *tl, const char *label, const char *text, size_t len,
                         ds_error *err);
/* Aligns clocks (unless align is 0), pairs events into slices, builds the
 * tracks and lanes.  Fails when no slice results. */
int ds_timeline_build(ds_timeline *tl, int align, ds_error *err);

/* After a successful build: */
int ds_timeline_n_tracks(const ds_timeline *tl);
const ds_tm_track *ds_timeline_track(const ds_timeline *tl, int i);
size_t ds_timeline_n_slices(const ds_timeline *tl);
const ds_tm_slice *ds_timeline_slice(const ds_timeline *tl, size_t i);
/* Services read, in the order of the files; shift_us (may be NULL) gets the
 * offset added to its times to put them on the master's clock. */
int ds_timeline_n_services(const ds_timeline *tl);
const char *ds_timeline_service(const ds_timeline *tl, int i, int64_t *shift_us);
/* Offset added to SERVICE's times to put them on the master's clock; -1 if
 * no such service. */
int ds_timeline_clock_shift(const ds_timeline *tl, const char *service, int64_t *shift_us);

/* Chrome trace-event JSON (ph "X" slices, ts/dur in µs from the first
 * slice, one tid per track lane named by thread_name metadata). */
int ds_timeline_write_json(const ds_timeline *tl, FILE *f, ds_error *err);
/* Static Gantt chart: a row per track lane, a colour per frame, a time axis
 * in seconds.  Every slice is one <rect class="s">. */
int ds_timeline_write_svg(const ds_timeline *tl, FILE *f, ds_error *err);

void ds_timeline_free(ds_timeline *tl);

#endif
