/* capture.c - a video source read on its own thread (see capture.h).
 *
 * One reading thread decodes into its own frame (work), waits until the
 * frame is due (pacing), then publishes it into a ring of slots that the
 * consumer swaps out.  Every buffer changes hands by swapping: after the
 * first frames, the work frame, the slots and the consumer's frame circulate
 * and nothing is allocated.  A stop sets a flag that the ds_video's
 * interrupt callback reads, so even a blocked network read returns at once. */
#include "capture.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/timing.h"

enum { RUNNING = 1, ENDED = 0, FAILED = -1 };

/* Reconnection backoff of cameras and streams, in seconds. */
#define BACKOFF_FIRST 0.5
#define BACKOFF_MAX 10.0
/* Frames lost in a row (decode errors) before a file or lavfi source is
 * given up, or a camera or stream is reopened. */
#define MAX_LOST_IN_A_ROW 25

struct ds_capture {
    char *path;          /* as given */
    ds_video_opts vopts; /* for reopening: the first open's frame size, our format copy */
    ds_source_kind kind;
    int loop;
    ds_drop drop;
    ds_video_info info; /* as first opened; info.path is our copy */

    atomic_int stop;
    _Atomic uint64_t skipped;
    pthread_t thread;
    int started;

    pthread_mutex_t mu;
    pthread_cond_t cond; /* a frame queued or taken, the end, a stop */
    ds_captured slot[2];
    int cap, head, count; /* a ring of cap slots (2: NONE, 1: LATEST) */
    int state;
    ds_error err; /* why it failed */

    /* The reading thread's own. */
    ds_video *v;
    ds_captured work;
    int64_t delivered;   /* frames published so far (the next index) */
    int64_t pass_frames; /* frames of the file read since it (re)started */
    int loop_logged;
    int lost;            /* frames lost in a row */
    /* Pacing: a frame of media time t is due at anchor_wall + t - anchor_t
     * (by timestamps) or anchor_wall + n / rate (by count). */
    int pace;
    double rate;        /* video.fps override; 0 = timestamps */
    double period;      /* nominal time between frames */
    double anchor_wall, anchor_t, last_due;
    int64_t anchor_n;
    int anchored;
};

static int stopping(ds_capture *c)
{
    return atomic_load(&c->stop) != 0;
}

/* Waits until the monotonic instant `until` or a stop; 1 when stopped. */
static int wait_until(ds_capture *c, double until)
{
    pthread_mutex_lock(&c->mu);
    while (!stopping(c)) {
        double left = until - ds_now();
        if (left <= 0)
            break;
        struct timespec ts = ds_deadline(left);
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return stopping(c);
}

static void finish(ds_capture *c, int state, const ds_error *err)
{
    pthread_mutex_lock(&c->mu);
    if (c->state == RUNNING) {
        c->state = state;
        if (state == FAILED && err)
            c->err = *err;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* ---- pacing ------------------------------------------------------------------ */

/* Holds the work frame back until it is due, as a camera would deliver it.
 * A source that fell behind (a slow decode, or the consumer holding it up
 * under drop none) starts a new anchor instead of bursting to catch up;
 * so does a timestamp jump (a splice, a restarted stream). */
static int pace(ds_capture *c)
{
    if (!c->pace)
        return 0;
    double now = ds_now(), t = ds_video_frame_time(c->v), due = now;
    int by_count = c->rate > 0 || isnan(t);
    if (c->anchored) {
        due = by_count ? c->anchor_wall + (double)(c->anchor_n + 1) * c->period
                       : c->anchor_wall + (t - c->anchor_t);
        int jumped = !by_count && (t < c->anchor_t || due > c->last_due + 2 * c->period + 1.0);
        if (jumped || now > due + 2 * c->period)
            c->anchored = 0;
    }
    if (!c->anchored) {
        /* The next frame one period after the last one, or now when late. */
        due = c->last_due > 0 && c->last_due + c->period > now ? c->last_due + c->period : now;
        c->anchor_wall = due;
        c->anchor_t = isnan(t) ? 0 : t;
        c->anchor_n = -1;
        c->anchored = 1;
    }
    c->anchor_n++;
    c->last_due = due;
    return due > now ? wait_until(c, due) : 0;
}

/* After a rewind: frame 0 comes one period after the last frame. */
static void pace_restart(ds_capture *c)
{
    c->anchored = 0;
}

/* ---- reading ------------------------------------------------------------------ */

/* Closes a camera or stream that failed and reopens it with backoff, until
 * it opens or the capture stops; 1 reopened, 0 stopped. */
static int reconnect(ds_capture *c, const char *why)
{
    ds_video_close(c->v);
    c->v = NULL;
    double wait = BACKOFF_FIRST;
    ds_log_warn("%s: %s lost (%s); reopening in %g s", c->info.path,
                ds_source_kind_name(c->kind), why, wait);
    for (int attempt = 1;; attempt++) {
        if (wait_until(c, ds_now() + wait))
            return 0;
        ds_error e = {{0}};
        c->v = ds_video_open_with(c->path, &c->vopts, &e);
        if (c->v) {
            ds_log_info("%s: reopened (attempt %d)", c->info.path, attempt);
            c->lost = 0;
            pace_restart(c);
            return 1;
        }
        if (stopping(c))
            return 0;
        wait = wait * 2 < BACKOFF_MAX ? wait * 2 : BACKOFF_MAX;
        ds_log_warn("reopening failed (attempt %d): %s; next attempt in %g s", attempt, e.msg,
                    wait);
    }
}

/* Decodes the next frame into c->work: 1 a frame, 0 the end (or a stop),
 * -1 failed for good (err).  Loops files, reopens cameras and streams,
 * skips frames the decoder loses. */
static int read_next(ds_capture *c, ds_error *err)
{
    for (;;) {
        ds_error e = {{0}};
        int r = ds_video_read(c->v, &c->work.frame, &e);
        if (r == 1) {
            c->lost = 0;
            c->pass_frames++;
            return 1;
        }
        if (stopping(c))
            return 0;
        int live = c->kind == DS_SOURCE_CAMERA || c->kind == DS_SOURCE_STREAM;
        if (r == 0 && c->kind == DS_SOURCE_FILE && c->loop) {
            if (c->pass_frames == 0)
                return ds_errorf(err, "%s: no frame decoded in a whole pass; cannot loop it",
                                 c->info.path);
            if (!c->loop_logged)
                ds_log_info("%s: ended after %" PRId64 " frames; looping (video.loop)",
                            c->info.path, c->pass_frames);
            c->loop_logged = 1;
            c->pass_frames = 0;
            if (ds_video_rewind(c->v, err))
                return -1;
            pace_restart(c);
            continue;
        }
        /* A camera never ends: end of file from it means it went away. */
        if (r == 0 && c->kind != DS_SOURCE_CAMERA)
            return 0;
        int failed = r == 0 || ds_video_input_failed(c->v);
        if (failed && live) {
            if (!reconnect(c, r == 0 ? "end of file" : e.msg))
                return 0;
            continue;
        }
        if (failed) {
            *err = e;
            return -1;
        }
        /* The decoder lost a frame: skip it, unless they all fail. */
        if (++c->lost >= MAX_LOST_IN_A_ROW) {
            if (live) {
                if (!reconnect(c, "every frame fails to decode"))
                    return 0;
                continue;
            }
            return ds_errorf(err, "%s: %d frames in a row failed to decode; the last: %s",
                             c->info.path, c->lost, e.msg);
        }
        ds_log_warn("%s; skipping the frame", e.msg);
    }
}

/* Hands the work frame to the consumer's side: into a free slot, or under
 * drop latest in place of the queued frame (dropped and counted); under
 * drop none it waits for a free slot.  0, or 1 when stopped first. */
static int publish(ds_capture *c)
{
    pthread_mutex_lock(&c->mu);
    while (c->drop == DS_DROP_NONE && c->count == c->cap && !stopping(c))
        pthread_cond_wait(&c->cond, &c->mu);
    int stopped = stopping(c);
    if (!stopped) {
        c->work.index = c->delivered++;
        c->work.capture_us = ds_wall_us();
        int at;
        if (c->count < c->cap) {
            at = (c->head + c->count) % c->cap;
            c->count++;
        } else { /* drop latest: the newest queued frame is replaced */
            at = (c->head + c->count - 1) % c->cap;
            atomic_fetch_add(&c->skipped, 1);
        }
        ds_captured t = c->slot[at];
        c->slot[at] = c->work;
        c->work = t;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
    return stopped;
}

static void *capture_main(void *arg)
{
    ds_capture *c = arg;
    ds_error err = {{0}};
    int r = 0;
    while (!stopping(c) && (r = read_next(c, &err)) == 1) {
        if (pace(c) || publish(c))
            break;
    }
    if (stopping(c))
        finish(c, ENDED, NULL);
    else
        finish(c, r == 0 ? ENDED : FAILED, &err);
    return NULL;
}

/* ---- public API ---------------------------------------------------------------- */

static void capture_free(ds_capture *c)
{
    ds_video_close(c->v);
    for (int i = 0; i < 2; i++)
        ds_tensor_free(&c->slot[i].frame);
    ds_tensor_free(&c->work.frame);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    free((char *)c->info.path);
    free((char *)c->vopts.format);
    free(c->path);
    free(c);
}

ds_capture *ds_capture_start(const ds_capture_opts *o, ds_error *err)
{
    if (!o || !o->path || !*o->path) {
        ds_errorf(err, "capture: no video_path");
        return NULL;
    }
    if (o->drop != DS_DROP_NONE && o->drop != DS_DROP_LATEST) {
        ds_errorf(err, "%s: capture: unknown drop policy %d", o->path, (int)o->drop);
        return NULL;
    }
    ds_capture *c = calloc(1, sizeof *c);
    if (!c) {
        ds_errorf(err, "%s: out of memory starting the capture", o->path);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->vopts = o->video;
    c->vopts.format = NULL;
    c->vopts.stop = &c->stop;
    if (!(c->path = strdup(o->path)) ||
        (o->video.format && !(c->vopts.format = strdup(o->video.format)))) {
        ds_errorf(err, "%s: out of memory starting the capture", o->path);
        capture_free(c);
        return NULL;
    }
    c->kind = ds_source_kind_of(o->path);
    c->loop = o->loop && c->kind == DS_SOURCE_FILE;
    c->drop = o->drop;
    c->cap = c->drop == DS_DROP_NONE ? 2 : 1;
    c->state = RUNNING;
    c->work.index = -1;

    if (!(c->v = ds_video_open_with(c->path, &c->vopts, err))) {
        capture_free(c);
        return NULL;
    }
    c->info = *ds_video_get_info(c->v);
    c->info.path = NULL;
    if (!(c->info.path = strdup(ds_video_get_info(c->v)->path))) {
        ds_errorf(err, "%s: out of memory starting the capture", o->path);
        capture_free(c);
        return NULL;
    }
    /* A reopened camera or stream keeps the frame size of the first open. */
    c->vopts.rows = c->info.rows;
    c->vopts.cols = c->info.cols;

    c->pace = c->kind == DS_SOURCE_VIRTUAL || (c->kind == DS_SOURCE_FILE && c->drop == DS_DROP_LATEST);
    c->rate = c->pace && o->video.fps > 0 ? o->video.fps : 0;
    c->period = c->rate > 0 ? 1 / c->rate : c->info.fps > 0 ? 1 / c->info.fps : 1 / 25.0;

    int rc = pthread_create(&c->thread, NULL, capture_main, c);
    if (rc) {
        ds_errorf(err, "%s: cannot start the capture thread: %s", c->info.path, strerror(rc));
        capture_free(c);
        return NULL;
    }
    c->started = 1;
    ds_log_debug("%s: capturing (%s, drop %s%s%s)", c->info.path, ds_source_kind_name(c->kind),
                 c->drop == DS_DROP_NONE ? "none" : "latest", c->pace ? ", paced" : "",
                 c->loop ? ", looping" : "");
    return c;
}

const ds_video_info *ds_capture_info(const ds_capture *c)
{
    return c ? &c->info : NULL;
}

int ds_capture_next(ds_capture *c, ds_captured *out, double timeout_s, ds_error *err)
{
    if (!c || !out)
        return ds_errorf(err, "capture: next on a NULL capture or frame");
    pthread_mutex_lock(&c->mu);
    struct timespec deadline = ds_deadline(timeout_s);
    while (c->count == 0 && c->state == RUNNING && timeout_s != 0) {
        if (timeout_s < 0)
            pthread_cond_wait(&c->cond, &c->mu);
        else if (pthread_cond_timedwait(&c->cond, &c->mu, &deadline) == ETIMEDOUT)
            break;
    }
    int r;
    if (c->count > 0) {
        ds_captured t = c->slot[c->head];
        c->slot[c->head] = *out;
        *out = t;
        c->head = (c->head + 1) % c->cap;
        c->count--;
        pthread_cond_broadcast(&c->cond);
        r = 1;
    } else if (c->state == RUNNING) {
        r = 2;
    } else if (c->state == FAILED) {
        if (err)
            *err = c->err;
        r = -1;
    } else {
        r = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

uint64_t ds_capture_skipped(const ds_capture *c)
{
    return c ? atomic_load(&c->skipped) : 0;
}

void ds_capture_stop(ds_capture *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, 1);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    if (c->started)
        pthread_join(c->thread, NULL);
    capture_free(c);
}

void ds_captured_free(ds_captured *f)
{
    if (f)
        ds_tensor_free(&f->frame);
}
