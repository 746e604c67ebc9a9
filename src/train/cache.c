/* cache.c - on-disk cache of collected data and fitted predictors, and the
 * whole training run on top of it. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "common/log.h"
#include "common/timing.h"
#include "train/train.h"

#define MAX_FILE ((uint64_t)1 << 31)

int ds_train_cache_key(const ds_model *m, const char *video, int frames, char *key, size_t len,
                       ds_error *err)
{
    char abs[PATH_MAX];
    struct stat st;
    if (!realpath(video, abs) || stat(abs, &st))
        return ds_errorf(err, "train: video %s: %s", video, strerror(errno));
    if (m->layers[0].out_shape.ndim != 4)
        return ds_errorf(err, "train: model %s has no input size set", m->name);
    /* FNV-1a over what identifies the clip's content cheaply. */
    uint64_t h = 0xcbf29ce484222325ull;
    char id[PATH_MAX + 64];
    int n = snprintf(id, sizeof id, "%s|%" PRId64 "|%" PRId64 ".%09ld", abs, (int64_t)st.st_size,
                     (int64_t)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
    for (int i = 0; i < n && i < (int)sizeof id; i++) {
        h ^= (uint8_t)id[i];
        h *= 0x100000001b3ull;
    }
    int w = snprintf(key, len, "train-%s-%016" PRIx64 "-%lldx%lld-n%d", m->hash, h,
                     (long long)m->layers[0].out_shape.dims[2],
                     (long long)m->layers[0].out_shape.dims[3], frames);
    if (w < 0 || (size_t)w >= len)
        return ds_errorf(err, "train: cache key too long");
    return 0;
}

/* ---------------------------------------------------------- file helpers */

static int mkdirs(const char *dir, ds_error *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
        return ds_errorf(err, "cache folder name too long");
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST)
                return ds_errorf(err, "cannot create %s: %s", tmp, strerror(errno));
            *p = '/';
        }
    if (mkdir(tmp, 0755) && errno != EEXIST)
        return ds_errorf(err, "cannot create %s: %s", tmp, strerror(errno));
    return 0;
}

/* Write-then-rename: a reader never sees half a file. */
static int write_file(const char *path, const ds_buf *b, ds_error *err)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return ds_errorf(err, "cannot write %s: %s", tmp, strerror(errno));
    size_t w = fwrite(b->data, 1, b->len, f);
    int bad = w != b->len;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return ds_errorf(err, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

static int put_u32(ds_buf *o, uint32_t v, ds_error *err)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return ds_buf_append(o, b, 4, err);
}

static uint32_t get_u32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* ------------------------------------------------------------ data file
 *
 * "DSTD", u16 version, u16 flags (0), model hash (16 bytes), u32 rows, cols,
 * n_layers, n_frames, u32 channels[n_layers], f32 change[n_frames*width],
 * f32 nonzero[n_frames*width] (IEEE binary32, little-endian), u32 CRC-32. */

static int put_f32s(ds_buf *o, const float *x, size_t n, ds_error *err)
{
    size_t at = o->len;
    if (ds_buf_reserve(o, at + 4 * n, err))
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &x[i], 4);
        uint8_t *b = o->data + at + 4 * i;
        b[0] = (uint8_t)v;
        b[1] = (uint8_t)(v >> 8);
        b[2] = (uint8_t)(v >> 16);
        b[3] = (uint8_t)(v >> 24);
    }
    o->len = at + 4 * n;
    return 0;
}

int ds_train_data_save(const ds_train_data *d, const char *path, ds_error *err)
{
    ds_buf b = {0};
    uint8_t head[8] = {'D', 'S', 'T', 'D', DS_TRAIN_DATA_VERSION, 0, 0, 0};
    size_t cells = (size_t)d->n_frames * (size_t)d->width;
    int rc = ds_buf_reserve(&b, 48 + 4 * (size_t)d->n_layers + 8 * cells, err) ||
             ds_buf_append(&b, head, 8, err) || ds_buf_append(&b, d->model_hash, 16, err) ||
             put_u32(&b, (uint32_t)d->rows, err) || put_u32(&b, (uint32_t)d->cols, err) ||
             put_u32(&b, (uint32_t)d->n_layers, err) || put_u32(&b, (uint32_t)d->n_frames, err);
    for (int i = 0; i < d->n_layers && !rc; i++)
        rc = put_u32(&b, (uint32_t)d->channels[i], err);
    rc = rc || put_f32s(&b, d->change, cells, err) || put_f32s(&b, d->nonzero, cells, err) ||
         put_u32(&b, ds_crc32(0, b.data, b.len), err) || write_file(path, &b, err);
    ds_buf_free(&b);
    return rc ? -1 : 0;
}

static int parse_f32s(const uint8_t *p, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v = get_u32(p + 4 * i);
        memcpy(&x[i], &v, 4);
        if (!(x[i] >= 0.0f && x[i] <= 1.0f))
            return -1; /* fractions only; NaN fails too */
    }
    return 0;
}

static int parse_data(const uint8_t *p, size_t n, const ds_model *m, int frames,
                      ds_train_data *d, ds_error *err)
{
    if (n < 44)
        return ds_errorf(err, "%zu bytes, shorter than the header", n);
    if (memcmp(p, DS_TRAIN_DATA_MAGIC, 4) || p[4] != DS_TRAIN_DATA_VERSION || p[5] || p[6] ||
        p[7])
        return ds_errorf(err, "not a version %d training data file", DS_TRAIN_DATA_VERSION);
    if (ds_crc32(0, p, n - 4) != get_u32(p + n - 4))
        return ds_errorf(err, "checksum mismatch (damaged or cut short)");
    if (memcmp(p + 8, m->hash, 16))
        return ds_errorf(err, "collected for another model");
    if (ds_train_data_init(d, m, frames, err))
        return -1;
    uint32_t rows = get_u32(p + 24), cols = get_u32(p + 28), nl = get_u32(p + 32),
             nf = get_u32(p + 36);
    if (rows != (uint32_t)d->rows || cols != (uint32_t)d->cols || nl != (uint32_t)d->n_layers ||
        nf != (uint32_t)frames) {
        ds_train_data_free(d);
        return ds_errorf(err, "holds %ux%u, %u layers, %u frames; want %dx%d, %d, %d", rows, cols,
                         nl, nf, m->layers[0].out_shape.ndim ? d->rows : 0, d->cols, m->n_layers,
                         frames);
    }
    size_t cells = (size_t)d->n_frames * (size_t)d->width;
    if (n != 40 + 4 * (size_t)nl + 8 * cells + 4) {
        ds_train_data_free(d);
        return ds_errorf(err, "%zu bytes, expected %zu", n, 44 + 4 * (size_t)nl + 8 * cells);
    }
    for (uint32_t i = 0; i < nl; i++)
        if (get_u32(p + 40 + 4 * i) != (uint32_t)d->channels[i]) {
            ds_train_data_free(d);
            return ds_errorf(err, "layer %u has %u channels, the model %d", i,
                             get_u32(p + 40 + 4 * i), d->channels[i]);
        }
    const uint8_t *body = p + 40 + 4 * (size_t)nl;
    if (parse_f32s(body, d->change, cells) || parse_f32s(body + 4 * cells, d->nonzero, cells)) {
        ds_train_data_free(d);
        return ds_errorf(err, "a fraction is outside [0,1]");
    }
    return 0;
}

int ds_train_data_load(const char *path, const ds_model *m, int frames, ds_train_data *d,
                       ds_error *err)
{
    ds_buf b = {0};
    int r = ds_read_file(path, MAX_FILE, &b, err);
    if (r == 0 && parse_data(b.data, b.len, m, frames, d, err)) {
        ds_error_prefix(err, "%s", path);
        r = -1;
    }
    ds_buf_free(&b);
    return r ? -1 : 0;
}

int ds_predictors_save(const ds_predictors *p, const char *path, ds_error *err)
{
    ds_buf b = {0};
    int rc = ds_predictors_encode(p, &b, err) || write_file(path, &b, err);
    ds_buf_free(&b);
    return rc ? -1 : 0;
}

int ds_predictors_load(const char *path, const ds_model *m, ds_predictors **out, ds_error *err)
{
    ds_buf b = {0};
    int r = ds_read_file(path, MAX_FILE, &b, err);
    if (r == 0 && ds_predictors_decode(b.data, b.len, m, out, err)) {
        ds_error_prefix(err, "%s", path);
        r = -1;
    }
    ds_buf_free(&b);
    return r ? -1 : 0;
}

/* ------------------------------------------------------------------ run */

static void log_table(const ds_model *m, const ds_predictors *p, const ds_train_data *d)
{
    ds_buf t = {0};
    ds_error err;
    if (ds_train_report(m, p, d, &t, &err) || ds_buf_append(&t, "", 1, &err)) {
        ds_log_warn("fit report: %s", err.msg);
    } else {
        for (char *line = (char *)t.data, *nl; *line; line = nl + 1) {
            nl = strchr(line, '\n');
            if (!nl)
                break;
            *nl = 0;
            ds_log_info("%s", line);
        }
    }
    ds_buf_free(&t);
}

int ds_train_run(const ds_model *m, const ds_train_cfg *c, ds_predictors **out,
                 ds_train_stats *st, ds_error *err)
{
    ds_train_stats s = {0};
    int use_cache = c->cache_dir && c->cache_dir[0];
    char key[256], data_path[PATH_MAX], pred_path[PATH_MAX];
    if (ds_train_cache_key(m, c->video, c->frames, key, sizeof key, err))
        return -1;
    if (use_cache) {
        if (snprintf(data_path, sizeof data_path, "%s/%s.data", c->cache_dir, key) >=
                (int)sizeof data_path ||
            snprintf(pred_path, sizeof pred_path, "%s/%s.pred", c->cache_dir, key) >=
                (int)sizeof pred_path)
            return ds_errorf(err, "train: cache path too long");
        ds_error e2;
        if (ds_predictors_load(pred_path, m, out, &e2) == 0) {
            ds_log_info("predictors from %s", pred_path);
            s.pred_cached = 1;
            if (st)
                *st = s;
            log_table(m, *out, NULL);
            return 0;
        }
        if (access(pred_path, F_OK) == 0)
            ds_log_warn("ignoring cached predictors: %s", e2.msg);
    }
    ds_train_data d = {0};
    ds_error e2;
    if (use_cache && ds_train_data_load(data_path, m, c->frames, &d, &e2) == 0) {
        ds_log_info("collected data from %s", data_path);
        s.data_cached = 1;
    } else {
        if (use_cache && access(data_path, F_OK) == 0)
            ds_log_warn("ignoring cached data: %s", e2.msg);
        ds_log_info("collecting %d frames of %s at %dx%d with %s (%d thread%s)", c->frames, c->video,
                (int)m->layers[0].out_shape.dims[2], (int)m->layers[0].out_shape.dims[3],
                m->name, c->threads, c->threads == 1 ? "" : "s");
        double t0 = ds_now();
        if (ds_train_collect(m, c, &d, err))
            return -1;
        s.collect_s = ds_now() - t0;
        ds_log_info("collected %d frames in %.2f s (%.1f frames/s)", c->frames, s.collect_s,
                c->frames / s.collect_s);
        if (use_cache && (mkdirs(c->cache_dir, &e2) || ds_train_data_save(&d, data_path, &e2)))
            ds_log_warn("not caching collected data: %s", e2.msg);
    }
    double t0 = ds_now();
    if (ds_train_fit(m, &d, c->threads, out, err)) {
        ds_train_data_free(&d);
        return -1;
    }
    s.fit_s = ds_now() - t0;
    ds_log_info("fitted %d layers in %.2f s (held-out frames: last %d of %d)", m->n_layers, s.fit_s,
            d.n_frames - ds_train_holdout_first(d.n_frames), d.n_frames);
    log_table(m, *out, &d);
    if (use_cache && (mkdirs(c->cache_dir, &e2) || ds_predictors_save(*out, pred_path, &e2)))
        ds_log_warn("not caching predictors: %s", e2.msg);
    ds_train_data_free(&d);
    if (st)
        *st = s;
    return 0;
}
