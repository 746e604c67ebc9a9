/* output.c - the result sinks: one JSON line per frame (top-k classes or a
 * summary per output) and one .npy file per frame and output.
 *
 * Per frame nothing is allocated once the first frames went through: the
 * line, the top-k heap and the file names live in buffers kept here. */
#include "output/output.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/file.h"

#define LABELS_MAX ((uint64_t)64 << 20)

struct ds_output {
    FILE *jsonl;      /* NULL = no jsonl */
    char *jsonl_path; /* "-" for stdout */
    char *tensors;    /* NULL = no .npy files */
    char *labels_path;
    ds_buf labels_text;  /* the file, lines cut in place */
    const char **labels; /* [n_labels] into labels_text */
    size_t n_labels;
    int top_k;
    ds_buf line;
    int64_t *heap;
    size_t heap_cap;
    char *path; /* DIR/f<frame>_o<k>.npy and its temporary name */
    size_t path_cap;
};

/* --- small helpers --- */

static int appendf(ds_buf *b, ds_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int appendf(ds_buf *b, ds_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || ds_buf_reserve(b, b->len + (size_t)n + 1, err))
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* A float as JSON: %.9g reads back as the same float32; JSON has no NaN or
 * infinity, so those are null. */
static int append_num(ds_buf *b, double v, ds_error *err)
{
    if (!isfinite(v))
        return ds_buf_append(b, "null", 4, err);
    return appendf(b, err, "%.9g", v);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, min = 0x80, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, min = 0x800, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, min = 0x10000, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string; s NULL is null.  Names and labels come from files the
 * user chose: control characters are escaped and bytes that are not UTF-8
 * become U+FFFD, so every line stays valid JSON. */
static int append_str(ds_buf *b, const char *s, ds_error *err)
{
    if (!s)
        return ds_buf_append(b, "null", 4, err);
    if (ds_buf_append(b, "\"", 1, err))
        return -1;
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n) {
        size_t len = utf8_len(p, n);
        int rc;
        if (!len) {
            rc = ds_buf_append(b, "\\ufffd", 6, err);
            len = 1;
        } else if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            rc = ds_buf_append(b, e, 2, err);
        } else if (*p < 0x20) {
            rc = appendf(b, err, "\\u%04x", *p);
        } else {
            rc = ds_buf_append(b, p, len, err);
        }
        if (rc)
            return -1;
        p += len;
        n -= len;
    }
    return ds_buf_append(b, "\"", 1, err);
}

/* mkdir -p: every missing folder of path. */
static int make_dirs(const char *path, ds_error *err)
{
    char *p = strdup(path);
    if (!p)
        return ds_errorf(err, "%s: out of memory", path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s)
            continue;
        char c = *s;
        *s = '\0';
        struct stat st;
        if (mkdir(p, 0777) && errno != EEXIST) {
            rc =
                ds_errorf(err, "output.tensors %s: cannot create %s: %s", path, p, strerror(errno));
            break;
        }
        if (!c) {
            if (stat(p, &st) || !S_ISDIR(st.st_mode))
                rc = ds_errorf(err, "output.tensors %s: not a folder", path);
            break;
        }
        *s = c;
    }
    free(p);
    return rc;
}

/* Reads the labels file: line i (0-based) is class i's name, a final line
 * without a newline counts, a trailing '\r' (CRLF files) is dropped. */
static int read_labels(ds_output *o, const char *path, ds_error *err)
{
    if (ds_read_file(path, LABELS_MAX, &o->labels_text, err))
        return ds_error_prefix(err, "output.labels");
    char *t = (char *)o->labels_text.data;
    size_t len = o->labels_text.len, n = 0;
    for (size_t i = 0; i < len; i++)
        n += t[i] == '\n';
    n += len && t[len - 1] != '\n';
    o->labels = malloc((n ? n : 1) * sizeof *o->labels);
    if (!o->labels)
        return ds_errorf(err, "output.labels %s: out of memory for %zu labels", path, n);
    size_t k = 0;
    for (char *line = t; k < n;) {
        char *nl = memchr(line, '\n', len - (size_t)(line - t));
        char *end = nl ? nl : t + len;
        if (end > line && end[-1] == '\r')
            end[-1] = '\0';
        *end = '\0'; /* ds_read_file leaves a zero byte after the data */
        o->labels[k++] = line;
        line = end + 1;
    }
    o->n_labels = n;
    return 0;
}

/* A copy of s into *out; -1 with a message when memory runs out. */
static int keep_str(const char *s, char **out, ds_error *err)
{
    if (!(*out = strdup(s)))
        return ds_errorf(err, "out of memory opening the outputs");
    return 0;
}

ds_output *ds_output_open(const ds_output_opts *opts, ds_error *err)
{
    if (opts->top_k < 1) {
        ds_errorf(err, "output.top_k must be at least 1, not %d", opts->top_k);
        return NULL;
    }
    if (opts->tensors && !opts->tensors[0]) {
        ds_errorf(err, "output.tensors: an empty folder name");
        return NULL;
    }
    ds_output *o = calloc(1, sizeof *o);
    if (!o) {
        ds_errorf(err, "out of memory opening the outputs");
        return NULL;
    }
    o->top_k = opts->top_k;
    if (opts->labels &&
        (keep_str(opts->labels, &o->labels_path, err) || read_labels(o, opts->labels, err)))
        goto fail;
    if (opts->tensors &&
        (keep_str(opts->tensors, &o->tensors, err) || make_dirs(opts->tensors, err)))
        goto fail;
    if (opts->jsonl) {
        if (keep_str(opts->jsonl, &o->jsonl_path, err))
            goto fail;
        o->jsonl = strcmp(opts->jsonl, "-") ? fopen(opts->jsonl, "w") : stdout;
        if (!o->jsonl) {
            ds_errorf(err, "output.jsonl %s: cannot create: %s", opts->jsonl, strerror(errno));
            goto fail;
        }
    }
    return o;
fail:
    ds_output_close(o);
    return NULL;
}

/* --- one frame --- */

/* An output of shape [N] or [1,N] is a vector of class scores. */
static int is_vector(const ds_shape *s)
{
    return s->ndim == 1 || (s->ndim == 2 && s->dims[0] == 1);
}

/* Does class a rank above class b?  Higher score first, NaN last, ties to
 * the lower index. */
static int ranks_above(const float *v, int64_t a, int64_t b)
{
    int na = isnan(v[a]), nb = isnan(v[b]);
    if (na != nb)
        return nb;
    if (!na && v[a] != v[b])
        return v[a] > v[b];
    return a < b;
}

/* heap[0..n) is a heap with the lowest-ranked class at the root. */
static void sift_down(int64_t *heap, size_t n, size_t i, const float *v)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, low = i;
        if (l < n && ranks_above(v, heap[low], heap[l]))
            low = l;
        if (r < n && ranks_above(v, heap[low], heap[r]))
            low = r;
        if (low == i)
            return;
        int64_t t = heap[i];
        heap[i] = heap[low];
        heap[low] = t;
        i = low;
    }
}

static void sift_up(int64_t *heap, size_t i, const float *v)
{
    while (i) {
        size_t parent = (i - 1) / 2;
        if (!ranks_above(v, heap[parent], heap[i]))
            return;
        int64_t t = heap[i];
        heap[i] = heap[parent];
        heap[parent] = t;
        i = parent;
    }
}

/* The k best classes of v[n] into o->heap[0..k), best first. */
static int top_k(ds_output *o, const float *v, int64_t n, size_t k, ds_error *err)
{
    if (ds_grow((void **)&o->heap, &o->heap_cap, k ? k : 1, sizeof *o->heap, err))
        return -1;
    size_t len = 0;
    for (int64_t i = 0; i < n; i++) {
        if (len < k) {
            o->heap[len] = i;
            sift_up(o->heap, len++, v);
        } else if (k && ranks_above(v, i, o->heap[0])) {
            o->heap[0] = i;
            sift_down(o->heap, k, 0, v);
        }
    }
    /* Popping the lowest-ranked fills the array from its end. */
    while (len > 1) {
        int64_t worst = o->heap[0];
        o->heap[0] = o->heap[--len];
        sift_down(o->heap, len, 0, v);
        o->heap[len] = worst;
    }
    return 0;
}

static int append_top(ds_output *o, const ds_tensor *t, ds_error *err)
{
    const float *v = ds_tensor_f32(t);
    int64_t n = ds_shape_numel(&t->shape);
    size_t k = (int64_t)o->top_k < n ? (size_t)o->top_k : (size_t)n;
    if (top_k(o, v, n, k, err) || appendf(&o->line, err, ",\"top\":["))
        return -1;
    for (size_t i = 0; i < k; i++) {
        int64_t c = o->heap[i];
        if (appendf(&o->line, err, "%s{\"index\":%" PRId64 ",\"score\":", i ? "," : "", c) ||
            append_num(&o->line, v[c], err))
            return -1;
        if (o->labels &&
            (appendf(&o->line, err, ",\"label\":") || append_str(&o->line, o->labels[c], err)))
            return -1;
        if (ds_buf_append(&o->line, "}", 1, err))
            return -1;
    }
    return ds_buf_append(&o->line, "]", 1, err);
}

/* min, max, mean and the first index of the max; NaNs are skipped by min,
 * max and argmax and make the mean null. */
static int append_summary(ds_output *o, const ds_tensor *t, ds_error *err)
{
    const float *v = ds_tensor_f32(t);
    int64_t n = ds_shape_numel(&t->shape), argmax = -1;
    float lo = NAN, hi = NAN;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += v[i];
        if (isnan(v[i]))
            continue;
        if (argmax < 0 || v[i] > hi) {
            hi = v[i];
            argmax = i;
        }
        if (isnan(lo) || v[i] < lo)
            lo = v[i];
    }
    ds_buf *b = &o->line;
    if (appendf(b, err, ",\"summary\":{\"min\":") || append_num(b, lo, err) ||
        appendf(b, err, ",\"max\":") || append_num(b, hi, err) || appendf(b, err, ",\"mean\":") ||
        append_num(b, n ? sum / (double)n : NAN, err))
        return -1;
    if (argmax < 0)
        return appendf(b, err, ",\"argmax\":null}");
    return appendf(b, err, ",\"argmax\":%" PRId64 "}", argmax);
}

static int format_line(ds_output *o, const ds_result *r, ds_error *err)
{
    ds_buf *b = &o->line;
    b->len = 0;
    if (appendf(b, err,
                "{\"frame\":%" PRIu64 ",\"source_frame\":%" PRId64 ",\"capture_us\":%" PRId64
                ",\"latency_s\":",
                r->frame_id, r->source_frame, r->capture_us) ||
        append_num(b, r->latency, err) || appendf(b, err, ",\"outputs\":["))
        return -1;
    for (int i = 0; i < r->n_outputs; i++) {
        const ds_tensor *t = r->values[i];
        if (appendf(b, err, "%s{\"layer\":%d,\"name\":", i ? "," : "", r->layer_ids[i]) ||
            append_str(b, r->names ? r->names[i] : NULL, err) || appendf(b, err, ",\"shape\":["))
            return -1;
        for (int d = 0; d < t->shape.ndim; d++)
            if (appendf(b, err, "%s%" PRId64, d ? "," : "", t->shape.dims[d]))
                return -1;
        if (ds_buf_append(b, "]", 1, err) ||
            (is_vector(&t->shape) ? append_top(o, t, err) : append_summary(o, t, err)) ||
            ds_buf_append(b, "}", 1, err))
            return -1;
    }
    return appendf(b, err, "]}\n");
}

static int write_line(ds_output *o, ds_error *err)
{
    const char *name = strcmp(o->jsonl_path, "-") ? o->jsonl_path : "stdout";
    if (fwrite(o->line.data, 1, o->line.len, o->jsonl) != o->line.len || fflush(o->jsonl))
        return ds_errorf(err, "output.jsonl %s: cannot write: %s", name, strerror(errno));
    return 0;
}

/* DIR/f<frame>_o<k>.npy, written under a hidden temporary name and renamed,
 * so whoever watches DIR never reads a partial file. */
static int write_tensor(ds_output *o, uint64_t frame, int k, const ds_tensor *t, ds_error *err)
{
    size_t need = strlen(o->tensors) + 64;
    if (ds_grow((void **)&o->path, &o->path_cap, 2 * need, 1, err))
        return -1;
    char *final = o->path, *tmp = o->path + need;
    snprintf(final, need, "%s/f%09" PRIu64 "_o%d.npy", o->tensors, frame, k);
    snprintf(tmp, need, "%s/.f%09" PRIu64 "_o%d.npy.part", o->tensors, frame, k);
    if (ds_npy_write(tmp, t, err)) {
        unlink(tmp);
        return ds_error_prefix(err, "output.tensors");
    }
    if (rename(tmp, final)) {
        ds_errorf(err, "output.tensors: cannot rename %s to %s: %s", tmp, final, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Everything that can be wrong with a result, before anything is written. */
static int check_result(const ds_output *o, const ds_result *r, ds_error *err)
{
    if (r->n_outputs < 0 || (r->n_outputs && (!r->layer_ids || !r->values)))
        return ds_errorf(err, "frame %" PRIu64 ": %d outputs without their tensors", r->frame_id,
                         r->n_outputs);
    for (int i = 0; i < r->n_outputs; i++) {
        const ds_tensor *t = r->values[i];
        if (t->dtype != DS_F32 || t->shape.ndim < 1 || t->shape.ndim > DS_MAX_DIMS)
            return ds_errorf(err,
                             "frame %" PRIu64
                             ": output %d (layer %d) is not a float32 tensor of 1 to 4 dimensions",
                             r->frame_id, i, r->layer_ids[i]);
        int64_t n = ds_shape_numel(&t->shape);
        if (o->jsonl && o->labels && is_vector(&t->shape) && (uint64_t)n > o->n_labels)
            return ds_errorf(
                err,
                "output.labels %s: %zu labels, but output %d (layer %d%s%s) has %" PRId64
                " classes",
                o->labels_path, o->n_labels, i, r->layer_ids[i],
                r->names && r->names[i] ? ", " : "", r->names && r->names[i] ? r->names[i] : "", n);
    }
    return 0;
}

int ds_output_write(ds_output *o, const ds_result *r, ds_error *err)
{
    if (check_result(o, r, err))
        return -1;
    for (int i = 0; o->tensors && i < r->n_outputs; i++)
        if (write_tensor(o, r->frame_id, i, r->values[i], err))
            return -1;
    if (o->jsonl && (format_line(o, r, err) || write_line(o, err)))
        return -1;
    return 0;
}

void ds_output_close(ds_output *o)
{
    if (!o)
        return;
    if (o->jsonl && o->jsonl != stdout)
        fclose(o->jsonl);
    else if (o->jsonl)
        fflush(stdout);
    free(o->jsonl_path);
    free(o->tensors);
    free(o->labels_path);
    free(o->labels);
    ds_buf_free(&o->labels_text);
    ds_buf_free(&o->line);
    free(o->heap);
    free(o->path);
    free(o);
}
