/* The bounded queue: bounds and order, timeouts, close waking blocked
 * threads, drain handing items to the free function, and many producers and
 * consumers at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/queue.h"
#include "common/timing.h"

#define ITEM(v) ((void *)(uintptr_t)(v))
#define VALUE(p) ((uintptr_t)(p))

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void test_bounds_and_order(void **state)
{
    (void)state;
    ds_error err;
    assert_null(ds_queue_new(0, &err));
    assert_non_null(strstr(err.msg, "capacity 0"));
    ds_queue *q = ds_queue_new(3, &err);
    assert_non_null(q);
    assert_int_equal(ds_queue_cap(q), 3);
    void *got;
    assert_int_equal(ds_queue_pop(q, &got, 0), DS_QUEUE_TIMEOUT);
    /* Many rounds, so the ring wraps around several times. */
    uintptr_t next_in = 1, next_out = 1;
    for (int round = 0; round < 10; round++) {
        while (ds_queue_len(q) < 3)
            assert_int_equal(ds_queue_push(q, ITEM(next_in++), 0), DS_QUEUE_OK);
        assert_int_equal(ds_queue_push(q, ITEM(999), 0), DS_QUEUE_TIMEOUT);
        assert_int_equal(ds_queue_len(q), 3);
        for (int k = 0; k <= round % 3; k++) {
            assert_int_equal(ds_queue_pop(q, &got, 0), DS_QUEUE_OK);
            assert_int_equal(VALUE(got), next_out++);
        }
    }
    while (ds_queue_pop(q, &got, 0) == DS_QUEUE_OK)
        assert_int_equal(VALUE(got), next_out++);
    assert_int_equal(next_out, next_in);
    assert_int_equal(ds_queue_len(q), 0);
    ds_queue_free(q, NULL);
    ds_queue_free(NULL, NULL);
}

typedef struct delayed {
    ds_queue *q;
    double delay;
    int rc;
    void *item;
} delayed;

static void *pop_later(void *arg)
{
    delayed *d = arg;
    sleep_s(d->delay);
    d->rc = ds_queue_pop(d->q, &d->item, -1);
    return NULL;
}

static void *push_later(void *arg)
{
    delayed *d = arg;
    sleep_s(d->delay);
    d->rc = ds_queue_push(d->q, d->item, -1);
    return NULL;
}

static void test_timeouts(void **state)
{
    (void)state;
    ds_queue *q = ds_queue_new(1, NULL);
    assert_non_null(q);
    void *got;
    double t0 = ds_now();
    assert_int_equal(ds_queue_pop(q, &got, 0.2), DS_QUEUE_TIMEOUT);
    double waited = ds_now() - t0;
    assert_true(waited >= 0.19 && waited < 5);

    assert_int_equal(ds_queue_push(q, ITEM(1), 0.2), DS_QUEUE_OK); /* room: no wait */
    t0 = ds_now();
    assert_int_equal(ds_queue_push(q, ITEM(2), 0.2), DS_QUEUE_TIMEOUT);
    waited = ds_now() - t0;
    assert_true(waited >= 0.19 && waited < 5);

    /* Room that appears during the wait is taken. */
    delayed d = {q, 0.1, -9, NULL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pop_later, &d), 0);
    t0 = ds_now();
    assert_int_equal(ds_queue_push(q, ITEM(2), 10), DS_QUEUE_OK);
    assert_true(ds_now() - t0 < 5);
    pthread_join(th, NULL);
    assert_int_equal(d.rc, DS_QUEUE_OK);
    assert_int_equal(VALUE(d.item), 1);

    /* And an item that arrives during a pop's wait. */
    assert_int_equal(ds_queue_pop(q, &got, 0), DS_QUEUE_OK);
    assert_int_equal(VALUE(got), 2);
    d = (delayed){q, 0.1, -9, ITEM(3)};
    assert_int_equal(pthread_create(&th, NULL, push_later, &d), 0);
    assert_int_equal(ds_queue_pop(q, &got, 10), DS_QUEUE_OK);
    assert_int_equal(VALUE(got), 3);
    pthread_join(th, NULL);
    assert_int_equal(d.rc, DS_QUEUE_OK);
    ds_queue_free(q, NULL);
}

typedef struct blocked {
    ds_queue *q;
    int push; /* else pop */
    atomic_int done;
    int rc;
} blocked;

static void *block(void *arg)
{
    blocked *b = arg;
    void *got;
    b->rc = b->push ? ds_queue_push(b->q, ITEM(7), -1) : ds_queue_pop(b->q, &got, -1);
    atomic_store(&b->done, 1);
    return NULL;
}

static void test_close_wakes_waiters(void **state)
{
    (void)state;
    ds_queue *full = ds_queue_new(1, NULL), *empty = ds_queue_new(4, NULL);
    assert_non_null(full);
    assert_non_null(empty);
    assert_int_equal(ds_queue_push(full, ITEM(1), 0), DS_QUEUE_OK);
    blocked b[4] = {{full, 1, 0, -9}, {full, 1, 0, -9}, {empty, 0, 0, -9}, {empty, 0, 0, -9}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, block, &b[i]), 0);
    sleep_s(0.2);
    for (int i = 0; i < 4; i++)
        assert_int_equal(atomic_load(&b[i].done), 0); /* really blocked */
    ds_queue_close(full);
    ds_queue_close(empty);
    ds_queue_close(full); /* again: harmless */
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(b[i].rc, DS_QUEUE_CLOSED);
    }
    /* Closed: pushes fail, what was queued still comes out, then CLOSED. */
    assert_int_equal(ds_queue_push(full, ITEM(2), 0), DS_QUEUE_CLOSED);
    assert_int_equal(ds_queue_push(full, ITEM(2), -1), DS_QUEUE_CLOSED);
    void *got;
    assert_int_equal(ds_queue_pop(full, &got, -1), DS_QUEUE_OK);
    assert_int_equal(VALUE(got), 1);
    assert_int_equal(ds_queue_pop(full, &got, -1), DS_QUEUE_CLOSED);
    assert_int_equal(ds_queue_pop(empty, &got, 1), DS_QUEUE_CLOSED);
    ds_queue_free(full, NULL);
    ds_queue_free(empty, NULL);
}

static int freed;

static void count_free(void *p)
{
    freed++;
    free(p);
}

static void test_drain_frees(void **state)
{
    (void)state;
    ds_queue *q = ds_queue_new(8, NULL);
    assert_non_null(q);
    for (int i = 0; i < 5; i++)
        assert_int_equal(ds_queue_push(q, malloc(16), 0), DS_QUEUE_OK);
    freed = 0;
    assert_int_equal(ds_queue_drain(q, count_free), 5);
    assert_int_equal(freed, 5);
    assert_int_equal(ds_queue_len(q), 0);
    assert_int_equal(ds_queue_drain(q, count_free), 0);
    /* Draining does not close: the queue takes items again, and a producer
     * waiting on a full queue gets the room. */
    for (int i = 0; i < 8; i++)
        assert_int_equal(ds_queue_push(q, malloc(16), 0), DS_QUEUE_OK);
    blocked b = {q, 1, 0, -9};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, block, &b), 0);
    sleep_s(0.1);
    assert_int_equal(ds_queue_drain(q, count_free), 8);
    pthread_join(th, NULL);
    assert_int_equal(b.rc, DS_QUEUE_OK);
    void *got;
    assert_int_equal(ds_queue_pop(q, &got, 0), DS_QUEUE_OK);
    assert_int_equal(VALUE(got), 7);
    /* Items left at free go to the free function too (ASan checks leaks). */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ds_queue_push(q, malloc(16), 0), DS_QUEUE_OK);
    freed = 0;
    ds_queue_free(q, count_free);
    assert_int_equal(freed, 3);
}

#define PRODUCERS 4
#define CONSUMERS 3
#define PER_PRODUCER 20000

typedef struct party {
    ds_queue *q;
    int id;
    uint64_t sum;
    int count;
    int in_order;
} party;

static void *producer(void *arg)
{
    party *p = arg;
    for (uintptr_t i = 0; i < PER_PRODUCER; i++) {
        void *item = ITEM(((uintptr_t)p->id << 24 | i) + 1);
        int rc;
        /* Half of them wait forever, half in short timed waits. */
        while ((rc = ds_queue_push(p->q, item, p->id % 2 ? 0.001 : -1)) == DS_QUEUE_TIMEOUT) {
        }
        if (rc != DS_QUEUE_OK)
            return NULL;
        p->count++;
    }
    return NULL;
}

static void *consumer(void *arg)
{
    party *p = arg;
    uintptr_t last[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
        last[i] = 0;
    p->in_order = 1;
    for (;;) {
        void *got;
        int rc = ds_queue_pop(p->q, &got, p->id == 0 ? 0.001 : -1);
        if (rc == DS_QUEUE_TIMEOUT)
            continue;
        if (rc != DS_QUEUE_OK)
            break;
        uintptr_t v = VALUE(got) - 1, from = v >> 24, seq = (v & 0xffffff) + 1;
        if (from >= PRODUCERS || seq <= last[from]) /* FIFO: each producer's items in order */
            p->in_order = 0;
        else
            last[from] = seq;
        p->sum += v;
        p->count++;
    }
    return NULL;
}

static void test_producers_and_consumers(void **state)
{
    (void)state;
    ds_queue *q = ds_queue_new(8, NULL);
    assert_non_null(q);
    party prod[PRODUCERS], cons[CONSUMERS];
    pthread_t pt[PRODUCERS], ct[CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++) {
        cons[i] = (party){q, i, 0, 0, 0};
        assert_int_equal(pthread_create(&ct[i], NULL, consumer, &cons[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        prod[i] = (party){q, i, 0, 0, 0};
        assert_int_equal(pthread_create(&pt[i], NULL, producer, &prod[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(pt[i], NULL);
        assert_int_equal(prod[i].count, PER_PRODUCER);
    }
    ds_queue_close(q); /* consumers finish what is queued, then stop */
    uint64_t sum = 0, want = 0;
    int count = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(ct[i], NULL);
        assert_true(cons[i].in_order);
        sum += cons[i].sum;
        count += cons[i].count;
    }
    for (uint64_t p = 0; p < PRODUCERS; p++)
        for (uint64_t i = 0; i < PER_PRODUCER; i++)
            want += p << 24 | i;
    assert_int_equal(count, PRODUCERS * PER_PRODUCER);
    assert_true(sum == want);
    assert_int_equal(ds_queue_len(q), 0);
    ds_queue_free(q, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_and_order),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_close_wakes_waiters),
        cmocka_unit_test(test_drain_frees),
        cmocka_unit_test(test_producers_and_consumers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
