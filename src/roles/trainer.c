/* trainer.c - the trainer service: learns per-layer change sparsity over the
 * configured video and hands out the predictors (sched/predict.h blob).
 *
 * At start-up it trains for the configured frame size (the video's own size
 * when frame_size is absent) in the background, or loads the result from
 * cache_dir, so that the master's request finds it ready.  A request for
 * another frame size trains for that size (one training at a time; requests
 * for a size in training wait for it).  It holds MAX_SIZES sizes and evicts
 * the least recently used one for a new size, never the master's.  A client
 * (a peer host) may have one request waiting for a training at a time, and
 * all clients together one fewer than the handler threads, so that clock
 * probes and requests for trained sizes are always answered.  Requests must
 * name the trainer's model (by hash), its video (by file name: the master's
 * copy may live in another folder) and its frame count; anything else is
 * FAILED_PRECONDITION with the mismatch spelled out.  SIGINT/SIGTERM cancel
 * a running training and stop the server. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timing.h"
#include "roles.h"
#include "rpc/rpc.h"
#include "train/train.h"
#include "video/video.h"

#define MAX_SIZES 8 /* frame sizes held at once; a new one evicts the least recently used */
#define N_THREADS 3 /* handler threads */
/* Requests that run or wait for a training hold a handler thread for
 * minutes: at most this many at once, so one thread is left for clock
 * probes and requests for trained sizes. */
#define MAX_WAITING (N_THREADS - 1)
#define HOST_MAX 96
/* Largest frame a request may ask to train for (a little over 1080p): all
 * layer outputs of threads+1 frames are held while collecting, so a hostile
 * 16384x16384 request must not make the trainer run out of memory. */
#define MAX_TRAIN_PIXELS (2048L * 2048L)

typedef struct sized {
    int rows, cols;
    int state; /* 0 training, 1 ready, -1 failed */
    int code;  /* rpc status for a failure */
    int users; /* requests that wait on it (they read it after the training): not evicted */
    unsigned long used; /* trainer clock when last served from or trained */
    ds_buf blob;
    char error[DS_ERROR_MAX];
} sized;

typedef struct trainer {
    const ds_config *cfg;
    char hash[17];
    char model_name[256];
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_mutex_t train_lock; /* one training at a time: they share the cores */
    sized sizes[MAX_SIZES];
    int n_sizes;
    unsigned long clock; /* ticks at each use of an entry: orders them for eviction */
    /* The master's frame size (the configured one, or the video's own when
     * frame_size is absent: what the master reads frames at): never evicted,
     * so requests for other sizes cannot take the real master's predictors
     * away.  0x0 until known. */
    int pin_rows, pin_cols;
    struct {
        char host[HOST_MAX];
        int rows, cols;
    } waiting[MAX_WAITING]; /* requests running or waiting for a training */
    int n_waiting;
    atomic_int cancel;
} trainer;

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Trains (or loads) predictors for rows x cols into s (lock not held). */
static void train_size(trainer *tr, sized *s, int rows, int cols)
{
    const ds_config *cfg = tr->cfg;
    ds_error err = {{0}};
    ds_model m;
    memset(&m, 0, sizeof m);
    ds_predictors *p = NULL;
    ds_buf blob = {0};
    int code = DS_RPC_FAILED_PRECONDITION;
    pthread_mutex_lock(&tr->train_lock);
    double t0 = ds_now();
    if (ds_model_load(cfg->dnn, &m, &err) || ds_model_set_input(&m, 1, 3, rows, cols, &err)) {
        ds_error_prefix(&err, "model %s at %dx%d", cfg->dnn, rows, cols);
    } else {
        ds_train_cfg c = {cfg->trainer.video_path, cfg->trainer.frame_num, cfg->trainer.threads,
                          cfg->cache_dir, isatty(STDERR_FILENO), &tr->cancel};
        ds_train_stats st;
        if (ds_train_run(&m, &c, &p, &st, &err) == 0 && ds_predictors_encode(p, &blob, &err) == 0)
            code = DS_RPC_OK;
        else if (atomic_load(&tr->cancel))
            code = DS_RPC_UNAVAILABLE;
    }
    pthread_mutex_unlock(&tr->train_lock);
    if (code == DS_RPC_OK)
        ds_log_info("predictors for %dx%d ready (%zu bytes) after %.1f s", rows, cols, blob.len,
                ds_now() - t0);
    else
        ds_log_error("training for %dx%d failed: %s", rows, cols, err.msg);
    ds_predictors_free(p);
    ds_model_free(&m);
    pthread_mutex_lock(&tr->lock);
    ds_buf_free(&s->blob);
    s->blob = blob;
    s->code = code;
    s->state = code == DS_RPC_OK ? 1 : -1;
    s->used = ++tr->clock;
    snprintf(s->error, sizeof s->error, "%s", err.msg);
    pthread_cond_broadcast(&tr->changed);
    pthread_mutex_unlock(&tr->lock);
}

static sized *find(trainer *tr, int rows, int cols)
{
    for (int i = 0; i < tr->n_sizes; i++)
        if (tr->sizes[i].rows == rows && tr->sizes[i].cols == cols)
            return &tr->sizes[i];
    return NULL;
}

/* Refuses a new size when no entry can be evicted (lock held). */
static int full_error(const trainer *tr, int rows, int cols, ds_error *err)
{
    char training[16 * MAX_SIZES] = "";
    size_t n = 0;
    for (int i = 0; i < tr->n_sizes && n < sizeof training; i++)
        if (tr->sizes[i].state == 0)
            n += (size_t)snprintf(training + n, sizeof training - n, "%s%dx%d", n ? ", " : "",
                                  tr->sizes[i].rows, tr->sizes[i].cols);
    return ds_errorf(err, "cannot train for %dx%d: all %d frame-size slots are busy (in training: "
                     "%s; the others are the master's size or about to be sent)",
                     rows, cols, MAX_SIZES, n ? training : "none");
}

/* The entry for a size (lock held); *mine = 1 when the caller must train
 * it.  A new size takes a free slot or evicts the least recently used
 * ready or failed entry that is not pinned and that no request waits on;
 * NULL (err set) when there is none. */
static sized *claim(trainer *tr, int rows, int cols, int *mine, ds_error *err)
{
    *mine = 0;
    sized *s = find(tr, rows, cols);
    if (s) {
        if (s->state == -1 && !atomic_load(&tr->cancel)) { /* retry a failure */
            s->state = 0;
            *mine = 1;
        }
        return s;
    }
    if (tr->n_sizes < MAX_SIZES) {
        s = &tr->sizes[tr->n_sizes++];
    } else {
        for (int i = 0; i < tr->n_sizes; i++) {
            sized *e = &tr->sizes[i];
            if (e->state != 0 && !e->users &&
                (e->rows != tr->pin_rows || e->cols != tr->pin_cols) && (!s || e->used < s->used))
                s = e;
        }
        if (!s) {
            full_error(tr, rows, cols, err);
            return NULL;
        }
        ds_log_info("evicted predictors for %dx%d (least recently used)", s->rows, s->cols);
        ds_buf_free(&s->blob);
    }
    memset(s, 0, sizeof *s);
    s->rows = rows;
    s->cols = cols;
    *mine = 1;
    return s;
}

/* The caller's host (its connections come from varying ports). */
static void caller_host(char *host, size_t size)
{
    const ds_rpc_caller *c = ds_rpc_current_caller();
    snprintf(host, size, "%s", c ? c->host : "unknown peer");
}

/* Takes a place among the requests waiting for trainings (lock held), or
 * refuses: one per client, MAX_WAITING in all. */
static int admit(trainer *tr, const char *host, int rows, int cols, ds_error *err)
{
    for (int i = 0; i < tr->n_waiting; i++)
        if (strcmp(tr->waiting[i].host, host) == 0)
            return ds_errorf(err, "one training at a time per client: %dx%d is training for %s",
                             tr->waiting[i].rows, tr->waiting[i].cols, host);
    if (tr->n_waiting == MAX_WAITING)
        return ds_errorf(err, "%d requests from other clients already wait for trainings (%dx%d "
                         "first): try %dx%d again later", MAX_WAITING, tr->waiting[0].rows,
                         tr->waiting[0].cols, rows, cols);
    snprintf(tr->waiting[tr->n_waiting].host, HOST_MAX, "%s", host);
    tr->waiting[tr->n_waiting].rows = rows;
    tr->waiting[tr->n_waiting].cols = cols;
    tr->n_waiting++;
    return 0;
}

static void leave(trainer *tr, const char *host)
{
    for (int i = 0; i < tr->n_waiting; i++)
        if (strcmp(tr->waiting[i].host, host) == 0) {
            tr->waiting[i] = tr->waiting[--tr->n_waiting];
            return;
        }
}

static void *startup_thread(void *arg)
{
    trainer *tr = arg;
    int rows = tr->cfg->frame_rows, cols = tr->cfg->frame_cols;
    if (rows <= 0 || cols <= 0) { /* frame_size absent: the video's own size */
        ds_error err;
        ds_video *v = ds_video_open(tr->cfg->trainer.video_path, 0, 0, &err);
        if (!v) {
            ds_log_warn("not training at start-up: %s", err.msg);
            return NULL;
        }
        rows = ds_video_get_info(v)->rows;
        cols = ds_video_get_info(v)->cols;
        ds_video_close(v);
        pthread_mutex_lock(&tr->lock);
        tr->pin_rows = rows;
        tr->pin_cols = cols;
        pthread_mutex_unlock(&tr->lock);
    } else if (access(tr->cfg->trainer.video_path, R_OK)) {
        ds_log_warn("not training at start-up: cannot read video %s", tr->cfg->trainer.video_path);
        return NULL;
    }
    ds_error err;
    pthread_mutex_lock(&tr->lock);
    int mine;
    sized *s = claim(tr, rows, cols, &mine, &err);
    pthread_mutex_unlock(&tr->lock);
    if (!s)
        ds_log_warn("not training at start-up: %s", err.msg);
    else if (mine)
        train_size(tr, s, rows, cols);
    return NULL;
}

/* Checks a request against the trainer's configuration. */
static int check_request(const trainer *tr, const ds_rpc_predictors_query *m, ds_error *err)
{
    const ds_config *cfg = tr->cfg;
    if (strcmp(m->model_hash, tr->hash) != 0)
        return ds_errorf(err, "model hash %.64s does not match the trainer's model %s (hash %s)",
                         m->model_hash, tr->model_name, tr->hash);
    if (m->video[0] && strcmp(base_name(m->video), base_name(cfg->trainer.video_path)) != 0)
        return ds_errorf(err, "video %.256s is not the trainer's video %s", m->video,
                         cfg->trainer.video_path);
    if (m->frame_num && m->frame_num != (uint32_t)cfg->trainer.frame_num)
        return ds_errorf(err, "frame_num %u differs from the trainer's trainer.frame_num %d",
                         m->frame_num, cfg->trainer.frame_num);
    return 0;
}

static int on_predictors(void *ud, const uint8_t *req, size_t len, ds_buf *resp, ds_error *err)
{
    trainer *tr = ud;
    ds_rpc_predictors_query q;
    if (ds_rpc_read_predictors_query(req, len, &q, err))
        return DS_RPC_INVALID_ARGUMENT;
    if (check_request(tr, &q, err))
        return DS_RPC_FAILED_PRECONDITION;
    int rows = q.rows, cols = q.cols;
    if ((long)rows * cols > MAX_TRAIN_PIXELS && (rows != tr->cfg->frame_rows ||
                                                 cols != tr->cfg->frame_cols)) {
        ds_errorf(err, "frame size %dx%d is larger than the trainer trains for on request (%ld "
                  "pixels); configure frame_size instead", rows, cols, MAX_TRAIN_PIXELS);
        return DS_RPC_INVALID_ARGUMENT;
    }

    char host[HOST_MAX];
    caller_host(host, sizeof host);
    pthread_mutex_lock(&tr->lock);
    sized *s = find(tr, rows, cols);
    if (!s || s->state != 1) { /* not trained yet: this request waits */
        int mine;
        if (admit(tr, host, rows, cols, err)) {
            pthread_mutex_unlock(&tr->lock);
            return DS_RPC_RESOURCE_EXHAUSTED;
        }
        if (!(s = claim(tr, rows, cols, &mine, err))) {
            leave(tr, host);
            pthread_mutex_unlock(&tr->lock);
            return DS_RPC_RESOURCE_EXHAUSTED;
        }
        s->users++;
        if (mine) {
            ds_log_info("request for %dx%d from %s: training", rows, cols, host);
            pthread_mutex_unlock(&tr->lock);
            train_size(tr, s, rows, cols);
            pthread_mutex_lock(&tr->lock);
        }
        while (s->state == 0)
            pthread_cond_wait(&tr->changed, &tr->lock);
        s->users--;
        leave(tr, host);
    }
    int code = s->code;
    int rc = 0;
    if (code == DS_RPC_OK) {
        s->used = ++tr->clock;
        rc = ds_rpc_write_predictors(s->blob.data, s->blob.len, resp, err);
    } else {
        ds_errorf(err, "training for %dx%d failed: %s", rows, cols, s->error);
    }
    pthread_mutex_unlock(&tr->lock);
    if (rc)
        return DS_RPC_INTERNAL;
    if (code == DS_RPC_OK)
        ds_log_info("sent predictors for %dx%d", rows, cols);
    return code;
}

int ds_trainer_main(const ds_config *cfg)
{
    if (!cfg->trainer.video_path) {
        ds_log_error("%s: no clip to learn from: %s is a %s; set trainer.video_path to a file "
                     "recorded from it", cfg->path, cfg->video_path,
                     ds_source_kind_name(cfg->video.kind));
        return 2;
    }
    ds_signals_block();
    ds_error err;
    trainer *tr = calloc(1, sizeof *tr);
    if (!tr) {
        ds_log_error("out of memory");
        return 1;
    }
    tr->cfg = cfg;
    tr->pin_rows = cfg->frame_rows > 0 ? cfg->frame_rows : 0;
    tr->pin_cols = cfg->frame_cols > 0 ? cfg->frame_cols : 0;
    pthread_mutex_init(&tr->lock, NULL);
    pthread_cond_init(&tr->changed, NULL);
    pthread_mutex_init(&tr->train_lock, NULL);
    atomic_init(&tr->cancel, 0);
    {
        /* The hash identifies the model in requests; the weights are loaded
         * again per frame size when training. */
        ds_model m;
        memset(&m, 0, sizeof m);
        if (ds_model_load(cfg->dnn, &m, &err)) {
            ds_log_error("%s", err.msg);
            free(tr);
            return 2;
        }
        memcpy(tr->hash, m.hash, sizeof tr->hash);
        snprintf(tr->model_name, sizeof tr->model_name, "%s", m.name);
        ds_model_free(&m);
    }
    ds_rpc_security *sec = ds_role_security(cfg, "trainer", &err);
    if (!sec) {
        ds_log_error("%s", err.msg);
        free(tr);
        return 2;
    }
    char addr[300];
    ds_config_listen_addr(cfg->listen_trainer, cfg->port_trainer, addr, sizeof addr);
    ds_rpc_server *srv = ds_rpc_server_new(addr, cfg->max_message_bytes, sec, &err);
    /* A request waiting for a training must not hold up clock probes: see
     * MAX_WAITING. */
    if (!srv || ds_rpc_server_add_unary(srv, DS_RPC_TRAINER_CLOCK, ds_rpc_clock_handler, NULL, &err) ||
        ds_rpc_server_add_unary(srv, DS_RPC_TRAINER_PREDICTORS, on_predictors, tr, &err) ||
        ds_rpc_server_start(srv, N_THREADS, &err)) {
        ds_log_error("%s", err.msg);
        ds_rpc_server_free(srv);
        ds_rpc_security_free(sec);
        free(tr);
        return 1;
    }
    ds_log_info("serving on %s (%s); model %s, %d frames of %s", addr,
                ds_rpc_security_mode(sec), tr->model_name, cfg->trainer.frame_num,
                cfg->trainer.video_path);
    pthread_t th;
    int started = pthread_create(&th, NULL, startup_thread, tr) == 0;
    if (!started)
        ds_log_warn("cannot start training in the background; training on request");
    ds_signals_wait(-1);
    ds_log_info("stopping");
    atomic_store(&tr->cancel, 1);
    ds_rpc_server_shutdown(srv); /* waits for handlers; trainings see cancel */
    if (started)
        pthread_join(th, NULL);
    ds_rpc_server_free(srv);
    ds_rpc_security_free(sec);
    for (int i = 0; i < tr->n_sizes; i++)
        ds_buf_free(&tr->sizes[i].blob);
    pthread_mutex_destroy(&tr->lock);
    pthread_cond_destroy(&tr->changed);
    pthread_mutex_destroy(&tr->train_lock);
    free(tr);
    return 0;
}
