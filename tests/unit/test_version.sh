#!/usr/bin/env bash
# test_version.sh: the version is written in one place, WARREN_VERSION in
# src/rpc/warren.h. The Makefile takes it from there (the library's file
# name, warren.pc), spells none of its own, and refuses to build from a
# header that lost it; the programs print it.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
BUILD_DIR=${WARREN_BUILD:-build}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

header=$(warren_version .)
if [[ $header =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
	pass "warren.h defines WARREN_VERSION as X.Y.Z ($header)"
else
	flunk "src/rpc/warren.h: WARREN_VERSION is \"$header\", not X.Y.Z"
fi
check "make version prints warren.h's version" 0 "$header" '' -- \
	make -s --no-print-directory version
check "the Makefile spells no version of its own" 1 '' '' -- \
	grep -nE '^[[:space:]]*VERSION[[:space:]]*[:?]?=[[:space:]]*[0-9]' Makefile
check "the shared library is named after warren.h's version" 0 \
	"$BUILD_DIR/lib/libwarren.so.$header" '' -- \
	bash -c "ls '$BUILD_DIR/lib/libwarren.so.$header'"
check "rpc-call prints warren.h's version" 0 "rpc-call $header" '' -- \
	"$BUILD_DIR/bin/rpc-call" --version

# A header without the define: make stops and says where the version belongs.
mkdir -p "$TMP/src/rpc"
cp Makefile "$TMP/"
sed 's/^#define WARREN_VERSION .*$/#define WARREN_VERSION_LOST 1/' src/rpc/warren.h >"$TMP/src/rpc/warren.h"
check "make refuses a warren.h without WARREN_VERSION" 2 '' \
	'*** src/rpc/warren.h: no WARREN_VERSION "X.Y.Z" to take the version from.  Stop.' -- \
	bash -c "make -s --no-print-directory -C '$TMP' version 2>&1 >/dev/null | sed 's/^Makefile:[0-9]*: //' >&2; exit \${PIPESTATUS[0]}"
summary
