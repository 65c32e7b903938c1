#!/usr/bin/env bash
# demo.sh: warren end to end on this machine: a private RabbitMQ node with the
# topology of rabbitmq/definitions.json, a private PostgreSQL, the user-service
# daemon, calls made with rpc-call (results and errors), then a clean shutdown.
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/$BUILD/bin
DIR=$(mktemp -d /tmp/warren-demo.XXXXXX)
chmod 755 "$DIR"
mkdir -p "$DIR/broker" "$DIR/pg"
service_pid=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
	printf '$ %s\n' "$*"
	"$@" || printf '(exit status %d)\n' "$?"
}

cleanup() {
	if [ -n "$service_pid" ] && kill -0 "$service_pid" 2>/dev/null; then
		kill -TERM "$service_pid"
		wait "$service_pid" || true
	fi
	"$ROOT/tests/lib/broker.sh" stop "$DIR/broker" >/dev/null 2>&1 || true
	"$ROOT/tests/lib/postgres.sh" stop "$DIR/pg" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT

say "starting a private RabbitMQ node and importing rabbitmq/definitions.json"
"$ROOT/tests/lib/broker.sh" start "$DIR/broker"
# shellcheck disable=SC1091
. "$DIR/broker/env"
export WARREN_URL=$WARREN_TEST_URL

say "starting a private PostgreSQL"
"$ROOT/tests/lib/postgres.sh" start "$DIR/pg"
# shellcheck disable=SC1091
. "$DIR/pg/pgenv"
# The connection string comes from a file, as under systemd (LoadCredential=).
echo "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE" >"$DIR/db"

say "starting user-service (4 handler threads; it creates its schema)"
"$BIN/user-service" -o "broker.url=$WARREN_URL" -o worker.threads=4 \
	-o "db.conninfo_file=$DIR/db" &
service_pid=$!
for _ in $(seq 1 100); do
	"$BIN/rpc-call" -t 0.5 user.list '{"limit": 1}' >/dev/null 2>&1 && break
	sleep 0.1
done

say "creating users"
run "$BIN/rpc-call" user.create '{"email": "ada@example.org", "name": "Ada Lovelace", "preferences": {"channel": "email", "digest": "daily"}}'
run "$BIN/rpc-call" user.create '{"email": "alan@example.org", "name": "Alan Turing"}'
run "$BIN/rpc-call" -j user.create '{"email": "grace@example.org", "name": "Grace Hopper"}'

say "fetching one, then listing them"
run "$BIN/rpc-call" user.get '{"id": 1}'
run "$BIN/rpc-call" user.list '{"limit": 2}'

say "the notification side (src/client/notify-user/notify-user.c, a caller written on libwarren)"
run "$BIN/rpc-call" user.preferences.set '{"id": 2, "preferences": {"channel": "sms"}}'
run "$BIN/notify-user" -e alan@example.org "Your report is ready"
run "$BIN/notify-user" -a "We will be down for maintenance on Sunday"

say "the same message id twice: one user, the same answer twice"
run "$BIN/rpc-call" -m demo-once user.create '{"email": "edsger@example.org", "name": "Edsger Dijkstra"}'
run "$BIN/rpc-call" -m demo-once user.create '{"email": "edsger@example.org", "name": "Edsger Dijkstra"}'

say "errors come back as their status (exit 1)"
run "$BIN/rpc-call" user.get '{"id": 999}'
run "$BIN/rpc-call" user.create '{"email": "ada@example.org", "name": "Ada again"}'
run "$BIN/rpc-call" user.create '{"email": "not-an-address", "name": "Nobody"}'
say "a method no service serves fails quickly, after a few republishes (exit 4)"
run "$BIN/rpc-call" billing.charge '{"amount": 10}'

say "poison: a method the user service does not have is answered and dead-lettered"
run "$BIN/rpc-call" user.rename '{"id": 1}'
run "$BIN/rpc-dlq" list user
say "the operator replays it (it fails again, so it is back in the queue: nothing is lost)"
run "$BIN/rpc-dlq" replay user --method 'user.rename'
sleep 1
run "$BIN/rpc-dlq" list user

say "load: 2000 lookups, 16 at a time"
run "$BIN/rpc-call" -n 2000 -P 16 user.get '{"id": 1}'

say "stopping user-service with SIGTERM (finishes in-flight calls, then exits 0)"
kill -TERM "$service_pid"
wait "$service_pid" && echo "user-service exited 0"
service_pid=

say "queues after the demo: nothing waiting, the one dead letter kept"
sleep 5 # quorum queues report their counts a few seconds late
"$ROOT/tests/lib/broker.sh" ctl "$DIR/broker" list_queues name type messages |
	grep -E '^(name|rpc\.)' | grep -v '^rpc\.delay\.' || true

say "stopping the broker and the database"
