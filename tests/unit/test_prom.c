/* test_prom.c: the Prometheus text exposition format 0.0.4 as written by
 * prom.c: heads, escaped label values, counts by status, the duration
 * histogram with its bucket bounds, and series with no labels at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prom.h"
#include "warren.h"

static char *text;
static size_t text_len;

/* A stream whose text is `text` once closed. */
static FILE *open_text(void)
{
	FILE *f;

	free(text);
	text = NULL;
	f = open_memstream(&text, &text_len);
	assert_non_null(f);
	return f;
}

static const char *close_text(FILE *f)
{
	assert_int_equal(fclose(f), 0);
	return text;
}

static int teardown(void **state)
{
	free(text);
	text = NULL;
	return 0;
}

static const struct prom_label two[] = {{"service", "user"}, {"method", "user.get"}};

static void test_a_metric_is_its_head_and_its_sample(void **state)
{
	FILE *f = open_text();

	prom_put_metric(f, "warren_worker_in_flight", "gauge", "Requests being handled.", two, 2,
	                7);
	assert_string_equal(close_text(f),
	                    "# HELP warren_worker_in_flight Requests being handled.\n"
	                    "# TYPE warren_worker_in_flight gauge\n"
	                    "warren_worker_in_flight{service=\"user\",method=\"user.get\"} 7\n");
}

static void test_label_values_are_escaped(void **state)
{
	const struct prom_label l[] = {{"method", "a\"b\\c\nd"}};
	FILE *f = open_text();

	prom_put_sample(f, "x_total", l, 1, 18446744073709551615u);
	assert_string_equal(close_text(f),
	                    "x_total{method=\"a\\\"b\\\\c\\nd\"} 18446744073709551615\n");
}

static void test_help_text_is_escaped(void **state)
{
	FILE *f = open_text();

	/* The format's HELP escapes backslash and newline (not quotes). */
	prom_put_head(f, "x_total", "counter", "a \\ b\nc \"d\"");
	assert_string_equal(close_text(f), "# HELP x_total a \\\\ b\\nc \"d\"\n"
	                                   "# TYPE x_total counter\n");
}

static void test_only_statuses_counted_are_written_by_name(void **state)
{
	uint64_t by[PROM_NSTATUS] = {0};
	FILE *f = open_text();

	by[WARREN_STATUS_OK] = 3;
	by[WARREN_STATUS_NOT_FOUND] = 1;
	by[PROM_NSTATUS - 1] = 2; /* the last status, UNAUTHENTICATED */
	prom_put_by_status(f, "r_total", two, 2, by);
	assert_string_equal(
	    close_text(f),
	    "r_total{service=\"user\",method=\"user.get\",status=\"OK\"} 3\n"
	    "r_total{service=\"user\",method=\"user.get\",status=\"NOT_FOUND\"} 1\n"
	    "r_total{service=\"user\",method=\"user.get\",status=\"UNAUTHENTICATED\"} "
	    "2\n");
}

static void test_a_duration_on_a_bound_counts_in_that_bucket(void **state)
{
	struct prom_hist h = {0};

	prom_hist_observe(&h, 0.001); /* on the first bound: le="0.001" */
	prom_hist_observe(&h, 0.0011);
	prom_hist_observe(&h, 5);    /* on the last bound */
	prom_hist_observe(&h, 5.01); /* above every bound: +Inf only */
	prom_hist_observe(&h, 0);
	assert_int_equal(h.buckets[0], 2);
	assert_int_equal(h.buckets[1], 1);
	assert_int_equal(h.buckets[PROM_NBUCKETS - 1], 1);
	assert_int_equal(h.count, 5);
	assert_true(h.sum > 10.0121 - 1e-9 && h.sum < 10.0121 + 1e-9);
}

static void test_the_histogram_is_cumulative_with_inf_sum_and_count(void **state)
{
	struct prom_hist h = {0};
	FILE *f = open_text();
	const struct prom_label l[] = {{"method", "m"}};

	prom_hist_observe(&h, 0.002);
	prom_hist_observe(&h, 0.3);
	prom_hist_observe(&h, 0.3);
	prom_hist_observe(&h, 60);
	prom_put_histogram(f, "d_seconds", l, 1, &h);
	assert_string_equal(close_text(f), "d_seconds_bucket{method=\"m\",le=\"0.001\"} 0\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"0.005\"} 1\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"0.01\"} 1\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"0.05\"} 1\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"0.1\"} 1\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"0.5\"} 3\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"1\"} 3\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"5\"} 3\n"
	                                   "d_seconds_bucket{method=\"m\",le=\"+Inf\"} 4\n"
	                                   "d_seconds_sum{method=\"m\"} 60.602\n"
	                                   "d_seconds_count{method=\"m\"} 4\n");
}

/* A series without labels is "name value", and one label added to none is
 * "{status=...}": "{}" and "{,status=...}" are not what the format writes
 * ("{," is refused by Prometheus's parser). */
static void test_series_without_labels_are_well_formed(void **state)
{
	uint64_t by[PROM_NSTATUS] = {0};
	struct prom_hist h = {0};
	FILE *f = open_text();

	by[WARREN_STATUS_UNAVAILABLE] = 4;
	prom_hist_observe(&h, 0.02);
	prom_put_sample(f, "up", NULL, 0, 1);
	prom_put_by_status(f, "r_total", NULL, 0, by);
	prom_put_histogram(f, "d_seconds", NULL, 0, &h);
	assert_string_equal(close_text(f), "up 1\n"
	                                   "r_total{status=\"UNAVAILABLE\"} 4\n"
	                                   "d_seconds_bucket{le=\"0.001\"} 0\n"
	                                   "d_seconds_bucket{le=\"0.005\"} 0\n"
	                                   "d_seconds_bucket{le=\"0.01\"} 0\n"
	                                   "d_seconds_bucket{le=\"0.05\"} 1\n"
	                                   "d_seconds_bucket{le=\"0.1\"} 1\n"
	                                   "d_seconds_bucket{le=\"0.5\"} 1\n"
	                                   "d_seconds_bucket{le=\"1\"} 1\n"
	                                   "d_seconds_bucket{le=\"5\"} 1\n"
	                                   "d_seconds_bucket{le=\"+Inf\"} 1\n"
	                                   "d_seconds_sum 0.02\n"
	                                   "d_seconds_count 1\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_a_metric_is_its_head_and_its_sample, teardown),
	    cmocka_unit_test_teardown(test_label_values_are_escaped, teardown),
	    cmocka_unit_test_teardown(test_help_text_is_escaped, teardown),
	    cmocka_unit_test_teardown(test_only_statuses_counted_are_written_by_name, teardown),
	    cmocka_unit_test(test_a_duration_on_a_bound_counts_in_that_bucket),
	    cmocka_unit_test_teardown(test_the_histogram_is_cumulative_with_inf_sum_and_count,
	                              teardown),
	    cmocka_unit_test_teardown(test_series_without_labels_are_well_formed, teardown),
	};

	return cmocka_run_group_tests_name("prom", tests, NULL, NULL);
}
