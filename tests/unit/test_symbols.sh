#!/usr/bin/env bash
# test_symbols.sh: libwarren exports warren_* and nothing else, from the
# static library as from the shared one, so that a program may name its own
# functions as it likes (log_event, config_int...) whichever it links.
# Every function warren.h declares (WARREN_API, read from the header itself,
# so that a new declaration is covered) links from both libraries, every
# global symbol they define is one of those, and a program that defines
# functions named as libwarren's internal ones links statically and is
# never called by the library in their place.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
BUILD_DIR=${WARREN_BUILD:-build}
LIB=$ROOT/$BUILD_DIR/lib
CC=${CC:-cc}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# A build made with SANITIZE=1 needs the sanitizers in every program it links.
sanitizers_of "$LIB/libwarren.a"
# The libraries libwarren needs, as the Makefile links them.
# shellcheck disable=SC2016 # $(DEP_LIBS) is for make
read -ra DEP_LIBS <<<"$(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory \
	-C "$ROOT" --eval 'print-dep-libs: ; @echo $(DEP_LIBS)' print-dep-libs 2>/dev/null)"

# ------------------------------------------------------------ what warren.h declares
# The functions warren.h declares: the name after each WARREN_API (comments
# and preprocessor lines left out), and as many as there are WARREN_API.
strip='s{/\*.*?\*/}{}gs; s{^\s*#.*$}{}mg;'
perl -0777 -ne "$strip"' while (/\bWARREN_API\b[^;(]*?\b(warren_\w+)\s*\(/g) { print "$1\n" }' \
	src/rpc/warren.h | sort -u >"$TMP/declared"
n_api=$(perl -0777 -ne "$strip"' my $n = () = /\bWARREN_API\b/g; print $n' src/rpc/warren.h)
n_declared=$(wc -l <"$TMP/declared")
if [ "$n_declared" -gt 0 ] && [ "$n_declared" = "$n_api" ]; then
	pass "warren.h: each of its $n_api WARREN_API declarations names one warren_ function"
else
	flunk "warren.h: $n_api WARREN_API declarations, but $n_declared warren_ functions read from them" \
		"$(cat "$TMP/declared")"
fi

# ------------------------------------------------------------ what the libraries export
# exported FILE: "NAME TYPE" for each global symbol FILE defines (for the
# shared library, its dynamic symbol table: what a program can bind to).
exported() {
	case $1 in
	*.so) nm -D --defined-only "$1" ;;
	*) nm -g --defined-only "$1" ;;
	esac | awk 'NF == 3 { print $3, $2 }' | sort -u
}

for lib in libwarren.a libwarren.so; do
	if [ ! -e "$LIB/$lib" ]; then
		flunk "$BUILD_DIR/lib/$lib: not built (make first)"
		continue
	fi
	exported "$LIB/$lib" >"$TMP/$lib.syms"
	others=$(grep -v '^warren_' "$TMP/$lib.syms")
	if [ -z "$others" ]; then
		pass "$lib: every global symbol it defines is warren_* ($(wc -l <"$TMP/$lib.syms"))"
	else
		flunk "$lib defines $(wc -l <<<"$others") global symbols without the warren_ prefix (name, nm type)" \
			"$others"
	fi
	undeclared=$(grep '^warren_' "$TMP/$lib.syms" | cut -d' ' -f1 | sort -u | comm -23 - "$TMP/declared")
	if [ -z "$undeclared" ]; then
		pass "$lib: every warren_ symbol it defines is declared in warren.h"
	else
		flunk "$lib defines warren_ symbols that warren.h does not declare" "$undeclared"
	fi
done

# ------------------------------------------------------------ every declared function links
# A program that takes the address of every function warren.h declares:
# each must resolve, from libwarren.a and (every symbol bound at start,
# LD_BIND_NOW) from libwarren.so.
{
	echo '#include <stdio.h>'
	echo '#include "warren.h"'
	echo 'typedef void (*fn)(void);'
	echo 'static const fn fns[] = {'
	sed 's/.*/\t(fn)&,/' "$TMP/declared"
	echo '};'
	echo 'int main(void)'
	echo '{'
	echo '	size_t n = 0;'
	echo '	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {'
	echo '		n += fns[i] != NULL;'
	echo '	}'
	echo '	return n == 0; /* what counts is that it links and starts */'
	echo '}'
} >"$TMP/every.c"

if "$CC" -Wall -Werror "${SAN[@]}" -Isrc/rpc -o "$TMP/every-a" "$TMP/every.c" "$LIB/libwarren.a" \
	"${DEP_LIBS[@]}" -pthread >"$TMP/cc-every-a.log" 2>&1; then
	pass "a program naming every function of warren.h links with libwarren.a"
else
	flunk "a program naming every function of warren.h does not link with libwarren.a" \
		"$(grep -e 'undefined reference' -e error "$TMP/cc-every-a.log" | head -n 40)"
fi
check "... and runs" 0 '' '' -- "$TMP/every-a"

if "$CC" -Wall -Werror "${SAN[@]}" -Isrc/rpc -o "$TMP/every-so" "$TMP/every.c" -L"$LIB" -lwarren \
	-pthread >"$TMP/cc-every-so.log" 2>&1; then
	pass "a program naming every function of warren.h links with libwarren.so"
else
	flunk "a program naming every function of warren.h does not link with libwarren.so" \
		"$(grep -e 'undefined reference' -e error "$TMP/cc-every-so.log" | head -n 40)"
fi
check "... and runs, every symbol bound at start" 0 '' '' -- \
	env LD_BIND_NOW=1 LD_LIBRARY_PATH="$LIB" "$TMP/every-so"

# ------------------------------------------------------------ a program's own names
# log_event and config_int are names libwarren uses inside itself; a
# program's own stay its own. Each prints when it runs, and is called once
# by main: a library that called them in place of its own
# (warren_log_configure reads log.level with config_int) would print more.
cat >"$TMP/own.c" <<'EOF'
#include <stdio.h>
#include "warren.h"

int log_event(const char *what);
int config_int(const char *key);

int log_event(const char *what)
{
	printf("the program's log_event: %s\n", what);
	return 0;
}

int config_int(const char *key)
{
	printf("the program's config_int: %s\n", key);
	return 7;
}

int main(void)
{
	warren_config *cfg = warren_config_new();
	char why[256] = "";

	if (cfg == NULL || warren_config_set(cfg, "log.level", "error", why, sizeof(why)) != WARREN_OK) {
		fprintf(stderr, "warren_config_set: %s\n", why);
		return 1;
	}
	warren_log_configure(cfg, "own");
	log_event("main");
	printf("%d\n", config_int("main"));
	printf("log.level=%s\n", warren_config_get(cfg, "log.level"));
	warren_config_free(cfg);
	return 0;
}
EOF
own_out="the program's log_event: main
the program's config_int: main
7
log.level=error"

if "$CC" -Wall -Werror "${SAN[@]}" -Isrc/rpc -o "$TMP/own-a" "$TMP/own.c" "$LIB/libwarren.a" \
	"${DEP_LIBS[@]}" -pthread >"$TMP/cc-own-a.log" 2>&1; then
	pass "a program defining its own log_event and config_int links with libwarren.a"
else
	flunk "a program defining its own log_event and config_int does not link with libwarren.a" \
		"$(grep -e 'multiple definition' -e error "$TMP/cc-own-a.log" | head -n 20)"
fi
check "... and the library calls its own, not the program's" 0 "$own_out" '' -- "$TMP/own-a"

if "$CC" -Wall -Werror "${SAN[@]}" -Isrc/rpc -o "$TMP/own-so" "$TMP/own.c" -L"$LIB" -lwarren \
	-pthread >"$TMP/cc-own-so.log" 2>&1; then
	pass "a program defining its own log_event and config_int links with libwarren.so"
else
	flunk "a program defining its own log_event and config_int does not link with libwarren.so" \
		"$(grep -e 'multiple definition' -e error "$TMP/cc-own-so.log" | head -n 20)"
fi
check "... and the library calls its own, not the program's" 0 "$own_out" '' -- \
	env LD_LIBRARY_PATH="$LIB" "$TMP/own-so"

summary
