/* timing.h - clocks. */
#ifndef DS_TIMING_H
#define DS_TIMING_H

#include <stdint.h>

/* Monotonic seconds, for durations. */
double ds_now(void);
/* Wall clock in microseconds since the epoch, for trace events. */
int64_t ds_wall_us(void);

#endif
