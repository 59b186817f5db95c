/* common.h: the one header every memlens C file includes.
 *
 * Holds the Python include, the macros and thread-local helpers every unit
 * needs, and the module state. The version shims and mirrors of private
 * CPython layouts are in compat.h, included here.
 */
#ifndef MEMLENS_COMMON_H
#define MEMLENS_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <sched.h>

#ifdef MEMLENS_FORCE_BUILD_ERROR
/* Lets the test suite check that a broken C build fails the install. */
#error "memlens: build failure forced by MEMLENS_FORCE_BUILD_ERROR"
#endif

#if !defined(__linux__)
/* Only Linux is claimed: the readers need /proc/self. */
#error "memlens: only Linux is supported"
#endif

#include "compat.h"

/* Thread-locals read on every allocation. The initial-exec model turns
 * each access into one instruction instead of a call to __tls_get_addr;
 * it draws on glibc's small reserve of static TLS for libraries loaded
 * later, so memlens keeps its thread-locals to a few hundred bytes. */
#define MEMLENS_TLS _Thread_local __attribute__((tls_model("initial-exec")))

/* The rest of a function whose first lines are a fast path: kept out of
 * line, so that the fast path needs no saved registers or stack frame. */
#define MEMLENS_SLOW_PATH __attribute__((noinline))

/* Makes room for one more item in a libc array of `*cap` items of `size`
 * bytes (doubling, from `first`). 0, or -1 when out of memory (the array
 * is left as it was). For code that must not touch Python's allocators. */
static inline int
memlens_grow(void **array, size_t *cap, size_t used, size_t size, size_t first)
{
    if (used < *cap) {
        return 0;
    }
    size_t n = *cap ? *cap * 2 : first;
    if (n > SIZE_MAX / size) {
        return -1;
    }
    void *p = realloc(*array, n * size);
    if (p == NULL) {
        return -1;
    }
    *array = p;
    *cap = n;
    return 0;
}

/* ---- Spin lock ---------------------------------------------------------- */

/* A lock for the few instructions an allocation hook keeps a shared table
 * to itself: one atomic exchange to take, a plain store to give back,
 * where a pthread mutex costs a call and an atomic both ways. A waiter
 * spins briefly, then yields the CPU to the holder (which may have been
 * preempted, or be growing the table). 0 is unlocked. */
typedef int memlens_spinlock;

static inline void
memlens_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int
memlens_spin_trylock(memlens_spinlock *lock)
{
    return __atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE) == 0;
}

static inline void
memlens_spin_lock(memlens_spinlock *lock)
{
    while (!memlens_spin_trylock(lock)) {
        int spins = 0;
        while (__atomic_load_n(lock, __ATOMIC_RELAXED)) {
            if (++spins < 100) {
                memlens_cpu_relax();
            }
            else {
                sched_yield();
            }
        }
    }
}

static inline void
memlens_spin_unlock(memlens_spinlock *lock)
{
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

/* ---- Module state ----------------------------------------------------- */

typedef struct {
    PyTypeObject *sampler_type;  /* Owned. */
    PyTypeObject *window_type;   /* Owned. */
    PyTypeObject *recorder_type; /* Owned. */
    PyTypeObject *usage_type;    /* Owned. */
} memlens_state;

#endif /* MEMLENS_COMMON_H */
