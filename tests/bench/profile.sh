#!/usr/bin/env bash
# profile.sh BUILD [OUT]: where the caller's and the worker's CPU goes, per
# call, for warren (BUILD/tests/bench/bench_warren) and the hand-written
# baseline (BUILD/tests/bench/baseline), on a private broker started here
# (tests/lib/broker.sh) and stopped whatever happens. BUILD may be the
# build directory of another checkout (an older commit's bench binaries):
# only its binaries are used, the broker comes from this checkout.
#
# Each configuration runs as bench.sh runs it (bench_warren worker URL 1
# PREFETCH; bench_warren caller URL MODE IN_FLIGHT PAYLOAD MS WARMUP PID;
# the baseline's responder and caller alike), with a longer window; once the
# warm-up is over, for PERF_S seconds, each process is watched by
#   perf stat -e task-clock,page-faults,context-switches,raw_syscalls:sys_enter,
#                syscalls:sys_enter_<each of SYSCALLS> -p PID
#   perf record -F PROFILE_FREQ (4999) -p PID   (no call graph: self shares only)
# and the counts are divided by the calls answered in that time (the
# caller's calls/s times the time perf watched). The bench line's own CPU
# figures (ccpu, wcpu, bcpu: CPU seconds per 1,000 calls of the caller, the
# worker and the broker over the measured window, from schedstat) are kept
# beside them.
#
# Configurations (PROFILE_CONFIGS, NAME:MODE:IN_FLIGHT:PAYLOAD:BATCH, BATCH
# on or off, which sets BENCH_BATCH for bench_warren; an old bench_warren
# without batching ignores it): by default
#   nobatch:durable:128:100:off  batch:durable:128:100:on
#   lat:durable:1:100:off        big:durable:128:65536:on
# PROFILE_SIDES (warren baseline), PROFILE_REPS (2: each configuration and
# side runs that many times, one after the other), PROFILE_MS (6000 ms
# measured), PROFILE_WARMUP_MS (800), PROFILE_PREFETCH (64).
#
# Prints, per run, one summary line and each process's top symbols by self
# share (perf report --no-children --sort dso,sym), with the shares of lock
# (mutex, condition variable, futex, user or kernel), allocator (malloc,
# free and their internals in libc) and page-fault handling (the kernel's
# fault path, page clearing and freeing) and of the kernel in all (on a
# virtual machine without a PMU, perf samples on cpu-clock and charges much
# of the kernel's time to the point where it enables interrupts again, such
# as pvm_irq_enable: the kernel's total is right, its split is not, which is
# why futex and other kernel work is counted by syscalls per call); OUT (a new directory under /tmp
# unless given) keeps the raw perf stat outputs and perf.data files.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:?usage: profile.sh BUILD [OUT]}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BIN=$BUILD/tests/bench
OUT=${2:-$(mktemp -d /tmp/warren-profile.XXXXXX)}
mkdir -p "$OUT"
MS=${PROFILE_MS:-6000}
WARMUP=${PROFILE_WARMUP_MS:-800}
REPS=${PROFILE_REPS:-2}
PREFETCH=${PROFILE_PREFETCH:-64}
read -r -a CONFIGS <<<"${PROFILE_CONFIGS:-nobatch:durable:128:100:off batch:durable:128:100:on lat:durable:1:100:off big:durable:128:65536:on}"
read -r -a SIDES <<<"${PROFILE_SIDES:-warren baseline}"
TOP=${PROFILE_TOP:-12}
FREQ=${PROFILE_FREQ:-4999}
# perf watches from 300 ms after the warm-up to 300 ms before the end.
PERF_MS=$((MS - 600))
SYSCALLS=(read write readv writev sendto recvfrom sendmsg recvmsg poll ppoll select pselect6
	epoll_wait epoll_pwait futex mmap munmap madvise brk mprotect nanosleep clock_nanosleep
	getrusage sched_yield ioctl)

for b in bench_warren baseline; do
	[ -x "$BIN/$b" ] || {
		echo "profile.sh: no $BIN/$b (make tests in that checkout first)" >&2
		exit 2
	}
done

DIR=$(mktemp -d /tmp/warren-profile-broker.XXXXXX)
RESPONDER=
CALLER=

cleanup() {
	local p
	for p in $CALLER $RESPONDER; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	"$ROOT/tests/lib/broker.sh" stop "$DIR" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ROOT/tests/lib/broker.sh" start "$DIR" >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
URL=$WARREN_TEST_URL
BENCH_BROKER_PID=$(cat "$DIR/rabbitmq.pid")
export BENCH_BROKER_PID

PROG=profile.sh
# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

# counts FILE EVENT: the count of EVENT in a perf stat -x, output (0 if none).
counts() {
	awk -F, -v e="$2" '$3 == e { print ($1 ~ /^[0-9.]+$/) ? $1 : 0; f = 1 } END { if (!f) print 0 }' "$1"
}

# shares PERF_DATA: "lock=x alloc=y fault=z" (percent of samples) and, in
# PERF_DATA.top, the TOP symbols by self share.
shares() {
	perf report -i "$1" --no-children --sort dso,sym --stdio -q 2>/dev/null |
		sed 's/^ *//' | awk 'NF >= 3 && $1 ~ /%$/' >"$1.all" || true
	head -n "$TOP" "$1.all" >"$1.top"
	awk '
		{ p = $1; sub(/%$/, "", p); dso = $2; sym = $0; sub(/^[^]]*\] /, "", sym) }
		dso ~ /kernel/ { kernel += p }
		sym ~ /futex|pthread_mutex|__lll_lock|lll_unlock|pthread_cond|__pthread_(mutex|cond)/ { lock += p; next }
		dso ~ /libc/ && sym ~ /malloc|free|_int_|calloc|realloc|tcache|sysmalloc|systrim|unlink_chunk|consolidate|arena/ { alloc += p; next }
		sym ~ /page_fault|handle_mm_fault|do_anonymous_page|clear_page|do_user_addr_fault|zap_pte|unmap_page_range|release_pages|free_unref|__alloc_pages|get_page_from_freelist|rmqueue|lru_|folio|__mem_cgroup_charge|memcg|do_madvise|__do_munmap|do_brk|vma_/ { fault += p; next }
		END { printf "lock=%.1f alloc=%.1f fault=%.1f kernel=%.1f", lock, alloc, fault, kernel }' "$1.all"
}

# profile_run SIDE NAME MODE N PAYLOAD BATCH REP
profile_run() {
	local side=$1 name=$2 mode=$3 n=$4 payload=$5 batch=$6 rep=$7
	local tag="$name-$side-$rep" line rate secs p sc=()
	local env=()
	for s in "${SYSCALLS[@]}"; do
		sc+=("syscalls:sys_enter_$s")
	done
	local events
	events="task-clock,page-faults,context-switches,raw_syscalls:sys_enter,$(
		IFS=,
		echo "${sc[*]}"
	)"
	if [ "$batch" = off ]; then env=(BENCH_BATCH=off); fi
	if [ "$side" = baseline ]; then
		start_responder "$BIN/baseline" responder "$URL" 1 "$PREFETCH" "$mode"
		"$BIN/baseline" caller "$URL" "$mode" "$n" "$payload" "$MS" "$WARMUP" "$RESPONDER" \
			>"$OUT/$tag.line" 2>"$OUT/$tag.err" &
	else
		start_responder env "${env[@]}" "$BIN/bench_warren" worker "$URL" 1 "$PREFETCH"
		env "${env[@]}" "$BIN/bench_warren" caller "$URL" "$mode" "$n" "$payload" "$MS" "$WARMUP" \
			"$RESPONDER" >"$OUT/$tag.line" 2>"$OUT/$tag.err" &
	fi
	CALLER=$!
	# The warm-up starts once the caller is connected: give that 300 ms.
	sleep "$(awk -v w="$WARMUP" 'BEGIN { print (w + 600) / 1000 }')"
	local perfs=()
	for p in caller worker; do
		local pid=$CALLER
		[ $p = worker ] && pid=$RESPONDER
		perf stat -x, -e "$events" -p "$pid" -o "$OUT/$tag.$p.stat" --timeout "$PERF_MS" \
			>/dev/null 2>&1 &
		perfs+=($!)
		perf record -q -F "$FREQ" -p "$pid" -o "$OUT/$tag.$p.data" -- sleep "$(awk -v m="$PERF_MS" 'BEGIN { print m / 1000 }')" \
			>/dev/null 2>&1 &
		perfs+=($!)
	done
	wait "$CALLER" || true
	CALLER=
	wait "${perfs[@]}" || true
	stop_responder
	line=$(cat "$OUT/$tag.line")
	rate=$(val "$line" rate)
	secs=$(awk -v m="$PERF_MS" 'BEGIN { print m / 1000 }')
	printf '%-8s %-8s rep %s: calls/s %s p50 %s ms; cpu s/1k calls: caller %s worker %s broker %s\n' \
		"$name" "$side" "$rep" "$rate" "$(val "$line" p50)" "$(val "$line" ccpu)" \
		"$(val "$line" wcpu)" "$(val "$line" bcpu)"
	for p in caller worker; do
		local st=$OUT/$tag.$p.stat calls
		calls=$(awk -v r="$rate" -v s="$secs" 'BEGIN { print r * s }')
		awk -v p="$p" -v c="$calls" \
			-v tc="$(counts "$st" task-clock)" -v pf="$(counts "$st" page-faults)" \
			-v cs="$(counts "$st" context-switches)" -v sy="$(counts "$st" raw_syscalls:sys_enter)" \
			-v sh="$(shares "$OUT/$tag.$p.data")" '
			BEGIN {
				if (c <= 0) { printf "  %s: no calls\n", p; exit }
				printf "  %-6s cpu %.3f s/1k calls (task-clock); per call: syscalls %.2f, page faults %.2f, context switches %.2f; self share %%: %s\n",
					p, tc / c, sy / c, pf / c, cs / c, sh
			}'
		awk -F, -v c="$calls" '$3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
				n = $3; sub(/^syscalls:sys_enter_/, "", n); printf "%s %.2f\n", n, $1 / c }' "$st" |
			sort -k2 -rn | head -n 6 | awk '{ s = s sep $1 " " $2; sep = ", " } END { print "         syscalls per call: " s }'
		sed 's/^/         /' "$OUT/$tag.$p.data.top"
	done
}

echo "profile.sh: $BIN, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; ${MS} ms measured after ${WARMUP} ms,"
echo "perf over ${PERF_MS} ms of it; 1 handler thread (baseline: 1 responder thread), prefetch $PREFETCH; $REPS runs each"
for cfg in "${CONFIGS[@]}"; do
	IFS=: read -r name mode n payload batch <<<"$cfg"
	echo
	echo "== $name: $mode, $n in flight, $payload B, batching $batch"
	for rep in $(seq 1 "$REPS"); do
		for side in "${SIDES[@]}"; do
			if [ "$side" = baseline ] && [ "$name" = batch ]; then
				continue # the baseline has no batching: its row is the nobatch one
			fi
			profile_run "$side" "$name" "$mode" "$n" "$payload" "$batch" "$rep"
		done
	done
done
echo
echo "profile.sh: raw outputs in $OUT"
