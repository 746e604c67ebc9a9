#include "trace.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "timing.h"

#define TRACE_BLOCK 65536

struct ds_trace {
    FILE *f;
    pthread_mutex_t lock;
    size_t used;
    char block[TRACE_BLOCK];
};

/* mkdir -p */
static int make_dirs(const char *dir, ds_error *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return ds_errorf(err, "trace folder name too long: %s", dir);
    for (char *p = path + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(path, 0755) && errno != EEXIST)
                return ds_errorf(err, "cannot create trace folder %s: %s", path, strerror(errno));
            *p = saved;
            if (!saved)
                break;
        }
    }
    return 0;
}

int ds_trace_open(const char *dir, const char *service, ds_trace **out, ds_error *err)
{
    *out = NULL;
    if (!dir || !*dir)
        return 0;
    if (make_dirs(dir, err))
        return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.tc", dir, service);
    ds_trace *t = calloc(1, sizeof *t);
    if (!t)
        return ds_errorf(err, "out of memory opening trace %s", path);
    t->f = fopen(path, "w");
    if (!t->f) {
        free(t);
        return ds_errorf(err, "cannot write trace %s: %s", path, strerror(errno));
    }
    pthread_mutex_init(&t->lock, NULL);
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    fprintf(t->f, "# deltaslice trace v1 service=%s host=%s pid=%d start_us=%" PRId64 "\n", service,
            host, (int)getpid(), ds_wall_us());
    fflush(t->f);
    *out = t;
    return 0;
}

static void flush_locked(ds_trace *t)
{
    if (t->used) {
        fwrite(t->block, 1, t->used, t->f);
        fflush(t->f);
        t->used = 0;
    }
}

static void append(ds_trace *t, const char *line, size_t n)
{
    pthread_mutex_lock(&t->lock);
    if (t->used + n > sizeof t->block)
        flush_locked(t);
    memcpy(t->block + t->used, line, n);
    t->used += n;
    pthread_mutex_unlock(&t->lock);
}

void ds_trace_event_at(ds_trace *t, int64_t wall_us, uint64_t frame_id, const char *stage,
                       ds_trace_phase phase)
{
    if (!t)
        return;
    char line[160];
    int n = snprintf(line, sizeof line, "%" PRId64 " %" PRIu64 " %s %s\n", wall_us, frame_id, stage,
                     phase == DS_TRACE_START ? "start" : "finish");
    if (n > 0 && n < (int)sizeof line)
        append(t, line, (size_t)n);
}

void ds_trace_event(ds_trace *t, uint64_t frame_id, const char *stage, ds_trace_phase phase)
{
    if (t)
        ds_trace_event_at(t, ds_wall_us(), frame_id, stage, phase);
}

void ds_trace_clock(ds_trace *t, const char *peer, int64_t offset_us, int64_t rtt_us)
{
    if (!t)
        return;
    char line[160];
    int n = snprintf(line, sizeof line, "# clock %s %" PRId64 " %" PRId64 "\n", peer, offset_us, rtt_us);
    if (n > 0 && n < (int)sizeof line)
        append(t, line, (size_t)n);
}

void ds_trace_flush(ds_trace *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    flush_locked(t);
    pthread_mutex_unlock(&t->lock);
}

void ds_trace_close(ds_trace *t)
{
    if (!t)
        return;
    ds_trace_flush(t);
    fclose(t->f);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
