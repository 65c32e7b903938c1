/* lanes.c: the client's table of services whose lane was found missing
 * (lanes.h). A few slots, searched end to end: it is consulted once per
 * transient or batchable call and holds at most one slot per service. */
#include "lanes.h"

#include <string.h>

static struct lanes_slot *find(const struct lanes *t, const char *service, size_t len)
{
	for (size_t i = 0; i < t->n; i++) {
		struct lanes_slot *s = &t->slot[i];

		if (s->until != 0 && strlen(s->service) == len &&
		    memcmp(s->service, service, len) == 0) {
			return s;
		}
	}
	return NULL;
}

int64_t lanes_until(const struct lanes *t, const char *service, size_t len)
{
	const struct lanes_slot *s = find(t, service, len);

	return s != NULL ? s->until : 0;
}

void lanes_note(struct lanes *t, const char *service, size_t len, int64_t until)
{
	struct lanes_slot *s = find(t, service, len);

	if (s == NULL) {
		s = &t->slot[0];
		for (size_t i = 1; i < t->n; i++) {
			if (t->slot[i].until < s->until) {
				s = &t->slot[i];
			}
		}
	}
	if (len >= sizeof(s->service)) {
		len = sizeof(s->service) - 1;
	}
	memcpy(s->service, service, len);
	s->service[len] = '\0';
	s->until = until;
}
