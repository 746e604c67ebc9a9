/* progress.h - progress of a long step.
 *
 * On a TTY: a bar redrawn in place on stderr.  Otherwise one parseable line
 * when the step ends:  "<label>: <done>/<total> in <seconds> s". */
#ifndef DS_PROGRESS_H
#define DS_PROGRESS_H

typedef struct ds_progress {
    const char *label;
    long total;
    long done;
    double start;
    double last_draw;
    int tty;
} ds_progress;

void ds_progress_begin(ds_progress *p, const char *label, long total);
void ds_progress_step(ds_progress *p, long done);
void ds_progress_end(ds_progress *p);

#endif
