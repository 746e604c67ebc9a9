/* log.h - leveled logging to stderr with a role name and ms timestamps.
 *
 *   2026-11-26 04:41:07.123 worker0 INFO  loaded zoo:alexnet (9 layers)
 *
 * Colour only when stderr is a TTY.  Thread-safe (one write per line). */
#ifndef DS_LOG_H
#define DS_LOG_H

typedef enum ds_log_level {
    DS_LOG_DEBUG = 0,
    DS_LOG_INFO,
    DS_LOG_WARN,
    DS_LOG_ERROR,
} ds_log_level;

#define DS_LOG_LEVELS 4
/* "debug", "info", "warn", "error", indexed by level: the configuration's
 * spelling; log lines show them upper-case. */
extern const char *const ds_log_level_names[DS_LOG_LEVELS];

/* Sets the role name shown on each line ("master", "worker0", ...). */
void ds_log_init(const char *role, ds_log_level level);
void ds_log_set_level(ds_log_level level);
ds_log_level ds_log_get_level(void);

void ds_log(ds_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ds_log_debug(...) ds_log(DS_LOG_DEBUG, __VA_ARGS__)
#define ds_log_info(...) ds_log(DS_LOG_INFO, __VA_ARGS__)
#define ds_log_warn(...) ds_log(DS_LOG_WARN, __VA_ARGS__)
#define ds_log_error(...) ds_log(DS_LOG_ERROR, __VA_ARGS__)

#endif
