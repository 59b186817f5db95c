/* native.c: native memory (SPEC 9).
 *
 * With native tracing on, every loaded object's slots for the malloc
 * family and for mmap, munmap and mremap point at the hooks below
 * (elfpatch.c writes them; objects a dlopen loads later are patched by
 * the dlopen hook). A hook calls the real function, through memlens's
 * own unpatched slots, then hands the block to tracing.c, which records
 * it as it records the raw domain's, on a native site (sites.h: the
 * native twin of the Python stack's).
 *
 * Counted once: the Python allocators' blocks never reach these hooks
 * (the interpreter's own slots are left alone), and a call made while
 * this thread is inside memlens's hooks or quiet (NumPy's data handler,
 * a malloc replaced by a library whose own mmap calls are hooked) is
 * passed through: memlens_hooks_busy().
 *
 * Attribution, for a thread without the GIL: a Python thread that let it
 * go in a hooked library (PyEval_SaveThread) takes the site it stood on
 * then; a thread a hooked library created (pthread_create) while tracing
 * takes its creator's site; any other, MEMLENS_SITE_NATIVE_THREAD.
 *
 * Resident, not reserved: anonymous mappings, and blocks of
 * MEMLENS_NATIVE_LARGE bytes and more from any domain, are kept in the
 * region tables below; reports read their resident pages (mincore) and
 * count those instead of the bytes asked for.
 *
 * Locks: native_lock for the region tables (any thread); tracing.c's own
 * for its tables.
 */
#include "native.h"
#include "elfpatch.h"
#include "errors.h"
#include "hooks.h"
#include "sampler.h"
#include "sampling.h"
#include "sites.h"
#include "table.h"
#include "tracing.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int memlens_native_on = 0;
uint64_t memlens_native_peak_pending = 0;

/* Bumped at each start: the sites a thread kept from before are stale. */
static unsigned long native_generation = 1;

/* ---- Where a thread without the GIL stands -------------------------------
 * Sites kept with the generation they belong to; their own thread only. */
typedef struct {
    uint32_t site;
    unsigned long generation;
} native_origin;

/* Set by the PyEval_SaveThread hook until PyEval_RestoreThread. */
static MEMLENS_TLS native_origin native_released;
/* Set by the thread-start trampoline of a thread made while tracing. */
static MEMLENS_TLS native_origin native_creator;

static inline uint32_t
native_origin_site(const native_origin *o)
{
    return o->generation == native_generation ? o->site
                                              : MEMLENS_SITE_NATIVE_THREAD;
}

/* The site this thread's native blocks go to when it has no GIL. */
static inline uint32_t
native_fallback_site(void)
{
    if (native_released.generation == native_generation) {
        return native_released.site;
    }
    return native_origin_site(&native_creator);
}

uint32_t
memlens_native_creator(void)
{
    return native_creator.generation == native_generation
                   && __atomic_load_n(&memlens_native_on, __ATOMIC_RELAXED)
               ? native_creator.site
               : MEMLENS_SITE_NONE;
}

static inline int
native_recording(void)
{
    return __atomic_load_n(&memlens_native_on, __ATOMIC_RELAXED)
           && !memlens_hooks_busy();
}

/* ---- Regions: large blocks and mappings (native_lock) -------------------- */

static pthread_mutex_t native_lock = PTHREAD_MUTEX_INITIALIZER;

/* Large blocks, by address. */
typedef struct {
    uintptr_t ptr; /* 0: empty. */
    size_t size;
    uint64_t weight;
    uint32_t site;
} native_block;

static native_block *native_blocks = NULL; /* Owned (libc). */
static size_t native_blocks_mask = 0, native_blocks_used = 0;
static size_t native_blocks_live = 0; /* Atomic read: any to look up. */

static uint64_t
native_block_key(const void *e)
{
    return ((const native_block *)e)->ptr;
}

/* Anonymous mappings, sorted by start, never overlapping. */
typedef struct {
    uintptr_t start;
    size_t length;
    uint32_t site;
} native_map;

static native_map *native_maps = NULL; /* Owned (libc). */
static size_t native_nmaps = 0, native_capmaps = 0;

/* Records lost for want of memory (the figures understate). Atomic. */
static uint64_t native_failures = 0;

/* The index of the first mapping ending after `addr`. */
static size_t
native_map_search(uintptr_t addr)
{
    size_t lo = 0, hi = native_nmaps;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (native_maps[mid].start + native_maps[mid].length <= addr) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

static int
native_map_insert(size_t at, uintptr_t start, size_t length, uint32_t site)
{
    if (memlens_grow((void **)&native_maps, &native_capmaps, native_nmaps,
                     sizeof(native_map), 64)
        < 0) {
        return -1;
    }
    memmove(&native_maps[at + 1], &native_maps[at],
            (native_nmaps - at) * sizeof(native_map));
    native_maps[at].start = start;
    native_maps[at].length = length;
    native_maps[at].site = site;
    native_nmaps++;
    return 0;
}

/* The change of one site, kept to be handed to tracing.c once the lock is
 * let go. */
typedef struct {
    uint32_t site;
    int64_t bytes;
    int64_t count;
} native_change;

#define NATIVE_CHANGES_MAX 32

typedef struct {
    native_change c[NATIVE_CHANGES_MAX];
    int n;
} native_changes;

static void
native_changes_add(native_changes *ch, uint32_t site, int64_t bytes,
                   int64_t count)
{
    for (int i = 0; i < ch->n; i++) {
        if (ch->c[i].site == site) {
            ch->c[i].bytes += bytes;
            ch->c[i].count += count;
            return;
        }
    }
    if (ch->n == NATIVE_CHANGES_MAX) {
        /* An munmap over mappings of more sites than that: the change is
         * lost (it cannot be passed on under native_lock). */
        __atomic_fetch_add(&native_failures, 1, __ATOMIC_RELAXED);
        return;
    }
    ch->c[ch->n].site = site;
    ch->c[ch->n].bytes = bytes;
    ch->c[ch->n].count = count;
    ch->n++;
}

static void
native_changes_apply(const native_changes *ch)
{
    for (int i = 0; i < ch->n; i++) {
        memlens_tracing_native_change(ch->c[i].site, ch->c[i].bytes,
                                      ch->c[i].count);
    }
}

/* Takes [addr, addr + length) out of the mappings: whole ones go (a block
 * each), cut ones shrink or split. Under native_lock. */
static void
native_cut(uintptr_t addr, size_t length, native_changes *ch)
{
    uintptr_t end = addr + length;
    size_t i = native_map_search(addr);
    while (i < native_nmaps && native_maps[i].start < end) {
        native_map *m = &native_maps[i];
        uintptr_t m_end = m->start + m->length;
        uintptr_t lo = m->start > addr ? m->start : addr;
        uintptr_t hi = m_end < end ? m_end : end;
        native_changes_add(ch, m->site, -(int64_t)(hi - lo),
                           lo == m->start && hi == m_end ? -1 : 0);
        if (lo == m->start && hi == m_end) {
            memmove(m, m + 1, (native_nmaps - i - 1) * sizeof(native_map));
            native_nmaps--;
            continue;
        }
        if (lo == m->start) {
            m->start = hi;
            m->length = m_end - hi;
        }
        else if (hi == m_end) {
            m->length = lo - m->start;
        }
        else {
            /* A hole in the middle: two mappings. */
            m->length = lo - m->start;
            uint32_t site = m->site;
            if (native_map_insert(i + 1, hi, m_end - hi, site) < 0) {
                /* The tail is forgotten: take its bytes off too. */
                __atomic_fetch_add(&native_failures, 1, __ATOMIC_RELAXED);
                native_changes_add(ch, site, -(int64_t)(m_end - hi), -1);
            }
            else {
                /* One mapping became two. */
                native_changes_add(ch, site, 0, 1);
            }
            i++;
        }
        i++;
    }
}

/* Records the mapping [addr, addr + length) on `site`; one over older
 * ones (MAP_FIXED, a move onto them) replaced them. Under native_lock. */
static void
native_map_put(uintptr_t addr, size_t length, uint32_t site,
               native_changes *ch)
{
    native_cut(addr, length, ch);
    if (native_map_insert(native_map_search(addr), addr, length, site) == 0) {
        native_changes_add(ch, site, (int64_t)length, 1);
    }
    else {
        __atomic_fetch_add(&native_failures, 1, __ATOMIC_RELAXED);
    }
}

void
memlens_native_block_put(void *ptr, size_t size, uint64_t weight,
                         uint32_t site)
{
    if (size < MEMLENS_NATIVE_LARGE
        || !__atomic_load_n(&memlens_native_on, __ATOMIC_RELAXED)) {
        return;
    }
    pthread_mutex_lock(&native_lock);
    if (memlens_table_full(native_blocks == NULL, native_blocks_used,
                           native_blocks_mask, 1, 2)) {
        size_t old_cap = native_blocks ? native_blocks_mask + 1 : 0;
        size_t cap = old_cap ? old_cap * 2 : 256;
        native_block *slots = calloc(cap, sizeof(native_block));
        if (slots == NULL) {
            pthread_mutex_unlock(&native_lock);
            __atomic_fetch_add(&native_failures, 1, __ATOMIC_RELAXED);
            return;
        }
        memlens_table_rehash(slots, cap - 1, native_blocks, old_cap,
                             sizeof(native_block), native_block_key);
        free(native_blocks);
        native_blocks = slots;
        native_blocks_mask = cap - 1;
    }
    size_t i = memlens_table_find(native_blocks, sizeof(native_block),
                                  native_blocks_mask, (uintptr_t)ptr,
                                  native_block_key);
    if (native_blocks[i].ptr == 0) {
        native_blocks_used++;
    }
    native_blocks[i].ptr = (uintptr_t)ptr;
    native_blocks[i].size = size;
    native_blocks[i].weight = weight;
    native_blocks[i].site = site;
    __atomic_store_n(&native_blocks_live, native_blocks_used,
                     __ATOMIC_RELAXED);
    pthread_mutex_unlock(&native_lock);
}

void
memlens_native_block_pop(void *ptr, uint64_t weight)
{
    if (__atomic_load_n(&native_blocks_live, __ATOMIC_RELAXED) == 0
        || weight + memlens_sampling_bytes < MEMLENS_NATIVE_LARGE) {
        return;
    }
    pthread_mutex_lock(&native_lock);
    if (native_blocks != NULL) {
        size_t i = memlens_table_find(native_blocks, sizeof(native_block),
                                      native_blocks_mask, (uintptr_t)ptr,
                                      native_block_key);
        if (native_blocks[i].ptr != 0) {
            memlens_native_check_peak();
            memlens_table_remove(native_blocks, sizeof(native_block),
                                 native_blocks_mask, i, native_block_key);
            native_blocks_used--;
            __atomic_store_n(&native_blocks_live, native_blocks_used,
                             __ATOMIC_RELAXED);
        }
    }
    pthread_mutex_unlock(&native_lock);
}

size_t
memlens_native_own_bytes(void)
{
    pthread_mutex_lock(&native_lock);
    size_t bytes =
        (native_blocks ? (native_blocks_mask + 1) * sizeof(native_block) : 0)
        + native_capmaps * sizeof(native_map);
    pthread_mutex_unlock(&native_lock);
    return bytes;
}

/* ---- Resident pages -------------------------------------------------------- */

#define NATIVE_MINCORE_PAGES 4096
static unsigned char native_vec[NATIVE_MINCORE_PAGES]; /* native_lock. */

/* The resident bytes of [start, start + length): the whole pages inside
 * as mincore says (a page it cannot see counts as not resident), the
 * partial ones at the edges as resident. Under native_lock. */
static uint64_t
native_resident(uintptr_t start, size_t length)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = (start + page - 1) & ~(page - 1);
    uintptr_t last = (start + length) & ~(page - 1);
    if (last <= first) {
        return length;
    }
    uint64_t resident = length - (last - first);
    for (uintptr_t at = first; at < last;) {
        size_t pages = (last - at) / page;
        pages = pages < NATIVE_MINCORE_PAGES ? pages : NATIVE_MINCORE_PAGES;
        if (mincore((void *)at, pages * page, native_vec) == 0) {
            for (size_t k = 0; k < pages; k++) {
                resident += (native_vec[k] & 1) * page;
            }
        }
        at += pages * page;
    }
    return resident;
}

void
memlens_native_discount(int64_t *discount, uint32_t nsites)
{
    pthread_mutex_lock(&native_lock);
    for (size_t i = 0; native_blocks != NULL && i <= native_blocks_mask; i++) {
        const native_block *b = &native_blocks[i];
        if (b->ptr == 0) {
            continue;
        }
        /* A sampled block stands for `weight` bytes: scaled alike. */
        uint64_t resident = native_resident(b->ptr, b->size);
        int64_t d =
            (int64_t)((double)b->weight * (double)resident / (double)b->size)
            - (int64_t)b->weight;
        if (b->site < nsites) {
            discount[b->site] += d;
        }
    }
    for (size_t i = 0; i < native_nmaps; i++) {
        const native_map *m = &native_maps[i];
        int64_t d =
            (int64_t)native_resident(m->start, m->length) - (int64_t)m->length;
        if (m->site < nsites) {
            discount[m->site] += d;
        }
    }
    pthread_mutex_unlock(&native_lock);
}

/* ---- Recording --------------------------------------------------------------- */

/* A block handed out by a hooked allocator, when a mark may fall in it.
 * Busy raised around our work: what tracing.c allocates is not the
 * program's. Keeps errno. */
static MEMLENS_SLOW_PATH void
native_alloc_slow(void *ptr, size_t size)
{
    int saved = errno;
    memlens_hooks_enter();
    uint64_t weight = memlens_sampling_weight(size);
    if (weight != 0) {
        memlens_tracing_native_put(ptr, size, weight, native_fallback_site());
    }
    memlens_hooks_leave();
    errno = saved;
}

/* A block handed out: when sampling, most fall between two marks and
 * only move the countdown. */
static inline void
native_alloc(void *ptr, size_t size)
{
    if (memlens_sampling_bytes != 0 && memlens_sampling_passes(size)) {
        return;
    }
    native_alloc_slow(ptr, size);
}

/* A block about to be given back. Keeps errno. */
static MEMLENS_SLOW_PATH void
native_free_slow(void *ptr)
{
    int saved = errno;
    memlens_hooks_enter();
    memlens_tracing_native_forget(ptr);
    memlens_hooks_leave();
    errno = saved;
}

/* When sampling, most freed blocks were never recorded: the filter says
 * so without a lookup (sampling.h). */
static inline void
native_free(void *ptr)
{
    if (memlens_sampling_maybe_recorded((uintptr_t)ptr)) {
        native_free_slow(ptr);
    }
}

/* A new anonymous mapping (every one is recorded, whole: its pages are
 * what is counted). */
static void
native_mapped(void *addr, size_t length)
{
    memlens_hooks_enter();
    uint32_t site = memlens_tracing_native_site(native_fallback_site());
    if (site != MEMLENS_SITE_NONE) {
        native_changes ch = {.n = 0};
        pthread_mutex_lock(&native_lock);
        native_map_put((uintptr_t)addr, length, site, &ch);
        pthread_mutex_unlock(&native_lock);
        native_changes_apply(&ch);
    }
    memlens_hooks_leave();
}

static void
native_unmapped(void *addr, size_t length)
{
    memlens_hooks_enter();
    memlens_native_check_peak();
    native_changes ch = {.n = 0};
    pthread_mutex_lock(&native_lock);
    native_cut((uintptr_t)addr, length, &ch);
    pthread_mutex_unlock(&native_lock);
    native_changes_apply(&ch);
    memlens_hooks_leave();
}

/* An mremap: the old range's mapping (if ours) moves or resizes, on the
 * same site. */
static void
native_remapped(void *old, size_t old_length, void *addr, size_t length)
{
    memlens_hooks_enter();
    memlens_native_check_peak();
    native_changes ch = {.n = 0};
    pthread_mutex_lock(&native_lock);
    size_t i = native_map_search((uintptr_t)old);
    int ours = i < native_nmaps && native_maps[i].start <= (uintptr_t)old;
    uint32_t site = ours ? native_maps[i].site : 0;
    native_cut((uintptr_t)old, old_length, &ch);
    if (ours) {
        native_map_put((uintptr_t)addr, length, site, &ch);
    }
    pthread_mutex_unlock(&native_lock);
    native_changes_apply(&ch);
    memlens_hooks_leave();
}

/* ---- The hooks ----------------------------------------------------------------
 * Each calls the real function with busy raised (a malloc that maps its
 * own memory through hooked slots is counted once, as a block), then
 * records. They keep errno as the real function left it. */

#define NATIVE_CALL(call)                                                     \
    do {                                                                      \
        memlens_hooks_enter();                                                \
        call;                                                                 \
        memlens_hooks_leave();                                                \
    } while (0)

static void *
native_hook_malloc(size_t size)
{
    if (!native_recording()) {
        return malloc(size);
    }
    void *p;
    NATIVE_CALL(p = malloc(size));
    if (p != NULL) {
        native_alloc(p, size);
    }
    return p;
}

static void *
native_hook_calloc(size_t n, size_t size)
{
    if (!native_recording()) {
        return calloc(n, size);
    }
    void *p;
    NATIVE_CALL(p = calloc(n, size));
    if (p != NULL) {
        native_alloc(p, n * size);
    }
    return p;
}

static void *
native_hook_realloc(void *ptr, size_t size)
{
    if (!native_recording()) {
        return realloc(ptr, size);
    }
    /* The old address, as a number only: the block may be gone. */
    uintptr_t old = (uintptr_t)ptr;
    void *p;
    NATIVE_CALL(p = realloc(ptr, size));
    /* realloc(ptr, 0) frees and may return NULL; a failure keeps ptr. */
    if (old != 0 && (p != NULL || size == 0)) {
        native_free((void *)old);
    }
    if (p != NULL) {
        native_alloc(p, size);
    }
    return p;
}

static void *
native_hook_reallocarray(void *ptr, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return native_hook_realloc(ptr, total);
}

static int
native_hook_posix_memalign(void **out, size_t alignment, size_t size)
{
    if (!native_recording()) {
        return posix_memalign(out, alignment, size);
    }
    int rc;
    NATIVE_CALL(rc = posix_memalign(out, alignment, size));
    if (rc == 0 && *out != NULL) {
        native_alloc(*out, size);
    }
    return rc;
}

/* The aligned allocators with one result: aligned_alloc, memalign, valloc
 * and pvalloc. */
#define NATIVE_ALIGNED_HOOK(name, params, args, size)                         \
    static void *native_hook_##name params                                    \
    {                                                                         \
        if (!native_recording()) {                                            \
            return name args;                                                 \
        }                                                                     \
        void *p;                                                              \
        NATIVE_CALL(p = name args);                                           \
        if (p != NULL) {                                                      \
            native_alloc(p, size);                                            \
        }                                                                     \
        return p;                                                             \
    }

NATIVE_ALIGNED_HOOK(aligned_alloc, (size_t alignment, size_t size),
                    (alignment, size), size)
NATIVE_ALIGNED_HOOK(memalign, (size_t alignment, size_t size),
                    (alignment, size), size)
NATIVE_ALIGNED_HOOK(valloc, (size_t size), (size), size)
NATIVE_ALIGNED_HOOK(pvalloc, (size_t size), (size),
                    malloc_usable_size(p) < size ? size
                                                 : malloc_usable_size(p))

static void
native_hook_free(void *ptr)
{
    if (ptr != NULL && native_recording()) {
        /* Before the block goes: its address may be handed out again at
         * once, to another thread. */
        native_free(ptr);
    }
    free(ptr);
}

static void *
native_hook_mmap(void *addr, size_t length, int prot, int flags, int fd,
                 off_t offset)
{
    if (!native_recording()) {
        return mmap(addr, length, prot, flags, fd, offset);
    }
    void *p;
    NATIVE_CALL(p = mmap(addr, length, prot, flags, fd, offset));
    if (p != MAP_FAILED) {
        int saved = errno;
        if (flags & MAP_ANONYMOUS) {
            native_mapped(p, length);
        }
        else if (flags & MAP_FIXED) {
            native_unmapped(p, length);
        }
        errno = saved;
    }
    return p;
}

static int
native_hook_munmap(void *addr, size_t length)
{
    if (native_recording()) {
        int saved = errno;
        native_unmapped(addr, length);
        errno = saved;
    }
    return munmap(addr, length);
}

static void *
native_hook_mremap(void *old, size_t old_length, size_t length, int flags, ...)
{
    void *target = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        target = va_arg(ap, void *);
        va_end(ap);
    }
    if (!native_recording()) {
        return mremap(old, old_length, length, flags, target);
    }
    void *p;
    NATIVE_CALL(p = mremap(old, old_length, length, flags, target));
    if (p != MAP_FAILED) {
        int saved = errno;
        native_remapped(old, old_length, p, length);
        errno = saved;
    }
    return p;
}

/* A thread started by a hooked library: remembers its creator's site. */
typedef struct {
    void *(*start)(void *);
    void *arg;
    native_origin creator;
} native_start;

static void *
native_thread_main(void *p)
{
    native_start s = *(native_start *)p;
    free(p);
    native_creator = s.creator;
    return s.start(s.arg);
}

static int
native_hook_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                           void *(*start)(void *), void *arg)
{
    if (!native_recording()) {
        return pthread_create(thread, attr, start, arg);
    }
    native_start *s = malloc(sizeof(*s));
    if (s == NULL) {
        return pthread_create(thread, attr, start, arg);
    }
    memlens_hooks_enter();
    s->start = start;
    s->arg = arg;
    s->creator.site = memlens_tracing_native_site(native_fallback_site());
    s->creator.generation = native_generation;
    memlens_hooks_leave();
    int rc = pthread_create(thread, attr, native_thread_main, s);
    if (rc != 0) {
        free(s);
    }
    return rc;
}

static PyThreadState *
native_hook_save_thread(void)
{
    if (native_recording()) {
        memlens_hooks_enter();
        uint32_t site = memlens_tracing_native_site(native_fallback_site());
        memlens_hooks_leave();
        if (site != MEMLENS_SITE_NONE) {
            native_released.site = site;
            native_released.generation = native_generation;
        }
    }
    return PyEval_SaveThread();
}

static void
native_hook_restore_thread(PyThreadState *ts)
{
    PyEval_RestoreThread(ts);
    native_released.generation = 0;
}

/* Objects a dlopen loads are patched before it returns. */
static const memlens_elfpatch_symbol native_symbols[];
static const size_t native_nsymbols;

static void *
native_hook_dlopen(const char *file, int mode)
{
    void *h = dlopen(file, mode);
    if (h != NULL && __atomic_load_n(&memlens_native_on, __ATOMIC_SEQ_CST)) {
        int saved = errno;
        if (memlens_elfpatch_extend(native_symbols, native_nsymbols) < 0) {
            __atomic_fetch_add(&native_failures, 1, __ATOMIC_RELAXED);
        }
        errno = saved;
    }
    return h;
}

static int
native_hook_dlclose(void *handle)
{
    int rc = dlclose(handle);
    if (__atomic_load_n(&memlens_native_on, __ATOMIC_SEQ_CST)) {
        memlens_elfpatch_forget_unloaded();
    }
    return rc;
}

static const memlens_elfpatch_symbol native_symbols[] = {
    {"malloc", (void *)native_hook_malloc, 0},
    {"calloc", (void *)native_hook_calloc, 0},
    {"realloc", (void *)native_hook_realloc, 0},
    {"reallocarray", (void *)native_hook_reallocarray, 0},
    {"posix_memalign", (void *)native_hook_posix_memalign, 0},
    {"aligned_alloc", (void *)native_hook_aligned_alloc, 0},
    {"memalign", (void *)native_hook_memalign, 0},
    {"valloc", (void *)native_hook_valloc, 0},
    {"pvalloc", (void *)native_hook_pvalloc, 0},
    {"free", (void *)native_hook_free, 0},
    {"mmap", (void *)native_hook_mmap, 0},
    {"mmap64", (void *)native_hook_mmap, 0},
    {"munmap", (void *)native_hook_munmap, 0},
    {"mremap", (void *)native_hook_mremap, 0},
    /* In the interpreter too: a Python thread started while tracing ends
     * its tracebacks with its creator's (sites.c). */
    {"pthread_create", (void *)native_hook_pthread_create, 1},
    {"PyEval_SaveThread", (void *)native_hook_save_thread, 0},
    {"PyEval_RestoreThread", (void *)native_hook_restore_thread, 0},
    {"dlopen", (void *)native_hook_dlopen, 1},
    {"dlclose", (void *)native_hook_dlclose, 1},
};
static const size_t native_nsymbols =
    sizeof(native_symbols) / sizeof(native_symbols[0]);

/* ---- The RSS watch ------------------------------------------------------------
 * A sampler (sampler.h) without arrays, every millisecond; its sink moves
 * the mark. */
#define NATIVE_WATCH_INTERVAL 0.001
#define NATIVE_WATCH_STEP ((uint64_t)256 * 1024)

static memlens_sampler native_watch;
static int native_watch_ready = 0;      /* Initialised. GIL. */
static uint64_t native_watch_start = 0; /* RSS at the start. Atomic. */
static uint64_t native_watch_mark = 0;  /* The next high. Atomic. */

/* The next mark above `rss`: a step, or a 64th of the rise so far. */
static uint64_t
native_watch_next(uint64_t rss)
{
    uint64_t start = __atomic_load_n(&native_watch_start, __ATOMIC_RELAXED);
    uint64_t step = rss > start ? (rss - start) / 64 : 0;
    return rss + (step > NATIVE_WATCH_STEP ? step : NATIVE_WATCH_STEP);
}

static uint64_t
native_watch_sample(memlens_sink *sink, double t, uint64_t rss)
{
    if (rss >= __atomic_load_n(&native_watch_mark, __ATOMIC_RELAXED)) {
        __atomic_store_n(&native_watch_mark, native_watch_next(rss),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&memlens_native_peak_pending, rss, __ATOMIC_RELAXED);
    }
    return rss;
}

static memlens_sink native_watch_sink = {native_watch_sample};

void
memlens_native_reset_peak(uint64_t rss)
{
    __atomic_store_n(&memlens_native_peak_pending, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&native_watch_mark, native_watch_next(rss),
                     __ATOMIC_RELAXED);
}

/* A statm of our own for the checks below, which any thread makes (the
 * sampler's is its thread's). Opened at start, closed at stop. */
static memlens_ownfd native_check_statm = MEMLENS_OWNFD_NONE;

/* Before a large block or a mapping goes: if RSS stands at a new high
 * now, the peak is now, and the copy (at the traced call about to
 * follow) sees the block still there. A block made, written and freed
 * between two samples would otherwise never be at any peak. */
uint64_t
memlens_native_rss(void)
{
    uint64_t rss;
    if (memlens_ownfd_check(&native_check_statm)
        && memlens_rss_from_fd(native_check_statm.fd, &rss) == 0) {
        return rss;
    }
    return 0;
}

void
memlens_native_check_peak(void)
{
    uint64_t rss = memlens_native_rss();
    if (rss != 0) {
        native_watch_sample(NULL, 0.0, rss);
    }
}

/* ---- Start and stop (GIL) -------------------------------------------------- */

static void
native_clear_regions(void)
{
    pthread_mutex_lock(&native_lock);
    free(native_blocks);
    native_blocks = NULL;
    native_blocks_mask = native_blocks_used = 0;
    __atomic_store_n(&native_blocks_live, 0, __ATOMIC_RELAXED);
    free(native_maps);
    native_maps = NULL;
    native_nmaps = native_capmaps = 0;
    pthread_mutex_unlock(&native_lock);
}

static int native_patched;

int
memlens_native_start(uint64_t rss)
{
    if (!native_watch_ready) {
        if (memlens_sampler_init(&native_watch, NATIVE_WATCH_INTERVAL) < 0) {
            return -1;
        }
        native_watch.keep = 0;
        native_watch.sink = &native_watch_sink;
        native_watch_ready = 1;
    }
    __atomic_store_n(&native_watch_start, rss, __ATOMIC_RELAXED);
    memlens_native_reset_peak(rss);
    char path[MEMLENS_PATH_MAX];
    int fd = memlens_proc_open("statm", path);
    if (fd < 0 || memlens_ownfd_adopt(&native_check_statm, fd) < 0) {
        memlens_oserror_path(errno, path);
        return -1;
    }
    if (memlens_sampler_start(&native_watch) < 0) {
        memlens_ownfd_close(&native_check_statm);
        return -1;
    }
    native_clear_regions();
    __atomic_store_n(&native_failures, 0, __ATOMIC_RELAXED);
    native_generation++;
    native_patched = 1;
    __atomic_store_n(&memlens_native_on, 1, __ATOMIC_SEQ_CST);
    memlens_hooks_quiet(1);
    int rc = memlens_elfpatch_apply(native_symbols, native_nsymbols);
    memlens_hooks_quiet(0);
    if (rc < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        memlens_native_stop();
        return -1;
    }
    return 0;
}

/* Whether slots may be patched: from a start to the stop after. GIL. */
static int native_patched = 0;

void
memlens_native_stop(void)
{
    if (!native_patched) {
        return;
    }
    native_patched = 0;
    __atomic_store_n(&memlens_native_on, 0, __ATOMIC_SEQ_CST);
    memlens_sampler_stop(&native_watch);
    memlens_ownfd_close(&native_check_statm);
    __atomic_store_n(&memlens_native_peak_pending, 0, __ATOMIC_RELAXED);
    memlens_hooks_quiet(1);
    memlens_elfpatch_restore();
    native_clear_regions();
    memlens_hooks_quiet(0);
}

/* ---- Python API (GIL) ------------------------------------------------------- */

static int
native_slot_row(const memlens_elfpatch_slot *s, void *arg)
{
    PyObject *row = Py_BuildValue(
        "(ssKKK)", s->object, s->symbol, (unsigned long long)s->slot,
        (unsigned long long)(uintptr_t)__atomic_load_n((void **)s->slot,
                                                       __ATOMIC_SEQ_CST),
        (unsigned long long)(uintptr_t)s->original);
    if (row == NULL || PyList_Append((PyObject *)arg, row) < 0) {
        Py_XDECREF(row);
        return -1;
    }
    Py_DECREF(row);
    return 0;
}

/* _native_slots() -> [(object, symbol, slot address, value now, value
 * before)] for every slot patched now. */
static PyObject *
native_py_slots(PyObject *m, PyObject *Py_UNUSED(args))
{
    PyObject *rows = PyList_New(0);
    if (rows != NULL && memlens_elfpatch_each(native_slot_row, rows) != 0) {
        Py_CLEAR(rows);
    }
    return rows;
}

/* _native_stats() -> dict of the region tables' figures (tests). */
static PyObject *
native_py_stats(PyObject *m, PyObject *Py_UNUSED(args))
{
    pthread_mutex_lock(&native_lock);
    size_t blocks = native_blocks_used, maps = native_nmaps;
    pthread_mutex_unlock(&native_lock);
    return Py_BuildValue(
        "{s:O,s:n,s:n,s:K,s:n}", "on",
        __atomic_load_n(&memlens_native_on, __ATOMIC_RELAXED) ? Py_True
                                                              : Py_False,
        "large_blocks", (Py_ssize_t)blocks, "mappings", (Py_ssize_t)maps,
        "failures",
        (unsigned long long)__atomic_load_n(&native_failures,
                                            __ATOMIC_RELAXED),
        "objects_read", (Py_ssize_t)memlens_elfpatch_last_reads());
}

static PyMethodDef native_methods[] = {
    {"_native_slots", native_py_slots, METH_NOARGS, NULL},
    {"_native_stats", native_py_stats, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static void
native_atfork_prepare(void)
{
    pthread_mutex_lock(&native_lock);
}

static void
native_atfork_release(void)
{
    pthread_mutex_unlock(&native_lock);
}

/* The child's RSS is its own: the statm opened by the parent names the
 * parent's (as readings.c does for its own). */
static void
native_atfork_child(void)
{
    pthread_mutex_unlock(&native_lock);
    if (native_check_statm.fd >= 0) {
        char path[MEMLENS_PATH_MAX];
        memlens_ownfd_close(&native_check_statm);
        int fd = memlens_proc_open("statm", path);
        if (fd >= 0) {
            (void)memlens_ownfd_adopt(&native_check_statm, fd);
        }
    }
}

int
memlens_native_init(PyObject *module)
{
    static int registered = 0;
    if (!registered) {
        int rc = pthread_atfork(native_atfork_prepare, native_atfork_release,
                                native_atfork_child);
        if (rc != 0) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        registered = 1;
    }
    if (memlens_elfpatch_init() < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return PyModule_AddFunctions(module, native_methods);
}
