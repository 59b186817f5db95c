/* tracing.c: which lines hold memory, now and at the peak.
 *
 * While tracing, every block the hooks see (or, with sampling, one block
 * per `sample_bytes` on average) is recorded with its size and its site:
 * the traceback of up to `nframes` Python frames that asked for it,
 * interned once. Each site keeps its live bytes and blocks, so a snapshot
 * is a walk over the sites, not over the blocks.
 *
 * What was alive at the peak is kept up to date incrementally: every site
 * touched since the last peak copy is marked dirty, and when the traced
 * total first goes down from a new peak, the dirty sites' figures are
 * copied into their peak figures (the others have not moved since). A
 * snapshot of the peak is then as cheap as one of now.
 *
 * Tables and locks:
 *   - blocks of the mem and obj domains (and NumPy's data) live in
 *     tracing_gil_table, protected by the GIL, as those allocators demand it;
 *   - raw-domain blocks live in tracing_raw_table under tracing_raw_lock
 *     (a spin lock: it is held for a few instructions per block),
 *     because the raw allocator may run without the GIL. A raw call made
 *     without the GIL cannot look at frames (site "unknown") nor touch the
 *     sites: it leaves its change in a small queue, under the same lock,
 *     that the next traced call holding the GIL applies;
 *   - sites (sites.c), totals and the peak figures are protected by the
 *     GIL.
 * All memory comes from libc, never from the allocators being traced.
 *
 * Which blocks are recorded when sampling is sampling.c's; what a site is,
 * sites.c's. The allocator hooks call in only through the listener this
 * file registers (hooks.h: memlens_hooks_tracer); this file calls the
 * hooks to switch its records on and off and to keep its own work quiet.
 */
#include "tracing.h"
#include "hooks.h"
#include "native.h"
#include "readings.h"
#include "sampling.h"
#include "sites.h"
#include "table.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int memlens_tracing_on = 0;

/* ---- Compact table of live blocks: 12 bytes an entry ------------------- */

/* ptr >> 4 (blocks are 16-byte aligned; 44 bits cover the user address
 * space) and the site index (20 bits) in one word, the size beside it. A
 * size that does not fit 32 bits is kept in tracing_big_sizes. */
#define TRACING_SITE_BITS MEMLENS_SITE_BITS
#define TRACING_MAX_SITES MEMLENS_SITES_MAX
#define TRACING_BIG_SIZE UINT32_MAX

typedef struct __attribute__((packed)) {
    uint64_t key;  /* (ptr >> 4) << TRACING_SITE_BITS | site; 0 empty. */
    uint32_t size; /* TRACING_BIG_SIZE: see tracing_big. */
} tracing_entry;

typedef struct {
    tracing_entry *slots; /* Owned (libc). */
    size_t mask;
    size_t used;
} tracing_table;

typedef struct {
    uintptr_t ptr;
    uint64_t size;
} tracing_big;

static inline uint64_t
tracing_key_ptr(uint64_t key)
{
    return key >> TRACING_SITE_BITS;
}

/* An entry's key in table.h's terms: its ptr >> 4 (0: empty). */
static inline uint64_t
tracing_entry_key(const void *e)
{
    return tracing_key_ptr(((const tracing_entry *)e)->key);
}

/* The slot of the block at ptr >> 4 == p4, or the empty one for it. */
static inline size_t
tracing_find(const tracing_table *t, uint64_t p4)
{
    return memlens_table_find(t->slots, sizeof(tracing_entry), t->mask, p4,
                              tracing_entry_key);
}

/* Starts loading the slot where `ptr` will be looked for: the miss then
 * overlaps the work done before the table is touched. */
static inline void
tracing_table_prefetch(const tracing_table *t, uintptr_t ptr)
{
    if (t->slots != NULL) {
        __builtin_prefetch(
            &t->slots[memlens_table_home((uint64_t)ptr >> 4, t->mask)], 1);
    }
}

/* Tables this big are mapped apart and asked for huge pages: every
 * lookup lands at random in them, and with 4 KiB pages each would also
 * miss the TLB. */
#define TRACING_HUGE_TABLE ((size_t)2 << 20)

/* Zeroed room for `cap` entries (libc or mapped); NULL if none. */
static tracing_entry *
tracing_slots_alloc(size_t cap)
{
    size_t bytes = cap * sizeof(tracing_entry);
    if (bytes < TRACING_HUGE_TABLE) {
        return calloc(cap, sizeof(tracing_entry));
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: failure is fine */
#endif
    return p;
}

static void
tracing_slots_free(tracing_entry *slots, size_t cap)
{
    if (slots == NULL) {
        return;
    }
    size_t bytes = cap * sizeof(tracing_entry);
    if (bytes < TRACING_HUGE_TABLE) {
        free(slots);
    }
    else {
        munmap(slots, bytes);
    }
}

static int
tracing_table_grow(tracing_table *t)
{
    size_t old_cap = t->slots ? t->mask + 1 : 0;
    size_t cap = old_cap ? old_cap * 2 : 4096;
    tracing_entry *old = t->slots;
    tracing_entry *slots = tracing_slots_alloc(cap);
    if (slots == NULL) {
        return -1;
    }
    memlens_table_rehash(slots, cap - 1, old, old_cap, sizeof(tracing_entry),
                         tracing_entry_key);
    t->slots = slots;
    t->mask = cap - 1;
    tracing_slots_free(old, old_cap);
    return 0;
}

/* Records a new block. 0; 1 when an entry of the same address was there
 * (a block freed where no hook saw it), replaced, its size and site in
 * *old_size and *old_site for the caller to take back; -1 out of memory. */
static int
tracing_table_put(tracing_table *t, uintptr_t ptr, uint32_t size,
                  uint32_t site, uint32_t *old_size, uint32_t *old_site)
{
    if (memlens_table_full(t->slots == NULL, t->used, t->mask, 3, 4)) {
        if (tracing_table_grow(t) < 0) {
            return -1;
        }
    }
    uint64_t p4 = (uint64_t)ptr >> 4;
    /* An entry found is stale, of a block freed untraced: replaced. */
    size_t i = tracing_find(t, p4);
    int replaced = t->slots[i].key != 0;
    if (replaced) {
        *old_size = t->slots[i].size;
        *old_site = (uint32_t)(t->slots[i].key & TRACING_MAX_SITES);
    }
    else {
        t->used++;
    }
    t->slots[i].key = (p4 << TRACING_SITE_BITS) | site;
    t->slots[i].size = size;
    return replaced;
}

/* Removes a block; 1 with its size and site, or 0 when absent. */
static int
tracing_table_pop(tracing_table *t, uintptr_t ptr, uint32_t *size,
                  uint32_t *site)
{
    if (t->slots == NULL) {
        return 0;
    }
    size_t i = tracing_find(t, (uint64_t)ptr >> 4);
    if (t->slots[i].key == 0) {
        return 0;
    }
    *size = t->slots[i].size;
    *site = (uint32_t)(t->slots[i].key & TRACING_MAX_SITES);
    memlens_table_remove(t->slots, sizeof(tracing_entry), t->mask, i,
                         tracing_entry_key);
    t->used--;
    return 1;
}

static void
tracing_table_clear(tracing_table *t)
{
    tracing_slots_free(t->slots, t->slots ? t->mask + 1 : 0);
    t->slots = NULL;
    t->mask = 0;
    t->used = 0;
}

/* ---- State (GIL unless said) -------------------------------------------- */

#define TRACING_MAX_SAMPLE_BYTES (INT64_C(1) << 40)
#define tracing_sample_bytes memlens_sampling_bytes
static tracing_table tracing_gil_table;
static tracing_table tracing_raw_table; /* tracing_raw_lock. */
static memlens_spinlock tracing_raw_lock = 0;
static tracing_big *tracing_bigs = NULL; /* Owned; tracing_raw_lock. */
static size_t tracing_nbigs = 0, tracing_capbigs = 0;
static int64_t tracing_total = 0, tracing_peak = 0;
static int tracing_at_peak = 0;
static uint32_t *tracing_dirty = NULL; /* Owned; dirty site indices. */
static size_t tracing_ndirty = 0, tracing_capdirty = 0;
static int tracing_dirty_overflow = 0; /* A mark was lost: copy all. */
/* Records not kept as they should be (no memory for the tables, the
 * queue below full): blocks unrecorded or on the unknown site, and the
 * figures may understate. Moved from threads with and without the GIL.
 * Atomic. */
static uint64_t tracing_failures = 0;

/* One more lost record; any thread. */
static inline void
tracing_fail(void)
{
    __atomic_fetch_add(&tracing_failures, 1, __ATOMIC_RELAXED);
}

/* Changes made without the GIL, applied later. tracing_raw_lock. */
typedef struct {
    uint32_t site;
    int64_t bytes;
    int64_t count;
} tracing_pending;
/* A library working without the GIL (SQLite running a query, a parser's
 * threads) makes tens of thousands of changes before the next traced call
 * holding the GIL applies them: the queue grows, doubling from 16,384,
 * up to a million changes (24 MiB). */
#define TRACING_PENDING_FIRST 16384
#define TRACING_PENDING_MAX (1 << 20)
static tracing_pending *tracing_queue = NULL; /* Owned; tracing_raw_lock. */
static size_t tracing_capqueue = 0;           /* tracing_raw_lock. */
static size_t tracing_nqueue = 0; /* tracing_raw_lock; read relaxed. */
/* The changes the queue can hold: TRACING_PENDING_MAX, less while a test
 * asks (_trace_queue_limit) until tracing stops. tracing_raw_lock. */
static size_t tracing_queue_limit = TRACING_PENDING_MAX;
static uint64_t tracing_queue_lost =
    0; /* Changes dropped. tracing_raw_lock. */
/* Frees dropped with a full queue: their blocks' bytes stay on their
 * sites, and the figures overstate. tracing_raw_lock. */
static uint64_t tracing_lost_frees = 0;

/* ---- Peak bookkeeping (GIL) ---------------------------------------------- */

static void
tracing_mark_dirty(uint32_t i, memlens_site *s)
{
    if (s->dirty) {
        return;
    }
    if (memlens_grow((void **)&tracing_dirty, &tracing_capdirty,
                     tracing_ndirty, sizeof(uint32_t), 1024)
        < 0) {
        /* Without room in the list, the next peak copies every site. */
        tracing_fail();
        tracing_dirty_overflow = 1;
        return;
    }
    tracing_dirty[tracing_ndirty++] = i;
    s->dirty = 1;
}

/* With native tracing, what the peak copy adds: per site, the resident
 * bytes less the recorded ones of its large blocks and mappings at that
 * moment (native.h), and the RSS then. GIL. */
static int64_t *tracing_peak_discount = NULL; /* Owned (libc). */
static size_t tracing_npeak_discount = 0, tracing_cappeak_discount = 0;
static uint64_t tracing_rss_start = 0, tracing_rss_peak = 0;

static uint64_t tracing_own_peak = 0;
/* RSS peaked since the start (native tracing): from then on, only RSS
 * says when the peak is. */
static int tracing_rss_peaked = 0;

/* What memlens's tracing holds for its own bookkeeping: tables, sites,
 * lists. RSS counts it; the program without memlens would not have it.
 * GIL. */
static uint64_t
tracing_own_bytes(void)
{
    /* The raw side as last seen: the peak copy may come while this
     * thread holds the lock already (draining the queue). */
    static size_t raw = 0, lists = 0;
    if (memlens_spin_trylock(&tracing_raw_lock)) {
        raw = tracing_raw_table.slots ? tracing_raw_table.mask + 1 : 0;
        lists = tracing_capbigs * sizeof(tracing_big)
                + tracing_capqueue * sizeof(tracing_pending);
        memlens_spin_unlock(&tracing_raw_lock);
    }
    size_t gil = tracing_gil_table.slots ? tracing_gil_table.mask + 1 : 0;
    return (raw + gil) * sizeof(tracing_entry) + lists
           + tracing_capdirty * sizeof(uint32_t)
           + tracing_cappeak_discount * sizeof(int64_t)
           + memlens_sites_own_bytes() + memlens_native_own_bytes();
}

static void
tracing_copy_peak_resident(void)
{
    uint32_t n = memlens_sites_count;
    if (n > tracing_cappeak_discount) {
        size_t cap = (size_t)n * 2;
        int64_t *a = realloc(tracing_peak_discount, cap * sizeof(int64_t));
        if (a == NULL) {
            tracing_fail();
            return;
        }
        tracing_peak_discount = a;
        tracing_cappeak_discount = cap;
    }
    memset(tracing_peak_discount, 0, (size_t)n * sizeof(int64_t));
    tracing_npeak_discount = n;
    memlens_native_discount(tracing_peak_discount, n);
    tracing_own_peak = tracing_own_bytes();
}

/* The state right now is the peak: copy what moved since the last copy. */
static void
tracing_copy_peak(void)
{
    if (__atomic_load_n(&memlens_native_on, __ATOMIC_RELAXED)) {
        /* Until RSS first peaks, the recorded bytes' peak stands in, its
         * large blocks counted whole (reading their pages at every such
         * peak would cost too much). */
        tracing_npeak_discount = 0;
        tracing_own_peak = tracing_own_bytes();
        tracing_rss_peak = memlens_native_rss();
    }
    size_t n = tracing_dirty_overflow ? memlens_sites_count : tracing_ndirty;
    for (size_t k = 0; k < n; k++) {
        memlens_site *s = memlens_site_at(
            tracing_dirty_overflow ? (uint32_t)k : tracing_dirty[k]);
        s->peak_size = s->size;
        s->peak_count = s->count;
        s->peak_allocated = s->allocated;
        s->peak_allocations = s->allocations;
        s->dirty = 0;
    }
    tracing_ndirty = 0;
    tracing_dirty_overflow = 0;
    tracing_at_peak = 0;
}

/* With native tracing: RSS reached a new high (native.h); the state now
 * is the peak's. */
static MEMLENS_SLOW_PATH void
tracing_native_peak(void)
{
    uint64_t rss = memlens_native_take_peak();
    if (rss != 0) {
        tracing_copy_peak();
        tracing_copy_peak_resident();
        tracing_rss_peak = rss;
        tracing_rss_peaked = 1;
    }
}

/* Applies one change to a site and the totals. GIL. */
static inline void
tracing_apply(uint32_t i, int64_t bytes, int64_t count)
{
    if (i >= memlens_sites_count) {
        /* A site of a run before this one, from a thread without the GIL
         * that read it then (native.c). */
        i = MEMLENS_SITE_UNKNOWN;
    }
    memlens_site *s = memlens_site_at(i);
    if (__atomic_load_n(&memlens_native_peak_pending, __ATOMIC_RELAXED)) {
        tracing_native_peak();
    }
    else if (bytes < 0 && tracing_at_peak) {
        tracing_copy_peak();
    }
    s->size += bytes;
    s->count += count;
    if (bytes > 0) {
        s->allocated += bytes;
        s->allocations += count;
    }
    tracing_total += bytes;
    if (tracing_total > tracing_peak) {
        tracing_peak = tracing_total;
        /* With native tracing, RSS says when the peak is, once it rose. */
        tracing_at_peak =
            !tracing_rss_peaked
            || !__atomic_load_n(&memlens_native_on, __ATOMIC_RELAXED);
    }
    tracing_mark_dirty(i, s);
}

static void
tracing_drain_queue(void)
{
    memlens_spin_lock(&tracing_raw_lock);
    for (size_t k = 0; k < tracing_nqueue; k++) {
        tracing_apply(tracing_queue[k].site, tracing_queue[k].bytes,
                      tracing_queue[k].count);
    }
    tracing_nqueue = 0;
    memlens_spin_unlock(&tracing_raw_lock);
}

static inline void
tracing_maybe_drain(void)
{
    if (__atomic_load_n(&tracing_nqueue, __ATOMIC_RELAXED) != 0) {
        tracing_drain_queue();
    }
}

/* The interpreter that started tracing. Only its threads are traced: a
 * subinterpreter's blocks and frames are not ours to record. GIL. */
static PyInterpreterState *tracing_interp = NULL;

/* Bumped at each start: the thread states checked before are stale. */
static unsigned long tracing_generation = 1;

/* Whether this thread holds the GIL of the traced interpreter. Any
 * thread, with or without a GIL. */
static MEMLENS_TLS PyThreadState *tracing_tstate_ok = NULL; /* Checked once. */
static MEMLENS_TLS unsigned long tracing_tstate_generation = 0;

static inline int
tracing_gil_here(void)
{
    PyThreadState *ts = MEMLENS_CURRENT_TSTATE();
    if (ts == NULL) {
        return 0;
    }
    if (ts == tracing_tstate_ok
        && tracing_tstate_generation == tracing_generation) {
        return 1;
    }
    if (PyThreadState_GetInterpreter(ts) != tracing_interp) {
        return 0;
    }
    tracing_tstate_ok = ts;
    tracing_tstate_generation = tracing_generation;
    return 1;
}

/* ---- Recording -------------------------------------------------------- */

/* The list of weights of 4 GiB and more: both sides use it, under
 * tracing_raw_lock (it is touched only for such blocks). */
static void
tracing_big_put(uintptr_t ptr, uint64_t size)
{
    if (memlens_grow((void **)&tracing_bigs, &tracing_capbigs, tracing_nbigs,
                     sizeof(tracing_big), 8)
        < 0) {
        tracing_fail();
        return;
    }
    tracing_bigs[tracing_nbigs].ptr = ptr;
    tracing_bigs[tracing_nbigs].size = size;
    tracing_nbigs++;
}

static uint64_t
tracing_big_pop(uintptr_t ptr)
{
    for (size_t k = 0; k < tracing_nbigs; k++) {
        if (tracing_bigs[k].ptr == ptr) {
            uint64_t size = tracing_bigs[k].size;
            tracing_bigs[k] = tracing_bigs[--tracing_nbigs];
            return size;
        }
    }
    return 0;
}

/* The weight an entry stands for, taking a big one off its list. Under
 * tracing_raw_lock. */
static inline uint64_t
tracing_take_weight(uintptr_t ptr, uint32_t stored)
{
    return stored == TRACING_BIG_SIZE ? tracing_big_pop(ptr) : stored;
}

/* The same for an entry of the GIL table, which holds no lock. */
static inline uint64_t
tracing_real_size(uintptr_t ptr, uint32_t stored)
{
    if (stored != TRACING_BIG_SIZE) {
        return stored;
    }
    memlens_spin_lock(&tracing_raw_lock);
    uint64_t weight = tracing_take_weight(ptr, stored);
    memlens_spin_unlock(&tracing_raw_lock);
    return weight;
}

/* With the GIL: a traced block into the GIL table. */
static void
tracing_record_gil(tracing_table *table, PyThreadState *ts, void *ptr,
                   size_t size)
{
    tracing_maybe_drain();
    uint64_t weight = memlens_sampling_weight(size);
    if (weight == 0) {
        return;
    }
    tracing_table_prefetch(table, (uintptr_t)ptr);
    uint32_t site = memlens_sites_current(ts);
    if (site == MEMLENS_SITE_NONE) {
        return;
    }
    uint32_t stored =
        weight >= TRACING_BIG_SIZE ? TRACING_BIG_SIZE : (uint32_t)weight;
    uint32_t old_stored, old_site;
    int rc = tracing_table_put(table, (uintptr_t)ptr, stored, site,
                               &old_stored, &old_site);
    if (rc < 0) {
        tracing_fail();
        return;
    }
    if (rc == 1) {
        /* Its big size, if any, first: the new one goes in after. */
        uint64_t old = tracing_real_size((uintptr_t)ptr, old_stored);
        memlens_native_block_pop(ptr, old);
        tracing_apply(old_site, -(int64_t)old, -1);
    }
    memlens_native_block_put(ptr, size, weight, site);
    if (stored == TRACING_BIG_SIZE) {
        memlens_spin_lock(&tracing_raw_lock);
        tracing_big_put((uintptr_t)ptr, weight);
        memlens_spin_unlock(&tracing_raw_lock);
    }
    /* pymalloc hands out the blocks of a size class one after the other
     * in a pool: the next one of this size is likely right after this
     * one, and its slot can be on its way meanwhile. */
    tracing_table_prefetch(table, (uintptr_t)ptr + memlens_round16(size));
    if (rc == 0) {
        /* A replaced record was counted already, at the same address. */
        memlens_sampling_filter_step((uintptr_t)ptr, 1);
    }
    tracing_apply(site, (int64_t)weight, 1);
}

static void
tracing_forget_gil(tracing_table *table, void *ptr)
{
    uint32_t stored, site;
    if (!memlens_sampling_maybe_recorded((uintptr_t)ptr)) {
        return;
    }
    tracing_maybe_drain();
    if (tracing_table_pop(table, (uintptr_t)ptr, &stored, &site)) {
        uint64_t weight = tracing_real_size((uintptr_t)ptr, stored);
        /* Blocks made one after the other tend to go together too (a
         * container freeing what it held, in either order): a neighbour's
         * slot is likely next. */
        if (stored < TRACING_BIG_SIZE && tracing_sample_bytes == 0) {
            uintptr_t step = memlens_round16(stored);
            tracing_table_prefetch(table, (uintptr_t)ptr + step);
            tracing_table_prefetch(table, (uintptr_t)ptr - step);
        }
        memlens_sampling_filter_step((uintptr_t)ptr, -1);
        memlens_native_block_pop(ptr, weight);
        tracing_apply(site, -(int64_t)weight, -1);
    }
}

/* Queues a change for the GIL side; 0 when the queue is full (counted:
 * a dropped free in tracing_lost_frees, a dropped block is the caller's to
 * count). Caller holds tracing_raw_lock. */
static int
tracing_enqueue(uint32_t site, int64_t bytes, int64_t count)
{
    if (tracing_nqueue >= tracing_queue_limit
        || memlens_grow((void **)&tracing_queue, &tracing_capqueue,
                        tracing_nqueue, sizeof(tracing_pending),
                        TRACING_PENDING_FIRST)
               < 0) {
        tracing_queue_lost++;
        if (count < 0) {
            tracing_lost_frees++;
        }
        return 0;
    }
    tracing_queue[tracing_nqueue].site = site;
    tracing_queue[tracing_nqueue].bytes = bytes;
    tracing_queue[tracing_nqueue].count = count;
    __atomic_store_n(&tracing_nqueue, tracing_nqueue + 1, __ATOMIC_RELAXED);
    return 1;
}

/* A block of `weight` bytes (`size` asked for; 0: unknown) on `site`
 * into the raw table, under the lock; the site's figures move now with
 * the GIL (`gil`), later without. */
static void
tracing_put_raw_site(void *ptr, size_t size, uint64_t weight, uint32_t site,
                     int gil)
{
    if (site == MEMLENS_SITE_NONE) {
        return;
    }
    uint32_t stored =
        weight >= TRACING_BIG_SIZE ? TRACING_BIG_SIZE : (uint32_t)weight;
    uint32_t old_stored = 0, old_site = 0;
    uint64_t old_weight = 0;
    memlens_spin_lock(&tracing_raw_lock);
    if (!__atomic_load_n(&memlens_tracing_on, __ATOMIC_SEQ_CST)) {
        /* A thread without the GIL that came in before a stop: the tables
         * (and the filter) may be cleared or not yet set up again. Start
         * and stop change them under this lock while tracing is off. */
        memlens_spin_unlock(&tracing_raw_lock);
        return;
    }
    int rc = tracing_table_put(&tracing_raw_table, (uintptr_t)ptr, stored,
                               site, &old_stored, &old_site);
    int ok = rc >= 0;
    int kept = ok;
    if (rc == 1) {
        old_weight = tracing_take_weight((uintptr_t)ptr, old_stored);
        if (!gil) {
            tracing_enqueue(old_site, -(int64_t)old_weight, -1);
        }
    }
    if (ok && !gil && !tracing_enqueue(site, (int64_t)weight, 1)) {
        /* No room to apply it later: do not keep the record either, so
         * that its free finds nothing to take back. */
        uint32_t w2, s2;
        tracing_table_pop(&tracing_raw_table, (uintptr_t)ptr, &w2, &s2);
        kept = 0;
        tracing_fail();
    }
    if (kept && stored == TRACING_BIG_SIZE) {
        tracing_big_put((uintptr_t)ptr, weight);
    }
    /* A replaced record was counted already, at the same address. */
    if (rc == 0 && kept) {
        memlens_sampling_filter_step((uintptr_t)ptr, 1);
    }
    else if (rc == 1 && !kept) {
        memlens_sampling_filter_step((uintptr_t)ptr, -1);
    }
    memlens_spin_unlock(&tracing_raw_lock);
    if (!ok) {
        tracing_fail();
        return;
    }
    if (rc == 1) {
        memlens_native_block_pop(ptr, old_weight);
    }
    if (kept) {
        memlens_native_block_put(ptr, size, weight, site);
    }
    if (gil) {
        if (rc == 1) {
            tracing_apply(old_site, -(int64_t)old_weight, -1);
        }
        tracing_apply(site, (int64_t)weight, 1);
    }
}

/* A block into the raw table, on the site of this thread's stack with
 * the GIL, the unknown one without. */
static void
tracing_put_raw(void *ptr, size_t size, uint64_t weight, int gil)
{
    tracing_put_raw_site(ptr, size, weight,
                         gil ? memlens_sites_current(tracing_tstate_ok)
                             : MEMLENS_SITE_UNKNOWN,
                         gil);
}

/* A raw-domain block, with or without the GIL. */
static void
tracing_record_raw(void *ptr, size_t size)
{
    int gil = tracing_gil_here();
    if (gil) {
        tracing_maybe_drain();
    }
    uint64_t weight = memlens_sampling_weight(size);
    if (weight != 0) {
        tracing_put_raw(ptr, size, weight, gil);
    }
}

static void
tracing_forget_raw(void *ptr)
{
    if (!memlens_sampling_maybe_recorded((uintptr_t)ptr)) {
        return;
    }
    int gil = tracing_gil_here();
    uint32_t stored, site;
    uint64_t weight = 0;
    memlens_spin_lock(&tracing_raw_lock);
    int found =
        tracing_table_pop(&tracing_raw_table, (uintptr_t)ptr, &stored, &site);
    if (found) {
        memlens_sampling_filter_step((uintptr_t)ptr, -1);
        weight = tracing_take_weight((uintptr_t)ptr, stored);
    }
    if (found && !gil) {
        tracing_enqueue(site, -(int64_t)weight, -1);
    }
    memlens_spin_unlock(&tracing_raw_lock);
    if (found) {
        memlens_native_block_pop(ptr, weight);
    }
    if (found && gil) {
        tracing_maybe_drain();
        tracing_apply(site, -(int64_t)weight, -1);
    }
}

/* The hooks' calls (hooks.h: memlens_hooks_tracer), made with their busy
 * flag raised: with the GIL for the mem and obj domains, maybe without it
 * for the raw domain. Never raise. */
static void
tracing_alloc(int domain, void *ptr, size_t size)
{
    if (domain == PYMEM_DOMAIN_RAW) {
        tracing_record_raw(ptr, size);
    }
    else if (tracing_gil_here()) {
        /* tracing_gil_here() has just checked this thread's state. */
        tracing_record_gil(&tracing_gil_table, tracing_tstate_ok, ptr, size);
    }
}

static void
tracing_free(int domain, void *ptr)
{
    if (domain == PYMEM_DOMAIN_RAW) {
        tracing_forget_raw(ptr);
    }
    else if (tracing_gil_here()) {
        tracing_forget_gil(&tracing_gil_table, ptr);
    }
}

static uint64_t
tracing_weigh(size_t size)
{
    return tracing_gil_here() ? memlens_sampling_weight(size) : 0;
}

static void
tracing_put_weighed(void *ptr, uint64_t weight)
{
    /* tracing_weigh has just checked this thread's state. */
    tracing_maybe_drain();
    tracing_put_raw(ptr, 0, weight, 1);
}

static const memlens_hooks_tracer tracing_listener = {
    tracing_alloc,
    tracing_free,
    tracing_weigh,
    tracing_put_weighed,
};

int
memlens_tracing_gil_here(void)
{
    return tracing_gil_here();
}

void
memlens_tracing_external_alloc(void *ptr, size_t size)
{
    tracing_record_gil(&tracing_gil_table, PyThreadState_Get(), ptr, size);
}

void
memlens_tracing_external_free(void *ptr, size_t size)
{
    tracing_forget_gil(&tracing_gil_table, ptr);
}

/* Starts loading the raw table's slot of `ptr` before its lock is taken:
 * the native hooks' blocks land at random in a table too big for the
 * cache. The next cache line too: a removal reads on to the end of the
 * slot's run, which a 12-byte entry crosses into often. A prefetch never
 * faults, so a table being replaced meanwhile costs nothing but the
 * miss. */
static inline void
tracing_raw_prefetch(uintptr_t ptr)
{
    tracing_entry *slots =
        __atomic_load_n(&tracing_raw_table.slots, __ATOMIC_RELAXED);
    size_t mask = __atomic_load_n(&tracing_raw_table.mask, __ATOMIC_RELAXED);
    if (slots != NULL) {
        const tracing_entry *e =
            &slots[memlens_table_home((uint64_t)ptr >> 4, mask)];
        __builtin_prefetch(e, 1);
        __builtin_prefetch((const char *)e + 64, 1);
    }
}

/* The last native block this thread made and gave back: loops make and
 * free blocks one after the other at a steady stride, and the slot of the
 * next one can be on its way while this one is recorded. */
static MEMLENS_TLS uintptr_t tracing_last_put = 0, tracing_last_forget = 0;

/* Prefetches the slot eight strides (from `*last`, when it looks like a
 * loop's) past `ptr`: far enough ahead for the miss to be over when the
 * loop gets there, even when the loop's own work is a few nanoseconds (a
 * free). Makes `ptr` the last. */
static inline void
tracing_raw_prefetch_next(uintptr_t ptr, uintptr_t *last)
{
    uintptr_t stride = ptr - *last;
    if (stride != 0 && stride < 4096) {
        tracing_raw_prefetch(ptr + 8 * stride);
    }
    *last = ptr;
}

uint32_t
memlens_tracing_native_site(uint32_t fallback)
{
    if (!tracing_gil_here()) {
        return fallback;
    }
    tracing_maybe_drain();
    return memlens_sites_native(memlens_sites_current(tracing_tstate_ok));
}

void
memlens_tracing_native_put(void *ptr, size_t size, uint64_t weight,
                           uint32_t fallback)
{
    tracing_raw_prefetch((uintptr_t)ptr);
    int gil = tracing_gil_here();
    uint32_t site = fallback;
    if (gil) {
        tracing_maybe_drain();
        site = memlens_sites_native(memlens_sites_current(tracing_tstate_ok));
    }
    tracing_put_raw_site(ptr, size, weight, site, gil);
    tracing_raw_prefetch_next((uintptr_t)ptr, &tracing_last_put);
}

void
memlens_tracing_native_forget(void *ptr)
{
    tracing_raw_prefetch((uintptr_t)ptr);
    tracing_raw_prefetch_next((uintptr_t)ptr, &tracing_last_forget);
    tracing_forget_raw(ptr);
}

void
memlens_tracing_native_change(uint32_t site, int64_t bytes, int64_t count)
{
    if (tracing_gil_here()) {
        tracing_maybe_drain();
        tracing_apply(site, bytes, count);
        return;
    }
    memlens_spin_lock(&tracing_raw_lock);
    if (__atomic_load_n(&memlens_tracing_on, __ATOMIC_SEQ_CST)
        && !tracing_enqueue(site, bytes, count) && count > 0) {
        tracing_fail();
    }
    memlens_spin_unlock(&tracing_raw_lock);
}

/* ---- Python API (GIL held) ---------------------------------------------- */

static void
tracing_clear_all(void)
{
    tracing_table_clear(&tracing_gil_table);
    memlens_spin_lock(&tracing_raw_lock);
    tracing_table_clear(&tracing_raw_table);
    tracing_nqueue = 0;
    tracing_queue_limit = TRACING_PENDING_MAX;
    free(tracing_queue);
    tracing_queue = NULL;
    tracing_capqueue = 0;
    free(tracing_bigs);
    tracing_bigs = NULL;
    tracing_nbigs = tracing_capbigs = 0;
    memlens_spin_unlock(&tracing_raw_lock);
    free(tracing_dirty);
    tracing_dirty = NULL;
    tracing_ndirty = tracing_capdirty = 0;
    memlens_sampling_stop();
    free(tracing_peak_discount);
    tracing_peak_discount = NULL;
    tracing_npeak_discount = tracing_cappeak_discount = 0;
    tracing_total = tracing_peak = 0;
    tracing_at_peak = 0;
    tracing_own_peak = 0;
    tracing_rss_peaked = 0;
    memlens_sites_clear();
}

/* _trace_start(nframes, sample_bytes, native=False): start tracing (the
 * hooks too; with native, every loaded library's allocators). */
static PyObject *
tracing_py_start(PyObject *m, PyObject *args)
{
    int nframes, native = 0;
    long long sample;
    if (!PyArg_ParseTuple(args, "iL|p:start_tracing", &nframes, &sample,
                          &native)) {
        return NULL;
    }
    if (nframes < 1 || nframes > MEMLENS_SITES_MAX_FRAMES) {
        return PyErr_Format(PyExc_ValueError,
                            "nframes must be between 1 and %d, got %d",
                            MEMLENS_SITES_MAX_FRAMES, nframes);
    }
    /* The bound keeps every estimate (marks times sample_bytes) far from
     * overflowing. */
    if (sample < 0 || sample > TRACING_MAX_SAMPLE_BYTES) {
        return PyErr_Format(PyExc_ValueError,
                            "sample_bytes must be between 0 and %lld, "
                            "got %lld",
                            (long long)TRACING_MAX_SAMPLE_BYTES, sample);
    }
    if (__atomic_load_n(&memlens_tracing_on, __ATOMIC_RELAXED)) {
        PyErr_SetString(PyExc_RuntimeError, "tracing is already running");
        return NULL;
    }
    tracing_clear_all();
    if (memlens_sites_start(nframes) < 0) {
        return NULL;
    }
    uint8_t *filter = NULL;
    if (sample > 0) {
        filter = memlens_sampling_filter_store();
        if (filter == NULL) {
            tracing_clear_all();
            return PyErr_NoMemory();
        }
        /* Under the lock: a raw free of the last run may still be
         * uncounting a block it found there. */
        memlens_spin_lock(&tracing_raw_lock);
        memset(filter, 0, MEMLENS_SAMPLING_FILTER_SLOTS);
        memlens_spin_unlock(&tracing_raw_lock);
    }
    memlens_sampling_start((uint64_t)sample, filter);
    tracing_generation++;
    __atomic_store_n(&tracing_failures, 0, __ATOMIC_RELAXED);
    memlens_spin_lock(&tracing_raw_lock);
    tracing_queue_lost = 0;
    tracing_lost_frees = 0;
    memlens_spin_unlock(&tracing_raw_lock);
    tracing_interp = PyInterpreterState_Get();
    if (native && memlens_rss_now(&tracing_rss_start) < 0) {
        tracing_clear_all();
        return NULL;
    }
    tracing_rss_peak = tracing_rss_start;
    __atomic_store_n(&memlens_tracing_on, 1, __ATOMIC_SEQ_CST);
    if (memlens_hooks_trace(1) < 0) {
        __atomic_store_n(&memlens_tracing_on, 0, __ATOMIC_SEQ_CST);
        tracing_clear_all();
        return NULL;
    }
    if (native && memlens_native_start(tracing_rss_start) < 0) {
        memlens_hooks_trace(0);
        __atomic_store_n(&memlens_tracing_on, 0, __ATOMIC_SEQ_CST);
        tracing_clear_all();
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _trace_stop(): stop recording and drop every record. */
static PyObject *
tracing_py_stop(PyObject *m, PyObject *Py_UNUSED(args))
{
    memlens_native_stop();
    memlens_hooks_trace(0);
    __atomic_store_n(&memlens_tracing_on, 0, __ATOMIC_SEQ_CST);
    tracing_clear_all();
    Py_RETURN_NONE;
}

static PyObject *
tracing_py_is_tracing(PyObject *m, PyObject *Py_UNUSED(args))
{
    return PyBool_FromLong(
        __atomic_load_n(&memlens_tracing_on, __ATOMIC_RELAXED));
}

/* _trace_memory() -> (current, peak) traced bytes. */
static PyObject *
tracing_py_memory(PyObject *m, PyObject *Py_UNUSED(args))
{
    if (!memlens_tracing_on) {
        return Py_BuildValue("(ii)", 0, 0);
    }
    tracing_maybe_drain();
    /* The tuple is memlens's own: quiet (hooks.h). */
    memlens_hooks_quiet(1);
    PyObject *res = Py_BuildValue("(LL)", (long long)tracing_total,
                                  (long long)tracing_peak);
    memlens_hooks_quiet(0);
    return res;
}

/* _trace_reset_peak(): the peak becomes now. */
static PyObject *
tracing_py_reset_peak(PyObject *m, PyObject *Py_UNUSED(args))
{
    if (!memlens_tracing_on) {
        Py_RETURN_NONE;
    }
    tracing_maybe_drain();
    if (memlens_native_on) {
        uint64_t rss;
        if (memlens_rss_now(&rss) < 0) {
            return NULL;
        }
        memlens_native_reset_peak(rss);
        tracing_rss_peak = rss;
    }
    tracing_dirty_overflow = 1; /* every site's peak becomes its now */
    tracing_copy_peak();
    tracing_peak = tracing_total;
    Py_RETURN_NONE;
}

/* The result of _trace_snapshot, now or at the peak, its frames with
 * their function names if `functions`. GIL, tracing. */
static PyObject *
tracing_snapshot_rows(int at_peak, int functions)
{
    memlens_spin_lock(&tracing_raw_lock);
    uint64_t lost_frees = tracing_lost_frees;
    memlens_spin_unlock(&tracing_raw_lock);
    uint64_t lost_records =
        __atomic_load_n(&tracing_failures, __ATOMIC_RELAXED)
        + memlens_sites_failures();
    int native = __atomic_load_n(&memlens_native_on, __ATOMIC_RELAXED);
    uint32_t n = memlens_sites_count;
    /* Per site: size, count, allocated, allocations; after them, per
     * site, the resident bytes less the size (native tracing). */
    int64_t *fig = calloc((size_t)n * 5 + 1, sizeof(int64_t));
    if (fig == NULL) {
        return PyErr_NoMemory();
    }
    int64_t *discount = &fig[4 * (size_t)n];
    int64_t total = at_peak ? tracing_peak : tracing_total;
    uint64_t rss = 0, own = at_peak ? tracing_own_peak : tracing_own_bytes();
    for (uint32_t i = 0; i < n; i++) {
        memlens_site *s = memlens_site_at(i);
        int64_t *f = &fig[4 * i];
        f[0] = at_peak ? s->peak_size : s->size;
        f[1] = at_peak ? s->peak_count : s->count;
        f[2] = at_peak ? s->peak_allocated : s->allocated;
        f[3] = at_peak ? s->peak_allocations : s->allocations;
    }
    if (native && at_peak) {
        uint32_t copied =
            n < tracing_npeak_discount ? n : (uint32_t)tracing_npeak_discount;
        if (copied > 0) {
            memcpy(discount, tracing_peak_discount, copied * sizeof(int64_t));
        }
        rss = tracing_rss_peak;
    }
    else if (native) {
        memlens_native_discount(discount, n);
        if (memlens_rss_now(&rss) < 0) {
            free(fig);
            return NULL;
        }
    }
    PyObject *rows = PyList_New(0);
    if (rows == NULL) {
        free(fig);
        return NULL;
    }
    /* With native tracing, the totals are the rows': the peak snapshot
     * is RSS's, not the recorded bytes'. */
    int64_t rows_total = 0, rows_resident = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t *f = &fig[4 * i];
        rows_total += f[0];
        rows_resident += f[0] + discount[i];
        if (f[0] == 0 && f[1] == 0 && f[2] == 0) {
            continue;
        }
        memlens_site *s = memlens_site_at(i);
        PyObject *tb = memlens_site_traceback(s, functions);
        PyObject *row =
            tb ? Py_BuildValue("(NLLLLOL)", tb, (long long)f[0],
                               (long long)f[1], (long long)f[2],
                               (long long)f[3], s->native ? Py_True : Py_False,
                               (long long)(f[0] + discount[i]))
               : NULL;
        if (row == NULL || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(rows);
            free(fig);
            return NULL;
        }
        Py_DECREF(row);
    }
    free(fig);
    PyObject *rise = Py_None, *overhead = Py_None;
    Py_INCREF(rise);
    Py_INCREF(overhead);
    if (native) {
        Py_SETREF(rise, PyLong_FromLongLong((long long)rss
                                            - (long long)tracing_rss_start));
        Py_SETREF(overhead, PyLong_FromUnsignedLongLong(own));
        if (rise == NULL || overhead == NULL) {
            Py_XDECREF(rise);
            Py_XDECREF(overhead);
            Py_DECREF(rows);
            return NULL;
        }
    }
    if (native) {
        total = rows_total;
    }
    return Py_BuildValue(
        "(iKLNKKOLNN)", memlens_sites_nframes(),
        (unsigned long long)tracing_sample_bytes, (long long)total, rows,
        (unsigned long long)lost_frees, (unsigned long long)lost_records,
        native ? Py_True : Py_False,
        (long long)(native ? rows_resident : total), rise, overhead);
}

/* _trace_snapshot(peak, functions=False) -> (nframes, sample_bytes, total,
 * rows, lost_frees, lost_records, native, resident, rss_rise, overhead), rows
 * [(traceback, size, count, allocated, allocations, native, resident)]
 * for every site that holds or handed out memory (now, or at the peak);
 * the two counts since the start say how far the figures may be off
 * (tracing_lost_frees, tracing_failures). With native tracing, resident
 * counts the resident pages of large blocks and mappings (native.h) and
 * rss_rise is the RSS then less the RSS at the start, overhead the bytes
 * of memlens's own bookkeeping then; otherwise resident is the size and
 * rss_rise and overhead None. A traceback is a tuple of (filename,
 * lineno), most recent first, or with `functions` of (filename, lineno,
 * function name). */
static PyObject *
tracing_py_snapshot(PyObject *m, PyObject *args)
{
    int at_peak, functions = 0;
    if (!PyArg_ParseTuple(args, "p|p:_trace_snapshot", &at_peak, &functions)) {
        return NULL;
    }
    if (!memlens_tracing_on) {
        PyErr_SetString(PyExc_RuntimeError,
                        "memlens is not tracing: call start_tracing() "
                        "first");
        return NULL;
    }
    tracing_maybe_drain();
    if (at_peak && memlens_native_on) {
        /* RSS may have peaked since the sampler last looked. */
        memlens_native_check_peak();
    }
    if (at_peak && memlens_native_peak_pending) {
        tracing_native_peak();
    }
    if (at_peak && tracing_at_peak) {
        tracing_copy_peak();
    }
    /* Copy the figures first: building the rows allocates, and may run a
     * collection that frees traced blocks. What the rows take is memlens's
     * own: quiet (hooks.h). */
    memlens_hooks_quiet(1);
    PyObject *res = tracing_snapshot_rows(at_peak, functions);
    memlens_hooks_quiet(0);
    return res;
}

/* _trace_stats() -> dict: bookkeeping figures (for tests and bench). */
static PyObject *
tracing_py_stats(PyObject *m, PyObject *Py_UNUSED(args))
{
    size_t table_bytes =
        (tracing_gil_table.slots ? (tracing_gil_table.mask + 1) : 0)
        * sizeof(tracing_entry);
    memlens_spin_lock(&tracing_raw_lock);
    size_t raw_bytes =
        (tracing_raw_table.slots ? (tracing_raw_table.mask + 1) : 0)
        * sizeof(tracing_entry);
    size_t blocks = tracing_gil_table.used + tracing_raw_table.used;
    uint64_t lost = tracing_queue_lost;
    uint64_t lost_frees = tracing_lost_frees;
    /* The filter's counts: their sum equals `blocks` while none is full. */
    size_t counted = 0, full = 0;
    const uint8_t *filter =
        __atomic_load_n(&memlens_sampling_filter, __ATOMIC_RELAXED);
    for (size_t i = 0; filter != NULL && i < MEMLENS_SAMPLING_FILTER_SLOTS;
         i++) {
        uint8_t v = __atomic_load_n(&filter[i], __ATOMIC_RELAXED);
        counted += v;
        full += v == MEMLENS_SAMPLING_FILTER_FULL;
    }
    memlens_spin_unlock(&tracing_raw_lock);
    return Py_BuildValue(
        "{s:n,s:n,s:I,s:K,s:K,s:K,s:n,s:n,s:O}", "blocks", (Py_ssize_t)blocks,
        "table_bytes", (Py_ssize_t)(table_bytes + raw_bytes), "sites",
        (unsigned int)memlens_sites_count, "failures",
        (unsigned long long)(__atomic_load_n(&tracing_failures,
                                             __ATOMIC_RELAXED)
                             + memlens_sites_failures()),
        "queue_lost", (unsigned long long)lost, "lost_frees",
        (unsigned long long)lost_frees, "filter_counted", (Py_ssize_t)counted,
        "filter_full", (Py_ssize_t)full, "frames_in_place",
        memlens_sites_in_place() ? Py_True : Py_False);
}

/* Whether `arg` is a tuple of str; TypeError if not. */
static int
tracing_check_prefixes(PyObject *arg)
{
    int ok = PyTuple_Check(arg);
    for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(arg); i++) {
        ok = PyUnicode_Check(PyTuple_GET_ITEM(arg, i));
    }
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "prefixes must be a tuple of str");
    }
    return ok;
}

/* _trace_skip(skipped, own): the folders whose frames sites pass over, and
 * those of memlens's own code, whose blocks are not recorded. */
static PyObject *
tracing_py_skip(PyObject *m, PyObject *args)
{
    PyObject *skipped, *own;
    if (!PyArg_ParseTuple(args, "OO:_trace_skip", &skipped, &own)
        || !tracing_check_prefixes(skipped) || !tracing_check_prefixes(own)) {
        return NULL;
    }
    memlens_sites_skip(skipped, own);
    Py_RETURN_NONE;
}

/* _trace_frames_api(flag): from the next start, read frames through the
 * API only (flag true) or in place where that agrees (false). Tests. */
static PyObject *
tracing_py_frames_api(PyObject *m, PyObject *arg)
{
    int flag = PyObject_IsTrue(arg);
    if (flag < 0) {
        return NULL;
    }
    memlens_sites_frames_api(flag);
    Py_RETURN_NONE;
}

/* _trace_block(domain, address, size, gil=True): records a block at
 * `address` as the hooks would (size < 0: its free), for tests of what the
 * tables do with addresses no real block has; with gil false, as a thread
 * without the GIL would (raw domain). */
static PyObject *
tracing_py_block(PyObject *m, PyObject *args)
{
    int domain, gil = 1;
    unsigned long long address;
    long long size;
    if (!PyArg_ParseTuple(args, "iKL|p:_trace_block", &domain, &address, &size,
                          &gil)) {
        return NULL;
    }
    if (!memlens_tracing_on) {
        PyErr_SetString(PyExc_RuntimeError, "tracing is not running");
        return NULL;
    }
    if (domain != PYMEM_DOMAIN_RAW && domain != PYMEM_DOMAIN_MEM) {
        PyErr_SetString(PyExc_ValueError, "domain must be raw or mem");
        return NULL;
    }
    if (address == 0 || address % 16 != 0 || address >= 4096) {
        /* The first page is never mapped: no real block can be there. */
        PyErr_SetString(PyExc_ValueError,
                        "address must be 16-aligned, in the first page");
        return NULL;
    }
    if (!gil && domain != PYMEM_DOMAIN_RAW) {
        PyErr_SetString(PyExc_ValueError,
                        "only the raw domain is used without the GIL");
        return NULL;
    }
    PyThreadState *ts = gil ? NULL : PyEval_SaveThread();
    if (size < 0) {
        tracing_free(domain, (void *)(uintptr_t)address);
    }
    else {
        tracing_alloc(domain, (void *)(uintptr_t)address, (size_t)size);
    }
    if (ts != NULL) {
        PyEval_RestoreThread(ts);
    }
    Py_RETURN_NONE;
}

/* _trace_queue_limit(n) -> the limit before: the queue of changes made
 * without the GIL takes at most n (up to its size) until tracing stops,
 * so that tests can fill it. */
static PyObject *
tracing_py_queue_limit(PyObject *m, PyObject *arg)
{
    Py_ssize_t n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 0 || n > TRACING_PENDING_MAX) {
        return PyErr_Format(PyExc_ValueError,
                            "the limit must be between 0 and %d, got %zd",
                            TRACING_PENDING_MAX, n);
    }
    if (!memlens_tracing_on) {
        PyErr_SetString(PyExc_RuntimeError, "tracing is not running");
        return NULL;
    }
    memlens_spin_lock(&tracing_raw_lock);
    size_t before = tracing_queue_limit;
    tracing_queue_limit = (size_t)n;
    memlens_spin_unlock(&tracing_raw_lock);
    return PyLong_FromSize_t(before);
}

static PyMethodDef tracing_methods[] = {
    {"_trace_block", tracing_py_block, METH_VARARGS, NULL},
    {"_trace_queue_limit", tracing_py_queue_limit, METH_O, NULL},
    {"_trace_frames_api", tracing_py_frames_api, METH_O, NULL},
    {"_trace_skip", tracing_py_skip, METH_VARARGS, NULL},
    {"_trace_start", tracing_py_start, METH_VARARGS, NULL},
    {"_trace_stop", tracing_py_stop, METH_NOARGS, NULL},
    {"_trace_is_tracing", tracing_py_is_tracing, METH_NOARGS, NULL},
    {"_trace_memory", tracing_py_memory, METH_NOARGS, NULL},
    {"_trace_reset_peak", tracing_py_reset_peak, METH_NOARGS, NULL},
    {"_trace_snapshot", tracing_py_snapshot, METH_VARARGS, NULL},
    {"_trace_stats", tracing_py_stats, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* A fork while a thread without the GIL holds tracing_raw_lock would leave
 * the child's copy locked: hold it across the fork. */
static void
tracing_atfork_prepare(void)
{
    memlens_spin_lock(&tracing_raw_lock);
}

static void
tracing_atfork_release(void)
{
    memlens_spin_unlock(&tracing_raw_lock);
}

int
memlens_tracing_init(PyObject *module)
{
    memlens_hooks_set_tracer(&tracing_listener);
    static int registered = 0;
    if (!registered) {
        int rc = pthread_atfork(tracing_atfork_prepare, tracing_atfork_release,
                                tracing_atfork_release);
        if (rc != 0) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        registered = 1;
    }
    return PyModule_AddFunctions(module, tracing_methods);
}
