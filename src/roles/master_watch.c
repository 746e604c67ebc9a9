/* master_watch.c - the master's watch over its workers (see master.h).
 *
 * A crashed worker ends its result stream at once; a hung one (stopped, or
 * its link frozen) misses a heartbeat: a Clock call every WATCH_PERIOD_S
 * that must answer within link.heartbeat (max(1 s, 5x its predicted stage
 * time), which its server threads do however busy its executor is).  A lost
 * worker is probed every PROBE_PERIOD_S, gRPC's reconnect backoff (0.1 s
 * doubling to 2 s) pacing the connection attempts; once it answers, it gets
 * a fresh result stream for the current epoch and is taken back. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/timing.h"
#include "master.h"
#include "roles.h"

#define WATCH_PERIOD_S 0.25
#define PROBE_PERIOD_S 0.5
#define PROBE_DEADLINE_S 0.5
#define COSTS_DEADLINE_S 600.0 /* a worker may be profiling */
#define CLOCK_PROBES 5 /* per worker; the one with the shortest round trip counts */

/* ---------------------------------------------------------------- streams */

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
        int rc = ds_rpc_reader_next(ms->link[w].reader, &msg, -1, &code, &err);
        if (rc == 1) {
            ds_master_report(ms, w, msg.data, msg.len);
            continue;
        }
        if (rc == DS_RPC_TIMEOUT)
            continue;
        /* Ended: by the worker, a lost connection, or our own cancel (then
         * the worker is already lost or the run is over). */
        char why[DS_ERROR_MAX + 32];
        snprintf(why, sizeof why, "result stream ended: %s", rc == 0 ? "closed by the worker" : err.msg);
        ds_master_lose(ms, w, why);
        break;
    }
    ds_buf_free(&msg);
    return NULL;
}

/* Opens worker w's result stream for the current epoch and its reader;
 * takeover only at start (taking a worker back must not take it from a
 * master that took over from us).  *code: the refusal's status. */
static int open_stream(master *ms, int w, int takeover, int *code, ds_error *err)
{
    worker_link *l = &ms->link[w];
    pthread_mutex_lock(&ms->lock);
    ds_rpc_results_request q = {ms->session_id, ms->epoch, takeover};
    pthread_mutex_unlock(&ms->lock);
    if (!(l->reader = ds_rpc_open_results(l->ch, &q, code, err)))
        return -1;
    reader_arg *ra = malloc(sizeof *ra);
    if (!ra)
        return ds_errorf(err, "out of memory");
    *ra = (reader_arg){ms, w};
    if (pthread_create(&l->reader_th, NULL, reader_thread, ra)) {
        free(ra);
        return ds_errorf(err, "cannot start a reader thread");
    }
    l->reader_started = 1;
    return 0;
}

/* Cancels worker w's result stream and joins its reader (lock not held). */
static void close_stream(master *ms, int w)
{
    worker_link *l = &ms->link[w];
    if (l->reader)
        ds_rpc_reader_cancel(l->reader);
    if (l->reader_started) {
        pthread_join(l->reader_th, NULL);
        l->reader_started = 0;
    }
    ds_rpc_reader_free(l->reader);
    l->reader = NULL;
}

void ds_master_lose(master *ms, int w, const char *why)
{
    pthread_mutex_lock(&ms->lock);
    worker_link *l = &ms->link[w];
    int was_up = l->up && !ms->closing;
    if (was_up) {
        l->up = 0;
        l->lost = 1;
        ms->losses++;
        ms->recover = 1;
        if (ds_master_on_chain(ms, w))
            ms->recover_broken = 1;
        pthread_cond_broadcast(&ms->changed);
    }
    pthread_mutex_unlock(&ms->lock);
    if (!was_up)
        return;
    ds_log_warn("w%d lost: %s", w, why);
    ds_rpc_channel_cancel(l->ch); /* a Submit stuck on a hung worker ends now */
}

/* ------------------------------------------------------------- joining in */

/* Worker w's layer costs into its link (lock not held: w is not up);
 * *code: the call's status. */
static int fetch_costs(master *ms, int w, int *code, ds_error *err)
{
    ds_rpc_costs c;
    if (ds_rpc_call_costs(ms->link[w].ch, ms->model.hash, ms->rows, ms->cols,
                          (size_t)ms->model.n_layers, COSTS_DEADLINE_S, &c, code, err))
        return -1;
    double total = 0;
    for (int l = 0; l < ms->model.n_layers; l++)
        total += c.seconds[l];
    ds_log_info("w%d (%s, %u thread%s): %.1f ms per frame", w, c.host, c.threads,
                c.threads == 1 ? "" : "s", total * 1e3);
    pthread_mutex_lock(&ms->lock);
    free(ms->link[w].costs);
    ms->link[w].costs = c.seconds;
    pthread_mutex_unlock(&ms->lock);
    return 0;
}

/* Costs and a result stream, then up: the main thread plans it in.
 * *code: the status of a refusal (DS_RPC_ALREADY_EXISTS: another master's). */
static int join(master *ms, int w, int takeover, int *code, ds_error *err)
{
    if (fetch_costs(ms, w, code, err) || open_stream(ms, w, takeover, code, err)) {
        close_stream(ms, w);
        return -1;
    }
    pthread_mutex_lock(&ms->lock);
    ms->link[w].up = 1;
    ms->link[w].lost = 0;
    ms->link[w].heartbeat = 1.0;
    ms->recover = 1;
    pthread_cond_broadcast(&ms->changed);
    pthread_mutex_unlock(&ms->lock);
    return 0;
}

/* Clock offsets for aligning traces and for timing the links between
 * workers from their reports: peer = master + offset. */
static void align_clock(master *ms, int w)
{
    int64_t offset, rtt;
    ds_error probe_err; /* no offset: the trace goes unaligned */
    if (ds_rpc_call_clock(ms->link[w].ch, DS_RPC_WORKER_CLOCK, CLOCK_PROBES, &offset, &rtt,
                          &probe_err) == 0) {
        pthread_mutex_lock(&ms->lock);
        ms->link[w].clock_offset_us = offset;
        pthread_mutex_unlock(&ms->lock);
        char name[24];
        snprintf(name, sizeof name, "worker%d", w);
        ds_trace_clock(ms->trace, name, offset, rtt);
    }
}

int ds_master_connect(master *ms, ds_error *err)
{
    const ds_config *cfg = ms->cfg;
    for (int i = 0; i < ms->n_workers; i++) {
        char peer[16];
        snprintf(peer, sizeof peer, "w%d", i);
        ms->link[i].ch = ds_rpc_channel_new(peer, cfg->route_master_worker[i],
                                            cfg->max_message_bytes, ms->sec, err);
        if (!ms->link[i].ch)
            return -1;
        ms->link[i].lost = 1;
    }
    /* Every worker gets the same time from the start, the first its own. */
    double until = ds_now() + cfg->master.connect_timeout;
    for (int i = 0; i < ms->n_workers; i++) {
        ds_error why;
        double left = until - ds_now();
        int code = DS_RPC_OK;
        if (ds_rpc_wait_ready(ms->link[i].ch, left > 0 ? left : 0, &why) == 0) {
            align_clock(ms, i);
            if (join(ms, i, cfg->master.takeover, &code, &why) == 0)
                continue;
        }
        /* Another master's worker, or credentials it refuses: not a fault
         * to wait out. */
        if (ds_rpc_interrupted() || code == DS_RPC_ALREADY_EXISTS ||
            code == DS_RPC_UNAUTHENTICATED)
            return ds_errorf(err, "%s", why.msg);
        /* A worker that refuses our certificate just closes the connection. */
        int tls = strcmp(ds_rpc_security_mode(ms->sec), "mutual TLS") == 0 &&
                  (code == DS_RPC_OK || code == DS_RPC_UNAVAILABLE);
        ds_log_warn("w%d not usable at start (%s%s); it is probed and taken in when it answers", i,
                    why.msg, tls ? "; if its log says it refused a TLS handshake, this master's "
                                   "certificate is not signed by its CA" : "");
    }
    pthread_mutex_lock(&ms->lock);
    ms->recover = 0; /* the main thread plans from scratch anyway */
    pthread_mutex_unlock(&ms->lock);
    return 0;
}

/* --------------------------------------------------------------- watching */

/* One heartbeat of an up worker, or one probe of a lost one. */
static void watch_one(master *ms, int w, int probe)
{
    worker_link *l = &ms->link[w];
    pthread_mutex_lock(&ms->lock);
    int up = l->up, lost = l->lost;
    double deadline = l->heartbeat;
    pthread_mutex_unlock(&ms->lock);
    ds_error err;
    if (up) {
        if (ds_rpc_call_ping(l->ch, DS_RPC_WORKER_CLOCK, deadline, &err)) {
            char why[DS_ERROR_MAX + 64];
            snprintf(why, sizeof why, "heartbeat failed (limit %.1f s): %s", deadline, err.msg);
            ds_master_lose(ms, w, why);
        }
        return;
    }
    if (!lost || !probe)
        return;
    close_stream(ms, w); /* the old one, if any, is over */
    if (ds_rpc_call_ping(l->ch, DS_RPC_WORKER_CLOCK, PROBE_DEADLINE_S, &err))
        return;
    int code;
    if (join(ms, w, 0, &code, &err)) {
        /* Said once per refusal, not at every probe. */
        pthread_mutex_lock(&ms->lock);
        int said = l->refusal == code;
        l->refusal = code;
        pthread_mutex_unlock(&ms->lock);
        if (!said)
            ds_log_warn("w%d answers but cannot be taken back: %s", w, err.msg);
        return;
    }
    pthread_mutex_lock(&ms->lock);
    ms->taken_back++;
    l->refusal = DS_RPC_OK;
    pthread_mutex_unlock(&ms->lock);
    ds_log_info("w%d is back", w);
}

static void *watch_thread(void *arg)
{
    master *ms = arg;
    double next_probe = 0;
    for (;;) {
        pthread_mutex_lock(&ms->lock);
        struct timespec until = ds_deadline(WATCH_PERIOD_S);
        if (!ms->closing && !ms->interrupted)
            pthread_cond_timedwait(&ms->changed, &ms->lock, &until);
        int stop = ms->closing || ms->interrupted;
        pthread_mutex_unlock(&ms->lock);
        if (stop)
            break;
        int probe = ds_now() >= next_probe;
        if (probe)
            next_probe = ds_now() + PROBE_PERIOD_S;
        for (int w = 0; w < ms->n_workers; w++)
            watch_one(ms, w, probe);
    }
    return NULL;
}

/* SIGINT/SIGTERM: every wait of the master ends within 0.1 s. */
static void *signal_thread(void *arg)
{
    master *ms = arg;
    for (;;) {
        int sig = ds_signals_wait(0.1);
        pthread_mutex_lock(&ms->lock);
        /* An endless run's first signal is its normal end: read no more,
         * finish the frames in flight.  A second one stops at once. */
        int drain = sig && !ms->n_frames && ms->t_start > 0 && !ms->draining;
        if (drain)
            ms->draining = 1;
        else if (sig)
            ms->interrupted = 1;
        int stop = ms->closing || ms->interrupted;
        pthread_cond_broadcast(&ms->changed);
        pthread_mutex_unlock(&ms->lock);
        if (drain)
            ds_log_info("stopping: finishing the frames in flight (signal again to stop at once)");
        else if (sig)
            ds_rpc_interrupt();
        if (stop)
            break;
    }
    return NULL;
}

int ds_master_signals_start(master *ms, ds_error *err)
{
    if (pthread_create(&ms->signal_th, NULL, signal_thread, ms))
        return ds_errorf(err, "cannot start the signal thread");
    ms->signal_started = 1;
    return 0;
}

int ds_master_watch_start(master *ms, ds_error *err)
{
    if (pthread_create(&ms->watch_th, NULL, watch_thread, ms))
        return ds_errorf(err, "cannot start the watch thread");
    ms->watch_started = 1;
    return 0;
}

void ds_master_watch_stop(master *ms)
{
    pthread_mutex_lock(&ms->lock);
    ms->closing = 1;
    pthread_cond_broadcast(&ms->changed);
    pthread_mutex_unlock(&ms->lock);
    /* The run is over: a take-back in progress (its Costs call may wait for
     * a profiling worker) ends now. */
    ds_rpc_interrupt();
    if (ms->watch_started)
        pthread_join(ms->watch_th, NULL);
    if (ms->signal_started)
        pthread_join(ms->signal_th, NULL);
    ms->watch_started = ms->signal_started = 0;
    for (int i = 0; i < ms->n_workers; i++)
        close_stream(ms, i);
}
