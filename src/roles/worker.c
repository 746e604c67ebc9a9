/* worker.c - worker I of the chain.
 *
 * Threads: gRPC's handlers (Submit queues a frame and returns at once;
 * Results hands over the master's stream; Costs and Clock answer at once),
 * one executor thread that runs frames strictly in frame-id order, and one
 * sender thread that forwards to the next worker on the frame's chain or
 * reports to the master, so the next frame computes while this one travels.
 * Both queues are bounded.
 *
 * It serves one master session at a time (the one whose result stream is
 * open) and, within it, the latest epoch: see `session` below. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/queue.h"
#include "common/timing.h"
#include "common/trace.h"
#include "dif/dif.h"
#include "model/model.h"
#include "roles.h"
#include "roles/costs.h"
#include "rpc/rpc.h"

#define FRAME_QUEUE 16 /* frames accepted but not yet executed */
#define SEND_QUEUE 4   /* frames executed but not yet sent on (or being sent) */
#define SUBMIT_WAIT_S 30.0
/* Forwarding to the next worker: its Submit returns at once, so a call
 * that takes longer than this (plus 3x the transfer at the link's
 * bandwidth) means the next worker hangs: the master is told at once. */
#define FORWARD_DEADLINE_S 2.0
#define CONNECT_NEXT_S 1.0 /* a next worker that is not up by then has failed */
#define REPORT_WAIT_S 2.0  /* for room on the master's result stream */
#define TO_MASTER (-1)
/* How far ahead of the session's latest frame (and epoch) a request may
 * be: beyond, it is refused without touching the order, so that one
 * bogus id cannot make every later real frame "out of order". */
#define FRAME_WINDOW ((int64_t)1 << 20)
#define EPOCH_WINDOW 1024u

typedef struct frame_msg {
    Deltaslice__FrameRequest *req;
    int64_t recv_us;
    size_t bytes;
} frame_msg;

/* A packed message for the sender thread. */
typedef struct send_msg {
    ds_buf buf;
    int to; /* TO_MASTER, or the id of the worker to Submit to */
    uint64_t frame_id;
    uint64_t session_id;
    uint32_t epoch;
} send_msg;

/* The master session served (under order_lock).  Frames of another session,
 * or of an older epoch, are refused at Submit and dropped when already
 * queued: the master re-sends them under its new epoch.  After a failure
 * the rest of the epoch is refused, since the caches on this worker's
 * links are out of step from that frame on. */
typedef struct session {
    uint64_t id;        /* 0: no result stream open (e.g. just restarted) */
    uint32_t epoch;
    int64_t last_frame; /* last frame id accepted in this epoch, -1 = none */
    int64_t max_frame;  /* highest frame id accepted in the session, -1 = none */
    int broken;         /* a frame of this epoch failed ... */
    uint64_t broken_frame; /* ... this one */
} session;

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

    /* The master's result stream, whose session it is and who opened it
     * (under results_lock); the session and frame order (under order_lock). */
    pthread_mutex_t results_lock;
    ds_rpc_stream *results;
    uint64_t results_session;
    char results_identity[256];
    char results_peer[128];
    pthread_mutex_t order_lock;
    session session;

    ds_queue *frames; /* frame_msg *, for the executor */
    /* SEND_QUEUE send_msgs go round: from send_free to the executor, which
     * packs one and queues it on send_ready for the sender, which puts it
     * back.  Their buffers (a frame's tensors) are reused. */
    ds_queue *send_free, *send_ready;

    ds_rpc_security *sec;
    ds_rpc_channel *next[DS_MAX_WORKERS]; /* later workers it has routes to */
    ds_payloads outputs;
    /* The last result sent to the master in dif mode: its caches' key and
     * frame id + 1 (FinishReport.outputs_base of the next one).  The
     * executor's alone. */
    ds_dif_key result_key;
    uint64_t result_next;

    ds_rpc_server *srv;
    pthread_t exec_th, send_th;
    int threads; /* started: 1 executor, 2 sender */
} worker;

/* ---------------------------------------------------------------- queues */

static void frame_msg_free(void *p)
{
    frame_msg *f = p;
    ds_rpc_free_frame_request(f->req);
    free(f);
}

static void send_msg_free(void *p)
{
    send_msg *s = p;
    ds_buf_free(&s->buf);
    free(s);
}

static int make_queues(worker *w, ds_error *err)
{
    if (!(w->frames = ds_queue_new(FRAME_QUEUE, err)) ||
        !(w->send_free = ds_queue_new(SEND_QUEUE, err)) ||
        !(w->send_ready = ds_queue_new(SEND_QUEUE, err)))
        return -1;
    for (int i = 0; i < SEND_QUEUE; i++) {
        send_msg *s = calloc(1, sizeof *s);
        if (!s)
            return ds_errorf(err, "out of memory");
        ds_queue_push(w->send_free, s, 0); /* room for all of them */
    }
    return 0;
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

/* The worker step places after worker id on the frame's chain (-1 before
 * it: the previous one; 0: id itself), or -1 when there is none (the master,
 * the chain's end, or id not on the chain). */
static int chain_neighbour(const Deltaslice__FrameRequest *m, int id, int step)
{
    if (!m->n_chain) { /* every worker */
        int n = id + step;
        return n >= 0 && n < (int)m->n_jobs ? n : -1;
    }
    for (int k = 0; k < (int)m->n_chain; k++)
        if ((int)m->chain[k] == id) {
            int n = k + step;
            return n >= 0 && n < (int)m->n_chain ? (int)m->chain[n] : -1;
        }
    return -1;
}

/* A new epoch or session: a forward in progress (to a next worker that may
 * hang) is of no use any more and would hold up the new epoch's frames. */
static void abandon_forwards(worker *w)
{
    for (int j = w->id + 1; j < w->cfg->n_workers; j++)
        if (w->next[j])
            ds_rpc_channel_cancel(w->next[j]);
}

/* Whether frame m may be queued after the frames accepted so far (order_lock
 * held): DS_RPC_OK, or the status to refuse it with: FAILED_PRECONDITION
 * when it is not of the open session (this worker restarted, or another
 * master took over), ABORTED when its epoch is over or broke here (the
 * master re-sends it in a new one).  A newer epoch starts afresh. */
static int admit(worker *w, const Deltaslice__FrameRequest *m, ds_error *err)
{
    session *s = &w->session;
    unsigned long long f = (unsigned long long)m->frame_id;
    if (chain_neighbour(m, w->id, 0) < 0) {
        ds_errorf(err, "%s: frame %llu is not for this worker (not on its chain)", w->name, f);
        return DS_RPC_INVALID_ARGUMENT;
    }
    if (!s->id) {
        ds_errorf(err, "%s: frame %llu, but no master session is open here (was this worker "
                  "restarted?)", w->name, f);
        return DS_RPC_FAILED_PRECONDITION;
    }
    if (m->session_id != s->id) { /* (the open session's id is a secret) */
        ds_errorf(err, "%s: frame %llu belongs to master session %016llx, not to the open one",
                  w->name, f, (unsigned long long)m->session_id);
        return DS_RPC_FAILED_PRECONDITION;
    }
    /* Unsigned, in 64 bits: an id of 2^63 or more is not "negative", and an
     * epoch near 2^32 does not wrap its window. */
    if (m->frame_id > (uint64_t)(s->max_frame + FRAME_WINDOW) ||
        (uint64_t)m->epoch > (uint64_t)s->epoch + EPOCH_WINDOW) {
        ds_errorf(err, "%s: frame %llu of epoch %u is too far ahead of the session (frame %lld, "
                  "epoch %u)", w->name, f, m->epoch, (long long)s->max_frame, s->epoch);
        return DS_RPC_OUT_OF_RANGE;
    }
    if (m->epoch < s->epoch) {
        ds_errorf(err, "%s: frame %llu of epoch %u, but epoch %u has begun", w->name, f, m->epoch,
                  s->epoch);
        return DS_RPC_ABORTED;
    }
    if (m->epoch > s->epoch) {
        s->epoch = m->epoch;
        s->last_frame = -1;
        s->broken = 0;
        abandon_forwards(w);
    }
    if (s->broken) {
        ds_errorf(err, "%s: epoch %u broke at frame %llu; frame %llu waits for the next epoch",
                  w->name, s->epoch, (unsigned long long)s->broken_frame, f);
        return DS_RPC_ABORTED;
    }
    if ((int64_t)m->frame_id <= s->last_frame) {
        ds_errorf(err, "%s: frame %llu arrives after frame %lld: frames must come in order",
                  w->name, f, (long long)s->last_frame);
        return DS_RPC_FAILED_PRECONDITION;
    }
    return DS_RPC_OK;
}

static int on_submit(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    worker *w = ud;
    int64_t recv_us = ds_wall_us();
    Deltaslice__FrameRequest *m = ds_rpc_read_frame_request(req, len, (uint32_t)w->cfg->n_workers,
                                                            w->model.n_layers - 1, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    int code = DS_RPC_OK;
    uint64_t frame_id = m->frame_id; /* m belongs to the executor once queued */
    pthread_mutex_lock(&w->order_lock);
    if ((code = admit(w, m, err)) != DS_RPC_OK) {
        pthread_mutex_unlock(&w->order_lock);
        goto fail;
    }
    frame_msg *f = malloc(sizeof *f);
    if (f)
        *f = (frame_msg){m, recv_us, len};
    int queued = f ? ds_queue_push(w->frames, f, SUBMIT_WAIT_S) : DS_QUEUE_CLOSED;
    if (queued != DS_QUEUE_OK) {
        pthread_mutex_unlock(&w->order_lock);
        free(f);
        if (!f)
            ds_errorf(err, "%s: out of memory", w->name);
        else if (queued == DS_QUEUE_TIMEOUT)
            ds_errorf(err, "%s: frame queue full for %.0f s", w->name, SUBMIT_WAIT_S);
        else
            ds_errorf(err, "%s: shutting down", w->name);
        code = DS_RPC_RESOURCE_EXHAUSTED;
        goto fail;
    }
    w->session.last_frame = (int64_t)frame_id;
    if ((int64_t)frame_id > w->session.max_frame)
        w->session.max_frame = (int64_t)frame_id;
    pthread_mutex_unlock(&w->order_lock);
    ds_trace_event_at(w->trace, recv_us, frame_id, "receive", DS_TRACE_START);
    ds_trace_event(w->trace, frame_id, "receive", DS_TRACE_FINISH);
    return ds_rpc_write_ack(resp, err) ? DS_RPC_INTERNAL : DS_RPC_OK;
fail:
    ds_rpc_free_frame_request(m);
    return code;
}

/* Whether the caller may open a result stream for session q (results_lock
 * held): always when no other session's stream is alive; otherwise only
 * when it asks to take over with the identity that opened that one. */
static int may_open_results(worker *w, const ds_rpc_results_request *q, const char *identity,
                            ds_error *err)
{
    if (!w->results || !ds_rpc_stream_alive(w->results) || w->results_session == q->session_id)
        return DS_RPC_OK;
    if (q->takeover && !strcmp(identity, w->results_identity))
        return DS_RPC_OK;
    ds_errorf(err, "%s serves another master session (opened by %s%s%s from %s); %s", w->name,
              w->results_identity[0] ? "\"" : "", w->results_identity[0] ? w->results_identity
                                                                        : "an anonymous client",
              w->results_identity[0] ? "\"" : "", w->results_peer,
              q->takeover ? "only the same identity may take over"
                          : "set master.takeover: true to replace it (same credentials only)");
    return DS_RPC_ALREADY_EXISTS;
}

static int on_results(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *stream, ds_error *err)
{
    worker *w = ud;
    ds_rpc_results_request q;
    if (ds_rpc_read_results_request(req, len, &q, err))
        return DS_RPC_INVALID_ARGUMENT;
    const ds_rpc_caller *who = ds_rpc_current_caller();
    const char *identity = who ? who->identity : "";
    /* The master (a new one, or the same one taking this worker back) starts
     * afresh: frames and caches of before are forgotten. */
    pthread_mutex_lock(&w->results_lock);
    int code = may_open_results(w, &q, identity, err);
    if (code != DS_RPC_OK) {
        pthread_mutex_unlock(&w->results_lock);
        ds_log_warn("refused a result stream from %s: %s", ds_rpc_stream_peer(stream), err->msg);
        return code;
    }
    if (w->results)
        ds_rpc_stream_close(w->results, DS_RPC_ABORTED,
                            w->results_session == q.session_id ? "replaced by a new result stream"
                                                               : "taken over by another master session");
    w->results = stream;
    w->results_session = q.session_id;
    snprintf(w->results_identity, sizeof w->results_identity, "%s", identity);
    snprintf(w->results_peer, sizeof w->results_peer, "%s", ds_rpc_stream_peer(stream));
    pthread_mutex_unlock(&w->results_lock);
    /* Taken after results_lock is released: a Submit holding order_lock may
     * wait for the executor, which may wait for the sender, which may wait
     * for results_lock. */
    pthread_mutex_lock(&w->order_lock);
    int64_t max_frame = w->session.id == q.session_id ? w->session.max_frame : -1;
    w->session = (session){q.session_id, q.epoch, -1, max_frame, 0, 0};
    abandon_forwards(w);
    pthread_mutex_unlock(&w->order_lock);
    ds_log_info("master session %016llx (epoch %u) connected from %s%s%s", (unsigned long long)q.session_id,
                q.epoch, ds_rpc_stream_peer(stream), identity[0] ? " as " : "", identity);
    return DS_RPC_OK;
}

/* Costs change nothing a session relies on: while another master session's
 * stream is open, only its frame size is answered (from the profile in
 * place); a new size is set up only when no session is open, or for the
 * open session itself. */
static int costs_may_set_up(worker *w, int rows, int cols, ds_error *err)
{
    pthread_mutex_lock(&w->results_lock);
    int busy = w->results && ds_rpc_stream_alive(w->results);
    pthread_mutex_unlock(&w->results_lock);
    if (!busy || (w->node && w->rows == rows && w->cols == cols))
        return 0;
    return ds_errorf(err, "%s serves a master session at %dx%d; costs for %dx%d only once it ends",
                     w->name, w->rows, w->cols, rows, cols);
}

static int on_costs(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    worker *w = ud;
    ds_rpc_costs_query q;
    if (ds_rpc_read_costs_query(req, len, &q, err))
        return DS_RPC_INVALID_ARGUMENT;
    if (strcmp(q.model_hash, w->model.hash) != 0) {
        ds_errorf(err, "%s runs model %s (hash %s), the master asks for hash %s", w->name,
                  w->model.name, w->model.hash, q.model_hash);
        return DS_RPC_FAILED_PRECONDITION;
    }
    int code = DS_RPC_OK;
    pthread_mutex_lock(&w->setup_lock);
    if (costs_may_set_up(w, q.rows, q.cols, err))
        code = DS_RPC_FAILED_PRECONDITION;
    else if (setup_size(w, q.rows, q.cols, err))
        code = DS_RPC_INVALID_ARGUMENT;
    else if (ds_rpc_write_costs(w->costs.seconds, w->costs.flops, (size_t)w->model.n_layers,
                                (uint32_t)w->cfg->worker.threads, w->costs.host, resp, err))
        code = DS_RPC_INTERNAL;
    pthread_mutex_unlock(&w->setup_lock);
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

/* Hands a send_msg back to the pool. */
static void recycle_send(worker *w, send_msg *s)
{
    if (ds_queue_push(w->send_free, s, 0) != DS_QUEUE_OK) /* cannot happen: room for all */
        send_msg_free(s);
}

/* Whose frame a message is. */
typedef struct frame_ref {
    uint64_t frame_id, session_id;
    uint32_t epoch;
} frame_ref;

static frame_ref ref_of(const Deltaslice__FrameRequest *m)
{
    return (frame_ref){m->frame_id, m->session_id, m->epoch};
}

enum frame_standing { FRAME_CURRENT, FRAME_STALE, FRAME_BROKEN };

/* Stale: of an epoch or session that has ended (the master re-sends it);
 * broken: of the current epoch after one of its frames failed. */
static enum frame_standing standing(worker *w, frame_ref r)
{
    pthread_mutex_lock(&w->order_lock);
    const session *s = &w->session;
    enum frame_standing st = r.session_id != s->id || r.epoch != s->epoch ? FRAME_STALE
                             : s->broken                                 ? FRAME_BROKEN
                                                                         : FRAME_CURRENT;
    pthread_mutex_unlock(&w->order_lock);
    return st;
}

/* Refuses the rest of the frame's epoch (its caches are out of step). */
static void break_epoch(worker *w, frame_ref r)
{
    pthread_mutex_lock(&w->order_lock);
    session *s = &w->session;
    if (r.session_id == s->id && r.epoch == s->epoch && !s->broken) {
        s->broken = 1;
        s->broken_frame = r.frame_id;
    }
    pthread_mutex_unlock(&w->order_lock);
}

/* Queues a packed message for the sender thread (waits for a free one). */
static int queue_send(worker *w, const ProtobufCMessage *msg, int to, frame_ref r,
                      ds_error *err)
{
    void *p;
    if (ds_queue_pop(w->send_free, &p, -1) != DS_QUEUE_OK)
        return ds_errorf(err, "%s: shutting down", w->name);
    send_msg *s = p;
    s->to = to;
    s->frame_id = r.frame_id;
    s->session_id = r.session_id;
    s->epoch = r.epoch;
    if (ds_rpc_pack(msg, &s->buf, err)) {
        recycle_send(w, s);
        return -1;
    }
    if (ds_queue_push(w->send_ready, s, -1) != DS_QUEUE_OK) {
        recycle_send(w, s);
        return ds_errorf(err, "%s: shutting down", w->name);
    }
    return 0;
}

/* Pushes a packed FinishReport on the master's result stream.  A master
 * that takes no reports for REPORT_WAIT_S loses this one: its frame
 * deadline re-sends the frame. */
static void push_to_master(worker *w, const ds_buf *b, uint64_t frame_id)
{
    ds_error err;
    pthread_mutex_lock(&w->results_lock);
    ds_rpc_stream *st = w->results;
    int rc = st ? ds_rpc_stream_push(st, b->data, b->len, REPORT_WAIT_S, &err) : -1;
    pthread_mutex_unlock(&w->results_lock);
    if (!st)
        ds_log_warn("frame %" PRIu64 ": no master result stream; report dropped", frame_id);
    else if (rc)
        ds_log_warn("frame %" PRIu64 ": cannot report to the master: %s", frame_id, err.msg);
}

/* Reports a failed frame to the master (and refuses the rest of its epoch):
 * queued behind this worker's earlier reports, or pushed at once from the
 * sender thread itself. */
static void report_failure(worker *w, frame_ref f, const char *why, int from_sender)
{
    ds_log_warn("frame %" PRIu64 " failed: %s", f.frame_id, why);
    break_epoch(w, f);
    Deltaslice__FinishReport r = DELTASLICE__FINISH_REPORT__INIT;
    r.frame_id = f.frame_id;
    r.worker = (uint32_t)w->id;
    r.ok = 0;
    r.error = (char *)why;
    r.session_id = f.session_id;
    r.epoch = f.epoch;
    ds_error err;
    if (from_sender) {
        ds_buf b = {0};
        if (ds_rpc_pack(&r.base, &b, &err) == 0)
            push_to_master(w, &b, f.frame_id);
        ds_buf_free(&b);
    } else if (queue_send(w, &r.base, TO_MASTER, f, &err)) {
        ds_log_warn("cannot report frame %" PRIu64 ": %s", f.frame_id, err.msg);
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


/* Runs this worker's job of frame m (decode, execute, encode); the
 * encoded outputs go to w->outputs unless nobody needs them. */
static int run_job(worker *w, const Deltaslice__FrameRequest *m, int final, ds_dif_timing *tm,
                   ds_error *err)
{
    const Deltaslice__Job *job = m->jobs[w->id];
    size_t n_in = m->n_inputs;
    const uint8_t *in[n_in ? n_in : 1];
    size_t in_len[n_in ? n_in : 1];
    for (size_t i = 0; i < n_in; i++) {
        in[i] = m->inputs[i].data;
        in_len[i] = m->inputs[i].len;
    }
    pthread_mutex_lock(&w->setup_lock);
    int rc = -1;
    if (!w->node) {
        ds_errorf(err, "%s: no frame size set up (the master asks for costs first)", w->name);
    } else {
        ds_job j = {(int)job->n_exec_ids, job->exec_ids, (int)job->n_out_ids, job->out_ids};
        ds_codec_opts o = ds_link_codec(w->cfg, final ? 1e6 : w->cfg->master.bandwidth[w->id + 1]);
        o.update = ds_dif_link_update(m->dif);
        ds_dif_key key = {m->session_id, m->epoch, m->plan_id};
        rc = ds_dif_node_run(w->node, key, &j, (int)n_in, in, in_len, &o,
                             final && !m->return_outputs ? NULL : &w->outputs, tm, err);
    }
    pthread_mutex_unlock(&w->setup_lock);
    return rc;
}

/* What a frame carries on from this worker: the stage timings and link
 * byte counts so far plus this worker's, and its outputs (pointing into
 * the request and w->outputs). */
#define OWN_STAGES 4 /* receive, decode, execute, encode */
typedef struct carry {
    Deltaslice__StageTiming *own[OWN_STAGES];
    Deltaslice__StageTiming **timings;
    size_t n_timings;
    char link_name[32];
    Deltaslice__LinkBytes in_link;
    Deltaslice__LinkBytes **links;
    size_t n_links;
    ProtobufCBinaryData *outputs;
    size_t n_outputs;
} carry;

static void carry_free(carry *c)
{
    for (int i = 0; i < OWN_STAGES; i++)
        free(c->own[i]);
    free(c->timings);
    free(c->links);
    free(c->outputs);
}

/* Fills c (zeroed here; carry_free it also on failure).  stage[0..3] are
 * the bounds of decode, execute and encode in µs. */
static int carry_make(worker *w, const frame_msg *f, const int64_t stage[4], int with_outputs,
                      carry *c, ds_error *err)
{
    const Deltaslice__FrameRequest *m = f->req;
    memset(c, 0, sizeof *c);
    if (with_outputs) {
        c->n_outputs = (size_t)w->outputs.n;
        c->outputs = calloc(c->n_outputs ? c->n_outputs : 1, sizeof *c->outputs);
        if (!c->outputs)
            return ds_errorf(err, "out of memory");
        for (size_t i = 0; i < c->n_outputs; i++) {
            c->outputs[i].data = w->outputs.buf.data + w->outputs.off[i];
            c->outputs[i].len = w->outputs.off[i + 1] - w->outputs.off[i];
        }
    }
    c->own[0] = timing_new(w->id, "receive", f->recv_us, f->recv_us);
    c->own[1] = timing_new(w->id, "decode", stage[0], stage[1]);
    c->own[2] = timing_new(w->id, "execute", stage[1], stage[2]);
    c->own[3] = timing_new(w->id, "encode", stage[2], stage[3]);
    size_t n_t = m->n_timings;
    c->timings = malloc(sizeof *c->timings * (n_t + OWN_STAGES));
    if (!c->timings || !c->own[0] || !c->own[1] || !c->own[2] || !c->own[3])
        return ds_errorf(err, "out of memory");
    if (n_t) /* m->timings is NULL when empty */
        memcpy(c->timings, m->timings, sizeof *c->timings * n_t);
    memcpy(c->timings + n_t, c->own, sizeof c->own);
    c->n_timings = n_t + OWN_STAGES;
    /* This worker accounts for the link it received the frame on. */
    int prev = chain_neighbour(m, w->id, -1);
    if (prev < 0)
        snprintf(c->link_name, sizeof c->link_name, "m->w%d", w->id);
    else
        snprintf(c->link_name, sizeof c->link_name, "w%d->w%d", prev, w->id);
    deltaslice__link_bytes__init(&c->in_link);
    c->in_link.link = c->link_name;
    c->in_link.bytes = f->bytes;
    size_t n_b = m->n_bytes;
    c->links = malloc(sizeof *c->links * (n_b + 1));
    if (!c->links)
        return ds_errorf(err, "out of memory");
    if (n_b)
        memcpy(c->links, m->bytes, sizeof *c->links * n_b);
    c->links[n_b] = &c->in_link;
    c->n_links = n_b + 1;
    return 0;
}

/* Queues the frame's next message: the finish report to the master from
 * the last worker with work, else the request for the next worker (same
 * jobs, this worker's outputs as its inputs). */
static int pass_on(worker *w, const Deltaslice__FrameRequest *m, int final, const carry *c,
                   ds_error *err)
{
    if (final) {
        Deltaslice__FinishReport r = DELTASLICE__FINISH_REPORT__INIT;
        r.frame_id = m->frame_id;
        r.worker = (uint32_t)w->id;
        r.ok = 1;
        r.n_timings = c->n_timings;
        r.timings = c->timings;
        r.n_bytes = c->n_links;
        r.bytes = c->links;
        r.n_outputs = c->n_outputs;
        r.outputs = c->outputs;
        r.session_id = m->session_id;
        r.epoch = m->epoch;
        r.plan_id = m->plan_id;
        if (m->return_outputs && m->dif) {
            /* The node's send cache holds this result now: the next one of
             * the same key is an update against it. */
            ds_dif_key key = {m->session_id, m->epoch, m->plan_id};
            int same = key.session == w->result_key.session && key.epoch == w->result_key.epoch &&
                       key.plan == w->result_key.plan;
            r.outputs_base = same ? w->result_next : 0;
            w->result_key = key;
            w->result_next = m->frame_id + 1;
        }
        return queue_send(w, &r.base, TO_MASTER, ref_of(m), err);
    }
    Deltaslice__FrameRequest fwd = *m;
    fwd.n_inputs = c->n_outputs;
    fwd.inputs = c->outputs;
    fwd.n_timings = c->n_timings;
    fwd.timings = c->timings;
    fwd.n_bytes = c->n_links;
    fwd.bytes = c->links;
    int next = chain_neighbour(m, w->id, 1);
    if (next < 0)
        return ds_errorf(err, "%s: the chain ends here, but later workers have work", w->name);
    return queue_send(w, &fwd.base, next, ref_of(m), err);
}

static int execute_frame(worker *w, const frame_msg *f, ds_error *err)
{
    const Deltaslice__FrameRequest *m = f->req;
    int final = w->id >= last_active(m);
    int64_t t_start = ds_wall_us();
    ds_dif_timing tm = {0};
    if (run_job(w, m, final, &tm, err))
        return -1;
    /* Stage timings: decode, execute, encode, as measured (µs). */
    int64_t stage[4];
    stage[0] = t_start;
    stage[1] = stage[0] + (int64_t)(tm.decode * 1e6);
    stage[2] = stage[1] + (int64_t)(tm.execute * 1e6);
    stage[3] = stage[2] + (int64_t)(tm.encode * 1e6);
    static const char *const names[] = {"decode", "execute", "encode"};
    for (int s = 0; s < 3; s++) {
        ds_trace_event_at(w->trace, stage[s], m->frame_id, names[s], DS_TRACE_START);
        ds_trace_event_at(w->trace, stage[s + 1], m->frame_id, names[s], DS_TRACE_FINISH);
    }
    carry c;
    int rc = carry_make(w, f, stage, !final || m->return_outputs, &c, err);
    if (rc == 0)
        rc = pass_on(w, m, final, &c, err);
    carry_free(&c);
    return rc;
}

static void *executor_thread(void *arg)
{
    worker *w = arg;
    void *p;
    while (ds_queue_pop(w->frames, &p, -1) == DS_QUEUE_OK) {
        frame_msg *f = p;
        frame_ref r = ref_of(f->req);
        ds_error err;
        enum frame_standing st = standing(w, r);
        if (st == FRAME_STALE)
            ds_log_debug("frame %" PRIu64 " of epoch %u: superseded, dropped", r.frame_id, r.epoch);
        else if (st == FRAME_BROKEN)
            report_failure(w, r, "refused: an earlier frame of its epoch failed here", 0);
        else if (execute_frame(w, f, &err))
            report_failure(w, r, err.msg, 0);
        frame_msg_free(f);
    }
    return NULL;
}

/* Submits a packed request to the next worker on the chain, over the
 * config's route to it. */
static int forward(worker *w, const send_msg *s, ds_buf *resp, ds_error *err)
{
    ds_rpc_channel *ch = w->next[s->to];
    if (!ch)
        return ds_errorf(err, "no route w%d->w%d in %s", w->id, s->to, w->cfg->path);
    /* The master plans only on workers it reached: one that is not up
     * soon (it may just have come back: retry now) has failed. */
    if (ds_rpc_wait_ready(ch, 0, err)) {
        ds_rpc_channel_reset_backoff(ch);
        if (ds_rpc_wait_ready(ch, CONNECT_NEXT_S, err))
            return -1;
    }
    double mbps = ds_link_deadline_mbps(w->cfg, s->to);
    double deadline = FORWARD_DEADLINE_S + 3.0 * (double)s->buf.len / (mbps * 1e6);
    return ds_rpc_call_submit(ch, &s->buf, deadline, resp, err);
}

static void *sender_thread(void *arg)
{
    worker *w = arg;
    ds_buf resp = {0};
    void *p;
    while (ds_queue_pop(w->send_ready, &p, -1) == DS_QUEUE_OK) {
        send_msg *s = p;
        frame_ref r = {s->frame_id, s->session_id, s->epoch};
        ds_error err;
        int64_t t0 = ds_wall_us();
        enum frame_standing st = standing(w, r);
        if (st == FRAME_STALE || (st == FRAME_BROKEN && s->to != TO_MASTER)) {
            /* Nobody waits for it (the master moved on), or the next worker's
             * copies are out of step (the failure was reported). */
            recycle_send(w, s);
            continue;
        }
        if (s->to == TO_MASTER) {
            push_to_master(w, &s->buf, s->frame_id);
        } else if (forward(w, s, &resp, &err)) {
            char why[DS_ERROR_MAX + 32];
            snprintf(why, sizeof why, "forwarding to w%d: %s", s->to, err.msg);
            if (standing(w, r) == FRAME_STALE) /* abandoned: a new epoch began */
                ds_log_debug("frame %" PRIu64 ": %s", s->frame_id, why);
            else
                report_failure(w, r, why, 1);
            recycle_send(w, s);
            continue;
        }
        ds_trace_event_at(w->trace, t0, s->frame_id, "send", DS_TRACE_START);
        ds_trace_event(w->trace, s->frame_id, "send", DS_TRACE_FINISH);
        recycle_send(w, s);
    }
    ds_buf_free(&resp);
    return NULL;
}

/* --------------------------------------------------------------- main */

/* Queues, trace, model and (with frame_size) the profile; logs why it
 * failed. */
static int worker_open(worker *w)
{
    const ds_config *cfg = w->cfg;
    ds_error err;
    char role[16];
    snprintf(role, sizeof role, "w%d", w->id);
    if (!(w->sec = ds_role_security(cfg, role, &err)) || make_queues(w, &err) ||
        ds_trace_open(cfg->trace_dir, w->name, &w->trace, &err) ||
        ds_model_load(cfg->dnn, &w->model, &err)) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    ds_log_info("loaded %s (%d layers, hash %s)", w->model.name, w->model.n_layers, w->model.hash);
    /* Channels connect on first use; made now, the array never changes. */
    for (int j = w->id + 1; j < cfg->n_workers; j++) {
        char peer[16];
        snprintf(peer, sizeof peer, "w%d", j);
        if (cfg->route_worker[w->id][j] &&
            !(w->next[j] = ds_rpc_channel_new(peer, cfg->route_worker[w->id][j],
                                              cfg->max_message_bytes, w->sec, &err))) {
            ds_log_error("%s", err.msg);
            return -1;
        }
    }
    /* Profile now (progress bar on a TTY) rather than on the master's first
     * request. */
    if (cfg->frame_rows && setup_size(w, cfg->frame_rows, cfg->frame_cols, &err)) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    return 0;
}

/* The executor and sender threads, then the server; logs why it failed. */
static int worker_serve(worker *w)
{
    const ds_config *cfg = w->cfg;
    ds_error err;
    char addr[300];
    ds_config_listen_addr(cfg->listen_worker[w->id], cfg->port_worker[w->id], addr, sizeof addr);
    w->srv = ds_rpc_server_new(addr, cfg->max_message_bytes, w->sec, &err);
    if (!w->srv || ds_rpc_server_add_unary(w->srv, DS_RPC_WORKER_SUBMIT, on_submit, w, &err) ||
        ds_rpc_server_add_stream(w->srv, DS_RPC_WORKER_RESULTS, on_results, w, 64, &err) ||
        ds_rpc_server_add_unary(w->srv, DS_RPC_WORKER_COSTS, on_costs, w, &err) ||
        ds_rpc_server_add_unary(w->srv, DS_RPC_WORKER_CLOCK, ds_rpc_clock_handler, NULL, &err)) {
        ds_log_error("%s", err.msg);
        return -1;
    }
    if (pthread_create(&w->exec_th, NULL, executor_thread, w) == 0)
        w->threads |= 1;
    if (pthread_create(&w->send_th, NULL, sender_thread, w) == 0)
        w->threads |= 2;
    if (w->threads != 3 || ds_rpc_server_start(w->srv, 2, &err)) {
        ds_log_error("%s", w->threads != 3 ? "cannot start threads" : err.msg);
        return -1;
    }
    ds_log_info("serving on %s (%s)", addr, ds_rpc_security_mode(w->sec));
    return 0;
}

/* Stops the server (no more requests), lets the threads finish what is
 * queued, ends the master's stream and frees everything. */
static void worker_close(worker *w)
{
    if (w->srv)
        ds_rpc_server_shutdown(w->srv);
    if (w->frames)
        ds_queue_close(w->frames);
    if (w->threads & 1)
        pthread_join(w->exec_th, NULL);
    if (w->send_ready)
        ds_queue_close(w->send_ready);
    if (w->threads & 2)
        pthread_join(w->send_th, NULL);
    /* Frames still queued (no executor) are dropped with the process; the
     * master sees its streams end and reports them unfinished. */
    ds_queue_free(w->frames, frame_msg_free);
    pthread_mutex_lock(&w->results_lock);
    if (w->results)
        ds_rpc_stream_close(w->results, DS_RPC_UNAVAILABLE, "worker shutting down");
    w->results = NULL;
    pthread_mutex_unlock(&w->results_lock);
    ds_rpc_server_free(w->srv);
    for (int i = 0; i < DS_MAX_WORKERS; i++)
        ds_rpc_channel_free(w->next[i]);
    ds_queue_free(w->send_ready, send_msg_free);
    ds_queue_free(w->send_free, send_msg_free);
    ds_payloads_free(&w->outputs);
    ds_dif_node_free(w->node);
    ds_layer_costs_free(&w->costs);
    ds_model_free(&w->model);
    ds_trace_close(w->trace);
    ds_rpc_security_free(w->sec);
    pthread_mutex_destroy(&w->setup_lock);
    pthread_mutex_destroy(&w->results_lock);
    pthread_mutex_destroy(&w->order_lock);
    free(w);
}

int ds_worker_main(const ds_config *cfg, int id)
{
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return 1;
    w->cfg = cfg;
    w->id = id;
    w->session.last_frame = w->session.max_frame = -1;
    snprintf(w->name, sizeof w->name, "worker%d", id);
    pthread_mutex_init(&w->setup_lock, NULL);
    pthread_mutex_init(&w->results_lock, NULL);
    pthread_mutex_init(&w->order_lock, NULL);
    ds_signals_block(); /* before any thread starts: they inherit the mask */
    int status = 1;
    if (worker_open(w) == 0 && worker_serve(w) == 0) {
        ds_signals_wait(-1);
        ds_log_info("stopping");
        status = 0;
    }
    worker_close(w);
    return status;
}
