/* cmd_infer.c - deltaslice infer: run a model on one raw float32 tensor. */
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

static const char help[] =
    "usage: deltaslice infer MODEL --input IN.f32 --shape 1x3xHxW --output OUT.f32\n"
    "                        [--threads N] [--backend xnnpack|reference] [--layers IDS]\n"
    "\n"
    "Runs a CNN on one input tensor and writes its output, so results can be\n"
    "compared with PyTorch or ONNX tools.  MODEL is an .onnx file or zoo:NAME.\n"
    "Tensors are raw little-endian float32 in NCHW order.  Prints the shape of\n"
    "every output written.\n"
    "\n"
    "options:\n"
    "  -i, --input FILE     input tensor (size must match --shape)\n"
    "  -s, --shape NxCxHxW  input shape, e.g. 1x3x480x720\n"
    "  -o, --output FILE    where to write the output tensor(s)\n"
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
} infer_args;

/* Parses and checks the command line; returns -1 when the command is to
 * run, else the exit status (help, version, usage error). */
static int parse_args(int argc, char **argv, infer_args *a)
{
    static const struct option longs[] = {
        {"input", required_argument, NULL, 'i'},   {"shape", required_argument, NULL, 's'},
        {"output", required_argument, NULL, 'o'},  {"threads", required_argument, NULL, 't'},
        {"backend", required_argument, NULL, 'b'}, {"layers", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, 'V'},
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
        case 't': {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (*end || errno || v < 1 || v > 256)
                return ds_cli_usage_error("infer", "--threads wants 1..256, got '%s'", optarg);
            a->threads = (int)v;
            break;
        }
        case 'b':
            if (ds_backend_parse(optarg, &a->be))
                return ds_cli_usage_error("infer", "--backend is xnnpack or reference, not '%s'",
                                          optarg);
            break;
        default:
            return ds_cli_common_option(c, "infer", help, argv);
        }
    }
    if (optind != argc - 1)
        return ds_cli_usage_error("infer", "expected exactly one MODEL argument");
    if (!a->input || !shape_s || !a->output)
        return ds_cli_usage_error("infer", "--input, --shape and --output are required");
    a->model = argv[optind];
    ds_error err = {0};
    if (ds_shape_parse(shape_s, &a->shape, &err))
        return ds_cli_usage_error("infer", "%s", err.msg);
    if (a->shape.ndim != 4)
        return ds_cli_usage_error("infer", "--shape must be NxCxHxW");
    return -1;
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

/* Runs every layer of m on x into outs[n_out]; *secs = the run's time. */
static int run_model(const ds_model *m, const infer_args *a, const ds_tensor *x,
                     const int *out_ids, int n_out, ds_tensor *outs, double *secs)
{
    ds_error err = {0};
    int *exec_ids = malloc((size_t)m->n_layers * sizeof *exec_ids);
    if (!exec_ids) {
        fprintf(stderr, "deltaslice infer: out of memory\n");
        return -1;
    }
    for (int i = 1; i < m->n_layers; i++)
        exec_ids[i - 1] = i;
    ds_executor *ex = ds_executor_new(m, a->be, a->threads, &err);
    int rc = -1;
    if (ex) {
        ds_job job = {m->n_layers - 1, exec_ids, n_out, out_ids};
        int in_id = 0;
        const ds_tensor *inp[1] = {x};
        double t0 = ds_now();
        rc = ds_executor_run(ex, &job, 1, &in_id, inp, outs, &err);
        *secs = ds_now() - t0;
    }
    if (rc)
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
    ds_executor_free(ex);
    free(exec_ids);
    return rc;
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

int ds_cmd_infer(int argc, char **argv)
{
    infer_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    rc = 1;
    ds_error err = {0};
    ds_model m;
    memset(&m, 0, sizeof m);
    int n_out = 0, *out_ids = NULL;
    ds_tensor x = {0}, *outs = NULL;
    double secs = 0;
    if (ds_model_load(a.model, &m, &err) ||
        ds_model_set_input(&m, a.shape.dims[0], a.shape.dims[1], a.shape.dims[2], a.shape.dims[3],
                           &err)) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        goto done;
    }
    int st = output_ids(a.layers, &m, &out_ids, &n_out);
    if (st >= 0) {
        rc = st;
        goto done;
    }
    if (!(outs = calloc((size_t)(n_out > 0 ? n_out : 1), sizeof *outs))) {
        fprintf(stderr, "deltaslice infer: out of memory\n");
        goto done;
    }
    if (ds_tensor_reserve(&x, &m.layers[0].out_shape, DS_F32, &err) || read_input(a.input, &x) ||
        run_model(&m, &a, &x, out_ids, n_out, outs, &secs) ||
        write_outputs(a.output, &m, out_ids, outs, n_out))
        goto done;
    fprintf(stderr, "%s on %s, %d thread%s: %.4f s\n", m.name ? m.name : a.model,
            ds_backend_name(a.be), a.threads, a.threads > 1 ? "s" : "", secs);
    rc = 0;
done:
    if (outs)
        for (int i = 0; i < n_out; i++)
            ds_tensor_free(&outs[i]);
    free(outs);
    free(out_ids);
    ds_tensor_free(&x);
    ds_model_free(&m);
    return rc;
}
