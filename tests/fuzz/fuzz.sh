#!/usr/bin/env bash
# fuzz.sh: make fuzz. Runs every fuzzer built in DIR for SECONDS each, from
# DIR/corpus/NAME (the committed seeds and regressions copied in, plus what
# earlier runs found there), and prints its figures. Crashing inputs are
# saved in DIR/crashes; the exit status is non-zero when there is one.
#   fuzz.sh DIR SECONDS
set -uo pipefail

DIR=${1:?usage: fuzz.sh DIR SECONDS}
SECONDS_EACH=${2:?usage: fuzz.sh DIR SECONDS}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/fuzz/lib.sh
. tests/fuzz/lib.sh

status=0
mkdir -p "$DIR/logs"
for name in $(fuzz_names); do
	corpus=$DIR/corpus/$name
	mkdir -p "$corpus"
	fuzz_inputs "$name" | while read -r f; do cp -n "$f" "$corpus/"; done
	fuzz_run "$DIR/fuzz_$name" "$SECONDS_EACH" "$corpus" "$DIR/crashes" "$DIR/logs/$name.log"
	echo "$FZ_LINE"
	if [ "$FZ_CRASHES" -gt 0 ] || [ "$FZ_STATUS" -ne 0 ]; then
		status=1
		echo "  failed (exit status $FZ_STATUS); log: $DIR/logs/$name.log; input:" \
			"$(fuzz_last_crash "$DIR/crashes" "fuzz_$name")"
		fuzz_report "$DIR/logs/$name.log" | sed 's/^/    | /'
	fi
done
exit "$status"
