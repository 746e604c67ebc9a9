#include "costs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cpulimit.h"
#include "common/log.h"
#include "engine/profile.h"

/* Identity of the running binary (size and mtime): a rebuilt engine
 * profiles anew instead of trusting an older build's figures. */
static unsigned long long binary_id(void)
{
    struct stat st;
    if (stat("/proc/self/exe", &st))
        return 0;
    return ((unsigned long long)st.st_size * 1000003ull) ^ (unsigned long long)st.st_mtime;
}

/* Keyed by what the profile measures: model, size, threads, host, the CPUs
 * this process may use (affinity and cgroup quota: two workers on one host
 * with different limits must not share a profile) and the build. */
static void cache_path(const ds_model *m, const ds_config *cfg, const char *host, const ds_cpu_limit *cpu,
                       char *buf, size_t len)
{
    const ds_shape *in = &m->layers[0].out_shape;
    char key[160];
    snprintf(buf, len, "%s/costs-%s-%lldx%lld-t%d-%s-%s-%llx.txt", cfg->cache_dir, m->hash,
             (long long)in->dims[2], (long long)in->dims[3], cfg->worker.threads, host,
             ds_cpu_limit_key(cpu, key, sizeof key), binary_id());
}

static int load(const char *path, ds_layer_costs *c)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = 1;
    for (int i = 0; i < c->n_layers && ok; i++)
        ok = fscanf(f, "%lf %lf", &c->seconds[i], &c->flops[i]) == 2 && c->seconds[i] >= 0 &&
             c->flops[i] >= 0;
    double extra;
    if (ok && fscanf(f, "%lf", &extra) == 1)
        ok = 0; /* a different model: more layers than ours */
    fclose(f);
    return ok ? 0 : -1;
}

static void save(const char *dir, const char *path, const ds_layer_costs *c)
{
    if (mkdir(dir, 0755) && errno != EEXIST) {
        ds_log_warn("cannot create cache folder %s: %s", dir, strerror(errno));
        return;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        ds_log_warn("cannot write %s: %s", tmp, strerror(errno));
        return;
    }
    for (int i = 0; i < c->n_layers; i++)
        fprintf(f, "%.9g %.9g\n", c->seconds[i], c->flops[i]);
    /* Write-then-rename: two workers on one host never see half a file. */
    if (fclose(f) || rename(tmp, path))
        ds_log_warn("cannot write %s: %s", path, strerror(errno));
}

int ds_layer_costs_load_or_profile(const ds_model *m, const ds_config *cfg, ds_layer_costs *c,
                                   ds_error *err)
{
    ds_layer_costs_free(c);
    c->n_layers = m->n_layers;
    c->seconds = calloc((size_t)m->n_layers, sizeof *c->seconds);
    c->flops = calloc((size_t)m->n_layers, sizeof *c->flops);
    if (!c->seconds || !c->flops)
        return ds_errorf(err, "out of memory");
    if (gethostname(c->host, sizeof c->host - 1))
        snprintf(c->host, sizeof c->host, "unknown");
    ds_cpu_limit cpu;
    ds_cpu_limit_self(&cpu);
    char path[4096], key[160];
    cache_path(m, cfg, c->host, &cpu, path, sizeof path);
    if (!cpu.quota_known)
        ds_log_info("CPU quota unknown (no cgroup file system mounted here): the profile is keyed by affinity only");
    if (load(path, c) == 0) {
        ds_log_info("layer costs from %s", path);
        return 0;
    }
    ds_profile p = {0};
    if (ds_profile_model(m, DS_BACKEND_XNNPACK, cfg->worker.threads, cfg->worker.prof_niter,
                         isatty(STDERR_FILENO), &p, err))
        return -1;
    memcpy(c->seconds, p.seconds, sizeof *c->seconds * (size_t)m->n_layers);
    memcpy(c->flops, p.flops, sizeof *c->flops * (size_t)m->n_layers);
    ds_log_info("profiled %d layers: %.1f ms per frame (median of %d runs, %d thread%s; %s, %.2f CPUs)", m->n_layers,
            p.total * 1e3, p.runs, p.threads, p.threads == 1 ? "" : "s", ds_cpu_limit_key(&cpu, key, sizeof key),
            ds_cpu_limit_cpus(&cpu));
    ds_profile_free(&p);
    save(cfg->cache_dir, path, c);
    return 0;
}

void ds_layer_costs_free(ds_layer_costs *c)
{
    free(c->seconds);
    free(c->flops);
    memset(c, 0, sizeof *c);
}
