/* secret.c: the first line of a secret file, found through systemd's
 * credentials directory when the path is relative. */
#include "secret.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *secret_resolve(const char *path, char *buf, size_t cap)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");

	if (path[0] != '/' && path[0] != '\0' && creds != NULL && creds[0] != '\0') {
		snprintf(buf, cap, "%s/%s", creds, path);
		return buf;
	}
	return path;
}

int secret_read_line(const char *key, const char *path, char *dst, size_t cap, char *errstr,
                     size_t errlen)
{
	char full[4096];
	FILE *f;
	size_t len;

	path = secret_resolve(path, full, sizeof(full));
	f = fopen(path, "re");
	if (f == NULL) {
		snprintf(errstr, errlen, "%s: %s: %s", key, path, strerror(errno));
		return -1;
	}
	if (fgets(dst, (int)cap, f) == NULL) {
		dst[0] = '\0';
	}
	fclose(f);
	len = strcspn(dst, "\r\n");
	if (dst[len] == '\0' && len == cap - 1) {
		snprintf(errstr, errlen, "%s: %s: the first line is longer than %zu bytes", key, path,
		         cap - 2);
		return -1;
	}
	dst[len] = '\0';
	if (len == 0) {
		snprintf(errstr, errlen, "%s: %s: the first line is empty", key, path);
		return -1;
	}
	return 0;
}
