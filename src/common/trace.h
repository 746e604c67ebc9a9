/* trace.h - per-service trace events for timelines.
 *
 * One file per service (<dir>/<service>.tc), one line per event:
 *   <wall clock µs> <frame id> <stage> start|finish
 * plus '#' lines: a header naming the service, host and pid, and clock offset
 * estimates against peers ("# clock <peer> <offset µs> <rtt µs>", where
 * peer_clock = local_clock + offset) used to align traces of several hosts.
 * Events are buffered and written in blocks, so tracing stays on by default.
 * A NULL ds_trace* is a valid, disabled trace. Thread-safe. */
#ifndef DS_TRACE_H
#define DS_TRACE_H

#include <stdint.h>

#include "error.h"

typedef struct ds_trace ds_trace;

typedef enum ds_trace_phase { DS_TRACE_START = 0, DS_TRACE_FINISH = 1 } ds_trace_phase;

/* Opens <dir>/<service>.tc for writing (creating dir). dir NULL or "" gives
 * a NULL trace (disabled) and returns 0. */
int ds_trace_open(const char *dir, const char *service, ds_trace **out, ds_error *err);
void ds_trace_event(ds_trace *t, uint64_t frame_id, const char *stage, ds_trace_phase phase);
/* Same, with an explicit timestamp (µs since the epoch). */
void ds_trace_event_at(ds_trace *t, int64_t wall_us, uint64_t frame_id, const char *stage,
                       ds_trace_phase phase);
void ds_trace_clock(ds_trace *t, const char *peer, int64_t offset_us, int64_t rtt_us);
void ds_trace_flush(ds_trace *t);
/* Flushes and closes; NULL is fine. */
void ds_trace_close(ds_trace *t);

#endif
