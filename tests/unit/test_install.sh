#!/usr/bin/env bash
# test_install.sh: make install puts every file where the Makefile's header
# says, as shipped (units with their paths rewritten for another PREFIX),
# keeps a configuration file already there, and make uninstall removes all it
# installed. Installs into a temporary DESTDIR only.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
TMP=$(mktemp -d /tmp/warren-install.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"

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

# ---------------------------------------------------------------- PREFIX=/usr/local
D=$TMP/default
expected=$(
	{
		printf '%s\n' usr/local/bin/rpc-call usr/local/bin/rpc-dlq usr/local/sbin/user-service \
			usr/local/include/warren/warren.h usr/local/lib/libwarren.a \
			usr/local/lib/libwarren.so usr/local/lib/libwarren.so.0 \
			usr/local/lib/libwarren.so.0.1.0 \
			etc/warren/warren.conf etc/warren/user-service.conf \
			usr/local/lib/systemd/system/user-service.service \
			usr/local/lib/systemd/system/user-service@.service \
			usr/local/share/warren/definitions.json
		for p in man/*.[1-9]; do
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
for p in man/*.[1-9]; do
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
	[ -f "$D/opt/warren/share/man/man8/user-service.8" ]; then
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

summary
