/* bench/sched - validates the schedulers: for each model, every scheduler's
 * plan and predicted time per frame (the master's own planner, fed with this
 * machine's layer costs, the trainer's predictors and the clip's frames),
 * next to the time per frame measured in a real run on the namespace testbed
 * (scripts/testbed.sh) with rate-limited links, and the run's own prediction
 * (the master's, from its workers' profiles and the plans it used: under a
 * changing machine load the two sets of profiles can differ).
 *
 * Two cases by default: equal workers, and a Pi-class worker 0 (its CPU
 * time capped to a quarter of a core by a cgroup, next to an unlimited
 * worker 1).  The capped worker's layer costs for the prediction are
 * profiled by a child process inside a cgroup with the same limit, as the
 * worker itself does on the testbed.
 *
 * usage: build/bench/sched [--models alexnet,googlenet] [--size 480x720]
 *                          [--frames 50] [--bandwidth 4,1] [--train-frames 100]
 *                          [--w0-cpu max,25%] [--repeat 1] [--no-run]
 * --repeat N runs every testbed N times (1..9), interleaved across the
 * schedulers, and reports the median: on a shared machine one run can be off
 * by a third.
 * Run from the repository root as root (the testbed needs namespaces, the
 * limits cgroups); --no-run prints the predictions only.  Costs and
 * predictors are cached in .cache, shared with the testbed's workers and
 * trainer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "model/model.h"
#include "roles/costs.h"
#include "roles/roles.h"
#include "sched/planner.h"
#include "train/train.h"
#include "video/video.h"

#define ORIGINAL_BEST 0.64 /* s per frame, the original's best plan on these links */
#define CPU_PERIOD_US 10000 /* the testbed's default CFS period */
#define MAX_REPEAT 9

typedef struct opts {
    char models[256];
    int rows, cols, frames, train_frames, run, repeat;
    char bandwidth[64];
    char w0_cpu[128]; /* one case per entry: "max" or a CPU limit for worker 0 */
} opts;

static const char *const sched_names[] = {"lbc", "nsc", "opt"};

static int make_config(const opts *o, const char *model, int sched, ds_config *cfg, ds_error *err)
{
    char text[2048];
    snprintf(text, sizeof text,
             "port: {worker: [1, 2]}\n"
             "net: {m->t: 'h:3', m->w0: 'h:1', m->w1: 'h:2', w0->w1: 'h:2'}\n"
             "insecure: true\n"
             "dnn: zoo:%s\nvideo_path: data/sample.mp4\nframe_size: [%d, %d]\nmode: dif\n"
             "master: {ifr_num: %d, pd_num: 2, scheduler: %s, bandwidth: [%s]}\n"
             "worker: {prof_niter: 5, threads: 1}\ntrainer: {frame_num: %d, threads: 2}\n"
             "cache_dir: .cache\n",
             model, o->rows, o->cols, o->frames, sched_names[sched], o->bandwidth, o->train_frames);
    return ds_config_parse(text, strlen(text), "<bench>", ".", cfg, err);
}

/* Plans the run like the master would; returns predicted s per frame. */
static double predict(const ds_config *cfg, const ds_model *m, const double *const *costs,
                      const ds_predictors *pred, char *plan_text, size_t len, ds_error *err)
{
    double *c[DS_MAX_WORKERS] = {0};
    for (int i = 0; i < cfg->n_workers; i++) {
        c[i] = malloc(sizeof(double) * (size_t)m->n_layers);
        memcpy(c[i], costs[i], sizeof(double) * (size_t)m->n_layers);
    }
    ds_predictors *copy = NULL;
    ds_buf blob = {0};
    if (ds_predictors_encode(pred, &blob, err) || ds_predictors_decode(blob.data, blob.len, m, &copy, err))
        return -1;
    ds_buf_free(&blob);
    ds_planner pl;
    if (ds_planner_init(&pl, cfg, m, c, copy, ds_slowest_link_compress(cfg), err))
        return -1;
    ds_video *v = ds_video_open(cfg->video_path, cfg->frame_rows, cfg->frame_cols, err);
    if (!v)
        return -1;
    ds_tensor hwc = {0}, cur = {0}, prev = {0};
    float frac[3];
    int changes = 0;
    plan_text[0] = '\0';
    for (int f = 0; f < cfg->master.ifr_num; f++) {
        int r = ds_video_read(v, &hwc, err);
        if (r == 0 && ds_video_rewind(v, err) == 0)
            r = ds_video_read(v, &hwc, err);
        if (r != 1 || ds_frame_u8_hwc_to_nchw(&hwc, &cur, err))
            return -1;
        if (f > 0)
            ds_input_change(&prev, &cur, frac);
        int changed;
        if (ds_planner_plan(&pl, f, f > 0 ? frac : NULL, &changed, err))
            return -1;
        if (changed) {
            char one[128];
            size_t used = strlen(plan_text);
            snprintf(plan_text + used, len - used, "%s%s", changes++ ? " | " : "",
                     ds_plan_str(&pl.current, one, sizeof one));
        }
        ds_tensor_copy(&prev, &cur, err);
    }
    double t = ds_planner_predicted_per_frame(&pl, cfg->master.ifr_num);
    ds_planner_free(&pl);
    ds_video_close(v);
    ds_tensor_free(&hwc);
    ds_tensor_free(&cur);
    ds_tensor_free(&prev);
    return t;
}

/* Runs the testbed; returns measured s per frame (-1 on failure) and sets
 * *run_pred to the master's own prediction for the run (its workers'
 * profiles, the plans it used). */
static double measure(const opts *o, const char *model, int sched, const char *w0_cpu, char *plan_text,
                      size_t len, double *run_pred)
{
    char cmd[1024], limit[96] = "";
    if (strcmp(w0_cpu, "max"))
        snprintf(limit, sizeof limit, "--cpu w0=%s --cpu-period %d ", w0_cpu, CPU_PERIOD_US);
    snprintf(cmd, sizeof cmd,
             "scripts/testbed.sh --model zoo:%s --size %dx%d --frames %d --bandwidth %s %s"
             "--scheduler %s --train-frames %d --cache .cache 2>/tmp/ds_bench_sched.err",
             model, o->rows, o->cols, o->frames, o->bandwidth, limit, sched_names[sched], o->train_frames);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[512];
    double seconds = -1;
    int frames = 0, done = 0;
    while (fgets(line, sizeof line, p)) {
        double t;
        int n;
        if (sscanf(line, "throughput: %*f frames/s (%d frames in %lf s)", &n, &t) == 2) {
            frames = n;
            seconds = t;
        }
        if (sscanf(line, "frames: %d finished", &n) == 1)
            done = n;
        if (sscanf(line, "plans: %d used, predicted %lf s per frame", &n, &t) == 2)
            *run_pred = t;
        if (!strncmp(line, "model: ", 7)) {
            char *plan = strstr(line, ", plan ");
            if (plan) {
                snprintf(plan_text, len, "%s", plan + 7);
                plan_text[strcspn(plan_text, "\n")] = '\0';
            }
        }
    }
    int rc = pclose(p);
    if (rc != 0 || frames <= 0 || done != o->frames) {
        fprintf(stderr, "bench/sched: testbed run of %s/%s failed (see /tmp/ds_bench_sched.err)\n", model,
                sched_names[sched]);
        return -1;
    }
    return seconds / frames;
}

/* The directory of cgroup group as scripts/limit-cpu.sh makes it: in the v1
 * hierarchy with the cpu controller, else in the cgroup2 one. */
static int cgroup_dir(const char *group, char *dir, size_t len)
{
    FILE *f = fopen("/proc/mounts", "r");
    if (!f)
        return -1;
    char src[256], point[512], type[64], opt[512], v1[512] = "", v2[512] = "";
    while (fscanf(f, "%255s %511s %63s %511s %*d %*d", src, point, type, opt) == 4) {
        char opts_list[514];
        snprintf(opts_list, sizeof opts_list, ",%s,", opt);
        if (!strcmp(type, "cgroup") && strstr(opts_list, ",cpu,") && !v1[0])
            snprintf(v1, sizeof v1, "%s", point);
        if (!strcmp(type, "cgroup2") && !v2[0])
            snprintf(v2, sizeof v2, "%s", point);
    }
    fclose(f);
    if (!v1[0] && !v2[0])
        return -1;
    snprintf(dir, len, "%s/%s", v1[0] ? v1 : v2, group);
    return 0;
}

/* Layer costs as a worker limited to `cpu` measures them: a child process
 * joins a cgroup with that limit (made with scripts/limit-cpu.sh) and
 * profiles (or finds its cached profile, keyed by the quota); the figures
 * come back through a pipe. */
static int limited_costs(const ds_model *m, const ds_config *cfg, const char *cpu, double *out, ds_error *err)
{
    char cmd[512], dir[600], procs[700];
    snprintf(cmd, sizeof cmd, "scripts/limit-cpu.sh --group dsbench-w0 --period %d %s 2>/tmp/ds_bench_sched.err",
             CPU_PERIOD_US, cpu);
    if (system(cmd) != 0 || cgroup_dir("dsbench-w0", dir, sizeof dir))
        return ds_errorf(err, "cannot limit a cgroup to %s CPUs (root needed; see /tmp/ds_bench_sched.err)", cpu);
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    int fd[2];
    if (pipe(fd))
        return ds_errorf(err, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return ds_errorf(err, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        FILE *f = fopen(procs, "w");
        int ok = f && fprintf(f, "%d\n", (int)getpid()) > 0;
        ok = f && !fclose(f) && ok;
        ds_layer_costs c = {0};
        ds_error e;
        if (!ok || ds_layer_costs_load_or_profile(m, cfg, &c, &e))
            _exit(1);
        size_t n = sizeof(double) * (size_t)m->n_layers;
        _exit(write(fd[1], c.seconds, n) == (ssize_t)n ? 0 : 1);
    }
    close(fd[1]);
    size_t want = sizeof(double) * (size_t)m->n_layers, got = 0;
    while (got < want) {
        ssize_t r = read(fd[0], (char *)out + got, want - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    rmdir(dir);
    if (got != want || !WIFEXITED(status) || WEXITSTATUS(status))
        return ds_errorf(err, "profiling under the %s CPU limit failed (cgroup %s)", cpu, dir);
    return 0;
}

/* Median of the successful runs (failed ones are -1); -1 when none. */
static double median_run(const double *v, int n)
{
    double ok[MAX_REPEAT];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > 0) {
            int j = k++;
            while (j > 0 && ok[j - 1] > v[i]) {
                ok[j] = ok[j - 1];
                j--;
            }
            ok[j] = v[i];
        }
    if (k == 0)
        return -1;
    return k % 2 ? ok[k / 2] : 0.5 * (ok[k / 2 - 1] + ok[k / 2]);
}

static double sum(const double *v, int n)
{
    double t = 0;
    for (int i = 0; i < n; i++)
        t += v[i];
    return t;
}

int main(int argc, char **argv)
{
    opts o = {"alexnet,googlenet", 480, 720, 50, 100, 1, 1, "4,1", "max,25%"};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models") && i + 1 < argc)
            snprintf(o.models, sizeof o.models, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc && sscanf(argv[i + 1], "%dx%d", &o.rows, &o.cols) == 2)
            i++;
        else if (!strcmp(argv[i], "--frames") && i + 1 < argc)
            o.frames = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--train-frames") && i + 1 < argc)
            o.train_frames = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bandwidth") && i + 1 < argc)
            snprintf(o.bandwidth, sizeof o.bandwidth, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc && (o.repeat = atoi(argv[i + 1])) >= 1 &&
                 o.repeat <= MAX_REPEAT)
            i++;
        else if (!strcmp(argv[i], "--w0-cpu") && i + 1 < argc)
            snprintf(o.w0_cpu, sizeof o.w0_cpu, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--no-run"))
            o.run = 0;
        else {
            fprintf(stderr, "usage: %s [--models a,b] [--size RxC] [--frames N] [--train-frames N] "
                            "[--bandwidth 4,1] [--w0-cpu max,25%%] [--repeat N] [--no-run]\n", argv[0]);
            return 2;
        }
    }
    ds_log_init("bench", getenv("DS_DEBUG") ? DS_LOG_DEBUG : DS_LOG_WARN);
    char *cases[8];
    int n_cases = 0;
    char *csave = NULL;
    for (char *c = strtok_r(o.w0_cpu, ",", &csave); c && n_cases < 8; c = strtok_r(NULL, ",", &csave))
        cases[n_cases++] = c;
    int all_ok = 1;
    char *save = NULL;
    for (char *name = strtok_r(o.models, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        ds_error err;
        ds_config cfg;
        ds_model m;
        ds_layer_costs costs = {0};
        ds_predictors *pred = NULL;
        ds_train_stats st;
        if (make_config(&o, name, 0, &cfg, &err) || ds_model_load(cfg.dnn, &m, &err) ||
            ds_model_set_input(&m, 1, 3, o.rows, o.cols, &err) ||
            ds_layer_costs_load_or_profile(&m, &cfg, &costs, &err)) {
            fprintf(stderr, "bench/sched: %s\n", err.msg);
            return 1;
        }
        /* Worker 0's costs per case (before training: the child is forked
         * while this process has no worker threads). */
        double *w0_costs[8] = {0};
        for (int k = 0; k < n_cases; k++) {
            w0_costs[k] = malloc(sizeof(double) * (size_t)m.n_layers);
            if (!w0_costs[k]) {
                fprintf(stderr, "bench/sched: out of memory\n");
                return 1;
            }
            if (!strcmp(cases[k], "max"))
                memcpy(w0_costs[k], costs.seconds, sizeof(double) * (size_t)m.n_layers);
            else if (limited_costs(&m, &cfg, cases[k], w0_costs[k], &err)) {
                fprintf(stderr, "bench/sched: %s\n", err.msg);
                return 1;
            }
        }
        ds_train_cfg tc = {cfg.video_path, cfg.trainer.frame_num, cfg.trainer.threads, cfg.cache_dir, 0, NULL};
        if (ds_train_run(&m, &tc, &pred, &st, &err)) {
            fprintf(stderr, "bench/sched: %s\n", err.msg);
            return 1;
        }
        ds_config_free(&cfg);
        for (int k = 0; k < n_cases; k++) {
            int limited = strcmp(cases[k], "max") != 0;
            double t0 = sum(w0_costs[k], m.n_layers), t1 = sum(costs.seconds, m.n_layers);
            printf("\n%s: links %s MB/s, %dx%d, %d frames, pd_num 2, dif; ", name, o.bandwidth, o.rows, o.cols,
                   o.frames);
            if (limited)
                printf("w0 at %s CPU (period %d us): profiled %.1f ms per frame, %.2fx w1's %.1f ms\n", cases[k],
                       CPU_PERIOD_US, t0 * 1e3, t1 > 0 ? t0 / t1 : 0, t1 * 1e3);
            else
                printf("equal workers (%.1f ms per frame); original's best plan: %.2f s per frame\n", t1 * 1e3,
                       ORIGINAL_BEST);
            printf("%-10s %-5s %10s %10s %7s %10s %8s  %s\n", "model", "sched", "predicted", "measured", "error",
                   "run pred.", limited ? "" : "vs orig", "plan (predicted | measured run)");
            double measured[3] = {-1, -1, -1}, predicted[3] = {-1, -1, -1};
            /* Predictions first, then the runs interleaved (lbc, nsc, opt,
             * lbc, ...) so that a change of machine load hits every
             * scheduler alike; the median of the repeats is reported. */
            char plan_p[3][512], plan_m[3][256];
            double rp[3] = {-1, -1, -1}, runs[3][MAX_REPEAT];
            for (int s = 0; s < 3; s++) {
                snprintf(plan_m[s], sizeof plan_m[s], "-");
                if (make_config(&o, name, s, &cfg, &err)) {
                    fprintf(stderr, "bench/sched: %s\n", err.msg);
                    return 1;
                }
                const double *wc[DS_MAX_WORKERS];
                for (int i = 0; i < cfg.n_workers; i++)
                    wc[i] = i == 0 ? w0_costs[k] : costs.seconds;
                predicted[s] = predict(&cfg, &m, wc, pred, plan_p[s], sizeof plan_p[s], &err);
                ds_config_free(&cfg);
                if (predicted[s] < 0) {
                    fprintf(stderr, "bench/sched: %s\n", err.msg);
                    return 1;
                }
            }
            for (int r = 0; o.run && r < o.repeat; r++)
                for (int s = 0; s < 3; s++)
                    runs[s][r] = measure(&o, name, s, cases[k], plan_m[s], sizeof plan_m[s], &rp[s]);
            for (int s = 0; s < 3; s++) {
                double p = predicted[s], t = o.run ? median_run(runs[s], o.repeat) : -1;
                measured[s] = t;
                double e = t > 0 ? (p - t) / t * 100 : 0;
                printf("%-10s %-5s %9.3fs ", name, sched_names[s], p);
                if (t > 0 && limited)
                    printf("%9.3fs %+6.0f%% %9.3fs %8s  %s | %s\n", t, e, rp[s], "", plan_p[s], plan_m[s]);
                else if (t > 0)
                    printf("%9.3fs %+6.0f%% %9.3fs %7.1fx  %s | %s\n", t, e, rp[s], ORIGINAL_BEST / t, plan_p[s],
                           plan_m[s]);
                else
                    printf("%10s %7s %10s %8s  %s\n", "-", "-", "-", "-", plan_p[s]);
                if (o.run && o.repeat > 1) {
                    printf("%16s runs:", "");
                    for (int r = 0; r < o.repeat; r++)
                        printf(" %.3fs", runs[s][r]);
                    printf("\n");
                }
                if (t > 0 && (e > 20 || e < -20)) {
                    printf("MISS: %s/%s predicted %.0f%% off the measured time (target 20%%)\n", name,
                           sched_names[s], e);
                    all_ok = 0;
                }
            }
            if (o.run) {
                int opt_best =
                    measured[2] > 0 && measured[2] <= measured[0] * 1.02 && measured[2] <= measured[1] * 1.02;
                printf("%s: %s: opt measured %s every other scheduler (2%% noise allowed)\n",
                       opt_best ? "PASS" : "MISS", name, opt_best ? "at least as fast as" : "slower than");
                int close = measured[2] > 0 && predicted[2] >= measured[2] * 0.8 && predicted[2] <= measured[2] * 1.2;
                printf("%s: %s: opt measured %.3f s per frame, predicted %.3f (target within 20%%)\n",
                       close ? "PASS" : "MISS", name, measured[2], predicted[2]);
                all_ok &= opt_best && close;
                if (!limited) {
                    int fast = measured[2] > 0 && ORIGINAL_BEST / measured[2] >= 3;
                    printf("%s: %s: opt %.1fx faster than the original's best plan (target 3x)\n",
                           fast ? "PASS" : "MISS", name, measured[2] > 0 ? ORIGINAL_BEST / measured[2] : 0);
                    all_ok &= fast;
                }
            }
        }
        for (int k = 0; k < n_cases; k++)
            free(w0_costs[k]);
        ds_predictors_free(pred);
        ds_layer_costs_free(&costs);
        ds_model_free(&m);
    }
    return all_ok ? 0 : 1;
}
