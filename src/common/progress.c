#include "progress.h"

#include <stdio.h>
#include <unistd.h>

#include "timing.h"

static void draw(ds_progress *p)
{
    const int width = 30;
    int fill = p->total > 0 ? (int)(width * p->done / p->total) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%s [%s] %ld/%ld %.1f s", p->label, bar, p->done, p->total,
            ds_now() - p->start);
    fflush(stderr);
}

void ds_progress_begin(ds_progress *p, const char *label, long total)
{
    p->label = label;
    p->total = total;
    p->done = 0;
    p->start = ds_now();
    p->last_draw = 0;
    p->tty = isatty(STDERR_FILENO);
    if (p->tty)
        draw(p);
}

void ds_progress_step(ds_progress *p, long done)
{
    p->done = done;
    double now = ds_now();
    if (p->tty && now - p->last_draw > 0.1) {
        p->last_draw = now;
        draw(p);
    }
}

void ds_progress_end(ds_progress *p)
{
    if (p->tty) {
        draw(p);
        fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %ld/%ld in %.2f s\n", p->label, p->done, p->total,
                ds_now() - p->start);
    }
}
