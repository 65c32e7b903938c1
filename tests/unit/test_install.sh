#!/usr/bin/env bash
# test_install.sh: make install puts every file where the Makefile's header
# says, as shipped (units with their paths rewritten for another PREFIX),
# keeps a configuration file already there, and make uninstall removes all it
# installed; a program written on the public API builds against the installed
# library with the flags of warren.pc alone (pkg-config --cflags --libs warren,
# --static for libwarren.a). Installs into a temporary DESTDIR only.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"
# The version, from the one place it is written.
VERSION=$(warren_version .)
TMP=$(mktemp -d /tmp/warren-install.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# The build directory the tests were built in: $WARREN_BUILD (the test
# runner's), else the first one holding a built user-service.
find_build() {
	local b
	for b in ${WARREN_BUILD:+"$WARREN_BUILD"} build build/san build/*; do
		if [ -x "$b/bin/user-service" ]; then
			echo "$b"
			return 0
		fi
	done
	return 1
}

# mk LOG ARGS...: make in the source tree, not steered by a parent make.
mk() {
	local log=$1
	shift
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -C "$ROOT" \
		BUILD="$BUILD" "$@" >"$log" 2>&1
}

# Files and links under a directory, relative and sorted.
tree() {
	(cd "$1" && find . \( -type f -o -type l \) | sed 's#^\./##' | sort)
}

BUILD=$(find_build) || {
	flunk "no built user-service in build/: run make first"
	echo "$passed passed, $failed failed"
	exit 1
}

# The pages of the programs make install installs: every page but those of
# the two example programs (notify-user, example-service), which are built
# in the tree and not installed, so neither are their pages.
installed_pages() {
	for p in man/*.[1-9]; do
		case "$p" in
		man/notify-user.1 | man/example-service.8) ;;
		*) echo "$p" ;;
		esac
	done
}

# ---------------------------------------------------------------- PREFIX=/usr/local
D=$TMP/default
expected=$(
	{
		printf '%s\n' usr/local/bin/rpc-call usr/local/bin/rpc-dlq usr/local/bin/warren-key usr/local/sbin/user-service \
			usr/local/include/warren/warren.h usr/local/lib/libwarren.a \
			usr/local/lib/libwarren.so usr/local/lib/libwarren.so.0 \
			"usr/local/lib/libwarren.so.$VERSION" usr/local/lib/pkgconfig/warren.pc \
			etc/warren/warren.conf etc/warren/user-service.conf \
			usr/local/lib/systemd/system/user-service.service \
			usr/local/lib/systemd/system/user-service@.service \
			usr/local/share/warren/definitions.json \
			usr/local/share/bash-completion/completions/rpc-call \
			usr/local/share/bash-completion/completions/rpc-dlq
		for p in $(installed_pages); do
			echo "usr/local/share/man/man${p##*.}/${p##*/}"
		done
	} | sort
)
if mk "$TMP/install.log" DESTDIR="$D" install; then
	pass "make install DESTDIR=... (BUILD=$BUILD)"
else
	flunk "make install DESTDIR=... (BUILD=$BUILD)" "$(tail -n 20 "$TMP/install.log")"
fi
if d=$(diff <(echo "$expected") <(tree "$D")); then
	pass "make install installs exactly the expected $(echo "$expected" | wc -l) files"
else
	flunk "make install: installed files differ from the expected ones (< expected, > installed)" "$d"
fi

# With the default paths, every file is installed as shipped.
same() {
	if cmp -s "$1" "$D/$2"; then
		pass "$2 is $1"
	else
		flunk "$2 differs from $1"
	fi
}
for p in $(installed_pages); do
	same "$p" "usr/local/share/man/man${p##*.}/${p##*/}"
done
same config/warren.conf etc/warren/warren.conf
same config/user-service.conf etc/warren/user-service.conf
same config/user-service.service usr/local/lib/systemd/system/user-service.service
same config/user-service@.service usr/local/lib/systemd/system/user-service@.service
same rabbitmq/definitions.json usr/local/share/warren/definitions.json
same "$BUILD/bin/user-service" usr/local/sbin/user-service
if [ -x "$D/usr/local/sbin/user-service" ] && [ ! -x "$D/etc/warren/warren.conf" ]; then
	pass "user-service is executable, the configuration is not"
else
	flunk "modes: user-service must be executable, etc/warren/warren.conf not"
fi

# An edited configuration survives install and uninstall.
echo '# edited by the operator' >>"$D/etc/warren/user-service.conf"
mk "$TMP/reinstall.log" DESTDIR="$D" install
if tail -n 1 "$D/etc/warren/user-service.conf" | grep -qx '# edited by the operator'; then
	pass "make install keeps an existing etc/warren/user-service.conf"
else
	flunk "make install overwrote an edited etc/warren/user-service.conf"
fi
if mk "$TMP/uninstall.log" DESTDIR="$D" uninstall; then
	pass "make uninstall DESTDIR=..."
else
	flunk "make uninstall DESTDIR=..." "$(tail -n 20 "$TMP/uninstall.log")"
fi
left=$(tree "$D")
if [ "$left" = etc/warren/user-service.conf ]; then
	pass "make uninstall removes everything but the edited configuration"
else
	flunk "make uninstall left other files than the edited etc/warren/user-service.conf" "$left"
fi

# ---------------------------------------------------------------- other paths
D=$TMP/opt
mk "$TMP/install-opt.log" DESTDIR="$D" PREFIX=/opt/warren SYSCONFDIR=/etc/opt install ||
	flunk "make install PREFIX=/opt/warren SYSCONFDIR=/etc/opt" "$(tail -n 20 "$TMP/install-opt.log")"
for unit in user-service.service user-service@.service; do
	f=$D/opt/warren/lib/systemd/system/$unit
	case $unit in
	*@.service) conf=/etc/opt/warren/user-service-%i.conf ;;
	*) conf=/etc/opt/warren/user-service.conf ;;
	esac
	if grep -qxF "ExecStart=/opt/warren/sbin/user-service -c $conf" "$f" &&
		grep -qxF 'LoadCredential=db-conninfo:/etc/opt/warren/db-conninfo' "$f" &&
		! grep -q -e /usr/local -e /etc/warren/ "$f"; then
		pass "PREFIX=/opt/warren SYSCONFDIR=/etc/opt: $unit names the installed paths"
	else
		flunk "PREFIX=/opt/warren SYSCONFDIR=/etc/opt: $unit does not name the installed paths" \
			"$(grep -n -e ExecStart -e LoadCredential -e /usr/local -e /etc/ "$f" 2>&1)"
	fi
done
if [ -f "$D/etc/opt/warren/warren.conf" ] && [ -f "$D/opt/warren/sbin/user-service" ] &&
	[ -f "$D/opt/warren/share/warren/definitions.json" ] &&
	[ -f "$D/opt/warren/share/man/man8/user-service.8" ] &&
	[ -f "$D/opt/warren/lib/pkgconfig/warren.pc" ]; then
	pass "PREFIX=/opt/warren SYSCONFDIR=/etc/opt: files under the given directories"
else
	flunk "PREFIX=/opt/warren SYSCONFDIR=/etc/opt: files missing" "$(tree "$D")"
fi
mk "$TMP/uninstall-opt.log" DESTDIR="$D" PREFIX=/opt/warren SYSCONFDIR=/etc/opt uninstall
left=$(tree "$D")
if [ -z "$left" ]; then
	pass "make uninstall PREFIX=/opt/warren SYSCONFDIR=/etc/opt removes everything"
else
	flunk "make uninstall PREFIX=/opt/warren SYSCONFDIR=/etc/opt left files" "$left"
fi

# ---------------------------------------------------------------- pkg-config
# notify-user.c, written on the public API alone, its include rewritten to
# <warren/warren.h>, builds against the installed library with nothing but
# the flags warren.pc gives: against libwarren.so, and with --static against
# libwarren.a. pkg-config reads warren.pc in DESTDIR with DESTDIR as its
# sysroot, so that the paths it names point there. (--define-variable=prefix
# would not do: it moves the prefix of the dependencies' .pc files too, whose
# -I would then hide a wrong one of warren.pc.)
D=$TMP/pc
P=/opt/warren-pc
L=$D$P/lib
CC=${CC:-cc}
# A build made with SANITIZE=1 needs the sanitizers in every program it links.
sanitizers_of "$BUILD/lib/libwarren.a"
# pc ARGS...: pkg-config on the installed warren.pc; pcd: with DESTDIR as the sysroot.
pc() { env -u PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH="$L/pkgconfig" pkg-config --print-errors "$@" warren; }
pcd() { PKG_CONFIG_SYSROOT_DIR=$D PKG_CONFIG_PATH="$L/pkgconfig" pkg-config --print-errors "$@" warren; }
# has WORD STRING: WORD is one of the words of STRING.
has() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }
# needed FILE: the libraries FILE names as NEEDED, one a line.
needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'; }

mk "$TMP/install-pc.log" DESTDIR="$D" PREFIX="$P" install ||
	flunk "make install PREFIX=$P" "$(tail -n 20 "$TMP/install-pc.log")"
got=$(pc --modversion 2>&1)
if [ -f "$L/pkgconfig/warren.pc" ] && [ "$got" = "$VERSION" ]; then
	pass "PREFIX=$P: lib/pkgconfig/warren.pc says version $VERSION, warren.h's WARREN_VERSION"
else
	flunk "PREFIX=$P: pkg-config --modversion warren: got [$got], want warren.h's WARREN_VERSION [$VERSION]"
fi
got=$(for v in prefix libdir includedir; do echo "$v=$(pc --variable=$v 2>&1)"; done)
want=$(printf 'prefix=%s\nlibdir=%s\nincludedir=%s' "$P" "$P/lib" "$P/include")
if [ "$got" = "$want" ]; then
	pass "warren.pc names the installed prefix, libdir and includedir"
else
	flunk "warren.pc: wrong directories (< want, > got)" "$(diff <(echo "$want") <(echo "$got"))"
fi
got=$(pc --define-variable=prefix=/elsewhere --variable=libdir 2>&1):$(pc \
	--define-variable=prefix=/elsewhere --variable=includedir 2>&1)
if [ "$got" = /elsewhere/lib:/elsewhere/include ]; then
	pass "warren.pc's libdir and includedir follow its prefix"
else
	flunk "warren.pc: libdir and includedir do not follow prefix=/elsewhere: got $got"
fi

cflags=$(pcd --cflags 2>&1)
libs=$(pcd --libs 2>&1)
slibs=$(pcd --static --libs 2>&1)
if has "-I$D$P/include" "$cflags" && has "-L$L" "$libs" && has -lwarren "$libs"; then
	# shellcheck disable=SC2086,SC2116 # echo joins the words
	pass "pkg-config --cflags --libs warren: $(echo $cflags $libs)"
else
	flunk "pkg-config --cflags --libs warren: want -I$D$P/include -L$L -lwarren" "$cflags $libs"
fi
# Every library the Makefile links libwarren with, and -pthread.
# shellcheck disable=SC2016 # $(DEP_LIBS) is for make
deps=$(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory -C "$ROOT" BUILD="$BUILD" \
	--eval 'print-dep-libs: ; @echo $(DEP_LIBS)' print-dep-libs 2>&1)
missing=
for l in $deps -pthread; do
	has "$l" "$slibs" || missing="$missing $l"
done
if [ -n "$deps" ] && [ -z "$missing" ] && has -lwarren "$slibs"; then
	pass "pkg-config --static --libs warren names the Makefile's DEP_LIBS ($deps) and -pthread"
else
	flunk "pkg-config --static --libs warren: missing${missing:- -lwarren} (DEP_LIBS: $deps)" "$slibs"
fi

as_public_include src/client/notify-user/notify-user.c >"$TMP/notify-user.c"
if grep -qx '#include <warren/warren.h>' "$TMP/notify-user.c" && ! grep -q '^#include "' "$TMP/notify-user.c"; then
	pass "notify-user.c includes <warren/warren.h> and no header of the source tree"
else
	flunk "notify-user.c: cannot rewrite its include to <warren/warren.h>" \
		"$(grep -n '^#include' src/client/notify-user/notify-user.c)"
fi
usage=$("$BUILD/bin/notify-user" -h 2>&1)

# Dynamically, against libwarren.so.
# shellcheck disable=SC2086 # the flags are words
if "$CC" -Wall "${SAN[@]}" $cflags -o "$TMP/notify-user-so" "$TMP/notify-user.c" $libs \
	>"$TMP/cc-so.log" 2>&1; then
	pass "notify-user.c builds with pkg-config --cflags --libs warren"
else
	flunk "notify-user.c does not build with pkg-config --cflags --libs warren" "$(tail -n 20 "$TMP/cc-so.log")"
fi
if grep -qx libwarren.so.0 <<<"$(needed "$TMP/notify-user-so")"; then
	pass "notify-user built against libwarren.so needs libwarren.so.0"
else
	flunk "notify-user built against libwarren.so does not need libwarren.so.0" "$(needed "$TMP/notify-user-so")"
fi
if grep -q "libwarren\.so\.0 => $L/libwarren\.so\.0 " <<<"$(LD_LIBRARY_PATH=$L ldd "$TMP/notify-user-so" 2>&1)"; then
	pass "with LD_LIBRARY_PATH, the loader finds the installed libwarren.so.0"
else
	flunk "with LD_LIBRARY_PATH=$L, ldd does not find the installed libwarren.so.0" \
		"$(LD_LIBRARY_PATH=$L ldd "$TMP/notify-user-so" 2>&1)"
fi
check "notify-user built against libwarren.so: -h prints its usage" 0 "$usage" "" -- \
	env LD_LIBRARY_PATH="$L" "$TMP/notify-user-so" -h

# Statically, against libwarren.a: the flags of --static, with the archive
# asked for by name (the linker would take libwarren.so for -lwarren).
static=()
for f in $slibs; do
	[ "$f" = -lwarren ] && f=-l:libwarren.a
	static+=("$f")
done
# shellcheck disable=SC2086
if "$CC" -Wall "${SAN[@]}" $cflags -o "$TMP/notify-user-a" "$TMP/notify-user.c" "${static[@]}" \
	>"$TMP/cc-a.log" 2>&1; then
	pass "notify-user.c builds with pkg-config --cflags --libs --static warren and libwarren.a"
else
	flunk "notify-user.c does not build with pkg-config --cflags --libs --static warren and libwarren.a" \
		"$(tail -n 20 "$TMP/cc-a.log")"
fi
# ... which needs those flags: without --static the link fails.
# shellcheck disable=SC2086
if "$CC" "${SAN[@]}" $cflags -o "$TMP/notify-user-a0" "$TMP/notify-user.c" \
	${libs/-lwarren/-l:libwarren.a} >/dev/null 2>&1; then
	flunk "notify-user.c links with libwarren.a without the private libraries: the static check proves nothing"
else
	pass "without --static, notify-user.c does not link with libwarren.a"
fi
libs_a=$(needed "$TMP/notify-user-a")
if [ -x "$TMP/notify-user-a" ] && ! grep -q libwarren <<<"$libs_a" && grep -q librabbitmq <<<"$libs_a"; then
	pass "notify-user built against libwarren.a needs no libwarren.so, and librabbitmq"
else
	flunk "notify-user built against libwarren.a: wrong NEEDED libraries" "$libs_a"
fi
check "notify-user built against libwarren.a: -h prints its usage" 0 "$usage" "" -- \
	env -u LD_LIBRARY_PATH "$TMP/notify-user-a" -h

mk "$TMP/uninstall-pc.log" DESTDIR="$D" PREFIX="$P" uninstall
left=$(tree "$D")
if [ -z "$left" ]; then
	pass "make uninstall PREFIX=$P removes everything, warren.pc included"
else
	flunk "make uninstall PREFIX=$P left files" "$left"
fi

# LIBDIR and INCLUDEDIR outside PREFIX are named as they are.
D=$TMP/pc-dirs
mk "$TMP/install-dirs.log" DESTDIR="$D" PREFIX="$P" LIBDIR=/srv/lib INCLUDEDIR=/srv/include install ||
	flunk "make install LIBDIR=/srv/lib INCLUDEDIR=/srv/include" "$(tail -n 20 "$TMP/install-dirs.log")"
got=$(PKG_CONFIG_SYSROOT_DIR=$D PKG_CONFIG_PATH=$D/srv/lib/pkgconfig pkg-config --print-errors \
	--cflags --libs warren 2>&1)
# (With a sysroot, pkgconf also gives -I$D/usr/include for the dependencies.)
if has "-I$D/srv/include" "$got" && has "-L$D/srv/lib" "$got" && has -lwarren "$got"; then
	pass "LIBDIR=/srv/lib INCLUDEDIR=/srv/include: warren.pc names them"
else
	flunk "LIBDIR=/srv/lib INCLUDEDIR=/srv/include: pkg-config --cflags --libs warren: want" \
		"-I$D/srv/include -L$D/srv/lib -lwarren, got: $got"
fi
mk "$TMP/uninstall-dirs.log" DESTDIR="$D" PREFIX="$P" LIBDIR=/srv/lib INCLUDEDIR=/srv/include uninstall
left=$(tree "$D")
if [ -z "$left" ]; then
	pass "make uninstall LIBDIR=/srv/lib INCLUDEDIR=/srv/include removes everything"
else
	flunk "make uninstall LIBDIR=/srv/lib INCLUDEDIR=/srv/include left files" "$left"
fi

summary
