#!/usr/bin/env bash
# broker.sh: a private RabbitMQ node for tests and the demo, beside any other
# broker on the machine: its own node name, ports, epmd, cookie and data
# directory, with rabbitmq/definitions.json imported.
#
#   broker.sh start DIR     start a node with its state in DIR; writes DIR/env
#   broker.sh start DIR PEER_DIR
#                           start a node and join it to the cluster of the
#                           node in PEER_DIR (same epmd and cookie); the
#                           definitions come from the cluster
#   broker.sh bare DIR      start a node without importing the definitions
#                           (the first node of a cluster)
#   broker.sh ctl DIR ARGS  rabbitmqctl against that node
#   broker.sh diag DIR ARGS rabbitmq-diagnostics against that node
#   broker.sh stop DIR      stop the node and its epmd
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RMQ=/usr/lib/rabbitmq/bin

# shellcheck source=tests/lib/ports.sh
. "$ROOT/tests/lib/ports.sh"

# Everything rabbitmq-server and rabbitmqctl need to find this node alone.
node_env() {
	local dir=$1
	export HOME=$dir # the Erlang cookie lives in $HOME
	export RABBITMQ_NODENAME=$WARREN_TEST_NODE
	export RABBITMQ_NODE_PORT=$WARREN_TEST_PORT
	export RABBITMQ_DIST_PORT=$WARREN_TEST_DIST_PORT
	export ERL_EPMD_PORT=$WARREN_TEST_EPMD_PORT
	export RABBITMQ_CONFIG_FILE=$dir/rabbitmq
	export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
	export RABBITMQ_MNESIA_BASE=$dir/mnesia
	export RABBITMQ_LOG_BASE=$dir/log
	export RABBITMQ_PID_FILE=$dir/rabbitmq.pid
	export RABBITMQ_FEATURE_FLAGS_FILE=$dir/feature_flags
	export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
	export RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
}

ctl() {
	local dir=$1
	shift
	# shellcheck disable=SC1091
	. "$dir/env"
	node_env "$dir"
	"$RMQ/rabbitmqctl" -n "$WARREN_TEST_NODE" "$@"
}

diag() {
	local dir=$1
	shift
	# shellcheck disable=SC1091
	. "$dir/env"
	node_env "$dir"
	"$RMQ/rabbitmq-diagnostics" -n "$WARREN_TEST_NODE" "$@"
}

# A CA, a server certificate for "localhost" and a client certificate, all
# signed by the CA, in DIR (for the TLS listener and its tests).
make_certs() {
	local d=$1 name
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
		-keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=warren test CA" 2>/dev/null
	for name in server client; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$d/$name.key" -out "$d/$name.csr" \
			-subj "/CN=$([ $name = server ] && echo localhost || echo warren-caller)" 2>/dev/null
		printf 'subjectAltName=DNS:%s\n' "$([ $name = server ] && echo localhost || echo warren-caller)" \
			>"$d/$name.ext"
		openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
			-CAcreateserial -days 7 -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null
	done
	chmod 600 "$d"/*.key
}

start() {
	local dir=$1 peer=${2:-} definitions=${3:-yes} port epmd peer_node=
	mkdir -p "$dir/mnesia" "$dir/log"
	port=$(free_port)
	epmd=$(free_port)
	if [ -n "$peer" ]; then
		# shellcheck disable=SC1091
		epmd=$(. "$peer/env" && echo "$WARREN_TEST_EPMD_PORT")
		# shellcheck disable=SC1091
		peer_node=$(. "$peer/env" && echo "$WARREN_TEST_NODE")
		cp "$peer/.erlang.cookie" "$dir/.erlang.cookie"
		chmod 400 "$dir/.erlang.cookie"
	fi
	# A TLS listener too, with a certificate authority of its own.
	local tls_port
	tls_port=$(free_port)
	make_certs "$dir/tls"
	cat >"$dir/env" <<-ENV
		WARREN_TEST_TLS_PORT=$tls_port
		WARREN_TEST_TLS_DIR=$dir/tls
		WARREN_TEST_PORT=$port
		WARREN_TEST_DIST_PORT=$(free_port)
		WARREN_TEST_EPMD_PORT=$epmd
		WARREN_TEST_NODE=warren-$port@localhost
		WARREN_TEST_URL=amqp://guest:guest@127.0.0.1:$port
		export WARREN_TEST_PORT WARREN_TEST_NODE WARREN_TEST_URL WARREN_TEST_TLS_PORT WARREN_TEST_TLS_DIR
	ENV
	# shellcheck disable=SC1091
	. "$dir/env"
	cat >"$dir/rabbitmq.conf" <<-CONF
		listeners.tcp.default = 127.0.0.1:$port
		listeners.ssl.default = 127.0.0.1:$tls_port
		ssl_options.cacertfile = $dir/tls/ca.pem
		ssl_options.certfile = $dir/tls/server.pem
		ssl_options.keyfile = $dir/tls/server.key
		ssl_options.verify = verify_peer
		ssl_options.fail_if_no_peer_cert = false
		loopback_users = none
		# Just above the default message.max_size (1M) and an encrypted
		# body's 40 bytes: the broker refuses a larger message itself
		# (warren(7), BODIES).
		max_message_size = 1052672
		log.console = false
		log.file.level = info
	CONF
	echo "[]." >"$dir/enabled_plugins"
	echo "[]." >"$dir/advanced.config"
	: >"$dir/rabbitmq-env.conf"
	node_env "$dir"
	"$RMQ/rabbitmq-server" -detached >"$dir/log/startup.log" 2>&1
	for _ in $(seq 1 120); do
		if "$RMQ/rabbitmqctl" -n "$WARREN_TEST_NODE" -q await_startup >/dev/null 2>&1; then
			if [ -n "$peer_node" ]; then
				"$RMQ/rabbitmqctl" -n "$WARREN_TEST_NODE" -q stop_app
				"$RMQ/rabbitmqctl" -n "$WARREN_TEST_NODE" -q reset
				"$RMQ/rabbitmqctl" -n "$WARREN_TEST_NODE" -q join_cluster "$peer_node"
				"$RMQ/rabbitmqctl" -n "$WARREN_TEST_NODE" -q start_app
			elif [ "$definitions" = yes ]; then
				"$RMQ/rabbitmqctl" -n "$WARREN_TEST_NODE" -q import_definitions \
					"$ROOT/rabbitmq/definitions.json"
			fi
			echo "broker.sh: node $WARREN_TEST_NODE on 127.0.0.1:$port"
			return 0
		fi
		sleep 0.5
	done
	echo "broker.sh: the node did not start; its logs are in $dir/log" >&2
	tail -n 20 "$dir/log/startup.log" "$dir"/log/*.log >&2 || true
	return 1
}

stop() {
	local dir=$1
	[ -f "$dir/env" ] || return 0
	ctl "$dir" -q stop >/dev/null 2>&1 || true
	epmd -port "$WARREN_TEST_EPMD_PORT" -kill >/dev/null 2>&1 || true
}

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
	echo "usage: broker.sh start|bare|stop|ctl|diag DIR [ARGS...]" >&2
	exit 2
fi
shift 2
case $cmd in
start) start "$dir" "${1:-}" ;;
bare) start "$dir" "" no ;;
stop) stop "$dir" ;;
ctl) ctl "$dir" "$@" ;;
diag) diag "$dir" "$@" ;;
*)
	echo "broker.sh: unknown command $cmd" >&2
	exit 2
	;;
esac
