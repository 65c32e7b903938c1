#!/usr/bin/env bash
# test_lib_sources.sh: libwarren is the files the Makefile names as the
# library, and nothing of the programs. Every C file under src/ is in
# exactly one of the Makefile's lists (the library, the programs' shared
# modules, each program's own files), so that a new file joins the
# library only by being named there; the library's objects define no main
# and none of the programs' modules' functions.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
BUILD_DIR=${WARREN_BUILD:-build}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# "lib FILES", "tool FILES", then "prog NAME FILES" for each program.
make -s --no-print-directory sources >"$TMP/lists"
for list in lib tool; do
	sed -n "s/^$list //p" "$TMP/lists" | tr ' ' '\n' | sed '/^$/d' | sort >"$TMP/$list"
done
sed -n 's/^prog [^ ]* //p' "$TMP/lists" | tr ' ' '\n' | sed '/^$/d' | sort >"$TMP/prog"
sort "$TMP"/lib "$TMP"/tool "$TMP"/prog >"$TMP/listed"
find src -name '*.c' | sort >"$TMP/found"

check "every C file under src/ is in one of the Makefile's lists" 0 '' '' -- \
	comm -23 "$TMP/found" "$TMP/listed"
check "no file is in two lists" 0 '' '' -- \
	bash -c "uniq -d '$TMP/listed'"
check "the library names no program" 0 '' '' -- \
	comm -12 "$TMP/lib" "$TMP/prog"
check "the library names none of the programs' shared modules" 0 '' '' -- \
	comm -12 "$TMP/lib" "$TMP/tool"

# The library's objects as compiled, before libwarren.a and libwarren.so
# make all but warren_* local (test_symbols.sh): the internal archive.
lib="$BUILD_DIR/lib/libwarren-internal.a"
nm -g --defined-only "$lib" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u >"$TMP/defined"
check "the library's objects define functions" 0 '' '' -- \
	test -s "$TMP/defined"
check "the library's objects define no main" 1 '' '' -- \
	grep -x main "$TMP/defined"
# What the programs' objects define (every non-static function of their
# own files and of their shared modules, main aside): none of it may be in
# the library too.
sed 's#^src/\(.*\)\.c$#'"$BUILD_DIR"'/obj/src/\1.o#' "$TMP/tool" "$TMP/prog" >"$TMP/prog-objs"
# shellcheck disable=SC2046
nm -g --defined-only $(cat "$TMP/prog-objs") 2>/dev/null | awk 'NF == 3 { print $3 }' |
	grep -vx main | sort -u >"$TMP/prog-defined"
check "the programs' objects define functions of their own" 0 '' '' -- \
	test -s "$TMP/prog-defined"
check "the library's objects define none of the programs' modules' functions" 1 '' '' -- \
	grep -Fxf "$TMP/prog-defined" "$TMP/defined"
summary
