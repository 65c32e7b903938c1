/* methods.h: the user service's methods (user.get, user.list, user.create,
 * user.update, user.delete, user.preferences.get, user.preferences.set). */
#ifndef USER_METHODS_H
#define USER_METHODS_H

#include "warren.h"

/* Registers every method on w, and a store per handler thread connecting
 * with conninfo (which must outlive w). */
warren_err methods_register(warren_worker *w, const char *conninfo);

#endif
