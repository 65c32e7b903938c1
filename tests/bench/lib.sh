# shellcheck shell=bash
# lib.sh: what bench.sh and profile.sh share, sourced by both: reading a
# result line and starting and stopping a responder (a worker or the
# baseline's) in $DIR. PROG names the script in its messages.

# val LINE KEY: the value of KEY=... in LINE ("?" when absent).
val() {
	local kv
	for kv in $1; do
		if [ "${kv%%=*}" = "$2" ]; then
			echo "${kv#*=}"
			return
		fi
	done
	echo "?"
}

# start_responder CMD...: runs CMD in the background (RESPONDER=its pid)
# and waits for its "ready".
start_responder() {
	: >"$DIR/responder.out"
	"$@" >"$DIR/responder.out" 2>"$DIR/responder.err" &
	RESPONDER=$!
	for _ in $(seq 1 500); do
		grep -q ready "$DIR/responder.out" && return 0
		kill -0 "$RESPONDER" 2>/dev/null || break
		sleep 0.02
	done
	echo "$PROG: the responder did not start: $(cat "$DIR/responder.err")" >&2
	return 1
}

stop_responder() {
	kill "$RESPONDER" 2>/dev/null || true
	wait "$RESPONDER" 2>/dev/null || true
	RESPONDER=
}
