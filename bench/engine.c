/* bench/engine.c - latency of each zoo trunk on one frame at 1 and 2 threads.
 *
 *   build/bench/engine [--models alexnet,googlenet,resnet50,vgg16] [--runs 5]
 *                      [--size 480x720] [--backend xnnpack|reference]
 *
 * Each model runs in a forked child (so its peak RSS, ru_maxrss, is its own):
 * load, set the input size, one warm-up run, then the median of --runs runs
 * per thread count.  Prints GFLOP/s, peak RSS, and PyTorch 1.13's figures on
 * this machine (DESIGN.md section 7) with our speed-up over them. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/timing.h"
#include "engine/exec.h"
#include "model/model.h"

typedef struct ref_fig {
    const char *name;
    double t1, t2, rss_mib;
} ref_fig;

/* PyTorch 1.13 (Debian, oneDNN), 1x3x480x720, median (DESIGN.md section 7) */
static const ref_fig torch[] = {
    {"alexnet", 0.069, 0.041, 836},
    {"googlenet", 0.53, 0.41, 514},
    {"resnet50", 1.04, 0.59, 732},
    {"vgg16", 4.39, 2.45, 1427},
};

typedef struct result {
    int ok;
    int layers;
    double gflop;
    double t[2];
    double rss_mib;
    char err[DS_ERROR_MAX];
} result;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void run_model(const char *name, int h, int w, int runs, ds_backend be, result *r)
{
    ds_model m;
    ds_error err = {0};
    char spec[128];
    memset(&m, 0, sizeof m);
    snprintf(spec, sizeof spec, "zoo:%s", name);
    if (ds_model_load(spec, &m, &err) || ds_model_set_input(&m, 1, 3, h, w, &err)) {
        snprintf(r->err, sizeof r->err, "%s", err.msg);
        return;
    }
    r->layers = m.n_layers;
    for (int i = 1; i < m.n_layers; i++)
        r->gflop += ds_layer_flops(&m, i) / 1e9;
    int *ids = malloc((size_t)m.n_layers * sizeof *ids);
    double *times = malloc((size_t)runs * sizeof *times);
    ds_tensor *outs = calloc((size_t)m.n_outputs + 1, sizeof *outs);
    ds_tensor x = {0};
    if (!ids || !times || !outs || ds_tensor_reserve(&x, &m.layers[0].out_shape, DS_F32, &err)) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return;
    }
    for (int i = 1; i < m.n_layers; i++)
        ids[i - 1] = i;
    uint32_t s = 1;
    for (int64_t i = 0; i < ds_shape_numel(&x.shape); i++) {
        s = s * 1664525u + 1013904223u;
        ds_tensor_f32(&x)[i] = (float)(s >> 8) / 16777216.0f;
    }
    ds_job job = {m.n_layers - 1, ids, m.n_outputs, m.outputs};
    int in_id = 0;
    const ds_tensor *inp[1] = {&x};
    for (int ti = 0; ti < 2; ti++) {
        ds_executor *ex = ds_executor_new(&m, be, ti + 1, &err);
        if (!ex || ds_executor_run(ex, &job, 1, &in_id, inp, outs, &err)) {
            snprintf(r->err, sizeof r->err, "%s", err.msg);
            ds_executor_free(ex);
            return;
        }
        for (int k = 0; k < runs; k++) {
            double t0 = ds_now();
            if (ds_executor_run(ex, &job, 1, &in_id, inp, outs, &err)) {
                snprintf(r->err, sizeof r->err, "%s", err.msg);
                ds_executor_free(ex);
                return;
            }
            times[k] = ds_now() - t0;
        }
        qsort(times, (size_t)runs, sizeof *times, cmp_double);
        r->t[ti] = runs % 2 ? times[runs / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);
        ds_executor_free(ex);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r->rss_mib = (double)ru.ru_maxrss / 1024.0;
    r->ok = 1;
}

int main(int argc, char **argv)
{
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_ARENA_MAX, 4);
    static const struct option longs[] = {
        {"models", required_argument, NULL, 'm'}, {"runs", required_argument, NULL, 'r'},
        {"size", required_argument, NULL, 's'},   {"backend", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    char models[512] = "alexnet,googlenet,resnet50,vgg16";
    int runs = 5, h = 480, w = 720;
    ds_backend be = DS_BACKEND_XNNPACK;
    int c;
    while ((c = getopt_long(argc, argv, "m:r:s:b:h", longs, NULL)) != -1) {
        switch (c) {
        case 'm': snprintf(models, sizeof models, "%s", optarg); break;
        case 'r':
            runs = atoi(optarg);
            if (runs < 1 || runs > 1000) {
                fprintf(stderr, "engine: --runs wants 1..1000\n");
                return 2;
            }
            break;
        case 's':
            if (sscanf(optarg, "%dx%d", &h, &w) != 2 || h < 1 || w < 1 || h > 8192 || w > 8192) {
                fprintf(stderr, "engine: --size wants HxW\n");
                return 2;
            }
            break;
        case 'b':
            if (ds_backend_parse(optarg, &be)) {
                fprintf(stderr, "engine: --backend is xnnpack or reference\n");
                return 2;
            }
            break;
        case 'h':
            printf("usage: engine [--models a,b,..] [--runs N] [--size HxW] [--backend B]\n"
                   "Median latency of each zoo trunk on 1x3xHxW at 1 and 2 threads,\n"
                   "GFLOP/s, peak RSS, and the speed-up over PyTorch 1.13 (480x720 only).\n");
            return 0;
        default: return 2;
        }
    }
    printf("engine: 1x3x%dx%d, %s backend, median of %d runs after a warm-up\n\n", h, w,
           ds_backend_name(be), runs);
    printf("%-10s %6s %8s | %9s %7s | %9s %7s | %8s | %9s %9s | %7s %7s\n", "model", "layers",
           "GFLOP", "1 thr s", "GFLOP/s", "2 thr s", "GFLOP/s", "RSS MiB", "torch 1t", "torch 2t",
           "x 1t", "x 2t");
    int status = 0;
    for (char *tok = strtok(models, ","); tok; tok = strtok(NULL, ",")) {
        int fd[2];
        result r;
        memset(&r, 0, sizeof r);
        if (pipe(fd)) {
            perror("pipe");
            return 1;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            close(fd[0]);
            run_model(tok, h, w, runs, be, &r);
            ssize_t n = write(fd[1], &r, sizeof r);
            _exit(n == (ssize_t)sizeof r ? 0 : 1);
        }
        close(fd[1]);
        ssize_t got = read(fd[0], &r, sizeof r);
        close(fd[0]);
        int ws;
        waitpid(pid, &ws, 0);
        if (got != (ssize_t)sizeof r || !r.ok) {
            printf("%-10s failed: %s\n", tok, got == (ssize_t)sizeof r ? r.err : "child died");
            status = 1;
            continue;
        }
        const ref_fig *t = NULL;
        for (size_t i = 0; i < sizeof torch / sizeof torch[0]; i++)
            if (!strcmp(torch[i].name, tok) && h == 480 && w == 720)
                t = &torch[i];
        printf("%-10s %6d %8.2f | %9.4f %7.1f | %9.4f %7.1f | %8.1f |", tok, r.layers, r.gflop,
               r.t[0], r.gflop / r.t[0], r.t[1], r.gflop / r.t[1], r.rss_mib);
        if (t)
            printf(" %9.3f %9.3f | %7.2f %7.2f\n", t->t1, t->t2, t->t1 / r.t[0], t->t2 / r.t[1]);
        else
            printf(" %9s %9s | %7s %7s\n", "-", "-", "-", "-");
    }
    return status;
}
