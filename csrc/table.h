/* table.h: the one open-addressing hash table memlens's tables use.
 *
 * Linear probing over a power-of-two array of entries, with backward-shift
 * deletion (no tombstones). An entry's key is a nonzero 64-bit number
 * that the table reads through the caller's `key_of`, 0 meaning an empty
 * slot; the entries themselves are the caller's struct, so that each
 * table keeps its own layout (12 packed bytes for a traced block, a
 * pointer and a size, a site index). Storage is the caller's, from libc:
 * the tables sit under allocator hooks and must not re-enter them.
 *
 * Header-only: each function takes its entry size and `key_of` as
 * constants and is inlined where it is used, so that a table's lookup
 * compiles to the same loop a hand-written one would. Not thread-safe;
 * each table's owner says what protects it.
 */
#ifndef MEMLENS_TABLE_H
#define MEMLENS_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MEMLENS_TABLE_INLINE static inline __attribute__((always_inline))

/* The one hash: Fibonacci hashing (2^64 / golden ratio), keeping high
 * bits of the product. A random spread: keeping neighbouring blocks in
 * neighbouring slots was tried, and the clusters it builds cost far more
 * than the cache misses it saves. */
#define MEMLENS_HASH_MUL UINT64_C(0x9E3779B97F4A7C15)

/* The home slot of `key` in a table of mask + 1 slots. */
MEMLENS_TABLE_INLINE size_t
memlens_table_home(uint64_t key, size_t mask)
{
    return (size_t)((key * MEMLENS_HASH_MUL) >> 20) & mask;
}

/* Heap blocks are 16-byte aligned: the size of a block of `size` bytes
 * rounded up to the next block's start. */
MEMLENS_TABLE_INLINE size_t
memlens_round16(size_t size)
{
    return (size + 15) & ~(size_t)15;
}

typedef uint64_t (*memlens_table_key_of)(const void *entry);

#define MEMLENS_TABLE_AT(slots, esize, i)                                     \
    ((void *)((char *)(slots) + (size_t)(i) * (esize)))

/* The slot holding `key`, or the empty slot where it would go. The table
 * must have an empty slot. */
MEMLENS_TABLE_INLINE size_t
memlens_table_find(const void *slots, size_t esize, size_t mask, uint64_t key,
                   memlens_table_key_of key_of)
{
    size_t i = memlens_table_home(key, mask);
    for (;;) {
        uint64_t k = key_of(MEMLENS_TABLE_AT(slots, esize, i));
        if (k == 0 || k == key) {
            return i;
        }
        i = (i + 1) & mask;
    }
}

/* Moves the entries of `old` (old_cap slots) into `slots` (zeroed, mask +
 * 1 slots, room for them all). */
MEMLENS_TABLE_INLINE void
memlens_table_rehash(void *slots, size_t mask, const void *old, size_t old_cap,
                     size_t esize, memlens_table_key_of key_of)
{
    for (size_t i = 0; i < old_cap; i++) {
        const void *e = MEMLENS_TABLE_AT(old, esize, i);
        uint64_t k = key_of(e);
        if (k != 0) {
            size_t j = memlens_table_find(slots, esize, mask, k, key_of);
            memcpy(MEMLENS_TABLE_AT(slots, esize, j), e, esize);
        }
    }
}

/* Empties slot `i`, moving later members of its run into the hole when
 * their home does not lie cyclically in (hole, j]: every key stays
 * reachable from its home without tombstones. */
MEMLENS_TABLE_INLINE void
memlens_table_remove(void *slots, size_t esize, size_t mask, size_t i,
                     memlens_table_key_of key_of)
{
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & mask;
        uint64_t k = key_of(MEMLENS_TABLE_AT(slots, esize, j));
        if (k == 0) {
            break;
        }
        size_t home = memlens_table_home(k, mask);
        int movable = (hole <= j) ? (home <= hole || home > j)
                                  : (home <= hole && home > j);
        if (movable) {
            memcpy(MEMLENS_TABLE_AT(slots, esize, hole),
                   MEMLENS_TABLE_AT(slots, esize, j), esize);
            hole = j;
        }
    }
    memset(MEMLENS_TABLE_AT(slots, esize, hole), 0, esize);
}

/* Whether a table of mask + 1 slots (none when `empty`) must grow before
 * one more entry goes in, at a load of num/den. */
MEMLENS_TABLE_INLINE int
memlens_table_full(int empty, size_t used, size_t mask, size_t num, size_t den)
{
    return empty || (used + 1) * den > (mask + 1) * num;
}

#endif
