#!/usr/bin/env bash
# test_conformance.sh: the conformance kit (tests/conformance/) run against
# warren's own ends on the private broker: check_worker.py against
# example-service, check_caller.py against rpc-call. Each check is one
# result here; a kit that cannot start (no python3-pika) is a failure with
# its reason, not a skip.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
URL=${WARREN_TEST_URL:?run through scripts/run-tests.sh}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
worker_pid=
cleanup() {
	[ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
}
trap cleanup EXIT
# Debian's interpreter, which has python3-pika and python3-msgpack: not
# necessarily the first python3 on PATH.
PY=/usr/bin/python3

# kit SCRIPT [VAR=VALUE...]: runs one suite; each "ok"/"FAIL" line of its
# output is a result here.
kit() {
	local script=$1 out line
	shift
	out=$(env "$@" AMQP_URL="$URL" "$PY" "$ROOT/tests/conformance/$script" 2>&1)
	printf '%s\n' "$out" | grep -v '^ok \|^FAIL ' | sed "s/^/# $script: /"
	while IFS= read -r line; do
		case $line in
		"ok    "*) pass "$script: ${line#ok    }" ;;
		"FAIL  "*) flunk "$script: ${line#FAIL  }" ;;
		esac
	done <<<"$out"
	grep -q '^[0-9]* passed, 0 failed$' <<<"$out" || grep -q '^FAIL ' <<<"$out" ||
		flunk "$script did not run to its summary" "$out"
}

start_worker
kit check_worker.py SERVICE=example
kit check_caller.py CALLER="$BIN/rpc-call -o broker.url=$URL"
summary
