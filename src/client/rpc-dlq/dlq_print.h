/* dlq_print.h: how rpc-dlq shows dead letters to people: the table of
 * list (and replay --dry-run) and the full view of show. Everything taken
 * from a message is made printable first (dlq_printable). */
#ifndef WARREN_DLQ_PRINT_H
#define WARREN_DLQ_PRINT_H

#include <stdio.h>

#include "dlq_letter.h"

enum {
	DLQ_COL_AGE,
	DLQ_COL_METHOD,
	DLQ_COL_REASON,
	DLQ_COL_ATTEMPTS,
	DLQ_COL_CORRELATION,
	DLQ_COL_ERROR,
	DLQ_NCOLS
};

/* One line of the table: malloc'd cells. */
struct dlq_row {
	char *cells[DLQ_NCOLS];
};

/* Fills row from l, its age counted at now_ms; false when out of memory
 * (row is then empty). */
bool dlq_row_fill(struct dlq_row *row, const struct dlq_letter *l, int64_t now_ms);
void dlq_row_free(struct dlq_row *row); /* NULL-safe, leaves row empty */

/* The header and the rows, each column padded to its widest cell, no
 * trailing blanks; ERROR is cut to fit width columns (0: no limit, and never
 * below 10 characters). Cuts the ERROR cells of rows in place. */
void dlq_print_table(FILE *out, struct dlq_row *rows, size_t n, size_t width);

/* Every property and header (headers as JSON, times also as UTC dates),
 * the body decoded by its content type (else why not, and base64), and
 * l's notes on what is malformed. */
void dlq_print_letter(FILE *out, const amqp_message_t *m, const char *routing_key,
                      const struct dlq_letter *l);

#endif
