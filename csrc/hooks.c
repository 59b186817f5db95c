/* hooks.c: the bytes the Python allocators hand out and take back,
 * through PyMem_SetAllocator hooks on the raw, mem and obj domains.
 *
 * Each hook calls the allocator it replaced and, while someone listens,
 * counts. Two kinds of listener:
 *   - exact (measure(), the line profiler's alloc columns): every block is
 *     recorded in the live-block table (ptrtable.h) so that its free can be
 *     sized; totals and the table are protected by hooks_lock, because
 *     raw-domain calls may come from threads without the GIL; per-thread
 *     totals let the line profiler attribute bytes to lines;
 *   - light (the line profiler's RSS columns): only the process-wide churn
 *     is kept, with no lock and no table, so that the tracer knows when RSS
 *     may have moved and is worth reading.
 * Tracing alone with sampling, over pymalloc, uses lean mem and obj hooks
 * that leave frees to pymalloc (see "Lean hooks" below).
 * In exact mode a thread-local flag stays set across the call to the
 * previous allocator, so that pymalloc handing a large request on to the
 * raw domain is recorded once, not twice. The churn ignores the flag: a
 * large block given back through pymalloc is seen, by size, only in the
 * raw domain, and counting some bytes twice there is harmless.
 *
 * Installation is reference-counted and done with the GIL held. If someone
 * chained a hook above ours (tracemalloc started after us), ours cannot be
 * unlinked without breaking theirs: it stays, passing calls through, and is
 * reused later. If someone removed ours from a chain (tracemalloc stopping
 * restores what it saved), a probe allocation finds that out.
 *
 * Hooks never raise and never touch Python objects.
 */
#include "hooks.h"
#include "ptrtable.h"
#include "sampling.h"

#include <errno.h>
#include <pthread.h>

#define HOOKS_NDOMAINS 3

typedef struct {
    PyMemAllocatorDomain domain;
    /* The allocator we chain to: a kept copy (hooks_prev_keep), never
     * changed nor freed, published whole. Written with the GIL; read by
     * the hooks, the raw one without the GIL too. Atomic. */
    const PyMemAllocatorEx *prev;
    PyMemAllocatorEx ours; /* What we installed. GIL. */
    int in_chain;          /* Ours is somewhere in the chain. GIL. */
    int lean;              /* Ours chains straight to pymalloc (see
                              "Lean hooks" below). GIL. */
    int probed;            /* Saw the probe allocation. GIL. */
} hooks_domain;

static hooks_domain hooks_domains[HOOKS_NDOMAINS] = {
    {PYMEM_DOMAIN_RAW},
    {PYMEM_DOMAIN_MEM},
    {PYMEM_DOMAIN_OBJ},
};

static long hooks_exact_users = 0; /* GIL. */
static long hooks_light_users = 0; /* GIL. */
static long hooks_bare_users = 0;  /* GIL. Linked, nothing listening. */

/* Bits of hooks_mode: the churn is kept whenever anyone listens; exact
 * records for measure() and alloc columns; tracing records (the tracer
 * registered by tracing.c).
 * HOOKS_SAMPLED goes with HOOKS_TRACE alone when tracing samples: the one
 * mode whose fast path does any work, told by one comparison. */
enum {
    HOOKS_OFF = 0,
    HOOKS_LIGHT = 1,
    HOOKS_EXACT = 2,
    HOOKS_TRACE = 4,
    HOOKS_SAMPLED = 8,
    HOOKS_PROBE = 16 /* Alone, while probing: see the probe, pass on. */
};
#define HOOKS_SAMPLING_ALONE (HOOKS_TRACE | HOOKS_SAMPLED)
static int hooks_mode = 0; /* Atomic. */
/* The free path's view of HOOKS_SAMPLING_ALONE: the filter of recorded
 * blocks (sampling.h) in that mode, NULL in any other, so that one load tells
 * both. hooks_set_mode keeps it. Atomic. */
static const uint8_t *hooks_sampling_filter = NULL;
static int hooks_tracing = 0; /* GIL. */
/* The tracer's calls (hooks.h): set once, never cleared. GIL to write. */
static const memlens_hooks_tracer *hooks_tracer = NULL;

static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static memlens_ptrtable hooks_table; /* Protected by hooks_lock. */
static uint64_t hooks_allocated = 0; /* Protected by hooks_lock. */
static uint64_t hooks_freed = 0;     /* Protected by hooks_lock. */
static uint64_t hooks_failures = 0;  /* Protected by hooks_lock. */

MEMLENS_TLS memlens_hooks_thread memlens_hooks_tls;
uint64_t memlens_hooks_churn = 0;
int64_t memlens_hooks_small_net = 0;

static int hooks_arena_in_chain;

/* ---- The allocators below ours -----------------------------------------
 * A raw-domain call may run without the GIL while a relink chains our
 * hook above another allocator. Were the allocator below kept in place
 * and rewritten field by field, such a call could take one allocator's
 * function and another's context. Each allocator chained to is kept as a
 * copy instead, made once and never changed nor freed (a call may be
 * reading an old one after the relink); a relink publishes another copy
 * with one atomic store. Distinct allocators are few (pymalloc's,
 * tracemalloc's, the debug hooks'), and each is kept once. */

static PyMemAllocatorEx **hooks_prevs = NULL;       /* Owned (libc). GIL. */
static size_t hooks_nprevs = 0, hooks_capprevs = 0; /* GIL. */

/* The kept copy of `a`, made on first sight (libc); NULL when out of
 * memory. GIL. */
static const PyMemAllocatorEx *
hooks_prev_keep(const PyMemAllocatorEx *a)
{
    for (size_t i = 0; i < hooks_nprevs; i++) {
        const PyMemAllocatorEx *k = hooks_prevs[i];
        if (k->ctx == a->ctx && k->malloc == a->malloc
            && k->calloc == a->calloc && k->realloc == a->realloc
            && k->free == a->free) {
            return k;
        }
    }
    if (memlens_grow((void **)&hooks_prevs, &hooks_capprevs, hooks_nprevs,
                     sizeof(*hooks_prevs), 8)
        < 0) {
        return NULL;
    }
    PyMemAllocatorEx *k = malloc(sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    *k = *a;
    hooks_prevs[hooks_nprevs++] = k;
    return k;
}

/* The allocator below `d`'s hook, whole: its function and its context
 * come from the same copy. Any thread. */
static inline const PyMemAllocatorEx *
hooks_prev(const hooks_domain *d)
{
    return __atomic_load_n(&d->prev, __ATOMIC_ACQUIRE);
}

static inline void *
hooks_prev_malloc(const hooks_domain *d, size_t size)
{
    const PyMemAllocatorEx *a = hooks_prev(d);
    return a->malloc(a->ctx, size);
}

static inline void *
hooks_prev_calloc(const hooks_domain *d, size_t nelem, size_t elsize)
{
    const PyMemAllocatorEx *a = hooks_prev(d);
    return a->calloc(a->ctx, nelem, elsize);
}

static inline void *
hooks_prev_realloc(const hooks_domain *d, void *ptr, size_t size)
{
    const PyMemAllocatorEx *a = hooks_prev(d);
    return a->realloc(a->ctx, ptr, size);
}

static inline void
hooks_prev_free(const hooks_domain *d, void *ptr)
{
    const PyMemAllocatorEx *a = hooks_prev(d);
    a->free(a->ctx, ptr);
}

int
memlens_hooks_installed(void)
{
    for (int i = 0; i < HOOKS_NDOMAINS; i++) {
        if (hooks_domains[i].in_chain) {
            return 1;
        }
    }
    return hooks_arena_in_chain;
}

long
memlens_hooks_users(void)
{
    return hooks_exact_users + hooks_light_users + hooks_bare_users
           + hooks_tracing;
}

static inline int
hooks_mode_now(void)
{
    return __atomic_load_n(&hooks_mode, __ATOMIC_RELAXED);
}

/* Whether this call records blocks: exact or tracing mode, and not
 * already inside one of our hooks on this thread, nor in memlens's own
 * quiet work (the churn is counted either way). */
static inline int
hooks_records_here(int mode)
{
    return (mode & (HOOKS_EXACT | HOOKS_TRACE)) && !memlens_hooks_tls.busy;
}

/* Whether this free (or the old block of a resize), on a thread whose busy
 * flag is `busy`, takes back a record: as hooks_records_here, but in the
 * quiet too, where the program's blocks may still be let go of. */
static inline int
hooks_forgets_here(int mode, int busy)
{
    return (mode & (HOOKS_EXACT | HOOKS_TRACE))
           && !(busy & MEMLENS_HOOKS_INSIDE);
}

/* Records a new block (exact mode). Caller holds the busy flag. */
static void
hooks_note_alloc(void *ptr, size_t size)
{
    memlens_hooks_tls.allocated += size;
    pthread_mutex_lock(&hooks_lock);
    hooks_allocated += size;
    if (memlens_ptrtable_put(&hooks_table, (uintptr_t)ptr, size) < 0) {
        hooks_failures++;
    }
    memlens_ptrtable_prefetch(&hooks_table,
                              (uintptr_t)ptr + memlens_round16(size));
    pthread_mutex_unlock(&hooks_lock);
}

/* Forgets a block about to be given back; returns its size, 0 if it was
 * not recorded. Done before the free, so that the address cannot be handed
 * to another thread and recorded while our entry still names it. Caller
 * holds the busy flag. */
static size_t
hooks_forget(void *ptr)
{
    size_t size = 0;
    pthread_mutex_lock(&hooks_lock);
    if (!memlens_ptrtable_pop(&hooks_table, (uintptr_t)ptr, &size)) {
        size = 0;
    }
    else {
        uintptr_t step = memlens_round16(size);
        memlens_ptrtable_prefetch(&hooks_table, (uintptr_t)ptr + step);
        memlens_ptrtable_prefetch(&hooks_table, (uintptr_t)ptr - step);
    }
    pthread_mutex_unlock(&hooks_lock);
    return size;
}

static void
hooks_count_freed(size_t size)
{
    memlens_hooks_tls.freed += size;
    pthread_mutex_lock(&hooks_lock);
    hooks_freed += size;
    pthread_mutex_unlock(&hooks_lock);
}

void
memlens_hooks_note_external(uint64_t allocated, uint64_t freed)
{
    memlens_churn_add(allocated + freed);
    if (__atomic_load_n(&hooks_mode, __ATOMIC_RELAXED) & HOOKS_EXACT) {
        if (memlens_hooks_tls.busy == 0) {
            memlens_hooks_tls.allocated += allocated;
        }
        memlens_hooks_tls.freed += freed;
    }
}

void
memlens_hooks_quiet(int on)
{
    memlens_hooks_thread *t = &memlens_hooks_tls;
    if (on) {
        if (t->quiet++ == 0) {
            memlens_sampling_quiet_begin();
            t->busy += MEMLENS_HOOKS_QUIET;
        }
    }
    else if (t->quiet > 0 && --t->quiet == 0) {
        t->busy -= MEMLENS_HOOKS_QUIET;
        memlens_sampling_quiet_end();
    }
}

/* Marks the probe as seen by domain `d`, with the block the call took in
 * and the one it gave out: the probing thread's calls, in HOOKS_PROBE mode,
 * with the GIL held. Every path that passes a call on without recording it
 * comes here, so that the fast paths need not. */
static inline void
hooks_see_probe(hooks_domain *d, void *in, void *out)
{
    if (memlens_hooks_tls.probe) {
        d->probed = 1;
        memlens_hooks_tls.probe_in = in;
        memlens_hooks_tls.probe_out = out;
    }
}

/* A raw block freed or resized inside another hook of ours: pymalloc
 * giving back through the raw domain a block it had handed on there. When
 * sampling, its record may be in the raw table (made by the raw hook, or
 * by a lean hook), and only this hook can take it back. */
static inline void
hooks_forget_inside(const hooks_domain *d, int mode, void *ptr)
{
    if ((mode & HOOKS_TRACE) && d->domain == PYMEM_DOMAIN_RAW && ptr != NULL
        && memlens_sampling_bytes != 0) {
        hooks_tracer->free(PYMEM_DOMAIN_RAW, ptr);
    }
}

/* Tells the line tracer that RSS may move: large blocks by their bytes,
 * small ones by their count (see hooks.h). Any mode but off. */
static inline void
hooks_moved_alloc(hooks_domain *d, size_t size)
{
    if (d->domain == PYMEM_DOMAIN_RAW || size > MEMLENS_SMALL_BLOCK) {
        memlens_churn_add(size);
    }
    else {
        memlens_small_net_add(1);
    }
}

/* The same for a free; `size` 0 when unknown. Only a raw block of unknown
 * size may be a large one whose pages go back to the kernel (pymalloc
 * passes its large blocks on to the raw domain). */
static inline void
hooks_moved_free(hooks_domain *d, size_t size)
{
    if (d->domain == PYMEM_DOMAIN_RAW) {
        memlens_churn_add(size ? size : MEMLENS_CHURN_UNKNOWN_FREE);
    }
    else if (size > MEMLENS_SMALL_BLOCK) {
        memlens_churn_add(size);
    }
    else {
        memlens_small_net_add(-1);
    }
}

/* A block handed out: the churn, and the exact and tracing records when
 * those listen. Caller holds the busy flag for the records. */
static inline void
hooks_record_alloc(hooks_domain *d, int mode, void *ptr, size_t size)
{
    if (mode & HOOKS_LIGHT) {
        hooks_moved_alloc(d, size);
    }
    if (mode & HOOKS_EXACT) {
        hooks_note_alloc(ptr, size);
    }
    if (mode & HOOKS_TRACE) {
        hooks_tracer->alloc(d->domain, ptr, size);
    }
}

/* Tracing alone, with sampling: most allocations fall between two marks
 * and need nothing but the countdown. Calls made inside one of our hooks
 * come here too, and count down: the hook puts the countdown back after
 * the call below it (memlens_hooks_hold). Not a block over pymalloc's
 * limit in the mem and obj domains: pymalloc hands those on to the raw
 * domain, and only a slow path can put back what the raw hook counts
 * down for them. */
static inline int
hooks_unsampled(const hooks_domain *d, int mode, size_t size)
{
    return mode == HOOKS_SAMPLING_ALONE
           && (size <= MEMLENS_SMALL_BLOCK || d->domain == PYMEM_DOMAIN_RAW)
           && memlens_sampling_passes(size);
}

/* Each hook below starts with its fast path (off, or a block that sampling
 * passes over) and leaves the rest to a function of its own. */

static MEMLENS_SLOW_PATH void *
hooks_malloc_slow(hooks_domain *d, int mode, size_t size)
{
    if (!hooks_records_here(mode)) {
        void *ptr = hooks_prev_malloc(d, size);
        hooks_see_probe(d, NULL, ptr);
        if (ptr != NULL) {
            hooks_moved_alloc(d, size);
        }
        return ptr;
    }
    memlens_hooks_tls.busy = 1;
    uint64_t held = memlens_sampling_hold();
    void *ptr = hooks_prev_malloc(d, size);
    memlens_sampling_unhold(held);
    if (ptr != NULL) {
        hooks_record_alloc(d, mode, ptr, size);
    }
    memlens_hooks_tls.busy = 0;
    return ptr;
}

static void *
hooks_malloc(void *ctx, size_t size)
{
    hooks_domain *d = ctx;
    int mode = hooks_mode_now();
    if (hooks_unsampled(d, mode, size) || mode == HOOKS_OFF) {
        return hooks_prev_malloc(d, size);
    }
    return hooks_malloc_slow(d, mode, size);
}

static MEMLENS_SLOW_PATH void *
hooks_calloc_slow(hooks_domain *d, int mode, size_t nelem, size_t elsize)
{
    if (!hooks_records_here(mode)) {
        void *ptr = hooks_prev_calloc(d, nelem, elsize);
        hooks_see_probe(d, NULL, ptr);
        if (ptr != NULL) {
            hooks_moved_alloc(d, nelem * elsize);
        }
        return ptr;
    }
    memlens_hooks_tls.busy = 1;
    uint64_t held = memlens_sampling_hold();
    void *ptr = hooks_prev_calloc(d, nelem, elsize);
    memlens_sampling_unhold(held);
    if (ptr != NULL) {
        /* The product cannot overflow: the allocator succeeded. */
        hooks_record_alloc(d, mode, ptr, nelem * elsize);
    }
    memlens_hooks_tls.busy = 0;
    return ptr;
}

static void *
hooks_calloc(void *ctx, size_t nelem, size_t elsize)
{
    hooks_domain *d = ctx;
    int mode = hooks_mode_now();
    /* A product that wraps around counts down a wrong size, harmlessly:
     * the allocator then fails. */
    if (hooks_unsampled(d, mode, nelem * elsize) || mode == HOOKS_OFF) {
        return hooks_prev_calloc(d, nelem, elsize);
    }
    return hooks_calloc_slow(d, mode, nelem, elsize);
}

static void *
hooks_realloc(void *ctx, void *ptr, size_t size)
{
    hooks_domain *d = ctx;
    int mode = hooks_mode_now();
    if (mode == HOOKS_OFF) {
        return hooks_prev_realloc(d, ptr, size);
    }
    int busy = memlens_hooks_tls.busy;
    if (!hooks_forgets_here(mode, busy)) {
        hooks_forget_inside(d, mode, ptr);
        void *res = hooks_prev_realloc(d, ptr, size);
        hooks_see_probe(d, ptr, res);
        if (res != NULL) {
            if (ptr != NULL) {
                hooks_moved_free(d, 0);
            }
            hooks_moved_alloc(d, size);
        }
        return res;
    }
    memlens_hooks_tls.busy = busy + 1;
    /* Records of the old block go before the call: once it returns, the
     * address may be handed to another thread. */
    size_t old = 0;
    if (ptr != NULL && (mode & HOOKS_EXACT)) {
        old = hooks_forget(ptr);
    }
    if (ptr != NULL && (mode & HOOKS_TRACE)) {
        hooks_tracer->free(d->domain, ptr);
    }
    uint64_t held = memlens_sampling_hold();
    void *res = hooks_prev_realloc(d, ptr, size);
    memlens_sampling_unhold(held);
    if (res == NULL) {
        /* The block is still there, unchanged: remember it again. */
        if (old != 0) {
            pthread_mutex_lock(&hooks_lock);
            if (memlens_ptrtable_put(&hooks_table, (uintptr_t)ptr, old) < 0) {
                hooks_failures++;
            }
            pthread_mutex_unlock(&hooks_lock);
        }
        /* A traced block whose resize failed stays untraced: its record
         * went with the attempt (a later free finds nothing). */
    }
    else {
        if (ptr != NULL) {
            hooks_moved_free(d, old);
        }
        /* A resize counts as giving back the old block and taking the
         * new one; in the quiet, the new one is memlens's own. */
        if (old != 0) {
            hooks_count_freed(old);
        }
        if (busy == 0) {
            hooks_record_alloc(d, mode, res, size);
        }
        else if (mode & HOOKS_LIGHT) {
            hooks_moved_alloc(d, size);
        }
    }
    memlens_hooks_tls.busy = busy;
    return res;
}

static MEMLENS_SLOW_PATH void
hooks_free_slow(hooks_domain *d, int mode, void *ptr)
{
    int busy = memlens_hooks_tls.busy;
    if (!hooks_forgets_here(mode, busy)) {
        hooks_forget_inside(d, mode, ptr);
        hooks_prev_free(d, ptr);
        hooks_see_probe(d, ptr, NULL);
        hooks_moved_free(d, 0);
        return;
    }
    memlens_hooks_tls.busy = busy + 1;
    size_t size = 0;
    if (mode & HOOKS_EXACT) {
        size = hooks_forget(ptr);
    }
    if (mode & HOOKS_TRACE) {
        hooks_tracer->free(d->domain, ptr);
    }
    hooks_prev_free(d, ptr);
    if (size != 0) {
        hooks_count_freed(size);
    }
    hooks_moved_free(d, size);
    memlens_hooks_tls.busy = busy;
}

static void
hooks_free(void *ctx, void *ptr)
{
    hooks_domain *d = ctx;
    const uint8_t *filter =
        __atomic_load_n(&hooks_sampling_filter, __ATOMIC_RELAXED);
    if (filter != NULL
        && !__atomic_load_n(
            &filter[memlens_sampling_filter_slot((uintptr_t)ptr)],
            __ATOMIC_RELAXED)) {
        /* Sampling, and no recorded block has an address of this hash. */
        hooks_prev_free(d, ptr);
        return;
    }
    int mode = ptr != NULL ? hooks_mode_now() : HOOKS_OFF;
    if (mode == HOOKS_OFF) {
        hooks_prev_free(d, ptr);
        return;
    }
    hooks_free_slow(d, mode, ptr);
}

/* ---- Lean hooks -------------------------------------------------------
 * Tracing alone with sampling spends nearly all its time passing calls
 * on, and half the calls are frees, which sampling needs only for the few
 * blocks it recorded. When the mem and obj domains chain to pymalloc, a
 * lean hook leaves them their free (pymalloc's own, unhooked) and makes
 * every block it records one that pymalloc hands on to the raw domain: a
 * small block a mark falls in is asked for with MEMLENS_SMALL_BLOCK + 1
 * bytes, and its free comes back through the raw hook, which forgets it
 * (its record is in the raw table). Blocks over that size are left to the
 * raw hook altogether, pymalloc handing them on, so that each byte counts
 * once. A probe at link time checks that the allocator below does all this
 * (hooks_pymalloc_below): not under the debug hooks, PYTHONMALLOC=malloc or
 * another allocator. A small block costs MEMLENS_SMALL_BLOCK + 1 bytes
 * while recorded, hence only for a sampling period of HOOKS_LEAN_MIN_SAMPLE
 * bytes and more (at most 1/128 more memory).
 *
 * A lean hook sees no free: it serves sampling alone, and is relinked as a
 * full hook when anyone else listens. If another hook chained above it
 * since, it cannot be relinked, and a listener that needs frees is refused
 * until that hook goes (hooks_check_lean); meanwhile it passes calls on. */

#define HOOKS_LEAN_MIN_SAMPLE (64 * 1024)

static int hooks_lean_allowed = 0; /* This tracing run may link lean. GIL. */

enum { HOOKS_LEAN_MALLOC, HOOKS_LEAN_CALLOC, HOOKS_LEAN_REALLOC };

/* Passes a call on to the allocator below. */
static void *
hooks_lean_call(hooks_domain *d, int op, void *ptr, size_t nelem, size_t size)
{
    switch (op) {
        case HOOKS_LEAN_MALLOC:
            return hooks_prev_malloc(d, size);
        case HOOKS_LEAN_CALLOC:
            return hooks_prev_calloc(d, nelem, size);
        default:
            return hooks_prev_realloc(d, ptr, size);
    }
}

/* A call a mark may fall in (or a resize, which may move a recorded raw
 * block: the busy flag keeps the raw hook from counting it again and lets
 * it forget the old record). */
static MEMLENS_SLOW_PATH void *
hooks_lean_slow(hooks_domain *d, int op, void *ptr, size_t size)
{
    int busy = memlens_hooks_tls.busy;
    memlens_hooks_tls.busy = busy + 1;
    /* In the quiet, nothing is recorded and the countdown is put back at
     * its end. */
    uint64_t weight = busy == 0 ? hooks_tracer->weigh(size) : 0;
    size_t asked = weight != 0 ? MEMLENS_SMALL_BLOCK + 1 : size;
    uint64_t held = memlens_sampling_hold();
    void *res = hooks_lean_call(d, op, ptr, 1, asked);
    memlens_sampling_unhold(held);
    if (res != NULL && weight != 0) {
        hooks_tracer->put_weighed(res, weight);
    }
    memlens_hooks_tls.busy = busy;
    return res;
}

/* In any mode but sampling alone: pass on. */
static MEMLENS_SLOW_PATH void *
hooks_lean_pass(hooks_domain *d, int op, void *ptr, size_t nelem, size_t size)
{
    void *res = hooks_lean_call(d, op, ptr, nelem, size);
    hooks_see_probe(d, ptr, res);
    return res;
}

/* Sampling alone: whether a call passes on as it is, over pymalloc's
 * limit (pymalloc hands it on to the raw domain, whose hook counts it) or
 * between two marks (counted down here). */
static inline int
hooks_lean_passes(size_t size)
{
    return size > MEMLENS_SMALL_BLOCK || memlens_sampling_passes(size);
}

static inline void *
hooks_lean_malloc(hooks_domain *d, size_t size)
{
    if (hooks_mode_now() != HOOKS_SAMPLING_ALONE) {
        return hooks_lean_pass(d, HOOKS_LEAN_MALLOC, NULL, 1, size);
    }
    if (hooks_lean_passes(size)) {
        return hooks_prev_malloc(d, size);
    }
    return hooks_lean_slow(d, HOOKS_LEAN_MALLOC, NULL, size);
}

static inline void *
hooks_lean_calloc(hooks_domain *d, size_t nelem, size_t elsize)
{
    size_t size;
    if (hooks_mode_now() != HOOKS_SAMPLING_ALONE
        || __builtin_mul_overflow(nelem, elsize, &size)) {
        return hooks_lean_pass(d, HOOKS_LEAN_CALLOC, NULL, nelem, elsize);
    }
    if (hooks_lean_passes(size)) {
        return hooks_prev_calloc(d, nelem, elsize);
    }
    return hooks_lean_slow(d, HOOKS_LEAN_CALLOC, NULL, size);
}

/* A resize of a small block to a small one goes the slow way: the block
 * may be a recorded raw one. */
static inline void *
hooks_lean_realloc(hooks_domain *d, void *ptr, size_t size)
{
    if (hooks_mode_now() != HOOKS_SAMPLING_ALONE) {
        return hooks_lean_pass(d, HOOKS_LEAN_REALLOC, ptr, 1, size);
    }
    if (ptr == NULL ? hooks_lean_passes(size) : size > MEMLENS_SMALL_BLOCK) {
        return hooks_prev_realloc(d, ptr, size);
    }
    return hooks_lean_slow(d, HOOKS_LEAN_REALLOC, ptr, size);
}

/* The entries of one domain's lean hook: its domain known statically. Its
 * context is pymalloc's (for pymalloc's free, linked as the hook's own);
 * the calls passed on take it from the kept copy of the allocator below,
 * with the function. */
#define HOOKS_LEAN_ENTRIES(name, index)                                       \
    static void *name##_malloc(void *ctx, size_t size)                        \
    {                                                                         \
        return hooks_lean_malloc(&hooks_domains[index], size);                \
    }                                                                         \
    static void *name##_calloc(void *ctx, size_t nelem, size_t elsize)        \
    {                                                                         \
        return hooks_lean_calloc(&hooks_domains[index], nelem, elsize);       \
    }                                                                         \
    static void *name##_realloc(void *ctx, void *ptr, size_t size)            \
    {                                                                         \
        return hooks_lean_realloc(&hooks_domains[index], ptr, size);          \
    }

HOOKS_LEAN_ENTRIES(hooks_lean_mem, 1)
HOOKS_LEAN_ENTRIES(hooks_lean_obj, 2)

/* ---- Installation --------------------------------------------------- */

/* Links our hook, full or lean, above d->prev. GIL. */
static void
hooks_link(hooks_domain *d, int lean)
{
    if (!lean) {
        d->ours.ctx = d;
        d->ours.malloc = hooks_malloc;
        d->ours.calloc = hooks_calloc;
        d->ours.realloc = hooks_realloc;
        d->ours.free = hooks_free;
    }
    else {
        int mem = d->domain == PYMEM_DOMAIN_MEM;
        const PyMemAllocatorEx *prev = hooks_prev(d);
        d->ours.ctx = prev->ctx;
        d->ours.malloc = mem ? hooks_lean_mem_malloc : hooks_lean_obj_malloc;
        d->ours.calloc = mem ? hooks_lean_mem_calloc : hooks_lean_obj_calloc;
        d->ours.realloc =
            mem ? hooks_lean_mem_realloc : hooks_lean_obj_realloc;
        d->ours.free = prev->free;
    }
    PyMem_SetAllocator(d->domain, &d->ours);
    d->in_chain = 1;
    d->lean = lean;
}

/* Whether a lean hook of ours is in the domain's chain. GIL. */
static inline int
hooks_lean_linked(const hooks_domain *d)
{
    return d->in_chain && d->lean;
}

/* Puts back what our hook chained to. GIL. */
static void
hooks_unlink(hooks_domain *d)
{
    PyMemAllocatorEx prev = *hooks_prev(d);
    PyMem_SetAllocator(d->domain, &prev);
    d->in_chain = 0;
    d->lean = 0;
}

/* Whether the current allocator of a domain is our hook. GIL. */
static int
hooks_on_top(hooks_domain *d)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator(d->domain, &cur);
    return cur.ctx == d->ours.ctx && cur.malloc == d->ours.malloc;
}

/* Recording paused: calls go through the hooks' slow paths (the free's
 * too), which see probes. */
typedef struct {
    int mode;
    const uint8_t *filter;
} hooks_paused;

static hooks_paused
hooks_pause(void)
{
    hooks_paused p;
    p.mode = __atomic_exchange_n(&hooks_mode, HOOKS_PROBE, __ATOMIC_SEQ_CST);
    p.filter =
        __atomic_exchange_n(&hooks_sampling_filter, NULL, __ATOMIC_SEQ_CST);
    return p;
}

static void
hooks_resume(hooks_paused p)
{
    __atomic_store_n(&hooks_sampling_filter, p.filter, __ATOMIC_SEQ_CST);
    __atomic_store_n(&hooks_mode, p.mode, __ATOMIC_SEQ_CST);
}

/* For each domain whose chain holds ours but not on top, checks that an
 * allocation still reaches it; forgets the hook where it does not (its
 * chain was replaced). Recording is paused meanwhile. GIL held. */
static void
hooks_probe_chains(void)
{
    hooks_paused paused = hooks_pause();
    for (int i = 0; i < HOOKS_NDOMAINS; i++) {
        hooks_domain *d = &hooks_domains[i];
        if (!d->in_chain || hooks_on_top(d)) {
            continue;
        }
        d->probed = 0;
        memlens_hooks_tls.probe = 1;
        void *p;
        switch (d->domain) {
            case PYMEM_DOMAIN_RAW:
                p = PyMem_RawMalloc(1);
                PyMem_RawFree(p);
                break;
            case PYMEM_DOMAIN_MEM:
                p = PyMem_Malloc(1);
                PyMem_Free(p);
                break;
            default:
                p = PyObject_Malloc(1);
                PyObject_Free(p);
                break;
        }
        memlens_hooks_tls.probe = 0;
        if (!d->probed) {
            d->in_chain = 0;
            d->lean = 0;
        }
    }
    hooks_resume(paused);
}

/* One block's life straight through `a`, watched by the raw hook: made
 * with `size` bytes (zeroed or not), grown to a large one, freed. Whether
 * the raw hook saw each step as pymalloc makes it: a large block handed on
 * to the raw domain unchanged, a small one kept. Probing. */
static int
hooks_probe_life(const PyMemAllocatorEx *a, size_t size, int zeroed)
{
    memlens_hooks_thread *t = &memlens_hooks_tls;
    void *none = (void *)&hooks_domains; /* No call seen. */
    int large = size > MEMLENS_SMALL_BLOCK;
    t->probe_in = t->probe_out = none;
    void *p = zeroed ? a->calloc(a->ctx, 1, size) : a->malloc(a->ctx, size);
    if (p == NULL) {
        return 0;
    }
    int ok = large ? t->probe_in == NULL && t->probe_out == p
                   : t->probe_in == none && t->probe_out == none;
    t->probe_in = t->probe_out = none;
    void *q = a->realloc(a->ctx, p, 2 * (MEMLENS_SMALL_BLOCK + 1));
    if (q == NULL) {
        a->free(a->ctx, p);
        return 0;
    }
    /* A small block grown is a new raw block, the small one kept back. */
    ok = ok && t->probe_in == (large ? p : NULL) && t->probe_out == q;
    t->probe_in = t->probe_out = none;
    a->free(a->ctx, q);
    return ok && t->probe_in == q && t->probe_out == NULL;
}

/* Whether `a`, the allocator a mem or obj hook would chain to, hands its
 * blocks over MEMLENS_SMALL_BLOCK bytes on to the raw domain unchanged and
 * takes them back through there, as pymalloc does: the raw hook, linked
 * first, watches calls made straight to `a`. GIL held. */
static int
hooks_pymalloc_below(const PyMemAllocatorEx *a)
{
    if (!hooks_domains[0].in_chain) {
        return 0;
    }
    const size_t big = MEMLENS_SMALL_BLOCK + 1;
    hooks_paused paused = hooks_pause();
    memlens_hooks_tls.probe = 1;
    int ok = hooks_probe_life(a, big, 0) && hooks_probe_life(a, big, 1)
             && hooks_probe_life(a, 16, 0);
    memlens_hooks_tls.probe = 0;
    hooks_resume(paused);
    return ok;
}

/* The mode that these listeners make. */
static int
hooks_mode_for(long exact_users, long light_users, int tracing)
{
    int mode = (exact_users ? HOOKS_EXACT | HOOKS_LIGHT : 0)
               | (light_users ? HOOKS_LIGHT : 0) | (tracing ? HOOKS_TRACE : 0);
    if (mode == HOOKS_TRACE && memlens_sampling_bytes != 0) {
        mode |= HOOKS_SAMPLED;
    }
    return mode;
}

static void
hooks_set_mode(void)
{
    int mode =
        hooks_mode_for(hooks_exact_users, hooks_light_users, hooks_tracing);
    __atomic_store_n(&hooks_mode, mode, __ATOMIC_SEQ_CST);
    __atomic_store_n(&hooks_sampling_filter,
                     mode == HOOKS_SAMPLING_ALONE ? memlens_sampling_filter
                                                  : NULL,
                     __ATOMIC_SEQ_CST);
}

/* ---- pymalloc's arenas -------------------------------------------------
 * In light mode the obj domain, the busiest, is not hooked at all: small
 * objects show through the arenas pymalloc maps for them (256 KiB to
 * 1 MiB each), which costs nothing per object. */

static PyObjectArenaAllocator hooks_arena_prev; /* GIL. */
static int hooks_arena_in_chain = 0;            /* GIL. */

static void *
hooks_arena_alloc(void *ctx, size_t size)
{
    void *p = hooks_arena_prev.alloc(hooks_arena_prev.ctx, size);
    if (p != NULL && hooks_mode_now() != HOOKS_OFF) {
        memlens_churn_add(size);
    }
    return p;
}

static void
hooks_arena_free(void *ctx, void *ptr, size_t size)
{
    hooks_arena_prev.free(hooks_arena_prev.ctx, ptr, size);
    if (hooks_mode_now() != HOOKS_OFF) {
        memlens_churn_add(size);
    }
}

static void
hooks_arena_link(int wanted)
{
    PyObjectArenaAllocator cur;
    if (wanted && !hooks_arena_in_chain) {
        static PyObjectArenaAllocator ours = {NULL, hooks_arena_alloc,
                                              hooks_arena_free};
        PyObject_GetArenaAllocator(&hooks_arena_prev);
        PyObject_SetArenaAllocator(&ours);
        hooks_arena_in_chain = 1;
    }
    else if (!wanted && hooks_arena_in_chain) {
        PyObject_GetArenaAllocator(&cur);
        if (cur.alloc == hooks_arena_alloc) {
            PyObject_SetArenaAllocator(&hooks_arena_prev);
            hooks_arena_in_chain = 0;
        }
        /* Otherwise someone chained above us: stay, passing through. */
    }
}

/* Whether a domain needs our hook for the listeners there are now: the
 * obj domain only for exact ones. */
static int
hooks_domain_wanted(const hooks_domain *d)
{
    if (d->domain == PYMEM_DOMAIN_OBJ) {
        return hooks_exact_users > 0 || hooks_bare_users > 0 || hooks_tracing;
    }
    return memlens_hooks_users() > 0;
}

/* Links or unlinks each domain's hook (and the arena hook) to match the
 * listeners. GIL held. */
static void
hooks_sync(void)
{
    hooks_set_mode();
    hooks_probe_chains();
    int sampling_alone = hooks_mode_now() == HOOKS_SAMPLING_ALONE;
    for (int i = 0; i < HOOKS_NDOMAINS; i++) {
        hooks_domain *d = &hooks_domains[i];
        int wanted = hooks_domain_wanted(d);
        if (wanted && !d->in_chain) {
            PyMemAllocatorEx cur;
            PyMem_GetAllocator(d->domain, &cur);
            const PyMemAllocatorEx *prev = hooks_prev_keep(&cur);
            if (prev == NULL) {
                /* Out of memory: this domain goes unhooked, counted. */
                pthread_mutex_lock(&hooks_lock);
                hooks_failures++;
                pthread_mutex_unlock(&hooks_lock);
                continue;
            }
            __atomic_store_n(&d->prev, prev, __ATOMIC_RELEASE);
            hooks_link(d, d->domain != PYMEM_DOMAIN_RAW && hooks_lean_allowed
                              && sampling_alone && hooks_pymalloc_below(prev));
        }
        else if (wanted && d->lean && !sampling_alone && hooks_on_top(d)) {
            hooks_link(d, 0); /* Frees are wanted now. */
        }
        else if (!wanted && d->in_chain && hooks_on_top(d)) {
            hooks_unlink(d);
        }
        /* Not wanted but someone chained above us: stay, passing
         * through. */
    }
    hooks_arena_link(hooks_light_users > 0 && hooks_exact_users == 0
                     && !hooks_tracing);
}

/* Before the first listener: hooks left passing through are unlinked
 * where they are on top again, so that we chain afresh above whatever is
 * there now. */
static void
hooks_fresh_start(void)
{
    if (memlens_hooks_users() != 0) {
        return;
    }
    hooks_probe_chains();
    for (int i = 0; i < HOOKS_NDOMAINS; i++) {
        hooks_domain *d = &hooks_domains[i];
        if (d->in_chain && hooks_on_top(d)) {
            hooks_unlink(d);
        }
    }
}

/* Whether listeners that make `mode` can be served: not by a lean hook
 * that another hook holds in its chain, unless they need no frees. Sets
 * RuntimeError. GIL. */
static int
hooks_check_lean(int mode)
{
    if (mode == HOOKS_OFF || mode == HOOKS_LIGHT
        || mode == HOOKS_SAMPLING_ALONE
        || !(hooks_lean_linked(&hooks_domains[1])
             || hooks_lean_linked(&hooks_domains[2]))) {
        return 0;
    }
    hooks_probe_chains();
    for (int i = 0; i < HOOKS_NDOMAINS; i++) {
        hooks_domain *d = &hooks_domains[i];
        if (hooks_lean_linked(d) && !hooks_on_top(d)) {
            PyErr_SetString(
                PyExc_RuntimeError,
                "memlens cannot count frees while another allocator hook "
                "(such as tracemalloc) that started during sampled "
                "tracing is still installed above memlens's; stop that "
                "hook first (tracemalloc.stop())");
            return -1;
        }
    }
    return 0;
}

int
memlens_hooks_acquire(int exact)
{
    hooks_fresh_start();
    int mode = hooks_mode_for(hooks_exact_users + (exact != 0),
                              hooks_light_users + (exact == 0), hooks_tracing);
    if (hooks_check_lean(mode) < 0) {
        return -1;
    }
    if (exact) {
        hooks_exact_users++;
    }
    else {
        hooks_light_users++;
    }
    hooks_sync();
    return 0;
}

void
memlens_hooks_release(int exact)
{
    if (exact) {
        hooks_exact_users--;
    }
    else {
        hooks_light_users--;
    }
    hooks_sync();
    if (hooks_exact_users == 0) {
        pthread_mutex_lock(&hooks_lock);
        memlens_ptrtable_clear(&hooks_table);
        pthread_mutex_unlock(&hooks_lock);
    }
}

void
memlens_hooks_set_tracer(const memlens_hooks_tracer *tracer)
{
    hooks_tracer = tracer;
}

int
memlens_hooks_trace(int on)
{
    if (on && !hooks_tracing) {
        int fresh = memlens_hooks_users() == 0;
        hooks_fresh_start();
        if (hooks_check_lean(
                hooks_mode_for(hooks_exact_users, hooks_light_users, 1))
            < 0) {
            return -1;
        }
        /* Lean hooks only where nothing else listens, from the start: a
         * full hook's records of small blocks need their frees. */
        hooks_lean_allowed =
            fresh && memlens_sampling_bytes >= HOOKS_LEAN_MIN_SAMPLE;
        hooks_tracing = 1;
        hooks_sync();
    }
    else if (!on && hooks_tracing) {
        hooks_tracing = 0;
        hooks_lean_allowed = 0;
        hooks_sync();
    }
    return 0;
}

/* _hooks_acquire(exact=True): one more user of the hooks. */
static PyObject *
hooks_py_acquire(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int exact = 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_hooks_acquire(exact=True)");
        return NULL;
    }
    if (nargs == 1 && (exact = PyObject_IsTrue(args[0])) < 0) {
        return NULL;
    }
    if (memlens_hooks_acquire(exact) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _hooks_release(exact=True): one user fewer; the last one uninstalls. */
static PyObject *
hooks_py_release(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int exact = 1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_hooks_release(exact=True)");
        return NULL;
    }
    if (nargs == 1 && (exact = PyObject_IsTrue(args[0])) < 0) {
        return NULL;
    }
    if ((exact ? hooks_exact_users : hooks_light_users) == 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "allocator hooks released more often than acquired");
        return NULL;
    }
    memlens_hooks_release(exact);
    Py_RETURN_NONE;
}

/* _hooks_bare(on): links the hooks on all three domains with nothing
 * listening, so that every call passes straight on (on=False undoes it):
 * what being an allocator hook costs at all, for the benchmarks. */
static PyObject *
hooks_py_bare(PyObject *module, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    if (!on && hooks_bare_users == 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "bare allocator hooks released more often than "
                        "acquired");
        return NULL;
    }
    if (on) {
        hooks_fresh_start();
        hooks_bare_users++;
    }
    else {
        hooks_bare_users--;
    }
    hooks_sync();
    Py_RETURN_NONE;
}

/* _hooks_relink(): put back hooks that another tool's stop removed from
 * a chain (tracemalloc.stop() restores what it saved, dropping whatever
 * chained above it meanwhile). */
static PyObject *
hooks_py_relink(PyObject *module, PyObject *Py_UNUSED(args))
{
    if (memlens_hooks_users() > 0) {
        hooks_sync();
    }
    Py_RETURN_NONE;
}

/* _hooks_lean() -> (mem, obj): whether each domain's hook is a lean one
 * (tests). */
static PyObject *
hooks_py_lean(PyObject *module, PyObject *Py_UNUSED(args))
{
    return Py_BuildValue(
        "(OO)", hooks_lean_linked(&hooks_domains[1]) ? Py_True : Py_False,
        hooks_lean_linked(&hooks_domains[2]) ? Py_True : Py_False);
}

/* (id, ctx, malloc, calloc, realloc, free) of a kept allocator, as ints. */
static PyObject *
hooks_describe(const PyMemAllocatorEx *a)
{
    return Py_BuildValue("(KKKKKK)", (unsigned long long)(uintptr_t)a,
                         (unsigned long long)(uintptr_t)a->ctx,
                         (unsigned long long)(uintptr_t)a->malloc,
                         (unsigned long long)(uintptr_t)a->calloc,
                         (unsigned long long)(uintptr_t)a->realloc,
                         (unsigned long long)(uintptr_t)a->free);
}

/* _hooks_below() -> for each domain, the kept allocator its hook chains
 * to (None before the first link); _hooks_kept() -> every kept one
 * (tests: a relink publishes another copy and leaves the old whole). */
static PyObject *
hooks_py_below(PyObject *module, PyObject *Py_UNUSED(args))
{
    PyObject *res = PyTuple_New(HOOKS_NDOMAINS);
    for (int i = 0; res != NULL && i < HOOKS_NDOMAINS; i++) {
        const PyMemAllocatorEx *a = hooks_prev(&hooks_domains[i]);
        PyObject *item = a != NULL ? hooks_describe(a) : Py_NewRef(Py_None);
        if (item == NULL) {
            Py_CLEAR(res);
            break;
        }
        PyTuple_SET_ITEM(res, i, item);
    }
    return res;
}

static PyObject *
hooks_py_kept(PyObject *module, PyObject *Py_UNUSED(args))
{
    /* The copies are never freed: describing them allocates safely. */
    PyObject *res = PyList_New(0);
    for (size_t i = 0; res != NULL && i < hooks_nprevs; i++) {
        PyObject *item = hooks_describe(hooks_prevs[i]);
        if (item == NULL || PyList_Append(res, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(res);
            break;
        }
        Py_DECREF(item);
    }
    return res;
}

/* _hooks_quiet(on): raises or lowers this thread's quiet (hooks.h), around
 * memlens's own Python code; the calls nest. Returns the depth after. */
static PyObject *
hooks_py_quiet(PyObject *module, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    if (!on && memlens_hooks_tls.quiet == 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "_hooks_quiet(False) without _hooks_quiet(True)");
        return NULL;
    }
    memlens_hooks_quiet(on);
    return PyLong_FromLong(memlens_hooks_tls.quiet);
}

/* _quietly(func, *args): func(*args) with this thread quiet (hooks.h), the
 * quiet lowered however it ends. A C function taking its arguments in
 * place: nothing is made, nor any Python frame entered, before the quiet
 * is raised. */
static PyObject *
hooks_py_quietly(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "_quietly(func, *args)");
        return NULL;
    }
    memlens_hooks_quiet(1);
    PyObject *res =
        PyObject_Vectorcall(args[0], args + 1, (size_t)(nargs - 1), NULL);
    memlens_hooks_quiet(0);
    return res;
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
    {"_hooks_bare", hooks_py_bare, METH_O, NULL},
    {"_hooks_acquire", (PyCFunction)(void (*)(void))hooks_py_acquire,
     METH_FASTCALL, "Install the allocator hooks for one more user."},
    {"_hooks_release", (PyCFunction)(void (*)(void))hooks_py_release,
     METH_FASTCALL, "Release one user of the allocator hooks."},
    {"_hooks_relink", hooks_py_relink, METH_NOARGS,
     "Re-link hooks that another allocator hook's removal dropped."},
    {"_hooks_lean", hooks_py_lean, METH_NOARGS, NULL},
    {"_hooks_below", hooks_py_below, METH_NOARGS, NULL},
    {"_hooks_kept", hooks_py_kept, METH_NOARGS, NULL},
    {"_hooks_quiet", hooks_py_quiet, METH_O, NULL},
    {"_quietly", (PyCFunction)(void (*)(void))hooks_py_quietly, METH_FASTCALL,
     "_quietly(func, *args): func(*args), unrecorded."},
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
