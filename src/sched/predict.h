/* predict.h - per-layer predictors of change sparsity (the trainer fits
 * them, the master's schedulers evaluate them).
 *
 * For a frame, the master knows the changed fraction of every channel of the
 * network input (layer 0).  ds_predictors_eval turns that into a predicted
 * changed fraction for every channel of every layer's output, walking the
 * layers in id order; the fractions feed ds_codec_predict_bytes to price a
 * cut.  "Channels" of a layer are the planes of its output as the codec
 * splits them (ds_predict_channels: C for an NCHW tensor with N = 1, 1 for a
 * 2-D N=1 tensor such as Flatten's or Gemm's output), so the arrays here are
 * exactly the per-plane fractions the codec's size model takes.
 *
 * Predictor kinds (the op table in src/model names each op's default):
 *   PASS    out[c] = in[c]                           Input; Flatten when the
 *                                                    plane count is unchanged
 *   MEAN    out[j] = mean of the in channels of      Flatten of C planes into
 *           group j (in/out contiguous channels)     1: exact for equal planes
 *   LINEAR  out[c] = clamp(sum_k a[c][k]*in_k[c]     Relu, BN, pools, LRN,
 *                    + b[c])                         Softmax, GlobalAvgPool
 *                                                    (k = 1); Add (k = inputs)
 *   MLP     out[c] = clamp(v[c]*s(w.x + w0) + b[c])  Conv, Gemm: x = all input
 *           s = logistic, one hidden unit            channels concatenated
 *   CONCAT  out = in_0 ++ in_1 ++ ...                Concat on the channel axis
 * clamp is to [0, 1].  A layer whose op's kind does not fit its shapes (e.g.
 * LINEAR with a different channel count in and out) gets an MLP.
 *
 * Besides, every layer carries per channel the mean non-zero fraction of its
 * raw output (a full tensor, as on a first frame or after a plan change, goes
 * out SPARSE against zeros) and the fit quality on held-out frames.
 *
 * Portable blob (ds_predictors_encode/decode), version 1, little-endian,
 * floats as IEEE-754 binary64 written byte by byte (a Pi and a PC read the
 * same bytes):
 *   off size
 *   0   4    magic "DSPR"
 *   4   2    version (1)
 *   6   2    flags (0)
 *   8   16   model hash (16 ASCII hex digits, ds_model.hash)
 *   24  4    n_layers
 *   28       n_layers records:
 *            1 kind, 1 n_in, 2 zero, 4 n_out, 4 n_feat,
 *            f64 r2, f64 mae (held-out fit quality; NaN = unknown),
 *            params (f64): LINEAR n_out*(n_in+1): per channel a[0..n_in), b;
 *                          MLP n_feat + 1 + 2*n_out: w, w0, v, b;
 *                          others none,
 *            f64 nonzero[n_out] (each in [0, 1])
 *   ..  4    CRC-32 (IEEE) of every byte before it
 * The decoder checks everything against the model (hash, layer count, each
 * layer's kind against its op and shapes, n_in, n_out, n_feat), every length
 * against the bytes left before allocating, params finite, and the CRC. */
#ifndef DS_SCHED_PREDICT_H
#define DS_SCHED_PREDICT_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "model/model.h"

#define DS_PRED_MAGIC "DSPR"
#define DS_PRED_VERSION 1

/* ds_pred_kind (DS_PRED_PASS ... DS_PRED_CONCAT) is declared in
 * model/model.h: the op table gives each op's default kind. */

typedef struct ds_layer_pred {
    ds_pred_kind kind;
    int n_in;       /* the layer's inputs (0 for layer 0) */
    int n_out;      /* output channels */
    int n_feat;     /* MLP: sum of the inputs' channels; else 0 */
    int *in_ch;     /* n_in: channels of each input (from the model) */
    double *a;      /* LINEAR: n_out x n_in slopes, row per channel */
    double *b;      /* LINEAR, MLP: n_out intercepts */
    double *w;      /* MLP: n_feat hidden weights */
    double w0;      /* MLP: hidden bias */
    double *v;      /* MLP: n_out output weights */
    double *nonzero; /* n_out: mean non-zero fraction of the raw output */
    double r2, mae; /* held-out fit quality over all channels; NaN unknown */
} ds_layer_pred;

typedef struct ds_predictors {
    char model_hash[17];
    int n_layers;
    ds_layer_pred *layers; /* [n_layers] */
} ds_predictors;

/* Planes of a layer output as the codec counts them (see above); 0 for an
 * empty shape. */
int ds_predict_channels(const ds_shape *s);

/* The kind the op gets when its shapes allow it (m's input size set). */
ds_pred_kind ds_predictors_default_kind(const ds_model *m, int layer);

/* Allocates predictors shaped for m (input size set): every layer gets its
 * default kind, n_in/n_out/n_feat and zeroed arrays (LINEAR a = 1, so an
 * unfitted element-wise layer passes its input through; MLP all zero),
 * nonzero = 1, r2 = mae = NaN. */
ds_predictors *ds_predictors_new(const ds_model *m, ds_error *err);
/* Changes one layer's kind (arrays reallocated and reset as above); fails
 * when the kind does not fit the layer's shapes. */
int ds_predictors_set_kind(ds_predictors *p, const ds_model *m, int layer, ds_pred_kind kind,
                           ds_error *err);
void ds_predictors_free(ds_predictors *p);

/* Predicted changed fractions of every layer for one frame.  input_frac: one
 * value per channel of layer 0 (values outside [0,1] are clamped).
 * layer_frac[i] has room for layer i's channels; layer_frac[0] gets the
 * clamped input.  Fails when p was not made for m (hash, layer or channel
 * counts). */
int ds_predictors_eval(const ds_predictors *p, const ds_model *m, const float *input_frac,
                       float *const *layer_frac, ds_error *err);
/* One layer's prediction from its inputs' fractions (in[k] = in_ch[k]
 * fractions of its k-th input); out gets n_out values.  Layer 0 (n_in = 0)
 * is not evaluated this way: its fractions are the frame's. */
void ds_layer_pred_eval(const ds_layer_pred *lp, const float *const *in, float *out);

/* Mean non-zero fraction per channel of layer's raw output; NULL when the
 * layer is out of range. */
const double *ds_predictors_nonzero(const ds_predictors *p, int layer);

/* Checks that p fits m (hash, counts, kinds against ops and shapes). */
int ds_predictors_check(const ds_predictors *p, const ds_model *m, ds_error *err);

/* Appends the portable blob to out. */
int ds_predictors_encode(const ds_predictors *p, ds_buf *out, ds_error *err);
/* Parses and validates a blob against m (input size set).  On error *out is
 * untouched and nothing leaks. */
int ds_predictors_decode(const uint8_t *blob, size_t len, const ds_model *m,
                         ds_predictors **out, ds_error *err);

const char *ds_pred_kind_name(ds_pred_kind k);

/* CRC-32 (IEEE 802.3, as zlib's crc32) of p[0..n), continuing from crc
 * (start with 0). */
uint32_t ds_crc32(uint32_t crc, const void *p, size_t n);

#endif
