/* utf8.c: strict UTF-8 validation. */
#include "utf8.h"

#include <stdint.h>

bool utf8_valid(const void *p, size_t len)
{
	const uint8_t *s = p;
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0) {
				lo = 0xa0; /* overlong */
			} else if (c == 0xed) {
				hi = 0x9f; /* surrogates */
			}
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0) {
				lo = 0x90; /* overlong */
			} else if (c == 0xf4) {
				hi = 0x8f; /* above U+10FFFF */
			}
		} else {
			return false;
		}
		if (len - i <= n) {
			return false;
		}
		if (s[i + 1] < lo || s[i + 1] > hi) {
			return false;
		}
		for (size_t k = 2; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80) {
				return false;
			}
		}
		i += n + 1;
	}
	return true;
}
