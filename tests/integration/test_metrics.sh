#!/usr/bin/env bash
# test_metrics.sh: a worker's Prometheus endpoint (metrics.listen) after a known
# load: exact request counts by method and status, the duration histogram,
# dead letters by reason, 404 elsewhere, and a bad metrics.listen refused as a
# configuration error. The scrape is printed for the log.
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

if ! command -v curl >/dev/null; then
	flunk "curl is installed (scripts/deps.sh)"
	summary
	exit
fi

# shellcheck source=tests/lib/ports.sh
. "$(dirname "$0")/../lib/ports.sh"

port=$(free_port) || { flunk "found a free port"; summary; exit; }
base=http://127.0.0.1:$port
# No start-up probe call: the worker is ready once its metrics say it is
# connected (its queue declared and bound), so every count below comes from
# this test's own calls.
"$BIN/example-service" -o "broker.url=$URL" -o log.level=warn \
	-o "metrics.listen=127.0.0.1:$port" &
worker_pid=$!
up=
for _ in $(seq 1 100); do
	curl -sf "$base/metrics" 2>/dev/null |
		grep -qx 'warren_worker_connected{service="example"} 1' && up=1 && break
	sleep 0.1
done
if [ -z "$up" ]; then
	flunk "example-service serves $base/metrics"
	summary
	exit
fi

check "200 echo calls all answer OK" 0 'outcomes: 200 OK' '' -- \
	bash -c "'$BIN/rpc-call' -n 200 -P 8 example.echo | grep '^outcomes'"
check "20 failing calls answer NOT_FOUND" 0 'outcomes: 20 NOT_FOUND' '' -- \
	bash -c "'$BIN/rpc-call' -n 20 -P 4 example.fail '{\"code\":\"NOT_FOUND\",\"message\":\"x\"}' |
		grep '^outcomes'"
check "an unknown method is dead-lettered" 1 '' \
	'rpc-call: example.nope: UNIMPLEMENTED: unknown method example.nope' -- \
	"$BIN/rpc-call" example.nope

curl -s -D "$tmp/headers" -o "$tmp/scrape" "$base/metrics"
echo "# scrape of $base/metrics after the run:"
sed 's/^/#   /' "$tmp/scrape"

# metric NAME{LABELS}: its value in the scrape ("" when absent).
metric() {
	awk -v k="$1" '$1 == k { print $2 }' "$tmp/scrape"
}
svc='service="example"'
check "requests_total counts the echo calls" 0 200 '' -- \
	metric "warren_worker_requests_total{$svc,method=\"example.echo\",status=\"OK\"}"
check "requests_total counts the failures by status" 0 20 '' -- \
	metric "warren_worker_requests_total{$svc,method=\"example.fail\",status=\"NOT_FOUND\"}"
check "no other method or status was answered" 0 2 '' -- \
	bash -c "grep -c '^warren_worker_requests_total{' '$tmp/scrape'"
check "the echo histogram counts every echo call" 0 200 '' -- \
	metric "warren_worker_request_duration_seconds_count{$svc,method=\"example.echo\"}"
check "its +Inf bucket holds them all" 0 200 '' -- \
	metric "warren_worker_request_duration_seconds_bucket{$svc,method=\"example.echo\",le=\"+Inf\"}"
check "the fail histogram counts every failure" 0 20 '' -- \
	metric "warren_worker_request_duration_seconds_count{$svc,method=\"example.fail\"}"
check "dead letters by reason: one unknown method" 0 1 '' -- \
	metric "warren_worker_dead_letters_total{$svc,reason=\"unknown-method\"}"
check "dead_lettered_total agrees" 0 1 '' -- metric "warren_worker_dead_lettered_total{$svc}"
check "received_total counts every delivery" 0 221 '' -- metric "warren_worker_received_total{$svc}"
check "acked_total counts every delivery" 0 221 '' -- metric "warren_worker_acked_total{$svc}"
check "the worker is connected" 0 1 '' -- metric "warren_worker_connected{$svc}"
check "nothing is in flight" 0 0 '' -- metric "warren_worker_in_flight{$svc}"
check "the breaker is closed" 0 0 '' -- metric "warren_worker_breaker_open{$svc}"
check "nothing was redelivered" 0 0 '' -- metric "warren_worker_redelivered_total{$svc}"
check "the broker never blocked the worker" 0 0 '' -- metric "warren_worker_blocked_seconds_total{$svc}"
check "the reply cache holds the 220 answered calls (the dead letter is not kept)" 0 220 '' -- \
	metric "warren_worker_reply_cache_entries{$svc}"
check "no request was answered from it yet" 0 0 '' -- \
	metric "warren_worker_reply_cache_hits_total{$svc}"
# The same call twice (rpc-call -m: one message id): the second copy is
# answered from the cache, its handler not run.
check "a call with a message id of its own answers OK" 0 '{"n":1}' '' -- \
	"$BIN/rpc-call" -m metrics-repeat example.echo '{"n":1}'
check "the same call again answers the same" 0 '{"n":1}' '' -- \
	"$BIN/rpc-call" -m metrics-repeat example.echo '{"n":1}'
curl -s -o "$tmp/scrape" "$base/metrics"
check "the repeat was a hit" 0 1 '' -- metric "warren_worker_reply_cache_hits_total{$svc}"
check "the echo handler ran once for both copies" 0 201 '' -- \
	metric "warren_worker_requests_total{$svc,method=\"example.echo\",status=\"OK\"}"
check "the cache holds one more reply" 0 221 '' -- metric "warren_worker_reply_cache_entries{$svc}"
check "the content type is the text format 0.0.4" 0 \
	'Content-Type: text/plain; version=0.0.4; charset=utf-8' '' -- \
	bash -c "grep -i '^content-type:' '$tmp/headers' | tr -d '\r'"
check "another path is 404" 0 404 '' -- \
	curl -s -o /dev/null -w '%{http_code}' "$base/other"
check "a second worker cannot take the same address, and exits 4 (unavailable)" 4 \
	"metrics.listen: cannot listen on 127.0.0.1:$port: Address already in use" '' -- \
	bash -c "'$BIN/example-service' -o 'broker.url=$URL' -o 'metrics.listen=127.0.0.1:$port' \
		2>&1 | grep -o 'metrics.listen: cannot listen on [^\"]*'; exit \${PIPESTATUS[0]}"

check "metrics.listen without a port is a config error" 3 '' \
	'example-service: metrics.listen: "nohost" is not HOST:PORT' -- \
	"$BIN/example-service" -o "broker.url=$URL" -o metrics.listen=nohost
check "metrics.listen with a port out of range is a config error" 3 '' \
	'example-service: metrics.listen: "127.0.0.1:70000": the port must be 1 to 65535' -- \
	"$BIN/example-service" -o "broker.url=$URL" -o metrics.listen=127.0.0.1:70000

summary
