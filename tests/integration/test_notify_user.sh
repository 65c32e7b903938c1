#!/usr/bin/env bash
# test_notify_user.sh: the example caller against user-service on a database
# of its own: a user found by id and by email is "sent" the message by the
# channel of their preferences, a muted one is skipped, -a pages through
# every user, and each failure has its message and exit status.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
URL=${WARREN_TEST_URL:?run through scripts/run-tests.sh}
: "${PGHOST:?run through scripts/run-tests.sh}"
export WARREN_URL=$URL
# shellcheck source=tests/lib/check.sh
. "$(dirname "$0")/../lib/check.sh"
db=notify_$$
service_pid=

cleanup() {
	[ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
	dropdb --if-exists "$db" 2>/dev/null
}
trap cleanup EXIT

createdb "$db" || exit 1
"$BIN/user-service" -o "broker.url=$URL" -o log.level=warn \
	-o "db.conninfo=host=$PGHOST port=$PGPORT user=$PGUSER dbname=$db" &
service_pid=$!
for _ in $(seq 1 100); do
	"$BIN/rpc-call" -t 0.5 user.list >/dev/null 2>&1 && break
	sleep 0.1
done

"$BIN/rpc-call" user.create '{"email":"ada@example.org","name":"Ada Lovelace","preferences":{"channel":"sms"}}' >/dev/null
"$BIN/rpc-call" user.create '{"email":"alan@example.org","name":"Alan Turing"}' >/dev/null
"$BIN/rpc-call" user.create '{"email":"grace@example.org","name":"Grace Hopper","preferences":{"muted":true}}' >/dev/null
for i in $(seq 4 105); do
	"$BIN/rpc-call" -1 user.create "{\"email\":\"u$i@example.org\",\"name\":\"User $i\"}"
done
# The one-way creates are confirmed by the broker, not yet done: wait.
for _ in $(seq 1 100); do
	"$BIN/rpc-call" user.get '{"email":"u105@example.org"}' >/dev/null 2>&1 && break
	sleep 0.1
done

check "by id, by the channel of the preferences" 0 \
	'sent to user 1, Ada Lovelace <ada@example.org>, by sms: hello' '' -- \
	"$BIN/notify-user" -i 1 hello
check "by email, email by default" 0 \
	'sent to user 2, Alan Turing <alan@example.org>, by email: hi there' '' -- \
	"$BIN/notify-user" -e ALAN@example.org 'hi there'
check "a muted user is skipped" 0 'skipped user 3: notifications muted' '' -- \
	"$BIN/notify-user" -i 3 hello
check "-a reaches every user across pages" 0 105 '' -- \
	bash -c "'$BIN/notify-user' -a news | grep -c '^sent to user \|^skipped user '"
check "an unknown user is the service's NOT_FOUND, exit 1" 1 '' \
	'notify-user: user.get: NOT_FOUND: no user with id 999' -- "$BIN/notify-user" -i 999 hello
check "a bad email is the service's INVALID_ARGUMENT, exit 1" 1 '' \
	'notify-user: user.get: INVALID_ARGUMENT: field email: "nope" is not an email address' -- \
	"$BIN/notify-user" -e nope hello
check "a bad id is a usage error" 2 '' 'notify-user: -i "one": expected a user id (a number)' -- \
	"$BIN/notify-user" -i one hello
check "two selectors are a usage error" 2 '' 'notify-user: give exactly one of -i ID, -e EMAIL and -a
usage: notify-user [-c FILE] [-o key=value]... [-t SECONDS] -i ID | -e EMAIL | -a MESSAGE
       notify-user -h | -V' -- \
	"$BIN/notify-user" -i 1 -a hello
check "no message is a usage error" 2 '' 'notify-user: give one MESSAGE to send
usage: notify-user [-c FILE] [-o key=value]... [-t SECONDS] -i ID | -e EMAIL | -a MESSAGE
       notify-user -h | -V' -- \
	"$BIN/notify-user" -i 1
check "a bad -o is a configuration error" 3 '' \
	'notify-user: client.timeout: "soon" is not a duration (e.g. 250ms, 30s, 2m)' -- \
	"$BIN/notify-user" -o client.timeout=soon -i 1 hello

# The library's local failures take the codes of warren(7)'s one table, as
# rpc-call's do: a request the library refuses to send is bad input (7), a
# system call that fails (here binding an address this host does not have)
# is internal (6). Both exited 4, "unavailable", before.
long=$(printf 'x%.0s' $(seq 1 200))
check "a request larger than message.max_size is bad input, exit 7" 7 '' \
	'notify-user: user.get: INVALID_ARGUMENT: request of 221 bytes is larger than message.max_size (100)' -- \
	"$BIN/notify-user" -o message.max_size=100 -e "$long@example.org" hello
check "a metrics address that cannot be bound is internal, exit 6" 6 '' \
	'notify-user: client.metrics_listen: cannot listen on 192.0.2.1:9: Cannot assign requested address' -- \
	"$BIN/notify-user" -o client.metrics_listen=192.0.2.1:9 -i 1 hello

kill -STOP "$service_pid"
check "a service that does not answer: DEADLINE_EXCEEDED, exit 5" 5 '' \
	'notify-user: user.get: DEADLINE_EXCEEDED: no reply within 300 ms' -- \
	"$BIN/notify-user" -t 0.3 -i 1 hello
kill -CONT "$service_pid"
check "an unreachable broker: exit 4" 4 '' \
	'notify-user: cannot connect to 127.0.0.1:1: a socket error occurred' -- \
	env WARREN_URL=amqp://guest:guest@127.0.0.1:1 "$BIN/notify-user" -i 1 hello

summary
