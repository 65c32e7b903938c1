/* tls.c: certificate authorities, client certificate and checks of an
 * amqps:// socket. */
#include "tls.h"

#include <stdio.h>

#include <amqp_ssl_socket.h>

#include "secret.h"

#define SYSTEM_CAS "/etc/ssl/certs/ca-certificates.crt"

int tls_setup(amqp_socket_t *sock, const struct tls_options *o, char *errstr, size_t errlen)
{
	const char *ca = o->ca != NULL && o->ca[0] != '\0' ? o->ca : SYSTEM_CAS;
	char key[4096];

	amqp_ssl_socket_set_verify_peer(sock, o->verify);
	amqp_ssl_socket_set_verify_hostname(sock, o->verify);
	if (amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK) {
		snprintf(errstr, errlen, "broker.tls_ca: %s: not a readable PEM file of certificates",
		         ca);
		return -1;
	}
	if (o->cert != NULL && o->cert[0] != '\0' &&
	    amqp_ssl_socket_set_key(sock, o->cert,
	                            secret_resolve(o->key != NULL ? o->key : "", key, sizeof(key))) !=
	        AMQP_STATUS_OK) {
		snprintf(errstr, errlen,
		         "broker.tls_cert, broker.tls_key: %s and %s are not a certificate and its key",
		         o->cert, o->key != NULL ? o->key : "");
		return -1;
	}
	return 0;
}
