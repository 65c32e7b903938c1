#!/usr/bin/env bash
# test_fuzz.sh: the fuzzers' part of make check. Every committed input
# (tests/fuzz/corpus/NAME and tests/fuzz/regressions/NAME) is replayed
# through its fuzzer, then each fuzzer runs FUZZ_SMOKE_SECONDS (default 20)
# from a fresh copy of those inputs. Builds nothing: make tests built the
# fuzzers in $WARREN_BUILD/fuzz when clang and libFuzzer were installed, and
# their absence is a failure, not a skip.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh
# shellcheck source=tests/fuzz/lib.sh
. tests/fuzz/lib.sh

BUILD=${WARREN_BUILD:-build}
DIR=$BUILD/fuzz
SMOKE=${FUZZ_SMOKE_SECONDS:-20}

missing=$(fuzz_toolchain_missing)
if [ -n "$missing" ]; then
	flunk "fuzzers: $missing" "install them with: apt-get install -y $FUZZ_PACKAGES (make check does, as root), then make tests"
	summary
	exit
fi

mkdir -p "$DIR/logs"
for name in $(fuzz_names); do
	bin=$DIR/fuzz_$name
	if [ ! -x "$bin" ]; then
		flunk "fuzz_$name: not built" "$bin is missing: make BUILD=$BUILD tests"
		continue
	fi
	mapfile -t inputs < <(fuzz_inputs "$name")
	log=$DIR/logs/$name.replay.log
	# Without files to run, libFuzzer would fuzz for ever.
	if [ ${#inputs[@]} -eq 0 ]; then
		flunk "fuzz_$name: no seeds in tests/fuzz/corpus/$name"
		continue
	fi
	if "$bin" "${inputs[@]}" >"$log" 2>&1; then
		pass "fuzz_$name replays its ${#inputs[@]} committed inputs"
	else
		flunk "fuzz_$name: a committed input fails (log: $log)" "$(fuzz_report "$log")"
	fi

	corpus=$DIR/smoke/$name
	rm -rf "$corpus"
	mkdir -p "$corpus"
	cp "${inputs[@]}" "$corpus/"
	log=$DIR/logs/$name.smoke.log
	fuzz_run "$bin" "$SMOKE" "$corpus" "$DIR/crashes" "$log"
	if [ "$FZ_STATUS" -eq 0 ] && [ "$FZ_CRASHES" -eq 0 ] && [ "$FZ_EXECS" -gt 0 ]; then
		pass "$FZ_LINE"
	else
		flunk "$FZ_LINE (exit status $FZ_STATUS, log: $log)" \
			"input: $(fuzz_last_crash "$DIR/crashes" "fuzz_$name")
add it to tests/fuzz/regressions/$name/ so that make check replays it
$(fuzz_report "$log")"
	fi
done
summary
