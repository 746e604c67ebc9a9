#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ds_errorf(ds_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int ds_error_prefix(ds_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char old[DS_ERROR_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg - 2) {
        size_t used = (size_t)n;
        size_t room = sizeof err->msg - used;
        size_t len = strnlen(old, sizeof old - 1);
        if (len > room - 3)
            len = room - 3;
        err->msg[used] = ':';
        err->msg[used + 1] = ' ';
        memcpy(err->msg + used + 2, old, len);
        err->msg[used + 2 + len] = '\0';
    }
    return -1;
}
