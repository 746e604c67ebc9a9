/* cmd_config.c - deltaslice config: validate a configuration and say what
 * each role does with it (where it listens, how it authenticates, which
 * routes reach it), or, with --hosts, the hosts its clients use: what
 * scripts/make-certs.sh puts in each role's certificate. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "commands.h"
#include "common/config.h"

static const char help[] =
    "usage: deltaslice config [-c FILE] [--hosts]\n"
    "\n"
    "Loads and validates a configuration (an error names file:line:column and\n"
    "key, exit status 2), then prints one line per role: where it listens, its\n"
    "security mode and the TLS files it would use, the routes that reach it and\n"
    "what it dials; the last line is \"FILE: ok\".  Reads no certificate: the\n"
    "files may be made later (scripts/make-certs.sh).\n"
    "\n"
    "With --hosts, prints \"ROLE HOST...\" per role instead (master, w0, w1, ...,\n"
    "trainer when the master has a route to it): every host its clients dial,\n"
    "and its listen address when that is a specific one.  scripts/make-certs.sh\n"
    "reads it to put those hosts in each role's certificate.\n"
    "\n"
    "options:\n"
    "  -c, --config FILE  configuration (default config.yml)\n"
    "      --hosts        print the hosts of each role, for certificates\n"
    "  -h, --help         show this help\n"
    "      --version      show the version\n";

/* A route into or out of a role: "m->w1" and its "host:port". */
typedef struct route {
    char name[32]; /* "w%d->w%d" for any ids */
    const char *addr;
} route;

/* The routes reaching worker `worker` (the trainer when -1), in config
 * order: m->wI first, then wJ->wI by J.  Returns the count. */
static int routes_to(const ds_config *cfg, int worker, route *out)
{
    int n = 0;
    if (worker < 0) {
        if (cfg->route_master_trainer) {
            snprintf(out[n].name, sizeof out[n].name, "m->t");
            out[n++].addr = cfg->route_master_trainer;
        }
        return n;
    }
    snprintf(out[n].name, sizeof out[n].name, "m->w%d", worker);
    out[n++].addr = cfg->route_master_worker[worker];
    for (int j = 0; j < worker; j++)
        if (cfg->route_worker[j][worker]) {
            snprintf(out[n].name, sizeof out[n].name, "w%d->w%d", j, worker);
            out[n++].addr = cfg->route_worker[j][worker];
        }
    return n;
}

/* The routes the master (worker -1) or worker `worker` dials. */
static int routes_from(const ds_config *cfg, int worker, route *out)
{
    int n = 0;
    for (int j = worker + 1; j < cfg->n_workers; j++) {
        const char *addr = worker < 0 ? cfg->route_master_worker[j] : cfg->route_worker[worker][j];
        if (!addr)
            continue;
        snprintf(out[n].name, sizeof out[n].name, "w%d", j);
        out[n++].addr = addr;
    }
    if (worker < 0 && cfg->route_master_trainer) {
        snprintf(out[n].name, sizeof out[n].name, "trainer");
        out[n++].addr = cfg->route_master_trainer;
    }
    return n;
}

/* Does a server bound to host listen on every interface, or on a name that
 * says nothing about the device (so that it adds nothing to --hosts)? */
static int unspecific_listen(const char *host)
{
    return !strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !strcmp(host, "[::]") ||
           !strcasecmp(host, "localhost");
}

/* --hosts: "ROLE HOST..." for one server role. */
static void print_hosts(const char *role, const route *in, int n_in, const char *listen)
{
    char hosts[DS_MAX_WORKERS + 1][256];
    int n = 0;
    for (int i = 0; i <= n_in; i++) {
        char h[256];
        if (i < n_in) {
            ds_config_route_host(in[i].addr, h, sizeof h);
        } else {
            if (unspecific_listen(listen))
                break;
            /* a bracketed IPv6 literal without a port */
            size_t len = strlen(listen);
            if (listen[0] == '[' && len > 2 && listen[len - 1] == ']')
                snprintf(h, sizeof h, "%.*s", (int)(len - 2), listen + 1);
            else
                snprintf(h, sizeof h, "%s", listen);
        }
        int seen = 0;
        for (int k = 0; k < n && !seen; k++)
            seen = !strcasecmp(hosts[k], h); /* host names ignore case */
        if (!seen)
            snprintf(hosts[n++], sizeof hosts[0], "%s", h);
    }
    printf("%s", role);
    for (int k = 0; k < n; k++)
        printf(" %s", hosts[k]);
    printf("\n");
}

static int print_all_hosts(const ds_config *cfg)
{
    route in[DS_MAX_WORKERS];
    printf("master\n"); /* it listens on nothing: no host names it */
    for (int i = 0; i < cfg->n_workers; i++) {
        char role[16]; /* "w" and any int */
        snprintf(role, sizeof role, "w%d", i);
        print_hosts(role, in, routes_to(cfg, i, in), cfg->listen_worker[i]);
    }
    int n = routes_to(cfg, -1, in);
    if (n)
        print_hosts("trainer", in, n, cfg->listen_trainer);
    return 0;
}

/* ": ca FILE, cert FILE, key FILE", then those this machine cannot read
 * (expected on a device that plays another role). */
static void print_tls_files(const ds_role_tls *t)
{
    const char *names[3] = {"ca", "cert", "key"};
    const char *paths[3] = {t->ca, t->cert, t->key};
    int n = 0, unreadable[3] = {0};
    for (int i = 0; i < 3; i++) {
        if (!paths[i][0])
            continue;
        printf("%s %s %s", n++ ? "," : ":", names[i], paths[i]);
        unreadable[i] = access(paths[i], R_OK) != 0;
    }
    n = 0;
    for (int i = 0; i < 3; i++)
        if (paths[i][0] && unreadable[i])
            printf("%s %s", n++ ? "," : "; not readable here:", names[i]);
}

/* "MODE (how)" for a role ("master", "w0", "trainer"), from the
 * configuration alone: the block that applies (config.h: a role's own
 * replaces the shared one), the token's source (never the token), insecure. */
static int print_security(const ds_config *cfg, const char *role)
{
    ds_error err;
    ds_role_tls t;
    if (ds_config_role_tls(cfg, role, &t, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    const ds_tls_files *own = !strcmp(role, "master")    ? &cfg->master.tls
                              : !strcmp(role, "trainer") ? &cfg->trainer.tls
                                                         : &cfg->worker.tls;
    const char *block = !own->ca ? "tls" : !strcmp(role, "master") ? "master.tls"
                                   : !strcmp(role, "trainer")      ? "trainer.tls"
                                                                   : "worker.tls";
    const ds_tls_files *applied = own->ca ? own : &cfg->tls;
    int token = cfg->auth_token && cfg->auth_token[0];
    const char *env = getenv("DELTASLICE_TOKEN");
    const char *token_from = env && *env ? "DELTASLICE_TOKEN" : "auth.token";
    if (t.ca[0]) {
        printf("%s (%s at %s", token ? "TLS + token" : "mutual TLS", block, applied->where);
        print_tls_files(&t);
    } else {
        printf("%s (%s", token ? "plaintext + token" : "plaintext",
               cfg->insecure ? "insecure: true" : "loopback only");
    }
    if (token)
        printf("; token from %s", token_from);
    printf(")");
    return 0;
}

/* "; WHAT NAME at ADDR, NAME at ADDR" (nothing when n is 0). */
static void print_routes(const char *what, const route *r, int n)
{
    for (int i = 0; i < n; i++)
        printf("%s %s at %s", i ? "," : what, r[i].name, r[i].addr);
}

/* One line per role, then "FILE: ok". */
static int print_summary(const ds_config *cfg)
{
    route r[DS_MAX_WORKERS + 1];
    char addr[300];
    printf("master: listens on nothing; ");
    if (print_security(cfg, "master"))
        return 2;
    print_routes("; dials", r, routes_from(cfg, -1, r));
    printf("\n");
    for (int w = 0; w < cfg->n_workers; w++) {
        char role[16]; /* "w" and any int */
        snprintf(role, sizeof role, "w%d", w);
        ds_config_listen_addr(cfg->listen_worker[w], cfg->port_worker[w], addr, sizeof addr);
        printf("%s: listens on %s; ", role, addr);
        if (print_security(cfg, role))
            return 2;
        print_routes("; reached by", r, routes_to(cfg, w, r));
        print_routes("; dials", r, routes_from(cfg, w, r));
        printf("\n");
    }
    int n = routes_to(cfg, -1, r);
    if (n > 0) {
        ds_config_listen_addr(cfg->listen_trainer, cfg->port_trainer, addr, sizeof addr);
        printf("trainer: listens on %s; ", addr);
        if (print_security(cfg, "trainer"))
            return 2;
        print_routes("; reached by", r, n);
        if (!ds_config_needs_trainer(cfg)) {
            printf("; unused by scheduler %s (", ds_scheduler_name(cfg->master.scheduler));
            for (int s = 0, k = 0; s < DS_SCHED_COUNT; s++)
                if (ds_scheduler_needs_predictors((ds_scheduler)s))
                    printf("%s%s", k++ ? " and " : "", ds_scheduler_name((ds_scheduler)s));
            printf(" use it)");
        }
        printf("\n");
    }
    printf("%s: ok\n", cfg->path);
    return 0;
}

int ds_cmd_config(int argc, char **argv)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"hosts", no_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL; /* config.yml, else the embedded default */
    int hosts = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":c:h", longs, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'H':
            hosts = 1;
            break;
        default:
            return ds_cli_common_option(c, argv[0], help, argv);
        }
    }
    if (optind < argc)
        return ds_cli_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    ds_config cfg;
    ds_error err;
    if (ds_config_load(path, &cfg, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    int rc = hosts ? print_all_hosts(&cfg) : print_summary(&cfg);
    ds_config_free(&cfg);
    return rc;
}
