#!/usr/bin/env bash
# test_rpc_call.sh: rpc-call as a user runs it against the private broker and
# an example-service: its output on success, and for each class of failure the
# exact message on stderr and its documented exit status.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
URL=${WARREN_TEST_URL:?run through scripts/run-tests.sh}
export WARREN_URL=$URL
# shellcheck source=tests/lib/check.sh
. "$(dirname "$0")/../lib/check.sh"
tmp=$(mktemp -d)
worker_pid=

cleanup() {
	[ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

start_worker

check "prints the result as JSON" 0 '{"a":1,"b":[true,null,"x"]}' '' -- \
	"$BIN/rpc-call" example.echo '{"a":1,"b":[true,null,"x"]}'
check "no PARAMS sends an empty map" 0 '{}' '' -- "$BIN/rpc-call" example.echo
check "PARAMS from stdin" 0 '{"from":"stdin"}' '' -- \
	bash -c "echo '{\"from\":\"stdin\"}' | '$BIN/rpc-call' example.echo -"
echo '{"from":"file"}' >"$tmp/params.json"
check "PARAMS from @file" 0 '{"from":"file"}' '' -- "$BIN/rpc-call" example.echo "@$tmp/params.json"
check "JSON on the wire with -j" 0 '[1,2,3]' '' -- "$BIN/rpc-call" -j example.echo '[1,2,3]'
check "one-way call with -1 prints nothing" 0 '' '' -- "$BIN/rpc-call" -1 example.echo '{}'
check "a remote error status exits 1" 1 '' 'rpc-call: example.fail: NOT_FOUND: no user 42' -- \
	"$BIN/rpc-call" example.fail '{"code":"NOT_FOUND","message":"no user 42"}'
check "an unknown method exits 1 with UNIMPLEMENTED" 1 '' \
	'rpc-call: example.nosuch: UNIMPLEMENTED: unknown method example.nosuch' -- \
	"$BIN/rpc-call" example.nosuch
check "missing METHOD is a usage error" 2 '' "rpc-call: missing METHOD
usage: rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-m MESSAGE_ID]
                [-j] [-T] [-1] [-v] [-n COUNT [-P IN_FLIGHT]] METHOD [PARAMS | - | @FILE]
       rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-j] [-T] [-v] -b
       rpc-call -h | -V" -- "$BIN/rpc-call"
check "a bad -t is a usage error" 2 '' \
	'rpc-call: -t "soon": expected a number of seconds from 0.001 to 86400' -- \
	"$BIN/rpc-call" -t soon example.echo
check "a bad -o value is a configuration error" 3 '' \
	'rpc-call: client.timeout: "forever" is not a duration (e.g. 250ms, 30s, 2m)' -- \
	"$BIN/rpc-call" -o client.timeout=forever example.echo
check "an unknown -o key is a configuration error" 3 '' 'rpc-call: unknown key "client.timout"' -- \
	"$BIN/rpc-call" -o client.timout=1s example.echo
check "a missing config file is a configuration error" 3 '' \
	"rpc-call: $tmp/nope.conf: No such file or directory" -- \
	"$BIN/rpc-call" -c "$tmp/nope.conf" example.echo
check "bad JSON PARAMS is bad input" 7 '' \
	"rpc-call: PARAMS is not valid JSON: line 1, column 4: ':' expected near end of file" -- \
	"$BIN/rpc-call" example.echo '{"a"'
check "a missing @file is bad input" 7 '' "rpc-call: $tmp/none.json: No such file or directory" -- \
	"$BIN/rpc-call" example.echo "@$tmp/none.json"
check "a method with no queue exits 4 at once" 4 '' \
	'rpc-call: nosuch.method: UNAVAILABLE: no queue is bound for method nosuch.method (312 NO_ROUTE), after 3 attempts' -- \
	"$BIN/rpc-call" -t 30 nosuch.method
check "an unreachable broker exits 4" 4 '' \
	'rpc-call: example.echo: UNAVAILABLE: cannot connect to 127.0.0.1:1: a socket error occurred' -- \
	env WARREN_URL=amqp://guest:guest@127.0.0.1:1/ "$BIN/rpc-call" -o broker.connect_timeout=1s example.echo
check "a bad WARREN_URL is a configuration error" 3 '' \
	'rpc-call: WARREN_URL: broker.url: "http://x" is not an amqp:// or amqps:// URL' -- \
	env WARREN_URL=http://x "$BIN/rpc-call" example.echo
# A broker URL in a message never shows its password (scripts/run-tests.sh
# fails the run if 'pw-warren-' appears in any log, this one included).
bad_url='amqp://warren:pw-warren-badurl@127.0.0.1:56x72/'
check "an unparsable broker.url is shown without its password" 3 '' \
	'rpc-call: example.echo: INVALID_ARGUMENT: broker.url: cannot parse "amqp://warren:***@127.0.0.1:56x72/"' -- \
	env WARREN_URL="$bad_url" "$BIN/rpc-call" example.echo
check "rpc-dlq shows it without its password too" 3 '' \
	'rpc-dlq: broker.url: cannot parse "amqp://warren:***@127.0.0.1:56x72/"' -- \
	env WARREN_URL="$bad_url" "$BIN/rpc-dlq" list example
printf '[broker]\nurl = %s\n[worker]\nservice = example\n' "$bad_url" >"$tmp/bad-url.conf"
check "and so does a daemon (a configuration error, said as for a bad file)" 3 '' \
	'example-service: broker.url: cannot parse "amqp://warren:***@127.0.0.1:56x72/"' -- \
	"$BIN/example-service" -c "$tmp/bad-url.conf"
check "a URL that is not amqp:// is shown without its password" 3 '' \
	'rpc-call: WARREN_URL: broker.url: "http://warren:***@127.0.0.1/" is not an amqp:// or amqps:// URL' -- \
	env WARREN_URL=http://warren:pw-warren-badurl@127.0.0.1/ "$BIN/rpc-call" example.echo
check "a deadline exceeded exits 5" 5 '' \
	'rpc-call: example.sleep: DEADLINE_EXCEEDED: no reply within 300 ms' -- \
	"$BIN/rpc-call" -t 0.3 example.sleep '{"ms":2000}'
echo "password-from-file" >"$tmp/pw"
check "a wrong password from a file is refused by the broker" 4 '' \
	"rpc-call: example.echo: UNAVAILABLE: login to 127.0.0.1:${WARREN_TEST_PORT}: 403 ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile." -- \
	"$BIN/rpc-call" -o "broker.password_file=$tmp/pw" example.echo
# Secrets never on the command line, where ps shows them to everyone (the
# well-known guest password is no secret).
check "a broker password in -o broker.url is refused (configuration error)" 3 '' \
	'rpc-call: -o broker.url: a password on the command line can be read by every user of this machine; put it in broker.password_file or the configuration file' -- \
	"$BIN/rpc-call" -o 'broker.url=amqp://guest:guest@127.0.0.1:1/,amqp://app:s3cret@127.0.0.1:1/' example.echo
check "a daemon refuses one too" 3 '' \
	'example-service: -o broker.url: a password on the command line can be read by every user of this machine; put it in broker.password_file or the configuration file' -- \
	"$BIN/example-service" -o 'broker.url = amqps://app:s3cret@broker.example.org/'
check "a database password in -o db.conninfo is refused (configuration error)" 3 '' \
	'user-service: -o db.conninfo: a password on the command line can be read by every user of this machine; put it in db.conninfo_file or the configuration file' -- \
	"$BIN/user-service" -o 'db.conninfo=host=db user=app password = s3cret'

# Load mode: the figures vary from run to run, so they are masked.
mask='s/ [0-9]+\.[0-9]+/ X/g; s/: [0-9]+ calls\/s/: R calls\/s/'
check "-n/-P runs the calls and prints throughput, latency and outcomes" 0 \
	'example.echo: 500 calls, 16 in flight, X s: R calls/s
latency ms: p50 X  p90 X  p99 X  p99.9 X  max X
outcomes: 500 OK' '' -- bash -c "'$BIN/rpc-call' -n 500 -P 16 example.echo '{\"x\":1}' | sed -E '$mask'"
check "load mode counts error statuses and exits as the first failure" 1 \
	'example.fail: 20 calls, 4 in flight, X s: R calls/s
latency ms: p50 X  p90 X  p99 X  p99.9 X  max X
outcomes: 20 NOT_FOUND' '' -- bash -c "set -o pipefail; '$BIN/rpc-call' -n 20 -P 4 example.fail \
	'{\"code\":\"NOT_FOUND\",\"message\":\"x\"}' | sed -E '$mask'"
check "load mode counts calls that ran out of time" 5 \
	'example.sleep: 4 calls, 4 in flight, X s: R calls/s
latency ms: p50 X  p90 X  p99 X  p99.9 X  max X
outcomes: 4 DEADLINE_EXCEEDED' '' -- bash -c "set -o pipefail; '$BIN/rpc-call' -t 0.2 -n 4 -P 4 \
	example.sleep '{\"ms\":1000}' | sed -E '$mask'"
# Load mode with the caller's metrics (-o client.metrics_listen): a scrape
# during the run sees all its calls in flight (16 sleeps of 300 ms, four at
# a time), and the run itself is unchanged.
# shellcheck source=tests/lib/ports.sh
. "$(dirname "$0")/../lib/ports.sh"
mport=$(free_port)
"$BIN/rpc-call" -o "client.metrics_listen=127.0.0.1:$mport" -n 16 -P 16 example.sleep \
	'{"ms":300}' >"$tmp/load.out" &
load_pid=$!
inflight=
for _ in $(seq 1 200); do
	inflight=$(curl -sf "http://127.0.0.1:$mport/metrics" 2>/dev/null |
		awk '$1 == "warren_client_in_flight{app=\"rpc-call\"}" { print $2 }')
	[ "$inflight" = 16 ] && break
	sleep 0.01
done
wait "$load_pid"
check "a scrape during rpc-call -n sees its 16 calls in flight" 0 16 '' -- echo "$inflight"
check "and the load's outcomes are as without metrics" 0 'outcomes: 16 OK' '' -- \
	grep '^outcomes' "$tmp/load.out"
check "a bad client.metrics_listen is a configuration error" 3 '' \
	'rpc-call: client.metrics_listen: "nohost" is not HOST:PORT' -- \
	"$BIN/rpc-call" -o client.metrics_listen=nohost -n 1 example.echo
check "a bad -n is a usage error" 2 '' \
	'rpc-call: -n "many": expected a number of calls from 1 to 100000000' -- \
	"$BIN/rpc-call" -n many example.echo
check "a bad -P is a usage error" 2 '' \
	'rpc-call: -P "0": expected a number of calls in flight from 1 to 100000' -- \
	"$BIN/rpc-call" -n 5 -P 0 example.echo
check "-P without -n is a usage error" 2 '' 'rpc-call: -P needs -n' -- \
	"$BIN/rpc-call" -P 5 example.echo
check "-n with -m is a usage error" 2 '' \
	'rpc-call: -n and -m cannot be combined: every call needs its own message id' -- \
	"$BIN/rpc-call" -n 5 -m same example.echo
check "-n with -1 is a usage error" 2 '' \
	'rpc-call: -n and -1 cannot be combined: load mode makes calls' -- \
	"$BIN/rpc-call" -n 5 -1 example.echo

# -v: the status and the time of the call on stderr.
check "-v says the status, the time and the correlation id" 0 '{"v":1}' \
	'rpc-call: example.echo: OK in X ms (correlation_id C)' -- \
	bash -c "'$BIN/rpc-call' -v -o log.level=error example.echo '{\"v\":1}' 2> >(sed -E 's/ [0-9]+\.[0-9]+ ms/ X ms/; s/correlation_id [0-9a-f]{32}/correlation_id C/' | grep '^rpc-call' >&2)"

# -b: JSON lines in, JSON lines out, in order.
check "-b answers each line in order, errors included" 1 \
	'{"method":"example.echo","status":"OK","result":{"a":1}}
{"method":"example.fail","status":"NOT_FOUND","message":"no such"}
{"method":"line 3","status":"INVALID_ARGUMENT","message":"line 1, column 3: invalid token near '"'"'not'"'"'"}
{"method":"line 4","status":"INVALID_ARGUMENT","message":"expected {\"method\": \"SERVICE.NAME\", \"params\": ...}"}
{"method":"example.echo","status":"OK","result":{}}' '' -- \
	bash -c "printf '%s\n' '{\"method\":\"example.echo\",\"params\":{\"a\":1}}' \
	'{\"method\":\"example.fail\",\"params\":{\"code\":\"NOT_FOUND\",\"message\":\"no such\"}}' \
	'not json' '{\"params\":{}}' '{\"method\":\"example.echo\"}' | '$BIN/rpc-call' -b"
check "-b with a METHOD is a usage error" 2 '' "rpc-call: -b takes its calls from standard input: no METHOD, -n, -1 or -m
usage: rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-m MESSAGE_ID]
                [-j] [-T] [-1] [-v] [-n COUNT [-P IN_FLIGHT]] METHOD [PARAMS | - | @FILE]
       rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-j] [-T] [-v] -b
       rpc-call -h | -V" -- "$BIN/rpc-call" -b example.echo

summary
