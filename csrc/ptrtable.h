/* ptrtable.h: a pointer -> size table over table.h.
 *
 * The allocator hooks keep their live blocks in one (so that a free can
 * be sized), the line profiler its profiled code objects. Storage comes
 * from libc, never from the Python allocators the hooks sit on. Not
 * thread-safe: each table's owner says what protects it.
 */
#ifndef MEMLENS_PTRTABLE_H
#define MEMLENS_PTRTABLE_H

#include "table.h"

#include <stdlib.h>

typedef struct {
    uintptr_t ptr; /* 0 marks an empty slot. */
    size_t size;
} memlens_ptrtable_entry;

typedef struct {
    memlens_ptrtable_entry *slots; /* Owned (libc). */
    size_t mask;                   /* capacity - 1; a power of two. */
    size_t used;
} memlens_ptrtable;

#define MEMLENS_PTRTABLE_MIN_CAPACITY 1024

static inline uint64_t
memlens_ptrtable_key(const void *e)
{
    return ((const memlens_ptrtable_entry *)e)->ptr;
}

/* The slot of `ptr`, or the empty one where it would go. */
static inline size_t
memlens_ptrtable_find(const memlens_ptrtable *t, uintptr_t ptr)
{
    return memlens_table_find(t->slots, sizeof(memlens_ptrtable_entry),
                              t->mask, ptr, memlens_ptrtable_key);
}

/* Starts loading the slot of `ptr`, so that a lookup soon after finds it
 * in the cache: blocks of a size class are handed out, and often given
 * back, one next to the other. */
static inline void
memlens_ptrtable_prefetch(const memlens_ptrtable *t, uintptr_t ptr)
{
    if (t->slots != NULL) {
        __builtin_prefetch(&t->slots[memlens_table_home(ptr, t->mask)], 1);
    }
}

/* Records ptr -> size (replacing any entry). 0, or -1 when out of memory.
 * The load stays under 3/4 so that probe runs stay short. */
static inline int
memlens_ptrtable_put(memlens_ptrtable *t, uintptr_t ptr, size_t size)
{
    if (memlens_table_full(t->slots == NULL, t->used, t->mask, 3, 4)) {
        size_t old_cap = t->slots ? t->mask + 1 : 0;
        size_t cap = old_cap ? old_cap * 2 : MEMLENS_PTRTABLE_MIN_CAPACITY;
        memlens_ptrtable_entry *slots =
            calloc(cap, sizeof(memlens_ptrtable_entry));
        if (slots == NULL) {
            return -1;
        }
        memlens_table_rehash(slots, cap - 1, t->slots, old_cap,
                             sizeof(memlens_ptrtable_entry),
                             memlens_ptrtable_key);
        free(t->slots);
        t->slots = slots;
        t->mask = cap - 1;
    }
    size_t i = memlens_ptrtable_find(t, ptr);
    if (t->slots[i].ptr == 0) {
        t->slots[i].ptr = ptr;
        t->used++;
    }
    t->slots[i].size = size;
    return 0;
}

/* Looks ptr up; returns 1 and its size in *size, or 0 when absent. */
static inline int
memlens_ptrtable_get(const memlens_ptrtable *t, uintptr_t ptr, size_t *size)
{
    if (t->slots == NULL) {
        return 0;
    }
    size_t i = memlens_ptrtable_find(t, ptr);
    if (t->slots[i].ptr == 0) {
        return 0;
    }
    *size = t->slots[i].size;
    return 1;
}

/* Removes ptr; returns 1 and its size in *size, or 0 when absent. */
static inline int
memlens_ptrtable_pop(memlens_ptrtable *t, uintptr_t ptr, size_t *size)
{
    if (t->slots == NULL) {
        return 0;
    }
    size_t i = memlens_ptrtable_find(t, ptr);
    if (t->slots[i].ptr == 0) {
        return 0;
    }
    *size = t->slots[i].size;
    memlens_table_remove(t->slots, sizeof(memlens_ptrtable_entry), t->mask, i,
                         memlens_ptrtable_key);
    t->used--;
    return 1;
}

/* Frees the storage; the table is empty and usable again. */
static inline void
memlens_ptrtable_clear(memlens_ptrtable *t)
{
    free(t->slots);
    t->slots = NULL;
    t->mask = 0;
    t->used = 0;
}

#endif
