#!/usr/bin/env bash
# test_units.sh: the systemd units in config/ are valid for systemd (checked
# by systemd-analyze verify, with ExecStart= pointed at the built
# user-service, since verify insists the program exists), are confined
# (systemd-analyze security), and carry what user-service(8) says they do.
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
UNITS=(config/user-service.service config/user-service@.service)
INSTALLED_BIN=/usr/local/sbin/user-service
MAX_EXPOSURE=2.0
TMP=$(mktemp -d /tmp/warren-units.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=tests/lib/check.sh
. "$ROOT/tests/lib/check.sh"

# The built daemon: in $WARREN_BUILD (the test runner's build directory),
# else $WARREN_BIN, else any build directory.
find_bin() {
	local b
	for b in ${WARREN_BUILD:+"$WARREN_BUILD/bin/user-service"} \
		${WARREN_BIN:+"$WARREN_BIN/user-service"} build/bin/user-service \
		build/san/bin/user-service build/*/bin/user-service; do
		if [ -x "$b" ]; then
			(cd "$(dirname "$b")" && echo "$PWD/user-service")
			return 0
		fi
	done
	return 1
}

# verify_unit FILE NAME: systemd-analyze verify must succeed and say nothing
# about the unit (it exits 0 even after "Unknown key" or a bad value).
verify_unit() {
	local file=$1 name=$2 out status
	out=$(systemd-analyze verify --man=no "$file" 2>&1)
	status=$?
	if [ "$status" -ne 0 ] || printf '%s\n' "$out" | grep -q 'user-service'; then
		flunk "systemd-analyze verify $name" "$out"
		return 1
	fi
	[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    (unrelated) /'
	pass "systemd-analyze verify $name"
}

# The unit with ExecStart= on the built binary, under its own name in $TMP.
copy_for_verify() {
	local unit=$1 bin=$2 dst
	dst=$TMP/$(basename "$unit")
	sed "s#^ExecStart=$INSTALLED_BIN #ExecStart=$bin #" "$unit" >"$dst"
	if ! grep -q "^ExecStart=$bin " "$dst"; then
		flunk "$unit: ExecStart=$INSTALLED_BIN ... to rewrite for verify"
		return 1
	fi
	echo "$dst"
}

# A duration of systemd's syntax ("30", "30s", "2min") in seconds.
seconds() {
	case $1 in
	*min) echo $((${1%min} * 60)) ;;
	*ms) echo $((${1%ms} / 1000)) ;;
	*s) echo "${1%s}" ;;
	*) echo "$1" ;;
	esac
}

if ! command -v systemd-analyze >/dev/null; then
	flunk "systemd-analyze is missing: install the Debian package systemd (scripts/deps.sh does)"
	echo "$passed passed, $failed failed"
	exit 1
fi

BIN=$(find_bin) || BIN=
if [ -z "$BIN" ]; then
	flunk "no built user-service (build/bin/user-service): run make first"
fi

# The checker itself finds mistakes here: a misspelt value and key.
if [ -n "$BIN" ]; then
	bad=$(copy_for_verify config/user-service.service "$BIN") &&
		sed -i 's/^Type=notify$/Type=notfy/; s/^Restart=on-failure$/Restat=on-failure/' "$bad" &&
		out=$(systemd-analyze verify --man=no "$bad" 2>&1)
	if printf '%s\n' "${out:-}" | grep -q 'notfy' && printf '%s\n' "${out:-}" | grep -q 'Restat'; then
		pass "systemd-analyze verify reports a bad value and an unknown key"
	else
		flunk "systemd-analyze verify did not report Type=notfy and Restat=" "${out:-}"
	fi
	rm -f "$bad"
fi

for unit in "${UNITS[@]}"; do
	if [ ! -f "$unit" ]; then
		flunk "$unit is missing"
		continue
	fi
	if [ -n "$BIN" ] && copy=$(copy_for_verify "$unit" "$BIN"); then
		verify_unit "$copy" "$unit"
		out=$(systemd-analyze security --offline=yes "$copy" 2>&1)
		level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
		if [ -n "$level" ] && awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }'; then
			pass "$unit: systemd-analyze security exposure $level <= $MAX_EXPOSURE"
		else
			flunk "$unit: systemd-analyze security exposure ${level:-?} > $MAX_EXPOSURE" \
				"$(printf '%s\n' "$out" | grep -v '^✓')"
		fi
		rm -f "$copy"
	fi

	# The directives user-service(8) promises, each exactly so.
	# shellcheck disable=SC2016 # $MAINPID is systemd's, not ours
	for line in \
		'Type=notify' \
		'NotifyAccess=main' \
		'ExecReload=/bin/kill -HUP $MAINPID' \
		'WatchdogSec=30' \
		'Restart=on-failure' \
		'RestartPreventExitStatus=2 3' \
		'KillMode=mixed' \
		'LoadCredential=db-conninfo:/etc/warren/db-conninfo' \
		'DynamicUser=yes' \
		'NoNewPrivileges=yes' \
		'ProtectSystem=strict' \
		'ProtectHome=yes' \
		'PrivateTmp=yes' \
		'PrivateDevices=yes' \
		'CapabilityBoundingSet=' \
		'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
		'SystemCallFilter=@system-service'; do
		n=$(grep -cxF -- "$line" "$unit")
		if [ "$n" -eq 1 ]; then
			pass "$unit: $line"
		else
			flunk "$unit: want one line \"$line\", found $n"
		fi
	done

	case $unit in
	*@.service) conf=/etc/warren/user-service-%i.conf ;;
	*) conf=/etc/warren/user-service.conf ;;
	esac
	want="ExecStart=$INSTALLED_BIN -c $conf"
	if [ "$(grep -c '^ExecStart=' "$unit")" -eq 1 ] && grep -qxF -- "$want" "$unit"; then
		pass "$unit: $want"
	else
		flunk "$unit: want the one ExecStart line \"$want\""
	fi

	# The stop timeout outlasts the default drain, worker.grace (as
	# config/warren.conf states it; test_config_docs checks that file).
	stop=$(sed -n 's/^TimeoutStopSec=//p' "$unit")
	grace=$(sed -n '/^\[worker\]$/,/^\[/s/^# grace = //p' config/warren.conf)
	if [[ $stop =~ ^[0-9]+(s|min)?$ ]] && [[ $grace =~ ^[0-9]+s$ ]] &&
		[ "$(seconds "$stop")" -gt "$(seconds "$grace")" ]; then
		pass "$unit: TimeoutStopSec=$stop is longer than worker.grace ($grace)"
	else
		flunk "$unit: want TimeoutStopSec= (\"$stop\") longer than worker.grace (\"$grace\")"
	fi

	# Every page it names is in man/.
	docs=$(sed -n 's/^Documentation=//p' "$unit")
	missing=
	for ref in $docs; do
		if [[ $ref =~ ^man:([^\(]+)\(([0-9])\)$ ]]; then
			f="man/${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
			[ -f "$f" ] || missing="$missing $f"
		else
			missing="$missing $ref"
		fi
	done
	if [ -n "$docs" ] && [ -z "$missing" ]; then
		pass "$unit: Documentation= pages exist ($docs)"
	else
		flunk "$unit: Documentation= \"$docs\": not in man/:$missing"
	fi
done

# The credential the units load is the one config/user-service.conf reads.
cred=$(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' config/user-service.service)
file=$(sed -n '/^\[db\]$/,/^\[/s/^conninfo_file = //p' config/user-service.conf)
if [ -n "$cred" ] && [ "$cred" = "$file" ]; then
	pass "config/user-service.conf reads the credential the unit loads ($cred)"
else
	flunk "credential \"$cred\" of the unit is not db.conninfo_file \"$file\" of config/user-service.conf"
fi

# The template differs from the plain unit only in its comments, its
# Description= and its configuration file.
strip() {
	grep -v -e '^#' -e '^Description=' "$1" | sed 's#/etc/warren/user-service-%i.conf#/etc/warren/user-service.conf#'
}
if d=$(diff <(strip config/user-service.service) <(strip config/user-service@.service)); then
	pass "user-service@.service is user-service.service with its own -c file"
else
	flunk "user-service@.service and user-service.service differ" "$d"
fi

summary
