/* bench/video.c - decode + resize speed of the video reader.
 *
 *   build/bench/video [CLIP [ROWS COLS [PASSES]]]   (default data/sample.mp4 480 720 3)
 *
 * Reads the whole clip PASSES times (rewinding in between) and prints frames/s
 * for: decode at the native size (RGB conversion, no resize), decode + resize
 * to ROWS x COLS, and the uint8 HWC -> float32 / uint8 NCHW conversions.
 * The best pass is reported (least disturbed by other processes), as wall
 * clock frames/s and as this thread's CPU time per frame (steady when other
 * processes share the cores). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/log.h"
#include "common/timing.h"
#include "video/video.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run(const char *path, int rows, int cols, int passes, double *best_fps,
               double *best_cpu_ms, int64_t *frames, ds_tensor *hwc)
{
    ds_error err;
    ds_video *v = ds_video_open(path, rows, cols, &err);
    if (!v) {
        fprintf(stderr, "video bench: %s\n", err.msg);
        return -1;
    }
    *best_fps = 0;
    *best_cpu_ms = 1e9;
    for (int p = 0; p < passes; p++) {
        if (p && ds_video_rewind(v, &err)) {
            fprintf(stderr, "video bench: %s\n", err.msg);
            ds_video_close(v);
            return -1;
        }
        int64_t n = 0;
        int r;
        double t0 = ds_now(), c0 = cpu_now();
        while ((r = ds_video_read(v, hwc, &err)) == 1)
            n++;
        double dt = ds_now() - t0, dc = cpu_now() - c0;
        if (r < 0) {
            fprintf(stderr, "video bench: %s\n", err.msg);
            ds_video_close(v);
            return -1;
        }
        if (n / dt > *best_fps)
            *best_fps = n / dt;
        if (n && dc * 1e3 / n < *best_cpu_ms)
            *best_cpu_ms = dc * 1e3 / n;
        *frames = n;
    }
    ds_video_close(v);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "data/sample.mp4";
    int rows = argc > 3 ? atoi(argv[2]) : 480;
    int cols = argc > 3 ? atoi(argv[3]) : 720;
    int passes = argc > 4 ? atoi(argv[4]) : 3;
    if (passes < 1)
        passes = 1;
    ds_log_init("bench", DS_LOG_WARN);

    ds_tensor hwc = {0}, f32 = {0}, u8 = {0};
    double native_fps, resized_fps, native_cpu, resized_cpu;
    int64_t frames;
    if (run(path, 0, 0, passes, &native_fps, &native_cpu, &frames, &hwc) ||
        run(path, rows, cols, passes, &resized_fps, &resized_cpu, &frames, &hwc))
        return 1;

    ds_error err;
    const int reps = 200;
    double best_f32 = 1e9, best_u8 = 1e9;
    for (int i = 0; i < reps; i++) {
        double t0 = ds_now();
        if (ds_frame_u8_to_f32_nchw(&hwc, &f32, &err))
            break;
        double t1 = ds_now();
        if (ds_frame_u8_hwc_to_nchw(&hwc, &u8, &err))
            break;
        double t2 = ds_now();
        if (t1 - t0 < best_f32)
            best_f32 = t1 - t0;
        if (t2 - t1 < best_u8)
            best_u8 = t2 - t1;
    }

    printf("clip %s: %lld frames, best of %d passes, 1 decode thread\n", path, (long long)frames,
           passes);
    printf("decode + RGB, native size      %8.0f frames/s  %6.3f ms/frame wall  %6.3f ms CPU\n",
           native_fps, 1e3 / native_fps, native_cpu);
    printf("decode + RGB + resize %4dx%-4d  %8.0f frames/s  %6.3f ms/frame wall  %6.3f ms CPU\n",
           rows, cols, resized_fps, 1e3 / resized_fps, resized_cpu);
    printf("u8 HWC -> f32 NCHW  %4dx%-4d    %8.3f ms/frame\n", rows, cols, best_f32 * 1e3);
    printf("u8 HWC -> u8 NCHW   %4dx%-4d    %8.3f ms/frame\n", rows, cols, best_u8 * 1e3);
    ds_tensor_free(&hwc);
    ds_tensor_free(&f32);
    ds_tensor_free(&u8);
    return 0;
}
