/* buf.h - a growable byte buffer, reused across frames (grown, never shrunk),
 * and the growth rule for any other array. */
#ifndef DS_BUF_H
#define DS_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct ds_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} ds_buf;

/* Makes room for at least cap bytes in total; contents kept. */
int ds_buf_reserve(ds_buf *b, size_t cap, ds_error *err);
/* Appends n bytes (grows geometrically). */
int ds_buf_append(ds_buf *b, const void *p, size_t n, ds_error *err);
void ds_buf_free(ds_buf *b);

/* Makes the array *p (*cap elements of elem bytes each) hold at least want
 * elements, contents kept: the capacity becomes the larger of want and
 * twice the old one (64 the first time), so appending one at a time is
 * amortised O(1) and a first sized request allocates about what it asks. */
int ds_grow(void **p, size_t *cap, size_t want, size_t elem, ds_error *err);

#endif
