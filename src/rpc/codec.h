/* codec.h: message bodies in msgpack, to and from warren_value. JSON lives in
 * value_json.c behind the public warren_value_from_json/to_json. */
#ifndef WARREN_CODEC_H
#define WARREN_CODEC_H

#include "warren.h"

/* Deepest nesting accepted in a body, in either format. */
#define CODEC_MAX_DEPTH 32

/* Decodes one msgpack object filling exactly len bytes. Refuses, before any
 * allocation proportional to a declared length: truncation, trailing bytes,
 * the 0xc1 byte, nesting deeper than CODEC_MAX_DEPTH, containers declaring
 * more elements than bytes remain, non-string map keys, duplicate keys,
 * invalid UTF-8 in strings, unsigned integers above INT64_MAX, and ext types.
 * errstr names the problem and the byte offset ("at byte 7: ..."). */
warren_err codec_msgpack_decode(const void *buf, size_t len, warren_value **out, char *errstr,
                                size_t errlen);

/* The same, except that binary values are not copied: they point into buf,
 * which must stay as it is for as long as the tree lives (a copy of such a
 * value, warren_value_copy, owns its bytes). Strings are still copied (they
 * end in a NUL). For a worker's params: the request body outlives them,
 * and a 64 KiB binary is then neither allocated nor copied once more. */
warren_err codec_msgpack_decode_in_place(const void *buf, size_t len, warren_value **out,
                                         char *errstr, size_t errlen);

/* Encodes v into a malloc'd buffer (*out, *outlen); the caller frees it. */
warren_err codec_msgpack_encode(const warren_value *v, void **out, size_t *outlen);
/* The same, the buffer from alloc(n, arg) (NULL: out of memory), which must
 * return memory that free() releases: a worker's recycled reply buffers. */
warren_err codec_msgpack_encode_alloc(const warren_value *v, void *(*alloc)(size_t n, void *arg),
                                      void *arg, void **out, size_t *outlen);

#endif
