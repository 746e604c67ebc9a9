/* accept.h - the guard on gRPC's accept loop (internal to src/rpc).
 *
 * Once installed, every connection a gRPC server of this process accepts
 * passes through accept.c, which
 *   - keeps the listener alive when the process runs out of file
 *     descriptors (or socket memory): connections that cannot be served are
 *     accepted and closed at once, so their clients see the end rather than
 *     wait in the backlog;
 *   - closes a new connection from an address that already has
 *     DS_RPC_MAX_CONN_PER_PEER open, or beyond DS_RPC_MAX_CONN open in all
 *     (rpc.h), counted over all servers of the process.
 * Each reason is logged as a warning at most once a second. */
#ifndef DS_RPC_ACCEPT_H
#define DS_RPC_ACCEPT_H

/* Turns the guard on (opens its reserve descriptor).  Idempotent and
 * thread-safe; rpc_init calls it before gRPC creates a listener. */
void ds_rpc_accept_guard_install(void);

#endif
