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

/* The last few addresses this thread freed that the filter let through
 * but the tables did not have. pymalloc hands a freed block out again at
 * once, so in a loop that makes and drops objects the same few addresses
 * come back; when a sampled block was once there, its filter bit stays set
 * and every later free of that address would look it up in vain. Valid
 * while memlens_trace_generation is unchanged: it moves whenever a block
 * is recorded, so a block recorded anywhere since is never hidden by it. */
#define MEMLENS_TRACE_ABSENT 4
typedef struct {
    uint64_t generation;
    uintptr_t ptr[MEMLENS_TRACE_ABSENT];
    unsigned next;
} memlens_trace_absent_cache;

extern MEMLENS_TLS memlens_trace_absent_cache memlens_trace_absent;
extern uint64_t memlens_trace_generation; /* Atomic. */

/* Whether `ptr` may be a recorded block: 1 when exact (every block is);
 * when sampling, by the bit filter and this thread's misses. */
static inline int
memlens_trace_bloom_maybe(uintptr_t ptr)
{
    uint64_t *bloom = memlens_trace_bloom;
    if (bloom == NULL) {
        return 1;
    }
    size_t b = (size_t)((((uint64_t)ptr >> 4) * UINT64_C(0x9E3779B97F4A7C15))
                        >> (64 - 20));
    if (!((__atomic_load_n(&bloom[b >> 6], __ATOMIC_RELAXED) >> (b & 63))
          & 1)) {
        return 0;
    }
    memlens_trace_absent_cache *c = &memlens_trace_absent;
    if (c->generation
        != __atomic_load_n(&memlens_trace_generation, __ATOMIC_ACQUIRE)) {
        return 1;
    }
    for (int k = 0; k < MEMLENS_TRACE_ABSENT; k++) {
        if (c->ptr[k] == ptr) {
            return 0;
        }
    }
    return 1;
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
