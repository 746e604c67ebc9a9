/* rpc.h - the project's only door to gRPC (C core) and protobuf-c messages.
 *
 * Nobody else includes grpc headers.  Messages are plain bytes to the
 * transport (rpc.c); the typed calls at the end (calls.c) pack, unpack and
 * validate deltaslice.proto's messages for the services, with the
 * protobuf-c helpers and ds_rpc_validate_* functions (rpc_msg.c).
 *
 * Server:  ds_rpc_server_new -> ds_rpc_server_add_unary / _add_stream ->
 *          ds_rpc_server_start -> ... -> ds_rpc_server_shutdown -> _free.
 *          Handlers run on the server's threads; request bytes are hostile
 *          data (a failed parse should return DS_RPC_INVALID_ARGUMENT).
 * Client:  ds_rpc_channel_new -> ds_rpc_wait_ready -> ds_rpc_call_unary /
 *          ds_rpc_reader_open + ds_rpc_reader_next -> ... -> _free.
 *
 * Errors name the peer, the method and gRPC's status and message:
 *   "w0 (localhost:33330) Submit: UNAVAILABLE: failed to connect"
 *
 * Message size limits (both directions) default to DS_RPC_DEFAULT_MAX_MSG
 * (1 GiB); gRPC's own default would be 4 MiB.  An oversized message fails
 * that call with DS_RPC_RESOURCE_EXHAUSTED.
 *
 * gRPC is not fork-safe once initialised: fork child processes before
 * creating any server or channel. */
#ifndef DS_RPC_H
#define DS_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/buf.h"
#include "common/error.h"
#include "rpc/deltaslice.pb-c.h"

#define DS_RPC_DEFAULT_MAX_MSG ((size_t)1 << 30)
/* Largest limit gRPC can express (its channel args are ints). */
#define DS_RPC_MAX_MAX_MSG ((size_t)0x7fffffff)

/* Connection limits of the process's servers (a master holds a few
 * connections to a worker; these bound what one host can take): a new
 * connection from an address with DS_RPC_MAX_CONN_PER_PEER open, or with
 * DS_RPC_MAX_CONN open in all, is closed at once; one connection carries
 * at most DS_RPC_MAX_STREAMS_PER_CONN calls at a time (gRPC clients queue
 * the rest).  Running out of file descriptors closes new connections until
 * some are freed; the servers keep listening. */
#define DS_RPC_MAX_CONN_PER_PEER 32
#define DS_RPC_MAX_CONN 512
#define DS_RPC_MAX_STREAMS_PER_CONN 64

/* gRPC status codes (same values as grpc_status_code). */
typedef enum ds_rpc_code {
    DS_RPC_OK = 0,
    DS_RPC_CANCELLED = 1,
    DS_RPC_UNKNOWN = 2,
    DS_RPC_INVALID_ARGUMENT = 3,
    DS_RPC_DEADLINE_EXCEEDED = 4,
    DS_RPC_NOT_FOUND = 5,
    DS_RPC_ALREADY_EXISTS = 6,
    DS_RPC_PERMISSION_DENIED = 7,
    DS_RPC_RESOURCE_EXHAUSTED = 8,
    DS_RPC_FAILED_PRECONDITION = 9,
    DS_RPC_ABORTED = 10,
    DS_RPC_OUT_OF_RANGE = 11,
    DS_RPC_UNIMPLEMENTED = 12,
    DS_RPC_INTERNAL = 13,
    DS_RPC_UNAVAILABLE = 14,
    DS_RPC_DATA_LOSS = 15,
    DS_RPC_UNAUTHENTICATED = 16,
} ds_rpc_code;

/* "UNAVAILABLE", "INVALID_ARGUMENT", ...; "UNKNOWN_STATUS" out of range. */
const char *ds_rpc_code_name(int code);

/* Full method paths of deltaslice.proto. */
#define DS_RPC_WORKER_SUBMIT "/deltaslice.Worker/Submit"
#define DS_RPC_WORKER_RESULTS "/deltaslice.Worker/Results"
#define DS_RPC_WORKER_COSTS "/deltaslice.Worker/Costs"
#define DS_RPC_WORKER_CLOCK "/deltaslice.Worker/Clock"
#define DS_RPC_TRAINER_PREDICTORS "/deltaslice.Trainer/Predictors"
#define DS_RPC_TRAINER_CLOCK "/deltaslice.Trainer/Clock"
#define DS_RPC_MASTER_RESULTS "/deltaslice.Master/Results"

/* Keepalive: peers ping each other every `seconds` (default 30, clamped to
 * [0.1, 3600]) on open calls and drop a connection whose pings go
 * unanswered, so a stream through a NAT does not idle out and a vanished
 * peer ends it.  Servers accept pings up to 3x that rate.  Process-wide;
 * applies to servers and channels created afterwards; use one value for
 * all processes of a deployment. */
void ds_rpc_set_keepalive(double seconds);

/* Process-wide, once (on SIGINT/SIGTERM): every client call in progress or
 * started later fails within 0.1 s with CANCELLED ("interrupted"), and so
 * do ds_rpc_wait_ready and ds_rpc_reader_open. */
void ds_rpc_interrupt(void);
int ds_rpc_interrupted(void);

/* --------------------------------------------------------------- security
 *
 * How a process's servers and channels authenticate (one per role):
 *   - mutual TLS: ca + cert + key and no token.  Servers require a client
 *     certificate signed by ca, channels present cert; a peer without one,
 *     or with one from another CA, is refused at the handshake.
 *   - token over TLS: ca (+ cert and key on servers) and a token.  Servers
 *     present their certificate and do not ask for the client's; every call
 *     carries the token and a server refuses a call without it
 *     (UNAUTHENTICATED), comparing in constant time.
 *   - plaintext (no TLS files), with or without a token: for loopback, or
 *     where the configuration says insecure: true (config.c decides).
 * Channels verify the server's certificate against ca and the target's host
 * name (scripts/make-certs.sh puts every route's host in the certificate). */
typedef struct ds_rpc_security ds_rpc_security;
typedef struct ds_rpc_security_opts {
    const char *ca_file;   /* PEM files; NULL = none */
    const char *cert_file;
    const char *key_file;
    const char *token;     /* shared secret; NULL or "" = none */
    const char *what;      /* names the source in errors ("config.yml: tls (w0)") */
} ds_rpc_security_opts;
/* Reads the files (errors name what, the key and the file). */
ds_rpc_security *ds_rpc_security_new(const ds_rpc_security_opts *o, ds_error *err);
void ds_rpc_security_free(ds_rpc_security *sec);
/* "mutual TLS", "TLS + token", "plaintext + token" or "plaintext" (sec may
 * be NULL: plaintext). */
const char *ds_rpc_security_mode(const ds_rpc_security *sec);

/* Who is calling, inside a handler (unary or stream) on the handler's
 * thread; NULL elsewhere.  identity is what the credentials prove:
 * "cn=<certificate common name>" under mutual TLS, "token" when the call
 * carried the right token, "" in plaintext without a token. */
typedef struct ds_rpc_caller {
    const char *peer;     /* "ipv4:127.0.0.1:40112", "ipv6:[::1]:40112" */
    const char *host;     /* the peer without its port: "ipv4:127.0.0.1" */
    const char *identity;
} ds_rpc_caller;
const ds_rpc_caller *ds_rpc_current_caller(void);

/* ---------------------------------------------------------------- server */

typedef struct ds_rpc_server ds_rpc_server;
typedef struct ds_rpc_stream ds_rpc_stream;

/* Unary handler: reads req[0..req_len), writes the reply into resp (a buffer
 * reused across calls; resp->len starts at 0) and returns DS_RPC_OK, or a
 * status code with a one-line message in err (sent to the client as the
 * status message).  Runs on a server thread; must be thread-safe when the
 * server has more than one thread. */
typedef int (*ds_rpc_unary_fn)(void *ud, const uint8_t *req, size_t req_len, ds_buf *resp,
                               ds_error *err);

/* Server-streaming handler: reads the request and returns DS_RPC_OK to accept
 * the stream, taking ownership of one reference to `stream`: it may push
 * messages from any thread until it calls ds_rpc_stream_close (mandatory,
 * exactly once, also after the peer went away).  Any other return rejects
 * the call with that status and err's message (unless the handler closed the
 * stream already: its status stands); the handler must not keep `stream`. */
typedef int (*ds_rpc_stream_fn)(void *ud, const uint8_t *req, size_t req_len,
                                ds_rpc_stream *stream, ds_error *err);

/* Binds listen_addr ("0.0.0.0:33330", "127.0.0.1:0" for a free port).
 * max_msg_bytes = 0 means DS_RPC_DEFAULT_MAX_MSG.  sec: NULL = plaintext,
 * no token; else it must outlive the server. */
ds_rpc_server *ds_rpc_server_new(const char *listen_addr, size_t max_msg_bytes,
                                 const ds_rpc_security *sec, ds_error *err);
/* The bound port (useful with port 0). */
int ds_rpc_server_port(const ds_rpc_server *srv);
/* Register before ds_rpc_server_start; method is a full path
 * ("/deltaslice.Worker/Submit"), unique per server.  Calls to unregistered
 * methods get DS_RPC_UNIMPLEMENTED. */
int ds_rpc_server_add_unary(ds_rpc_server *srv, const char *method, ds_rpc_unary_fn fn, void *ud,
                            ds_error *err);
/* stream_queue: how many messages a stream buffers before a push waits
 * (0 = 64). */
int ds_rpc_server_add_stream(ds_rpc_server *srv, const char *method, ds_rpc_stream_fn fn,
                             void *ud, size_t stream_queue, ds_error *err);
/* Starts serving with n_threads threads (0 = 2) running the handlers. */
int ds_rpc_server_start(ds_rpc_server *srv, int n_threads, ds_error *err);
/* Orderly stop: refuses new calls, cancels open streams (their pushes fail
 * from then on), waits for running handlers, joins every thread.  Idempotent;
 * safe from any thread except a handler's. */
void ds_rpc_server_shutdown(ds_rpc_server *srv);
/* Shuts down if needed and frees.  Streams still held by the application
 * stay valid (closed) until ds_rpc_stream_close. */
void ds_rpc_server_free(ds_rpc_server *srv);

/* Queues one message on the stream (the bytes are copied).  When the queue
 * is full, waits up to timeout_s seconds (< 0: forever) for room.  Fails when
 * the stream is closed, the peer disconnected or the server shut down
 * ("Results stream to ipv4:127.0.0.1:5555: peer disconnected"), or on timeout.
 * Thread-safe. */
int ds_rpc_stream_push(ds_rpc_stream *s, const void *msg, size_t len, double timeout_s,
                       ds_error *err);
/* 1 while the peer is connected and the stream not closed; 0 after a
 * disconnect, a cancel or server shutdown. */
int ds_rpc_stream_alive(ds_rpc_stream *s);
/* The peer's address ("ipv4:127.0.0.1:40112"), for logs. */
const char *ds_rpc_stream_peer(const ds_rpc_stream *s);
/* Ends the stream after its queued messages with status code (DS_RPC_OK
 * for a clean end) and message (may be NULL), and drops the handler's
 * reference: s is invalid afterwards. */
void ds_rpc_stream_close(ds_rpc_stream *s, int code, const char *message);
/* ds_rpc_stream_close, then waits up to timeout_s for the call to end (its
 * status sent, or the peer gone): for a clean end right before
 * ds_rpc_server_shutdown, which cancels the calls still open.  0 when the
 * call ended in time, -1 otherwise (a peer that reads nothing: the server's
 * shutdown ends it).  s is invalid afterwards either way. */
int ds_rpc_stream_close_wait(ds_rpc_stream *s, int code, const char *message, double timeout_s);

/* ---------------------------------------------------------------- client */

typedef struct ds_rpc_channel ds_rpc_channel;
typedef struct ds_rpc_reader ds_rpc_reader;

/* peer_name names the peer in messages ("w0", "trainer"); target is
 * "host:port".  Connects lazily.  max_msg_bytes = 0: the 1 GiB default.
 * Reconnect backoff is 0.1 s doubling to 2 s.  sec: as for servers. */
ds_rpc_channel *ds_rpc_channel_new(const char *peer_name, const char *target,
                                   size_t max_msg_bytes, const ds_rpc_security *sec,
                                   ds_error *err);
void ds_rpc_channel_free(ds_rpc_channel *ch);
/* Ends the unary calls in progress on ch (from any thread): they fail
 * within 0.1 s with CANCELLED; later calls are not affected.  For a peer
 * known to be gone or a request no longer wanted. */
void ds_rpc_channel_cancel(ds_rpc_channel *ch);
/* Tries to connect again now rather than at the end of the backoff (for a
 * peer known to be back). */
void ds_rpc_channel_reset_backoff(ds_rpc_channel *ch);
/* Prefixes err with "peer (target) Method", the way the channel's own call
 * errors read; returns -1. */
int ds_rpc_error_prefix(const ds_rpc_channel *ch, const char *method, ds_error *err);

/* Waits until the peer accepts connections, retrying with backoff
 * (0.1 s .. 2 s) for up to total_timeout_s seconds (or until
 * ds_rpc_interrupt); logs "waiting for w0 at localhost:33330" once when the
 * peer is not up at once. */
int ds_rpc_wait_ready(ds_rpc_channel *ch, double total_timeout_s, ds_error *err);

/* One unary call: sends req[0..len), waits for the reply (resp->len = reply
 * length, buffer reused).  deadline_s <= 0: no deadline.  On failure returns
 * -1, sets err and, when code is not NULL, the gRPC status code (or
 * DS_RPC_INTERNAL for local failures); *code = DS_RPC_OK on success.
 * Thread-safe: many threads may call on one channel. */
int ds_rpc_call_unary(ds_rpc_channel *ch, const char *method, const void *req, size_t len,
                      double deadline_s, ds_buf *resp, int *code, ds_error *err);

/* Opens a server-streaming call (no deadline; ended by the server, by
 * ds_rpc_reader_cancel or by ds_rpc_reader_free).  Returns once the server's
 * handler accepted the stream, so requests sent afterwards (on any channel)
 * find it in place; fails (NULL, *code = the status like ds_rpc_call_unary)
 * when the handler refused it, the call failed, or the server does not
 * answer within DS_RPC_OPEN_TIMEOUT_S. */
#define DS_RPC_OPEN_TIMEOUT_S 30.0
ds_rpc_reader *ds_rpc_reader_open(ds_rpc_channel *ch, const char *method, const void *req,
                                  size_t len, int *code, ds_error *err);
#define DS_RPC_TIMEOUT (-2)
/* Waits up to timeout_s (< 0: forever) for the next message.  Returns 1 with
 * the message in msg, 0 when the server ended the stream with OK, -1 on error
 * (status not OK, cancelled, connection lost; *code like ds_rpc_call_unary),
 * DS_RPC_TIMEOUT when nothing came in time (nothing is lost: call again).
 * One thread reads a stream at a time. */
int ds_rpc_reader_next(ds_rpc_reader *r, ds_buf *msg, double timeout_s, int *code,
                       ds_error *err);
/* Cancels the call from any thread; a blocked ds_rpc_reader_next returns. */
void ds_rpc_reader_cancel(ds_rpc_reader *r);
/* Cancels if still open and frees. */
void ds_rpc_reader_free(ds_rpc_reader *r);

/* ------------------------------------------------------- protobuf helpers */

/* Packs msg into out (reused; out->len = packed size). */
int ds_rpc_pack(const ProtobufCMessage *msg, ds_buf *out, ds_error *err);
/* Unpacks data[0..len) as desc's message after checking len <= max_len
 * (0 = no limit beyond the caller's message limit).  Free the result with
 * protobuf_c_message_free_unpacked(msg, NULL).  "malformed
 * deltaslice.FrameRequest (123 bytes)" on failure. */
ProtobufCMessage *ds_rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                size_t len, size_t max_len, ds_error *err);

/* ------------------------------------------------------------- validation
 *
 * What the services call right after unpacking a message from the network.
 * Each checks counts, ids, string lengths and numbers so that later code may
 * index arrays with them; each fails with one line naming the field. */

/* Bounds shared by the validators (generous; real values are far smaller). */
#define DS_RPC_MAX_WORKERS 64
#define DS_RPC_MAX_TIMINGS 4096
#define DS_RPC_MAX_LINKS 256
#define DS_RPC_MAX_NAME 64     /* stage and link names */
#define DS_RPC_MAX_TEXT 1024   /* error strings, host names, hashes, paths */
#define DS_RPC_MAX_FRAME_DIM 16384

/* FrameRequest: exactly n_workers jobs (index = worker id), chain ids
 * ascending below n_workers and the jobs of workers off the chain empty;
 * every exec id in
 * [1, max_layer_id] (0 is the network input), strictly ascending within a
 * job, and every job's exec ids above the previous jobs' (each layer runs at
 * most once, in chain order); out ids in [0, max_layer_id], strictly
 * ascending; at most max_layer_id + 1 inputs, none empty; timings and link
 * counts as in ds_rpc_validate_timings. */
int ds_rpc_validate_frame_request(const Deltaslice__FrameRequest *m, uint32_t n_workers,
                                  int32_t max_layer_id, ds_error *err);
/* FinishReport: worker < n_workers; error text present iff !ok; at most
 * max_layer_id + 1 outputs, none empty, and none unless ok; timings/links. */
int ds_rpc_validate_finish_report(const Deltaslice__FinishReport *m, uint32_t n_workers,
                                  int32_t max_layer_id, ds_error *err);
/* Stage timings (worker < n_workers, stage name 1..DS_RPC_MAX_NAME bytes,
 * start <= end, both >= 0) and link byte counts (name 1..DS_RPC_MAX_NAME). */
int ds_rpc_validate_timings(Deltaslice__StageTiming *const *t, size_t n_t,
                            Deltaslice__LinkBytes *const *l, size_t n_l, uint32_t n_workers,
                            ds_error *err);
/* LayerCosts: n_layers entries of seconds and flops, each finite and >= 0,
 * threads >= 1, host <= DS_RPC_MAX_TEXT bytes. */
int ds_rpc_validate_layer_costs(const Deltaslice__LayerCosts *m, size_t n_layers, ds_error *err);
/* LayerCostsRequest / PredictorsRequest: hash 1..DS_RPC_MAX_TEXT bytes, rows
 * and cols in [1, DS_RPC_MAX_FRAME_DIM]; video <= DS_RPC_MAX_TEXT bytes. */
int ds_rpc_validate_costs_request(const Deltaslice__LayerCostsRequest *m, ds_error *err);
int ds_rpc_validate_predictors_request(const Deltaslice__PredictorsRequest *m, ds_error *err);
/* Ack: error text present iff !ok. */
int ds_rpc_validate_ack(const Deltaslice__Ack *m, ds_error *err);
/* ClockProbe reply: server_recv_us <= server_send_us, all >= 0. */
int ds_rpc_validate_clock_probe(const Deltaslice__ClockProbe *m, ds_error *err);

/* ----------------------------------------------------- typed calls (calls.c)
 *
 * One function per method and side, so that the services deal in C values
 * and never pack, unpack, validate or free a protobuf message of the ones
 * below themselves.  Every received message is unpacked and validated in
 * one step; on the client side its errors name the peer and method like
 * the transport's ("w0 (localhost:33330) Costs: layer costs: ...").
 *   client:  ds_rpc_call_*, ds_rpc_open_results
 *   server:  ds_rpc_read_* the request, ds_rpc_write_* the reply */

/* Clock (Worker and Trainer), client half: up to n_probes probes of the
 * peer's wall clock (NTP-style); *offset_us (peer = local + offset) and
 * *rtt_us of the probe with the shortest round trip.  Stops at the first
 * failed call or bad answer; fails when no probe got a valid answer. */
int ds_rpc_call_clock(ds_rpc_channel *ch, const char *method, int n_probes, int64_t *offset_us,
                      int64_t *rtt_us, ds_error *err);
/* Clock as a liveness probe: one call that must be answered (sanely)
 * within deadline_s. */
int ds_rpc_call_ping(ds_rpc_channel *ch, const char *method, double deadline_s, ds_error *err);
/* Clock, server half: a unary handler answering with this process's receive
 * and send times. */
int ds_rpc_clock_handler(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err);

/* Costs, client half: the worker's costs for the model (by hash) at rows x
 * cols, checked for n_layers layers; *code (may be NULL) as ds_rpc_call_unary. */
typedef struct ds_rpc_costs {
    double *seconds; /* n_layers; malloc'd, the caller frees it */
    uint32_t threads;
    char host[DS_RPC_MAX_TEXT + 1];
} ds_rpc_costs;
int ds_rpc_call_costs(ds_rpc_channel *ch, const char *model_hash, int rows, int cols,
                      size_t n_layers, double deadline_s, ds_rpc_costs *out, int *code,
                      ds_error *err);
/* Costs, server half. */
typedef struct ds_rpc_costs_query {
    char model_hash[DS_RPC_MAX_TEXT + 1];
    int rows, cols;
} ds_rpc_costs_query;
int ds_rpc_read_costs_query(const uint8_t *req, size_t len, ds_rpc_costs_query *q, ds_error *err);
int ds_rpc_write_costs(const double *seconds, const double *flops, size_t n_layers,
                       uint32_t threads, const char *host, ds_buf *resp, ds_error *err);

/* Predictors, client half: the trainer's predictor blob (sched/predict.h)
 * for the model (by hash), video, frame size and frame count (0: any), into
 * blob (reused). */
int ds_rpc_call_predictors(ds_rpc_channel *ch, const char *model_hash, const char *video,
                           int rows, int cols, uint32_t frame_num, double deadline_s,
                           ds_buf *blob, ds_error *err);
/* Predictors, server half. */
typedef struct ds_rpc_predictors_query {
    char model_hash[DS_RPC_MAX_TEXT + 1];
    char video[DS_RPC_MAX_TEXT + 1];
    int rows, cols;
    uint32_t frame_num;
} ds_rpc_predictors_query;
int ds_rpc_read_predictors_query(const uint8_t *req, size_t len, ds_rpc_predictors_query *q,
                                 ds_error *err);
int ds_rpc_write_predictors(const uint8_t *blob, size_t blob_len, ds_buf *resp, ds_error *err);

/* Submit, client half: sends a packed FrameRequest (the caller packs it:
 * the worker does so off its sending thread) and checks the Ack; resp is a
 * buffer reused across calls. */
int ds_rpc_call_submit(ds_rpc_channel *ch, const ds_buf *request, double deadline_s,
                       ds_buf *resp, ds_error *err);
/* Submit, server half: the request as ds_rpc_validate_frame_request checks
 * it (free it with ds_rpc_free_frame_request), and the Ack. */
Deltaslice__FrameRequest *ds_rpc_read_frame_request(const uint8_t *req, size_t len,
                                                    uint32_t n_workers, int32_t max_layer_id,
                                                    ds_error *err);
void ds_rpc_free_frame_request(Deltaslice__FrameRequest *m);
int ds_rpc_write_ack(ds_buf *resp, ds_error *err);

/* Results: what a master asks for when it opens a worker's result stream. */
typedef struct ds_rpc_results_request {
    uint64_t session_id; /* the master session (non-zero) */
    uint32_t epoch;      /* its current epoch */
    int takeover;        /* replace another session of the same identity */
} ds_rpc_results_request;
/* Results, client half: opens the stream (see ds_rpc_reader_open); its
 * messages are FinishReports. */
ds_rpc_reader *ds_rpc_open_results(ds_rpc_channel *ch, const ds_rpc_results_request *q,
                                   int *code, ds_error *err);
/* Results, server half. */
int ds_rpc_read_results_request(const uint8_t *req, size_t len, ds_rpc_results_request *q,
                                ds_error *err);
/* A FinishReport from the stream, as ds_rpc_validate_finish_report checks
 * it; free it with ds_rpc_free_finish_report. */
Deltaslice__FinishReport *ds_rpc_read_finish_report(const uint8_t *msg, size_t len,
                                                    uint32_t n_workers, int32_t max_layer_id,
                                                    ds_error *err);
void ds_rpc_free_finish_report(Deltaslice__FinishReport *m);

#endif
