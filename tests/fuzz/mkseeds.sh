#!/usr/bin/env bash
# mkseeds.sh: writes the seed corpora tests/fuzz/corpus/NAME/, a handful of
# valid inputs per fuzzer (the files are committed; run this again only to
# change them). The envelope seeds follow the input layout described at the
# top of fuzz_envelope.c: a control byte, the length of the properties, the
# basic properties in AMQP wire form, then the body.
set -euo pipefail
export LC_ALL=C # ${#s} counts bytes

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
C=$ROOT/tests/fuzz/corpus
TMP=$(mktemp -d /tmp/warren-seeds.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$C/msgpack" "$C/json" "$C/envelope" "$C/config"

# ------------------------------------------------------------------ msgpack
M=$C/msgpack
printf '\xc0' >"$M/nil"
printf '\x81\xa2id\x01' >"$M/get-params"
printf '\x84\xa2id\x01\xa5email\xafada@example.org\xa4name\xacAda Lovelace\xabpreferences\x80' \
	>"$M/user"
printf '\x83\xa4code\xa9NOT_FOUND\xa7message\xb3no user with id 999\xa7details\x81\xa2id\xcd\x03\xe7' \
	>"$M/error-reply"
# nil, true, false, -1, 127, int8 -128, uint16 65535, int32 min, int64 min,
# uint64 INT64_MAX, float32 1.5, float64 pi
printf '\xdc\x00\x0c\xc0\xc3\xc2\xff\x7f\xd0\x80\xcd\xff\xff\xd2\x80\x00\x00\x00%b%b%b%b' \
	'\xd3\x80\x00\x00\x00\x00\x00\x00\x00' '\xcf\x7f\xff\xff\xff\xff\xff\xff\xff' \
	'\xca\x3f\xc0\x00\x00' '\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18' >"$M/scalars"
printf '\x94\xd9\x28%s\xda\x00\x03abc\xc4\x03\x01\x02\x03\xa9caf\xc3\xa9 \xe2\x82\xac' \
	'0123456789012345678901234567890123456789' >"$M/strings"
printf '\x92\xde\x00\x01\xa1a\x91\x91\x90\xdf\x00\x00\x00\x01\xa1b\xdd\x00\x00\x00\x01\x80' \
	>"$M/nested"

# --------------------------------------------------------------------- json
J=$C/json
printf '{"id": 1}' >"$J/get-params"
printf '{"email": "ada@example.org", "name": "Ada Lovelace", "preferences": {"channel": "sms", "quiet": [22, 7]}}\n' \
	>"$J/create-params"
printf '{"code":"NOT_FOUND","message":"no user with id 999","details":{"id":999}}' >"$J/error-reply"
printf '[null, true, false, -9223372036854775808, 9223372036854775807, 1.5, -0.0, 1e300, 5e-324, 0.1]' \
	>"$J/scalars"
printf '["caf\\u00e9 \\ud83d\\ude00", "q\\"\\\\\\/\\b\\f\\n\\r\\t", "nul\\u0000byte", "\xe2\x82\xac"]' \
	>"$J/strings"
printf '[[[[[]]]], {"a": {"b": {"c": {}}}}, []]' >"$J/nested"
printf '"just a string"' >"$J/string"

# ------------------------------------------------------------------- config
K=$C/config
cp "$ROOT/config/warren.conf" "$K/warren.conf"
cp "$ROOT/config/user-service.conf" "$K/user-service.conf"
cat >"$K/every-type" <<'CONF'
[broker]
url = amqp://a:b@h1:5672/,amqps://h2/
heartbeat = 60
connect_timeout = 1.5s
[client]
timeout = 250ms
reply_mode = queue
max_in_flight = 10
[worker]
  service = user   ; an inline comment
threads = 2
grace = 2m
[message]
max_size = 64k
[log]
level = debug
[security]
scheme = ed25519
allow = "user.*=alice+bob"
[broker]
vhost = " quoted "
CONF
cat >"$K/o-args" <<'CONF'
broker.url=amqp://guest:guest@localhost:5672/
client.timeout=2s
message.max_size=1M
worker.threads=16
log.level=warn
security.window=1h
db.conninfo=host=/tmp dbname=users
CONF
printf '[broker]\nheartbeat = 1.5s\n' >"$K/bad-value"
printf 'threads = 4\n[worker]\n' >"$K/no-section"

# ----------------------------------------------------------------- envelope
u8() { printf '%b' "\\x$(printf %02x "$1")"; }
be16() { u8 $(($1 >> 8 & 255)); u8 $(($1 & 255)); }
be32() { be16 $(($1 >> 16 & 65535)); be16 $(($1 & 65535)); }
be64() { be32 $(($1 >> 32 & 0xffffffff)); be32 $(($1 & 0xffffffff)); }
shortstr() { u8 ${#1}; printf %s "$1"; }
longstr() { be32 ${#1}; printf %s "$1"; }
# Field table entries: KEY then a kind byte and its value.
h_str() { shortstr "$1"; printf S; longstr "$2"; }
h_bytes() { shortstr "$1"; printf x; longstr "$2"; }
h_i64() { shortstr "$1"; printf l; be64 "$2"; }
h_i32() { shortstr "$1"; printf I; be32 "$2"; }
h_i16() { shortstr "$1"; printf s; be16 "$2"; }
h_u8() { shortstr "$1"; printf B; u8 "$2"; }
h_ts() { shortstr "$1"; printf T; be64 "$2"; }
# table FILE: the entries written to FILE as a field table.
table() { be32 "$(wc -c <"$1")"; cat "$1"; }
# envelope OUT PROPS BODY: the fuzz input from property and body files.
envelope() { { u8 20; be16 "$(wc -c <"$2")"; cat "$2" "$3"; } >"$1"; }

E=$C/envelope
printf '\x81\xa2id\x01' >"$TMP/body.mp"
printf '{"id": 1}' >"$TMP/body.json"
: >"$TMP/empty"

# A request as warren sends it: content type, headers, delivery mode,
# correlation id, reply-to, message id, timestamp, type, app id.
{
	h_i64 rpc-deadline 1700000030000
	h_i64 rpc-attempt 1
	h_str traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
} >"$TMP/h"
{
	be16 $((0x8000 | 0x2000 | 0x1000 | 0x0400 | 0x0200 | 0x0080 | 0x0040 | 0x0020 | 0x0008))
	shortstr application/msgpack
	table "$TMP/h"
	u8 2
	shortstr 6f1c2a9e-0c3b-4c1e-9a57-3d2b1f0e8c41
	shortstr amq.rabbitmq.reply-to.g1h2AA5yZXBseQ
	shortstr 0b7e9d3c-5a21-4f6e-8d10-2c9b8a7f6e5d
	be64 1700000000
	shortstr user.get
	shortstr notifier
} >"$TMP/p"
envelope "$E/request-msgpack" "$TMP/p" "$TMP/body.mp"

# A JSON request redelivered by a quorum queue, content type with a parameter.
{
	h_i64 rpc-attempt 2
	h_i64 x-delivery-count 1
} >"$TMP/h"
{
	be16 $((0x8000 | 0x2000 | 0x0400 | 0x0080 | 0x0020))
	shortstr 'application/json; charset=utf-8'
	table "$TMP/h"
	shortstr c1
	shortstr m1
	shortstr user.create
} >"$TMP/p"
envelope "$E/request-json-redelivered" "$TMP/p" "$TMP/body.json"

# An error reply.
h_i32 rpc-status 5 >"$TMP/h"
{
	be16 $((0x8000 | 0x2000 | 0x1000 | 0x0400))
	shortstr application/msgpack
	table "$TMP/h"
	u8 1
	shortstr 6f1c2a9e-0c3b-4c1e-9a57-3d2b1f0e8c41
} >"$TMP/p"
printf '\x82\xa4code\xa9NOT_FOUND\xa7message\xb3no user with id 999' >"$TMP/body.err"
envelope "$E/reply-error" "$TMP/p" "$TMP/body.err"

# A signed request, integers of other widths, an upper-case content type.
{
	h_u8 rpc-attempt 3
	h_ts rpc-deadline 1700000030000
	h_i16 rpc-status 0
	h_str rpc-key-id alice
	h_i64 rpc-signed-at 1700000000000
	h_bytes rpc-signature 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
} >"$TMP/h"
{
	be16 $((0x8000 | 0x2000 | 0x0400 | 0x0020))
	shortstr Application/MsgPack
	table "$TMP/h"
	shortstr c2
	shortstr example.echo
} >"$TMP/p"
envelope "$E/request-signed" "$TMP/p" "$TMP/body.mp"

# A request whose body is sealed (content_encoding x-warren-sealed); the
# signature fuzzer seals it again before signing it properly.
{
	be16 $((0x8000 | 0x4000 | 0x2000 | 0x0400 | 0x0020))
	shortstr application/msgpack
	shortstr x-warren-sealed
	table "$TMP/h"
	shortstr c3
	shortstr user.get
} >"$TMP/p"
envelope "$E/request-sealed" "$TMP/p" "$TMP/body.mp"

# No properties at all and an empty body.
be16 0 >"$TMP/p"
envelope "$E/bare" "$TMP/p" "$TMP/empty"
