/* errors.h: the exceptions memlens raises for the kernel's answers. */
#ifndef MEMLENS_ERRORS_H
#define MEMLENS_ERRORS_H

#include "common.h"

/* Sets OSError(err, strerror(err), path); returns NULL for `return`. */
PyObject *memlens_oserror_path(int err, const char *path);

/* Sets OSError(EINVAL, "cannot parse <what>", path): the kernel answered
 * with text we could not read. Returns NULL. */
PyObject *memlens_parse_error(const char *what, const char *path);

#endif
