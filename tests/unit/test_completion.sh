#!/usr/bin/env bash
# test_completion.sh: the bash completion of config/rpc-call.bash offers
# rpc-call's options, every configuration key after -o (from rpc-call -K,
# which must list exactly the keys of warren.conf(5)), methods, and
# rpc-dlq's commands.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
BUILD_DIR=${WARREN_BUILD:-build}
export PATH=$ROOT/$BUILD_DIR/bin:$PATH

# complete WORDS...: what the completion offers for the last word.
complete_words() {
	bash -c '. config/rpc-call.bash; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1));
		"$(complete -p "$1" | sed "s/.*-F \([^ ]*\) .*/\1/")"; printf "%s\n" "${COMPREPLY[@]}"' _ "$@"
}

check "options" 0 '-b
-c' '' -- bash -c "$(declare -f complete_words); complete_words rpc-call '-' | grep -E '^-(b|c)$' | sort"
check "long options" 0 '--help
--version' '' -- bash -c "$(declare -f complete_words); complete_words rpc-call '--' | grep -E '^--(help|version)$' | sort"
check "--option offers keys with =" 0 'broker.heartbeat=' '' -- \
	bash -c "$(declare -f complete_words); complete_words rpc-call --option broker.hea"
check "-o offers keys with =" 0 'broker.heartbeat=' '' -- \
	bash -c "$(declare -f complete_words); complete_words rpc-call -o broker.hea"
check "methods" 0 'user.preferences.get
user.preferences.set' '' -- bash -c "$(declare -f complete_words); complete_words rpc-call user.pre"
check "rpc-dlq commands and services" 0 'replay
user' '' -- bash -c "$(declare -f complete_words); complete_words rpc-dlq re; complete_words rpc-dlq replay us"
keys_page=$(sed -n 's/^\.It Cm \([a-z_]*\.[a-z_]*\)$/\1/p' man/warren.conf.5 | sort)
check "rpc-call -K lists exactly the keys of warren.conf(5)" 0 "$keys_page" '' -- \
	bash -c "rpc-call -K | sort"
summary
