/* tracing.h: allocation tracing by site (SPEC 5). */
#ifndef MEMLENS_TRACING_H
#define MEMLENS_TRACING_H

#include "common.h"

/* 1 while tracing. Written by tracing.c (GIL). Atomic. */
extern int memlens_tracing_on;

/* Whether this thread holds the GIL of the interpreter being traced. */
int memlens_tracing_gil_here(void);

/* A block handed out outside the Python allocators (NumPy's data); its
 * free passes its size. GIL held, busy flag raised (hooks.h). */
void memlens_tracing_external_alloc(void *ptr, size_t size);
void memlens_tracing_external_free(void *ptr, size_t size);

/* The native hooks' calls (native.c), with their busy flag raised, from
 * any thread. `fallback` is the site of a thread without the GIL.
 *   native_site    the native site of this thread's Python stack when it
 *                  holds the GIL, else `fallback`; MEMLENS_SITE_NONE for
 *                  memlens's own code;
 *   native_put     a block of `size` bytes standing for `weight`;
 *   native_forget  a block about to be given back;
 *   native_change  a mapping's bytes and blocks moved on `site`. */
uint32_t memlens_tracing_native_site(uint32_t fallback);
void memlens_tracing_native_put(void *ptr, size_t size, uint64_t weight,
                                uint32_t fallback);
void memlens_tracing_native_forget(void *ptr);
void memlens_tracing_native_change(uint32_t site, int64_t bytes,
                                   int64_t count);

/* Registers tracing's listener with the hooks and the Python API. */
int memlens_tracing_init(PyObject *module);

#endif
