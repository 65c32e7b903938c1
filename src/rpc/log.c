/* log.c: logfmt lines on stderr. One fprintf per line (stdio locks the
 * stream), so lines from several threads never interleave. */
#include "log.h"

#include "config.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static atomic_int current_level = LOG_INFO;
static char program[64] = "warren";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
	atomic_store(&current_level, (int)level);
}

void log_set_program(const char *name)
{
	snprintf(program, sizeof(program), "%s", name);
}

bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load(&current_level);
}

/* Escapes quotes, backslashes and control characters for a logfmt value. */
static void quote(char *dst, size_t cap, const char *src)
{
	size_t n = 0;

	for (; *src != '\0' && n + 3 < cap; src++) {
		unsigned char c = (unsigned char)*src;

		if (c == '"' || c == '\\') {
			dst[n++] = '\\';
			dst[n++] = (char)c;
		} else if (c < 0x20) {
			dst[n++] = ' ';
		} else {
			dst[n++] = (char)c;
		}
	}
	dst[n] = '\0';
}

static void log_line(enum log_level level, const char *extra, const char *fmt, va_list ap)
    WARREN_PRINTF(3, 0);

void log_event(enum log_level level, const char *extra, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(level, extra, fmt, ap);
	va_end(ap);
}

void warren_log(warren_log_level level, const char *fmt, ...)
{
	va_list ap;

	if ((unsigned)level > WARREN_LOG_DEBUG) {
		level = WARREN_LOG_ERROR;
	}
	va_start(ap, fmt);
	log_line((enum log_level)level, NULL, fmt, ap);
	va_end(ap);
}

static void log_line(enum log_level level, const char *extra, const char *fmt, va_list ap)
{
	char msg[1024], quoted[2100], stamp[32];
	struct timespec ts;
	struct tm tm;

	if (!log_enabled(level)) {
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	quote(quoted, sizeof(quoted), msg);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "level=%s time=%s.%03ldZ prog=%s msg=\"%s\"%s%s\n", level_names[level], stamp,
	        ts.tv_nsec / 1000000, program, quoted, extra != NULL ? " " : "",
	        extra != NULL ? extra : "");
}

void warren_log_configure(const warren_config *cfg, const char *program_name)
{
	if (program_name != NULL) {
		log_set_program(program_name);
	}
	if (cfg != NULL) {
		log_set_level((enum log_level)config_int(cfg, CFG_LOG_LEVEL));
	}
}
