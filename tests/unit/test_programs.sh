#!/usr/bin/env bash
# test_programs.sh: every program answers the standard options the same way
# (warren(7), EXIT STATUS): -h/--help prints its usage on stdout and exits 0,
# -V/--version prints "PROGRAM VERSION" and exits 0, an unknown option or one
# without its value prints the exact error and the usage on stderr and exits
# 2 (usage). No broker: none of these reaches one.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
BIN=$ROOT/${WARREN_BUILD:-build}/bin
VERSION=$(warren_version .)

declare -A usage help
usage[rpc-call]='usage: rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-m MESSAGE_ID]
                [-j] [-T] [-1] [-v] [-n COUNT [-P IN_FLIGHT]] METHOD [PARAMS | - | @FILE]
       rpc-call [-c FILE] [-o key=value]... [-t SECONDS] [-j] [-T] [-v] -b
       rpc-call -h | -V'
usage[rpc-dlq]='usage: rpc-dlq [-c FILE] [-o key=value]... COMMAND SERVICE [OPTIONS] (rpc-dlq -h for more)'
help[rpc-dlq]='usage: rpc-dlq [-c FILE] [-o key=value]... COMMAND SERVICE [OPTIONS]
the dead letters in the queue rpc.SERVICE.dlq:
  list SERVICE [FILTERS] [-n COUNT]       one line each, oldest first
  show SERVICE CORRELATION_ID             properties, headers and body
  replay SERVICE [FILTERS] [-n COUNT] [--dry-run]
                                          publish again to exchange rpc
  purge SERVICE [FILTERS] [-n COUNT] [--yes]
                                          remove (asks unless --yes)
  export SERVICE [FILTERS] [-n COUNT]     JSON lines on standard output
  import SERVICE                          JSON lines from standard input
FILTERS: --method METHOD[*] --reason REASON[*] --older-than DURATION
         --newer-than DURATION (DURATION: 90s, 5m, 2h, 4d)'
usage[notify-user]='usage: notify-user [-c FILE] [-o key=value]... [-t SECONDS] -i ID | -e EMAIL | -a MESSAGE
       notify-user -h | -V'
usage[warren-key]='usage: warren-key generate mac|ed25519 ID DIR
       warren-key public SECRET_FILE
       warren-key -h | -V'
usage[example-service]='usage: example-service [-c FILE] [-o key=value]... [-h] [-V]'
usage[user-service]='usage: user-service [-c FILE] [-o key=value]... [-h] [-V]'

if [ -n "$VERSION" ]; then
	pass "warren.h defines WARREN_VERSION ($VERSION)"
else
	flunk "src/rpc/warren.h: no #define WARREN_VERSION"
fi

for p in rpc-call rpc-dlq notify-user warren-key example-service user-service; do
	want_help=${help[$p]:-${usage[$p]}}
	check "$p -h prints its usage on stdout" 0 "$want_help" '' -- "$BIN/$p" -h
	check "$p --help prints its usage on stdout" 0 "$want_help" '' -- "$BIN/$p" --help
	check "$p -V prints its version" 0 "$p $VERSION" '' -- "$BIN/$p" -V
	check "$p --version prints its version" 0 "$p $VERSION" '' -- "$BIN/$p" --version
	check "$p: an unknown short option is a usage error" 2 '' "$p: unknown option -x
${usage[$p]}" -- "$BIN/$p" -x
	check "$p: an unknown long option is a usage error" 2 '' "$p: unknown option --frobnicate
${usage[$p]}" -- "$BIN/$p" --frobnicate=1
	[ "$p" = warren-key ] && continue
	check "$p: --config without its value is a usage error" 2 '' "$p: option --config needs a value
${usage[$p]}" -- "$BIN/$p" --config
	check "$p: -o without its value is a usage error" 2 '' "$p: option -o needs a value
${usage[$p]}" -- "$BIN/$p" -o
done

# Long options stand beside the short ones: the same configuration error
# through -o and --option (exit 3, configuration).
for p in rpc-call rpc-dlq notify-user example-service user-service; do
	for o in -o --option; do
		args=(list example)
		[ "$p" = rpc-call ] && args=(example.echo)
		[ "$p" = notify-user ] && args=(-i 1 hi)
		[ "$p" = example-service ] || [ "$p" = user-service ] && args=()
		check "$p $o sets a configuration key" 3 '' "$p: unknown key \"broker.urll\"" -- \
			"$BIN/$p" "$o" broker.urll=x "${args[@]}"
	done
done
summary
