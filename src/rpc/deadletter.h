/* deadletter.h: the contract of a dead letter, shared by the worker that
 * writes one and rpc-dlq, which reads, replays, purges and exports them
 * (documented for other languages in warren(7)).
 *
 * A dead letter is the original request (body, content_type, type,
 * correlation_id, message_id, reply_to, app_id, timestamp, its headers)
 * published persistent to the exchange WIRE_DLX (wire.h) with the
 * request's routing key (its method), which routes it to the service's
 * dead-letter queue (wire_dlq), with these headers added or replaced: */
#ifndef WARREN_DEADLETTER_H
#define WARREN_DEADLETTER_H

#define DL_H_REASON "rpc-dead-reason" /* string: one of the DL_R_* below */
#define DL_H_ERROR "rpc-dead-error"   /* string: what went wrong, for people */
#define DL_H_WORKER "rpc-dead-worker" /* string: "<service>@<host>:<pid>" */
#define DL_H_TIME "rpc-dead-time"     /* int64: Unix ms when it was dead-lettered */
#define DL_H_QUEUE "rpc-dead-queue"   /* string: the queue it was taken from */
/* rpc-attempt (int) then counts the attempts made, the last included. */

/* Reasons. A worker writes the first nine; a message the broker itself
 * dead-lettered carries no rpc-dead-reason but x-first-death-reason
 * ("delivery_limit", "rejected", "expired", "maxlen"), which readers show
 * as "broker:<that reason>". */
#define DL_R_UNDECODABLE "undecodable"       /* the body is not valid msgpack/JSON */
#define DL_R_BAD_ENVELOPE "bad-envelope"     /* properties or headers malformed */
#define DL_R_UNKNOWN_METHOD "unknown-method" /* no handler for the method */
#define DL_R_CRASHED "crashed-worker"        /* delivered worker.crash_limit times without an end */
#define DL_R_RETRIES "retries-exhausted"     /* transient failures outlasted worker.retry_attempts */
#define DL_R_HANDLER_TIMEOUT "handler-timeout" /* its handler ran past its time limit */
#define DL_R_BAD_SIGNATURE "bad-signature" /* unsigned, badly signed, unknown or stale key */
#define DL_R_NOT_ALLOWED "not-allowed"     /* the signing key may not call the method */
/* The body is larger than message.max_size (plus the seal's 40 bytes when
 * sealed): refused as it arrived, before any check, opening or decoding;
 * its body was not kept, so the dead letter's body is empty. */
#define DL_R_TOO_LARGE "too-large"

#endif
