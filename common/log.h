/*
 * common/log.h - leveled logging to stderr.
 *
 * Lines read "2026-11-22T13:45:01.123Z info scheduler: message". Messages
 * follow git's grammar: lower-case, no final period, quoted subjects, and
 * carry their context (dag_id=... run_id=... step=...). Secrets are never
 * passed to these functions. Thread-safe: each line is one write.
 */
#ifndef SLUICE_COMMON_LOG_H
#define SLUICE_COMMON_LOG_H

enum sl_log_level { SL_LOG_DEBUG, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR };

/* Lines below level are dropped. Default SL_LOG_INFO. */
void sl_log_set_level(enum sl_log_level level);
/* Parses "debug|info|warn|error"; returns 0 or SL_EINVAL. */
int sl_log_parse_level(enum sl_log_level *out, const char *name);
void sl_log(enum sl_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sl_debug(comp, ...) sl_log(SL_LOG_DEBUG, comp, __VA_ARGS__)
#define sl_info(comp, ...)  sl_log(SL_LOG_INFO, comp, __VA_ARGS__)
#define sl_warn(comp, ...)  sl_log(SL_LOG_WARN, comp, __VA_ARGS__)
#define sl_error(comp, ...) sl_log(SL_LOG_ERROR, comp, __VA_ARGS__)

#endif
