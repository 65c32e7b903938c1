# shellcheck shell=bash
# ports.sh: sourced by broker.sh and the tests that need a port of their own.

# free_port: a TCP port nothing listens on, from a range clear of the usual
# services.
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	echo "free_port: no free port found" >&2
	return 1
}
