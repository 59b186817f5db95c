/* trace.h: allocation tracing by site (SPEC 5). */
#ifndef MEMLENS_TRACE_H
#define MEMLENS_TRACE_H

#include "common.h"

/* 1 while tracing (the hooks then call the two functions below). */
extern int memlens_trace_on; /* Atomic. */

/* Sampling (0: exact) and the filter of sampled blocks; the hooks test
 * them inline to pass unsampled blocks straight through. Set at start,
 * cleared at stop, with the GIL. */
extern uint64_t memlens_trace_sample_bytes;
extern uint8_t *memlens_trace_filter;

/* The filter is a counting Bloom filter with one hash: for each hash of an
 * address, how many recorded blocks have an address with that hash. A
 * block is counted when its record is made and uncounted when the record
 * goes, so a freed sample leaves nothing behind: in a loop that makes and
 * drops objects, pymalloc hands the same few addresses out again and again,
 * and once the sample taken at one of them is freed, their frees pass
 * straight through again. A count that reaches MEMLENS_TRACE_FILTER_FULL
 * stays there (maybe recorded, looked up) until tracing stops. */
#define MEMLENS_TRACE_FILTER_BITS 18
#define MEMLENS_TRACE_FILTER_FULL 255

/* The address's 16-byte granule, modulo the filter's size: blocks alike
 * in their address modulo 4 MiB share a count (no multiply on the path of
 * every free). */
static inline size_t
memlens_trace_filter_slot(uintptr_t ptr)
{
    return (size_t)(((uint64_t)ptr >> 4)
                    & ((UINT64_C(1) << MEMLENS_TRACE_FILTER_BITS) - 1));
}

/* Whether `ptr` may be a recorded block: 1 when exact (every block is);
 * when sampling, whether a recorded block has its hash. */
static inline int
memlens_trace_maybe_recorded(uintptr_t ptr)
{
    const uint8_t *filter =
        __atomic_load_n(&memlens_trace_filter, __ATOMIC_RELAXED);
    return filter == NULL
           || __atomic_load_n(&filter[memlens_trace_filter_slot(ptr)],
                              __ATOMIC_RELAXED)
                  != 0;
}

/* Whether this thread holds the GIL of the interpreter being traced. */
int memlens_trace_gil_here(void);

/* A block was handed out / is about to be given back, in `domain`. Called
 * from the hooks with their busy flag raised; with the GIL for the mem and
 * obj domains, maybe without it for the raw domain. Never raise. */
void memlens_trace_alloc(int domain, void *ptr, size_t size);
void memlens_trace_free(int domain, void *ptr);

/* The same for a resize, as one operation. */
void memlens_trace_realloc(int domain, void *old, void *ptr, size_t size);

/* Sampling in the mem and obj hooks that chain straight to pymalloc
 * (hooks.c): the weight an allocation of `size` bytes gets (0: not
 * recorded; the countdown moves either way), and the record of a block
 * given that weight. The record goes to the raw domain's table: such a
 * block is one pymalloc handed on to the raw domain, and its free comes
 * back through there. GIL held. */
uint64_t memlens_trace_weigh(size_t size);
void memlens_trace_put_weighed(void *ptr, uint64_t weight);

/* A block handed out outside the Python allocators (NumPy's data); its
 * free passes its size. GIL held. */
void memlens_trace_external_alloc(void *ptr, size_t size);
void memlens_trace_external_free(void *ptr, size_t size);

int memlens_trace_init(PyObject *module);

#endif
