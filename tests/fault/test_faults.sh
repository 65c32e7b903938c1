#!/usr/bin/env bash
# test_faults.sh: every fault scenario of the kit under load, each a test:
# nothing lost, no side effect twice, timeouts on time, the service back
# within seconds, and no failed call where the outage is shorter than the
# deadline (tests/fault/scenario.sh says which scenario requires what);
# resent_once.sh: a call resent after its reply path was lost runs once;
# the cluster scenarios in cluster.sh, on one three-node cluster. Ends with
# a table of the figures, one row per scenario (scripts/run-tests.sh faults
# prints it), then "N passed, M failed". FAULT_SECONDS sets each run's
# length: short in make check, 30 s in make check-faults; FAULT_ONLY, a
# glob, picks scenarios.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
LENGTH=${FAULT_SECONDS:-8}
# The cluster needs a longer run: its failover takes seconds.
CLUSTER_LENGTH=$((LENGTH > 12 ? LENGTH : 12))

ONLY=${FAULT_ONLY:-*} # a glob over the scenario names
rows=()

# field LINE KEY: KEY's value in a scenario's line of key=value figures.
field() {
	printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# outage NAME RUN_SECONDS: what the fault is, as planned (scenario.sh: a
# third of the run; kill -9 and close 7 times).
outage() {
	local third=$(($2 / 3 > 1 ? $2 / 3 : 1))
	case $1 in
	kill9) echo "kill -9 x7, 1.5 s apart" ;;
	close_connections) echo "close all x7, 1.5 s apart" ;;
	pg_restart) echo "PostgreSQL restart" ;;
	slow_handler) echo "handlers held 3 s" ;;
	resent_once) echo "1 call's connection closed" ;;
	cluster_rolling) echo "3 nodes x ${third} s" ;;
	cluster_leader) echo "leader node ${third} s" ;;
	cluster_fast) echo "fast-lane node ${third} s" ;;
	alarm) echo "memory alarm ${third} s" ;;
	*) echo "stop_app ${third} s" ;;
	esac
}

# row NAME RUN_SECONDS OUTPUT VERDICT: the table's row for one scenario,
# from the last line of its output that holds its figures.
row() {
	local line ms resent
	line=$(printf '%s\n' "$3" | grep "^$1: sent=" | tail -n 1)
	if [ -z "$line" ]; then
		rows+=("| $1 | $(outage "$1" "$2") | - | - | - | - | - | - | - | - | - | $4 |")
		return
	fi
	ms=$(field "$line" outage_ms)
	resent=$(field "$line" resent)
	rows+=("| $1 | $(outage "$1" "$2") ($(awk -v m="$ms" 'BEGIN { if (m < 0) print "-"; else printf "%.1f s", m / 1000 }')) \
| $(field "$line" sent) | $(field "$line" ok) | $(field "$line" failed) \
| $(field "$line" timeouts) | $(field "$line" lost) | $(field "$line" duplicated) \
| $(field "$line" slowest_ok_ms) | $(field "$line" recovered_ms) \
| ${resent:--}/$(field "$line" republished) | $4 |")
}

# judge NAME RUN_SECONDS STATUS OUTPUT: the test's result and the row.
judge() {
	if [ "$3" -eq 0 ]; then
		pass "$(printf '%s\n' "$4" | grep "^$1: sent=" | tail -n 1)"
		row "$1" "$2" "$4" ok
	else
		flunk "$1" "$4"
		row "$1" "$2" "$4" FAIL
	fi
}

for scenario in kill9 broker_restart broker_restart_noresend close_connections pg_restart \
	alarm slow_handler resent_once; do
	# shellcheck disable=SC2053 # ONLY is a glob
	[[ $scenario == $ONLY ]] || continue
	start=$SECONDS
	if [ "$scenario" = resent_once ]; then
		out=$(bash tests/fault/resent_once.sh 2>&1)
	else
		out=$(bash tests/fault/scenario.sh "$scenario" "$LENGTH" 2>&1)
	fi
	judge "$scenario" "$LENGTH" $? "$out"
	echo "# $scenario: $((SECONDS - start)) s"
done
# One cluster for all of its scenarios: the leader of rpc.user lost, the
# node of the fast lane's rpc.user.fast lost while transient reads run,
# and a rolling restart of every node in turn.
clusters=()
for scenario in cluster_leader cluster_fast cluster_rolling; do
	# shellcheck disable=SC2053
	[[ $scenario == $ONLY ]] && clusters+=("$scenario")
done
if [ ${#clusters[@]} -gt 0 ]; then
	start=$SECONDS
	out=$(bash tests/fault/cluster.sh "$CLUSTER_LENGTH" "${clusters[@]}" 2>&1)
	echo "# the cluster (${clusters[*]}): $((SECONDS - start)) s"
	for scenario in "${clusters[@]}"; do
		printf '%s\n' "$out" | grep -qx "$scenario: status 0"
		judge "$scenario" "$CLUSTER_LENGTH" $? "$out"
	done
fi

echo
echo "Fault kit, $LENGTH s runs ($CLUSTER_LENGTH s on the cluster), deadlines 30 s:"
echo "| scenario | outage (measured) | sent | ok | failed | timeouts | lost | duplicated writes \
| worst ok ms | recovered ms | resent/republished | result |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
summary
