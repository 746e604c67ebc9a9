/* collect.c - runs the model over video frames and records, per layer and
 * channel, the changed and the non-zero fraction of every output. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/progress.h"
#include "common/timing.h"
#include "engine/backend_xnn.h"
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

/* Counts changed (vs prev; NULL = vs nothing: then changed = non-zero) and
 * non-zero elements per channel of one layer output in the engine's
 * internal layout: rank-4 tensors NHWC (channel = index % C), others as
 * their shape says (channels = consecutive planes).  Counters are 32-bit so
 * the compare-and-add loops vectorise. */
static void count_layer(const ds_tensor *cur, const ds_tensor *prev, int channels,
                        uint32_t *ch, uint32_t *nz, float *change_out, float *nonzero_out)
{
    const word *a = (const word *)cur->data, *b = prev ? (const word *)prev->data : NULL;
    size_t numel = (size_t)ds_shape_numel(&cur->shape), C = (size_t)channels;
    size_t plane = numel / C;
    memset(ch, 0, C * sizeof *ch);
    memset(nz, 0, C * sizeof *nz);
    if (cur->shape.ndim == 4 && b) {
        for (size_t p = 0; p < plane; p++) { /* one pass: a is read once */
            const word *x = a + p * C, *y = b + p * C;
            for (size_t c = 0; c < C; c++) {
                nz[c] += x[c] != 0;
                ch[c] += x[c] != y[c];
            }
        }
    } else if (cur->shape.ndim == 4) {
        for (size_t p = 0; p < plane; p++) {
            const word *x = a + p * C;
            for (size_t c = 0; c < C; c++)
                nz[c] += x[c] != 0;
        }
    } else {
        for (size_t c = 0; c < C; c++) {
            const word *x = a + c * plane;
            uint32_t n = 0, d = 0;
            for (size_t j = 0; j < plane; j++)
                n += x[j] != 0;
            if (b) {
                const word *y = b + c * plane;
                for (size_t j = 0; j < plane; j++)
                    d += x[j] != y[j];
            }
            nz[c] = n;
            ch[c] = d;
        }
    }
    for (size_t c = 0; c < C; c++) {
        nonzero_out[c] = (float)((double)nz[c] / (double)plane);
        change_out[c] = (float)((double)(b ? ch[c] : nz[c]) / (double)plane);
    }
}

/* Frames are independent for the model, so `threads` single-threaded
 * XNNPACK backends run `threads` consecutive frames at once (one step);
 * each then counts its frame against the previous one as soon as that one
 * is done.  Meanwhile the caller's thread decodes the next step's frames.
 *
 * Layers run through the engine's backend (backend_xnn.h) rather than the
 * job executor: every layer's output is wanted, and the backend keeps them in
 * its NHWC layout, which the counting reads as is.  The executor would copy
 * all of them to NCHW on one thread (~15 ms of a ~65 ms AlexNet frame at
 * 480x720), and frame-level parallelism beats a thread pool here: single-
 * threaded backends never spin-wait on each other.  Conv+Relu are not
 * fused, so both outputs exist; Relu is exact, so the values are those the
 * workers compute.
 * Frame t's input lives in inputs[t % (2N+1)] and its outputs in
 * outs[t % (N+1)] (N executors): a step over frames f..f+N-1 reads inputs
 * f-1..f+N-1 and writes f+N..f+2N-1, and reads/writes outputs f-1..f+N-1. */
#define MAX_PAR 16

typedef struct collector {
    const ds_model *m;
    const ds_train_cfg *c;
    ds_train_data *d;
    ds_video *v;
    ds_tensor hwc;
    int n;                      /* parallel backends */
    int max_ch;                 /* most channels of a layer */
    ds_xnn *ex[MAX_PAR];
    uint32_t *counts[MAX_PAR];  /* 2 x max channels per backend */
    ds_tensor inputs[2 * MAX_PAR + 1];
    ds_tensor *outs[MAX_PAR + 1]; /* [n_layers] each; [0] unused */
    int loops;
    /* step state */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done[MAX_PAR + 1];      /* frame whose outputs a ring slot holds, -1 none */
    int failed;
    int first;                  /* first frame of the step */
    ds_error errs[MAX_PAR];
    double t_run[MAX_PAR], t_count[MAX_PAR];
} collector;

typedef struct exec_arg {
    collector *k;
    int i;
} exec_arg;

static const ds_tensor *layer_tensor(const collector *k, int t, int layer)
{
    return layer ? &k->outs[t % (k->n + 1)][layer] : &k->inputs[t % (2 * k->n + 1)];
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
    /* The decoder's HWC frame is the backend's NHWC layout already. */
    ds_tensor *x = &k->inputs[t % (2 * k->n + 1)];
    ds_shape s = ds_shape_nchw(1, 3, k->d->rows, k->d->cols);
    if (ds_tensor_reserve(x, &s, DS_F32, err))
        return -1;
    const uint8_t *src = ds_tensor_u8(&k->hwc);
    float *dst = ds_tensor_f32(x);
    size_t n = (size_t)ds_shape_numel(&s);
    for (size_t i = 0; i < n; i++) /* value/255.0f as the video helpers; vectorises */
        dst[i] = (float)src[i] / 255.0f;
    return 0;
}

static void count_frame(const collector *k, int t, uint32_t *counts)
{
    ds_train_data *d = k->d;
    size_t row = (size_t)t * (size_t)d->width;
    for (int l = 0; l < d->n_layers; l++)
        count_layer(layer_tensor(k, t, l), t ? layer_tensor(k, t - 1, l) : NULL, d->channels[l],
                    counts, counts + k->max_ch, d->change + row + (size_t)d->offset[l],
                    d->nonzero + row + (size_t)d->offset[l]);
}

/* Runs every layer of frame t on backend i (outputs kept, NHWC). */
static int run_frame(collector *k, int i, int t, ds_error *err)
{
    ds_tensor *out = k->outs[t % (k->n + 1)];
    const ds_tensor *in[64];
    for (int id = 1; id < k->m->n_layers; id++) {
        const ds_layer *l = &k->m->layers[id];
        if (l->n_inputs < 1 || l->n_inputs > 64)
            return ds_errorf(err, "layer %d: %d inputs", id, l->n_inputs);
        for (int j = 0; j < l->n_inputs; j++)
            in[j] = layer_tensor(k, t, l->inputs[j]);
        if (ds_xnn_run(k->ex[i], id, 0, l->n_inputs, in, &out[id], err))
            return ds_error_prefix(err, "train: frame %d", t);
        if (!ds_shape_equal(&out[id].shape, &l->out_shape))
            return ds_errorf(err, "train: layer %d computed another shape than the model's", id);
    }
    return 0;
}

static void *exec_thread(void *arg)
{
    exec_arg *a = arg;
    collector *k = a->k;
    int t = k->first + a->i, slot = t % (k->n + 1);
    double t0 = ds_now();
    int rc = run_frame(k, a->i, t, &k->errs[a->i]);
    double t1 = ds_now();
    pthread_mutex_lock(&k->lock);
    if (rc)
        k->failed = 1;
    else
        k->done[slot] = t;
    pthread_cond_broadcast(&k->cond);
    /* The previous frame is done in this step or an earlier one. */
    int prev_slot = (t + k->n) % (k->n + 1);
    while (t > 0 && !k->failed && k->done[prev_slot] != t - 1)
        pthread_cond_wait(&k->cond, &k->lock);
    int go = !k->failed;
    pthread_mutex_unlock(&k->lock);
    if (go)
        count_frame(k, t, k->counts[a->i]);
    k->t_run[a->i] += t1 - t0;
    k->t_count[a->i] += ds_now() - t1;
    return NULL;
}

/* The video, one executor and count buffer per thread, the output slots. */
static int collector_open(collector *k, ds_error *err)
{
    const ds_train_cfg *c = k->c;
    int L = k->m->n_layers;
    k->v = ds_video_open(c->video, k->d->rows, k->d->cols, err);
    if (!k->v)
        return -1;
    for (int i = 0; i < k->n; i++) {
        if (!(k->ex[i] = ds_xnn_new(k->m, 1, err)))
            return -1;
        if (!(k->counts[i] = malloc(2 * (size_t)k->max_ch * sizeof *k->counts[i])))
            return ds_errorf(err, "train: out of memory");
    }
    for (int r = 0; r <= k->n; r++) {
        k->done[r] = -1;
        if (!(k->outs[r] = calloc((size_t)L, sizeof *k->outs[r])))
            return ds_errorf(err, "train: out of memory");
    }
    return 0;
}

static void collector_free(collector *k)
{
    int L = k->m->n_layers;
    for (int r = 0; r <= MAX_PAR; r++) {
        for (int i = 0; k->outs[r] && i < L; i++)
            ds_tensor_free(&k->outs[r][i]);
        free(k->outs[r]);
    }
    for (int r = 0; r < 2 * MAX_PAR + 1; r++)
        ds_tensor_free(&k->inputs[r]);
    for (int i = 0; i < MAX_PAR; i++) {
        if (k->ex[i])
            ds_xnn_free(k->ex[i]);
        free(k->counts[i]);
    }
    ds_tensor_free(&k->hwc);
    ds_video_close(k->v);
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->cond);
    free(k);
}

/* One step: frames f .. f+n-1 run on the threads while this one reads the
 * next step's frames; *n = frames done.  *t_read += time spent reading. */
static int collect_step(collector *k, int f, int *n_done, double *t_read, ds_error *err)
{
    const int frames = k->c->frames;
    int n = frames - f < k->n ? frames - f : k->n, started = 0;
    pthread_t th[MAX_PAR];
    exec_arg args[MAX_PAR];
    k->first = f;
    for (int i = 0; i < n; i++) {
        args[i] = (exec_arg){k, i};
        if (pthread_create(&th[i], NULL, exec_thread, &args[i]) != 0)
            break;
        started++;
    }
    double t0 = ds_now();
    int read_rc = 0;
    for (int t = f + k->n; t < f + 2 * k->n && t < frames && !read_rc && started == n; t++)
        read_rc = read_frame(k, t, err);
    *t_read += ds_now() - t0;
    if (started < n) { /* let the started ones finish, then fail */
        pthread_mutex_lock(&k->lock);
        k->failed = 1;
        pthread_cond_broadcast(&k->cond);
        pthread_mutex_unlock(&k->lock);
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (started < n)
        return ds_errorf(err, "train: cannot start a thread");
    if (k->failed) {
        for (int i = 0; i < n; i++)
            if (k->errs[i].msg[0])
                return ds_errorf(err, "%s", k->errs[i].msg);
        return -1;
    }
    *n_done = n;
    return read_rc ? -1 : 0;
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
    int max_ch = 0;
    for (int l = 0; l < m->n_layers; l++)
        max_ch = d->channels[l] > max_ch ? d->channels[l] : max_ch;
    collector *k = calloc(1, sizeof *k);
    if (!k) {
        ds_train_data_free(d);
        return ds_errorf(err, "train: out of memory");
    }

    k->m = m;
    k->max_ch = max_ch;
    k->c = c;
    k->d = d;
    k->n = c->threads < 1 ? 1 : c->threads > MAX_PAR ? MAX_PAR : c->threads;
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    ds_progress prog = {0};
    int rc = -1, begun = 0;
    double t_read = 0, t0_all = ds_now();
    if (collector_open(k, err))
        goto out;
    if (c->progress) {
        ds_progress_begin(&prog, "collecting", c->frames);
        begun = 1;
    }
    for (int t = 0; t < k->n && t < c->frames; t++)
        if (read_frame(k, t, err))
            goto out;
    for (int f = 0, n = 0; f < c->frames; f += k->n) {
        if (c->cancel && atomic_load(c->cancel)) {
            ds_errorf(err, "train: cancelled after %d of %d frames", f, c->frames);
            goto out;
        }
        if (collect_step(k, f, &n, &t_read, err))
            goto out;
        if (begun)
            ds_progress_step(&prog, f + n);
    }
    double run = 0, count = 0;
    for (int i = 0; i < k->n; i++) {
        run += k->t_run[i];
        count += k->t_count[i];
    }
    ds_log_debug("collect: %d frames in %.2f s with %d backends: model %.2f s, counting %.2f s "
             "(thread sums), decode+convert %.2f s alongside",
             c->frames, ds_now() - t0_all, k->n, run, count, t_read);
    rc = 0;
out:
    if (begun)
        ds_progress_end(&prog);
    if (rc)
        ds_train_data_free(d);
    collector_free(k);
    return rc;
}
