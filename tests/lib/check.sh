# shellcheck shell=bash
# check.sh: sourced by the shell tests. check runs a command and compares
# its exit status, stdout and stderr with what a user must see; pass and
# flunk record a result the test decided itself; summary prints the
# "N passed, M failed" line scripts/run-tests.sh reads.
passed=0
failed=0
CHECK_ERR=$(mktemp)

# check NAME WANT_STATUS WANT_STDOUT WANT_STDERR -- COMMAND...
check() {
	local name=$1 want_status=$2 want_out=$3 want_err=$4
	shift 5
	local out err status
	out=$("$@" 2>"$CHECK_ERR")
	status=$?
	err=$(cat "$CHECK_ERR")
	if [ "$status" = "$want_status" ] && [ "$out" = "$want_out" ] && [ "$err" = "$want_err" ]; then
		echo "ok - $name"
		passed=$((passed + 1))
	else
		echo "not ok - $name"
		echo "#   status: got $status, want $want_status"
		echo "#   stdout: got [$out], want [$want_out]"
		echo "#   stderr: got [$err], want [$want_err]"
		failed=$((failed + 1))
	fi
}

# pass NAME; flunk NAME [DETAILS]
pass() {
	passed=$((passed + 1))
	echo "ok    $1"
}

flunk() {
	failed=$((failed + 1))
	echo "FAIL  $1"
	[ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/    | /'
}

# start_worker: example-service on $URL in the background ($worker_pid),
# once it answers; BIN and URL are the caller's.
start_worker() {
	"$BIN/example-service" -o "broker.url=$URL" -o log.level=warn &
	# shellcheck disable=SC2034 # the caller stops it
	worker_pid=$!
	for _ in $(seq 1 100); do
		"$BIN/rpc-call" -o "broker.url=$URL" -t 0.5 example.echo >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "example-service did not come up" >&2
	return 1
}

# summary: the last line of every shell test; fails when a check did.
summary() {
	rm -f "$CHECK_ERR"
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}

# warren_version ROOT: the version warren.h defines (WARREN_VERSION).
warren_version() {
	sed -n 's/^#define WARREN_VERSION "\(.*\)"$/\1/p' "$1/src/rpc/warren.h"
}

# sanitizers_of LIBWARREN_A: sets SAN to the flags a program linked with
# that archive needs (a SANITIZE=1 build's objects need the sanitizers'
# runtime), empty for a plain build; a sanitized one also has ASAN_OPTIONS
# leave leaks alone. (nm's output is read whole before grep -q: with
# pipefail, a writer cut short by grep -q's early exit would fail.)
sanitizers_of() {
	# shellcheck disable=SC2034 # the caller's
	SAN=()
	if grep -q __asan_ <<<"$(nm "$1" 2>/dev/null)"; then
		# shellcheck disable=SC2034
		SAN=("-fsanitize=address,undefined")
		export ASAN_OPTIONS=detect_leaks=0
	fi
}

# as_public_include FILE: FILE on stdout, its #include "warren.h" as a
# program outside the tree writes it, <warren/warren.h>.
as_public_include() {
	sed 's|^#include "warren.h"$|#include <warren/warren.h>|' "$1"
}
