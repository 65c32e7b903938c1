/* lanes.h: a small fixed table of services, each with a time until which
 * the client treats one of its lanes as missing (client.c: a fast lane
 * that returned a request, a batch lane that returned a batch). Memory is
 * the caller's, nothing allocates. Not thread-safe: the client's I/O
 * thread only. */
#ifndef WARREN_LANES_H
#define WARREN_LANES_H

#include <stddef.h>
#include <stdint.h>

struct lanes_slot {
	char service[65]; /* a longer name is kept cut to 64 bytes */
	int64_t until;    /* engine_now() ms; 0: free */
};

struct lanes {
	struct lanes_slot *slot; /* n slots, zeroed before use */
	size_t n;
};

/* The time noted for the service named by the len bytes at service (not
 * NUL-terminated: a method's first part will do); 0 when none is. */
int64_t lanes_until(const struct lanes *t, const char *service, size_t len);
/* Notes until for that service: its own slot, else the one that frees
 * first (a free one before any other). */
void lanes_note(struct lanes *t, const char *service, size_t len, int64_t until);

#endif
