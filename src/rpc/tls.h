/* tls.h: the TLS side of an amqps:// socket, the same for the engine and
 * the synchronous connection of the tools (broker.tls_* in warren.conf(5)). */
#ifndef WARREN_TLS_H
#define WARREN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <amqp.h>

struct tls_options {
	const char *ca, *cert, *key; /* "": the system's CAs, no client certificate */
	bool verify;                 /* the broker's certificate and host name */
};

/* Sets up sock (from amqp_ssl_socket_new). 0, or -1 with errstr. */
int tls_setup(amqp_socket_t *sock, const struct tls_options *o, char *errstr, size_t errlen);

#endif
