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

for scenario in kill9 broker_restart close_connections pg_restart alarm slow_handler; do
	if out=$(bash tests/fault/scenario.sh "$scenario" "$LENGTH" 2>&1); then
		pass "$(printf '%s' "$out" | tail -n 1)"
	else
		flunk "$scenario" "$out"
	fi
done
# The cluster needs a longer run: its failover takes seconds.
if out=$(bash tests/fault/cluster.sh "$((LENGTH > 12 ? LENGTH : 12))" 2>&1); then
	pass "$(printf '%s' "$out" | tail -n 1)"
else
	flunk cluster_leader "$out"
fi

summary
