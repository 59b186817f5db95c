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

/* Patches every loaded object and starts recording. GIL held, tracing
 * just started. 0, or -1 with an exception (nothing left patched). */
int memlens_native_start(void);

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
 * mapping, its resident bytes less its recorded bytes; returns the sum.
 * Any thread. */
int64_t memlens_native_discount(int64_t *discount, uint32_t nsites);

int memlens_native_init(PyObject *module);

#endif
