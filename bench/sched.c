/* bench/sched - validates the schedulers: for each model, every scheduler's
 * plan and predicted time per frame (the master's own planner, fed with this
 * machine's layer costs, the trainer's predictors and the clip's frames),
 * next to the time per frame measured in a real run on the namespace testbed
 * (scripts/testbed.sh) with rate-limited links.
 *
 * usage: build/bench/sched [--models alexnet,googlenet] [--size 480x720]
 *                          [--frames 50] [--bandwidth 4,1] [--train-frames 100]
 *                          [--no-run]
 * Run from the repository root as root (the testbed needs namespaces);
 * --no-run prints the predictions only.  Costs and predictors are cached in
 * .cache, shared with the testbed's workers and trainer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "model/model.h"
#include "roles/costs.h"
#include "roles/roles.h"
#include "sched/planner.h"
#include "train/train.h"
#include "video/video.h"

#define ORIGINAL_BEST 0.64 /* s per frame, the original's best plan on these links */

typedef struct opts {
    char models[256];
    int rows, cols, frames, train_frames, run;
    char bandwidth[64];
} opts;

static const char *const sched_names[] = {"lbc", "nsc", "opt"};

static int make_config(const opts *o, const char *model, int sched, ds_config *cfg, ds_error *err)
{
    char text[2048];
    snprintf(text, sizeof text,
             "port: {worker: [1, 2]}\n"
             "net: {m->t: 'h:3', m->w0: 'h:1', m->w1: 'h:2', w0->w1: 'h:2'}\n"
             "dnn: zoo:%s\nvideo_path: data/sample.mp4\nframe_size: [%d, %d]\nmode: dif\n"
             "master: {ifr_num: %d, pd_num: 2, scheduler: %s, bandwidth: [%s]}\n"
             "worker: {prof_niter: 5, threads: 1}\ntrainer: {frame_num: %d, threads: 2}\n"
             "cache_dir: .cache\n",
             model, o->rows, o->cols, o->frames, sched_names[sched], o->bandwidth, o->train_frames);
    return ds_config_parse(text, strlen(text), "<bench>", ".", cfg, err);
}

/* Plans the run like the master would; returns predicted s per frame. */
static double predict(const ds_config *cfg, const ds_model *m, const ds_layer_costs *costs,
                      const ds_predictors *pred, char *plan_text, size_t len, ds_error *err)
{
    double *c[DS_MAX_WORKERS] = {0};
    for (int i = 0; i < cfg->n_workers; i++) {
        c[i] = malloc(sizeof(double) * (size_t)m->n_layers);
        memcpy(c[i], costs->seconds, sizeof(double) * (size_t)m->n_layers);
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

/* Runs the testbed; returns measured s per frame (-1 on failure). */
static double measure(const opts *o, const char *model, int sched, char *plan_text, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "scripts/testbed.sh --model zoo:%s --size %dx%d --frames %d --bandwidth %s "
             "--scheduler %s --train-frames %d --cache .cache 2>/tmp/ds_bench_sched.err",
             model, o->rows, o->cols, o->frames, o->bandwidth, sched_names[sched], o->train_frames);
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

int main(int argc, char **argv)
{
    opts o = {"alexnet,googlenet", 480, 720, 50, 100, 1, "4,1"};
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
        else if (!strcmp(argv[i], "--no-run"))
            o.run = 0;
        else {
            fprintf(stderr, "usage: %s [--models a,b] [--size RxC] [--frames N] [--train-frames N] "
                            "[--bandwidth 4,1] [--no-run]\n", argv[0]);
            return 2;
        }
    }
    ds_log_init("bench", getenv("DS_DEBUG") ? DS_LOG_DEBUG : DS_LOG_WARN);
    printf("links %s MB/s, %dx%d, %d frames, pd_num 2, dif; original's best plan: %.2f s per frame\n",
           o.bandwidth, o.rows, o.cols, o.frames, ORIGINAL_BEST);
    printf("%-10s %-5s %10s %10s %7s %8s  %s\n", "model", "sched", "predicted", "measured", "error",
           "vs orig", "plan (predicted | measured run)");
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
        ds_train_cfg tc = {cfg.video_path, cfg.trainer.frame_num, cfg.trainer.threads, cfg.cache_dir, 0, NULL};
        if (ds_train_run(&m, &tc, &pred, &st, &err)) {
            fprintf(stderr, "bench/sched: %s\n", err.msg);
            return 1;
        }
        ds_config_free(&cfg);
        double measured[3] = {-1, -1, -1};
        for (int s = 0; s < 3; s++) {
            char plan_p[512], plan_m[256] = "-";
            if (make_config(&o, name, s, &cfg, &err)) {
                fprintf(stderr, "bench/sched: %s\n", err.msg);
                return 1;
            }
            double p = predict(&cfg, &m, &costs, pred, plan_p, sizeof plan_p, &err);
            if (p < 0) {
                fprintf(stderr, "bench/sched: %s\n", err.msg);
                return 1;
            }
            double t = o.run ? measure(&o, name, s, plan_m, sizeof plan_m) : -1;
            measured[s] = t;
            double e = t > 0 ? (p - t) / t * 100 : 0;
            printf("%-10s %-5s %9.3fs ", name, sched_names[s], p);
            if (t > 0)
                printf("%9.3fs %+6.0f%% %7.1fx  %s | %s\n", t, e, ORIGINAL_BEST / t, plan_p, plan_m);
            else
                printf("%10s %7s %8s  %s\n", "-", "-", "-", plan_p);
            if (t > 0 && (e > 20 || e < -20)) {
                printf("MISS: %s/%s predicted %.0f%% off the measured time (target 20%%)\n", name,
                       sched_names[s], e);
                all_ok = 0;
            }
            ds_config_free(&cfg);
        }
        if (o.run) {
            int opt_best = measured[2] > 0 && measured[2] <= measured[0] * 1.02 && measured[2] <= measured[1] * 1.02;
            printf("%s: %s: opt measured %s every other scheduler (2%% noise allowed)\n",
                   opt_best ? "PASS" : "MISS", name, opt_best ? "at least as fast as" : "slower than");
            int fast = measured[2] > 0 && ORIGINAL_BEST / measured[2] >= 3;
            printf("%s: %s: opt %.1fx faster than the original's best plan (target 3x)\n", fast ? "PASS" : "MISS",
                   name, measured[2] > 0 ? ORIGINAL_BEST / measured[2] : 0);
            all_ok &= opt_best && fast;
        }
        ds_predictors_free(pred);
        ds_layer_costs_free(&costs);
        ds_model_free(&m);
    }
    return all_ok ? 0 : 1;
}
