#!/usr/bin/python3
"""check_worker.py: checks a running worker against warren(7), from outside,
with a plain AMQP client. The worker serves SERVICE (default "example") with
the three methods of warren's example-service (example-service(8)):

  SERVICE.echo   returns its params
  SERVICE.sleep  {"ms": N}: sleeps N ms, returns {"slept_ms": N}
  SERVICE.fail   {"code": NAME, "message": TEXT, "details": ANY}: answers
                 the status NAME with that message and details

Environment: AMQP_URL (the broker), SERVICE, MAX_SIZE (the worker's
message.max_size in bytes, default 1048576), CONFORMANCE_ONLY (run the
checks whose name holds it). Prints one line per check and ends with
"N passed, M failed"; exits 1 when a check failed."""
import os
import re
import sys
import time

import msgpack
import pika

from wire import (BATCH, JSON, MSGPACK, STATUS, Peer, Skip, check, decode, encode,
                  encode_batch, expect, expect_eq, expect_match, new_id, now_ms, run)


class Ctx:
    def __init__(self):
        self.peer = Peer(os.environ["AMQP_URL"])
        self.service = os.environ.get("SERVICE", "example")
        self.max_size = int(os.environ.get("MAX_SIZE", "1048576"))
        self.dlq = "rpc.%s.dlq" % self.service

    def m(self, name):
        return "%s.%s" % (self.service, name)


def answered(ctx, corr, what="the reply"):
    r = ctx.peer.reply(corr)
    expect(r is not None, "%s did not come within 10 s" % what)
    return r


def error_reply(ctx, corr, status):
    """The error reply to corr: rpc-status and the body's code agree."""
    r = answered(ctx, corr)
    expect_eq(r.status(), STATUS.index(status), "rpc-status")
    body = r.value()
    expect(isinstance(body, dict), "an error body is a map, got %r" % (body,))
    expect_eq(body.get("code"), status, "the error body's code")
    expect(isinstance(body.get("message"), str), "the error body's message is a string")
    return r, body


def poison(ctx, corr, reason, status, error=None):
    """A poison request: its caller's error reply names the reason and the
    DLQ, and its dead letter carries the rpc-dead-* headers."""
    r, body = error_reply(ctx, corr, status)
    expect_eq(body.get("details"), {"reason": reason, "dlq": ctx.dlq}, "the details")
    d = ctx.peer.dead_letter(ctx.dlq, corr)
    expect(d is not None, "no dead letter of %s in %s" % (corr, ctx.dlq))
    h = d.headers
    expect_eq(h.get("rpc-dead-reason"), reason, "rpc-dead-reason")
    expect(isinstance(h.get("rpc-dead-error"), (str, bytes)) and h.get("rpc-dead-error"),
           "rpc-dead-error says what went wrong")
    if error is not None:
        expect_eq(h.get("rpc-dead-error"), error, "rpc-dead-error")
        expect_eq(body.get("message"), error, "the error reply's message")
    expect_match(r"%s@.+:[0-9]+" % re.escape(ctx.service), h.get("rpc-dead-worker"),
                 "rpc-dead-worker (service@host:pid)")
    expect(isinstance(h.get("rpc-dead-time"), int) and
           abs(h["rpc-dead-time"] - now_ms()) < 600000, "rpc-dead-time: Unix ms, now")
    expect_eq(h.get("rpc-dead-queue"), "rpc.%s" % ctx.service, "rpc-dead-queue")
    expect_eq(h.get("rpc-attempt"), 1, "rpc-attempt")
    # The broker's history of the request is dropped (a quorum DLQ adds an
    # x-delivery-count of its own when it delivers: that one is not the
    # request's).
    for broker_header in ("x-death", "x-first-death-reason", "x-last-death-reason"):
        expect(broker_header not in h, "the broker's %s is dropped" % broker_header)
    expect_eq(d.props.correlation_id, corr, "the dead letter's correlation_id")
    expect_eq(d.props.delivery_mode, 2, "a dead letter is persistent")
    return d


# ------------------------------------------------------------ requests

@check
def a_msgpack_request_gets_a_msgpack_reply_with_its_properties(ctx):
    params = {"a": 1, "b": [True, None, "x", -7, 1.5], "c": {"bin": b"\x00\x01"}}
    corr = ctx.peer.request(ctx.m("echo"), params)
    r = answered(ctx, corr)
    expect_eq(r.props.correlation_id, corr, "correlation_id")
    expect_eq(r.props.content_type, MSGPACK, "content_type")
    expect_eq(r.props.delivery_mode, 1, "delivery_mode (replies are transient)")
    expect_eq(r.status(), 0, "rpc-status")
    expect(isinstance(r.status(), int), "rpc-status is an integer")
    expect_eq(r.value(), params, "the result")


@check
def a_json_request_gets_a_compact_json_reply_that_keeps_floats(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=b'{"b": 1, "a": 2.0, "s": "\\u00e9"}',
                            content_type=JSON)
    r = answered(ctx, corr)
    expect_eq(r.props.content_type, JSON, "content_type")
    expect_eq(r.status(), 0, "rpc-status")
    expect_eq(r.body, '{"b":1,"a":2.0,"s":"\u00e9"}'.encode(), "the body, byte for byte")


@check
def the_media_type_is_read_without_case_or_parameters(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=b'{"x":1}',
                            content_type="Application/JSON; charset=utf-8")
    r = answered(ctx, corr)
    expect_eq(r.status(), 0, "rpc-status")
    expect_eq(r.props.content_type, JSON, "content_type")
    expect_eq(r.value(), {"x": 1}, "the result")


@check
def no_content_type_means_msgpack(ctx):
    corr = ctx.peer.request(ctx.m("echo"), {"x": 2}, content_type=None)
    r = answered(ctx, corr)
    expect_eq(r.status(), 0, "rpc-status")
    expect_eq(decode(r.body, MSGPACK), {"x": 2}, "the result, in msgpack")


@check
def an_empty_body_is_nil(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=b"")
    r = answered(ctx, corr)
    expect_eq(r.status(), 0, "rpc-status")
    expect_eq(r.value(), None, "the result")


@check
def without_a_type_the_method_is_the_routing_key(ctx):
    corr = ctx.peer.request(ctx.m("echo"), {"y": 3}, with_type=False)
    r = answered(ctx, corr)
    expect_eq(r.status(), 0, "rpc-status")
    expect_eq(r.value(), {"y": 3}, "the result")


@check
def any_integer_type_carries_the_deadline_and_the_attempt(ctx):
    # pika writes a small int as a signed 32-bit field, a large one as 64-bit.
    corr = ctx.peer.request(ctx.m("echo"), {"z": 4}, headers={"rpc-attempt": 1})
    r = answered(ctx, corr)
    expect_eq(r.status(), 0, "rpc-status")


@check
def a_request_past_its_deadline_is_dropped_unexecuted_and_unanswered(ctx):
    corr = ctx.peer.request(ctx.m("echo"), {}, deadline_ms=-1000)
    ctx.peer.drain(2.0)
    expect(corr not in ctx.peer.replies, "an expired request was answered")
    expect(ctx.peer.dead_letter(ctx.dlq, corr, timeout=0.5) is None,
           "an expired request was dead-lettered")


@check
def a_one_way_request_is_consumed_and_not_answered(ctx):
    queue = "rpc.%s" % ctx.service
    before = ctx.peer.queue_count(queue)
    corr = ctx.peer.request(ctx.m("echo"), {"one": "way"}, reply=False)
    end = time.monotonic() + 10
    while ctx.peer.queue_count(queue) > 0 and time.monotonic() < end:
        ctx.peer.conn.sleep(0.05)
    expect_eq(ctx.peer.queue_count(queue), 0, "requests left in %s (%d before)" % (queue, before))
    ctx.peer.drain(0.5)
    expect(corr not in ctx.peer.replies, "a one-way request was answered")
    expect(ctx.peer.dead_letter(ctx.dlq, corr, timeout=0.5) is None,
           "a one-way request was dead-lettered")


# ------------------------------------------------------------ errors

@check
def an_error_reply_is_code_message_and_details(ctx):
    corr = ctx.peer.request(ctx.m("fail"), {"code": "NOT_FOUND", "message": "no user 42",
                                            "details": {"id": 42}})
    r, body = error_reply(ctx, corr, "NOT_FOUND")
    expect_eq(body, {"code": "NOT_FOUND", "message": "no user 42", "details": {"id": 42}},
              "the error body")


@check
def an_error_without_details_has_no_details_key(ctx):
    corr = ctx.peer.request(ctx.m("fail"), {"code": "ABORTED", "message": "conflict"})
    r, body = error_reply(ctx, corr, "ABORTED")
    expect_eq(body, {"code": "ABORTED", "message": "conflict"}, "the error body")


@check
def every_final_status_comes_back_as_rpc_status_and_code(ctx):
    # RESOURCE_EXHAUSTED and UNAVAILABLE are transient: the worker retries them.
    final = [s for s in STATUS[1:] if s not in ("RESOURCE_EXHAUSTED", "UNAVAILABLE")]
    corrs = {s: ctx.peer.request(ctx.m("fail"), {"code": s, "message": s.lower()},
                                 content_type=JSON) for s in final}
    for s, corr in corrs.items():
        r, body = error_reply(ctx, corr, s)
        expect_eq(r.props.content_type, JSON, "content_type of %s" % s)
        expect_eq(body.get("message"), s.lower(), "the message of %s" % s)


@check
def an_unknown_method_is_unimplemented_and_dead_lettered(ctx):
    method = ctx.m("nosuch")
    corr = ctx.peer.request(method, {"k": "v"})
    d = poison(ctx, corr, "unknown-method", "UNIMPLEMENTED", "unknown method %s" % method)
    expect_eq(d.props.type, method, "the dead letter's type")
    expect_eq(decode(d.body, d.props.content_type), {"k": "v"}, "the dead letter's body")
    expect_eq(d.props.reply_to, ctx.peer.reply_queue, "the dead letter's reply_to")


@check
def an_undecodable_msgpack_body_is_poison(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=b"\xc1")
    poison(ctx, corr, "undecodable", "INVALID_ARGUMENT")


@check
def a_json_object_with_a_key_twice_is_poison(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=b'{"a":1,"a":2}', content_type=JSON)
    poison(ctx, corr, "undecodable", "INVALID_ARGUMENT")


@check
def msgpack_with_trailing_bytes_is_poison(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=encode({"a": 1}) + b"\x00")
    poison(ctx, corr, "undecodable", "INVALID_ARGUMENT")


@check
def a_deadline_that_is_a_string_is_a_bad_envelope(ctx):
    corr = ctx.peer.request(ctx.m("echo"), {}, deadline_ms=None,
                            headers={"rpc-deadline": "soon"})
    poison(ctx, corr, "bad-envelope", "INVALID_ARGUMENT",
           "header rpc-deadline: expected an integer, got a string")


@check
def an_unknown_content_type_is_a_bad_envelope(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=b"hello", content_type="text/plain")
    poison(ctx, corr, "bad-envelope", "INVALID_ARGUMENT")


@check
def a_body_over_the_size_limit_is_too_large_and_its_dead_letter_empty(ctx):
    corr = ctx.peer.request(ctx.m("echo"), body=b"\x00" * (ctx.max_size + 1))
    d = poison(ctx, corr, "too-large", "INVALID_ARGUMENT")
    expect_eq(d.body, b"", "the dead letter's body")


# ------------------------------------------------------------ batches

def batch_entry(ctx, corr, value, accept):
    headers = {"rpc-deadline": now_ms() + 30000}
    if accept:
        headers["rpc-accept-batch"] = 1
    return {"correlation_id": corr, "message_id": new_id(), "type": ctx.m("echo"),
            "reply_to": ctx.peer.reply_queue, "app_id": "conformance",
            "content_type": MSGPACK, "timestamp": int(time.time()),
            "headers": headers, "body": encode(value)}


def publish_batch(ctx, entries):
    props = pika.BasicProperties(content_type=BATCH, delivery_mode=2,
                                 correlation_id="batch-" + new_id(), headers={"rpc-batch": 1})
    ctx.peer.publish("rpc.batch", ctx.service, encode_batch(entries), props)


def batches_taken(ctx):
    if not ctx.peer.exchange_exists("rpc.batch"):
        raise Skip("no exchange rpc.batch: this worker takes no batches")


@check
def a_batch_of_requests_is_answered_entry_by_entry(ctx):
    batches_taken(ctx)
    corrs = [new_id() for _ in range(3)]
    publish_batch(ctx, [batch_entry(ctx, c, {"i": i}, False) for i, c in enumerate(corrs)])
    for i, c in enumerate(corrs):
        r = answered(ctx, c, "the reply to entry %d" % i)
        expect_eq(r.status(), 0, "rpc-status of entry %d" % i)
        expect_eq(r.value(), {"i": i}, "the result of entry %d" % i)


@check
def replies_offered_batched_are_read_whichever_way_they_come(ctx):
    batches_taken(ctx)
    before = ctx.peer.batches_received
    corrs = [new_id() for _ in range(5)]
    publish_batch(ctx, [batch_entry(ctx, c, {"j": i}, True) for i, c in enumerate(corrs)])
    for i, c in enumerate(corrs):
        r = answered(ctx, c, "the reply to entry %d" % i)
        expect_eq(r.value(), {"j": i}, "the result of entry %d" % i)
    print("#     %d batch(es) of replies among them" % (ctx.peer.batches_received - before))


@check
def a_poison_entry_is_dead_lettered_alone_and_the_others_answered(ctx):
    batches_taken(ctx)
    good, bad = new_id(), new_id()
    entries = [batch_entry(ctx, good, {"ok": 1}, False), batch_entry(ctx, bad, {}, False)]
    entries[1]["type"] = ctx.m("nosuch")
    publish_batch(ctx, entries)
    expect_eq(answered(ctx, good).value(), {"ok": 1}, "the good entry's result")
    poison(ctx, bad, "unknown-method", "UNIMPLEMENTED")


if __name__ == "__main__":
    ctx = Ctx()
    status = run(ctx)
    ctx.peer.close()
    sys.exit(status)
