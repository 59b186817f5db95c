/* npmem.c: count NumPy's array data, which bypasses the Python allocators.
 *
 * NumPy (1.22+) lets a program replace the allocator of array data with a
 * "mem_handler" capsule (PyDataMem_SetHandler), per context. memlens's
 * handler calls the one it replaced and reports each allocation and each
 * free (NumPy passes the size to free) to the hooks' counters. Arrays keep
 * a reference to the handler that allocated them and free through it, so
 * ours stays valid, passing through, after it is swapped out.
 *
 * We do not include NumPy's headers: the two functions are reached, as any
 * extension reaches them, through the C-API table NumPy publishes in
 * `_multiarray_umath._ARRAY_API`, at the slots its ABI fixes.
 *
 * NumPy's own allocator may itself take memory from the Python allocators:
 * the hooks' busy flag is raised, and the sampling countdown held, around
 * it so that the block is counted here, once.
 *
 * NumPy keeps the current handler in a context variable: installing and
 * restoring act on the calling context only, and memlens keeps nothing of
 * a context here. What was replaced goes back to the caller (_npmem.py
 * keeps it per context), and is put back only where the handler is still
 * ours: a handler another library set meanwhile is left alone.
 *
 * Threads: installation with the GIL held; the handler's functions run
 * wherever NumPy allocates and touch only thread-local counters.
 */
#include "npmem.h"
#include "hooks.h"
#include "sampling.h"
#include "tracing.h"

#include <string.h>

/* The layout of NumPy's PyDataMemAllocator and PyDataMem_Handler
 * (numpy/ndarraytypes.h, version 1). */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} npmem_allocator;

typedef struct {
    char name[127];
    uint8_t version;
    npmem_allocator allocator;
} npmem_handler;

#define NPMEM_API_FEATURE_VERSION 211 /* PyArray_GetNDArrayCFeatureVersion */
#define NPMEM_API_SET_HANDLER 304     /* PyDataMem_SetHandler */
#define NPMEM_API_GET_HANDLER 305     /* PyDataMem_GetHandler */
#define NPMEM_FEATURE_1_22 0x0000000f

static npmem_allocator npmem_prev;          /* What ours calls. Set once. */
static npmem_handler npmem_ours;            /* Our handler. */
static PyObject *npmem_capsule = NULL;      /* Owned, never released. */
static PyObject *npmem_prev_capsule = NULL; /* Owned, never released. */
static void **npmem_api = NULL;             /* NumPy's C-API table. */

/* Tells the counters and, while tracing (GIL held), the tracer; not in
 * memlens's own quiet work (hooks.h). */
static void
npmem_note_alloc(void *p, size_t size)
{
    memlens_hooks_note_external(size, 0);
    if (__atomic_load_n(&memlens_tracing_on, __ATOMIC_RELAXED)
        && !memlens_hooks_busy() && memlens_tracing_gil_here()) {
        memlens_hooks_enter();
        memlens_tracing_external_alloc(p, size);
        memlens_hooks_leave();
    }
}

/* Before the block goes back (its address may be reused at once). */
static void
npmem_note_free(void *p, size_t size)
{
    if (size != 0) {
        memlens_hooks_note_external(0, size);
    }
    if (__atomic_load_n(&memlens_tracing_on, __ATOMIC_RELAXED)
        && memlens_tracing_gil_here()) {
        memlens_hooks_enter();
        memlens_tracing_external_free(p, size);
        memlens_hooks_leave();
    }
}

static void *
npmem_malloc(void *ctx, size_t size)
{
    memlens_hooks_enter();
    uint64_t held = memlens_sampling_hold();
    void *p = npmem_prev.malloc(npmem_prev.ctx, size);
    memlens_sampling_unhold(held);
    memlens_hooks_leave();
    if (p != NULL) {
        npmem_note_alloc(p, size);
    }
    return p;
}

static void *
npmem_calloc(void *ctx, size_t nelem, size_t elsize)
{
    memlens_hooks_enter();
    uint64_t held = memlens_sampling_hold();
    void *p = npmem_prev.calloc(npmem_prev.ctx, nelem, elsize);
    memlens_sampling_unhold(held);
    memlens_hooks_leave();
    if (p != NULL) {
        npmem_note_alloc(p, nelem * elsize);
    }
    return p;
}

static void *
npmem_realloc(void *ctx, void *ptr, size_t new_size)
{
    memlens_hooks_enter();
    if (ptr != NULL) {
        npmem_note_free(ptr, 0);
    }
    uint64_t held = memlens_sampling_hold();
    void *p = npmem_prev.realloc(npmem_prev.ctx, ptr, new_size);
    memlens_sampling_unhold(held);
    memlens_hooks_leave();
    if (p != NULL) {
        /* NumPy does not tell the old size of a resize: the counters see
         * the new block only. */
        npmem_note_alloc(p, new_size);
    }
    return p;
}

static void
npmem_free(void *ctx, void *ptr, size_t size)
{
    if (ptr != NULL) {
        npmem_note_free(ptr, size);
    }
    memlens_hooks_enter();
    npmem_prev.free(npmem_prev.ctx, ptr, size);
    memlens_hooks_leave();
}

/* Finds NumPy's C-API table; NULL (no exception) if NumPy is too old or
 * absent. */
static void **
npmem_find_api(void)
{
    static const char *names[] = {"numpy._core._multiarray_umath",
                                  "numpy.core._multiarray_umath", NULL};
    if (npmem_api != NULL) {
        return npmem_api;
    }
    for (int i = 0; names[i] != NULL && npmem_api == NULL; i++) {
        PyObject *mod = PyImport_ImportModule(names[i]);
        if (mod == NULL) {
            PyErr_Clear();
            continue;
        }
        PyObject *cap = PyObject_GetAttrString(mod, "_ARRAY_API");
        Py_DECREF(mod);
        if (cap == NULL || !PyCapsule_CheckExact(cap)) {
            Py_XDECREF(cap);
            PyErr_Clear();
            continue;
        }
        /* The table lives as long as NumPy's module, which is never
         * unloaded. */
        void **api = PyCapsule_GetPointer(cap, NULL);
        Py_DECREF(cap);
        if (api == NULL) {
            PyErr_Clear();
            continue;
        }
        unsigned int (*feature)(void) =
            (unsigned int (*)(void))api[NPMEM_API_FEATURE_VERSION];
        if (feature() >= NPMEM_FEATURE_1_22) {
            npmem_api = api;
        }
    }
    return npmem_api;
}

/* Puts our handler in this context. Returns the handler it replaced (a
 * new reference, to give to npmem_restore), Py_True if ours is there
 * already, Py_None if it cannot be (NumPy absent or too old, a handler
 * ours does not wrap), NULL on error. */
static PyObject *
npmem_install(void)
{
    void **api = npmem_find_api();
    if (api == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *(*get)(void) = (PyObject * (*)(void)) api[NPMEM_API_GET_HANDLER];
    PyObject *(*set)(PyObject *) =
        (PyObject * (*)(PyObject *)) api[NPMEM_API_SET_HANDLER];
    PyObject *current = get();
    if (current == NULL) {
        return NULL;
    }
    if (current == npmem_capsule) {
        Py_DECREF(current);
        Py_RETURN_TRUE;
    }
    npmem_handler *h = PyCapsule_GetPointer(current, "mem_handler");
    if (h == NULL || h->version != 1) {
        Py_DECREF(current);
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (npmem_capsule == NULL) {
        npmem_prev = h->allocator;
        npmem_prev_capsule = Py_NewRef(current);
        memset(&npmem_ours, 0, sizeof(npmem_ours));
        strcpy(npmem_ours.name, "memlens");
        npmem_ours.version = 1;
        npmem_ours.allocator.ctx = NULL;
        npmem_ours.allocator.malloc = npmem_malloc;
        npmem_ours.allocator.calloc = npmem_calloc;
        npmem_ours.allocator.realloc = npmem_realloc;
        npmem_ours.allocator.free = npmem_free;
        npmem_capsule = PyCapsule_New(&npmem_ours, "mem_handler", NULL);
        if (npmem_capsule == NULL) {
            Py_DECREF(current);
            return NULL;
        }
    }
    else if (current != npmem_prev_capsule) {
        /* Another handler than the one ours wraps: leave it alone. */
        Py_DECREF(current);
        Py_RETURN_NONE;
    }
    PyObject *old = set(npmem_capsule);
    if (old == NULL) {
        Py_DECREF(current);
        return NULL;
    }
    Py_DECREF(old);
    return current; /* the reference from get() */
}

/* Puts `saved` back in this context if the handler there is ours: 1 done,
 * 0 left alone (someone else's is there), -1 error. */
static int
npmem_restore(PyObject *saved)
{
    if (npmem_api == NULL || npmem_capsule == NULL) {
        return 0;
    }
    PyObject *(*get)(void) =
        (PyObject * (*)(void)) npmem_api[NPMEM_API_GET_HANDLER];
    PyObject *(*set)(PyObject *) =
        (PyObject * (*)(PyObject *)) npmem_api[NPMEM_API_SET_HANDLER];
    PyObject *current = get();
    if (current == NULL) {
        return -1;
    }
    Py_DECREF(current); /* only its identity is used */
    if (current != npmem_capsule) {
        return 0;
    }
    PyObject *old = set(saved);
    if (old == NULL) {
        return -1;
    }
    Py_DECREF(old);
    return 1;
}

/* _numpy_hook_install() -> the handler replaced, True (ours is there
 * already) or None (not possible): route NumPy's array data through
 * memlens in the current context. */
static PyObject *
npmem_py_install(PyObject *m, PyObject *Py_UNUSED(args))
{
    return npmem_install();
}

/* _numpy_hook_restore(saved) -> bool: put `saved` (what install returned)
 * back in the current context, unless the handler there is no longer
 * ours. */
static PyObject *
npmem_py_restore(PyObject *m, PyObject *saved)
{
    if (!PyCapsule_IsValid(saved, "mem_handler")) {
        PyErr_SetString(PyExc_TypeError,
                        "_numpy_hook_restore() needs a NumPy mem_handler "
                        "capsule");
        return NULL;
    }
    int rc = npmem_restore(saved);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyMethodDef npmem_methods[] = {
    {"_numpy_hook_install", npmem_py_install, METH_NOARGS,
     "_numpy_hook_install() -> replaced handler, True or None: count "
     "NumPy's array data in this context (NumPy >= 1.22)."},
    {"_numpy_hook_restore", npmem_py_restore, METH_O,
     "_numpy_hook_restore(saved) -> bool: put the replaced handler back in "
     "this context where ours is still there."},
    {NULL, NULL, 0, NULL},
};

int
memlens_npmem_init(PyObject *module)
{
    return PyModule_AddFunctions(module, npmem_methods);
}
