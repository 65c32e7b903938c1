/* sdnotify.c: sd_notify(3) without libsystemd (which would pull in five more
 * libraries): a datagram on an AF_UNIX socket named by $NOTIFY_SOCKET, where
 * a leading '@' names the abstract namespace. */
#include "sdnotify.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sdnotify_send(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len;
	ssize_t sent;
	int fd;

	if (path == NULL || path[0] == '\0') {
		return 0;
	}
	len = strlen(path);
	if (len >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@')) {
		return -1;
	}
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@') {
		sa.sun_path[0] = '\0';
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -1;
	}
	sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
	              (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	close(fd);
	return sent < 0 ? -1 : 1;
}

int sdnotify_sendf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return sdnotify_send(buf);
}

uint64_t sdnotify_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");
	char *end = NULL;
	unsigned long long v;

	if (usec == NULL) {
		return 0;
	}
	if (pid != NULL && strtol(pid, NULL, 10) != (long)getpid()) {
		return 0;
	}
	v = strtoull(usec, &end, 10);
	return end != usec && *end == '\0' ? (uint64_t)v : 0;
}
