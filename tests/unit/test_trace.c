/* Trace files: header, one line per event, clock lines, several threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/trace.h"

#define THREADS 4
#define EVENTS 5000

static void *writer(void *arg)
{
    ds_trace *t = arg;
    for (int i = 0; i < EVENTS; i++) {
        ds_trace_event(t, (uint64_t)i, "execute", DS_TRACE_START);
        ds_trace_event(t, (uint64_t)i, "execute", DS_TRACE_FINISH);
    }
    return NULL;
}

static void test_trace_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/ds_trace_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[256];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    ds_trace *t;
    ds_error err;
    assert_int_equal(ds_trace_open(sub, "worker0", &t, &err), 0);
    assert_non_null(t);
    ds_trace_clock(t, "master", -1234, 56);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, writer, t);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ds_trace_event_at(t, 42, 7, "send", DS_TRACE_FINISH);
    ds_trace_close(t);

    char path[300];
    snprintf(path, sizeof path, "%s/worker0.tc", sub);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    int events = 0, header = 0, clock = 0, last_ok = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "# deltaslice trace v1 service=worker0 ", 38)) {
            header++;
            continue;
        }
        if (!strcmp(line, "# clock master -1234 56\n")) {
            clock++;
            continue;
        }
        int64_t us;
        uint64_t frame;
        char stage[32], phase[16];
        assert_int_equal(sscanf(line, "%" SCNd64 " %" SCNu64 " %31s %15s", &us, &frame, stage, phase), 4);
        assert_true(!strcmp(phase, "start") || !strcmp(phase, "finish"));
        if (us == 42 && frame == 7 && !strcmp(stage, "send"))
            last_ok = 1;
        events++;
    }
    fclose(f);
    assert_int_equal(header, 1);
    assert_int_equal(clock, 1);
    assert_int_equal(events, THREADS * EVENTS * 2 + 1);
    assert_true(last_ok);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_disabled_trace(void **state)
{
    (void)state;
    ds_trace *t = (ds_trace *)1;
    ds_error err;
    assert_int_equal(ds_trace_open("", "x", &t, &err), 0);
    assert_null(t);
    ds_trace_event(t, 1, "x", DS_TRACE_START); /* no-op */
    ds_trace_close(t);
    assert_int_equal(ds_trace_open("/proc/nope", "x", &t, &err), -1);
    assert_non_null(strstr(err.msg, "cannot create trace folder /proc/nope"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trace_file),
        cmocka_unit_test(test_disabled_trace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
