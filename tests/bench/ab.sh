#!/usr/bin/env bash
# ab.sh BUILD_A BUILD_B MODE IN_FLIGHT THREADS: warren against warren, two
# builds (before and after a change) side by side on one private broker, for
# one configuration of the bench (MODE durable or transient, 100 B, prefetch
# 64): BENCH_REPS runs of each (5), alternating which goes first, and the
# medians of their calls/s. BENCH_BATCH=off as for bench.sh. Prints one line:
#   MODE N in flight, T thread(s): A r1 r2... | B r1 r2... | medians A x B y
# For example, to compare a commit with the working tree:
#   git worktree add /tmp/old COMMIT && make -C /tmp/old tests && make tests
#   tests/bench/ab.sh /tmp/old/build build transient 16 1
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ne 5 ]; then
	echo "usage: ab.sh BUILD_A BUILD_B MODE IN_FLIGHT THREADS" >&2
	exit 2
fi
A=$1/tests/bench/bench_warren B=$2/tests/bench/bench_warren
MODE=$3 INFL=$4 THR=$5
REPS=${BENCH_REPS:-5}
for bin in "$A" "$B"; do
	[ -x "$bin" ] || { echo "ab.sh: $bin: not built (make tests)" >&2; exit 2; }
done
DIR=$(mktemp -d /tmp/warren-ab.XXXXXX)
RESPONDER=
cleanup() {
	[ -n "$RESPONDER" ] && kill "$RESPONDER" 2>/dev/null
	"$ROOT/tests/lib/broker.sh" stop "$DIR" >/dev/null 2>&1
	rm -rf "$DIR"
}
trap cleanup EXIT
"$ROOT/tests/lib/broker.sh" start "$DIR" >/dev/null || exit 1
# shellcheck source=/dev/null
. "$DIR/env"
BENCH_BROKER_PID=$(cat "$DIR/rabbitmq.pid")
export BENCH_BROKER_PID
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

# run BIN: the calls/s of one measured window.
run() {
	start_responder "$1" worker "$WARREN_TEST_URL" "$THR" 64 || { echo failed; return; }
	line=$("$1" caller "$WARREN_TEST_URL" "$MODE" "$INFL" 100 1000 250 "$RESPONDER" \
		2>>"$DIR/caller.err" || true)
	stop_responder
	val "$line" rate
}

median() { printf '%s\n' "$@" | sort -n | sed -n "$(((REPS + 1) / 2))p"; }

a=() b=()
for i in $(seq 1 "$REPS"); do
	if [ $((i % 2)) = 0 ]; then
		b+=("$(run "$B")") a+=("$(run "$A")")
	else
		a+=("$(run "$A")") b+=("$(run "$B")")
	fi
done
echo "$MODE $INFL in flight, $THR thread(s): A ${a[*]} | B ${b[*]} |" \
	"medians A $(median "${a[@]}") B $(median "${b[@]}")"
