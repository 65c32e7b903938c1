/* errstr.h: filling the (errstr, errlen) pair every fallible call takes. */
#ifndef WARREN_ERRSTR_H
#define WARREN_ERRSTR_H

#include <stddef.h>

#include "warren.h"

/* Formats into errstr; does nothing when errstr is NULL or errlen 0. */
void errstr_set(char *errstr, size_t errlen, const char *fmt, ...) WARREN_PRINTF(3, 4);

#endif
