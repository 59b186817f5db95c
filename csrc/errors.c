/* errors.c: OSError helpers for syscall failures and unreadable kernel
 * answers (errno, path).
 *
 * Called with the GIL held, by the Python-facing functions of the units
 * that read /proc (readings, sampler, the recorder, the line profiler).
 * Code that runs without the GIL never raises: it reports errno instead.
 */
#include "errors.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Sets OSError(err, msg, path), built the way the interpreter builds its
 * own, so that the subclass (FileNotFoundError, ...) follows from err. */
static PyObject *
errors_set_oserror(int err, const char *msg, const char *path)
{
    PyObject *exc =
        PyObject_CallFunction(PyExc_OSError, "iss", err, msg, path);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *
memlens_oserror_path(int err, const char *path)
{
    return errors_set_oserror(err, strerror(err), path);
}

PyObject *
memlens_parse_error(const char *what, const char *path)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "cannot parse %s", what);
    return errors_set_oserror(EINVAL, msg, path);
}
