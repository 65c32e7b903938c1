#!/usr/bin/env bash
# demo.sh: warren end to end on this machine: a private RabbitMQ node with the
# topology of rabbitmq/definitions.json, a worker daemon, calls made with
# rpc-call (results and errors), then a clean shutdown of everything.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/$BUILD/bin
DIR=$(mktemp -d /tmp/warren-demo.XXXXXX)
chmod 755 "$DIR"
worker_pid=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || printf '(exit status %d)\n' "$?"; }

cleanup() {
	if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
		kill -TERM "$worker_pid"
		wait "$worker_pid" || true
	fi
	"$ROOT/tests/lib/broker.sh" stop "$DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "starting a private RabbitMQ node and importing rabbitmq/definitions.json"
"$ROOT/tests/lib/broker.sh" start "$DIR"
# shellcheck disable=SC1091
. "$DIR/env"
export WARREN_URL=$WARREN_TEST_URL
echo "broker: $WARREN_URL"

say "starting the example worker (4 handler threads)"
"$BIN/example-service" -o "broker.url=$WARREN_URL" -o worker.threads=4 &
worker_pid=$!
for _ in $(seq 1 100); do
	"$BIN/rpc-call" -t 0.5 example.echo >/dev/null 2>&1 && break
	sleep 0.1
done

say "calls that succeed"
run "$BIN/rpc-call" example.echo '{"user": 42, "name": "Ada", "tags": ["admin"]}'
run "$BIN/rpc-call" -j example.sleep '{"ms": 200}'

say "a service error comes back as its status (exit 1)"
run "$BIN/rpc-call" example.fail '{"code": "NOT_FOUND", "message": "no user 42"}'
say "an unknown method (UNIMPLEMENTED, exit 1; the request is dead-lettered)"
run "$BIN/rpc-call" example.frobnicate '{}'
say "a method no service serves fails at once (exit 4)"
run "$BIN/rpc-call" billing.charge '{"amount": 10}'
say "a call that outlives its deadline (exit 5)"
run "$BIN/rpc-call" -t 0.5 example.sleep '{"ms": 3000}'

say "stopping the worker with SIGTERM (finishes in-flight calls, then exits 0)"
kill -TERM "$worker_pid"
wait "$worker_pid" && echo "example-service exited 0"
worker_pid=

say "dead-letter queue after the demo"
"$ROOT/tests/lib/broker.sh" ctl "$DIR" list_queues name type messages | grep -E '^(name|rpc\.)' || true

say "stopping the broker"
