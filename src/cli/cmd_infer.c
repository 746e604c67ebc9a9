/* cmd_infer.c - deltaslice infer: run a model on one raw float32 tensor, or
 * on a video's frames read as the master reads them, with the outputs
 * written as a run writes them (ds_output), so both can be compared. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/tensor.h"
#include "common/timing.h"
#include "engine/exec.h"
#include "model/model.h"
#include "output/output.h"
#include "video/video.h"

static const char help[] =
    "usage: deltaslice infer MODEL --input IN.f32 --shape 1x3xHxW --output OUT.f32\n"
    "                        [--threads N] [--backend xnnpack|reference] [--layers IDS]\n"
    "       deltaslice infer MODEL --video FILE [--frame-size RxC] [--frames N]\n"
    "                        [--tensors DIR] [--jsonl PATH|-] [--labels FILE] [--top-k K]\n"
    "                        [--threads N] [--backend xnnpack|reference] [--layers IDS]\n"
    "\n"
    "Runs a CNN on one input tensor and writes its output, so results can be\n"
    "compared with PyTorch or ONNX tools.  MODEL is an .onnx file or zoo:NAME.\n"
    "Tensors are raw little-endian float32 in NCHW order.  Prints the shape of\n"
    "every output written.\n"
    "\n"
    "With --video, runs it on every frame of a video file instead (or the first\n"
    "N), decoded and resized exactly as the master does, and writes the outputs\n"
    "as a run's output: block does: frame f (from 0) is the file's f-th frame,\n"
    "DIR/f<f, 9 digits>_o<output>.npy and one JSON line per frame (latency_s and\n"
    "capture_us 0).  A run with drop: none on the same file writes the same .npy\n"
    "files, byte for byte.  Without --tensors and --jsonl the lines go to stdout.\n"
    "\n"
    "options:\n"
    "  -i, --input FILE     input tensor (size must match --shape)\n"
    "  -s, --shape NxCxHxW  input shape, e.g. 1x3x480x720\n"
    "  -o, --output FILE    where to write the output tensor(s)\n"
    "      --video FILE     a video file to read frames from (instead of --input)\n"
    "      --frame-size RxC frame size, e.g. 480x720 (default: the video's own;\n"
    "                       a run's frame_size)\n"
    "      --frames N       frames to run (default: every frame of the file)\n"
    "      --tensors DIR    one .npy file per frame and output (created if missing)\n"
    "      --jsonl PATH     one JSON line per frame; - for stdout\n"
    "      --labels FILE    class names for top-k, one per line\n"
    "      --top-k K        classes per 1-D output in the JSON lines (default 5)\n"
    "  -t, --threads N      compute threads (default 1)\n"
    "  -b, --backend NAME   xnnpack (default, fast) or reference (plain C)\n"
    "  -l, --layers IDS     comma-separated layer ids whose outputs to write, one\n"
    "                       after the other (default: the graph outputs)\n"
    "  -h, --help           this help\n"
    "      --version        print the version\n";

static void swap_if_big_endian(float *p, int64_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (int64_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &p[i], 4);
        v = __builtin_bswap32(v);
        memcpy(&p[i], &v, 4);
    }
#else
    (void)p;
    (void)n;
#endif
}

static int read_input(const char *path, ds_tensor *t)
{
    size_t want = ds_tensor_bytes(t);
    ds_buf b = {0};
    ds_error err;
    if (ds_read_file(path, want, &b, &err)) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        return -1;
    }
    if (b.len != want) {
        char s[64];
        fprintf(stderr, "deltaslice infer: %s holds %zu bytes, shape %s needs %zu\n", path, b.len,
                ds_shape_str(&t->shape, s, sizeof s), want);
        ds_buf_free(&b);
        return -1;
    }
    memcpy(t->data, b.data, want);
    ds_buf_free(&b);
    swap_if_big_endian(ds_tensor_f32(t), ds_shape_numel(&t->shape));
    return 0;
}

static int parse_layers(const char *s, const ds_model *m, int **ids, int *n)
{
    int cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    *ids = malloc((size_t)cap * sizeof **ids);
    if (!*ids)
        return -1;
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= m->n_layers || (*end && *end != ','))
            return -1;
        (*ids)[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return *n ? 0 : -1;
}

/* The command line. */
typedef struct infer_args {
    const char *model, *input, *output, *layers;
    ds_shape shape;
    int threads;
    ds_backend be;
    /* the --video form */
    const char *video, *tensors, *jsonl, *labels;
    int rows, cols; /* 0 = the video's own */
    long frames;    /* 0 = every frame */
    int top_k;
} infer_args;

enum { OPT_VIDEO = 256, OPT_FRAME_SIZE, OPT_FRAMES, OPT_TENSORS, OPT_JSONL, OPT_LABELS, OPT_TOP_K };

/* "480x720" -> rows, cols in 1..DS_VIDEO_MAX_SIDE. */
static int parse_size(const char *s, int *rows, int *cols)
{
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10);
    if (errno || end == s || (*end != 'x' && *end != 'X') || a < 1 || a > DS_VIDEO_MAX_SIDE)
        return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (errno || end == p || *end || b < 1 || b > DS_VIDEO_MAX_SIDE)
        return -1;
    *rows = (int)a;
    *cols = (int)b;
    return 0;
}

/* A whole number in lo..hi, or -1. */
static long parse_count(const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return end == s || *end || errno || v < lo || v > hi ? -1 : v;
}

/* Checks which form the options make; returns -1 when they fit, else the
 * exit status. */
static int check_form(infer_args *a, const char *shape_s)
{
    if (a->video) {
        if (a->input || shape_s || a->output)
            return ds_cli_usage_error("infer",
                                      "--video reads frames: --input, --shape and --output "
                                      "belong to the other form");
        if (!a->tensors && !a->jsonl)
            a->jsonl = "-";
        if (!a->top_k)
            a->top_k = 5;
        return -1;
    }
    if (a->rows || a->frames || a->tensors || a->jsonl || a->labels || a->top_k)
        return ds_cli_usage_error("infer",
                                  "--frame-size, --frames, --tensors, --jsonl, --labels and "
                                  "--top-k need --video");
    if (!a->input || !shape_s || !a->output)
        return ds_cli_usage_error("infer",
                                  "--input, --shape and --output (or --video) are required");
    ds_error err = {0};
    if (ds_shape_parse(shape_s, &a->shape, &err))
        return ds_cli_usage_error("infer", "%s", err.msg);
    if (a->shape.ndim != 4)
        return ds_cli_usage_error("infer", "--shape must be NxCxHxW");
    return -1;
}

/* Parses and checks the command line; returns -1 when the command is to
 * run, else the exit status (help, version, usage error). */
static int parse_args(int argc, char **argv, infer_args *a)
{
    static const struct option longs[] = {
        {"input", required_argument, NULL, 'i'},
        {"shape", required_argument, NULL, 's'},
        {"output", required_argument, NULL, 'o'},
        {"threads", required_argument, NULL, 't'},
        {"backend", required_argument, NULL, 'b'},
        {"layers", required_argument, NULL, 'l'},
        {"video", required_argument, NULL, OPT_VIDEO},
        {"frame-size", required_argument, NULL, OPT_FRAME_SIZE},
        {"frames", required_argument, NULL, OPT_FRAMES},
        {"tensors", required_argument, NULL, OPT_TENSORS},
        {"jsonl", required_argument, NULL, OPT_JSONL},
        {"labels", required_argument, NULL, OPT_LABELS},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *shape_s = NULL;
    *a = (infer_args){.threads = 1, .be = DS_BACKEND_XNNPACK};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":i:s:o:t:b:l:h", longs, NULL)) != -1) {
        switch (c) {
        case 'i': a->input = optarg; break;
        case 's': shape_s = optarg; break;
        case 'o': a->output = optarg; break;
        case 'l': a->layers = optarg; break;
        case OPT_VIDEO: a->video = optarg; break;
        case OPT_TENSORS: a->tensors = optarg; break;
        case OPT_JSONL: a->jsonl = optarg; break;
        case OPT_LABELS: a->labels = optarg; break;
        case OPT_FRAME_SIZE:
            if (parse_size(optarg, &a->rows, &a->cols))
                return ds_cli_usage_error("infer",
                                          "--frame-size wants ROWSxCOLS in 1..%d, got '%s'",
                                          DS_VIDEO_MAX_SIDE, optarg);
            break;
        case OPT_FRAMES:
            if ((a->frames = parse_count(optarg, 1, 100000000)) < 0)
                return ds_cli_usage_error("infer", "--frames wants 1..100000000, got '%s'", optarg);
            break;
        case OPT_TOP_K:
            if ((a->top_k = (int)parse_count(optarg, 1, 1000)) < 0)
                return ds_cli_usage_error("infer", "--top-k wants 1..1000, got '%s'", optarg);
            break;
        case 't':
            if ((a->threads = (int)parse_count(optarg, 1, 256)) < 0)
                return ds_cli_usage_error("infer", "--threads wants 1..256, got '%s'", optarg);
            break;
        case 'b':
            if (ds_backend_parse(optarg, &a->be))
                return ds_cli_usage_error("infer", "--backend is xnnpack or reference, not '%s'",
                                          optarg);
            break;
        default: return ds_cli_common_option(c, "infer", help, argv);
        }
    }
    if (optind != argc - 1)
        return ds_cli_usage_error("infer", "expected exactly one MODEL argument");
    a->model = argv[optind];
    return check_form(a, shape_s);
}

/* The layers whose outputs to write: --layers, else the graph outputs.
 * Returns -1 when they are set, else the exit status. */
static int output_ids(const char *layers, const ds_model *m, int **ids, int *n)
{
    if (layers) {
        if (parse_layers(layers, m, ids, n))
            return ds_cli_usage_error("infer", "--layers wants comma-separated ids in 0..%d",
                                      m->n_layers - 1);
        return -1;
    }
    *n = m->n_outputs;
    *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof **ids);
    if (!*ids) {
        fprintf(stderr, "deltaslice infer: out of memory\n");
        return 1;
    }
    memcpy(*ids, m->outputs, (size_t)*n * sizeof **ids);
    return -1;
}

/* The whole model as one job: every layer but the input, in order, on an
 * executor made once and reused frame after frame. */
typedef struct runner {
    ds_executor *ex;
    int *exec_ids;
    ds_job job;
} runner;

static int runner_init(runner *r, const ds_model *m, const infer_args *a, const int *out_ids,
                       int n_out)
{
    ds_error err = {0};
    memset(r, 0, sizeof *r);
    if (!(r->exec_ids = malloc((size_t)m->n_layers * sizeof *r->exec_ids))) {
        fprintf(stderr, "deltaslice infer: out of memory\n");
        return -1;
    }
    for (int i = 1; i < m->n_layers; i++)
        r->exec_ids[i - 1] = i;
    r->job = (ds_job){m->n_layers - 1, r->exec_ids, n_out, out_ids};
    if (!(r->ex = ds_executor_new(m, a->be, a->threads, &err))) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Runs the model on x into outs; adds the run's time to *secs. */
static int runner_run(runner *r, const ds_tensor *x, ds_tensor *outs, double *secs, ds_error *err)
{
    int in_id = 0;
    const ds_tensor *inp[1] = {x};
    double t0 = ds_now();
    int rc = ds_executor_run(r->ex, &r->job, 1, &in_id, inp, outs, err);
    *secs += ds_now() - t0;
    return rc;
}

static void runner_free(runner *r)
{
    ds_executor_free(r->ex);
    free(r->exec_ids);
}

/* Writes the outputs one after the other to path, printing their shapes. */
static int write_outputs(const char *path, const ds_model *m, const int *out_ids, ds_tensor *outs,
                         int n_out)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "deltaslice infer: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n_out; i++) {
        int64_t n = ds_shape_numel(&outs[i].shape);
        swap_if_big_endian(ds_tensor_f32(&outs[i]), n);
        if (fwrite(outs[i].data, sizeof(float), (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "deltaslice infer: cannot write %s: %s\n", path, strerror(errno));
            fclose(f);
            return -1;
        }
        char s[64];
        const ds_layer *l = &m->layers[out_ids[i]];
        printf("layer %d (%s, %s): %s\n", l->id, l->name ? l->name : "?", ds_op_name(l->op),
               ds_shape_str(&outs[i].shape, s, sizeof s));
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "deltaslice infer: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The --video form: every frame (or the first --frames) through the model
 * and into ds_output, as a run writes them. */
static int infer_video(const infer_args *a, ds_model *m)
{
    ds_error err = {0};
    ds_video *v = ds_video_open(a->video, a->rows, a->cols, &err);
    if (!v) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        return 1;
    }
    const ds_video_info *info = ds_video_get_info(v);
    int rc = 1, n_out = 0, *out_ids = NULL;
    const char **names = NULL;
    const ds_tensor **values = NULL;
    ds_tensor hwc = {0}, x = {0}, *outs = NULL;
    ds_output *sink = NULL;
    runner run = {0};
    long f = 0;
    double secs = 0;
    if (ds_model_set_input(m, 1, 3, info->rows, info->cols, &err)) {
        fprintf(stderr, "deltaslice infer: %s at %dx%d: %s\n", a->model, info->rows, info->cols,
                err.msg);
        goto done;
    }
    int st = output_ids(a->layers, m, &out_ids, &n_out);
    if (st >= 0) {
        rc = st;
        goto done;
    }
    size_t n = (size_t)(n_out > 0 ? n_out : 1);
    outs = calloc(n, sizeof *outs);
    names = calloc(n, sizeof *names);
    values = calloc(n, sizeof *values);
    if (!outs || !names || !values) {
        fprintf(stderr, "deltaslice infer: out of memory\n");
        goto done;
    }
    for (int k = 0; k < n_out; k++) {
        names[k] = m->layers[out_ids[k]].name;
        values[k] = &outs[k];
    }
    ds_output_opts oo = {
        .jsonl = a->jsonl, .tensors = a->tensors, .labels = a->labels, .top_k = a->top_k};
    if (!(sink = ds_output_open(&oo, &err))) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        goto done;
    }
    if (runner_init(&run, m, a, out_ids, n_out))
        goto done;
    for (; !a->frames || f < a->frames; f++) {
        int r = ds_video_read(v, &hwc, &err);
        if (r == 0)
            break;
        ds_result res = {.frame_id = (uint64_t)f,
                         .source_frame = f,
                         .n_outputs = n_out,
                         .layer_ids = out_ids,
                         .names = names,
                         .values = values};
        if (r < 0 || ds_frame_u8_to_f32_nchw(&hwc, &x, &err) ||
            runner_run(&run, &x, outs, &secs, &err) || ds_output_write(sink, &res, &err)) {
            fprintf(stderr, "deltaslice infer: frame %ld: %s\n", f, err.msg);
            goto done;
        }
    }
    if (a->frames && f < a->frames) {
        fprintf(stderr, "deltaslice infer: %s has only %ld frames (--frames %ld)\n", a->video, f,
                a->frames);
        goto done;
    }
    fprintf(stderr, "%s on %s, %d thread%s: %ld frames of %dx%d, %.4f s per frame\n",
            m->name ? m->name : a->model, ds_backend_name(a->be), a->threads,
            a->threads > 1 ? "s" : "", f, info->rows, info->cols, f ? secs / (double)f : 0.0);
    rc = 0;
done:
    runner_free(&run);
    ds_output_close(sink);
    if (outs)
        for (int i = 0; i < n_out; i++)
            ds_tensor_free(&outs[i]);
    free(outs);
    free(names);
    free(values);
    free(out_ids);
    ds_tensor_free(&hwc);
    ds_tensor_free(&x);
    ds_video_close(v);
    return rc;
}

/* The --input form: one raw tensor in, the outputs to one raw file. */
static int infer_tensor(const infer_args *a, ds_model *m)
{
    ds_error err = {0};
    int rc = 1, n_out = 0, *out_ids = NULL;
    ds_tensor x = {0}, *outs = NULL;
    runner run = {0};
    double secs = 0;
    if (ds_model_set_input(m, a->shape.dims[0], a->shape.dims[1], a->shape.dims[2],
                           a->shape.dims[3], &err)) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        goto done;
    }
    int st = output_ids(a->layers, m, &out_ids, &n_out);
    if (st >= 0) {
        rc = st;
        goto done;
    }
    if (!(outs = calloc((size_t)(n_out > 0 ? n_out : 1), sizeof *outs))) {
        fprintf(stderr, "deltaslice infer: out of memory\n");
        goto done;
    }
    if (ds_tensor_reserve(&x, &m->layers[0].out_shape, DS_F32, &err) || read_input(a->input, &x) ||
        runner_init(&run, m, a, out_ids, n_out))
        goto done;
    if (runner_run(&run, &x, outs, &secs, &err)) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        goto done;
    }
    if (write_outputs(a->output, m, out_ids, outs, n_out))
        goto done;
    fprintf(stderr, "%s on %s, %d thread%s: %.4f s\n", m->name ? m->name : a->model,
            ds_backend_name(a->be), a->threads, a->threads > 1 ? "s" : "", secs);
    rc = 0;
done:
    runner_free(&run);
    if (outs)
        for (int i = 0; i < n_out; i++)
            ds_tensor_free(&outs[i]);
    free(outs);
    free(out_ids);
    ds_tensor_free(&x);
    return rc;
}

int ds_cmd_infer(int argc, char **argv)
{
    infer_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    ds_error err = {0};
    ds_model m;
    memset(&m, 0, sizeof m);
    if (ds_model_load(a.model, &m, &err)) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        return 1;
    }
    rc = a.video ? infer_video(&a, &m) : infer_tensor(&a, &m);
    ds_model_free(&m);
    return rc;
}
