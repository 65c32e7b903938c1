/* secret.c: the first line of a secret file, found through systemd's
 * credentials directory when the path is relative; broker URLs with their
 * password masked for messages. */
#include "secret.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config.h"
#include "errstr.h"

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
	/* Unbuffered: stdio's buffer would be a heap copy of the secret that
	 * fclose frees without wiping. */
	setvbuf(f, NULL, _IONBF, 0);
	if (fgets(dst, (int)cap, f) == NULL) {
		dst[0] = '\0';
	}
	fclose(f);
	len = strcspn(dst, "\r\n");
	if (dst[len] == '\0' && len == cap - 1) {
		sodium_memzero(dst, cap);
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

const char *secret_mask_url(const char *url, size_t n, char *out, size_t cap)
{
	size_t len = strnlen(url, n);
	const char *scheme = strstr(url, "://");
	size_t user =
	    scheme != NULL && (size_t)(scheme - url) < len ? (size_t)(scheme - url) + 3 : 0;
	const char *colon, *at = NULL;

	for (size_t i = user; i < len; i++) {
		if (url[i] == '@') {
			at = url + i;
		}
	}
	colon = at != NULL ? memchr(url + user, ':', (size_t)(at - url) - user) : NULL;
	if (colon == NULL) {
		snprintf(out, cap, "%.*s", (int)len, url);
	} else {
		snprintf(out, cap, "%.*s***%.*s", (int)(colon + 1 - url), url,
		         (int)(url + len - at), at);
	}
	return out;
}

warren_err warren_config_read_secret(const warren_config *cfg, const char *key, char *dst,
                                     size_t cap, char *errstr, size_t errlen)
{
	int id = config_lookup_in(cfg, key);
	const char *path;

	if (dst == NULL || cap < 2) {
		return WARREN_ERR_INVALID;
	}
	dst[0] = '\0';
	if (id < 0 || config_def_at(cfg, id)->type != CONFIG_STRING) {
		errstr_set(errstr, errlen, "warren_config_read_secret: \"%s\" is not a string key",
		           key != NULL ? key : "(null)");
		return WARREN_ERR_INVALID;
	}
	path = warren_config_get(cfg, key);
	if (path[0] == '\0') {
		return WARREN_OK;
	}
	return secret_read_line(key, path, dst, cap, errstr, errlen) == 0 ? WARREN_OK
	                                                                  : WARREN_ERR_CONFIG;
}
