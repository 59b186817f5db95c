/* sites.h: the pointer -> size table of live blocks seen by the hooks. */
#ifndef MEMLENS_SITES_H
#define MEMLENS_SITES_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uintptr_t ptr; /* 0 marks an empty slot. */
    size_t size;
} sites_entry;

/* Open addressing, linear probing, backward-shift deletion (no
 * tombstones). Storage comes from libc, never from the Python allocators
 * the hooks sit on. Not thread-safe: the caller holds the hooks' lock. */
typedef struct {
    sites_entry *slots; /* Owned (libc). */
    size_t mask;        /* capacity - 1; capacity a power of two. */
    size_t used;
} memlens_ptrtable;

/* Records ptr -> size (replacing any entry). 0, or -1 when out of memory. */
/* The slot where `ptr` is looked for first. */
static inline size_t
memlens_ptrtable_slot(const memlens_ptrtable *t, uintptr_t ptr)
{
    /* Blocks are 16-byte aligned: drop the always-zero bits, then mix. */
    uint64_t h = (uint64_t)(ptr >> 4) * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h ^ (h >> 29)) & t->mask;
}

/* Starts loading the slot of `ptr`, so that a lookup soon after finds it
 * in the cache: blocks of a size class are handed out, and often given
 * back, one next to the other. */
static inline void
memlens_ptrtable_prefetch(const memlens_ptrtable *t, uintptr_t ptr)
{
    if (t->slots != NULL) {
        __builtin_prefetch(&t->slots[memlens_ptrtable_slot(t, ptr)], 1);
    }
}

int memlens_ptrtable_put(memlens_ptrtable *t, uintptr_t ptr, size_t size);

/* Looks ptr up; returns 1 and its size in *size, or 0 when absent. */
int memlens_ptrtable_get(const memlens_ptrtable *t, uintptr_t ptr,
                         size_t *size);

/* Removes ptr; returns 1 and its size in *size, or 0 when absent. */
int memlens_ptrtable_pop(memlens_ptrtable *t, uintptr_t ptr, size_t *size);

/* Frees the storage; the table is empty and usable again. */
void memlens_ptrtable_clear(memlens_ptrtable *t);

#endif
