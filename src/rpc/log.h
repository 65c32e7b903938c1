/* log.h: one logfmt line per event on stderr, where journald picks it up:
 * level=warn time=2026-11-22T03:04:05.123Z prog=user-service msg="..." key=value... */
#ifndef WARREN_LOG_H
#define WARREN_LOG_H

#include "warren.h"

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Process-wide; set by programs at start-up (and on reload). */
void log_set_level(enum log_level level);
void log_set_program(const char *name);
bool log_enabled(enum log_level level);

/* msg is quoted for logfmt; extra is appended as is ("k=v k2=v2", may be NULL). */
void log_event(enum log_level level, const char *extra, const char *fmt, ...) WARREN_PRINTF(3, 4);

#define log_error(...) log_event(LOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...) log_event(LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...) log_event(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_event(LOG_DEBUG, NULL, __VA_ARGS__)

#endif
