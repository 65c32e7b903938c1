#!/usr/bin/env bash
# ab.sh BUILD_A BUILD_B MODE IN_FLIGHT THREADS: warren against warren, two
# builds (before and after a change) side by side on one private broker, for
# one configuration of the bench (MODE durable or transient, 100 B, prefetch
# 64): BENCH_REPS runs of each (5), alternating which goes first, and the
# medians of their calls/s and of the worker's CPU seconds per 1,000 calls
# (wcpu). BENCH_BATCH=off as for bench.sh. AB_ENV_A and AB_ENV_B: settings
# (NAME=VALUE ..., as env(1) takes them) for one side's worker and caller
# alone, to compare one build with itself under two settings. AB_MS: the
# measured window of each run (1000 ms). Prints:
#   MODE N in flight, T thread(s): A r1 r2... | B r1 r2... | medians A x B y
#   worker cpu s/1k calls: A c1 c2... | B c1 c2... | medians A x B y
# For example, to compare a commit with the working tree:
#   git worktree add /tmp/old COMMIT && make -C /tmp/old tests && make tests
#   tests/bench/ab.sh /tmp/old/build build transient 16 1
# or the reply cache's cost, off (A) against on (B):
#   AB_ENV_A=BENCH_REPLY_CACHE=0 tests/bench/ab.sh build build durable 128 1
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ne 5 ]; then
	echo "usage: ab.sh BUILD_A BUILD_B MODE IN_FLIGHT THREADS" >&2
	exit 2
fi
A=$1/tests/bench/bench_warren B=$2/tests/bench/bench_warren
MODE=$3 INFL=$4 THR=$5
REPS=${BENCH_REPS:-5}
MS=${AB_MS:-1000}
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

# run BIN ENV: "calls/s wcpu" of one measured window, ENV (words) set for
# both processes.
run() {
	local env
	read -r -a env <<<"$2"
	start_responder env ${env[@]+"${env[@]}"} "$1" worker "$WARREN_TEST_URL" "$THR" 64 ||
		{ echo "failed failed"; return; }
	line=$(env ${env[@]+"${env[@]}"} "$1" caller "$WARREN_TEST_URL" "$MODE" "$INFL" 100 "$MS" 250 \
		"$RESPONDER" 2>>"$DIR/caller.err" || true)
	stop_responder
	echo "$(val "$line" rate) $(val "$line" wcpu)"
}

median() { printf '%s\n' "$@" | sort -n | sed -n "$(((REPS + 1) / 2))p"; }

a=() b=() ac=() bc=()
# one SIDE: runs side A or B once, its figures appended to its lists.
one() {
	local r c
	if [ "$1" = A ]; then
		read -r r c <<<"$(run "$A" "${AB_ENV_A:-}")"
		a+=("$r") ac+=("$c")
	else
		read -r r c <<<"$(run "$B" "${AB_ENV_B:-}")"
		b+=("$r") bc+=("$c")
	fi
}
for i in $(seq 1 "$REPS"); do
	if [ $((i % 2)) = 0 ]; then
		one B
		one A
	else
		one A
		one B
	fi
done
echo "$MODE $INFL in flight, $THR thread(s): A ${a[*]} | B ${b[*]} |" \
	"medians A $(median "${a[@]}") B $(median "${b[@]}")"
echo "worker cpu s/1k calls: A ${ac[*]} | B ${bc[*]} |" \
	"medians A $(median "${ac[@]}") B $(median "${bc[@]}")"
