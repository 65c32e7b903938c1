#!/usr/bin/env bash
# cluster.sh: the cluster scenarios. Makes a three-node RabbitMQ cluster on
# this machine (separate node names, ports and data directories, one epmd),
# imports the definitions so that every quorum queue has a member on each
# node, and runs scenario.sh against the three URLs, one scenario after
# another on the same cluster: cluster_leader (the node leading rpc.user is
# stopped under load and started again), cluster_fast (the node holding
# rpc.user.fast, the fast lane's classic queue, is stopped while transient
# reads run), cluster_rolling (every node in turn stopped and started).
#
#   cluster.sh SECONDS [SCENARIO...]
#   (default: cluster_leader cluster_fast cluster_rolling)
set -uo pipefail

SECONDS_=${1:?usage: cluster.sh SECONDS}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
dir=$(mktemp -d /tmp/warren-cluster.XXXXXX)

cleanup() {
	for n in n3 n2 n1; do
		tests/lib/broker.sh stop "$dir/$n"
	done
	rm -rf "$dir"
}
trap cleanup EXIT

if ! { tests/lib/broker.sh bare "$dir/n1" && tests/lib/broker.sh start "$dir/n2" "$dir/n1" &&
	tests/lib/broker.sh start "$dir/n3" "$dir/n1" &&
	tests/lib/broker.sh ctl "$dir/n1" -q import_definitions rabbitmq/definitions.json; } \
	>"$dir/setup.log" 2>&1; then
	echo "cluster.sh: the cluster did not form:"
	tail -n 20 "$dir/setup.log"
	exit 1
fi
echo "# the cluster formed in $SECONDS s"
urls=
for n in n1 n2 n3; do
	# shellcheck disable=SC1091
	urls=$urls${urls:+,}$(. "$dir/$n/env" && echo "$WARREN_TEST_URL")
done
members=$(tests/lib/broker.sh ctl "$dir/n1" -q list_queues name members |
	awk '$1 == "rpc.user"' | grep -o 'warren-' | wc -l)
if [ "$members" -ne 3 ]; then
	echo "cluster.sh: rpc.user has $members members, not 3"
	exit 1
fi
shift
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(cluster_leader cluster_fast cluster_rolling)
status=0
for scenario in "${scenarios[@]}"; do
	# Each scenario's output, then "SCENARIO: status N" (test_faults.sh reads it).
	WARREN_TEST_URL=$urls WARREN_TEST_BROKER_DIR=$dir/n1 WARREN_CLUSTER_DIR=$dir \
		bash tests/fault/scenario.sh "$scenario" "$SECONDS_"
	st=$?
	echo "# $scenario: done at $SECONDS s"
	echo "$scenario: status $st"
	[ $st -eq 0 ] || status=1
done
exit $status
