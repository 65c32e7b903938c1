/* trace.c: traceparent values. */
#include "trace.h"
#include "fastrand.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

static bool hex_run(const char *s, size_t n, bool *all_zero)
{
	*all_zero = true;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return false;
		}
		*all_zero = *all_zero && c == '0';
	}
	return true;
}

bool trace_valid(const char *s)
{
	bool z1, z2, z3;

	return s != NULL && strlen(s) == TRACEPARENT_LEN - 1 && strncmp(s, "00-", 3) == 0 &&
	       s[35] == '-' && s[52] == '-' && hex_run(s + 3, 32, &z1) && !z1 &&
	       hex_run(s + 36, 16, &z2) && !z2 && hex_run(s + 53, 2, &z3);
}

static void random_hex(char *out, size_t bytes)
{
	unsigned char b[16];

	fastrand_buf(b, bytes);
	sodium_bin2hex(out, bytes * 2 + 1, b, bytes);
}

void trace_child(const char *parent, char out[TRACEPARENT_LEN])
{
	char trace[33], span[17], flags[3] = "01";

	if (trace_valid(parent)) {
		memcpy(trace, parent + 3, 32);
		trace[32] = '\0';
		memcpy(flags, parent + 53, 2);
	} else {
		do {
			random_hex(trace, 16);
		} while (strspn(trace, "0") == 32);
	}
	do {
		random_hex(span, 8);
	} while (strspn(span, "0") == 16);
	snprintf(out, TRACEPARENT_LEN, "00-%s-%s-%s", trace, span, flags);
}
