/* fuzz_envelope.c: a message as it arrives, through envelope_read and
 * envelope_decode_body. The input is
 *
 *   byte 0        message.max_size is 2^(byte % 21)
 *   bytes 1-2     N, big-endian: the length of the properties
 *   next N bytes  the basic properties in AMQP wire form (property flags,
 *                 then the fields they announce, headers as a field table),
 *                 decoded by rabbitmq-c as it does for a content header
 *   the rest      the body, decoded in both formats
 *
 * A meta envelope_read accepts must come back unchanged through the
 * properties warren itself sends: those of a request and, when it has a
 * status, of a reply. */
#include <amqp.h>
#include <amqp_framing.h>
#include <string.h>

#include "envelope.h"
#include "oracle.h"

#define SAME_STR(a, b, field)                                                                      \
	ORACLE_CHECK(strcmp((a)->field, (b)->field) == 0, "%s changed: \"%s\" then \"%s\"",        \
	             #field, (a)->field, (b)->field)
#define SAME_NUM(a, b, field)                                                                      \
	ORACLE_CHECK((a)->field == (b)->field, "%s changed: %lld then %lld", #field,               \
	             (long long)(a)->field, (long long)(b)->field)

static void check_request_round_trip(const struct envelope_meta *m)
{
	struct envelope_props ep;
	struct envelope_meta back;
	char why[256] = "";
	warren_err err;

	envelope_request_props(m, &ep);
	err = envelope_read(&ep.props, &back, why, sizeof(why));
	ORACLE_CHECK(err == WARREN_OK, "request properties we built do not read back: %s", why);
	SAME_STR(m, &back, method);
	SAME_STR(m, &back, correlation_id);
	SAME_STR(m, &back, message_id);
	SAME_STR(m, &back, reply_to);
	SAME_STR(m, &back, app_id);
	SAME_STR(m, &back, traceparent);
	SAME_NUM(m, &back, format);
	SAME_NUM(m, &back, deadline_ms);
	SAME_NUM(m, &back, attempt);
	SAME_NUM(m, &back, persistent);
}

static void check_reply_round_trip(const struct envelope_meta *m)
{
	struct envelope_props ep;
	struct envelope_meta back;
	char why[256] = "";
	warren_err err;

	envelope_reply_props(m, &ep);
	err = envelope_read(&ep.props, &back, why, sizeof(why));
	ORACLE_CHECK(err == WARREN_OK, "reply properties we built do not read back: %s", why);
	SAME_STR(m, &back, correlation_id);
	SAME_NUM(m, &back, format);
	SAME_NUM(m, &back, status);
}

static void read_properties(const uint8_t *p, size_t len)
{
	amqp_pool_t pool;
	amqp_basic_properties_t *props = NULL;
	amqp_bytes_t encoded = {.len = len, .bytes = (void *)p};
	struct envelope_meta m;
	char why[256] = "";

	init_amqp_pool(&pool, 4096);
	if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, encoded, (void **)&props) ==
	    AMQP_STATUS_OK) {
		if (envelope_read(props, &m, why, sizeof(why)) == WARREN_OK) {
			check_request_round_trip(&m);
			if (m.status >= 0) {
				check_reply_round_trip(&m);
			}
		} else {
			ORACLE_CHECK(why[0] != '\0', "envelope_read failed without saying why");
		}
	}
	empty_amqp_pool(&pool);
}

static void decode_body(enum envelope_format fmt, const uint8_t *body, size_t len, size_t max_size)
{
	warren_value *v = NULL;
	char why[256] = "";
	warren_err err = envelope_decode_body(fmt, body, len, max_size, &v, why, sizeof(why));

	if (err == WARREN_OK) {
		ORACLE_CHECK(len <= max_size, "a body above message.max_size was decoded");
		warren_value_free(v);
	} else {
		ORACLE_CHECK(v == NULL, "a failed body decode left a value behind");
		ORACLE_CHECK(err == WARREN_ERR_DECODE, "a bad body gave %s", warren_err_str(err));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t max_size, plen;

	if (size < 3) {
		return 0;
	}
	max_size = (size_t)1 << (data[0] % 21);
	plen = (size_t)data[1] << 8 | data[2];
	data += 3;
	size -= 3;
	if (plen > size) {
		plen = size;
	}
	read_properties(data, plen);
	decode_body(ENVELOPE_FMT_MSGPACK, data + plen, size - plen, max_size);
	decode_body(ENVELOPE_FMT_JSON, data + plen, size - plen, max_size);
	return 0;
}
