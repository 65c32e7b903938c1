# shellcheck shell=bash
# lib.sh: sourced by fuzz.sh (make fuzz) and test_fuzz.sh (make check): the
# fuzz targets, their seeds, and one libFuzzer run reduced to its figures.
# Run from the top of the source tree.

# The packages that give clang and its libFuzzer runtime (scripts/deps.sh).
# shellcheck disable=SC2034 # used by test_fuzz.sh
FUZZ_PACKAGES="clang libclang-rt-14-dev"

# fuzz_names: one target name per line, from tests/fuzz/fuzz_NAME.c.
fuzz_names() {
	local f
	for f in tests/fuzz/fuzz_*.c; do
		f=${f#tests/fuzz/fuzz_}
		echo "${f%.c}"
	done
}

# fuzz_toolchain_missing: prints what is missing to build the fuzzers, if
# anything, and then succeeds.
fuzz_toolchain_missing() {
	local rt
	if ! command -v clang >/dev/null 2>&1; then
		echo "clang is not installed"
		return 0
	fi
	rt=$(clang --print-runtime-dir 2>/dev/null)
	if ! compgen -G "$rt/libclang_rt.fuzzer*.a" >/dev/null; then
		echo "clang has no libFuzzer runtime (libclang_rt.fuzzer in ${rt:-its runtime directory})"
		return 0
	fi
	return 1
}

# fuzz_inputs NAME: the committed inputs of a target, seeds then
# regressions, one path per line (README files excepted).
fuzz_inputs() {
	local f
	for f in "tests/fuzz/corpus/$1"/* "tests/fuzz/regressions/$1"/*; do
		case ${f##*/} in
		README*) ;;
		*) [ -f "$f" ] && echo "$f" ;;
		esac
	done
}

# fuzz_run BIN SECONDS CORPUS CRASHES LOG: fuzzes for SECONDS from the
# inputs in CORPUS, which receives the new ones; a crashing input is saved
# in CRASHES as NAME-crash-HASH (leak-, timeout-, oom- likewise) and ends
# the run. Sets FZ_EXECS, FZ_COV, FZ_FT, FZ_CORPUS (inputs in CORPUS
# afterwards), FZ_CRASHES (files this run saved in CRASHES), FZ_STATUS
# (libFuzzer's exit status) and FZ_LINE, all of them on one line.
# shellcheck disable=SC2034 # the FZ_ figures are for the caller
fuzz_run() {
	local bin=$1 seconds=$2 corpus=$3 crashes=$4 log=$5 name before stats
	name=$(basename "$bin")
	mkdir -p "$corpus" "$crashes"
	before=$(find "$crashes" -maxdepth 1 -name "$name-*" | wc -l)
	# -timeout: an input that takes 10 s is a hang; -rss_limit_mb caps a
	# decoder that believes a declared length.
	"$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$crashes/$name-" "$corpus" >"$log" 2>&1
	FZ_STATUS=$?
	# The last status line ("#N DONE cov: C ft: F corp: ..."), written
	# before a crash report too.
	stats=$(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
	FZ_EXECS=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	if [ -z "$FZ_EXECS" ]; then
		FZ_EXECS=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$stats")
	fi
	FZ_EXECS=${FZ_EXECS:-0}
	FZ_COV=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$stats")
	FZ_FT=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$stats")
	FZ_COV=${FZ_COV:-0}
	FZ_FT=${FZ_FT:-0}
	FZ_CORPUS=$(find "$corpus" -maxdepth 1 -type f | wc -l)
	FZ_CRASHES=$(($(find "$crashes" -maxdepth 1 -name "$name-*" | wc -l) - before))
	FZ_LINE=$(printf '%-14s %3ss: %9s execs, cov %4s, ft %5s, corpus %5s, crashes %s' \
		"$name" "$seconds" "$FZ_EXECS" "$FZ_COV" "$FZ_FT" "$FZ_CORPUS" "$FZ_CRASHES")
}

# fuzz_last_crash DIR NAME: the newest input DIR holds for fuzzer NAME.
fuzz_last_crash() {
	find "$1" -maxdepth 1 -name "$2-*" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 |
		cut -d' ' -f2-
}

# fuzz_report LOG: what a failed run left: the oracle's message or the
# sanitizer's report, up to its SUMMARY line, stacks included.
fuzz_report() {
	sed -n '/^fuzz oracle:\|^==[0-9]*== *ERROR\|runtime error:/,/^SUMMARY:/p' "$1" |
		sed 's/ (BuildId: [0-9a-f]*)//' | head -n 60
}
