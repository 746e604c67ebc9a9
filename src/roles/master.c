/* master.c - reads the video, plans the cut points, drives every frame
 * through the chain of workers and summarises what happened.
 *
 * Threads: the main thread reads, encodes and sends frames (at most pd_num
 * in flight); one reader thread per worker drains that worker's result
 * stream.  A frame finishes exactly once (a second report is a protocol
 * error) or is reported failed with its reason; frames still open when the
 * run ends are reported lost. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/timing.h"
#include "common/trace.h"
#include "dif/dif.h"
#include "model/model.h"
#include "roles.h"
#include "rpc/rpc.h"
#include "sched/plan.h"
#include "sched/planner.h"
#include "video/video.h"

#define CONNECT_TIMEOUT_S 300.0 /* workers may still be profiling */
#define IDLE_TIMEOUT_S 120.0     /* no report for this long ends the run */
#define MAX_LINKS (2 * DS_MAX_WORKERS + 1)
#define CHECK_TOLERANCE 1e-5
#define CLOCK_PROBES 5 /* per worker; the one with the shortest round trip counts */

enum frame_state { FRAME_UNSENT = 0, FRAME_IN_FLIGHT, FRAME_DONE, FRAME_FAILED };

/* Why the run is over, for the reader threads (they stop on either). */
enum run_stop {
    STOP_NONE = 0,
    STOP_DONE,   /* sending and waiting are over */
    STOP_FAILED, /* a worker is gone or nothing finished for IDLE_TIMEOUT_S:
                    frames in flight will not finish */
};

typedef struct frame_rec {
    enum frame_state state;
    double sent;       /* ds_now() at send */
    double latency;    /* seconds, when done */
    ds_tensor frame;   /* u8 NCHW, kept while in flight when checking */
    char *error;       /* when failed */
} frame_rec;

typedef struct link_total {
    char name[24];
    uint64_t bytes;
} link_total;

typedef struct stage_samples {
    char name[64]; /* "w0 execute" */
    double *values;
    int n, cap;
} stage_samples;

typedef struct master {
    const ds_config *cfg;
    ds_model model;
    ds_trace *trace;
    int n_workers;
    ds_rpc_channel *ch[DS_MAX_WORKERS];
    ds_rpc_reader *reader[DS_MAX_WORKERS];
    pthread_t reader_th[DS_MAX_WORKERS];
    int reader_started[DS_MAX_WORKERS];

    pthread_mutex_t lock;
    pthread_cond_t changed;
    frame_rec *frames;
    int n_frames;
    int in_flight, finished, failed;
    double last_report;
    enum run_stop stop;
    link_total links[MAX_LINKS];
    int n_links;
    stage_samples stages[64];
    int n_stages;

    /* check: local full inference on the master */
    pthread_mutex_t check_lock;
    ds_executor *check_exec;
    ds_tensor check_in;
    ds_tensor *check_out;
    ds_dif_cache check_cache;
    double check_max_abs, check_max_rel;
    int checked;

    /* The main thread's: the clip, the plan, and what the sender keeps from
     * one frame to the next. */
    ds_video *video;
    int rows, cols;
    ds_planner planner;
    int planner_ready, plan_changes;
    ds_plan_jobs pj;
    Deltaslice__Job job_msgs[DS_MAX_WORKERS], *jobs[DS_MAX_WORKERS];
    ds_tensor hwc, prev_frame;
    float input_frac[DS_PLANNER_MAX_INPUT];
    ds_codec_opts codec;
    ds_dif_cache cache; /* what w0 holds of the input */
    ds_buf payload, req, resp;
    double t_start, elapsed;
} master;

/* ---------------------------------------------------------- statistics */

static void add_link_bytes(master *ms, const char *name, uint64_t bytes)
{
    for (int i = 0; i < ms->n_links; i++)
        if (!strcmp(ms->links[i].name, name)) {
            ms->links[i].bytes += bytes;
            return;
        }
    if (ms->n_links < MAX_LINKS) {
        snprintf(ms->links[ms->n_links].name, sizeof ms->links[0].name, "%s", name);
        ms->links[ms->n_links++].bytes = bytes;
    }
}

static void add_stage(master *ms, const char *name, double seconds)
{
    stage_samples *s = NULL;
    for (int i = 0; i < ms->n_stages && !s; i++)
        if (!strcmp(ms->stages[i].name, name))
            s = &ms->stages[i];
    if (!s) {
        if (ms->n_stages == (int)(sizeof ms->stages / sizeof ms->stages[0]))
            return;
        s = &ms->stages[ms->n_stages++];
        snprintf(s->name, sizeof s->name, "%s", name);
    }
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        double *v = realloc(s->values, sizeof *v * (size_t)cap);
        if (!v)
            return;
        s->values = v;
        s->cap = cap;
    }
    s->values[s->n++] = seconds;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile q of sorted v[0..n). */
static double quantile(const double *v, int n, double q)
{
    if (n == 0)
        return 0;
    double pos = q * (n - 1);
    int i = (int)pos;
    double f = pos - i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

/* ------------------------------------------------------------ checking */

/* Compares the worker's final outputs with a local full run of the frame. */
static int check_frame(master *ms, frame_rec *fr, const Deltaslice__FinishReport *r, ds_error *err)
{
    const ds_model *m = &ms->model;
    if ((int)r->n_outputs != m->n_outputs)
        return ds_errorf(err, "check: %zu outputs returned, the model has %d", r->n_outputs, m->n_outputs);
    pthread_mutex_lock(&ms->check_lock);
    int rc = -1;
    ds_job full = {m->n_layers - 1, NULL, m->n_outputs, m->outputs};
    int *ids = malloc(sizeof(int) * (size_t)m->n_layers);
    if (!ids) {
        ds_errorf(err, "out of memory");
        goto out;
    }
    for (int i = 1; i < m->n_layers; i++)
        ids[i - 1] = i;
    full.exec_ids = ids;
    int in_id = 0;
    const ds_tensor *in = &ms->check_in;
    if (ds_tensor_u8_to_f32(&fr->frame, &ms->check_in, err) ||
        ds_executor_run(ms->check_exec, &full, 1, &in_id, &in, ms->check_out, err))
        goto out;
    ds_dif_cache_clear(&ms->check_cache); /* results arrive in full */
    for (size_t o = 0; o < r->n_outputs; o++) {
        int id;
        if (ds_dif_receive(&ms->check_cache, r->outputs[o].data, r->outputs[o].len, NULL, &id, err))
            goto out;
        int k = -1;
        for (int j = 0; j < m->n_outputs; j++)
            if (m->outputs[j] == id)
                k = j;
        const ds_tensor *got = &ms->check_cache.tensor[id], *want = &ms->check_out[k < 0 ? 0 : k];
        if (k < 0 || got->dtype != DS_F32 || !ds_shape_equal(&got->shape, &want->shape)) {
            ds_errorf(err, "check: output layer %d does not match the model's outputs", id);
            goto out;
        }
        const float *a = got->data, *b = want->data;
        int64_t n = ds_shape_numel(&want->shape);
        double max_abs = 0, max_mag = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = fabs((double)a[i] - (double)b[i]);
            if (!(d <= max_abs)) /* NaN counts as an error */
                max_abs = isnan(d) ? INFINITY : d;
            if (fabs((double)b[i]) > max_mag)
                max_mag = fabs((double)b[i]);
        }
        double rel = max_mag > 0 ? max_abs / max_mag : max_abs;
        if (max_abs > ms->check_max_abs)
            ms->check_max_abs = max_abs;
        if (rel > ms->check_max_rel)
            ms->check_max_rel = rel;
    }
    ms->checked++;
    rc = 0;
out:
    free(ids);
    pthread_mutex_unlock(&ms->check_lock);
    return rc;
}

/* -------------------------------------------------------------- results */

static void handle_report(master *ms, int from, const uint8_t *data, size_t len)
{
    double now = ds_now();
    ds_error err;
    Deltaslice__FinishReport *r = ds_rpc_read_finish_report(data, len, (uint32_t)ms->n_workers,
                                                            ms->model.n_layers - 1, &err);
    if (!r) {
        ds_log_warn("w%d sent a bad finish report: %s", from, err.msg);
        return;
    }
    pthread_mutex_lock(&ms->lock);
    if (r->frame_id >= (uint64_t)ms->n_frames || ms->frames[r->frame_id].state != FRAME_IN_FLIGHT) {
        ds_log_warn("w%d reports frame %" PRIu64 ", which is not in flight: ignored", from, r->frame_id);
        pthread_mutex_unlock(&ms->lock);
        ds_rpc_free_finish_report(r);
        return;
    }
    frame_rec *fr = &ms->frames[r->frame_id];
    pthread_mutex_unlock(&ms->lock);

    int ok = r->ok;
    char why[DS_ERROR_MAX + 64] = "";
    if (!ok)
        snprintf(why, sizeof why, "w%u: %s", r->worker, r->error);
    else if (ms->cfg->check && check_frame(ms, fr, r, &err)) {
        ok = 0;
        snprintf(why, sizeof why, "%s", err.msg);
    }

    pthread_mutex_lock(&ms->lock);
    if (ok) {
        fr->state = FRAME_DONE;
        fr->latency = now - fr->sent;
        ms->finished++;
        for (size_t i = 0; i < r->n_bytes; i++)
            add_link_bytes(ms, r->bytes[i]->link, r->bytes[i]->bytes);
        char back[24];
        snprintf(back, sizeof back, "w%u->m", r->worker);
        add_link_bytes(ms, back, len);
        for (size_t i = 0; i < r->n_timings; i++) {
            char name[48];
            snprintf(name, sizeof name, "w%u %s", r->timings[i]->worker, r->timings[i]->stage);
            add_stage(ms, name, (double)(r->timings[i]->end_us - r->timings[i]->start_us) * 1e-6);
        }
    } else {
        fr->state = FRAME_FAILED;
        fr->error = strdup(why);
        ms->failed++;
        ds_log_warn("frame %" PRIu64 " failed: %s", r->frame_id, why);
    }
    ds_tensor_free(&fr->frame);
    ms->in_flight--;
    ms->last_report = now;
    pthread_cond_broadcast(&ms->changed);
    pthread_mutex_unlock(&ms->lock);
    ds_trace_event(ms->trace, r->frame_id, "finish", DS_TRACE_FINISH);
    ds_rpc_free_finish_report(r);
}

typedef struct reader_arg {
    master *ms;
    int worker;
} reader_arg;

static void *reader_thread(void *arg)
{
    reader_arg *ra = arg;
    master *ms = ra->ms;
    int w = ra->worker;
    free(ra);
    ds_buf msg = {0};
    for (;;) {
        ds_error err;
        int code;
        int rc = ds_rpc_reader_next(ms->reader[w], &msg, 0.5, &code, &err);
        if (rc == 1) {
            handle_report(ms, w, msg.data, msg.len);
            continue;
        }
        pthread_mutex_lock(&ms->lock);
        int stop = ms->stop;
        pthread_mutex_unlock(&ms->lock);
        if (rc == DS_RPC_TIMEOUT && !stop)
            continue;
        if (!stop) {
            ds_log_error("result stream of w%d ended: %s", w, rc == 0 ? "closed by the worker" : err.msg);
            pthread_mutex_lock(&ms->lock);
            ms->stop = STOP_FAILED;
            pthread_cond_broadcast(&ms->changed);
            pthread_mutex_unlock(&ms->lock);
        }
        break;
    }
    ds_buf_free(&msg);
    return NULL;
}

/* -------------------------------------------------------------- set-up */

static int connect_workers(master *ms, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    for (int i = 0; i < ms->n_workers; i++) {
        char peer[16];
        snprintf(peer, sizeof peer, "w%d", i);
        ms->ch[i] = ds_rpc_channel_new(peer, cfg->route_master_worker[i], cfg->max_message_bytes, err);
        if (!ms->ch[i] || ds_rpc_wait_ready(ms->ch[i], CONNECT_TIMEOUT_S, err))
            return -1;
    }
    /* Clock offsets for aligning traces: peer = master + offset. */
    for (int i = 0; i < ms->n_workers; i++) {
        int64_t offset, rtt;
        ds_error probe_err; /* no offset: the trace goes unaligned */
        if (ds_rpc_call_clock(ms->ch[i], DS_RPC_WORKER_CLOCK, CLOCK_PROBES, &offset, &rtt,
                              &probe_err) == 0) {
            char name[24];
            snprintf(name, sizeof name, "worker%d", i);
            ds_trace_clock(ms->trace, name, offset, rtt);
        }
    }
    for (int i = 0; i < ms->n_workers; i++)
        if (!(ms->reader[i] = ds_rpc_open_results(ms->ch[i], err)))
            return -1;
    return 0;
}

/* Asks every worker for its layer costs; costs[i] gets worker i's. */
static int fetch_costs(master *ms, double **costs, ds_error *err)
{
    for (int i = 0; i < ms->n_workers; i++) {
        ds_rpc_costs c;
        if (ds_rpc_call_costs(ms->ch[i], ms->model.hash, ms->rows, ms->cols,
                              (size_t)ms->model.n_layers, CONNECT_TIMEOUT_S, &c, err))
            return -1;
        costs[i] = c.seconds;
        double total = 0;
        for (int l = 0; l < ms->model.n_layers; l++)
            total += c.seconds[l];
        ds_log_info("w%d (%s, %u thread%s): %.1f ms per frame", i, c.host, c.threads,
                c.threads == 1 ? "" : "s", total * 1e3);
    }
    return 0;
}

/* The trainer's predictors for this model, video and frame size. */
static ds_predictors *fetch_predictors(master *ms, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    ds_rpc_channel *ch = ds_rpc_channel_new("trainer", cfg->route_master_trainer, cfg->max_message_bytes, err);
    if (!ch || ds_rpc_wait_ready(ch, CONNECT_TIMEOUT_S, err)) {
        ds_rpc_channel_free(ch);
        return NULL;
    }
    ds_buf blob = {0};
    ds_predictors *pred = NULL;
    if (ds_rpc_call_predictors(ch, ms->model.hash, cfg->video_path, ms->rows, ms->cols,
                               (uint32_t)cfg->trainer.frame_num, 3600, &blob, err) == 0 &&
        ds_predictors_decode(blob.data, blob.len, &ms->model, &pred, err))
        ds_error_prefix(err, "trainer Predictors");
    ds_buf_free(&blob);
    ds_rpc_channel_free(ch);
    return pred;
}

/* Job messages of a plan (pointing into pj). */
static void job_messages(const ds_plan_jobs *pj, int n_workers, Deltaslice__Job *msgs, Deltaslice__Job **jobs)
{
    for (int i = 0; i < n_workers; i++) {
        deltaslice__job__init(&msgs[i]);
        msgs[i].n_exec_ids = (size_t)pj->job[i].n_exec;
        msgs[i].exec_ids = pj->job[i].exec_ids;
        msgs[i].n_out_ids = (size_t)pj->job[i].n_out;
        msgs[i].out_ids = pj->job[i].out_ids;
        jobs[i] = &msgs[i];
    }
}

/* -------------------------------------------------------------- summary */

static void print_summary(master *ms)
{
    const ds_config *cfg = ms->cfg;
    const ds_planner *pl = &ms->planner;
    double elapsed = ms->elapsed;
    char plan_text[256];
    printf("model: %s %dx%d, mode %s, scheduler %s, plan %s\n", ms->model.name, ms->rows, ms->cols,
           ds_mode_name(cfg->mode), ds_scheduler_name(cfg->master.scheduler),
           ds_plan_str(&pl->current, plan_text, sizeof plan_text));
    printf("plans: %d used, predicted %.4f s per frame%s\n", ms->plan_changes,
           ds_planner_predicted_per_frame(&ms->planner, ms->n_frames),
           pl->pred || cfg->mode == DS_MODE_ITG ? "" : " (no predictors: full tensor sizes)");
    int lost = ms->n_frames - ms->finished - ms->failed;
    printf("frames: %d finished, %d failed, %d lost (of %d)\n", ms->finished, ms->failed, lost, ms->n_frames);
    double *lat = malloc(sizeof(double) * (size_t)(ms->n_frames ? ms->n_frames : 1));
    int n = 0;
    double sum = 0;
    for (int i = 0; lat && i < ms->n_frames; i++)
        if (ms->frames[i].state == FRAME_DONE) {
            lat[n++] = ms->frames[i].latency;
            sum += ms->frames[i].latency;
        }
    if (n) {
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        printf("latency: mean %.4f s, median %.4f s, p95 %.4f s, max %.4f s\n", sum / n,
               quantile(lat, n, 0.5), quantile(lat, n, 0.95), lat[n - 1]);
    }
    free(lat);
    printf("throughput: %.2f frames/s (%d frames in %.2f s)\n", elapsed > 0 ? ms->finished / elapsed : 0,
           ms->finished, elapsed);
    for (int i = 0; i < ms->n_links; i++)
        printf("bytes %s: %.1f KB/frame, %.2f MB total\n", ms->links[i].name,
               ms->finished ? ms->links[i].bytes / 1e3 / ms->finished : 0, ms->links[i].bytes / 1e6);
    for (int i = 0; i < ms->n_stages; i++) {
        stage_samples *s = &ms->stages[i];
        qsort(s->values, (size_t)s->n, sizeof *s->values, cmp_double);
        printf("stage %s: median %.2f ms\n", s->name, quantile(s->values, s->n, 0.5) * 1e3);
    }
    if (cfg->check)
        printf("check: %d frames, max abs error %.3g, max relative error %.3g (limit %.0e)\n", ms->checked,
               ms->check_max_abs, ms->check_max_rel, CHECK_TOLERANCE);
    for (int i = 0, shown = 0; i < ms->n_frames && shown < 5; i++)
        if (ms->frames[i].state == FRAME_FAILED) {
            printf("failed frame %d: %s\n", i, ms->frames[i].error);
            shown++;
        }
    fflush(stdout);
}

/* ------------------------------------------------------------- opening */

/* Trace, model, clip (its frame size sets the model's input) and the
 * sender's cache. */
static int open_input(master *ms, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    if (ds_trace_open(cfg->trace_dir, "master", &ms->trace, err) ||
        ds_model_load(cfg->dnn, &ms->model, err) ||
        !(ms->video = ds_video_open(cfg->video_path, cfg->frame_rows, cfg->frame_cols, err)))
        return -1;
    ms->rows = ds_video_get_info(ms->video)->rows;
    ms->cols = ds_video_get_info(ms->video)->cols;
    if (ds_model_set_input(&ms->model, 1, 3, ms->rows, ms->cols, err) ||
        ds_dif_cache_init(&ms->cache, ms->model.n_layers, err))
        return -1;
    ds_log_info("%s (%d layers), video %s at %dx%d, %d workers, mode %s", ms->model.name,
            ms->model.n_layers, cfg->video_path, ms->rows, ms->cols, ms->n_workers,
            ds_mode_name(cfg->mode));
    return 0;
}

/* The local full inference that checks the workers' results. */
static int open_check(master *ms, ds_error *err)
{
    if (!ms->cfg->check)
        return 0;
    ms->check_exec = ds_executor_new(&ms->model, DS_BACKEND_XNNPACK, ms->cfg->master.threads, err);
    if (!ms->check_exec)
        return -1;
    ms->check_out = calloc((size_t)ms->model.n_outputs, sizeof *ms->check_out);
    if (!ms->check_out)
        return ds_errorf(err, "out of memory");
    return ds_dif_cache_init(&ms->check_cache, ms->model.n_layers, err);
}

/* The workers' costs, the trainer's predictors when the scheduler needs
 * them, and the planner on top. */
static int open_planner(master *ms, ds_error *err)
{
    double *costs[DS_MAX_WORKERS] = {0};
    ds_predictors *pred = NULL;
    int rc = -1;
    if (fetch_costs(ms, costs, err) == 0 &&
        (!ds_config_needs_trainer(ms->cfg) || (pred = fetch_predictors(ms, err))) &&
        ds_planner_init(&ms->planner, ms->cfg, &ms->model, costs, pred, ds_slowest_link_compress(ms->cfg), err) == 0) {
        ms->planner_ready = 1;
        rc = 0;
    }
    for (int i = 0; i < ms->n_workers; i++) /* those the planner did not take */
        free(costs[i]);
    return rc;
}

static int start_readers(master *ms, ds_error *err)
{
    for (int i = 0; i < ms->n_workers; i++) {
        reader_arg *ra = malloc(sizeof *ra);
        if (!ra)
            return ds_errorf(err, "out of memory");
        *ra = (reader_arg){ms, i};
        if (pthread_create(&ms->reader_th[i], NULL, reader_thread, ra)) {
            free(ra);
            return ds_errorf(err, "cannot start a reader thread");
        }
        ms->reader_started[i] = 1;
    }
    return 0;
}

/* Everything up to the first frame; logs why it failed. */
static int master_open(master *ms)
{
    const ds_config *cfg = ms->cfg;
    ds_error err;
    if (open_input(ms, &err) || open_check(ms, &err)) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    if (ms->model.layers[0].out_shape.dims[1] > DS_PLANNER_MAX_INPUT) {
        ds_log_error("%s: the network input has %lld channels; frames have 3", ms->model.name,
                 (long long)ms->model.layers[0].out_shape.dims[1]);
        return -1;
    }
    if (connect_workers(ms, &err) || open_planner(ms, &err) || start_readers(ms, &err)) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    ms->frames = calloc((size_t)cfg->master.ifr_num, sizeof *ms->frames);
    if (!ms->frames) {
        ds_log_error("out of memory");
        return -1;
    }
    ms->n_frames = cfg->master.ifr_num;
    ms->codec = ds_link_codec(cfg, cfg->master.bandwidth[0]);
    return 0;
}

/* ------------------------------------------------------------- sending */

enum wait_end { WAIT_DONE, WAIT_STOPPED, WAIT_INTERRUPTED };

/* Waits until at most `limit` frames are in flight.  Gives up when the run
 * stops (a worker is gone), when no frame finished for IDLE_TIMEOUT_S (the
 * run stops) or on SIGINT/SIGTERM; looks at all three every second. */
static enum wait_end wait_in_flight(master *ms, int limit)
{
    int interrupted = 0;
    pthread_mutex_lock(&ms->lock);
    while (ms->in_flight > limit && !ms->stop && !interrupted) {
        struct timespec until = ds_deadline(1.0);
        pthread_cond_timedwait(&ms->changed, &ms->lock, &until);
        if (ds_now() - ms->last_report > IDLE_TIMEOUT_S) {
            ds_log_error("no frame finished for %.0f s; giving up", IDLE_TIMEOUT_S);
            ms->stop = STOP_FAILED;
            break;
        }
        pthread_mutex_unlock(&ms->lock);
        interrupted = ds_signals_wait(0);
        pthread_mutex_lock(&ms->lock);
    }
    int stopped = ms->stop != STOP_NONE;
    pthread_mutex_unlock(&ms->lock);
    return stopped ? WAIT_STOPPED : interrupted ? WAIT_INTERRUPTED : WAIT_DONE;
}

/* Frame f of the run (the clip loops) into fr->frame, u8 NCHW. */
static int read_frame(master *ms, int f, frame_rec *fr, ds_error *err)
{
    ds_trace_event(ms->trace, (uint64_t)f, "read", DS_TRACE_START);
    int r = ds_video_read(ms->video, &ms->hwc, err);
    if (r == 0) { /* loop the clip */
        if (ds_video_rewind(ms->video, err) == 0)
            r = ds_video_read(ms->video, &ms->hwc, err);
        if (r == 0)
            ds_errorf(err, "%s: no frame after rewinding", ms->cfg->video_path);
    }
    if (r != 1 || ds_frame_u8_hwc_to_nchw(&ms->hwc, &fr->frame, err))
        return -1;
    ds_trace_event(ms->trace, (uint64_t)f, "read", DS_TRACE_FINISH);
    return 0;
}

/* The plan for frame f, from the input's change since the previous frame;
 * a new plan gets its job messages. */
static int plan_frame(master *ms, int f, const frame_rec *fr, ds_error *err)
{
    ds_trace_event(ms->trace, (uint64_t)f, "plan", DS_TRACE_START);
    int changed = 0;
    if (f > 0)
        ds_input_change(&ms->prev_frame, &fr->frame, ms->input_frac);
    if (ds_planner_plan(&ms->planner, f, f > 0 ? ms->input_frac : NULL, &changed, err) ||
        ds_tensor_copy(&ms->prev_frame, &fr->frame, err))
        return -1;
    if (changed) {
        ds_plan_jobs_free(&ms->pj);
        if (ds_plan_jobs_make(&ms->model, &ms->planner.current, &ms->pj, err))
            return -1;
        job_messages(&ms->pj, ms->n_workers, ms->job_msgs, ms->jobs);
        ms->plan_changes++;
    }
    ds_trace_event(ms->trace, (uint64_t)f, "plan", DS_TRACE_FINISH);
    return 0;
}

/* Encodes frame f against w0's copy and submits it to w0. */
static int submit_frame(master *ms, int f, const ds_tensor *u8, ds_error *err)
{
    uint32_t plan_id = ms->planner.plan_id;
    ds_trace_event(ms->trace, (uint64_t)f, "encode", DS_TRACE_START);
    ms->payload.len = 0;
    ds_dif_cache_use_plan(&ms->cache, plan_id); /* a new plan starts in full */
    if (ds_dif_send(&ms->cache, 0, u8, &ms->codec, &ms->payload, err))
        return -1;
    ds_trace_event(ms->trace, (uint64_t)f, "encode", DS_TRACE_FINISH);
    Deltaslice__FrameRequest fr = DELTASLICE__FRAME_REQUEST__INIT;
    ProtobufCBinaryData input = {ms->payload.len, ms->payload.data};
    fr.frame_id = (uint64_t)f;
    fr.n_jobs = (size_t)ms->n_workers;
    fr.jobs = ms->jobs;
    fr.n_inputs = 1;
    fr.inputs = &input;
    fr.dif = ms->cfg->mode == DS_MODE_DIF;
    fr.plan_id = plan_id;
    fr.check = ms->cfg->check;
    fr.master_send_us = ds_wall_us();
    if (ds_rpc_pack(&fr.base, &ms->req, err))
        return -1;
    ds_trace_event(ms->trace, (uint64_t)f, "send", DS_TRACE_START);
    int rc = ds_rpc_call_submit(ms->ch[0], &ms->req, 60, &ms->resp, err);
    ds_trace_event(ms->trace, (uint64_t)f, "send", DS_TRACE_FINISH);
    return rc;
}

/* Puts frame f in flight; a frame that cannot be sent fails. */
static int send_frame(master *ms, int f, frame_rec *fr)
{
    pthread_mutex_lock(&ms->lock);
    fr->state = FRAME_IN_FLIGHT;
    fr->sent = ds_now();
    ms->in_flight++;
    pthread_mutex_unlock(&ms->lock);
    ds_trace_event(ms->trace, (uint64_t)f, "finish", DS_TRACE_START);
    ds_error err;
    if (submit_frame(ms, f, &fr->frame, &err)) {
        pthread_mutex_lock(&ms->lock);
        if (fr->state == FRAME_IN_FLIGHT) {
            fr->state = FRAME_FAILED;
            fr->error = strdup(err.msg);
            ms->failed++;
            ms->in_flight--;
        }
        pthread_mutex_unlock(&ms->lock);
        ds_log_error("frame %d: %s", f, err.msg);
        return -1;
    }
    if (!ms->cfg->check) { /* the frame is kept only to check the result */
        pthread_mutex_lock(&ms->lock);
        ds_tensor_free(&fr->frame);
        pthread_mutex_unlock(&ms->lock);
    }
    return 0;
}

/* Reads, plans and sends the frames, at most pd_num in flight (0: no
 * limit), every itv_time seconds.  Stops at the first frame that fails
 * (the chain's caches are out of step then).  1 when interrupted. */
static int master_send(master *ms)
{
    const ds_config *cfg = ms->cfg;
    int limit = cfg->master.pd_num ? cfg->master.pd_num - 1 : INT_MAX;
    pthread_mutex_lock(&ms->lock);
    ms->t_start = ms->last_report = ds_now();
    pthread_mutex_unlock(&ms->lock);
    for (int f = 0; f < ms->n_frames; f++) {
        enum wait_end end = wait_in_flight(ms, limit);
        if (end == WAIT_STOPPED)
            return 0;
        if (end == WAIT_INTERRUPTED || ds_signals_wait(0))
            return 1;
        frame_rec *fr = &ms->frames[f];
        ds_error err;
        if (read_frame(ms, f, fr, &err)) {
            ds_log_error("%s", err.msg);
            return 0;
        }
        if (plan_frame(ms, f, fr, &err)) {
            ds_log_error("frame %d: %s", f, err.msg);
            return 0;
        }
        if (send_frame(ms, f, fr))
            return 0;
        if (cfg->master.itv_time > 0 && ds_signals_wait(cfg->master.itv_time))
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------- closing */

/* Ends the run for the reader threads and joins them (cancelling a stream
 * wakes its reader).  Idempotent. */
static void stop_readers(master *ms)
{
    pthread_mutex_lock(&ms->lock);
    if (ms->stop == STOP_NONE)
        ms->stop = STOP_DONE;
    pthread_mutex_unlock(&ms->lock);
    for (int i = 0; i < ms->n_workers; i++)
        if (ms->reader[i])
            ds_rpc_reader_cancel(ms->reader[i]);
    for (int i = 0; i < ms->n_workers; i++)
        if (ms->reader_started[i]) {
            pthread_join(ms->reader_th[i], NULL);
            ms->reader_started[i] = 0;
        }
}

/* Waits for the frames in flight (unless interrupted), stops the readers
 * and prints the summary.  Returns the exit status: 0 when every frame
 * finished (and passed the check). */
static int master_drain(master *ms, int interrupted)
{
    const ds_config *cfg = ms->cfg;
    if (!interrupted)
        interrupted = wait_in_flight(ms, 0) == WAIT_INTERRUPTED;
    ms->elapsed = ds_now() - ms->t_start;
    if (interrupted)
        ds_log_warn("interrupted");
    stop_readers(ms);
    print_summary(ms);
    if (cfg->check && ms->check_max_rel > CHECK_TOLERANCE)
        ds_log_error("check failed: relative error %.3g above %.0e", ms->check_max_rel, CHECK_TOLERANCE);
    int all_checked = !cfg->check || (ms->checked == ms->n_frames &&
                                      ms->check_max_rel <= CHECK_TOLERANCE);
    return ms->finished == ms->n_frames && all_checked ? 0 : 1;
}

static void master_close(master *ms)
{
    stop_readers(ms);
    for (int i = 0; i < ms->n_workers; i++) {
        ds_rpc_reader_free(ms->reader[i]);
        ds_rpc_channel_free(ms->ch[i]);
    }
    for (int i = 0; i < ms->n_frames; i++) {
        ds_tensor_free(&ms->frames[i].frame);
        free(ms->frames[i].error);
    }
    free(ms->frames);
    for (int i = 0; i < ms->n_stages; i++)
        free(ms->stages[i].values);
    ds_plan_jobs_free(&ms->pj);
    if (ms->planner_ready)
        ds_planner_free(&ms->planner);
    ds_tensor_free(&ms->prev_frame);
    ds_dif_cache_free(&ms->cache);
    ds_dif_cache_free(&ms->check_cache);
    ds_executor_free(ms->check_exec);
    ds_tensor_free(&ms->check_in);
    for (int i = 0; ms->check_out && i < ms->model.n_outputs; i++)
        ds_tensor_free(&ms->check_out[i]);
    free(ms->check_out);
    ds_tensor_free(&ms->hwc);
    ds_buf_free(&ms->payload);
    ds_buf_free(&ms->req);
    ds_buf_free(&ms->resp);
    ds_video_close(ms->video);
    ds_model_free(&ms->model);
    ds_trace_close(ms->trace);
    pthread_mutex_destroy(&ms->lock);
    pthread_cond_destroy(&ms->changed);
    pthread_mutex_destroy(&ms->check_lock);
    free(ms);
}

/* ---------------------------------------------------------------- main */

int ds_master_main(const ds_config *cfg)
{
    master *ms = calloc(1, sizeof *ms);
    if (!ms)
        return 1;
    ms->cfg = cfg;
    ms->n_workers = cfg->n_workers;
    pthread_mutex_init(&ms->lock, NULL);
    pthread_cond_init(&ms->changed, NULL);
    pthread_mutex_init(&ms->check_lock, NULL);
    ds_signals_block();
    int status = 1;
    if (master_open(ms) == 0)
        status = master_drain(ms, master_send(ms));
    master_close(ms);
    return status;
}
