/* config.h - the YAML configuration every role reads.
 *
 * Keeps the shape of the original system's config.yml, plus what a real
 * deployment needs (threads, logs, traces, caches, codec, message limit).
 * Loading validates everything; an error is one line naming
 * file:line:column, the key and what was expected, e.g.
 *   config.yml:12:11: master.pd_num: expected an integer >= 0, got "two" */
#ifndef DS_CONFIG_H
#define DS_CONFIG_H

#include <stddef.h>

#include "chain.h"
#include "error.h"
#include "log.h"

typedef enum ds_mode { DS_MODE_ITG = 0, DS_MODE_DIF } ds_mode;
/* master.scheduler. The configuration holds what validating a file needs to
 * know of each scheduler, its name and whether it needs the trainer's
 * predictors (config.c's table); what each one plans is its descriptor in
 * sched/planner.h, indexed by this enum. */
typedef enum ds_scheduler { DS_SCHED_LBC = 0, DS_SCHED_NSC, DS_SCHED_OPT, DS_SCHED_COUNT } ds_scheduler;
/* master.drop: what the master does when the source is faster than the
 * chain.  NONE keeps every frame (the source waits); LATEST always sends the
 * newest frame and counts the ones it skipped. */
typedef enum ds_drop { DS_DROP_NONE = 0, DS_DROP_LATEST } ds_drop;

/* What video_path names, from its text alone (ds_source_kind_of):
 *   FILE    anything else: a file, looped at its end with video.loop;
 *   CAMERA  /dev/... (V4L2 through libavdevice);
 *   VIRTUAL lavfi:GRAPH, FFmpeg's virtual devices (e.g. lavfi:testsrc2=
 *           size=320x240:rate=30): a camera without a camera, for tests;
 *   STREAM  rtsp://, rtsps://, rtmp://, http://, https://, udp://, tcp://,
 *           srt://: network streams FFmpeg reads.
 * Every kind but FILE is live: frames come at the source's pace, whether
 * or not the chain is ready. */
typedef enum ds_source_kind {
    DS_SOURCE_FILE = 0,
    DS_SOURCE_CAMERA,
    DS_SOURCE_VIRTUAL,
    DS_SOURCE_STREAM,
} ds_source_kind;

ds_source_kind ds_source_kind_of(const char *video_path);
/* "file", "camera", "virtual device", "stream". */
const char *ds_source_kind_name(ds_source_kind k);

typedef enum ds_compress_choice {
    DS_COMPRESS_AUTO = 0, /* lz4 on links >= 10 MB/s, zstd-1 below */
    DS_COMPRESS_OFF,
    DS_COMPRESS_CHOICE_LZ4,
    DS_COMPRESS_CHOICE_ZSTD,
} ds_compress_choice;

/* A `tls: {ca, cert, key}` block (paths resolved against the config file's
 * folder; NULL when absent).  "{role}" in a path stands for the name of the
 * role using it: master, trainer, w0, w1, ... */
typedef struct ds_tls_files {
    char *ca, *cert, *key;
    char where[48]; /* "config.yml:12:6" of the block, for errors */
} ds_tls_files;

typedef struct ds_config {
    char *path;          /* the file read, or "<embedded config.yml>" */
    int n_workers;       /* = length of port.worker */

    int port_master;
    int port_trainer;
    int port_worker[DS_MAX_WORKERS];

    /* net: where each client reaches its peer ("host:port"). */
    char *route_master_trainer;              /* m->t (NULL when absent) */
    char *route_master_worker[DS_MAX_WORKERS]; /* m->wI */
    /* wI->wJ, J > I: the chain's route wI->wI+1 (every I < n_workers-1),
     * and extra routes past a worker, which let the master route around
     * it while it is lost (NULL where the config lists none). */
    char *route_worker[DS_MAX_WORKERS][DS_MAX_WORKERS];

    /* Where the servers bind (host; the port is port.*): worker.listen and
     * trainer.listen, else what the routes to them imply: their host when
     * every route names the same loopback host, "localhost" for mixed
     * loopback names, else every interface ("0.0.0.0"). */
    char *listen_worker[DS_MAX_WORKERS];
    char *listen_trainer;

    /* Security (rpc.h explains the modes).  A role's own block (master.tls,
     * worker.tls, trainer.tls) replaces the shared one.  Without TLS, every
     * address a role listens on or dials must be loopback unless insecure. */
    ds_tls_files tls;
    char *auth_token; /* DELTASLICE_TOKEN from the environment, else auth.token */
    int insecure;

    char *dnn;           /* "zoo:NAME" or an .onnx path (resolved) */
    char *video_path;    /* a file (resolved against the config file's folder), a
                            device, lavfi:GRAPH or a stream URL (see ds_source_kind) */
    /* video: how video_path is read (video/video.h). */
    struct {
        ds_source_kind kind; /* of video_path */
        int loop;            /* a file starts over at its end (default 1; files only) */
        char *format;        /* a camera's input format ("mjpeg", "yuyv422"); NULL = its own */
        double fps;          /* asked of a camera; a file or lavfi source read with
                                drop latest plays at it; 0 = the source's own rate */
        int input_rows, input_cols; /* capture size asked of a camera; 0 = its own */
        double timeout;      /* s: a stream's connect and read timeout (default 10) */
    } video;
    int frame_rows;      /* 0 = keep the video's size */
    int frame_cols;
    ds_mode mode;
    int check;           /* recompute each frame on the master and compare */

    struct {
        int ifr_num;     /* frames to send; 0 = until the source ends or a signal
                            (the default for live sources, else 50) */
        ds_drop drop;    /* default: LATEST for live sources, NONE for files */
        char *listen;    /* where output.subscribe serves (port.master); default localhost */
        int pd_num;      /* frames in flight at most; 0 = unlimited */
        double itv_time; /* seconds between sends */
        ds_scheduler scheduler;
        double bandwidth[DS_MAX_WORKERS]; /* MB/s: m->w0, w0->w1, ... (absent: 1e6, unshaped) */
        int bandwidth_given;              /* master.bandwidth is in the file; else the
                                             planner measures the links */
        int threads;
        double connect_timeout; /* s to wait for every worker at start */
        int no_workers_wait;    /* none usable: wait (1) or compute locally (0) */
        int takeover;           /* replace an active session of the same identity */
        ds_tls_files tls;
    } master;
    struct {
        int prof_niter;
        int threads;
        ds_tls_files tls;
    } worker;
    struct {
        int frame_num;
        int threads;
        char *video_path; /* the clip it learns from: video_path when that is a
                             file; a live source needs a recording here */
        ds_tls_files tls;
    } trainer;

    /* output: where every frame's final outputs go (roles/output.h). */
    struct {
        char *jsonl;     /* one JSON line per frame; "-" = stdout; NULL = none */
        char *tensors;   /* a folder of .npy files; NULL = none */
        char *labels;    /* class names, one per line, for top-k; NULL = none */
        int top_k;       /* classes per 1-D output in jsonl (default 5) */
        int subscribe;   /* serve deltaslice.Master/Results on master.listen:port.master */
    } output;
    double status_interval; /* s between status lines while running; 0 = none (default 10) */

    ds_log_level log_level;
    char *trace_dir;     /* NULL or "" = no traces */
    char *cache_dir;
    struct {
        ds_compress_choice compress;
        int zstd_level;
    } codec;
    size_t max_message_bytes;
} ds_config;

/* Loads and validates path. If path is NULL, reads "config.yml" from the
 * current folder, or the embedded default (the repository's config.yml,
 * with paths relative to the source tree) when that file does not exist. */
int ds_config_load(const char *path, ds_config *cfg, ds_error *err);
/* Parses YAML text; label names it in error messages and base_dir resolves
 * relative paths. */
int ds_config_parse(const char *text, size_t len, const char *label, const char *base_dir,
                    ds_config *cfg, ds_error *err);
/* The TLS files of a role ("master", "trainer", "w0", ...) with "{role}"
 * replaced, in the caller's buffers (empty string = absent), and where they
 * were configured ("config.yml:12:6: tls", for errors). */
typedef struct ds_role_tls {
    char ca[4096], cert[4096], key[4096];
    char what[96];
} ds_role_tls;
int ds_config_role_tls(const ds_config *cfg, const char *role, ds_role_tls *out, ds_error *err);
/* "host:port" to bind, into out ("[::1]:5000" for an IPv6 host). */
void ds_config_listen_addr(const char *host, int port, char *out, size_t len);
/* The host of a route "host:port" or "[v6]:port", without brackets, into
 * out. */
void ds_config_route_host(const char *route, char *out, size_t len);
/* Is host ("localhost", "127.0.0.1", "::1", "[::1]") a loopback address?
 * Addresses are read by value (127.0.0.0/8, ::1); of names, only localhost
 * and ip6-localhost are (not "127.example.com"). */
int ds_config_is_loopback(const char *host);

/* Does the master need its workers' final outputs (check, or an output)? */
int ds_config_wants_outputs(const ds_config *cfg);

/* Does the configured scheduler need the trainer's predictors? */
int ds_config_needs_trainer(const ds_config *cfg);
void ds_config_free(ds_config *cfg);

const char *ds_mode_name(ds_mode m);
/* A scheduler's name ("?" when s is none) and whether it plans with the
 * trainer's predictors (0 when s is none). */
const char *ds_scheduler_name(ds_scheduler s);
int ds_scheduler_needs_predictors(ds_scheduler s);

#endif
