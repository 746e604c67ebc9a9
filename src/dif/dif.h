/* dif.h - exact difference execution: the caches on both ends of a link.
 *
 * A sender keeps, per layer id, the last tensor it sent; a receiver the last
 * one it received.  In dif mode a tensor goes out as an update against the
 * sender's copy (mask + exact deltas, see codec.h), which the receiver applies
 * to its copy, so both copies stay bit-identical (DESIGN §3.1).
 *
 * Plan changes and faults: every frame carries the key of the caches it was
 * cut for: the master session, its epoch (moved on at every fault recovery)
 * and the plan.  A cache that sees another key empties itself, so the first
 * frame of a plan, an epoch or a session travels in full (against an
 * all-zero reference) and a restarted process is never sent an update
 * against a copy it does not hold (DESIGN §3.5).  Within one key every worker
 * up to the last active one sees every frame in order, so sender and
 * receiver stay in step; a worker that fails a frame refuses the rest of
 * that key's epoch (see roles/worker.c).
 *
 * A node is one worker's share: receive cache -> executor -> send cache. */
#ifndef DS_DIF_H
#define DS_DIF_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/tensor.h"
#include "engine/exec.h"
#include "model/model.h"

/* Whose copies a cache holds. */
typedef struct ds_dif_key {
    uint64_t session; /* the master's session id */
    uint32_t epoch;   /* the master's epoch within the session */
    uint32_t plan;    /* the plan id within the epoch */
} ds_dif_key;

/* Tensors keyed by layer id, for one model. */
typedef struct ds_dif_cache {
    int n_layers;
    ds_tensor *tensor; /* [n_layers]; ndim 0 = not held */
    ds_dif_key key;
    int has_key;
    ds_codec_scratch scratch;
} ds_dif_cache;

int ds_dif_cache_init(ds_dif_cache *c, int n_layers, ds_error *err);
/* Empties the cache when key differs from the last one seen. */
void ds_dif_cache_use(ds_dif_cache *c, ds_dif_key key);
void ds_dif_cache_clear(ds_dif_cache *c);
int ds_dif_cache_holds(const ds_dif_cache *c, int layer_id);
void ds_dif_cache_free(ds_dif_cache *c);

/* The codec's update kind for a link in dif mode (dif != 0: exact deltas)
 * or itg mode (DS_CODEC_DENSE_ONLY): the one place this choice is made. */
ds_codec_update ds_dif_link_update(int dif);

/* Sender: appends the payload of layer_id's tensor t to out. With o->update
 * other than DS_CODEC_DENSE_ONLY (dif mode; o NULL: new values) it is
 * encoded against the cached copy, which then becomes t; otherwise it goes
 * out on its own (DENSE or SPARSE) and nothing is kept. */
int ds_dif_send(ds_dif_cache *c, int layer_id, const ds_tensor *t, const ds_codec_opts *o,
                ds_buf *out, ds_error *err);

/* Receiver: applies one payload to the cache (expected: the layer's shape,
 * NULL = trust the header within the codec's limits) and returns the layer
 * id it carried. On error the cache is unchanged. */
int ds_dif_receive(ds_dif_cache *c, const uint8_t *p, size_t n, const ds_shape *expected,
                   int *layer_id, ds_error *err);

/* A payload list: concatenated payloads and their offsets. */
typedef struct ds_payloads {
    ds_buf buf;
    int n;
    int cap;
    size_t *off; /* [n + 1] */
} ds_payloads;

void ds_payloads_reset(ds_payloads *p);
/* Marks the end of the payload just appended to p->buf. */
int ds_payloads_close_one(ds_payloads *p, ds_error *err);
void ds_payloads_free(ds_payloads *p);

typedef struct ds_dif_node ds_dif_node;

/* model: shapes set (ds_model_set_input) and outliving the node. */
ds_dif_node *ds_dif_node_new(const ds_model *m, ds_backend be, int threads, ds_error *err);

/* Seconds spent in each step of the last ds_dif_node_run. */
typedef struct ds_dif_timing {
    double decode, execute, encode;
} ds_dif_timing;

/* Runs one frame: applies the input payloads (one per input layer; a u8
 * frame for layer 0 becomes float value/255), runs the job and appends one
 * payload per out_id to out (out NULL: outputs are not needed), encoded as
 * o says: in dif mode against what this node sent last under the same key,
 * whether to the next worker or, from the last one, to the master. An
 * empty job copies its input payloads to out as they are. timing may be
 * NULL. */
int ds_dif_node_run(ds_dif_node *n, ds_dif_key key, const ds_job *job, int n_in,
                    const uint8_t *const *in, const size_t *in_len, const ds_codec_opts *o,
                    ds_payloads *out, ds_dif_timing *timing, ds_error *err);

/* Read access to the last received or sent tensor of a layer (tests). */
const ds_tensor *ds_dif_node_received(const ds_dif_node *n, int layer_id);
const ds_tensor *ds_dif_node_sent(const ds_dif_node *n, int layer_id);
void ds_dif_node_free(ds_dif_node *n);

#endif
