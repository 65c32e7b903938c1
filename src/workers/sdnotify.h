/* sdnotify.h: the systemd notification protocol (sd_notify(3)) for worker
 * daemons, spoken directly: one datagram to $NOTIFY_SOCKET, no libsystemd. */
#ifndef WARREN_SDNOTIFY_H
#define WARREN_SDNOTIFY_H

#include <stdint.h>

/* Sends "READY=1", "STATUS=...", "WATCHDOG=1", "STOPPING=1"... (several
 * lines allowed). 0 when NOTIFY_SOCKET is unset, 1 when sent, -1 on error:
 * like sd_notify, callers may ignore the result. */
int sdnotify_send(const char *state);
/* printf-style sdnotify_send. */
int sdnotify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog interval in microseconds from WATCHDOG_USEC (when
 * WATCHDOG_PID is unset or ours), or 0 when the watchdog is off. */
uint64_t sdnotify_watchdog_usec(void);

#endif
