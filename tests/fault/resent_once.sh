#!/usr/bin/env bash
# resent_once.sh: the resent_once scenario. A call whose reply path is lost
# while its request runs is sent again after the reconnect; its first copy
# did run, so the service must answer the second without running the
# change again: from the worker's reply cache (its counter of cache hits
# says so) or, with a library that has none, from user-service's
# idempotency record in PostgreSQL. Deterministic, step by step:
#
#  1. user-service serves its metrics; the caller (fault_load once, one
#     user.create with a 30 s deadline) connects as a broker user of its own;
#  2. a transaction holds users locked: the call's handler runs and waits
#     on the lock (seen in pg_locks);
#  3. the caller's user loses its permissions (so it cannot reconnect yet)
#     and its connection is closed: the reply path is gone;
#  4. the lock is released: the first copy commits its row and answers to
#     the dead reply path (its handler ended: requests_total counts it);
#  5. the permissions come back: the caller reconnects and resends.
#
# Passes when the call ended OK, one row and one idempotency record exist,
# the worker received the request twice, and the second copy was answered
# from the cache (hits = 1) or, without one, from the record (the handler
# ended twice, the change made once). Prints fault_load's figures with
# received=, handled= and cache_hits= ("-" when the worker has no cache).
#
#   resent_once.sh   (the environment of scripts/run-tests.sh)
set -uo pipefail

NAME=resent_once
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
LOAD=${WARREN_BUILD:?run through scripts/run-tests.sh}/tests/fault/fault_load
# shellcheck source=tests/lib/ports.sh
. "$ROOT/tests/lib/ports.sh"
tmp=$(mktemp -d /tmp/warren-fault.XXXXXX)
caller=warren-fault-caller
secret=caller-$$-$RANDOM
tag=r$$$RANDOM
svc=
lockpid=
figures=

ctl() { tests/lib/broker.sh ctl "$WARREN_TEST_BROKER_DIR" "$@" >>"$tmp/ctl.log" 2>&1; }
sql() { psql -tAq -c "$1" 2>>"$tmp/ctl.log"; }

cleanup() {
	[ -n "$svc" ] && kill "$svc" 2>/dev/null && wait "$svc" 2>/dev/null
	[ -n "$lockpid" ] && kill "$lockpid" 2>/dev/null
	exec 3>&-
	ctl delete_user "$caller"
	rm -rf "$tmp"
}
trap cleanup EXIT

# fail WHY: the scenario's verdict, with what helps to see why.
fail() {
	echo "$NAME: $1"
	echo "--- ctl log (last lines)"
	tail -n 15 "$tmp/ctl.log"
	echo "--- service log (last lines)"
	tail -n 15 "$tmp/service.log"
	[ -f "$tmp/load.err" ] && sed 's/^/# /' "$tmp/load.err"
	# The figures as far as they go, last (test_faults.sh reads them).
	[ -n "$figures" ] && echo "$NAME: $figures restarts=0"
	exit 1
}

# wait_for SECONDS CMD...: until CMD succeeds, at most SECONDS.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

port=$(free_port) || fail "no free port for the metrics"
metrics() { curl -sf "http://127.0.0.1:$port/metrics"; }
# metric NAME [LABEL]: the sum of NAME's samples (those with LABEL), "-"
# when the worker serves none.
metric() {
	metrics | awk -v k="$1" -v f="${2:-}" '
		(index($1, k "{") == 1 || $1 == k) && (f == "" || index($1, f)) { s += $2; n++ }
		END { if (n) print s; else print "-" }'
}
connected() { metrics | grep -q '^warren_worker_connected{service="user"} 1$'; }
locked() {
	[ "$(sql "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
		WHERE c.relname = 'users' AND l.mode = 'AccessExclusiveLock' AND l.granted")" -gt 0 ]
}
lock_waiter() { [ "$(sql "SELECT count(*) FROM pg_locks WHERE NOT granted")" -gt 0 ]; }
row_made() { [ "$(sql "SELECT count(*) FROM users WHERE email = '$tag-w-0@example.org'")" = 1 ]; }
first_ended() { [ "$(metric warren_worker_requests_total 'method="user.create"')" = 1 ]; }
caller_conn() {
	tests/lib/broker.sh ctl "$WARREN_TEST_BROKER_DIR" -q list_connections user pid 2>>"$tmp/ctl.log" |
		awk -F'\t' -v u="$caller" '$1 == u { print $2 }'
}

ctl add_user "$caller" "$secret" || fail "cannot add the broker user $caller"
ctl set_permissions -p / "$caller" '.*' '.*' '.*' || fail "cannot give $caller its permissions"
"$BIN/user-service" -o "broker.url=$WARREN_TEST_URL" -o "db.conninfo=$WARREN_TEST_DB" \
	-o worker.threads=4 -o log.level=warn -o "metrics.listen=127.0.0.1:$port" \
	2>>"$tmp/service.log" &
svc=$!
wait_for 30 connected || fail "user-service did not connect"

# 2. The lock, held by a psql session that waits on its input; taken
# before the call is made, so that its handler cannot pass it.
mkfifo "$tmp/lock"
psql -q -v ON_ERROR_STOP=1 <"$tmp/lock" >>"$tmp/ctl.log" 2>&1 &
lockpid=$!
exec 3>"$tmp/lock"
echo "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE;" >&3
wait_for 10 locked || fail "the lock on users was not taken"

# 1. The caller, its broker URL with its own user; it reconnects at most
# 1 s apart, so that it comes back soon after step 5. Its call reaches the
# handler, which waits on the lock.
url=$(printf '%s' "$WARREN_TEST_URL" | sed "s#://[^@]*@#://$caller:$secret@#")
WARREN_TEST_URL=$url FAULT_NO_FAILED=1 \
	FAULT_CLIENT_OPTS="broker.reconnect_max=1s ${FAULT_CLIENT_OPTS:-}" \
	"$LOAD" once 30000 "$tag" >"$tmp/load.out" 2>"$tmp/load.err" &
load=$!
wait_for 30 grep -q '^ready$' "$tmp/load.out" || fail "the caller did not connect"
wait_for 20 lock_waiter || fail "the call's handler did not reach the lock"

# 3. The reply path lost, no way back yet.
kill -USR2 "$load"
ctl clear_permissions -p / "$caller"
conn=$(caller_conn)
[ -n "$conn" ] || fail "no connection of $caller to close"
ctl close_connection "$conn" "resent_once: the reply path lost" ||
	fail "cannot close the caller's connection"
# 4. The first copy ends; its reply goes nowhere.
echo "COMMIT;" >&3
wait_for 20 row_made || fail "the first copy did not make its row"
wait_for 20 first_ended || fail "the first copy's handler did not end"
# 5. The caller may come back.
ctl set_permissions -p / "$caller" '.*' '.*' '.*'
kill -USR1 "$load" 2>/dev/null
wait "$load"
status=$?

records=$(sql "SELECT count(*) FROM rpc_idempotency WHERE message_id = '$tag-w-0'")
received=$(metric warren_worker_received_total)
handled=$(metric warren_worker_requests_total 'method="user.create"')
hits=$(metric warren_worker_reply_cache_hits_total)
figures="$(grep -v '^ready$' "$tmp/load.out") records=$records received=$received"
figures="$figures handled=$handled cache_hits=$hits"
[ "$status" -eq 0 ] || fail "the call did not end OK once (or made more than one row)"
[ "$records" = 1 ] || fail "$records idempotency records, not 1"
[ "$received" = 2 ] || fail "the worker received the request $received times, not 2"
if [ "$hits" != - ]; then
	[ "$hits" = 1 ] || fail "$hits cache hits, not 1"
elif [ "$handled" != 2 ]; then
	fail "no reply cache, and the handler ended $handled times, not 2"
fi
sed 's/^/# /' "$tmp/load.err"
echo "$NAME: $figures restarts=0"
