/* keys.h: the user service's own configuration keys, beside the library's:
 * where its PostgreSQL database is. Documented in user-service(8), which
 * test_config_docs checks against this table. */
#ifndef USER_KEYS_H
#define USER_KEYS_H

#include "warren.h"

extern const warren_key user_keys[];
extern const size_t user_nkeys;

#endif
