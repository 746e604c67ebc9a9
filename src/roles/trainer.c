/* trainer.c - the trainer service: answers clock probes and hands out the
 * learnt predictors. */
#include <stdio.h>

#include "common/log.h"
#include "common/timing.h"
#include "roles.h"
#include "rpc/rpc.h"

static int on_clock(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud;
    int64_t recv = ds_wall_us();
    Deltaslice__ClockProbe *m = (Deltaslice__ClockProbe *)ds_rpc_unpack(
        &deltaslice__clock_probe__descriptor, req, len, 0, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    m->server_recv_us = recv;
    m->server_send_us = ds_wall_us();
    int rc = ds_rpc_pack(&m->base, resp, err);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return rc ? DS_RPC_INTERNAL : DS_RPC_OK;
}

static int on_predictors(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    (void)ud;
    (void)resp;
    Deltaslice__PredictorsRequest *m = (Deltaslice__PredictorsRequest *)ds_rpc_unpack(
        &deltaslice__predictors_request__descriptor, req, len, 0, err);
    if (!m)
        return DS_RPC_INVALID_ARGUMENT;
    int bad = ds_rpc_validate_predictors_request(m, err);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    if (bad)
        return DS_RPC_INVALID_ARGUMENT;
    ds_errorf(err, "sparsity learning is not built into this trainer yet");
    return DS_RPC_UNIMPLEMENTED;
}

int ds_trainer_main(const ds_config *cfg)
{
    ds_signals_block();
    ds_error err;
    char addr[64];
    snprintf(addr, sizeof addr, "0.0.0.0:%d", cfg->port_trainer);
    ds_rpc_server *srv = ds_rpc_server_new(addr, cfg->max_message_bytes, &err);
    if (!srv || ds_rpc_server_add_unary(srv, DS_RPC_TRAINER_CLOCK, on_clock, NULL, &err) ||
        ds_rpc_server_add_unary(srv, DS_RPC_TRAINER_PREDICTORS, on_predictors, NULL, &err) ||
        ds_rpc_server_start(srv, 2, &err)) {
        ds_error("%s", err.msg);
        ds_rpc_server_free(srv);
        return 1;
    }
    ds_info("serving on port %d", cfg->port_trainer);
    ds_signals_wait(-1);
    ds_info("stopping");
    ds_rpc_server_free(srv);
    return 0;
}
