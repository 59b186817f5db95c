/* sampling.h: which allocations tracing records when it samples.
 *
 * With sample_bytes = N, each thread walks its stream of allocated bytes
 * and drops a mark every N bytes on average; a block gets recorded when
 * marks fall inside it, and stands for N bytes per mark (its weight). The
 * fast path (a block between two marks: the countdown moves, nothing
 * else) is inline here, for the allocator hooks and tracing.c; the slow
 * path (a mark falls in the block: draw the next gaps) is sampling.c's.
 *
 * Who writes what:
 *   - memlens_sampling_bytes and the filter pointer: tracing.c, through
 *     memlens_sampling_start / memlens_sampling_stop, with the GIL;
 *   - the filter's counts: tracing.c, as it makes and drops records;
 *   - the thread's countdown: its own thread, through the functions
 *     below (the hooks hold and put it back around the allocator below
 *     theirs, and across memlens's own quiet work).
 */
#ifndef MEMLENS_SAMPLING_H
#define MEMLENS_SAMPLING_H

#include "common.h"

/* The sampling period in bytes; 0: exact (every block is recorded). */
extern uint64_t memlens_sampling_bytes;

/* What one thread's sampling stands at. Thread-local; its own thread. */
typedef struct {
    uint64_t countdown;  /* Bytes before the next mark. */
    uint64_t held;       /* The countdown when the quiet began (hooks.h). */
    uint64_t rng;        /* xorshift64* state; 0 before the first draw. */
    unsigned long phase; /* memlens_sampling_generation when phased. */
} memlens_sampling_thread;

extern MEMLENS_TLS memlens_sampling_thread memlens_sampling_tls;

/* Bumped at each start: each thread then draws a random phase. */
extern unsigned long memlens_sampling_generation;

/* ---- The filter of sampled blocks --------------------------------------
 * When sampling, most blocks are not recorded, and their frees should not
 * pay for a table lookup. The filter is a counting Bloom filter with one
 * hash: for each hash of an address, how many recorded blocks have an
 * address with that hash. A block is counted when its record is made and
 * uncounted when the record goes, so a freed sample leaves nothing behind:
 * in a loop that makes and drops objects, pymalloc hands the same few
 * addresses out again and again, and once the sample taken at one of them
 * is freed, their frees pass straight through again. A count that
 * reaches MEMLENS_SAMPLING_FILTER_FULL stays there (maybe recorded, looked
 * up) until tracing stops. The counts move atomically. NULL when exact.
 * The array is made once and never freed: a raw free on another thread
 * may still be reading it when tracing stops, so stopping only lets go of
 * the pointer. */
#define MEMLENS_SAMPLING_FILTER_BITS 18
#define MEMLENS_SAMPLING_FILTER_SLOTS                                         \
    ((size_t)1 << MEMLENS_SAMPLING_FILTER_BITS)
#define MEMLENS_SAMPLING_FILTER_FULL 255

extern uint8_t *memlens_sampling_filter; /* Atomic. */

/* The address's 16-byte granule, modulo the filter's size: blocks alike
 * in their address modulo 4 MiB share a count (no multiply on the path of
 * every free). */
static inline size_t
memlens_sampling_filter_slot(uintptr_t ptr)
{
    return (size_t)(((uint64_t)ptr >> 4)
                    & ((UINT64_C(1) << MEMLENS_SAMPLING_FILTER_BITS) - 1));
}

/* Whether `ptr` may be a recorded block: 1 when exact (every block is);
 * when sampling, whether a recorded block has its hash. */
static inline int
memlens_sampling_maybe_recorded(uintptr_t ptr)
{
    const uint8_t *filter =
        __atomic_load_n(&memlens_sampling_filter, __ATOMIC_RELAXED);
    return filter == NULL
           || __atomic_load_n(&filter[memlens_sampling_filter_slot(ptr)],
                              __ATOMIC_RELAXED)
                  != 0;
}

/* A record of a block at `ptr` was made (step +1) or went (-1): moves its
 * count. A full count stays full. Any thread. */
static inline void
memlens_sampling_filter_step(uintptr_t ptr, int step)
{
    uint8_t *filter =
        __atomic_load_n(&memlens_sampling_filter, __ATOMIC_RELAXED);
    if (filter == NULL) {
        return;
    }
    uint8_t *c = &filter[memlens_sampling_filter_slot(ptr)];
    uint8_t v = __atomic_load_n(c, __ATOMIC_RELAXED);
    do {
        if (v == MEMLENS_SAMPLING_FILTER_FULL || (step < 0 && v == 0)) {
            return;
        }
    } while (!__atomic_compare_exchange_n(c, &v, (uint8_t)(v + step), 1,
                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

/* The filter's storage, made on first use (zeroed then; the caller clears
 * it for a later run), or NULL when out of memory. GIL. */
uint8_t *memlens_sampling_filter_store(void);

/* Starts sampling every `bytes` (0: exact) with `filter` (NULL when
 * exact): each thread draws a fresh phase. GIL. */
void memlens_sampling_start(uint64_t bytes, uint8_t *filter);

/* Lets go of the filter; memlens_sampling_bytes keeps its value for the
 * reports. GIL. */
void memlens_sampling_stop(void);

/* ---- The countdown ------------------------------------------------------ */

/* The rest of memlens_sampling_weight, when a mark may fall in the block
 * (or the thread has not drawn its phase yet). */
uint64_t memlens_sampling_weight_slow(uint64_t size);

/* The bytes an allocation of `size` stands for: its size when exact; when
 * sampling, N per mark falling inside it (0: not recorded). The
 * countdown moves either way. */
static inline uint64_t
memlens_sampling_weight(uint64_t size)
{
    if (memlens_sampling_bytes == 0) {
        return size;
    }
    memlens_sampling_thread *t = &memlens_sampling_tls;
    if (t->phase == memlens_sampling_generation && size < t->countdown) {
        t->countdown -= size;
        return 0;
    }
    return memlens_sampling_weight_slow(size);
}

/* The hooks' fast path: whether `size` bytes fall before the next mark,
 * counting them down if so. Needs no check of the phase: a thread that
 * has not drawn one has a countdown of 0 and takes the slow path. */
static inline int
memlens_sampling_passes(uint64_t size)
{
    if (size < memlens_sampling_tls.countdown) {
        memlens_sampling_tls.countdown -= size;
        return 1;
    }
    return 0;
}

/* Around a call into an allocator below ours: what that call allocates
 * through our hooks on the way must not count the countdown down, or the
 * same bytes would count twice; the countdown is put back instead:
 *     uint64_t held = memlens_sampling_hold();
 *     p = prev.malloc(prev.ctx, size);
 *     memlens_sampling_unhold(held);                                     */
static inline uint64_t
memlens_sampling_hold(void)
{
    return memlens_sampling_tls.countdown;
}

static inline void
memlens_sampling_unhold(uint64_t held)
{
    memlens_sampling_tls.countdown = held;
}

/* memlens's own quiet work (hooks.h) does not move the marks: the
 * countdown is kept when the outermost quiet begins and put back when it
 * ends. */
static inline void
memlens_sampling_quiet_begin(void)
{
    memlens_sampling_tls.held = memlens_sampling_tls.countdown;
}

static inline void
memlens_sampling_quiet_end(void)
{
    memlens_sampling_tls.countdown = memlens_sampling_tls.held;
}

#endif
