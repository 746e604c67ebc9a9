/* timeline.c - per-service trace files -> one timeline (see timeline.h). */
#include "timeline.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/file.h"

#define MAX_FILE_BYTES ((uint64_t)1 << 30)
#define MAX_TIME_US (INT64_C(1) << 53)     /* exact in a JSON/JS double */
#define MAX_OFFSET_US INT64_C(1000000000000) /* 11.6 days */
#define MAX_RTT_US INT64_C(1000000000)       /* 1000 s */
#define MAX_WORKER 9999

enum { KIND_MASTER, KIND_WORKER, KIND_TRAINER, KIND_OTHER };
enum { PH_START, PH_FINISH };

/* Track keys (major): chain positions first, then result links, trainer,
 * other services.  minor 0 = the track itself, 1+s = unknown stage s, and
 * -1-s = stage s shown just before the track (a worker's receive). */
#define KEY_MASTER 0
#define KEY_M_W0 1
#define KEY_WORKER(k) (2 + 2 * (int64_t)(k))
#define KEY_LINK(k) (3 + 2 * (int64_t)(k))
#define KEY_RESULT(k) (100000 + (int64_t)(k))
#define KEY_LATENCY 150000
#define KEY_TRAINER 200000
#define KEY_OTHER(i) (300000 + (int64_t)(i))

typedef struct tm_event {
    int64_t t;
    uint64_t frame;
    int stage;
    int phase;
    int line;
} tm_event;

typedef struct tm_clock {
    char peer[DS_TM_MAX_NAME + 1];
    int64_t offset, rtt;
} tm_clock;

typedef struct tm_file {
    char *label;
    char service[DS_TM_MAX_NAME + 1];
    char host[DS_TM_MAX_NAME + 1];
    int kind, worker;
    tm_event *ev;
    size_t n_ev, cap_ev;
    tm_clock *clk;
    size_t n_clk, cap_clk;
    int64_t shift;
} tm_file;

/* A start/finish pair of one file, on that file's clock. */
typedef struct tm_pair {
    int file, stage;
    uint64_t frame;
    int64_t start, end;
} tm_pair;

/* A slice under construction: its track key and the final slice. */
typedef struct tm_item {
    int64_t major, minor;
    ds_tm_slice s;
} tm_item;

struct ds_timeline {
    ds_tm_warn_fn warn;
    void *warn_ctx;
    tm_file *files[DS_TM_MAX_FILES];
    int n_files;
    char stages[DS_TM_MAX_STAGES][DS_TM_MAX_NAME + 1];
    int n_stages;
    tm_pair *pairs;
    size_t n_pairs, cap_pairs;
    tm_item *items;
    size_t n_items, cap_items;
    ds_tm_slice *slices;
    size_t n_slices;
    ds_tm_track *tracks;
    int n_tracks;
    int64_t t0, t1;
    int built;
};

static const char *const master_local[] = {"read", "plan", "encode"};
static const char *const worker_local[] = {"decode", "execute", "encode"};

static void warnf(ds_timeline *tl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(ds_timeline *tl, const char *fmt, ...)
{
    if (!tl->warn)
        return;
    char msg[DS_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tl->warn(tl->warn_ctx, msg);
}

ds_timeline *ds_timeline_new(ds_tm_warn_fn warn, void *ctx)
{
    ds_timeline *tl = calloc(1, sizeof *tl);
    if (tl) {
        tl->warn = warn;
        tl->warn_ctx = ctx;
    }
    return tl;
}

void ds_timeline_free(ds_timeline *tl)
{
    if (!tl)
        return;
    for (int i = 0; i < tl->n_files; i++) {
        free(tl->files[i]->label);
        free(tl->files[i]->ev);
        free(tl->files[i]->clk);
        free(tl->files[i]);
    }
    free(tl->pairs);
    free(tl->items);
    free(tl->slices);
    free(tl->tracks);
    free(tl);
}

/* ---- parsing ---- */

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DS_TM_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* "123" (no sign, no leading zeros beyond "0") -> 0..max; -1 otherwise. */
static int parse_index(const char *s, long max)
{
    if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 6)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v <= max ? (int)v : -1;
}

/* Canonical service name: "m" -> master, "wN" -> workerN; others as is. */
static void canonical(const char *in, char out[DS_TM_MAX_NAME + 1])
{
    if (!strcmp(in, "m"))
        snprintf(out, DS_TM_MAX_NAME + 1, "master");
    else if (in[0] == 'w' && parse_index(in + 1, MAX_WORKER) >= 0)
        snprintf(out, DS_TM_MAX_NAME + 1, "worker%s", in + 1);
    else
        snprintf(out, DS_TM_MAX_NAME + 1, "%s", in);
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    const char *d = s[0] == '-' ? s + 1 : s;
    if (!*d || strlen(d) > 19)
        return -1;
    for (const char *p = d; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s || strlen(s) > 20)
        return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* Splits line (modified in place) at spaces/tabs into at most max tokens;
 * returns the token count, or max + 1 when there are more. */
static int split(char *line, char **tok, int max)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            return n;
        if (n == max)
            return max + 1;
        tok[n++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (*p)
            *p++ = '\0';
    }
}

static int stage_index(ds_timeline *tl, const char *name)
{
    for (int i = 0; i < tl->n_stages; i++)
        if (!strcmp(tl->stages[i], name))
            return i;
    return -1;
}

static int intern_stage(ds_timeline *tl, const char *name)
{
    int i = stage_index(tl, name);
    if (i >= 0 || tl->n_stages == DS_TM_MAX_STAGES)
        return i;
    snprintf(tl->stages[tl->n_stages], sizeof tl->stages[0], "%s", name);
    return tl->n_stages++;
}

static int parse_header(ds_timeline *tl, tm_file *f, char *line, int lineno, ds_error *err)
{
    char *tok[16];
    int n = split(line, tok, 15);
    if (n < 4 || strcmp(tok[0], "#") || strcmp(tok[1], "deltaslice") || strcmp(tok[2], "trace"))
        return ds_errorf(err, "%s:%d: not a deltaslice trace (expected the header "
                         "'# deltaslice trace v1 service=NAME ...')", f->label, lineno);
    if (strcmp(tok[3], "v1"))
        return ds_errorf(err, "%s:%d: unsupported trace format version '%.20s' (this build reads v1)",
                         f->label, lineno, tok[3]);
    if (n > 15)
        return ds_errorf(err, "%s:%d: too many fields in the header", f->label, lineno);
    for (int i = 4; i < n; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq)
            return ds_errorf(err, "%s:%d: header field '%.40s' is not KEY=VALUE", f->label, lineno, tok[i]);
        *eq = '\0';
        const char *v = eq + 1;
        if (!strcmp(tok[i], "service")) {
            if (!valid_name(v))
                return ds_errorf(err, "%s:%d: bad service name '%.40s' (1-%d of A-Za-z0-9_.-)",
                                 f->label, lineno, v, DS_TM_MAX_NAME);
            canonical(v, f->service);
        } else if (!strcmp(tok[i], "host")) {
            if (strlen(v) > DS_TM_MAX_NAME)
                return ds_errorf(err, "%s:%d: host name longer than %d bytes", f->label, lineno,
                                 DS_TM_MAX_NAME);
            snprintf(f->host, sizeof f->host, "%s", v);
        } else if (!strcmp(tok[i], "pid")) {
            int64_t pid;
            if (parse_i64(v, 0, INT32_MAX, &pid))
                return ds_errorf(err, "%s:%d: bad pid '%.30s'", f->label, lineno, v);
        } else if (!strcmp(tok[i], "start_us")) {
            int64_t t;
            if (parse_i64(v, 0, MAX_TIME_US, &t))
                return ds_errorf(err, "%s:%d: bad start_us '%.30s' (0..2^53 µs)", f->label, lineno, v);
        } /* other keys: later versions may add some; ignored */
    }
    if (!f->service[0])
        return ds_errorf(err, "%s:%d: header has no service=NAME", f->label, lineno);
    for (int i = 0; i < tl->n_files; i++)
        if (!strcmp(tl->files[i]->service, f->service))
            return ds_errorf(err, "%s: service %s already read from %s", f->label, f->service,
                             tl->files[i]->label);
    if (!strcmp(f->service, "master")) {
        f->kind = KIND_MASTER;
    } else if (!strcmp(f->service, "trainer")) {
        f->kind = KIND_TRAINER;
    } else if (!strncmp(f->service, "worker", 6) && parse_index(f->service + 6, MAX_WORKER) >= 0) {
        f->kind = KIND_WORKER;
        f->worker = parse_index(f->service + 6, MAX_WORKER);
    } else {
        f->kind = KIND_OTHER;
    }
    return 0;
}

static int parse_clock(tm_file *f, char *line, int lineno, ds_error *err)
{
    char *tok[6];
    int n = split(line, tok, 5);
    if (n != 5)
        return ds_errorf(err, "%s:%d: expected '# clock PEER OFFSET_US RTT_US'", f->label, lineno);
    if (!valid_name(tok[2]))
        return ds_errorf(err, "%s:%d: bad peer name '%.40s'", f->label, lineno, tok[2]);
    tm_clock c;
    canonical(tok[2], c.peer);
    if (parse_i64(tok[3], -MAX_OFFSET_US, MAX_OFFSET_US, &c.offset))
        return ds_errorf(err, "%s:%d: bad clock offset '%.30s' (integer µs, |offset| <= %" PRId64 ")",
                         f->label, lineno, tok[3], MAX_OFFSET_US);
    if (parse_i64(tok[4], 0, MAX_RTT_US, &c.rtt))
        return ds_errorf(err, "%s:%d: bad round-trip time '%.30s' (integer µs, 0..%" PRId64 ")",
                         f->label, lineno, tok[4], MAX_RTT_US);
    if (ds_grow((void **)&f->clk, &f->cap_clk, f->n_clk + 1, sizeof *f->clk, NULL))
        return ds_errorf(err, "%s:%d: out of memory", f->label, lineno);
    f->clk[f->n_clk++] = c;
    return 0;
}

static int parse_event(ds_timeline *tl, tm_file *f, char *line, int lineno, ds_error *err)
{
    char *tok[5];
    int n = split(line, tok, 4);
    if (n != 4)
        return ds_errorf(err, "%s:%d: expected 'WALL_US FRAME_ID STAGE start|finish', got %s%d fields",
                         f->label, lineno, n > 4 ? "more than " : "", n > 4 ? 4 : n);
    tm_event e;
    if (parse_i64(tok[0], 0, MAX_TIME_US, &e.t))
        return ds_errorf(err, "%s:%d: bad time '%.30s' (integer µs since the epoch, 0..2^53)",
                         f->label, lineno, tok[0]);
    if (parse_u64(tok[1], &e.frame))
        return ds_errorf(err, "%s:%d: bad frame id '%.30s' (unsigned 64-bit integer)", f->label, lineno,
                         tok[1]);
    if (!valid_name(tok[2]))
        return ds_errorf(err, "%s:%d: bad stage name '%.40s' (1-%d of A-Za-z0-9_.-)", f->label, lineno,
                         tok[2], DS_TM_MAX_NAME);
    if (!strcmp(tok[3], "start"))
        e.phase = PH_START;
    else if (!strcmp(tok[3], "finish"))
        e.phase = PH_FINISH;
    else
        return ds_errorf(err, "%s:%d: bad phase '%.30s' (start or finish)", f->label, lineno, tok[3]);
    e.stage = intern_stage(tl, tok[2]);
    if (e.stage < 0)
        return ds_errorf(err, "%s:%d: more than %d distinct stage names", f->label, lineno,
                         DS_TM_MAX_STAGES);
    e.line = lineno;
    if (ds_grow((void **)&f->ev, &f->cap_ev, f->n_ev + 1, sizeof *f->ev, NULL))
        return ds_errorf(err, "%s:%d: out of memory", f->label, lineno);
    f->ev[f->n_ev++] = e;
    return 0;
}

static void free_file(tm_file *f)
{
    free(f->label);
    free(f->ev);
    free(f->clk);
    free(f);
}

int ds_timeline_add_text(ds_timeline *tl, const char *label, const char *text, size_t len,
                         ds_error *err)
{
    if (tl->built)
        return ds_errorf(err, "%s: timeline already built", label);
    if (tl->n_files == DS_TM_MAX_FILES)
        return ds_errorf(err, "%s: more than %d trace files", label, DS_TM_MAX_FILES);
    tm_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label))) {
        free(f);
        return ds_errorf(err, "%s: out of memory", label);
    }
    int n_stages = tl->n_stages; /* a rejected file adds no stage names */
    char line[DS_TM_MAX_LINE + 1];
    size_t pos = 0;
    int lineno = 0, have_header = 0;
    while (pos < len) {
        lineno++;
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n && start[n - 1] == '\r')
            n--;
        if (n > DS_TM_MAX_LINE) {
            ds_errorf(err, "%s:%d: line longer than %d bytes", label, lineno, DS_TM_MAX_LINE);
            goto fail;
        }
        if (memchr(start, '\0', n)) {
            ds_errorf(err, "%s:%d: NUL byte in line (not a text trace file)", label, lineno);
            goto fail;
        }
        memcpy(line, start, n);
        line[n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            continue;
        int rc;
        if (!have_header) {
            rc = parse_header(tl, f, p, lineno, err);
            have_header = 1;
        } else if (*p == '#') {
            /* "# clock ..." lines; any other '#' line is a comment. */
            char *q = p + 1;
            while (*q == ' ' || *q == '\t')
                q++;
            rc = (!strncmp(q, "clock", 5) && (q[5] == ' ' || q[5] == '\t' || !q[5]))
                     ? parse_clock(f, p, lineno, err)
                     : 0;
        } else {
            rc = parse_event(tl, f, p, lineno, err);
        }
        if (rc)
            goto fail;
    }
    if (!have_header) {
        ds_errorf(err, "%s: empty file (no '# deltaslice trace v1' header)", label);
        goto fail;
    }
    tl->files[tl->n_files++] = f;
    return 0;
fail:
    tl->n_stages = n_stages;
    free_file(f);
    return -1;
}

int ds_timeline_add_file(ds_timeline *tl, const char *path, ds_error *err)
{
    ds_buf b = {0};
    if (ds_read_file(path, MAX_FILE_BYTES, &b, err))
        return -1;
    int rc = ds_timeline_add_text(tl, path, (const char *)b.data, b.len, err);
    ds_buf_free(&b);
    return rc;
}

/* ---- building ---- */

static int cmp_event_idx(const void *a, const void *b, void *ctx)
{
    const tm_event *ev = ctx;
    const tm_event *x = &ev[*(const size_t *)a], *y = &ev[*(const size_t *)b];
    if (x->stage != y->stage)
        return x->stage < y->stage ? -1 : 1;
    if (x->frame != y->frame)
        return x->frame < y->frame ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

static int add_pair(ds_timeline *tl, int file, const tm_event *s, const tm_event *e)
{
    if (ds_grow((void **)&tl->pairs, &tl->cap_pairs, tl->n_pairs + 1, sizeof *tl->pairs, NULL))
        return -1;
    tl->pairs[tl->n_pairs++] = (tm_pair){file, s->stage, s->frame, s->t, e->t};
    return 0;
}

/* Pairs each file's start/finish events per (stage, frame), in line order. */
static int pair_events(ds_timeline *tl, ds_error *err)
{
    for (int fi = 0; fi < tl->n_files; fi++) {
        tm_file *f = tl->files[fi];
        if (!f->n_ev)
            continue;
        size_t *idx = malloc(f->n_ev * sizeof *idx);
        if (!idx)
            return ds_errorf(err, "%s: out of memory", f->label);
        for (size_t i = 0; i < f->n_ev; i++)
            idx[i] = i;
        qsort_r(idx, f->n_ev, sizeof *idx, cmp_event_idx, f->ev);
        const tm_event *open = NULL;
        for (size_t k = 0; k < f->n_ev; k++) {
            const tm_event *e = &f->ev[idx[k]];
            if (open && (open->stage != e->stage || open->frame != e->frame)) {
                warnf(tl, "%s:%d: %s of frame %" PRIu64 " started but never finished", f->label,
                      open->line, tl->stages[open->stage], open->frame);
                open = NULL;
            }
            if (e->phase == PH_START) {
                if (open)
                    warnf(tl, "%s:%d: %s of frame %" PRIu64 " started again before finishing",
                          f->label, e->line, tl->stages[e->stage], e->frame);
                open = e;
            } else if (!open) {
                warnf(tl, "%s:%d: %s of frame %" PRIu64 " finished without a start", f->label, e->line,
                      tl->stages[e->stage], e->frame);
            } else if (e->t < open->t) {
                warnf(tl, "%s:%d: %s of frame %" PRIu64 " finishes %" PRId64 " µs before its start "
                      "(line %d); dropped", f->label, e->line, tl->stages[e->stage], e->frame,
                      open->t - e->t, open->line);
                open = NULL;
            } else {
                if (add_pair(tl, fi, open, e)) {
                    free(idx);
                    return ds_errorf(err, "%s: out of memory", f->label);
                }
                open = NULL;
            }
        }
        if (open)
            warnf(tl, "%s:%d: %s of frame %" PRIu64 " started but never finished", f->label,
                  open->line, tl->stages[open->stage], open->frame);
        free(idx);
    }
    return 0;
}

static int find_file(const ds_timeline *tl, const char *service)
{
    for (int i = 0; i < tl->n_files; i++)
        if (!strcmp(tl->files[i]->service, service))
            return i;
    return -1;
}

/* Sets every file's shift (local -> master clock) from the best clock line
 * per pair of services, walking outwards from the master. */
static int align_clocks(ds_timeline *tl, int align, ds_error *err)
{
    int n = tl->n_files;
    for (int i = 0; i < n; i++)
        tl->files[i]->shift = 0;
    if (!align)
        return 0;
    int ref = find_file(tl, "master");
    if (ref < 0) {
        warnf(tl, "no master trace: times are on %s's clock", tl->files[0]->label);
        ref = 0;
    }
    /* best[i*n+j]: clock_j = clock_i + off, with its rtt; rtt -1 = none. */
    struct edge { int64_t off, rtt; } *best = malloc((size_t)n * n * sizeof *best);
    int *queue = malloc((size_t)n * sizeof *queue);
    char *known = calloc((size_t)n, 1);
    if (!best || !queue || !known) {
        free(best);
        free(queue);
        free(known);
        return ds_errorf(err, "out of memory aligning clocks");
    }
    for (int i = 0; i < n * n; i++)
        best[i].rtt = -1;
    for (int i = 0; i < n; i++) {
        const tm_file *f = tl->files[i];
        for (size_t c = 0; c < f->n_clk; c++) {
            int j = find_file(tl, f->clk[c].peer);
            if (j < 0 || j == i)
                continue;
            struct edge *ij = &best[i * n + j], *ji = &best[j * n + i];
            if (ij->rtt < 0 || f->clk[c].rtt < ij->rtt) {
                *ij = (struct edge){f->clk[c].offset, f->clk[c].rtt};
                *ji = (struct edge){-f->clk[c].offset, f->clk[c].rtt};
            }
        }
    }
    int head = 0, tail = 0;
    queue[tail++] = ref;
    known[ref] = 1;
    while (head < tail) {
        int a = queue[head++];
        for (int b = 0; b < n; b++) {
            const struct edge *e = &best[a * n + b];
            if (known[b] || e->rtt < 0)
                continue;
            /* t_master = t_a + shift_a and t_a = t_b - off_ab. */
            tl->files[b]->shift = tl->files[a]->shift - e->off;
            known[b] = 1;
            queue[tail++] = b;
        }
    }
    for (int i = 0; i < n; i++)
        if (!known[i] && strcmp(tl->files[i]->host, tl->files[ref]->host))
            warnf(tl, "%s: host %s has no clock line linking it to %s (host %s); assuming the "
                  "same clock", tl->files[i]->label, tl->files[i]->host[0] ? tl->files[i]->host : "?",
                  tl->files[ref]->service, tl->files[ref]->host[0] ? tl->files[ref]->host : "?");
    free(best);
    free(queue);
    free(known);
    return 0;
}

static int cmp_pair(const void *a, const void *b)
{
    const tm_pair *x = a, *y = b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    if (x->stage != y->stage)
        return x->stage < y->stage ? -1 : 1;
    if (x->frame != y->frame)
        return x->frame < y->frame ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

/* First pair of (file, stage, frame), or NULL. */
static const tm_pair *lookup(const ds_timeline *tl, int file, int stage, uint64_t frame)
{
    if (file < 0 || stage < 0)
        return NULL;
    size_t lo = 0, hi = tl->n_pairs;
    tm_pair key = {file, stage, frame, INT64_MIN, 0};
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_pair(&tl->pairs[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < tl->n_pairs && tl->pairs[lo].file == file && tl->pairs[lo].stage == stage &&
        tl->pairs[lo].frame == frame)
        return &tl->pairs[lo];
    return NULL;
}

/* When the frame's request arrived at file's service (master clock), or -1. */
static int arrival(const ds_timeline *tl, int file, uint64_t frame, int64_t *t)
{
    static const char *const first_stages[] = {"receive", "decode"};
    for (int i = 0; i < 2; i++) {
        const tm_pair *p = lookup(tl, file, stage_index((ds_timeline *)tl, first_stages[i]), frame);
        if (p) {
            *t = p->start + tl->files[file]->shift;
            return 0;
        }
    }
    return -1;
}

static int find_worker(const ds_timeline *tl, int k)
{
    for (int i = 0; i < tl->n_files; i++)
        if (tl->files[i]->kind == KIND_WORKER && tl->files[i]->worker == k)
            return i;
    return -1;
}

static int add_item(ds_timeline *tl, int64_t major, int64_t minor, const ds_tm_slice *s)
{
    if (ds_grow((void **)&tl->items, &tl->cap_items, tl->n_items + 1, sizeof *tl->items, NULL))
        return -1;
    tl->items[tl->n_items++] = (tm_item){major, minor, *s};
    return 0;
}

static int is_in(const char *s, const char *const *set, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, set[i]))
            return 1;
    return 0;
}

/* A send slice becomes a link from the sender to whoever received it. */
static int add_link(ds_timeline *tl, const tm_pair *p, ds_tm_slice *s)
{
    const tm_file *f = tl->files[p->file];
    int64_t major, end;
    int to;
    const char *to_name;
    if (f->kind == KIND_MASTER) {
        major = KEY_M_W0;
        to = find_worker(tl, 0);
        to_name = "worker0";
        if (to < 0 || arrival(tl, to, p->frame, &end))
            to = -1;
    } else {
        int next = find_worker(tl, f->worker + 1);
        int master = find_file(tl, "master");
        const tm_pair *fin = lookup(tl, master, stage_index(tl, "finish"), p->frame);
        if (next >= 0 && !arrival(tl, next, p->frame, &end)) {
            major = KEY_LINK(f->worker);
            to = next;
            to_name = tl->files[next]->service;
        } else if (fin) {
            major = KEY_RESULT(f->worker);
            to = master;
            to_name = "master";
            end = fin->end + tl->files[master]->shift;
        } else {
            major = next >= 0 ? KEY_LINK(f->worker) : KEY_RESULT(f->worker);
            to = -1;
            to_name = next >= 0 ? tl->files[next]->service : "master";
        }
    }
    s->stage = "transfer";
    if (to < 0) {
        s->send_only = 1;
    } else if (end < s->start_us) {
        warnf(tl, "frame %" PRIu64 ": %s -> %s: arrival %.3f ms before the send started "
              "(clock offsets wrong?); drawn with zero length", p->frame, f->service, to_name,
              (double)(s->start_us - end) / 1000.0);
        s->end_us = s->start_us;
    } else {
        s->end_us = end;
    }
    return add_item(tl, major, 0, s);
}

static int make_items(ds_timeline *tl)
{
    for (size_t i = 0; i < tl->n_pairs; i++) {
        const tm_pair *p = &tl->pairs[i];
        const tm_file *f = tl->files[p->file];
        const char *stage = tl->stages[p->stage];
        ds_tm_slice s = {0};
        s.frame = p->frame;
        s.stage = stage;
        s.service = f->service;
        s.start_us = p->start + f->shift;
        s.end_us = p->end + f->shift;
        int rc;
        switch (f->kind) {
        case KIND_MASTER:
        case KIND_WORKER: {
            int64_t major = f->kind == KIND_MASTER ? KEY_MASTER : KEY_WORKER(f->worker);
            int local = f->kind == KIND_MASTER ? is_in(stage, master_local, 3)
                                               : is_in(stage, worker_local, 3);
            if (!strcmp(stage, "send"))
                rc = add_link(tl, p, &s);
            else if (f->kind == KIND_MASTER && !strcmp(stage, "finish"))
                rc = add_item(tl, KEY_LATENCY, 0, &s);
            else if (f->kind == KIND_WORKER && !strcmp(stage, "receive"))
                rc = add_item(tl, major, -1 - p->stage, &s);
            else
                rc = add_item(tl, major, local ? 0 : 1 + p->stage, &s);
            break;
        }
        case KIND_TRAINER:
            rc = add_item(tl, KEY_TRAINER, 0, &s);
            break;
        default:
            rc = add_item(tl, KEY_OTHER(p->file), 0, &s);
            break;
        }
        if (rc)
            return -1;
    }
    return 0;
}

static void track_name(const ds_timeline *tl, int64_t major, int64_t minor, char *out, size_t len)
{
    char base[DS_TM_MAX_NAME + 16];
    if (major == KEY_MASTER)
        snprintf(base, sizeof base, "m");
    else if (major == KEY_M_W0)
        snprintf(base, sizeof base, "m→w0");
    else if (major < KEY_RESULT(0) && major % 2 == 0)
        snprintf(base, sizeof base, "w%" PRId64, (major - 2) / 2);
    else if (major < KEY_RESULT(0))
        snprintf(base, sizeof base, "w%" PRId64 "→w%" PRId64, (major - 3) / 2, (major - 3) / 2 + 1);
    else if (major < KEY_LATENCY)
        snprintf(base, sizeof base, "w%" PRId64 "→m", major - KEY_RESULT(0));
    else if (major == KEY_LATENCY)
        snprintf(base, sizeof base, "latency");
    else if (major == KEY_TRAINER)
        snprintf(base, sizeof base, "trainer");
    else
        snprintf(base, sizeof base, "%s", tl->files[major - KEY_OTHER(0)]->service);
    if (minor)
        snprintf(out, len, "%s:%s", base, tl->stages[minor > 0 ? minor - 1 : -minor - 1]);
    else
        snprintf(out, len, "%s", base);
}

static int cmp_item(const void *a, const void *b)
{
    const tm_item *x = a, *y = b;
    if (x->major != y->major)
        return x->major < y->major ? -1 : 1;
    if (x->minor != y->minor)
        return x->minor < y->minor ? -1 : 1;
    if (x->s.start_us != y->s.start_us)
        return x->s.start_us < y->s.start_us ? -1 : 1;
    if (x->s.end_us != y->s.end_us)
        return x->s.end_us < y->s.end_us ? -1 : 1;
    return (x->s.frame > y->s.frame) - (x->s.frame < y->s.frame);
}

static int cmp_slice(const void *a, const void *b)
{
    const ds_tm_slice *x = a, *y = b;
    if (x->track != y->track)
        return x->track < y->track ? -1 : 1;
    if (x->lane != y->lane)
        return x->lane < y->lane ? -1 : 1;
    return (x->start_us > y->start_us) - (x->start_us < y->start_us);
}

/* Items sorted by track key and start -> tracks, lanes, slices. */
static int make_tracks(ds_timeline *tl, ds_error *err)
{
    qsort(tl->items, tl->n_items, sizeof *tl->items, cmp_item);
    tl->slices = malloc(tl->n_items * sizeof *tl->slices);
    size_t n_tracks = 0;
    for (size_t i = 0; i < tl->n_items; i++)
        if (!i || tl->items[i].major != tl->items[i - 1].major ||
            tl->items[i].minor != tl->items[i - 1].minor)
            n_tracks++;
    tl->tracks = calloc(n_tracks, sizeof *tl->tracks);
    if (!tl->slices || !tl->tracks)
        return ds_errorf(err, "out of memory building %zu slices", tl->n_items);
    int track = -1;
    int64_t lane_end[DS_TM_MAX_LANES];
    for (size_t i = 0; i < tl->n_items; i++) {
        const tm_item *it = &tl->items[i];
        if (!i || it->major != tl->items[i - 1].major || it->minor != tl->items[i - 1].minor) {
            track++;
            track_name(tl, it->major, it->minor, tl->tracks[track].name, sizeof tl->tracks[0].name);
        }
        ds_tm_track *t = &tl->tracks[track];
        /* Greedy interval partitioning: first lane free at this start; when
         * all DS_TM_MAX_LANES are busy, the one that frees first. */
        int lane = -1;
        for (int l = 0; l < t->lanes && lane < 0; l++)
            if (lane_end[l] <= it->s.start_us)
                lane = l;
        if (lane < 0 && t->lanes < DS_TM_MAX_LANES) {
            lane = t->lanes++;
            lane_end[lane] = INT64_MIN;
        }
        if (lane < 0) {
            lane = 0;
            for (int l = 1; l < t->lanes; l++)
                if (lane_end[l] < lane_end[lane])
                    lane = l;
        }
        if (lane_end[lane] < it->s.end_us)
            lane_end[lane] = it->s.end_us;
        ds_tm_slice s = it->s;
        s.track = track;
        s.lane = lane;
        tl->slices[i] = s;
    }
    tl->n_tracks = (int)n_tracks;
    tl->n_slices = tl->n_items;
    qsort(tl->slices, tl->n_slices, sizeof *tl->slices, cmp_slice);
    tl->t0 = INT64_MAX;
    tl->t1 = INT64_MIN;
    for (size_t i = 0; i < tl->n_slices; i++) {
        if (tl->slices[i].start_us < tl->t0)
            tl->t0 = tl->slices[i].start_us;
        if (tl->slices[i].end_us > tl->t1)
            tl->t1 = tl->slices[i].end_us;
    }
    return 0;
}

int ds_timeline_build(ds_timeline *tl, int align, ds_error *err)
{
    if (tl->built)
        return ds_errorf(err, "timeline already built");
    if (!tl->n_files)
        return ds_errorf(err, "no trace files given");
    /* A failed build may be retried: start from the parsed files again. */
    tl->n_pairs = tl->n_items = tl->n_slices = 0;
    tl->n_tracks = 0;
    free(tl->slices);
    free(tl->tracks);
    tl->slices = NULL;
    tl->tracks = NULL;
    if (pair_events(tl, err) || align_clocks(tl, align, err))
        return -1;
    if (tl->n_pairs)
        qsort(tl->pairs, tl->n_pairs, sizeof *tl->pairs, cmp_pair);
    if (make_items(tl))
        return ds_errorf(err, "out of memory building the timeline");
    if (!tl->n_items)
        return ds_errorf(err, "no complete start/finish event pairs in the %d trace file%s", tl->n_files,
                         tl->n_files == 1 ? "" : "s");
    if (make_tracks(tl, err))
        return -1;
    tl->built = 1;
    return 0;
}

int ds_timeline_n_tracks(const ds_timeline *tl) { return tl->built ? tl->n_tracks : 0; }
const ds_tm_track *ds_timeline_track(const ds_timeline *tl, int i)
{
    return tl->built && i >= 0 && i < tl->n_tracks ? &tl->tracks[i] : NULL;
}
size_t ds_timeline_n_slices(const ds_timeline *tl) { return tl->built ? tl->n_slices : 0; }
const ds_tm_slice *ds_timeline_slice(const ds_timeline *tl, size_t i)
{
    return tl->built && i < tl->n_slices ? &tl->slices[i] : NULL;
}

int ds_timeline_n_services(const ds_timeline *tl) { return tl->n_files; }

const char *ds_timeline_service(const ds_timeline *tl, int i, int64_t *shift_us)
{
    if (i < 0 || i >= tl->n_files)
        return NULL;
    if (shift_us)
        *shift_us = tl->files[i]->shift;
    return tl->files[i]->service;
}

int ds_timeline_clock_shift(const ds_timeline *tl, const char *service, int64_t *shift_us)
{
    char name[DS_TM_MAX_NAME + 1];
    if (!valid_name(service))
        return -1;
    canonical(service, name);
    int i = find_file(tl, name);
    if (i < 0)
        return -1;
    *shift_us = tl->files[i]->shift;
    return 0;
}

/* ---- writers ---- */

/* Writes s as a JSON string body (names are validated, hosts may not be). */
static void json_str(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
}

/* Track lanes numbered in chain order: tid = 1 + lanes before it. */
static int *lane_base(const ds_timeline *tl)
{
    int *base = malloc(((size_t)tl->n_tracks + 1) * sizeof *base);
    if (!base)
        return NULL;
    base[0] = 0;
    for (int i = 0; i < tl->n_tracks; i++)
        base[i + 1] = base[i] + tl->tracks[i].lanes;
    return base;
}

static void lane_label(const ds_tm_track *t, int lane, char *out, size_t len)
{
    if (lane)
        snprintf(out, len, "%s #%d", t->name, lane + 1);
    else
        snprintf(out, len, "%s", t->name);
}

int ds_timeline_write_json(const ds_timeline *tl, FILE *f, ds_error *err)
{
    if (!tl->built)
        return ds_errorf(err, "timeline not built");
    int *base = lane_base(tl);
    if (!base)
        return ds_errorf(err, "out of memory");
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"generator\":\"deltaslice trace\","
               "\"t0_us\":%" PRId64 ",\"clock_shift_us\":{", tl->t0);
    for (int i = 0; i < tl->n_files; i++)
        fprintf(f, "%s\"%s\":%" PRId64, i ? "," : "", tl->files[i]->service, tl->files[i]->shift);
    fprintf(f, "}},\n\"traceEvents\":[\n");
    fprintf(f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,"
               "\"args\":{\"name\":\"deltaslice chain\"}}");
    for (int t = 0; t < tl->n_tracks; t++)
        for (int l = 0; l < tl->tracks[t].lanes; l++) {
            char label[sizeof tl->tracks[0].name + 16];
            lane_label(&tl->tracks[t], l, label, sizeof label);
            int tid = base[t] + l + 1;
            fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"name\":\"",
                    tid);
            json_str(f, label);
            fprintf(f, "\"}},\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,"
                       "\"args\":{\"sort_index\":%d}}", tid, tid);
        }
    for (size_t i = 0; i < tl->n_slices; i++) {
        const ds_tm_slice *s = &tl->slices[i];
        fprintf(f, ",\n{\"name\":\"frame %" PRIu64 "\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":1,\"tid\":%d,"
                   "\"ts\":%" PRId64 ",\"dur\":%" PRId64 ",\"args\":{\"frame\":%" PRIu64
                   ",\"stage\":\"%s\",\"service\":\"%s\"%s}}",
                s->frame, s->stage, base[s->track] + s->lane + 1, s->start_us - tl->t0,
                s->end_us - s->start_us, s->frame, s->stage, s->service,
                s->send_only ? ",\"send_only\":true" : "");
    }
    fprintf(f, "\n]}\n");
    free(base);
    if (fflush(f) || ferror(f))
        return ds_errorf(err, "write failed: %s", strerror(errno));
    return 0;
}

static void xml_str(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20)
                fputc(*s, f);
        }
    }
}

/* 1, 2 or 5 x 10^k seconds giving about `want` ticks over span seconds. */
static double tick_step(double span, int want)
{
    double raw = span / want;
    double p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* Geometry of the SVG chart. */
typedef struct svg_layout {
    const int *base; /* first lane row of each track, [n_tracks + 1] */
    double row_h, track_gap, top, plot_w, left, width, height;
    double span_us, scale; /* time span, px per µs */
} svg_layout;

static svg_layout svg_layout_of(const ds_timeline *tl, const int *base)
{
    svg_layout L = {.base = base, .row_h = 18, .track_gap = 6, .top = 56, .plot_w = 1000};
    const double right = 24;
    size_t longest = 4;
    for (int t = 0; t < tl->n_tracks; t++)
        if (strlen(tl->tracks[t].name) > longest)
            longest = strlen(tl->tracks[t].name);
    L.left = 16 + 7.5 * (double)(longest > 32 ? 32 : longest) + 12;
    L.height = L.top + tl->n_tracks * L.track_gap + base[tl->n_tracks] * L.row_h + 36;
    L.width = L.left + L.plot_w + right;
    L.span_us = (double)(tl->t1 - tl->t0);
    if (L.span_us < 1)
        L.span_us = 1;
    L.scale = L.plot_w / L.span_us;
    return L;
}

/* The XML header, background and title line. */
static void svg_title(const ds_timeline *tl, const svg_layout *L, FILE *f)
{
    uint64_t fmin = UINT64_MAX, fmax = 0;
    for (size_t i = 0; i < tl->n_slices; i++) {
        if (tl->slices[i].frame < fmin)
            fmin = tl->slices[i].frame;
        if (tl->slices[i].frame > fmax)
            fmax = tl->slices[i].frame;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"11\">\n"
               "<rect class=\"bg\" x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n",
            L->width, L->height, L->width, L->height, L->width, L->height);
    fprintf(f, "<text x=\"%.1f\" y=\"18\" font-size=\"13\" font-weight=\"bold\">deltaslice timeline: "
               "frames %" PRIu64 "..%" PRIu64 ", %zu slices, %.3f s</text>\n",
            L->left, fmin, fmax, tl->n_slices, L->span_us / 1e6);
}

/* Time axis: ticks in seconds from the first slice, grid lines down. */
static void svg_axis(const svg_layout *L, FILE *f)
{
    double span_s = L->span_us / 1e6, step = tick_step(span_s, 10);
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    double bottom = L->height - 30;
    fprintf(f, "<g class=\"axis\" stroke=\"#cccccc\" stroke-width=\"1\">\n");
    for (int k = 0; k * step <= span_s * (1 + 1e-9) && k <= 100; k++) {
        double x = L->left + k * step * 1e6 * L->scale;
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\"/>\n", x, L->top - 6, x,
                bottom);
    }
    fprintf(f, "</g>\n<g class=\"ticks\" text-anchor=\"middle\" fill=\"#333333\">\n");
    for (int k = 0; k * step <= span_s * (1 + 1e-9) && k <= 100; k++) {
        double x = L->left + k * step * 1e6 * L->scale;
        fprintf(f, "<text x=\"%.2f\" y=\"%.1f\">%.*f</text>\n", x, L->top - 10, decimals, k * step);
    }
    fprintf(f, "<text x=\"%.2f\" y=\"%.1f\">time (s)</text>\n</g>\n", L->left + L->plot_w / 2,
            bottom + 20);
}

/* Track labels and row bands. */
static void svg_tracks(const ds_timeline *tl, const svg_layout *L, FILE *f)
{
    fprintf(f, "<g class=\"tracks\">\n");
    for (int t = 0; t < tl->n_tracks; t++) {
        double y = L->top + t * L->track_gap + L->base[t] * L->row_h;
        double h = tl->tracks[t].lanes * L->row_h;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eeeeee\"/>\n",
                L->left, y + h + L->track_gap / 2, L->left + L->plot_w, y + h + L->track_gap / 2);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", L->left - 8, y + h / 2 + 4);
        xml_str(f, tl->tracks[t].name);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</g>\n");
}

/* One rectangle per slice, a colour per frame, the frame id when it fits. */
static void svg_slices(const ds_timeline *tl, const svg_layout *L, FILE *f)
{
    static const char *const palette[] = {"#8dd3c7", "#ffffb3", "#bebada", "#fb8072",
                                          "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
                                          "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f"};
    const int n_pal = (int)(sizeof palette / sizeof palette[0]);
    const double row_h = L->row_h;
    fprintf(f, "<g class=\"slices\" stroke=\"#555555\" stroke-width=\"0.5\">\n");
    for (size_t i = 0; i < tl->n_slices; i++) {
        const ds_tm_slice *s = &tl->slices[i];
        double x = L->left + (double)(s->start_us - tl->t0) * L->scale;
        double w = (double)(s->end_us - s->start_us) * L->scale;
        if (w < 0.5)
            w = 0.5; /* zero-length slices stay visible */
        double y = L->top + s->track * L->track_gap + (L->base[s->track] + s->lane) * row_h + 1;
        fprintf(f, "<rect class=\"s\" x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" "
                   "fill=\"%s\"%s><title>frame %" PRIu64 " %s (%s) %.3f ms</title></rect>\n",
                x, y, w, row_h - 2, palette[s->frame % (uint64_t)n_pal],
                s->send_only ? " stroke-dasharray=\"2,2\"" : "", s->frame, s->stage, s->service,
                (double)(s->end_us - s->start_us) / 1000.0);
        char id[24];
        int len = snprintf(id, sizeof id, "%" PRIu64, s->frame);
        if (w >= 6.5 * len + 4)
            fprintf(f, "<text x=\"%.2f\" y=\"%.1f\" stroke=\"none\" fill=\"#000000\" "
                       "text-anchor=\"middle\" font-size=\"10\">%s</text>\n",
                    x + w / 2, y + row_h / 2 + 2.5, id);
    }
    fprintf(f, "</g>\n");
}

int ds_timeline_write_svg(const ds_timeline *tl, FILE *f, ds_error *err)
{
    if (!tl->built)
        return ds_errorf(err, "timeline not built");
    int *base = lane_base(tl);
    if (!base)
        return ds_errorf(err, "out of memory");
    const svg_layout L = svg_layout_of(tl, base);
    svg_title(tl, &L, f);
    svg_axis(&L, f);
    svg_tracks(tl, &L, f);
    svg_slices(tl, &L, f);
    fprintf(f, "</svg>\n");
    free(base);
    if (fflush(f) || ferror(f))
        return ds_errorf(err, "write failed: %s", strerror(errno));
    return 0;
}
