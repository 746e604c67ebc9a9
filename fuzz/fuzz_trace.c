/* libFuzzer target: arbitrary bytes as up to 4 trace files (split at
 * "\n====\n"), merged with or without clock alignment and written out. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "timeline/timeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ds_timeline *tl = ds_timeline_new(NULL, NULL);
    ds_error err;
    const char *p = (const char *)data, *end = p + size;
    int k = 0;
    while (p <= end && k < 4) {
        const char *sep = memmem(p, (size_t)(end - p), "\n====\n", 6);
        size_t n = sep ? (size_t)(sep - p) : (size_t)(end - p);
        char label[8];
        snprintf(label, sizeof label, "f%d", k++);
        ds_timeline_add_text(tl, label, p, n, &err);
        if (!sep)
            break;
        p = sep + 6;
    }
    if (!ds_timeline_build(tl, (size & 1), &err)) {
        FILE *f = fopen("/dev/null", "w");
        if (f) {
            ds_timeline_write_json(tl, f, &err);
            ds_timeline_write_svg(tl, f, &err);
            fclose(f);
        }
    }
    ds_timeline_free(tl);
    return 0;
}
