#!/usr/bin/env bash
# test_prometheus_rules.sh: config/prometheus/warren-rules.yml is valid for
# Prometheus (promtool check rules) and behaves as its test file says
# (promtool test rules warren-rules.test.yml: each alert fires on the series
# that should fire it, and not before its for: nor on the series that must
# not); every alert has such a pair of cases, a for:, a severity, a summary
# and a description pointing at warren-metrics(7); and the tests are not
# vacuous: the same rules held pending for ever (for: 1000h) fail them for
# every alert. promtool is Debian's prometheus package (scripts/deps.sh).
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
RULES=config/prometheus/warren-rules.yml
TESTS=config/prometheus/warren-rules.test.yml
TMP=$(mktemp -d /tmp/warren-rules.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if ! command -v promtool >/dev/null; then
	flunk "promtool is installed (Debian's prometheus package: scripts/deps.sh)"
	summary
	exit
fi

mapfile -t alerts < <(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\) *$/\1/p' "$RULES")
if [ "${#alerts[@]}" -ge 15 ]; then
	pass "$RULES has ${#alerts[@]} alerts"
else
	flunk "$RULES: only ${#alerts[@]} alerts found (${alerts[*]})"
fi

check "promtool check rules accepts $RULES" 0 \
	"$(printf 'Checking %s\n  SUCCESS: %d rules found' "$RULES" "${#alerts[@]}")" '' -- \
	bash -c "promtool check rules '$RULES' 2>&1 | sed '/^\$/d'"
check "promtool test rules: every case of $TESTS passes" 0 \
	"$(printf 'Unit Testing:  %s\n  SUCCESS' "$TESTS")" '' -- \
	bash -c "promtool test rules '$TESTS' 2>&1 | sed '/^\$/d'"

# cases NAME: "fires" and "quiet" for each case of the test file where
# alert NAME is expected to fire, or expected not to (exp_alerts: []).
cases() {
	awk -v want="$1" '
	/^ *alertname:/ { name = $2; next }
	/^ *exp_alerts: *\[\] *$/ { if (name == want) print "quiet"; name = ""; next }
	/^ *exp_alerts: *$/ { if (name == want) print "fires"; name = "" }
	' "$TESTS" | sort -u | tr '\n' ' '
}

# block NAME: the lines of alert NAME's rule in the rules file.
block() {
	awk -v want="$1" '
	/^ *- alert:/ { on = ($3 == want); }
	/^ *- name:/ { on = 0 }
	on
	' "$RULES"
}

for a in "${alerts[@]}"; do
	check "$a: the tests have a case where it fires and one where it must not" 0 \
		'fires quiet ' '' -- cases "$a"
	b=$(block "$a")
	missing=()
	grep -q '^ *for: *[0-9]' <<<"$b" || missing+=("for:")
	grep -Eq '^ *severity: *(critical|warning)$' <<<"$b" || missing+=("severity")
	grep -q '^ *summary: ' <<<"$b" || missing+=("summary")
	grep -q '^ *description: ' <<<"$b" || missing+=("description")
	# The folded description, its lines joined.
	grep -q "See warren-metrics(7), $a\." <<<"$(tr -s ' \n' '  ' <<<"$b")" ||
		missing+=("'See warren-metrics(7), $a.'")
	if [ ${#missing[@]} -eq 0 ]; then
		pass "$a has a for:, a severity, a summary and a description naming warren-metrics(7)"
	else
		flunk "$a lacks ${missing[*]}" "$b"
	fi
done

# The same rules, none ever leaving pending: each alert's firing case must
# now fail, so promtool names every alert among its failures.
mkdir -p "$TMP/held"
sed 's/^\( *for:\).*/\1 1000h/' "$RULES" >"$TMP/held/warren-rules.yml"
cp "$TESTS" "$TMP/held/"
held_out=$(cd "$TMP/held" && promtool test rules warren-rules.test.yml 2>&1)
held_status=$?
if [ "$held_status" -ne 0 ]; then
	pass "rules held pending fail promtool test rules"
else
	flunk "rules held pending still pass promtool test rules" "$held_out"
fi
for a in "${alerts[@]}"; do
	if grep -q "alertname: $a, time:" <<<"$held_out"; then
		pass "$a held pending: its firing case fails"
	else
		flunk "$a held pending: no case of $TESTS fails" "$held_out"
	fi
done

summary
