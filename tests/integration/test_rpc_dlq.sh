#!/usr/bin/env bash
# test_rpc_dlq.sh: rpc-dlq as an operator runs it against the private broker
# and an example-service: every command on a dead-letter queue holding
# worker, broker-style and malformed dead letters, each filter, the exact
# messages and exit statuses of every failure, and that nothing is lost:
# the queue holds the same messages after each command that should leave it
# alone. The dead letters are put in rpc.example.dlq with rpc-dlq import
# (JSON lines, so each header's type is chosen); it_dlq.c publishes them
# through rpc.dlx as a worker does and checks import and export against a
# plain AMQP client.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
URL=${WARREN_TEST_URL:?run through scripts/run-tests.sh}
BROKER_DIR=${WARREN_TEST_BROKER_DIR:?run through scripts/run-tests.sh}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export WARREN_URL=$URL
unset COLUMNS
# shellcheck source=tests/lib/check.sh
. "$(dirname "$0")/../lib/check.sh"
tmp=$(mktemp -d)
worker_pid=
DLQ=rpc.example.dlq
USAGE='usage: rpc-dlq [-c FILE] [-o key=value]... COMMAND SERVICE [OPTIONS] (rpc-dlq -h for more)'

cleanup() {
	[ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

dlq() {
	"$BIN/rpc-dlq" "$@"
}

# The ages vary from run to run: their digits are masked ("Nd", "Nh").
masked() {
	"$@" | sed -E 's/^[0-9]+([smhd]) /N\1 /'
	return "${PIPESTATUS[0]}"
}

# The x-delivery-count the broker adds grows with each walk of the queue.
show_masked() {
	"$@" | sed -E 's/^(  x-delivery-count: +)[0-9]+$/\1N/'
	return "${PIPESTATUS[0]}"
}

# Ready messages in a queue, from the broker itself; its figures lag by up
# to 5 s, so this polls until the count is want (or 20 s pass).
await_ready() {
	local queue=$1 want=$2 n
	for _ in $(seq 1 40); do
		n=$("$ROOT/tests/lib/broker.sh" ctl "$BROKER_DIR" list_queues -q name messages_ready 2>/dev/null |
			awk -v q="$queue" '$1 == q { print $2 }')
		[ "$n" = "$want" ] && return 0
		sleep 0.5
	done
	echo "$queue: $n ready, want $want" >&2
	return 1
}

stop_worker() {
	kill "$worker_pid" && wait "$worker_pid"
	worker_pid=
}

"$ROOT/tests/lib/broker.sh" ctl "$BROKER_DIR" purge_queue "$DLQ" >/dev/null 2>&1
"$ROOT/tests/lib/broker.sh" ctl "$BROKER_DIR" purge_queue rpc.example >/dev/null 2>&1

# ------------------------------------------------------------------- usage
check "no COMMAND is a usage error" 2 '' "rpc-dlq: missing COMMAND (list, show, replay, purge, export or import)
$USAGE" -- dlq
check "an unknown command is a usage error" 2 '' "rpc-dlq: unknown command \"lst\"
$USAGE" -- dlq lst example
check "a missing SERVICE is a usage error" 2 '' "rpc-dlq: list: missing SERVICE
$USAGE" -- dlq list
check "a SERVICE that is no service name is a usage error" 2 '' \
	"rpc-dlq: list: \"Ex.ample\" is not a service name (a-z, 0-9, '_' and '-')
$USAGE" -- dlq list Ex.ample
check "show without CORRELATION_ID is a usage error" 2 '' "rpc-dlq: show: missing CORRELATION_ID
$USAGE" -- dlq show example
check "an extra operand is a usage error" 2 '' "rpc-dlq: list: unexpected argument \"more\"
$USAGE" -- dlq list example more
check "an unknown option is a usage error" 2 '' "rpc-dlq: unknown option --frob
$USAGE" -- dlq list example --frob
check "an unknown short option is a usage error" 2 '' "rpc-dlq: unknown option -x
$USAGE" -- dlq list example -x
check "an option without its value is a usage error" 2 '' "rpc-dlq: option --method needs a value
$USAGE" -- dlq list example --method
check "a bad duration is a usage error" 2 '' \
	'rpc-dlq: --older-than "soon": expected a duration such as 90s, 5m, 2h or 4d' -- \
	dlq list example --older-than soon
check "a negative duration is a usage error" 2 '' \
	'rpc-dlq: --newer-than "-5m": expected a duration such as 90s, 5m, 2h or 4d' -- \
	dlq list example --newer-than -5m
check "a bad -n is a usage error" 2 '' \
	'rpc-dlq: -n "many": expected a number of dead letters from 1 to 1000000000' -- \
	dlq list example -n many
check "-n 0 is a usage error" 2 '' \
	'rpc-dlq: -n "0": expected a number of dead letters from 1 to 1000000000' -- \
	dlq replay example -n 0
check "an empty --method is a usage error" 2 '' \
	"rpc-dlq: --method: expected a value, or a prefix ending in '*'" -- dlq list example --method ''
check "--dry-run belongs to replay" 2 '' "rpc-dlq: list does not take --dry-run
$USAGE" -- dlq list example --dry-run
check "--yes belongs to purge" 2 '' "rpc-dlq: replay does not take --yes
$USAGE" -- dlq replay example --yes
check "show takes no filter" 2 '' "rpc-dlq: show does not take --reason
$USAGE" -- dlq show example c-1 --reason x
check "import takes no -n" 2 '' "rpc-dlq: import does not take -n
$USAGE" -- dlq import example -n 3
check "purge without a terminal and without --yes refuses" 2 '' \
	'rpc-dlq: purge: standard input is not a terminal to confirm on: give --yes to purge without asking' -- \
	bash -c "'$BIN/rpc-dlq' purge example </dev/null"
check "-V prints the version" 0 "rpc-dlq $(warren_version "$ROOT")" '' -- dlq -V
check "-h prints the commands" 0 'usage: rpc-dlq [-c FILE] [-o key=value]... COMMAND SERVICE [OPTIONS]' '' -- \
	bash -c "'$BIN/rpc-dlq' -h | head -n 1"

# ------------------------------------------------ configuration and broker
check "an unknown -o key is a configuration error" 3 '' 'rpc-dlq: unknown key "broker.uri"' -- \
	dlq -o broker.uri=amqp://x list example
check "a bad WARREN_URL is a configuration error" 3 '' \
	'rpc-dlq: WARREN_URL: broker.url: "http://x" is not an amqp:// or amqps:// URL' -- \
	env WARREN_URL=http://x "$BIN/rpc-dlq" list example
check "a missing config file is a configuration error" 3 '' \
	"rpc-dlq: $tmp/nope.conf: No such file or directory" -- dlq -c "$tmp/nope.conf" list example
check "an unreadable password file is a configuration error" 3 '' \
	"rpc-dlq: broker.password_file: $tmp/nopw: No such file or directory" -- \
	dlq -o "broker.password_file=$tmp/nopw" list example
check "an unreachable broker exits 4" 4 '' \
	'rpc-dlq: cannot connect to 127.0.0.1:1: a socket error occurred' -- \
	env WARREN_URL=amqp://guest:guest@127.0.0.1:1/ "$BIN/rpc-dlq" -o broker.connect_timeout=1s list example
check "the next URL of the list is tried" 0 'AGE  METHOD  REASON  ATTEMPTS  CORRELATION_ID  ERROR' '' -- \
	env WARREN_URL="amqp://guest:guest@127.0.0.1:1/,$URL" "$BIN/rpc-dlq" list example
echo "wrong-password" >"$tmp/pw"
check "a login the broker refuses exits 4" 4 '' \
	"rpc-dlq: login to 127.0.0.1:${WARREN_TEST_PORT}: 403 ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile." -- \
	dlq -o "broker.password_file=$tmp/pw" list example
check "a service without a dead-letter queue exits 8" 8 '' \
	'rpc-dlq: no queue rpc.nosuch.dlq: is "nosuch" a service?' -- dlq list nosuch
check "import into a missing queue exits 8" 8 '' \
	'rpc-dlq: no queue rpc.nosuch.dlq: is "nosuch" a service?' -- \
	bash -c "echo '{\"properties\":{},\"body\":\"\"}' | '$BIN/rpc-dlq' import nosuch"

# ------------------------------------------------------------ empty queue
HEAD='AGE  METHOD  REASON  ATTEMPTS  CORRELATION_ID  ERROR'
check "an empty queue lists the header alone" 0 "$HEAD" '' -- dlq list example
check "an empty queue exports nothing" 0 '' '' -- dlq export example
check "an empty queue replays nothing" 0 'replayed 0 of 0 dead letters' '' -- dlq replay example
check "an empty queue purges nothing" 0 'purged 0 dead letters' '' -- dlq purge example --yes
check "show in an empty queue finds nothing" 8 '' \
	'rpc-dlq: no dead letter with correlation id "c-1" in rpc.example.dlq' -- dlq show example c-1

# ---------------------------------------------------------------- seeding
# c-1: a worker's retries-exhausted dead letter, at a fixed time long ago.
# c-2, c-3: unknown methods, 2 h 10 m and 45 m ago; c-3's method routes nowhere.
# c-4: dead-lettered by the broker (x-death), 3 h 10 m ago.
# c-5: malformed: its time and attempts are strings, its body is not msgpack.
# c-6: no type, no headers, a text body.
now_ms=$(date +%s%3N)
now_s=$((now_ms / 1000))
t2=$((now_ms - 130 * 60000))
t3=$((now_ms - 45 * 60000))
t4=$((now_s - 190 * 60))
RT='amq.rabbitmq.reply-to.g1hkABNyYWJiaXRAbG9jYWxob3N0AAAAAAAAAAAAAAAA.dG9rZW4='
cat >"$tmp/seed.jsonl" <<EOF
{"properties":{"content_type":"application/msgpack","delivery_mode":2,"correlation_id":"c-1","reply_to":"$RT","message_id":"m-1","timestamp":1700000000,"type":"example.echo","app_id":"rpc-call","headers":{"rpc-deadline":1700000000123,"rpc-attempt":5,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","rpc-dead-reason":"retries-exhausted","rpc-dead-error":"database unavailable: connection refused","rpc-dead-worker":"example@host:42","rpc-dead-time":1700000000500,"rpc-dead-queue":"rpc.example"}},"body":"gaNtc2eiaGk="}
{"properties":{"content_type":"application/json","delivery_mode":2,"correlation_id":"c-2","message_id":"m-2","type":"example.nosuch","headers":{"rpc-attempt":1,"rpc-dead-reason":"unknown-method","rpc-dead-error":"no handler for example.nosuch","rpc-dead-time":$t2}},"body":"eyJhIjoxfQ=="}

{"properties":{"content_type":"application/json","delivery_mode":2,"correlation_id":"c-3","message_id":"m-3","type":"nosuch.x","headers":{"rpc-attempt":1,"rpc-dead-reason":"unknown-method","rpc-dead-error":"no handler for nosuch.x","rpc-dead-time":$t3}},"body":"e30="}
{"properties":{"content_type":"application/msgpack","delivery_mode":2,"correlation_id":"c-4","message_id":"m-4","type":"example.sleep","headers":{"x-first-death-reason":"delivery_limit","x-first-death-queue":"rpc.example","x-first-death-exchange":"rpc","x-death":[{"count":1,"reason":"delivery_limit","queue":"rpc.example","time":{"\$type":"timestamp","value":$t4},"exchange":"rpc","routing-keys":["example.sleep"]}]}},"body":"gaJtc8z/"}
{"properties":{"content_type":"application/msgpack","correlation_id":"c-5","type":"example.echo","headers":{"rpc-dead-reason":"undecodable","rpc-dead-error":"undecodable msgpack body: at byte 0: byte 0xc1 is never used in msgpack","rpc-dead-time":"yesterday","rpc-attempt":"3"}},"body":"wQ=="}
{"properties":{"content_type":"text/plain","correlation_id":"c-6"},"body":"aGVsbG8="}
EOF
check "import publishes each line into the queue" 0 \
	'imported 6 of 6 dead letters into rpc.example.dlq' '' -- bash -c "'$BIN/rpc-dlq' import example <'$tmp/seed.jsonl'"

# ------------------------------------------------------------------- list
ALL='AGE    METHOD          REASON                 ATTEMPTS  CORRELATION_ID  ERROR
Nd  example.echo    retries-exhausted      5         c-1             database unavailable: connection refused
Nh     example.sleep   broker:delivery_limit  ?         c-4             dead-lettered by the broker from rpc.example
Nh     example.nosuch  unknown-method         1         c-2             no handler for example.nosuch
Nm    nosuch.x        unknown-method         1         c-3             no handler for nosuch.x
?      example.echo    undecodable            ?         c-5             undecodable msgpack body: at byte 0: byte 0xc1 is never used in msgpack
?      ?               ?                      ?         c-6'
check "list prints one line per dead letter, oldest first, unknown times last" 0 "$ALL" '' -- \
	masked dlq list example
check "list again: the walk left every dead letter in the queue" 0 "$ALL" '' -- masked dlq list example
check "--method matches a method exactly" 0 \
	'AGE    METHOD        REASON             ATTEMPTS  CORRELATION_ID  ERROR
Nd  example.echo  retries-exhausted  5         c-1             database unavailable: connection refused
?      example.echo  undecodable        ?         c-5             undecodable msgpack body: at byte 0: byte 0xc1 is never used in msgpack' '' -- \
	masked dlq list example --method example.echo
check "--method with a trailing * matches a prefix" 0 'c-1
c-4
c-2
c-5' '' -- bash -c "'$BIN/rpc-dlq' list example --method 'example.*' | awk 'NR > 1 { print \$5 }'"
check "--reason matches a reason" 0 'c-2
c-3' '' -- bash -c "'$BIN/rpc-dlq' list example --reason unknown-method | awk 'NR > 1 { print \$5 }'"
check "--reason broker:* matches what the broker dead-lettered" 0 \
	'AGE  METHOD         REASON                 ATTEMPTS  CORRELATION_ID  ERROR
Nh   example.sleep  broker:delivery_limit  ?         c-4             dead-lettered by the broker from rpc.example' '' -- \
	masked dlq list example --reason 'broker:*'
check "--older-than keeps the dead letters at least that old" 0 'c-1
c-4' '' -- bash -c "'$BIN/rpc-dlq' list example --older-than 3h | awk 'NR > 1 { print \$5 }'"
check "--newer-than keeps the younger ones" 0 'c-3' '' -- \
	bash -c "'$BIN/rpc-dlq' list example --newer-than 1h | awk 'NR > 1 { print \$5 }'"
check "--older-than and --newer-than together make a window" 0 'c-4
c-2' '' -- bash -c "'$BIN/rpc-dlq' list example --older-than 1h --newer-than 1d | awk 'NR > 1 { print \$5 }'"
check "-n keeps the COUNT oldest matching dead letters" 0 'c-2
c-3' '' -- bash -c "'$BIN/rpc-dlq' list example -n 2 --reason 'unknown-*' | awk 'NR > 1 { print \$5 }'"
check "options may come first" 0 'c-1' '' -- \
	bash -c "'$BIN/rpc-dlq' -n 1 list example | awk 'NR > 1 { print \$5 }'"
check "nothing matching lists the header alone" 0 \
	'AGE  METHOD  REASON  ATTEMPTS  CORRELATION_ID  ERROR' '' -- dlq list example --method user.get
check "COLUMNS cuts ERROR to fit" 0 \
	'AGE    METHOD        REASON             ATTEMPTS  CORRELATION_ID  ERROR
Nd  example.echo  retries-exhausted  5         c-1             database unavailable:...
?      example.echo  undecodable        ?         c-5             undecodable msgpack b...' '' -- \
	masked env COLUMNS=90 "$BIN/rpc-dlq" list example --method example.echo

# ------------------------------------------------------------------- show
check "show prints every property, header and the decoded body" 0 \
	"routing_key: rpc.example.dlq
properties:
  content_type:   application/msgpack
  delivery_mode:  2
  correlation_id: c-1
  reply_to:       $RT
  message_id:     m-1
  timestamp:      1700000000 (2023-11-14T22:13:20.000Z)
  type:           example.echo
  app_id:         rpc-call
headers:
  rpc-attempt:      5
  rpc-dead-error:   \"database unavailable: connection refused\"
  rpc-dead-queue:   \"rpc.example\"
  rpc-dead-reason:  \"retries-exhausted\"
  rpc-dead-time:    1700000000500 (2023-11-14T22:13:20.500Z)
  rpc-dead-worker:  \"example@host:42\"
  rpc-deadline:     1700000000123 (2023-11-14T22:13:20.123Z)
  traceparent:      \"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"
  x-delivery-count: N
body (application/msgpack, 8 bytes):
  {\"msg\":\"hi\"}" '' -- show_masked dlq show example c-1
check "show of a broker dead letter prints x-death with its types" 0 \
	"routing_key: rpc.example.dlq
properties:
  content_type:   application/msgpack
  delivery_mode:  2
  correlation_id: c-4
  message_id:     m-4
  type:           example.sleep
headers:
  x-death:                [{\"count\":1,\"reason\":\"delivery_limit\",\"queue\":\"rpc.example\",\"time\":{\"\$type\":\"timestamp\",\"value\":$t4},\"exchange\":\"rpc\",\"routing-keys\":[\"example.sleep\"]}]
  x-delivery-count:       N
  x-first-death-exchange: \"rpc\"
  x-first-death-queue:    \"rpc.example\"
  x-first-death-reason:   \"delivery_limit\"
body (application/msgpack, 6 bytes):
  {\"ms\":255}" '' -- show_masked dlq show example c-4
check "show of a malformed dead letter says what is wrong and shows the body in base64" 0 \
	"routing_key: rpc.example.dlq
properties:
  content_type:   application/msgpack
  correlation_id: c-5
  type:           example.echo
headers:
  rpc-attempt:      \"3\"
  rpc-dead-error:   \"undecodable msgpack body: at byte 0: byte 0xc1 is never used in msgpack\"
  rpc-dead-reason:  \"undecodable\"
  rpc-dead-time:    \"yesterday\"
  x-delivery-count: N
body (application/msgpack, 1 byte): not valid msgpack: at byte 0: byte 0xc1 is never used in msgpack
  base64: wQ==
notes: header rpc-dead-time: expected an integer, got string; header rpc-attempt: expected an integer, got string" '' -- \
	show_masked dlq show example c-5
check "show of a message no one dead-lettered" 0 \
	"routing_key: rpc.example.dlq
properties:
  content_type:   text/plain
  correlation_id: c-6
headers:
  x-delivery-count: N
body (text/plain, 5 bytes): content type \"text/plain\" is neither application/msgpack nor application/json
  base64: aGVsbG8=
notes: no type property: the method is unknown; no rpc-dead-reason header and no x-death: neither a worker nor the broker dead-lettered it" '' -- \
	show_masked dlq show example c-6
check "show of an unknown correlation id exits 8" 8 '' \
	'rpc-dlq: no dead letter with correlation id "c-9" in rpc.example.dlq' -- dlq show example c-9

# ----------------------------------------------------------------- export
dlq export example >"$tmp/export1.jsonl"
check "export writes one line per dead letter" 0 '6' '' -- bash -c "wc -l <'$tmp/export1.jsonl'"
check "export keeps each header's type and decodes the body" 0 \
	"{\"properties\":{\"content_type\":\"application/msgpack\",\"delivery_mode\":2,\"correlation_id\":\"c-1\",\"reply_to\":\"$RT\",\"message_id\":\"m-1\",\"timestamp\":1700000000,\"type\":\"example.echo\",\"app_id\":\"rpc-call\",\"headers\":{\"rpc-attempt\":5,\"rpc-dead-error\":\"database unavailable: connection refused\",\"rpc-dead-queue\":\"rpc.example\",\"rpc-dead-reason\":\"retries-exhausted\",\"rpc-dead-time\":1700000000500,\"rpc-dead-worker\":\"example@host:42\",\"rpc-deadline\":1700000000123,\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}},\"body\":\"gaNtc2eiaGk=\",\"body_json\":{\"msg\":\"hi\"}}" '' -- \
	head -n 1 "$tmp/export1.jsonl"
check "export gives the reason a body cannot be decoded" 0 \
	'{"properties":{"content_type":"text/plain","correlation_id":"c-6"},"body":"aGVsbG8=","body_error":"content type \"text/plain\" is neither application/msgpack nor application/json"}' '' -- \
	tail -n 1 "$tmp/export1.jsonl"
check "export with filters and -n" 0 'c-2' '' -- \
	bash -c "'$BIN/rpc-dlq' export example --reason unknown-method -n 1 | grep -o '\"correlation_id\":\"c-[0-9]\"' | cut -d'\"' -f4"
check "export removed nothing" 0 "$(cat "$tmp/export1.jsonl")" '' -- dlq export example

# ----------------------------------------------------------------- replay
check "replay --dry-run prints what it would replay" 0 \
	'AGE    METHOD        REASON             ATTEMPTS  CORRELATION_ID  ERROR
Nd  example.echo  retries-exhausted  5         c-1             database unavailable: connection refused
?      example.echo  undecodable        ?         c-5             undecodable msgpack body: at byte 0: byte 0xc1 is never used in msgpack
would replay 2 dead letters' '' -- masked dlq replay example --method example.echo --dry-run
check "replay --dry-run changed nothing" 0 "$(cat "$tmp/export1.jsonl")" '' -- dlq export example
check "a replay to a method no queue is bound for is reported and stays" 1 \
	'replayed 0 of 1 dead letter' \
	'rpc-dlq: nosuch.x c-3: not replayed: no queue is bound for nosuch.x (312 NO_ROUTE); it stays in rpc.example.dlq' -- \
	dlq replay example --method nosuch.x
check "the unroutable dead letter is still there, unchanged" 0 "$(cat "$tmp/export1.jsonl")" '' -- dlq export example

# A replay lands in rpc.example: seen there with no service running, then
# processed once example-service starts.
check "replay publishes the dead letter again and removes it" 0 'replayed 1 of 1 dead letter' '' -- \
	dlq replay example --method example.echo -n 1
if await_ready rpc.example 1 2>"$tmp/await"; then
	pass "the replayed request waits in rpc.example"
else
	flunk "the replayed request waits in rpc.example" "$(cat "$tmp/await")"
fi
start_worker
if await_ready rpc.example 0 2>"$tmp/await"; then
	pass "example-service processed the replayed request"
else
	flunk "example-service processed the replayed request" "$(cat "$tmp/await")"
fi
stop_worker
check "the replayed dead letter left the queue, the others stayed" 0 'c-4
c-2
c-3
c-5
c-6' '' -- bash -c "'$BIN/rpc-dlq' list example | awk 'NR > 1 { print \$5 }'"
check "a replay and a failed replay together exit 1" 1 'replayed 1 of 2 dead letters' \
	'rpc-dlq: nosuch.x c-3: not replayed: no queue is bound for nosuch.x (312 NO_ROUTE); it stays in rpc.example.dlq' -- \
	dlq replay example --reason unknown-method
if await_ready rpc.example 1 2>"$tmp/await"; then
	pass "the replay of example.nosuch waits in rpc.example"
else
	flunk "the replay of example.nosuch waits in rpc.example" "$(cat "$tmp/await")"
fi
"$ROOT/tests/lib/broker.sh" ctl "$BROKER_DIR" purge_queue rpc.example >/dev/null 2>&1
grep -v '"c-[12]"' "$tmp/export1.jsonl" >"$tmp/left.jsonl"
check "what was not replayed is as it was" 0 "$(cat "$tmp/left.jsonl")" '' -- dlq export example

# ------------------------------------------------------------------ purge
if command -v script >/dev/null; then
	check "purge asks on a terminal and does nothing without yes" 1 \
		'no
purge 1 dead letter from rpc.example.dlq? Type yes to confirm: rpc-dlq: purge: not confirmed: nothing was purged' '' -- \
		bash -c "set -o pipefail; script -qec \"'$BIN/rpc-dlq' purge example --method example.sleep\" /dev/null <<<no | tr -d '\r'"
	check "purge on a terminal removes them after yes" 0 \
		'yes
purge 1 dead letter from rpc.example.dlq? Type yes to confirm: purged 1 dead letter' '' -- \
		bash -c "set -o pipefail; script -qec \"'$BIN/rpc-dlq' purge example --method example.sleep\" /dev/null <<<yes | tr -d '\r'"
else
	flunk "purge on a terminal: script(1) from util-linux is needed"
fi
check "purge --yes with a filter removes the matching ones only" 0 'purged 1 dead letter' '' -- \
	dlq purge example --reason undecodable --yes
check "the others stayed" 0 'c-3
c-6' '' -- bash -c "'$BIN/rpc-dlq' list example | awk 'NR > 1 { print \$5 }'"

# ------------------------------------------------- export, purge, import
check "import of the first export" 0 'imported 6 of 6 dead letters into rpc.example.dlq' '' -- \
	bash -c "'$BIN/rpc-dlq' import example <'$tmp/export1.jsonl'"
dlq export example >"$tmp/export2.jsonl"
check "purge -n removes the COUNT oldest" 0 'purged 2 dead letters' '' -- dlq purge example -n 2 --yes
check "purge --yes removes them all" 0 'purged 6 dead letters' '' -- dlq purge example --yes
check "the queue is empty" 0 '' '' -- dlq export example
check "import restores them" 0 'imported 8 of 8 dead letters into rpc.example.dlq' '' -- \
	bash -c "'$BIN/rpc-dlq' import example <'$tmp/export2.jsonl'"
check "the same messages, in the same order" 0 "$(cat "$tmp/export2.jsonl")" '' -- dlq export example

# Malformed import lines: named by number, and nothing is published.
printf '%s\n' "$(head -n 1 "$tmp/export1.jsonl")" '{"properties":{},"body":"aGk="' >"$tmp/bad1.jsonl"
check "an import line that is not JSON imports nothing (bad input)" 7 '' \
	"rpc-dlq: import: line 2: not valid JSON: '}' expected near end of file (column 30); nothing was imported" -- \
	bash -c "'$BIN/rpc-dlq' import example <'$tmp/bad1.jsonl'"
check "import of a line with a bad field names it" 7 '' \
	'rpc-dlq: import: line 1: properties.delivery_mode: expected an integer from 0 to 255; nothing was imported' -- \
	bash -c "echo '{\"properties\":{\"delivery_mode\":\"2\"},\"body\":\"\"}' | '$BIN/rpc-dlq' import example"
check "import of an unknown \$type names it" 7 '' \
	'rpc-dlq: import: line 1: properties.headers.a: unknown "$type" "int33"; nothing was imported' -- \
	bash -c "echo '{\"properties\":{\"headers\":{\"a\":{\"\$type\":\"int33\",\"value\":1}}},\"body\":\"\"}' | '$BIN/rpc-dlq' import example"
check "import of a body that is not base64" 7 '' \
	'rpc-dlq: import: line 1: body: not valid base64; nothing was imported' -- \
	bash -c "echo '{\"properties\":{},\"body\":\"!!\"}' | '$BIN/rpc-dlq' import example"
check "import of an unknown key" 7 '' \
	'rpc-dlq: import: line 1: the line: unknown key "bodyy"; nothing was imported' -- \
	bash -c "echo '{\"properties\":{},\"body\":\"\",\"bodyy\":1}' | '$BIN/rpc-dlq' import example"
# The broker closes the channel over a message whose reply_to is the bare
# direct reply-to name: the lines before it stay imported.
{
	head -n 1 "$tmp/export1.jsonl"
	echo '{"properties":{"reply_to":"amq.rabbitmq.reply-to","correlation_id":"c-7"},"body":""}'
	tail -n 1 "$tmp/export1.jsonl"
} >"$tmp/refused.jsonl"
check "a line the broker refuses ends the import with 4 and says how far it got" 4 \
	'imported 1 of 3 dead letters into rpc.example.dlq' \
	'rpc-dlq: import: line 2: channel closed by the broker: 406 PRECONDITION_FAILED - fast reply consumer does not exist' -- \
	bash -c "'$BIN/rpc-dlq' import example <'$tmp/refused.jsonl'"
check "purge the line imported before" 0 'purged 1 dead letter' '' -- dlq purge example --yes -n 1
check "the malformed imports added nothing" 0 "$(cat "$tmp/export2.jsonl")" '' -- dlq export example

check "purge at the end" 0 'purged 8 dead letters' '' -- dlq purge example --yes
summary
