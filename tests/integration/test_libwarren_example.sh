#!/usr/bin/env bash
# test_libwarren_example.sh: the programs in the EXAMPLES section of
# man/libwarren.3 are real. The page's C blocks (the ".Bd -literal" blocks
# without an offset: first the caller, then the service; the shell session is
# indented) are taken out, un-escaped, compiled against the build tree's
# static library with warnings as errors, and run against the private broker:
# the caller first against example-service, then against the page's own
# service, a daemon on warren_daemon: its standard options, answering
# rpc-call and the page's caller, its own key echo.tag reloaded on SIGHUP,
# and a clean stop on SIGTERM.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
URL=${WARREN_TEST_URL:?run through scripts/run-tests.sh}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PAGE=$ROOT/man/libwarren.3
LIB=$BIN/../lib/libwarren.a
export WARREN_URL=$URL
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
tmp=$(mktemp -d)
service_pid=
worker_pid=

cleanup() {
	[ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
	[ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# example N: the Nth un-indented literal block of the EXAMPLES section, as
# mdoc source.
example() {
	awk -v want="$1" '
		/^\.Sh / { in_examples = ($0 == ".Sh EXAMPLES") }
		in_examples && $0 == ".Bd -literal" { n++; if (n == want) { on = 1; next } }
		on && $0 == ".Ed" { exit }
		on { print }
	' "$PAGE"
}

# unescape: mdoc to C. \e is a backslash, \& and \- are what a literal
# display needs; any other escape would be a mistake in the page.
unescape() {
	local src=$1 out=$2 marked
	marked=$(sed -e 's/\\e/\x01/g' -e 's/\\&//g' -e 's/\\-/-/g' "$src")
	if grep -nF "\\" <<<"$marked" >"$tmp/escapes"; then
		flunk "$(basename "$out"): escapes other than \\e, \\& and \\- in the page" \
			"$(cat "$tmp/escapes")"
		return 1
	fi
	printf '%s\n' "$marked" | tr '\001' "\\" >"$out"
}

# The header as a program outside the tree includes it: <warren/warren.h>.
mkdir -p "$tmp/include/warren"
ln -s "$ROOT/src/rpc/warren.h" "$tmp/include/warren/warren.h"
# The libraries the Makefile links its programs with, and the sanitizers of
# a SANITIZE=1 build, whose objects need their runtime.
read -ra dep_libs <<<"$(sed -n 's/^DEP_LIBS *:= *//p' "$ROOT/Makefile")"
sanitizers_of "$LIB"

compile() {
	local name=$1
	check "the page's $name compiles without a warning" 0 '' '' -- \
		cc -std=c11 -pedantic -Wall -Wextra -Wshadow -Wstrict-prototypes -Wwrite-strings \
		-Wmissing-prototypes -Werror "${SAN[@]}" -I"$tmp/include" -o "$tmp/$name" \
		"$tmp/$name.c" "$LIB" "${dep_libs[@]}" -pthread
}

example 1 >"$tmp/echo-call.mdoc"
example 2 >"$tmp/echo-service.mdoc"
for name in echo-call echo-service; do
	if [ ! -s "$tmp/$name.mdoc" ]; then
		flunk "$name: no such block in the EXAMPLES section of man/libwarren.3"
	elif unescape "$tmp/$name.mdoc" "$tmp/$name.c"; then
		compile "$name"
	fi
done
if [ ! -x "$tmp/echo-call" ] || [ ! -x "$tmp/echo-service" ]; then
	summary
	exit 1
fi

# ready: example.echo answers.
ready() {
	for _ in $(seq 1 100); do
		"$BIN/rpc-call" -t 0.5 example.echo >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

"$BIN/example-service" -o "broker.url=$URL" -o log.level=warn &
service_pid=$!
ready || flunk "example-service did not come up"

call=(timeout 60 "$tmp/echo-call")
check "the caller sends its default params" 0 '{"greeting":"hello"}' '' -- "${call[@]}"
# As the page shows it.
check "the caller prints the result as compact JSON" 0 '{"a":[1,2.5,null]}' '' -- \
	"${call[@]}" '{"a": [1, 2.5, null]}'
check "the caller refuses bad JSON params" 1 '' \
	"echo-call: params: line 1, column 4: ':' expected near end of file" -- "${call[@]}" '{"a"'
check "the caller reports an unreachable broker" 1 '' \
	'echo-call: cannot connect to 127.0.0.1:1: a socket error occurred' -- \
	env WARREN_URL=amqp://guest:guest@127.0.0.1:1/ "${call[@]}"
check "the caller reports a bad WARREN_URL" 1 '' \
	'echo-call: broker.url: "http://x" is not an amqp:// or amqps:// URL' -- \
	env WARREN_URL=http://x "${call[@]}"

# The page's service: the standard options of every daemon.
svc=$tmp/echo-service
VERSION=$(warren_version "$ROOT")
check "the page's service answers -h with its usage on stdout" 0 \
	'usage: echo-service [-c FILE] [-o key=value]... [-h] [-V]' '' -- "$svc" -h
check "the page's service answers --version" 0 "echo-service $VERSION" '' -- "$svc" --version
check "the page's service refuses an unknown option (usage, 2)" 2 '' \
	'echo-service: unknown option -x
usage: echo-service [-c FILE] [-o key=value]... [-h] [-V]' -- "$svc" -x
check "the page's service refuses a key it does not have (configuration, 3)" 3 '' \
	'echo-service: unknown key "echo.tags"' -- "$svc" -o echo.tags=x

# Now the page's service alone serves example.echo, tagged from its file.
kill "$service_pid"
wait "$service_pid" 2>/dev/null
service_pid=
printf '[broker]\nurl = %s\n[echo]\ntag = one\n' "$URL" >"$tmp/echo.conf"
"$svc" -c "$tmp/echo.conf" 2>"$tmp/echo-service.log" &
worker_pid=$!
ready || flunk "the page's service did not come up" "$(cat "$tmp/echo-service.log")"
check "the page's service answers rpc-call, tagged" 0 '{"tag":"one","params":{"a":1}}' '' -- \
	"$BIN/rpc-call" example.echo '{"a": 1}'
check "the page's service answers the page's caller" 0 \
	'{"tag":"one","params":["from","the","page"]}' '' -- "${call[@]}" '["from", "the", "page"]'
# SIGHUP applies the new tag: echo.tag is reloadable.
printf '[broker]\nurl = %s\n[echo]\ntag = two\n' "$URL" >"$tmp/echo.conf"
kill -HUP "$worker_pid"
for _ in $(seq 1 50); do
	grep -q 'msg="configuration reloaded" keys=echo.tag' "$tmp/echo-service.log" && break
	sleep 0.1
done
check "after SIGHUP the page's service answers with the new tag" 0 '{"tag":"two","params":{"a":1}}' '' -- \
	"$BIN/rpc-call" example.echo '{"a": 1}'
kill -TERM "$worker_pid"
wait "$worker_pid"
status=$?
worker_pid=
if [ "$status" = 0 ] && grep -q 'msg="stopped"' "$tmp/echo-service.log"; then
	pass "the page's service drains and stops on SIGTERM with status 0"
else
	flunk "the page's service stopped with status $status" "$(cat "$tmp/echo-service.log")"
fi

summary
