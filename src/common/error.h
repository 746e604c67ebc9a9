/* error.h - one-line error messages carried up the call chain.
 *
 * Every fallible function takes a ds_error* (may be NULL) and returns -1 (or
 * NULL) after filling it with one human-readable line; 0 on success.  The
 * message names what failed (file:line:col and key, node and op, peer and
 * call) so the top level can print it as is. */
#ifndef DS_ERROR_H
#define DS_ERROR_H

#include <stddef.h>

#define DS_ERROR_MAX 512

typedef struct ds_error {
    char msg[DS_ERROR_MAX];
} ds_error;

/* Formats into err (if not NULL) and returns -1, so callers can write
 * `return ds_errorf(err, "...")`. */
int ds_errorf(ds_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "<prefix>: <old message>". Returns -1. */
int ds_error_prefix(ds_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
