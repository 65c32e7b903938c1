#!/usr/bin/env bash
# run-tests.sh: runs warren's tests and adds up their results.
#   run-tests.sh unit|integration|all|faults BUILD
# unit: the cmocka unit tests, tests/unit/*.sh, a short run of the fuzzers
# (tests/fuzz/test_fuzz.sh) and the man page lint; no servers.
# integration: starts a private RabbitMQ node (tests/lib/broker.sh) with
# rabbitmq/definitions.json imported and a private PostgreSQL
# (tests/lib/postgres.sh), runs tests/integration/it_* and *.sh against them,
# then the fault kit (tests/fault/test_faults.sh, short runs), and stops
# both, whatever happened.
# faults: only the fault kit, each scenario FAULT_SECONDS (default 30) long
# (FAULT_ONLY=GLOB: only those scenarios), then its table of figures.
# WARREN_ONLY=GLOB (integration): only the integration tests whose names
# match (it_sign, 'it_*', test_rpc_dlq.sh), without the fault kit.
set -uo pipefail

MODE=${1:?usage: run-tests.sh unit|integration|all|faults BUILD}
BUILD=${2:?usage: run-tests.sh unit|integration|all|faults BUILD}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
LOGS=$BUILD/test-logs
# Shell tests that need the built programs (tests/unit/test_units.sh,
# test_install.sh) find them here.
export WARREN_BUILD=$BUILD
mkdir -p "$LOGS"
passed=0
failed=0
failures=()

# record NAME PASSED FAILED LOG
record() {
	passed=$((passed + $2))
	failed=$((failed + $3))
	if [ "$3" -gt 0 ]; then
		failures+=("$1")
		printf 'FAIL  %-28s %3d passed, %d failed (log: %s)\n' "$1" "$2" "$3" "$4"
		tail -n 40 "$4" | sed 's/^/    | /'
	else
		printf 'ok    %-28s %3d passed\n' "$1" "$2"
	fi
}

# A cmocka binary: its summary lines are on stderr; its exit status is the
# number of failed tests. Anything else (a crash, no summary) is one failure.
run_cmocka() {
	local bin=$1 name log status p f
	name=$(basename "$bin")
	log=$LOGS/$name.log
	timeout 900 "$bin" >"$log" 2>&1
	status=$?
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | tail -n 1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | tail -n 1)
	p=${p:-0}
	f=${f:-0}
	if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	record "$name" "$p" "$f" "$log"
}

# A shell test ends with the line "N passed, M failed".
run_script() {
	local script=$1 name log status p f
	name=$(basename "$script")
	log=$LOGS/$name.log
	timeout 900 bash "$script" >"$log" 2>&1
	status=$?
	p=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log" | tail -n 1)
	f=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log" | tail -n 1)
	p=${p:-0}
	f=${f:-0}
	if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	record "$name" "$p" "$f" "$log"
}

# A test must stop every program it started: any left running (a daemon
# whose test failed half-way, say) is killed and counted as one failure.
# This run's daemons are the ones given this run's broker port.
reap_leftovers() {
	local name=$1 pids
	pids=$(pgrep -f "^$ROOT/$BUILD/bin/.*127\.0\.0\.1:$WARREN_TEST_PORT" || true)
	if [ -n "$pids" ]; then
		echo "$name left running: $(ps -o args= -p "${pids//$'\n'/,}" | tr '\n' ';')" \
			>"$LOGS/$name.leftovers.log"
		# shellcheck disable=SC2086 # one word per process
		kill -9 $pids 2>/dev/null
		record "$name (processes left running)" 0 1 "$LOGS/$name.leftovers.log"
	fi
}

lint_man() {
	local log=$LOGS/mandoc-lint.log
	if mandoc -Tlint -Wwarning man/* >"$log" 2>&1; then
		record "man pages (mandoc -Tlint)" 1 0 "$log"
	else
		record "man pages (mandoc -Tlint)" 0 1 "$log"
	fi
}

run_unit() {
	for t in "$BUILD"/tests/unit/test_*; do
		[ -x "$t" ] && run_cmocka "$t"
	done
	for s in tests/unit/*.sh; do
		[ -f "$s" ] && run_script "$s"
	done
	run_script tests/fuzz/test_fuzz.sh
	lint_man
}

SERVERS=
stop_servers() {
	if [ -n "$SERVERS" ]; then
		tests/lib/broker.sh stop "$SERVERS/broker"
		tests/lib/postgres.sh stop "$SERVERS/pg"
		rm -rf "$SERVERS"
	fi
}

run_integration() {
	SERVERS=$(mktemp -d /tmp/warren-test.XXXXXX)
	chmod 755 "$SERVERS"
	mkdir -p "$SERVERS/broker" "$SERVERS/pg"
	trap stop_servers EXIT
	if ! tests/lib/broker.sh start "$SERVERS/broker"; then
		record "private RabbitMQ node" 0 1 "$SERVERS/broker/log/startup.log"
		return
	fi
	if ! tests/lib/postgres.sh start "$SERVERS/pg" >"$LOGS/postgres-start.log" 2>&1; then
		record "private PostgreSQL" 0 1 "$LOGS/postgres-start.log"
		return
	fi
	# shellcheck disable=SC1091
	. "$SERVERS/broker/env"
	# shellcheck disable=SC1091
	. "$SERVERS/pg/pgenv"
	export WARREN_BIN=$ROOT/$BUILD/bin WARREN_TEST_BROKER_DIR=$SERVERS/broker
	export PGHOST PGPORT PGUSER PGDATABASE
	export WARREN_TEST_PG_DIR=$SERVERS/pg
	export WARREN_TEST_DB="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE"
	if [ -z "${SKIP_OTHERS:-}" ]; then
		for t in "$BUILD"/tests/integration/it_*; do
			# shellcheck disable=SC2053 # WARREN_ONLY is a glob
			[[ $(basename "$t") == ${WARREN_ONLY:-*} ]] || continue
			[ -x "$t" ] && { run_cmocka "$t"; reap_leftovers "$(basename "$t")"; }
		done
		for s in tests/integration/*.sh; do
			# shellcheck disable=SC2053
			[[ $(basename "$s") == ${WARREN_ONLY:-*} ]] || continue
			[ -f "$s" ] && { run_script "$s"; reap_leftovers "$(basename "$s")"; }
		done
	fi
	if [ -z "${WARREN_ONLY:-}" ]; then
		run_script tests/fault/test_faults.sh
		reap_leftovers test_faults.sh
	fi
	secrets_in_logs
}

# The secrets the tests use (the role passwords of test_roles.sh, the key
# files of it_sign) must appear in no log of the run: every program takes
# them from files and never prints them.
secrets_in_logs() {
	local log=$LOGS/secrets.log
	if grep -rl 'pw-warren-' "$LOGS" --exclude=secrets.log >"$log" 2>&1; then
		record "no secret in the logs" 0 1 "$log"
	else
		record "no secret in the logs" 1 0 "$log"
	fi
}

case $MODE in
unit) run_unit ;;
integration) run_integration ;;
faults)
	# The fault kit alone, each scenario at length.
	export FAULT_SECONDS=${FAULT_SECONDS:-30}
	export SKIP_OTHERS=1
	run_integration
	# Its table of figures, one row per scenario.
	echo
	sed -n '/^Fault kit, /,/^$/p' "$LOGS/test_faults.sh.log"
	;;
all)
	run_unit
	run_integration
	;;
*)
	echo "run-tests.sh: unknown mode $MODE" >&2
	exit 2
	;;
esac

echo
if [ "$failed" -gt 0 ]; then
	echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
