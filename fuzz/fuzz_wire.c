/* fuzz_wire.c - arbitrary bytes as every deltaslice.proto message.
 *
 * Input: byte 0 picks the worker count (1..8), byte 1 the largest layer id
 * (0..63); the rest is unpacked as each message type with protobuf-c and
 * checked with the validator the services run, then read by every typed
 * server half of calls.c (what a worker or the trainer does with a
 * request).  Properties: nothing crashes or leaks, a message that validates
 * still validates after a pack/unpack round trip (so a forwarded message is
 * as good as the original), and a request a typed reader accepts holds
 * values in the documented ranges (a results request names a session). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc.h"

static uint32_t n_workers;
static int32_t max_layer_id;
static ds_buf packed;

static int validate(const ProtobufCMessage *m, ds_error *err)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &deltaslice__frame_request__descriptor)
        return ds_rpc_validate_frame_request((const Deltaslice__FrameRequest *)m, n_workers,
                                             max_layer_id, err);
    if (d == &deltaslice__finish_report__descriptor)
        return ds_rpc_validate_finish_report((const Deltaslice__FinishReport *)m, n_workers,
                                             max_layer_id, err);
    if (d == &deltaslice__layer_costs__descriptor)
        return ds_rpc_validate_layer_costs((const Deltaslice__LayerCosts *)m,
                                           (size_t)max_layer_id + 1, err);
    if (d == &deltaslice__layer_costs_request__descriptor)
        return ds_rpc_validate_costs_request((const Deltaslice__LayerCostsRequest *)m, err);
    if (d == &deltaslice__predictors_request__descriptor)
        return ds_rpc_validate_predictors_request((const Deltaslice__PredictorsRequest *)m, err);
    if (d == &deltaslice__ack__descriptor)
        return ds_rpc_validate_ack((const Deltaslice__Ack *)m, err);
    if (d == &deltaslice__clock_probe__descriptor)
        return ds_rpc_validate_clock_probe((const Deltaslice__ClockProbe *)m, err);
    return 0; /* ResultStreamRequest, Predictors: no constraints */
}

static void one(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t size)
{
    ds_error err;
    ProtobufCMessage *m = ds_rpc_unpack(d, data, size, 1 << 20, &err);
    if (!m)
        return;
    if (validate(m, &err) == 0) {
        if (ds_rpc_pack(m, &packed, &err))
            abort();
        ProtobufCMessage *again = ds_rpc_unpack(d, packed.data, packed.len, 0, &err);
        if (!again || validate(again, &err))
            abort();
        protobuf_c_message_free_unpacked(again, NULL);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

/* A text a reader copied: terminated within DS_RPC_MAX_TEXT bytes. */
static int text_ok(const char *s, size_t min)
{
    size_t n = strnlen(s, DS_RPC_MAX_TEXT + 1);
    return n >= min && n <= DS_RPC_MAX_TEXT;
}

static int dim_ok(int d)
{
    return d >= 1 && d <= DS_RPC_MAX_FRAME_DIM;
}

/* The typed server halves: accepted values in range, refusals explained. */
static void read_requests(const uint8_t *data, size_t size)
{
    ds_error err;
    err.msg[0] = '\0';
    ds_rpc_results_request rq;
    if (ds_rpc_read_results_request(data, size, &rq, &err) == 0) {
        if (rq.session_id == 0 || (rq.takeover != 0 && rq.takeover != 1))
            abort();
    } else if (!err.msg[0]) {
        abort();
    }
    err.msg[0] = '\0';
    ds_rpc_costs_query cq;
    if (ds_rpc_read_costs_query(data, size, &cq, &err) == 0) {
        if (!text_ok(cq.model_hash, 1) || !dim_ok(cq.rows) || !dim_ok(cq.cols))
            abort();
    } else if (!err.msg[0]) {
        abort();
    }
    err.msg[0] = '\0';
    ds_rpc_predictors_query pq;
    if (ds_rpc_read_predictors_query(data, size, &pq, &err) == 0) {
        if (!text_ok(pq.model_hash, 1) || !text_ok(pq.video, 0) || !dim_ok(pq.rows) ||
            !dim_ok(pq.cols))
            abort();
    } else if (!err.msg[0]) {
        abort();
    }
    err.msg[0] = '\0';
    Deltaslice__FrameRequest *f =
        ds_rpc_read_frame_request(data, size, n_workers, max_layer_id, &err);
    if (!f && !err.msg[0])
        abort();
    ds_rpc_free_frame_request(f);
    err.msg[0] = '\0';
    Deltaslice__FinishReport *r =
        ds_rpc_read_finish_report(data, size, n_workers, max_layer_id, &err);
    if (!r && !err.msg[0])
        abort();
    ds_rpc_free_finish_report(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    n_workers = 1u + data[0] % 8u;
    max_layer_id = (int32_t)(data[1] % 64u);
    data += 2;
    size -= 2;
    static const ProtobufCMessageDescriptor *const types[] = {
        &deltaslice__frame_request__descriptor,
        &deltaslice__finish_report__descriptor,
        &deltaslice__layer_costs__descriptor,
        &deltaslice__layer_costs_request__descriptor,
        &deltaslice__predictors_request__descriptor,
        &deltaslice__predictors__descriptor,
        &deltaslice__result_stream_request__descriptor,
        &deltaslice__ack__descriptor,
        &deltaslice__clock_probe__descriptor,
        &deltaslice__job__descriptor,
        &deltaslice__stage_timing__descriptor,
        &deltaslice__link_bytes__descriptor,
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        one(types[i], data, size);
    read_requests(data, size);
    return 0;
}
