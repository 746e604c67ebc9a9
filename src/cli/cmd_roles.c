/* cmd_roles.c - master, worker, trainer and run: parse options, load and
 * validate the configuration, start the role. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "commands.h"
#include "common/config.h"
#include "common/log.h"
#include "roles/roles.h"

typedef struct role_opts {
    const char *config;
    int worker_id;
} role_opts;

/* Returns -1 to continue, else the exit status to return. */
static int parse_role_opts(int argc, char **argv, const char *help, int want_id, role_opts *o)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    o->config = NULL; /* config.yml, else the embedded default */
    o->worker_id = -1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, want_id ? ":c:i:h" : ":c:h", longs, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'i': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!want_id || *end || end == optarg || v < 0 || v > 255)
                return ds_cli_usage_error(argv[0], "-i/--id: expected a worker id 0..255, got \"%s\"", optarg);
            o->worker_id = (int)v;
            break;
        }
        default:
            return ds_cli_common_option(c, argv[0], help, argv);
        }
    }
    if (optind < argc)
        return ds_cli_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    if (want_id && o->worker_id < 0)
        return ds_cli_usage_error(argv[0], "missing -i/--id ID");
    return -1;
}

/* Loads the configuration; prints its one-line error and returns 2. */
static int load_config(const role_opts *o, const char *role, ds_config *cfg)
{
    ds_error err;
    if (ds_config_load(o->config, cfg, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    ds_log_init(role, cfg->log_level);
    if (o->worker_id >= cfg->n_workers) {
        fprintf(stderr, "%s: worker id %d is not configured (port.worker has %d entries: ids 0..%d)\n",
                cfg->path, o->worker_id, cfg->n_workers, cfg->n_workers - 1);
        ds_config_free(cfg);
        return 2;
    }
    return -1;
}

/* Loads the configuration and runs the role. */
static int start_role(const role_opts *o, const char *role)
{
    ds_config cfg;
    char name[32];
    if (!strcmp(role, "worker"))
        snprintf(name, sizeof name, "worker%d", o->worker_id);
    else
        snprintf(name, sizeof name, "%s", role);
    int rc = load_config(o, name, &cfg);
    if (rc >= 0)
        return rc;
    if (!strcmp(role, "worker")) {
        rc = ds_worker_main(&cfg, o->worker_id);
    } else if (!strcmp(role, "master")) {
        rc = ds_master_main(&cfg);
    } else if (!strcmp(role, "trainer")) {
        rc = ds_trainer_main(&cfg);
    } else {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            fprintf(stderr, "deltaslice run: cannot find its own executable\n");
            rc = 1;
        } else {
            self[n] = '\0';
            rc = ds_run_main(&cfg, o->config, self);
        }
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        ds_log_info("peak memory %.1f MB", ru.ru_maxrss / 1024.0);
    ds_config_free(&cfg);
    return rc;
}

int ds_cmd_master(int argc, char **argv)
{
    static const char help[] =
        "usage: deltaslice master [-c FILE]\n"
        "\n"
        "Decodes the video, plans cut points with the scheduler, sends every frame\n"
        "through the chain of workers and prints latency and traffic statistics.\n"
        "\n"
        "options:\n"
        "  -c, --config FILE  configuration (default config.yml)\n"
        "  -h, --help         show this help\n"
        "      --version      show the version\n";
    role_opts o;
    int rc = parse_role_opts(argc, argv, help, 0, &o);
    return rc >= 0 ? rc : start_role(&o, "master");
}

int ds_cmd_worker(int argc, char **argv)
{
    static const char help[] =
        "usage: deltaslice worker -i ID [-c FILE]\n"
        "\n"
        "Serves worker ID of the chain: runs the layers the master assigns to it,\n"
        "forwards its outputs to worker ID+1 and reports finished frames.\n"
        "\n"
        "options:\n"
        "  -i, --id ID        this worker's index (0..N-1)\n"
        "  -c, --config FILE  configuration (default config.yml)\n"
        "  -h, --help         show this help\n"
        "      --version      show the version\n";
    role_opts o;
    int rc = parse_role_opts(argc, argv, help, 1, &o);
    return rc >= 0 ? rc : start_role(&o, "worker");
}

int ds_cmd_trainer(int argc, char **argv)
{
    static const char help[] =
        "usage: deltaslice trainer [-c FILE]\n"
        "\n"
        "Learns per-layer change sparsity predictors from the video and serves them\n"
        "to the master's scheduler.\n"
        "\n"
        "options:\n"
        "  -c, --config FILE  configuration (default config.yml)\n"
        "  -h, --help         show this help\n"
        "      --version      show the version\n";
    role_opts o;
    int rc = parse_role_opts(argc, argv, help, 0, &o);
    return rc >= 0 ? rc : start_role(&o, "trainer");
}

int ds_cmd_run(int argc, char **argv)
{
    static const char help[] =
        "usage: deltaslice run [-c FILE]\n"
        "\n"
        "Runs the whole system on this machine: the trainer (when the scheduler\n"
        "needs it), every configured worker and the master, as child processes,\n"
        "and prints the master's summary.\n"
        "\n"
        "options:\n"
        "  -c, --config FILE  configuration (default config.yml)\n"
        "  -h, --help         show this help\n"
        "      --version      show the version\n";
    role_opts o;
    int rc = parse_role_opts(argc, argv, help, 0, &o);
    return rc >= 0 ? rc : start_role(&o, "run");
}
