/* output.h - hands every finished frame's final outputs to the user: JSON
 * lines and NumPy .npy files (the config's output: block).  The master
 * calls ds_output_write once per finished frame, in the order frames
 * finish; nothing here knows about workers or the network.
 *
 * jsonl (output.jsonl: PATH, or "-" for stdout): one line per frame, flushed
 * at once so a `tail -f` or a pipe sees it:
 *   {"frame":42,"source_frame":42,"capture_us":1764691200123456,"latency_s":0.0512,
 *    "outputs":[{"layer":13,"name":"pool5","shape":[1,256,13,22],
 *                "summary":{"min":0,"max":4.87,"mean":0.31,"argmax":1234}}]}
 * An output of shape [N] or [1,N] gets "top" instead of "summary": the
 * top_k indices by score, highest first (ties: lower index first), with
 * the class name from output.labels (one per line, line i = class i):
 *   "top":[{"index":281,"score":0.91,"label":"tabby cat"}, ...]
 * Floats are written with %.9g, so a float32 reads back bit for bit; JSON
 * has no NaN or infinity, so those are null (a NaN score ranks last, NaNs
 * are skipped by min, max and argmax).  Names and labels are escaped, and
 * bytes that are not UTF-8 become U+FFFD, so every line is valid JSON.
 *
 * tensors (output.tensors: DIR): one .npy file per frame and output,
 * DIR/f<frame, 9 digits>_o<output index>.npy (NumPy format 1.0, '<f4',
 * C order, the output's shape), e.g. f000000042_o0.npy; numpy.load reads
 * it.  DIR is created when missing.  Each file is written under a hidden
 * name (.f000000042_o0.npy.part) and renamed, so a reader watching DIR
 * never opens a partial file.
 *
 * Errors name the file and what failed; a labels file with fewer lines
 * than an output's classes is an error at the first such frame. */
#ifndef DS_OUTPUT_H
#define DS_OUTPUT_H

#include <stdint.h>

#include "common/error.h"
#include "common/tensor.h"

/* One finished frame, as the master knows it. */
typedef struct ds_result {
    uint64_t frame_id;     /* the master's frame id */
    int64_t source_frame;  /* index of the frame in the source (ds_captured.index) */
    int64_t capture_us;    /* wall clock when the source delivered it */
    double latency;        /* s from its first send to its result */
    int n_outputs;
    const int *layer_ids;           /* [n_outputs] */
    const char *const *names;       /* [n_outputs] the model's output names */
    const ds_tensor *const *values; /* [n_outputs] float32 */
} ds_result;

typedef struct ds_output_opts {
    const char *jsonl;   /* NULL = none, "-" = stdout */
    const char *tensors; /* NULL = none */
    const char *labels;  /* NULL = none */
    int top_k;           /* >= 1 */
} ds_output_opts;

typedef struct ds_output ds_output;

/* Opens the sinks (creates DIR, truncates PATH, reads labels).  NULL with
 * a message naming the file on failure. */
ds_output *ds_output_open(const ds_output_opts *o, ds_error *err);
int ds_output_write(ds_output *o, const ds_result *r, ds_error *err);
/* Flushes and closes (NULL: nothing). */
void ds_output_close(ds_output *o);

/* Writes t (float32 or uint8) as a .npy file at path. */
int ds_npy_write(const char *path, const ds_tensor *t, ds_error *err);
/* Reads a .npy file written by ds_npy_write (float32 or uint8, C order) into
 * t (tests, tools). */
int ds_npy_read(const char *path, ds_tensor *t, ds_error *err);

#endif
