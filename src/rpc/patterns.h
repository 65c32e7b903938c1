/* patterns.h: lists of method patterns with values, as several config keys
 * take them: "PATTERN[=VALUE],PATTERN[=VALUE],..." where PATTERN is an
 * fnmatch(3) pattern ("user.*", "*", "user.get") and spaces may follow a
 * comma. The first entry whose pattern matches a method decides. */
#ifndef WARREN_PATTERNS_H
#define WARREN_PATTERNS_H

#include <stdbool.h>
#include <stddef.h>

/* The next entry of *list into pattern and value ("" without "="), moving
 * *list past it: false at the end. Entries too long for the buffers are cut. */
bool patterns_next(const char **list, char *pattern, size_t pcap, char *value, size_t vcap);
/* The first entry whose pattern matches method: true with its value in value. */
bool patterns_match(const char *list, const char *method, char *value, size_t cap);

#endif
