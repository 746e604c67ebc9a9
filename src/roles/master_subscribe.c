/* master_subscribe.c - the master's results subscription server
 * (output.subscribe): /deltaslice.Master/Results hands every finished frame
 * to any client that opened the stream (deltaslice.proto: Result).
 *
 * publish packs a result once (only when someone listens) and queues a
 * reference to it on every subscriber; each subscriber has its own thread
 * that sends its queue in order, so a slow one never holds up publishing or
 * the others.  A full queue drops its oldest result and counts it: the
 * count travels as Result.dropped, appended to the shared packing at send
 * time (a field after the others is valid protobuf). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/timing.h"
#include "output/output.h"
#include "roles/master.h"
#include "rpc/rpc.h"

#define MAX_SUBSCRIBERS 8
#define SUB_QUEUE 16    /* results queued per subscriber before the oldest goes */
#define STREAM_QUEUE 2  /* the transport's own queue: ours does the dropping */
#define STOP_WAIT_S 2.0 /* for subscribers to take what is queued at the end */
#define MAX_REQUEST 4096

/* One packed Result without `dropped`, shared by the subscribers' queues
 * (refs under the owner's lock). */
typedef struct blob {
    int refs;
    size_t len;
    uint8_t data[];
} blob;

typedef struct subscriber {
    ds_subscribers *owner;
    ds_rpc_stream *stream;     /* the thread's */
    pthread_cond_t ready;      /* a result was queued, quit or stopping */
    blob *q[SUB_QUEUE];        /* oldest at head */
    int head, n;
    uint64_t dropped, sent;
    int quit;                  /* taken off the list (its peer is gone): end now */
    char peer[128], identity[160];
} subscriber;

struct ds_subscribers {
    ds_rpc_server *srv;
    int port;
    pthread_mutex_t lock;
    pthread_cond_t idle; /* a subscriber thread ended */
    subscriber *list[MAX_SUBSCRIBERS];
    int n;
    int threads;         /* running, on the list or not */
    int stopping;
    double stop_until;   /* ds_now() by which queued results should be out */
};

/* ---------------------------------------------------------------- packing */

static int little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static void blob_unref(blob *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* t's values as float32 little-endian into a new array (a tensor that is
 * not float32 already, or a big-endian host). */
static uint8_t *f32_le_copy(const ds_tensor *t, size_t numel, ds_error *err)
{
    uint8_t *out = malloc(numel ? numel * 4 : 1);
    if (!out) {
        ds_errorf(err, "out of memory (%zu values)", numel);
        return NULL;
    }
    int swap = !little_endian();
    for (size_t i = 0; i < numel; i++) {
        float v = t->dtype == DS_F32 ? ds_tensor_f32(t)[i] : (float)ds_tensor_u8(t)[i];
        uint8_t b[4];
        memcpy(b, &v, 4);
        for (int k = 0; k < 4; k++)
            out[4 * i + k] = b[swap ? 3 - k : k];
    }
    return out;
}

/* r as a packed Result (refs = 1), dropped left out. */
static blob *pack_result(const ds_result *r, ds_error *err)
{
    size_t n = r->n_outputs > 0 ? (size_t)r->n_outputs : 0;
    Deltaslice__Output *outs = calloc(n + 1, sizeof *outs);
    Deltaslice__Output **ptrs = calloc(n + 1, sizeof *ptrs);
    int64_t(*shapes)[DS_MAX_DIMS] = calloc(n + 1, sizeof *shapes);
    uint8_t **copies = calloc(n + 1, sizeof *copies);
    blob *b = NULL;
    if (!outs || !ptrs || !shapes || !copies) {
        ds_errorf(err, "out of memory");
        goto done;
    }
    int zero_copy = little_endian();
    for (size_t i = 0; i < n; i++) {
        const ds_tensor *t = r->values[i];
        if (!t || (t->dtype != DS_F32 && t->dtype != DS_U8) || t->shape.ndim < 1 ||
            t->shape.ndim > DS_MAX_DIMS) {
            ds_errorf(err, "output %zu is not a float32 tensor", i);
            goto done;
        }
        deltaslice__output__init(&outs[i]);
        outs[i].layer = r->layer_ids[i];
        outs[i].name = (char *)(r->names && r->names[i] ? r->names[i] : "");
        memcpy(shapes[i], t->shape.dims, sizeof shapes[i]);
        outs[i].n_shape = (size_t)t->shape.ndim;
        outs[i].shape = shapes[i];
        size_t numel = (size_t)ds_shape_numel(&t->shape);
        if (zero_copy && t->dtype == DS_F32) {
            outs[i].data.data = t->data;
        } else {
            if (!(copies[i] = f32_le_copy(t, numel, err)))
                goto done;
            outs[i].data.data = copies[i];
        }
        outs[i].data.len = numel * 4;
        ptrs[i] = &outs[i];
    }
    Deltaslice__Result m = DELTASLICE__RESULT__INIT;
    m.frame_id = r->frame_id;
    m.source_frame = r->source_frame;
    m.capture_us = r->capture_us;
    m.latency_s = r->latency;
    m.n_outputs = n;
    m.outputs = ptrs;
    size_t len = protobuf_c_message_get_packed_size(&m.base);
    if (!(b = malloc(sizeof *b + len))) {
        ds_errorf(err, "out of memory (%zu bytes)", len);
        goto done;
    }
    b->refs = 1;
    b->len = protobuf_c_message_pack(&m.base, b->data);
done:
    for (size_t i = 0; copies && i < n; i++)
        free(copies[i]);
    free(copies);
    free(shapes);
    free(ptrs);
    free(outs);
    return b;
}

/* b followed by Result.dropped (field 6, varint) into msg. */
static int with_dropped(ds_buf *msg, const blob *b, uint64_t dropped, ds_error *err)
{
    uint8_t tail[11];
    size_t k = 0;
    if (dropped) {
        tail[k++] = 6 << 3;
        for (; dropped >= 0x80; dropped >>= 7)
            tail[k++] = (uint8_t)(dropped | 0x80);
        tail[k++] = (uint8_t)dropped;
    }
    msg->len = 0;
    return ds_buf_append(msg, b->data, b->len, err) || ds_buf_append(msg, tail, k, err);
}

/* ------------------------------------------------------------ subscribers */

/* Takes sub off the list, if still there (lock held). */
static void unlist(ds_subscribers *s, subscriber *sub)
{
    for (int i = 0; i < s->n; i++)
        if (s->list[i] == sub) {
            memmove(&s->list[i], &s->list[i + 1], (size_t)(s->n - i - 1) * sizeof s->list[0]);
            s->n--;
            return;
        }
}

/* Ends the subscriptions whose peer went away while nothing was published
 * (their threads wait for a result and would notice only at the next
 * one), so that their places are free (lock held). */
static void reap(ds_subscribers *s)
{
    for (int i = s->n - 1; i >= 0; i--) {
        subscriber *sub = s->list[i];
        if (!ds_rpc_stream_alive(sub->stream)) {
            sub->quit = 1;
            pthread_cond_signal(&sub->ready);
            unlist(s, sub);
        }
    }
}

/* Sends sub's queue in order until its peer goes, it is reaped, or the
 * server stops and the queue is empty; then ends the stream and frees sub. */
static void *subscriber_thread(void *arg)
{
    subscriber *sub = arg;
    ds_subscribers *s = sub->owner;
    ds_buf msg = {0};
    ds_error err = {{0}};
    int failed = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (sub->n == 0 && !sub->quit && !s->stopping)
            pthread_cond_wait(&sub->ready, &s->lock);
        if (sub->quit || sub->n == 0)
            break;
        blob *b = sub->q[sub->head];
        sub->head = (sub->head + 1) % SUB_QUEUE;
        sub->n--;
        uint64_t dropped = sub->dropped;
        pthread_mutex_unlock(&s->lock);
        /* Waits while the peer reads slowly: meanwhile publish drops from
         * this subscriber's queue.  Ended by the peer going away or by the
         * server's shutdown. */
        failed = with_dropped(&msg, b, dropped, &err) ||
                 ds_rpc_stream_push(sub->stream, msg.data, msg.len, -1, &err);
        pthread_mutex_lock(&s->lock);
        blob_unref(b);
        if (failed)
            break;
        sub->sent++;
    }
    unlist(s, sub);
    for (; sub->n > 0; sub->n--, sub->head = (sub->head + 1) % SUB_QUEUE)
        blob_unref(sub->q[sub->head]);
    int stopping = s->stopping;
    double left = s->stop_until - ds_now();
    pthread_mutex_unlock(&s->lock);

    int alive = ds_rpc_stream_alive(sub->stream);
    if (failed && alive) /* a local failure (a result over the message limit) */
        ds_rpc_stream_close(sub->stream, DS_RPC_RESOURCE_EXHAUSTED, err.msg);
    else if (stopping && alive)
        ds_rpc_stream_close_wait(sub->stream, DS_RPC_OK, NULL, left);
    else
        ds_rpc_stream_close(sub->stream, DS_RPC_CANCELLED, "subscriber gone");
    if (failed && alive)
        ds_log_warn("results subscriber %s ended: %s", sub->peer, err.msg);
    ds_log_info("results subscriber %s%s%s left after %" PRIu64 " results (%" PRIu64 " dropped)",
                sub->peer, sub->identity[0] ? " as " : "", sub->identity, sub->sent, sub->dropped);
    ds_buf_free(&msg);
    pthread_cond_destroy(&sub->ready);
    free(sub);

    pthread_mutex_lock(&s->lock);
    s->threads--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int on_subscribe(void *ud, const uint8_t *req, size_t len, ds_rpc_stream *stream,
                        ds_error *err)
{
    ds_subscribers *s = ud;
    ProtobufCMessage *m =
        ds_rpc_unpack(&deltaslice__subscribe_request__descriptor, req, len, MAX_REQUEST, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    protobuf_c_message_free_unpacked(m, NULL);
    const ds_rpc_caller *who = ds_rpc_current_caller();

    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        return ds_errorf(err, "the master is stopping"), DS_RPC_UNAVAILABLE;
    }
    if (s->n == MAX_SUBSCRIBERS)
        reap(s);
    if (s->n == MAX_SUBSCRIBERS) {
        pthread_mutex_unlock(&s->lock);
        ds_errorf(err, "the master serves at most %d results subscribers", MAX_SUBSCRIBERS);
        ds_log_warn("refused a results subscriber from %s: %s", ds_rpc_stream_peer(stream),
                    err->msg);
        return DS_RPC_RESOURCE_EXHAUSTED;
    }
    subscriber *sub = calloc(1, sizeof *sub);
    if (!sub) {
        pthread_mutex_unlock(&s->lock);
        return ds_errorf(err, "out of memory"), DS_RPC_RESOURCE_EXHAUSTED;
    }
    sub->owner = s;
    sub->stream = stream;
    pthread_cond_init(&sub->ready, NULL);
    snprintf(sub->peer, sizeof sub->peer, "%s", ds_rpc_stream_peer(stream));
    snprintf(sub->identity, sizeof sub->identity, "%s", who ? who->identity : "");
    /* Detached: stop waits for `threads` to reach 0 instead of joining, so
     * an ended subscriber's place is free at once. */
    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, subscriber_thread, sub);
    pthread_attr_destroy(&attr);
    if (rc) {
        pthread_mutex_unlock(&s->lock);
        pthread_cond_destroy(&sub->ready);
        free(sub);
        return ds_errorf(err, "cannot start a thread for the subscriber"), DS_RPC_RESOURCE_EXHAUSTED;
    }
    s->list[s->n++] = sub;
    s->threads++;
    int n = s->n;
    pthread_mutex_unlock(&s->lock);
    ds_log_info("results subscriber %s%s%s connected (%d of at most %d)", sub->peer,
                sub->identity[0] ? " as " : "", sub->identity, n, MAX_SUBSCRIBERS);
    return DS_RPC_OK;
}

/* ------------------------------------------------------------------- API */

ds_subscribers *ds_subscribers_start(const ds_config *cfg, ds_rpc_security *sec, ds_error *err)
{
    ds_subscribers *s = calloc(1, sizeof *s);
    if (!s) {
        ds_errorf(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    char addr[300];
    ds_config_listen_addr(cfg->master.listen ? cfg->master.listen : "localhost", cfg->port_master,
                          addr, sizeof addr);
    if (!(s->srv = ds_rpc_server_new(addr, cfg->max_message_bytes, sec, err)) ||
        ds_rpc_server_add_stream(s->srv, DS_RPC_MASTER_RESULTS, on_subscribe, s, STREAM_QUEUE,
                                 err) ||
        ds_rpc_server_start(s->srv, 1, err)) {
        ds_error_prefix(err, "output.subscribe (master.listen, port.master)");
        ds_subscribers_stop(s);
        return NULL;
    }
    s->port = ds_rpc_server_port(s->srv);
    ds_config_listen_addr(cfg->master.listen ? cfg->master.listen : "localhost", s->port, addr,
                          sizeof addr); /* the port picked, when asked for 0 */
    ds_log_info("serving results on %s (%s)", addr, ds_rpc_security_mode(sec));
    return s;
}

void ds_subscribers_publish(ds_subscribers *s, const ds_result *r)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    int n = s->n;
    pthread_mutex_unlock(&s->lock);
    if (n == 0) /* nobody listens: no packing */
        return;
    ds_error err = {{0}};
    blob *b = pack_result(r, &err);
    if (!b) {
        ds_log_warn("results subscribers: frame %" PRIu64 " not sent: %s", r->frame_id, err.msg);
        return;
    }
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n; i++) {
        subscriber *sub = s->list[i];
        if (sub->n == SUB_QUEUE) {
            blob_unref(sub->q[sub->head]);
            sub->head = (sub->head + 1) % SUB_QUEUE;
            sub->n--;
            sub->dropped++;
        }
        sub->q[(sub->head + sub->n) % SUB_QUEUE] = b;
        sub->n++;
        b->refs++;
        pthread_cond_signal(&sub->ready);
    }
    blob_unref(b);
    pthread_mutex_unlock(&s->lock);
}

int ds_subscribers_count(ds_subscribers *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->lock);
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += ds_rpc_stream_alive(s->list[i]->stream);
    pthread_mutex_unlock(&s->lock);
    return n;
}

int ds_subscribers_port(const ds_subscribers *s)
{
    return s ? s->port : 0;
}

void ds_subscribers_stop(ds_subscribers *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    s->stop_until = ds_now() + STOP_WAIT_S;
    for (int i = 0; i < s->n; i++)
        pthread_cond_signal(&s->list[i]->ready);
    struct timespec until = ds_deadline(STOP_WAIT_S);
    while (s->threads > 0)
        if (pthread_cond_timedwait(&s->idle, &s->lock, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&s->lock);
    /* Cancels what is left: subscribers that read nothing, whose threads
     * wait for room on their streams. */
    ds_rpc_server_shutdown(s->srv);
    pthread_mutex_lock(&s->lock);
    while (s->threads > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    ds_rpc_server_free(s->srv);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
