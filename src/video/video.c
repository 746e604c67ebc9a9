/* video.c - FFmpeg demux + decode + swscale to RGB24 (see video.h). */
#include "video.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavdevice/version.h>
#include <libavformat/avformat.h>
#include <libavutil/pixdesc.h>
#include <libavutil/time.h>
#include <libswscale/swscale.h>

#include "common/log.h"
#include "common/timing.h"

struct ds_video {
    char *url;  /* what FFmpeg opens */
    char *path; /* url with a password masked: every message uses it */
    ds_video_info info;
    ds_video_opts opts; /* as opened; format is our copy */
    /* The interrupt callback's state: blocking calls give up past the
     * deadline (0 = none), or when *opts.stop is set. */
    double deadline;
    int timed_out;
    int size_warned; /* the resolution-change warning was given */
    int input_failed; /* the last read failed in the input, not the decoder */
    double time;     /* ds_video_frame_time of the last frame */
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

/* Once per process: our log callback and the network (TLS libraries for
 * https://, rtsps://). */
static void av_log_setup(void)
{
    av_log_set_level(AV_LOG_WARNING);
    av_log_set_callback(av_log_to_ds);
    avformat_network_init();
}

/* The devices (v4l2, lavfi) come from libavdevice, loaded the first time a
 * device is opened rather than linked: it pulls some 80 libraries (SDL, X11,
 * PulseAudio, ...) and 18 MB of resident memory into every process, worker
 * and file reader included. */
static pthread_once_t devices_once = PTHREAD_ONCE_INIT;
static char devices_error[320];

static void devices_load(void)
{
    char name[32];
    snprintf(name, sizeof name, "libavdevice.so.%d", LIBAVDEVICE_VERSION_MAJOR);
    void *lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    void (*register_all)(void) = NULL;
    if (lib)
        *(void **)&register_all = dlsym(lib, "avdevice_register_all");
    if (!register_all) {
        snprintf(devices_error, sizeof devices_error,
                 "cameras and lavfi: sources need %s, which cannot be loaded (%s; Debian: apt "
                 "install libavdevice%d)", name, dlerror(), LIBAVDEVICE_VERSION_MAJOR);
        return;
    }
    register_all();
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

/* ---- live sources: interrupt, options, errors ----------------------------- */

/* The password of "scheme://user:password@host/...", its length in *n;
 * NULL when there is none. */
static const char *url_password(const char *url, size_t *n)
{
    const char *scheme = strstr(url, "://");
    if (!scheme)
        return NULL;
    const char *host = scheme + 3, *at = NULL;
    for (const char *c = host; *c && !strchr("/?#", *c); c++)
        if (*c == '@')
            at = c;
    const char *colon = at ? memchr(host, ':', (size_t)(at - host)) : NULL;
    if (!colon)
        return NULL;
    *n = (size_t)(at - colon - 1);
    return colon + 1;
}

/* url with its password replaced by "***": messages and logs name an IP
 * camera without leaking it. */
static char *mask_password(const char *url)
{
    size_t n;
    const char *pw = url_password(url, &n);
    if (!pw)
        return strdup(url);
    size_t head = (size_t)(pw - url), len = head + 3 + strlen(pw + n) + 1;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "%.*s***%s", (int)head, url, pw + n);
    return out;
}

/* FFmpeg's own error line may quote the URL: ":password@" becomes ":***@". */
static void scrub_password(const ds_video *v, ds_error *err)
{
    size_t n;
    const char *pw = url_password(v->url, &n);
    char secret[258];
    if (!err || !pw || n == 0 || n + 2 >= sizeof secret)
        return;
    snprintf(secret, sizeof secret, ":%.*s@", (int)n, pw);
    for (char *hit; (hit = strstr(err->msg, secret));) {
        memcpy(hit, ":***@", 5);
        memmove(hit + 5, hit + n + 2, strlen(hit + n + 2) + 1);
    }
}

static int stopped(const ds_video *v)
{
    return v->opts.stop && atomic_load(v->opts.stop);
}

/* FFmpeg polls this from its blocking loops (connecting, waiting on a
 * socket, probing): nonzero makes the call return AVERROR_EXIT.  The
 * deadline, restarted at every packet, bounds how long a stream or camera
 * may stay silent whatever its protocol's own options do. */
static int interrupt_cb(void *opaque)
{
    ds_video *v = opaque;
    if (stopped(v))
        return 1;
    if (v->deadline > 0 && ds_now() > v->deadline) {
        v->timed_out = 1;
        return 1;
    }
    return 0;
}

/* Starts the silence budget (video.timeout) of a stream or camera over;
 * files and lavfi graphs never wait on anyone. */
static void arm_deadline(ds_video *v)
{
    int live = v->info.kind == DS_SOURCE_STREAM || v->info.kind == DS_SOURCE_CAMERA;
    v->deadline = live && v->opts.timeout > 0 ? ds_now() + v->opts.timeout : 0;
    v->timed_out = 0;
}

static const char *camera_hint(int code)
{
    switch (code) {
    case AVERROR(EACCES):
    case AVERROR(EPERM):
        return " (is the user in group video? ls -l shows the device's group)";
    case AVERROR(ENOENT):
    case AVERROR(ENXIO):
        return " (is the camera connected? v4l2-ctl --list-devices lists the cameras)";
    case AVERROR(ENODEV):
        return " (not a capture device: v4l2-ctl --list-devices shows which node is the camera)";
    case AVERROR(ENOTTY):
        return " (not a V4L2 device)";
    case AVERROR(EBUSY):
        return " (is another program using the camera?)";
    case AVERROR(EINVAL):
        return " (the camera may not support video.input_size, fps or format: "
               "v4l2-ctl --list-formats-ext -d DEVICE lists what it does)";
    }
    return "";
}

static const char *stream_hint(int code)
{
    switch (code) {
    case AVERROR(ECONNREFUSED):
        return " (is the server up, and the port right?)";
    case AVERROR(ECONNRESET):
        return " (the server closed the connection)";
    case AVERROR(ETIMEDOUT):
        return " (is the server up and reachable?)";
    case AVERROR(EHOSTUNREACH):
    case AVERROR(ENETUNREACH):
        return " (check the address and the network)";
    case AVERROR_HTTP_NOT_FOUND:
        return " (check the URL's path)";
    case AVERROR_HTTP_UNAUTHORIZED:
    case AVERROR_HTTP_FORBIDDEN:
        return " (check the user and password in the URL)";
    case AVERROR_PROTOCOL_NOT_FOUND:
        return " (this FFmpeg was built without that protocol)";
    }
    return "";
}

/* "<source>: <what>: <reason> (<what to check>); ffmpeg: <its last error
 * line>" for a failed FFmpeg call (code); a stop or our deadline, which
 * FFmpeg reports as a bare "Immediate exit requested", are named as such.
 * Returns -1. */
static int source_error(ds_video *v, int code, const char *what, ds_error *err)
{
    char e[128], d[200];
    if (stopped(v)) {
        av_last_error[0] = '\0';
        return ds_errorf(err, "%s: %s: stopped", v->path, what);
    }
    /* Our callback is the one source of AVERROR_EXIT; the flag alone can
     * be stale when a demuxer kept going a packet before failing. */
    if (v->timed_out || code == AVERROR_EXIT) {
        av_last_error[0] = '\0';
        return ds_errorf(err, "%s: %s: nothing received for %g s (video.timeout): %s", v->path,
                         what, v->opts.timeout,
                         v->info.kind == DS_SOURCE_CAMERA ? "is the camera still delivering frames?"
                                                          : "is the server up and reachable?");
    }
    const char *hint = v->info.kind == DS_SOURCE_CAMERA   ? camera_hint(code)
                       : v->info.kind == DS_SOURCE_STREAM ? stream_hint(code)
                                                          : "";
    ds_errorf(err, "%s: %s: %s%s%s", v->path, what, av_strerr(code, e, sizeof e), hint,
              av_error_detail(d, sizeof d));
    scrub_password(v, err);
    return -1;
}

/* Explains a failed avformat_open_input.  For a file, FFmpeg says "Invalid
 * data" for a 0-byte file and for a text file alike. */
static int open_error(ds_video *v, int code, ds_error *err)
{
    static const char *const what[] = {"cannot open", "cannot open the camera",
                                       "cannot open the virtual device", "cannot open the stream"};
    const char *path = v->path;
    char e[128], d[200];
    struct stat st;
    if (v->info.kind == DS_SOURCE_FILE && !strstr(path, "://") && stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return ds_errorf(err, "%s: is a directory, not a video file", path);
        if (S_ISREG(st.st_mode) && st.st_size == 0)
            return ds_errorf(err, "%s: empty file (0 bytes), not a video", path);
        if (code == AVERROR_INVALIDDATA)
            return ds_errorf(err, "%s: not a video file FFmpeg can read (%s%s)", path,
                             av_strerr(code, e, sizeof e), av_error_detail(d, sizeof d));
    }
    return source_error(v, code, what[v->info.kind], err);
}

/* The demuxer options of a camera (V4L2) or a stream; -1 out of memory. */
static int source_options(const ds_video *v, AVDictionary **d)
{
    const ds_video_opts *o = &v->opts;
    char buf[64];
    if (v->info.kind == DS_SOURCE_CAMERA) {
        if (o->input_rows) {
            snprintf(buf, sizeof buf, "%dx%d", o->input_cols, o->input_rows);
            if (av_dict_set(d, "video_size", buf, 0) < 0)
                return -1;
        }
        if (o->fps > 0) {
            snprintf(buf, sizeof buf, "%g", o->fps);
            if (av_dict_set(d, "framerate", buf, 0) < 0)
                return -1;
        }
        if (o->format && av_dict_set(d, "input_format", o->format, 0) < 0)
            return -1;
    } else if (v->info.kind == DS_SOURCE_STREAM) {
        int rtsp = !strncasecmp(v->url, "rtsp", 4);
        if (o->timeout > 0) {
            /* Microseconds.  rw_timeout: any URL protocol (tcp, http, udp,
             * srt); timeout: RTSP's socket I/O (FFmpeg >= 5.0 names it so). */
            snprintf(buf, sizeof buf, "%" PRId64, (int64_t)(o->timeout * 1e6));
            if (av_dict_set(d, "rw_timeout", buf, 0) < 0 ||
                (rtsp && av_dict_set(d, "timeout", buf, 0) < 0))
                return -1;
        }
        /* RTP over the RTSP connection first: it passes NAT and firewalls
         * and loses no packets on Wi-Fi; UDP stays the fallback. */
        if (rtsp && av_dict_set(d, "rtsp_flags", "prefer_tcp", 0) < 0)
            return -1;
        /* Probe 1 s of a live stream, not FFmpeg's 5 (a 10 fps MPEG-TS took
         * 2-4 s to open): the frames that arrive meanwhile are stale by the
         * time the first one is decoded.  Missing codec parameters are
         * found by decoding the first frame (prime) anyway. */
        if (av_dict_set(d, "analyzeduration", "1000000", 0) < 0)
            return -1;
    }
    return 0;
}

/* Opens the container and the decoder of its best video stream. */
static int open_input(ds_video *v, ds_error *err)
{
    const char *path = v->path, *url = v->url;
    char e[128];
    const AVInputFormat *ifmt = NULL;
    if (v->info.kind == DS_SOURCE_CAMERA || v->info.kind == DS_SOURCE_VIRTUAL) {
        const char *name = v->info.kind == DS_SOURCE_CAMERA ? "v4l2" : "lavfi";
        pthread_once(&devices_once, devices_load);
        if (devices_error[0])
            return ds_errorf(err, "%s: %s", path, devices_error);
        if (!(ifmt = av_find_input_format(name)))
            return ds_errorf(err, "%s: this FFmpeg's libavdevice has no %s input", path, name);
    }
    if (v->info.kind == DS_SOURCE_VIRTUAL) {
        url += strlen("lavfi:");
        if (!*url)
            return ds_errorf(err, "%s: no filter graph after \"lavfi:\" (e.g. "
                             "lavfi:testsrc2=size=320x240:rate=30)", path);
    }
    AVDictionary *opts = NULL;
    if (source_options(v, &opts) || !(v->fmt = avformat_alloc_context())) {
        av_dict_free(&opts);
        return ds_errorf(err, "%s: out of memory opening the input", path);
    }
    v->fmt->interrupt_callback = (AVIOInterruptCB){interrupt_cb, v};
    /* A camera read non-blocking: a stalled device cannot hold a stop or
     * the timeout up (V4L2 waits for a frame without polling the callback). */
    if (v->info.kind == DS_SOURCE_CAMERA)
        v->fmt->flags |= AVFMT_FLAG_NONBLOCK;
    av_last_error[0] = '\0';
    arm_deadline(v);
    int r = avformat_open_input(&v->fmt, url, ifmt, &opts);
    av_dict_free(&opts);
    if (r < 0)
        return open_error(v, r, err);
    arm_deadline(v);
    r = avformat_find_stream_info(v->fmt, NULL);
    if (r < 0)
        return source_error(v, r, "cannot read stream info", err);

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
    v->deadline = 0;
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
    char e[128], d[200], what[64];
    int r = av_read_frame(v->fmt, v->pkt);
    if (r == AVERROR(EAGAIN)) {
        /* A camera (non-blocking) has no new frame yet: wait a moment,
         * within the deadline and the stop. */
        if (interrupt_cb(v)) {
            v->input_failed = 1;
            snprintf(what, sizeof what, "frame %" PRId64 ": read error", v->next);
            return source_error(v, AVERROR_EXIT, what, err);
        }
        av_usleep(2000);
        return 0;
    }
    if (r == AVERROR_EOF && v->info.kind != DS_SOURCE_FILE) {
        /* Some demuxers report a failed or interrupted read of a live input
         * as its end; only a clean end of a stream ends it. */
        int io = v->fmt->pb ? v->fmt->pb->error : 0;
        if (v->timed_out || stopped(v) || (io < 0 && io != AVERROR_EOF))
            r = io < 0 && io != AVERROR_EOF ? io : AVERROR_EXIT;
    }
    if (r == AVERROR_EOF) {
        v->flushed = 1;
        r = avcodec_send_packet(v->dec, NULL);
        if (r < 0 && r != AVERROR_EOF)
            return ds_errorf(err, "%s: frame %" PRId64 ": decode error at end of file: %s%s",
                             v->path, v->next, av_strerr(r, e, sizeof e),
                             av_error_detail(d, sizeof d));
        return 0;
    }
    if (r < 0) {
        v->input_failed = 1;
        snprintf(what, sizeof what, "frame %" PRId64 ": read error", v->next);
        return source_error(v, r, what, err);
    }
    arm_deadline(v);
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
    arm_deadline(v);
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

static int check_opts(const char *path, const ds_video_opts *o, ds_error *err)
{
    if (o->rows < 0 || o->cols < 0 || (o->rows == 0) != (o->cols == 0) ||
        o->rows > DS_VIDEO_MAX_SIDE || o->cols > DS_VIDEO_MAX_SIDE)
        return ds_errorf(err, "%s: frame size %dx%d (rows x cols) must be both 0 (keep) or 1..%d",
                         path, o->rows, o->cols, DS_VIDEO_MAX_SIDE);
    if (o->input_rows < 0 || o->input_cols < 0 || (o->input_rows == 0) != (o->input_cols == 0) ||
        o->input_rows > DS_VIDEO_MAX_SIDE || o->input_cols > DS_VIDEO_MAX_SIDE)
        return ds_errorf(err,
                         "%s: capture size %dx%d (rows x cols) must be both 0 (the camera's "
                         "own) or 1..%d",
                         path, o->input_rows, o->input_cols, DS_VIDEO_MAX_SIDE);
    if (!(o->fps >= 0 && o->fps <= 1000))
        return ds_errorf(err, "%s: frame rate %g must be 0 (the source's own) .. 1000", path,
                         o->fps);
    if (!(o->timeout >= 0 && o->timeout <= 1e6))
        return ds_errorf(err, "%s: timeout %g s must be 0 (none) .. 1e6", path, o->timeout);
    return 0;
}

ds_video *ds_video_open_with(const char *path, const ds_video_opts *o, ds_error *err)
{
    pthread_once(&log_setup_once, av_log_setup);
    static const ds_video_opts defaults = {0};
    if (!o)
        o = &defaults;
    if (!path || !*path) {
        ds_errorf(err, "video: empty file name");
        return NULL;
    }
    char *shown = mask_password(path);
    if (!shown) {
        ds_errorf(err, "video: out of memory opening a video");
        return NULL;
    }
    if (check_opts(shown, o, err)) {
        free(shown);
        return NULL;
    }
    ds_video *v = calloc(1, sizeof *v);
    if (!v) {
        free(shown);
        ds_errorf(err, "video: out of memory opening a video");
        return NULL;
    }
    v->path = shown;
    v->opts = *o;
    v->opts.format = NULL;
    if (!(v->url = strdup(path)) || (o->format && !(v->opts.format = strdup(o->format))) ||
        !(v->pkt = av_packet_alloc()) || !(v->frame = av_frame_alloc())) {
        ds_errorf(err, "%s: out of memory opening the video", shown);
        ds_video_close(v);
        return NULL;
    }
    v->warned = -1;
    v->truncated = -1;
    v->time = NAN;
    v->info.path = v->path;
    v->info.kind = ds_source_kind_of(path);
    if (open_input(v, err) || prime(v, err)) {
        ds_video_close(v);
        return NULL;
    }

    const char *name = v->path;
    AVStream *st = v->fmt->streams[v->stream];
    v->first_pts = v->frame->best_effort_timestamp;
    int w = v->frame->width, h = v->frame->height;
    if (w <= 0 || h <= 0 || w > DS_VIDEO_MAX_SIDE || h > DS_VIDEO_MAX_SIDE) {
        ds_errorf(err, "%s: frame size %dx%d out of range (1..%d)", name, w, h,
                  DS_VIDEO_MAX_SIDE);
        ds_video_close(v);
        return NULL;
    }
    /* V4L2 takes the nearest size the driver offers, and says so only in
     * FFmpeg's log. */
    if (v->info.kind == DS_SOURCE_CAMERA && o->input_rows &&
        (w != o->input_cols || h != o->input_rows))
        ds_log_warn("%s: the camera delivers %dx%d, not the %dx%d asked (video.input_size %d x "
                    "%d); frames are rescaled from its size",
                    name, w, h, o->input_cols, o->input_rows, o->input_rows, o->input_cols);
    v->info.width = w;
    v->info.height = h;
    v->info.rows = o->rows ? o->rows : h;
    v->info.cols = o->cols ? o->cols : w;
    AVRational rate = av_guess_frame_rate(v->fmt, st, NULL);
    v->info.fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0;
    v->info.frame_count =
        v->info.kind == DS_SOURCE_FILE ? estimate_frames(v->fmt, st, v->info.fps) : -1;
    snprintf(v->info.codec, sizeof v->info.codec, "%s", v->codec->name);
    v->sws_fmt = AV_PIX_FMT_NONE;
    ds_log_debug("%s: %s %s %dx%d %.3g fps ~%" PRId64 " frames -> %dx%d RGB", name,
                 ds_source_kind_name(v->info.kind), v->info.codec, w, h, v->info.fps,
                 v->info.frame_count, v->info.rows, v->info.cols);
    return v;
}

ds_video *ds_video_open(const char *path, int rows, int cols, ds_error *err)
{
    ds_video_opts o = {.rows = rows, .cols = cols};
    return ds_video_open_with(path, &o, err);
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
    /* A camera or stream may switch resolution (a reconfigured IP camera,
     * an adaptive stream): the output size stays the one fixed at open. */
    int resized = v->sws_fmt != AV_PIX_FMT_NONE && (f->width != v->sws_w || f->height != v->sws_h);
    if (resized && !v->size_warned)
        ds_log_warn("%s: frame %" PRId64 ": resolution changed from %dx%d to %dx%d; rescaling to "
                    "%dx%d (rows x cols)",
                    v->path, v->next, v->sws_w, v->sws_h, f->width, f->height, v->info.rows,
                    v->info.cols);
    else if (v->sws_fmt != AV_PIX_FMT_NONE)
        ds_log_debug("%s: frame %" PRId64 ": stream changed to %dx%d %s", v->path, v->next,
                     f->width, f->height, desc->name);
    v->size_warned |= resized;
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
    v->input_failed = 0;
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
    int64_t ts = f->best_effort_timestamp;
    AVRational tb = v->fmt->streams[v->stream]->time_base;
    v->time = ts == AV_NOPTS_VALUE || v->first_pts == AV_NOPTS_VALUE || tb.den <= 0
                  ? NAN
                  : (double)(ts - v->first_pts) * av_q2d(tb);
    v->next++;
    return 1;
}

int ds_video_input_failed(const ds_video *v)
{
    return v && v->input_failed;
}

double ds_video_frame_time(const ds_video *v)
{
    return v ? v->time : NAN;
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
    v->time = NAN;
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
    free(v->url);
    free((char *)v->opts.format);
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
