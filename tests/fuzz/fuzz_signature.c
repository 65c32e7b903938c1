/* fuzz_signature.c: the signature check of a request, as a worker makes it
 * before anything of the body is read. The input is laid out as for
 * fuzz_envelope (byte 0 unused, bytes 1-2 the length N of the properties,
 * N bytes of properties in AMQP wire form, then the body). Whatever the
 * input, the check must end with one of its four answers; and the same
 * message signed with a key of the keyring must pass (or be a replay of
 * its message id), its body sealed first when the properties say it is
 * (content_encoding x-warren-sealed), and then opened intact; a later
 * attempt with the service's retry token. */
#include <amqp.h>
#include <amqp_framing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "envelope.h"
#include "oracle.h"
#include "seal.h"
#include "security.h"

static struct security *sec;  /* checks with the keyring {app} */
static struct security *app;  /* signs as app */

static struct security *load(const char *dir, const char *id, const char *encrypt)
{
	warren_config *cfg = warren_config_new();
	struct security *s = NULL;
	char v[512], why[512];

	warren_config_set(cfg, "security.scheme", "mac", NULL, 0);
	warren_config_set(cfg, "security.key_id", id, NULL, 0);
	snprintf(v, sizeof(v), "%s/%s.secret", dir, id);
	warren_config_set(cfg, "security.key_file", v, NULL, 0);
	snprintf(v, sizeof(v), "%s/ring", dir);
	warren_config_set(cfg, "security.keyring", v, NULL, 0);
	warren_config_set(cfg, "security.encrypt", encrypt, NULL, 0);
	if (security_load(cfg, &s, why, sizeof(why)) != 0 || s == NULL) {
		fprintf(stderr, "fuzz_signature: %s\n", why);
		abort();
	}
	warren_config_free(cfg);
	return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/fuzz-signature-XXXXXX", path[600];
	const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
	FILE *f;

	if (sodium_init() < 0 || mkdtemp(dir) == NULL) {
		abort();
	}
	snprintf(path, sizeof(path), "%s/ring", dir);
	mkdir(path, 0700);
	for (const char *const *p = (const char *const[]){"app.secret", "svc.secret", "ring/app.key",
	                                                  NULL};
	     *p != NULL; p++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *p);
		f = fopen(path, "w");
		fputs(hex, f);
		fclose(f);
		chmod(path, 0600);
	}
	sec = load(dir, "svc", "");
	app = load(dir, "app", "*");
	return 0;
}

static bool known(int st)
{
	return st == WARREN_STATUS_OK || st == WARREN_STATUS_UNAUTHENTICATED ||
	       st == WARREN_STATUS_PERMISSION_DENIED || st == WARREN_STATUS_ALREADY_EXISTS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	amqp_pool_t pool;
	amqp_basic_properties_t *props = NULL;
	struct envelope_meta m;
	char why[512] = "";
	size_t plen;

	if (size < 3) {
		return 0;
	}
	plen = (size_t)data[1] << 8 | data[2];
	data += 3;
	size -= 3;
	if (plen > size) {
		plen = size;
	}
	init_amqp_pool(&pool, 4096);
	if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, (amqp_bytes_t){plen, (void *)data},
	                           (void **)&props) == AMQP_STATUS_OK &&
	    envelope_read(props, &m, why, sizeof(why)) == WARREN_OK) {
		struct checked op;
		int st = security_check_request(sec, props, &m, data + plen, size - plen, false,
		                                &op, why, sizeof(why));
		ORACLE_CHECK(known(st), "security_check_request answered %d", st);
		ORACLE_CHECK(st == WARREN_STATUS_OK || why[0] != '\0',
		             "a refusal without a reason");
		ORACLE_CHECK(st == WARREN_STATUS_OK || op.body == NULL, "a refusal with a body");
		free(op.body);

		/* The same request (its body sealed by app when it says so),
		 * signed as app: it passes, and opens to the same body. */
		struct envelope_props ep;
		struct signature sig;
		const void *body = data + plen;
		void *sealed = NULL;
		size_t len = size - plen;
		const unsigned char *key = NULL;

		if (m.sealed) {
			const char *to = NULL;
			ORACLE_CHECK(security_request_key(app, m.method, &key, &to) == 0 && key != NULL,
			             "no key to seal %s", m.method);
			ORACLE_CHECK(seal_body(key, body, len, &sealed, &len) == 0,
			             "seal_body failed");
			snprintf(m.sealed_to, sizeof(m.sealed_to), "%s", to);
			body = sealed;
		}
		security_sign_request(app, &m, body, len, &sig);
		envelope_request_props(&m, &ep);
		envelope_add_signature(&ep, sig.key_id, sig.signed_at_ms, sig.sig, sig.len);
		/* A later attempt is a retry the service itself made. */
		unsigned char token[SECURITY_TOKEN_BYTES];
		if (m.attempt > 1) {
			int n = ep.props.headers.num_entries++;
			security_retry_token(sec, "app", m.message_id, m.attempt, token);
			ep.headers[n].key = amqp_cstring_bytes(SECURITY_RETRY_TOKEN);
			ep.headers[n].value.kind = AMQP_FIELD_KIND_BYTES;
			ep.headers[n].value.value.bytes = (amqp_bytes_t){sizeof(token), token};
		}
		st = security_check_request(sec, &ep.props, &m, body, len, true, &op, why,
		                            sizeof(why));
		ORACLE_CHECK(st == WARREN_STATUS_OK,
		             "a request signed by a known key was refused: %s", why);
		ORACLE_CHECK(!m.sealed || (op.body != NULL && op.len == size - plen &&
		                           memcmp(op.body, data + plen, op.len) == 0),
		             "a sealed body did not open to what was sealed");
		free(op.body);
		free(sealed);
	}
	empty_amqp_pool(&pool);
	return 0;
}
