/* sites.c: the table of live blocks, pointer -> size.
 *
 * The allocator hooks record every block they see handed out and look it
 * up again when it is given back, so that a free can be sized. Called only
 * from inside the hooks, with the hooks' lock held; it allocates with libc
 * so that it never re-enters the Python allocators.
 */
#include "sites.h"

#include <stdlib.h>

#define SITES_MIN_CAPACITY 1024

/* Inserts into a table known to have room and no entry for ptr. */
static void
sites_insert_new(memlens_ptrtable *t, uintptr_t ptr, size_t size)
{
    size_t i = memlens_ptrtable_slot(t, ptr);
    while (t->slots[i].ptr != 0) {
        i = (i + 1) & t->mask;
    }
    t->slots[i].ptr = ptr;
    t->slots[i].size = size;
    t->used++;
}

/* Doubles the capacity (or makes the first table). 0 or -1. */
static int
sites_grow(memlens_ptrtable *t)
{
    size_t old_cap = t->slots ? t->mask + 1 : 0;
    size_t cap = old_cap ? old_cap * 2 : SITES_MIN_CAPACITY;
    sites_entry *old = t->slots;
    sites_entry *slots = calloc(cap, sizeof(sites_entry));
    if (slots == NULL) {
        return -1;
    }
    t->slots = slots;
    t->mask = cap - 1;
    t->used = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].ptr != 0) {
            sites_insert_new(t, old[i].ptr, old[i].size);
        }
    }
    free(old);
    return 0;
}

int
memlens_ptrtable_put(memlens_ptrtable *t, uintptr_t ptr, size_t size)
{
    if (t->slots != NULL) {
        size_t i = memlens_ptrtable_slot(t, ptr);
        while (t->slots[i].ptr != 0) {
            if (t->slots[i].ptr == ptr) {
                t->slots[i].size = size;
                return 0;
            }
            i = (i + 1) & t->mask;
        }
    }
    /* Keep the load under 3/4 so that probe runs stay short. */
    if (t->slots == NULL || (t->used + 1) * 4 > (t->mask + 1) * 3) {
        if (sites_grow(t) < 0) {
            return -1;
        }
    }
    sites_insert_new(t, ptr, size);
    return 0;
}

/* The slot holding ptr, or -1. */
static long long
sites_find(const memlens_ptrtable *t, uintptr_t ptr)
{
    if (t->slots == NULL) {
        return -1;
    }
    size_t i = memlens_ptrtable_slot(t, ptr);
    while (t->slots[i].ptr != ptr) {
        if (t->slots[i].ptr == 0) {
            return -1;
        }
        i = (i + 1) & t->mask;
    }
    return (long long)i;
}

int
memlens_ptrtable_get(const memlens_ptrtable *t, uintptr_t ptr, size_t *size)
{
    long long i = sites_find(t, ptr);
    if (i < 0) {
        return 0;
    }
    *size = t->slots[i].size;
    return 1;
}

int
memlens_ptrtable_pop(memlens_ptrtable *t, uintptr_t ptr, size_t *size)
{
    long long found = sites_find(t, ptr);
    if (found < 0) {
        return 0;
    }
    size_t i = (size_t)found;
    *size = t->slots[i].size;
    /* Backward-shift: move later members of the run into the hole when
     * their home slot does not lie cyclically in (hole, j]. */
    size_t hole = i;
    size_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (t->slots[j].ptr == 0) {
            break;
        }
        size_t home = memlens_ptrtable_slot(t, t->slots[j].ptr);
        int movable = (hole <= j) ? (home <= hole || home > j)
                                  : (home <= hole && home > j);
        if (movable) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    t->slots[hole].ptr = 0;
    t->slots[hole].size = 0;
    t->used--;
    return 1;
}

void
memlens_ptrtable_clear(memlens_ptrtable *t)
{
    free(t->slots);
    t->slots = NULL;
    t->mask = 0;
    t->used = 0;
}
