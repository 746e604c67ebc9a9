/* config.c - YAML configuration: parse with libyaml's document API (it keeps
 * line:column for every node), then check every key against a schema. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "file.h"

#ifndef DS_SOURCE_DIR
#define DS_SOURCE_DIR "."
#endif

/* The repository's config.yml, compiled in by CMake (embedded_config.c), used
 * when no config file is given or found. */
extern const char ds_embedded_config[];
extern const size_t ds_embedded_config_len;

/* Parsing context: the document, where it came from, the error sink. */
typedef struct parse_ctx {
    yaml_document_t *doc;
    const char *label;
    const char *base_dir;
    ds_error *err;
} parse_ctx;

static int fail(parse_ctx *c, const yaml_node_t *node, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(parse_ctx *c, const yaml_node_t *node, const char *key, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ds_errorf(c->err, "%s:%zu:%zu: %s: %s", c->label, node->start_mark.line + 1,
                     node->start_mark.column + 1, key, what);
}

/* "got ..." text for an unexpected node. */
static const char *describe(const yaml_node_t *n, char *buf, size_t len)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        snprintf(buf, len, "\"%.*s\"", (int)(n->data.scalar.length > 60 ? 60 : n->data.scalar.length),
                 n->data.scalar.value ? (const char *)n->data.scalar.value : "");
        return buf;
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static const char *scalar(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int is_null(const yaml_node_t *n)
{
    const char *s = scalar(n);
    return s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"));
}

static int get_int(parse_ctx *c, const yaml_node_t *n, const char *key, long min, long max, int *out)
{
    char got[80];
    const char *s = scalar(n);
    if (s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && *s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (!*end && !errno && v >= min && v <= max) {
            *out = (int)v;
            return 0;
        }
    }
    if (max == INT_MAX)
        return fail(c, n, key, "expected an integer >= %ld, got %s", min, describe(n, got, sizeof got));
    return fail(c, n, key, "expected an integer in %ld..%ld, got %s", min, max,
                describe(n, got, sizeof got));
}

static int get_number(parse_ctx *c, const yaml_node_t *n, const char *key, double min,
                      int min_exclusive, double *out)
{
    char got[80];
    const char *s = scalar(n);
    if (s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && *s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (!*end && !errno && isfinite(v) && (min_exclusive ? v > min : v >= min)) {
            *out = v;
            return 0;
        }
    }
    return fail(c, n, key, "expected a number %s %g, got %s", min_exclusive ? ">" : ">=", min,
                describe(n, got, sizeof got));
}

static int get_bool(parse_ctx *c, const yaml_node_t *n, const char *key, int *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    char got[80];
    const char *s = scalar(n);
    if (s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
        for (int i = 0; i < 3; i++) {
            if (!strcasecmp(s, yes[i])) {
                *out = 1;
                return 0;
            }
            if (!strcasecmp(s, no[i])) {
                *out = 0;
                return 0;
            }
        }
    return fail(c, n, key, "expected true or false, got %s", describe(n, got, sizeof got));
}

static int get_string(parse_ctx *c, const yaml_node_t *n, const char *key, int allow_empty, char **out)
{
    char got[80];
    const char *s = scalar(n);
    if (!s || (!allow_empty && !*s) || (is_null(n) && !allow_empty))
        return fail(c, n, key, "expected a %sstring, got %s", allow_empty ? "" : "non-empty ",
                    s && !*s ? "an empty value" : describe(n, got, sizeof got));
    char *dup = strdup(is_null(n) ? "" : s);
    if (!dup)
        return ds_errorf(c->err, "out of memory");
    free(*out);
    *out = dup;
    return 0;
}

/* Picks one of names[]; *out is its index. */
static int get_enum(parse_ctx *c, const yaml_node_t *n, const char *key, const char *const *names,
                    int count, int *out)
{
    char got[80], expected[160] = "";
    const char *s = scalar(n);
    for (int i = 0; s && i < count; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            return 0;
        }
    for (int i = 0; i < count; i++) {
        strncat(expected, i == 0 ? "" : (i == count - 1 ? " or " : ", "), sizeof expected - strlen(expected) - 1);
        strncat(expected, names[i], sizeof expected - strlen(expected) - 1);
    }
    return fail(c, n, key, "expected %s, got %s", expected, describe(n, got, sizeof got));
}

/* A path relative to the config file's folder; "zoo:" specs untouched. */
static int resolve_path(parse_ctx *c, char **path)
{
    if (!*path || !**path || (*path)[0] == '/' || !strncmp(*path, "zoo:", 4) || !c->base_dir ||
        !strcmp(c->base_dir, "."))
        return 0;
    size_t len = strlen(c->base_dir) + strlen(*path) + 2;
    char *full = malloc(len);
    if (!full)
        return ds_errorf(c->err, "out of memory");
    snprintf(full, len, "%s/%s", c->base_dir, *path);
    free(*path);
    *path = full;
    return 0;
}

/* Walks a mapping: for each pair calls fn(ctx, key text, key node, value
 * node, user). Rejects non-mappings, non-scalar and duplicate keys. */
typedef int (*pair_fn)(parse_ctx *c, const char *key, const yaml_node_t *knode,
                       const yaml_node_t *value, void *user);

static int each_pair(parse_ctx *c, const yaml_node_t *map, const char *where, pair_fn fn, void *user)
{
    char got[80];
    if (map->type != YAML_MAPPING_NODE)
        return fail(c, map, where, "expected a mapping, got %s", describe(map, got, sizeof got));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *ks = scalar(k);
        if (!ks)
            return fail(c, k, where, "expected a plain key, got %s", describe(k, got, sizeof got));
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            const char *prev = scalar(yaml_document_get_node(c->doc, q->key));
            if (prev && !strcmp(prev, ks)) {
                char full[128];
                snprintf(full, sizeof full, "%s%s%s", where[0] ? where : "", where[0] ? "." : "", ks);
                return fail(c, k, full, "duplicate key");
            }
        }
        if (fn(c, ks, k, v, user))
            return -1;
    }
    return 0;
}

static int unknown_key(parse_ctx *c, const yaml_node_t *k, const char *where, const char *key,
                       const char *expected)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s%s", where, where[0] ? "." : "", key);
    return fail(c, k, full, "unknown key (expected one of: %s)", expected);
}

/* A list of at most max items; returns the count in *n. */
static int get_list(parse_ctx *c, const yaml_node_t *n, const char *key, int min, int max,
                    const yaml_node_t **items, int *count)
{
    char got[80];
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(c, n, key, "expected a list, got %s", describe(n, got, sizeof got));
    int k = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (k < min || k > max)
        return fail(c, n, key, "expected a list of %d..%d items, got %d", min, max, k);
    for (int i = 0; i < k; i++)
        items[i] = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
    *count = k;
    return 0;
}

/* ---- sections ---------------------------------------------------------- */

typedef struct seen {
    const yaml_node_t *port, *net, *bandwidth, *master, *worker_listen, *trainer_listen;
    const yaml_node_t *ifr_num, *drop, *loop, *master_listen, *subscribe, *trainer_video;
    const yaml_node_t *route_mw[DS_MAX_WORKERS];
    const yaml_node_t *route_bad_worker; /* an m->wI or wI->wJ with I out of range */
    int route_bad_id;
    int n_bandwidth;
} seen;

typedef struct walk {
    ds_config *cfg;
    seen *seen;
} walk;

/* ---- security */

typedef struct tls_walk {
    ds_tls_files *t;
    const char *where; /* "tls", "master.tls", ... */
} tls_walk;

static int tls_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v,
                    void *user)
{
    tls_walk *w = user;
    char full[64];
    snprintf(full, sizeof full, "%s.%s", w->where, key);
    char **slot = !strcmp(key, "ca") ? &w->t->ca : !strcmp(key, "cert") ? &w->t->cert
                : !strcmp(key, "key") ? &w->t->key : NULL;
    if (!slot)
        return unknown_key(c, k, w->where, key, "ca, cert, key");
    return get_string(c, v, full, 0, slot) || resolve_path(c, slot);
}

static int get_tls(parse_ctx *c, const yaml_node_t *v, const char *where, ds_tls_files *t)
{
    tls_walk w = {t, where};
    snprintf(t->where, sizeof t->where, "%s:%zu:%zu", c->label, v->start_mark.line + 1,
             v->start_mark.column + 1);
    if (each_pair(c, v, where, tls_pair, &w))
        return -1;
    if (!t->ca)
        return fail(c, v, where, "missing ca (the CA certificate that signed every role's; "
                    "scripts/make-certs.sh makes one)");
    if (!t->cert != !t->key)
        return fail(c, v, where, "cert and key go together (got only %s)", t->cert ? "cert" : "key");
    return 0;
}

static int auth_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v,
                     void *user)
{
    ds_config *cfg = ((walk *)user)->cfg;
    if (!strcmp(key, "token"))
        return get_string(c, v, "auth.token", 0, &cfg->auth_token);
    return unknown_key(c, k, "auth", key, "token");
}

/* "host" of "host:port" or "[v6]:port" into out. */
void ds_config_route_host(const char *route, char *out, size_t len)
{
    const char *colon = strrchr(route, ':');
    size_t n = colon ? (size_t)(colon - route) : strlen(route);
    if (n >= 2 && route[0] == '[' && route[n - 1] == ']') {
        route++;
        n -= 2;
    }
    snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), route);
}

int ds_config_is_loopback(const char *host)
{
    char h[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* "[::1]" */
        snprintf(h, sizeof h, "%.*s", (int)(n - 2), host + 1);
        host = h;
    }
    /* Addresses by value, so that a name like "127.example.com" is not one. */
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return ntohl(v4.s_addr) >> 24 == 127;
    if (inet_pton(AF_INET6, host, &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&v6);
    return !strcmp(host, "localhost") || !strcmp(host, "ip6-localhost");
}

/* A role's TLS block: its own, else the shared one. */
static const ds_tls_files *role_tls(const ds_config *cfg, const char *role)
{
    const ds_tls_files *own = !strcmp(role, "master")    ? &cfg->master.tls
                              : !strcmp(role, "trainer") ? &cfg->trainer.tls
                                                         : &cfg->worker.tls;
    return own->ca ? own : &cfg->tls;
}

/* Plaintext is for loopback unless the file says insecure: true.  addr is
 * a route ("host:port") when route, else a host to listen on ("::1"). */
static int check_plaintext(parse_ctx *c, const ds_config *cfg, const yaml_node_t *node,
                           const char *key, const char *role, const char *addr, int route)
{
    char host[256];
    if (route)
        ds_config_route_host(addr, host, sizeof host);
    else
        snprintf(host, sizeof host, "%s", addr);
    if (cfg->insecure || role_tls(cfg, role)->ca || ds_config_is_loopback(host))
        return 0;
    return fail(c, node, key, "'%s' is not a loopback address and %s has no TLS: set tls: {ca, "
                "cert, key} (scripts/make-certs.sh writes them) or insecure: true", addr, role);
}

static int port_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    ds_config *cfg = ((walk *)user)->cfg;
    if (!strcmp(key, "master"))
        return get_int(c, v, "port.master", 1, 65535, &cfg->port_master);
    if (!strcmp(key, "trainer"))
        return get_int(c, v, "port.trainer", 1, 65535, &cfg->port_trainer);
    if (!strcmp(key, "worker")) {
        const yaml_node_t *items[DS_MAX_WORKERS];
        if (get_list(c, v, "port.worker", 1, DS_MAX_WORKERS, items, &cfg->n_workers))
            return -1;
        for (int i = 0; i < cfg->n_workers; i++) {
            char name[32];
            snprintf(name, sizeof name, "port.worker[%d]", i);
            if (get_int(c, items[i], name, 1, 65535, &cfg->port_worker[i]))
                return -1;
        }
        return 0;
    }
    return unknown_key(c, k, "port", key, "master, trainer, worker");
}

/* "w3" -> 3; -1 when not of that form. */
static int parse_worker_name(const char *s, size_t len)
{
    if (len < 2 || len > 4 || s[0] != 'w')
        return -1;
    int id = 0;
    for (size_t i = 1; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        id = id * 10 + (s[i] - '0');
    }
    return id;
}

static int net_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    walk *w = user;
    ds_config *cfg = w->cfg;
    char full[96];
    snprintf(full, sizeof full, "net.%s", key);
    const char *arrow = strstr(key, "->");
    if (!arrow)
        return fail(c, k, full, "expected a route like m->t, m->w0 or w0->w1");
    const char *from = key, *to = arrow + 2;
    size_t from_len = (size_t)(arrow - key);
    char **slot = NULL;
    if (from_len == 1 && from[0] == 'm' && !strcmp(to, "t")) {
        slot = &cfg->route_master_trainer;
    } else if (from_len == 1 && from[0] == 'm') {
        int id = parse_worker_name(to, strlen(to));
        if (id < 0)
            return fail(c, k, full, "expected a route like m->t, m->w0 or w0->w1");
        if (id >= DS_MAX_WORKERS || id >= cfg->n_workers) {
            w->seen->route_bad_worker = k;
            w->seen->route_bad_id = id;
            return 0;
        }
        slot = &cfg->route_master_worker[id];
        w->seen->route_mw[id] = k;
    } else {
        int a = parse_worker_name(from, from_len), b = parse_worker_name(to, strlen(to));
        if (a < 0 || b < 0)
            return fail(c, k, full, "expected a route like m->t, m->w0 or w0->w1");
        if (b <= a)
            return fail(c, k, full, "a worker only reaches later workers (w%d->w%d, ...)", a, a + 1);
        if (b >= DS_MAX_WORKERS || b >= cfg->n_workers) {
            w->seen->route_bad_worker = k;
            w->seen->route_bad_id = b;
            return 0;
        }
        slot = &cfg->route_worker[a][b];
    }
    if (get_string(c, v, full, 0, slot))
        return -1;
    const char *colon = strrchr(*slot, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == *slot || !end || *end || port < 1 || port > 65535)
        return fail(c, v, full, "expected \"host:port\", got \"%s\"", *slot);
    char role[8] = "master";
    if (from[0] == 'w')
        snprintf(role, sizeof role, "%.*s", (int)from_len, from);
    return check_plaintext(c, cfg, v, full, role, *slot, 1);
}

/* The schedulers master.scheduler names, by ds_scheduler: only what checking a
 * file needs (the name; whether it needs predictors, hence route m->t). Their
 * plans are sched/planner.c's descriptors. */
static const struct {
    const char *name;
    int needs_predictors;
} schedulers[DS_SCHED_COUNT] = {
    [DS_SCHED_LBC] = {"lbc", 0},
    [DS_SCHED_NSC] = {"nsc", 1},
    [DS_SCHED_OPT] = {"opt", 1},
};

static int master_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    walk *w = user;
    ds_config *cfg = w->cfg;
    if (!strcmp(key, "ifr_num")) {
        w->seen->ifr_num = v;
        return get_int(c, v, "master.ifr_num", 0, 100000000, &cfg->master.ifr_num);
    }
    if (!strcmp(key, "drop")) {
        static const char *const names[] = {"none", "latest"};
        int d = 0;
        w->seen->drop = v;
        if (get_enum(c, v, "master.drop", names, 2, &d))
            return -1;
        cfg->master.drop = (ds_drop)d;
        return 0;
    }
    if (!strcmp(key, "listen")) {
        w->seen->master_listen = v;
        return get_string(c, v, "master.listen", 0, &cfg->master.listen);
    }
    if (!strcmp(key, "pd_num"))
        return get_int(c, v, "master.pd_num", 0, INT_MAX, &cfg->master.pd_num);
    if (!strcmp(key, "itv_time"))
        return get_number(c, v, "master.itv_time", 0, 0, &cfg->master.itv_time);
    if (!strcmp(key, "threads"))
        return get_int(c, v, "master.threads", 1, 256, &cfg->master.threads);
    if (!strcmp(key, "connect_timeout"))
        return get_number(c, v, "master.connect_timeout", 0, 0, &cfg->master.connect_timeout);
    if (!strcmp(key, "takeover"))
        return get_bool(c, v, "master.takeover", &cfg->master.takeover);
    if (!strcmp(key, "tls"))
        return get_tls(c, v, "master.tls", &cfg->master.tls);
    if (!strcmp(key, "no_workers")) {
        static const char *const names[] = {"local", "wait"};
        return get_enum(c, v, "master.no_workers", names, 2, &cfg->master.no_workers_wait);
    }
    if (!strcmp(key, "scheduler")) {
        const char *names[DS_SCHED_COUNT];
        for (int i = 0; i < DS_SCHED_COUNT; i++)
            names[i] = schedulers[i].name;
        int s = 0;
        if (get_enum(c, v, "master.scheduler", names, DS_SCHED_COUNT, &s))
            return -1;
        cfg->master.scheduler = (ds_scheduler)s;
        return 0;
    }
    if (!strcmp(key, "bandwidth")) {
        const yaml_node_t *items[DS_MAX_WORKERS];
        if (get_list(c, v, "master.bandwidth", 1, DS_MAX_WORKERS, items, &w->seen->n_bandwidth))
            return -1;
        for (int i = 0; i < w->seen->n_bandwidth; i++) {
            char name[40];
            snprintf(name, sizeof name, "master.bandwidth[%d]", i);
            if (get_number(c, items[i], name, 0, 1, &cfg->master.bandwidth[i]))
                return -1;
        }
        w->seen->bandwidth = v;
        return 0;
    }
    return unknown_key(c, k, "master", key,
                       "ifr_num, pd_num, itv_time, scheduler, bandwidth, threads, connect_timeout, "
                       "no_workers, takeover, drop, listen, tls");
}

static int worker_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    walk *w = user;
    ds_config *cfg = w->cfg;
    if (!strcmp(key, "prof_niter"))
        return get_int(c, v, "worker.prof_niter", 1, 10000, &cfg->worker.prof_niter);
    if (!strcmp(key, "threads"))
        return get_int(c, v, "worker.threads", 1, 256, &cfg->worker.threads);
    if (!strcmp(key, "tls"))
        return get_tls(c, v, "worker.tls", &cfg->worker.tls);
    if (!strcmp(key, "listen")) {
        w->seen->worker_listen = v; /* read once port.worker is known */
        return 0;
    }
    return unknown_key(c, k, "worker", key, "prof_niter, threads, listen, tls");
}

static int trainer_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    walk *w = user;
    ds_config *cfg = w->cfg;
    if (!strcmp(key, "frame_num"))
        return get_int(c, v, "trainer.frame_num", 2, 1000000, &cfg->trainer.frame_num);
    if (!strcmp(key, "video_path")) {
        w->seen->trainer_video = v;
        return get_string(c, v, "trainer.video_path", 0, &cfg->trainer.video_path) ||
               resolve_path(c, &cfg->trainer.video_path);
    }
    if (!strcmp(key, "threads"))
        return get_int(c, v, "trainer.threads", 1, 256, &cfg->trainer.threads);
    if (!strcmp(key, "tls"))
        return get_tls(c, v, "trainer.tls", &cfg->trainer.tls);
    if (!strcmp(key, "listen")) {
        w->seen->trainer_listen = v;
        return get_string(c, v, "trainer.listen", 0, &cfg->listen_trainer);
    }
    return unknown_key(c, k, "trainer", key, "frame_num, threads, video_path, listen, tls");
}

static int codec_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    ds_config *cfg = ((walk *)user)->cfg;
    if (!strcmp(key, "compress")) {
        static const char *const names[] = {"auto", "none", "lz4", "zstd"};
        int s = 0;
        if (get_enum(c, v, "codec.compress", names, 4, &s))
            return -1;
        cfg->codec.compress = (ds_compress_choice)s;
        return 0;
    }
    if (!strcmp(key, "zstd_level"))
        return get_int(c, v, "codec.zstd_level", 1, 19, &cfg->codec.zstd_level);
    return unknown_key(c, k, "codec", key, "compress, zstd_level");
}

/* [rows, cols] of key into *rows, *cols. */
static int get_size(parse_ctx *c, const yaml_node_t *v, const char *key, int *rows, int *cols)
{
    const yaml_node_t *items[2];
    char name[48];
    int n = 0;
    if (get_list(c, v, key, 2, 2, items, &n))
        return -1;
    snprintf(name, sizeof name, "%s[0]", key);
    if (get_int(c, items[0], name, 16, 16384, rows))
        return -1;
    snprintf(name, sizeof name, "%s[1]", key);
    return get_int(c, items[1], name, 16, 16384, cols);
}

static int video_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    walk *w = user;
    ds_config *cfg = w->cfg;
    if (!strcmp(key, "loop")) {
        w->seen->loop = v;
        return get_bool(c, v, "video.loop", &cfg->video.loop);
    }
    if (!strcmp(key, "format"))
        return get_string(c, v, "video.format", 0, &cfg->video.format);
    if (!strcmp(key, "fps"))
        return get_number(c, v, "video.fps", 0, 1, &cfg->video.fps);
    if (!strcmp(key, "input_size"))
        return get_size(c, v, "video.input_size", &cfg->video.input_rows, &cfg->video.input_cols);
    if (!strcmp(key, "timeout"))
        return get_number(c, v, "video.timeout", 0, 1, &cfg->video.timeout);
    return unknown_key(c, k, "video", key, "loop, format, fps, input_size, timeout");
}

static int output_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    walk *w = user;
    ds_config *cfg = w->cfg;
    if (!strcmp(key, "jsonl"))
        return get_string(c, v, "output.jsonl", 0, &cfg->output.jsonl) ||
               (strcmp(cfg->output.jsonl, "-") && resolve_path(c, &cfg->output.jsonl));
    if (!strcmp(key, "tensors"))
        return get_string(c, v, "output.tensors", 0, &cfg->output.tensors) ||
               resolve_path(c, &cfg->output.tensors);
    if (!strcmp(key, "labels"))
        return get_string(c, v, "output.labels", 0, &cfg->output.labels) ||
               resolve_path(c, &cfg->output.labels);
    if (!strcmp(key, "top_k"))
        return get_int(c, v, "output.top_k", 1, 1000, &cfg->output.top_k);
    if (!strcmp(key, "subscribe")) {
        w->seen->subscribe = v;
        return get_bool(c, v, "output.subscribe", &cfg->output.subscribe);
    }
    return unknown_key(c, k, "output", key, "jsonl, tensors, labels, top_k, subscribe");
}

static const char top_keys[] =
    "port, net, dnn, video_path, video, frame_size, mode, check, master, worker, trainer, output, "
    "status_interval, log_level, trace_dir, cache_dir, codec, max_message_mb, tls, auth, insecure";

static int top_pair(parse_ctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v, void *user)
{
    walk *w = user;
    ds_config *cfg = w->cfg;
    if (!strcmp(key, "port")) {
        w->seen->port = v;
        return each_pair(c, v, "port", port_pair, user);
    }
    if (!strcmp(key, "net")) {
        w->seen->net = v; /* routes are checked once port.worker is known */
        return 0;
    }
    if (!strcmp(key, "master")) {
        w->seen->master = v;
        return each_pair(c, v, "master", master_pair, user);
    }
    if (!strcmp(key, "worker"))
        return each_pair(c, v, "worker", worker_pair, user);
    if (!strcmp(key, "trainer"))
        return each_pair(c, v, "trainer", trainer_pair, user);
    if (!strcmp(key, "codec"))
        return each_pair(c, v, "codec", codec_pair, user);
    if (!strcmp(key, "tls"))
        return get_tls(c, v, "tls", &cfg->tls);
    if (!strcmp(key, "auth"))
        return each_pair(c, v, "auth", auth_pair, user);
    if (!strcmp(key, "insecure"))
        return get_bool(c, v, "insecure", &cfg->insecure);
    if (!strcmp(key, "dnn"))
        return get_string(c, v, "dnn", 0, &cfg->dnn) || resolve_path(c, &cfg->dnn);
    if (!strcmp(key, "video_path")) {
        if (get_string(c, v, "video_path", 0, &cfg->video_path))
            return -1;
        cfg->video.kind = ds_source_kind_of(cfg->video_path);
        return cfg->video.kind == DS_SOURCE_FILE ? resolve_path(c, &cfg->video_path) : 0;
    }
    if (!strcmp(key, "video"))
        return each_pair(c, v, "video", video_pair, user);
    if (!strcmp(key, "output"))
        return each_pair(c, v, "output", output_pair, user);
    if (!strcmp(key, "status_interval"))
        return get_number(c, v, "status_interval", 0, 0, &cfg->status_interval);
    if (!strcmp(key, "trace_dir"))
        return get_string(c, v, "trace_dir", 1, &cfg->trace_dir) || resolve_path(c, &cfg->trace_dir);
    if (!strcmp(key, "cache_dir"))
        return get_string(c, v, "cache_dir", 0, &cfg->cache_dir) || resolve_path(c, &cfg->cache_dir);
    if (!strcmp(key, "check"))
        return get_bool(c, v, "check", &cfg->check);
    if (!strcmp(key, "mode")) {
        static const char *const names[] = {"itg", "dif"};
        int m = 0;
        if (get_enum(c, v, "mode", names, 2, &m))
            return -1;
        cfg->mode = (ds_mode)m;
        return 0;
    }
    if (!strcmp(key, "log_level")) {
        int l = 0;
        if (get_enum(c, v, "log_level", ds_log_level_names, DS_LOG_LEVELS, &l))
            return -1;
        cfg->log_level = (ds_log_level)l;
        return 0;
    }
    if (!strcmp(key, "max_message_mb")) {
        int mb = 0;
        if (get_int(c, v, "max_message_mb", 1, 2047, &mb))
            return -1;
        cfg->max_message_bytes = (size_t)mb << 20;
        return 0;
    }
    if (!strcmp(key, "frame_size")) {
        if (is_null(v)) {
            cfg->frame_rows = cfg->frame_cols = 0;
            return 0;
        }
        return get_size(c, v, "frame_size", &cfg->frame_rows, &cfg->frame_cols);
    }
    return unknown_key(c, k, "", key, top_keys);
}

/* Cross-key checks, once every section is read. */
static int check_routes(parse_ctx *c, const yaml_node_t *root, ds_config *cfg, seen *s)
{
    if (!s->port)
        return fail(c, root, "port", "missing (expected port: {master: ..., worker: [...]})");
    if (!cfg->n_workers)
        return fail(c, s->port, "port.worker", "missing (expected a list of worker ports)");
    if (!s->net)
        return fail(c, root, "net", "missing (expected routes m->w0, ..., w0->w1, ...)");
    walk w = {cfg, s};
    if (each_pair(c, s->net, "net", net_pair, &w))
        return -1;
    if (s->route_bad_worker)
        return fail(c, s->route_bad_worker, "net", "worker w%d is not configured: worker ids are 0..%d "
                    "(port.worker has %d entries)", s->route_bad_id, cfg->n_workers - 1, cfg->n_workers);
    for (int i = 0; i < cfg->n_workers; i++) {
        if (!cfg->route_master_worker[i])
            return fail(c, s->net, "net", "missing route m->w%d for worker %d", i, i);
        if (i + 1 < cfg->n_workers && !cfg->route_worker[i][i + 1])
            return fail(c, s->net, "net", "missing route w%d->w%d", i, i + 1);
    }
    if (ds_config_needs_trainer(cfg) && !cfg->route_master_trainer)
        return fail(c, s->net, "net", "missing route m->t (scheduler %s needs the trainer)",
                    ds_scheduler_name(cfg->master.scheduler));
    if (s->bandwidth && s->n_bandwidth != cfg->n_workers)
        return fail(c, s->bandwidth, "master.bandwidth",
                    "expected %d entries (one per link m->w0, w0->w1, ...), got %d", cfg->n_workers,
                    s->n_bandwidth);
    return 0;
}

/* A TLS block without a certificate serves nobody: servers (workers, the
 * trainer) always present one, and under mutual TLS (no token) so does the
 * master. */
static int check_tls_roles(const ds_config *cfg, ds_error *err)
{
    for (int i = -2; i < cfg->n_workers; i++) {
        char role[16];
        snprintf(role, sizeof role, "w%d", i);
        const char *name = i == -2 ? "master" : i == -1 ? "trainer" : role;
        const ds_tls_files *t = role_tls(cfg, name);
        if (!t->ca || t->cert || (i == -2 && cfg->auth_token) || (i == -1 && !cfg->route_master_trainer))
            continue;
        return ds_errorf(err, "%s: tls: %s has no cert and key: %s", t->where, name,
                         i == -2 ? "mutual TLS needs the master's certificate too (or set auth.token "
                                   "for token mode, where the master needs only ca)"
                                 : "a server presents its certificate in every TLS mode");
    }
    return 0;
}

/* The host the routes to a server imply it should bind (see config.h).
 * Returns the index of the route that made it every interface, -1 when
 * all are loopback, -2 when out of memory. */
static int implied_listen(char *const *routes, int n, char **out, ds_error *err)
{
    char first[256] = "", host[256];
    const char *pick = NULL;
    int any = -1;
    for (int i = 0; i < n; i++) {
        if (!routes[i])
            continue;
        ds_config_route_host(routes[i], host, sizeof host);
        if (!ds_config_is_loopback(host)) {
            pick = "0.0.0.0";
            any = i;
            break;
        }
        if (!first[0])
            snprintf(first, sizeof first, "%s", host);
        else if (strcmp(first, host))
            pick = "localhost";
    }
    if (!pick)
        pick = first[0] ? first : "localhost";
    *out = strdup(pick);
    if (!*out)
        ds_errorf(err, "out of memory");
    return *out ? any : -2;
}

/* worker.listen / trainer.listen, or their defaults; plaintext servers only
 * on loopback (unless insecure). */
static int check_listen(parse_ctx *c, const yaml_node_t *root, ds_config *cfg, seen *s)
{
    const yaml_node_t *items[DS_MAX_WORKERS];
    int n = 0;
    if (s->worker_listen && s->worker_listen->type == YAML_SEQUENCE_NODE) {
        if (get_list(c, s->worker_listen, "worker.listen", cfg->n_workers, cfg->n_workers, items,
                     &n))
            return -1;
    } else if (s->worker_listen) {
        for (n = 0; n < cfg->n_workers; n++)
            items[n] = s->worker_listen;
    }
    for (int i = 0; i < cfg->n_workers; i++) {
        char role[16], key[32];
        snprintf(role, sizeof role, "w%d", i);
        if (n) {
            if (items[i] == s->worker_listen)
                snprintf(key, sizeof key, "worker.listen");
            else
                snprintf(key, sizeof key, "worker.listen[%d]", i);
            if (get_string(c, items[i], key, 0, &cfg->listen_worker[i]) ||
                check_plaintext(c, cfg, items[i], key, role, cfg->listen_worker[i], 0))
                return -1;
            continue;
        }
        char *to[DS_MAX_WORKERS + 1];
        to[0] = cfg->route_master_worker[i];
        for (int j = 0; j < i; j++)
            to[j + 1] = cfg->route_worker[j][i];
        int bad = implied_listen(to, i + 1, &cfg->listen_worker[i], c->err);
        if (bad == -2)
            return -1;
        if (bad >= 0) {
            const yaml_node_t *at = bad == 0 && s->route_mw[i] ? s->route_mw[i] : s->net;
            if (bad == 0)
                snprintf(key, sizeof key, "net.m->w%d", i);
            else
                snprintf(key, sizeof key, "net.w%d->w%d", bad - 1, i);
            if (check_plaintext(c, cfg, at, key, role, to[bad], 1))
                return -1;
        }
    }
    if (cfg->listen_trainer)
        return check_plaintext(c, cfg, s->trainer_listen, "trainer.listen", "trainer",
                               cfg->listen_trainer, 0);
    int bad = implied_listen(&cfg->route_master_trainer, 1, &cfg->listen_trainer, c->err);
    if (bad == -2)
        return -1;
    return bad == 0 ? check_plaintext(c, cfg, s->net ? s->net : root, "net.m->t", "trainer",
                                      cfg->route_master_trainer, 1)
                    : 0;
}

void ds_config_listen_addr(const char *host, int port, char *out, size_t len)
{
    /* An IPv6 literal needs brackets before the port. */
    int v6 = strchr(host, ':') && host[0] != '[';
    snprintf(out, len, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

int ds_config_role_tls(const ds_config *cfg, const char *role, ds_role_tls *out, ds_error *err)
{
    memset(out, 0, sizeof *out);
    const ds_tls_files *t = role_tls(cfg, role);
    snprintf(out->what, sizeof out->what, "%s: %s (%s)", t->where[0] ? t->where : cfg->path,
             t == &cfg->tls ? "tls" : t == &cfg->master.tls ? "master.tls"
             : t == &cfg->trainer.tls ? "trainer.tls" : "worker.tls", role);
    const char *src[3] = {t->ca, t->cert, t->key};
    char *dst[3] = {out->ca, out->cert, out->key};
    for (int i = 0; i < 3; i++) {
        if (!src[i])
            continue;
        const char *at = strstr(src[i], "{role}");
        int n = at ? snprintf(dst[i], sizeof out->ca, "%.*s%s%s", (int)(at - src[i]), src[i], role,
                              at + 6)
                   : snprintf(dst[i], sizeof out->ca, "%s", src[i]);
        if (n < 0 || (size_t)n >= sizeof out->ca)
            return ds_errorf(err, "%s: path too long", out->what);
    }
    return 0;
}

static int set_default_string(char **slot, const char *value, ds_error *err)
{
    if (*slot)
        return 0;
    *slot = strdup(value);
    return *slot ? 0 : ds_errorf(err, "out of memory");
}

/* What depends on the kind of source: live sources run without end and
 * drop to the latest frame unless told otherwise, and cannot loop; the
 * subscription server follows the listen rules of the other servers. */
static int check_source(parse_ctx *c, const yaml_node_t *root, ds_config *cfg, seen *s)
{
    int live = cfg->video.kind != DS_SOURCE_FILE;
    if (live && s->loop && cfg->video.loop)
        return fail(c, s->loop, "video.loop", "only a file can loop; %s is a %s", cfg->video_path,
                    ds_source_kind_name(cfg->video.kind));
    if (live) {
        cfg->video.loop = 0;
        if (!s->ifr_num)
            cfg->master.ifr_num = 0;
        if (!s->drop)
            cfg->master.drop = DS_DROP_LATEST;
    }
    if (!cfg->video.loop && !s->ifr_num)
        cfg->master.ifr_num = 0; /* the file, once */
    if (!cfg->trainer.video_path && !live &&
        set_default_string(&cfg->trainer.video_path, cfg->video_path, c->err))
        return -1;
    if (!cfg->trainer.video_path && ds_config_needs_trainer(cfg))
        return fail(c, s->master ? s->master : root, "master.scheduler", "%s learns from a recorded "
                    "clip, and %s is a %s: set trainer.video_path to a file recorded from it",
                    ds_scheduler_name(cfg->master.scheduler), cfg->video_path,
                    ds_source_kind_name(cfg->video.kind));
    if (cfg->master.listen && check_plaintext(c, cfg, s->master_listen, "master.listen", "master",
                                              cfg->master.listen, 0))
        return -1;
    return set_default_string(&cfg->master.listen, "localhost", c->err);
}

static void set_defaults(ds_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->port_master = 11110;
    cfg->port_trainer = 22220;
    cfg->mode = DS_MODE_DIF;
    cfg->master.ifr_num = 50;
    cfg->video.loop = 1;
    cfg->video.timeout = 10;
    cfg->output.top_k = 5;
    cfg->status_interval = 10;
    cfg->master.pd_num = 2;
    cfg->master.scheduler = DS_SCHED_LBC;
    cfg->master.threads = 1;
    cfg->master.connect_timeout = 30;
    cfg->worker.prof_niter = 5;
    cfg->worker.threads = 1;
    cfg->trainer.frame_num = 400;
    cfg->trainer.threads = 2;
    cfg->log_level = DS_LOG_INFO;
    cfg->codec.compress = DS_COMPRESS_AUTO;
    cfg->codec.zstd_level = 1;
    cfg->max_message_bytes = (size_t)1024 << 20;
}


int ds_config_parse(const char *text, size_t len, const char *label, const char *base_dir,
                    ds_config *cfg, ds_error *err)
{
    set_defaults(cfg);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return ds_errorf(err, "%s: cannot initialise the YAML parser", label);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        const yaml_mark_t *m = parser.problem ? &parser.problem_mark : &parser.context_mark;
        ds_errorf(err, "%s:%zu:%zu: YAML syntax error: %s%s%s", label, m->line + 1, m->column + 1,
                  parser.problem ? parser.problem : "unknown problem",
                  parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);

    parse_ctx c = {&doc, label, base_dir, err};
    seen s = {0};
    walk w = {cfg, &s};
    int rc = -1;
    char got[80];
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    cfg->path = strdup(label);
    if (!cfg->path) {
        ds_errorf(err, "out of memory");
        goto out;
    }
    if (!root) {
        ds_errorf(err, "%s:1:1: the configuration is empty", label);
        goto out;
    }
    if (root->type != YAML_MAPPING_NODE) {
        fail(&c, root, "(top level)", "expected a mapping of keys, got %s", describe(root, got, sizeof got));
        goto out;
    }
    if (each_pair(&c, root, "", top_pair, &w) || check_routes(&c, root, cfg, &s) ||
        check_listen(&c, root, cfg, &s))
        goto out;
    const char *token = getenv("DELTASLICE_TOKEN");
    if (token && *token && (free(cfg->auth_token), !(cfg->auth_token = strdup(token)))) {
        ds_errorf(err, "out of memory");
        goto out;
    }
    if (check_tls_roles(cfg, err))
        goto out;
    if (set_default_string(&cfg->dnn, "zoo:alexnet", err) ||
        (!cfg->cache_dir && (set_default_string(&cfg->cache_dir, ".cache", err) ||
                             resolve_path(&c, &cfg->cache_dir))) ||
        set_default_string(&cfg->trace_dir, "", err))
        goto out;
    if (!cfg->video_path) {
        fail(&c, root, "video_path", "missing (expected the path of a video file)");
        goto out;
    }
    cfg->master.bandwidth_given = s.bandwidth != NULL;
    if (!s.bandwidth)
        for (int i = 0; i < cfg->n_workers; i++)
            cfg->master.bandwidth[i] = 1e6; /* unshaped */
    if (check_source(&c, root, cfg, &s))
        goto out;
    rc = 0;
out:
    yaml_document_delete(&doc);
    if (rc)
        ds_config_free(cfg);
    return rc;
}

/* A configuration file is a few kB; anything this large is something else. */
#define MAX_CONFIG_BYTES ((uint64_t)16 << 20)

int ds_config_load(const char *path, ds_config *cfg, ds_error *err)
{
    FILE *probe;
    if (!path && (probe = fopen("config.yml", "rb")) != NULL) {
        fclose(probe);
        path = "config.yml";
    }
    if (!path)
        return ds_config_parse(ds_embedded_config, ds_embedded_config_len, "<embedded config.yml>",
                               DS_SOURCE_DIR, cfg, err);
    ds_buf text = {0};
    if (ds_read_file(path, MAX_CONFIG_BYTES, &text, err))
        return -1;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int rc = ds_config_parse((const char *)text.data, text.len, path, dir, cfg, err);
    ds_buf_free(&text);
    return rc;
}

ds_source_kind ds_source_kind_of(const char *path)
{
    static const char *const streams[] = {"rtsp://", "rtsps://", "rtmp://", "http://",
                                          "https://", "udp://", "tcp://", "srt://"};
    if (!strncmp(path, "/dev/", 5))
        return DS_SOURCE_CAMERA;
    if (!strncmp(path, "lavfi:", 6))
        return DS_SOURCE_VIRTUAL;
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++)
        if (!strncasecmp(path, streams[i], strlen(streams[i])))
            return DS_SOURCE_STREAM;
    return DS_SOURCE_FILE;
}

const char *ds_source_kind_name(ds_source_kind k)
{
    static const char *const names[] = {"file", "camera", "virtual device", "stream"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

int ds_config_wants_outputs(const ds_config *cfg)
{
    return cfg->check || cfg->output.jsonl || cfg->output.tensors || cfg->output.subscribe;
}

int ds_config_needs_trainer(const ds_config *cfg)
{
    return ds_scheduler_needs_predictors(cfg->master.scheduler);
}

static void tls_free(ds_tls_files *t)
{
    free(t->ca);
    free(t->cert);
    free(t->key);
}

void ds_config_free(ds_config *cfg)
{
    free(cfg->path);
    for (int i = 0; i < DS_MAX_WORKERS; i++)
        free(cfg->listen_worker[i]);
    free(cfg->listen_trainer);
    tls_free(&cfg->tls);
    tls_free(&cfg->master.tls);
    tls_free(&cfg->worker.tls);
    tls_free(&cfg->trainer.tls);
    if (cfg->auth_token)
        memset(cfg->auth_token, 0, strlen(cfg->auth_token));
    free(cfg->auth_token);
    free(cfg->route_master_trainer);
    for (int i = 0; i < DS_MAX_WORKERS; i++) {
        free(cfg->route_master_worker[i]);
        for (int j = i + 1; j < DS_MAX_WORKERS; j++)
            free(cfg->route_worker[i][j]);
    }
    free(cfg->dnn);
    free(cfg->video_path);
    free(cfg->video.format);
    free(cfg->trainer.video_path);
    free(cfg->master.listen);
    free(cfg->output.jsonl);
    free(cfg->output.tensors);
    free(cfg->output.labels);
    free(cfg->trace_dir);
    free(cfg->cache_dir);
    memset(cfg, 0, sizeof *cfg);
}

const char *ds_mode_name(ds_mode m)
{
    return m == DS_MODE_DIF ? "dif" : "itg";
}

const char *ds_scheduler_name(ds_scheduler s)
{
    return (unsigned)s < DS_SCHED_COUNT ? schedulers[s].name : "?";
}

int ds_scheduler_needs_predictors(ds_scheduler s)
{
    return (unsigned)s < DS_SCHED_COUNT && schedulers[s].needs_predictors;
}
