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

#endif
