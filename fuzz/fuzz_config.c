/* libFuzzer target: arbitrary bytes as a configuration file.
 *
 * Properties of an accepted file: every role's TLS paths resolve ({role}
 * replaced) or fail with a message, every server has a listen host, and the
 * plaintext rule holds: unless insecure, a role without TLS listens and dials
 * only on loopback (config.h).  The last one pins that every route and listen
 * address, given or implied, went through the check. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "common/config.h"

/* Loopback by its own reading, not config.c's: "localhost",
 * "ip6-localhost", or an address literal in 127.0.0.0/8 or ::1 (brackets
 * allowed).  A name that merely starts with "127." is not loopback. */
static int loopback_host(const char *host, size_t n)
{
    char h[256];
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
    }
    if (n >= sizeof h)
        return 0;
    memcpy(h, host, n);
    h[n] = '\0';
    unsigned char a[16];
    static const unsigned char one[16] = {[15] = 1};
    if (!strcmp(h, "localhost") || !strcmp(h, "ip6-localhost"))
        return 1;
    if (inet_pton(AF_INET, h, a) == 1)
        return a[0] == 127;
    return inet_pton(AF_INET6, h, a) == 1 && !memcmp(a, one, 16);
}

/* A route "host:port": its host. */
static int loopback_route(const char *route)
{
    const char *colon = strrchr(route, ':');
    return colon && loopback_host(route, (size_t)(colon - route));
}

/* A listen value: a host (an IPv6 literal has colons of its own). */
static int loopback(const char *host)
{
    return loopback_host(host, strlen(host));
}

/* 1: the role runs with TLS, 0: plaintext, -1: its paths do not resolve
 * (the role refuses to start, with the message). */
static int role_has_tls(const ds_config *cfg, const char *role)
{
    static ds_role_tls t; /* 12 kB: not on libFuzzer's stack */
    ds_error err;
    err.msg[0] = '\0';
    if (ds_config_role_tls(cfg, role, &t, &err)) {
        if (!err.msg[0])
            abort();
        return -1;
    }
    return t.ca[0] != '\0';
}

static void check_accepted(const ds_config *cfg)
{
    char addr[600];
    int master = role_has_tls(cfg, "master"), trainer = role_has_tls(cfg, "trainer");
    if (!cfg->listen_trainer)
        abort();
    ds_config_listen_addr(cfg->listen_trainer, cfg->port_trainer, addr, sizeof addr);
    if (!cfg->insecure && trainer == 0 && !loopback(cfg->listen_trainer))
        abort();
    if (!cfg->insecure && master == 0 && cfg->route_master_trainer &&
        !loopback_route(cfg->route_master_trainer))
        abort();
    for (int i = 0; i < cfg->n_workers; i++) {
        char role[16];
        snprintf(role, sizeof role, "w%d", i);
        int w = role_has_tls(cfg, role);
        if (!cfg->listen_worker[i])
            abort();
        ds_config_listen_addr(cfg->listen_worker[i], cfg->port_worker[i], addr, sizeof addr);
        if (cfg->insecure)
            continue;
        if (w == 0 && !loopback(cfg->listen_worker[i]))
            abort();
        if (master == 0 && cfg->route_master_worker[i] &&
            !loopback_route(cfg->route_master_worker[i]))
            abort();
        for (int j = i + 1; j < cfg->n_workers; j++)
            if (w == 0 && cfg->route_worker[i][j] && !loopback_route(cfg->route_worker[i][j]))
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ds_config cfg;
    ds_error err;
    err.msg[0] = '\0';
    if (ds_config_parse((const char *)data, size, "fuzz.yml", "/base", &cfg, &err) == 0) {
        check_accepted(&cfg);
        ds_config_free(&cfg);
    } else if (!err.msg[0]) {
        abort();
    }
    return 0;
}
