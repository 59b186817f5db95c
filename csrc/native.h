/* native.h: native memory (SPEC 9): every loaded library's malloc family
 * and anonymous mappings, hooked through their GOT slots (elfpatch.h),
 * recorded by tracing.c on the Python line that caused them, and counted
 * by their resident pages. */
#ifndef MEMLENS_NATIVE_H
#define MEMLENS_NATIVE_H

#include "common.h"

/* Blocks this big (and every mapping) are counted by their resident
 * pages: smaller ones are taken as resident. */
#define MEMLENS_NATIVE_LARGE ((size_t)64 * 1024)

/* 1 while the native hooks record. Atomic. */
extern int memlens_native_on;

/* With native tracing, the peak snapshot is taken when RSS reaches a new
 * high (the peak of what the OS charges), not when the recorded bytes do:
 * a thread of ours samples RSS every millisecond and, at each new high
 * (by a step, so that the copies stay few), leaves it here for the next
 * traced call with the GIL to copy the peak. 0: none pending. Atomic. */
extern uint64_t memlens_native_peak_pending;

/* Takes the pending high (0 if none). Any thread. */
static inline uint64_t
memlens_native_take_peak(void)
{
    return __atomic_exchange_n(&memlens_native_peak_pending, 0,
                               __ATOMIC_RELAXED);
}

/* Reads RSS now and, at a new high, leaves it pending (as the sampler
 * does between its samples). Any thread. */
void memlens_native_check_peak(void);

/* The peak starts again from `rss`: only a higher RSS makes a new one. */
void memlens_native_reset_peak(uint64_t rss);

/* Patches every loaded object and starts recording and watching RSS from
 * `rss` (the RSS at the start). GIL held, tracing just started. 0, or -1
 * with an exception (nothing left patched). */
int memlens_native_start(uint64_t rss);

/* Stops recording and puts every slot back. GIL held. */
void memlens_native_stop(void);

/* A block of `size` bytes at `ptr` recorded with `weight` on `site`
 * (any domain): if it is large, its pages are looked at for the resident
 * figures. Any thread. */
void memlens_native_block_put(void *ptr, size_t size, uint64_t weight,
                              uint32_t site);

/* A recorded block of `weight` goes: forgotten if it was large. */
void memlens_native_block_pop(void *ptr, uint64_t weight);

/* Adds to discount[site] (sites below nsites), for every large block and
 * mapping, its resident bytes less its recorded bytes. Any thread. */
void memlens_native_discount(int64_t *discount, uint32_t nsites);

/* The site of the Python stack that created this thread while native
 * tracing ran (a thread made by a hooked pthread_create, Python's own
 * included), or MEMLENS_SITE_NONE. Its own thread. */
uint32_t memlens_native_creator(void);

/* RSS now, read through a statm of native tracing's own; 0 when it
 * cannot be read. Any thread; never raises. */
uint64_t memlens_native_rss(void);

/* The bytes the region tables hold. Any thread. */
size_t memlens_native_own_bytes(void);

int memlens_native_init(PyObject *module);

#endif
