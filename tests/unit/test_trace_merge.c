/* The trace merger (src/timeline): fixtures, clock alignment, tracks and
 * lanes, unpaired events, hostile input, the JSON and SVG writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeline/timeline.h"

typedef struct warns {
    int n;
    char last[DS_ERROR_MAX];
} warns;

static void count_warn(void *ctx, const char *msg)
{
    warns *w = ctx;
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", msg);
}

static int add(ds_timeline *tl, const char *label, const char *text, ds_error *err)
{
    return ds_timeline_add_text(tl, label, text, strlen(text), err);
}

static int track_index(const ds_timeline *tl, const char *name)
{
    for (int i = 0; i < ds_timeline_n_tracks(tl); i++)
        if (!strcmp(ds_timeline_track(tl, i)->name, name))
            return i;
    return -1;
}

static size_t count_on(const ds_timeline *tl, const char *track)
{
    int t = track_index(tl, track);
    size_t n = 0;
    for (size_t i = 0; i < ds_timeline_n_slices(tl); i++)
        n += ds_timeline_slice(tl, i)->track == t;
    return n;
}

/* The slice of frame on track, or NULL. */
static const ds_tm_slice *find(const ds_timeline *tl, const char *track, uint64_t frame,
                               const char *stage)
{
    int t = track_index(tl, track);
    for (size_t i = 0; i < ds_timeline_n_slices(tl); i++) {
        const ds_tm_slice *s = ds_timeline_slice(tl, i);
        if (s->track == t && s->frame == frame && (!stage || !strcmp(s->stage, stage)))
            return s;
    }
    return NULL;
}

static ds_timeline *load_set(const char *set)
{
    static const char *const services[] = {"master", "worker0", "worker1"};
    ds_timeline *tl = ds_timeline_new(NULL, NULL);
    assert_non_null(tl);
    ds_error err;
    for (int i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/data/traces/%s/%s.tc", DS_SOURCE_DIR, set, services[i]);
        if (ds_timeline_add_file(tl, path, &err))
            fail_msg("%s", err.msg);
    }
    if (ds_timeline_build(tl, 1, &err))
        fail_msg("%s", err.msg);
    return tl;
}

static void test_fixtures(void **state)
{
    (void)state;
    ds_timeline *a = load_set("aligned"), *b = load_set("skewed");
    static const char *const chain[] = {"m",          "m→w0", "w0:receive", "w0",     "w0→w1",
                                        "w1:receive", "w1",   "w1→m",       "latency"};
    assert_int_equal(ds_timeline_n_tracks(a), 9);
    for (int i = 0; i < 9; i++) {
        assert_string_equal(ds_timeline_track(a, i)->name, chain[i]);
        assert_int_equal(ds_timeline_track(a, i)->lanes, i == 8 ? 3 : 1); /* frames in flight */
    }
    assert_int_equal(ds_timeline_n_slices(a), 45);
    assert_int_equal(count_on(a, "m"), 9);
    assert_int_equal(count_on(a, "latency"), 3);
    assert_int_equal(count_on(a, "w0→w1"), 3);
    /* Clock lines: the smallest RTT wins (-2500000, not -2499100). */
    int64_t shift;
    assert_int_equal(ds_timeline_clock_shift(b, "worker1", &shift), 0);
    assert_int_equal(shift, -2500000);
    assert_int_equal(ds_timeline_clock_shift(b, "w0", &shift), 0);
    assert_int_equal(shift, 1200);
    assert_int_equal(ds_timeline_clock_shift(b, "master", &shift), 0);
    assert_int_equal(shift, 0);
    assert_int_equal(ds_timeline_clock_shift(b, "worker7", &shift), -1);
    /* Aligned, the skewed set is the same timeline. */
    assert_int_equal(ds_timeline_n_slices(b), 45);
    for (size_t i = 0; i < 45; i++) {
        const ds_tm_slice *x = ds_timeline_slice(a, i), *y = ds_timeline_slice(b, i);
        assert_int_equal(x->track, y->track);
        assert_int_equal(x->frame, y->frame);
        assert_string_equal(x->stage, y->stage);
        assert_int_equal(x->start_us, y->start_us);
        assert_int_equal(x->end_us, y->end_us);
    }
    const ds_tm_slice *s = find(b, "w0→w1", 1, NULL);
    assert_non_null(s);
    assert_int_equal(s->end_us - s->start_us, 50000);
    assert_string_equal(s->service, "worker0");
    assert_false(s->send_only);
    ds_timeline_free(a);
    ds_timeline_free(b);
}

/* Offsets recorded by the master against a worker, and chained: worker1
 * knows only its offset to worker0. */
static void test_clock_chain(void **state)
{
    (void)state;
    ds_timeline *tl = ds_timeline_new(NULL, NULL);
    ds_error err;
    assert_int_equal(add(tl, "m", "# deltaslice trace v1 service=master host=a\n"
                                   "# clock worker0 700000 100\n"
                                   "1000 5 send start\n1100 5 send finish\n"
                                   "900 5 finish start\n9000 5 finish finish\n", &err), 0);
    /* worker0 = master + 0.7 s */
    assert_int_equal(add(tl, "w0", "# deltaslice trace v1 service=worker0 host=b\n"
                                    "702000 5 receive start\n702100 5 receive finish\n"
                                    "703000 5 send start\n703500 5 send finish\n", &err), 0);
    /* worker1 = worker0 - 0.3 s (so master + 0.4 s); offset seen from w1. */
    assert_int_equal(add(tl, "w1", "# deltaslice trace v1 service=w1 host=c\n"
                                    "# clock w0 300000 50\n"
                                    "404000 5 decode start\n405000 5 decode finish\n"
                                    "406000 5 send start\n406100 5 send finish\n", &err), 0);
    assert_int_equal(ds_timeline_build(tl, 1, &err), 0);
    int64_t shift;
    assert_int_equal(ds_timeline_clock_shift(tl, "worker0", &shift), 0);
    assert_int_equal(shift, -700000);
    assert_int_equal(ds_timeline_clock_shift(tl, "worker1", &shift), 0);
    assert_int_equal(shift, -400000);
    const ds_tm_slice *s = find(tl, "m→w0", 5, NULL);
    assert_non_null(s);
    assert_int_equal(s->start_us, 1000);
    assert_int_equal(s->end_us, 2000);
    s = find(tl, "w0→w1", 5, NULL); /* arrival = decode start when no receive */
    assert_non_null(s);
    assert_int_equal(s->start_us, 3000);
    assert_int_equal(s->end_us, 4000);
    s = find(tl, "w1→m", 5, NULL);
    assert_non_null(s);
    assert_int_equal(s->end_us, 9000);
    ds_timeline_free(tl);
}

/* Unknown stages and services get their own tracks; overlapping slices get
 * lanes; a send nobody received is drawn alone. */
static void test_tracks(void **state)
{
    (void)state;
    warns w = {0};
    ds_timeline *tl = ds_timeline_new(count_warn, &w);
    ds_error err;
    assert_int_equal(add(tl, "w0", "# deltaslice trace v1 service=worker0\n"
                                    "100 1 execute start\n"
                                    "150 2 execute start\n"
                                    "200 1 execute finish\n"
                                    "210 3 execute start\n" /* lane 0 is free again */
                                    "250 2 execute finish\n"
                                    "300 3 execute finish\n"
                                    "300 1 cache start\n310 1 cache finish\n"
                                    "400 1 send start\n420 1 send finish\n"
                                    "18446744073709551615 0 x start\n", &err), -1);
    assert_non_null(strstr(err.msg, "w0:12: bad time"));
    assert_int_equal(add(tl, "w0", "# deltaslice trace v1 service=worker0\n"
                                    "100 1 execute start\n"
                                    "150 2 execute start\n"
                                    "200 1 execute finish\n"
                                    "210 3 execute start\n"
                                    "250 2 execute finish\n"
                                    "300 3 execute finish\n"
                                    "300 1 cache start\n310 1 cache finish\n"
                                    "400 1 send start\n420 1 send finish\n"
                                    "500 18446744073709551615 execute start\n"
                                    "501 18446744073709551615 execute finish\n", &err), 0);
    assert_int_equal(add(tl, "t", "# deltaslice trace v1 service=trainer\n"
                                   "50 0 collect start\n60 0 collect finish\n", &err), 0);
    assert_int_equal(add(tl, "cam", "# deltaslice trace v1 service=camera\n"
                                     "10 0 grab start\n20 0 grab finish\n", &err), 0);
    assert_int_equal(ds_timeline_build(tl, 1, &err), 0);
    assert_int_equal(ds_timeline_n_tracks(tl), 5);
    assert_string_equal(ds_timeline_track(tl, 0)->name, "w0");
    assert_string_equal(ds_timeline_track(tl, 1)->name, "w0:cache");
    assert_string_equal(ds_timeline_track(tl, 2)->name, "w0→m");
    assert_string_equal(ds_timeline_track(tl, 3)->name, "trainer");
    assert_string_equal(ds_timeline_track(tl, 4)->name, "camera");
    assert_int_equal(ds_timeline_track(tl, 0)->lanes, 2);
    assert_int_equal(find(tl, "w0", 1, NULL)->lane, 0);
    assert_int_equal(find(tl, "w0", 2, NULL)->lane, 1);
    assert_int_equal(find(tl, "w0", 3, NULL)->lane, 0);
    assert_non_null(find(tl, "w0", UINT64_MAX, NULL));
    const ds_tm_slice *s = find(tl, "w0→m", 1, NULL);
    assert_true(s->send_only);
    assert_int_equal(s->end_us - s->start_us, 20);
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.last, "no master trace: times are on w0's clock"));

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(ds_timeline_write_json(tl, f, &err), 0);
    fclose(f);
    int x = 0;
    for (const char *p = buf; (p = strstr(p, "\"ph\":\"X\"")); p++)
        x++;
    assert_int_equal(x, 8);
    assert_non_null(strstr(buf, "\"send_only\":true"));
    assert_non_null(strstr(buf, "\"name\":\"w0 #2\""));
    assert_non_null(strstr(buf, "\"name\":\"frame 18446744073709551615\""));
    free(buf);
    f = open_memstream(&buf, &len);
    assert_int_equal(ds_timeline_write_svg(tl, f, &err), 0);
    fclose(f);
    int rects = 0;
    for (const char *p = buf; (p = strstr(p, "<rect class=\"s\"")); p++)
        rects++;
    assert_int_equal(rects, 8);
    assert_non_null(strstr(buf, "</svg>\n"));
    free(buf);
    ds_timeline_free(tl);
}

static void test_unpaired(void **state)
{
    (void)state;
    warns w = {0};
    ds_timeline *tl = ds_timeline_new(count_warn, &w);
    ds_error err;
    assert_int_equal(add(tl, "m", "# deltaslice trace v1 service=master\n"
                                   "5 0 plan finish\n"     /* no start */
                                   "10 0 read start\n"
                                   "20 0 read start\n"     /* restarted */
                                   "30 0 read finish\n"
                                   "40 1 read start\n"     /* never finished */
                                   "50 2 read start\n45 2 read finish\n", /* backwards */
                         &err), 0);
    assert_int_equal(ds_timeline_build(tl, 1, &err), 0);
    assert_int_equal(w.n, 4);
    assert_int_equal(ds_timeline_n_slices(tl), 1);
    assert_int_equal(ds_timeline_slice(tl, 0)->start_us, 20);
    ds_timeline_free(tl);

    tl = ds_timeline_new(NULL, NULL);
    assert_int_equal(add(tl, "m", "# deltaslice trace v1 service=master\n10 0 read start\n", &err), 0);
    assert_int_equal(ds_timeline_build(tl, 1, &err), -1);
    assert_non_null(strstr(err.msg, "no complete start/finish"));
    ds_timeline_free(tl);

    tl = ds_timeline_new(NULL, NULL);
    assert_int_equal(ds_timeline_build(tl, 1, &err), -1);
    ds_timeline_free(tl);
}

/* Every bad line fails with LABEL:LINE and the reason. */
static void test_hostile(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"", "f: empty file"},
        {"\n\n", "f: empty file"},
        {"1 0 read start\n", "f:1: not a deltaslice trace"},
        {"# deltaslice trace v2 service=master\n", "f:1: unsupported trace format version 'v2'"},
        {"# deltaslice trace v1 host=x\n", "f:1: header has no service"},
        {"# deltaslice trace v1 service=a/b\n", "f:1: bad service name"},
        {"# deltaslice trace v1 service=master pid=-1\n", "f:1: bad pid"},
        {"# deltaslice trace v1 service=master junk\n", "f:1: header field 'junk'"},
        {"# deltaslice trace v1 service=master\n1 0 read\n", "f:2: expected 'WALL_US"},
        {"# deltaslice trace v1 service=master\n1 0 read start x\n", "f:2: expected 'WALL_US"},
        {"# deltaslice trace v1 service=master\n-1 0 read start\n", "f:2: bad time"},
        {"# deltaslice trace v1 service=master\n1e6 0 read start\n", "f:2: bad time"},
        {"# deltaslice trace v1 service=master\n9007199254740993 0 read start\n", "f:2: bad time"},
        {"# deltaslice trace v1 service=master\n1 18446744073709551616 read start\n",
         "f:2: bad frame id"},
        {"# deltaslice trace v1 service=master\n1 -3 read start\n", "f:2: bad frame id"},
        {"# deltaslice trace v1 service=master\n1 0 re\"ad start\n", "f:2: bad stage name"},
        {"# deltaslice trace v1 service=master\n1 0 read stop\n", "f:2: bad phase 'stop'"},
        {"# deltaslice trace v1 service=master\n# clock worker0 1\n", "f:2: expected '# clock"},
        {"# deltaslice trace v1 service=master\n# clock worker0 1 -5\n", "f:2: bad round-trip"},
        {"# deltaslice trace v1 service=master\n# clock worker0 99999999999999 5\n",
         "f:2: bad clock offset"},
        {"# deltaslice trace v1 service=master\n# clock <x> 1 5\n", "f:2: bad peer name"},
    };
    ds_error err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_timeline *tl = ds_timeline_new(NULL, NULL);
        if (add(tl, "f", cases[i].text, &err) != -1 || !strstr(err.msg, cases[i].want))
            fail_msg("case %zu: want '%s', got '%s'", i, cases[i].want, err.msg);
        ds_timeline_free(tl);
    }
    ds_timeline *tl = ds_timeline_new(NULL, NULL);
    /* NUL bytes, over-long lines, too many stages, a second file of a service. */
    static const char nul[] = "# deltaslice trace v1 service=master\n1 0 re\0ad start\n";
    assert_int_equal(ds_timeline_add_text(tl, "f", nul, sizeof nul - 1, &err), -1);
    assert_non_null(strstr(err.msg, "f:2: NUL byte"));
    char *big = malloc(4096);
    int n = snprintf(big, 4096, "# deltaslice trace v1 service=master\n1 0 ");
    memset(big + n, 'a', 2000);
    strcpy(big + n + 2000, " start\n");
    assert_int_equal(add(tl, "f", big, &err), -1);
    assert_non_null(strstr(err.msg, "f:2: line longer than 1024 bytes"));
    size_t cap = 65536, len = (size_t)snprintf(big = realloc(big, cap), cap,
                                               "# deltaslice trace v1 service=master\n");
    for (int i = 0; i <= DS_TM_MAX_STAGES; i++)
        len += (size_t)snprintf(big + len, cap - len, "1 0 s%d start\n", i);
    assert_int_equal(add(tl, "f", big, &err), -1);
    assert_non_null(strstr(err.msg, "f:66: more than 64 distinct stage names"));
    free(big);
    assert_int_equal(add(tl, "a", "# deltaslice trace v1 service=w3\n", &err), 0);
    assert_int_equal(add(tl, "b", "# deltaslice trace v1 service=worker3\n", &err), -1);
    assert_non_null(strstr(err.msg, "b: service worker3 already read from a"));
    assert_int_equal(ds_timeline_add_file(tl, "/nonexistent/x.tc", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/x.tc: cannot open"));
    ds_timeline_free(tl);
}

/* A clock line that contradicts the data draws links with zero length and
 * warns instead of producing negative durations. */
static void test_negative_link(void **state)
{
    (void)state;
    warns w = {0};
    ds_timeline *tl = ds_timeline_new(count_warn, &w);
    ds_error err;
    assert_int_equal(add(tl, "m", "# deltaslice trace v1 service=master host=a\n"
                                   "1000 0 send start\n1100 0 send finish\n", &err), 0);
    assert_int_equal(add(tl, "w", "# deltaslice trace v1 service=worker0 host=b\n"
                                   "# clock master 5000 10\n"
                                   "900 0 receive start\n950 0 receive finish\n", &err), 0);
    assert_int_equal(ds_timeline_build(tl, 1, &err), 0);
    assert_int_equal(w.n, 0);
    assert_int_equal(find(tl, "m→w0", 0, NULL)->end_us, 5900);
    ds_timeline_free(tl);

    w.n = 0;
    tl = ds_timeline_new(count_warn, &w);
    assert_int_equal(add(tl, "m", "# deltaslice trace v1 service=master host=a\n"
                                   "1000 0 send start\n1100 0 send finish\n", &err), 0);
    assert_int_equal(add(tl, "w", "# deltaslice trace v1 service=worker0 host=b\n"
                                   "900 0 receive start\n950 0 receive finish\n", &err), 0);
    assert_int_equal(ds_timeline_build(tl, 1, &err), 0);
    assert_int_equal(w.n, 2); /* no clock line across hosts; link backwards */
    const ds_tm_slice *s = find(tl, "m→w0", 0, NULL);
    assert_int_equal(s->end_us, s->start_us);
    ds_timeline_free(tl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),   cmocka_unit_test(test_clock_chain),
        cmocka_unit_test(test_tracks),     cmocka_unit_test(test_unpaired),
        cmocka_unit_test(test_hostile),    cmocka_unit_test(test_negative_link),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
