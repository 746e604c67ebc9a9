/* rpc.c - gRPC C core behind the small API of rpc.h.
 *
 * Server: one completion queue polled by n threads; every registered method
 * keeps a few outstanding "request a call" slots, so gRPC reads the request
 * message for us (GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER).  A unary call is
 * answered with one batch (initial metadata, message, status, close).  A
 * stream keeps a RECV_CLOSE_ON_SERVER outstanding to learn of a disconnect,
 * and sends its queued messages one batch at a time (gRPC allows one send in
 * flight per call).
 *
 * Client: each call gets its own completion queue, so any thread may call
 * on a channel without coordination. */
#include "rpc/rpc.h"
#include "rpc/security.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "common/log.h"
#include "common/queue.h"
#include "common/timing.h"
#include "rpc/accept.h"

_Static_assert(DS_RPC_OK == (int)GRPC_STATUS_OK, "status codes");
_Static_assert(DS_RPC_INVALID_ARGUMENT == (int)GRPC_STATUS_INVALID_ARGUMENT, "status codes");
_Static_assert(DS_RPC_DEADLINE_EXCEEDED == (int)GRPC_STATUS_DEADLINE_EXCEEDED, "status codes");
_Static_assert(DS_RPC_RESOURCE_EXHAUSTED == (int)GRPC_STATUS_RESOURCE_EXHAUSTED, "status codes");
_Static_assert(DS_RPC_UNIMPLEMENTED == (int)GRPC_STATUS_UNIMPLEMENTED, "status codes");
_Static_assert(DS_RPC_UNAVAILABLE == (int)GRPC_STATUS_UNAVAILABLE, "status codes");
_Static_assert(DS_RPC_UNAUTHENTICATED == (int)GRPC_STATUS_UNAUTHENTICATED, "status codes");

static const char *const code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *ds_rpc_code_name(int code)
{
    if (code < 0 || (size_t)code >= sizeof code_names / sizeof code_names[0])
        return "UNKNOWN_STATUS";
    return code_names[code];
}

/* ------------------------------------------------------------- helpers */

/* A stranger refused (what: "a call from ipv4:..."), one line per second at
 * most: a flood must not fill the disk. */
static void log_refusal(const char *what, const char *why)
{
    static atomic_llong last_us, quiet;
    long long now = (long long)ds_wall_us(), last = atomic_load(&last_us);
    if (now - last < 1000000 || !atomic_compare_exchange_strong(&last_us, &last, now)) {
        atomic_fetch_add(&quiet, 1);
        return;
    }
    long long more = atomic_exchange(&quiet, 0);
    if (more)
        ds_log_warn("refused %s: %s (and %lld more in the last seconds)", what, why, more);
    else
        ds_log_warn("refused %s: %s", what, why);
}

/* gRPC's own log lines (long status trees) go to our log at debug level:
 * every failure that matters reaches the caller as a status and message.
 * A failed TLS handshake reaches no caller (a server refusing a client's
 * certificate, say): it is a refusal. */
static void grpc_log_to_ds(gpr_log_func_args *a)
{
    if (a->message && strstr(a->message, "Handshake failed")) {
        log_refusal("a TLS handshake", a->message);
        return;
    }
    ds_log_debug("grpc %s:%d: %.400s", a->file ? a->file : "?", a->line,
             a->message ? a->message : "");
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void set_grpc_log(void)
{
    gpr_set_log_function(grpc_log_to_ds);
}

static void rpc_init(void)
{
    pthread_once(&log_once, set_grpc_log);
    ds_rpc_accept_guard_install();
    grpc_init();
}

/* "Submit" from "/deltaslice.Worker/Submit", for messages. */
static const char *short_method(const char *path)
{
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

static gpr_timespec deadline_after(double seconds)
{
    if (!(seconds > 0) || seconds > 1e9)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_micros((int64_t)(seconds * 1e6), GPR_TIMESPAN));
}

/* Set once by ds_rpc_interrupt; every client wait looks at it. */
static atomic_int interrupted;
#define INTERRUPT_POLL_S 0.1 /* how often a blocked client call looks at it */

void ds_rpc_interrupt(void) { atomic_store(&interrupted, 1); }

int ds_rpc_interrupted(void) { return atomic_load(&interrupted); }

static grpc_byte_buffer *bb_from(const void *p, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(p ? (const char *)p : "", len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Copies a received message into out (reused). */
static int bb_to_buf(grpc_byte_buffer *bb, ds_buf *out, ds_error *err)
{
    out->len = 0;
    size_t total = grpc_byte_buffer_length(bb);
    if (ds_buf_reserve(out, total ? total : 1, err))
        return -1;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return ds_errorf(err, "cannot read a received message (decompression failed)");
    grpc_slice s;
    int rc = 0;
    while (grpc_byte_buffer_reader_next(&rd, &s)) {
        size_t n = GRPC_SLICE_LENGTH(s);
        if (rc == 0 && ds_buf_append(out, GRPC_SLICE_START_PTR(s), n, err))
            rc = -1;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&rd);
    return rc;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Channel/server args: message limits (+ reconnect backoff for channels). */
typedef struct arg_set {
    grpc_arg a[12];
    grpc_channel_args args;
} arg_set;

static void arg_int(arg_set *s, const char *key, int v)
{
    grpc_arg *a = &s->a[s->args.num_args++];
    a->type = GRPC_ARG_INTEGER;
    a->key = (char *)key;
    a->value.integer = v;
}

static int check_max(size_t *max_msg, ds_error *err)
{
    if (*max_msg == 0)
        *max_msg = DS_RPC_DEFAULT_MAX_MSG;
    if (*max_msg > DS_RPC_MAX_MAX_MSG)
        return ds_errorf(err, "message size limit %zu exceeds gRPC's maximum %zu", *max_msg,
                         DS_RPC_MAX_MAX_MSG);
    return 0;
}

/* Keepalive pings on open calls: a result stream idles between runs, NAT
 * boxes drop idle flows, and a peer that vanished without closing its
 * socket must still end the stream.  The server accepts the clients' pings
 * (its default would answer pings every 30 s with GOAWAY "too many pings"). */
static atomic_int keepalive_ms = 30000;

void ds_rpc_set_keepalive(double seconds)
{
    double ms = seconds * 1000;
    atomic_store(&keepalive_ms, ms < 100 ? 100 : ms > 3.6e6 ? 3600000 : (int)ms);
}

static void make_args(arg_set *s, size_t max_msg, int client)
{
    memset(s, 0, sizeof *s);
    s->args.args = s->a;
    arg_int(s, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)max_msg);
    arg_int(s, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)max_msg);
    int ka = atomic_load(&keepalive_ms);
    arg_int(s, GRPC_ARG_KEEPALIVE_TIME_MS, ka);
    arg_int(s, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ka / 3 > 20000 ? 20000 : ka / 3 + 1000);
    arg_int(s, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0); /* no cap while idle */
    if (client) {
        arg_int(s, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
        /* gRPC gives every connection attempt at least this long (its
         * MIN_CONNECT_TIMEOUT): a TLS handshake over a slow link to a Pi
         * needs more than the backoff's first 0.1 s. */
        arg_int(s, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
        arg_int(s, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
        /* Retries would buffer every sent message; we have no retry policy. */
        arg_int(s, GRPC_ARG_ENABLE_RETRIES, 0);
    } else {
        /* gRPC's default SO_REUSEPORT would let a second server (a worker
         * started twice) share the port silently. */
        arg_int(s, GRPC_ARG_ALLOW_REUSEPORT, 0);
        arg_int(s, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, ka / 3);
        arg_int(s, GRPC_ARG_MAX_CONCURRENT_STREAMS, DS_RPC_MAX_STREAMS_PER_CONN);
    }
}

/* ---------------------------------------------------------------- server */

enum tag_kind {
    TAG_REQUEST,      /* a registered method's new call arrived */
    TAG_GENERIC,      /* a call to an unregistered method arrived */
    TAG_UNARY_DONE,   /* the final batch of a unary (or rejected) call */
    TAG_STREAM_SEND,  /* a stream message was sent */
    TAG_STREAM_STATUS,/* a stream's final status was sent */
    TAG_STREAM_CLOSED,/* a stream's call is over (status sent or cancelled) */
    TAG_STREAM_MD,    /* a stream's initial metadata was sent (handler accepted) */
    TAG_SHUTDOWN,     /* the server finished shutting down */
};

typedef struct tag {
    enum tag_kind kind;
    void *obj;
} tag;

#define SLOTS_PER_METHOD 2
#define DEFAULT_STREAM_QUEUE 64

typedef struct method {
    char *path;
    void *handle;
    ds_rpc_unary_fn unary;
    ds_rpc_stream_fn stream;
    void *ud;
    size_t queue;
} method;

/* One outstanding request for a new call. */
typedef struct slot {
    tag tag;
    method *m; /* NULL: the generic slot for unknown methods */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} slot;

typedef struct worker_thread {
    struct ds_rpc_server *srv;
    pthread_t th;
    ds_buf req, resp;
} worker_thread;

struct ds_rpc_server {
    grpc_server *server;
    const ds_rpc_security *sec;
    grpc_completion_queue *cq;
    int port;
    size_t max_msg;
    method *methods;
    size_t n_methods;
    slot *slots;
    size_t n_slots;
    worker_thread *threads;
    int n_threads;
    pthread_mutex_t mu;
    int started;
    int stopped; /* ds_rpc_server_shutdown done */
    atomic_int shutting_down;
    tag shutdown_tag;
    /* Handlers running (under mu): the queue is shut down only once none
     * is, since a call its client cancelled counts as done for gRPC's
     * shutdown while its handler may still answer it. */
    int busy;
    int shutdown_seen;
};

struct ds_rpc_stream {
    tag closed_tag, send_tag, status_tag, md_tag;
    pthread_mutex_t mu;
    pthread_cond_t ended; /* signalled when gone is set (ds_rpc_stream_close_wait) */
    ds_rpc_server *srv; /* valid while grpc_refs > 0 */
    grpc_call *call;    /* NULL once gRPC is done with the call */
    size_t max_msg;
    ds_queue *q; /* messages not yet sent; closed once no more may come */
    grpc_byte_buffer *in_flight;
    int md_sent, sending, status_started, close_requested, gone, cancelled;
    int rejected; /* the handler refused the stream: no "accepted" mark */
    int close_code;
    char *close_msg;
    grpc_slice close_details;
    const char *gone_why;
    int grpc_refs; /* outstanding batches */
    int app_refs;  /* the handler's, plus ours while the handler runs */
    char peer[128];
    char method[64];
};

/* gRPC's peer text ("ipv6:%5B::1%5D:40112": brackets URI-escaped) as people
 * write addresses, and the same without the port. */
static void peer_text(const char *raw, char *peer, size_t peer_len, char *host, size_t host_len)
{
    size_t n = 0;
    while (*raw && n + 1 < peer_len) {
        if (!strncmp(raw, "%5B", 3) || !strncmp(raw, "%5D", 3)) {
            peer[n++] = raw[2] == 'B' ? '[' : ']';
            raw += 3;
        } else {
            peer[n++] = *raw++;
        }
    }
    peer[n] = '\0';
    snprintf(host, host_len, "%s", peer);
    /* The port follows the last colon, unless that is the scheme's or one
     * inside an IPv6 address's brackets. */
    char *port = strrchr(host, ':'), *bracket = strrchr(host, ']');
    if (port && port != strchr(host, ':') && (!strchr(host, '[') || (bracket && port > bracket)))
        *port = '\0';
}

/* The caller of the handler running on this thread (ds_rpc_current_caller). */
static _Thread_local const ds_rpc_caller *current_caller;

const ds_rpc_caller *ds_rpc_current_caller(void)
{
    return current_caller;
}

/* A stream's initial metadata says whether its handler accepted it, so that
 * ds_rpc_reader_open can tell a refusal from a stream that is open. */
#define STREAM_MARK_KEY "ds-stream"
static grpc_metadata accepted_mark;

static void set_initial_metadata(grpc_op *op, int accepted)
{
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    if (accepted) {
        accepted_mark.key = grpc_slice_from_static_string(STREAM_MARK_KEY);
        accepted_mark.value = grpc_slice_from_static_string("accepted");
        op->data.send_initial_metadata.count = 1;
        op->data.send_initial_metadata.metadata = &accepted_mark;
    }
}

static void slot_arm(ds_rpc_server *srv, slot *s)
{
    grpc_call_error e;
    grpc_metadata_array_init(&s->md);
    s->call = NULL;
    s->payload = NULL;
    if (s->m) {
        e = grpc_server_request_registered_call(srv->server, s->m->handle, &s->call,
                                                &s->deadline, &s->md, &s->payload, srv->cq,
                                                srv->cq, &s->tag);
    } else {
        grpc_call_details_init(&s->details);
        e = grpc_server_request_call(srv->server, &s->call, &s->details, &s->md, srv->cq,
                                     srv->cq, &s->tag);
    }
    if (e != GRPC_CALL_OK)
        ds_log_error("rpc server: cannot request calls for %s: %s", s->m ? s->m->path : "(any)",
                 grpc_call_error_to_string(e));
}

/* Answers a call with status (and the reply when code is OK); the call
 * reference passes to the batch. */
typedef struct unary_done {
    tag tag;
    grpc_call *call;
    grpc_byte_buffer *reply;
    grpc_slice details;
    int cancelled;
} unary_done;

static void finish_call(grpc_call *call, int code, const ds_buf *reply, const char *message)
{
    unary_done *u = calloc(1, sizeof *u);
    if (!u) {
        grpc_call_cancel(call, NULL);
        grpc_call_unref(call);
        return;
    }
    u->tag.kind = TAG_UNARY_DONE;
    u->tag.obj = u;
    u->call = call;
    u->details = grpc_slice_from_copied_string(message ? message : "");
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (code == DS_RPC_OK) {
        u->reply = bb_from(reply->data, reply->len);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = u->reply;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    ops[n++].data.send_status_from_server.status_details = &u->details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &u->cancelled;
    grpc_call_error e = grpc_call_start_batch(call, ops, n, &u->tag, NULL);
    if (e != GRPC_CALL_OK) {
        ds_log_error("rpc server: cannot answer a call: %s", grpc_call_error_to_string(e));
        grpc_call_cancel(call, NULL);
        if (u->reply)
            grpc_byte_buffer_destroy(u->reply);
        grpc_slice_unref(u->details);
        grpc_call_unref(call);
        free(u);
    }
}

static void unary_done_free(unary_done *u)
{
    if (u->reply)
        grpc_byte_buffer_destroy(u->reply);
    grpc_slice_unref(u->details);
    grpc_call_unref(u->call);
    free(u);
}

static void handle_unary(worker_thread *w, method *m, grpc_call *call, grpc_byte_buffer *payload)
{
    ds_error err = {{0}};
    int code;
    w->resp.len = 0;
    if (!payload) {
        code = DS_RPC_INVALID_ARGUMENT;
        ds_errorf(&err, "%s: no request message", short_method(m->path));
    } else if (bb_to_buf(payload, &w->req, &err)) {
        code = DS_RPC_INTERNAL;
    } else {
        code = m->unary(m->ud, w->req.data ? w->req.data : (const uint8_t *)"", w->req.len,
                        &w->resp, &err);
        if (code < 0 || code > DS_RPC_UNAUTHENTICATED)
            code = DS_RPC_INTERNAL;
        if (code != DS_RPC_OK && !err.msg[0])
            snprintf(err.msg, sizeof err.msg, "%s failed", short_method(m->path));
        if (code == DS_RPC_OK && w->resp.len > w->srv->max_msg) {
            code = DS_RPC_RESOURCE_EXHAUSTED;
            ds_errorf(&err, "%s: reply of %zu bytes exceeds the limit of %zu",
                      short_method(m->path), w->resp.len, w->srv->max_msg);
        }
    }
    if (payload)
        grpc_byte_buffer_destroy(payload);
    finish_call(call, code, &w->resp, err.msg);
}

/* ---- streams (server side); all state under s->mu, except that the queue
 * has its own lock (taken inside s->mu, never the other way round) */

static void bb_free(void *bb)
{
    grpc_byte_buffer_destroy(bb);
}

/* The stream is gone: nothing more will be sent. */
static void stream_drop_queue(ds_rpc_stream *s)
{
    ds_queue_close(s->q);
    ds_queue_drain(s->q, bb_free);
}

static void stream_free(ds_rpc_stream *s)
{
    ds_queue_free(s->q, bb_free);
    free(s->close_msg);
    pthread_cond_destroy(&s->ended);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Starts the next send (a queued message, or the final status). */
static void stream_pump(ds_rpc_stream *s)
{
    if (s->gone || !s->call) {
        stream_drop_queue(s);
        return;
    }
    if (s->sending || s->status_started)
        return;
    void *next = NULL;
    if (ds_queue_pop(s->q, &next, 0) != DS_QUEUE_OK && !s->close_requested)
        return;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!s->md_sent) {
        set_initial_metadata(&ops[n++], !s->rejected);
        s->md_sent = 1;
    }
    tag *t;
    if (next) {
        s->in_flight = next;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = s->in_flight;
        s->sending = 1;
        t = &s->send_tag;
    } else {
        s->close_details = grpc_slice_from_copied_string(s->close_msg ? s->close_msg : "");
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)s->close_code;
        ops[n++].data.send_status_from_server.status_details = &s->close_details;
        s->status_started = 1;
        t = &s->status_tag;
    }
    s->grpc_refs++;
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK) {
        ds_log_error("rpc server: %s stream to %s: cannot send: %s", s->method, s->peer,
                 grpc_call_error_to_string(e));
        s->grpc_refs--;
        if (t == &s->send_tag) {
            grpc_byte_buffer_destroy(s->in_flight);
            s->in_flight = NULL;
            s->sending = 0;
        } else {
            grpc_slice_unref(s->close_details);
        }
        s->gone = 1;
        s->gone_why = "send failed";
        grpc_call_cancel(s->call, NULL);
        stream_drop_queue(s);
    }
}

/* Drops one gRPC-side reference (s->mu held); returns 1 when the caller must
 * free s after unlocking. */
static int stream_grpc_unref(ds_rpc_stream *s)
{
    if (--s->grpc_refs > 0)
        return 0;
    grpc_call_unref(s->call);
    s->call = NULL;
    s->srv = NULL;
    return s->app_refs == 0;
}

static void stream_event(tag *t, int success)
{
    ds_rpc_stream *s = t->obj;
    pthread_mutex_lock(&s->mu);
    switch (t->kind) {
    case TAG_STREAM_SEND:
        grpc_byte_buffer_destroy(s->in_flight);
        s->in_flight = NULL;
        s->sending = 0;
        if (!success && !s->gone) {
            s->gone = 1;
            s->gone_why = "peer disconnected";
        }
        stream_pump(s);
        break;
    case TAG_STREAM_STATUS:
        grpc_slice_unref(s->close_details);
        break;
    case TAG_STREAM_MD:
        break;
    default: /* TAG_STREAM_CLOSED: the call is over */
        if (!s->gone) {
            s->gone = 1;
            if (!s->cancelled)
                s->gone_why = "stream closed";
            else if (s->srv && atomic_load(&s->srv->shutting_down))
                s->gone_why = "server shutting down";
            else
                s->gone_why = "peer disconnected";
            if (s->cancelled)
                ds_log_info("%s stream to %s ended: %s", s->method, s->peer, s->gone_why);
        }
        stream_drop_queue(s);
        break;
    }
    if (s->gone)
        pthread_cond_broadcast(&s->ended);
    int free_it = stream_grpc_unref(s);
    pthread_mutex_unlock(&s->mu);
    if (free_it)
        stream_free(s);
}

/* Sends the initial metadata now that the handler accepted the stream: the
 * client's ds_rpc_reader_open waits for it, so a client that opened a
 * stream knows the handler has run. */
static void stream_accepted(ds_rpc_stream *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->md_sent && !s->gone && s->call) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        set_initial_metadata(&op, 1);
        s->md_sent = 1;
        s->grpc_refs++;
        grpc_call_error e = grpc_call_start_batch(s->call, &op, 1, &s->md_tag, NULL);
        if (e != GRPC_CALL_OK) {
            s->grpc_refs--;
            ds_log_error("rpc server: %s stream to %s: cannot send metadata: %s", s->method, s->peer,
                     grpc_call_error_to_string(e));
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* Drops one application-side reference. */
static void stream_release(ds_rpc_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int free_it = --s->app_refs == 0 && s->grpc_refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (free_it)
        stream_free(s);
}

static void handle_stream(worker_thread *w, method *m, grpc_call *call,
                          grpc_byte_buffer *payload)
{
    ds_rpc_stream *s = calloc(1, sizeof *s);
    if (s)
        s->q = ds_queue_new(m->queue, NULL);
    if (!s || !s->q) {
        free(s);
        if (payload)
            grpc_byte_buffer_destroy(payload);
        ds_buf none = {0};
        finish_call(call, DS_RPC_RESOURCE_EXHAUSTED, &none, "out of memory opening a stream");
        return;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->ended, NULL);
    s->closed_tag = (tag){TAG_STREAM_CLOSED, s};
    s->send_tag = (tag){TAG_STREAM_SEND, s};
    s->status_tag = (tag){TAG_STREAM_STATUS, s};
    s->md_tag = (tag){TAG_STREAM_MD, s};
    s->srv = w->srv;
    s->call = call;
    s->max_msg = w->srv->max_msg;
    s->app_refs = 2;
    s->grpc_refs = 1;
    snprintf(s->method, sizeof s->method, "%s", short_method(m->path));
    snprintf(s->peer, sizeof s->peer, "%s", current_caller ? current_caller->peer : "?");

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &s->cancelled;
    grpc_call_error e = grpc_call_start_batch(call, &op, 1, &s->closed_tag, NULL);
    if (e != GRPC_CALL_OK) {
        ds_log_error("rpc server: %s stream: %s", s->method, grpc_call_error_to_string(e));
        grpc_call_cancel(call, NULL);
        grpc_call_unref(call);
        if (payload)
            grpc_byte_buffer_destroy(payload);
        stream_free(s);
        return;
    }

    ds_error err = {{0}};
    int code;
    if (!payload) {
        code = DS_RPC_INVALID_ARGUMENT;
        ds_errorf(&err, "%s: no request message", s->method);
    } else if (bb_to_buf(payload, &w->req, &err)) {
        code = DS_RPC_INTERNAL;
    } else {
        code = m->stream(m->ud, w->req.data ? w->req.data : (const uint8_t *)"", w->req.len, s,
                         &err);
        if (code < 0 || code > DS_RPC_UNAUTHENTICATED)
            code = DS_RPC_INTERNAL;
        if (code != DS_RPC_OK && !err.msg[0])
            snprintf(err.msg, sizeof err.msg, "%s rejected", s->method);
    }
    if (payload)
        grpc_byte_buffer_destroy(payload);
    if (code == DS_RPC_OK)
        stream_accepted(s);
    else {
        /* Rejected: end the call, unless the handler already closed it. */
        pthread_mutex_lock(&s->mu);
        int closed = s->close_requested;
        s->rejected = 1;
        pthread_mutex_unlock(&s->mu);
        if (!closed)
            ds_rpc_stream_close(s, code, err.msg);
    }
    stream_release(s);
}

int ds_rpc_stream_push(ds_rpc_stream *s, const void *msg, size_t len, double timeout_s,
                       ds_error *err)
{
    if (len > s->max_msg)
        return ds_errorf(err, "%s stream to %s: message of %zu bytes exceeds the limit of %zu",
                         s->method, s->peer, len, s->max_msg);
    /* The queue is closed when the stream closes or goes away, which wakes
     * a push waiting for room. */
    grpc_byte_buffer *bb = bb_from(msg, len);
    int rc = ds_queue_push(s->q, bb, timeout_s);
    if (rc == DS_QUEUE_TIMEOUT) {
        grpc_byte_buffer_destroy(bb);
        return ds_errorf(err, "%s stream to %s: queue full (%zu messages) for %.1f s",
                         s->method, s->peer, ds_queue_cap(s->q), timeout_s);
    }
    pthread_mutex_lock(&s->mu);
    if (rc == DS_QUEUE_CLOSED) {
        const char *why = s->close_requested ? "stream closed" : s->gone_why;
        pthread_mutex_unlock(&s->mu);
        grpc_byte_buffer_destroy(bb);
        return ds_errorf(err, "%s stream to %s: %s", s->method, s->peer, why ? why : "closed");
    }
    stream_pump(s);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int ds_rpc_stream_alive(ds_rpc_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int alive = !s->gone && !s->close_requested;
    pthread_mutex_unlock(&s->mu);
    return alive;
}

const char *ds_rpc_stream_peer(const ds_rpc_stream *s)
{
    return s->peer;
}

/* s->mu held. */
static void stream_close_locked(ds_rpc_stream *s, int code, const char *message)
{
    if (!s->close_requested) {
        s->close_requested = 1;
        ds_queue_close(s->q); /* queued messages still go out, before the status */
        s->close_code = (code < 0 || code > DS_RPC_UNAUTHENTICATED) ? DS_RPC_INTERNAL : code;
        s->close_msg = message ? dup_str(message) : NULL;
        stream_pump(s);
    }
}

void ds_rpc_stream_close(ds_rpc_stream *s, int code, const char *message)
{
    pthread_mutex_lock(&s->mu);
    stream_close_locked(s, code, message);
    pthread_mutex_unlock(&s->mu);
    stream_release(s);
}

int ds_rpc_stream_close_wait(ds_rpc_stream *s, int code, const char *message, double timeout_s)
{
    struct timespec until = ds_deadline(timeout_s);
    pthread_mutex_lock(&s->mu);
    stream_close_locked(s, code, message);
    /* gone is set by the call's RECV_CLOSE_ON_SERVER, which completes once
     * the status is sent (or the call is cancelled); without a call left
     * (never started, or already over) there is nothing to wait for. */
    while (!s->gone && s->call)
        if (pthread_cond_timedwait(&s->ended, &s->mu, &until) == ETIMEDOUT)
            break;
    int ended = s->gone || !s->call;
    pthread_mutex_unlock(&s->mu);
    stream_release(s);
    return ended ? 0 : -1;
}

/* ---- server threads */


static void handle_new_call(worker_thread *w, slot *sl, int success)
{
    ds_rpc_server *srv = w->srv;
    if (!success) { /* the server is shutting down: this slot is done */
        grpc_metadata_array_destroy(&sl->md);
        if (!sl->m)
            grpc_call_details_destroy(&sl->details);
        return;
    }
    grpc_call *call = sl->call;
    grpc_byte_buffer *payload = sl->payload;
    method *m = sl->m;
    char unknown[160] = "", identity[256], why[128], peer[160], host[160];
    /* Before anything else: nothing unauthenticated reaches a handler, nor
     * learns which methods exist. */
    int authentic = ds_rpc_authenticate(srv->sec, call, &sl->md, identity, sizeof identity, why,
                                        sizeof why) == 0;
    char *raw = grpc_call_get_peer(call);
    peer_text(raw ? raw : "?", peer, sizeof peer, host, sizeof host);
    gpr_free(raw);
    if (!m) {
        grpc_slice p = sl->details.method;
        int n = (int)GRPC_SLICE_LENGTH(p);
        snprintf(unknown, sizeof unknown, "unknown method %.*s", n > 100 ? 100 : n,
                 (const char *)GRPC_SLICE_START_PTR(p));
        grpc_call_details_destroy(&sl->details);
    }
    grpc_metadata_array_destroy(&sl->md);
    /* Re-arm before handling, so a slow handler does not hold up new calls.
     * The queue stays open until this handler is done (see busy). */
    pthread_mutex_lock(&srv->mu);
    srv->busy++;
    pthread_mutex_unlock(&srv->mu);
    slot_arm(srv, sl);

    ds_buf none = {0};
    if (!authentic) {
        if (payload)
            grpc_byte_buffer_destroy(payload);
        char what[200];
        snprintf(what, sizeof what, "a call from %s", peer);
        log_refusal(what, why);
        finish_call(call, DS_RPC_UNAUTHENTICATED, &none, why);
    } else if (!m) {
        finish_call(call, DS_RPC_UNIMPLEMENTED, &none, unknown);
    } else if (atomic_load(&srv->shutting_down)) {
        if (payload)
            grpc_byte_buffer_destroy(payload);
        finish_call(call, DS_RPC_UNAVAILABLE, &none, "server shutting down");
    } else {
        ds_rpc_caller caller = {peer, host, identity};
        current_caller = &caller;
        if (m->unary)
            handle_unary(w, m, call, payload);
        else
            handle_stream(w, m, call, payload);
        current_caller = NULL;
    }
    pthread_mutex_lock(&srv->mu);
    if (--srv->busy == 0 && srv->shutdown_seen)
        grpc_completion_queue_shutdown(srv->cq);
    pthread_mutex_unlock(&srv->mu);
}

static void *server_thread(void *arg)
{
    worker_thread *w = arg;
    ds_rpc_server *srv = w->srv;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag *t = ev.tag;
        switch (t->kind) {
        case TAG_REQUEST:
        case TAG_GENERIC:
            handle_new_call(w, t->obj, ev.success);
            break;
        case TAG_UNARY_DONE:
            unary_done_free(t->obj);
            break;
        case TAG_STREAM_SEND:
        case TAG_STREAM_STATUS:
        case TAG_STREAM_CLOSED:
        case TAG_STREAM_MD:
            stream_event(t, ev.success);
            break;
        case TAG_SHUTDOWN:
            /* Every call is gone for gRPC: nothing more can be queued once
             * the running handlers have answered theirs. */
            pthread_mutex_lock(&srv->mu);
            srv->shutdown_seen = 1;
            if (srv->busy == 0)
                grpc_completion_queue_shutdown(srv->cq);
            pthread_mutex_unlock(&srv->mu);
            break;
        }
    }
    ds_buf_free(&w->req);
    ds_buf_free(&w->resp);
    return NULL;
}

ds_rpc_server *ds_rpc_server_new(const char *listen_addr, size_t max_msg_bytes,
                                 const ds_rpc_security *sec, ds_error *err)
{
    if (!listen_addr || !*listen_addr) {
        ds_errorf(err, "rpc server: empty listen address");
        return NULL;
    }
    if (check_max(&max_msg_bytes, err))
        return NULL;
    ds_rpc_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        ds_errorf(err, "rpc server: out of memory");
        return NULL;
    }
    rpc_init();
    pthread_mutex_init(&srv->mu, NULL);
    srv->max_msg = max_msg_bytes;
    srv->sec = sec;
    srv->shutdown_tag = (tag){TAG_SHUTDOWN, srv};
    arg_set a;
    make_args(&a, max_msg_bytes, 0);
    srv->server = grpc_server_create(&a.args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    grpc_server_credentials *creds = ds_rpc_server_creds(sec);
    if (!creds) {
        ds_errorf(err, "rpc server on %s: TLS without a certificate (tls.cert, tls.key)",
                  listen_addr);
        ds_rpc_server_free(srv);
        return NULL;
    }
    srv->port = grpc_server_add_http2_port(srv->server, listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (srv->port <= 0) {
        ds_errorf(err, "rpc server: cannot listen on %s (address in use, not a local address, "
                  "or TLS files gRPC cannot use)", listen_addr);
        ds_rpc_server_free(srv);
        return NULL;
    }
    return srv;
}

int ds_rpc_server_port(const ds_rpc_server *srv)
{
    return srv->port;
}

static int add_method(ds_rpc_server *srv, const char *path, ds_rpc_unary_fn u, ds_rpc_stream_fn st,
                      void *ud, size_t queue, ds_error *err)
{
    if (srv->started)
        return ds_errorf(err, "rpc server: %s registered after start", path);
    if (!path || path[0] != '/' || !strchr(path + 1, '/'))
        return ds_errorf(err, "rpc server: method '%s' is not a /package.Service/Method path",
                         path ? path : "(null)");
    for (size_t i = 0; i < srv->n_methods; i++)
        if (!strcmp(srv->methods[i].path, path))
            return ds_errorf(err, "rpc server: method %s registered twice", path);
    method *ms = realloc(srv->methods, (srv->n_methods + 1) * sizeof *ms);
    if (!ms)
        return ds_errorf(err, "rpc server: out of memory");
    srv->methods = ms;
    method *m = &ms[srv->n_methods];
    memset(m, 0, sizeof *m);
    m->path = dup_str(path);
    if (!m->path)
        return ds_errorf(err, "rpc server: out of memory");
    m->handle = grpc_server_register_method(srv->server, m->path, NULL,
                                            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (!m->handle) {
        free(m->path);
        return ds_errorf(err, "rpc server: gRPC refused to register %s", path);
    }
    m->unary = u;
    m->stream = st;
    m->ud = ud;
    m->queue = queue ? queue : DEFAULT_STREAM_QUEUE;
    srv->n_methods++;
    return 0;
}

int ds_rpc_server_add_unary(ds_rpc_server *srv, const char *method_path, ds_rpc_unary_fn fn,
                            void *ud, ds_error *err)
{
    if (!fn)
        return ds_errorf(err, "rpc server: no handler for %s", method_path);
    return add_method(srv, method_path, fn, NULL, ud, 0, err);
}

int ds_rpc_server_add_stream(ds_rpc_server *srv, const char *method_path, ds_rpc_stream_fn fn,
                             void *ud, size_t stream_queue, ds_error *err)
{
    if (!fn)
        return ds_errorf(err, "rpc server: no handler for %s", method_path);
    if (stream_queue > (1u << 20))
        return ds_errorf(err, "rpc server: stream queue of %zu messages is too long",
                         stream_queue);
    return add_method(srv, method_path, NULL, fn, ud, stream_queue, err);
}

int ds_rpc_server_start(ds_rpc_server *srv, int n_threads, ds_error *err)
{
    if (srv->started)
        return ds_errorf(err, "rpc server: started twice");
    if (n_threads <= 0)
        n_threads = 2;
    if (n_threads > 64)
        return ds_errorf(err, "rpc server: %d threads is too many", n_threads);
    srv->n_slots = srv->n_methods * SLOTS_PER_METHOD + 1;
    srv->slots = calloc(srv->n_slots, sizeof *srv->slots);
    srv->threads = calloc((size_t)n_threads, sizeof *srv->threads);
    if (!srv->slots || !srv->threads)
        return ds_errorf(err, "rpc server: out of memory");
    grpc_server_start(srv->server);
    srv->started = 1;
    for (size_t i = 0; i < srv->n_slots; i++) {
        slot *sl = &srv->slots[i];
        sl->m = i < srv->n_methods * SLOTS_PER_METHOD ? &srv->methods[i / SLOTS_PER_METHOD]
                                                       : NULL;
        sl->tag = (tag){sl->m ? TAG_REQUEST : TAG_GENERIC, sl};
        slot_arm(srv, sl);
    }
    for (int i = 0; i < n_threads; i++) {
        srv->threads[i].srv = srv;
        if (pthread_create(&srv->threads[i].th, NULL, server_thread, &srv->threads[i])) {
            ds_errorf(err, "rpc server: cannot create thread %d", i);
            break;
        }
        srv->n_threads++;
    }
    if (srv->n_threads == 0) {
        ds_rpc_server_shutdown(srv);
        return -1;
    }
    return 0;
}

/* Without threads (never started, or none could be created): drain the
 * queue here. */
static void drain_here(ds_rpc_server *srv)
{
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag *t = ev.tag;
        if (t->kind == TAG_SHUTDOWN)
            grpc_completion_queue_shutdown(srv->cq);
        else if (t->kind == TAG_REQUEST || t->kind == TAG_GENERIC) {
            slot *sl = t->obj;
            grpc_metadata_array_destroy(&sl->md);
            if (!sl->m)
                grpc_call_details_destroy(&sl->details);
            if (ev.success && sl->call) {
                grpc_call_cancel(sl->call, NULL);
                grpc_call_unref(sl->call);
            }
            if (sl->payload)
                grpc_byte_buffer_destroy(sl->payload);
        }
    }
}

void ds_rpc_server_shutdown(ds_rpc_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->mu);
    if (srv->stopped || !srv->server) {
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    srv->stopped = 1;
    atomic_store(&srv->shutting_down, 1);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    /* Ends open streams and in-flight calls now instead of waiting for them. */
    grpc_server_cancel_all_calls(srv->server);
    pthread_mutex_unlock(&srv->mu);
    if (srv->n_threads == 0)
        drain_here(srv);
    for (int i = 0; i < srv->n_threads; i++)
        pthread_join(srv->threads[i].th, NULL);
    srv->n_threads = 0;
}

void ds_rpc_server_free(ds_rpc_server *srv)
{
    if (!srv)
        return;
    if (srv->server) {
        /* A server that never bound a port has no listener to stop. */
        if (srv->port > 0)
            ds_rpc_server_shutdown(srv);
        grpc_server_destroy(srv->server);
    }
    if (srv->cq)
        grpc_completion_queue_destroy(srv->cq);
    for (size_t i = 0; i < srv->n_methods; i++)
        free(srv->methods[i].path);
    free(srv->methods);
    free(srv->slots);
    free(srv->threads);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
    grpc_shutdown();
}

/* ---------------------------------------------------------------- client */

struct ds_rpc_channel {
    grpc_channel *ch;
    const ds_rpc_security *sec; /* for the token */
    char *peer;
    char *target;
    size_t max_msg;
    atomic_uint cancels; /* ds_rpc_channel_cancel calls: a call started before one ends */
};

ds_rpc_channel *ds_rpc_channel_new(const char *peer_name, const char *target,
                                   size_t max_msg_bytes, const ds_rpc_security *sec,
                                   ds_error *err)
{
    if (!peer_name || !*peer_name || !target || !*target) {
        ds_errorf(err, "rpc channel: empty peer name or target");
        return NULL;
    }
    if (check_max(&max_msg_bytes, err))
        return NULL;
    ds_rpc_channel *c = calloc(1, sizeof *c);
    if (c) {
        c->peer = dup_str(peer_name);
        c->target = dup_str(target);
    }
    if (!c || !c->peer || !c->target) {
        if (c) {
            free(c->peer);
            free(c->target);
        }
        free(c);
        ds_errorf(err, "rpc channel to %s: out of memory", peer_name);
        return NULL;
    }
    c->max_msg = max_msg_bytes;
    c->sec = sec;
    rpc_init();
    arg_set a;
    make_args(&a, max_msg_bytes, 1);
    grpc_channel_credentials *creds = ds_rpc_channel_creds(sec);
    c->ch = grpc_channel_create(target, creds, &a.args);
    grpc_channel_credentials_release(creds);
    return c;
}

void ds_rpc_channel_free(ds_rpc_channel *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->ch);
    free(ch->peer);
    free(ch->target);
    free(ch);
    grpc_shutdown();
}

void ds_rpc_channel_cancel(ds_rpc_channel *ch)
{
    atomic_fetch_add(&ch->cancels, 1);
}

void ds_rpc_channel_reset_backoff(ds_rpc_channel *ch)
{
    grpc_channel_reset_connect_backoff(ch->ch);
}

int ds_rpc_error_prefix(const ds_rpc_channel *ch, const char *method_path, ds_error *err)
{
    return ds_error_prefix(err, "%s (%s) %s", ch->peer, ch->target, short_method(method_path));
}

static const char *state_name(grpc_connectivity_state s)
{
    switch (s) {
    case GRPC_CHANNEL_IDLE: return "IDLE";
    case GRPC_CHANNEL_CONNECTING: return "CONNECTING";
    case GRPC_CHANNEL_READY: return "READY";
    case GRPC_CHANNEL_TRANSIENT_FAILURE: return "TRANSIENT_FAILURE";
    case GRPC_CHANNEL_SHUTDOWN: return "SHUTDOWN";
    }
    return "?";
}

int ds_rpc_wait_ready(ds_rpc_channel *ch, double total_timeout_s, ds_error *err)
{
    double t0 = ds_now();
    int logged = 0;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_connectivity_state st = grpc_channel_check_connectivity_state(ch->ch, 1);
    int rc = 0;
    while (st != GRPC_CHANNEL_READY) {
        double elapsed = ds_now() - t0;
        if (st == GRPC_CHANNEL_SHUTDOWN) {
            rc = ds_errorf(err, "%s (%s): channel shut down", ch->peer, ch->target);
            break;
        }
        if (elapsed >= total_timeout_s) {
            rc = ds_errorf(err, "%s (%s): not reachable after %.1f s (%s)", ch->peer, ch->target,
                           elapsed, state_name(st));
            break;
        }
        if (ds_rpc_interrupted()) {
            rc = ds_errorf(err, "%s (%s): interrupted while connecting", ch->peer, ch->target);
            break;
        }
        /* A peer on its way up is normal at start-up: say so once. */
        if (!logged && (st == GRPC_CHANNEL_TRANSIENT_FAILURE || elapsed > 0.5)) {
            ds_log_info("waiting for %s at %s", ch->peer, ch->target);
            logged = 1;
        }
        double step = total_timeout_s - elapsed;
        if (step > INTERRUPT_POLL_S)
            step = INTERRUPT_POLL_S;
        static int watch_tag;
        grpc_channel_watch_connectivity_state(ch->ch, st, deadline_after(step), cq, &watch_tag);
        grpc_completion_queue_pluck(cq, &watch_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        st = grpc_channel_check_connectivity_state(ch->ch, 1);
    }
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    if (rc == 0 && logged)
        ds_log_info("%s at %s is up", ch->peer, ch->target);
    return rc;
}

static int status_error(ds_rpc_channel *ch, const char *method_path, grpc_status_code st,
                        grpc_slice details, ds_error *err)
{
    int n = (int)GRPC_SLICE_LENGTH(details);
    if (n > 300)
        n = 300;
    if (n == 0)
        return ds_errorf(err, "%s (%s) %s: %s", ch->peer, ch->target, short_method(method_path),
                         ds_rpc_code_name((int)st));
    return ds_errorf(err, "%s (%s) %s: %s: %.*s", ch->peer, ch->target, short_method(method_path),
                     ds_rpc_code_name((int)st), n, (const char *)GRPC_SLICE_START_PTR(details));
}

static void set_code(int *code, int v)
{
    if (code)
        *code = v;
}

int ds_rpc_call_unary(ds_rpc_channel *ch, const char *method_path, const void *req, size_t len,
                      double deadline_s, ds_buf *resp, int *code, ds_error *err)
{
    set_code(code, DS_RPC_INTERNAL);
    resp->len = 0;
    if (!method_path || method_path[0] != '/')
        return ds_errorf(err, "%s (%s): bad method path '%s'", ch->peer, ch->target,
                         method_path ? method_path : "(null)");
    if (len > ch->max_msg) {
        set_code(code, DS_RPC_RESOURCE_EXHAUSTED);
        return ds_errorf(err, "%s (%s) %s: RESOURCE_EXHAUSTED: request of %zu bytes exceeds the "
                         "limit of %zu", ch->peer, ch->target, short_method(method_path), len,
                         ch->max_msg);
    }
    unsigned cancels = atomic_load(&ch->cancels);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice mslice = grpc_slice_from_copied_string(method_path);
    grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice,
                                               NULL, deadline_after(deadline_s), NULL);
    grpc_slice_unref(mslice);

    grpc_byte_buffer *send = bb_from(req, len), *recv = NULL;
    grpc_metadata_array init_md, trailing;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trailing);
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.metadata =
        ds_rpc_call_metadata(ch->sec, &ops[0].data.send_initial_metadata.count);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;
    int rc = 0;
    static int call_tag;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, &call_tag, NULL);
    if (e != GRPC_CALL_OK) {
        rc = ds_errorf(err, "%s (%s) %s: cannot start the call: %s", ch->peer, ch->target,
                       short_method(method_path), grpc_call_error_to_string(e));
    } else {
        /* Waits in short steps so that ds_rpc_interrupt and
         * ds_rpc_channel_cancel end the call. */
        int cancelled = 0;
        while (grpc_completion_queue_pluck(cq, &call_tag, deadline_after(INTERRUPT_POLL_S), NULL)
                   .type != GRPC_OP_COMPLETE)
            if (!cancelled && (ds_rpc_interrupted() || atomic_load(&ch->cancels) != cancels)) {
                grpc_call_cancel_with_status(call, GRPC_STATUS_CANCELLED,
                                             ds_rpc_interrupted() ? "interrupted" : "cancelled",
                                             NULL);
                cancelled = 1;
            }
        if (st != GRPC_STATUS_OK) {
            set_code(code, (int)st);
            rc = status_error(ch, method_path, st, details, err);
        } else if (!recv) {
            rc = ds_errorf(err, "%s (%s) %s: OK status without a reply message", ch->peer,
                           ch->target, short_method(method_path));
        } else if (bb_to_buf(recv, resp, err)) {
            rc = ds_error_prefix(err, "%s (%s) %s", ch->peer, ch->target,
                                 short_method(method_path));
        } else {
            set_code(code, DS_RPC_OK);
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trailing);
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return rc;
}

/* ---- server-streaming reader */

struct ds_rpc_reader {
    ds_rpc_channel *ch;
    grpc_call *call;
    grpc_completion_queue *cq;
    char *method;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array init_md, trailing;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    int start_pending, msg_pending, status_pending;
    int ended; /* the message sequence ended (status follows) */
    int final_code;
    ds_error final_err;
    char start_tag, msg_tag, status_tag;
};

static int reader_event(ds_rpc_reader *r, grpc_event ev);
static int reader_finish(ds_rpc_reader *r, int *code, ds_error *err);

ds_rpc_reader *ds_rpc_reader_open(ds_rpc_channel *ch, const char *method_path, const void *req,
                                  size_t len, int *code, ds_error *err)
{
    set_code(code, DS_RPC_INTERNAL);
    if (!method_path || method_path[0] != '/') {
        ds_errorf(err, "%s (%s): bad method path", ch->peer, ch->target);
        return NULL;
    }
    if (len > ch->max_msg) {
        ds_errorf(err, "%s (%s) %s: request of %zu bytes exceeds the limit of %zu", ch->peer,
                  ch->target, short_method(method_path), len, ch->max_msg);
        return NULL;
    }
    ds_rpc_reader *r = calloc(1, sizeof *r);
    if (r)
        r->method = dup_str(method_path);
    if (!r || !r->method) {
        free(r);
        ds_errorf(err, "%s (%s): out of memory", ch->peer, ch->target);
        return NULL;
    }
    r->ch = ch;
    r->final_code = -1;
    r->details = grpc_empty_slice();
    grpc_metadata_array_init(&r->init_md);
    grpc_metadata_array_init(&r->trailing);
    r->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice mslice = grpc_slice_from_copied_string(method_path);
    r->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, r->cq, mslice, NULL,
                                      gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_slice_unref(mslice);
    r->send = bb_from(req, len);

    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.metadata =
        ds_rpc_call_metadata(ch->sec, &ops[0].data.send_initial_metadata.count);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = r->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &r->init_md;
    grpc_call_error e = grpc_call_start_batch(r->call, ops, 4, &r->start_tag, NULL);
    if (e == GRPC_CALL_OK) {
        r->start_pending = 1;
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[0].data.recv_status_on_client.trailing_metadata = &r->trailing;
        ops[0].data.recv_status_on_client.status = &r->status;
        ops[0].data.recv_status_on_client.status_details = &r->details;
        ops[0].data.recv_status_on_client.error_string = &r->error_string;
        e = grpc_call_start_batch(r->call, ops, 1, &r->status_tag, NULL);
        if (e == GRPC_CALL_OK)
            r->status_pending = 1;
    }
    if (e != GRPC_CALL_OK) {
        ds_errorf(err, "%s (%s) %s: cannot start the call: %s", ch->peer, ch->target,
                  short_method(method_path), grpc_call_error_to_string(e));
        ds_rpc_reader_free(r);
        return NULL;
    }
    /* The server sends its initial metadata once the handler accepted (or
     * the call ends): after this, the stream is in place on the server. */
    double until = ds_now() + DS_RPC_OPEN_TIMEOUT_S;
    while (r->start_pending) {
        grpc_event ev = grpc_completion_queue_next(r->cq, deadline_after(INTERRUPT_POLL_S), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT && (ds_now() > until || ds_rpc_interrupted())) {
            if (ds_rpc_interrupted())
                ds_errorf(err, "%s (%s) %s: interrupted", ch->peer, ch->target,
                          short_method(method_path));
            else
                ds_errorf(err, "%s (%s) %s: no answer to the stream request within %.0f s",
                          ch->peer, ch->target, short_method(method_path), DS_RPC_OPEN_TIMEOUT_S);
            ds_rpc_reader_free(r);
            return NULL;
        }
        if (ev.type == GRPC_OP_COMPLETE)
            reader_event(r, ev);
    }
    int accepted = 0;
    for (size_t i = 0; i < r->init_md.count; i++)
        accepted |= grpc_slice_str_cmp(r->init_md.metadata[i].key, STREAM_MARK_KEY) == 0;
    /* Not accepted: refused or failed, and the status is on its way. */
    int c = DS_RPC_OK;
    if (!accepted && reader_finish(r, &c, err)) {
        set_code(code, c);
        ds_rpc_reader_free(r);
        return NULL;
    }
    set_code(code, DS_RPC_OK);
    return r;
}

/* Handles one event; returns 1 when it was the message event. */
static int reader_event(ds_rpc_reader *r, grpc_event ev)
{
    if (ev.tag == &r->start_tag) {
        r->start_pending = 0;
    } else if (ev.tag == &r->status_tag) {
        r->status_pending = 0;
    } else if (ev.tag == &r->msg_tag) {
        r->msg_pending = 0;
        if (!ev.success && r->recv) {
            grpc_byte_buffer_destroy(r->recv);
            r->recv = NULL;
        }
        return 1;
    }
    return 0;
}

/* The stream's final result, once the status is in. */
static int reader_finish(ds_rpc_reader *r, int *code, ds_error *err)
{
    if (r->final_code < 0) {
        while (r->status_pending)
            reader_event(r, grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                       NULL));
        r->final_code = (int)r->status;
        if (r->status != GRPC_STATUS_OK)
            status_error(r->ch, r->method, r->status, r->details, &r->final_err);
    }
    set_code(code, r->final_code);
    if (r->final_code == DS_RPC_OK)
        return 0;
    if (err)
        *err = r->final_err;
    return -1;
}

int ds_rpc_reader_next(ds_rpc_reader *r, ds_buf *msg, double timeout_s, int *code,
                       ds_error *err)
{
    msg->len = 0;
    set_code(code, DS_RPC_OK);
    if (r->ended)
        return reader_finish(r, code, err);
    if (!r->msg_pending) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &r->recv;
        r->recv = NULL;
        grpc_call_error e = grpc_call_start_batch(r->call, &op, 1, &r->msg_tag, NULL);
        if (e != GRPC_CALL_OK) {
            set_code(code, DS_RPC_INTERNAL);
            return ds_errorf(err, "%s (%s) %s: cannot read: %s", r->ch->peer, r->ch->target,
                             short_method(r->method), grpc_call_error_to_string(e));
        }
        r->msg_pending = 1;
    }
    gpr_timespec until = timeout_s < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                                       : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                      gpr_time_from_micros(
                                                          (int64_t)(timeout_s * 1e6),
                                                          GPR_TIMESPAN));
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(r->cq, until, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            return DS_RPC_TIMEOUT;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        if (!reader_event(r, ev))
            continue;
        if (!r->recv) { /* no more messages: the status says why */
            r->ended = 1;
            return reader_finish(r, code, err);
        }
        int rc = bb_to_buf(r->recv, msg, err);
        grpc_byte_buffer_destroy(r->recv);
        r->recv = NULL;
        if (rc) {
            set_code(code, DS_RPC_INTERNAL);
            return ds_error_prefix(err, "%s (%s) %s", r->ch->peer, r->ch->target,
                                   short_method(r->method));
        }
        return 1;
    }
}

void ds_rpc_reader_cancel(ds_rpc_reader *r)
{
    if (r && r->call)
        grpc_call_cancel(r->call, NULL);
}

void ds_rpc_reader_free(ds_rpc_reader *r)
{
    if (!r)
        return;
    if (r->call) {
        if (r->status_pending)
            grpc_call_cancel(r->call, NULL);
        while (r->start_pending || r->msg_pending || r->status_pending)
            reader_event(r, grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                       NULL));
        grpc_call_unref(r->call);
    }
    if (r->recv)
        grpc_byte_buffer_destroy(r->recv);
    if (r->send)
        grpc_byte_buffer_destroy(r->send);
    grpc_metadata_array_destroy(&r->init_md);
    grpc_metadata_array_destroy(&r->trailing);
    grpc_slice_unref(r->details);
    gpr_free((void *)r->error_string);
    grpc_completion_queue_shutdown(r->cq);
    while (grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(r->cq);
    free(r->method);
    free(r);
}
