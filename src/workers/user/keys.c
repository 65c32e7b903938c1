/* keys.c: the [db] keys of user-service, registered with warren_daemon. */
#define _POSIX_C_SOURCE 200809L
#include "keys.h"

const warren_key user_keys[] = {
    {
        .name = "db.conninfo",
        .type = WARREN_KEY_STRING,
        .description = "PostgreSQL connection string (libpq keywords or a postgresql:// URI).",
        .password_file = "db.conninfo_file",
    },
    {
        .name = "db.conninfo_file",
        .type = WARREN_KEY_STRING,
        .description = "File whose first line is the PostgreSQL connection string, so that a "
                       "password need not be in the configuration; wins over db.conninfo.",
    },
};

const size_t user_nkeys = sizeof(user_keys) / sizeof(user_keys[0]);
