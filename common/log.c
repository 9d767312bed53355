/*
 * common/log.c - leveled logging to stderr, one write(2) per line.
 */
#include "common/log.h"
#include "common/error.h"
#include "common/strbuf.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum sl_log_level log_level = SL_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sl_log_set_level(enum sl_log_level level)
{
    log_level = level;
}

int sl_log_parse_level(enum sl_log_level *out, const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (!strcmp(name, level_names[i])) {
            *out = (enum sl_log_level)i;
            return 0;
        }
    }
    return SL_EINVAL;
}

void sl_log(enum sl_log_level level, const char *component, const char *fmt, ...)
{
    if (level < log_level)
        return;
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    struct strbuf sb = STRBUF_INIT;
    strbuf_addf(&sb, "%s.%03ldZ %s %s: ", stamp, ts.tv_nsec / 1000000, level_names[level],
                component);
    va_list ap;
    va_start(ap, fmt);
    strbuf_vaddf(&sb, fmt, ap);
    va_end(ap);
    strbuf_addch(&sb, '\n');
    ssize_t ignored = write(STDERR_FILENO, sb.buf, sb.len);
    (void)ignored;
    strbuf_release(&sb);
}
