/* timing.h - clocks. */
#ifndef DS_TIMING_H
#define DS_TIMING_H

#include <stdint.h>
#include <time.h>

/* Monotonic seconds, for durations. */
double ds_now(void);
/* Wall clock in microseconds since the epoch, for trace events. */
int64_t ds_wall_us(void);
/* The CLOCK_REALTIME instant `seconds` from now (negative counts as 0), the
 * absolute deadline pthread_cond_timedwait takes on a default condition
 * variable. */
struct timespec ds_deadline(double seconds);

#endif
