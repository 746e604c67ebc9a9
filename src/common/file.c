#include "file.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* size: the file's size when known, else 0. */
static int too_large(const char *path, uint64_t size, uint64_t max, ds_error *err)
{
    char limit[48];
    if (max >= (1u << 20) && max % (1u << 20) == 0)
        snprintf(limit, sizeof limit, "%" PRIu64 " MiB", max >> 20);
    else
        snprintf(limit, sizeof limit, "%" PRIu64 " bytes", max);
    if (size)
        return ds_errorf(err, "%s: %" PRIu64 " bytes, larger than %s", path, size, limit);
    return ds_errorf(err, "%s: larger than %s", path, limit);
}

/* A pipe or device: read until end of file, growing b, at most one byte
 * past max (which tells a stream of exactly max bytes from a longer one). */
static int read_stream(FILE *f, const char *path, uint64_t max, ds_buf *b, ds_error *err)
{
    for (;;) {
        if (b->len + 1 >= b->cap) { /* room for one byte and the final zero */
            uint64_t want = b->cap ? (uint64_t)b->cap * 2 : 65536;
            if (max < UINT64_MAX - 2 && want > max + 2)
                want = max + 2;
            if (want < (uint64_t)b->len + 2)
                want = (uint64_t)b->len + 2;
            if (want > SIZE_MAX)
                return too_large(path, 0, max, err);
            if (ds_buf_reserve(b, (size_t)want, err))
                return ds_error_prefix(err, "%s", path);
        }
        size_t room = b->cap - 1 - b->len;
        if (max < UINT64_MAX && (uint64_t)room > max + 1 - b->len)
            room = (size_t)(max + 1 - b->len);
        size_t got = fread(b->data + b->len, 1, room, f);
        b->len += got;
        if ((uint64_t)b->len > max)
            return too_large(path, 0, max, err);
        if (got < room)
            return 0;
    }
}

int ds_read_file(const char *path, uint64_t max, ds_buf *b, ds_error *err)
{
    b->len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ds_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fileno(f), &st)) {
        rc = ds_errorf(err, "%s: cannot stat: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        rc = ds_errorf(err, "%s: is a directory", path);
    } else if (!S_ISREG(st.st_mode)) {
        rc = read_stream(f, path, max, b, err);
    } else if (st.st_size < 0 || (uint64_t)st.st_size > max || (uint64_t)st.st_size >= SIZE_MAX) {
        rc = too_large(path, (uint64_t)st.st_size, max, err);
    } else if (ds_buf_reserve(b, (size_t)st.st_size + 1, err)) {
        rc = ds_error_prefix(err, "%s", path);
    } else {
        b->len = fread(b->data, 1, (size_t)st.st_size, f);
        if (b->len != (size_t)st.st_size && !ferror(f))
            rc = ds_errorf(err, "%s: short read (%zu of %" PRIu64 " bytes)", path, b->len,
                           (uint64_t)st.st_size);
    }
    if (!rc && ferror(f))
        rc = ds_errorf(err, "%s: read error", path);
    fclose(f);
    if (rc) {
        b->len = 0;
        return -1;
    }
    if (ds_buf_reserve(b, b->len + 1, err)) /* an empty file */
        return ds_error_prefix(err, "%s", path);
    b->data[b->len] = 0;
    return 0;
}
