#!/usr/bin/python3
"""check_caller.py: checks a caller against warren(7), with a responder
written with a plain AMQP client standing in for a worker of the service
"conform". CALLER is the command line of the caller under test, which takes
warren's rpc-call(1) arguments:

  CALLER [-j] [-t SECONDS] METHOD PARAMS_JSON

and prints the result as JSON on standard output and exits 0 when the
service answered OK; otherwise it exits non-zero and names the status
(NOT_FOUND, DEADLINE_EXCEEDED, ...) on standard error. An implementation in
another language wraps its caller in such a command.

Environment: AMQP_URL (the broker), CALLER, CONFORMANCE_ONLY. Prints one
line per check and ends with "N passed, M failed"; exits 1 when one failed."""
import json
import os
import shlex
import subprocess
import sys
import time

import pika

from wire import (BATCH, JSON, MSGPACK, STATUS, Message, Peer, Skip, check, decode, encode,
                  encode_batch, expect, expect_eq, expect_match, new_id, now_ms, run)

SERVICE = "conform"


class Ctx:
    def __init__(self):
        self.peer = Peer(os.environ["AMQP_URL"])
        self.caller = shlex.split(os.environ["CALLER"])
        ch = self.peer.ch
        # The service's queue: exclusive to this responder, bound as a
        # worker's (warren(7) BROKER OBJECTS: rpc, routing key SERVICE.#).
        self.queue = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(self.queue, "rpc", SERVICE + ".#")


class Call:
    """The caller under test, running."""

    def __init__(self, ctx, args):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(ctx.caller + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def end(self, timeout=30):
        out, err = self.proc.communicate(timeout=timeout)
        self.elapsed = time.monotonic() - self.started
        self.status, self.out, self.err = self.proc.returncode, out.decode(), err.decode()
        return self


def take_request(ctx, timeout=15):
    """The next request on the service's queue, acknowledged."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        method, props, body = ctx.peer.ch.basic_get(ctx.queue, auto_ack=True)
        if method is not None:
            return Message(props, body, method.routing_key)
        ctx.peer.conn.sleep(0.02)
    raise AssertionError("no request reached the service within %d s" % timeout)


def respond(ctx, req, value=None, status=0, body=None, content_type=None, headers=None,
            correlation_id=None):
    """A reply as a worker sends it (warren(7) REPLIES)."""
    ct = content_type or (req.props.content_type or MSGPACK)
    if body is None:
        if status != 0:
            value = {"code": STATUS[status], "message": value}
        body = encode(value, ct)
    h = {"rpc-status": status} if headers is None else headers
    props = pika.BasicProperties(correlation_id=correlation_id or req.props.correlation_id,
                                 content_type=ct, delivery_mode=1, headers=h)
    ctx.peer.publish("", req.props.reply_to, body, props, mandatory=False)


def result_of(call):
    expect_eq(call.status, 0, "the caller's exit status (stderr %r)" % call.err)
    return json.loads(call.out)


@check
def a_request_carries_the_properties_and_headers_of_the_contract(ctx):
    call = Call(ctx, ["-t", "20", SERVICE + ".echo", '{"a":1}'])
    req = take_request(ctx)
    p, h = req.props, req.headers
    expect_eq(req.routing_key, SERVICE + ".echo", "the routing key")
    expect_eq(p.type, SERVICE + ".echo", "type")
    expect_eq(p.content_type, MSGPACK, "content_type (the default)")
    expect_eq(p.delivery_mode, 2, "delivery_mode")
    expect_match(r"[0-9a-f]{32}", p.correlation_id, "correlation_id")
    expect(p.message_id and len(p.message_id) <= 64, "message_id: 1 to 64 bytes")
    expect(p.reply_to and len(p.reply_to) <= 255, "reply_to is set")
    expect(p.app_id and len(p.app_id) <= 127, "app_id is set")
    expect(isinstance(h.get("rpc-deadline"), int), "rpc-deadline is an integer")
    expect(abs(h["rpc-deadline"] - (now_ms() + 20000)) < 10000,
           "rpc-deadline is the call's time plus its timeout (20 s): %d ms from now"
           % (h["rpc-deadline"] - now_ms()))
    expect(h.get("rpc-attempt", 1) == 1, "rpc-attempt is 1 or absent")
    if "traceparent" in h:
        expect_match(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", h["traceparent"],
                     "traceparent")
    expect_eq(decode(req.body, p.content_type), {"a": 1}, "the params")
    respond(ctx, req, {"a": 1})
    expect_eq(result_of(call.end()), {"a": 1}, "the result printed")


@check
def a_json_call_is_sent_and_read_in_json(ctx):
    call = Call(ctx, ["-j", SERVICE + ".echo", '{"x":[1,2.5,"y"]}'])
    req = take_request(ctx)
    expect_eq(req.props.content_type, JSON, "content_type")
    expect_eq(json.loads(req.body), {"x": [1, 2.5, "y"]}, "the params")
    respond(ctx, req, body=b'{"x":[1,2.5,"y"]}')
    expect_eq(result_of(call.end()), {"x": [1, 2.5, "y"]}, "the result printed")


@check
def a_msgpack_reply_to_a_json_call_is_read_too(ctx):
    call = Call(ctx, ["-j", SERVICE + ".echo", "{}"])
    req = take_request(ctx)
    respond(ctx, req, {"from": "msgpack"}, content_type=MSGPACK)
    expect_eq(result_of(call.end()), {"from": "msgpack"}, "the result printed")


@check
def an_error_reply_ends_the_call_with_its_status_and_message(ctx):
    call = Call(ctx, [SERVICE + ".echo", "{}"])
    req = take_request(ctx)
    respond(ctx, req, body=encode({"code": "NOT_FOUND", "message": "no user 42",
                                   "details": {"id": 42}}), headers={"rpc-status": 5})
    call.end()
    expect(call.status != 0, "the caller exited 0 on NOT_FOUND")
    expect("NOT_FOUND" in call.err and "no user 42" in call.err,
           "stderr names the status and the message: %r" % call.err)


@check
def a_late_reply_of_the_same_caller_is_ignored(ctx):
    # An id with the caller's half (its first 16 digits) matching no
    # waiting call is a late reply (warren(7) REQUESTS, correlation_id).
    call = Call(ctx, [SERVICE + ".echo", "{}"])
    req = take_request(ctx)
    late = req.props.correlation_id[:16] + "0" * 16
    respond(ctx, req, {"late": True}, correlation_id=late)
    respond(ctx, req, {"late": False}, correlation_id=new_id())
    respond(ctx, req, {"answer": 1})
    expect_eq(result_of(call.end()), {"answer": 1}, "the result printed")


@check
def a_reply_without_rpc_status_is_a_decoding_error(ctx):
    call = Call(ctx, [SERVICE + ".echo", "{}"])
    req = take_request(ctx)
    respond(ctx, req, {"a": 1}, headers={})
    call.end()
    expect(call.status != 0, "the caller took a reply without rpc-status")
    expect(call.elapsed < 25, "the call ended at once, not at its deadline")


@check
def a_reply_whose_status_is_not_an_integer_is_dropped_and_the_call_ends_at_its_deadline(ctx):
    call = Call(ctx, ["-t", "1.5", SERVICE + ".echo", "{}"])
    req = take_request(ctx)
    respond(ctx, req, {"a": 1}, headers={"rpc-status": "zero"})
    call.end()
    expect(call.status != 0, "the caller took a reply with rpc-status \"zero\"")
    expect("DEADLINE_EXCEEDED" in call.err, "stderr names DEADLINE_EXCEEDED: %r" % call.err)
    expect(call.elapsed >= 1.4, "the call ended %.2f s in, before its deadline" % call.elapsed)


@check
def with_no_reply_the_call_ends_at_its_deadline(ctx):
    call = Call(ctx, ["-t", "1", SERVICE + ".echo", "{}"])
    take_request(ctx)
    call.end()
    expect(call.status != 0, "the caller exited 0 with no reply")
    expect("DEADLINE_EXCEEDED" in call.err, "stderr names DEADLINE_EXCEEDED: %r" % call.err)
    expect(call.elapsed >= 0.9, "the call ended %.2f s in, before its deadline" % call.elapsed)


@check
def a_caller_that_offers_batches_reads_a_batch_of_replies(ctx):
    call = Call(ctx, [SERVICE + ".echo", "{}"])
    req = take_request(ctx)
    accept = req.headers.get("rpc-accept-batch")
    if not isinstance(accept, int) or accept < 1:
        respond(ctx, req, {})
        call.end()
        raise Skip("the caller does not offer rpc-accept-batch")
    entry = {"correlation_id": req.props.correlation_id, "content_type": MSGPACK,
             "headers": {"rpc-status": 0}, "body": encode({"batched": True})}
    props = pika.BasicProperties(content_type=BATCH, delivery_mode=1,
                                 headers={"rpc-batch": 1})
    ctx.peer.publish("", req.props.reply_to, encode_batch([entry]), props, mandatory=False)
    expect_eq(result_of(call.end()), {"batched": True}, "the result printed")


if __name__ == "__main__":
    ctx = Ctx()
    status = run(ctx)
    ctx.peer.close()
    sys.exit(status)
