/* calls.c - one typed call per deltaslice.proto method, client and server
 * halves, on top of the transport (rpc.c) and the message helpers
 * (rpc_msg.c).  Every received message goes through receive(): unpacked
 * and validated, or an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/timing.h"
#include "rpc/rpc.h"

/* A validator with its limits (NULL when it needs none). */
typedef int (*check_fn)(const ProtobufCMessage *m, const void *limits, ds_error *err);

/* The one unpack-and-validate step; NULL with err on either failure. */
static ProtobufCMessage *receive(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                 size_t len, check_fn check, const void *limits, ds_error *err)
{
    ProtobufCMessage *m = ds_rpc_unpack(desc, data, len, 0, err);
    if (m && check && check(m, limits, err)) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return m;
}

/* One unary call with messages: req packed, the reply received as desc's
 * message; errors name the peer and method. */
static ProtobufCMessage *call(ds_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                              double deadline_s, const ProtobufCMessageDescriptor *desc,
                              check_fn check, const void *limits, int *code, ds_error *err)
{
    ds_buf q = {0}, r = {0};
    ProtobufCMessage *m = NULL;
    if (code)
        *code = DS_RPC_INTERNAL;
    if (ds_rpc_pack(req, &q, err) == 0 &&
        ds_rpc_call_unary(ch, method, q.data, q.len, deadline_s, &r, code, err) == 0) {
        m = receive(desc, r.data, r.len, check, limits, err);
        if (!m)
            ds_rpc_error_prefix(ch, method, err);
    }
    ds_buf_free(&q);
    ds_buf_free(&r);
    return m;
}

/* Copies a validated string (at most DS_RPC_MAX_TEXT bytes). */
static void copy_text(char dst[DS_RPC_MAX_TEXT + 1], const char *src)
{
    snprintf(dst, DS_RPC_MAX_TEXT + 1, "%s", src ? src : "");
}

/* ------------------------------------------------------------- validators */

typedef struct frame_limits {
    uint32_t n_workers;
    int32_t max_layer_id;
} frame_limits;

static int check_frame_request(const ProtobufCMessage *m, const void *limits, ds_error *err)
{
    const frame_limits *l = limits;
    return ds_rpc_validate_frame_request((const Deltaslice__FrameRequest *)m, l->n_workers,
                                         l->max_layer_id, err);
}

static int check_finish_report(const ProtobufCMessage *m, const void *limits, ds_error *err)
{
    const frame_limits *l = limits;
    return ds_rpc_validate_finish_report((const Deltaslice__FinishReport *)m, l->n_workers,
                                         l->max_layer_id, err);
}

static int check_layer_costs(const ProtobufCMessage *m, const void *limits, ds_error *err)
{
    return ds_rpc_validate_layer_costs((const Deltaslice__LayerCosts *)m, *(const size_t *)limits,
                                       err);
}

static int check_costs_request(const ProtobufCMessage *m, const void *limits, ds_error *err)
{
    (void)limits;
    return ds_rpc_validate_costs_request((const Deltaslice__LayerCostsRequest *)m, err);
}

static int check_predictors_request(const ProtobufCMessage *m, const void *limits, ds_error *err)
{
    (void)limits;
    return ds_rpc_validate_predictors_request((const Deltaslice__PredictorsRequest *)m, err);
}

static int check_ack(const ProtobufCMessage *m, const void *limits, ds_error *err)
{
    (void)limits;
    return ds_rpc_validate_ack((const Deltaslice__Ack *)m, err);
}

static int check_clock_probe(const ProtobufCMessage *m, const void *limits, ds_error *err)
{
    (void)limits;
    return ds_rpc_validate_clock_probe((const Deltaslice__ClockProbe *)m, err);
}

/* ------------------------------------------------------------------ Clock */

int ds_rpc_call_ping(ds_rpc_channel *ch, const char *method, double deadline_s, ds_error *err)
{
    Deltaslice__ClockProbe p = DELTASLICE__CLOCK_PROBE__INIT;
    p.client_send_us = ds_wall_us();
    ds_buf req = {0}, resp = {0};
    int rc = -1;
    if (ds_rpc_pack(&p.base, &req, err) == 0 &&
        ds_rpc_call_unary(ch, method, req.data, req.len, deadline_s, &resp, NULL, err) == 0) {
        ProtobufCMessage *a = receive(&deltaslice__clock_probe__descriptor, resp.data, resp.len,
                                      check_clock_probe, NULL, err);
        if (a) {
            protobuf_c_message_free_unpacked(a, NULL);
            rc = 0;
        } else {
            ds_rpc_error_prefix(ch, method, err);
        }
    }
    ds_buf_free(&req);
    ds_buf_free(&resp);
    return rc;
}

int ds_rpc_call_clock(ds_rpc_channel *ch, const char *method, int n_probes, int64_t *offset_us,
                      int64_t *rtt_us, ds_error *err)
{
    Deltaslice__ClockProbe p = DELTASLICE__CLOCK_PROBE__INIT;
    ds_buf req = {0}, resp = {0};
    int64_t best_rtt = INT64_MAX, best_off = 0;
    for (int k = 0; k < n_probes; k++) {
        p.client_send_us = ds_wall_us();
        if (ds_rpc_pack(&p.base, &req, err) ||
            ds_rpc_call_unary(ch, method, req.data, req.len, 10, &resp, NULL, err))
            break;
        int64_t back = ds_wall_us();
        Deltaslice__ClockProbe *a = (Deltaslice__ClockProbe *)receive(
            &deltaslice__clock_probe__descriptor, resp.data, resp.len, check_clock_probe, NULL, err);
        if (!a) {
            ds_rpc_error_prefix(ch, method, err);
            break;
        }
        /* The peer's time in its handler does not count as travel. */
        int64_t rtt = (back - a->client_send_us) - (a->server_send_us - a->server_recv_us);
        if (rtt < best_rtt) {
            best_rtt = rtt;
            best_off = ((a->server_recv_us - a->client_send_us) + (a->server_send_us - back)) / 2;
        }
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
    ds_buf_free(&req);
    ds_buf_free(&resp);
    if (best_rtt == INT64_MAX)
        return n_probes > 0 ? -1 : ds_errorf(err, "clock: no probes");
    *offset_us = best_off;
    *rtt_us = best_rtt;
    return 0;
}

int ds_rpc_clock_handler(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud;
    int64_t recv = ds_wall_us();
    Deltaslice__ClockProbe *m = (Deltaslice__ClockProbe *)receive(
        &deltaslice__clock_probe__descriptor, req, len, NULL, NULL, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    m->server_recv_us = recv;
    m->server_send_us = ds_wall_us();
    int rc = ds_rpc_pack(&m->base, resp, err);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return rc ? DS_RPC_INTERNAL : DS_RPC_OK;
}

/* ------------------------------------------------------------------ Costs */

int ds_rpc_call_costs(ds_rpc_channel *ch, const char *model_hash, int rows, int cols,
                      size_t n_layers, double deadline_s, ds_rpc_costs *out, int *code,
                      ds_error *err)
{
    memset(out, 0, sizeof *out);
    Deltaslice__LayerCostsRequest q = DELTASLICE__LAYER_COSTS_REQUEST__INIT;
    q.model_hash = (char *)model_hash;
    q.rows = (uint32_t)rows;
    q.cols = (uint32_t)cols;
    Deltaslice__LayerCosts *c = (Deltaslice__LayerCosts *)call(
        ch, DS_RPC_WORKER_COSTS, &q.base, deadline_s, &deltaslice__layer_costs__descriptor,
        check_layer_costs, &n_layers, code, err);
    if (!c)
        return -1;
    out->seconds = malloc(sizeof(double) * (n_layers ? n_layers : 1));
    if (out->seconds) {
        if (n_layers) /* c->seconds is NULL when empty */
            memcpy(out->seconds, c->seconds, sizeof(double) * n_layers);
        out->threads = c->threads;
        copy_text(out->host, c->host);
    }
    protobuf_c_message_free_unpacked(&c->base, NULL);
    return out->seconds ? 0 : ds_errorf(err, "out of memory");
}

int ds_rpc_read_costs_query(const uint8_t *req, size_t len, ds_rpc_costs_query *q, ds_error *err)
{
    Deltaslice__LayerCostsRequest *m = (Deltaslice__LayerCostsRequest *)receive(
        &deltaslice__layer_costs_request__descriptor, req, len, check_costs_request, NULL, err);
    if (!m)
        return -1;
    copy_text(q->model_hash, m->model_hash);
    q->rows = (int)m->rows;
    q->cols = (int)m->cols;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return 0;
}

int ds_rpc_write_costs(const double *seconds, const double *flops, size_t n_layers,
                       uint32_t threads, const char *host, ds_buf *resp, ds_error *err)
{
    Deltaslice__LayerCosts c = DELTASLICE__LAYER_COSTS__INIT;
    c.n_seconds = c.n_flops = n_layers;
    c.seconds = (double *)seconds;
    c.flops = (double *)flops;
    c.threads = threads;
    c.host = (char *)host;
    return ds_rpc_pack(&c.base, resp, err);
}

/* ------------------------------------------------------------- Predictors */

int ds_rpc_call_predictors(ds_rpc_channel *ch, const char *model_hash, const char *video,
                           int rows, int cols, uint32_t frame_num, double deadline_s,
                           ds_buf *blob, ds_error *err)
{
    Deltaslice__PredictorsRequest r = DELTASLICE__PREDICTORS_REQUEST__INIT;
    r.model_hash = (char *)model_hash;
    r.video = (char *)video;
    r.rows = (uint32_t)rows;
    r.cols = (uint32_t)cols;
    r.frame_num = frame_num;
    Deltaslice__Predictors *p = (Deltaslice__Predictors *)call(
        ch, DS_RPC_TRAINER_PREDICTORS, &r.base, deadline_s, &deltaslice__predictors__descriptor,
        NULL, NULL, NULL, err);
    if (!p)
        return -1;
    blob->len = 0;
    int rc = ds_buf_append(blob, p->blob.data, p->blob.len, err);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    return rc;
}

int ds_rpc_read_predictors_query(const uint8_t *req, size_t len, ds_rpc_predictors_query *q,
                                 ds_error *err)
{
    Deltaslice__PredictorsRequest *m = (Deltaslice__PredictorsRequest *)receive(
        &deltaslice__predictors_request__descriptor, req, len, check_predictors_request, NULL,
        err);
    if (!m)
        return -1;
    copy_text(q->model_hash, m->model_hash);
    copy_text(q->video, m->video);
    q->rows = (int)m->rows;
    q->cols = (int)m->cols;
    q->frame_num = m->frame_num;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return 0;
}

int ds_rpc_write_predictors(const uint8_t *blob, size_t blob_len, ds_buf *resp, ds_error *err)
{
    Deltaslice__Predictors p = DELTASLICE__PREDICTORS__INIT;
    p.blob.data = (uint8_t *)blob;
    p.blob.len = blob_len;
    return ds_rpc_pack(&p.base, resp, err);
}

/* ----------------------------------------------------------------- Submit */

int ds_rpc_call_submit(ds_rpc_channel *ch, const ds_buf *request, double deadline_s,
                       ds_buf *resp, ds_error *err)
{
    if (ds_rpc_call_unary(ch, DS_RPC_WORKER_SUBMIT, request->data, request->len, deadline_s, resp,
                          NULL, err))
        return -1;
    Deltaslice__Ack *a = (Deltaslice__Ack *)receive(&deltaslice__ack__descriptor, resp->data,
                                                    resp->len, check_ack, NULL, err);
    if (!a)
        return ds_rpc_error_prefix(ch, DS_RPC_WORKER_SUBMIT, err);
    int rc = a->ok ? 0 : ds_errorf(err, "%s", a->error);
    protobuf_c_message_free_unpacked(&a->base, NULL);
    return rc ? ds_rpc_error_prefix(ch, DS_RPC_WORKER_SUBMIT, err) : 0;
}

Deltaslice__FrameRequest *ds_rpc_read_frame_request(const uint8_t *req, size_t len,
                                                    uint32_t n_workers, int32_t max_layer_id,
                                                    ds_error *err)
{
    frame_limits l = {n_workers, max_layer_id};
    return (Deltaslice__FrameRequest *)receive(&deltaslice__frame_request__descriptor, req, len,
                                               check_frame_request, &l, err);
}

void ds_rpc_free_frame_request(Deltaslice__FrameRequest *m)
{
    if (m)
        protobuf_c_message_free_unpacked(&m->base, NULL);
}

int ds_rpc_write_ack(ds_buf *resp, ds_error *err)
{
    Deltaslice__Ack ack = DELTASLICE__ACK__INIT;
    ack.ok = 1;
    return ds_rpc_pack(&ack.base, resp, err);
}

/* ---------------------------------------------------------------- Results */

ds_rpc_reader *ds_rpc_open_results(ds_rpc_channel *ch, const ds_rpc_results_request *q,
                                   int *code, ds_error *err)
{
    Deltaslice__ResultStreamRequest rs = DELTASLICE__RESULT_STREAM_REQUEST__INIT;
    rs.session_id = q->session_id;
    rs.epoch = q->epoch;
    rs.takeover = q->takeover != 0;
    ds_buf req = {0};
    ds_rpc_reader *r = NULL;
    if (ds_rpc_pack(&rs.base, &req, err) == 0)
        r = ds_rpc_reader_open(ch, DS_RPC_WORKER_RESULTS, req.data, req.len, code, err);
    ds_buf_free(&req);
    return r;
}

int ds_rpc_read_results_request(const uint8_t *req, size_t len, ds_rpc_results_request *q,
                                ds_error *err)
{
    Deltaslice__ResultStreamRequest *m = (Deltaslice__ResultStreamRequest *)receive(
        &deltaslice__result_stream_request__descriptor, req, len, NULL, NULL, err);
    if (!m)
        return -1;
    *q = (ds_rpc_results_request){m->session_id, m->epoch, m->takeover};
    protobuf_c_message_free_unpacked(&m->base, NULL);
    if (q->session_id == 0)
        return ds_errorf(err, "result stream request without a session id");
    return 0;
}

Deltaslice__FinishReport *ds_rpc_read_finish_report(const uint8_t *msg, size_t len,
                                                    uint32_t n_workers, int32_t max_layer_id,
                                                    ds_error *err)
{
    frame_limits l = {n_workers, max_layer_id};
    return (Deltaslice__FinishReport *)receive(&deltaslice__finish_report__descriptor, msg, len,
                                               check_finish_report, &l, err);
}

void ds_rpc_free_finish_report(Deltaslice__FinishReport *m)
{
    if (m)
        protobuf_c_message_free_unpacked(&m->base, NULL);
}
