#!/usr/bin/env bash
# test_tls.sh: amqps:// to the private broker's TLS listener, whose
# certificate (for "localhost") a test CA signed (tests/lib/broker.sh): the
# certificate and the host name are checked by default; a client
# certificate can be presented; each refusal says why.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
: "${WARREN_TEST_TLS_PORT:?run through scripts/run-tests.sh}"
# shellcheck source=tests/lib/check.sh
. "$(dirname "$0")/../lib/check.sh"
T=$WARREN_TEST_TLS_DIR
P=$WARREN_TEST_TLS_PORT
worker_pid=
cleanup() { [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null; }
trap cleanup EXIT

# The worker itself over TLS, with a client certificate.
"$BIN/example-service" -o "broker.url=amqps://guest:guest@localhost:$P" -o "broker.tls_ca=$T/ca.pem" \
	-o "broker.tls_cert=$T/client.pem" -o "broker.tls_key=$T/client.key" -o log.level=error &
worker_pid=$!
for _ in $(seq 1 100); do
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@localhost:$P" -o "broker.tls_ca=$T/ca.pem" \
		-t 0.5 example.echo >/dev/null 2>&1 && break
	sleep 0.1
done

check "a call over TLS, the broker's certificate checked against the CA" 0 '{"t":1}' '' -- \
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@localhost:$P" -o "broker.tls_ca=$T/ca.pem" \
	example.echo '{"t":1}'
check "a certificate the system's CAs did not sign is refused" 4 '' \
	"rpc-call: example.echo: UNAVAILABLE: cannot connect to localhost:$P: SSL peer cert verification failed" -- \
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@localhost:$P" example.echo
check "a certificate for another name is refused" 4 '' \
	"rpc-call: example.echo: UNAVAILABLE: cannot connect to 127.0.0.1:$P: SSL hostname verification failed" -- \
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@127.0.0.1:$P" -o "broker.tls_ca=$T/ca.pem" \
	example.echo
check "tls_verify=false accepts it (for tests only)" 0 '{"t":2}' '' -- \
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@127.0.0.1:$P" -o broker.tls_verify=false \
	example.echo '{"t":2}'
check "a client certificate with its key" 0 '{"t":3}' '' -- \
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@localhost:$P" -o "broker.tls_ca=$T/ca.pem" \
	-o "broker.tls_cert=$T/client.pem" -o "broker.tls_key=$T/client.key" example.echo '{"t":3}'
check "a certificate with another key is refused" 4 '' \
	"rpc-call: example.echo: UNAVAILABLE: broker.tls_cert, broker.tls_key: $T/client.pem and $T/server.key are not a certificate and its key" -- \
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@localhost:$P" -o "broker.tls_ca=$T/ca.pem" \
	-o "broker.tls_cert=$T/client.pem" -o "broker.tls_key=$T/server.key" example.echo
check "a CA file that is not PEM is refused" 4 '' \
	"rpc-call: example.echo: UNAVAILABLE: broker.tls_ca: $T/client.csr.none: not a readable PEM file of certificates" -- \
	"$BIN/rpc-call" -o "broker.url=amqps://guest:guest@localhost:$P" -o "broker.tls_ca=$T/client.csr.none" \
	example.echo
check "rpc-dlq over TLS too" 0 '' '' -- \
	bash -c "'$BIN/rpc-dlq' -o 'broker.url=amqps://guest:guest@localhost:$P' -o 'broker.tls_ca=$T/ca.pem' list example >/dev/null"
check "rpc-dlq checks the certificate as well" 4 '' \
	"rpc-dlq: cannot connect to localhost:$P: SSL peer cert verification failed" -- \
	"$BIN/rpc-dlq" -o "broker.url=amqps://guest:guest@localhost:$P" list example
summary
