/* master.c - reads the video, plans the cut points, drives every frame
 * through the chain of workers and summarises what happened.
 *
 * Threads: the main thread reads, encodes and sends frames (at most pd_num
 * in flight) and recovers from faults; master_watch.c's threads read the
 * workers' result streams (one each), send heartbeats, probe lost workers
 * and take them back, and turn SIGINT/SIGTERM into an interruption every
 * wait sees within 0.1 s.
 *
 * Faults (DESIGN §8).  A worker whose result stream ends, or that misses a
 * heartbeat, is lost; a frame with no result by its deadline, or reported
 * failed, breaks the caches of its epoch.  Either way the main thread starts
 * a new epoch: it plans on the best contiguous run of live workers (the
 * chain may start at any worker; none left: it computes frames itself or
 * waits, as master.no_workers says), and re-sends every frame in flight from
 * its own copy.  Every frame ends in exactly one state: finished, failed
 * (with the reason) or not sent; a result counts only for the epoch its
 * frame was last sent in, so none is delivered twice. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "master.h"
#include "roles.h"

#define CHECK_TOLERANCE 1e-5
#define MAX_SENDS 4         /* a frame that failed this often fails for good */
#define MIN_DEADLINE_S 1.0  /* for a heartbeat */
#define DEADLINE_FACTOR 5.0 /* times the predicted (or seen) latency or stage time */
/* A frame's result is a backstop for what heartbeats cannot see (a lost
 * report, a frozen link between workers): a false alarm costs a re-send,
 * so it waits longer, and longer still for an epoch's first result
 * (kernels warm up, tensors travel in full). */
#define MIN_FRAME_DEADLINE_S 2.0
#define COLD_FACTOR 3.0
#define LATENCY_EWMA 0.2 /* weight of the newest latency in the running mean */
/* Frames a planner plans for: the run's rest, at most this many (and this
 * many for an endless run): beyond, the first frame's full transfer no
 * longer weighs on the choice. */
#define PLAN_HORIZON 10000

/* ---------------------------------------------------------- statistics */

static void add_link_bytes(master *ms, const char *name, uint64_t bytes)
{
    for (int i = 0; i < ms->n_links; i++)
        if (!strcmp(ms->links[i].name, name)) {
            ms->links[i].bytes += bytes;
            return;
        }
    if (ms->n_links < DS_MASTER_MAX_LINKS) {
        snprintf(ms->links[ms->n_links].name, sizeof ms->links[0].name, "%s", name);
        ms->links[ms->n_links++].bytes = bytes;
    }
}

static void add_stage(master *ms, const char *name, double seconds)
{
    stage_stats *s = NULL;
    for (int i = 0; i < ms->n_stages && !s; i++)
        if (!strcmp(ms->stages[i].name, name))
            s = &ms->stages[i];
    if (!s) {
        if (ms->n_stages == (int)(sizeof ms->stages / sizeof ms->stages[0]))
            return;
        ds_hist *h = calloc(1, sizeof *h);
        if (!h)
            return;
        s = &ms->stages[ms->n_stages++];
        snprintf(s->name, sizeof s->name, "%s", name);
        s->seconds = h;
    }
    ds_hist_add(s->seconds, seconds);
}

/* One line every status_interval seconds (the main thread): the totals so
 * far, and the rate, latency and link speeds since the last line. */
static void status_tick(master *ms)
{
    double every = ms->cfg->status_interval, now = ds_now(), span = now - ms->last_status;
    if (every <= 0 || span < every)
        return;
    ms->last_status = now;
    uint64_t skipped = ds_capture_skipped(ms->capture) - ms->skipped_before;
    char links[64 * DS_MASTER_MAX_LINKS] = "", latency[64] = "latency -";
    size_t used = 0;
    pthread_mutex_lock(&ms->lock);
    for (int i = 0; i < ms->n_links && used < sizeof links; i++) {
        link_total *l = &ms->links[i];
        used += (size_t)snprintf(links + used, sizeof links - used, ", %s %.2f MB/s", l->name,
                                 (double)(l->bytes - l->bytes_shown) / 1e6 / span);
        l->bytes_shown = l->bytes;
    }
    if (ms->latency_recent.count)
        snprintf(latency, sizeof latency, "latency p50 %.4f s, p95 %.4f s",
                 ds_hist_quantile(&ms->latency_recent, 0.5), ds_hist_quantile(&ms->latency_recent, 0.95));
    int64_t done = ms->finished - ms->finished_shown;
    ds_log_info("status: %" PRId64 " finished, %" PRIu64 " skipped, %" PRId64 " failed; last %.0f s: "
                "%.2f frames/s, %s%s", ms->finished, skipped, ms->failed, span, (double)done / span,
                latency, links);
    ds_hist_reset(&ms->latency_recent);
    ms->finished_shown = ms->finished;
    pthread_mutex_unlock(&ms->lock);
}

/* The record of frame f (lock held, or the main thread for its own). */
static frame_rec *rec(master *ms, int64_t f)
{
    return &ms->frames[f % DS_MASTER_WINDOW];
}

/* --------------------------------------------------- the local executor */

/* The full model on the master: for the check and for computing frames
 * when no worker is left.  Made on first use (check_lock held, or before
 * the other threads start). */
static int local_ready(master *ms, ds_error *err)
{
    if (ms->check_exec)
        return 0;
    ms->check_exec = ds_executor_new(&ms->model, DS_BACKEND_XNNPACK, ms->cfg->master.threads, err);
    if (!ms->check_exec)
        return -1;
    ms->check_out = calloc((size_t)ms->model.n_outputs, sizeof *ms->check_out);
    return ms->check_out ? 0 : ds_errorf(err, "out of memory");
}

/* Runs the whole model on check_in into check_out (check_lock held). */
static int run_local(master *ms, ds_error *err)
{
    const ds_model *m = &ms->model;
    int *ids = malloc(sizeof(int) * (size_t)m->n_layers);
    if (!ids)
        return ds_errorf(err, "out of memory");
    for (int i = 1; i < m->n_layers; i++)
        ids[i - 1] = i;
    ds_job full = {m->n_layers - 1, ids, m->n_outputs, m->outputs};
    int in_id = 0;
    const ds_tensor *in = &ms->check_in;
    int rc = ds_executor_run(ms->check_exec, &full, 1, &in_id, &in, ms->check_out, err);
    free(ids);
    return rc;
}

/* check_in = frame f as floats, if f is still in flight in that epoch
 * (check_lock held; a frame re-sent meanwhile is checked on its next
 * result).  1 = ready, 0 = superseded, -1 = error. */
static int take_frame(master *ms, int64_t f, uint32_t epoch, ds_error *err)
{
    pthread_mutex_lock(&ms->lock);
    frame_rec *fr = rec(ms, f);
    int rc = fr->id == f && fr->state == FRAME_IN_FLIGHT && fr->epoch == epoch;
    if (rc && ds_tensor_u8_to_f32(&fr->frame, &ms->check_in, err))
        rc = -1;
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

/* One result's largest absolute and relative difference to the local run. */
typedef struct check_error {
    double abs, rel;
} check_error;

/* Folds got's difference against want into *e. */
static void compare(check_error *e, const ds_tensor *got, const ds_tensor *want)
{
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
    e->abs = fmax(e->abs, max_abs);
    e->rel = fmax(e->rel, rel);
}

/* Compares a worker's final outputs of frame f (got: in the model's output
 * order) with a local full run into *e.  1 = compared, 0 = superseded,
 * -1 = error. */
static int check_frame(master *ms, int64_t f, uint32_t epoch, const ds_tensor *const *got,
                       check_error *e, ds_error *err)
{
    pthread_mutex_lock(&ms->check_lock);
    int rc = local_ready(ms, err) ? -1 : take_frame(ms, f, epoch, err);
    if (rc == 1 && run_local(ms, err))
        rc = -1;
    for (int k = 0; rc == 1 && k < ms->model.n_outputs; k++)
        compare(e, got[k], &ms->check_out[k]);
    pthread_mutex_unlock(&ms->check_lock);
    return rc;
}

/* -------------------------------------------------------------- results */

/* Applies report r's outputs to worker w's result cache (its reader
 * thread's) and points got[k] at the model's k-th output.  Fails when they
 * cannot be read: an update against a result the master does not hold
 * (one went missing), or payloads that do not match the model. */
static int receive_outputs(master *ms, int w, const Deltaslice__FinishReport *r,
                           const ds_tensor **got, ds_error *err)
{
    const ds_model *m = &ms->model;
    worker_link *l = &ms->link[w];
    ds_dif_cache_use(&l->results, (ds_dif_key){r->session_id, r->epoch, r->plan_id});
    int rc = 0;
    if (r->outputs_base && r->outputs_base != l->results_next)
        rc = ds_errorf(err, "w%d's result of frame %" PRIu64 " updates frame %" PRIu64
                       "'s, which the master does not hold", w, r->frame_id, r->outputs_base - 1);
    else if ((int)r->n_outputs != m->n_outputs)
        rc = ds_errorf(err, "w%d returned %zu outputs for frame %" PRIu64 "; the model has %d", w,
                       r->n_outputs, r->frame_id, m->n_outputs);
    for (int k = 0; k < m->n_outputs; k++)
        got[k] = NULL;
    for (size_t o = 0; rc == 0 && o < r->n_outputs; o++) {
        ds_codec_header h;
        int k = -1, id;
        if (ds_codec_peek(r->outputs[o].data, r->outputs[o].len, &h, err)) {
            rc = -1;
            break;
        }
        for (int j = 0; j < m->n_outputs; j++)
            if (m->outputs[j] == h.layer_id)
                k = j;
        if (k < 0 || got[k] || h.dtype != DS_F32)
            rc = ds_errorf(err, "w%d returned layer %d, which is not one of the model's outputs "
                           "(or came twice, or not as float32)", w, h.layer_id);
        else if (ds_dif_receive(&l->results, r->outputs[o].data, r->outputs[o].len,
                                &m->layers[h.layer_id].out_shape, &id, err))
            rc = -1;
        else
            got[k] = &l->results.tensor[id];
    }
    if (rc) { /* out of step: the next result of this worker must come in full */
        ds_dif_cache_clear(&l->results);
        l->results_next = 0;
        return ds_error_prefix(err, "result");
    }
    l->results_next = r->frame_id + 1;
    return 0;
}

/* Hands one finished frame's outputs to the sinks and subscribers.  A sink
 * that fails ends the run: results the user asked for would be lost. */
static void deliver(master *ms, const ds_result *res)
{
    ds_error err;
    pthread_mutex_lock(&ms->output_lock);
    if (ms->output && ds_output_write(ms->output, res, &err)) {
        ds_log_error("output: %s; stopping", err.msg);
        ds_output_close(ms->output);
        ms->output = NULL;
        pthread_mutex_lock(&ms->lock);
        ms->output_failed = ms->draining = 1;
        pthread_cond_broadcast(&ms->changed);
        pthread_mutex_unlock(&ms->lock);
    }
    if (ms->subscribers)
        ds_subscribers_publish(ms->subscribers, res);
    pthread_mutex_unlock(&ms->output_lock);
}

/* The result of frame fr (finished) for deliver (lock held). */
static ds_result result_of(const master *ms, const frame_rec *fr, const ds_tensor *const *values)
{
    return (ds_result){(uint64_t)fr->id, fr->source_index, fr->capture_us, fr->latency,
                       ms->model.n_outputs, ms->model.outputs, (const char *const *)ms->output_names,
                       values};
}

/* Frame f finished (lock held). */
static void finish_frame(master *ms, frame_rec *fr, double now)
{
    fr->state = FRAME_DONE;
    fr->latency = now - fr->first_sent;
    ds_hist_add(&ms->latency, fr->latency);
    ds_hist_add(&ms->latency_recent, fr->latency);
    ms->finished++;
    ms->epoch_warm = 1;
    ms->latency_seen += LATENCY_EWMA * (now - fr->sent - ms->latency_seen);
    ms->last_result = now;
    ms->in_flight--;
    ds_tensor_free(&fr->frame);
    free(fr->error);
    fr->error = NULL;
    pthread_cond_broadcast(&ms->changed);
}

/* Frame f failed for good (lock held). */
static void fail_frame(master *ms, int64_t f, const char *why)
{
    frame_rec *fr = rec(ms, f);
    fr->state = FRAME_FAILED;
    free(fr->error);
    fr->error = NULL;
    if (ms->n_failures < DS_MASTER_FAILURES_SHOWN) {
        ms->failure_ids[ms->n_failures] = f;
        ms->failures[ms->n_failures++] = strdup(why);
    }
    ms->failed++;
    ms->in_flight--;
    ds_tensor_free(&fr->frame);
    pthread_cond_broadcast(&ms->changed);
    ds_log_warn("frame %" PRId64 " failed: %s", f, why);
    ds_trace_event(ms->trace, (uint64_t)f, "failed", DS_TRACE_START);
    ds_trace_event(ms->trace, (uint64_t)f, "failed", DS_TRACE_FINISH);
}

/* The first frame that may be in flight (lock held). */
static int64_t oldest(master *ms)
{
    while (ms->low < ms->next_frame && (rec(ms, ms->low)->state == FRAME_DONE ||
                                        rec(ms, ms->low)->state == FRAME_FAILED))
        ms->low++;
    return ms->low;
}

/* Queues a measurement for the planner (lock held). */
static void push_obs(master *ms, plan_obs o)
{
    if (ms->n_obs == DS_MASTER_OBS) {
        memmove(ms->obs, ms->obs + 1, sizeof *ms->obs * (DS_MASTER_OBS - 1));
        ms->n_obs--;
    }
    ms->obs[ms->n_obs++] = o;
}

/* What a finished frame's report measured (lock held): each chain worker's
 * decode + execute + encode, and each link between workers from the
 * sender's encode end to the receiver's arrival (on the master's clock). */
static void observe_report(master *ms, const Deltaslice__FinishReport *r)
{
    double busy[DS_MAX_WORKERS] = {0}, ready[DS_MAX_WORKERS] = {0}, arrive[DS_MAX_WORKERS] = {0};
    int seen[DS_MAX_WORKERS] = {0};
    int at[DS_MAX_WORKERS]; /* chain index of each worker id, or -1 */
    for (int i = 0; i < ms->n_workers; i++)
        at[i] = -1;
    for (int k = 0; k < ms->chain_len; k++)
        at[ms->chain[k]] = k;
    for (size_t i = 0; i < r->n_timings; i++) {
        const Deltaslice__StageTiming *t = r->timings[i];
        int k = at[t->worker]; /* worker < n_workers: checked by the reader */
        if (k < 0)
            continue;
        double off = (double)ms->link[t->worker].clock_offset_us;
        seen[k] = 1;
        if (!strcmp(t->stage, "receive"))
            arrive[k] = ((double)t->start_us - off) * 1e-6;
        else
            busy[k] += (double)(t->end_us - t->start_us) * 1e-6;
        if (!strcmp(t->stage, "encode"))
            ready[k] = ((double)t->end_us - off) * 1e-6;
    }
    for (int k = 0; k < ms->chain_len; k++) {
        if (!seen[k])
            continue;
        push_obs(ms, (plan_obs){(int64_t)r->frame_id, r->epoch, k, 0, 0, 0, busy[k]});
        char name[32];
        snprintf(name, sizeof name, "w%d->w%d", k ? ms->chain[k - 1] : 0, ms->chain[k]);
        for (size_t i = 0; k && seen[k - 1] && i < r->n_bytes; i++)
            if (!strcmp(r->bytes[i]->link, name))
                push_obs(ms, (plan_obs){(int64_t)r->frame_id, r->epoch, k, 1, (double)r->bytes[i]->bytes,
                                        ready[k - 1], arrive[k]});
    }
}

/* Hands the queued measurements of this epoch to the planner (main
 * thread). */
static void feed_planner(master *ms)
{
    plan_obs o[DS_MASTER_OBS];
    pthread_mutex_lock(&ms->lock);
    int n = ms->n_obs;
    uint32_t epoch = ms->epoch;
    memcpy(o, ms->obs, sizeof *o * (size_t)n);
    ms->n_obs = 0;
    pthread_mutex_unlock(&ms->lock);
    for (int i = 0; ms->planner_ready && i < n; i++) {
        if (o[i].epoch != epoch)
            continue;
        int frame = (int)(o[i].frame - ms->plan_base);
        if (o[i].link)
            ds_planner_observe_link(&ms->planner, frame, o[i].k, o[i].bytes, o[i].start, o[i].end);
        else
            ds_planner_observe_compute(&ms->planner, frame, o[i].k, o[i].end);
    }
}

/* The counts of a finished frame's report. */
static void account(master *ms, const Deltaslice__FinishReport *r, size_t len)
{
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
    observe_report(ms, r);
}

/* The record of the frame r is about, when that frame is in flight in the
 * epoch it was last sent in (lock held): else r is stale or a duplicate. */
static frame_rec *report_counts(master *ms, const Deltaslice__FinishReport *r)
{
    if (r->session_id != ms->session_id || r->frame_id >= (uint64_t)ms->next_frame)
        return NULL;
    frame_rec *fr = rec(ms, (int64_t)r->frame_id);
    return fr->id == (int64_t)r->frame_id && fr->state == FRAME_IN_FLIGHT && fr->epoch == r->epoch
               ? fr
               : NULL;
}

void ds_master_report(master *ms, int from, const uint8_t *data, size_t len)
{
    double now = ds_now();
    ds_error err;
    Deltaslice__FinishReport *r = ds_rpc_read_finish_report(data, len, (uint32_t)ms->n_workers,
                                                            ms->model.n_layers - 1, &err);
    if (!r) {
        ds_log_warn("w%d sent a bad finish report: %s", from, err.msg);
        return;
    }
    char why[DS_ERROR_MAX + 64] = "";
    int checked = 1, out_of_step = 0, n_out = ms->model.n_outputs;
    const ds_tensor *got[n_out > 0 ? n_out : 1];
    int with_outputs = r->ok && ds_config_wants_outputs(ms->cfg);
    check_error e = {0, 0};
    /* Every result is applied, stale or not: the worker's next one may be
     * an update against it. */
    if (!r->ok)
        snprintf(why, sizeof why, "w%u: %s", r->worker, r->error);
    else if (with_outputs && (out_of_step = receive_outputs(ms, from, r, got, &err)))
        snprintf(why, sizeof why, "%s", err.msg);
    else if (ms->cfg->check && (checked = check_frame(ms, (int64_t)r->frame_id, r->epoch, got, &e, &err)) < 0)
        snprintf(why, sizeof why, "%s", err.msg);
    pthread_mutex_lock(&ms->lock);
    frame_rec *fr = checked ? report_counts(ms, r) : NULL;
    ds_result res = {0};
    if (!fr) {
        ds_log_debug("w%d reports frame %" PRIu64 " of epoch %u: stale, ignored", from,
                     r->frame_id, r->epoch);
    } else if (r->ok && !why[0]) {
        finish_frame(ms, fr, now);
        account(ms, r, len);
        if (ms->cfg->check) { /* only a result that counts is checked */
            ms->checked++;
            ms->check_max_abs = fmax(ms->check_max_abs, e.abs);
            ms->check_max_rel = fmax(ms->check_max_rel, e.rel);
        }
        if (with_outputs)
            res = result_of(ms, fr, got);
        ds_trace_event(ms->trace, r->frame_id, "finish", DS_TRACE_FINISH);
    } else if (!r->ok || out_of_step) {
        /* The epoch's caches are out of step from this frame on: the main
         * thread re-sends the frames in flight under a new one. */
        free(fr->error);
        fr->error = strdup(why);
        ms->recover = ms->recover_broken = 1;
        pthread_cond_broadcast(&ms->changed);
        ds_log_warn("frame %" PRIu64 " failed on w%u: %s", r->frame_id, r->worker, why);
    } else {
        fail_frame(ms, (int64_t)r->frame_id, why); /* a wrong result is not retried */
    }
    pthread_mutex_unlock(&ms->lock);
    if (res.n_outputs)
        deliver(ms, &res);
    ds_rpc_free_finish_report(r);
}

/* Computes frame f on the master (no worker left). */
static int compute_locally(master *ms, int64_t f, frame_rec *fr, ds_error *err)
{
    pthread_mutex_lock(&ms->check_lock);
    int rc = local_ready(ms, err) ? -1 : take_frame(ms, f, fr->epoch, err);
    if (rc == 1)
        rc = run_local(ms, err) ? -1 : 1;
    ds_result res = {0};
    pthread_mutex_lock(&ms->lock);
    if (rc == 1 && fr->state == FRAME_IN_FLIGHT) {
        finish_frame(ms, fr, ds_now());
        ms->local++;
        ms->checked += ms->cfg->check; /* the reference itself: no error */
        if (ds_config_wants_outputs(ms->cfg))
            res = result_of(ms, fr, (const ds_tensor *const *)ms->check_out);
        ds_trace_event(ms->trace, (uint64_t)f, "finish", DS_TRACE_FINISH);
    }
    pthread_mutex_unlock(&ms->lock);
    if (res.n_outputs)
        deliver(ms, &res);
    pthread_mutex_unlock(&ms->check_lock);
    return rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------- planning */

int ds_master_on_chain(const master *ms, int w)
{
    for (int k = 0; k < ms->chain_len; k++)
        if (ms->chain[k] == w)
            return 1;
    return 0;
}

/* A planner for the chain ids[0..n) of up workers: the configuration it
 * sees is theirs (the master's link feeds the first; an extra route is
 * priced at the bandwidth of the link into its target), their costs, the
 * predictors decoded afresh; the frames from `from` on to plan for (an
 * endless run plans for PLAN_HORIZON frames). */
static int chain_planner(master *ms, const int *ids, int n, int64_t from, ds_config *seg,
                         ds_planner *p, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    *seg = *cfg;
    seg->n_workers = n;
    int64_t left = ms->n_frames ? ms->n_frames - from : PLAN_HORIZON;
    seg->master.ifr_num = left <= 0 ? 1 : left > PLAN_HORIZON ? PLAN_HORIZON : (int)left;
    for (int k = 1; k < n; k++)
        seg->master.bandwidth[k] = cfg->master.bandwidth[ids[k]];
    double *costs[DS_MAX_WORKERS] = {0};
    size_t bytes = sizeof(double) * (size_t)ms->model.n_layers;
    int missing = 0;
    pthread_mutex_lock(&ms->lock);
    for (int k = 0; k < n; k++)
        if ((costs[k] = malloc(bytes)))
            memcpy(costs[k], ms->link[ids[k]].costs, bytes);
        else
            missing = 1;
    pthread_mutex_unlock(&ms->lock);
    ds_predictors *pred = NULL;
    if (missing || (ms->pred_blob.len && ds_predictors_decode(ms->pred_blob.data, ms->pred_blob.len,
                                                              &ms->model, &pred, err))) {
        for (int k = 0; k < n; k++)
            free(costs[k]);
        return missing ? ds_errorf(err, "out of memory") : -1;
    }
    memset(p, 0, sizeof *p);
    return ds_planner_init(p, seg, &ms->model, costs, pred, ds_slowest_link_compress(seg), err);
}

/* The chain from up worker a on: each next worker the nearest later up one
 * the previous reaches (wI->wI+1, or an extra route of the config). */
static int chain_from(const master *ms, const int *up, int a, int *ids)
{
    int n = 0;
    ids[n++] = a;
    for (int j = a + 1; j < ms->n_workers; j++)
        if (up[j] && ms->cfg->route_worker[ids[n - 1]][j])
            ids[n++] = j;
    return n;
}

/* 1 when an earlier up worker reaches worker a: a chain may then include
 * it, and one starting at a is not tried (a worker more is the planner's to
 * leave idle). */
static int reachable(const master *ms, const int *up, int a)
{
    for (int i = 0; i < a; i++)
        if (up[i] && ms->cfg->route_worker[i][a])
            return 1;
    return 0;
}

/* The planner's predicted seconds per frame on the chain ids[0..n). */
static int predict_chain(master *ms, const int *ids, int n, double *per_frame, ds_error *err)
{
    ds_config seg;
    ds_planner p;
    int changed;
    if (chain_planner(ms, ids, n, ms->next_frame, &seg, &p, err))
        return -1;
    p.quiet = 1;
    int rc = ds_planner_plan(&p, 0, NULL, &changed, err);
    *per_frame = p.predicted.per_frame;
    ds_planner_free(&p);
    return rc;
}

/* The best chain of up workers (by the planner's prediction, when there is
 * a choice) into ids, its length into *n (0 when none is up).  up[] is a
 * snapshot. */
static int best_chain(master *ms, const int *up, int *ids, int *n, ds_error *err)
{
    int starts[DS_MAX_WORKERS], n_starts = 0;
    for (int a = 0; a < ms->n_workers; a++)
        if (up[a] && !reachable(ms, up, a))
            starts[n_starts++] = a;
    *n = n_starts == 1 ? chain_from(ms, up, starts[0], ids) : 0;
    double best = INFINITY;
    for (int k = 0; n_starts > 1 && k < n_starts; k++) {
        int cand[DS_MAX_WORKERS], len = chain_from(ms, up, starts[k], cand);
        double per_frame;
        if (predict_chain(ms, cand, len, &per_frame, err))
            return -1;
        ds_log_debug("chain from w%d (%d workers): %.4f s per frame predicted", starts[k], len,
                     per_frame);
        if (per_frame < best) {
            best = per_frame;
            memcpy(ids, cand, sizeof *ids * (size_t)len);
            *n = len;
        }
    }
    return 0;
}

/* The planner's current plan over every worker (off the chain: nothing to
 * do), the frame requests' jobs and the heartbeat deadlines of the chain's
 * workers (their predicted stage times). */
static int use_plan(master *ms, ds_error *err)
{
    const ds_plan *cur = &ms->planner.current;
    ms->full_plan.n_workers = ms->n_workers;
    for (int i = 0, k = 0; i < ms->n_workers; i++)
        ms->full_plan.cut[i] = k < ms->chain_len && ms->chain[k] == i ? cur->cut[k++]
                               : k == ms->chain_len             ? ms->model.n_layers - 1
                               : i                               ? ms->full_plan.cut[i - 1]
                                                                 : 0;
    ds_plan_jobs_free(&ms->pj);
    if (ds_plan_jobs_make(&ms->model, &ms->full_plan, &ms->pj, err))
        return -1;
    for (int i = 0; i < ms->n_workers; i++) {
        Deltaslice__Job *m = &ms->job_msgs[i];
        deltaslice__job__init(m);
        if (ds_master_on_chain(ms, i)) {
            m->n_exec_ids = (size_t)ms->pj.job[i].n_exec;
            m->exec_ids = ms->pj.job[i].exec_ids;
            m->n_out_ids = (size_t)ms->pj.job[i].n_out;
            m->out_ids = ms->pj.job[i].out_ids;
        }
        ms->jobs[i] = m;
    }
    ms->plan_changes++;
    pthread_mutex_lock(&ms->lock);
    for (int k = 0; k < ms->chain_len; k++) {
        int i = ms->chain[k];
        double stage = 0;
        for (int e = 0; e < ms->pj.job[i].n_exec; e++)
            stage += ms->link[i].costs[ms->pj.job[i].exec_ids[e]];
        ms->link[i].heartbeat = fmax(MIN_DEADLINE_S, DEADLINE_FACTOR * stage);
    }
    pthread_mutex_unlock(&ms->lock);
    return 0;
}

/* A new planner for the chain ids[0..n) from frame `from` on (n = 0: no
 * worker: frames are computed here, or wait). */
static int use_chain(master *ms, const int *ids, int n, int64_t from, ds_error *err)
{
    /* The old planner's measurements carry over to the new one. */
    ds_planner old = ms->planner;
    int had = ms->planner_ready, old_ids[DS_MAX_WORKERS];
    memcpy(old_ids, ms->chain, sizeof old_ids);
    ms->planner_ready = 0;
    pthread_mutex_lock(&ms->lock);
    memcpy(ms->chain, ids, sizeof *ids * (size_t)n);
    ms->chain_len = n;
    pthread_mutex_unlock(&ms->lock);
    for (int k = 0; k < n; k++)
        ms->chain_ids[k] = (uint32_t)ids[k];
    int rc = n ? chain_planner(ms, ids, n, from, &ms->seg_cfg, &ms->planner, err) : 0;
    if (n && rc == 0 && had)
        ds_planner_inherit(&ms->planner, ids, &old, old_ids);
    if (had)
        ds_planner_free(&old);
    if (n == 0 || rc)
        return rc;
    ms->planner.ids = ms->chain;
    ms->planner_ready = 1;
    ms->plan_base = from;
    int changed;
    ms->planner.quiet = 1; /* the epoch's log line names its first plan */
    rc = ds_planner_plan(&ms->planner, 0, NULL, &changed, err);
    ms->planner.quiet = 0;
    return rc ? -1 : use_plan(ms, err);
}

/* -------------------------------------------------------------- sending */

/* The source's next frame (the newest, under drop latest) as frame f into
 * fr->frame, u8 NCHW.  1 = read, 0 = the source ended or the run stops,
 * -1 = error. */
static int read_frame(master *ms, int64_t f, frame_rec *fr, ds_error *err)
{
    ds_trace_event(ms->trace, (uint64_t)f, "read", DS_TRACE_START);
    int r;
    while ((r = ds_capture_next(ms->capture, &ms->captured, 0.1, err)) == 2) {
        pthread_mutex_lock(&ms->lock);
        int stop = ms->interrupted || ms->draining;
        pthread_mutex_unlock(&ms->lock);
        if (stop)
            return 0;
        status_tick(ms);
    }
    if (r == 0) {
        ds_log_info("%s: the source ended", ds_capture_info(ms->capture)->path);
        ms->source_ended = 1;
    }
    if (r != 1)
        return r;
    if (ds_frame_u8_hwc_to_nchw(&ms->captured.frame, &fr->frame, err))
        return -1;
    fr->source_index = ms->captured.index;
    fr->capture_us = ms->captured.capture_us;
    ds_trace_event(ms->trace, (uint64_t)f, "read", DS_TRACE_FINISH);
    return 1;
}

/* The plan for frame f, from the input's change since the previous frame;
 * the segment's first frame was planned when the segment was chosen. */
static int plan_frame(master *ms, int64_t f, const frame_rec *fr, ds_error *err)
{
    ds_trace_event(ms->trace, (uint64_t)f, "plan", DS_TRACE_START);
    int changed = 0;
    if (f > 0)
        ds_input_change(&ms->prev_frame, &fr->frame, ms->input_frac);
    if (ds_tensor_copy(&ms->prev_frame, &fr->frame, err))
        return -1;
    feed_planner(ms);
    if (ms->planner_ready && f > ms->plan_base &&
        (ds_planner_plan(&ms->planner, (int)(f - ms->plan_base), ms->input_frac, &changed, err) ||
         (changed && use_plan(ms, err))))
        return -1;
    ds_trace_event(ms->trace, (uint64_t)f, "plan", DS_TRACE_FINISH);
    return 0;
}

/* Encodes frame f against the first worker's copy and submits it there;
 * *code is the call's status. */
static int submit_frame(master *ms, int64_t f, const ds_tensor *u8, uint32_t epoch, int *code,
                        ds_error *err)
{
    *code = DS_RPC_INTERNAL;
    ds_dif_key key = {ms->session_id, epoch, ms->planner.plan_id};
    ds_trace_event(ms->trace, (uint64_t)f, "encode", DS_TRACE_START);
    ms->payload.len = 0;
    ds_dif_cache_use(&ms->cache, key); /* a new plan or epoch starts in full */
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
    fr.plan_id = key.plan;
    fr.return_outputs = ds_config_wants_outputs(ms->cfg);
    fr.master_send_us = ds_wall_us();
    fr.session_id = key.session;
    fr.epoch = key.epoch;
    fr.n_chain = (size_t)ms->chain_len;
    fr.chain = ms->chain_ids;
    if (ds_rpc_pack(&fr.base, &ms->req, err))
        return -1;
    /* Submit returns once queued: a longer call means a hung worker. */
    double mbps = ds_link_deadline_mbps(ms->cfg, ms->chain[0]);
    double deadline = 2.0 + 3.0 * (double)ms->req.len / (mbps * 1e6);
    ds_trace_event(ms->trace, (uint64_t)f, "send", DS_TRACE_START);
    double start = ds_now();
    int rc = ds_rpc_call_unary(ms->link[ms->chain[0]].ch, DS_RPC_WORKER_SUBMIT, ms->req.data,
                               ms->req.len, deadline, &ms->resp, code, err);
    double end = ds_now();
    ds_trace_event(ms->trace, (uint64_t)f, "send", DS_TRACE_FINISH);
    /* The link into the chain and the master's own time, as the planner
     * prices them (a re-send's time is the recovery's, not a frame's). */
    if (rc == 0 && rec(ms, f)->sends == 1) {
        ds_planner_observe_source(&ms->planner, start - ms->frame_t0);
        ds_planner_observe_link(&ms->planner, (int)(f - ms->plan_base), 0, (double)ms->req.len, start, end);
    }
    return rc;
}

/* Sends frame f (in flight) in the current epoch: to the segment's first
 * worker, or computed here when there is none.  A frame that cannot be
 * sent stays in flight for the recovery; one sent MAX_SENDS times fails. */
static void send_frame(master *ms, int64_t f)
{
    frame_rec *fr = rec(ms, f);
    pthread_mutex_lock(&ms->lock);
    if (fr->sends == MAX_SENDS) {
        char why[DS_ERROR_MAX + 64];
        snprintf(why, sizeof why, "given up after %d sends; last: %s", MAX_SENDS,
                 fr->error ? fr->error : "no result in time");
        fail_frame(ms, f, why);
        pthread_mutex_unlock(&ms->lock);
        return;
    }
    fr->epoch = ms->epoch;
    fr->sent = ds_now();
    if (fr->sends++ == 0)
        fr->first_sent = fr->sent;
    else
        ms->resent++;
    pthread_mutex_unlock(&ms->lock);
    ds_error err;
    int code = DS_RPC_OK;
    int rc = !ms->chain_len ? compute_locally(ms, f, fr, &err)
                               : submit_frame(ms, f, &fr->frame, fr->epoch, &code, &err);
    if (rc == 0)
        return;
    /* Gone, hung or restarted; ABORTED: its epoch broke (a recovery will
     * follow), CANCELLED: interrupted. */
    if (ms->chain_len && (code == DS_RPC_UNAVAILABLE || code == DS_RPC_DEADLINE_EXCEEDED ||
                          code == DS_RPC_FAILED_PRECONDITION))
        ds_master_lose(ms, ms->chain[0], err.msg);
    pthread_mutex_lock(&ms->lock);
    free(fr->error);
    fr->error = strdup(err.msg);
    ms->recover = ms->recover_broken = 1; /* the send cache moved on */
    pthread_mutex_unlock(&ms->lock);
}

/* ------------------------------------------------------------- recovery */

/* "w0..w2", "w0,w2" (around a lost w1) or "the master" into buf. */
static const char *chain_str(const master *ms, char *buf, size_t len)
{
    int n = ms->chain_len, contiguous = n && ms->chain[n - 1] - ms->chain[0] == n - 1;
    if (!n)
        snprintf(buf, len, "the master");
    else if (contiguous)
        snprintf(buf, len, "w%d..w%d", ms->chain[0], ms->chain[n - 1]);
    else
        for (int k = 0, used = 0; k < n && used >= 0 && (size_t)used < len; k++)
            used += snprintf(buf + used, len - (size_t)used, "%sw%d", k ? "," : "", ms->chain[k]);
    return buf;
}

/* "epoch 3: plan w0:1..4 w1:- w2:5..13 on w0,w2, predicted ..." */
static void log_epoch(const master *ms)
{
    char seg[256], plan[256];
    if (!ms->chain_len && !ms->cfg->master.no_workers_wait)
        ds_log_warn("no worker left: computing on the master");
    else if (!ms->chain_len)
        ds_log_warn("no worker left: waiting for one to come back");
    else
        ds_log_info("epoch %u: plan %s on %s, predicted %.4f s per frame, latency %.4f s",
                    ms->epoch, ds_plan_str(&ms->full_plan, plan, sizeof plan),
                    chain_str(ms, seg, sizeof seg), ms->planner.predicted.per_frame,
                    ms->planner.predicted.mean_latency);
}

/* After a loss, a return, a failed frame or a late one: re-plans on the
 * workers up now, and when that or the caches' state asks for it, starts a
 * new epoch and re-sends every frame in flight, oldest first. */
static int recover(master *ms, ds_error *err)
{
    int up[DS_MAX_WORKERS];
    pthread_mutex_lock(&ms->lock);
    int broken = ms->recover_broken;
    ms->recover = ms->recover_broken = 0;
    for (int i = 0; i < ms->n_workers; i++)
        up[i] = ms->link[i].up;
    pthread_mutex_unlock(&ms->lock);
    int ids[DS_MAX_WORKERS], n;
    if (best_chain(ms, up, ids, &n, err))
        return -1;
    if (!broken && n == ms->chain_len && !memcmp(ids, ms->chain, sizeof *ids * (size_t)n))
        return 0; /* a worker came back, but the chain in use predicts better */
    pthread_mutex_lock(&ms->lock);
    ms->epoch++;
    ms->epochs++;
    ms->epoch_warm = 0;
    pthread_mutex_unlock(&ms->lock);
    if (use_chain(ms, ids, n, ms->next_frame, err))
        return -1;
    log_epoch(ms);
    if (!n && ms->cfg->master.no_workers_wait)
        return 0; /* the frames in flight wait for a worker */
    pthread_mutex_lock(&ms->lock);
    int64_t from = oldest(ms);
    pthread_mutex_unlock(&ms->lock);
    for (int64_t f = from; f < ms->next_frame; f++) {
        pthread_mutex_lock(&ms->lock);
        int again = rec(ms, f)->state == FRAME_IN_FLIGHT && !ms->recover;
        pthread_mutex_unlock(&ms->lock);
        if (!again)
            continue;
        ds_trace_event(ms->trace, (uint64_t)f, "resend", DS_TRACE_START);
        send_frame(ms, f);
        ds_trace_event(ms->trace, (uint64_t)f, "resend", DS_TRACE_FINISH);
    }
    return 0;
}

/* The deadline of a frame's result: max(2 s, 5x the predicted or the
 * recently seen latency, whichever is longer: a loaded machine is slow, not
 * broken) plus a full input's transfer (lock held). */
static double frame_deadline(const master *ms)
{
    if (!ms->chain_len)
        return INFINITY;
    double full = 3.0 * ms->rows * ms->cols / (ds_link_deadline_mbps(ms->cfg, ms->chain[0]) * 1e6);
    double latency = fmax(ms->planner.predicted.mean_latency, ms->latency_seen);
    return fmax(MIN_FRAME_DEADLINE_S, DEADLINE_FACTOR * latency) + full;
}

/* Asks for a recovery when a frame in flight is overdue (lock held): no
 * result for it, nor for any other frame, within the deadline.  A chain
 * that still delivers is slow, not stuck (frames queue behind each other);
 * a report lost while others finish is caught once they stop. */
static void check_overdue(master *ms)
{
    double now = ds_now(), deadline = frame_deadline(ms);
    if (!ms->epoch_warm)
        deadline *= COLD_FACTOR;
    for (int64_t f = oldest(ms); f < ms->next_frame && !ms->recover; f++) {
        frame_rec *fr = rec(ms, f);
        double waiting = now - fmax(fr->sent, ms->last_result);
        if (fr->state != FRAME_IN_FLIGHT || waiting <= deadline)
            continue;
        ds_log_warn("frame %" PRId64 ": no result for %.1f s (deadline %.1f s)", f, waiting, deadline);
        free(fr->error);
        fr->error = strdup("no result by its deadline");
        ms->recover = ms->recover_broken = 1;
    }
}

enum wait_end { WAIT_DONE, WAIT_INTERRUPTED, WAIT_FAILED };

/* Waits until at most `limit` frames are in flight (and the window has
 * room for one more) and, to send one more, until a frame may be sent (a
 * worker is usable, or frames are computed here), recovering from faults
 * on the way; honours SIGINT/SIGTERM within 0.1 s. */
static enum wait_end wait_slot(master *ms, int limit, int to_send)
{
    pthread_mutex_lock(&ms->lock);
    for (;;) {
        if (ms->interrupted)
            break;
        check_overdue(ms);
        if (ms->recover) {
            pthread_mutex_unlock(&ms->lock);
            ds_error err;
            if (recover(ms, &err)) {
                ds_log_error("recovery: %s", err.msg);
                return WAIT_FAILED;
            }
            pthread_mutex_lock(&ms->lock);
            continue;
        }
        int stalled = to_send && !ms->chain_len && ms->cfg->master.no_workers_wait;
        if (ms->in_flight <= limit && ms->next_frame - oldest(ms) < DS_MASTER_WINDOW && !stalled)
            break;
        struct timespec until = ds_deadline(0.1);
        pthread_cond_timedwait(&ms->changed, &ms->lock, &until);
        pthread_mutex_unlock(&ms->lock);
        status_tick(ms);
        pthread_mutex_lock(&ms->lock);
    }
    int interrupted = ms->interrupted;
    pthread_mutex_unlock(&ms->lock);
    return interrupted ? WAIT_INTERRUPTED : WAIT_DONE;
}

/* Reads, plans and sends frames until master.ifr_num are sent, the source
 * ends or the run stops, at most pd_num in flight (0: the window's worth),
 * every itv_time seconds.  1 when interrupted, -1 on a failure of the
 * master itself. */
static int master_send(master *ms)
{
    const ds_config *cfg = ms->cfg;
    int in_flight = cfg->master.pd_num && cfg->master.pd_num < DS_MASTER_WINDOW ? cfg->master.pd_num
                                                                                : DS_MASTER_WINDOW;
    pthread_mutex_lock(&ms->lock); /* the signal thread reads t_start */
    ms->t_start = ms->last_status = ds_now();
    /* What a live source delivered while the workers were being reached
     * is not the chain's to keep up with. */
    ms->skipped_before = ds_capture_skipped(ms->capture);
    pthread_mutex_unlock(&ms->lock);
    for (int64_t f = 0; !ms->n_frames || f < ms->n_frames; f++) {
        enum wait_end end = wait_slot(ms, in_flight - 1, 1);
        if (end != WAIT_DONE)
            return end == WAIT_INTERRUPTED ? 1 : -1;
        frame_rec *fr = rec(ms, f); /* the window has room: its frame is done */
        ds_error err;
        pthread_mutex_lock(&ms->lock);
        int draining = ms->draining;
        pthread_mutex_unlock(&ms->lock);
        ms->frame_t0 = ds_now();
        int r = draining ? 0 : read_frame(ms, f, fr, &err);
        if (r == 0)
            break;
        if (r < 0 || plan_frame(ms, f, fr, &err)) {
            ds_log_error("frame %" PRId64 ": %s", f, err.msg);
            return -1;
        }
        pthread_mutex_lock(&ms->lock);
        fr->id = f;
        fr->state = FRAME_IN_FLIGHT;
        fr->sends = 0;
        ms->in_flight++;
        ms->next_frame = f + 1;
        pthread_mutex_unlock(&ms->lock);
        ds_trace_event(ms->trace, (uint64_t)f, "finish", DS_TRACE_START);
        send_frame(ms, f);
        status_tick(ms);
        if (cfg->master.itv_time > 0) {
            pthread_mutex_lock(&ms->lock);
            struct timespec until = ds_deadline(cfg->master.itv_time);
            while (!ms->interrupted && pthread_cond_timedwait(&ms->changed, &ms->lock, &until) == 0) {
            }
            pthread_mutex_unlock(&ms->lock);
        }
    }
    return 0;
}

/* ------------------------------------------------------------- summary */

static void print_summary(master *ms)
{
    const ds_config *cfg = ms->cfg;
    double elapsed = ms->elapsed;
    char plan_text[256] = "none", seg[256];
    if (ms->planner_ready)
        ds_plan_str(&ms->full_plan, plan_text, sizeof plan_text);
    printf("model: %s %dx%d, mode %s, scheduler %s, plan %s on %s\n", ms->model.name, ms->rows,
           ms->cols, ds_mode_name(cfg->mode), ds_scheduler_name(cfg->master.scheduler), plan_text,
           chain_str(ms, seg, sizeof seg));
    if (ms->planner_ready) {
        feed_planner(ms);
        double predicted = ds_planner_predicted_per_frame(&ms->planner, (int)(ms->next_frame - ms->plan_base));
        char measured[512];
        if (isnan(predicted))
            printf("plans: %d used, no prediction (links neither configured nor measured)\n", ms->plan_changes);
        else
            printf("plans: %d used, predicted %.4f s per frame%s\n", ms->plan_changes, predicted,
                   ms->planner.pred || cfg->mode == DS_MODE_ITG ? "" : " (no predictors: update sizes measured)");
        if (ds_planner_measured_str(&ms->planner, measured, sizeof measured)[0])
            printf("measured: %s\n", measured);
    }
    printf("source: %s (%s%s), %" PRId64 " frames read, %" PRIu64 " skipped (drop %s)\n",
           ms->capture ? ds_capture_info(ms->capture)->path : "?", ds_source_kind_name(cfg->video.kind),
           cfg->video.kind == DS_SOURCE_FILE && cfg->video.loop ? ", looping" : "",
           ms->next_frame, ms->skipped, cfg->master.drop == DS_DROP_LATEST ? "latest" : "none");
    if (ms->n_frames)
        printf("frames: %" PRId64 " finished, %" PRId64 " failed, %" PRId64 " not sent (of %" PRId64
               "), %d re-sent\n", ms->finished, ms->failed, ms->n_frames - ms->finished - ms->failed,
               ms->n_frames, ms->resent);
    else
        printf("frames: %" PRId64 " finished, %" PRId64 " failed, 0 not sent (of %" PRId64
               " read), %d re-sent\n", ms->finished, ms->failed, ms->next_frame, ms->resent);
    printf("faults: %d worker losses, %d taken back, %d epochs, %d frames computed on the master\n",
           ms->losses, ms->taken_back, ms->epochs, ms->local);
    if (ms->latency.count)
        printf("latency: mean %.4f s, median %.4f s, p95 %.4f s, max %.4f s\n",
               ds_hist_mean(&ms->latency), ds_hist_quantile(&ms->latency, 0.5),
               ds_hist_quantile(&ms->latency, 0.95), ms->latency.max);
    printf("throughput: %.2f frames/s (%" PRId64 " frames in %.2f s)\n",
           elapsed > 0 ? (double)ms->finished / elapsed : 0, ms->finished, elapsed);
    for (int i = 0; i < ms->n_links; i++)
        printf("bytes %s: %.1f KB/frame, %.2f MB total\n", ms->links[i].name,
               ms->finished ? (double)ms->links[i].bytes / 1e3 / (double)ms->finished : 0,
               (double)ms->links[i].bytes / 1e6);
    for (int i = 0; i < ms->n_stages; i++)
        printf("stage %s: median %.2f ms\n", ms->stages[i].name,
               ds_hist_quantile(ms->stages[i].seconds, 0.5) * 1e3);
    if (cfg->check)
        printf("check: %d frames, max abs error %.3g, max relative error %.3g (limit %.0e)\n", ms->checked,
               ms->check_max_abs, ms->check_max_rel, CHECK_TOLERANCE);
    for (int i = 0; i < ms->n_failures; i++)
        printf("failed frame %" PRId64 ": %s\n", ms->failure_ids[i],
               ms->failures[i] ? ms->failures[i] : "out of memory");
    fflush(stdout);
}

/* Waits for the frames in flight (unless interrupted: they fail), stops the
 * watch and prints the summary.  Returns the exit status: 0 when every
 * frame of the run finished (and passed the check): master.ifr_num frames,
 * or every frame read when the source ended or an endless run was stopped. */
static int master_drain(master *ms, int sent)
{
    const ds_config *cfg = ms->cfg;
    if (sent == 0 && wait_slot(ms, 0, 0) != WAIT_DONE)
        sent = 1;
    ms->elapsed = ds_now() - ms->t_start;
    ds_master_watch_stop(ms);
    pthread_mutex_lock(&ms->lock);
    for (int64_t f = ms->low; f < ms->next_frame; f++)
        if (rec(ms, f)->state == FRAME_IN_FLIGHT)
            fail_frame(ms, f, ms->interrupted ? "interrupted before its result came"
                                              : "the master stopped before its result came");
    ms->skipped = ds_capture_skipped(ms->capture) - ms->skipped_before;
    pthread_mutex_unlock(&ms->lock);
    if (ms->interrupted)
        ds_log_warn("interrupted");
    print_summary(ms);
    if (cfg->check && ms->check_max_rel > CHECK_TOLERANCE)
        ds_log_error("check failed: relative error %.3g above %.0e", ms->check_max_rel, CHECK_TOLERANCE);
    int all_checked = !cfg->check || (ms->checked == ms->finished &&
                                      ms->check_max_rel <= CHECK_TOLERANCE);
    int64_t due = ms->n_frames && !ms->source_ended ? ms->n_frames : ms->next_frame;
    return ms->finished == due && !ms->interrupted && !ms->output_failed && all_checked ? 0 : 1;
}

/* ------------------------------------------------------------- opening */

/* Trace, model, source (its frame size sets the model's input), the
 * sender's cache and the result caches. */
static int open_input(master *ms, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    ds_capture_opts co = {
        .path = cfg->video_path,
        .video = {.rows = cfg->frame_rows, .cols = cfg->frame_cols, .format = cfg->video.format,
                  .fps = cfg->video.fps, .input_rows = cfg->video.input_rows,
                  .input_cols = cfg->video.input_cols, .timeout = cfg->video.timeout},
        .loop = cfg->video.loop,
        .drop = cfg->master.drop,
    };
    if (ds_trace_open(cfg->trace_dir, "master", &ms->trace, err) ||
        ds_model_load(cfg->dnn, &ms->model, err) || !(ms->capture = ds_capture_start(&co, err)))
        return -1;
    ms->rows = ds_capture_info(ms->capture)->rows;
    ms->cols = ds_capture_info(ms->capture)->cols;
    if (ds_model_set_input(&ms->model, 1, 3, ms->rows, ms->cols, err) ||
        ds_dif_cache_init(&ms->cache, ms->model.n_layers, err))
        return -1;
    for (int i = 0; i < ms->n_workers; i++)
        if (ds_dif_cache_init(&ms->link[i].results, ms->model.n_layers, err))
            return -1;
    if (ms->model.layers[0].out_shape.dims[1] > DS_PLANNER_MAX_INPUT)
        return ds_errorf(err, "%s: the network input has %lld channels; frames have 3",
                         ms->model.name, (long long)ms->model.layers[0].out_shape.dims[1]);
    ds_log_info("%s (%d layers), %s %s at %dx%d, %d workers, mode %s, drop %s", ms->model.name,
                ms->model.n_layers, ds_source_kind_name(cfg->video.kind),
                ds_capture_info(ms->capture)->path, ms->rows,
                ms->cols, ms->n_workers, ds_mode_name(cfg->mode),
                cfg->master.drop == DS_DROP_LATEST ? "latest" : "none");
    return 0;
}

/* The sinks of output: and the subscription server. */
static int open_output(master *ms, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    const ds_model *m = &ms->model;
    ms->output_names = calloc((size_t)m->n_outputs, sizeof *ms->output_names);
    if (!ms->output_names)
        return ds_errorf(err, "out of memory");
    for (int k = 0; k < m->n_outputs; k++)
        ms->output_names[k] = m->layers[m->outputs[k]].name;
    ds_output_opts o = {cfg->output.jsonl, cfg->output.tensors, cfg->output.labels, cfg->output.top_k};
    if ((o.jsonl || o.tensors) && !(ms->output = ds_output_open(&o, err)))
        return -1;
    if (cfg->output.subscribe && !(ms->subscribers = ds_subscribers_start(cfg, ms->sec, err)))
        return -1;
    return 0;
}

/* The trainer's predictors for this model, video and frame size, kept as
 * their portable blob (each segment's planner decodes its own copy).  The
 * trainer is needed for nothing else. */
static int fetch_predictors(master *ms, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    ds_rpc_channel *ch = ds_rpc_channel_new("trainer", cfg->route_master_trainer,
                                            cfg->max_message_bytes, ms->sec, err);
    int rc = -1;
    ds_predictors *pred = NULL;
    if (ch && ds_rpc_wait_ready(ch, cfg->master.connect_timeout, err) == 0 &&
        ds_rpc_call_predictors(ch, ms->model.hash, cfg->trainer.video_path, ms->rows, ms->cols,
                               (uint32_t)cfg->trainer.frame_num, 3600, &ms->pred_blob, err) == 0) {
        if (ds_predictors_decode(ms->pred_blob.data, ms->pred_blob.len, &ms->model, &pred, err))
            ds_error_prefix(err, "trainer Predictors");
        else
            rc = 0;
    }
    ds_predictors_free(pred);
    ds_rpc_channel_free(ch);
    if (rc == 0)
        ds_log_info("predictors received from the trainer");
    return rc;
}

/* A session id no other master shares: random, never 0. */
static uint64_t new_session_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
        id = (uint64_t)ds_wall_us() ^ ((uint64_t)getpid() << 40);
    return id ? id : 1;
}

/* Everything up to the first frame; logs why it failed. */
static int master_open(master *ms)
{
    const ds_config *cfg = ms->cfg;
    ds_error err;
    ms->session_id = new_session_id();
    ms->epoch = 1;
    ms->epochs = 1;
    ms->frames = calloc(DS_MASTER_WINDOW, sizeof *ms->frames);
    if (!ms->frames) {
        ds_log_error("out of memory");
        return -1;
    }
    for (int i = 0; i < DS_MASTER_WINDOW; i++)
        ms->frames[i].id = -1;
    ms->n_frames = cfg->master.ifr_num;
    ms->codec = ds_link_codec(cfg, cfg->master.bandwidth[0]);
    if (!(ms->sec = ds_role_security(cfg, "master", &err))) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    ds_log_info("connecting with %s", ds_rpc_security_mode(ms->sec));
    /* The check's executor now, not on the first result (its deadline runs). */
    if (open_input(ms, &err) || open_output(ms, &err) || (cfg->check && local_ready(ms, &err)) ||
        ds_master_signals_start(ms, &err) || ds_master_connect(ms, &err) ||
        (ds_config_needs_trainer(cfg) && fetch_predictors(ms, &err))) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    int up[DS_MAX_WORKERS], ids[DS_MAX_WORKERS], n;
    for (int i = 0; i < ms->n_workers; i++)
        up[i] = ms->link[i].up;
    if (best_chain(ms, up, ids, &n, &err) || use_chain(ms, ids, n, 0, &err) ||
        ds_master_watch_start(ms, &err)) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    ds_log_info("session %016llx", (unsigned long long)ms->session_id);
    log_epoch(ms);
    return 0;
}

/* ------------------------------------------------------------- closing */

static void master_close(master *ms)
{
    ds_master_watch_stop(ms);
    ds_subscribers_stop(ms->subscribers);
    ds_output_close(ms->output);
    free(ms->output_names);
    for (int i = 0; i < ms->n_workers; i++) {
        ds_rpc_channel_free(ms->link[i].ch);
        free(ms->link[i].costs);
        ds_dif_cache_free(&ms->link[i].results);
    }
    for (int i = 0; ms->frames && i < DS_MASTER_WINDOW; i++) {
        ds_tensor_free(&ms->frames[i].frame);
        free(ms->frames[i].error);
    }
    free(ms->frames);
    for (int i = 0; i < ms->n_failures; i++)
        free(ms->failures[i]);
    for (int i = 0; i < ms->n_stages; i++)
        free(ms->stages[i].seconds);
    ds_plan_jobs_free(&ms->pj);
    if (ms->planner_ready)
        ds_planner_free(&ms->planner);
    ds_buf_free(&ms->pred_blob);
    ds_tensor_free(&ms->prev_frame);
    ds_dif_cache_free(&ms->cache);
    ds_executor_free(ms->check_exec);
    ds_tensor_free(&ms->check_in);
    for (int i = 0; ms->check_out && i < ms->model.n_outputs; i++)
        ds_tensor_free(&ms->check_out[i]);
    free(ms->check_out);
    ds_buf_free(&ms->payload);
    ds_buf_free(&ms->req);
    ds_buf_free(&ms->resp);
    ds_capture_stop(ms->capture);
    ds_captured_free(&ms->captured);
    ds_model_free(&ms->model);
    ds_trace_close(ms->trace);
    ds_rpc_security_free(ms->sec);
    pthread_mutex_destroy(&ms->lock);
    pthread_cond_destroy(&ms->changed);
    pthread_mutex_destroy(&ms->check_lock);
    pthread_mutex_destroy(&ms->output_lock);
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
    pthread_mutex_init(&ms->output_lock, NULL);
    ds_signals_block();
    int status = 1;
    if (master_open(ms) == 0)
        status = master_drain(ms, master_send(ms));
    else if (ms->interrupted && ms->capture) /* e.g. while waiting for workers */
        print_summary(ms);
    master_close(ms);
    return status;
}
