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

/* Registers tracing's listener with the hooks and the Python API. */
int memlens_tracing_init(PyObject *module);

#endif
