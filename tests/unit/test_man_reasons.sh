#!/usr/bin/env bash
# test_man_reasons.sh: the dead-letter reasons a worker writes (the DL_R_*
# strings of src/rpc/deadletter.h) are each explained, as ".It Cm <reason>",
# in the reason lists of rpc-dlq(1) and warren(7), and those lists name no
# reason the worker does not write (beyond warren(7)'s broker: entry).
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"

mapfile -t reasons < <(sed -n 's/^#define DL_R_[A-Z_]* *"\([^"]*\)".*/\1/p' src/rpc/deadletter.h)
if [ "${#reasons[@]}" -ge 9 ]; then
	pass "deadletter.h defines ${#reasons[@]} reasons"
else
	flunk "deadletter.h: only ${#reasons[@]} DL_R_* reasons found (${reasons[*]})"
fi

# has WORD ITEM...: whether WORD is one of the ITEMs (no pipe into grep -q,
# whose early exit would fail the pipeline under pipefail).
has() {
	local want=$1 x
	shift
	for x in "$@"; do
		[ "$x" = "$want" ] && return 0
	done
	return 1
}

# reason_list PAGE: the items (".It Cm x") of the .Bl list that holds
# ".It Cm undecodable", one a line.
reason_list() {
	awk '
	/^\.Bl/ { depth++; if (depth == 1) { n = 0; hit = 0 } }
	depth == 1 && /^\.It Cm / { items[n++] = $3; if ($3 == "undecodable") hit = 1 }
	/^\.El/ {
		if (depth == 1 && hit) { for (i = 0; i < n; i++) print items[i]; exit }
		depth--
	}' "$1"
}

for page in man/rpc-dlq.1 man/warren.7; do
	mapfile -t listed < <(reason_list "$page")
	if [ "${#listed[@]}" -eq 0 ]; then
		flunk "$page: no reason list (.Bl with .It Cm undecodable) found"
		continue
	fi
	for r in "${reasons[@]}"; do
		if has "$r" "${listed[@]}"; then
			pass "$page explains the dead-letter reason $r"
		else
			flunk "$page: the reason list has no .It Cm $r (src/rpc/deadletter.h writes it)"
		fi
	done
	for l in "${listed[@]}"; do
		case $l in
		'broker\&:') continue ;; # the broker's own, "broker:<reason>"
		esac
		if ! has "$l" "${reasons[@]}"; then
			flunk "$page: the reason list names $l, which no DL_R_* in src/rpc/deadletter.h is"
		fi
	done
done

summary
