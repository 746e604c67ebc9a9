/* master.h - the master's state, shared by its two halves (internal to
 * roles):
 *   master.c        frames, epochs, plans, sending, checking, the summary;
 *   master_watch.c  the workers: connecting, result streams, heartbeats,
 *                   probing lost workers and taking them back; signals.
 *   master_subscribe.c  the results subscription server (output.subscribe).
 * Locking: `lock` guards the frame records, the counters, the statistics,
 * the workers' up / lost flags and the recovery request; `check_lock`
 * (taken before `lock`) the local check; `output_lock` the output sinks.
 * The main thread alone owns the capture, the planner, the segment and the
 * send cache; it writes `epoch` under `lock`.  Each worker's result cache is
 * its reader thread's. */
#ifndef DS_ROLES_MASTER_H
#define DS_ROLES_MASTER_H

#include <pthread.h>
#include <stdint.h>

#include "common/config.h"
#include "common/stats.h"
#include "common/trace.h"
#include "dif/dif.h"
#include "model/model.h"
#include "rpc/rpc.h"
#include "sched/plan.h"
#include "output/output.h"
#include "sched/planner.h"
#include "video/capture.h"

#define DS_MASTER_MAX_LINKS (2 * DS_MAX_WORKERS + 1)
/* Frame records kept: frames from the oldest unfinished one to the newest
 * sent, so at most this many in flight, whatever the run's length. */
#define DS_MASTER_WINDOW 256
#define DS_MASTER_FAILURES_SHOWN 5

enum frame_state { FRAME_UNSENT = 0, FRAME_IN_FLIGHT, FRAME_DONE, FRAME_FAILED };

typedef struct frame_rec {
    int64_t id;        /* the frame this record holds (-1: none yet) */
    enum frame_state state;
    uint32_t epoch;    /* of its last send: only a result of that epoch counts */
    int sends;         /* 1 + re-sends */
    double first_sent; /* ds_now() at the first send: latency counts from it */
    double sent;       /* ds_now() at the last send: its deadline counts from it */
    double latency;    /* seconds, when done */
    ds_tensor frame;   /* u8 NCHW, kept while in flight (re-sends, check) */
    int64_t source_index, capture_us; /* of the source's frame (ds_captured) */
    char *error;       /* why it failed (or why its last send failed) */
} frame_rec;

/* The master's side of one worker. */
typedef struct worker_link {
    ds_rpc_channel *ch;
    ds_rpc_reader *reader; /* its result stream, while open */
    int refusal;           /* status of the last failed take-back (logged once) */
    pthread_t reader_th;
    int reader_started;
    int up;           /* stream open and costs known: may be planned on */
    int lost;         /* not up: the watch thread probes it */
    double *costs;    /* seconds per layer, from its last Costs answer */
    double heartbeat; /* seconds a heartbeat may take */
    int64_t clock_offset_us; /* its wall clock = the master's + this (lock) */
    /* Its final outputs as last received (dif: the reference of the next
     * update) and the frame id + 1 they belong to; its reader thread's. */
    ds_dif_cache results;
    uint64_t results_next;
} worker_link;

/* What a result report measured for the planner, queued by the reader
 * thread (under lock) for the main thread, which owns the planner: worker
 * k's time on the frame (link 0), or a transfer into worker k (link 1). */
typedef struct plan_obs {
    int64_t frame;
    uint32_t epoch;
    int k, link;
    double bytes, start, end; /* seconds on the master's clock */
} plan_obs;
#define DS_MASTER_OBS 64 /* queued at most; older ones are dropped */

typedef struct link_total {
    char name[24];
    uint64_t bytes;
    uint64_t bytes_shown; /* at the last status line */
} link_total;

typedef struct stage_stats {
    char name[64]; /* "w0 execute" */
    ds_hist *seconds;
} stage_stats;

typedef struct master {
    const ds_config *cfg;
    ds_model model;
    ds_trace *trace;
    int n_workers;
    uint64_t session_id;
    worker_link link[DS_MAX_WORKERS];
    ds_rpc_security *sec; /* for every channel */

    pthread_mutex_t lock;
    pthread_cond_t changed;
    frame_rec *frames;      /* [DS_MASTER_WINDOW]: frame f in frames[f % window] */
    int64_t n_frames;       /* master.ifr_num; 0: until the source ends or a signal */
    int64_t next_frame;     /* frames read so far */
    int64_t low;            /* frames before it are done or failed */
    int64_t finished, failed;
    int in_flight, resent, local;
    uint64_t skipped;       /* by the capture (drop latest), once the run started */
    uint64_t skipped_before; /* ... and before */
    char *failures[DS_MASTER_FAILURES_SHOWN]; /* the first failed frames' reasons */
    int64_t failure_ids[DS_MASTER_FAILURES_SHOWN];
    int n_failures;
    int losses, taken_back, epochs;
    uint32_t epoch;
    int epoch_warm;         /* a frame finished in this epoch */
    double latency_seen;    /* running mean of the results' time from their last send */
    double last_result;     /* ds_now() when the last frame finished */
    int recover;            /* the main thread should recover ... */
    int recover_broken;     /* ... and the current epoch's caches are out of step */
    int interrupted;
    int draining;           /* an endless run's first signal: read no more frames */
    int closing;            /* the watch and signal threads stop */
    link_total links[DS_MASTER_MAX_LINKS];
    int n_links;
    stage_stats stages[64];
    int n_stages;
    ds_hist latency;        /* of every finished frame */
    ds_hist latency_recent; /* since the last status line */
    int64_t finished_shown; /* at the last status line */
    double last_status;     /* ds_now() of the last status line (main thread) */
    int source_ended;       /* the source has no more frames (main thread) */
    plan_obs obs[DS_MASTER_OBS]; /* for the planner, oldest first */
    int n_obs;

    double check_max_abs, check_max_rel; /* of the results that counted */
    int checked;

    /* check: local full inference on the master; also computes frames
     * when no worker is left (master.no_workers: local). */
    pthread_mutex_t check_lock;
    ds_executor *check_exec;
    ds_tensor check_in;
    ds_tensor *check_out;

    /* Where the results go (output_lock). */
    pthread_mutex_t output_lock;
    ds_output *output;
    struct ds_subscribers *subscribers;
    char **output_names;    /* the model's output layers' names */
    int output_failed;      /* a sink failed: the run stops (lock) */

    /* The main thread's: the source, the segment of workers and its plan,
     * and what the sender keeps from one frame to the next. */
    ds_capture *capture;
    ds_captured captured;
    int rows, cols;
    ds_buf pred_blob;        /* the trainer's predictors (NULL for lbc) */
    ds_config seg_cfg;       /* the configuration the planner sees: the segment's */
    int chain[DS_MAX_WORKERS]; /* the workers in use, ascending: the master sends */
    int chain_len;             /* to the first; 0: none (computing locally, or waiting) */
    uint32_t chain_ids[DS_MAX_WORKERS]; /* the same, for the frame requests */
    int64_t plan_base;       /* the first frame of the planner */
    ds_planner planner;
    int planner_ready, plan_changes;
    ds_plan full_plan;       /* the planner's plan over all workers */
    ds_plan_jobs pj;
    Deltaslice__Job job_msgs[DS_MAX_WORKERS], *jobs[DS_MAX_WORKERS];
    ds_tensor prev_frame;
    float input_frac[DS_PLANNER_MAX_INPUT];
    ds_codec_opts codec;
    ds_dif_cache cache; /* what the first worker holds of the input */
    ds_buf payload, req, resp;
    double t_start, elapsed;
    double frame_t0;         /* when the main thread began the frame it sends */
    pthread_t watch_th, signal_th;
    int watch_started, signal_started;
} master;

/* ---- master_watch.c */

/* Dials every worker and waits up to master.connect_timeout for all of
 * them; opens the result streams of those that answered (clock offsets and
 * costs first).  The others are lost, to be probed.  Fails only when
 * interrupted. */
int ds_master_connect(master *ms, ds_error *err);
/* The signal thread (first: connecting honours Ctrl-C), then the watch
 * thread (once the main thread has a plan). */
int ds_master_signals_start(master *ms, ds_error *err);
int ds_master_watch_start(master *ms, ds_error *err);
/* Stops them and every reader (idempotent). */
void ds_master_watch_stop(master *ms);
/* Marks worker w lost (when up) and asks the main thread to recover; lock
 * not held. */
void ds_master_lose(master *ms, int w, const char *why);

/* ---- master.c */

/* One message from worker w's result stream (a reader thread). */
void ds_master_report(master *ms, int w, const uint8_t *msg, size_t len);
/* 1 when worker w is on the chain in use (lock held, or the main thread). */
int ds_master_on_chain(const master *ms, int w);

/* ---- master_subscribe.c */

typedef struct ds_subscribers ds_subscribers;
/* Serves /deltaslice.Master/Results on cfg->master.listen:cfg->port_master
 * with the master's credentials (sec); logs "serving results on HOST:PORT
 * (MODE)". */
ds_subscribers *ds_subscribers_start(const ds_config *cfg, ds_rpc_security *sec, ds_error *err);
/* Hands r to every open subscription; never blocks: each subscriber has a
 * bounded queue; when full its oldest queued result is dropped and counted. */
void ds_subscribers_publish(ds_subscribers *s, const ds_result *r);
int ds_subscribers_count(ds_subscribers *s);
/* Ends every stream (OK) and stops the server; NULL: nothing. */
void ds_subscribers_stop(ds_subscribers *s);
/* The port it serves on (the one picked when port_master is 0: tests). */
int ds_subscribers_port(const ds_subscribers *s);

#endif
