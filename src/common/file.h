/* file.h - reading a whole file into memory. */
#ifndef DS_FILE_H
#define DS_FILE_H

#include <stdint.h>

#include "buf.h"
#include "error.h"

/* Reads all of path into b (b->len = its size, and one zero byte after the
 * data so text can be parsed in place; b's old contents are dropped).  A
 * regular file is sized with fstat (off_t, so a file over 2 GiB is measured
 * right on a 32-bit host) and read in one go; a pipe or device is read to
 * its end.  Fails naming path when it cannot be opened ("<path>: cannot
 * open: <reason>"), is a directory, holds more than max bytes or cannot be
 * read. */
int ds_read_file(const char *path, uint64_t max, ds_buf *b, ds_error *err);

#endif
