#!/usr/bin/env bash
# test_exitcodes.sh: every program exits with a status from one table
# (src/rpc/exitcodes.h). warren(7) explains each code of the table; each
# program's man page lists only codes of the table, and every code its
# source returns by name; warren.h spells the same values for programs on
# the public header alone (notify-user).
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"

# The table: NAME=NUMBER lines.
table() {
	sed -n 's/^[[:space:]]*\(EXITCODE_[A-Z_]*\) = \([0-9]*\),.*/\1=\2/p' "$1"
}

# The codes of a page's EXIT STATUS list, one a line, sorted.
page_codes() {
	awk '/^\.Sh EXIT STATUS/ { on = 1; next } /^\.Sh / { on = 0 }
		on && /^\.It [0-9]+$/ { print $2 }' "$1" | sort -n
}

# The numbers of the EXITCODE_* names (or their public spelling in
# warren.h, WARREN_EXIT_*) a source file uses, sorted.
source_codes() {
	local name
	grep -hoE '(EXITCODE|WARREN_EXIT)_[A-Z_]*' "$@" | sed 's/^WARREN_EXIT_/EXITCODE_/' |
		sort -u | while read -r name; do
		printf '%s\n' "${codes[$name]:-unknown:$name}"
	done | sort -n
}

declare -A codes
while IFS='=' read -r name value; do
	codes[$name]=$value
done < <(table src/rpc/exitcodes.h)
all=$(printf '%s\n' "${codes[@]}" | sort -n)
if [ "${#codes[@]}" -ge 9 ] && [ "$all" = "$(seq 0 $((${#codes[@]} - 1)))" ]; then
	pass "exitcodes.h numbers its ${#codes[@]} codes from 0 without a gap"
else
	flunk "exitcodes.h: codes not 0..N-1" "$all"
fi
check "warren(7) explains every code of the table" 0 "$all" '' -- page_codes man/warren.7

# check_program SOURCE... -- PAGE
check_program() {
	local page=${*: -1} used listed missing=() extra=() c
	used=$(source_codes "${@:1:$#-2}")
	listed=$(page_codes "$page")
	for c in $used; do
		grep -qx -- "$c" <<<"$listed" || missing+=("$c")
	done
	for c in $listed; do
		grep -qx -- "$c" <<<"$all" || extra+=("$c")
	done
	if [ "${#missing[@]}" = 0 ] && [ "${#extra[@]}" = 0 ] && [ -n "$listed" ]; then
		pass "$page lists the codes of its program ($(tr '\n' ' ' <<<"$listed"))"
	else
		flunk "$page: codes returned but not listed: ${missing[*]}; listed but not in the table: ${extra[*]}"
	fi
}

check_program src/client/rpc-call/*.c -- man/rpc-call.1
check_program src/client/rpc-dlq/*.c -- man/rpc-dlq.1
check_program src/client/warren-key/*.c -- man/warren-key.1
check_program src/client/notify-user/*.c -- man/notify-user.1
# The services on warren_daemon return its codes (src/workers/daemon.c) too.
check_program src/workers/user/*.c src/workers/daemon.c src/rpc/cli.c -- man/user-service.8
check_program src/workers/example/*.c src/workers/daemon.c src/rpc/cli.c -- man/example-service.8

# warren.h spells the table for programs on the public header alone.
public=$(sed -n 's/^[[:space:]]*WARREN_EXIT_\([A-Z_]*\) = \([0-9]*\),.*/EXITCODE_\1=\2/p' src/rpc/warren.h | sort)
check "warren.h's WARREN_EXIT_* are the table's codes" 0 "$(table src/rpc/exitcodes.h | sort)" '' -- \
	printf '%s\n' "$public"

summary
