#!/usr/bin/env bash
# test_logs.sh: a worker at log.level=debug writes one logfmt line per
# request with its method, correlation id, status, duration and trace id;
# at the default level it writes none, and never a body.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
URL=${WARREN_TEST_URL:?run through scripts/run-tests.sh}
# shellcheck source=tests/lib/check.sh
. "$(dirname "$0")/../lib/check.sh"
tmp=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# serve LEVEL: example-service logging to $tmp/LEVEL.log
serve() {
	"$BIN/example-service" -o "broker.url=$URL" -o "log.level=$1" 2>"$tmp/$1.log" &
	pid=$!
	for _ in $(seq 1 100); do
		"$BIN/rpc-call" -o "broker.url=$URL" -t 0.5 example.sleep '{"ms":0}' >/dev/null 2>&1 && return
		sleep 0.1
	done
}

serve debug
corr=$("$BIN/rpc-call" -v -o "broker.url=$URL" example.echo '{"secret":"s3cr3t-body"}' 2>&1 >/dev/null |
	sed -n 's/.*(correlation_id \([0-9a-f]*\)).*/\1/p')
kill "$pid" && wait "$pid"
pid=
check "one line per request: method, correlation id, status, duration, trace id" 0 \
	"level=debug time=T prog=example-service msg=\"handled\" method=example.echo correlation_id=$corr status=OK duration_ms=D trace_id=X" '' -- \
	bash -c "grep 'correlation_id=$corr' '$tmp/debug.log' | sed -E 's/time=[^ ]+/time=T/; s/duration_ms=[0-9.]+/duration_ms=D/; s/trace_id=[0-9a-f]{32}/trace_id=X/'"
check "no body in the log, even at debug" 1 '' '' -- grep -q s3cr3t-body "$tmp/debug.log"

serve info
"$BIN/rpc-call" -o "broker.url=$URL" example.echo '{}' >/dev/null
kill "$pid" && wait "$pid"
pid=
check "none at the default level (info)" 1 '' '' -- grep -q 'msg="handled"' "$tmp/info.log"
summary
