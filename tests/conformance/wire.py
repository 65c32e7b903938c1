"""wire.py: warren's wire contract (warren(7)) as a plain AMQP client sees
it: a connection with a reply queue of its own, requests and replies with
the properties and headers the contract names, batches in format 1, dead
letters looked up by correlation id, and a tiny runner of named checks.
Knows nothing of warren's code: only pika, msgpack and the manual page."""
import json
import os
import re
import sys
import time
import traceback
import uuid

import msgpack
import pika

STATUS = [
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]
MSGPACK = "application/msgpack"
JSON = "application/json"
BATCH = "application/x-warren-batch"
# The keys an entry of a batch may have (warren(7) BATCHES, format 1).
BATCH_STR_KEYS = ("correlation_id", "message_id", "type", "reply_to", "app_id",
                  "content_type", "content_encoding")


def now_ms():
    return int(time.time() * 1000)


def new_id():
    return uuid.uuid4().hex


def encode(value, content_type=MSGPACK):
    if content_type == JSON:
        return json.dumps(value, separators=(",", ":")).encode()
    return msgpack.packb(value, use_bin_type=True)


def decode(body, content_type):
    if (content_type or MSGPACK).split(";")[0].strip().lower() == JSON:
        return json.loads(body)
    return msgpack.unpackb(body, raw=False, strict_map_key=True)


def encode_batch(entries):
    """entries: dicts of the batch format's keys (body as bytes)."""
    return msgpack.packb(entries, use_bin_type=True)


def decode_batch(body):
    entries = msgpack.unpackb(body, raw=False)
    if not isinstance(entries, list) or not 1 <= len(entries) <= 1024:
        raise ValueError("a batch is an array of 1 to 1024 entries")
    for e in entries:
        unknown = set(e) - set(BATCH_STR_KEYS) - {"timestamp", "headers", "body"}
        if unknown:
            raise ValueError("batch entry with unknown keys %s" % sorted(unknown))
        if not isinstance(e.get("body"), bytes):
            raise ValueError("batch entry without a bin body")
    return entries


class Message:
    """A reply or a request as received: properties, headers and body."""

    def __init__(self, props, body, routing_key=None, delivery_tag=None):
        self.props = props
        self.headers = dict(props.headers or {})
        self.body = body
        self.routing_key = routing_key
        self.delivery_tag = delivery_tag

    @classmethod
    def from_entry(cls, entry, delivery_mode):
        props = pika.BasicProperties(
            correlation_id=entry.get("correlation_id"),
            message_id=entry.get("message_id"),
            type=entry.get("type"),
            reply_to=entry.get("reply_to"),
            app_id=entry.get("app_id"),
            content_type=entry.get("content_type"),
            content_encoding=entry.get("content_encoding"),
            timestamp=entry.get("timestamp"),
            headers=entry.get("headers") or {},
            delivery_mode=delivery_mode)
        return cls(props, entry["body"])

    def value(self):
        return decode(self.body, self.props.content_type)

    def status(self):
        return self.headers.get("rpc-status")


class Peer:
    """One AMQP connection: a channel with publisher confirms and an
    exclusive reply queue of its own, which warren(7) allows as reply_to."""

    def __init__(self, url):
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()
        self.reply_queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.replies = {}  # correlation_id -> [Message]
        self.batches_received = 0

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass

    def exchange_exists(self, name):
        ch = self.conn.channel()
        try:
            ch.exchange_declare(name, passive=True)
            ch.close()
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False

    def publish(self, exchange, routing_key, body, props, mandatory=True):
        self.ch.basic_publish(exchange, routing_key, body, props, mandatory=mandatory)

    def request(self, method, value=None, content_type=MSGPACK, body=None, headers=None,
                reply=True, routing_key=None, with_type=True, deadline_ms=30000,
                exchange="rpc", **props):
        """Publishes a request as warren(7) REQUESTS says; returns its
        correlation id."""
        corr = props.pop("correlation_id", new_id())
        h = {"rpc-deadline": now_ms() + deadline_ms} if deadline_ms is not None else {}
        h.update(headers or {})
        p = pika.BasicProperties(
            content_type=content_type, delivery_mode=2, correlation_id=corr,
            message_id=props.pop("message_id", new_id()),
            reply_to=self.reply_queue if reply else None,
            type=method if with_type else None, app_id="conformance",
            timestamp=int(time.time()), headers=h, **props)
        if body is None:
            body = encode(value if value is not None else {}, content_type)
        self.publish(exchange, routing_key or method, body, p)
        return corr

    def _take(self, props, body):
        if props.content_type == BATCH:
            self.batches_received += 1
            for e in decode_batch(body):
                m = Message.from_entry(e, props.delivery_mode)
                self.replies.setdefault(m.props.correlation_id, []).append(m)
        else:
            self.replies.setdefault(props.correlation_id, []).append(Message(props, body))

    def drain(self, seconds):
        """Reads the reply queue for seconds."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            method, props, body = self.ch.basic_get(self.reply_queue, auto_ack=True)
            if method is None:
                self.conn.sleep(0.02)
                continue
            self._take(props, body)

    def reply(self, corr, timeout=10.0):
        """The first reply to corr, waiting up to timeout; None if none came."""
        end = time.monotonic() + timeout
        while corr not in self.replies and time.monotonic() < end:
            method, props, body = self.ch.basic_get(self.reply_queue, auto_ack=True)
            if method is None:
                self.conn.sleep(0.02)
                continue
            self._take(props, body)
        got = self.replies.get(corr)
        return got[0] if got else None

    def dead_letter(self, queue, corr, timeout=10.0):
        """The dead letter of corr in queue, acknowledged; the others are
        given back untouched. None when it did not come within timeout."""
        end = time.monotonic() + timeout
        others, found = [], None
        while found is None and time.monotonic() < end:
            method, props, body = self.ch.basic_get(queue, auto_ack=False)
            if method is None:
                for tag in others:
                    self.ch.basic_nack(tag, requeue=True)
                others = []
                self.conn.sleep(0.05)
                continue
            if props.correlation_id == corr:
                self.ch.basic_ack(method.delivery_tag)
                found = Message(props, body, method.routing_key)
            else:
                others.append(method.delivery_tag)
        for tag in others:
            self.ch.basic_nack(tag, requeue=True)
        return found

    def queue_count(self, queue):
        return self.ch.queue_declare(queue, passive=True).method.message_count


# ------------------------------------------------------------------ runner

class Skip(Exception):
    """A check that does not apply to the implementation under test."""


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def short(value, limit=200):
    """repr of value, cut to limit characters: a body may be a megabyte."""
    text = repr(value)
    return text if len(text) <= limit else "%s... (%d characters)" % (text[:limit], len(text))


def expect_eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %s, want %s" % (what, short(got), short(want)))


def expect_match(pattern, got, what):
    if not isinstance(got, str) or re.fullmatch(pattern, got) is None:
        raise AssertionError("%s: got %s, want /%s/" % (what, short(got), pattern))


def run(ctx):
    """Runs every registered check with ctx; prints one line each and the
    "N passed, M failed" summary; returns the exit status."""
    only = os.environ.get("CONFORMANCE_ONLY")
    passed = failed = skipped = 0
    for fn in CHECKS:
        name = fn.__name__
        if only and only not in name:
            continue
        try:
            fn(ctx)
        except Skip as s:
            skipped += 1
            print("skip  %s: %s" % (name, s))
        except AssertionError as e:
            failed += 1
            print("FAIL  %s: %s" % (name, e))
        except Exception:
            failed += 1
            print("FAIL  %s: %s" % (name, traceback.format_exc().strip().splitlines()[-1]))
        else:
            passed += 1
            print("ok    %s" % name)
        sys.stdout.flush()
    if skipped:
        print("%d skipped (each with its reason above)" % skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1
