/* common.h: the one header every memlens C file includes.
 *
 * Holds the Python include, the compatibility shims (each named after the
 * behaviour that forced it), the error helpers and the module state.
 */
#ifndef MEMLENS_COMMON_H
#define MEMLENS_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef MEMLENS_FORCE_BUILD_ERROR
/* Lets the test suite check that a broken C build fails the install. */
#error "memlens: build failure forced by MEMLENS_FORCE_BUILD_ERROR"
#endif

#if !defined(__linux__)
/* Only Linux is claimed: the readers need /proc/self. */
#error "memlens: only Linux is supported"
#endif

/* ---- Compatibility ---------------------------------------------------- */

/* Py_NewRef arrived in 3.10; 3.9 is supported. */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
memlens_newref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#define Py_NewRef(o) memlens_newref((PyObject *)(o))
#endif

/* Where a frame stands: PyFrame_GetLasti arrived in 3.11, when the frame
 * struct became opaque; before, f_lasti is a public field. -1 before the
 * first instruction. */
#if PY_VERSION_HEX >= 0x030B0000
#define MEMLENS_FRAME_LASTI(f) PyFrame_GetLasti(f)
#elif PY_VERSION_HEX >= 0x030A0000
/* 3.10 counts f_lasti in instructions of two bytes. */
#include <frameobject.h>
#define MEMLENS_FRAME_LASTI(f) ((f)->f_lasti < 0 ? -1 : (f)->f_lasti * 2)
#else
#include <frameobject.h>
#define MEMLENS_FRAME_LASTI(f) ((f)->f_lasti)
#endif

/* This thread's state if it holds a GIL, else NULL, without the fatal
 * error of PyThreadState_Get. PyGILState_Check cannot tell once a
 * subinterpreter has existed (it then always says yes). The unchecked
 * getter became public in 3.13. */
#if PY_VERSION_HEX >= 0x030D0000
#define MEMLENS_CURRENT_TSTATE() PyThreadState_GetUnchecked()
#elif PY_VERSION_HEX >= 0x030C0000
/* 3.12 keeps the current thread state in a thread-local. */
#define MEMLENS_CURRENT_TSTATE() _PyThreadState_UncheckedGet()
#else
/* Before 3.12 the "current" thread state is the GIL holder's, process
 * wide: it is this thread's only if it is this thread's own. */
static inline PyThreadState *
memlens_current_tstate(void)
{
    PyThreadState *ts = _PyThreadState_UncheckedGet();
    return (ts != NULL && ts == PyGILState_GetThisThreadState()) ? ts : NULL;
}
#define MEMLENS_CURRENT_TSTATE() memlens_current_tstate()
#endif

/* Creating a frame object (3.11: PyThreadState_GetFrame, PyFrame_GetBack)
 * is a GC allocation, and on 3.11 a GC allocation may run a collection,
 * and any __del__, at once: inside an allocator hook that must not
 * happen. 3.12 only schedules the collection; 3.9 and 3.10 make no frame
 * objects there. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define MEMLENS_FRAMES_MAY_COLLECT 1
#else
#define MEMLENS_FRAMES_MAY_COLLECT 0
#endif

/* sys.monitoring (PEP 669) arrived in 3.12: from there the line tracer
 * listens to LINE events on the profiled code objects only. */
#if PY_VERSION_HEX >= 0x030C0000
#define MEMLENS_HAS_SYS_MONITORING 1
#else
#define MEMLENS_HAS_SYS_MONITORING 0
#endif

/* The GIL is what serialises the window list and the hook installation.
 * A free-threaded build (3.13t) has none, so we refuse to build there
 * rather than race. */
#if defined(Py_GIL_DISABLED)
#error "memlens: free-threaded CPython builds are not supported yet"
#endif

/* Thread-locals read on every allocation. The initial-exec model turns
 * each access into one instruction instead of a call to __tls_get_addr;
 * it draws on glibc's small reserve of static TLS for libraries loaded
 * later, so memlens keeps its thread-locals to a few hundred bytes. */
#define MEMLENS_TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* Makes room for one more item in a libc array of `*cap` items of `size`
 * bytes (doubling, from `first`). 0, or -1 when out of memory (the array
 * is left as it was). For code that must not touch Python's allocators. */
static inline int
memlens_grow(void **array, size_t *cap, size_t used, size_t size, size_t first)
{
    if (used < *cap) {
        return 0;
    }
    size_t n = *cap ? *cap * 2 : first;
    if (n > SIZE_MAX / size) {
        return -1;
    }
    void *p = realloc(*array, n * size);
    if (p == NULL) {
        return -1;
    }
    *array = p;
    *cap = n;
    return 0;
}

/* ---- Module state ----------------------------------------------------- */

typedef struct {
    PyTypeObject *sampler_type;  /* Owned. */
    PyTypeObject *window_type;   /* Owned. */
    PyTypeObject *recorder_type; /* Owned. */
} memlens_state;

extern PyModuleDef memlens_module_def;

/* Returns the module state of the module that defined `type` (borrowed). */
memlens_state *memlens_state_from_type(PyTypeObject *type);

/* ---- Error helpers ---------------------------------------------------- */

/* Sets OSError(err, strerror(err), path); returns NULL for `return`. */
PyObject *memlens_oserror_path(int err, const char *path);

/* Sets OSError(EINVAL, "cannot parse <what>", path): the kernel answered
 * with text we could not read. Returns NULL. */
PyObject *memlens_parse_error(const char *what, const char *path);

#endif /* MEMLENS_COMMON_H */
