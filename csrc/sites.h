/* sites.h: allocation sites, interned: where in the Python code a block
 * was asked for (SPEC 5).
 *
 * A site is the traceback of up to `nframes` Python frames, interned once
 * and named by a small index that tracing.c's block tables hold. sites.c
 * reads the current thread's frames (in place where compat.h knows the
 * layout), caches line numbers, and interns. GIL held throughout.
 *
 * Who writes what: sites.c writes a site's identity (hash, frames) when
 * interning it, and clears all sites at start; the figures (live bytes,
 * peak) are tracing.c's, zeroed by interning.
 */
#ifndef MEMLENS_SITES_H
#define MEMLENS_SITES_H

#include "common.h"

/* A site index fits 20 bits (the block tables pack it beside the
 * address). */
#define MEMLENS_SITE_BITS 20
#define MEMLENS_SITES_MAX ((1u << MEMLENS_SITE_BITS) - 1)
#define MEMLENS_SITES_MAX_FRAMES 100

/* Allocations whose stack could not be seen. */
#define MEMLENS_SITE_UNKNOWN 0
/* Native blocks of a thread whose Python origin is unknown. */
#define MEMLENS_SITE_NATIVE_THREAD 1
/* Not a site: the block is memlens's own, and is not recorded. */
#define MEMLENS_SITE_NONE UINT32_MAX

typedef struct {
    PyObject *code; /* Owned. */
    int line;
} memlens_site_frame;

typedef struct {
    /* Written by sites.c when interned, then read-only. */
    uint64_t hash;
    int nframes;                /* 0: the "unknown" site. */
    memlens_site_frame *frames; /* Owned (libc); most recent first. */
    int native;                 /* Native blocks (native.c), not Python's. */
    uint32_t twin; /* The same frames' other kind, once made; 0: none. */
    /* Written by tracing.c (GIL); zero when interned. */
    int dirty;           /* Touched since the last peak copy. */
    int64_t size, count; /* Live now (estimated when sampling). */
    int64_t peak_size, peak_count;
    int64_t allocated, allocations; /* Handed out since the start. */
    int64_t peak_allocated, peak_allocations;
} memlens_site;

/* Sites by index, in chunks that never move (the index is what a table
 * entry holds). Written by sites.c; GIL. */
#define MEMLENS_SITES_CHUNK 1024
extern memlens_site
    *memlens_sites_chunks[MEMLENS_SITES_MAX / MEMLENS_SITES_CHUNK + 1];
extern uint32_t memlens_sites_count; /* Sites interned, the unknown one too. */

static inline memlens_site *
memlens_site_at(uint32_t i)
{
    return &memlens_sites_chunks[i / MEMLENS_SITES_CHUNK]
                                [i % MEMLENS_SITES_CHUNK];
}

/* Drops every site and the line cache; then makes the unknown site and
 * takes `nframes` frames per site from now on. 0, or -1 with
 * MemoryError. */
int memlens_sites_start(int nframes);

/* Drops every site and the line cache (their references too). GIL,
 * outside the allocator hooks. */
void memlens_sites_clear(void);

/* The site of the Python stack of `ts`, this thread's state (borrowed),
 * interned on first sight; MEMLENS_SITE_UNKNOWN when out of room,
 * MEMLENS_SITE_NONE for memlens's own code. From the allocator hooks:
 * never raises. */
uint32_t memlens_sites_current(PyThreadState *ts);

/* The native twin of `site` (the same frames, for blocks the native hooks
 * saw), interned on first use; MEMLENS_SITE_NATIVE_THREAD for the unknown
 * site or when out of room. GIL held; never raises. */
uint32_t memlens_sites_native(uint32_t site);

/* The bytes sites.c holds for the sites and its caches. GIL. */
size_t memlens_sites_own_bytes(void);

/* Frames per site, as last started. */
int memlens_sites_nframes(void);

/* Sites not interned for want of memory or room since the start. */
uint64_t memlens_sites_failures(void);

/* Whether this run reads frames in place (compat.h). */
int memlens_sites_in_place(void);

/* From the next start, read frames through the API only (tests). */
void memlens_sites_frames_api(int flag);

/* The folders whose frames sites pass over (`skipped`) and those of
 * memlens's own code (`own`): tuples of str, new references taken. */
void memlens_sites_skip(PyObject *skipped, PyObject *own);

/* A tuple of (filename, lineno) pairs, most recent first, or with
 * `functions` of (filename, lineno, function name) triples; NULL with an
 * exception. */
PyObject *memlens_site_traceback(const memlens_site *s, int functions);

#endif
