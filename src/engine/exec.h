/* exec.h - runs one job: a slice of a model's layers.
 *
 * A job lists the layer ids to execute, in order, and the ids whose outputs
 * to hand back.  Inputs are tensors keyed by layer id (layer 0 is the network
 * input; any other id is a layer computed elsewhere).  Tensors at this
 * boundary are NCHW float32 with the layer's out_shape for the size given to
 * ds_model_set_input (call it before ds_executor_new).
 *
 * Intermediates live in a pool of reusable buffers: each one goes back to the
 * pool as soon as its last consumer within the job has run, and running the
 * same job again allocates nothing large.  Every layer listed in out_ids is
 * obtainable: internal fusions (Conv+Relu) never hide a requested output.
 * An executor is not thread-safe: use one per thread. */
#ifndef DS_ENGINE_EXEC_H
#define DS_ENGINE_EXEC_H

#include "common/error.h"
#include "common/tensor.h"
#include "model/model.h"

typedef struct ds_job {
    int n_exec;
    const int *exec_ids;
    int n_out;
    const int *out_ids;
} ds_job;

typedef enum { DS_BACKEND_XNNPACK, DS_BACKEND_REFERENCE } ds_backend;

typedef struct ds_executor ds_executor;

/* The model must outlive the executor.  threads: XNNPACK pool size (1 = run
 * on the caller's thread); ignored by the reference backend.  Every layer is
 * checked here, once (ds_layer_check: parameters, and out_shape as its op's
 * shape rule gives it); runs then trust the layers. */
ds_executor *ds_executor_new(const ds_model *m, ds_backend be, int threads, ds_error *err);

/* Checks a job against the model without running it: ids exist (layer 0 is
 * never executed), no layer is executed twice or both executed and supplied,
 * no input is supplied twice, each executed layer's producers are executed
 * earlier in the job or supplied, and every out_id is executed or supplied. */
int ds_job_validate(const ds_model *m, const ds_job *job, int n_inputs, const int *input_ids,
                    ds_error *err);

/* Validates and runs the job.  inputs[i] is the NCHW tensor of layer
 * input_ids[i]; its shape must equal that layer's out_shape.  outputs holds
 * n_out caller-owned tensors (reserved here, buffers reused across calls).
 * An empty job hands its inputs through (out_ids must then be input ids). */
int ds_executor_run(ds_executor *ex, const ds_job *job, int n_inputs, const int *input_ids,
                    const ds_tensor *const *inputs, ds_tensor *outputs, ds_error *err);

/* Per-layer timing: when seconds is not NULL, every later run adds the time
 * spent in layer i to seconds[i] (room for n_layers; a Relu fused into its
 * Conv costs nothing of its own).  NULL turns timing off. */
void ds_executor_set_timing(ds_executor *ex, double *seconds);

/* Bytes held by the executor's buffer pool (for memory reports and tests). */
size_t ds_executor_pool_bytes(const ds_executor *ex);

void ds_executor_free(ds_executor *ex);

const char *ds_backend_name(ds_backend be);
/* "xnnpack" | "reference" -> backend; -1 when unknown. */
int ds_backend_parse(const char *s, ds_backend *out);

#endif
