#!/usr/bin/env bash
# test_metrics_docs.sh: warren-metrics(7) documents what the code serves and
# the rules file holds: every series a worker (src/workers/metrics.c) or a
# caller (src/client/client_metrics.c) renders has its entry (".It Li name")
# in the page's WORKER SERIES or CALLER SERIES, and no entry names a series
# the code does not serve; every alert of config/prometheus/warren-rules.yml
# has its entry (".It Sy name") in ALERTING RULES, and no entry names an
# alert the file does not have.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
PAGE=man/warren-metrics.7
RULES=config/prometheus/warren-rules.yml

# The series names the C sources write: each string literal that is a
# whole warren_worker_* or warren_client_* name.
served() {
	grep -ho '"warren_\(worker\|client\)_[a-z0-9_]*"' src/workers/metrics.c \
		src/client/client_metrics.c | tr -d '"' | sort -u
}

# The entries of the page's section SECTION: the first word after ".It MACRO".
entries() {
	local section=$1 macro=$2
	awk -v s="$section" -v m="$macro" '
	/^\.Sh / { on = (substr($0, 5) == s); next }
	on && $1 == ".It" && $2 == m { print $3 }
	' "$PAGE" | sort -u
}

# misplaced SECTION PREFIX: the series entries of SECTION not named PREFIX*.
misplaced() {
	entries "$1" Li | grep -v "^$2" || true
}

alerts() {
	sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\) *$/\1/p' "$RULES" | sort -u
}

mapfile -t series < <(served)
if [ "${#series[@]}" -ge 30 ]; then
	pass "the sources serve ${#series[@]} series"
else
	flunk "only ${#series[@]} series found in the sources (${series[*]})"
fi
documented=$({
	entries "WORKER SERIES" Li
	entries "CALLER SERIES" Li
} | sort -u)
check "every series served has its entry in $PAGE" 0 '' '' -- \
	comm -23 <(printf '%s\n' "${series[@]}") <(echo "$documented")
check "every series entry of $PAGE is served" 0 '' '' -- \
	comm -13 <(printf '%s\n' "${series[@]}") <(echo "$documented")
check "WORKER SERIES lists only warren_worker_* series" 0 '' '' -- \
	misplaced "WORKER SERIES" warren_worker_
check "CALLER SERIES lists only warren_client_* series" 0 '' '' -- \
	misplaced "CALLER SERIES" warren_client_

mapfile -t rules < <(alerts)
if [ "${#rules[@]}" -ge 15 ]; then
	pass "$RULES has ${#rules[@]} alerts"
else
	flunk "only ${#rules[@]} alerts found in $RULES"
fi
check "every alert of $RULES has its entry in ALERTING RULES" 0 '' '' -- \
	comm -23 <(printf '%s\n' "${rules[@]}") <(entries "ALERTING RULES" Sy)
check "every entry of ALERTING RULES is an alert of $RULES" 0 '' '' -- \
	comm -13 <(printf '%s\n' "${rules[@]}") <(entries "ALERTING RULES" Sy)

summary
