/* test_video.c - the FFmpeg video reader: the sample clip, synthetic clips
 * made with the ffmpeg CLI (compared against the CLI's own RGB output), the
 * u8 -> f32 conversions, live sources (lavfi, cameras and streams that fail)
 * and every error the reader promises. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/timing.h"
#include "emulated.h"
#include "video/video.h"

static char tmpdir[64];

/* path inside the test's temp dir (a few static slots, enough per test). */
static const char *tmp(const char *name)
{
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

/* The ffmpeg CLI: DS_FFMPEG, else "ffmpeg" on PATH.  Its RGB output is the
 * bit-for-bit reference, which holds only for an ffmpeg built for the same
 * architecture as the libswscale we link (x86 and arm64 SIMD paths differ by
 * up to 140), so under emulation DS_FFMPEG is the target's ffmpeg run under
 * the emulator (tests/CMakeLists.txt). */
static const char *ffmpeg_cli(void)
{
    const char *f = getenv("DS_FFMPEG");
    return f && *f ? f : "ffmpeg";
}

/* Runs an ffmpeg CLI command line (arguments after "ffmpeg"); fails the test
 * with a clear message when ffmpeg is missing or the command fails. */
static void ffmpeg(const char *fmt, ...)
{
    char args[1024], cmd[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "command -v '%s' >/dev/null 2>&1", ffmpeg_cli());
    if (system(cmd) != 0)
        fail_msg("the ffmpeg CLI (%s) is not installed (apt-get install ffmpeg): "
                 "these tests make their clips with it",
                 ffmpeg_cli());
    snprintf(cmd, sizeof cmd, "'%s' -hide_banner -nostdin -loglevel error -y %s", ffmpeg_cli(),
             args);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static long file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (long)st.st_size;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    uint8_t *d = malloc((size_t)len + 1);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return d;
}

/* Copies the first `keep` bytes of src to dst. */
static void truncate_copy(const char *src, const char *dst, size_t keep)
{
    size_t n;
    uint8_t *d = read_all(src, &n);
    assert_true(keep <= n);
    write_bytes(dst, d, keep);
    free(d);
}

/* Captures stderr (where ds_log writes) into a file between begin and end;
 * end returns the text (free it).  Test failures in between would be
 * captured too, so the captured code only records results. */
static int capture_fd = -1;

static void capture_begin(ds_log_level level)
{
    fflush(stderr);
    capture_fd = dup(STDERR_FILENO);
    FILE *cap = fopen(tmp("stderr.txt"), "w");
    assert_non_null(cap);
    assert_true(dup2(fileno(cap), STDERR_FILENO) >= 0);
    fclose(cap);
    ds_log_set_level(level);
}

static char *capture_end(void)
{
    ds_log_set_level(DS_LOG_ERROR);
    fflush(stderr);
    dup2(capture_fd, STDERR_FILENO);
    close(capture_fd);
    capture_fd = -1;
    size_t len;
    char *text = (char *)read_all(tmp("stderr.txt"), &len);
    text[len] = '\0';
    return text;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds_test_video_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Reads every frame; returns the count, fails the test on a read error. */
static int64_t count_frames(ds_video *v, ds_tensor *t)
{
    ds_error err = {{0}};
    int64_t start = ds_video_frame_index(v) + 1, n = 0;
    int r;
    while ((r = ds_video_read(v, t, &err)) == 1) {
        assert_int_equal(ds_video_frame_index(v), start + n);
        n++;
    }
    if (r < 0)
        fail_msg("read failed: %s", err.msg);
    return n;
}

static void expect_open_error(const char *path, int rows, int cols, const char *needle)
{
    ds_error err = {{0}};
    ds_video *v = ds_video_open(path, rows, cols, &err);
    if (v) {
        ds_video_close(v);
        fail_msg("%s opened; expected an error containing \"%s\"", path, needle);
    }
    if (!strstr(err.msg, path))
        fail_msg("error does not name the file %s: %s", path, err.msg);
    if (!strstr(err.msg, needle))
        fail_msg("error for %s lacks \"%s\": %s", path, needle, err.msg);
}

/* ---- the sample clip -------------------------------------------------------- */

static void test_sample_clip(void **state)
{
    (void)state;
    ds_error err = {{0}};
    const char *path = DS_SOURCE_DIR "/data/sample.mp4";
    ds_video *v = ds_video_open(path, 48, 72, &err);
    if (!v)
        fail_msg("%s", err.msg);
    const ds_video_info *info = ds_video_get_info(v);
    assert_int_equal(info->width, 768);
    assert_int_equal(info->height, 576);
    assert_int_equal(info->rows, 48);
    assert_int_equal(info->cols, 72);
    assert_string_equal(info->codec, "h264");
    assert_true(info->fps > 9.99 && info->fps < 10.01);
    assert_int_equal(info->frame_count, 360);
    assert_int_equal(ds_video_frame_index(v), -1);

    ds_tensor t = {0}, first = {0};
    assert_int_equal(ds_video_read(v, &t, &err), 1);
    assert_int_equal(t.dtype, DS_U8);
    assert_int_equal(t.shape.ndim, 3);
    assert_int_equal(t.shape.dims[0], 48);
    assert_int_equal(t.shape.dims[1], 72);
    assert_int_equal(t.shape.dims[2], 3);
    assert_int_equal(ds_tensor_copy(&first, &t, &err), 0);
    void *buf = t.data;
    assert_int_equal(1 + count_frames(v, &t), 360);
    assert_ptr_equal(t.data, buf); /* the frame buffer was reused */
    assert_int_equal(ds_video_read(v, &t, &err), 0); /* stays at end of file */
    assert_int_equal(ds_video_frame_index(v), 359);

    /* A real scene, not a flat frame: the pixels vary. */
    const uint8_t *p = ds_tensor_u8(&first);
    int lo = 255, hi = 0;
    for (int i = 0; i < 48 * 72 * 3; i++) {
        lo = p[i] < lo ? p[i] : lo;
        hi = p[i] > hi ? p[i] : hi;
    }
    assert_true(hi - lo > 100);

    /* Loop: rewind gives frame 0 again, bit for bit, then frames 1, 2, ... */
    assert_int_equal(ds_video_rewind(v, &err), 0);
    assert_int_equal(ds_video_frame_index(v), -1);
    assert_int_equal(ds_video_read(v, &t, &err), 1);
    assert_int_equal(ds_video_frame_index(v), 0);
    assert_memory_equal(t.data, first.data, 48 * 72 * 3);
    for (int i = 1; i < 5; i++) {
        assert_int_equal(ds_video_read(v, &t, &err), 1);
        assert_int_equal(ds_video_frame_index(v), i);
    }

    ds_video_close(v);
    ds_tensor_free(&t);
    ds_tensor_free(&first);
}

/* ---- synthetic clips ---------------------------------------------------------- */

/* Our frames equal the ffmpeg CLI's rgb24 output with the same swscale
 * flags, at the native size and resized (up and down, odd sizes). */
static void compare_with_cli(const char *clip, int rows, int cols, int nframes)
{
    ds_error err = {{0}};
    if (ds_test_emulated() && !getenv("DS_FFMPEG")) {
        /* The host's ffmpeg is no reference for the target's libswscale. */
        print_message("skipped: emulated, and no target-arch ffmpeg (DS_FFMPEG) to compare with\n");
        skip();
    }
    const char *raw = tmp("ref.rgb");
    if (rows)
        ffmpeg("-i %s -sws_flags bilinear+accurate_rnd -vf scale=%d:%d -pix_fmt rgb24 "
               "-f rawvideo %s",
               clip, cols, rows, raw);
    else
        ffmpeg("-i %s -sws_flags bilinear+accurate_rnd -pix_fmt rgb24 -f rawvideo %s", clip,
               raw);
    size_t n;
    uint8_t *ref = read_all(raw, &n);

    ds_video *v = ds_video_open(clip, rows, cols, &err);
    if (!v)
        fail_msg("%s", err.msg);
    const ds_video_info *info = ds_video_get_info(v);
    size_t fb = (size_t)info->rows * (size_t)info->cols * 3;
    assert_int_equal(n, fb * (size_t)nframes);
    ds_tensor t = {0};
    int maxdiff = 0;
    for (int i = 0; i < nframes; i++) {
        if (ds_video_read(v, &t, &err) != 1)
            fail_msg("frame %d: %s", i, err.msg);
        assert_int_equal(ds_tensor_bytes(&t), fb);
        const uint8_t *a = ds_tensor_u8(&t), *b = ref + fb * (size_t)i;
        for (size_t k = 0; k < fb; k++) {
            int d = abs((int)a[k] - (int)b[k]);
            maxdiff = d > maxdiff ? d : maxdiff;
        }
    }
    assert_int_equal(ds_video_read(v, &t, &err), 0);
    if (maxdiff > 0)
        fail_msg("%s at %dx%d: differs from the ffmpeg CLI by up to %d", clip, rows, cols,
                 maxdiff);
    ds_video_close(v);
    ds_tensor_free(&t);
    free(ref);
}

static void test_synthetic_testsrc(void **state)
{
    (void)state;
    ds_error err = {{0}};
    const char *clip = tmp("testsrc.mkv");
    ffmpeg("-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 20 -c:v mpeg4 -q:v 3 %s", clip);

    ds_video *v = ds_video_open(clip, 0, 0, &err);
    if (!v)
        fail_msg("%s", err.msg);
    const ds_video_info *info = ds_video_get_info(v);
    assert_int_equal(info->width, 64);
    assert_int_equal(info->height, 48);
    assert_int_equal(info->rows, 48);
    assert_int_equal(info->cols, 64);
    assert_string_equal(info->codec, "mpeg4");
    assert_true(info->fps > 9.99 && info->fps < 10.01);
    ds_tensor t = {0};
    assert_int_equal(count_frames(v, &t), 20);
    assert_int_equal(t.shape.dims[0], 48);
    assert_int_equal(t.shape.dims[1], 64);
    ds_video_close(v);
    ds_tensor_free(&t);

    compare_with_cli(clip, 0, 0, 20);
    compare_with_cli(clip, 30, 40, 20);
    compare_with_cli(clip, 47, 71, 20);
    compare_with_cli(clip, 97, 130, 20);

    /* A palette (pal8) source. */
    const char *gif = tmp("testsrc.gif");
    ffmpeg("-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 5 %s", gif);
    compare_with_cli(gif, 30, 40, 5);
}

/* Solid colours come out as that colour in RGB order (within the loss of
 * YUV 4:2:0 and an 8-bit round trip), at any output size. */
static void test_solid_colours(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int rgb[3];
    } colours[] = {{"red", {255, 0, 0}},
                   {"lime", {0, 255, 0}},
                   {"blue", {0, 0, 255}},
                   /* Mid tones would be 10+ off with a wrong range or matrix. */
                   {"0x303030", {48, 48, 48}},
                   {"0x407090", {64, 112, 144}}};
    const size_t ncol = sizeof colours / sizeof colours[0];
    /* Limited-range YUV (H.264), full-range YUV (MJPEG's yuvj420p) and 10-bit
     * 4:4:4 (VP9) sources.  (GIF dithers in the encoder: compared with the
     * CLI in test_synthetic_testsrc instead.) */
    static const char *const codecs[] = {"-c:v libx264 -pix_fmt yuv420p -qp 0",
                                         "-c:v mjpeg -pix_fmt yuvj420p -q:v 2",
                                         "-c:v libvpx-vp9 -pix_fmt yuv444p10le -lossless 1"};
    static const char *const files[] = {"solid.mkv", "solid.avi", "solid.webm"};
    for (size_t c = 0; c < ncol * 3; c++) {
        ds_error err = {{0}};
        const char *clip = tmp(files[c % 3]);
        ffmpeg("-f lavfi -i color=c=%s:size=64x48:rate=10 -frames:v 3 %s %s",
               colours[c / 3].name, codecs[c % 3], clip);
        ds_video *v = ds_video_open(clip, 24, 36, &err);
        if (!v)
            fail_msg("%s", err.msg);
        ds_tensor t = {0};
        for (int f = 0; f < 3; f++) {
            assert_int_equal(ds_video_read(v, &t, &err), 1);
            const uint8_t *p = ds_tensor_u8(&t);
            for (int px = 0; px < 24 * 36; px += 97)
                for (int k = 0; k < 3; k++)
                    if (abs(p[3 * px + k] - colours[c / 3].rgb[k]) > 4)
                        fail_msg("%s %s: frame %d pixel %d channel %d = %d, expected %d",
                                 files[c % 3], colours[c / 3].name, f, px, k, p[3 * px + k],
                                 colours[c / 3].rgb[k]);
        }
        assert_int_equal(ds_video_read(v, &t, &err), 0);
        ds_video_close(v);
        ds_tensor_free(&t);
    }
}

/* ---- conversions ---------------------------------------------------------- */

static void test_conversions(void **state)
{
    (void)state;
    ds_error err = {{0}};
    const int H = 7, W = 37; /* 259 pixels x 3: every byte value occurs */
    ds_tensor hwc = {0}, f = {0}, u = {0}, f2 = {0};
    ds_shape s = ds_shape_make(3, (const int64_t[]){H, W, 3});
    assert_int_equal(ds_tensor_reserve(&hwc, &s, DS_U8, &err), 0);
    uint8_t *p = ds_tensor_u8(&hwc);
    for (int i = 0; i < H * W * 3; i++)
        p[i] = (uint8_t)((i * 7) % 256);

    assert_int_equal(ds_frame_u8_to_f32_nchw(&hwc, &f, &err), 0);
    assert_int_equal(ds_frame_u8_hwc_to_nchw(&hwc, &u, &err), 0);
    ds_shape nchw = ds_shape_nchw(1, 3, H, W);
    assert_true(ds_shape_equal(&f.shape, &nchw));
    assert_true(ds_shape_equal(&u.shape, &nchw));
    assert_int_equal(f.dtype, DS_F32);
    assert_int_equal(u.dtype, DS_U8);
    const float *fv = ds_tensor_f32(&f);
    const uint8_t *uv = ds_tensor_u8(&u);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                uint8_t b = p[(y * W + x) * 3 + c];
                size_t o = ((size_t)c * H + y) * W + x;
                assert_int_equal(uv[o], b);
                float want = (float)b / 255.0f;
                /* bit-exact, not approximately equal */
                assert_memory_equal(&fv[o], &want, sizeof want);
            }
    assert_true(fv[0] == 0.0f);

    /* The wire path (u8 NCHW -> f32, as a worker converts a received
     * frame) gives the same bits as the direct one. */
    assert_int_equal(ds_tensor_u8_to_f32(&u, &f2, &err), 0);
    assert_true(ds_shape_equal(&f2.shape, &nchw));
    assert_memory_equal(f2.data, f.data, (size_t)H * W * 3 * sizeof(float));

    /* 255 maps to exactly 1. */
    p[0] = 255;
    assert_int_equal(ds_frame_u8_to_f32_nchw(&hwc, &f, &err), 0);
    assert_true(ds_tensor_f32(&f)[0] == 1.0f);

    /* Wrong inputs are rejected, not read. */
    ds_tensor bad = {0};
    ds_shape s4 = ds_shape_make(3, (const int64_t[]){H, W, 4});
    assert_int_equal(ds_tensor_reserve(&bad, &s4, DS_U8, &err), 0);
    assert_int_equal(ds_frame_u8_to_f32_nchw(&bad, &f, &err), -1);
    assert_int_equal(ds_frame_u8_hwc_to_nchw(&bad, &u, &err), -1);
    assert_int_equal(ds_tensor_reserve(&bad, &s, DS_F32, &err), 0);
    assert_int_equal(ds_frame_u8_to_f32_nchw(&bad, &f, &err), -1);
    assert_int_equal(ds_tensor_u8_to_f32(&f, &f2, &err), -1); /* f32 input */

    ds_tensor_free(&hwc);
    ds_tensor_free(&f);
    ds_tensor_free(&u);
    ds_tensor_free(&f2);
    ds_tensor_free(&bad);
}

/* ---- errors ----------------------------------------------------------------- */

static void test_open_errors(void **state)
{
    (void)state;
    expect_open_error(tmp("missing.mp4"), 0, 0, "No such file");
    expect_open_error(tmpdir, 0, 0, "directory");

    const char *empty = tmp("empty.mp4");
    write_bytes(empty, "", 0);
    expect_open_error(empty, 0, 0, "empty file");

    const char *text = tmp("notes.mp4");
    const char *words = "These are meeting notes, not a video.\nSecond line.\n";
    write_bytes(text, words, strlen(words));
    expect_open_error(text, 0, 0, "not a video");

    /* An audio-only file is a media file without a video stream. */
    const char *wav = tmp("tone.wav");
    ffmpeg("-f lavfi -i sine=duration=0.3 %s", wav);
    expect_open_error(wav, 0, 0, "no video stream");

    /* A video stream whose codec this FFmpeg cannot decode: an AVI whose
     * FourCC is patched to one nobody knows. */
    const char *avi = tmp("clip.avi"), *odd = tmp("odd.avi");
    ffmpeg("-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 3 -c:v mpeg4 %s", avi);
    size_t n;
    uint8_t *d = read_all(avi, &n);
    int patched = 0;
    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(d + i, "FMP4", 4) == 0) {
            memcpy(d + i, "QQQQ", 4);
            patched++;
        }
    assert_true(patched > 0);
    write_bytes(odd, d, n);
    free(d);
    expect_open_error(odd, 0, 0, "no decoder");

    /* A video stream with zero frames. */
    const char *zero = tmp("zero.avi");
    ffmpeg("-f lavfi -i color=c=red:size=64x48:rate=10 -t 0 -c:v mpeg4 %s", zero);
    expect_open_error(zero, 0, 0, "no frames");

    /* Bad frame sizes are refused before the file is touched. */
    const char *clip = DS_SOURCE_DIR "/data/sample.mp4";
    expect_open_error(clip, -1, 10, "frame size");
    expect_open_error(clip, 10, 0, "frame size");
    expect_open_error(clip, 10, DS_VIDEO_MAX_SIDE + 1, "frame size");

    ds_error err = {{0}};
    assert_null(ds_video_open(NULL, 0, 0, &err));
    assert_null(ds_video_open("", 0, 0, &err));
    assert_int_equal(ds_video_read(NULL, NULL, &err), -1);
    assert_int_equal(ds_video_frame_index(NULL), -1);
    ds_video_close(NULL);
}

/* A file cut in half.  Where the demuxer hands over the partial packet
 * (MP4 with its index in front, as cameras and streaming write it) the read
 * fails with an error naming the file, the frame and the truncation; where it
 * drops it (Matroska) the read ends cleanly.  Either way the frames before the
 * cut are the full file's frames, never a half-decoded one. */
static void check_truncated(const char *full, const char *cut, int expect_error)
{
    truncate_copy(full, cut, (size_t)file_size(full) / 2);
    ds_error err = {{0}};
    ds_video *a = ds_video_open(full, 0, 0, &err);
    if (!a)
        fail_msg("%s", err.msg);
    ds_video *b = ds_video_open(cut, 0, 0, &err);
    if (!b)
        fail_msg("%s", err.msg);
    ds_tensor ta = {0}, tb = {0};
    int64_t n = 0;
    int r;
    while ((r = ds_video_read(b, &tb, &err)) == 1) {
        assert_int_equal(ds_video_read(a, &ta, &err), 1);
        assert_int_equal(ds_tensor_bytes(&ta), ds_tensor_bytes(&tb));
        if (memcmp(ta.data, tb.data, ds_tensor_bytes(&ta)) != 0)
            fail_msg("%s: frame %lld differs from the full file's", cut, (long long)n);
        n++;
    }
    if (n < 5 || n >= 30)
        fail_msg("%s: %lld frames before the cut, expected 5..29", cut, (long long)n);
    if (expect_error) {
        if (r != -1)
            fail_msg("%s: expected a truncation error, got end of file", cut);
        char frame_no[32];
        snprintf(frame_no, sizeof frame_no, "frame %lld", (long long)n);
        if (!strstr(err.msg, cut) || !strstr(err.msg, "truncated") || !strstr(err.msg, frame_no))
            fail_msg("expected file, \"%s\" and \"truncated\" in: %s", frame_no, err.msg);
    } else if (r != 0) {
        fail_msg("%s: expected end of file, got: %s", cut, err.msg);
    }
    ds_video_close(a);
    ds_video_close(b);
    ds_tensor_free(&ta);
    ds_tensor_free(&tb);
}

static void test_truncated(void **state)
{
    (void)state;
    const char *src = "-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 30 -c:v mpeg4 -g 5";
    ffmpeg("%s -movflags +faststart %s", src, tmp("full.mp4"));
    check_truncated(tmp("full.mp4"), tmp("cut.mp4"), 1);
    ffmpeg("%s %s", src, tmp("full.mkv"));
    check_truncated(tmp("full.mkv"), tmp("cut.mkv"), 0);

    /* An MP4 whose index (moov) was at the end: nothing to play. */
    const char *mp4 = tmp("tail.mp4"), *mp4cut = tmp("tailcut.mp4");
    ffmpeg("%s %s", src, mp4);
    truncate_copy(mp4, mp4cut, (size_t)file_size(mp4) / 2);
    expect_open_error(mp4cut, 0, 0, "not a video");
}

/* Garbage over the middle of a stream.  Damage FFmpeg can conceal gives a
 * frame and a warning; a packet the decoder rejects fails that read with the
 * file and frame, and reading goes on.  Frame numbers stay those of the file. */
static void damaged_clip(const char *clip, const char *bad, int nframes, int *errors,
                         int *warnings)
{
    size_t n;
    uint8_t *d = read_all(clip, &n);
    uint32_t x = 12345;
    for (size_t i = n / 2; i < n / 2 + 300 && i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift: fixed garbage */
        d[i] = (uint8_t)x;
    }
    write_bytes(bad, d, n);
    free(d);

    capture_begin(DS_LOG_WARN);
    ds_error err = {{0}};
    char first_error[DS_ERROR_MAX] = "";
    int64_t frames = 0, last = -1, bad_index = -1;
    int r = -1, order_ok = 1;
    *errors = 0;
    ds_video *v = ds_video_open(bad, 0, 0, &err);
    ds_tensor t = {0};
    if (v) {
        while ((r = ds_video_read(v, &t, &err)) != 0 && frames + *errors <= nframes) {
            if (r < 0) {
                if (!*errors) {
                    snprintf(first_error, sizeof first_error, "%s", err.msg);
                    bad_index = ds_video_frame_index(v); /* the lost frame */
                }
                (*errors)++;
                order_ok &= ds_video_frame_index(v) > last;
                last = ds_video_frame_index(v);
                continue;
            }
            order_ok &= ds_video_frame_index(v) > last;
            last = ds_video_frame_index(v);
            frames++;
        }
        ds_video_close(v);
    }

    char *text = capture_end();
    ds_tensor_free(&t);
    if (!v)
        fail_msg("%s", err.msg);
    assert_int_equal(r, 0);
    assert_true(order_ok);
    *warnings = strstr(text, bad) && strstr(text, ": damaged in the file") ? 1 : 0;
    if (*errors) {
        char want[64];
        snprintf(want, sizeof want, ": frame %lld: decode error", (long long)bad_index);
        if (!strstr(first_error, bad) || !strstr(first_error, want))
            fail_msg("expected \"%s\" and \"%s\" in: %s", bad, want, first_error);
    }
    /* Every frame of the file is either returned or reported lost, except
     * what the demuxer skips while resynchronising (a Matroska cluster). */
    if (frames + *errors < nframes - 6)
        fail_msg("%s: %lld frames + %d errors of %d", bad, (long long)frames, *errors, nframes);
    free(text);
}

static void test_damaged_middle(void **state)
{
    (void)state;
    int errors, warnings;
    /* H.264 in MP4: the garbage breaks a NAL length, the decoder rejects it. */
    ffmpeg("-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 30 -c:v libx264 -g 5 "
           "-pix_fmt yuv420p -movflags +faststart %s",
           tmp("h264.mp4"));
    damaged_clip(tmp("h264.mp4"), tmp("bad_h264.mp4"), 30, &errors, &warnings);
    assert_true(errors >= 1);
    /* MPEG-4 part 2 in Matroska: concealed, with a warning. */
    ffmpeg("-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 30 -c:v mpeg4 -g 5 %s",
           tmp("mpeg4.mkv"));
    damaged_clip(tmp("mpeg4.mkv"), tmp("bad_mpeg4.mkv"), 30, &errors, &warnings);
    assert_true(warnings);
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* The stream changes size mid-way and back (MPEG-TS clips back to back, as
 * a reconfigured camera would send): every frame still comes out at the
 * size chosen at open, with the new content, and the first change is
 * logged once at warn. */
static void test_size_change(void **state)
{
    (void)state;
    const char *a = tmp("a.ts"), *b = tmp("b.ts"), *aba = tmp("aba.ts");
    ffmpeg("-f lavfi -i testsrc=size=64x48:rate=10 -frames:v 10 -c:v mpeg2video %s", a);
    ffmpeg("-f lavfi -i color=c=blue:size=32x24:rate=10 -frames:v 10 -c:v mpeg2video %s", b);
    size_t na, nb;
    uint8_t *da = read_all(a, &na), *db = read_all(b, &nb);
    uint8_t *all = malloc(2 * na + nb);
    assert_non_null(all);
    memcpy(all, da, na);
    memcpy(all + na, db, nb);
    memcpy(all + na + nb, da, na);
    write_bytes(aba, all, 2 * na + nb);
    free(da);
    free(db);
    free(all);

    ds_error err = {{0}};
    capture_begin(DS_LOG_WARN);
    ds_video *v = ds_video_open(aba, 0, 0, &err);
    ds_tensor t = {0};
    int64_t n = 0, blue_at = -1;
    int r = -1, sizes_ok = 1;
    while (v && (r = ds_video_read(v, &t, &err)) == 1) {
        sizes_ok &= t.shape.dims[0] == 48 && t.shape.dims[1] == 64;
        const uint8_t *p = ds_tensor_u8(&t);
        if (blue_at < 0 && p[0] < 8 && p[1] < 8 && p[2] > 247 && p[3 * 2000 + 2] > 247)
            blue_at = n;
        n++;
    }
    char *log = capture_end();
    if (!v || r < 0)
        fail_msg("%s", err.msg);
    assert_true(sizes_ok);
    assert_true(n >= 27 && n <= 30); /* MPEG-TS may lose a frame at a splice */
    if (blue_at < 9 || blue_at > 10)
        fail_msg("the blue 32x24 part starts at frame %lld, expected 9 or 10", (long long)blue_at);
    /* Once, at warn, naming the source, the frame and both sizes. */
    char want[512];
    snprintf(want, sizeof want,
             "%s: frame %lld: resolution changed from 64x48 to 32x24; rescaling to 48x64 "
             "(rows x cols)",
             aba, (long long)blue_at);
    if (!strstr(log, want) || count_of(log, "resolution changed") != 1)
        fail_msg("expected \"%s\" once in the log:\n%s", want, log);
    free(log);
    ds_video_close(v);
    ds_tensor_free(&t);
}

/* swscale writes into the caller's tensor: it must stay inside the frame's
 * bytes for odd sizes too (FFmpeg is not instrumented by ASan, so check with
 * a sentinel tail).  Also a 1x1 output and an odd-sized source. */
static void test_no_overrun(void **state)
{
    (void)state;
    const char *clip = tmp("odd.mkv");
    ffmpeg("-f lavfi -i testsrc=size=63x47:rate=10 -frames:v 3 -c:v ffv1 -pix_fmt yuv420p %s",
           clip);
    static const int sizes[][2] = {{0, 0}, {47, 71}, {1, 1}, {5, 3}, {33, 129}, {240, 361}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        ds_error err = {{0}};
        ds_video *v = ds_video_open(clip, sizes[k][0], sizes[k][1], &err);
        if (!v)
            fail_msg("%s", err.msg);
        const ds_video_info *info = ds_video_get_info(v);
        size_t fb = (size_t)info->rows * (size_t)info->cols * 3, slack = 4096;
        ds_tensor t = {0};
        ds_shape big = ds_shape_make(1, (const int64_t[]){(int64_t)(fb + slack)});
        assert_int_equal(ds_tensor_reserve(&t, &big, DS_U8, &err), 0);
        memset(t.data, 0xA5, fb + slack);
        for (int f = 0; f < 3; f++) {
            assert_int_equal(ds_video_read(v, &t, &err), 1);
            assert_int_equal(ds_tensor_bytes(&t), fb);
            const uint8_t *tail = ds_tensor_u8(&t) + fb;
            for (size_t i = 0; i < slack; i++)
                if (tail[i] != 0xA5)
                    fail_msg("%dx%d: byte %zu past the frame was written", info->rows,
                             info->cols, i);
        }
        assert_int_equal(info->rows, sizes[k][0] ? sizes[k][0] : 47);
        assert_int_equal(info->cols, sizes[k][1] ? sizes[k][1] : 63);
        ds_video_close(v);
        ds_tensor_free(&t);
    }
}

static char *base64(const uint8_t *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    assert_non_null(out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) |
                     (i + 2 < n ? d[i + 2] : 0);
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Rewind on an input that cannot seek (FFmpeg's data: URI protocol has no
 * seek): the reader reopens it and plays the clip again from frame 0. */
static void test_rewind_unseekable(void **state)
{
    (void)state;
    const char *clip = tmp("stream.ts");
    /* Bigger than FFmpeg's 32 KiB I/O buffer, so it cannot seek back in it. */
    ffmpeg("-f lavfi -i testsrc=size=640x480:rate=10 -frames:v 12 -c:v mpeg2video -q:v 1 %s",
           clip);
    size_t n;
    uint8_t *d = read_all(clip, &n);
    assert_true(n > 40000);
    char *b64 = base64(d, n);
    free(d);
    size_t len = strlen(b64) + 64;
    char *uri = malloc(len);
    assert_non_null(uri);
    snprintf(uri, len, "data:video/mp2t;base64,%s", b64);
    free(b64);

    ds_error err = {{0}};
    ds_video *v = ds_video_open(uri, 0, 0, &err);
    if (!v)
        fail_msg("%s", err.msg);
    ds_tensor t = {0}, first = {0};
    assert_int_equal(ds_video_read(v, &t, &err), 1);
    assert_int_equal(ds_tensor_copy(&first, &t, &err), 0);
    assert_int_equal(1 + count_frames(v, &t), 12);
    for (int pass = 0; pass < 2; pass++) {
        capture_begin(DS_LOG_DEBUG);
        int r = ds_video_rewind(v, &err);
        char *log = capture_end();
        if (r)
            fail_msg("%s", err.msg);
        assert_non_null(strstr(log, "cannot seek back, reopening data:"));
        free(log);
        assert_int_equal(ds_video_frame_index(v), -1);
        assert_int_equal(ds_video_read(v, &t, &err), 1);
        assert_int_equal(ds_video_frame_index(v), 0);
        assert_memory_equal(t.data, first.data, ds_tensor_bytes(&first));
        assert_int_equal(1 + count_frames(v, &t), 12);
    }
    ds_video_close(v);
    ds_tensor_free(&t);
    ds_tensor_free(&first);
    free(uri);
}

/* ---- live sources ------------------------------------------------------------ */

/* FFmpeg's virtual camera: size, rate, kind and timestamps; resized too. */
static void test_lavfi(void **state)
{
    (void)state;
    ds_error err = {{0}};
    const char *src = "lavfi:testsrc2=size=320x240:rate=30";
    ds_video_opts o = {0};
    ds_video *v = ds_video_open_with(src, &o, &err);
    if (!v)
        fail_msg("%s", err.msg);
    const ds_video_info *info = ds_video_get_info(v);
    assert_string_equal(info->path, src);
    assert_int_equal(info->kind, DS_SOURCE_VIRTUAL);
    assert_int_equal(info->width, 320);
    assert_int_equal(info->height, 240);
    assert_int_equal(info->rows, 240);
    assert_int_equal(info->cols, 320);
    assert_true(fabs(info->fps - 30) < 1e-9);
    assert_int_equal(info->frame_count, -1);
    assert_true(isnan(ds_video_frame_time(v)));
    ds_tensor t = {0};
    for (int i = 0; i < 5; i++) {
        if (ds_video_read(v, &t, &err) != 1)
            fail_msg("frame %d: %s", i, err.msg);
        assert_int_equal(ds_video_frame_index(v), i);
        assert_true(fabs(ds_video_frame_time(v) - i / 30.0) < 1e-6);
    }
    assert_int_equal(t.shape.dims[0], 240);
    assert_int_equal(t.shape.dims[1], 320);
    ds_video_close(v);

    /* Resized, and a graph with an end ends like a file. */
    o.rows = 60;
    o.cols = 80;
    v = ds_video_open_with("lavfi:testsrc2=size=320x240:rate=30:duration=0.2", &o, &err);
    if (!v)
        fail_msg("%s", err.msg);
    assert_int_equal(count_frames(v, &t), 6);
    assert_int_equal(t.shape.dims[0], 60);
    assert_int_equal(t.shape.dims[1], 80);
    ds_video_close(v);
    ds_tensor_free(&t);
}

/* A TCP port on loopback that nobody listens on (bound, then closed). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A server that accepts connections (the kernel does, from the backlog) and
 * never answers: only a timeout gets a reader out.  Returns the socket. */
static int silent_server(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void expect_live_error(const char *src, const ds_video_opts *o, const char *shown,
                              const char *needle, const char *needle2)
{
    ds_error err = {{0}};
    ds_video *v = ds_video_open_with(src, o, &err);
    if (v) {
        ds_video_close(v);
        fail_msg("%s opened; expected an error containing \"%s\"", src, needle);
    }
    if (!strstr(err.msg, shown))
        fail_msg("error does not name the source %s: %s", shown, err.msg);
    if (!strstr(err.msg, needle) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("error for %s lacks \"%s\"%s%s: %s", src, needle, needle2 ? " or " : "",
                 needle2 ? needle2 : "", err.msg);
}

/* Cameras that are not there, graphs that do not parse, servers that are
 * down or silent: each fails at open with the source and what to check,
 * and a silent server within the timeout. */
static void test_live_errors(void **state)
{
    (void)state;
    ds_video_opts o = {.timeout = 0.5};
    expect_live_error("/dev/video99", &o, "/dev/video99", "cannot open the camera",
                      "is the camera connected?");
    /* (qemu-user answers an ioctl it does not know with ENOSYS instead.) */
    expect_live_error("/dev/null", &o, "/dev/null", "cannot open the camera",
                      ds_test_emulated() ? NULL : "not a V4L2 device");
    expect_live_error("lavfi:", &o, "lavfi:", "no filter graph", NULL);
    expect_live_error("lavfi:nosuchfilter=size=8x8", &o, "lavfi:nosuchfilter",
                      "cannot open the virtual device", "nosuchfilter");

    char url[128], shown[128];
    int port = closed_port();
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    expect_live_error(url, &o, url, "cannot open the stream: Connection refused",
                      "is the server up");
    /* An IP camera's password never reaches a message. */
    snprintf(url, sizeof url, "rtsp://admin:s3cret@127.0.0.1:%d/stream1", port);
    snprintf(shown, sizeof shown, "rtsp://admin:***@127.0.0.1:%d/stream1", port);
    expect_live_error(url, &o, shown, "Connection refused", NULL);
    ds_error err = {{0}};
    assert_null(ds_video_open_with(url, &o, &err));
    assert_null(strstr(err.msg, "s3cret"));

    /* Silent servers (HTTP, RTSP): the timeout ends the wait. */
    static const char *const schemes[] = {"http", "rtsp"};
    for (int i = 0; i < 2; i++) {
        int fd = silent_server(&port);
        snprintf(url, sizeof url, "%s://127.0.0.1:%d/live", schemes[i], port);
        double t0 = ds_now();
        expect_live_error(url, &o, url, "nothing received for 0.5 s (video.timeout)",
                          "is the server up and reachable?");
        double took = ds_now() - t0;
        close(fd);
        if (took > 5) /* 10x the timeout: it did not hang */
            fail_msg("%s: the timeout of 0.5 s took %.1f s", url, took);
    }

    /* Options are checked before anything is opened. */
    ds_video_opts bad = {.input_rows = 480};
    expect_live_error("/dev/video0", &bad, "/dev/video0", "capture size", NULL);
    bad = (ds_video_opts){.timeout = -1};
    expect_live_error("tcp://127.0.0.1:1", &bad, "tcp://127.0.0.1:1", "timeout", NULL);
    bad = (ds_video_opts){.fps = NAN};
    expect_live_error("/dev/video0", &bad, "/dev/video0", "frame rate", NULL);
}

int main(void)
{
    ds_log_init("test_video", DS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_clip),     cmocka_unit_test(test_synthetic_testsrc),
        cmocka_unit_test(test_solid_colours),   cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_open_errors),     cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_damaged_middle),  cmocka_unit_test(test_size_change),
        cmocka_unit_test(test_no_overrun),      cmocka_unit_test(test_rewind_unseekable),
        cmocka_unit_test(test_lavfi),           cmocka_unit_test(test_live_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
