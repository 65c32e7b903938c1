#!/usr/bin/env bash
# postgres.sh: a private PostgreSQL server for tests and the demo, on a unix
# socket in its own directory (no TCP), beside any other server.
#
#   postgres.sh start DIR   initdb + start; writes DIR/pgenv (PGHOST, PGPORT...)
#   postgres.sh stop DIR    stop it
#   postgres.sh resume DIR  start a stopped one again, as it was
#   postgres.sh restart DIR stop and start again (fault tests)
set -euo pipefail

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PGBIN" ] || {
	echo "postgres.sh: PostgreSQL server binaries not found" >&2
	exit 1
}

# initdb and postgres refuse to run as root: run them as the postgres user.
as_owner() {
	if [ "$(id -u)" = 0 ]; then
		su postgres -s /bin/sh -c "$*"
	else
		sh -c "$*"
	fi
}

pg_start() {
	local dir=$1
	as_owner "'$PGBIN/pg_ctl' -D '$dir/data' -l '$dir/postgres.log' -w -t 60 \
		-o \"-p $PGPORT -k '$dir/sock' -c listen_addresses='' -c fsync=off\" start" >/dev/null
}

start() {
	local dir=$1
	mkdir -p "$dir/data" "$dir/sock"
	[ "$(id -u)" = 0 ] && chown -R postgres "$dir"
	PGPORT=$((40000 + RANDOM % 20000))
	cat >"$dir/pgenv" <<-ENV
		PGHOST=$dir/sock
		PGPORT=$PGPORT
		PGUSER=postgres
		PGDATABASE=warren
		export PGHOST PGPORT PGUSER PGDATABASE
	ENV
	as_owner "'$PGBIN/initdb' -D '$dir/data' -A trust -U postgres" >"$dir/initdb.log" 2>&1
	pg_start "$dir"
	as_owner "'$PGBIN/createdb' -h '$dir/sock' -p $PGPORT -U postgres warren"
	echo "postgres.sh: PostgreSQL on $dir/sock port $PGPORT"
}

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
	echo "usage: postgres.sh start|stop|resume|restart DIR" >&2
	exit 2
fi
case $cmd in
start) start "$dir" ;;
stop)
	[ -f "$dir/pgenv" ] || exit 0
	as_owner "'$PGBIN/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null 2>&1 || true
	;;
resume)
	# A cluster stopped with "stop", started again on its port.
	# shellcheck disable=SC1091
	. "$dir/pgenv"
	pg_start "$dir"
	;;
restart)
	# shellcheck disable=SC1091
	. "$dir/pgenv"
	as_owner "'$PGBIN/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null
	pg_start "$dir"
	;;
*)
	echo "postgres.sh: unknown command $cmd" >&2
	exit 2
	;;
esac
