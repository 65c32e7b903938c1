/* utf8.h: strict UTF-8 validation (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF), for the codecs. */
#ifndef WARREN_UTF8_H
#define WARREN_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when the len bytes at p are valid UTF-8 (NUL bytes are valid). */
bool utf8_valid(const void *p, size_t len);

#endif
