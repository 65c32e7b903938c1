/* dlq_json.h: AMQP messages to and from JSON, for rpc-dlq's export, import
 * and show. The mapping keeps every field's type, so that an exported
 * dead letter imports as the same message:
 *   string (valid UTF-8)  "text"
 *   int64                 123
 *   float64               1.5
 *   boolean               true / false
 *   void                  null
 *   array                 [...]
 *   table                 {...}
 * and every other type, or a value JSON cannot hold as such, as an object
 * tagged with "$type":
 *   {"$type": "int32", "value": 7}   (int8, uint8, int16, uint16, int32,
 *                                     uint32, uint64, float32, float64)
 *   {"$type": "timestamp", "value": 1700000000}     (seconds)
 *   {"$type": "bytes", "value": "<base64>"}
 *   {"$type": "decimal", "decimals": 2, "value": 12345}
 *   {"$type": "string", "base64": "<base64>"}       (not valid UTF-8)
 *   {"$type": "table", "entries": [[key, value]...]}
 *        (a table with a "$type" key, a repeated key or a key that is not
 *        UTF-8; a key is then a string or a tagged string)
 * A float that is NaN or infinite is {"$type": "float64", "value": "NaN"}
 * ("Infinity", "-Infinity"). A uint64 above INT64_MAX has its value as a
 * decimal string. */
#ifndef WARREN_DLQ_JSON_H
#define WARREN_DLQ_JSON_H

#include <amqp.h>
#include <amqp_framing.h>
#include <jansson.h>

#include "warren.h"

/* A field value as JSON; NULL only when out of memory. */
json_t *dlq_json_field(const amqp_field_value_t *v);
json_t *dlq_json_table(const amqp_table_t *t);

/* JSON -> field value, its bytes allocated in pool. path names j in
 * errors ("properties.headers.rpc-attempt: ..."). 0, or -1 with errstr. */
int dlq_field_from_json(const json_t *j, amqp_pool_t *pool, const char *path,
                        amqp_field_value_t *out, char *errstr, size_t errlen);

/* A message's properties as a JSON object, in AMQP's order, headers last.
 * x-delivery-count is left out when export is true: the broker adds it to
 * each delivery, it is not part of the message. */
json_t *dlq_json_properties(const amqp_basic_properties_t *p, bool export);

/* The body decoded by its content type (msgpack when none is given) as
 * JSON; binary data as {"$type": "bytes", ...}. NULL with why when the
 * body cannot be decoded. An empty body is null. */
json_t *dlq_json_body(const amqp_basic_properties_t *p, amqp_bytes_t body, char *why,
                      size_t whylen);

/* One export line's object: {"properties": {...}, "body": "<base64>",
 * "body_json": ...} or, when the body cannot be decoded, "body_error":
 * "why" in place of body_json. NULL when out of memory. */
json_t *dlq_json_export(const amqp_basic_properties_t *p, amqp_bytes_t body);

/* Reads one export line's object back: properties and body (body_json and
 * body_error are for people and are ignored). Everything is allocated in
 * pool. 0, or -1 with errstr naming the offending field. */
int dlq_json_import(const json_t *j, amqp_pool_t *pool, amqp_basic_properties_t *props,
                    amqp_bytes_t *body, char *errstr, size_t errlen);

/* Base64 (RFC 4648, with padding) of len bytes: malloc'd, or NULL. */
char *dlq_base64(const void *p, size_t len);

#endif
