/* secret.h: secrets read from files (a password, a connection string),
 * never from the command line. A relative path names a systemd credential
 * (LoadCredential=) in $CREDENTIALS_DIRECTORY when that is set. */
#ifndef WARREN_SECRET_H
#define WARREN_SECRET_H

#include <stddef.h>

/* Reads the first line of the file (without its newline) into dst. key
 * names the setting in messages ("broker.password_file: PATH: ..."). 0, or
 * -1 with errstr. */
int secret_read_line(const char *key, const char *path, char *dst, size_t cap, char *errstr,
                     size_t errlen);

/* The file a secret's path names: a relative one in $CREDENTIALS_DIRECTORY
 * when that is set, else as given. Returns buf or path. */
const char *secret_resolve(const char *path, char *buf, size_t cap);

/* For messages: the first n bytes of url (all of it up to its NUL when n is
 * SIZE_MAX; one element of a broker.url list) into out, cut to cap, with
 * the password of its user info shown as "***": "amqp://user:***@host/".
 * The user info runs to the element's last '@', so a malformed password
 * holding '@' or '/' is hidden whole. Every message, error or log line that
 * shows a broker URL goes through it. Returns out. */
const char *secret_mask_url(const char *url, size_t n, char *out, size_t cap);

#endif
