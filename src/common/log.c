#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_role[32] = "deltaslice";
static ds_log_level log_level = DS_LOG_INFO;
static int log_colour = -1; /* -1: not decided yet */

const char *const ds_log_level_names[DS_LOG_LEVELS] = {"debug", "info", "warn", "error"};
static const char *const level_colours[DS_LOG_LEVELS] = {"\033[2m", "", "\033[33m", "\033[31;1m"};

void ds_log_init(const char *role, ds_log_level level)
{
    snprintf(log_role, sizeof log_role, "%s", role);
    log_level = level;
    log_colour = isatty(STDERR_FILENO);
}

void ds_log_set_level(ds_log_level level) { log_level = level; }

ds_log_level ds_log_get_level(void) { return log_level; }

/* The level as shown on a line: upper-case, padded to 5 ("INFO "). */
static void level_label(ds_log_level level, char out[6])
{
    const char *name = ds_log_level_names[level];
    size_t i = 0;
    for (; name[i] && i < 5; i++)
        out[i] = (char)toupper((unsigned char)name[i]);
    for (; i < 5; i++)
        out[i] = ' ';
    out[5] = 0;
}

void ds_log(ds_log_level level, const char *fmt, ...)
{
    if (level < log_level)
        return;
    if (log_colour < 0)
        log_colour = isatty(STDERR_FILENO);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char label[6];
    level_label(level, label);
    char line[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02d %02d:%02d:%02d.%03d %s %s%s%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), log_role,
                     log_colour ? level_colours[level] : "", label,
                     log_colour ? "\033[0m" : "");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* One write() per line keeps lines from different threads whole. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
