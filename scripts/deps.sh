#!/usr/bin/env bash
# deps.sh: makes sure the Debian packages warren builds, tests and demos with
# are installed: installs the missing ones when run as root, and otherwise
# prints the one apt-get line to run.
set -euo pipefail

PACKAGES=(
	gcc make pkg-config
	librabbitmq-dev libmsgpack-dev libsodium-dev libpq-dev libcmocka-dev
	libjansson-dev libinih-dev libmicrohttpd-dev
	rabbitmq-server postgresql mandoc amqp-tools openssl
	systemd # systemd-analyze, for tests/unit/test_units.sh
	prometheus # promtool (tests/unit/test_prometheus_rules.sh) and the Prometheus
	#            tests/integration/it_prometheus.c starts on a private port
	clang libclang-rt-14-dev # the libFuzzer targets, tests/fuzz/
	python3-pika python3-msgpack # the conformance kit, tests/conformance/
)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing Debian packages; install them with:" >&2
	echo "  sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# The packages' own services are not wanted: tests start private instances.
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
