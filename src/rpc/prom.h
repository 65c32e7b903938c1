/* prom.h: writing the Prometheus text exposition format 0.0.4: HELP/TYPE
 * heads, samples with escaped labels, counts by gRPC status, and the
 * duration histogram shared by the worker's and the caller's metrics. */
#ifndef WARREN_PROM_H
#define WARREN_PROM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Upper bounds of the duration histogram (seconds), +Inf implied. */
#define PROM_NBUCKETS 8
/* gRPC statuses 0..16, as counted by prom_put_by_status. */
#define PROM_NSTATUS 17

/* Durations observed; the owner locks it. buckets[b] counts those no longer
 * than bound b and longer than bound b-1 (not cumulative: the exposition adds
 * them up). */
struct prom_hist {
	uint64_t buckets[PROM_NBUCKETS];
	uint64_t count; /* observations */
	double sum;     /* their seconds */
};

/* One label of a series; the value is escaped when written. */
struct prom_label {
	const char *name;
	const char *value;
};

void prom_hist_observe(struct prom_hist *h, double seconds);

/* # HELP and # TYPE lines of a family. */
void prom_put_head(FILE *f, const char *name, const char *type, const char *help);
/* name{labels} v */
void prom_put_sample(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                     uint64_t v);
/* A family of one series: its head and its sample. */
void prom_put_metric(FILE *f, const char *name, const char *type, const char *help,
                     const struct prom_label *labels, size_t n, uint64_t v);
/* name{labels,status="NAME"} count, for each status counted at least once. */
void prom_put_by_status(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                        const uint64_t by_status[PROM_NSTATUS]);
/* NAME_bucket{labels,le=...} (cumulative, +Inf last), NAME_sum, NAME_count. */
void prom_put_histogram(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                        const struct prom_hist *h);

#endif
