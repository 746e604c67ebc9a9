/* worker.c - worker I of the chain.
 *
 * Threads: gRPC's handlers (Submit queues a frame and returns at once;
 * Results hands over the master's stream; Costs and Clock answer at once),
 * one executor thread that runs frames strictly in frame-id order, and one
 * sender thread that forwards to worker I+1 or reports to the master, so the
 * next frame computes while this one travels.  Both queues are bounded. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "common/trace.h"
#include "dif/dif.h"
#include "model/model.h"
#include "roles.h"
#include "roles/costs.h"
#include "rpc/rpc.h"

#define FRAME_QUEUE 16 /* frames accepted but not yet executed */
#define SEND_QUEUE 4   /* frames executed but not yet sent on */
#define SUBMIT_WAIT_S 30.0

typedef struct frame_msg {
    Deltaslice__FrameRequest *req;
    int64_t recv_us;
    size_t bytes;
} frame_msg;

/* A packed message for the sender thread. */
typedef struct send_msg {
    ds_buf buf;
    int to_master; /* else: Submit to the next worker */
    uint64_t frame_id;
} send_msg;

typedef struct ring {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int head, count, cap, closed;
} ring;

typedef struct worker {
    const ds_config *cfg;
    int id;
    char name[16];
    ds_model model;
    ds_trace *trace;

    /* Set up for one frame size (under setup_lock). */
    pthread_mutex_t setup_lock;
    int rows, cols;
    ds_dif_node *node;
    ds_layer_costs costs;

    /* Session: the master's result stream; frame order. */
    pthread_mutex_t session_lock;
    ds_rpc_stream *results;
    pthread_mutex_t order_lock;
    int64_t last_frame; /* last frame id accepted, -1 = none */

    ring frames_ring;
    frame_msg frames[FRAME_QUEUE];
    ring send_ring;
    send_msg sends[SEND_QUEUE];

    ds_rpc_channel *next; /* worker I+1, dialled on first use */
    ds_payloads outputs;
} worker;

/* ---------------------------------------------------------- bounded rings */

static void ring_init(ring *r, int cap)
{
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->changed, NULL);
    r->head = r->count = r->closed = 0;
    r->cap = cap;
}

/* Waits for room (up to timeout_s, < 0 forever); returns the slot index to
 * fill, -1 on timeout or when closed. The lock is held on success. */
static int ring_reserve(ring *r, double timeout_s)
{
    double deadline = ds_now() + timeout_s;
    pthread_mutex_lock(&r->lock);
    while (r->count == r->cap && !r->closed) {
        if (timeout_s >= 0 && ds_now() >= deadline)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&r->changed, &r->lock, &ts);
    }
    if (r->count == r->cap || r->closed) {
        pthread_mutex_unlock(&r->lock);
        return -1;
    }
    return (r->head + r->count) % r->cap;
}

static void ring_commit(ring *r)
{
    r->count++;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
}

/* Waits for an item; returns its slot (lock held) or -1 when closed and
 * drained. */
static int ring_take(ring *r)
{
    pthread_mutex_lock(&r->lock);
    while (r->count == 0 && !r->closed)
        pthread_cond_wait(&r->changed, &r->lock);
    if (r->count == 0) {
        pthread_mutex_unlock(&r->lock);
        return -1;
    }
    return r->head;
}

static void ring_release(ring *r)
{
    r->head = (r->head + 1) % r->cap;
    r->count--;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
}

static void ring_close(ring *r)
{
    pthread_mutex_lock(&r->lock);
    r->closed = 1;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
}

/* ------------------------------------------------------------------ setup */

/* Shapes, executor and profile for a frame size (setup_lock held). */
static int setup_size(worker *w, int rows, int cols, ds_error *err)
{
    if (w->node && w->rows == rows && w->cols == cols)
        return 0;
    ds_dif_node_free(w->node);
    w->node = NULL;
    if (ds_model_set_input(&w->model, 1, 3, rows, cols, err))
        return -1;
    w->node = ds_dif_node_new(&w->model, DS_BACKEND_XNNPACK, w->cfg->worker.threads, err);
    if (!w->node)
        return -1;
    w->rows = rows;
    w->cols = cols;
    if (ds_layer_costs_load_or_profile(&w->model, w->cfg, &w->costs, err))
        return -1;
    return 0;
}

/* ------------------------------------------------------------- handlers */

static int on_submit(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    worker *w = ud;
    int64_t recv_us = ds_wall_us();
    Deltaslice__FrameRequest *m = (Deltaslice__FrameRequest *)ds_rpc_unpack(
        &deltaslice__frame_request__descriptor, req, len, 0, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    int code = DS_RPC_OK;
    if (ds_rpc_validate_frame_request(m, (uint32_t)w->cfg->n_workers, w->model.n_layers - 1, err)) {
        code = DS_RPC_INVALID_ARGUMENT;
        goto fail;
    }
    /* A frame must come after the last one accepted: frames execute in
     * frame-id order, each exactly once. */
    uint64_t frame_id = m->frame_id; /* m belongs to the executor once queued */
    pthread_mutex_lock(&w->order_lock);
    if ((int64_t)frame_id <= w->last_frame) {
        ds_errorf(err, "frame %" PRIu64 " arrives after frame %" PRId64 ": frames must come in order",
                  frame_id, w->last_frame);
        pthread_mutex_unlock(&w->order_lock);
        code = DS_RPC_FAILED_PRECONDITION;
        goto fail;
    }
    int slot = ring_reserve(&w->frames_ring, SUBMIT_WAIT_S);
    if (slot < 0) {
        pthread_mutex_unlock(&w->order_lock);
        ds_errorf(err, "%s: frame queue full for %.0f s", w->name, SUBMIT_WAIT_S);
        code = DS_RPC_RESOURCE_EXHAUSTED;
        goto fail;
    }
    w->last_frame = (int64_t)frame_id;
    w->frames[slot] = (frame_msg){m, recv_us, len};
    ring_commit(&w->frames_ring);
    pthread_mutex_unlock(&w->order_lock);
    ds_trace_event_at(w->trace, recv_us, frame_id, "receive", DS_TRACE_START);
    ds_trace_event(w->trace, frame_id, "receive", DS_TRACE_FINISH);
    Deltaslice__Ack ack = DELTASLICE__ACK__INIT;
    ack.ok = 1;
    return ds_rpc_pack(&ack.base, resp, err) ? DS_RPC_INTERNAL : DS_RPC_OK;
fail:
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return code;
}

static int on_results(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *stream, ds_error *err)
{
    worker *w = ud;
    ProtobufCMessage *m = ds_rpc_unpack(&deltaslice__result_stream_request__descriptor, req, len, 0, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    protobuf_c_message_free_unpacked(m, NULL);
    /* A new master session: earlier frames and caches are forgotten. */
    pthread_mutex_lock(&w->session_lock);
    if (w->results) {
        ds_info("a new master connected (%s); closing the previous result stream",
                ds_rpc_stream_peer(stream));
        ds_rpc_stream_close(w->results, DS_RPC_ABORTED, "replaced by a new master session");
    }
    w->results = stream;
    pthread_mutex_unlock(&w->session_lock);
    /* Taken after session_lock is released: a Submit holding order_lock may
     * wait for the executor, which may wait for the sender, which may wait
     * for session_lock. */
    pthread_mutex_lock(&w->order_lock);
    w->last_frame = -1;
    pthread_mutex_unlock(&w->order_lock);
    ds_info("master connected from %s", ds_rpc_stream_peer(stream));
    return DS_RPC_OK;
}

static int on_costs(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    worker *w = ud;
    Deltaslice__LayerCostsRequest *m = (Deltaslice__LayerCostsRequest *)ds_rpc_unpack(
        &deltaslice__layer_costs_request__descriptor, req, len, 0, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    int code = DS_RPC_OK;
    if (ds_rpc_validate_costs_request(m, err)) {
        code = DS_RPC_INVALID_ARGUMENT;
    } else if (strcmp(m->model_hash, w->model.hash) != 0) {
        ds_errorf(err, "%s runs model %s (hash %s), the master asks for hash %s", w->name,
                  w->model.name, w->model.hash, m->model_hash);
        code = DS_RPC_FAILED_PRECONDITION;
    }
    if (code) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        return code;
    }
    pthread_mutex_lock(&w->setup_lock);
    if (setup_size(w, (int)m->rows, (int)m->cols, err)) {
        code = DS_RPC_INVALID_ARGUMENT;
    } else {
        Deltaslice__LayerCosts c = DELTASLICE__LAYER_COSTS__INIT;
        c.n_seconds = c.n_flops = (size_t)w->model.n_layers;
        c.seconds = w->costs.seconds;
        c.flops = w->costs.flops;
        c.threads = (uint32_t)w->cfg->worker.threads;
        c.host = w->costs.host;
        if (ds_rpc_pack(&c.base, resp, err))
            code = DS_RPC_INTERNAL;
    }
    pthread_mutex_unlock(&w->setup_lock);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return code;
}

/* ------------------------------------------------------------ executing */

static Deltaslice__StageTiming *timing_new(int worker_id, const char *stage, int64_t start, int64_t end)
{
    Deltaslice__StageTiming *t = malloc(sizeof *t);
    if (!t)
        return NULL;
    deltaslice__stage_timing__init(t);
    t->worker = (uint32_t)worker_id;
    t->stage = (char *)stage;
    t->start_us = start;
    t->end_us = end;
    return t;
}

/* Queues a packed message for the sender thread. */
static int queue_send(worker *w, const ProtobufCMessage *msg, int to_master, uint64_t frame_id, ds_error *err)
{
    int slot = ring_reserve(&w->send_ring, -1);
    if (slot < 0)
        return ds_errorf(err, "%s: shutting down", w->name);
    send_msg *s = &w->sends[slot];
    int rc = ds_rpc_pack(msg, &s->buf, err);
    s->to_master = to_master;
    s->frame_id = frame_id;
    if (rc) {
        pthread_mutex_unlock(&w->send_ring.lock);
        return -1;
    }
    ring_commit(&w->send_ring);
    return 0;
}

/* Pushes a packed FinishReport on the master's result stream. */
static void push_to_master(worker *w, const ds_buf *b, uint64_t frame_id)
{
    ds_error err;
    pthread_mutex_lock(&w->session_lock);
    ds_rpc_stream *st = w->results;
    int rc = st ? ds_rpc_stream_push(st, b->data, b->len, 30.0, &err) : -1;
    pthread_mutex_unlock(&w->session_lock);
    if (!st)
        ds_warn("frame %" PRIu64 ": no master result stream; report dropped", frame_id);
    else if (rc)
        ds_warn("frame %" PRIu64 ": cannot report to the master: %s", frame_id, err.msg);
}

/* Reports a failed frame to the master: queued behind this worker's
 * earlier reports, or pushed at once from the sender thread itself. */
static void report_failure(worker *w, uint64_t frame_id, const char *why, int from_sender)
{
    ds_warn("frame %" PRIu64 " failed: %s", frame_id, why);
    Deltaslice__FinishReport r = DELTASLICE__FINISH_REPORT__INIT;
    r.frame_id = frame_id;
    r.worker = (uint32_t)w->id;
    r.ok = 0;
    r.error = (char *)why;
    ds_error err;
    if (from_sender) {
        ds_buf b = {0};
        if (ds_rpc_pack(&r.base, &b, &err) == 0)
            push_to_master(w, &b, frame_id);
        ds_buf_free(&b);
    } else if (queue_send(w, &r.base, 1, frame_id, &err)) {
        ds_warn("cannot report frame %" PRIu64 ": %s", frame_id, err.msg);
    }
}

/* The last worker with work in this frame's plan. */
static int last_active(const Deltaslice__FrameRequest *m)
{
    int last = 0;
    for (size_t i = 0; i < m->n_jobs; i++)
        if (m->jobs[i]->n_exec_ids)
            last = (int)i;
    return last;
}

static int execute_frame(worker *w, frame_msg *f, ds_error *err)
{
    Deltaslice__FrameRequest *m = f->req;
    Deltaslice__Job *job = m->jobs[w->id];
    int final = w->id >= last_active(m);
    size_t n_in = m->n_inputs;
    const uint8_t *in[n_in ? n_in : 1];
    size_t in_len[n_in ? n_in : 1];
    for (size_t i = 0; i < n_in; i++) {
        in[i] = m->inputs[i].data;
        in_len[i] = m->inputs[i].len;
    }
    int64_t t_start = ds_wall_us();
    ds_dif_timing tm = {0};
    ProtobufCBinaryData *payloads = NULL;
    size_t n_payloads = 0;
    pthread_mutex_lock(&w->setup_lock);
    int rc = -1;
    if (!w->node) {
        ds_errorf(err, "%s: no frame size set up (the master asks for costs first)", w->name);
    } else {
        ds_job j = {(int)job->n_exec_ids, job->exec_ids, (int)job->n_out_ids, job->out_ids};
        ds_codec_opts o = ds_link_codec(w->cfg, final ? 1e6 : w->cfg->master.bandwidth[w->id + 1]);
        o.update = ds_dif_link_update(m->dif);
        rc = ds_dif_node_run(w->node, m->plan_id, &j, (int)n_in, in, in_len, &o, final,
                             final && !m->check ? NULL : &w->outputs, &tm, err);
    }
    pthread_mutex_unlock(&w->setup_lock);
    if (rc)
        return -1;
    if (!final || m->check) {
        n_payloads = (size_t)w->outputs.n;
        payloads = calloc(n_payloads ? n_payloads : 1, sizeof *payloads);
        if (!payloads)
            return ds_errorf(err, "out of memory");
        for (size_t i = 0; i < n_payloads; i++) {
            payloads[i].data = w->outputs.buf.data + w->outputs.off[i];
            payloads[i].len = w->outputs.off[i + 1] - w->outputs.off[i];
        }
    }
    /* Stage timings: decode, execute, encode, as measured (µs). */
    int64_t d0 = t_start, d1 = d0 + (int64_t)(tm.decode * 1e6), e1 = d1 + (int64_t)(tm.execute * 1e6),
            c1 = e1 + (int64_t)(tm.encode * 1e6);
    static const char *const stages[] = {"decode", "execute", "encode"};
    int64_t bounds[] = {d0, d1, e1, c1};
    for (int s = 0; s < 3; s++) {
        ds_trace_event_at(w->trace, bounds[s], m->frame_id, stages[s], DS_TRACE_START);
        ds_trace_event_at(w->trace, bounds[s + 1], m->frame_id, stages[s], DS_TRACE_FINISH);
    }
    size_t n_t = m->n_timings;
    Deltaslice__StageTiming *own[4] = {
        timing_new(w->id, "receive", f->recv_us, f->recv_us),
        timing_new(w->id, "decode", d0, d1),
        timing_new(w->id, "execute", d1, e1),
        timing_new(w->id, "encode", e1, c1),
    };
    Deltaslice__StageTiming **timings = malloc(sizeof *timings * (n_t + 4));
    Deltaslice__LinkBytes **links = NULL;
    rc = -1;
    if (!timings || !own[0] || !own[1] || !own[2] || !own[3]) {
        ds_errorf(err, "out of memory");
        goto out;
    }
    if (n_t) /* m->timings is NULL when empty */
        memcpy(timings, m->timings, sizeof *timings * n_t);
    memcpy(timings + n_t, own, sizeof own);
    /* This worker accounts for the link it received the frame on. */
    char link_name[32];
    if (w->id == 0)
        snprintf(link_name, sizeof link_name, "m->w0");
    else
        snprintf(link_name, sizeof link_name, "w%d->w%d", w->id - 1, w->id);
    Deltaslice__LinkBytes in_link = DELTASLICE__LINK_BYTES__INIT;
    in_link.link = link_name;
    in_link.bytes = f->bytes;
    size_t n_b = m->n_bytes;
    links = malloc(sizeof *links * (n_b + 1));
    if (!links) {
        ds_errorf(err, "out of memory");
        goto out;
    }
    if (n_b)
        memcpy(links, m->bytes, sizeof *links * n_b);
    links[n_b] = &in_link;

    if (final) {
        Deltaslice__FinishReport r = DELTASLICE__FINISH_REPORT__INIT;
        r.frame_id = m->frame_id;
        r.worker = (uint32_t)w->id;
        r.ok = 1;
        r.n_timings = n_t + 4;
        r.timings = timings;
        r.n_bytes = n_b + 1;
        r.bytes = links;
        r.n_outputs = n_payloads;
        r.outputs = payloads;
        rc = queue_send(w, &r.base, 1, m->frame_id, err);
    } else {
        /* Forward: same jobs, this worker's outputs as the next inputs. */
        Deltaslice__FrameRequest fwd = *m;
        fwd.n_inputs = n_payloads;
        fwd.inputs = payloads;
        fwd.n_timings = n_t + 4;
        fwd.timings = timings;
        fwd.n_bytes = n_b + 1;
        fwd.bytes = links;
        rc = queue_send(w, &fwd.base, 0, m->frame_id, err);
    }
out:
    for (int i = 0; i < 4; i++)
        free(own[i]);
    free(timings);
    free(links);
    free(payloads);
    return rc;
}

static void *executor_thread(void *arg)
{
    worker *w = arg;
    for (;;) {
        int slot = ring_take(&w->frames_ring);
        if (slot < 0)
            break;
        frame_msg f = w->frames[slot];
        ring_release(&w->frames_ring);
        ds_error err;
        if (execute_frame(w, &f, &err))
            report_failure(w, f.req->frame_id, err.msg, 0);
        protobuf_c_message_free_unpacked(&f.req->base, NULL);
    }
    return NULL;
}

static void *sender_thread(void *arg)
{
    worker *w = arg;
    ds_buf resp = {0};
    for (;;) {
        int slot = ring_take(&w->send_ring);
        if (slot < 0)
            break;
        send_msg *s = &w->sends[slot];
        pthread_mutex_unlock(&w->send_ring.lock); /* the slot stays ours until released */
        ds_error err;
        int64_t t0 = ds_wall_us();
        if (s->to_master) {
            push_to_master(w, &s->buf, s->frame_id);
        } else {
            int code;
            if (!w->next) {
                char peer[16];
                snprintf(peer, sizeof peer, "w%d", w->id + 1);
                w->next = ds_rpc_channel_new(peer, w->cfg->route_worker_next[w->id],
                                             w->cfg->max_message_bytes, &err);
            }
            if (!w->next || ds_rpc_wait_ready(w->next, 30.0, &err) ||
                ds_rpc_call_unary(w->next, DS_RPC_WORKER_SUBMIT, s->buf.data, s->buf.len, 60.0, &resp,
                                  &code, &err)) {
                char why[DS_ERROR_MAX + 32];
                snprintf(why, sizeof why, "forwarding to w%d: %s", w->id + 1, err.msg);
                report_failure(w, s->frame_id, why, 1);
                pthread_mutex_lock(&w->send_ring.lock);
                ring_release(&w->send_ring);
                continue;
            }
        }
        ds_trace_event_at(w->trace, t0, s->frame_id, "send", DS_TRACE_START);
        ds_trace_event(w->trace, s->frame_id, "send", DS_TRACE_FINISH);
        pthread_mutex_lock(&w->send_ring.lock);
        ring_release(&w->send_ring);
    }
    ds_buf_free(&resp);
    return NULL;
}

/* --------------------------------------------------------------- main */

int ds_worker_main(const ds_config *cfg, int id)
{
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return 1;
    w->cfg = cfg;
    w->id = id;
    w->last_frame = -1;
    snprintf(w->name, sizeof w->name, "worker%d", id);
    pthread_mutex_init(&w->setup_lock, NULL);
    pthread_mutex_init(&w->session_lock, NULL);
    pthread_mutex_init(&w->order_lock, NULL);
    ring_init(&w->frames_ring, FRAME_QUEUE);
    ring_init(&w->send_ring, SEND_QUEUE);
    ds_signals_block();

    int status = 1;
    ds_error err;
    ds_rpc_server *srv = NULL;
    pthread_t exec_th, send_th;
    int threads = 0;
    if (ds_trace_open(cfg->trace_dir, w->name, &w->trace, &err) || ds_model_load(cfg->dnn, &w->model, &err)) {
        ds_error("%s", err.msg);
        goto out;
    }
    ds_info("loaded %s (%d layers, hash %s)", w->model.name, w->model.n_layers, w->model.hash);
    if (cfg->frame_rows) {
        /* Profile now (progress bar on a TTY) rather than on the master's
         * first request. */
        if (setup_size(w, cfg->frame_rows, cfg->frame_cols, &err)) {
            ds_error("%s", err.msg);
            goto out;
        }
    }
    char addr[64];
    snprintf(addr, sizeof addr, "0.0.0.0:%d", cfg->port_worker[id]);
    srv = ds_rpc_server_new(addr, cfg->max_message_bytes, &err);
    if (!srv || ds_rpc_server_add_unary(srv, DS_RPC_WORKER_SUBMIT, on_submit, w, &err) ||
        ds_rpc_server_add_stream(srv, DS_RPC_WORKER_RESULTS, on_results, w, 64, &err) ||
        ds_rpc_server_add_unary(srv, DS_RPC_WORKER_COSTS, on_costs, w, &err) ||
        ds_rpc_server_add_unary(srv, DS_RPC_WORKER_CLOCK, ds_rpc_clock_handler, NULL, &err)) {
        ds_error("%s", err.msg);
        goto out;
    }
    if (pthread_create(&exec_th, NULL, executor_thread, w) == 0)
        threads |= 1;
    if (pthread_create(&send_th, NULL, sender_thread, w) == 0)
        threads |= 2;
    if (threads != 3 || ds_rpc_server_start(srv, 2, &err)) {
        ds_error("%s", threads != 3 ? "cannot start threads" : err.msg);
        goto out;
    }
    ds_info("serving on port %d", cfg->port_worker[id]);
    ds_signals_wait(-1);
    ds_info("stopping");
    status = 0;
out:
    if (srv)
        ds_rpc_server_shutdown(srv);
    ring_close(&w->frames_ring);
    if (threads & 1)
        pthread_join(exec_th, NULL);
    ring_close(&w->send_ring);
    if (threads & 2)
        pthread_join(send_th, NULL);
    /* Frames still queued are dropped with the process; the master sees
     * its streams end and reports them unfinished. */
    while (w->frames_ring.count) {
        protobuf_c_message_free_unpacked(&w->frames[w->frames_ring.head].req->base, NULL);
        w->frames_ring.head = (w->frames_ring.head + 1) % FRAME_QUEUE;
        w->frames_ring.count--;
    }
    pthread_mutex_lock(&w->session_lock);
    if (w->results)
        ds_rpc_stream_close(w->results, DS_RPC_UNAVAILABLE, "worker shutting down");
    w->results = NULL;
    pthread_mutex_unlock(&w->session_lock);
    ds_rpc_server_free(srv);
    ds_rpc_channel_free(w->next);
    for (int i = 0; i < SEND_QUEUE; i++)
        ds_buf_free(&w->sends[i].buf);
    ds_payloads_free(&w->outputs);
    ds_dif_node_free(w->node);
    ds_layer_costs_free(&w->costs);
    ds_model_free(&w->model);
    ds_trace_close(w->trace);
    free(w);
    return status;
}
