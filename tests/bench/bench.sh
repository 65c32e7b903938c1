#!/usr/bin/env bash
# bench.sh BUILD: warren against a hand-written rabbitmq-c baseline
# (tests/bench/baseline.c), side by side on a private broker started here
# (tests/lib/broker.sh) and stopped whatever happens. For each
# configuration the baseline and warren run back to back with the same
# payload, calls in flight, handler threads and prefetch; the caller
# measures calls/s, exact latency percentiles, the CPU time of both
# processes (/proc/PID/task/*/schedstat) and their RSS over a fixed window.
#
# Environment: BENCH_MS (measured window per run, 1000), BENCH_WARMUP_MS
# (250), BENCH_REPS and BENCH_TARGET_MS (the rows at 1 and 128 in flight,
# which the targets judge, run 3 alternating pairs of 600 ms and keep each
# side's median), BENCH_PREFETCH (unacked requests a worker pool may hold,
# in all, both sides: 64), BENCH_FULL=1 to run the transient mode on the
# whole matrix rather than at 1 and 128 in flight; BENCH_QUICK=1 for a
# small smoke test of this script.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/tests/bench
MS=${BENCH_MS:-1000}
WARMUP=${BENCH_WARMUP_MS:-250}
PREFETCH=${BENCH_PREFETCH:-64}
FULL=${BENCH_FULL:-0}
# The rows the targets judge (1 and 128 in flight): REPS alternating
# pairs of TARGET_MS each, each side's median kept (the machine is shared).
REPS=${BENCH_REPS:-3}
TARGET_MS=${BENCH_TARGET_MS:-600}
B=
W=
INFLIGHTS=(1 16 128)
PAYLOADS=(100 4096 65536)
THREADS=(1 4)
SCALE=(1 1000 10000 100000)
LINE=
if [ "${BENCH_QUICK:-0}" = 1 ]; then # a smoke test of this script
	INFLIGHTS=(1 128)
	PAYLOADS=(100)
	THREADS=(4)
	SCALE=(1 1000)
fi

DIR=$(mktemp -d /tmp/warren-bench.XXXXXX)
RESPONDER=
RESULTS=$DIR/results.tsv

cleanup() {
	if [ -n "$RESPONDER" ]; then
		kill "$RESPONDER" 2>/dev/null || true
		wait "$RESPONDER" 2>/dev/null || true
	fi
	"$ROOT/tests/lib/broker.sh" stop "$DIR" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
"$ROOT/tests/lib/broker.sh" start "$DIR" >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
URL=$WARREN_TEST_URL
# The callers also read the broker's CPU time (benchlib.c).
BENCH_BROKER_PID=$(cat "$DIR/rabbitmq.pid")
export BENCH_BROKER_PID

# Keys for the signing runs: the caller is "app", the worker "svc".
for scheme in mac ed25519; do
	mkdir -p "$DIR/keys/$scheme/app-ring" "$DIR/keys/$scheme/svc-ring"
	"$BUILD/bin/warren-key" generate "$scheme" app "$DIR/keys/$scheme" >/dev/null
	"$BUILD/bin/warren-key" generate "$scheme" svc "$DIR/keys/$scheme" >/dev/null
	cp -p "$DIR/keys/$scheme/svc.key" "$DIR/keys/$scheme/app-ring/"
	cp -p "$DIR/keys/$scheme/app.key" "$DIR/keys/$scheme/svc-ring/"
done

PROG=bench.sh
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

# run baseline|warren MODE IN_FLIGHT PAYLOAD THREADS [PREFETCH [SCHEME]]:
# one measured run; its result line in LINE (not a subshell: RESPONDER must
# stay visible to cleanup).
run() {
	local kind=$1 mode=$2 n=$3 payload=$4 threads=$5 prefetch=${6:-$PREFETCH} scheme=${7:-none}
	local sign=() line
	if [ "$scheme" != none ]; then
		sign=("$scheme" "$DIR/keys")
	fi
	if [ "$kind" = baseline ]; then
		start_responder "$BIN/baseline" responder "$URL" "$threads" "$prefetch" "$mode"
		line=$("$BIN/baseline" caller "$URL" "$mode" "$n" "$payload" "$MS" "$WARMUP" \
			"$RESPONDER" 2>>"$DIR/caller.err" || true)
	else
		start_responder "$BIN/bench_warren" worker "$URL" "$threads" "$prefetch" "${sign[@]}"
		line=$("$BIN/bench_warren" caller "$URL" "$mode" "$n" "$payload" "$MS" "$WARMUP" \
			"$RESPONDER" "${sign[@]}" 2>>"$DIR/caller.err" || true)
	fi
	stop_responder
	LINE=${line:-failed}
}

# The line of the median run by calls/s among the lines given.
median_line() {
	printf '%s\n' "$@" | awk '{ r = 0; for (i = 1; i <= NF; i++) if ($i ~ /^rate=/) r = substr($i, 6) + 0; print r "\t" $0 }' |
		sort -n | awk -v n="$#" 'NR == int((n + 1) / 2) { sub(/^[^\t]*\t/, ""); print }'
}

# pair MODE N PAYLOAD THREADS: baseline and warren back to back; REPS
# alternating pairs (B W B W ...) where the targets are judged (1 and 128
# in flight), keeping each side's median run. Sets B and W.
pair() {
	local mode=$1 n=$2 payload=$3 threads=$4 reps=1 ms=$MS bl=() wl=()
	if [ "$n" = 1 ] || [ "$n" = 128 ] || { [ "$mode" = transient ] && [ "$n" = 16 ]; }; then
		reps=$REPS
		ms=$TARGET_MS
	fi
	for _ in $(seq 1 "$reps"); do
		# Transient calls take warren's fast lane: the baseline's
		# yardstick is then its own caller and responder on a classic queue.
		if [ "$mode" = transient ]; then
			BASELINE_CLASSIC=1 MS=$ms run baseline "$mode" "$n" "$payload" "$threads"
		else
			MS=$ms run baseline "$mode" "$n" "$payload" "$threads"
		fi
		bl+=("$LINE")
		MS=$ms run warren "$mode" "$n" "$payload" "$threads"
		wl+=("$LINE")
	done
	B=$(median_line "${bl[@]}")
	W=$(median_line "${wl[@]}")
}

fmt_row() { # MODE N PAYLOAD THREADS BASE_LINE WARREN_LINE
	local b=$5 w=$6
	awk -v mode="$1" -v n="$2" -v pl="$3" -v thr="$4" \
		-v br="$(val "$b" rate)" -v wr="$(val "$w" rate)" \
		-v b50="$(val "$b" p50)" -v w50="$(val "$w" p50)" \
		-v b99="$(val "$b" p99)" -v w99="$(val "$w" p99)" \
		-v b999="$(val "$b" p999)" -v w999="$(val "$w" p999)" \
		-v bcc="$(val "$b" ccpu)" -v wcc="$(val "$w" ccpu)" \
		-v bwc="$(val "$b" wcpu)" -v wwc="$(val "$w" wcpu)" \
		-v bbc="$(val "$b" bcpu)" -v wbc="$(val "$w" bcpu)" \
		-v bcr="$(val "$b" crss)" -v wcr="$(val "$w" crss)" \
		-v bwr="$(val "$b" wrss)" -v wwr="$(val "$w" wrss)" \
		-v be="$(val "$b" errors)" -v we="$(val "$w" errors)" '
		function r(x, y) { return (y > 0) ? sprintf("%.2f", x / y) : "-" }
		BEGIN {
			printf "%-9s %5s %6s %3s | %7.0f %7.0f %5s | %6.2f %6.2f %5s | %6.2f %6.2f | %6.2f %6.2f | %6.3f %6.3f | %6.3f %6.3f | %6.3f %6.3f | %5.1f %5.1f | %5.1f %5.1f%s\n",
				mode, n, pl, thr, br, wr, r(wr, br), b50, w50, r(w50, b50), b99, w99, b999, w999,
				bcc, wcc, bwc, wwc, bbc, wbc, bcr / 1024, wcr / 1024, bwr / 1024, wwr / 1024,
				(be + we > 0) ? sprintf("  errors %d/%d", be, we) : ""
		}'
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(val "$b" rate)/$(val "$b" p50)" \
		"$(val "$w" rate)/$(val "$w" p50)" >>"$RESULTS"
}

header() {
	printf '%-9s %5s %6s %3s | %-21s | %-20s | %-13s | %-13s | %-13s | %-13s | %-13s | %-11s | %-11s\n' \
		mode "in-fl" "bytes" thr "calls/s base warren w/b" "p50 ms base warren w/b" \
		"p99 ms b   w" "p99.9 ms b w" "caller cpu" "worker cpu" "broker cpu" "caller MB" "worker MB"
}

echo "warren benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null)"
echo "Each run: ${WARMUP} ms warm-up, then ${MS} ms measured; baseline then warren back to back."
echo "At 1 and 128 in flight (the rows the targets judge): $REPS alternating pairs of ${TARGET_MS} ms,"
echo "each side's median run (by calls/s) shown: the machine is shared, single runs are noisy."
echo "Both sides: queue rpc.bench (quorum, durable) behind exchange rpc, direct reply-to,"
echo "prefetch $PREFETCH unacked requests per worker pool (baseline: split over its THREADS"
echo "connections, one consumer thread each; warren: one channel feeding THREADS handler threads)."
echo "durable: persistent requests, publisher confirms, ack after the reply is confirmed;"
echo "transient: delivery_mode 1 on the fast lane (exchange rpc.fast, classic queue rpc.bench.fast),"
echo "both sides (the baseline then drops confirms; warren keeps them)."
echo "warren runs with batching on both hops (its default; warren(7) BATCHES): the calls queued in"
echo "one turn of its I/O thread go as one message; the rows \"no-batch\" below turn it off."
if [ "$FULL" = 1 ]; then
	echo "Transient mode: the whole matrix."
else
	echo "Transient mode: 100 B only, to stay under five minutes; BENCH_FULL=1 for all payloads."
fi
echo "cpu: CPU seconds per 1,000 calls of the caller, the worker and the broker (RabbitMQ's own"
echo "work for each call; 2 cores in all bound the throughput). MB: RSS at the window's end."
echo "w/b: warren / baseline."
echo
header
for mode in durable transient; do
	for n in "${INFLIGHTS[@]}"; do
		for payload in "${PAYLOADS[@]}"; do
			if [ "$mode" = transient ] && [ "$FULL" != 1 ] && [ "$payload" != 100 ]; then
				continue
			fi
			for threads in "${THREADS[@]}"; do
				pair "$mode" "$n" "$payload" "$threads"
				fmt_row "$mode" "$n" "$payload" "$threads" "$B" "$W"
			done
		done
	done
done

echo
echo "Batching off on both hops (rows above: on, the default; here BENCH_BATCH=off, that is"
echo "client.batch empty and client.batch_replies false), durable, 128 in flight, 100 B:"
header
for threads in 1 4; do
	BENCH_BATCH=off pair durable 128 100 "$threads"
	fmt_row no-batch 128 100 "$threads" "$B" "$W"
done

echo
echo "bench.echo on the handler threads (rows above: on the worker's I/O thread, registered with"
echo "warren_worker_handle_inline; here BENCH_INLINE=off, warren_worker_handle), durable, 100 B:"
header
for row in "128 1" "128 4" "1 1"; do
	read -r n threads <<<"$row"
	BENCH_INLINE=off pair durable "$n" 100 "$threads"
	fmt_row threads "$n" 100 "$threads" "$B" "$W"
done

echo
echo "Signing (warren only, durable, 128 in flight, 100 B, 4 handler threads; $REPS rounds of"
echo "none, mac, ed25519, then each with its bodies encrypted (+enc, security.encrypt), back to"
echo "back, ${TARGET_MS} ms each, each scheme's median run):"
printf '%-11s | %7s %5s | %6s %6s | %-10s | %-10s\n' scheme "calls/s" "/none" "p50" "p99" "caller cpu" "worker cpu"
declare -A sig_runs=()
for _ in $(seq 1 "$REPS"); do
	for scheme in none mac ed25519 mac+enc ed25519+enc; do
		MS=$TARGET_MS run warren durable 128 100 4 "$PREFETCH" "$scheme"
		sig_runs[$scheme]+="$LINE"$'\n'
	done
done
none_rate=
for scheme in none mac ed25519 mac+enc ed25519+enc; do
	mapfile -t lines < <(printf '%s' "${sig_runs[$scheme]}")
	l=$(median_line "${lines[@]}")
	rate=$(val "$l" rate)
	none_rate=${none_rate:-$rate}
	awk -v s="$scheme" -v r="$rate" -v n="$none_rate" -v p50="$(val "$l" p50)" -v p99="$(val "$l" p99)" \
		-v cc="$(val "$l" ccpu)" -v wc="$(val "$l" wcpu)" -v e="$(val "$l" errors)" \
		'BEGIN { printf "%-11s | %7.0f %5.2f | %6.2f %6.2f | %10.3f | %10.3f%s\n", s, r, (n > 0) ? r / n : 0, p50, p99, cc, wc, (e > 0) ? "  errors " e : "" }'
done

echo
echo "warren's default prefetch (worker.prefetch 0: 128, or the threads if more) against 64 and 256,"
echo "durable, 128 in flight, 100 B, $REPS alternating rounds of ${TARGET_MS} ms, medians; the default"
echo "was chosen to reach >= 0.90 of the best (warren.conf(5), worker.prefetch):"
for threads in 1 4; do
	declare -A pf_runs=()
	for _ in $(seq 1 "$REPS"); do
		for pf in 0 64 256; do
			MS=$TARGET_MS run warren durable 128 100 "$threads" "$pf"
			pf_runs[$pf]+="$LINE"$'\n'
		done
	done
	best=0
	declare -A pf_rate=()
	for pf in 0 64 256; do
		mapfile -t lines < <(printf '%s' "${pf_runs[$pf]}")
		l=$(median_line "${lines[@]}")
		pf_rate[$pf]=$(val "$l" rate)
		awk -v r="${pf_rate[$pf]}" -v b="$best" 'BEGIN { exit !(r + 0 > b + 0) }' && best=${pf_rate[$pf]}
	done
	awk -v t="$threads" -v d="${pf_rate[0]}" -v a="${pf_rate[64]}" -v c="${pf_rate[256]}" -v b="$best" \
		'BEGIN { printf "  %s thread(s): default %s calls/s, prefetch 64 %s, 256 %s; default/best %.2f (target >= 0.90): %s\n", t, d, a, c, (b > 0) ? d / b : 0, (b > 0 && d / b >= 0.9) ? "met" : "not met" }'
	unset pf_runs pf_rate
done

echo
echo "What the wire contract costs the broker: the baseline as above, and with the properties and"
echo "headers of warren's requests and replies (BASELINE_WIRE: type, message_id, app_id, timestamp,"
echo "content_type, rpc-deadline, rpc-attempt, traceparent; rpc-status), durable, 128 in flight,"
echo "100 B, 1 thread, $REPS alternating pairs, medians:"
bl=()
wl=()
for _ in $(seq 1 "$REPS"); do
	MS=$TARGET_MS run baseline durable 128 100 1
	bl+=("$LINE")
	BASELINE_WIRE=1 MS=$TARGET_MS run baseline durable 128 100 1
	wl+=("$LINE")
done
for v in plain wire; do
	if [ $v = plain ]; then l=$(median_line "${bl[@]}"); else l=$(median_line "${wl[@]}"); fi
	echo "  baseline $v: $(val "$l" rate) calls/s, p50 $(val "$l" p50) ms, broker cpu $(val "$l" bcpu) s/1k calls"
done

echo
echo "Caller scaling (warren, transient, 100 B): the calls first wait with no worker consuming"
echo "(memory held per call in flight, once the broker has confirmed the requests), then a"
echo "worker starts and calls go on, IN_FLIGHT at a time, until CALLS are answered. heap: bytes"
echo "the allocator still holds per call (mallinfo2); RSS: resident growth per call, which also keeps"
echo "what the calls held until their confirm (request body, publish state) and freed since."
printf '%8s %7s | %-15s | %-12s | %-12s\n' in-fl calls "cpu us/call" "heap B/call" "RSS B/call"
echo "(at 1 in flight the memory columns measure one call: the first call's one-time allocations"
echo "and a whole page; the CPU there is that of sequential calls, a wake-up per call)"
for n in "${SCALE[@]}"; do
	total=20000
	[ "$n" = 1 ] && total=2000
	[ "$n" -gt "$total" ] && total=$n
	l=$("$BIN/bench_warren" scale "$URL" "$n" 100 "$total" 2>>"$DIR/caller.err" || echo failed)
	printf '%8s %7s | %15s | %12s | %12s%s\n' "$n" "$(val "$l" calls)" "$(val "$l" cpu_us)" \
		"$(val "$l" heap_b)" "$(val "$l" rss_b)" \
		"$([ "$(val "$l" errors)" = 0 ] || echo "  errors $(val "$l" errors)")"
done

echo
echo "Targets (issue 14):"
awk -F'\t' '
	function pass(ok) { return ok ? "met" : "not met" }
	function row(what, r, op, t) {
		if (r == "") { printf "  %-62s: no row\n", what; return }
		printf "  %-62s %5.2f (target %s %.2f): %s\n", what ":", r, op, t, pass(op == ">=" ? r >= t : r <= t)
	}
	{ split($5, b, "/"); split($6, w, "/"); k = $1 " " $2 " " $3 " " $4
	  tp[k] = (b[1] > 0) ? w[1] / b[1] : ""; lat[k] = (b[2] > 0) ? w[2] / b[2] : "" }
	END {
		row("durable 100 B, 128 in flight, 1 thread, batching on: calls/s w/b", tp["durable 128 100 1"], ">=", 2.0)
		row("durable 100 B, 128 in flight, 4 threads, batching on: calls/s w/b", tp["durable 128 100 4"], ">=", 2.0)
		row("durable 100 B, 128 in flight, 1 thread, batching off: calls/s w/b", tp["no-batch 128 100 1"], ">=", 0.95)
		row("durable 100 B, 128 in flight, 4 threads, batching off: calls/s w/b", tp["no-batch 128 100 4"], ">=", 0.95)
		row("durable 100 B, 1 in flight, 1 thread: p50 w/b", lat["durable 1 100 1"], "<=", 1.05)
		row("durable 100 B, 1 in flight, 4 threads: p50 w/b", lat["durable 1 100 4"], "<=", 1.05)
		row("transient (fast lane) 100 B, 16 in flight, 1 thread: calls/s w/b", tp["transient 16 100 1"], ">=", 1.0)
		row("transient (fast lane) 100 B, 128 in flight, 1 thread: calls/s w/b", tp["transient 128 100 1"], ">=", 1.0)
		row("transient (fast lane) 100 B, 1 in flight, 1 thread: p50 w/b", lat["transient 1 100 1"], "<=", 1.1)
		row("durable 64 KiB, 128 in flight, 1 thread: calls/s w/b", tp["durable 128 65536 1"], ">=", 0.9)
		row("durable 64 KiB, 128 in flight, 4 threads: calls/s w/b", tp["durable 128 65536 4"], ">=", 0.9)
	}' "$RESULTS"
echo
echo "bench.sh: done in $(($(date +%s) - started)) s"
