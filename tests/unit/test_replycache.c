/* test_replycache.c: the worker's reply cache (replycache.c): a repeat is
 * answered from it, within its TTL and its size (oldest first), by caller
 * and message_id; a twin that comes while the first copy runs waits for
 * that run's reply; without a message_id, or with size 0, nothing is kept.
 * The clock is engine_now, wrapped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "replycache.h"

static int64_t now_ms = 1000;

int64_t __wrap_engine_now(void);
int64_t __wrap_engine_now(void)
{
	return now_ms;
}

static void *alloc(size_t n, void *arg)
{
	(void)arg;
	return malloc(n);
}

/* A request parked on a run, and what it was answered. */
struct twin {
	struct replycache_waiter wt;
	bool answered;
	bool with_reply;
	int status;
	char body[32];
};

static void answer(struct replycache_waiter *wt, const struct replycache_reply *r, void *arg)
{
	struct twin *t = (struct twin *)wt;

	(void)arg;
	t->answered = true;
	t->with_reply = r != NULL;
	if (r != NULL) {
		t->status = r->status;
		memcpy(t->body, r->body,
		       r->len < sizeof(t->body) - 1 ? r->len : sizeof(t->body) - 1);
	}
}

/* The key of a request from who ("a:<app_id>" or "k:<signer>"). */
#define KEY(who, id, m)                                                                            \
	(&(struct replycache_key){                                                                 \
	    .signer = (who)[0] == 'k', .caller = (who) + 2, .message_id = (id), .method = (m)})

static const struct replycache_reply reply_a = {.status = 0, .format = 1, .body = "a", .len = 1};

/* Claims (who, id): the verdict; a run is finished at once with body. */
static enum replycache_verdict run_once(struct replycache *c, const char *who, const char *id,
                                        const char *body)
{
	struct replycache_entry *ticket;
	struct replycache_reply hit = {0};
	struct twin t = {0};
	enum replycache_verdict v =
	    replycache_claim(c, KEY(who, id, "example.echo"), &t.wt, &ticket, alloc, NULL, &hit);

	if (v == REPLYCACHE_RUN) {
		struct replycache_reply r = {
		    .status = 0, .format = 0, .body = body, .len = strlen(body)};

		replycache_finish(c, ticket, &r, answer, NULL);
	}
	free((void *)hit.body);
	return v;
}

static int setup(void **state)
{
	struct replycache *c;

	now_ms = 1000;
	assert_int_equal(replycache_new(&c, 3, 64, 60000), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	replycache_free(*state, NULL, NULL);
	return 0;
}

static void a_repeat_is_answered_from_the_cache_with_the_first_reply(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *ticket;
	struct replycache_reply hit = {0};
	struct twin t = {0};

	assert_int_equal(run_once(c, "a:caller", "m1", "first"), REPLYCACHE_RUN);
	assert_int_equal(replycache_claim(c, KEY("a:caller", "m1", "example.echo"), &t.wt, &ticket,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_HIT);
	assert_null(ticket);
	assert_int_equal(hit.len, 5);
	assert_memory_equal(hit.body, "first", 5);
	assert_int_equal(replycache_hits(c), 1);
	free((void *)hit.body);
}

static void a_new_message_id_is_a_miss_and_runs(void **state)
{
	struct replycache *c = *state;

	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_RUN);
	assert_int_equal(run_once(c, "a:caller", "m2", "y"), REPLYCACHE_RUN);
	assert_int_equal(replycache_count(c), 2);
	assert_int_equal(replycache_hits(c), 0);
}

static void a_reply_expires_after_its_ttl(void **state)
{
	struct replycache *c = *state;

	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_RUN);
	now_ms += 59999; /* the last millisecond of its TTL */
	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_HIT);
	now_ms += 1;
	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_RUN);
}

static void a_full_cache_evicts_the_oldest_reply_first(void **state)
{
	struct replycache *c = *state;

	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_RUN);
	now_ms += 10;
	assert_int_equal(run_once(c, "a:caller", "m2", "x"), REPLYCACHE_RUN);
	now_ms += 10;
	assert_int_equal(run_once(c, "a:caller", "m3", "x"), REPLYCACHE_RUN);
	now_ms += 10;
	/* A hit on the oldest does not save it: eviction is in the order kept. */
	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_HIT);
	assert_int_equal(run_once(c, "a:caller", "m4", "x"), REPLYCACHE_RUN);
	assert_int_equal(replycache_count(c), 3);
	assert_int_equal(run_once(c, "a:caller", "m2", "x"), REPLYCACHE_HIT);
	assert_int_equal(run_once(c, "a:caller", "m3", "x"), REPLYCACHE_HIT);
	assert_int_equal(run_once(c, "a:caller", "m4", "x"), REPLYCACHE_HIT);
	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_RUN); /* evicted m2 */
}

/* A cache of 64 bytes of bodies in all, and room for 10 replies. */
static void the_bytes_bound_evicts_the_oldest_replies_and_refuses_a_larger_one(void **state)
{
	struct replycache *c;
	char big[41], huge[66];

	(void)state;
	assert_int_equal(replycache_new(&c, 10, 64, 60000), 0);

	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memset(huge, 'h', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	assert_int_equal(run_once(c, "a:x", "m1", "0123456789"), REPLYCACHE_RUN);
	now_ms += 10;
	assert_int_equal(run_once(c, "a:x", "m2", "0123456789"), REPLYCACHE_RUN);
	now_ms += 10;
	assert_int_equal(replycache_bytes(c), 20);
	/* 40 more: 60 fits. */
	assert_int_equal(run_once(c, "a:x", "m3", big), REPLYCACHE_RUN);
	assert_int_equal(replycache_bytes(c), 60);
	now_ms += 10;
	/* 10 more would be 70: the oldest (m1) goes. */
	assert_int_equal(run_once(c, "a:x", "m4", "0123456789"), REPLYCACHE_RUN);
	assert_int_equal(replycache_bytes(c), 60);
	assert_int_equal(run_once(c, "a:x", "m2", "x"), REPLYCACHE_HIT);
	assert_int_equal(run_once(c, "a:x", "m1", "0123456789"), REPLYCACHE_RUN); /* m2 goes */
	/* Larger than the whole bound: answered, never kept, nothing evicted. */
	assert_int_equal(run_once(c, "a:x", "m5", huge), REPLYCACHE_RUN);
	assert_int_equal(run_once(c, "a:x", "m5", huge), REPLYCACHE_RUN);
	assert_int_equal(replycache_bytes(c), 60);
	assert_int_equal(replycache_count(c), 3);
	replycache_free(c, NULL, NULL);
}

static void a_twin_parked_on_a_run_is_answered_when_it_finishes(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *ticket, *none;
	struct replycache_reply hit = {0};
	struct twin first = {0}, second = {0}, third = {0};

	assert_int_equal(replycache_claim(c, KEY("k:key1", "m1", "example.echo"), &first.wt,
	                                  &ticket, alloc, NULL, &hit),
	                 REPLYCACHE_RUN);
	assert_non_null(ticket);
	assert_int_equal(replycache_claim(c, KEY("k:key1", "m1", "example.echo"), &second.wt, &none,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_PARKED);
	assert_int_equal(replycache_claim(c, KEY("k:key1", "m1", "example.echo"), &third.wt, &none,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_PARKED);
	assert_false(second.answered);
	replycache_finish(c, ticket, &reply_a, answer, NULL);
	assert_true(second.answered && second.with_reply);
	assert_true(third.answered && third.with_reply);
	assert_string_equal(second.body, "a");
	assert_false(first.answered); /* the run answers itself */
	assert_int_equal(replycache_hits(c), 2);
	/* And the reply is kept for the next. */
	assert_int_equal(run_once(c, "k:key1", "m1", "x"), REPLYCACHE_HIT);
}

/* The TTL counts from the start of a run, but a run outlasting it stays:
 * its twins still wait on it. */
static void a_run_longer_than_the_ttl_is_not_expired_while_it_runs(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *ticket, *none;
	struct replycache_reply hit = {0};
	struct twin first = {0}, second = {0};

	replycache_claim(c, KEY("a:x", "m1", "example.echo"), &first.wt, &ticket, alloc, NULL,
	                 &hit);
	now_ms += 120000;
	assert_int_equal(replycache_claim(c, KEY("a:x", "m1", "example.echo"), &second.wt, &none,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_PARKED);
	replycache_finish(c, ticket, &reply_a, answer, NULL);
	assert_true(second.answered && second.with_reply);
}

static void a_twin_of_a_run_that_keeps_nothing_is_sent_back_to_run_alone(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *ticket, *none;
	struct replycache_reply hit = {0};
	struct twin first = {0}, second = {0};

	replycache_claim(c, KEY("a:x", "m1", "example.echo"), &first.wt, &ticket, alloc, NULL,
	                 &hit);
	assert_int_equal(replycache_claim(c, KEY("a:x", "m1", "example.echo"), &second.wt, &none,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_PARKED);
	replycache_finish(c, ticket, NULL, answer, NULL); /* a retry, a time limit... */
	assert_true(second.answered);
	assert_false(second.with_reply);
	assert_int_equal(replycache_count(c), 0);
	assert_int_equal(run_once(c, "a:x", "m1", "x"), REPLYCACHE_RUN);
}

static void runs_are_never_evicted_and_a_full_cache_of_them_runs_uncached(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *t[3], *extra;
	struct replycache_reply hit = {0};
	struct twin w[4] = {0};
	const char *ids[] = {"m1", "m2", "m3"};

	for (int i = 0; i < 3; i++) {
		assert_int_equal(replycache_claim(c, KEY("a:x", ids[i], "example.echo"), &w[i].wt,
		                                  &t[i], alloc, NULL, &hit),
		                 REPLYCACHE_RUN);
	}
	assert_int_equal(replycache_claim(c, KEY("a:x", "m4", "example.echo"), &w[3].wt, &extra,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_RUN);
	assert_null(extra);
	replycache_finish(c, extra, &reply_a, answer, NULL); /* a NULL ticket: nothing */
	for (int i = 0; i < 3; i++) {
		replycache_finish(c, t[i], &reply_a, answer, NULL);
	}
	assert_int_equal(replycache_count(c), 3);
}

static void the_same_message_id_from_two_callers_is_two_entries(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *ticket;
	struct replycache_reply hit = {0};
	struct twin t = {0};

	assert_int_equal(run_once(c, "a:billing", "m1", "for billing"), REPLYCACHE_RUN);
	assert_int_equal(run_once(c, "a:notify", "m1", "for notify"), REPLYCACHE_RUN);
	/* A signer named like an app_id is someone else again. */
	assert_int_equal(run_once(c, "k:billing", "m1", "for the key"), REPLYCACHE_RUN);
	assert_int_equal(replycache_count(c), 3);
	assert_int_equal(replycache_claim(c, KEY("a:notify", "m1", "example.echo"), &t.wt, &ticket,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_HIT);
	assert_memory_equal(hit.body, "for notify", hit.len);
	free((void *)hit.body);
}

static void a_message_id_reused_for_another_method_is_not_answered_from_the_cache(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *ticket;
	struct replycache_reply hit = {0};
	struct twin t = {0};

	assert_int_equal(run_once(c, "a:caller", "m1", "created"), REPLYCACHE_RUN);
	assert_int_equal(replycache_claim(c, KEY("a:caller", "m1", "user.update"), &t.wt, &ticket,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_RUN);
	replycache_finish(c, ticket, NULL, answer, NULL);
}

static void a_request_without_a_message_id_is_never_cached(void **state)
{
	struct replycache *c = *state;

	assert_int_equal(run_once(c, "a:caller", "", "x"), REPLYCACHE_RUN);
	assert_int_equal(run_once(c, "a:caller", "", "x"), REPLYCACHE_RUN);
	assert_int_equal(replycache_count(c), 0);
}

static void size_zero_turns_the_cache_off(void **state)
{
	struct replycache *c;

	(void)state;
	assert_int_equal(replycache_new(&c, 0, 64, 60000), 0);
	assert_null(c);
	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_RUN);
	assert_int_equal(run_once(c, "a:caller", "m1", "x"), REPLYCACHE_RUN);
	assert_int_equal(replycache_count(c), 0);
	assert_int_equal(replycache_hits(c), 0);
	replycache_free(c, NULL, NULL);
}

/* A run at the head of the order (the oldest entry) does not shield the
 * replies behind it: the oldest reply is evicted past it. */
static void a_run_at_the_head_does_not_stop_the_oldest_reply_being_evicted(void **state)
{
	struct replycache *c = *state;
	struct replycache_entry *ticket;
	struct replycache_reply hit = {0};
	struct twin first = {0};

	assert_int_equal(replycache_claim(c, KEY("a:x", "run", "example.echo"), &first.wt, &ticket,
	                                  alloc, NULL, &hit),
	                 REPLYCACHE_RUN);
	assert_non_null(ticket);
	assert_int_equal(run_once(c, "a:x", "m1", "x"), REPLYCACHE_RUN);
	assert_int_equal(run_once(c, "a:x", "m2", "x"), REPLYCACHE_RUN);
	assert_int_equal(run_once(c, "a:x", "m3", "x"), REPLYCACHE_RUN); /* evicts m1 */
	assert_int_equal(replycache_count(c), 3);
	assert_int_equal(run_once(c, "a:x", "m2", "x"), REPLYCACHE_HIT);
	assert_int_equal(run_once(c, "a:x", "m3", "x"), REPLYCACHE_HIT);
	replycache_finish(c, ticket, &reply_a, answer, NULL);
	assert_int_equal(run_once(c, "a:x", "run", "x"), REPLYCACHE_HIT);
}

/* Threads that claim the same message ids at once, as copies of one
 * request taken by several handler threads: each id runs once, and every
 * other copy is answered with that run's reply, from the cache or parked
 * on the run, whichever way the race between parking and the run's end
 * (which takes no lock) goes. */
#define RACE_THREADS 4
#define RACE_IDS     300

struct racer {
	struct replycache *c;
	pthread_barrier_t *barrier;
	atomic_int *runs;  /* per id */
	atomic_bool *lost; /* a parked twin was never answered: the others stop */
	int hits, parked, wrong;
};

struct race_twin {
	struct replycache_waiter wt;
	atomic_bool answered;
	bool right;
	char want[16];
};

static void race_answer(struct replycache_waiter *wt, const struct replycache_reply *r, void *arg)
{
	struct race_twin *t = (struct race_twin *)wt;

	(void)arg;
	t->right = r != NULL && r->len == strlen(t->want) && memcmp(r->body, t->want, r->len) == 0;
	atomic_store(&t->answered, true);
}

static void race_one(struct racer *rc, int i)
{
	char id[16], body[16];
	struct replycache_entry *ticket;
	struct replycache_reply hit = {0};
	struct race_twin t = {0};
	enum replycache_verdict v;

	snprintf(id, sizeof(id), "m%d", i);
	snprintf(body, sizeof(body), "reply %d", i);
	snprintf(t.want, sizeof(t.want), "%s", body);
	v = replycache_claim(rc->c, KEY("k:key1", id, "example.echo"), &t.wt, &ticket, alloc, NULL,
	                     &hit);
	if (v == REPLYCACHE_RUN) {
		struct replycache_reply r = {
		    .status = 0, .format = 0, .body = body, .len = strlen(body)};

		atomic_fetch_add(&rc->runs[i], 1);
		if (i % 3 != 0) { /* a handler that takes a while: the others park */
			nanosleep(&(struct timespec){.tv_nsec = 50000}, NULL);
		}
		replycache_finish(rc->c, ticket, &r, race_answer, NULL);
	} else if (v == REPLYCACHE_HIT) {
		rc->hits++;
		rc->wrong += hit.len != strlen(body) || memcmp(hit.body, body, hit.len) != 0;
		free((void *)hit.body);
	} else {
		time_t give_up = time(NULL) + 2; /* never answered: wrong, not a hang */

		rc->parked++;
		while (!atomic_load(&t.answered) && time(NULL) < give_up) {
			sched_yield();
		}
		if (!atomic_load(&t.answered)) {
			atomic_store(rc->lost, true);
		}
		rc->wrong += !atomic_load(&t.answered) || !t.right;
	}
}

static void *race(void *arg)
{
	struct racer *rc = arg;

	for (int i = 0; i < RACE_IDS; i++) {
		pthread_barrier_wait(rc->barrier);
		if (!atomic_load(rc->lost)) {
			race_one(rc, i);
		}
	}
	return NULL;
}

static void copies_claimed_at_once_by_many_threads_run_once_and_all_get_its_reply(void **state)
{
	struct replycache *c;
	pthread_barrier_t barrier;
	pthread_t th[RACE_THREADS];
	struct racer rc[RACE_THREADS];
	static atomic_int runs[RACE_IDS];
	atomic_bool lost = false;
	int hits = 0, parked = 0, wrong = 0;

	(void)state;
	assert_int_equal(replycache_new(&c, 1000, 1 << 20, 60000), 0);
	pthread_barrier_init(&barrier, NULL, RACE_THREADS);
	for (int i = 0; i < RACE_THREADS; i++) {
		rc[i] = (struct racer){.c = c, .barrier = &barrier, .runs = runs, .lost = &lost};
		assert_int_equal(pthread_create(&th[i], NULL, race, &rc[i]), 0);
	}
	for (int i = 0; i < RACE_THREADS; i++) {
		pthread_join(th[i], NULL);
		hits += rc[i].hits;
		parked += rc[i].parked;
		wrong += rc[i].wrong;
	}
	assert_int_equal(wrong, 0);
	assert_false(atomic_load(&lost));
	for (int i = 0; i < RACE_IDS; i++) {
		assert_int_equal(atomic_load(&runs[i]), 1);
	}
	assert_int_equal(hits + parked, RACE_IDS * (RACE_THREADS - 1));
	assert_int_equal(replycache_hits(c), (uint64_t)(hits + parked));
	pthread_barrier_destroy(&barrier);
	replycache_free(c, NULL, NULL);
}

static int dropped;

static void drop(struct replycache_waiter *wt, void *arg)
{
	(void)wt;
	(void)arg;
	dropped++;
}

static void freeing_the_cache_drops_a_twin_still_parked(void **state)
{
	struct replycache *c;
	struct replycache_entry *ticket, *none;
	struct replycache_reply hit = {0};
	struct twin first = {0}, second = {0};

	(void)state;
	assert_int_equal(replycache_new(&c, 4, 64, 60000), 0);
	replycache_claim(c, KEY("a:x", "m1", "example.echo"), &first.wt, &ticket, alloc, NULL,
	                 &hit);
	replycache_claim(c, KEY("a:x", "m1", "example.echo"), &second.wt, &none, alloc, NULL, &hit);
	dropped = 0;
	replycache_free(c, drop, NULL);
	assert_int_equal(dropped, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        a_repeat_is_answered_from_the_cache_with_the_first_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_new_message_id_is_a_miss_and_runs, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_reply_expires_after_its_ttl, setup, teardown),
	    cmocka_unit_test_setup_teardown(a_full_cache_evicts_the_oldest_reply_first, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        the_bytes_bound_evicts_the_oldest_replies_and_refuses_a_larger_one, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(a_twin_parked_on_a_run_is_answered_when_it_finishes,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(a_run_longer_than_the_ttl_is_not_expired_while_it_runs,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        a_twin_of_a_run_that_keeps_nothing_is_sent_back_to_run_alone, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        runs_are_never_evicted_and_a_full_cache_of_them_runs_uncached, setup, teardown),
	    cmocka_unit_test_setup_teardown(the_same_message_id_from_two_callers_is_two_entries,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        a_message_id_reused_for_another_method_is_not_answered_from_the_cache, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(a_request_without_a_message_id_is_never_cached, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(
	        a_run_at_the_head_does_not_stop_the_oldest_reply_being_evicted, setup, teardown),
	    cmocka_unit_test(copies_claimed_at_once_by_many_threads_run_once_and_all_get_its_reply),
	    cmocka_unit_test(size_zero_turns_the_cache_off),
	    cmocka_unit_test(freeing_the_cache_drops_a_twin_still_parked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
