/* cmd_zoo.c - deltaslice zoo: write a built-in trunk as an ONNX file. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "model/model.h"
#include "model/zoo.h"

static int write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "deltaslice zoo: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t put = fwrite(buf, 1, len, f);
    if (fclose(f) != 0 || put != len) {
        fprintf(stderr, "deltaslice zoo: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

static const char help[] =
    "usage: deltaslice zoo NAME -o FILE.onnx [--seed N]\n"
    "       deltaslice zoo --list\n"
    "\n"
    "Writes a built-in CNN trunk as an ONNX file (opset 13, input \"input\" of\n"
    "1x3xHxW) with deterministic He-initialised random weights and torchvision's\n"
    "layer structure: alexnet, vgg16, vgg19 (features), googlenet (conv1 ..\n"
    "inception5b), resnet50 (conv1 .. layer4).  These are the models that\n"
    "'dnn: zoo:NAME' runs.  Prints layers, parameters and bytes.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE  where to write the model (required)\n"
    "  -s, --seed N       weight seed (default 1, the one zoo:NAME uses)\n"
    "  -l, --list         list the model names\n"
    "  -h, --help         show this help\n"
    "      --version      show the version\n";

/* The command line. */
typedef struct zoo_args {
    const char *out, *name; /* name without "zoo:" */
    uint64_t seed;
    int list;
} zoo_args;

/* Parses and checks the command line; returns -1 when the command is to
 * run, else the exit status (help, version, usage error). */
static int parse_args(int argc, char **argv, zoo_args *a)
{
    static const struct option longs[] = {
        {"output", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, 's'},
        {"list", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    *a = (zoo_args){.seed = 1};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:s:lh", longs, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->out = optarg;
            break;
        case 's': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return ds_cli_usage_error(argv[0], "--seed: expected a non-negative integer, got \"%s\"", optarg);
            a->seed = v;
            break;
        }
        case 'l':
            a->list = 1;
            break;
        default:
            return ds_cli_common_option(c, argv[0], help, argv);
        }
    }
    if (a->list)
        return -1;
    if (optind >= argc)
        return ds_cli_usage_error(argv[0], "missing model NAME (see --list)");
    if (optind + 1 < argc)
        return ds_cli_usage_error(argv[0], "unexpected argument '%s'", argv[optind + 1]);
    a->name = argv[optind];
    if (!strncmp(a->name, "zoo:", 4))
        a->name += 4;
    int known = 0;
    for (const char *const *n = ds_zoo_names(); *n; n++)
        known |= !strcmp(*n, a->name);
    if (!known)
        return ds_cli_usage_error(argv[0], "unknown model \"%s\" (see --list)", a->name);
    if (!a->out)
        return ds_cli_usage_error(argv[0], "missing -o/--output FILE");
    return -1;
}

int ds_cmd_zoo(int argc, char **argv)
{
    zoo_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    if (a.list) {
        for (const char *const *n = ds_zoo_names(); *n; n++)
            printf("%s\n", *n);
        return 0;
    }
    ds_error err;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (ds_zoo_build(a.name, a.seed, &bytes, &len, &err)) {
        fprintf(stderr, "deltaslice zoo: %s\n", err.msg);
        return 1;
    }
    /* Load it back: the summary counts what a worker will run, and a model
     * this loader rejects is never written. */
    ds_model m;
    char label[64];
    snprintf(label, sizeof label, "zoo:%s", a.name);
    if (ds_model_load_onnx(bytes, len, label, &m, &err)) {
        fprintf(stderr, "deltaslice zoo: %s\n", err.msg);
        free(bytes);
        return 1;
    }
    int64_t params = 0;
    for (int i = 0; i < m.n_layers; i++)
        params += (m.layers[i].weight.data ? ds_shape_numel(&m.layers[i].weight.shape) : 0) +
                  (m.layers[i].bias.data ? ds_shape_numel(&m.layers[i].bias.shape) : 0);
    rc = write_file(a.out, bytes, len);
    if (!rc)
        printf("%s: %s with %d layers (BN folded), %" PRId64 " parameters, %zu bytes, seed %" PRIu64 "\n", a.out,
               label, m.n_layers, params, len, a.seed);
    ds_model_free(&m);
    free(bytes);
    return rc;
}
