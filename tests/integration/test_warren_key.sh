#!/usr/bin/env bash
# test_warren_key.sh: warren-key makes key files with the right modes and
# lengths, shows an Ed25519 public key, never overwrites, and says what is
# wrong with its arguments.
set -uo pipefail

BIN=${WARREN_BIN:?run through scripts/run-tests.sh}
# shellcheck source=tests/lib/check.sh
. "$(dirname "$0")/../lib/check.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check "generate ed25519 prints the two files" 0 "$tmp/app.secret
$tmp/app.key" '' -- "$BIN/warren-key" generate ed25519 app "$tmp"
check "the secret is 64 bytes, mode 600; the public key 32 bytes, mode 644" 0 '600 129
644 65' '' -- bash -c "stat -c '%a %s' '$tmp/app.secret' '$tmp/app.key'"
check "public shows the public key of the secret" 0 "$(cat "$tmp/app.key")" '' -- \
	"$BIN/warren-key" public "$tmp/app.secret"
check "generate mac writes the shared secret twice, both mode 600" 0 '600 65
600 65' '' -- bash -c "'$BIN/warren-key' generate mac svc '$tmp' >/dev/null &&
	stat -c '%a %s' '$tmp/svc.secret' '$tmp/svc.key' && cmp -s '$tmp/svc.secret' '$tmp/svc.key'"
check "an existing key is never overwritten" 1 '' "warren-key: $tmp/app.secret: File exists" -- \
	"$BIN/warren-key" generate ed25519 app "$tmp"
chmod 644 "$tmp/app.secret"
check "a secret others may read is refused" 1 '' \
	"warren-key: security.key_file: $tmp/app.secret may be read by others (mode 0644): chmod 600 it" -- \
	"$BIN/warren-key" public "$tmp/app.secret"
check "an unknown scheme is a usage error" 2 '' 'warren-key: unknown scheme "rsa" (mac or ed25519)' -- \
	"$BIN/warren-key" generate rsa x "$tmp"
check "an id with a slash is a usage error" 2 '' "warren-key: ID must be 1 to 64 characters without '/'" -- \
	"$BIN/warren-key" generate mac a/b "$tmp"
check "no command is a usage error" 2 '' 'usage: warren-key generate mac|ed25519 ID DIR
       warren-key public SECRET_FILE
       warren-key -h | -V' -- "$BIN/warren-key"
summary
