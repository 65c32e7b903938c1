#!/usr/bin/env bash
# test_roles.sh: the least-privilege users of rabbitmq/definitions.json.
# A caller can call and read its own replies but can neither take nor purge
# a service's requests; a worker serves its own service only; the operator
# reads dead letters and nothing else. Passwords are set here (the
# definitions carry none: operators set them with rabbitmqctl) and given
# to warren's programs in files (broker.password_file), never on their
# command lines.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
: "${WARREN_TEST_BROKER_DIR:?run through scripts/run-tests.sh}"
# shellcheck source=tests/lib/check.sh
. "$(dirname "$0")/../lib/check.sh"
PORT=$WARREN_TEST_PORT
ctl() { "$(dirname "$0")/../lib/broker.sh" ctl "$WARREN_TEST_BROKER_DIR" "$@" >/dev/null 2>&1; }
url() { echo "amqp://$1:pw-$1@127.0.0.1:$PORT"; } # for amqp-get only
tmp=$(mktemp -d)
worker_pid=
cleanup() {
	[ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

for u in warren-caller warren-example-service warren-user-service warren-operator; do
	ctl change_password "$u" "pw-$u"
	(umask 077 && echo "pw-$u" >"$tmp/$u")
done
# The -o options that log a warren program in as user $1.
as() { echo "-o broker.url=amqp://$1@127.0.0.1:$PORT -o broker.password_file=$tmp/$1"; }
# shellcheck disable=SC2207 # the words of as() have no spaces
CALLER=($(as warren-caller))
# shellcheck disable=SC2207
OPERATOR=($(as warren-operator))

# shellcheck disable=SC2046 # one word per option
"$BIN/example-service" $(as warren-example-service) -o log.level=error -o worker.threads=2 &
worker_pid=$!
for _ in $(seq 1 100); do
	"$BIN/rpc-call" "${CALLER[@]}" -t 0.5 example.echo >/dev/null 2>&1 && break
	sleep 0.1
done

check "the worker role declares and serves its service; the caller role calls it" 0 '{"a":1}' '' -- \
	"$BIN/rpc-call" "${CALLER[@]}" example.echo '{"a":1}'
check "the caller role may have a reply queue of its own" 0 '{"b":2}' '' -- \
	"$BIN/rpc-call" "${CALLER[@]}" -o client.reply_mode=queue example.echo '{"b":2}'
check "the caller role cannot take a service's requests" 1 '' \
	"ACCESS_REFUSED - access to queue 'rpc.example' in vhost '/' refused for user 'warren-caller'" -- \
	bash -c "amqp-get -u '$(url warren-caller)' -q rpc.example 2>&1 >/dev/null | grep -o \"ACCESS_REFUSED.*'warren-caller'\" >&2; exit 1"
"$BIN/rpc-call" "${CALLER[@]}" example.nope >/dev/null 2>&1 # a dead letter
check "the caller role cannot read or purge dead letters" 4 '' \
	"rpc-dlq: basic.get: 403 ACCESS_REFUSED - access to queue 'rpc.example.dlq' in vhost '/' refused for user 'warren-caller'" -- \
	"$BIN/rpc-dlq" "${CALLER[@]}" purge example --yes
check "a worker role cannot take another service's requests" 1 '' \
	"ACCESS_REFUSED - access to queue 'rpc.user' in vhost '/' refused for user 'warren-example-service'" -- \
	bash -c "amqp-get -u '$(url warren-example-service)' -q rpc.user 2>&1 >/dev/null | grep -o \"ACCESS_REFUSED.*'warren-example-service'\" >&2; exit 1"
check "the operator role lists dead letters" 0 '' '' -- \
	bash -c "'$BIN/rpc-dlq' ${OPERATOR[*]} list example >/dev/null"
check "the operator role cannot take a service's requests" 1 '' \
	"ACCESS_REFUSED - access to queue 'rpc.example' in vhost '/' refused for user 'warren-operator'" -- \
	bash -c "amqp-get -u '$(url warren-operator)' -q rpc.example 2>&1 >/dev/null | grep -o \"ACCESS_REFUSED.*'warren-operator'\" >&2; exit 1"
check "a password on the command line is refused" 3 '' \
	'rpc-call: -o broker.url: a password on the command line can be read by every user of this machine; put it in broker.password_file or the configuration file' -- \
	"$BIN/rpc-call" -o "broker.url=$(url warren-caller)" example.echo
summary
