/* train.h - sparsity learning: how much of every layer's output changes
 * from one video frame to the next, and predictors fitted to it.
 *
 *   ds_train_cfg c = {.video = cfg->video_path, .frames = 400, .threads = 2,
 *                     .cache_dir = cfg->cache_dir, .progress = 1};
 *   ds_predictors *p;                 // m: input size set to the frame size
 *   ds_train_run(m, &c, &p, &stats, &err);
 *
 * Collection runs the model (XNNPACK) over the frames (looping the clip when
 * it is shorter) and records, per frame and per channel of every layer (the
 * codec's planes, see sched/predict.h), the fraction of elements whose bit
 * pattern changed since the previous frame, and the fraction of non-zero
 * elements (bit pattern != +0.0, as the codec's SPARSE form counts them).
 * Frame 0 has no previous frame: its change row is its non-zero row and is
 * not used for fitting.  With `threads` threads, that many single-threaded
 * backends run consecutive frames at once and count in place (NHWC), while
 * the calling thread decodes the next frames; memory is threads+1 sets of
 * all layer outputs (about 31 MB each for AlexNet at 480x720) plus one
 * backend per thread.  Measured here: 400 AlexNet frames at 480x720 with 2
 * threads in 14.3-17 s depending on other load (bench/train).
 *
 * Fitting (ds_train_fit) holds out the last 20% of the frames and fits each
 * layer on the others from its inputs' TRUE fractions: per-channel least
 * squares for LINEAR layers, an MLP with one logistic hidden unit by L-BFGS
 * for MLP layers (see predict.h for the kinds).  Each layer's r2 and mae are
 * then measured on the held-out frames end to end, as the scheduler uses
 * them: from the frame's input fractions through the predicted fractions of
 * every earlier layer.  r2 = 1 - SSE / SST with SST around each channel's
 * held-out mean (pooled over channels); mae over all (frame, channel) pairs.
 *
 * Cache (ds_train_run with a cache_dir): files
 *   <cache_dir>/<key>.data  collected fractions (portable binary, CRC)
 *   <cache_dir>/<key>.pred  fitted predictors (the ds_predictors blob)
 * with key = ds_train_cache_key: model hash, video (absolute path, size and
 * mtime), frame size and frame count.  A damaged or mismatching file is
 * reported as a warning and rebuilt; files are written to a temporary name
 * and renamed. */
#ifndef DS_TRAIN_H
#define DS_TRAIN_H

#include <stdatomic.h>
#include <stddef.h>

#include "common/error.h"
#include "model/model.h"
#include "sched/predict.h"

#define DS_TRAIN_DATA_MAGIC "DSTD"
#define DS_TRAIN_DATA_VERSION 1
#define DS_TRAIN_HOLDOUT 0.2
#define DS_TRAIN_MIN_FRAMES 3

typedef struct ds_train_data {
    char model_hash[17];
    int rows, cols;   /* frame size */
    int n_layers;
    int n_frames;
    int width;        /* floats per row: sum of channels */
    int *channels;    /* [n_layers] */
    int *offset;      /* [n_layers]: first column of the layer in a row */
    float *change;    /* [n_frames][width] changed fraction vs frame t-1 */
    float *nonzero;   /* [n_frames][width] non-zero fraction */
} ds_train_data;

typedef struct ds_train_cfg {
    const char *video;
    int frames;              /* frames to collect (>= DS_TRAIN_MIN_FRAMES) */
    int threads;             /* frames in parallel (one backend each); fitting threads */
    const char *cache_dir;   /* NULL or "": no cache */
    int progress;            /* ds_progress bar while collecting */
    const atomic_int *cancel; /* optional: collection stops when != 0 */
} ds_train_cfg;

typedef struct ds_train_stats {
    double collect_s;  /* 0 when the data came from the cache */
    double fit_s;      /* 0 when the predictors came from the cache */
    int data_cached;   /* collected data loaded from the cache */
    int pred_cached;   /* predictors loaded from the cache */
} ds_train_stats;

/* Shapes d for m (input size set) and n_frames rows; contents zero. */
int ds_train_data_init(ds_train_data *d, const ds_model *m, int n_frames, ds_error *err);
void ds_train_data_free(ds_train_data *d);

/* Collects c->frames frames of c->video at m's input size (N = 1, C = 3). */
int ds_train_collect(const ds_model *m, const ds_train_cfg *c, ds_train_data *d, ds_error *err);

/* Fits predictors for m from d (d made for m) with `threads` threads. */
int ds_train_fit(const ds_model *m, const ds_train_data *d, int threads, ds_predictors **out,
                 ds_error *err);

/* Held-out quality of p on rows [first, n_frames) of d, per layer:
 * end to end (as stored by ds_train_fit in p) and one step (from the true
 * fractions of the layer's inputs).  Arrays have n_layers entries; any may
 * be NULL. */
int ds_train_quality(const ds_model *m, const ds_predictors *p, const ds_train_data *d, int first,
                     double *r2_chain, double *mae_chain, double *r2_step, double *mae_step,
                     ds_error *err);
/* First held-out row of d. */
int ds_train_holdout_first(int n_frames);

/* The per-layer table (one line per layer plus a header), appended to out
 * as text: id, name, op, predictor, channels, mean held-out change and
 * non-zero fraction (when d is given), R2 and MAE end to end (and one step
 * when d is given). */
int ds_train_report(const ds_model *m, const ds_predictors *p, const ds_train_data *d,
                    ds_buf *out, ds_error *err);

/* Least squares y[i] ~ sum_j coef[j] x[i*k + j] + coef[k] over n samples
 * (x row-major n x k).  Directions without variance get slope 0. */
int ds_fit_linear(const float *x, const float *y, int n, int k, double *coef, ds_error *err);
/* Fits y[i*n_out + c] ~ v[c] * s(sum_j w[j] x[i*n_feat + j] + *w0) + b[c]
 * (s logistic) by L-BFGS on the mean squared error, starting from a hidden
 * unit on the mean feature and the best v, b for it; never returns a fit
 * worse on these samples than that start, which is never worse than the
 * per-channel constant. */
int ds_fit_mlp(const float *x, const float *y, int n, int n_feat, int n_out, double *w,
               double *w0, double *v, double *b, ds_error *err);

/* Cache key (file name stem) for m at its input size, video and frames. */
int ds_train_cache_key(const ds_model *m, const char *video, int frames, char *key, size_t len,
                       ds_error *err);
int ds_train_data_save(const ds_train_data *d, const char *path, ds_error *err);
/* Loads and checks against m (hash, size, layers, channels) and frames. */
int ds_train_data_load(const char *path, const ds_model *m, int frames, ds_train_data *d,
                       ds_error *err);
int ds_predictors_save(const ds_predictors *p, const char *path, ds_error *err);
int ds_predictors_load(const char *path, const ds_model *m, ds_predictors **out, ds_error *err);

/* Predictors for m: from the cache, or fitted from cached or newly collected
 * data (then cached).  Logs what it does and the per-layer table. */
int ds_train_run(const ds_model *m, const ds_train_cfg *c, ds_predictors **out,
                 ds_train_stats *st, ds_error *err);

#endif
