/* trace.h: allocation tracing by site (SPEC 5). */
#ifndef MEMLENS_TRACE_H
#define MEMLENS_TRACE_H

#include "common.h"

/* 1 while tracing (the hooks then call the two functions below). */
extern int memlens_trace_on; /* Atomic. */

/* Sampling (0: exact) and the "maybe recorded" bit filter of sampled
 * blocks; the hooks test them inline to pass unsampled blocks straight
 * through. Set at start, cleared at stop, with the GIL. */
extern uint64_t memlens_trace_sample_bytes;
extern uint64_t *memlens_trace_bloom;

static inline int
memlens_trace_bloom_maybe(uintptr_t ptr)
{
    uint64_t *bloom = memlens_trace_bloom;
    if (bloom == NULL) {
        return 1;
    }
    size_t b = (size_t)((((uint64_t)ptr >> 4) * UINT64_C(0x9E3779B97F4A7C15))
                        >> (64 - 20));
    return (
        int)((__atomic_load_n(&bloom[b >> 6], __ATOMIC_RELAXED) >> (b & 63))
             & 1);
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

/* A block handed out outside the Python allocators (NumPy's data); its
 * free passes its size. GIL held. */
void memlens_trace_external_alloc(void *ptr, size_t size);
void memlens_trace_external_free(void *ptr, size_t size);

int memlens_trace_init(PyObject *module);

#endif
