/* main.c - the deltaslice binary: dispatches to a subcommand. */
#include <getopt.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", ds_cmd_run, "run trainer, workers and master on this machine (the main job)"},
    {"master", ds_cmd_master, "decode the video and drive frames through the workers"},
    {"worker", ds_cmd_worker, "serve one slice of the CNN (worker -i ID)"},
    {"trainer", ds_cmd_trainer, "learn per-layer change sparsity and serve the predictors"},
    {"config", ds_cmd_config, "check a configuration: where each role listens, how it authenticates"},
    {"trace", ds_cmd_trace, "merge trace files into a timeline (Perfetto JSON or SVG)"},
    {"dag", ds_cmd_dag, "draw a model's layer DAG with costs and cut points (Graphviz SVG or DOT)"},
    {"zoo", ds_cmd_zoo, "write a built-in CNN trunk (alexnet, vgg16, ...) as an ONNX file"},
    {"infer", ds_cmd_infer, "run a model on one raw float32 tensor, or on a video's frames (--video)"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: deltaslice COMMAND [options]\n"
            "\n"
            "Collaborative CNN inference on video across a chain of devices.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "The roles (run, master, worker, trainer) and config read -c/--config FILE\n"
            "(default config.yml). Every command takes -h/--help and --version;\n"
            "'deltaslice COMMAND --help' describes one command.\n");
}

void ds_cli_version(void)
{
    printf("deltaslice %s\n", DS_VERSION);
}

int ds_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "deltaslice %s: %s\n(see 'deltaslice %s --help')\n", cmd, msg, cmd);
    return 2;
}

int ds_cli_common_option(int opt, const char *cmd, const char *help, char **argv)
{
    switch (opt) {
    case 'h':
        fputs(help, stdout);
        return 0;
    case 'V':
        ds_cli_version();
        return 0;
    case ':':
        return ds_cli_usage_error(cmd, "option %s needs a value", argv[optind - 1]);
    default:
        return ds_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
}

int main(int argc, char **argv)
{
    /* Page faults cost ~12 us here: keep freed memory for reuse instead of
     * returning it to the kernel, and keep big buffers off mmap. */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_ARENA_MAX, 4);

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        ds_cli_version();
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "deltaslice: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
