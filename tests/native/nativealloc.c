/* nativealloc: a C extension for the native tracing tests. It takes memory
 * the way C libraries do, through each allocator function of the C library
 * and through anonymous mappings: from the calling thread, with the GIL
 * released, and from pthreads of its own that never run Python. Blocks
 * are passed around as integer addresses.
 *
 * got() and slots() tell where a loaded object reaches a C library
 * function (the slots of its global offset table), so that a test can
 * see that nothing stays redirected. This module calls the allocator functions through its PLT
 * and never takes their addresses: an address load would have the linker
 * route the calls through that load's slot instead.
 *
 * NATIVEALLOC_NAME sets the module's name: the suite loads this source a
 * second time under another name, after tracing has started.
 *
 * Threads: the module's functions run with the GIL and release it while
 * they wait for a thread of their own; those threads only allocate. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef NATIVEALLOC_NAME
#define NATIVEALLOC_NAME nativealloc
#endif
#define NATIVEALLOC_STR_(name) #name
#define NATIVEALLOC_STR(name) NATIVEALLOC_STR_(name)
#define NATIVEALLOC_INIT_(name) PyInit_##name
#define NATIVEALLOC_INIT(name) NATIVEALLOC_INIT_(name)

/* Alignment asked of the aligned allocators. */
#define NATIVEALLOC_ALIGN 64

/* pyconfig.h asks for 64-bit file offsets, and glibc's headers then send
 * every mmap() to mmap64. Each symbol is named here by its own so that the
 * "mmap" kind goes through mmap's slot and "mmap64" through mmap64's. */
extern void *nativealloc_mmap(void *, size_t, int, int, int,
                              long) __asm__("mmap");
extern void *nativealloc_mmap64(void *, size_t, int, int, int,
                                long long) __asm__("mmap64");

enum nativealloc_kind {
    NATIVEALLOC_MALLOC,
    NATIVEALLOC_CALLOC,
    NATIVEALLOC_REALLOC,
    NATIVEALLOC_REALLOCARRAY,
    NATIVEALLOC_POSIX_MEMALIGN,
    NATIVEALLOC_ALIGNED_ALLOC,
    NATIVEALLOC_MEMALIGN,
    NATIVEALLOC_VALLOC,
    NATIVEALLOC_PVALLOC,
    NATIVEALLOC_MMAP,
    NATIVEALLOC_MMAP64,
    NATIVEALLOC_KINDS
};

static const char *const nativealloc_kind_names[NATIVEALLOC_KINDS] = {
    "malloc",         "calloc",        "realloc",  "reallocarray",
    "posix_memalign", "aligned_alloc", "memalign", "valloc",
    "pvalloc",        "mmap",          "mmap64",
};

/* The C library functions this object calls (SYMBOLS): got() finds a
 * slot for each. */
static const char *const nativealloc_symbols[] = {
    "malloc",        "calloc",   "realloc", "reallocarray", "posix_memalign",
    "aligned_alloc", "memalign", "valloc",  "pvalloc",      "free",
    "mmap",          "mmap64",   "munmap",  "mremap",       "pthread_create",
    "dlopen",        NULL,
};

/* Writes one byte in each page of [p + from, p + to), so that the kernel
 * gives the pages (and charges them to RSS). */
static void
nativealloc_touch(char *p, size_t from, size_t to)
{
    volatile char *v = p;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t i = from; i < to; i += page) {
        v[i] = 1;
    }
    if (to > from) {
        v[to - 1] = 1;
    }
}

/* Returns a block of at least `size` bytes taken the way `kind` says, its
 * pages written when `touch`; NULL with errno set when the allocator
 * fails. The caller owns the block (nativealloc_give_back). Any thread,
 * with or without the GIL. */
static void *
nativealloc_take(int kind, size_t size, int touch)
{
    void *p = NULL;
    void *small;
    int err;
    switch (kind) {
        case NATIVEALLOC_MALLOC:
            p = malloc(size);
            break;
        case NATIVEALLOC_CALLOC:
            p = calloc(1, size);
            break;
        case NATIVEALLOC_REALLOC:
        case NATIVEALLOC_REALLOCARRAY:
            /* A fresh small block grown to the size: the realloc path. */
            small = malloc(16);
            if (small == NULL) {
                return NULL;
            }
            if (kind == NATIVEALLOC_REALLOC) {
                p = realloc(small, size);
            }
            else {
                p = reallocarray(small, size, 1);
            }
            if (p == NULL) {
                err = errno;
                free(small);
                errno = err;
            }
            break;
        case NATIVEALLOC_POSIX_MEMALIGN:
            err = posix_memalign(&p, NATIVEALLOC_ALIGN, size);
            if (err != 0) {
                p = NULL;
                errno = err;
            }
            break;
        case NATIVEALLOC_ALIGNED_ALLOC:
            /* C11 wants a size that is a multiple of the alignment. */
            if (size > SIZE_MAX - NATIVEALLOC_ALIGN) {
                errno = ENOMEM;
                return NULL;
            }
            p = aligned_alloc(NATIVEALLOC_ALIGN,
                              (size + NATIVEALLOC_ALIGN - 1)
                                  & ~(size_t)(NATIVEALLOC_ALIGN - 1));
            break;
        case NATIVEALLOC_MEMALIGN:
            p = memalign(NATIVEALLOC_ALIGN, size);
            break;
        case NATIVEALLOC_VALLOC:
            p = valloc(size);
            break;
        case NATIVEALLOC_PVALLOC:
            p = pvalloc(size);
            break;
        case NATIVEALLOC_MMAP:
            p = nativealloc_mmap(NULL, size, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                p = NULL;
            }
            break;
        case NATIVEALLOC_MMAP64:
            p = nativealloc_mmap64(NULL, size, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                p = NULL;
            }
            break;
        default:
            errno = EINVAL;
            return NULL;
    }
    if (p != NULL && touch) {
        nativealloc_touch(p, 0, size);
    }
    return p;
}

/* Gives back a block of nativealloc_take: 0, or -1 with errno set. */
static int
nativealloc_give_back(int kind, void *p, size_t size)
{
    if (kind == NATIVEALLOC_MMAP || kind == NATIVEALLOC_MMAP64) {
        return munmap(p, size);
    }
    free(p);
    return 0;
}

/* PyArg "O&" converters. */

static int
nativealloc_kind_arg(PyObject *arg, void *out)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "kind must be a str, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return 0;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return 0;
    }
    for (int i = 0; i < NATIVEALLOC_KINDS; i++) {
        if (strcmp(name, nativealloc_kind_names[i]) == 0) {
            *(int *)out = i;
            return 1;
        }
    }
    PyErr_Format(PyExc_ValueError, "unknown allocation kind %R", arg);
    return 0;
}

static int
nativealloc_size_arg(PyObject *arg, void *out)
{
    size_t n = PyLong_AsSize_t(arg);
    if (n == (size_t)-1 && PyErr_Occurred()) {
        return 0;
    }
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        return 0;
    }
    *(size_t *)out = n;
    return 1;
}

static int
nativealloc_offset_arg(PyObject *arg, void *out)
{
    size_t n = PyLong_AsSize_t(arg);
    if (n == (size_t)-1 && PyErr_Occurred()) {
        return 0;
    }
    *(size_t *)out = n;
    return 1;
}

static int
nativealloc_address_arg(PyObject *arg, void *out)
{
    void *p = PyLong_AsVoidPtr(arg);
    if (p == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "address must not be 0");
        }
        return 0;
    }
    *(void **)out = p;
    return 1;
}

/* The block's address as a new int, or MemoryError. */
static PyObject *
nativealloc_result(void *p)
{
    if (p == NULL) {
        return PyErr_NoMemory();
    }
    return PyLong_FromVoidPtr(p);
}

/* alloc(kind, size, touch=True) -> address */
static PyObject *
nativealloc_alloc(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"kind", "size", "touch", NULL};
    int kind, touch = 1;
    size_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&|p:alloc", keywords,
                                     nativealloc_kind_arg, &kind,
                                     nativealloc_size_arg, &size, &touch)) {
        return NULL;
    }
    return nativealloc_result(nativealloc_take(kind, size, touch));
}

/* alloc_nogil(kind, size, touch=True) -> address, taken with the GIL
 * released. */
static PyObject *
nativealloc_alloc_nogil(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"kind", "size", "touch", NULL};
    int kind, touch = 1;
    size_t size;
    void *p;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&|p:alloc_nogil",
                                     keywords, nativealloc_kind_arg, &kind,
                                     nativealloc_size_arg, &size, &touch)) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS p = nativealloc_take(kind, size, touch);
    Py_END_ALLOW_THREADS return nativealloc_result(p);
}

/* release(kind, address, size): free() or munmap() as the kind needs. */
static PyObject *
nativealloc_release(PyObject *module, PyObject *args)
{
    int kind;
    void *p;
    size_t size;
    if (!PyArg_ParseTuple(args, "O&O&O&:release", nativealloc_kind_arg, &kind,
                          nativealloc_address_arg, &p, nativealloc_size_arg,
                          &size)) {
        return NULL;
    }
    if (nativealloc_give_back(kind, p, size) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* remap(address, old_size, new_size) -> address: mremap, free to move;
 * the pages past the old size are written. */
static PyObject *
nativealloc_remap(PyObject *module, PyObject *args)
{
    void *p;
    size_t old_size, new_size;
    if (!PyArg_ParseTuple(args, "O&O&O&:remap", nativealloc_address_arg, &p,
                          nativealloc_size_arg, &old_size,
                          nativealloc_size_arg, &new_size)) {
        return NULL;
    }
    void *q = mremap(p, old_size, new_size, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) {
        return PyErr_NoMemory();
    }
    if (new_size > old_size) {
        nativealloc_touch(q, old_size, new_size);
    }
    return PyLong_FromVoidPtr(q);
}

/* unmap_part(address, offset, length): munmap of part of a mapping. */
static PyObject *
nativealloc_unmap_part(PyObject *module, PyObject *args)
{
    void *p;
    size_t offset, length;
    if (!PyArg_ParseTuple(args, "O&O&O&:unmap_part", nativealloc_address_arg,
                          &p, nativealloc_offset_arg, &offset,
                          nativealloc_size_arg, &length)) {
        return NULL;
    }
    if (munmap((char *)p + offset, length) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* One allocation made by a thread of its own. */
struct nativealloc_job {
    int kind;
    size_t size;
    int touch;
    void *result; /* Owned by the caller once the thread is joined. */
    int err;
};

static void *
nativealloc_job_run(void *arg)
{
    struct nativealloc_job *job = arg;
    errno = 0;
    job->result = nativealloc_take(job->kind, job->size, job->touch);
    job->err = errno;
    return NULL;
}

/* alloc_in_thread(kind, size, touch=True) -> address: made by a new
 * pthread, created here with the GIL held, that never runs Python. */
static PyObject *
nativealloc_alloc_in_thread(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"kind", "size", "touch", NULL};
    struct nativealloc_job job = {0};
    pthread_t thread;
    int rc;
    job.touch = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&|p:alloc_in_thread",
                                     keywords, nativealloc_kind_arg, &job.kind,
                                     nativealloc_size_arg, &job.size,
                                     &job.touch)) {
        return NULL;
    }
    rc = pthread_create(&thread, NULL, nativealloc_job_run, &job);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_BEGIN_ALLOW_THREADS pthread_join(thread, NULL);
    Py_END_ALLOW_THREADS return nativealloc_result(job.result);
}

/* A long-lived thread that allocates and frees on request. */

enum nativealloc_state {
    NATIVEALLOC_IDLE,
    NATIVEALLOC_ASKED,
    NATIVEALLOC_DONE,
    NATIVEALLOC_STOP,
};

struct nativealloc_worker {
    pthread_t thread;
    int joined; /* With the GIL. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* The request and its answer. Protected by lock. */
    enum nativealloc_state state;
    int release;
    int kind;
    size_t size;
    int touch;
    void *address;
    void *result;
    int err;
};

#define NATIVEALLOC_WORKER "nativealloc.worker"

static void *
nativealloc_worker_run(void *arg)
{
    struct nativealloc_worker *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->state != NATIVEALLOC_ASKED && w->state != NATIVEALLOC_STOP) {
            pthread_cond_wait(&w->cond, &w->lock);
        }
        if (w->state == NATIVEALLOC_STOP) {
            break;
        }
        int release = w->release, kind = w->kind, touch = w->touch;
        size_t size = w->size;
        void *address = w->address, *result = NULL;
        pthread_mutex_unlock(&w->lock);
        errno = 0;
        if (release) {
            nativealloc_give_back(kind, address, size);
        }
        else {
            result = nativealloc_take(kind, size, touch);
        }
        int err = errno;
        pthread_mutex_lock(&w->lock);
        w->result = result;
        w->err = err;
        w->state = NATIVEALLOC_DONE;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* Asks the worker to stop and waits for it; GIL released. */
static void
nativealloc_worker_stop(struct nativealloc_worker *w)
{
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&w->lock);
    while (w->state != NATIVEALLOC_IDLE) {
        pthread_cond_wait(&w->cond, &w->lock);
    }
    w->state = NATIVEALLOC_STOP;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    Py_END_ALLOW_THREADS w->joined = 1;
}

static void
nativealloc_worker_destroy(PyObject *capsule)
{
    struct nativealloc_worker *w =
        PyCapsule_GetPointer(capsule, NATIVEALLOC_WORKER);
    if (w == NULL) {
        PyErr_Clear();
        return;
    }
    if (!w->joined) {
        nativealloc_worker_stop(w);
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    PyMem_RawFree(w);
}

/* start_thread() -> handle of a new worker thread. */
static PyObject *
nativealloc_start_thread(PyObject *module, PyObject *unused)
{
    struct nativealloc_worker *w = PyMem_RawCalloc(1, sizeof(*w));
    if (w == NULL) {
        return PyErr_NoMemory();
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->state = NATIVEALLOC_IDLE;
    int rc = pthread_create(&w->thread, NULL, nativealloc_worker_run, w);
    if (rc != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        PyMem_RawFree(w);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *capsule =
        PyCapsule_New(w, NATIVEALLOC_WORKER, nativealloc_worker_destroy);
    if (capsule == NULL) {
        nativealloc_worker_stop(w);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        PyMem_RawFree(w);
    }
    return capsule;
}

/* The running worker of a handle, or NULL with an exception set. */
static struct nativealloc_worker *
nativealloc_worker_of(PyObject *handle)
{
    struct nativealloc_worker *w =
        PyCapsule_GetPointer(handle, NATIVEALLOC_WORKER);
    if (w == NULL) {
        return NULL;
    }
    if (w->joined) {
        PyErr_SetString(PyExc_ValueError, "the thread was stopped");
        return NULL;
    }
    return w;
}

/* Has the worker run one request; its result. GIL released. */
static void *
nativealloc_worker_ask(struct nativealloc_worker *w, int release, int kind,
                       size_t size, int touch, void *address)
{
    void *result;
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&w->lock);
    while (w->state != NATIVEALLOC_IDLE) {
        pthread_cond_wait(&w->cond, &w->lock);
    }
    w->release = release;
    w->kind = kind;
    w->size = size;
    w->touch = touch;
    w->address = address;
    w->state = NATIVEALLOC_ASKED;
    pthread_cond_broadcast(&w->cond);
    while (w->state != NATIVEALLOC_DONE) {
        pthread_cond_wait(&w->cond, &w->lock);
    }
    result = w->result;
    w->state = NATIVEALLOC_IDLE;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    Py_END_ALLOW_THREADS return result;
}

/* thread_alloc(handle, kind, size, touch=True) -> address */
static PyObject *
nativealloc_thread_alloc(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"handle", "kind", "size", "touch", NULL};
    PyObject *handle;
    int kind, touch = 1;
    size_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&O&|p:thread_alloc",
                                     keywords, &handle, nativealloc_kind_arg,
                                     &kind, nativealloc_size_arg, &size,
                                     &touch)) {
        return NULL;
    }
    struct nativealloc_worker *w = nativealloc_worker_of(handle);
    if (w == NULL) {
        return NULL;
    }
    return nativealloc_result(
        nativealloc_worker_ask(w, 0, kind, size, touch, NULL));
}

/* thread_release(handle, kind, address, size): the worker frees. */
static PyObject *
nativealloc_thread_release(PyObject *module, PyObject *args)
{
    PyObject *handle;
    int kind;
    void *p;
    size_t size;
    if (!PyArg_ParseTuple(args, "OO&O&O&:thread_release", &handle,
                          nativealloc_kind_arg, &kind, nativealloc_address_arg,
                          &p, nativealloc_size_arg, &size)) {
        return NULL;
    }
    struct nativealloc_worker *w = nativealloc_worker_of(handle);
    if (w == NULL) {
        return NULL;
    }
    nativealloc_worker_ask(w, 1, kind, size, 0, p);
    Py_RETURN_NONE;
}

/* stop_thread(handle) */
static PyObject *
nativealloc_stop_thread(PyObject *module, PyObject *handle)
{
    struct nativealloc_worker *w = nativealloc_worker_of(handle);
    if (w == NULL) {
        return NULL;
    }
    nativealloc_worker_stop(w);
    Py_RETURN_NONE;
}

#if defined(__x86_64__)
#define NATIVEALLOC_JUMP_SLOT R_X86_64_JUMP_SLOT
#define NATIVEALLOC_GLOB_DAT R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define NATIVEALLOC_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define NATIVEALLOC_GLOB_DAT R_AARCH64_GLOB_DAT
#else
#error "nativealloc reads x86-64 and AArch64 relocations only"
#endif

/* The link map of the loaded object `path`, or of this module when `path`
 * is NULL; NULL with an exception set when nothing by that path is
 * loaded. Borrowed from the dynamic linker. */
static struct link_map *
nativealloc_link_map(const char *path)
{
    struct link_map *map = NULL;
    if (path == NULL) {
        Dl_info info;
        if (!dladdr1((void *)&nativealloc_link_map, &info, (void **)&map,
                     RTLD_DL_LINKMAP)) {
            PyErr_SetString(PyExc_OSError, "dladdr1 found no link map");
            return NULL;
        }
        return map;
    }
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) {
        PyErr_Format(PyExc_ValueError, "%s is not loaded", path);
        return NULL;
    }
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0) {
        map = NULL;
        PyErr_Format(PyExc_OSError, "dlinfo: %s", dlerror());
    }
    dlclose(handle);
    return map;
}

/* Appends (slot address, value now) for each relocation of the table
 * [rela, rela + size) that binds `name` through a slot of the offset
 * table; -1 with an exception set on failure. */
static int
nativealloc_add_slots(PyObject *list, const struct link_map *map,
                      const ElfW(Rela) * rela, size_t size,
                      const ElfW(Sym) * symtab, const char *strtab,
                      const char *name)
{
    for (size_t i = 0; i < size / sizeof(*rela); i++) {
        unsigned long type = ELF64_R_TYPE(rela[i].r_info);
        if (type != NATIVEALLOC_JUMP_SLOT && type != NATIVEALLOC_GLOB_DAT) {
            continue;
        }
        const ElfW(Sym) *sym = &symtab[ELF64_R_SYM(rela[i].r_info)];
        if (strcmp(strtab + sym->st_name, name) != 0) {
            continue;
        }
        uintptr_t *slot = (uintptr_t *)(map->l_addr + rela[i].r_offset);
        PyObject *item = Py_BuildValue("(KK)", (unsigned long long)slot,
                                       (unsigned long long)*slot);
        if (item == NULL) {
            return -1;
        }
        int rc = PyList_Append(list, item);
        Py_DECREF(item);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* slots(symbol, path=None) -> [(slot address, value now), ...]: every
 * offset-table slot through which the object `path` (this module by
 * default) reaches `symbol`, read from its dynamic section: the PLT's
 * slots first, then those of address loads and -fno-plt calls. A reading
 * of our own, beside memlens's, for the tests to check it against. */
static PyObject *
nativealloc_slots(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"symbol", "path", NULL};
    const char *name, *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|z:slots", keywords,
                                     &name, &path)) {
        return NULL;
    }
    const struct link_map *map = nativealloc_link_map(path);
    if (map == NULL) {
        return NULL;
    }
    uintptr_t base = map->l_addr;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL, *rela = NULL;
    size_t jmprel_size = 0, rela_size = 0;
    for (const ElfW(Dyn) *d = map->l_ld; d->d_tag != DT_NULL; d++) {
        /* glibc rewrites these in place to addresses where the section is
         * writable; elsewhere they are still offsets from the base. */
        uintptr_t ptr = d->d_un.d_ptr;
        if (ptr < base) {
            ptr += base;
        }
        switch (d->d_tag) {
            case DT_SYMTAB:
                symtab = (const ElfW(Sym) *)ptr;
                break;
            case DT_STRTAB:
                strtab = (const char *)ptr;
                break;
            case DT_JMPREL:
                jmprel = (const ElfW(Rela) *)ptr;
                break;
            case DT_PLTRELSZ:
                jmprel_size = d->d_un.d_val;
                break;
            case DT_RELA:
                rela = (const ElfW(Rela) *)ptr;
                break;
            case DT_RELASZ:
                rela_size = d->d_un.d_val;
                break;
            default:
                break;
        }
    }
    if (symtab == NULL || strtab == NULL) {
        PyErr_SetString(PyExc_OSError, "no dynamic symbol table");
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    if ((jmprel != NULL
         && nativealloc_add_slots(list, map, jmprel, jmprel_size, symtab,
                                  strtab, name)
                < 0)
        || (rela != NULL
            && nativealloc_add_slots(list, map, rela, rela_size, symtab,
                                     strtab, name)
                   < 0)) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

/* got(symbol, path=None) -> the value of the first slot slots() finds:
 * the address calls to `symbol` go to. ValueError when there is none. */
static PyObject *
nativealloc_got(PyObject *module, PyObject *args, PyObject *kwargs)
{
    PyObject *list = nativealloc_slots(module, args, kwargs);
    if (list == NULL) {
        return NULL;
    }
    if (PyList_GET_SIZE(list) == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "the object reaches no such symbol through its "
                        "offset table");
        Py_DECREF(list);
        return NULL;
    }
    PyObject *value = PyTuple_GET_ITEM(PyList_GET_ITEM(list, 0), 1);
    Py_INCREF(value);
    Py_DECREF(list);
    return value;
}

static PyMethodDef nativealloc_methods[] = {
    {"alloc", (PyCFunction)(void (*)(void))nativealloc_alloc,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"alloc_nogil", (PyCFunction)(void (*)(void))nativealloc_alloc_nogil,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"alloc_in_thread",
     (PyCFunction)(void (*)(void))nativealloc_alloc_in_thread,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"release", nativealloc_release, METH_VARARGS, NULL},
    {"remap", nativealloc_remap, METH_VARARGS, NULL},
    {"unmap_part", nativealloc_unmap_part, METH_VARARGS, NULL},
    {"start_thread", nativealloc_start_thread, METH_NOARGS, NULL},
    {"thread_alloc", (PyCFunction)(void (*)(void))nativealloc_thread_alloc,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"thread_release", nativealloc_thread_release, METH_VARARGS, NULL},
    {"stop_thread", nativealloc_stop_thread, METH_O, NULL},
    {"slots", (PyCFunction)(void (*)(void))nativealloc_slots,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"got", (PyCFunction)(void (*)(void))nativealloc_got,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef nativealloc_module = {
    PyModuleDef_HEAD_INIT, NATIVEALLOC_STR(NATIVEALLOC_NAME), NULL, -1,
    nativealloc_methods,
};

/* A tuple of str from a NULL-terminated array, or NULL. */
static PyObject *
nativealloc_names(const char *const *names, Py_ssize_t n)
{
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (s == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, s);
    }
    return tuple;
}

PyMODINIT_FUNC
NATIVEALLOC_INIT(NATIVEALLOC_NAME)(void)
{
    Py_ssize_t nsymbols = 0;
    while (nativealloc_symbols[nsymbols] != NULL) {
        nsymbols++;
    }
    PyObject *m = PyModule_Create(&nativealloc_module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *kinds =
        nativealloc_names(nativealloc_kind_names, NATIVEALLOC_KINDS);
    if (kinds == NULL) {
        goto error;
    }
    if (PyModule_AddObject(m, "KINDS", kinds) < 0) {
        Py_DECREF(kinds);
        goto error;
    }
    PyObject *symbols = nativealloc_names(nativealloc_symbols, nsymbols);
    if (symbols == NULL) {
        goto error;
    }
    if (PyModule_AddObject(m, "SYMBOLS", symbols) < 0) {
        Py_DECREF(symbols);
        goto error;
    }
    return m;
error:
    Py_DECREF(m);
    return NULL;
}
