#!/usr/bin/env bash
# test_faults.sh: every fault scenario of the kit under load, each a test
# (the seventh, a three-node cluster losing its leader, in cluster.sh):
# nothing lost, no side effect twice, timeouts on time, the service back
# within seconds (tests/fault/scenario.sh). FAULT_SECONDS sets each run's
# length: short in make check, long in make check-faults.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
LENGTH=${FAULT_SECONDS:-8}

ONLY=${FAULT_ONLY:-*} # a glob over the scenario names

for scenario in kill9 broker_restart close_connections pg_restart alarm slow_handler; do
	# shellcheck disable=SC2053 # ONLY is a glob
	[[ $scenario == $ONLY ]] || continue
	if out=$(bash tests/fault/scenario.sh "$scenario" "$LENGTH" 2>&1); then
		pass "$(printf '%s' "$out" | tail -n 1)"
	else
		flunk "$scenario" "$out"
	fi
done
# The cluster needs a longer run: its failover takes seconds. One cluster
# for both of its scenarios: the leader of rpc.user lost, then the node
# of the fast lane's rpc.user.fast lost while transient reads run.
clusters=()
for scenario in cluster_leader cluster_fast; do
	# shellcheck disable=SC2053
	[[ $scenario == $ONLY ]] && clusters+=("$scenario")
done
if [ ${#clusters[@]} -gt 0 ]; then
	out=$(bash tests/fault/cluster.sh "$((LENGTH > 12 ? LENGTH : 12))" "${clusters[@]}" 2>&1)
	for scenario in "${clusters[@]}"; do
		if printf '%s\n' "$out" | grep -qx "$scenario: status 0"; then
			pass "$(printf '%s\n' "$out" | grep "^$scenario: sent=" | tail -n 1)"
		else
			flunk "$scenario" "$out"
		fi
	done
fi

summary
