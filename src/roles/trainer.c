/* trainer.c - the trainer service: learns per-layer change sparsity over the
 * configured video and hands out the predictors (sched/predict.h blob).
 *
 * At start-up it trains for the configured frame size (the video's own size
 * when frame_size is absent) in the background, or loads the result from
 * cache_dir, so that the master's request finds it ready.  A request for
 * another frame size trains for that size (one training at a time; requests
 * for a size in training wait for it).  Requests must name the trainer's
 * model (by hash), its video (by file name: the master's copy may live in
 * another folder) and its frame count; anything else is FAILED_PRECONDITION
 * with the mismatch spelled out.  SIGINT/SIGTERM cancel a running training
 * and stop the server. */
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

#define MAX_SIZES 8 /* frame sizes trained per run; more is a misuse */
/* Largest frame a request may ask to train for (a little over 1080p): all
 * layer outputs of threads+1 frames are held while collecting, so a hostile
 * 16384x16384 request must not make the trainer run out of memory. */
#define MAX_TRAIN_PIXELS (2048L * 2048L)

typedef struct sized {
    int rows, cols;
    int state; /* 0 training, 1 ready, -1 failed */
    int code;  /* rpc status for a failure */
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
        ds_train_cfg c = {cfg->video_path, cfg->trainer.frame_num, cfg->trainer.threads,
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
    snprintf(s->error, sizeof s->error, "%s", err.msg);
    pthread_cond_broadcast(&tr->changed);
    pthread_mutex_unlock(&tr->lock);
}

/* The entry for a size (lock held); *mine = 1 when the caller must train
 * it.  NULL when the table is full. */
static sized *claim(trainer *tr, int rows, int cols, int *mine)
{
    *mine = 0;
    for (int i = 0; i < tr->n_sizes; i++) {
        sized *s = &tr->sizes[i];
        if (s->rows != rows || s->cols != cols)
            continue;
        if (s->state == -1 && !atomic_load(&tr->cancel)) { /* retry a failure */
            s->state = 0;
            *mine = 1;
        }
        return s;
    }
    sized *s = NULL;
    if (tr->n_sizes < MAX_SIZES) {
        s = &tr->sizes[tr->n_sizes++];
    } else { /* reuse a failed entry: nobody waits on one (waiters need state 0) */
        for (int i = 0; i < tr->n_sizes && !s; i++)
            if (tr->sizes[i].state == -1)
                s = &tr->sizes[i];
        if (!s)
            return NULL;
        ds_buf_free(&s->blob);
    }
    memset(s, 0, sizeof *s);
    s->rows = rows;
    s->cols = cols;
    *mine = 1;
    return s;
}

static void *startup_thread(void *arg)
{
    trainer *tr = arg;
    int rows = tr->cfg->frame_rows, cols = tr->cfg->frame_cols;
    if (rows <= 0 || cols <= 0) { /* frame_size absent: the video's own size */
        ds_error err;
        ds_video *v = ds_video_open(tr->cfg->video_path, 0, 0, &err);
        if (!v) {
            ds_log_warn("not training at start-up: %s", err.msg);
            return NULL;
        }
        rows = ds_video_get_info(v)->rows;
        cols = ds_video_get_info(v)->cols;
        ds_video_close(v);
    } else if (access(tr->cfg->video_path, R_OK)) {
        ds_log_warn("not training at start-up: cannot read video %s", tr->cfg->video_path);
        return NULL;
    }
    pthread_mutex_lock(&tr->lock);
    int mine;
    sized *s = claim(tr, rows, cols, &mine);
    pthread_mutex_unlock(&tr->lock);
    if (s && mine)
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
    if (m->video[0] && strcmp(base_name(m->video), base_name(cfg->video_path)) != 0)
        return ds_errorf(err, "video %.256s is not the trainer's video %s", m->video,
                         cfg->video_path);
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

    pthread_mutex_lock(&tr->lock);
    int mine;
    sized *s = claim(tr, rows, cols, &mine);
    if (!s) {
        pthread_mutex_unlock(&tr->lock);
        ds_errorf(err, "already trained for %d frame sizes; restart the trainer for %dx%d",
                  MAX_SIZES, rows, cols);
        return DS_RPC_RESOURCE_EXHAUSTED;
    }
    if (mine) {
        ds_log_info("request for %dx%d: training", rows, cols);
        pthread_mutex_unlock(&tr->lock);
        train_size(tr, s, rows, cols);
        pthread_mutex_lock(&tr->lock);
    }
    while (s->state == 0)
        pthread_cond_wait(&tr->changed, &tr->lock);
    int code = s->code;
    int rc = 0;
    if (code == DS_RPC_OK) {
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
    ds_signals_block();
    ds_error err;
    trainer *tr = calloc(1, sizeof *tr);
    if (!tr) {
        ds_log_error("out of memory");
        return 1;
    }
    tr->cfg = cfg;
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
    /* 3 handler threads: a request waiting for a training must not hold up
     * clock probes. */
    if (!srv || ds_rpc_server_add_unary(srv, DS_RPC_TRAINER_CLOCK, ds_rpc_clock_handler, NULL, &err) ||
        ds_rpc_server_add_unary(srv, DS_RPC_TRAINER_PREDICTORS, on_predictors, tr, &err) ||
        ds_rpc_server_start(srv, 3, &err)) {
        ds_log_error("%s", err.msg);
        ds_rpc_server_free(srv);
        ds_rpc_security_free(sec);
        free(tr);
        return 1;
    }
    ds_log_info("serving on %s (%s); model %s, %d frames of %s", addr,
                ds_rpc_security_mode(sec), tr->model_name, cfg->trainer.frame_num,
                cfg->video_path);
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
