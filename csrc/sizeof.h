/* sizeof.h: deep sizes walked in C, and the walk census.c reuses. */
#ifndef MEMLENS_SIZEOF_H
#define MEMLENS_SIZEOF_H

#include "common.h"

/* The set of objects already seen: a bit per 16 bytes of address space,
 * in bitmaps of 64 KiB regions found through a small hash table. Objects
 * made one after the other sit in the same region, so a walk touches a
 * few hot bitmaps instead of a cache line of a big table per object. Two
 * distinct objects (at least 16 bytes each, never overlapping) never share
 * a bit. */
#define SEEN_REGION_SHIFT 16
#define SEEN_WORDS ((1 << (SEEN_REGION_SHIFT - 4)) / 64)

typedef struct {
    uintptr_t base; /* address >> SEEN_REGION_SHIFT */
    uint64_t bits[SEEN_WORDS];
} memlens_sizeof_region;

typedef struct {
    memlens_sizeof_region **slots; /* Owned (libc), and each region. */
    size_t mask;
    size_t used;
    memlens_sizeof_region *last; /* Borrowed: the region hit last. */
} memlens_sizeof_set;

/* A type's strategy, for one walk. */
typedef struct {
    uintptr_t type; /* 0: empty */
    unsigned char strategy;
} memlens_sizeof_type;

typedef struct {
    memlens_sizeof_set seen;
    PyObject **stack;   /* Owned (libc); each item holds a reference. */
    Py_ssize_t *levels; /* Owned (libc): each stack item's depth. */
    size_t depth, cap, levels_cap;
    Py_ssize_t level; /* Depth of the object being followed. */
    /* type -> strategy, for this walk (types stay alive meanwhile). */
    memlens_sizeof_type *types; /* Owned (libc). */
    size_t types_mask, types_used;
    PyObject *object_sizeof; /* Owned: object.__sizeof__. */
    uintptr_t last_type;     /* One-entry cache of the table below. */
    unsigned char last_strategy;
    uint64_t errors; /* __sizeof__ that failed. */
    int oom;
    int failed;       /* A lookup raised what must propagate (still set). */
    Py_ssize_t limit; /* Objects this deep are counted, not followed; -1:
                       * none. */
    unsigned visits;  /* Objects walked since the last signal check. */
} memlens_sizeof_walk;

/* Marks o seen and pushes a new reference to it, unless it was seen
 * already: each object is pushed once. 0, or -1 out of memory. */
int memlens_sizeof_push(memlens_sizeof_walk *w, PyObject *o);

/* Adds p to the seen set; 1 if it was new, 0 if already there, -1 out of
 * memory. */
int memlens_sizeof_set_add(memlens_sizeof_set *s, uintptr_t p);

/* What sys.getsizeof(o) reports; -1 with an exception that must
 * propagate (from a __sizeof__, or OverflowError). */
Py_ssize_t memlens_sizeof_one(memlens_sizeof_walk *w, PyObject *o);

/* Pushes what o refers to. 0, or -1 with an exception. */
int memlens_sizeof_follow(memlens_sizeof_walk *w, PyObject *o);

/* Whether o is program (module, class, function, code): neither counted
 * nor followed when reached. */
int memlens_sizeof_excluded(PyObject *o);

/* Runs pending signal handlers every so many objects; -1 with their
 * exception. */
int memlens_sizeof_tick(memlens_sizeof_walk *w);

/* -1, with MemoryError unless an exception is set already. */
int memlens_sizeof_abort(void);

/* *total += n, or -1 with OverflowError past PY_SSIZE_T_MAX. */
int memlens_sizeof_add64(int64_t *total, int64_t n);

/* Releases what the walk holds. */
void memlens_sizeof_walk_clear(memlens_sizeof_walk *w);

int memlens_sizeof_init(PyObject *module);

#endif
