/* test_pending.c: the correlation table's contract. Lookup by id, refusal of
 * duplicates and of a full table, and deadline order through every path that
 * changes the heap, checked against the heap invariant and a simulated clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pending.h"

/* ------------------------------------------------------------ helpers */

/* A fixed-seed generator: every run sees the same "random" data, so a
 * failure reproduces. */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
	rng_state = seed;
}

static uint64_t rng_next(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static int64_t rng_below(int64_t n)
{
	return (int64_t)(rng_next() % (uint64_t)n);
}

/* Ids shaped like the client's: 16 hex characters fixed per client, then 16
 * that vary per call. */
static void set_id(struct pending_entry *e, uint64_t n)
{
	snprintf(e->id, sizeof(e->id), "0123456789abcdef%016llx", (unsigned long long)n);
	e->id_len = strlen(e->id);
}

static struct pending_entry *make_entries(size_t n)
{
	struct pending_entry *v = calloc(n, sizeof(*v));

	assert_non_null(v);
	for (size_t i = 0; i < n; i++) {
		set_id(&v[i], i);
	}
	return v;
}

static struct pending_entry *find_str(const struct pending *t, const char *id)
{
	return pending_find(t, id, strlen(id));
}

/* Every slot knows its index, no parent is due after its child, and every
 * entry in the heap is reachable by its id. */
static void assert_table_valid(const struct pending *t)
{
	for (size_t i = 0; i < t->count; i++) {
		assert_non_null(t->heap[i]);
		assert_int_equal(t->heap[i]->heap_index, i);
		if (i > 0) {
			assert_true(t->heap[(i - 1) / 2]->deadline <= t->heap[i]->deadline);
		}
		assert_ptr_equal(pending_find(t, t->heap[i]->id, t->heap[i]->id_len), t->heap[i]);
	}
}

static int64_t min_deadline(const struct pending_entry *v, const char *in, size_t n)
{
	int64_t min = INT64_MAX;

	for (size_t i = 0; i < n; i++) {
		if (in[i] && v[i].deadline < min) {
			min = v[i].deadline;
		}
	}
	return min;
}

/* ------------------------------------------------------------ lookup */

static void test_init_rounds_buckets_up_to_a_power_of_two(void **state)
{
	size_t caps[] = {1, 2, 3, 5, 100, 1024, 1025};

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		struct pending t;

		assert_int_equal(pending_init(&t, caps[i]), 0);
		assert_true(t.nbuckets >= caps[i]);
		assert_int_equal(t.nbuckets & (t.nbuckets - 1), 0);
		assert_int_equal(t.capacity, caps[i]);
		assert_int_equal(pending_count(&t), 0);
		pending_destroy(&t);
	}
}

static void test_destroy_accepts_null(void **state)
{
	pending_destroy(NULL);
}

static void test_empty_table_has_no_first_and_nothing_expires(void **state)
{
	struct pending t;

	assert_int_equal(pending_init(&t, 4), 0);
	assert_null(pending_first(&t));
	assert_null(pending_pop_expired(&t, INT64_MAX));
	assert_null(find_str(&t, "0123456789abcdef0000000000000000"));
	assert_int_equal(pending_count(&t), 0);
	pending_destroy(&t);
}

static void test_inserted_entry_is_found_by_its_id_until_removed(void **state)
{
	struct pending t;
	struct pending_entry *v = make_entries(3);

	assert_int_equal(pending_init(&t, 8), 0);
	for (size_t i = 0; i < 3; i++) {
		v[i].deadline = 100 + (int64_t)i;
		assert_int_equal(pending_insert(&t, &v[i]), 0);
	}
	for (size_t i = 0; i < 3; i++) {
		assert_ptr_equal(find_str(&t, v[i].id), &v[i]);
	}
	pending_remove(&t, &v[1]);
	assert_null(find_str(&t, v[1].id));
	assert_ptr_equal(find_str(&t, v[0].id), &v[0]);
	assert_ptr_equal(find_str(&t, v[2].id), &v[2]);
	assert_table_valid(&t);
	pending_destroy(&t);
	free(v);
}

static void test_absent_id_and_prefixes_and_extensions_are_not_found(void **state)
{
	struct pending t;
	struct pending_entry e = {.deadline = 1};
	char longer[PENDING_ID_MAX + 2];

	assert_int_equal(pending_init(&t, 4), 0);
	set_id(&e, 42);
	assert_int_equal(pending_insert(&t, &e), 0);

	assert_null(find_str(&t, "0123456789abcdef000000000000002b"));
	/* Every proper prefix of the present id, the empty one included. */
	for (size_t len = 0; len < e.id_len; len++) {
		assert_null(pending_find(&t, e.id, len));
	}
	snprintf(longer, sizeof(longer), "%sx", e.id);
	assert_null(find_str(&t, longer));
	/* The length decides, not a NUL: a longer buffer sharing the prefix. */
	assert_ptr_equal(pending_find(&t, longer, e.id_len), &e);
	pending_destroy(&t);
}

static void test_overlong_id_is_never_found(void **state)
{
	struct pending t;
	char big[PENDING_ID_MAX * 2];

	memset(big, 'a', sizeof(big));
	assert_int_equal(pending_init(&t, 4), 0);
	assert_null(pending_find(&t, big, sizeof(big)));
	pending_destroy(&t);
}

static void test_duplicate_id_is_refused_and_leaves_the_table_unchanged(void **state)
{
	struct pending t;
	struct pending_entry a = {.deadline = 50}, b = {.deadline = 10};

	set_id(&a, 7);
	set_id(&b, 7);
	assert_int_equal(pending_init(&t, 4), 0);
	assert_int_equal(pending_insert(&t, &a), 0);
	assert_int_equal(pending_insert(&t, &b), -2);
	assert_int_equal(pending_count(&t), 1);
	assert_ptr_equal(find_str(&t, a.id), &a);
	assert_ptr_equal(pending_first(&t), &a);
	assert_null(pending_pop_expired(&t, 10));
	assert_table_valid(&t);
	pending_destroy(&t);
}

static void test_full_table_refuses_insert_and_accepts_again_after_a_remove(void **state)
{
	struct pending t;
	struct pending_entry *v = make_entries(4);

	assert_int_equal(pending_init(&t, 3), 0);
	for (size_t i = 0; i < 3; i++) {
		v[i].deadline = (int64_t)i;
		assert_int_equal(pending_insert(&t, &v[i]), 0);
	}
	v[3].deadline = -1;
	assert_int_equal(pending_insert(&t, &v[3]), -1);
	assert_int_equal(pending_count(&t), 3);
	assert_null(find_str(&t, v[3].id));
	assert_ptr_equal(pending_first(&t), &v[0]);

	pending_remove(&t, &v[1]);
	assert_int_equal(pending_insert(&t, &v[3]), 0);
	assert_ptr_equal(pending_first(&t), &v[3]);
	assert_int_equal(pending_count(&t), 3);
	assert_table_valid(&t);
	pending_destroy(&t);
	free(v);
}

static void test_removed_entry_can_be_inserted_again(void **state)
{
	struct pending t;
	struct pending_entry e = {.deadline = 5};

	set_id(&e, 1);
	assert_int_equal(pending_init(&t, 1), 0);
	for (int round = 0; round < 3; round++) {
		e.deadline = 5 + round;
		assert_int_equal(pending_insert(&t, &e), 0);
		assert_ptr_equal(find_str(&t, e.id), &e);
		pending_remove(&t, &e);
		assert_null(find_str(&t, e.id));
	}
	assert_int_equal(pending_count(&t), 0);
	pending_destroy(&t);
}

/* ------------------------------------------------------------ deadlines */

static void test_hundred_thousand_entries_are_all_found_and_expire_in_deadline_order(void **state)
{
	enum { N = 100000 };
	struct pending t;
	struct pending_entry *v = make_entries(N), *e;
	char *seen = calloc(N, 1);
	int64_t last = INT64_MIN;
	size_t popped = 0;

	assert_non_null(seen);
	rng_seed(0x9e3779b97f4a7c15ULL);
	assert_int_equal(pending_init(&t, N), 0);
	for (size_t i = 0; i < N; i++) {
		/* A narrow range, so many deadlines tie. */
		v[i].deadline = rng_below(N / 4);
		assert_int_equal(pending_insert(&t, &v[i]), 0);
	}
	assert_int_equal(pending_count(&t), N);
	for (size_t i = 0; i < N; i++) {
		assert_ptr_equal(pending_find(&t, v[i].id, v[i].id_len), &v[i]);
	}
	while ((e = pending_pop_expired(&t, INT64_MAX)) != NULL) {
		size_t i = (size_t)(e - v);

		assert_true(i < N);
		assert_false(seen[i]);
		seen[i] = 1;
		assert_true(e->deadline >= last);
		last = e->deadline;
		popped++;
	}
	assert_int_equal(popped, N);
	assert_int_equal(pending_count(&t), 0);
	assert_null(pending_find(&t, v[N / 2].id, v[N / 2].id_len));
	pending_destroy(&t);
	free(seen);
	free(v);
}

static void test_removing_from_the_middle_keeps_the_heap_valid(void **state)
{
	enum { N = 2000 };
	struct pending t;
	struct pending_entry *v = make_entries(N);
	size_t *order = malloc(N * sizeof(*order));

	assert_non_null(order);
	rng_seed(12345);
	assert_int_equal(pending_init(&t, N), 0);
	for (size_t i = 0; i < N; i++) {
		v[i].deadline = rng_below(500) - 250; /* negatives too */
		assert_int_equal(pending_insert(&t, &v[i]), 0);
		order[i] = i;
	}
	/* Remove in a random order (Fisher-Yates), checking the whole table each time. */
	for (size_t i = N - 1; i > 0; i--) {
		size_t j = (size_t)rng_below((int64_t)i + 1), tmp = order[i];

		order[i] = order[j];
		order[j] = tmp;
	}
	for (size_t k = 0; k < N; k++) {
		struct pending_entry *e = &v[order[k]];

		pending_remove(&t, e);
		assert_int_equal(pending_count(&t), N - k - 1);
		assert_null(pending_find(&t, e->id, e->id_len));
		assert_table_valid(&t);
	}
	assert_null(pending_first(&t));
	pending_destroy(&t);
	free(order);
	free(v);
}

static void test_pop_expired_returns_exactly_the_entries_due_by_now(void **state)
{
	enum { N = 1000, NOW = 500 };
	struct pending t;
	struct pending_entry *v = make_entries(N), *e;
	char *popped = calloc(N, 1);
	size_t due = 0, got = 0;

	assert_non_null(popped);
	rng_seed(777);
	assert_int_equal(pending_init(&t, N), 0);
	for (size_t i = 0; i < N; i++) {
		v[i].deadline = rng_below(1000);
		due += v[i].deadline <= NOW;
		assert_int_equal(pending_insert(&t, &v[i]), 0);
	}
	while ((e = pending_pop_expired(&t, NOW)) != NULL) {
		assert_true(e->deadline <= NOW);
		popped[e - v] = 1;
		got++;
	}
	assert_int_equal(got, due);
	assert_int_equal(pending_count(&t), N - due);
	for (size_t i = 0; i < N; i++) {
		if (v[i].deadline <= NOW) {
			assert_true(popped[i]);
			assert_null(pending_find(&t, v[i].id, v[i].id_len));
		} else {
			assert_false(popped[i]);
			assert_ptr_equal(pending_find(&t, v[i].id, v[i].id_len), &v[i]);
		}
	}
	assert_true(pending_first(&t)->deadline > NOW);
	assert_table_valid(&t);
	pending_destroy(&t);
	free(popped);
	free(v);
}

static void test_deadline_equal_to_now_is_expired_and_one_later_is_not(void **state)
{
	struct pending t;
	struct pending_entry a = {.deadline = 100}, b = {.deadline = 101};

	set_id(&a, 1);
	set_id(&b, 2);
	assert_int_equal(pending_init(&t, 2), 0);
	assert_int_equal(pending_insert(&t, &b), 0);
	assert_int_equal(pending_insert(&t, &a), 0);
	assert_null(pending_pop_expired(&t, 99));
	assert_ptr_equal(pending_pop_expired(&t, 100), &a);
	assert_null(pending_pop_expired(&t, 100));
	assert_ptr_equal(pending_pop_expired(&t, 101), &b);
	pending_destroy(&t);
}

static void test_extreme_deadlines_keep_their_order(void **state)
{
	struct pending t;
	struct pending_entry v[3] = {
	    {.deadline = INT64_MAX}, {.deadline = 0}, {.deadline = INT64_MIN}};

	for (size_t i = 0; i < 3; i++) {
		set_id(&v[i], i);
	}
	assert_int_equal(pending_init(&t, 3), 0);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(pending_insert(&t, &v[i]), 0);
	}
	assert_ptr_equal(pending_pop_expired(&t, INT64_MAX), &v[2]);
	assert_ptr_equal(pending_pop_expired(&t, INT64_MAX), &v[1]);
	assert_ptr_equal(pending_pop_expired(&t, INT64_MAX), &v[0]);
	pending_destroy(&t);
}

static void test_first_is_always_the_earliest_deadline(void **state)
{
	enum { N = 500 };
	struct pending t;
	struct pending_entry *v = make_entries(N);
	char *in = calloc(N, 1);

	assert_non_null(in);
	rng_seed(4242);
	assert_int_equal(pending_init(&t, N), 0);
	/* A random mix of inserts and removes; first must track the minimum. */
	for (int step = 0; step < 20000; step++) {
		size_t i = (size_t)rng_below(N);

		if (in[i]) {
			pending_remove(&t, &v[i]);
			in[i] = 0;
		} else {
			v[i].deadline = rng_below(10000);
			assert_int_equal(pending_insert(&t, &v[i]), 0);
			in[i] = 1;
		}
		if (pending_count(&t) == 0) {
			assert_null(pending_first(&t));
		} else {
			assert_int_equal(pending_first(&t)->deadline, min_deadline(v, in, N));
		}
	}
	assert_table_valid(&t);
	pending_destroy(&t);
	free(in);
	free(v);
}

static void test_count_tracks_every_path(void **state)
{
	struct pending t;
	struct pending_entry *v = make_entries(4), dup = {.deadline = 0};

	set_id(&dup, 0);
	assert_int_equal(pending_init(&t, 3), 0);
	v[0].deadline = 10;
	v[1].deadline = 20;
	v[2].deadline = 30;
	v[3].deadline = 40;
	assert_int_equal(pending_insert(&t, &v[0]), 0);
	assert_int_equal(pending_count(&t), 1);
	assert_int_equal(pending_insert(&t, &dup), -2);
	assert_int_equal(pending_count(&t), 1);
	assert_int_equal(pending_insert(&t, &v[1]), 0);
	assert_int_equal(pending_insert(&t, &v[2]), 0);
	assert_int_equal(pending_count(&t), 3);
	assert_int_equal(pending_insert(&t, &v[3]), -1);
	assert_int_equal(pending_count(&t), 3);
	assert_null(pending_pop_expired(&t, 5));
	assert_int_equal(pending_count(&t), 3);
	assert_ptr_equal(pending_pop_expired(&t, 10), &v[0]);
	assert_int_equal(pending_count(&t), 2);
	pending_remove(&t, &v[2]);
	assert_int_equal(pending_count(&t), 1);
	assert_ptr_equal(pending_first(&t), &v[1]);
	assert_int_equal(pending_count(&t), 1);
	assert_null(find_str(&t, v[3].id));
	assert_int_equal(pending_count(&t), 1);
	pending_remove(&t, &v[1]);
	assert_int_equal(pending_count(&t), 0);
	pending_destroy(&t);
	free(v);
}

/* Uneven ticks, and now and then a long stall of the I/O thread, so one
 * tick has many entries to pop. */
static int64_t clock_step(void)
{
	return rng_below(50) == 0 ? 100 + rng_below(200) : 1 + rng_below(5);
}

/* The client's timer tick, without a real clock: time advances, new calls
 * arrive between ticks, and each tick pops what is due. Every entry must come
 * out at the first tick whose now reaches its deadline: never earlier, never later. */
static void
test_simulated_clock_expires_each_entry_at_the_first_tick_reaching_its_deadline(void **state)
{
	enum { N = 5000 };
	struct pending t;
	struct pending_entry *v = make_entries(N), *e;
	int64_t *popped_at = malloc(N * sizeof(*popped_at));
	int64_t *tick_before = malloc(N * sizeof(*tick_before));
	int64_t now = 0, prev = INT64_MIN;
	size_t next = 0;

	assert_non_null(popped_at);
	assert_non_null(tick_before);
	rng_seed(2024);
	assert_int_equal(pending_init(&t, N), 0);
	while (next < N || pending_count(&t) > 0) {
		int64_t last = INT64_MIN;

		while ((e = pending_pop_expired(&t, now)) != NULL) {
			assert_int_equal(popped_at[e - v], -1);
			assert_true(e->deadline >= last);
			last = e->deadline;
			popped_at[e - v] = now;
			tick_before[e - v] = prev;
		}
		/* What the tick would sleep until is still ahead. */
		e = pending_first(&t);
		assert_true(e == NULL || e->deadline > now);
		/* Calls arriving before the next tick, with timeouts of 1..300 ms. */
		for (int64_t k = rng_below(4); k > 0 && next < N; k--, next++) {
			v[next].deadline = now + 1 + rng_below(300);
			popped_at[next] = -1;
			assert_int_equal(pending_insert(&t, &v[next]), 0);
		}
		prev = now;
		now += clock_step();
	}
	for (size_t i = 0; i < N; i++) {
		assert_true(popped_at[i] >= v[i].deadline);
		assert_true(tick_before[i] < v[i].deadline);
	}
	pending_destroy(&t);
	free(tick_before);
	free(popped_at);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init_rounds_buckets_up_to_a_power_of_two),
	    cmocka_unit_test(test_destroy_accepts_null),
	    cmocka_unit_test(test_empty_table_has_no_first_and_nothing_expires),
	    cmocka_unit_test(test_inserted_entry_is_found_by_its_id_until_removed),
	    cmocka_unit_test(test_absent_id_and_prefixes_and_extensions_are_not_found),
	    cmocka_unit_test(test_overlong_id_is_never_found),
	    cmocka_unit_test(test_duplicate_id_is_refused_and_leaves_the_table_unchanged),
	    cmocka_unit_test(test_full_table_refuses_insert_and_accepts_again_after_a_remove),
	    cmocka_unit_test(test_removed_entry_can_be_inserted_again),
	    cmocka_unit_test(
	        test_hundred_thousand_entries_are_all_found_and_expire_in_deadline_order),
	    cmocka_unit_test(test_removing_from_the_middle_keeps_the_heap_valid),
	    cmocka_unit_test(test_pop_expired_returns_exactly_the_entries_due_by_now),
	    cmocka_unit_test(test_deadline_equal_to_now_is_expired_and_one_later_is_not),
	    cmocka_unit_test(test_extreme_deadlines_keep_their_order),
	    cmocka_unit_test(test_first_is_always_the_earliest_deadline),
	    cmocka_unit_test(test_count_tracks_every_path),
	    cmocka_unit_test(
	        test_simulated_clock_expires_each_entry_at_the_first_tick_reaching_its_deadline),
	};

	return cmocka_run_group_tests_name("pending", tests, NULL, NULL);
}
