#!/usr/bin/env bash
# scenario.sh: one fault of the kit, under load. Starts user-service under a
# supervisor (restarting it whenever it dies, as systemd does), runs
# fault_load against it, injects the fault in the middle of the load, marks
# its end (SIGUSR1 to the load), and prints the load's accounting. Exits as
# fault_load does: 0 when nothing was lost, nothing done twice, every
# timeout on time and the service answering again soon after the fault.
#
#   scenario.sh NAME SECONDS
#
# NAME: kill9 | broker_restart | close_connections | pg_restart | alarm |
# slow_handler | cluster_leader (run by cluster.sh, which makes the cluster). Needs the environment
# scripts/run-tests.sh sets up (WARREN_BIN, WARREN_TEST_URL, WARREN_TEST_DB,
# WARREN_TEST_BROKER_DIR, WARREN_TEST_PG_DIR, WARREN_BUILD).
set -uo pipefail

NAME=${1:?usage: scenario.sh NAME SECONDS}
SECONDS_=${2:?usage: scenario.sh NAME SECONDS}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
LOAD=${WARREN_BUILD:?run through scripts/run-tests.sh}/tests/fault/fault_load
tmp=$(mktemp -d /tmp/warren-fault.XXXXXX)
HEARTBEAT=2s
[ "$NAME" = slow_handler ] && HEARTBEAT=1s

ctl() { tests/lib/broker.sh ctl "$WARREN_TEST_BROKER_DIR" "$@" >>"$tmp/ctl.log" 2>&1; }

# The supervisor: user-service again and again until told to stop.
supervise() {
	while [ ! -e "$tmp/stop" ]; do
		"$BIN/user-service" -o "broker.url=$WARREN_TEST_URL" -o "db.conninfo=$WARREN_TEST_DB" \
			-o "broker.heartbeat=$HEARTBEAT" -o worker.threads=4 -o log.level=warn \
			2>>"$tmp/service.log" &
		echo $! >"$tmp/pid"
		wait $! 2>/dev/null
		echo "exit $? at $(date +%T.%N)" >>"$tmp/restarts.log"
		sleep 0.2
	done
}

cleanup() {
	touch "$tmp/stop"
	[ -f "$tmp/pid" ] && kill "$(cat "$tmp/pid")" 2>/dev/null
	[ -n "${sup:-}" ] && wait "$sup" 2>/dev/null
	ctl set_vm_memory_high_watermark 0.4
	rm -rf "$tmp"
}
trap cleanup EXIT

# The fault, over about a third of the run, starting after a quarter.
# bounce_node NODE SECS: the cluster node named NODE (an Erlang node name)
# stops its broker for SECS seconds, then starts it again.
bounce_node() {
	local n dir
	for n in "$WARREN_CLUSTER_DIR"/n*; do
		# shellcheck disable=SC1091
		[ "$(. "$n/env" && echo "$WARREN_TEST_NODE")" = "$1" ] && dir=$n
	done
	tests/lib/broker.sh ctl "$dir" stop_app >>"$tmp/ctl.log" 2>&1
	sleep "$2"
	tests/lib/broker.sh ctl "$dir" start_app >>"$tmp/ctl.log" 2>&1
}

inject() {
	local third=$((SECONDS_ / 3 > 1 ? SECONDS_ / 3 : 1))
	case $NAME in
	kill9)
		local end=$((SECONDS + third))
		while [ $SECONDS -lt $end ]; do
			kill -9 "$(cat "$tmp/pid")" 2>/dev/null
			sleep 1.5
		done
		;;
	broker_restart)
		ctl stop_app
		sleep "$third"
		ctl start_app
		;;
	close_connections)
		local end=$((SECONDS + third))
		while [ $SECONDS -lt $end ]; do
			ctl close_all_connections "fault test"
			sleep 1.5
		done
		;;
	pg_restart)
		tests/lib/postgres.sh restart "$WARREN_TEST_PG_DIR" >>"$tmp/ctl.log" 2>&1
		;;
	alarm)
		ctl set_vm_memory_high_watermark absolute 1
		sleep "$third"
		ctl set_vm_memory_high_watermark 0.4
		;;
	cluster_leader)
		# The node leading the service queue goes away and comes back;
		# the quorum queue elects another leader meanwhile.
		local leader
		leader=$(tests/lib/broker.sh ctl "$WARREN_CLUSTER_DIR/n1" -q list_queues name leader |
			awk '$1 == "rpc.user" { print $2 }')
		echo "leader of rpc.user: $leader" >>"$tmp/ctl.log"
		bounce_node "$leader" "$third"
		;;
	cluster_fast)
		# The node holding rpc.user.fast, a classic queue: the transient
		# reads waiting there or running are lost, and must each end with
		# an error or their deadline.
		local node
		node=$(tests/lib/broker.sh ctl "$WARREN_CLUSTER_DIR/n1" -q list_queues name pid |
			awk '$1 == "rpc.user.fast" { print $2 }' |
			sed 's/^<\(.*\)\.[0-9]*\.[0-9]*\.[0-9]*>$/\1/')
		echo "node of rpc.user.fast: $node" >>"$tmp/ctl.log"
		bounce_node "$node" "$third"
		;;
	slow_handler)
		# Every handler waits on the lock for 3 s: longer than two
		# heartbeats (1 s); the connection must live through it.
		psql -q -c "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;" \
			>>"$tmp/ctl.log" 2>&1
		;;
	*)
		echo "scenario.sh: unknown scenario $NAME" >&2
		exit 2
		;;
	esac
}

supervise &
sup=$!
for _ in $(seq 1 100); do
	"$BIN/rpc-call" -o "broker.url=$WARREN_TEST_URL" -t 0.5 user.list '{"limit":1}' >/dev/null 2>&1 &&
		break
	sleep 0.1
done

tag=f$$$RANDOM
[ "$NAME" = cluster_fast ] && export FAULT_TRANSIENT=1
"$LOAD" "$SECONDS_" 50 10000 "$tag" >"$tmp/load.out" 2>"$tmp/load.err" &
load=$!
for _ in $(seq 1 300); do
	grep -q '^ready$' "$tmp/load.out" 2>/dev/null && break
	sleep 0.1
done
sleep "$((SECONDS_ / 4 > 0 ? SECONDS_ / 4 : 1))"
inject
kill -USR1 "$load"
wait "$load"
status=$?
# Faults away from the broker must not cost the service its connection:
# heartbeats are the I/O thread's, whatever the handlers do.
case $NAME in
pg_restart | alarm | slow_handler)
	if grep -q 'connection lost\|closed by the broker' "$tmp/service.log"; then
		echo "$NAME: user-service lost its broker connection:"
		grep 'connection lost\|closed by the broker' "$tmp/service.log"
		status=1
	fi
	;;
esac
echo "$NAME: $(grep -v '^ready$' "$tmp/load.out") restarts=$(cat "$tmp/restarts.log" 2>/dev/null | wc -l)"
if [ "$status" -ne 0 ]; then
	echo "--- load stderr"
	cat "$tmp/load.err"
	echo "--- service log (last lines)"
	tail -n 15 "$tmp/service.log"
fi
exit "$status"
