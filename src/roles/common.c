/* common.c - what every role shares: credentials, link codec choice, signals. */
#include <errno.h>
#include <signal.h>
#include <time.h>

#include "dif/dif.h"
#include "roles.h"

ds_rpc_security *ds_role_security(const ds_config *cfg, const char *role, ds_error *err)
{
    ds_role_tls t;
    if (ds_config_role_tls(cfg, role, &t, err))
        return NULL;
    ds_rpc_security_opts o = {t.ca[0] ? t.ca : NULL, t.cert[0] ? t.cert : NULL,
                              t.key[0] ? t.key : NULL, cfg->auth_token, t.what};
    return ds_rpc_security_new(&o, err);
}

double ds_link_deadline_mbps(const ds_config *cfg, int i)
{
    return cfg->master.bandwidth_given ? cfg->master.bandwidth[i] : 1.0;
}

ds_codec_opts ds_link_codec(const ds_config *cfg, double mbps)
{
    ds_codec_opts o = {DS_COMPRESS_NONE, cfg->codec.zstd_level,
                       ds_dif_link_update(cfg->mode == DS_MODE_DIF)};
    switch (cfg->codec.compress) {
    case DS_COMPRESS_AUTO:
        /* lz4 (~1.2 GB/s) costs less than it saves on any link below a few
         * hundred MB/s; zstd-1 (~0.7 GB/s, ~40% smaller) wins below 10 MB/s. */
        o.compress = mbps < 10 ? DS_COMPRESS_ZSTD : DS_COMPRESS_LZ4;
        break;
    case DS_COMPRESS_OFF:
        break;
    case DS_COMPRESS_CHOICE_LZ4:
        o.compress = DS_COMPRESS_LZ4;
        break;
    case DS_COMPRESS_CHOICE_ZSTD:
        o.compress = DS_COMPRESS_ZSTD;
        break;
    }
    return o;
}

ds_compress ds_slowest_link_compress(const ds_config *cfg)
{
    double slowest = cfg->master.bandwidth[0];
    for (int i = 1; i < cfg->n_workers; i++)
        if (cfg->master.bandwidth[i] < slowest)
            slowest = cfg->master.bandwidth[i];
    return ds_link_codec(cfg, slowest).compress;
}

static sigset_t stop_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

void ds_signals_block(void)
{
    sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int ds_signals_wait(double timeout_s)
{
    sigset_t set = stop_signals();
    if (timeout_s < 0) {
        int sig;
        return sigwait(&set, &sig) == 0;
    }
    struct timespec ts = {(time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e9)};
    return sigtimedwait(&set, NULL, &ts) > 0;
}
