/* capture.h - a video source read on its own thread, as a camera delivers
 * it, so the master never waits for the decoder and a live source never
 * waits for the master.
 *
 *   ds_capture_opts o = {.path = cfg->video_path, .video = {...},
 *                        .loop = 1, .drop = DS_DROP_NONE};
 *   ds_capture *c = ds_capture_start(&o, &err);     // opens: errors now
 *   ds_captured f = {0};
 *   while ((r = ds_capture_next(c, &f, 0.1, &err)) != 0) {
 *       if (r == 2) continue;                       // nothing yet (check Ctrl-C)
 *       if (r < 0) break;                           // the source failed for good
 *       ... f.frame is u8 HWC {rows, cols, 3} ...
 *   }
 *   ds_capture_stop(c);
 *
 * What each kind of source does (config.h's ds_source_kind):
 *   - FILE: read as fast as the consumer takes frames (drop none), or
 *     released at the file's frame rate (video.fps overrides it) under drop
 *     latest, as if a camera filmed it.  At its end it starts over when
 *     loop is set (logged once: "... ended after N frames; looping
 *     (video.loop)") or ends the capture.  A frame the decoder rejects is
 *     skipped with a warning.
 *   - VIRTUAL (lavfi:GRAPH): always released at its frame rate (video.fps
 *     overrides it), like a camera; a graph with an end ends the capture.
 *   - CAMERA: frames as the device delivers them.  A camera that disappears
 *     (a read or open error) is reopened with backoff (0.5 s doubling to
 *     10 s, each attempt logged, forever until stopped); the capture goes
 *     on with the same frame size.
 *   - STREAM: as the network delivers; its end ends the capture, a read
 *     error or timeout (video.timeout) reopens it with the same backoff.
 *   Released "at a rate" means by the frames' timestamps when they have
 *   them (by count at video.fps when it is set); a source held up (by a
 *   slow decode, or by the consumer under drop none) goes on from where it
 *   is instead of bursting to catch up.  Frames the decoder loses are
 *   skipped with a warning; 25 in a row fail a file or lavfi source for
 *   good and reopen a camera or stream.
 *
 * Stopping is prompt (well under 0.2 s) whatever the source is doing: the
 * stop flag reaches FFmpeg through the ds_video's interrupt callback
 * (ds_video_opts.stop), so a blocked connect or read returns at once.
 *
 * Policies (ds_drop): NONE hands over every frame in order (the reader
 * waits when two are queued); LATEST keeps only the newest frame: one the
 * consumer has not taken when a newer one arrives is dropped and counted
 * (ds_capture_skipped).
 *
 * Buffers are reused: ds_capture_next swaps the caller's tensor with the
 * queued one, so a frame is never copied and nothing is allocated per frame
 * once the first frames went through. */
#ifndef DS_VIDEO_CAPTURE_H
#define DS_VIDEO_CAPTURE_H

#include <stdint.h>

#include "common/config.h"
#include "video/video.h"

typedef struct ds_capture ds_capture;

typedef struct ds_capture_opts {
    const char *path;    /* video_path */
    ds_video_opts video; /* frame size and the camera's or stream's options */
    int loop;            /* a file starts over at its end */
    ds_drop drop;
} ds_capture_opts;

/* One frame as the consumer receives it. */
typedef struct ds_captured {
    ds_tensor frame;    /* u8 HWC {rows, cols, 3}; reused from call to call */
    int64_t index;      /* frames the source delivered before this one (counting
                           every loop, skipped frames included) */
    int64_t capture_us; /* wall clock (ds_wall_us) when it left the decoder */
} ds_captured;

/* Opens the source (its first frame decoded, so a bad path fails here with
 * the reason) and starts the reading thread.  NULL with a message on failure. */
ds_capture *ds_capture_start(const ds_capture_opts *o, ds_error *err);

/* The source as opened (path, kind, size, rate). */
const ds_video_info *ds_capture_info(const ds_capture *c);

/* Waits up to timeout_s for the next frame (< 0: forever; 0: does not
 * wait).  1: a frame in *out (its previous buffer goes back to the
 * capture); 2: none yet (timeout); 0: the source ended (a file without
 * loop, an ended stream; every frame before the end was handed over); -1:
 * it failed for good (err says why; a file that cannot be reread, ...).
 * One consumer thread. */
int ds_capture_next(ds_capture *c, ds_captured *out, double timeout_s, ds_error *err);

/* Frames dropped under DS_DROP_LATEST so far (thread-safe). */
uint64_t ds_capture_skipped(const ds_capture *c);

/* Stops the thread and closes the source (NULL: nothing).  Frames not
 * taken are dropped; a ds_captured keeps its own buffer. */
void ds_capture_stop(ds_capture *c);

/* Frees a ds_captured's buffer. */
void ds_captured_free(ds_captured *f);

#endif
