/* lineprof.h: line-by-line memory attribution (two event backends). */
#ifndef MEMLENS_LINEPROF_H
#define MEMLENS_LINEPROF_H

#include "common.h"

/* What one line of a profiled function accumulated. */
typedef struct {
    uint64_t hits;      /* Occurrences. */
    int64_t increment;  /* RSS change, summed over occurrences (bytes). */
    uint64_t mem_usage; /* Highest RSS seen after the line (bytes). */
    uint64_t allocated; /* Bytes handed out on the line (alloc mode). */
    uint64_t freed;     /* Bytes of those and earlier blocks given back. */
    uint32_t quick;     /* Timed occurrences in a row that ran quick. */
    uint32_t untimed;   /* Occurrences to end untimed before the next. */
} memlens_line_stat;

/* Profiling sessions open (for the leak checks). GIL. */
long memlens_lineprof_active(void);

int memlens_lineprof_init(PyObject *module);

#endif
