/* prom.c: the text exposition format, written to a stdio stream (the
 * metrics server's open_memstream). Callers copy their counters under their
 * own locks first: nothing here locks. */
#include "prom.h"

#include <stdbool.h>

#include "warren.h"

static const double bucket_bounds[PROM_NBUCKETS] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
static const char *const bucket_names[PROM_NBUCKETS] = {"0.001", "0.005", "0.01", "0.05",
                                                        "0.1",   "0.5",   "1",    "5"};

void prom_hist_observe(struct prom_hist *h, double seconds)
{
	int b = 0;

	while (b < PROM_NBUCKETS && seconds > bucket_bounds[b]) {
		b++;
	}
	if (b < PROM_NBUCKETS) {
		h->buckets[b]++;
	}
	h->count++;
	h->sum += seconds;
}

/* Text escaped as the exposition format wants: backslash and newline
 * always, the double quote inside a label value (not in HELP text). */
static void put_escaped(FILE *f, const char *v, bool quote)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || (quote && *v == '"')) {
			fprintf(f, "\\%c", *v);
		} else if (*v == '\n') {
			fputs("\\n", f);
		} else {
			fputc(*v, f);
		}
	}
}

/* k="v" after sep. */
static void put_label(FILE *f, const char *sep, const char *name, const char *value)
{
	fprintf(f, "%s%s=\"", sep, name);
	put_escaped(f, value, true);
	fputc('"', f);
}

/* "name{k="v",...,extra="v"} " up to the value; the extra label may be NULL.
 * A series without any label is "name ": "{}" and "{," are not written. */
static void put_series(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                       const char *extra, const char *extra_value)
{
	fputs(name, f);
	for (size_t i = 0; i < n; i++) {
		put_label(f, i == 0 ? "{" : ",", labels[i].name, labels[i].value);
	}
	if (extra != NULL) {
		put_label(f, n == 0 ? "{" : ",", extra, extra_value);
	}
	fputs(n > 0 || extra != NULL ? "} " : " ", f);
}

void prom_put_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s ", name);
	put_escaped(f, help, false);
	fprintf(f, "\n# TYPE %s %s\n", name, type);
}

void prom_put_sample(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                     uint64_t v)
{
	put_series(f, name, labels, n, NULL, NULL);
	fprintf(f, "%llu\n", (unsigned long long)v);
}

void prom_put_metric(FILE *f, const char *name, const char *type, const char *help,
                     const struct prom_label *labels, size_t n, uint64_t v)
{
	prom_put_head(f, name, type, help);
	prom_put_sample(f, name, labels, n, v);
}

void prom_put_by_status(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                        const uint64_t by_status[PROM_NSTATUS])
{
	for (int st = 0; st < PROM_NSTATUS; st++) {
		if (by_status[st] == 0) {
			continue;
		}
		put_series(f, name, labels, n, "status", warren_status_name(st));
		fprintf(f, "%llu\n", (unsigned long long)by_status[st]);
	}
}

void prom_put_histogram(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                        const struct prom_hist *h)
{
	char series[256];
	uint64_t below = 0;

	snprintf(series, sizeof(series), "%s_bucket", name);
	for (int b = 0; b < PROM_NBUCKETS; b++) {
		below += h->buckets[b];
		put_series(f, series, labels, n, "le", bucket_names[b]);
		fprintf(f, "%llu\n", (unsigned long long)below);
	}
	put_series(f, series, labels, n, "le", "+Inf");
	fprintf(f, "%llu\n", (unsigned long long)h->count);
	snprintf(series, sizeof(series), "%s_sum", name);
	put_series(f, series, labels, n, NULL, NULL);
	fprintf(f, "%.9g\n", h->sum);
	snprintf(series, sizeof(series), "%s_count", name);
	prom_put_sample(f, series, labels, n, h->count);
}
