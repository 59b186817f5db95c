/* readings.h: readers of the kernel's accounting of this process's memory. */
#ifndef MEMLENS_READINGS_H
#define MEMLENS_READINGS_H

#include "common.h"

#include <sys/types.h>

#define MEMLENS_PATH_MAX 512

/* Descriptors of our own sit at this number or above when the limit
 * allows: a program's own files take the lowest free numbers, and code
 * that daemonises closes a range (os.closerange(3, 256)) below it. */
#define MEMLENS_HIGH_FD 512

/* A descriptor of ours and the identity of the file it was opened on.
 * A program may close every descriptor and open files of its own at the
 * same numbers: before each use the number is checked against the
 * identity, so that the program's file is never read, written or closed
 * as ours. The owner of the struct says what protects it. */
typedef struct {
    int fd;    /* Owned while it names our file; -1 for none. */
    dev_t dev; /* st_dev and st_ino of our file. */
    ino_t ino;
} memlens_ownfd;

#define MEMLENS_OWNFD_NONE                                                    \
    {                                                                         \
        -1, 0, 0                                                              \
    }

/* Takes `fd`, just opened, as ours: moves it to MEMLENS_HIGH_FD or above
 * (where it is, when the limit forbids), close-on-exec, and records its
 * identity. 0, or -1 with errno set and `fd` closed. No GIL needed. */
int memlens_ownfd_adopt(memlens_ownfd *o, int fd);

/* Whether o->fd still names the file adopted. When it does not, the
 * number is forgotten (o->fd = -1) without being closed: it belongs to
 * the program now. No GIL needed. */
int memlens_ownfd_check(memlens_ownfd *o);

/* Closes o->fd if it is still ours, and forgets it. No GIL needed. */
void memlens_ownfd_close(memlens_ownfd *o);

/* Opens <proc dir>/<name> read-only and close-on-exec; -1 with errno set.
 * Safe without the GIL. `path` (MEMLENS_PATH_MAX bytes) receives the name
 * tried, for error messages. */
int memlens_proc_open(const char *name, char *path);

/* Reads the resident set size, in bytes, through an open statm fd.
 * Returns 0, or -1 with errno set (EINVAL: unparsable). No GIL needed,
 * touches no Python object: the sampler thread calls it. */
int memlens_rss_from_fd(int fd, uint64_t *rss);

/* Opens `path` (a proc file, from memlens_proc_open) again as `o`, after
 * the program took its number. 0, or -1 with errno set. No GIL needed. */
int memlens_proc_reopen(memlens_ownfd *o, const char *path);

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

/* What a reading measures: the resident set (statm), the proportional
 * set or the unique set (smaps_rollup). */
enum {
    MEMLENS_METRIC_RSS = 0,
    MEMLENS_METRIC_PSS = 1,
    MEMLENS_METRIC_USS = 2
};

/* The file of /proc/<pid>/ that holds `metric`: "statm" or
 * "smaps_rollup" (static storage). */
const char *memlens_metric_file(int metric);

/* Reads `metric`, in bytes, through an open fd on its file. 0, or -1
 * with errno set (EINVAL: unparsable). No GIL needed, touches no Python
 * object. */
int memlens_metric_from_fd(int fd, int metric, uint64_t *out);

/* `metric` of process `pid` in bytes. 0, or -1 with errno set (the
 * process is gone, ...). No GIL needed. */
int memlens_metric_of_pid(pid_t pid, int metric, uint64_t *out);

/* 1 when process `pid` has exited or is exiting (gone, a zombie not yet
 * reaped, or past the start of its exit), else 0. No GIL needed. */
int memlens_pid_gone(pid_t pid);

/* Bumped when tests point the readers at another folder. GIL. */
extern unsigned long memlens_proc_generation;

extern PyMethodDef memlens_readings_methods[];

int memlens_readings_init(PyObject *module);

#endif
