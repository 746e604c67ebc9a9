#include "dif.h"

#include <stdlib.h>
#include <string.h>

#include "common/timing.h"

int ds_dif_cache_init(ds_dif_cache *c, int n_layers, ds_error *err)
{
    memset(c, 0, sizeof *c);
    c->tensor = calloc((size_t)n_layers, sizeof *c->tensor);
    if (!c->tensor)
        return ds_errorf(err, "out of memory");
    c->n_layers = n_layers;
    return 0;
}

void ds_dif_cache_clear(ds_dif_cache *c)
{
    /* Buffers are kept for reuse; ndim 0 marks "not held". */
    for (int i = 0; i < c->n_layers; i++)
        c->tensor[i].shape.ndim = 0;
}

void ds_dif_cache_use(ds_dif_cache *c, ds_dif_key key)
{
    if (!c->has_key || c->key.session != key.session || c->key.epoch != key.epoch ||
        c->key.plan != key.plan)
        ds_dif_cache_clear(c);
    c->key = key;
    c->has_key = 1;
}

int ds_dif_cache_holds(const ds_dif_cache *c, int layer_id)
{
    return layer_id >= 0 && layer_id < c->n_layers && c->tensor[layer_id].shape.ndim > 0;
}

void ds_dif_cache_free(ds_dif_cache *c)
{
    for (int i = 0; i < c->n_layers; i++)
        ds_tensor_free(&c->tensor[i]);
    free(c->tensor);
    ds_codec_scratch_free(&c->scratch);
    memset(c, 0, sizeof *c);
}

ds_codec_update ds_dif_link_update(int dif)
{
    /* Exact integer deltas (XOR of f32 bit patterns, u8 mod 256): bit-exact
     * like new values, and far smaller once compressed. */
    return dif ? DS_CODEC_EXACT_DELTA : DS_CODEC_DENSE_ONLY;
}

/* keep (dif mode): encode against the cached copy when it has t's dtype and
 * shape, and keep t as the new copy; otherwise the payload stands alone. */
static int send_payload(ds_dif_cache *c, int layer_id, const ds_tensor *t, const ds_codec_opts *o,
                        int keep, ds_buf *out, ds_error *err)
{
    if (layer_id < 0 || layer_id >= c->n_layers)
        return ds_errorf(err, "send: layer %d out of range 0..%d", layer_id, c->n_layers - 1);
    ds_tensor *ref = &c->tensor[layer_id];
    const ds_tensor *base = keep && ref->shape.ndim > 0 && ref->dtype == t->dtype &&
                                    ds_shape_equal(&ref->shape, &t->shape)
                                ? ref
                                : NULL;
    /* Without a reference the codec still picks DENSE or SPARSE (against
     * zeros), whichever is smaller: such a payload needs no cache. */
    ds_codec_opts co = {o ? o->compress : DS_COMPRESS_NONE, o ? o->zstd_level : 1,
                        base && o ? o->update : DS_CODEC_NEW_VALUES};
    if (ds_codec_encode(layer_id, t, base, &co, &c->scratch, out, err))
        return -1;
    if (!keep)
        return 0;
    return ds_tensor_copy(ref, t, err);
}

int ds_dif_send(ds_dif_cache *c, int layer_id, const ds_tensor *t, const ds_codec_opts *o,
                ds_buf *out, ds_error *err)
{
    return send_payload(c, layer_id, t, o, !o || o->update != DS_CODEC_DENSE_ONLY, out, err);
}

int ds_dif_receive(ds_dif_cache *c, const uint8_t *p, size_t n, const ds_shape *expected,
                   int *layer_id, ds_error *err)
{
    ds_codec_header h;
    if (ds_codec_peek(p, n, &h, err))
        return -1;
    if (h.layer_id >= c->n_layers)
        return ds_errorf(err, "payload for layer %d, but the model has layers 0..%d", h.layer_id,
                         c->n_layers - 1);
    ds_tensor *cache = &c->tensor[h.layer_id];
    if (h.encoding == DS_ENC_UPDATE && cache->shape.ndim == 0)
        return ds_errorf(err, "update for layer %d, but no copy of it is held (epoch %u, plan %u)",
                         h.layer_id, c->key.epoch, c->key.plan);
    if (ds_codec_decode(p, n, expected, cache, &c->scratch, err))
        return ds_error_prefix(err, "layer %d", h.layer_id);
    *layer_id = h.layer_id;
    return 0;
}

void ds_payloads_reset(ds_payloads *p)
{
    p->buf.len = 0;
    p->n = 0;
}

int ds_payloads_close_one(ds_payloads *p, ds_error *err)
{
    if (p->n + 2 > p->cap) {
        int cap = p->cap ? p->cap * 2 : 8;
        size_t *off = realloc(p->off, sizeof *off * (size_t)cap);
        if (!off)
            return ds_errorf(err, "out of memory");
        p->off = off;
        p->cap = cap;
    }
    if (p->n == 0)
        p->off[0] = 0;
    p->off[++p->n] = p->buf.len;
    return 0;
}

void ds_payloads_free(ds_payloads *p)
{
    ds_buf_free(&p->buf);
    free(p->off);
    memset(p, 0, sizeof *p);
}

struct ds_dif_node {
    const ds_model *model;
    ds_executor *exec;
    ds_dif_cache in;   /* last tensor received, per layer */
    ds_dif_cache out;  /* last tensor sent, per layer */
    ds_tensor frame;   /* layer 0 as float when it arrives as u8 */
    ds_tensor *results; /* [n_layers] executor outputs, reused */
    int *input_ids;
    const ds_tensor **inputs;
};

ds_dif_node *ds_dif_node_new(const ds_model *m, ds_backend be, int threads, ds_error *err)
{
    ds_dif_node *n = calloc(1, sizeof *n);
    if (!n) {
        ds_errorf(err, "out of memory");
        return NULL;
    }
    n->model = m;
    size_t k = (size_t)m->n_layers;
    n->results = calloc(k, sizeof *n->results);
    n->input_ids = calloc(k, sizeof *n->input_ids);
    n->inputs = calloc(k, sizeof *n->inputs);
    if (!n->results || !n->input_ids || !n->inputs) {
        ds_errorf(err, "out of memory");
        goto fail;
    }
    if (ds_dif_cache_init(&n->in, m->n_layers, err) || ds_dif_cache_init(&n->out, m->n_layers, err))
        goto fail;
    n->exec = ds_executor_new(m, be, threads, err);
    if (!n->exec)
        goto fail;
    return n;
fail:
    ds_dif_node_free(n);
    return NULL;
}

int ds_dif_node_run(ds_dif_node *n, ds_dif_key key, const ds_job *job, int n_in,
                    const uint8_t *const *in, const size_t *in_len, const ds_codec_opts *o,
                    ds_payloads *out, ds_dif_timing *timing, ds_error *err)
{
    const ds_model *m = n->model;
    ds_dif_timing local;
    if (!timing)
        timing = &local;
    double t0 = ds_now();
    if (n_in < 0 || n_in > m->n_layers)
        return ds_errorf(err, "%d inputs for a model of %d layers", n_in, m->n_layers);
    if (job->n_exec == 0) {
        /* An empty job hands its inputs on untouched: the next receiver's
         * copies then track the sender before this node, and this node's
         * caches stay idle until the next plan empties them. */
        timing->decode = timing->execute = timing->encode = 0;
        if (!out)
            return 0;
        ds_payloads_reset(out);
        for (int i = 0; i < n_in; i++)
            if (ds_buf_append(&out->buf, in[i], in_len[i], err) || ds_payloads_close_one(out, err))
                return -1;
        return 0;
    }
    ds_dif_cache_use(&n->in, key);
    ds_dif_cache_use(&n->out, key);
    for (int i = 0; i < n_in; i++) {
        ds_codec_header h;
        if (ds_codec_peek(in[i], in_len[i], &h, err))
            return ds_error_prefix(err, "input %d", i);
        if (h.layer_id >= m->n_layers)
            return ds_errorf(err, "input %d is layer %d, but the model has layers 0..%d", i, h.layer_id,
                             m->n_layers - 1);
        for (int j = 0; j < i; j++)
            if (n->input_ids[j] == h.layer_id)
                return ds_errorf(err, "layer %d supplied twice", h.layer_id);
        /* Layer 0 may travel as u8 (a camera frame): same shape, other type. */
        const ds_shape *want = &m->layers[h.layer_id].out_shape;
        int id;
        if (ds_dif_receive(&n->in, in[i], in_len[i], want, &id, err))
            return -1;
        const ds_tensor *t = &n->in.tensor[id];
        if (t->dtype == DS_U8) {
            if (id != 0)
                return ds_errorf(err, "layer %d arrived as u8; only the input frame may", id);
            if (ds_tensor_u8_to_f32(t, &n->frame, err))
                return -1;
            t = &n->frame;
        }
        n->input_ids[i] = id;
        n->inputs[i] = t;
    }
    if (job->n_out > m->n_layers)
        return ds_errorf(err, "%d outputs requested from a model of %d layers", job->n_out, m->n_layers);
    double t1 = ds_now();
    timing->decode = t1 - t0;
    if (ds_executor_run(n->exec, job, n_in, n->input_ids, n->inputs, n->results, err))
        return -1;
    double t2 = ds_now();
    timing->execute = t2 - t1;
    timing->encode = 0;
    if (!out)
        return 0;
    ds_payloads_reset(out);
    const int keep = o->update != DS_CODEC_DENSE_ONLY;
    for (int i = 0; i < job->n_out; i++) {
        if (send_payload(&n->out, job->out_ids[i], &n->results[i], o, keep, &out->buf, err) ||
            ds_payloads_close_one(out, err))
            return -1;
    }
    timing->encode = ds_now() - t2;
    return 0;
}



const ds_tensor *ds_dif_node_received(const ds_dif_node *n, int layer_id)
{
    return ds_dif_cache_holds(&n->in, layer_id) ? &n->in.tensor[layer_id] : NULL;
}

const ds_tensor *ds_dif_node_sent(const ds_dif_node *n, int layer_id)
{
    return ds_dif_cache_holds(&n->out, layer_id) ? &n->out.tensor[layer_id] : NULL;
}

void ds_dif_node_free(ds_dif_node *n)
{
    if (!n)
        return;
    ds_executor_free(n->exec);
    ds_dif_cache_free(&n->in);
    ds_dif_cache_free(&n->out);
    ds_tensor_free(&n->frame);
    if (n->results)
        for (int i = 0; i < n->model->n_layers; i++)
            ds_tensor_free(&n->results[i]);
    free(n->results);
    free(n->input_ids);
    free(n->inputs);
    free(n);
}
