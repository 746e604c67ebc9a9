/* test_output.c - the result sinks: .npy files (round trips, the exact
 * header numpy writes, numpy itself loading them when python3-numpy is
 * installed), JSON lines (top-k order and ties, labels, summaries, floats
 * that read back bit for bit, escapes, stdout) and every error promised. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "output/output.h"

#define PYTHON "/usr/bin/python3"

static char tmpdir[64];

/* path inside the test's temp dir (a few static slots, enough per test). */
static const char *tmp(const char *name)
{
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* The whole file, zero-terminated; *len its size. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = (n + 4096 + 1) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, 4096, f);
        n += got;
        if (got < 4096)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void make_tensor(ds_tensor *t, ds_dtype dtype, int ndim, const int64_t *dims)
{
    ds_shape s = ds_shape_make(ndim, dims);
    assert_int_equal(ds_tensor_reserve(t, &s, dtype, NULL), 0);
    int64_t n = ds_shape_numel(&s);
    for (int64_t i = 0; i < n; i++) {
        if (dtype == DS_F32)
            ds_tensor_f32(t)[i] = (float)i * 0.37f - 5.0f + (i == 3 ? 1e-30f : 0.0f);
        else
            ds_tensor_u8(t)[i] = (uint8_t)(i * 7 + 3);
    }
}

/* The float32 and uint8 arrays of every rank the tests write. */
typedef struct npy_case {
    const char *name;
    ds_dtype dtype;
    int ndim;
    int64_t dims[4];
} npy_case;

static const npy_case cases[] = {
    {"f1", DS_F32, 1, {7}},
    {"f2", DS_F32, 2, {1, 10}},
    {"f3", DS_F32, 3, {2, 3, 4}},
    {"f4", DS_F32, 4, {1, 3, 5, 7}},
    {"u1", DS_U8, 1, {9}},
    {"u2", DS_U8, 2, {4, 5}},
    {"u3", DS_U8, 3, {2, 3, 4}},
    {"u4", DS_U8, 4, {1, 3, 4, 5}},
    {"f4big", DS_F32, 4, {1, 256, 13, 22}},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static void test_npy_round_trip(void **state)
{
    (void)state;
    ds_error err = {{0}};
    for (size_t c = 0; c < N_CASES; c++) {
        ds_tensor t = {0}, back = {0};
        make_tensor(&t, cases[c].dtype, cases[c].ndim, cases[c].dims);
        char name[32];
        snprintf(name, sizeof name, "%s.npy", cases[c].name);
        assert_int_equal(ds_npy_write(tmp(name), &t, &err), 0);
        assert_int_equal(ds_npy_read(tmp(name), &back, &err), 0);
        assert_int_equal(back.dtype, t.dtype);
        assert_true(ds_shape_equal(&back.shape, &t.shape));
        assert_memory_equal(back.data, t.data, ds_tensor_bytes(&t));
        /* Header plus data, the header a multiple of 64 bytes. */
        size_t len;
        char *file = read_all(tmp(name), &len);
        size_t hlen = 10 + ((unsigned char)file[8] | (unsigned)(unsigned char)file[9] << 8);
        assert_int_equal(hlen % 64, 0);
        assert_int_equal(len, hlen + ds_tensor_bytes(&t));
        assert_int_equal(file[hlen - 1], '\n');
        free(file);
        ds_tensor_free(&t);
        ds_tensor_free(&back);
    }
}

/* Exactly what numpy 1.24 writes for these arrays (np.save into a BytesIO):
 * the magic, version 1.0, the header length 118 (0x76) as a little-endian
 * uint16, the dict, spaces and a newline ending at byte 128. */
static void test_npy_header_bytes(void **state)
{
    (void)state;
    static const struct {
        const char *name, *dict;
    } want[] = {
        {"f1", "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }"},
        {"f2", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 10), }"},
        {"f4big", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 256, 13, 22), }"},
        {"u1", "{'descr': '|u1', 'fortran_order': False, 'shape': (9,), }"},
        {"u3", "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 4), }"},
    };
    ds_error err = {{0}};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        const npy_case *c = NULL;
        for (size_t i = 0; i < N_CASES; i++)
            if (!strcmp(cases[i].name, want[w].name))
                c = &cases[i];
        assert_non_null(c);
        ds_tensor t = {0};
        make_tensor(&t, c->dtype, c->ndim, c->dims);
        assert_int_equal(ds_npy_write(tmp("h.npy"), &t, &err), 0);
        size_t len;
        char *file = read_all(tmp("h.npy"), &len);
        assert_true(len >= 128);
        assert_memory_equal(file, "\x93NUMPY\x01\x00\x76\x00", 10);
        size_t dl = strlen(want[w].dict);
        assert_memory_equal(file + 10, want[w].dict, dl);
        for (size_t i = 10 + dl; i < 127; i++)
            assert_int_equal(file[i], ' ');
        assert_int_equal(file[127], '\n');
        assert_memory_equal(file + 128, t.data, ds_tensor_bytes(&t));
        free(file);
        ds_tensor_free(&t);
    }
}

/* Can PYTHON import module? */
static int have_python(const char *module)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, PYTHON " -c 'import %s' >/dev/null 2>&1", module);
    return system(cmd) == 0;
}

/* numpy loads every file to the same values, and np.save of what it loaded
 * gives the same bytes. */
static void test_npy_numpy_loads(void **state)
{
    (void)state;
    if (!have_python("numpy")) {
        printf("SKIP: " PYTHON " cannot import numpy (apt-get install python3-numpy)\n");
        skip();
    }
    ds_error err = {{0}};
    for (size_t c = 0; c < N_CASES; c++) {
        ds_tensor t = {0};
        make_tensor(&t, cases[c].dtype, cases[c].ndim, cases[c].dims);
        char name[32];
        snprintf(name, sizeof name, "%s.npy", cases[c].name);
        assert_int_equal(ds_npy_write(tmp(name), &t, &err), 0);
        snprintf(name, sizeof name, "%s.raw", cases[c].name);
        write_text(tmp(name), t.data, ds_tensor_bytes(&t));
        ds_tensor_free(&t);
    }
    const char *script =
        "import io, sys, numpy as np\n"
        "d = sys.argv[1]\n"
        "for case in sys.argv[2:]:\n"
        "    name, dt, shape = case.split(':')\n"
        "    shape = tuple(int(x) for x in shape.split('x'))\n"
        "    path = f'{d}/{name}.npy'\n"
        "    a = np.load(path)\n"
        "    assert a.dtype == np.dtype(dt), (path, a.dtype)\n"
        "    assert a.shape == shape, (path, a.shape)\n"
        "    assert a.tobytes() == open(f'{d}/{name}.raw', 'rb').read(), path\n"
        "    b = io.BytesIO(); np.save(b, a)\n"
        "    assert b.getvalue() == open(path, 'rb').read(), path + ': numpy writes other bytes'\n";
    write_text(tmp("check.py"), script, strlen(script));
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, PYTHON " '%s' '%s'", tmp("check.py"), tmpdir);
    for (size_t c = 0; c < N_CASES; c++) {
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s:%s:", cases[c].name,
                      cases[c].dtype == DS_F32 ? "<f4" : "|u1");
        for (int d = 0; d < cases[c].ndim; d++)
            n += snprintf(cmd + n, sizeof cmd - (size_t)n, "%s%lld", d ? "x" : "",
                          (long long)cases[c].dims[d]);
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, "'");
    }
    assert_int_equal(system(cmd), 0);
}

/* A .npy file made by hand: magic and version (8 bytes), the dict padded
 * with spaces and a newline to 128 bytes (version 1.0: 2-byte length; 2.0:
 * 4-byte), then data. */
static void write_npy_raw(const char *path, const char *magic, const char *dict, const void *data,
                          size_t n)
{
    char file[256];
    int v2 = magic[6] == 2;
    size_t pre = v2 ? 12 : 10, hl = 128 - pre;
    assert_true(strlen(dict) < hl);
    memset(file, 0, sizeof file);
    memcpy(file, magic, 8);
    file[8] = (char)hl;
    memset(file + pre, ' ', hl);
    memcpy(file + pre, dict, strlen(dict));
    file[127] = '\n';
    assert_true(128 + n <= sizeof file);
    memcpy(file + 128, data, n);
    write_text(path, file, 128 + n);
}

/* Headers numpy may write that ds_npy_write does not (other key order,
 * version 2.0, big-endian floats), and every malformed file. */
static void test_npy_read_variants_and_errors(void **state)
{
    (void)state;
    ds_error err = {{0}};
    ds_tensor t = {0};
    const unsigned char be[8] = {0x3f, 0x80, 0, 0, 0xc0, 0x40, 0, 0}; /* 1.0f, -3.0f */
    write_npy_raw(tmp("be.npy"), "\x93NUMPY\x02\x00",
                  "{'shape': (2,), 'fortran_order': False, 'descr': '>f4'}", be, 8);
    if (ds_npy_read(tmp("be.npy"), &t, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(t.dtype, DS_F32);
    assert_int_equal(t.shape.ndim, 1);
    assert_int_equal(t.shape.dims[0], 2);
    assert_true(ds_tensor_f32(&t)[0] == 1.0f && ds_tensor_f32(&t)[1] == -3.0f);

    const float six[6] = {1, 2, 3, 4, 5, 6};
    static const struct {
        const char *magic, *dict;
        size_t bytes;
        const char *msg;
    } bad[] = {
        {"\x93NUMPX\x01\x00", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24,
         "not a .npy file"},
        {"\x93NUMPY\x04\x00", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24,
         "version 4.0 is not supported"},
        {"\x93NUMPY\x01\x00", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 24,
         "dtype '<f8' is not supported"},
        {"\x93NUMPY\x01\x00", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24,
         "Fortran-order"},
        {"\x93NUMPY\x01\x00", "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4,
         "0-D array"},
        {"\x93NUMPY\x01\x00", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }", 24,
         "malformed .npy header"},
        {"\x93NUMPY\x01\x00", "{'dtype': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24,
         "malformed .npy header"},
        {"\x93NUMPY\x01\x00", "{'descr': '<f4', 'shape': (2, 3), }", 24, "malformed .npy header"},
        {"\x93NUMPY\x01\x00",
         "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 6), }", 24,
         "malformed .npy header"},
        {"\x93NUMPY\x01\x00", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", 24,
         "data cut short (24 of 32 bytes)"},
        {"\x93NUMPY\x01\x00", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 24,
         "data longer than the shape says"},
        {"\x93NUMPY\x01\x00",
         "{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536, 2), }", 24, "too large"},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        write_npy_raw(tmp("bad.npy"), bad[b].magic, bad[b].dict, six, bad[b].bytes);
        err.msg[0] = '\0';
        assert_int_equal(ds_npy_read(tmp("bad.npy"), &t, &err), -1);
        if (!strstr(err.msg, bad[b].msg) ||
            strncmp(err.msg, tmp("bad.npy"), strlen(tmp("bad.npy"))))
            fail_msg("case %zu (%s): got '%s', want '%s'", b, bad[b].dict, err.msg, bad[b].msg);
    }
    /* Cut inside the header; a missing file. */
    write_npy_raw(tmp("ok.npy"), "\x93NUMPY\x01\x00",
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", six, 24);
    assert_int_equal(ds_npy_read(tmp("ok.npy"), &t, &err), 0);
    assert_memory_equal(t.data, six, sizeof six);
    size_t len;
    char *ok = read_all(tmp("ok.npy"), &len);
    write_text(tmp("cut.npy"), ok, 40);
    assert_int_equal(ds_npy_read(tmp("cut.npy"), &t, &err), -1);
    assert_non_null(strstr(err.msg, "header cut short"));
    assert_int_equal(ds_npy_read(tmp("none.npy"), &t, &err), -1);
    assert_non_null(strstr(err.msg, "none.npy: cannot open"));
    free(ok);
    ds_tensor_free(&t);
}

/* --- JSON lines --- */

static ds_output *open_jsonl(const char *jsonl, const char *labels, int top_k)
{
    ds_error err = {{0}};
    ds_output_opts o = {.jsonl = jsonl, .labels = labels, .top_k = top_k};
    ds_output *out = ds_output_open(&o, &err);
    if (!out)
        fail_msg("ds_output_open: %s", err.msg);
    return out;
}

static void vec(ds_tensor *t, int ndim, const int64_t *dims, const float *v)
{
    ds_shape s = ds_shape_make(ndim, dims);
    assert_int_equal(ds_tensor_reserve(t, &s, DS_F32, NULL), 0);
    memcpy(t->data, v, ds_tensor_bytes(t));
}

static void test_jsonl_top_k_and_summary(void **state)
{
    (void)state;
    /* No newline at the end, a CRLF line: labels a..f. */
    write_text(tmp("labels.txt"), "a\nb\r\nc\nd\ne\nf", 13);
    ds_output *out = open_jsonl(tmp("out.jsonl"), tmp("labels.txt"), 4);
    ds_tensor scores = {0}, fmap = {0}, all = {0};
    vec(&scores, 2, (const int64_t[]){1, 6}, (const float[]){0.1f, 0.25f, NAN, 0.25f, 0.5f, -1.0f});
    /* the max 3 twice: argmax is the first */
    vec(&fmap, 4, (const int64_t[]){1, 2, 2, 2}, (const float[]){1, -2, 3, 0.5f, 3, -2, 0, 0});
    vec(&all, 1, (const int64_t[]){3}, (const float[]){2, 2, 2});
    const int layers[] = {13, 7, 20};
    const char *names[] = {"fc8", "pool5", NULL};
    const ds_tensor *values[] = {&scores, &fmap, &all};
    ds_result r = {.frame_id = 7,
                   .source_frame = 9,
                   .capture_us = 1764691200123456,
                   .latency = 0.25,
                   .n_outputs = 3,
                   .layer_ids = layers,
                   .names = names,
                   .values = values};
    ds_error err = {{0}};
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    r.frame_id = 8;
    r.source_frame = 10;
    r.n_outputs = 1;
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    ds_output_close(out);
    size_t len;
    char *text = read_all(tmp("out.jsonl"), &len);
    const char *want =
        "{\"frame\":7,\"source_frame\":9,\"capture_us\":1764691200123456,\"latency_s\":0.25,"
        "\"outputs\":["
        "{\"layer\":13,\"name\":\"fc8\",\"shape\":[1,6],\"top\":["
        "{\"index\":4,\"score\":0.5,\"label\":\"e\"},{\"index\":1,\"score\":0.25,\"label\":\"b\"},"
        "{\"index\":3,\"score\":0.25,\"label\":\"d\"},{\"index\":0,\"score\":0.100000001,\"label\":"
        "\"a\"}]},"
        "{\"layer\":7,\"name\":\"pool5\",\"shape\":[1,2,2,2],"
        "\"summary\":{\"min\":-2,\"max\":3,\"mean\":0.4375,\"argmax\":2}},"
        "{\"layer\":20,\"name\":null,\"shape\":[3],\"top\":["
        "{\"index\":0,\"score\":2,\"label\":\"a\"},{\"index\":1,\"score\":2,\"label\":\"b\"},"
        "{\"index\":2,\"score\":2,\"label\":\"c\"}]}]}\n"
        "{\"frame\":8,\"source_frame\":10,\"capture_us\":1764691200123456,\"latency_s\":0.25,"
        "\"outputs\":["
        "{\"layer\":13,\"name\":\"fc8\",\"shape\":[1,6],\"top\":["
        "{\"index\":4,\"score\":0.5,\"label\":\"e\"},{\"index\":1,\"score\":0.25,\"label\":\"b\"},"
        "{\"index\":3,\"score\":0.25,\"label\":\"d\"},{\"index\":0,\"score\":0.100000001,\"label\":"
        "\"a\"}]}]}\n";
    assert_string_equal(text, want);
    free(text);

    /* top_k above the classes: all of them, NaN last as null; no labels. */
    out = open_jsonl(tmp("all.jsonl"), NULL, 1000);
    r.n_outputs = 1;
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    ds_output_close(out);
    text = read_all(tmp("all.jsonl"), &len);
    assert_non_null(strstr(text,
                           "\"top\":[{\"index\":4,\"score\":0.5},{\"index\":1,\"score\":0.25},"
                           "{\"index\":3,\"score\":0.25},{\"index\":0,\"score\":0.100000001},"
                           "{\"index\":5,\"score\":-1},{\"index\":2,\"score\":null}]}]}\n"));
    free(text);
    ds_tensor_free(&scores);
    ds_tensor_free(&fmap);
    ds_tensor_free(&all);
}

/* The indices after every "index": in line, up to max. */
static int parse_indices(const char *line, int64_t *out, int max)
{
    int n = 0;
    for (const char *p = line; (p = strstr(p, "\"index\":")) && n < max; p++)
        out[n++] = strtoll(p + 8, NULL, 10);
    return n;
}

/* Many ties among 1000 classes: the heap's order equals a full stable sort's
 * for every k. */
static void test_jsonl_top_k_many_ties(void **state)
{
    (void)state;
    enum { N = 1000 };
    float v[N];
    unsigned x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        v[i] = (float)((x >> 16) % 37) / 8.0f;
    }
    /* the reference: a stable insertion sort by score, highest first */
    int64_t ref[N];
    for (int i = 0; i < N; i++) {
        int j = i;
        while (j > 0 && v[ref[j - 1]] < v[i]) {
            ref[j] = ref[j - 1];
            j--;
        }
        ref[j] = i;
    }
    ds_tensor t = {0};
    vec(&t, 1, (const int64_t[]){N}, v);
    const ds_tensor *values[] = {&t};
    const int layers[] = {1};
    static const int ks[] = {1, 2, 5, 37, 100, 999, 1000};
    for (size_t k = 0; k < sizeof ks / sizeof ks[0]; k++) {
        ds_output *out = open_jsonl(tmp("ties.jsonl"), NULL, ks[k]);
        ds_result r = {.n_outputs = 1, .layer_ids = layers, .values = values};
        ds_error err = {{0}};
        assert_int_equal(ds_output_write(out, &r, &err), 0);
        ds_output_close(out);
        size_t len;
        char *text = read_all(tmp("ties.jsonl"), &len);
        int64_t got[N];
        assert_int_equal(parse_indices(text, got, N), ks[k]);
        assert_memory_equal(got, ref, (size_t)ks[k] * sizeof *got);
        free(text);
    }
    ds_tensor_free(&t);
}

/* Every score printed reads back as the same float32 (strtof), and
 * infinities are null. */
static void test_jsonl_float_round_trip(void **state)
{
    (void)state;
    const float v[] = {0.1f,     1.0f / 3.0f, 16777216.0f, FLT_MAX, FLT_MIN, 1e-45f,   -0.0f,
                       2.5e-39f, -123.456f,   3.14159274f, 1e10f,   -7e-8f,  INFINITY, -INFINITY};
    enum { N = sizeof v / sizeof v[0] };
    ds_tensor t = {0}, m = {0};
    vec(&t, 1, (const int64_t[]){N}, v);
    vec(&m, 3, (const int64_t[]){1, 2, 2}, (const float[]){1.0f / 3.0f, -0.1f, 0.2f, INFINITY});
    const ds_tensor *values[] = {&t, &m};
    const int layers[] = {1, 2};
    ds_output *out = open_jsonl(tmp("f.jsonl"), NULL, N);
    ds_result r = {.n_outputs = 2, .layer_ids = layers, .values = values, .latency = 1.0 / 3.0};
    ds_error err = {{0}};
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    ds_output_close(out);
    size_t len;
    char *text = read_all(tmp("f.jsonl"), &len);
    int seen = 0;
    for (const char *p = text; (p = strstr(p, "\"index\":")); p++) {
        long i = strtol(p + 8, NULL, 10);
        const char *s = strstr(p, "\"score\":") + 8;
        assert_true(i >= 0 && i < N);
        if (isinf(v[i])) {
            assert_memory_equal(s, "null", 4);
        } else {
            float back = strtof(s, NULL);
            assert_memory_equal(&back, &v[i], sizeof back);
        }
        seen++;
    }
    assert_int_equal(seen, N);
    /* min/max of the 3-D output are float32s too; the mean is infinite: null */
    const char *sum = strstr(text, "\"summary\":{\"min\":");
    assert_non_null(sum);
    float lo = strtof(sum + 17, NULL), want_lo = -0.1f;
    assert_memory_equal(&lo, &want_lo, sizeof lo);
    assert_non_null(strstr(sum, "\"max\":null,\"mean\":null,\"argmax\":3}"));
    assert_non_null(strstr(text, "\"latency_s\":0.333333333,"));
    free(text);
    ds_tensor_free(&t);
    ds_tensor_free(&m);
}

/* Names and labels with quotes, control characters and bytes that are not
 * UTF-8 stay valid JSON. */
static void test_jsonl_escapes(void **state)
{
    (void)state;
    const char *odd = "say \"hi\"\nback\\slash\ntab\there\ncaf\xc3\xa9\nbad\xff\n";
    write_text(tmp("odd.txt"), odd, strlen(odd));
    ds_output *out = open_jsonl(tmp("e.jsonl"), tmp("odd.txt"), 5);
    ds_tensor t = {0};
    vec(&t, 1, (const int64_t[]){5}, (const float[]){5, 4, 3, 2, 1});
    const ds_tensor *values[] = {&t};
    const int layers[] = {3};
    const char *names[] = {"a\"b\n"};
    ds_result r = {.n_outputs = 1, .layer_ids = layers, .names = names, .values = values};
    ds_error err = {{0}};
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    ds_output_close(out);
    size_t len;
    char *text = read_all(tmp("e.jsonl"), &len);
    assert_non_null(strstr(text, "\"name\":\"a\\\"b\\u000a\""));
    assert_non_null(strstr(text, "\"label\":\"say \\\"hi\\\"\""));
    assert_non_null(strstr(text, "\"label\":\"back\\\\slash\""));
    assert_non_null(strstr(text, "\"label\":\"tab\\u0009here\""));
    assert_non_null(strstr(text, "\"label\":\"caf\xc3\xa9\""));
    assert_non_null(strstr(text, "\"label\":\"bad\\ufffd\""));
    if (have_python("json")) { /* and Python's json module agrees */
        char cmd[512];
        snprintf(cmd, sizeof cmd,
                 PYTHON
                 " -c 'import json,sys; l=json.loads(open(sys.argv[1],encoding=\"utf-8\").read());"
                 " assert l[\"outputs\"][0][\"top\"][3][\"label\"]==\"caf\\u00e9\"' '%s'",
                 tmp("e.jsonl"));
        assert_int_equal(system(cmd), 0);
    }
    free(text);
    ds_tensor_free(&t);
}

/* "-" writes to stdout, each line flushed at once. */
static void test_jsonl_stdout(void **state)
{
    (void)state;
    fflush(stdout);
    int saved = dup(1);
    int fd = open(tmp("stdout.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    ds_output *out = open_jsonl("-", NULL, 2);
    ds_tensor t = {0};
    vec(&t, 1, (const int64_t[]){3}, (const float[]){1, 3, 2});
    const ds_tensor *values[] = {&t};
    const int layers[] = {3};
    ds_result r = {
        .frame_id = 5, .source_frame = 5, .n_outputs = 1, .layer_ids = layers, .values = values};
    ds_error err = {{0}};
    int rc = ds_output_write(out, &r, &err);
    size_t len;
    char *text = read_all(tmp("stdout.txt"), &len); /* before close: flushed per line */
    ds_output_close(out);
    dup2(saved, 1);
    close(saved);
    assert_int_equal(rc, 0);
    assert_string_equal(
        text, "{\"frame\":5,\"source_frame\":5,\"capture_us\":0,\"latency_s\":0,\"outputs\":["
              "{\"layer\":3,\"name\":null,\"shape\":[3],\"top\":[{\"index\":1,\"score\":3},"
              "{\"index\":2,\"score\":2}]}]}\n");
    free(text);
    ds_tensor_free(&t);
}

/* --- .npy per frame and output --- */

static void test_tensors_folder(void **state)
{
    (void)state;
    ds_error err = {{0}};
    ds_output_opts o = {.tensors = tmp("t/a/b"), .top_k = 5};
    ds_output *out = ds_output_open(&o, &err);
    if (!out)
        fail_msg("%s", err.msg);
    ds_tensor a = {0}, b = {0}, back = {0};
    make_tensor(&a, DS_F32, 4, (const int64_t[]){1, 3, 5, 7});
    make_tensor(&b, DS_F32, 2, (const int64_t[]){1, 10});
    const ds_tensor *values[] = {&a, &b};
    const int layers[] = {4, 9};
    ds_result r = {
        .frame_id = 42, .source_frame = 40, .n_outputs = 2, .layer_ids = layers, .values = values};
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    r.frame_id = 1234567890;
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    ds_output_close(out);
    assert_int_equal(ds_npy_read(tmp("t/a/b/f000000042_o0.npy"), &back, &err), 0);
    assert_true(ds_shape_equal(&back.shape, &a.shape));
    assert_memory_equal(back.data, a.data, ds_tensor_bytes(&a));
    assert_int_equal(ds_npy_read(tmp("t/a/b/f000000042_o1.npy"), &back, &err), 0);
    assert_memory_equal(back.data, b.data, ds_tensor_bytes(&b));
    assert_int_equal(ds_npy_read(tmp("t/a/b/f1234567890_o1.npy"), &back, &err), 0);
    /* exactly the four files: no temporary left behind */
    DIR *d = opendir(tmp("t/a/b"));
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            files++;
    closedir(d);
    assert_int_equal(files, 4);
    /* an existing folder is fine too */
    out = ds_output_open(&o, &err);
    assert_non_null(out);
    ds_output_close(out);
    ds_tensor_free(&a);
    ds_tensor_free(&b);
    ds_tensor_free(&back);
}

static void expect_open_error(const ds_output_opts *o, const char *part1, const char *part2)
{
    ds_error err = {{0}};
    ds_output *out = ds_output_open(o, &err);
    if (out || !strstr(err.msg, part1) || !strstr(err.msg, part2))
        fail_msg("ds_output_open: got '%s', want '%s' and '%s'", out ? "success" : err.msg, part1,
                 part2);
}

static void test_errors(void **state)
{
    (void)state;
    write_text(tmp("plain"), "x", 1);
    expect_open_error(&(ds_output_opts){.tensors = tmp("plain/sub"), .top_k = 5}, tmp("plain/sub"),
                      "Not a directory");
    expect_open_error(&(ds_output_opts){.tensors = tmp("plain"), .top_k = 5}, tmp("plain"),
                      "not a folder");
    expect_open_error(&(ds_output_opts){.jsonl = tmp("nodir/x.jsonl"), .top_k = 5},
                      tmp("nodir/x.jsonl"), "cannot create");
    expect_open_error(&(ds_output_opts){.labels = tmp("nolabels.txt"), .top_k = 5},
                      tmp("nolabels.txt"), "cannot open");
    expect_open_error(&(ds_output_opts){.jsonl = "-", .top_k = 0}, "top_k", "at least 1");

    /* Three labels, six classes: an error at that frame, nothing written. */
    write_text(tmp("short.txt"), "a\nb\nc\n", 6);
    ds_error err = {{0}};
    ds_output_opts o = {.jsonl = tmp("short.jsonl"),
                        .tensors = tmp("short"),
                        .labels = tmp("short.txt"),
                        .top_k = 2};
    ds_output *out = ds_output_open(&o, &err);
    assert_non_null(out);
    ds_tensor t = {0}, fm = {0};
    vec(&t, 1, (const int64_t[]){6}, (const float[]){1, 2, 3, 4, 5, 6});
    vec(&fm, 3, (const int64_t[]){6, 1, 1}, (const float[]){1, 2, 3, 4, 5, 6});
    const ds_tensor *values[] = {&fm, &t};
    const int layers[] = {2, 3};
    const char *names[] = {"conv", "fc"};
    ds_result r = {.n_outputs = 2, .layer_ids = layers, .names = names, .values = values};
    assert_int_equal(ds_output_write(out, &r, &err), -1);
    assert_non_null(strstr(err.msg, tmp("short.txt")));
    assert_non_null(strstr(err.msg, "3 labels"));
    assert_non_null(strstr(err.msg, "output 1 (layer 3, fc) has 6 classes"));
    r.n_outputs = 1; /* the 3-D output alone needs no labels */
    assert_int_equal(ds_output_write(out, &r, &err), 0);
    ds_output_close(out);
    size_t len;
    char *text = read_all(tmp("short.jsonl"), &len);
    assert_non_null(strstr(text, "\"layer\":2"));
    assert_null(strstr(text, "\"layer\":3"));
    free(text);

    /* Not float32. */
    ds_tensor u = {0};
    make_tensor(&u, DS_U8, 1, (const int64_t[]){4});
    values[0] = &u;
    out = open_jsonl(tmp("u.jsonl"), NULL, 2);
    assert_int_equal(ds_output_write(out, &r, &err), -1);
    assert_non_null(strstr(err.msg, "not a float32 tensor"));
    ds_output_close(out);

    /* A full disk names the file. */
    if (access("/dev/full", W_OK) == 0) {
        values[0] = &t;
        out = open_jsonl("/dev/full", NULL, 2);
        assert_int_equal(ds_output_write(out, &r, &err), -1);
        assert_non_null(
            strstr(err.msg, "output.jsonl /dev/full: cannot write: No space left on device"));
        ds_output_close(out);
        assert_int_equal(ds_npy_write("/dev/full", &t, &err), -1);
        assert_non_null(strstr(err.msg, "/dev/full: cannot write: No space left on device"));
    }
    ds_tensor_free(&t);
    ds_tensor_free(&fm);
    ds_tensor_free(&u);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds_test_output_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_npy_round_trip),
        cmocka_unit_test(test_npy_header_bytes),
        cmocka_unit_test(test_npy_numpy_loads),
        cmocka_unit_test(test_npy_read_variants_and_errors),
        cmocka_unit_test(test_jsonl_top_k_and_summary),
        cmocka_unit_test(test_jsonl_top_k_many_ties),
        cmocka_unit_test(test_jsonl_float_round_trip),
        cmocka_unit_test(test_jsonl_escapes),
        cmocka_unit_test(test_jsonl_stdout),
        cmocka_unit_test(test_tensors_folder),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
