/* video.h - video input: decode any file, camera or stream FFmpeg can read
 * into RGB frames.
 *
 * A ds_video reads the best video stream of a file, a V4L2 camera, an
 * FFmpeg virtual device or a network stream (config.h's ds_source_kind),
 * decodes it on one thread and converts each frame to 8-bit RGB at the
 * requested frame size with swscale:
 *
 *   ds_video *v = ds_video_open("data/sample.mp4", 480, 720, &err);
 *   ds_tensor hwc = {0}, x = {0};
 *   while ((r = ds_video_read(v, &hwc, &err)) == 1)
 *       ds_frame_u8_to_f32_nchw(&hwc, &x, &err);     // the CNN input
 *   // r == 0: end of file; r == -1: err.msg says file and frame number
 *   ds_video_close(v);
 *
 * Resizing uses SWS_BILINEAR with exact rounding.  When shrinking, swscale's
 * bilinear filter widens with the scale factor (it averages all source
 * pixels under the output pixel), so it is smoother than OpenCV's
 * INTER_LINEAR, which the original system used and which samples only the 2x2
 * nearest pixels; enlarging is the same interpolation.  Colours follow the
 * stream's YUV matrix and range (BT.601 limited range when unspecified) into
 * full-range RGB.
 *
 * Frames come out as uint8 HWC, shape {rows, cols, 3} (ndim 3, RGB order):
 * the natural decode output.  The helpers below turn them into NCHW for the
 * wire (uint8 1x3xHxW: exact, 4x smaller than f32) and for the network
 * (float32 1x3xHxW in [0,1], value/255 exactly as torchvision's ToTensor).
 * Every output tensor is reused: buffers grow once, never per frame.
 *
 * Errors name the file and, after opening, the frame number (0-based, in
 * display order):
 *   - open: missing/unreadable file, empty file, not a media file, no video
 *     stream, no decoder for the codec, a stream without a single decodable
 *     frame (ds_video_open decodes the first frame to check);
 *   - read, damaged data: damage FFmpeg conceals (a corrupt slice, a missing
 *     reference) yields the concealed frame and a warning naming the frame.
 *     A packet the decoder rejects fails that read with "<file>: frame N:
 *     decode error: ..."; that frame is lost, and the caller may read on
 *     (the next read continues with frame N+1) or stop;
 *   - read, file cut short: the frames stored before the cut, then one error
 *     "<file>: frame N: file is truncated ..." when the demuxer hands over
 *     the partial packet (MP4 with its index in front, AVI), or a plain end of
 *     file plus a warning when the demuxer drops it (Matroska) and the
 *     container announced more frames; reads after that return 0.  (An MP4
 *     with its index at the end fails to open: the index is gone.)
 *   - other read failures (I/O) fail the read with the file and frame.
 *
 * Live sources (ds_video_open_with; libavdevice for the first two):
 *   - CAMERA (/dev/videoN): FFmpeg's v4l2 input with video_size (input_cols
 *     x input_rows), framerate (fps) and input_format (format) when given;
 *     the device is read non-blocking, so a stalled camera holds up neither
 *     the timeout nor a stop.  A size the driver does not offer is replaced
 *     by its nearest one, with a warning.  Open errors say what to check:
 *     "/dev/video0: cannot open the camera: Permission denied (is the user
 *     in group video? ...)".
 *   - VIRTUAL (lavfi:GRAPH): FFmpeg's lavfi input on GRAPH.  It produces
 *     frames as fast as they are read; pacing them is the capture's job
 *     (capture.h).
 *   - STREAM (rtsp://, http://, ...): rw_timeout (and RTSP's timeout) set
 *     to the timeout, RTSP with RTP over TCP first; above all an interrupt
 *     callback whose deadline restarts at every packet, so a server that
 *     stops sending fails the read after `timeout` seconds ("... nothing
 *     received for 10 s (video.timeout): is the server up and
 *     reachable?"), whatever the protocol.  A clean end of the stream is
 *     the end of file (0); a failed or timed-out read is an error (-1).
 *     The password of rtsp://user:password@host is shown as *** in every
 *     message and in info.path.
 *   - The timeout covers connecting and probing too, each step on its own.
 *   - Mid-stream resolution changes are rescaled to the size fixed at open;
 *     the first is logged at warn ("<source>: frame N: resolution changed
 *     from 640x480 to 1280x720; rescaling to 480x720 (rows x cols)"), later
 *     ones at debug.
 *
 * FFmpeg's own log lines go to ds_log at debug level, never straight to
 * stderr.  A ds_video is not thread-safe; use one per thread (its stop
 * flag is the exception: any thread may set it). */
#ifndef DS_VIDEO_H
#define DS_VIDEO_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/config.h"
#include "common/error.h"
#include "common/tensor.h"

/* Largest source or output side accepted (8K is 7680). */
#define DS_VIDEO_MAX_SIDE 16384

typedef struct ds_video ds_video;

typedef struct ds_video_info {
    const char *path;    /* as given to ds_video_open, a URL's password masked
                            (***); valid until close */
    ds_source_kind kind; /* ds_source_kind_of(path) */
    int width, height;   /* size of the stream's first frame */
    int rows, cols;      /* size of the frames ds_video_read returns */
    double fps;          /* nominal frame rate; 0 when unknown */
    int64_t frame_count; /* container's count or duration x fps; -1 unknown
                            (always for live sources) */
    char codec[32];      /* decoder's codec name, e.g. "h264" */
} ds_video_info;

/* How to open a source.  Everything but rows/cols is for live sources. */
typedef struct ds_video_opts {
    int rows, cols;             /* output frame size; both 0 = the first frame's own */
    const char *format;         /* a camera's input format (V4L2 input_format:
                                   "mjpeg", "yuyv422"); NULL = its default */
    double fps;                 /* frame rate asked of a camera; 0 = its default */
    int input_rows, input_cols; /* capture size asked of a camera; 0 = its default */
    double timeout;             /* s: a stream's or camera's longest silence (connecting,
                                   probing, between packets); 0 = none */
    const atomic_int *stop;     /* when nonzero, a blocked open or read gives up at once
                                   (-1, "...: stopped"); NULL = never.  Must outlive
                                   the ds_video: ds_capture's stop. */
} ds_video_opts;

/* Opens path, a file or any source ds_source_kind_of names (a V4L2 device
 * through libavdevice, lavfi:GRAPH, a stream URL), and decodes its first
 * frame.  NULL with a message naming the source on failure. */
ds_video *ds_video_open_with(const char *path, const ds_video_opts *o, ds_error *err);

/* ds_video_open_with with only the output size (rows, cols; both 0 = the
 * stream's own). */
ds_video *ds_video_open(const char *path, int rows, int cols, ds_error *err);

/* Decodes the next frame into frame (uint8 {rows, cols, 3}, buffer reused).
 * Returns 1 with a frame, 0 at end of file (frame untouched), -1 on error. */
int ds_video_read(ds_video *v, ds_tensor *frame, ds_error *err);

/* After ds_video_read returned -1: 1 when the input failed (a read error,
 * a timeout, a stop: reopen it to go on), 0 when the decoder lost that one
 * frame (read on). */
int ds_video_input_failed(const ds_video *v);

/* Seconds of the last frame ds_video_read returned from the stream's start
 * (its presentation time less frame 0's, so frame 0 is at 0); NAN when the
 * stream has none, and before the first read or after a rewind. */
double ds_video_frame_time(const ds_video *v);

/* 0-based index of the frame the last ds_video_read returned (of the lost
 * frame after a decode error); -1 before the first frame (also right after
 * ds_video_rewind). */
int64_t ds_video_frame_index(const ds_video *v);

const ds_video_info *ds_video_get_info(const ds_video *v);

/* Goes back to the first frame (for runs that loop over a short clip):
 * seeks, or reopens the input when it cannot seek.  The next read returns
 * frame 0 again.  -1 on failure, after which the ds_video can only be closed. */
int ds_video_rewind(ds_video *v, ds_error *err);

void ds_video_close(ds_video *v);

/* uint8 HWC {H, W, 3} -> uint8 NCHW {1, 3, H, W}: a pure transpose. */
int ds_frame_u8_hwc_to_nchw(const ds_tensor *hwc, ds_tensor *nchw, ds_error *err);

/* uint8 HWC {H, W, 3} -> float32 NCHW {1, 3, H, W} with value/255.0f:
 * ds_frame_u8_hwc_to_nchw then ds_tensor_u8_to_f32 (the wire path's
 * conversion), through a temporary. */
int ds_frame_u8_to_f32_nchw(const ds_tensor *hwc, ds_tensor *nchw, ds_error *err);


#endif
