/* security.h - inside the rpc module: what rpc.c needs of a
 * ds_rpc_security (rpc.h declares the public half).  Includes gRPC. */
#ifndef DS_RPC_SECURITY_H
#define DS_RPC_SECURITY_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "rpc/rpc.h"

/* Credentials for a server or a channel (NULL sec: plaintext); the caller
 * releases them once the server port or channel is made.  NULL for a
 * server whose TLS has no certificate. */
grpc_server_credentials *ds_rpc_server_creds(const ds_rpc_security *sec);
grpc_channel_credentials *ds_rpc_channel_creds(const ds_rpc_security *sec);

/* The metadata a client sends with every call (the token), *n entries. */
grpc_metadata *ds_rpc_call_metadata(const ds_rpc_security *sec, size_t *n);

/* Checks an incoming call's credentials.  Returns 0 and writes what they
 * prove into identity (see ds_rpc_caller), or -1 with the reason in why. */
int ds_rpc_authenticate(const ds_rpc_security *sec, grpc_call *call, const grpc_metadata_array *md,
                        char *identity, size_t identity_len, char *why, size_t why_len);

#endif
