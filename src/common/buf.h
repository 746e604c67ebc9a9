/* buf.h - a growable byte buffer, reused across frames (grown, never shrunk). */
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

#endif
