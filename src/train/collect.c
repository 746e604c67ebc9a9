/* collect.c - runs the model over video frames and records, per layer and
 * channel, the changed and the non-zero fraction of every output. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/progress.h"
#include "common/timing.h"
#include "engine/exec.h"
#include "train/train.h"
#include "video/video.h"

/* Bit patterns are compared as words; may_alias keeps the float buffers
 * readable as uint32_t without breaking strict aliasing. */
typedef uint32_t __attribute__((may_alias)) word;

int ds_train_data_init(ds_train_data *d, const ds_model *m, int n_frames, ds_error *err)
{
    memset(d, 0, sizeof *d);
    if (m->n_layers < 1 || m->layers[0].out_shape.ndim != 4)
        return ds_errorf(err, "train: model %s has no NCHW input size set", m->name);
    if (n_frames < 1)
        return ds_errorf(err, "train: %d frames", n_frames);
    memcpy(d->model_hash, m->hash, sizeof d->model_hash);
    d->rows = (int)m->layers[0].out_shape.dims[2];
    d->cols = (int)m->layers[0].out_shape.dims[3];
    d->n_layers = m->n_layers;
    d->n_frames = n_frames;
    d->channels = calloc((size_t)m->n_layers, sizeof *d->channels);
    d->offset = calloc((size_t)m->n_layers, sizeof *d->offset);
    if (!d->channels || !d->offset)
        goto oom;
    int64_t width = 0;
    for (int i = 0; i < m->n_layers; i++) {
        int c = ds_predict_channels(&m->layers[i].out_shape);
        if (c <= 0) {
            ds_train_data_free(d);
            return ds_errorf(err, "train: layer %d (%s) has no output shape", i,
                             m->layers[i].name);
        }
        d->channels[i] = c;
        d->offset[i] = (int)width;
        width += c;
        if (width > (1 << 24)) {
            ds_train_data_free(d);
            return ds_errorf(err, "train: model %s has more than 2^24 channels", m->name);
        }
    }
    d->width = (int)width;
    size_t cells = (size_t)n_frames * (size_t)width;
    d->change = calloc(cells, sizeof *d->change);
    d->nonzero = calloc(cells, sizeof *d->nonzero);
    if (!d->change || !d->nonzero)
        goto oom;
    return 0;
oom:
    ds_train_data_free(d);
    return ds_errorf(err, "train: out of memory for %d frames of %s", n_frames, m->name);
}

void ds_train_data_free(ds_train_data *d)
{
    free(d->channels);
    free(d->offset);
    free(d->change);
    free(d->nonzero);
    memset(d, 0, sizeof *d);
}

/* One plane to count. */
typedef struct plane_task {
    int layer;
    size_t start; /* element offset in the layer's tensor */
    size_t len;
    int col;      /* column in a data row */
} plane_task;

static void count_plane(const plane_task *t, const ds_tensor *cur, const ds_tensor *prev,
                        float *change_row, float *nonzero_row)
{
    const word *a = (const word *)ds_tensor_f32(cur) + t->start;
    /* 32-bit counters keep the compare-and-add loops vectorised. */
    uint32_t nz = 0, ch = 0;
    if (prev) {
        const word *b = (const word *)ds_tensor_f32(prev) + t->start;
        for (size_t j = 0; j < t->len; j++) {
            ch += a[j] != b[j];
            nz += a[j] != 0;
        }
    } else {
        for (size_t j = 0; j < t->len; j++)
            nz += a[j] != 0;
        ch = nz;
    }
    change_row[t->col] = (float)((double)ch / (double)t->len);
    nonzero_row[t->col] = (float)((double)nz / (double)t->len);
}

/* The model runs on the caller's thread (and XNNPACK's pool); meanwhile a
 * helper thread decodes the next frame and counts the previous one, work
 * that would otherwise leave a core idle during the model's serial parts.
 * Frame t's input lives in inputs[t % 4] and its outputs in outs[t % 3]:
 * at step t the model writes t, the helper reads t-1 and t-2 and decodes
 * t+1, so no buffer is read and written at once. */
#define IN_RING 4
#define OUT_RING 3

typedef struct collector {
    const ds_model *m;
    const ds_train_cfg *c;
    ds_train_data *d;
    ds_video *v;
    ds_tensor hwc;
    ds_tensor inputs[IN_RING];
    ds_tensor *outs[OUT_RING]; /* [n_layers] each; [0] unused */
    plane_task *tasks;
    size_t n_tasks;
    int loops;
    double t_read, t_count;
    /* helper's step */
    int step;
    int rc;
    ds_error err;
} collector;

static const ds_tensor *layer_tensor(collector *k, int t, int layer)
{
    return layer ? &k->outs[t % OUT_RING][layer] : &k->inputs[t % IN_RING];
}

static int read_frame(collector *k, int t, ds_error *err)
{
    int r = ds_video_read(k->v, &k->hwc, err);
    if (r == 0) { /* loop a short clip */
        if (t == 0 || ++k->loops > k->c->frames)
            return ds_errorf(err, "train: %s has no frames", k->c->video);
        if (ds_video_rewind(k->v, err))
            return -1;
        r = ds_video_read(k->v, &k->hwc, err);
        if (r == 0)
            return ds_errorf(err, "train: %s: no frame after rewinding", k->c->video);
    }
    if (r != 1)
        return -1;
    return ds_frame_u8_to_f32_nchw(&k->hwc, &k->inputs[t % IN_RING], err);
}

static void count_frame(collector *k, int t)
{
    ds_train_data *d = k->d;
    float *ch = d->change + (size_t)t * (size_t)d->width;
    float *nz = d->nonzero + (size_t)t * (size_t)d->width;
    for (size_t i = 0; i < k->n_tasks; i++) {
        const plane_task *p = &k->tasks[i];
        count_plane(p, layer_tensor(k, t, p->layer), t ? layer_tensor(k, t - 1, p->layer) : NULL,
                    ch, nz);
    }
}

static void *helper(void *arg)
{
    collector *k = arg;
    int t = k->step;
    double t0 = ds_now();
    if (t + 1 < k->c->frames && read_frame(k, t + 1, &k->err))
        k->rc = -1;
    double t1 = ds_now();
    if (t >= 1)
        count_frame(k, t - 1);
    k->t_read += t1 - t0;
    k->t_count += ds_now() - t1;
    return NULL;
}

int ds_train_collect(const ds_model *m, const ds_train_cfg *c, ds_train_data *d, ds_error *err)
{
    if (c->frames < DS_TRAIN_MIN_FRAMES)
        return ds_errorf(err, "train: %d frames requested, need at least %d", c->frames,
                         DS_TRAIN_MIN_FRAMES);
    if (ds_train_data_init(d, m, c->frames, err))
        return -1;
    const ds_shape *in = &m->layers[0].out_shape;
    if (in->dims[0] != 1 || in->dims[1] != 3) {
        ds_train_data_free(d);
        return ds_errorf(err, "train: model %s takes %lldx%lld images, not 1x3 RGB frames",
                         m->name, (long long)in->dims[0], (long long)in->dims[1]);
    }
    int L = m->n_layers, threads = c->threads > 0 ? c->threads : 1;
    collector k;
    memset(&k, 0, sizeof k);
    k.m = m;
    k.c = c;
    k.d = d;
    k.v = ds_video_open(c->video, d->rows, d->cols, err);
    ds_executor *ex = k.v ? ds_executor_new(m, DS_BACKEND_XNNPACK, threads, err) : NULL;
    int *ids = malloc((size_t)L * sizeof *ids);
    for (int r = 0; r < OUT_RING; r++)
        k.outs[r] = calloc((size_t)L, sizeof *k.outs[r]);
    k.tasks = malloc((size_t)d->width * sizeof *k.tasks);
    ds_progress prog = {0};
    int rc = -1, begun = 0;
    double t_run = 0;
    if (!k.v || !ex)
        goto out;
    if (!ids || !k.outs[0] || !k.outs[1] || !k.outs[2] || !k.tasks) {
        ds_errorf(err, "train: out of memory");
        goto out;
    }
    for (int i = 1; i < L; i++)
        ids[i - 1] = i;
    for (int l = 0; l < L; l++) {
        int64_t numel = ds_shape_numel(&m->layers[l].out_shape);
        size_t plane = (size_t)(numel / d->channels[l]);
        for (int ch = 0; ch < d->channels[l]; ch++)
            k.tasks[k.n_tasks++] = (plane_task){l, (size_t)ch * plane, plane, d->offset[l] + ch};
    }
    ds_job job = {L - 1, ids, L - 1, ids};
    if (c->progress) {
        ds_progress_begin(&prog, "collecting", c->frames);
        begun = 1;
    }
    if (read_frame(&k, 0, err))
        goto out;
    for (int t = 0; t <= c->frames; t++) {
        if (c->cancel && atomic_load(c->cancel)) {
            ds_errorf(err, "train: cancelled after %d of %d frames", t, c->frames);
            goto out;
        }
        pthread_t th;
        k.step = t;
        int threaded = pthread_create(&th, NULL, helper, &k) == 0;
        if (!threaded) /* no thread to spare: do the same work in turn */
            helper(&k);
        int run_rc = 0;
        if (t < c->frames) {
            double t0 = ds_now();
            const ds_tensor *x = &k.inputs[t % IN_RING];
            int zero = 0;
            run_rc = ds_executor_run(ex, &job, 1, &zero, &x, k.outs[t % OUT_RING] + 1, err);
            t_run += ds_now() - t0;
        }
        if (threaded)
            pthread_join(th, NULL);
        if (run_rc)
            goto out;
        if (k.rc) {
            memcpy(err ? err->msg : k.err.msg, k.err.msg, sizeof k.err.msg);
            goto out;
        }
        if (begun && t >= 1)
            ds_progress_step(&prog, t);
    }
    ds_debug("collect: %d frames: model %.2f s; in parallel decode+convert %.2f s, "
             "counting %.2f s", c->frames, t_run, k.t_read, k.t_count);
    rc = 0;
out:
    if (begun)
        ds_progress_end(&prog);
    if (rc)
        ds_train_data_free(d);
    for (int r = 0; r < OUT_RING; r++) {
        for (int i = 0; k.outs[r] && i < L; i++)
            ds_tensor_free(&k.outs[r][i]);
        free(k.outs[r]);
    }
    for (int r = 0; r < IN_RING; r++)
        ds_tensor_free(&k.inputs[r]);
    ds_tensor_free(&k.hwc);
    free(ids);
    free(k.tasks);
    ds_executor_free(ex);
    ds_video_close(k.v);
    return rc;
}
