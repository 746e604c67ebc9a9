/* video.c - FFmpeg demux + decode + swscale to RGB24 (see video.h). */
#include "video.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "common/log.h"

struct ds_video {
    char *path;
    ds_video_info info;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    const AVCodec *codec;
    int stream;
    AVPacket *pkt;
    AVFrame *frame;
    int pending;    /* frame holds a decoded frame not yet returned */
    int flushed;    /* end of input reached and the decoder drained */
    int64_t next;   /* index of the next frame to return */
    int64_t warned; /* frame index of the last concealment warning */
    int eof_warned; /* the short-file warning was given (once per pass) */
    int64_t truncated; /* byte offset of a packet cut off by the end; -1 none */
    int64_t first_pts; /* timestamp of frame 0, to check a rewinding seek */
    /* swscale context and the source parameters it was built for. */
    struct SwsContext *sws;
    int sws_w, sws_h, sws_fmt, sws_cs, sws_range;
};

/* ---- FFmpeg logging -> ds_log (debug) --------------------------------- */

/* The last error line FFmpeg logged on this thread, appended to our own
 * messages: "Invalid data found" alone does not say "moov atom not found". */
static _Thread_local char av_last_error[160];

static void av_log_to_ds(void *avcl, int level, const char *fmt, va_list ap)
{
    int debug = ds_log_get_level() <= DS_LOG_DEBUG;
    if (level > av_log_get_level() || (!debug && level > AV_LOG_ERROR))
        return;
    char line[1024];
    int prefix = 1;
    va_list copy;
    va_copy(copy, ap);
    av_log_format_line2(avcl, level, fmt, copy, line, sizeof line, &prefix);
    va_end(copy);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (!n)
        return;
    if (level <= AV_LOG_ERROR) {
        /* Drop FFmpeg's "[mov,mp4,... @ 0x55...] " prefix: the address is noise. */
        const char *msg = line;
        if (line[0] == '[' && strstr(line, "] "))
            msg = strstr(line, "] ") + 2;
        size_t len = strlen(msg);
        if (len >= sizeof av_last_error)
            len = sizeof av_last_error - 1;
        memcpy(av_last_error, msg, len);
        av_last_error[len] = '\0';
    }
    if (debug)
        ds_log_debug("ffmpeg: %s", line);
}

/* ", ffmpeg: <last error line>" or "" (and forgets it). */
static const char *av_error_detail(char *buf, size_t len)
{
    buf[0] = '\0';
    if (av_last_error[0])
        snprintf(buf, len, "; ffmpeg: %s", av_last_error);
    av_last_error[0] = '\0';
    return buf;
}

static pthread_once_t log_setup_once = PTHREAD_ONCE_INIT;

static void av_log_setup(void)
{
    av_log_set_level(AV_LOG_WARNING);
    av_log_set_callback(av_log_to_ds);
}

static const char *av_strerr(int code, char *buf, size_t len)
{
    if (av_strerror(code, buf, len) < 0)
        snprintf(buf, len, "error %d", code);
    return buf;
}

/* ---- opening ------------------------------------------------------------ */

static int64_t estimate_frames(const AVFormatContext *fmt, const AVStream *st, double fps)
{
    if (st->nb_frames > 0)
        return st->nb_frames;
    double secs = -1;
    if (st->duration > 0 && st->time_base.num > 0 && st->time_base.den > 0)
        secs = (double)st->duration * av_q2d(st->time_base);
    else if (fmt->duration > 0)
        secs = (double)fmt->duration / AV_TIME_BASE;
    if (secs > 0 && fps > 0)
        return (int64_t)(secs * fps + 0.5);
    return -1;
}

/* Explains a failed avformat_open_input: FFmpeg says "Invalid data" for a
 * 0-byte file and for a text file alike. */
static int open_error(ds_error *err, const char *path, int code)
{
    char e[128], d[200];
    struct stat st;
    if (!strstr(path, "://") && stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return ds_errorf(err, "%s: is a directory, not a video file", path);
        if (S_ISREG(st.st_mode) && st.st_size == 0)
            return ds_errorf(err, "%s: empty file (0 bytes), not a video", path);
        if (code == AVERROR_INVALIDDATA)
            return ds_errorf(err, "%s: not a video file FFmpeg can read (%s%s)", path,
                             av_strerr(code, e, sizeof e), av_error_detail(d, sizeof d));
    }
    return ds_errorf(err, "%s: cannot open: %s%s", path, av_strerr(code, e, sizeof e),
                     av_error_detail(d, sizeof d));
}

/* Opens the container and the decoder of its best video stream. */
static int open_input(ds_video *v, ds_error *err)
{
    const char *path = v->path;
    char e[128], d[200];
    av_last_error[0] = '\0';
    int r = avformat_open_input(&v->fmt, path, NULL, NULL);
    if (r < 0)
        return open_error(err, path, r);
    r = avformat_find_stream_info(v->fmt, NULL);
    if (r < 0)
        return ds_errorf(err, "%s: cannot read stream info: %s%s", path, av_strerr(r, e, sizeof e),
                         av_error_detail(d, sizeof d));

    const AVCodec *codec = NULL;
    r = av_find_best_stream(v->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (r == AVERROR_DECODER_NOT_FOUND || (r >= 0 && !codec)) {
        int idx = av_find_best_stream(v->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
        const AVCodecParameters *par = idx >= 0 ? v->fmt->streams[idx]->codecpar : NULL;
        char tag[AV_FOURCC_MAX_STRING_SIZE] = "?";
        if (par)
            av_fourcc_make_string(tag, par->codec_tag);
        return ds_errorf(err, "%s: no decoder for its video codec \"%s\" (tag %s) in this FFmpeg",
                         path, par ? avcodec_get_name(par->codec_id) : "unknown", tag);
    }
    if (r < 0)
        return ds_errorf(err, "%s: no video stream (%s container with %u stream(s), none video)",
                         path, v->fmt->iformat->name, v->fmt->nb_streams);
    AVStream *st = v->fmt->streams[r];
    if (st->disposition & AV_DISPOSITION_ATTACHED_PIC)
        return ds_errorf(err, "%s: no video stream (only a still picture)", path);
    v->stream = r;
    v->codec = codec;

    v->dec = avcodec_alloc_context3(codec);
    if (!v->dec)
        return ds_errorf(err, "%s: out of memory allocating the decoder", path);
    r = avcodec_parameters_to_context(v->dec, st->codecpar);
    if (r < 0)
        return ds_errorf(err, "%s: bad codec parameters: %s", path, av_strerr(r, e, sizeof e));
    /* One thread: the master has other work for the second core, and frame
     * threading would add frames of latency. */
    v->dec->thread_count = 1;
    v->dec->pkt_timebase = st->time_base;
    r = avcodec_open2(v->dec, codec, NULL);
    if (r < 0)
        return ds_errorf(err, "%s: cannot open the %s decoder: %s", path, codec->name,
                         av_strerr(r, e, sizeof e));
    return 0;
}

static void close_input(ds_video *v)
{
    avcodec_free_context(&v->dec);
    avformat_close_input(&v->fmt);
    v->pending = 0;
    v->flushed = 0;
    v->eof_warned = 0;
    v->truncated = -1;
    v->next = 0;
}

/* ---- decoding ----------------------------------------------------------- */

enum { NEED_INPUT = 2 }; /* receive_frame: the decoder wants a packet */

/* Takes a decoded frame into v->frame: 1 frame, 0 end of stream, -1 error,
 * NEED_INPUT. */
static int receive_frame(ds_video *v, ds_error *err)
{
    char e[128], d[200];
    int r = avcodec_receive_frame(v->dec, v->frame);
    if (r == 0) {
        if ((v->frame->flags & AV_FRAME_FLAG_CORRUPT) || v->frame->decode_error_flags) {
            if (v->warned != v->next)
                ds_log_warn("%s: frame %" PRId64 ": damaged in the file; FFmpeg concealed it",
                        v->path, v->next);
            v->warned = v->next;
        }
        return 1;
    }
    if (r == AVERROR_EOF && v->truncated >= 0) {
        /* Frames buffered before the cut are out; now say why it ended. */
        int64_t pos = v->truncated;
        v->truncated = -1;
        v->eof_warned = 1;
        return ds_errorf(err,
                         "%s: frame %" PRId64 ": file is truncated (packet at byte %" PRId64
                         " runs past the end of the file)",
                         v->path, v->next, pos);
    }
    if (r == AVERROR_EOF) {
        /* Some demuxers (Matroska) drop a packet cut short by the end of
         * the file and only log it: the announced length is the hint. */
        int64_t want = v->info.frame_count;
        if (want > 0 && v->next + 1 < want && !v->eof_warned)
            ds_log_warn("%s: ended after %" PRId64 " frames, the container announced %" PRId64
                    ": truncated file?",
                    v->path, v->next, want);
        v->eof_warned = 1;
        return 0;
    }
    if (r != AVERROR(EAGAIN))
        return ds_errorf(err, "%s: frame %" PRId64 ": decode error: %s%s", v->path, v->next,
                         av_strerr(r, e, sizeof e), av_error_detail(d, sizeof d));
    if (v->flushed) /* drained decoder that still wants input: treat as end */
        return 0;
    return NEED_INPUT;
}

/* Reads the next packet of the stream and gives it to the decoder (at the
 * end of the file: the flush); 0 = go on receiving, -1 error. */
static int feed_packet(ds_video *v, ds_error *err)
{
    char e[128], d[200];
    int r = av_read_frame(v->fmt, v->pkt);
    if (r == AVERROR_EOF) {
        v->flushed = 1;
        r = avcodec_send_packet(v->dec, NULL);
        if (r < 0 && r != AVERROR_EOF)
            return ds_errorf(err, "%s: frame %" PRId64 ": decode error at end of file: %s%s",
                             v->path, v->next, av_strerr(r, e, sizeof e),
                             av_error_detail(d, sizeof d));
        return 0;
    }
    if (r < 0)
        return ds_errorf(err, "%s: frame %" PRId64 ": read error: %s%s", v->path, v->next,
                         av_strerr(r, e, sizeof e), av_error_detail(d, sizeof d));
    /* Other streams' packets, and empty ones (which the decoder would take
     * as "end of stream"), are skipped. */
    if (v->pkt->stream_index != v->stream || v->pkt->size <= 0) {
        av_packet_unref(v->pkt);
        return 0;
    }
    /* A packet cut short by the end of the file (the demuxer flags it):
     * decoding it would give a half-grey frame or garbage. */
    int corrupt = (v->pkt->flags & AV_PKT_FLAG_CORRUPT) != 0;
    int64_t pos = v->pkt->pos;
    if (corrupt && v->fmt->pb && avio_feof(v->fmt->pb)) {
        av_packet_unref(v->pkt);
        v->truncated = pos >= 0 ? pos : 0;
        v->flushed = 1;
        r = avcodec_send_packet(v->dec, NULL);
        if (r < 0 && r != AVERROR_EOF)
            return ds_errorf(err, "%s: frame %" PRId64 ": decode error at end of file: %s",
                             v->path, v->next, av_strerr(r, e, sizeof e));
        return 0;
    }
    r = avcodec_send_packet(v->dec, v->pkt);
    av_packet_unref(v->pkt);
    if (r < 0 && r != AVERROR(EAGAIN)) {
        /* The packet is lost; count its frame so that later frame numbers
         * stay those of the file, and let the caller decide to go on. */
        ds_errorf(err, "%s: frame %" PRId64 ": decode error%s: %s%s", v->path, v->next,
                  corrupt ? " in a damaged packet" : "", av_strerr(r, e, sizeof e),
                  av_error_detail(d, sizeof d));
        v->next++;
        return -1;
    }
    return 0;
}

/* Decodes the next frame into v->frame: 1 frame, 0 end of stream, -1 error. */
static int decode_next(ds_video *v, ds_error *err)
{
    av_last_error[0] = '\0';
    for (;;) {
        int r = receive_frame(v, err);
        if (r != NEED_INPUT)
            return r;
        if (feed_packet(v, err))
            return -1;
    }
}

/* Decodes frame 0 into v->frame so that open/rewind fail on a file without
 * a decodable frame instead of the first read. */
static int prime(ds_video *v, ds_error *err)
{
    int r = decode_next(v, err);
    if (r < 0)
        return -1;
    if (r == 0)
        return ds_errorf(err, "%s: the video stream has no frames", v->path);
    v->pending = 1;
    return 0;
}

/* ---- public API --------------------------------------------------------- */

ds_video *ds_video_open(const char *path, int rows, int cols, ds_error *err)
{
    pthread_once(&log_setup_once, av_log_setup);
    if (!path || !*path) {
        ds_errorf(err, "video: empty file name");
        return NULL;
    }
    if (rows < 0 || cols < 0 || (rows == 0) != (cols == 0) || rows > DS_VIDEO_MAX_SIDE ||
        cols > DS_VIDEO_MAX_SIDE) {
        ds_errorf(err, "%s: frame size %dx%d (rows x cols) must be both 0 (keep) or 1..%d", path,
                  rows, cols, DS_VIDEO_MAX_SIDE);
        return NULL;
    }
    ds_video *v = calloc(1, sizeof *v);
    if (!v || !(v->path = strdup(path)) || !(v->pkt = av_packet_alloc()) ||
        !(v->frame = av_frame_alloc())) {
        ds_errorf(err, "%s: out of memory opening the video", path);
        ds_video_close(v);
        return NULL;
    }
    v->warned = -1;
    v->truncated = -1;
    v->info.path = v->path;
    if (open_input(v, err) || prime(v, err)) {
        ds_video_close(v);
        return NULL;
    }

    AVStream *st = v->fmt->streams[v->stream];
    v->first_pts = v->frame->best_effort_timestamp;
    int w = v->frame->width, h = v->frame->height;
    if (w <= 0 || h <= 0 || w > DS_VIDEO_MAX_SIDE || h > DS_VIDEO_MAX_SIDE) {
        ds_errorf(err, "%s: frame size %dx%d out of range (1..%d)", path, w, h,
                  DS_VIDEO_MAX_SIDE);
        ds_video_close(v);
        return NULL;
    }
    v->info.width = w;
    v->info.height = h;
    v->info.rows = rows ? rows : h;
    v->info.cols = cols ? cols : w;
    AVRational rate = av_guess_frame_rate(v->fmt, st, NULL);
    v->info.fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0;
    v->info.frame_count = estimate_frames(v->fmt, st, v->info.fps);
    snprintf(v->info.codec, sizeof v->info.codec, "%s", v->codec->name);
    v->sws_fmt = AV_PIX_FMT_NONE;
    ds_log_debug("%s: %s %dx%d %.3g fps ~%" PRId64 " frames -> %dx%d RGB", path, v->info.codec, w, h,
             v->info.fps, v->info.frame_count, v->info.rows, v->info.cols);
    return v;
}

/* (Re)builds the swscale context when the decoded frame's size, format or
 * colour parameters differ from the last frame's (rare: a mid-stream change). */
static int setup_sws(ds_video *v, const AVFrame *f, ds_error *err)
{
    int range = f->color_range == AVCOL_RANGE_JPEG;
    if (v->sws && f->width == v->sws_w && f->height == v->sws_h && f->format == v->sws_fmt &&
        (int)f->colorspace == v->sws_cs && range == v->sws_range)
        return 0;
    enum AVPixelFormat pf = (enum AVPixelFormat)f->format;
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(pf);
    if (!desc || !sws_isSupportedInput(pf))
        return ds_errorf(err, "%s: frame %" PRId64 ": pixel format %s is not supported by swscale",
                         v->path, v->next, desc ? desc->name : "unknown");
    if (f->width <= 0 || f->height <= 0 || f->width > DS_VIDEO_MAX_SIDE ||
        f->height > DS_VIDEO_MAX_SIDE)
        return ds_errorf(err, "%s: frame %" PRId64 ": frame size %dx%d out of range", v->path,
                         v->next, f->width, f->height);
    v->sws = sws_getCachedContext(v->sws, f->width, f->height, pf, v->info.cols, v->info.rows,
                                  AV_PIX_FMT_RGB24, SWS_BILINEAR | SWS_ACCURATE_RND, NULL, NULL,
                                  NULL);
    if (!v->sws)
        return ds_errorf(err, "%s: frame %" PRId64 ": cannot set up scaling %dx%d %s -> %dx%d rgb24",
                         v->path, v->next, f->width, f->height, desc->name, v->info.cols,
                         v->info.rows);
    if (!(desc->flags & AV_PIX_FMT_FLAG_RGB) && desc->nb_components >= 3) {
        /* sws_getCoefficients indexes by AVColorSpace and falls back to
         * BT.601 for unspecified or unknown matrices. */
        const int *coefs = sws_getCoefficients(f->colorspace);
        /* yuvj* formats are full range whatever the frame says. */
        int src_range = range || strncmp(desc->name, "yuvj", 4) == 0;
        sws_setColorspaceDetails(v->sws, coefs, src_range, sws_getCoefficients(SWS_CS_DEFAULT), 1,
                                 0, 1 << 16, 1 << 16);
    }
    if (v->sws_fmt != AV_PIX_FMT_NONE)
        ds_log_debug("%s: frame %" PRId64 ": stream changed to %dx%d %s", v->path, v->next, f->width,
                 f->height, desc->name);
    v->sws_w = f->width;
    v->sws_h = f->height;
    v->sws_fmt = f->format;
    v->sws_cs = (int)f->colorspace;
    v->sws_range = range;
    return 0;
}

int ds_video_read(ds_video *v, ds_tensor *frame, ds_error *err)
{
    if (!v || !v->dec)
        return ds_errorf(err, "video: read on a closed or failed video");
    if (!frame)
        return ds_errorf(err, "%s: read into a NULL tensor", v->path);
    if (!v->pending) {
        av_frame_unref(v->frame);
        int r = decode_next(v, err);
        if (r <= 0)
            return r;
    }
    v->pending = 0;
    AVFrame *f = v->frame;
    if (setup_sws(v, f, err))
        return -1;
    ds_shape shape = ds_shape_make(3, (const int64_t[]){v->info.rows, v->info.cols, 3});
    if (ds_tensor_reserve(frame, &shape, DS_U8, err))
        return ds_error_prefix(err, "%s: frame %" PRId64, v->path, v->next);
    uint8_t *dst[4] = {ds_tensor_u8(frame), NULL, NULL, NULL};
    int stride[4] = {v->info.cols * 3, 0, 0, 0};
    int h = sws_scale(v->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dst,
                      stride);
    if (h != v->info.rows)
        return ds_errorf(err, "%s: frame %" PRId64 ": scaling produced %d of %d rows", v->path,
                         v->next, h, v->info.rows);
    v->next++;
    return 1;
}

int64_t ds_video_frame_index(const ds_video *v)
{
    return v ? v->next - 1 : -1;
}

const ds_video_info *ds_video_get_info(const ds_video *v)
{
    return v ? &v->info : NULL;
}

int ds_video_rewind(ds_video *v, ds_error *err)
{
    if (!v || !v->dec)
        return ds_errorf(err, "video: rewind on a closed or failed video");
    av_frame_unref(v->frame);
    av_packet_unref(v->pkt);
    int seekable = v->fmt->pb && (v->fmt->pb->seekable & AVIO_SEEKABLE_NORMAL);
    if (seekable && avformat_seek_file(v->fmt, v->stream, INT64_MIN, INT64_MIN, INT64_MIN,
                                       AVSEEK_FLAG_BACKWARD) >= 0) {
        avcodec_flush_buffers(v->dec);
        v->eof_warned = 0;
        v->truncated = -1;
        v->pending = 0;
        v->flushed = 0;
        v->next = 0;
        /* Trust the seek only if it lands on the very first frame. */
        ds_error ignored;
        if (prime(v, &ignored) == 0 && v->frame->best_effort_timestamp == v->first_pts)
            return 0;
        av_frame_unref(v->frame);
    }
    /* Pipes and some containers cannot seek (exactly): start over. */
    ds_log_debug("cannot seek back, reopening %s", v->path);
    close_input(v);
    if (open_input(v, err) || prime(v, err)) {
        ds_error_prefix(err, "rewinding");
        close_input(v);
        return -1;
    }
    return 0;
}

void ds_video_close(ds_video *v)
{
    if (!v)
        return;
    close_input(v);
    sws_freeContext(v->sws);
    av_frame_free(&v->frame);
    av_packet_free(&v->pkt);
    free(v->path);
    free(v);
}

/* ---- layout / type conversions -------------------------------------------- */

static int check_hwc(const ds_tensor *hwc, ds_error *err)
{
    if (!hwc || hwc->dtype != DS_U8 || hwc->shape.ndim != 3 || hwc->shape.dims[2] != 3 ||
        hwc->shape.dims[0] <= 0 || hwc->shape.dims[1] <= 0 || !hwc->data)
        return ds_errorf(err, "frame conversion: expected a uint8 HxWx3 frame");
    return 0;
}

int ds_frame_u8_hwc_to_nchw(const ds_tensor *hwc, ds_tensor *nchw, ds_error *err)
{
    if (check_hwc(hwc, err))
        return -1;
    int64_t h = hwc->shape.dims[0], w = hwc->shape.dims[1], n = h * w;
    ds_shape s = ds_shape_nchw(1, 3, h, w);
    if (ds_tensor_reserve(nchw, &s, DS_U8, err))
        return -1;
    const uint8_t *src = ds_tensor_u8(hwc);
    uint8_t *r = ds_tensor_u8(nchw), *g = r + n, *b = g + n;
    for (int64_t i = 0; i < n; i++) {
        r[i] = src[3 * i];
        g[i] = src[3 * i + 1];
        b[i] = src[3 * i + 2];
    }
    return 0;
}

/* The transpose, then the conversion the workers apply to a u8 frame off the
 * wire (ds_tensor_u8_to_f32), so both paths give the same floats. */
int ds_frame_u8_to_f32_nchw(const ds_tensor *hwc, ds_tensor *nchw, ds_error *err)
{
    ds_tensor u8 = {0};
    int rc = ds_frame_u8_hwc_to_nchw(hwc, &u8, err) || ds_tensor_u8_to_f32(&u8, nchw, err) ? -1 : 0;
    ds_tensor_free(&u8);
    return rc;
}
