/* queue.h - a bounded FIFO of pointers between threads (after nng's
 * nni_msgq/nni_lmq).
 *
 * Producers push, consumers pop, each waiting up to a timeout for room or
 * for an item.  Closing (any number of times, from any thread) wakes every
 * waiter: pushes fail from then on, pops still hand out what is queued and
 * then report the close, so a consumer finishes the work accepted before.
 * The queue owns no item: whoever pops one owns it, and ds_queue_drain /
 * ds_queue_free hand the ones left to a free function.
 *
 * Timeouts are in seconds: < 0 waits forever, 0 does not wait. */
#ifndef DS_QUEUE_H
#define DS_QUEUE_H

#include <stddef.h>

#include "error.h"

typedef struct ds_queue ds_queue;

/* Results of push and pop. */
#define DS_QUEUE_OK 0
#define DS_QUEUE_CLOSED (-1)  /* push: closed; pop: closed and empty */
#define DS_QUEUE_TIMEOUT (-2) /* still full (push) or empty (pop) at the timeout */

/* A queue holding at most cap (>= 1) items.  NULL with err on failure. */
ds_queue *ds_queue_new(size_t cap, ds_error *err);
/* Closes, hands every queued item to free_item (may be NULL) and frees.
 * No thread may use q any more (join them first). */
void ds_queue_free(ds_queue *q, void (*free_item)(void *));

/* Appends item, waiting up to timeout_s for room. */
int ds_queue_push(ds_queue *q, void *item, double timeout_s);
/* Takes the oldest item into *item, waiting up to timeout_s for one. */
int ds_queue_pop(ds_queue *q, void **item, double timeout_s);
/* Refuses further pushes and wakes every waiter.  Idempotent. */
void ds_queue_close(ds_queue *q);
/* Removes every queued item, handing each to free_item (may be NULL; it
 * runs under the queue's lock, so it must not use q), and returns how many
 * there were; waiting producers get the room. */
size_t ds_queue_drain(ds_queue *q, void (*free_item)(void *));

/* Items queued now, and the bound. */
size_t ds_queue_len(ds_queue *q);
size_t ds_queue_cap(const ds_queue *q);

#endif
