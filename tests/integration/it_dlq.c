/* it_dlq.c: rpc-dlq against a real broker, with dead letters made the way a
 * worker and the broker make them (published to rpc.dlx, rejected from
 * rpc.example), checked with a plain AMQP client: what a replay publishes,
 * that export and import give back the very same message for every header
 * type, that a nacked replay stays, that walking the queue loses nothing
 * and keeps its order, and that example-service processes a replay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "envelope.h"
#include "testenv.h"

#define DLQ "rpc.example.dlq"

static struct raw *raw;

static int setup(void **state)
{
	raw = raw_connect();
	setenv("WARREN_URL", testenv_url(), 1);
	unsetenv("COLUMNS");
	return 0;
}

static int teardown(void **state)
{
	raw_close(raw);
	return 0;
}

/* Each test starts with both queues empty. */
static int empty_queues(void **state)
{
	assert_int_equal(raw_purge(raw, DLQ), 0);
	assert_int_equal(raw_purge(raw, "rpc.example"), 0);
	return 0;
}

/* ------------------------------------------------------------ running rpc-dlq */

struct run {
	int status;
	char *out, *err; /* malloc'd */
};

static char *slurp_fd(int fd)
{
	off_t len = lseek(fd, 0, SEEK_END);
	char *buf = malloc((size_t)len + 1);

	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)len, 0), len);
	buf[len] = '\0';
	close(fd);
	return buf;
}

static int temp_file(const char *content)
{
	char path[] = "/tmp/it_dlq.XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	if (content != NULL) {
		assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
		lseek(fd, 0, SEEK_SET);
	}
	return fd;
}

/* Runs $WARREN_BIN/rpc-dlq with args (NULL-ended) and input on stdin. */
static struct run run_dlq(const char *input, const char *const *args)
{
	const char *bin = getenv("WARREN_BIN") != NULL ? getenv("WARREN_BIN") : "build/bin";
	int in = temp_file(input != NULL ? input : ""), out = temp_file(NULL),
	    err = temp_file(NULL);
	char path[512];
	const char *argv[32] = {path};
	struct run r = {0};
	int n = 1, st = 0;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/rpc-dlq", bin);
	for (int i = 0; args[i] != NULL && n < 31; i++) {
		argv[n++] = args[i];
	}
	pid = fork();
	if (pid == 0) {
		dup2(in, 0);
		dup2(out, 1);
		dup2(err, 2);
		execv(path, (char *const *)argv);
		_exit(127);
	}
	assert_true(waitpid(pid, &st, 0) == pid);
	close(in);
	r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	r.out = slurp_fd(out);
	r.err = slurp_fd(err);
	return r;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* Runs and expects status, stdout and stderr exactly. */
static void expect_run(const char *input, const char *const *args, int status, const char *out,
                       const char *err)
{
	struct run r = run_dlq(input, args);

	if (r.status != status || strcmp(r.out, out) != 0 || strcmp(r.err, err) != 0) {
		print_error(
		    "status %d (want %d)\nstdout [%s]\nwant   [%s]\nstderr [%s]\nwant   [%s]\n",
		    r.status, status, r.out, out, r.err, err);
	}
	assert_int_equal(r.status, status);
	assert_string_equal(r.out, out);
	assert_string_equal(r.err, err);
	run_free(&r);
}

/* ------------------------------------------------------------ AMQP helpers */

static amqp_table_entry_t str_entry(const char *key, const char *value)
{
	return (amqp_table_entry_t){
	    .key = amqp_cstring_bytes(key),
	    .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(value)}};
}

static amqp_table_entry_t int_entry(const char *key, int64_t value)
{
	return (amqp_table_entry_t){.key = amqp_cstring_bytes(key),
	                            .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = value}};
}

/* Publishes with confirms to any exchange (raw_publish knows only rpc). */
static void publish_to(const char *exchange, const char *routing_key,
                       const amqp_basic_properties_t *p, const char *body, size_t len)
{
	amqp_connection_state_t c = raw_conn(raw);
	amqp_bytes_t b = {.len = len, .bytes = (void *)body};

	assert_int_equal(amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange),
	                                    amqp_cstring_bytes(routing_key), 0, 0, p, b),
	                 AMQP_STATUS_OK);
	for (;;) {
		amqp_frame_t f;
		struct timeval tv = {5, 0};

		assert_int_equal(amqp_simple_wait_frame_noblock(c, &f, &tv), AMQP_STATUS_OK);
		if (f.frame_type == AMQP_FRAME_METHOD &&
		    f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
			return;
		}
		assert_int_not_equal(f.payload.method.id, AMQP_BASIC_NACK_METHOD);
	}
}

/* Takes one message off a queue (auto-ack); the caller destroys it. */
static void take(const char *queue, amqp_message_t *msg)
{
	amqp_connection_state_t c = raw_conn(raw);
	amqp_rpc_reply_t rep;

	amqp_maybe_release_buffers(c);
	rep = amqp_basic_get(c, 1, amqp_cstring_bytes(queue), 1);
	assert_int_equal(rep.reply_type, AMQP_RESPONSE_NORMAL);
	assert_int_equal(rep.reply.id, AMQP_BASIC_GET_OK_METHOD);
	rep = amqp_read_message(c, 1, msg, 0);
	assert_int_equal(rep.reply_type, AMQP_RESPONSE_NORMAL);
}

static bool bytes_eq(amqp_bytes_t a, amqp_bytes_t b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

static bool bytes_is(amqp_bytes_t a, const char *s)
{
	return bytes_eq(a, amqp_cstring_bytes(s));
}

static bool field_eq(const amqp_field_value_t *a, const amqp_field_value_t *b);

/* Tables compare in order: the broker keeps the order within a header's
 * value (the top level is compared by key, see headers_eq). */
static bool table_eq(const amqp_table_t *a, const amqp_table_t *b)
{
	if (a->num_entries != b->num_entries) {
		return false;
	}
	for (int i = 0; i < a->num_entries; i++) {
		if (!bytes_eq(a->entries[i].key, b->entries[i].key) ||
		    !field_eq(&a->entries[i].value, &b->entries[i].value)) {
			return false;
		}
	}
	return true;
}

static bool field_eq(const amqp_field_value_t *a, const amqp_field_value_t *b)
{
	if (a->kind != b->kind) {
		return false;
	}
	switch (a->kind) {
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		return bytes_eq(a->value.bytes, b->value.bytes);
	case AMQP_FIELD_KIND_TABLE:
		return table_eq(&a->value.table, &b->value.table);
	case AMQP_FIELD_KIND_ARRAY:
		if (a->value.array.num_entries != b->value.array.num_entries) {
			return false;
		}
		for (int i = 0; i < a->value.array.num_entries; i++) {
			if (!field_eq(&a->value.array.entries[i], &b->value.array.entries[i])) {
				return false;
			}
		}
		return true;
	case AMQP_FIELD_KIND_BOOLEAN:
		return (a->value.boolean != 0) == (b->value.boolean != 0);
	case AMQP_FIELD_KIND_I8:
		return a->value.i8 == b->value.i8;
	case AMQP_FIELD_KIND_U8:
		return a->value.u8 == b->value.u8;
	case AMQP_FIELD_KIND_I16:
		return a->value.i16 == b->value.i16;
	case AMQP_FIELD_KIND_U16:
		return a->value.u16 == b->value.u16;
	case AMQP_FIELD_KIND_I32:
		return a->value.i32 == b->value.i32;
	case AMQP_FIELD_KIND_U32:
		return a->value.u32 == b->value.u32;
	case AMQP_FIELD_KIND_F32:
		return memcmp(&a->value.f32, &b->value.f32, sizeof(float)) == 0;
	case AMQP_FIELD_KIND_F64:
		return memcmp(&a->value.f64, &b->value.f64, sizeof(double)) == 0;
	case AMQP_FIELD_KIND_DECIMAL:
		return a->value.decimal.decimals == b->value.decimal.decimals &&
		       a->value.decimal.value == b->value.decimal.value;
	case AMQP_FIELD_KIND_VOID:
		return true;
	default: /* I64, U64, TIMESTAMP */
		return a->value.u64 == b->value.u64;
	}
}

/* a and b have the same headers, with the same types and values, but for
 * x-delivery-count, the broker's count of each one's deliveries. */
static void assert_headers_eq(const amqp_basic_properties_t *a, const amqp_basic_properties_t *b)
{
	int na = 0, nb = 0;

	for (int i = 0; i < a->headers.num_entries; i++) {
		const amqp_table_entry_t *e = &a->headers.entries[i];
		char key[128];
		const amqp_field_value_t *v;

		if (bytes_is(e->key, "x-delivery-count")) {
			continue;
		}
		na++;
		snprintf(key, sizeof(key), "%.*s", (int)e->key.len, (const char *)e->key.bytes);
		v = wire_header(b, key);
		if (v == NULL || !field_eq(&e->value, v)) {
			fail_msg("header %s differs", key);
		}
	}
	for (int i = 0; (b->_flags & AMQP_BASIC_HEADERS_FLAG) && i < b->headers.num_entries; i++) {
		nb += !bytes_is(b->headers.entries[i].key, "x-delivery-count");
	}
	assert_int_equal(nb, na);
}

/* A worker's dead letter, as deadletter.h describes it. */
struct letter {
	amqp_basic_properties_t p;
	amqp_table_entry_t h[32];
	char corr[32], msgid[32];
};

static void make_letter(struct letter *l, const char *method, const char *corr, const char *reason)
{
	int n = 0;

	memset(l, 0, sizeof(*l));
	snprintf(l->corr, sizeof(l->corr), "%s", corr);
	snprintf(l->msgid, sizeof(l->msgid), "id-%s", corr);
	l->h[n++] = int_entry("rpc-deadline", warren_now_ms() - 60000);
	l->h[n++] = int_entry("rpc-attempt", 4);
	l->h[n++] =
	    str_entry("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
	l->h[n++] = str_entry("rpc-dead-reason", reason);
	l->h[n++] = str_entry("rpc-dead-error", "it broke");
	l->h[n++] = str_entry("rpc-dead-worker", "example@it:1");
	l->h[n++] = int_entry("rpc-dead-time", warren_now_ms() - 90 * 60000); /* "1h" */
	l->h[n++] = str_entry("rpc-dead-queue", "rpc.example");
	l->p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
	              AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
	              AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
	              AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
	l->p.content_type = amqp_cstring_bytes("application/msgpack");
	l->p.delivery_mode = 2;
	l->p.reply_to = amqp_cstring_bytes("it_dlq.replies");
	l->p.correlation_id = amqp_cstring_bytes(l->corr);
	l->p.message_id = amqp_cstring_bytes(l->msgid);
	l->p.timestamp = 1700000000;
	l->p.type = amqp_cstring_bytes(method);
	l->p.app_id = amqp_cstring_bytes("it_dlq");
	l->p.headers = (amqp_table_t){.num_entries = n, .entries = l->h};
}

static const char body_echo[] = "\x81\xa3msg\xa2hi"; /* {"msg":"hi"} */

/* Dead-letters it as a worker does: to rpc.dlx with the method as key. */
static void dead_letter(const char *method, const char *corr, const char *reason)
{
	struct letter l;

	make_letter(&l, method, corr, reason);
	publish_to("rpc.dlx", method, &l.p, body_echo, sizeof(body_echo) - 1);
}

/* ------------------------------------------------------------------ tests */

static void test_a_worker_dead_letter_routed_by_rpc_dlx_is_listed(void **state)
{
	struct run r;

	dead_letter("example.echo", "w-1", "unknown-method");
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);
	r = run_dlq(NULL, (const char *const[]){"list", "example", NULL});
	assert_int_equal(r.status, 0);
	assert_string_equal(r.err, "");
	assert_string_equal(
	    r.out, "AGE  METHOD        REASON          ATTEMPTS  CORRELATION_ID  ERROR\n"
	           "1h   example.echo  unknown-method  4         w-1             it broke\n");
	run_free(&r);
	assert_int_equal(raw_queue_count(raw, DLQ), 1);
}

/* A header of every AMQP type, nested ones too. */
static void every_type(amqp_table_entry_t *h, int *n, amqp_field_value_t *items,
                       amqp_table_entry_t *inner)
{
	static const char not_utf8[] = "\xff\xfe";

	inner[0] = str_entry("k", "v");
	inner[1] = int_entry("$type", 1); /* a key JSON objects would misread */
	items[0] = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I32, .value.i32 = -7};
	items[1] = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8,
	                                .value.bytes = amqp_cstring_bytes("x")};
	items[2] = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TABLE,
	                                .value.table = {.num_entries = 2, .entries = inner}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-bool"),
	                                 {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-i8"),
	                                 {.kind = AMQP_FIELD_KIND_I8, .value.i8 = -8}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-u8"),
	                                 {.kind = AMQP_FIELD_KIND_U8, .value.u8 = 200}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-i16"),
	                                 {.kind = AMQP_FIELD_KIND_I16, .value.i16 = -16000}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-u16"),
	                                 {.kind = AMQP_FIELD_KIND_U16, .value.u16 = 60000}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-i32"),
	                                 {.kind = AMQP_FIELD_KIND_I32, .value.i32 = -2000000000}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-u32"),
	                                 {.kind = AMQP_FIELD_KIND_U32, .value.u32 = 4000000000u}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-u64"),
	                                 {.kind = AMQP_FIELD_KIND_U64, .value.u64 = UINT64_MAX}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-f32"),
	                                 {.kind = AMQP_FIELD_KIND_F32, .value.f32 = 0.1f}};
	h[(*n)++] = (amqp_table_entry_t){amqp_cstring_bytes("t-f64"),
	                                 {.kind = AMQP_FIELD_KIND_F64, .value.f64 = 0.1}};
	h[(*n)++] =
	    (amqp_table_entry_t){amqp_cstring_bytes("t-dec"),
	                         {.kind = AMQP_FIELD_KIND_DECIMAL, .value.decimal = {2, 12345}}};
	h[(*n)++] =
	    (amqp_table_entry_t){amqp_cstring_bytes("t-ts"),
	                         {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 1700000000}};
	h[(*n)++] = (amqp_table_entry_t){
	    amqp_cstring_bytes("t-bytes"),
	    {.kind = AMQP_FIELD_KIND_BYTES, .value.bytes = {3, (void *)"\x00\x01\x02"}}};
	h[(*n)++] = (amqp_table_entry_t){
	    amqp_cstring_bytes("t-bad-utf8"),
	    {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {2, (void *)not_utf8}}};
	h[(*n)++] =
	    (amqp_table_entry_t){amqp_cstring_bytes("t-void"), {.kind = AMQP_FIELD_KIND_VOID}};
	h[(*n)++] =
	    (amqp_table_entry_t){amqp_cstring_bytes("t-array"),
	                         {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {3, items}}};
	h[(*n)++] =
	    (amqp_table_entry_t){amqp_cstring_bytes("t-table"),
	                         {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {2, inner}}};
}

static void test_export_purge_import_gives_back_the_same_message_for_every_header_type(void **state)
{
	amqp_field_value_t items[3];
	amqp_table_entry_t inner[2];
	struct letter l;
	amqp_message_t got, ref;
	struct run ex, im;

	make_letter(&l, "example.echo", "t-1", "bad-envelope");
	every_type(l.h, &l.p.headers.num_entries, items, inner);
	l.p._flags |= AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_EXPIRATION_FLAG;
	l.p.priority = 3;
	l.p.expiration = amqp_cstring_bytes("600000");
	/* The broker has its own way with some types (a uint64 comes back as
	 * an int64): the reference is a copy as the queue gives it. */
	publish_to("rpc.dlx", "example.echo", &l.p, "\xc1\x00", 2);
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);
	take(DLQ, &ref);
	publish_to("rpc.dlx", "example.echo", &l.p, "\xc1\x00", 2);
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);

	ex = run_dlq(NULL, (const char *const[]){"export", "example", NULL});
	assert_int_equal(ex.status, 0);
	expect_run(NULL, (const char *const[]){"purge", "example", "--yes", NULL}, 0,
	           "purged 1 dead letter\n", "");
	assert_int_equal(raw_queue_count(raw, DLQ), 0);
	im = run_dlq(ex.out, (const char *const[]){"import", "example", NULL});
	assert_string_equal(im.err, "");
	assert_string_equal(im.out, "imported 1 of 1 dead letter into rpc.example.dlq\n");
	assert_int_equal(im.status, 0);

	take(DLQ, &got);
	assert_int_equal(got.properties._flags, ref.properties._flags);
	assert_headers_eq(&ref.properties, &got.properties);
	assert_int_equal(got.properties._flags & ~AMQP_BASIC_HEADERS_FLAG,
	                 l.p._flags & ~AMQP_BASIC_HEADERS_FLAG);
	assert_true(bytes_eq(got.properties.correlation_id, l.p.correlation_id));
	assert_true(bytes_eq(got.properties.message_id, l.p.message_id));
	assert_true(bytes_eq(got.properties.reply_to, l.p.reply_to));
	assert_true(bytes_eq(got.properties.type, l.p.type));
	assert_true(bytes_eq(got.properties.expiration, l.p.expiration));
	assert_int_equal(got.properties.priority, 3);
	assert_int_equal(got.properties.timestamp, l.p.timestamp);
	assert_int_equal(got.body.len, 2);
	assert_memory_equal(got.body.bytes, "\xc1\x00", 2);
	amqp_destroy_message(&got);
	amqp_destroy_message(&ref);
	run_free(&ex);
	run_free(&im);
}

static void test_a_dead_letter_the_broker_made_shows_its_reason_and_time(void **state)
{
	amqp_connection_state_t c = raw_conn(raw);
	amqp_basic_properties_t p = {._flags = AMQP_BASIC_TYPE_FLAG |
	                                       AMQP_BASIC_CORRELATION_ID_FLAG |
	                                       AMQP_BASIC_DELIVERY_MODE_FLAG,
	                             .type = amqp_cstring_bytes("example.echo"),
	                             .correlation_id = amqp_cstring_bytes("b-1"),
	                             .delivery_mode = 2};
	amqp_basic_get_ok_t *ok;
	amqp_rpc_reply_t rep;
	amqp_message_t m;
	struct run r;

	/* No service runs: a plain consumer rejects the request, and the
	 * queue's policy dead-letters it to rpc.dlx. */
	assert_int_equal(raw_publish(raw, "example.echo", &p, body_echo, sizeof(body_echo) - 1), 0);
	assert_int_equal(raw_await_count(raw, "rpc.example", 1, 5000), 1);
	rep = amqp_basic_get(c, 1, amqp_cstring_bytes("rpc.example"), 0);
	assert_int_equal(rep.reply.id, AMQP_BASIC_GET_OK_METHOD);
	ok = rep.reply.decoded;
	uint64_t tag = ok->delivery_tag;
	assert_int_equal(amqp_read_message(c, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
	amqp_destroy_message(&m);
	assert_int_equal(amqp_basic_reject(c, 1, tag, 0), 0);
	assert_int_equal(raw_await_count(raw, DLQ, 1, 10000), 1);

	/* Its time comes from x-death, in whole seconds: a few seconds old. */
	r = run_dlq(NULL, (const char *const[]){"list", "example", "--newer-than", "1m", NULL});
	assert_int_equal(r.status, 0);
	assert_string_equal(r.err, "");
	assert_true(strlen(r.out) > 70 && r.out[68] >= '0' && r.out[68] <= '9');
	assert_string_equal(strchr(r.out + 68, 's'),
	                    "s   example.echo  broker:rejected  ?         b-1             "
	                    "dead-lettered by the broker from rpc.example\n");
	run_free(&r);
	expect_run(NULL,
	           (const char *const[]){"list", "example", "--reason", "broker:*", "--older-than",
	                                 "1m", NULL},
	           0, "AGE  METHOD  REASON  ATTEMPTS  CORRELATION_ID  ERROR\n", "");
}

static void test_replay_drops_the_death_and_reply_to_and_keeps_the_idempotency_key(void **state)
{
	struct letter l;
	amqp_field_value_t death_items[1];
	amqp_table_entry_t death[2];
	amqp_message_t got;
	const amqp_field_value_t *v;
	int n;

	make_letter(&l, "example.echo", "r-1", "retries-exhausted");
	n = l.p.headers.num_entries;
	death[0] = str_entry("reason", "expired");
	death[1] = str_entry("queue", "rpc.delay.1s");
	death_items[0] = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TABLE,
	                                      .value.table = {.num_entries = 2, .entries = death}};
	l.h[n++] =
	    (amqp_table_entry_t){amqp_cstring_bytes("x-death"),
	                         {.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {1, death_items}}};
	l.h[n++] = str_entry("x-first-death-reason", "expired");
	l.h[n++] = str_entry("x-last-death-queue", "rpc.delay.1s");
	l.h[n++] = int_entry("x-delivery-count", 3);
	l.h[n++] = str_entry("x-custom", "kept");
	l.p.headers.num_entries = n;
	publish_to("rpc.dlx", "example.echo", &l.p, body_echo, sizeof(body_echo) - 1);
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);

	expect_run(NULL, (const char *const[]){"replay", "example", NULL}, 0,
	           "replayed 1 of 1 dead letter\n", "");
	assert_int_equal(raw_queue_count(raw, DLQ), 0);
	assert_int_equal(raw_await_count(raw, "rpc.example", 1, 5000), 1);
	take("rpc.example", &got);
	const amqp_basic_properties_t *p = &got.properties;
	assert_false(p->_flags & AMQP_BASIC_REPLY_TO_FLAG);
	assert_true(bytes_is(p->message_id, "id-r-1"));
	assert_true(bytes_is(p->correlation_id, "r-1"));
	assert_true(bytes_is(p->type, "example.echo"));
	assert_true(bytes_is(p->app_id, "it_dlq"));
	assert_true(bytes_is(p->content_type, "application/msgpack"));
	assert_int_equal(p->delivery_mode, 2);
	assert_int_equal(p->timestamp, 1700000000);
	v = wire_header(p, "rpc-attempt");
	assert_non_null(v);
	assert_int_equal(v->kind, AMQP_FIELD_KIND_I64);
	assert_int_equal(v->value.i64, 1);
	assert_non_null(wire_header(p, "traceparent"));
	assert_non_null(wire_header(p, "x-custom"));
	static const char *const gone[] = {
	    "rpc-deadline",    "rpc-dead-reason",      "rpc-dead-error",
	    "rpc-dead-worker", "rpc-dead-time",        "rpc-dead-queue",
	    "x-death",         "x-first-death-reason", "x-last-death-queue"};
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
		if (wire_header(p, gone[i]) != NULL) {
			fail_msg("the replay still carries %s", gone[i]);
		}
	}
	/* The quorum queue counts this first delivery as x-delivery-count 0;
	 * the dead letter's 3 is gone. */
	v = wire_header(p, "x-delivery-count");
	assert_true(v == NULL || (v->kind == AMQP_FIELD_KIND_I64 && v->value.i64 == 0));
	assert_int_equal(p->headers.num_entries, v != NULL ? 4 : 3);
	assert_int_equal(got.body.len, sizeof(body_echo) - 1);
	assert_memory_equal(got.body.bytes, body_echo, sizeof(body_echo) - 1);
	amqp_destroy_message(&got);
}

static void test_a_replay_the_broker_nacks_is_reported_and_stays(void **state)
{
	amqp_connection_state_t c = raw_conn(raw);
	amqp_table_entry_t args[2] = {int_entry("x-max-length", 0),
	                              str_entry("x-overflow", "reject-publish")};
	amqp_table_t t = {2, args};
	struct letter l;

	/* A queue that refuses everything, bound for the methods full.*. */
	assert_non_null(amqp_queue_declare(c, 1, amqp_cstring_bytes("it_dlq.full"), 0, 0, 0, 1, t));
	assert_non_null(amqp_queue_bind(c, 1, amqp_cstring_bytes("it_dlq.full"),
	                                amqp_cstring_bytes("rpc"), amqp_cstring_bytes("full.#"),
	                                amqp_empty_table));
	make_letter(&l, "full.x", "f-1", "unknown-method");
	publish_to("", DLQ, &l.p, body_echo, sizeof(body_echo) - 1);
	dead_letter("example.echo", "f-2", "unknown-method");
	assert_int_equal(raw_await_count(raw, DLQ, 2, 5000), 2);

	expect_run(NULL, (const char *const[]){"replay", "example", NULL}, 1,
	           "replayed 1 of 2 dead letters\n",
	           "rpc-dlq: full.x f-1: not replayed: the broker refused it (basic.nack); "
	           "it stays in rpc.example.dlq\n");
	assert_int_equal(raw_queue_count(raw, DLQ), 1);
	expect_run(NULL, (const char *const[]){"list", "example", NULL}, 0,
	           "AGE  METHOD  REASON          ATTEMPTS  CORRELATION_ID  ERROR\n"
	           "1h   full.x  unknown-method  4         f-1             it broke\n",
	           "");
	assert_non_null(amqp_queue_delete(c, 1, amqp_cstring_bytes("it_dlq.full"), 0, 0));
}

/* The correlation ids in the queue, in order, from export. */
static void assert_order(int count)
{
	struct run r = run_dlq(NULL, (const char *const[]){"export", "example", NULL});
	const char *p = r.out;

	assert_int_equal(r.status, 0);
	for (int i = 0; i < count; i++) {
		char want[64];

		snprintf(want, sizeof(want), "\"correlation_id\":\"n-%02d\"", i);
		p = strstr(p, want);
		if (p == NULL) {
			fail_msg("n-%02d missing or out of order", i);
		}
	}
	run_free(&r);
	assert_int_equal(raw_queue_count(raw, DLQ), count);
}

static void test_walking_the_queue_loses_nothing_and_keeps_the_order(void **state)
{
	struct run r;

	for (int i = 0; i < 50; i++) {
		char corr[16];

		snprintf(corr, sizeof(corr), "n-%02d", i);
		dead_letter(i % 2 == 0 ? "example.echo" : "example.fail", corr, "unknown-method");
	}
	assert_int_equal(raw_await_count(raw, DLQ, 50, 5000), 50);
	r = run_dlq(NULL, (const char *const[]){"list", "example", "-n", "3", NULL});
	assert_int_equal(r.status, 0);
	run_free(&r);
	assert_order(50);
	r = run_dlq(NULL, (const char *const[]){"show", "example", "n-07", NULL});
	assert_int_equal(r.status, 0);
	run_free(&r);
	assert_order(50);
	r = run_dlq(NULL, (const char *const[]){"replay", "example", "--dry-run", "-n", "5", NULL});
	assert_int_equal(r.status, 0);
	run_free(&r);
	assert_order(50);
	r = run_dlq(NULL, (const char *const[]){"export", "example", "--method", "example.fail",
	                                        "-n", "2", NULL});
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "\"n-01\""));
	assert_non_null(strstr(r.out, "\"n-03\""));
	assert_null(strstr(r.out, "\"n-05\""));
	run_free(&r);
	assert_order(50);
	expect_run(
	    "",
	    (const char *const[]){"purge", "example", "--method", "example.fail", "--yes", NULL}, 0,
	    "purged 25 dead letters\n", "");
	assert_int_equal(raw_queue_count(raw, DLQ), 25);
}

static void test_example_service_processes_a_replayed_request(void **state)
{
	pid_t pid = testenv_spawn("example-service", NULL, true);

	dead_letter("example.echo", "s-1", "retries-exhausted");
	assert_int_equal(raw_await_count(raw, DLQ, 1, 5000), 1);
	expect_run(NULL, (const char *const[]){"replay", "example", NULL}, 0,
	           "replayed 1 of 1 dead letter\n", "");
	assert_int_equal(raw_queue_count(raw, DLQ), 0);
	/* Consumed and acked by the service, and not dead-lettered again. */
	assert_int_equal(raw_await_count(raw, "rpc.example", 0, 5000), 0);
	usleep(500000);
	assert_int_equal(raw_queue_count(raw, DLQ), 0);
	assert_int_equal(testenv_stop(pid, SIGTERM), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_a_worker_dead_letter_routed_by_rpc_dlx_is_listed,
	                           empty_queues),
	    cmocka_unit_test_setup(
	        test_export_purge_import_gives_back_the_same_message_for_every_header_type,
	        empty_queues),
	    cmocka_unit_test_setup(test_a_dead_letter_the_broker_made_shows_its_reason_and_time,
	                           empty_queues),
	    cmocka_unit_test_setup(
	        test_replay_drops_the_death_and_reply_to_and_keeps_the_idempotency_key,
	        empty_queues),
	    cmocka_unit_test_setup(test_a_replay_the_broker_nacks_is_reported_and_stays,
	                           empty_queues),
	    cmocka_unit_test_setup(test_walking_the_queue_loses_nothing_and_keeps_the_order,
	                           empty_queues),
	    cmocka_unit_test_setup(test_example_service_processes_a_replayed_request, empty_queues),
	};

	return cmocka_run_group_tests_name("it_dlq", tests, setup, teardown);
}
