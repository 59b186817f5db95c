/* sampling.c: the slow path of sampling: drawing the gaps between marks.
 *
 * The gaps between marks are N +/- 10% at random: the jitter breaks the
 * aliasing a fixed period would have with a loop that allocates a fixed
 * amount per iteration, while keeping the count of marks in T bytes within
 * a few percent of T / N (a Poisson process would scatter it by
 * sqrt(T / N)). A recorded block keeps its weight, not its size, for the
 * free.
 *
 * Called from the allocator hooks and tracing.c on the allocating thread,
 * with or without the GIL (raw domain); touches only that thread's state
 * and never a Python object. Start and stop: GIL held.
 */
#include "sampling.h"

#include <stdlib.h>

uint64_t memlens_sampling_bytes = 0;
uint8_t *memlens_sampling_filter = NULL;
MEMLENS_TLS memlens_sampling_thread memlens_sampling_tls;
unsigned long memlens_sampling_generation = 1;

static uint8_t *sampling_filter_store = NULL; /* Owned (libc); never freed. */

uint8_t *
memlens_sampling_filter_store(void)
{
    if (sampling_filter_store == NULL) {
        sampling_filter_store = calloc(MEMLENS_SAMPLING_FILTER_SLOTS, 1);
    }
    return sampling_filter_store;
}

void
memlens_sampling_start(uint64_t bytes, uint8_t *filter)
{
    __atomic_store_n(&memlens_sampling_filter, filter, __ATOMIC_SEQ_CST);
    memlens_sampling_bytes = bytes;
    memlens_sampling_generation++;
}

void
memlens_sampling_stop(void)
{
    __atomic_store_n(&memlens_sampling_filter, NULL, __ATOMIC_SEQ_CST);
}

/* The next gap between marks, N +/- 10%. */
static inline uint64_t
sampling_next_gap(memlens_sampling_thread *t)
{
    if (t->rng == 0) {
        t->rng = (uint64_t)(uintptr_t)t ^ UINT64_C(0x2545F4914F6CDD1D);
    }
    /* xorshift64* */
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    double u = (double)((t->rng * UINT64_C(2685821657736338717)) >> 11)
               * (1.0 / 9007199254740992.0);
    double gap = (double)memlens_sampling_bytes * (0.9 + 0.2 * u);
    return gap < 1.0 ? 1 : (uint64_t)gap;
}

MEMLENS_SLOW_PATH uint64_t
memlens_sampling_weight_slow(uint64_t size)
{
    uint64_t n = memlens_sampling_bytes;
    memlens_sampling_thread *t = &memlens_sampling_tls;
    if (t->phase != memlens_sampling_generation) {
        /* A fresh start: a random phase, so threads do not march in
         * step. */
        t->countdown = sampling_next_gap(t) / 2 + 1;
        t->phase = memlens_sampling_generation;
    }
    if (size < t->countdown) {
        t->countdown -= size;
        return 0;
    }
    uint64_t rest = size - t->countdown;
    uint64_t marks = 1;
    if (rest >= 64 * n) {
        marks += rest / n;
        t->countdown = sampling_next_gap(t);
    }
    else {
        uint64_t gap = sampling_next_gap(t);
        while (rest >= gap) {
            rest -= gap;
            marks++;
            gap = sampling_next_gap(t);
        }
        t->countdown = gap - rest;
    }
    return marks * n;
}
