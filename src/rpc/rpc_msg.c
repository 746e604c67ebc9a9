/* rpc_msg.c - protobuf-c packing and the validation of received messages.
 *
 * Kept apart from the gRPC code so the fuzzer exercises exactly what the
 * services run on bytes from the network. */
#include <math.h>
#include <string.h>

#include "rpc/rpc.h"

int ds_rpc_pack(const ProtobufCMessage *msg, ds_buf *out, ds_error *err)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (ds_buf_reserve(out, n ? n : 1, err))
        return ds_error_prefix(err, "packing %s", msg->descriptor->name);
    out->len = protobuf_c_message_pack(msg, out->data);
    if (out->len != n)
        return ds_errorf(err, "packing %s: %zu bytes instead of %zu", msg->descriptor->name,
                         out->len, n);
    return 0;
}

/* protobuf-c accepts a field number 0 written as an overlong varint, keeps
 * it as an unknown field, and then refuses its own re-encoding of it: a
 * message a worker accepted would fail at the next hop.  Field number 0 is
 * invalid in protobuf, so such messages are malformed. */
static int has_field_zero(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *sub = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (sub[j] && has_field_zero(sub[j]))
                    return 1;
        } else {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
            if (sub && has_field_zero(sub))
                return 1;
        }
    }
    return 0;
}

ProtobufCMessage *ds_rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                size_t len, size_t max_len, ds_error *err)
{
    if (max_len && len > max_len) {
        ds_errorf(err, "%s of %zu bytes exceeds the limit of %zu", desc->name, len, max_len);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, len ? data : NULL);
    if (!m) {
        ds_errorf(err, "malformed %s (%zu bytes)", desc->name, len);
    } else if (has_field_zero(m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        m = NULL;
        ds_errorf(err, "malformed %s (%zu bytes): field number 0", desc->name, len);
    }
    return m;
}

/* ------------------------------------------------------------ validation */

static int check_text(const char *s, size_t min, size_t max, const char *what, ds_error *err)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n < min)
        return ds_errorf(err, "%s is empty", what);
    if (n > max)
        return ds_errorf(err, "%s is longer than %zu bytes", what, max);
    return 0;
}

/* Strictly ascending ids in [lo, hi]. */
static int check_ids(const int32_t *ids, size_t n, int32_t lo, int32_t hi, const char *what,
                     uint32_t job, ds_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < lo || ids[i] > hi)
            return ds_errorf(err, "job %u: %s[%zu] = %d outside [%d, %d]", job, what, i,
                             (int)ids[i], (int)lo, (int)hi);
        if (i && ids[i] <= ids[i - 1])
            return ds_errorf(err, "job %u: %s not strictly ascending (%d after %d)", job, what,
                             (int)ids[i], (int)ids[i - 1]);
    }
    return 0;
}

int ds_rpc_validate_timings(Deltaslice__StageTiming *const *t, size_t n_t,
                            Deltaslice__LinkBytes *const *l, size_t n_l, uint32_t n_workers,
                            ds_error *err)
{
    if (n_t > DS_RPC_MAX_TIMINGS)
        return ds_errorf(err, "%zu stage timings (at most %d)", n_t, DS_RPC_MAX_TIMINGS);
    if (n_l > DS_RPC_MAX_LINKS)
        return ds_errorf(err, "%zu link byte counts (at most %d)", n_l, DS_RPC_MAX_LINKS);
    for (size_t i = 0; i < n_t; i++) {
        if (!t[i])
            return ds_errorf(err, "timings[%zu] missing", i);
        if (t[i]->worker >= n_workers)
            return ds_errorf(err, "timings[%zu]: worker %u out of range (%u workers)", i,
                             t[i]->worker, n_workers);
        if (check_text(t[i]->stage, 1, DS_RPC_MAX_NAME, "timings stage", err))
            return ds_error_prefix(err, "timings[%zu]", i);
        if (t[i]->start_us < 0 || t[i]->end_us < t[i]->start_us)
            return ds_errorf(err, "timings[%zu] (%s): bad interval [%lld, %lld]", i,
                             t[i]->stage, (long long)t[i]->start_us, (long long)t[i]->end_us);
    }
    for (size_t i = 0; i < n_l; i++) {
        if (!l[i])
            return ds_errorf(err, "bytes[%zu] missing", i);
        if (check_text(l[i]->link, 1, DS_RPC_MAX_NAME, "link name", err))
            return ds_error_prefix(err, "bytes[%zu]", i);
    }
    return 0;
}

static int check_payloads(const ProtobufCBinaryData *p, size_t n, int32_t max_layer_id,
                          const char *what, ds_error *err)
{
    if (n > (size_t)max_layer_id + 1)
        return ds_errorf(err, "%zu %s for a model of %d layers", n, what, (int)max_layer_id + 1);
    for (size_t i = 0; i < n; i++)
        if (p[i].len == 0 || !p[i].data)
            return ds_errorf(err, "%s[%zu] is empty", what, i);
    return 0;
}

int ds_rpc_validate_frame_request(const Deltaslice__FrameRequest *m, uint32_t n_workers,
                                  int32_t max_layer_id, ds_error *err)
{
    if (n_workers == 0 || n_workers > DS_RPC_MAX_WORKERS || max_layer_id < 0)
        return ds_errorf(err, "frame request: bad limits (%u workers, max layer id %d)",
                         n_workers, (int)max_layer_id);
    if (m->n_jobs != n_workers)
        return ds_errorf(err, "frame %llu: %zu jobs for %u workers",
                         (unsigned long long)m->frame_id, m->n_jobs, n_workers);
    int in_chain[DS_RPC_MAX_WORKERS] = {0};
    for (size_t k = 0; k < m->n_chain; k++) {
        if (m->chain[k] >= n_workers || (k && m->chain[k] <= m->chain[k - 1]))
            return ds_errorf(err, "frame %llu: chain[%zu] = %u: expected ascending worker ids "
                             "below %u", (unsigned long long)m->frame_id, k, m->chain[k], n_workers);
        in_chain[m->chain[k]] = 1;
    }
    int32_t last_exec = 0; /* highest exec id of the jobs so far */
    for (uint32_t j = 0; j < n_workers; j++) {
        const Deltaslice__Job *job = m->jobs[j];
        if (!job)
            return ds_errorf(err, "frame %llu: job %u missing", (unsigned long long)m->frame_id,
                             j);
        if (m->n_chain && !in_chain[j] && (job->n_exec_ids || job->n_out_ids))
            return ds_errorf(err, "frame %llu: job %u of a worker off the chain is not empty",
                             (unsigned long long)m->frame_id, j);
        if (check_ids(job->exec_ids, job->n_exec_ids, 1, max_layer_id, "exec_ids", j, err) ||
            check_ids(job->out_ids, job->n_out_ids, 0, max_layer_id, "out_ids", j, err))
            return ds_error_prefix(err, "frame %llu", (unsigned long long)m->frame_id);
        if (job->n_exec_ids) {
            if (job->exec_ids[0] <= last_exec)
                return ds_errorf(err, "frame %llu: job %u executes layer %d, already run by an "
                                 "earlier job", (unsigned long long)m->frame_id, j,
                                 (int)job->exec_ids[0]);
            last_exec = job->exec_ids[job->n_exec_ids - 1];
        }
    }
    if (check_payloads(m->inputs, m->n_inputs, max_layer_id, "inputs", err) ||
        ds_rpc_validate_timings(m->timings, m->n_timings, m->bytes, m->n_bytes, n_workers, err))
        return ds_error_prefix(err, "frame %llu", (unsigned long long)m->frame_id);
    return 0;
}

int ds_rpc_validate_finish_report(const Deltaslice__FinishReport *m, uint32_t n_workers,
                                  int32_t max_layer_id, ds_error *err)
{
    if (n_workers == 0 || n_workers > DS_RPC_MAX_WORKERS || max_layer_id < 0)
        return ds_errorf(err, "finish report: bad limits (%u workers, max layer id %d)",
                         n_workers, (int)max_layer_id);
    unsigned long long f = (unsigned long long)m->frame_id;
    if (m->worker >= n_workers)
        return ds_errorf(err, "finish report of frame %llu: worker %u out of range (%u workers)",
                         f, m->worker, n_workers);
    if (m->ok && m->error && m->error[0])
        return ds_errorf(err, "finish report of frame %llu: ok with an error message", f);
    if (!m->ok && check_text(m->error, 1, DS_RPC_MAX_TEXT, "error", err))
        return ds_error_prefix(err, "finish report of frame %llu (failed)", f);
    if (!m->ok && m->n_outputs)
        return ds_errorf(err, "finish report of frame %llu: failed frame carries outputs", f);
    if (check_payloads(m->outputs, m->n_outputs, max_layer_id, "outputs", err) ||
        ds_rpc_validate_timings(m->timings, m->n_timings, m->bytes, m->n_bytes, n_workers, err))
        return ds_error_prefix(err, "finish report of frame %llu", f);
    return 0;
}

int ds_rpc_validate_layer_costs(const Deltaslice__LayerCosts *m, size_t n_layers, ds_error *err)
{
    if (m->n_seconds != n_layers || m->n_flops != n_layers)
        return ds_errorf(err, "layer costs: %zu seconds and %zu flops for %zu layers",
                         m->n_seconds, m->n_flops, n_layers);
    for (size_t i = 0; i < n_layers; i++) {
        if (!isfinite(m->seconds[i]) || m->seconds[i] < 0)
            return ds_errorf(err, "layer costs: seconds[%zu] = %g", i, m->seconds[i]);
        if (!isfinite(m->flops[i]) || m->flops[i] < 0)
            return ds_errorf(err, "layer costs: flops[%zu] = %g", i, m->flops[i]);
    }
    if (m->threads < 1)
        return ds_errorf(err, "layer costs: threads = 0");
    if (check_text(m->host, 0, DS_RPC_MAX_TEXT, "host", err))
        return ds_error_prefix(err, "layer costs");
    return 0;
}

static int check_dims(uint32_t rows, uint32_t cols, const char *what, ds_error *err)
{
    if (rows < 1 || rows > DS_RPC_MAX_FRAME_DIM || cols < 1 || cols > DS_RPC_MAX_FRAME_DIM)
        return ds_errorf(err, "%s: frame size %ux%u outside [1, %d]", what, rows, cols,
                         DS_RPC_MAX_FRAME_DIM);
    return 0;
}

int ds_rpc_validate_costs_request(const Deltaslice__LayerCostsRequest *m, ds_error *err)
{
    if (check_text(m->model_hash, 1, DS_RPC_MAX_TEXT, "model hash", err))
        return ds_error_prefix(err, "costs request");
    return check_dims(m->rows, m->cols, "costs request", err);
}

int ds_rpc_validate_predictors_request(const Deltaslice__PredictorsRequest *m, ds_error *err)
{
    if (check_text(m->model_hash, 1, DS_RPC_MAX_TEXT, "model hash", err) ||
        check_text(m->video, 0, DS_RPC_MAX_TEXT, "video", err))
        return ds_error_prefix(err, "predictors request");
    return check_dims(m->rows, m->cols, "predictors request", err);
}

int ds_rpc_validate_ack(const Deltaslice__Ack *m, ds_error *err)
{
    if (m->ok && m->error && m->error[0])
        return ds_errorf(err, "ack: ok with an error message");
    if (!m->ok && check_text(m->error, 1, DS_RPC_MAX_TEXT, "error", err))
        return ds_error_prefix(err, "ack (failed)");
    return 0;
}

int ds_rpc_validate_clock_probe(const Deltaslice__ClockProbe *m, ds_error *err)
{
    if (m->client_send_us < 0 || m->server_recv_us < 0 || m->server_send_us < m->server_recv_us)
        return ds_errorf(err, "clock probe: bad times (client send %lld, server recv %lld, "
                         "server send %lld)", (long long)m->client_send_us,
                         (long long)m->server_recv_us, (long long)m->server_send_us);
    return 0;
}
