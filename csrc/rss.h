/* rss.h: readers of the kernel's accounting of this process's memory. */
#ifndef MEMLENS_RSS_H
#define MEMLENS_RSS_H

#include "common.h"

#include <sys/types.h>

#define MEMLENS_PATH_MAX 512

/* Opens <proc dir>/<name> read-only and close-on-exec; -1 with errno set.
 * Safe without the GIL. `path` (MEMLENS_PATH_MAX bytes) receives the name
 * tried, for error messages. */
int memlens_proc_open(const char *name, char *path);

/* Reads the resident set size, in bytes, through an open statm fd.
 * Returns 0, or -1 with errno set (EINVAL: unparsable). No GIL needed,
 * touches no Python object: the sampler thread calls it. */
int memlens_rss_from_fd(int fd, uint64_t *rss);

/* Current RSS in bytes through the cached statm fd. Returns 0, or -1 with
 * an OSError naming the file. GIL held. */
int memlens_rss_now(uint64_t *rss);

/* The kernel's high-water mark (VmHWM) in bytes. 0, or -1 with OSError.
 * GIL held. */
int memlens_hwm_now(uint64_t *hwm);

/* Resets the kernel's high-water mark to the current RSS (writes 5 to
 * clear_refs), first folding the old mark into the lifetime peak and
 * returning it through *before. Returns 0, or -1 with errno set and no
 * Python exception, so that the caller may fall back to sampling. Only
 * peak.c calls it: open windows must see the old mark first. GIL held. */
int memlens_hwm_reset(uint64_t *before);

/* The highest RSS of the process's life, across our resets. 0 or -1 with
 * OSError. GIL held. */
int memlens_lifetime_peak(uint64_t *peak);

/* (bytes, count): summed RSS of every living descendant process, as a
 * new tuple, or NULL with an exception. GIL held (released inside). */
PyObject *memlens_children_rss(void);

/* Gives the C heap's free pages back to the OS (glibc's malloc_trim(0):
 * the free top of each arena and the whole free pages inside it), so that
 * RSS figures taken next do not depend on pages that earlier work freed
 * but the heap kept: reusing those makes no new page resident. Returns 1
 * if memory was released, 0 if none was or the C library has no such
 * call. Touches no Python object; GIL held or not. */
int memlens_heap_trim(void);

/* A growable list of process ids (libc memory). */
typedef struct {
    pid_t *pids; /* Owned (libc). */
    size_t count;
    size_t cap;
} memlens_pidlist;

/* Appends every living descendant of `pid` (children, grandchildren, ...)
 * to `l`, each once, from /proc/<pid>/task/<tid>/children. 0, or -1 when
 * out of memory. Touches no Python object: safe without the GIL. */
int memlens_descendants(pid_t pid, memlens_pidlist *l);

/* Resident set size of process `pid` in bytes, from /proc/<pid>/statm.
 * 0, or -1 with errno set (the process is gone, ...). No GIL needed. */
int memlens_rss_of_pid(pid_t pid, uint64_t *rss);

/* Bumped when tests point the readers at another folder. GIL. */
extern unsigned long memlens_proc_generation;

extern PyMethodDef memlens_rss_methods[];

int memlens_rss_init(PyObject *module);

#endif
