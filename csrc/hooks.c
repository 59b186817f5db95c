/* hooks.c: counters of the bytes the Python allocators hand out and take
 * back, through PyMem_SetAllocator hooks on the raw, mem and obj domains.
 *
 * Each hook calls the allocator it replaced, then records the block in the
 * live-block table (sites.c) so that a later free can be sized. The table
 * and counters are protected by hooks_lock, because raw-domain calls may
 * come from threads that do not hold the GIL. A thread-local flag guards
 * against re-entry. Only blocks handed out while the hooks were installed
 * are known, so `freed` counts those.
 *
 * Installation is reference-counted (one per open measurement) and done
 * with the GIL held. If someone chained a hook above ours meanwhile
 * (tracemalloc started after us), ours cannot be unlinked without breaking
 * theirs: it then stays in the chain passing calls through, and is reused
 * by the next installation.
 *
 * Hooks never raise and never touch Python objects.
 */
#include "hooks.h"
#include "sites.h"

#include <errno.h>
#include <pthread.h>

#define HOOKS_NDOMAINS 3

typedef struct {
    PyMemAllocatorDomain domain;
    PyMemAllocatorEx prev; /* The allocator we chain to. GIL. */
    PyMemAllocatorEx ours; /* What we installed. GIL. */
} hooks_domain;

static hooks_domain hooks_domains[HOOKS_NDOMAINS] = {
    {PYMEM_DOMAIN_RAW},
    {PYMEM_DOMAIN_MEM},
    {PYMEM_DOMAIN_OBJ},
};

static int hooks_in_chain = 0;    /* Our hooks are installed. GIL. */
static long hooks_user_count = 0; /* GIL. */
static int hooks_recording = 0;   /* Atomic: 0 = pass through. */

static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static memlens_ptrtable hooks_table; /* Protected by hooks_lock. */
static uint64_t hooks_allocated = 0; /* Protected by hooks_lock. */
static uint64_t hooks_freed = 0;     /* Protected by hooks_lock. */
static uint64_t hooks_failures = 0;  /* Protected by hooks_lock. */

static _Thread_local int hooks_busy = 0;

int
memlens_hooks_installed(void)
{
    return hooks_in_chain;
}

long
memlens_hooks_users(void)
{
    return hooks_user_count;
}

/* Whether this call should be recorded: recording is on and we are not
 * already inside one of our hooks on this thread. The flag stays set
 * across the call to the previous allocator, so that pymalloc handing a
 * large request on to the raw domain is counted once, not twice. */
static int
hooks_active(void)
{
    return !hooks_busy && __atomic_load_n(&hooks_recording, __ATOMIC_RELAXED);
}

/* Records a new block. Caller holds hooks_busy. */
static void
hooks_note_alloc(void *ptr, size_t size)
{
    pthread_mutex_lock(&hooks_lock);
    hooks_allocated += size;
    if (memlens_ptrtable_put(&hooks_table, (uintptr_t)ptr, size) < 0) {
        hooks_failures++;
    }
    pthread_mutex_unlock(&hooks_lock);
}

/* Forgets a block about to be given back; returns its size, 0 if it was
 * not ours. Done before the free, so that the address cannot be handed to
 * another thread and recorded while our entry still names it. Caller holds
 * hooks_busy. */
static size_t
hooks_forget(void *ptr)
{
    size_t size = 0;
    pthread_mutex_lock(&hooks_lock);
    if (!memlens_ptrtable_pop(&hooks_table, (uintptr_t)ptr, &size)) {
        size = 0;
    }
    pthread_mutex_unlock(&hooks_lock);
    return size;
}

static void
hooks_count_freed(size_t size)
{
    pthread_mutex_lock(&hooks_lock);
    hooks_freed += size;
    pthread_mutex_unlock(&hooks_lock);
}

static void *
hooks_malloc(void *ctx, size_t size)
{
    hooks_domain *d = ctx;
    if (!hooks_active()) {
        return d->prev.malloc(d->prev.ctx, size);
    }
    hooks_busy = 1;
    void *ptr = d->prev.malloc(d->prev.ctx, size);
    if (ptr != NULL) {
        hooks_note_alloc(ptr, size);
    }
    hooks_busy = 0;
    return ptr;
}

static void *
hooks_calloc(void *ctx, size_t nelem, size_t elsize)
{
    hooks_domain *d = ctx;
    if (!hooks_active()) {
        return d->prev.calloc(d->prev.ctx, nelem, elsize);
    }
    hooks_busy = 1;
    void *ptr = d->prev.calloc(d->prev.ctx, nelem, elsize);
    /* The product cannot overflow: the allocator succeeded. */
    if (ptr != NULL) {
        hooks_note_alloc(ptr, nelem * elsize);
    }
    hooks_busy = 0;
    return ptr;
}

static void *
hooks_realloc(void *ctx, void *ptr, size_t size)
{
    hooks_domain *d = ctx;
    if (!hooks_active()) {
        return d->prev.realloc(d->prev.ctx, ptr, size);
    }
    hooks_busy = 1;
    size_t old = ptr != NULL ? hooks_forget(ptr) : 0;
    void *res = d->prev.realloc(d->prev.ctx, ptr, size);
    if (res == NULL) {
        if (old != 0) {
            /* The block is still there, unchanged: remember it again. */
            pthread_mutex_lock(&hooks_lock);
            if (memlens_ptrtable_put(&hooks_table, (uintptr_t)ptr, old) < 0) {
                hooks_failures++;
            }
            pthread_mutex_unlock(&hooks_lock);
        }
    }
    else {
        /* A resize counts as giving back the old block and taking the
         * new one. */
        if (old != 0) {
            hooks_count_freed(old);
        }
        hooks_note_alloc(res, size);
    }
    hooks_busy = 0;
    return res;
}

static void
hooks_free(void *ctx, void *ptr)
{
    hooks_domain *d = ctx;
    if (ptr == NULL || !hooks_active()) {
        d->prev.free(d->prev.ctx, ptr);
        return;
    }
    hooks_busy = 1;
    size_t size = hooks_forget(ptr);
    d->prev.free(d->prev.ctx, ptr);
    if (size != 0) {
        hooks_count_freed(size);
    }
    hooks_busy = 0;
}

/* Whether the current allocator of a domain is our hook. GIL. */
static int
hooks_on_top(hooks_domain *d)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator(d->domain, &cur);
    return cur.ctx == (void *)d && cur.malloc == hooks_malloc;
}

/* Puts our hooks in the chain (or re-enables the ones left in it). */
static void
hooks_install(void)
{
    if (!hooks_in_chain) {
        for (int i = 0; i < HOOKS_NDOMAINS; i++) {
            hooks_domain *d = &hooks_domains[i];
            PyMem_GetAllocator(d->domain, &d->prev);
            d->ours.ctx = d;
            d->ours.malloc = hooks_malloc;
            d->ours.calloc = hooks_calloc;
            d->ours.realloc = hooks_realloc;
            d->ours.free = hooks_free;
            PyMem_SetAllocator(d->domain, &d->ours);
        }
        hooks_in_chain = 1;
    }
    __atomic_store_n(&hooks_recording, 1, __ATOMIC_SEQ_CST);
}

/* Stops recording, drops the table, and unlinks the hooks if nobody has
 * chained above them. */
static void
hooks_uninstall(void)
{
    __atomic_store_n(&hooks_recording, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&hooks_lock);
    memlens_ptrtable_clear(&hooks_table);
    pthread_mutex_unlock(&hooks_lock);
    if (!hooks_in_chain) {
        return;
    }
    int all_on_top = 1;
    for (int i = 0; i < HOOKS_NDOMAINS; i++) {
        all_on_top &= hooks_on_top(&hooks_domains[i]);
    }
    if (!all_on_top) {
        /* Someone chained above us; stay in the chain, passing through. */
        return;
    }
    for (int i = 0; i < HOOKS_NDOMAINS; i++) {
        PyMem_SetAllocator(hooks_domains[i].domain, &hooks_domains[i].prev);
    }
    hooks_in_chain = 0;
}

/* _hooks_acquire(): install the hooks for one more user. */
static PyObject *
hooks_py_acquire(PyObject *module, PyObject *Py_UNUSED(args))
{
    if (hooks_user_count == 0 && hooks_in_chain) {
        /* Left passing through by an earlier release: unlink now if the
         * hook above ours has gone, so that we chain afresh on top. */
        hooks_uninstall();
    }
    if (hooks_user_count++ == 0) {
        hooks_install();
    }
    Py_RETURN_NONE;
}

/* _hooks_release(): one user fewer; the last one uninstalls. */
static PyObject *
hooks_py_release(PyObject *module, PyObject *Py_UNUSED(args))
{
    if (hooks_user_count == 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "allocator hooks released more often than acquired");
        return NULL;
    }
    if (--hooks_user_count == 0) {
        hooks_uninstall();
    }
    Py_RETURN_NONE;
}

/* alloc_counters() -> (allocated, freed, failures): bytes since import. */
static PyObject *
hooks_py_counters(PyObject *module, PyObject *Py_UNUSED(args))
{
    /* Copy first: building the tuple allocates through our own hooks. */
    pthread_mutex_lock(&hooks_lock);
    uint64_t allocated = hooks_allocated;
    uint64_t freed = hooks_freed;
    uint64_t failures = hooks_failures;
    pthread_mutex_unlock(&hooks_lock);
    return Py_BuildValue("(KKK)", allocated, freed, failures);
}

static PyMethodDef hooks_methods[] = {
    {"_hooks_acquire", hooks_py_acquire, METH_NOARGS,
     "Install the allocator hooks for one more user."},
    {"_hooks_release", hooks_py_release, METH_NOARGS,
     "Release one user of the allocator hooks."},
    {"alloc_counters", hooks_py_counters, METH_NOARGS,
     "alloc_counters() -> (allocated, freed, failures), bytes."},
    {NULL, NULL, 0, NULL},
};

/* A fork while another thread holds hooks_lock would leave the child's
 * copy locked forever: hold it across the fork instead. */
static void
hooks_atfork_prepare(void)
{
    pthread_mutex_lock(&hooks_lock);
}

static void
hooks_atfork_release(void)
{
    pthread_mutex_unlock(&hooks_lock);
}

int
memlens_hooks_init(PyObject *module)
{
    static int registered = 0;
    if (!registered) {
        int rc = pthread_atfork(hooks_atfork_prepare, hooks_atfork_release,
                                hooks_atfork_release);
        if (rc != 0) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        registered = 1;
    }
    return PyModule_AddFunctions(module, hooks_methods);
}
