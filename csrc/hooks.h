/* hooks.h: allocator hooks on the raw, mem and obj domains. */
#ifndef MEMLENS_HOOKS_H
#define MEMLENS_HOOKS_H

#include "common.h"

/* What one thread has seen through the hooks. Thread-local, owned by
 * hooks.c: other units read it and move the busy flag only through the
 * inline functions below (memlens_hooks_enter/leave, the totals). */
typedef struct {
    int busy;           /* Inside one of our hooks (the low bits, a depth):
                           do not record again. MEMLENS_HOOKS_QUIET added:
                           memlens's own code at work (below). */
    int probe;          /* Probing which domains still reach our hooks. */
    void *probe_in;     /* While probing: the block the last call through */
    void *probe_out;    /* a hook took in (freed, resized) and gave out. */
    uint64_t allocated; /* Bytes handed out to this thread (exact mode). */
    uint64_t freed;     /* Bytes of known blocks it gave back (exact). */
    int quiet;          /* Depth of memlens_hooks_quiet(1) calls. */
} memlens_hooks_thread;

extern MEMLENS_TLS memlens_hooks_thread memlens_hooks_tls;

/* While memlens's own code builds its results (snapshots, tables) or
 * switches itself on and off, the thread's busy flag holds
 * MEMLENS_HOOKS_QUIET: the blocks it hands out are neither recorded nor
 * counted (only the churn sees them), so that memlens never reports, nor
 * raises a traced peak with, its own work. Frees are still recorded: the
 * code may let go of the program's blocks (a collection). The recording
 * paths already test the busy flag, so the quiet costs them nothing. The
 * bits below it count the depth of our own hooks. */
#define MEMLENS_HOOKS_QUIET (1 << 16)
#define MEMLENS_HOOKS_INSIDE (MEMLENS_HOOKS_QUIET - 1)

/* Raises (on) or lowers (off) this thread's quiet; the calls nest. The
 * sampling countdown is put back when the last one is lowered: memlens's
 * bytes do not move the marks. Any thread; no GIL needed. */
void memlens_hooks_quiet(int on);

/* This thread's quiet depth. */
static inline int
memlens_hooks_quiet_depth(void)
{
    return memlens_hooks_tls.quiet;
}

/* Whether this thread is inside one of our hooks or in the quiet: what it
 * allocates now is not the program's. */
static inline int
memlens_hooks_busy(void)
{
    return memlens_hooks_tls.busy != 0;
}

/* Around a call made outside the Python allocators that our hooks must
 * not record again (NumPy's data handler calling PyMem): raises and
 * lowers this thread's busy flag. */
static inline void
memlens_hooks_enter(void)
{
    memlens_hooks_tls.busy++;
}

static inline void
memlens_hooks_leave(void)
{
    memlens_hooks_tls.busy--;
}

/* Bytes this thread was handed and gave back through the hooks in exact
 * mode, since it started (the line profiler's alloc columns). */
static inline uint64_t
memlens_hooks_thread_allocated(void)
{
    return memlens_hooks_tls.allocated;
}

static inline uint64_t
memlens_hooks_thread_freed(void)
{
    return memlens_hooks_tls.freed;
}

/* Bytes allocated or freed in the whole process since import, roughly
 * (updated with relaxed loads and stores, never a locked instruction, so
 * concurrent updates may be lost): RSS cannot move much while it stands
 * still. A free whose size is unknown counts MEMLENS_CHURN_UNKNOWN_FREE. */
extern uint64_t memlens_hooks_churn;

/* Small blocks (pymalloc's, up to MEMLENS_SMALL_BLOCK bytes) counted in
 * and out: only their net growth can move RSS, and a loop that makes and
 * drops them keeps this still. Same relaxed updates as the churn. */
extern int64_t memlens_hooks_small_net;

#define MEMLENS_CHURN_UNKNOWN_FREE (64 * 1024)
#define MEMLENS_SMALL_BLOCK 512

static inline void
memlens_churn_add(uint64_t n)
{
    uint64_t v = __atomic_load_n(&memlens_hooks_churn, __ATOMIC_RELAXED);
    __atomic_store_n(&memlens_hooks_churn, v + n, __ATOMIC_RELAXED);
}

static inline void
memlens_small_net_add(int64_t n)
{
    int64_t v = __atomic_load_n(&memlens_hooks_small_net, __ATOMIC_RELAXED);
    __atomic_store_n(&memlens_hooks_small_net, v + n, __ATOMIC_RELAXED);
}

/* Users of the hooks. `exact` users need every block sized on free (the
 * live-block table, a lock per call); the others only need the churn.
 * Install on the first user, uninstall after the last. GIL held. Acquiring
 * fails (RuntimeError, -1) when hooks that cannot see frees are held in a
 * chain by another hook above them and the new user needs frees. */
int memlens_hooks_acquire(int exact);
void memlens_hooks_release(int exact);

/* What allocation tracing (tracing.c) listens with: the hooks call these
 * with their busy flag raised, with the GIL for the mem and obj domains,
 * maybe without it for the raw domain. They never raise.
 *   alloc, free    a block handed out / about to be given back;
 *   weigh          the lean hooks (chaining straight to pymalloc, when
 *                  sampling alone): the weight of an allocation of `size`
 *                  bytes (0: not recorded; the countdown moves either
 *                  way), GIL checked;
 *   put_weighed    the record of a block given that weight, after weigh
 *                  said nonzero. The record goes to the raw domain's
 *                  table: pymalloc handed the block on to the raw domain,
 *                  and its free comes back through there. */
typedef struct {
    void (*alloc)(int domain, void *ptr, size_t size);
    void (*free)(int domain, void *ptr);
    uint64_t (*weigh)(size_t size);
    void (*put_weighed)(void *ptr, uint64_t weight);
} memlens_hooks_tracer;

/* Registers the tracer, once, before the first memlens_hooks_trace(1).
 * It stays: a raw call without the GIL may still be reading it after a
 * stop. GIL held. */
void memlens_hooks_set_tracer(const memlens_hooks_tracer *tracer);

/* Turns the tracer's records on or off in the hooks. GIL held. Turning on
 * may fail as acquiring does. */
int memlens_hooks_trace(int on);

/* Counts an allocation or a free made outside the Python allocators (the
 * NumPy data handler), for the thread-local counters and the churn. */
void memlens_hooks_note_external(uint64_t allocated, uint64_t freed);

/* 1 while our hooks sit in an allocator chain (recording or not). GIL. */
int memlens_hooks_installed(void);

/* Users that asked for the hooks. GIL. */
long memlens_hooks_users(void);

int memlens_hooks_init(PyObject *module);

#endif
