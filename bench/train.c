/* bench/train.c - the trainer's work without its cache: collect the change
 * fractions of every layer over a video, fit the predictors, print the fit.
 *
 *   build/bench/train [--model zoo:alexnet] [--video data/sample.mp4]   (from the source tree)
 *                     [--frames 400] [--size 480x720] [--threads 2]
 *
 * Environment DS_DEBUG=1 adds the collection's breakdown (model, counting,
 * decoding time).  Prints collection and fit time, frames per second, the
 * per-layer R2/MAE table (held-out last 20% of the frames) and the original system's figure
 * on this machine (DESIGN.md section 7: 45 s collection, < 1 s fitting for
 * 400 frames of AlexNet at 480x720). */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "train/train.h"

#define ORIGINAL_COLLECT_S 45.0

int main(int argc, char **argv)
{
    const char *model = "zoo:alexnet", *video = "data/sample.mp4";
    int frames = 400, rows = 480, cols = 720, threads = 2;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"video", required_argument, 0, 'v'},
        {"frames", required_argument, 0, 'n'}, {"size", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "m:v:n:s:t:h", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'v': video = optarg; break;
        case 'n': frames = atoi(optarg); break;
        case 's':
            if (sscanf(optarg, "%dx%d", &rows, &cols) != 2 || rows < 1 || cols < 1) {
                fprintf(stderr, "train: --size wants ROWSxCOLS\n");
                return 2;
            }
            break;
        case 't': threads = atoi(optarg); break;
        case 'h':
            printf("usage: train [--model SPEC] [--video FILE] [--frames N] [--size RxC] "
                   "[--threads N]\n");
            return 0;
        default: return 2;
        }
    }
    if (frames < DS_TRAIN_MIN_FRAMES || threads < 1) {
        fprintf(stderr, "train: need --frames >= %d and --threads >= 1\n", DS_TRAIN_MIN_FRAMES);
        return 2;
    }
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    ds_log_init("bench", getenv("DS_DEBUG") ? DS_LOG_DEBUG : DS_LOG_WARN);
    ds_model m;
    ds_error err;
    memset(&m, 0, sizeof m);
    if (ds_model_load(model, &m, &err) || ds_model_set_input(&m, 1, 3, rows, cols, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    ds_train_cfg c = {video, frames, threads, NULL, isatty(STDERR_FILENO), NULL};
    ds_train_data d = {0};
    double t0 = ds_now();
    if (ds_train_collect(&m, &c, &d, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    double t_collect = ds_now() - t0;
    ds_predictors *p = NULL;
    t0 = ds_now();
    if (ds_train_fit(&m, &d, threads, &p, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    double t_fit = ds_now() - t0;
    ds_buf table = {0}, blob = {0};
    if (ds_train_report(&m, p, &d, &table, &err) || ds_buf_append(&table, "", 1, &err) ||
        ds_predictors_encode(p, &blob, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    printf("train: %s, %d frames of %s at %dx%d, %d thread%s\n", m.name, frames, video, rows,
           cols, threads, threads == 1 ? "" : "s");
    printf("  collection %.2f s (%.1f frames/s, %.1f ms/frame)\n", t_collect,
           frames / t_collect, 1e3 * t_collect / frames);
    printf("  fitting    %.3f s; predictors blob %zu bytes\n", t_fit, blob.len);
    printf("  original (PyTorch, DESIGN.md section 7): %.0f s collection, < 1 s fitting for 400 "
           "frames of AlexNet at 480x720\n",
           ORIGINAL_COLLECT_S);
    if (frames == 400 && rows == 480 && cols == 720 && strcmp(model, "zoo:alexnet") == 0)
        printf("  speed-up over the original: %.1fx (target: under 15 s)\n",
               ORIGINAL_COLLECT_S / t_collect);
    printf("\nheld-out fit (last %d frames): R2/MAE end to end from the input change, and one step "
           "from the true inputs\n%s",
           frames - ds_train_holdout_first(frames), (char *)table.data);
    ds_buf_free(&table);
    ds_buf_free(&blob);
    ds_predictors_free(p);
    ds_train_data_free(&d);
    ds_model_free(&m);
    return 0;
}
