/* exec.c - the job executor: validation, buffer pool, layout at the boundary. */
#include "exec.h"

#include <stdlib.h>
#include <string.h>

#include "backend_xnn.h"
#include "common/timing.h"
#include "ops.h"

struct ds_executor {
    const ds_model *m;
    ds_backend be;
    ds_xnn *xnn;
    /* buffer pool: one slot per layer is the most that can be live at once */
    ds_tensor *slots;
    unsigned char *slot_used;
    /* per layer, for the job being run */
    int *slot;                /* pool slot holding the layer's value, or -1 */
    const ds_tensor **ext;    /* caller's tensor used in place, or NULL */
    int *uses;                /* consumers in the job that have not run yet */
    unsigned char *mark;      /* 0 unknown, 1 supplied, 2 executed */
    unsigned char *pinned;    /* listed in out_ids */
    unsigned char *fuse;      /* conv: run with Relu; relu: take the conv's value */
    double *timing;
};

const char *ds_backend_name(ds_backend be)
{
    return be == DS_BACKEND_REFERENCE ? "reference" : "xnnpack";
}

int ds_backend_parse(const char *s, ds_backend *out)
{
    if (!strcmp(s, "xnnpack"))
        *out = DS_BACKEND_XNNPACK;
    else if (!strcmp(s, "reference"))
        *out = DS_BACKEND_REFERENCE;
    else
        return -1;
    return 0;
}

void ds_executor_free(ds_executor *ex)
{
    if (!ex)
        return;
    if (ex->slots)
        for (int i = 0; i < ex->m->n_layers; i++)
            ds_tensor_free(&ex->slots[i]);
    ds_xnn_free(ex->xnn);
    free(ex->slots);
    free(ex->slot_used);
    free(ex->slot);
    free(ex->ext);
    free(ex->uses);
    free(ex->mark);
    free(ex->pinned);
    free(ex->fuse);
    free(ex);
}

ds_executor *ds_executor_new(const ds_model *m, ds_backend be, int threads, ds_error *err)
{
    if (!m || m->n_layers < 1 || !m->layers) {
        ds_errorf(err, "executor: empty model");
        return NULL;
    }
    if (be != DS_BACKEND_XNNPACK && be != DS_BACKEND_REFERENCE) {
        ds_errorf(err, "executor: unknown backend %d", (int)be);
        return NULL;
    }
    if (threads < 1 || threads > 1024) {
        ds_errorf(err, "executor: thread count %d out of range 1..1024", threads);
        return NULL;
    }
    ds_executor *ex = calloc(1, sizeof *ex);
    if (!ex) {
        ds_errorf(err, "executor: out of memory");
        return NULL;
    }
    size_t n = (size_t)m->n_layers;
    ex->m = m;
    ex->be = be;
    ex->slots = calloc(n, sizeof *ex->slots);
    ex->slot_used = calloc(n, 1);
    ex->slot = malloc(n * sizeof *ex->slot);
    ex->ext = calloc(n, sizeof *ex->ext);
    ex->uses = calloc(n, sizeof *ex->uses);
    ex->mark = calloc(n, 1);
    ex->pinned = calloc(n, 1);
    ex->fuse = calloc(n, 1);
    if (!ex->slots || !ex->slot_used || !ex->slot || !ex->ext || !ex->uses || !ex->mark ||
        !ex->pinned || !ex->fuse) {
        ds_executor_free(ex);
        ds_errorf(err, "executor: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        ex->slot[i] = -1;
    /* The layers are checked once, here (for XNNPACK by ds_xnn_new): the
     * kernels then trust their out_shapes and parameters. */
    if (be == DS_BACKEND_REFERENCE ? ds_ops_check_model(m, err) != 0
                                   : !(ex->xnn = ds_xnn_new(m, threads, err))) {
        ds_executor_free(ex);
        return NULL;
    }
    return ex;
}

void ds_executor_set_timing(ds_executor *ex, double *seconds)
{
    ex->timing = seconds;
}

size_t ds_executor_pool_bytes(const ds_executor *ex)
{
    size_t s = 0;
    for (int i = 0; i < ex->m->n_layers; i++)
        s += ex->slots[i].cap;
    return s;
}

static int check_job(const ds_model *m, const ds_job *job, int n_inputs, const int *input_ids,
                     unsigned char *mark, ds_error *err)
{
    const int n = m->n_layers;
    if (!job || job->n_exec < 0 || job->n_out < 0 || n_inputs < 0 ||
        (job->n_exec && !job->exec_ids) || (job->n_out && !job->out_ids) ||
        (n_inputs && !input_ids))
        return ds_errorf(err, "job: negative count or missing id list");
    memset(mark, 0, (size_t)n);
    for (int i = 0; i < n_inputs; i++) {
        int id = input_ids[i];
        if (id < 0 || id >= n)
            return ds_errorf(err, "job: input layer id %d out of range 0..%d", id, n - 1);
        if (mark[id])
            return ds_errorf(err, "job: input layer %d supplied twice", id);
        mark[id] = 1;
    }
    for (int i = 0; i < job->n_exec; i++) {
        int id = job->exec_ids[i];
        if (id < 1 || id >= n)
            return ds_errorf(err, "job: executed layer id %d out of range 1..%d", id, n - 1);
        if (mark[id])
            return ds_errorf(err, "job: layer %d is %s", id,
                             mark[id] == 1 ? "both supplied and executed" : "executed twice");
        const ds_layer *l = &m->layers[id];
        for (int k = 0; k < l->n_inputs; k++) {
            int p = l->inputs[k];
            if (p < 0 || p >= n)
                return ds_errorf(err, "job: layer %d has a producer id %d out of range", id, p);
            if (!mark[p])
                return ds_errorf(err,
                                 "job: layer %d (%s) needs layer %d, which is neither supplied "
                                 "nor executed earlier in the job",
                                 id, ds_op_name(l->op), p);
        }
        mark[id] = 2;
    }
    for (int i = 0; i < job->n_out; i++) {
        int id = job->out_ids[i];
        if (id < 0 || id >= n)
            return ds_errorf(err, "job: output layer id %d out of range 0..%d", id, n - 1);
        if (!mark[id])
            return ds_errorf(err, "job: output layer %d is neither executed nor supplied", id);
    }
    return 0;
}

int ds_job_validate(const ds_model *m, const ds_job *job, int n_inputs, const int *input_ids,
                    ds_error *err)
{
    if (!m || m->n_layers < 1)
        return ds_errorf(err, "job: empty model");
    unsigned char *mark = malloc((size_t)m->n_layers);
    if (!mark)
        return ds_errorf(err, "job: out of memory");
    int rc = check_job(m, job, n_inputs, input_ids, mark, err);
    free(mark);
    return rc;
}

/* Takes a free slot for `bytes`: the smallest that fits, else the largest
 * (grown), so that a repeated job settles on the same buffers. */
static int acquire(ds_executor *ex, size_t bytes)
{
    int best = -1, big = -1;
    for (int i = 0; i < ex->m->n_layers; i++) {
        if (ex->slot_used[i])
            continue;
        size_t cap = ex->slots[i].cap;
        if (cap >= bytes && (best < 0 || cap < ex->slots[best].cap))
            best = i;
        if (big < 0 || cap > ex->slots[big].cap)
            big = i;
    }
    int s = best >= 0 ? best : big;
    if (s >= 0)
        ex->slot_used[s] = 1;
    return s;
}

static void release(ds_executor *ex, int id)
{
    if (ex->slot[id] >= 0)
        ex->slot_used[ex->slot[id]] = 0;
    ex->slot[id] = -1;
    ex->ext[id] = NULL;
}

static const ds_tensor *value(const ds_executor *ex, int id)
{
    return ex->ext[id] ? ex->ext[id] : &ex->slots[ex->slot[id]];
}

static int stored_nhwc(const ds_executor *ex, const ds_shape *s)
{
    return ex->be == DS_BACKEND_XNNPACK && s->ndim == 4;
}

/* The caller's inputs have the model's shapes; outputs were given. */
static int check_io(const ds_executor *ex, const ds_job *job, int n_inputs, const int *input_ids,
                    const ds_tensor *const *inputs, const ds_tensor *outputs, ds_error *err)
{
    for (int i = 0; i < n_inputs; i++) {
        int id = input_ids[i];
        const ds_tensor *t = inputs ? inputs[i] : NULL;
        const ds_shape *want = &ex->m->layers[id].out_shape;
        char a[64], b[64];
        if (!t || t->dtype != DS_F32 || !t->data)
            return ds_errorf(err, "job: input for layer %d is not a float32 tensor", id);
        if (!ds_shape_equal(&t->shape, want))
            return ds_errorf(err, "job: input for layer %d has shape %s, the model expects %s",
                             id, ds_shape_str(&t->shape, a, sizeof a),
                             ds_shape_str(want, b, sizeof b));
    }
    if (job->n_out && !outputs)
        return ds_errorf(err, "job: no output tensors given");
    return 0;
}

/* Consumer counts, pinned outputs, and the Conv+Relu pairs to fuse (XNNPACK:
 * a conv whose only consumer is a Relu run in this job, neither requested). */
static void plan_job(ds_executor *ex, const ds_job *job)
{
    const ds_model *m = ex->m;
    for (int i = 0; i < job->n_exec; i++) {
        const ds_layer *l = &m->layers[job->exec_ids[i]];
        for (int k = 0; k < l->n_inputs; k++)
            ex->uses[l->inputs[k]]++;
    }
    for (int i = 0; i < job->n_out; i++)
        ex->pinned[job->out_ids[i]] = 1;
    if (ex->be != DS_BACKEND_XNNPACK)
        return;
    for (int i = 0; i < job->n_exec; i++) {
        int id = job->exec_ids[i];
        const ds_layer *l = &m->layers[id];
        if (l->op != DS_OP_CONV || l->n_consumers != 1 || ex->pinned[id])
            continue;
        int c = l->consumers[0];
        if (c > 0 && c < m->n_layers && m->layers[c].op == DS_OP_RELU && ex->mark[c] == 2 &&
            m->layers[c].n_inputs == 1 && m->layers[c].inputs[0] == id)
            ex->fuse[id] = ex->fuse[c] = 1;
    }
}

/* Inputs are used in place unless they need the NHWC layout. */
static int load_inputs(ds_executor *ex, int n_inputs, const int *input_ids,
                       const ds_tensor *const *inputs, ds_error *err)
{
    for (int i = 0; i < n_inputs; i++) {
        int id = input_ids[i];
        const ds_tensor *t = inputs[i];
        if (!stored_nhwc(ex, &t->shape)) {
            ex->ext[id] = t;
            continue;
        }
        int s = acquire(ex, ds_tensor_bytes(t));
        if (s < 0)
            return ds_errorf(err, "job: buffer pool exhausted");
        ex->slot[id] = s;
        if (ds_tensor_reserve(&ex->slots[s], &t->shape, DS_F32, err))
            return -1;
        const int64_t *d = t->shape.dims;
        ds_nchw_to_nhwc(ds_tensor_f32(t), ds_tensor_f32(&ex->slots[s]), d[0], d[1], d[2] * d[3]);
    }
    return 0;
}

/* Runs layer id into a pool slot, then releases what no later layer of the
 * job reads. */
static int run_layer(ds_executor *ex, int id, ds_error *err)
{
    const ds_layer *l = &ex->m->layers[id];
    if (l->op == DS_OP_RELU && ex->fuse[id]) {
        int c = l->inputs[0]; /* its conv already applied the Relu */
        ex->slot[id] = ex->slot[c];
        ex->slot[c] = -1;
        ex->uses[c] = 0;
        if (!ex->uses[id] && !ex->pinned[id])
            release(ex, id);
        return 0;
    }
    const ds_tensor *in[DS_OPS_MAX_INPUTS];
    for (int k = 0; k < l->n_inputs; k++) /* n_inputs bounded by ds_ops_check_model */
        in[k] = value(ex, l->inputs[k]);
    int s = acquire(ex, (size_t)ds_shape_numel(&l->out_shape) * sizeof(float));
    if (s < 0)
        return ds_errorf(err, "job: buffer pool exhausted");
    ex->slot[id] = s;
    double t0 = ex->timing ? ds_now() : 0;
    int rc = ex->be == DS_BACKEND_XNNPACK
                 ? ds_xnn_run(ex->xnn, id, ex->fuse[id], l->n_inputs, in, &ex->slots[s], err)
                 : ds_ref_run(ex->m, id, l->n_inputs, in, &ex->slots[s], err);
    if (rc)
        return -1;
    if (ex->timing)
        ex->timing[id] += ds_now() - t0;
    for (int k = 0; k < l->n_inputs; k++) {
        int p = l->inputs[k];
        if (--ex->uses[p] == 0 && !ex->pinned[p])
            release(ex, p);
    }
    if (!ex->uses[id] && !ex->pinned[id]) /* nobody in this job reads it */
        release(ex, id);
    return 0;
}

/* Requested values back to the caller, NCHW. */
static int store_outputs(ds_executor *ex, const ds_job *job, ds_tensor *outputs, ds_error *err)
{
    for (int i = 0; i < job->n_out; i++) {
        const ds_tensor *v = value(ex, job->out_ids[i]);
        if (stored_nhwc(ex, &v->shape)) {
            if (ds_tensor_reserve(&outputs[i], &v->shape, DS_F32, err))
                return -1;
            const int64_t *d = v->shape.dims;
            ds_nhwc_to_nchw(ds_tensor_f32(v), ds_tensor_f32(&outputs[i]), d[0], d[1],
                            d[2] * d[3]);
        } else if (ds_tensor_copy(&outputs[i], v, err)) {
            return -1;
        }
    }
    return 0;
}

static int run_job(ds_executor *ex, const ds_job *job, int n_inputs, const int *input_ids,
                   const ds_tensor *const *inputs, ds_tensor *outputs, ds_error *err)
{
    if (check_io(ex, job, n_inputs, input_ids, inputs, outputs, err))
        return -1;
    plan_job(ex, job);
    if (load_inputs(ex, n_inputs, input_ids, inputs, err))
        return -1;
    for (int i = 0; i < job->n_exec; i++)
        if (run_layer(ex, job->exec_ids[i], err))
            return -1;
    return store_outputs(ex, job, outputs, err);
}

int ds_executor_run(ds_executor *ex, const ds_job *job, int n_inputs, const int *input_ids,
                    const ds_tensor *const *inputs, ds_tensor *outputs, ds_error *err)
{
    if (!ex)
        return ds_errorf(err, "job: no executor");
    if (check_job(ex->m, job, n_inputs, input_ids, ex->mark, err))
        return -1;
    int rc = run_job(ex, job, n_inputs, input_ids, inputs, outputs, err);
    /* back to a clean state, also after a failure half-way */
    for (int i = 0; i < ex->m->n_layers; i++) {
        ex->slot[i] = -1;
        ex->ext[i] = NULL;
        ex->uses[i] = 0;
        ex->pinned[i] = 0;
        ex->fuse[i] = 0;
        ex->slot_used[i] = 0;
    }
    return rc;
}
