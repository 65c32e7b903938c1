#!/usr/bin/env bash
# test_services_public.sh: user-service and example-service are written on
# the public header alone. Each service's sources are copied out of the tree,
# their #include "warren.h" rewritten to <warren/warren.h>, and built against
# a library installed into a temporary DESTDIR with nothing but the flags of
# pkg-config --cflags --libs warren (and libpq's for user-service): no
# -Isrc/..., no internal archive. The programs built answer -V and -h as the
# tree's do. Installs into a temporary DESTDIR only.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
TMP=$(mktemp -d /tmp/warren-services.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
CC=${CC:-cc}

# The build directory the tests were built in (as test_install.sh finds it).
BUILD=
for b in ${WARREN_BUILD:+"$WARREN_BUILD"} build build/san build/*; do
	if [ -x "$b/bin/user-service" ] && [ -x "$b/bin/example-service" ]; then
		BUILD=$b
		break
	fi
done
if [ -z "$BUILD" ]; then
	flunk "no built user-service and example-service in build/: run make first"
	summary
	exit 1
fi
sanitizers_of "$BUILD/lib/libwarren.a"

D=$TMP/dest
P=/opt/warren-svc
L=$D$P/lib
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -C "$ROOT" BUILD="$BUILD" \
	DESTDIR="$D" PREFIX="$P" install >"$TMP/install.log" 2>&1; then
	pass "make install DESTDIR=... PREFIX=$P"
else
	flunk "make install DESTDIR=... PREFIX=$P" "$(tail -n 20 "$TMP/install.log")"
fi
pcd() { PKG_CONFIG_SYSROOT_DIR=$D PKG_CONFIG_PATH="$L/pkgconfig" pkg-config --print-errors "$@"; }
read -ra cflags <<<"$(pcd --cflags warren)"
read -ra libs <<<"$(pcd --libs warren)"
read -ra pq <<<"$(pkg-config --cflags --libs libpq 2>/dev/null || echo -I/usr/include/postgresql -lpq)"

# build NAME DIR [FLAGS...]: the service's C files and headers copied from
# DIR, built into $TMP/NAME.
build() {
	local name=$1 dir=$2 out=$TMP/$1-src h
	shift 2
	mkdir -p "$out"
	for f in "$dir"/*.[ch]; do
		as_public_include "$f" >"$out/${f##*/}"
	done
	# Every quoted include left names a header of the service's own.
	local foreign=()
	while read -r h; do
		[ -f "$out/$h" ] || foreign+=("$h")
	done < <(sed -n 's/^#include "\(.*\)"$/\1/p' "$out"/*.[ch] | sort -u)
	if [ "${#foreign[@]}" = 0 ] && grep -qx '#include <warren/warren.h>' "$out"/*.[ch]; then
		pass "$name includes <warren/warren.h> and no header of the library's tree"
	else
		flunk "$name includes headers that are not its own: ${foreign[*]}"
	fi
	if "$CC" -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter "${SAN[@]}" "${cflags[@]}" \
		-o "$TMP/$name" "$out"/*.c "${libs[@]}" "$@" >"$TMP/$name-cc.log" 2>&1; then
		pass "$name builds with pkg-config --cflags --libs warren alone"
	else
		flunk "$name does not build with pkg-config --cflags --libs warren alone" \
			"$(tail -n 20 "$TMP/$name-cc.log")"
	fi
}

build example-service src/workers/example
build user-service src/workers/user "${pq[@]}"

VERSION=$(warren_version .)
for name in example-service user-service; do
	check "$name built outside the tree answers -V" 0 "$name $VERSION" '' -- \
		env LD_LIBRARY_PATH="$L" "$TMP/$name" -V
	check "$name built outside the tree answers -h as the tree's does" 0 \
		"$("$BUILD/bin/$name" -h)" '' -- env LD_LIBRARY_PATH="$L" "$TMP/$name" -h
done
# And its configuration errors, its own keys included.
check "user-service built outside the tree refuses a database password in -o" 3 '' \
	'user-service: -o db.conninfo: a password on the command line can be read by every user of this machine; put it in db.conninfo_file or the configuration file' -- \
	env LD_LIBRARY_PATH="$L" "$TMP/user-service" -o 'db.conninfo=host=db password=x'
summary
