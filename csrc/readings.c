/* readings.c: fast readers of the kernel's memory accounting.
 *
 * rss() preads a statm file descriptor kept open for the life of the
 * process (reopened after fork, since an fd on /proc/self keeps naming the
 * process that opened it). memory() reads statm, status and, on request,
 * smaps_rollup. The peak reset writes "5" to clear_refs.
 *
 * The descriptors kept open are memlens_ownfd: high numbers, checked
 * (fstat device and inode) before each use and reopened when the program
 * closed them, so that a program that closes a range of descriptors and
 * opens its own files never has them read or closed by us.
 *
 * Threads: the Python-facing functions run with the GIL held, which also
 * protects the cached descriptors and the folded peak. memlens_rss_from_fd
 * and memlens_proc_open touch no Python object and are what the sampler
 * thread uses without the GIL.
 */
#include "readings.h"
#include "errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where the process's files are read from. Only tests change it, to
 * check how failures are reported. Protected by the GIL (and read by the
 * sampler only while opening, which happens under the GIL). */
static char readings_proc_dir[MEMLENS_PATH_MAX / 2] = "/proc/self";

/* Cached descriptors, -1 when closed. Protected by the GIL; closed in the
 * child after fork. */
static memlens_ownfd readings_statm = MEMLENS_OWNFD_NONE;
static memlens_ownfd readings_status = MEMLENS_OWNFD_NONE;

/* Highest VmHWM seen before one of our resets. Protected by the GIL. */
static uint64_t readings_folded_peak = 0;

/* Bumped whenever the proc dir changes, so that cached verdicts about
 * what the kernel allows are taken again. Protected by the GIL. */
unsigned long memlens_proc_generation = 0;

static long readings_page_size = 4096;

int
memlens_ownfd_adopt(memlens_ownfd *o, int fd)
{
    struct stat st;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, MEMLENS_HIGH_FD);
    if (high >= 0) {
        close(fd);
        fd = high;
    }
    /* Else (EINVAL: the limit is below the high numbers; EMFILE) the
     * number we have will do: it is checked before each use anyway. */
    if (fstat(fd, &st) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    o->fd = fd;
    o->dev = st.st_dev;
    o->ino = st.st_ino;
    return 0;
}

int
memlens_ownfd_check(memlens_ownfd *o)
{
    struct stat st;
    if (o->fd < 0) {
        return 0;
    }
    if (fstat(o->fd, &st) == 0 && st.st_dev == o->dev && st.st_ino == o->ino) {
        return 1;
    }
    o->fd = -1;
    return 0;
}

void
memlens_ownfd_close(memlens_ownfd *o)
{
    if (memlens_ownfd_check(o)) {
        close(o->fd);
    }
    o->fd = -1;
}

int
memlens_proc_reopen(memlens_ownfd *o, const char *path)
{
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return -1;
    }
    return memlens_ownfd_adopt(o, fd);
}

int
memlens_proc_open(const char *name, char *path)
{
    int n = snprintf(path, MEMLENS_PATH_MAX, "%s/%s", readings_proc_dir, name);
    if (n < 0 || n >= MEMLENS_PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int flags = strcmp(name, "clear_refs") == 0 ? O_WRONLY : O_RDONLY;
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

/* Reads the whole of a small proc file from offset 0 into buf (NUL
 * terminated). Returns the length, or -1 with errno set. */
static ssize_t
readings_pread_all(int fd, char *buf, size_t size)
{
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t n = pread(fd, buf + got, size - 1 - got, (off_t)got);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        got += (size_t)n;
        if ((size_t)n < size - 1 - (got - (size_t)n)) {
            /* Short read: a proc file hands its whole record to the
             * first read that has room, so this is the end. Stopping
             * here saves a second syscall on every rss(). */
            break;
        }
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

/* Parses the first three fields of statm (pages): size, resident, shared.
 * Returns 0, or -1 when the text is not three numbers. */
static int
readings_parse_statm(const char *buf, uint64_t out[3])
{
    const char *p = buf;
    for (int i = 0; i < 3; i++) {
        char *end;
        while (*p == ' ') {
            p++;
        }
        if (*p < '0' || *p > '9') {
            return -1;
        }
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno != 0 || end == p) {
            return -1;
        }
        out[i] = (uint64_t)v;
        p = end;
    }
    return 0;
}

int
memlens_rss_from_fd(int fd, uint64_t *rss)
{
    char buf[128];
    uint64_t f[3];
    if (readings_pread_all(fd, buf, sizeof(buf)) < 0) {
        return -1;
    }
    if (readings_parse_statm(buf, f) < 0) {
        errno = EINVAL;
        return -1;
    }
    *rss = f[1] * (uint64_t)readings_page_size;
    return 0;
}

/* Returns the cached fd for `name`, opening it if needed or if the
 * program took its number; -1 with an OSError. GIL held. */
static int
readings_cached_fd(memlens_ownfd *slot, const char *name)
{
    if (!memlens_ownfd_check(slot)) {
        char path[MEMLENS_PATH_MAX];
        int fd = memlens_proc_open(name, path);
        if (fd < 0 || memlens_ownfd_adopt(slot, fd) < 0) {
            memlens_oserror_path(errno, path);
            return -1;
        }
    }
    return slot->fd;
}

/* Sets an OSError for a failed read of <proc dir>/<name>: the path is
 * only spelled out on this slow path. Returns -1. */
static int
readings_read_failed(int err, const char *name, const char *what)
{
    char path[MEMLENS_PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", readings_proc_dir, name);
    if (what != NULL) {
        memlens_parse_error(what, path);
    }
    else {
        memlens_oserror_path(err, path);
    }
    return -1;
}

static void
readings_close_cached(void)
{
    memlens_ownfd_close(&readings_statm);
    memlens_ownfd_close(&readings_status);
}

/* Reads statm through the cached fd into f[3] (pages). 0 or -1 + OSError. */
static int
readings_read_statm(uint64_t f[3])
{
    char buf[128];
    int fd = readings_cached_fd(&readings_statm, "statm");
    if (fd < 0) {
        return -1;
    }
    if (readings_pread_all(fd, buf, sizeof(buf)) < 0) {
        return readings_read_failed(errno, "statm", NULL);
    }
    if (readings_parse_statm(buf, f) < 0) {
        return readings_read_failed(0, "statm", "statm");
    }
    return 0;
}

int
memlens_rss_now(uint64_t *rss)
{
    uint64_t f[3];
    if (readings_read_statm(f) < 0) {
        return -1;
    }
    *rss = f[1] * (uint64_t)readings_page_size;
    return 0;
}

/* Finds "<key>" at a line start in a proc key/value text and returns its
 * value in kB through *kb. 1 found, 0 absent. */
static int
readings_find_kb(const char *text, const char *key, uint64_t *kb)
{
    size_t klen = strlen(key);
    const char *p = text;
    while (p != NULL && *p != '\0') {
        if (strncmp(p, key, klen) == 0) {
            char *end;
            p += klen;
            errno = 0;
            unsigned long long v = strtoull(p, &end, 10);
            if (errno != 0 || end == p) {
                return 0;
            }
            *kb = (uint64_t)v;
            return 1;
        }
        p = strchr(p, '\n');
        if (p != NULL) {
            p++;
        }
    }
    return 0;
}

/* Reads status through the cached fd and returns VmHWM in bytes. */
int
memlens_hwm_now(uint64_t *hwm)
{
    char buf[4096];
    uint64_t kb;
    int fd = readings_cached_fd(&readings_status, "status");
    if (fd < 0) {
        return -1;
    }
    if (readings_pread_all(fd, buf, sizeof(buf)) < 0) {
        return readings_read_failed(errno, "status", NULL);
    }
    if (!readings_find_kb(buf, "VmHWM:", &kb)) {
        return readings_read_failed(0, "status", "VmHWM in status");
    }
    *hwm = kb * 1024;
    return 0;
}

int
memlens_hwm_reset(uint64_t *before)
{
    char path[MEMLENS_PATH_MAX];
    uint64_t hwm;
    if (memlens_hwm_now(&hwm) < 0) {
        PyErr_Clear();
        errno = EIO;
        return -1;
    }
    if (hwm > readings_folded_peak) {
        readings_folded_peak = hwm;
    }
    *before = hwm;
    /* clear_refs is opened per reset: it is written rarely, and a
     * descriptor kept open would be one more thing to mend after fork. */
    int fd = memlens_proc_open("clear_refs", path);
    if (fd < 0) {
        return -1;
    }
    ssize_t n;
    do {
        n = write(fd, "5", 1);
    } while (n < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    if (n != 1) {
        errno = n < 0 ? err : EIO;
        return -1;
    }
    return 0;
}

int
memlens_lifetime_peak(uint64_t *peak)
{
    uint64_t hwm;
    if (memlens_hwm_now(&hwm) < 0) {
        return -1;
    }
    *peak = hwm > readings_folded_peak ? hwm : readings_folded_peak;
    return 0;
}

/* Parses the text of smaps_rollup into uss, pss and swap (bytes).
 * 0, or -1 when a figure is missing. */
static int
readings_parse_rollup(const char *buf, uint64_t *uss, uint64_t *pss,
                      uint64_t *swap)
{
    uint64_t clean = 0, dirty = 0, huge = 0;
    if (!readings_find_kb(buf, "Pss:", pss)
        || !readings_find_kb(buf, "Swap:", swap)
        || !readings_find_kb(buf, "Private_Clean:", &clean)
        || !readings_find_kb(buf, "Private_Dirty:", &dirty)) {
        return -1;
    }
    /* Absent before Linux 4.15's hugetlb accounting: counts as zero. */
    (void)readings_find_kb(buf, "Private_Hugetlb:", &huge);
    *uss = (clean + dirty + huge) * 1024;
    *pss *= 1024;
    *swap *= 1024;
    return 0;
}

/* Reads smaps_rollup into uss, pss and swap (bytes). 0 or -1 + OSError. */
static int
readings_read_rollup(uint64_t *uss, uint64_t *pss, uint64_t *swap)
{
    char path[MEMLENS_PATH_MAX];
    char buf[4096];
    int fd = memlens_proc_open("smaps_rollup", path);
    if (fd < 0) {
        memlens_oserror_path(errno, path);
        return -1;
    }
    ssize_t n = readings_pread_all(fd, buf, sizeof(buf));
    int err = errno;
    close(fd);
    if (n < 0) {
        memlens_oserror_path(err, path);
        return -1;
    }
    if (readings_parse_rollup(buf, uss, pss, swap) < 0) {
        memlens_parse_error("smaps_rollup", path);
        return -1;
    }
    return 0;
}

const char *
memlens_metric_file(int metric)
{
    return metric == MEMLENS_METRIC_RSS ? "statm" : "smaps_rollup";
}

int
memlens_metric_from_fd(int fd, int metric, uint64_t *out)
{
    char buf[4096];
    uint64_t uss, pss, swap;
    if (metric == MEMLENS_METRIC_RSS) {
        return memlens_rss_from_fd(fd, out);
    }
    if (readings_pread_all(fd, buf, sizeof(buf)) < 0) {
        return -1;
    }
    if (readings_parse_rollup(buf, &uss, &pss, &swap) < 0) {
        errno = EINVAL;
        return -1;
    }
    *out = metric == MEMLENS_METRIC_PSS ? pss : uss;
    return 0;
}

/* rss() -> int: resident set size in bytes, one pread. */
static PyObject *
readings_py_rss(PyObject *module, PyObject *Py_UNUSED(args))
{
    uint64_t rss;
    if (memlens_rss_now(&rss) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(rss);
}

int
memlens_heap_trim(void)
{
#ifdef __GLIBC__
    return malloc_trim(0);
#else
    return 0;
#endif
}

/* _trim_heap() -> bool: whether the C heap gave pages back. */
static PyObject *
readings_py_trim_heap(PyObject *module, PyObject *Py_UNUSED(args))
{
    return PyBool_FromLong(memlens_heap_trim());
}

/* memory(detail) -> (rss, vms, shared, peak, uss, pss, swap); the last
 * three are None unless detail is true. New reference. */
static PyObject *
readings_py_memory(PyObject *module, PyObject *arg)
{
    int detail = PyObject_IsTrue(arg);
    uint64_t f[3], peak, uss, pss, swap;
    if (detail < 0) {
        return NULL;
    }
    if (readings_read_statm(f) < 0 || memlens_lifetime_peak(&peak) < 0) {
        return NULL;
    }
    uint64_t page = (uint64_t)readings_page_size;
    if (!detail) {
        return Py_BuildValue("(KKKKOOO)", f[1] * page, f[0] * page,
                             f[2] * page, peak, Py_None, Py_None, Py_None);
    }
    if (readings_read_rollup(&uss, &pss, &swap) < 0) {
        return NULL;
    }
    return Py_BuildValue("(KKKKKKK)", f[1] * page, f[0] * page, f[2] * page,
                         peak, uss, pss, swap);
}

/* _set_proc_dir(path): reads the process files from `path` instead of
 * /proc/self. For tests of failure reporting; "" restores the default. */
static PyObject *
readings_py_set_proc_dir(PyObject *module, PyObject *arg)
{
    Py_ssize_t len;
    const char *s;
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "path must be str, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    s = PyUnicode_AsUTF8AndSize(arg, &len);
    if (s == NULL) {
        return NULL;
    }
    if ((size_t)len >= sizeof(readings_proc_dir)) {
        PyErr_SetString(PyExc_ValueError, "path too long");
        return NULL;
    }
    readings_close_cached();
    snprintf(readings_proc_dir, sizeof(readings_proc_dir), "%s",
             len == 0 ? "/proc/self" : s);
    memlens_proc_generation++;
    Py_RETURN_NONE;
}

/* ---- Child processes ------------------------------------------------- */

static int
readings_pidlist_add(memlens_pidlist *l, pid_t pid)
{
    for (size_t i = 0; i < l->count; i++) {
        if (l->pids[i] == pid) {
            return 0;
        }
    }
    if (memlens_grow((void **)&l->pids, &l->cap, l->count, sizeof(pid_t), 16)
        < 0) {
        return -1;
    }
    l->pids[l->count++] = pid;
    return 0;
}

/* Appends the children of every thread of `pid` to `l`. A process that
 * exits meanwhile is skipped. 0, or -1 when out of memory. */
static int
readings_add_children(pid_t pid, memlens_pidlist *l)
{
    char path[MEMLENS_PATH_MAX];
    char buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (dir == NULL) {
        return 0;
    }
    struct dirent *ent;
    int rc = 0;
    while (rc == 0 && (ent = readdir(dir)) != NULL) {
        if (ent->d_name[0] < '0' || ent->d_name[0] > '9') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/%d/task/%.32s/children", (int)pid,
                 ent->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        ssize_t n = readings_pread_all(fd, buf, sizeof(buf));
        close(fd);
        if (n <= 0) {
            continue;
        }
        for (char *p = buf; *p != '\0' && rc == 0;) {
            char *end;
            long child = strtol(p, &end, 10);
            if (end == p) {
                break;
            }
            if (child > 0) {
                rc = readings_pidlist_add(l, (pid_t)child);
            }
            p = end;
        }
    }
    closedir(dir);
    return rc;
}

int
memlens_descendants(pid_t pid, memlens_pidlist *l)
{
    int rc = readings_add_children(pid, l);
    /* The list grows as we go: each descendant's children join it. */
    for (size_t i = 0; rc == 0 && i < l->count; i++) {
        rc = readings_add_children(l->pids[i], l);
    }
    return rc;
}

int
memlens_rss_of_pid(pid_t pid, uint64_t *rss)
{
    return memlens_metric_of_pid(pid, MEMLENS_METRIC_RSS, rss);
}

int
memlens_metric_of_pid(pid_t pid, int metric, uint64_t *out)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid,
             memlens_metric_file(metric));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = memlens_metric_from_fd(fd, metric, out);
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

int
memlens_pid_gone(pid_t pid)
{
    char path[64];
    char buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 1;
    }
    ssize_t n = readings_pread_all(fd, buf, sizeof(buf));
    close(fd);
    if (n <= 0) {
        return 1;
    }
    /* "pid (comm) S ppid pgrp session tty tpgid flags ...": the command
     * may itself hold ") ", so the state follows the last one. */
    const char *close_paren = strrchr(buf, ')');
    char state;
    unsigned int flags = 0;
    if (close_paren == NULL
        || sscanf(close_paren + 1, " %c %*d %*d %*d %*d %*d %u", &state,
                  &flags)
               < 1) {
        return 0;
    }
    /* PF_EXITING (include/linux/sched.h): set as exit begins, before the
     * memory is released and long before the zombie state. */
    return state == 'Z' || state == 'X' || (flags & 0x4u) != 0;
}

/* children_rss() -> (bytes, count): the summed RSS of every living
 * descendant process (children, grandchildren, ...). memlens starts none
 * of its own. GIL held, but released while walking /proc. */
PyObject *
memlens_children_rss(void)
{
    memlens_pidlist l = {NULL, 0, 0};
    uint64_t total = 0;
    size_t alive = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = memlens_descendants(getpid(), &l);
    for (size_t i = 0; rc == 0 && i < l.count; i++) {
        uint64_t rss;
        if (memlens_rss_of_pid(l.pids[i], &rss) == 0) {
            total += rss;
            alive++;
        }
    }
    Py_END_ALLOW_THREADS free(l.pids);
    if (rc < 0) {
        return PyErr_NoMemory();
    }
    return Py_BuildValue("(Kn)", total, (Py_ssize_t)alive);
}

static PyObject *
readings_py_children_rss(PyObject *module, PyObject *Py_UNUSED(args))
{
    return memlens_children_rss();
}

PyMethodDef memlens_readings_methods[] = {
    {"children_rss", readings_py_children_rss, METH_NOARGS,
     "children_rss() -> (bytes, count) of all living descendants."},
    {"rss", readings_py_rss, METH_NOARGS,
     "rss() -> int\n\nResident set size of this process, in bytes."},
    {"memory", readings_py_memory, METH_O,
     "memory(detail) -> tuple\n\n(rss, vms, shared, peak, uss, pss, swap)"},
    {"_trim_heap", readings_py_trim_heap, METH_NOARGS,
     "_trim_heap() -> bool: give the C heap's free pages back to the OS."},
    {"_set_proc_dir", readings_py_set_proc_dir, METH_O,
     "Read the process files from another folder (tests only)."},
    {NULL, NULL, 0, NULL},
};

/* After fork the cached descriptors still name the parent's files. */
static void
readings_atfork_child(void)
{
    readings_close_cached();
}

int
memlens_readings_init(PyObject *module)
{
    static int registered = 0;
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) {
        readings_page_size = ps;
    }
    if (!registered) {
        int rc = pthread_atfork(NULL, NULL, readings_atfork_child);
        if (rc != 0) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        registered = 1;
    }
    return PyModule_AddFunctions(module, memlens_readings_methods);
}
