/* cmd_infer.c - deltaslice infer: run a model on one raw float32 tensor. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
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
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "deltaslice infer: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t want = ds_tensor_bytes(t);
    /* fstat's off_t is 64-bit everywhere (_FILE_OFFSET_BITS=64); ftell's long is not. */
    struct stat st;
    long long size = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
    if (size < 0 || (unsigned long long)size != want) {
        char s[64];
        fprintf(stderr, "deltaslice infer: %s holds %lld bytes, shape %s needs %zu\n", path,
                size, ds_shape_str(&t->shape, s, sizeof s), want);
        fclose(f);
        return -1;
    }
    size_t got = fread(t->data, 1, want, f);
    fclose(f);
    if (got != want) {
        fprintf(stderr, "deltaslice infer: short read from %s\n", path);
        return -1;
    }
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

int ds_cmd_infer(int argc, char **argv)
{
    static const struct option longs[] = {
        {"input", required_argument, NULL, 'i'},   {"shape", required_argument, NULL, 's'},
        {"output", required_argument, NULL, 'o'},  {"threads", required_argument, NULL, 't'},
        {"backend", required_argument, NULL, 'b'}, {"layers", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *input = NULL, *shape_s = NULL, *output = NULL, *layers = NULL;
    int threads = 1;
    ds_backend be = DS_BACKEND_XNNPACK;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":i:s:o:t:b:l:h", longs, NULL)) != -1) {
        switch (c) {
        case 'i': input = optarg; break;
        case 's': shape_s = optarg; break;
        case 'o': output = optarg; break;
        case 'l': layers = optarg; break;
        case 't': {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (*end || errno || v < 1 || v > 256)
                return ds_cli_usage_error("infer", "--threads wants 1..256, got '%s'", optarg);
            threads = (int)v;
            break;
        }
        case 'b':
            if (ds_backend_parse(optarg, &be))
                return ds_cli_usage_error("infer", "--backend is xnnpack or reference, not '%s'",
                                          optarg);
            break;
        default:
            return ds_cli_common_option(c, "infer", help, argv);
        }
    }
    if (optind != argc - 1)
        return ds_cli_usage_error("infer", "expected exactly one MODEL argument");
    if (!input || !shape_s || !output)
        return ds_cli_usage_error("infer", "--input, --shape and --output are required");
    ds_error err = {0};
    ds_shape shape;
    if (ds_shape_parse(shape_s, &shape, &err))
        return ds_cli_usage_error("infer", "%s", err.msg);
    if (shape.ndim != 4)
        return ds_cli_usage_error("infer", "--shape must be NxCxHxW");

    ds_model m;
    memset(&m, 0, sizeof m);
    int rc = 1, n_out = 0, *out_ids = NULL;
    ds_tensor x = {0}, *outs = NULL;
    ds_executor *ex = NULL;
    int *exec_ids = NULL;
    FILE *f = NULL;
    if (ds_model_load(argv[optind], &m, &err) ||
        ds_model_set_input(&m, shape.dims[0], shape.dims[1], shape.dims[2], shape.dims[3], &err)) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        goto done;
    }
    if (layers) {
        if (parse_layers(layers, &m, &out_ids, &n_out)) {
            rc = ds_cli_usage_error("infer", "--layers wants comma-separated ids in 0..%d",
                                    m.n_layers - 1);
            goto done;
        }
    } else {
        n_out = m.n_outputs;
        out_ids = malloc((size_t)(n_out > 0 ? n_out : 1) * sizeof *out_ids);
        if (out_ids)
            memcpy(out_ids, m.outputs, (size_t)n_out * sizeof *out_ids);
    }
    exec_ids = malloc((size_t)m.n_layers * sizeof *exec_ids);
    outs = calloc((size_t)(n_out > 0 ? n_out : 1), sizeof *outs);
    if (!out_ids || !exec_ids || !outs) {
        fprintf(stderr, "deltaslice infer: out of memory\n");
        goto done;
    }
    for (int i = 1; i < m.n_layers; i++)
        exec_ids[i - 1] = i;
    if (ds_tensor_reserve(&x, &m.layers[0].out_shape, DS_F32, &err) || read_input(input, &x))
        goto done;
    if (!(ex = ds_executor_new(&m, be, threads, &err))) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        goto done;
    }
    ds_job job = {m.n_layers - 1, exec_ids, n_out, out_ids};
    int in_id = 0;
    const ds_tensor *inp[1] = {&x};
    double t0 = ds_now();
    if (ds_executor_run(ex, &job, 1, &in_id, inp, outs, &err)) {
        fprintf(stderr, "deltaslice infer: %s\n", err.msg);
        goto done;
    }
    double secs = ds_now() - t0;
    if (!(f = fopen(output, "wb"))) {
        fprintf(stderr, "deltaslice infer: cannot create %s: %s\n", output, strerror(errno));
        goto done;
    }
    for (int i = 0; i < n_out; i++) {
        int64_t n = ds_shape_numel(&outs[i].shape);
        swap_if_big_endian(ds_tensor_f32(&outs[i]), n);
        if (fwrite(outs[i].data, sizeof(float), (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "deltaslice infer: cannot write %s: %s\n", output, strerror(errno));
            goto done;
        }
        char s[64];
        const ds_layer *l = &m.layers[out_ids[i]];
        printf("layer %d (%s, %s): %s\n", l->id, l->name ? l->name : "?", ds_op_name(l->op),
               ds_shape_str(&outs[i].shape, s, sizeof s));
    }
    if (fclose(f) != 0) {
        f = NULL;
        fprintf(stderr, "deltaslice infer: cannot write %s: %s\n", output, strerror(errno));
        goto done;
    }
    f = NULL;
    fprintf(stderr, "%s on %s, %d thread%s: %.4f s\n", m.name ? m.name : argv[optind],
            ds_backend_name(be), threads, threads > 1 ? "s" : "", secs);
    rc = 0;
done:
    if (f)
        fclose(f);
    ds_executor_free(ex);
    if (outs)
        for (int i = 0; i < n_out; i++)
            ds_tensor_free(&outs[i]);
    free(outs);
    free(out_ids);
    free(exec_ids);
    ds_tensor_free(&x);
    ds_model_free(&m);
    return rc;
}
