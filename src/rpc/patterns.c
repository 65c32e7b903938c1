/* patterns.c: lists of method patterns with values (see patterns.h). */
#include "patterns.h"

#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

bool patterns_next(const char **list, char *pattern, size_t pcap, char *value, size_t vcap)
{
	const char *p = *list + strspn(*list, " \t");
	size_t n = strcspn(p, ","), plen = strcspn(p, ",=");

	if (*p == '\0') {
		*list = p;
		return false;
	}
	snprintf(pattern, pcap, "%.*s", (int)plen, p);
	snprintf(value, vcap, "%.*s", (int)(plen < n ? n - plen - 1 : 0), p + plen + (plen < n));
	*list = p + n + (p[n] == ',');
	return true;
}

bool patterns_match(const char *list, const char *method, char *value, size_t cap)
{
	char pattern[256];

	while (patterns_next(&list, pattern, sizeof(pattern), value, cap)) {
		if (fnmatch(pattern, method, 0) == 0) {
			return true;
		}
	}
	return false;
}
