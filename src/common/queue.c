/* queue.c - a ring of pointers under one mutex, with one condition variable
 * per direction so a push wakes only consumers and a pop only producers. */
#include "queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "timing.h"

struct ds_queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    void **items;
    size_t cap, head, n;
    int closed;
};

ds_queue *ds_queue_new(size_t cap, ds_error *err)
{
    if (cap == 0) {
        ds_errorf(err, "queue: capacity 0");
        return NULL;
    }
    ds_queue *q = calloc(1, sizeof *q);
    if (q)
        q->items = calloc(cap, sizeof *q->items);
    if (!q || !q->items) {
        free(q);
        ds_errorf(err, "queue of %zu items: out of memory", cap);
        return NULL;
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->cap = cap;
    return q;
}

void ds_queue_free(ds_queue *q, void (*free_item)(void *))
{
    if (!q)
        return;
    ds_queue_close(q);
    ds_queue_drain(q, free_item);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    free(q->items);
    free(q);
}

/* One wait on cv (lock held) for timeout_s as push and pop take it, until
 * the absolute `until`; DS_QUEUE_TIMEOUT once the time is up.  Waking is no
 * promise: the caller looks at the queue again. */
static int wait_on(ds_queue *q, pthread_cond_t *cv, double timeout_s, const struct timespec *until)
{
    if (timeout_s == 0)
        return DS_QUEUE_TIMEOUT;
    if (timeout_s < 0) {
        pthread_cond_wait(cv, &q->lock);
        return DS_QUEUE_OK;
    }
    return pthread_cond_timedwait(cv, &q->lock, until) == ETIMEDOUT ? DS_QUEUE_TIMEOUT
                                                                     : DS_QUEUE_OK;
}

/* Each push adds one item and each pop frees one slot, so signalling one
 * waiter is enough (a waiter that timed out as it was signalled still
 * takes what it was woken for); close and drain wake everybody. */

int ds_queue_push(ds_queue *q, void *item, double timeout_s)
{
    struct timespec until = ds_deadline(timeout_s);
    pthread_mutex_lock(&q->lock);
    int waited = DS_QUEUE_OK;
    while (!q->closed && q->n == q->cap && waited == DS_QUEUE_OK)
        waited = wait_on(q, &q->not_full, timeout_s, &until);
    int rc = q->closed ? DS_QUEUE_CLOSED : q->n == q->cap ? DS_QUEUE_TIMEOUT : DS_QUEUE_OK;
    if (rc == DS_QUEUE_OK) {
        q->items[(q->head + q->n) % q->cap] = item;
        q->n++;
        pthread_cond_signal(&q->not_empty);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int ds_queue_pop(ds_queue *q, void **item, double timeout_s)
{
    struct timespec until = ds_deadline(timeout_s);
    pthread_mutex_lock(&q->lock);
    int waited = DS_QUEUE_OK;
    while (!q->closed && q->n == 0 && waited == DS_QUEUE_OK)
        waited = wait_on(q, &q->not_empty, timeout_s, &until);
    int rc = q->n ? DS_QUEUE_OK : q->closed ? DS_QUEUE_CLOSED : DS_QUEUE_TIMEOUT;
    if (rc == DS_QUEUE_OK) {
        *item = q->items[q->head];
        q->items[q->head] = NULL;
        q->head = (q->head + 1) % q->cap;
        q->n--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

void ds_queue_close(ds_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->lock);
}

size_t ds_queue_drain(ds_queue *q, void (*free_item)(void *))
{
    pthread_mutex_lock(&q->lock);
    size_t count = q->n;
    for (; q->n; q->n--) {
        if (free_item)
            free_item(q->items[q->head]);
        q->items[q->head] = NULL;
        q->head = (q->head + 1) % q->cap;
    }
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->lock);
    return count;
}

size_t ds_queue_len(ds_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t ds_queue_cap(const ds_queue *q)
{
    return q->cap;
}
