/* bench/codec.c - wire bytes and speed of the tensor codec on real frames,
 * next to the original system's encoding of the same tensors.
 *
 *   build/bench/codec [--frames N] [--clip FILE] [--size HxW] [--model SPEC]
 *                     [--threads N] [--layers IDS]
 *   defaults: 50 frames of data/sample.mp4 (run from the repository root) at
 *   480x720, zoo:alexnet, 1 engine thread, speed rows for layers 0,1,3,6,13.
 *
 * Each frame is decoded and resized (src/video), becomes the u8 NCHW tensor
 * we send for layer 0 and the f32 [0,1] input of the network, and one
 * executor (XNNPACK) runs a job with every layer, handing back every layer's
 * output.  For every layer (0 = input, as u8) the bench encodes:
 *   itg: ds_codec_encode with ref = NULL (DENSE or SPARSE, whichever is
 *        smaller), compression none, lz4 and zstd-1;
 *   dif: ds_codec_encode with ref = the previous frame's tensor (frame 0 goes
 *        out as in itg), the same three compressions;
 * and decodes every payload (one receiver cache per layer and compression,
 * checked bit-identical to the sender's tensor after every frame).  One
 * encode scratch and one decode scratch serve all layers, so steady-state
 * frames allocate nothing.
 *
 * The original system's bytes are computed here: per plane (HxW matrix of one
 * channel), CSR with 4-byte float values and 4-byte indices, i.e.
 * nnz*4 + nnz*4 + (rows+1)*4 bytes, when 2*nnz + rows + 1 < rows*cols, else
 * rows*cols*4 bytes of dense floats.  itg: the tensor itself (the input as
 * f32 value/255); dif: the f32 difference cur - prev (the input as
 * differences of value/255).  Headers and framing are not counted for it.
 *
 * Bytes per frame: itg is the mean over all frames, dif the mean over the
 * updates (frames 1..N-1); "best" takes the smallest of the three payloads
 * of each frame.  Speeds are MB/s of dense-equivalent f32 data (numel * 4
 * bytes, also for the u8 input) per second of this thread's CPU time (one
 * core; steady while other processes share the machine), for dif updates
 * from frame 2 on (frame 1 grows the scratch buffers).
 *
 * Targets (PASS/MISS): input layer dif <= 20% of the original's bytes per
 * frame; every other articulation layer (the legal cut points; all of
 * AlexNet's) dif <= 50%; over all layers, update encode and decode >= 500
 * MB/s without compression and with lz4 (zstd-1 is shown for reference).
 * Exits 0 when it ran (whatever the targets say), 1 on errors, 2 on usage. */
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/codec.h"
#include "common/timing.h"
#include "engine/exec.h"
#include "model/model.h"
#include "video/video.h"

#define NVAR 3
static const ds_compress comp[NVAR] = {DS_COMPRESS_NONE, DS_COMPRESS_LZ4, DS_COMPRESS_ZSTD};
static const char *const comp_name[NVAR] = {"none", "lz4", "zstd1"};

#define TARGET_INPUT 0.20
#define TARGET_CUT 0.50
#define TARGET_MBS 500.0

typedef struct layer_stat {
    int64_t numel;
    double orig_itg, orig_dif;    /* summed bytes */
    double itg[NVAR], dif[NVAR];  /* summed payload bytes */
    double itg_best, dif_best;    /* summed per-frame minimum */
    double nonzero, changed;      /* summed element counts */
    double enc_s[NVAR], dec_s[NVAR]; /* CPU seconds of timed updates */
    double pred[NVAR];            /* summed size-model predictions of the updates */
    double abs_err[NVAR];         /* summed |predicted - actual| per update */
    int timed;                    /* updates timed */
} layer_stat;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Rows and columns of the matrices the original sparsified: the last two
 * dims (a 1-d tensor is one row). */
static void plane_geometry(const ds_shape *s, int64_t *planes, int64_t *rows, int64_t *cols)
{
    int64_t n = ds_shape_numel(s);
    *cols = s->dims[s->ndim - 1];
    *rows = s->ndim >= 2 ? s->dims[s->ndim - 2] : 1;
    *planes = n / (*rows * *cols);
}

/* The original system's bytes for x (prev NULL) or x - prev, per plane CSR or
 * dense f32; *nnz gets the nonzero count. */
static double original_bytes(const ds_tensor *x, const ds_tensor *prev, double *nnz)
{
    int64_t planes, rows, cols;
    plane_geometry(&x->shape, &planes, &rows, &cols);
    const float *a = ds_tensor_f32(x), *b = prev ? ds_tensor_f32(prev) : NULL;
    const int64_t plane = rows * cols;
    double bytes = 0, total = 0;
    for (int64_t p = 0; p < planes; p++) {
        const float *pa = a + p * plane, *pb = b ? b + p * plane : NULL;
        int64_t n = 0;
        if (pb) {
            for (int64_t i = 0; i < plane; i++)
                n += pa[i] - pb[i] != 0.0f;
        } else {
            for (int64_t i = 0; i < plane; i++)
                n += pa[i] != 0.0f;
        }
        total += (double)n;
        bytes += 2 * n + rows + 1 < plane ? 4.0 * (double)(2 * n + rows + 1) : 4.0 * (double)plane;
    }
    *nnz = total;
    return bytes;
}

static int parse_ids(const char *s, int *ids, int max, int *n)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1000000 || *n >= max || (*end && *end != ','))
            return -1;
        ids[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return *n ? 0 : -1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: codec [--frames N] [--clip FILE] [--size HxW] [--model SPEC]\n"
            "             [--threads N] [--layers IDS]\n"
            "Bytes per frame of every layer's output in itg and dif mode with the\n"
            "deltaslice codec (none, lz4, zstd-1) next to the original system's\n"
            "per-channel CSR/dense f32 encoding, update encode/decode speed, and\n"
            "PASS/MISS against the targets of issue 4.\n\n"
            "  -f, --frames N    frames to run (default 50)\n"
            "  -c, --clip FILE   video (default data/sample.mp4)\n"
            "  -s, --size HxW    frame size (default 480x720)\n"
            "  -m, --model SPEC  zoo:NAME or .onnx file (default zoo:alexnet)\n"
            "  -t, --threads N   engine threads (default 1; the codec runs on one)\n"
            "  -l, --layers IDS  layers with a speed row (default 0,1,3,6,13)\n"
            "  -h, --help        this help\n");
}

static const char *pass(int ok) { return ok ? "PASS" : "MISS"; }

int main(int argc, char **argv)
{
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_ARENA_MAX, 4);
    static const struct option longs[] = {
        {"frames", required_argument, NULL, 'f'}, {"clip", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},   {"model", required_argument, NULL, 'm'},
        {"threads", required_argument, NULL, 't'}, {"layers", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int frames = 50, rows = 480, cols = 720, threads = 1;
    const char *clip = "data/sample.mp4", *spec = "zoo:alexnet";
    int speed_ids[64] = {0, 1, 3, 6, 13}, n_speed = 5;
    int c;
    while ((c = getopt_long(argc, argv, "f:c:s:m:t:l:h", longs, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'f':
            frames = (int)strtol(optarg, &end, 10);
            if (*end || frames < 2 || frames > 100000) {
                fprintf(stderr, "codec: --frames wants 2..100000\n");
                return 2;
            }
            break;
        case 'c': clip = optarg; break;
        case 's':
            if (sscanf(optarg, "%dx%d", &rows, &cols) != 2 || rows < 1 || cols < 1 ||
                rows > DS_VIDEO_MAX_SIDE || cols > DS_VIDEO_MAX_SIDE) {
                fprintf(stderr, "codec: --size wants HxW\n");
                return 2;
            }
            break;
        case 'm': spec = optarg; break;
        case 't':
            threads = (int)strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 64) {
                fprintf(stderr, "codec: --threads wants 1..64\n");
                return 2;
            }
            break;
        case 'l':
            if (parse_ids(optarg, speed_ids, 64, &n_speed)) {
                fprintf(stderr, "codec: --layers wants comma-separated layer ids\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "codec: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    /* Everything below is released at `out:`, so every error path is one
     * goto (the bench also runs under the sanitizers). */
    int rc = 1;
    ds_error err = {0};
    ds_model m;
    memset(&m, 0, sizeof m);
    ds_video *v = NULL;
    ds_executor *ex = NULL;
    int *ids = NULL, *is_cut = NULL;
    layer_stat *st = NULL;
    ds_tensor *outs = NULL, *prev = NULL, *rx = NULL;
    ds_tensor hwc = {0}, x8 = {0}, xf = {0}, prevf = {0}, check = {0};
    ds_codec_scratch enc = {0}, dec = {0};
    ds_buf out = {0};
    float *frac = NULL;
    size_t frac_cap = 0;
    int L = 0;

    if (ds_model_load(spec, &m, &err) || ds_model_set_input(&m, 1, 3, rows, cols, &err))
        goto fail;
    L = m.n_layers;
    for (int i = 0; i < n_speed; i++)
        if (speed_ids[i] >= L) {
            fprintf(stderr, "codec: --layers: %s has no layer %d (0..%d)\n", spec, speed_ids[i],
                    L - 1);
            rc = 2;
            goto out;
        }
    v = ds_video_open(clip, rows, cols, &err);
    if (!v)
        goto fail;
    ex = ds_executor_new(&m, DS_BACKEND_XNNPACK, threads, &err);
    if (!ex)
        goto fail;
    ids = malloc((size_t)L * sizeof *ids);
    is_cut = calloc((size_t)L, sizeof *is_cut);
    st = calloc((size_t)L, sizeof *st);
    outs = calloc((size_t)L, sizeof *outs);       /* outs[l-1]: layer l */
    prev = calloc((size_t)L, sizeof *prev);       /* prev[0]: u8 input */
    rx = calloc((size_t)NVAR * L, sizeof *rx);    /* receivers' caches */
    if (!ids || !is_cut || !st || !outs || !prev || !rx) {
        ds_errorf(&err, "out of memory");
        goto fail;
    }
    {
        int n_art = ds_model_articulations(&m, ids);
        for (int i = 0; i < n_art; i++)
            is_cut[ids[i]] = 1;
    }
    for (int i = 1; i < L; i++)
        ids[i - 1] = i;
    ds_job job = {L - 1, ids, L - 1, ids};
    const int in_id = 0;
    /* The largest payload (a dense f32 tensor plus header and compression
     * slack) fits the buffer from the start. */
    size_t max_bytes = 0;
    for (int l = 0; l < L; l++) {
        st[l].numel = ds_shape_numel(&m.layers[l].out_shape);
        if ((size_t)st[l].numel * 4 > max_bytes)
            max_bytes = (size_t)st[l].numel * 4;
    }
    if (ds_buf_reserve(&out, max_bytes + max_bytes / 64 + 4096, &err))
        goto fail;

    const int warm = frames >= 3 ? 2 : 1; /* first timed update */
    const int tty = isatty(2);
    int done = 0;
    double t_start = ds_now();
    for (int f = 0; f < frames; f++) {
        int r = ds_video_read(v, &hwc, &err);
        if (r == 0) {
            fprintf(stderr, "codec: %s has only %d frames\n", clip, f);
            break;
        }
        const ds_tensor *inp[1] = {&xf};
        if (r < 0 || ds_frame_u8_hwc_to_nchw(&hwc, &x8, &err) ||
            ds_frame_u8_to_f32_nchw(&hwc, &xf, &err) ||
            ds_executor_run(ex, &job, 1, &in_id, inp, outs, &err))
            goto fail;
        for (int l = 0; l < L; l++) {
            layer_stat *s = &st[l];
            const ds_tensor *cur = l ? &outs[l - 1] : &x8;   /* what we send */
            const ds_tensor *curf = l ? &outs[l - 1] : &xf;  /* what it sent */
            double nnz;
            s->orig_itg += original_bytes(curf, NULL, &nnz);
            s->nonzero += nnz;
            if (f > 0)
                s->orig_dif += original_bytes(curf, l ? &prev[l] : &prevf, &nnz);
            double best_itg = 1e300, best_dif = 1e300;
            for (int k = 0; k < NVAR; k++) {
                /* As the system sends: updates as exact deltas (roles/common.c). */
                ds_codec_opts o = {comp[k], 1, DS_CODEC_EXACT_DELTA};
                ds_tensor *cache = &rx[k * L + l];
                /* itg: no reference.  Frame 0 of dif mode is the same
                 * payload, so it seeds the receiver's cache. */
                out.len = 0;
                if (ds_codec_encode(l, cur, NULL, &o, &enc, &out, &err) ||
                    ds_codec_decode(out.data, out.len, &cur->shape, f ? &check : cache, &dec,
                                    &err)) {
                    ds_error_prefix(&err, "frame %d layer %d itg %s", f, l, comp_name[k]);
                    goto fail;
                }
                if (memcmp((f ? &check : cache)->data, cur->data, ds_tensor_bytes(cur))) {
                    ds_errorf(&err, "frame %d layer %d itg %s: decoded tensor differs", f, l,
                              comp_name[k]);
                    goto fail;
                }
                s->itg[k] += (double)out.len;
                if ((double)out.len < best_itg)
                    best_itg = (double)out.len;
                if (!f)
                    continue;
                /* dif: an update against the previous frame, timed. */
                out.len = 0;
                double t0 = cpu_now();
                int e = ds_codec_encode(l, cur, &prev[l], &o, &enc, &out, &err);
                double t1 = cpu_now();
                if (!e) {
                    /* The scheduler's size model, fed with the true
                     * per-plane changed fractions of this update. */
                    size_t np;
                    const uint32_t *cnt = ds_codec_last_counts(&enc, &np);
                    int64_t planes, plane;
                    ds_codec_planes(&cur->shape, &planes, &plane);
                    if (np > frac_cap) {
                        float *grown = realloc(frac, np * sizeof *frac);
                        if (!grown) {
                            ds_errorf(&err, "out of memory");
                            goto fail;
                        }
                        frac = grown;
                        frac_cap = np;
                    }
                    for (size_t i = 0; i < np; i++) {
                        frac[i] = (float)cnt[i] / (float)plane;
                        if (k == 0)
                            s->changed += cnt[i];
                    }
                    double p = (double)ds_codec_predict_bytes(&cur->shape, cur->dtype, frac, comp[k]);
                    s->pred[k] += p;
                    s->abs_err[k] += fabs(p - (double)out.len);
                }
                double t2 = cpu_now();
                if (!e)
                    e = ds_codec_decode(out.data, out.len, &cur->shape, cache, &dec, &err);
                double t3 = cpu_now();
                if (e) {
                    ds_error_prefix(&err, "frame %d layer %d dif %s", f, l, comp_name[k]);
                    goto fail;
                }
                if (memcmp(cache->data, cur->data, ds_tensor_bytes(cur))) {
                    ds_errorf(&err, "frame %d layer %d dif %s: receiver's cache differs", f, l,
                              comp_name[k]);
                    goto fail;
                }
                s->dif[k] += (double)out.len;
                if ((double)out.len < best_dif)
                    best_dif = (double)out.len;
                if (f >= warm) {
                    s->enc_s[k] += t1 - t0;
                    s->dec_s[k] += t3 - t2;
                }
            }
            s->itg_best += best_itg;
            if (f > 0)
                s->dif_best += best_dif;
            if (f >= warm)
                s->timed++;
            if (ds_tensor_copy(&prev[l], cur, &err) ||
                (l == 0 && ds_tensor_copy(&prevf, &xf, &err)))
                goto fail;
        }
        done++;
        if (tty)
            fprintf(stderr, "\rcodec: frame %d/%d", done, frames);
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (done < 2) {
        ds_errorf(&err, "need at least 2 frames, got %d", done);
        goto fail;
    }
    const int nupd = done - 1;

    const ds_video_info *vi = ds_video_get_info(v);
    printf("codec bench: %s (%dx%d %s) at %dx%d, %s on %s (%d thread%s), %d frames "
           "(%d updates), %.1f s\n",
           clip, vi->width, vi->height, vi->codec, rows, cols, spec,
           ds_backend_name(DS_BACKEND_XNNPACK), threads, threads > 1 ? "s" : "", done, nupd,
           ds_now() - t_start);
    printf("kB = 1000 bytes per frame; orig = per-plane CSR (4-byte values and indices) or "
           "dense f32;\nours = deltaslice payload with header, layer 0 as u8; best = smallest "
           "of none/lz4/zstd1 per frame\n\n");

    char sh[64];
    printf("itg (ref = NULL), mean over %d frames\n", done);
    printf("%3s %-8s %-14s %9s | %6s %9s | %9s %9s %9s %9s | %9s\n", "id", "op", "shape",
           "dense kB", "nz%", "orig kB", "none", "lz4", "zstd1", "best", "best/orig");
    for (int l = 0; l < L; l++) {
        const layer_stat *s = &st[l];
        printf("%3d %-8s %-14s %9.1f | %5.1f%% %9.1f | %9.1f %9.1f %9.1f %9.1f | %8.1f%%\n", l,
               ds_op_name(m.layers[l].op), ds_shape_str(&m.layers[l].out_shape, sh, sizeof sh),
               (double)s->numel * 4 / 1e3, 100 * s->nonzero / ((double)s->numel * done),
               s->orig_itg / done / 1e3, s->itg[0] / done / 1e3, s->itg[1] / done / 1e3,
               s->itg[2] / done / 1e3, s->itg_best / done / 1e3,
               100 * s->itg_best / s->orig_itg);
    }

    printf("\ndif (ref = previous frame), mean over the %d updates (frames 1..%d)\n", nupd,
           done - 1);
    printf("%3s %-8s %-14s %9s | %6s %9s | %9s %9s %9s %9s | %9s %11s\n", "id", "op", "shape",
           "dense kB", "chg%", "orig kB", "none", "lz4", "zstd1", "best", "best/orig",
           "target");
    int input_ok = 1, cuts_ok = 1, n_cuts = 0, n_cuts_ok = 0, worst = -1;
    double worst_ratio = 0;
    for (int l = 0; l < L; l++) {
        const layer_stat *s = &st[l];
        double ratio = s->dif_best / s->orig_dif;
        char target[32] = "-";
        if (l == 0) {
            input_ok = ratio <= TARGET_INPUT;
            snprintf(target, sizeof target, "<=%.0f%% %s", 100 * TARGET_INPUT, pass(input_ok));
        } else if (is_cut[l]) {
            int ok = ratio <= TARGET_CUT;
            n_cuts++;
            n_cuts_ok += ok;
            cuts_ok &= ok;
            if (ratio > worst_ratio) {
                worst_ratio = ratio;
                worst = l;
            }
            snprintf(target, sizeof target, "<=%.0f%% %s", 100 * TARGET_CUT, pass(ok));
        }
        printf("%3d %-8s %-14s %9.1f | %5.1f%% %9.1f | %9.1f %9.1f %9.1f %9.1f | %8.1f%% %11s\n",
               l, ds_op_name(m.layers[l].op),
               ds_shape_str(&m.layers[l].out_shape, sh, sizeof sh), (double)s->numel * 4 / 1e3,
               100 * s->changed / ((double)s->numel * nupd), s->orig_dif / nupd / 1e3,
               s->dif[0] / nupd / 1e3, s->dif[1] / nupd / 1e3, s->dif[2] / nupd / 1e3,
               s->dif_best / nupd / 1e3, 100 * ratio, target);
    }

    printf("\nsize model (ds_codec_predict_bytes from the true per-channel changed fractions)\n"
           "against the dif payloads, mean over the updates: predicted/actual and mean |error|\n");
    printf("%3s %-8s | %15s | %15s | %15s\n", "id", "op", "none", "lz4", "zstd1");
    double all_pred[NVAR] = {0}, all_act[NVAR] = {0}, all_err[NVAR] = {0};
    for (int l = 0; l < L; l++) {
        const layer_stat *s = &st[l];
        printf("%3d %-8s |", l, ds_op_name(m.layers[l].op));
        for (int k = 0; k < NVAR; k++) {
            printf(" %6.2f %6.1f%% %s", s->pred[k] / s->dif[k], 100 * s->abs_err[k] / s->dif[k],
                   k < NVAR - 1 ? "|" : "\n");
            all_pred[k] += s->pred[k];
            all_act[k] += s->dif[k];
            all_err[k] += s->abs_err[k];
        }
    }
    printf("%3s %-8s |", "all", "");
    for (int k = 0; k < NVAR; k++)
        printf(" %6.2f %6.1f%% %s", all_pred[k] / all_act[k], 100 * all_err[k] / all_act[k],
               k < NVAR - 1 ? "|" : "\n");

    int timed = st[0].timed;
    printf("\ndif update speed, MB/s of dense-equivalent f32 (numel*4 bytes) per CPU second "
           "of one thread,\nover the %d updates from frame %d on\n",
           timed, warm);
    printf("%3s %-8s %-14s | %8s %8s | %8s %8s | %8s %8s\n", "id", "op", "shape", "none enc",
           "dec", "lz4 enc", "dec", "zstd1 enc", "dec");
    double tot_mb = 0, tot_enc[NVAR] = {0}, tot_dec[NVAR] = {0};
    for (int l = 0; l < L; l++) {
        tot_mb += (double)st[l].numel * 4 * timed / 1e6;
        for (int k = 0; k < NVAR; k++) {
            tot_enc[k] += st[l].enc_s[k];
            tot_dec[k] += st[l].dec_s[k];
        }
    }
    for (int i = 0; i <= n_speed; i++) {
        const layer_stat *s = i < n_speed ? &st[speed_ids[i]] : NULL;
        double mb = s ? (double)s->numel * 4 * timed / 1e6 : tot_mb;
        if (s)
            printf("%3d %-8s %-14s |", speed_ids[i], ds_op_name(m.layers[speed_ids[i]].op),
                   ds_shape_str(&m.layers[speed_ids[i]].out_shape, sh, sizeof sh));
        else
            printf("%3s %-8s %-14s |", "all", "layers", "");
        for (int k = 0; k < NVAR; k++)
            printf(" %8.0f %8.0f%s", mb / (s ? s->enc_s[k] : tot_enc[k]),
                   mb / (s ? s->dec_s[k] : tot_dec[k]), k < NVAR - 1 ? " |" : "\n");
    }

    printf("\ntargets\n");
    printf("  input layer dif <= %.0f%% of original:       %5.1f%%  %s\n", 100 * TARGET_INPUT,
           100 * st[0].dif_best / st[0].orig_dif, pass(input_ok));
    if (n_cuts)
        printf("  every cut point dif <= %.0f%% of original:   %5.1f%%  %s (%d/%d; worst: "
               "layer %d %s)\n",
               100 * TARGET_CUT, 100 * worst_ratio, pass(cuts_ok), n_cuts_ok, n_cuts, worst,
               worst >= 0 ? ds_op_name(m.layers[worst].op) : "-");
    for (int k = 0; k < 2; k++) {
        double e = tot_mb / tot_enc[k], d = tot_mb / tot_dec[k];
        printf("  update encode >= %.0f MB/s, %-5s all layers: %6.0f  %s\n", TARGET_MBS,
               comp_name[k], e, pass(e >= TARGET_MBS));
        printf("  update decode >= %.0f MB/s, %-5s all layers: %6.0f  %s\n", TARGET_MBS,
               comp_name[k], d, pass(d >= TARGET_MBS));
    }

    rc = 0;
    goto out;
fail:
    fprintf(stderr, "codec: %s\n", err.msg);
out:
    free(frac);
    for (int l = 0; l < L; l++) {
        if (outs)
            ds_tensor_free(&outs[l]);
        if (prev)
            ds_tensor_free(&prev[l]);
        for (int k = 0; rx && k < NVAR; k++)
            ds_tensor_free(&rx[k * L + l]);
    }
    free(outs);
    free(prev);
    free(rx);
    free(st);
    free(ids);
    free(is_cut);
    ds_tensor_free(&hwc);
    ds_tensor_free(&x8);
    ds_tensor_free(&xf);
    ds_tensor_free(&prevf);
    ds_tensor_free(&check);
    ds_codec_scratch_free(&enc);
    ds_codec_scratch_free(&dec);
    ds_buf_free(&out);
    ds_executor_free(ex);
    ds_video_close(v);
    ds_model_free(&m);
    return rc;
}
