/* record.c: the recorder of `memlens run`.
 *
 * A Recorder owns a native sampler (sampler.c) and is its sink: the
 * sampler's thread hands it every sample, and it writes the sample to the
 * data file in memory_profiler's mprof format (MiB, epoch seconds):
 *
 *     MEM <MiB> <time>          this process, plus its descendants when
 *                               children are counted (mprof's -C)
 *     CHLD <pid> <MiB> <time>   each living descendant, same <time>, when
 *                               children are counted or each gets a
 *                               series of its own (mprof's -M)
 *
 * Samples are written as they are taken, at least every 10 ms: one
 * write(2) per sample at the default interval (0.01 s) and longer ones, so
 * that a run killed at any moment (SIGKILL, the OOM killer) leaves every
 * sample taken before in the file; shorter intervals gather the samples
 * of 10 ms into one write, which spares the thread most of a system call
 * per sample. Python adds its own lines (CMDLINE, FUNC) through
 * Recorder.write(), which writes the pending samples first, under the
 * same lock, so that lines never interleave and stay in time order.
 *
 * On a terminal the same thread redraws a one-line meter (now, peak,
 * elapsed) on its own copy of stderr ten times a second; stop() clears
 * it.
 *
 * The data file and the meter's stderr are memlens_ownfd (readings.h): high
 * numbers, checked before each write. A program that closes every
 * descriptor (os.closerange, as daemonising code does) and opens files of
 * its own at the same numbers never has our lines written into them: the
 * data file is opened again by its path, if it is still the same file,
 * and the meter stops.
 *
 * Numbers are formatted from integers: printf's %f follows LC_NUMERIC,
 * which the profiled program may set to a locale with a decimal comma.
 *
 * Threads: recorder_sample runs on the sampler thread without the GIL (or
 * in stop() once the thread is joined) and touches no Python object;
 * failures are counted, never raised. The Python methods run with the
 * GIL. After fork the child has no thread and a copy of the write lock
 * that may be held: every method checks the pid first, and a child's
 * writes are dropped (the file is the parent's).
 */
#include "record.h"
#include "readings.h"
#include "sampler.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Seconds between two redraws of the meter. */
#define RECORD_METER_PERIOD 0.1

/* Samples wait at most this long (seconds) before they are written. */
#define RECORD_FLUSH_PERIOD 0.01

/* Room kept in front of a sample's CHLD lines for its MEM line, which is
 * formatted last (it carries their total). */
#define RECORD_MEM_ROOM 64

typedef struct {
    PyObject_HEAD memlens_sampler s; /* The thread; its sink is `sink`. */
    memlens_sink sink;
    int ready;           /* s and write_lock are initialised. */
    memlens_ownfd file;  /* Owned (a close-on-exec dup): the data file; fd
                           -1 once closed or lost. Protected by
                           write_lock. */
    char *path;          /* Owned (libc): the data file's absolute path, to
                           open it again; NULL if not given. Read-only. */
    int is_open;         /* Until close(). Protected by write_lock. */
    int file_lost;       /* The data file could not be opened again.
                           Protected by write_lock. */
    memlens_ownfd meter; /* Owned (a dup of stderr); fd -1 for no meter.
                            Sampler thread (halt() once it is joined). */
    int has_meter;       /* A meter was asked for. Read-only after init. */
    int children;        /* Add the descendants to MEM, and a CHLD line
                            per descendant. Read-only after init. */
    int multiprocess;    /* A CHLD line per descendant, MEM left alone.
                            Read-only after init. */
    pid_t owner_pid;     /* The process that made the recorder. */
    pthread_mutex_t write_lock; /* Orders the writes to fd. */
    char *pending;              /* Owned (libc): samples not yet written.
                                   Protected by write_lock. */
    size_t pending_len;         /* write_lock. */
    size_t pending_cap;         /* write_lock. */
    double pending_since;       /* Time of the oldest pending sample,
                                   seconds since start. write_lock. */
    int meter_on;               /* Draw the meter. Atomic. */
    uint64_t last_children;     /* Descendants' RSS at the last sample.
                                   Atomic. */
    uint64_t write_failures;    /* Failed writes. Atomic. */
    /* Sampler thread only (or stop(), once the thread is joined): */
    char *line; /* Owned (libc): one sample's lines. */
    size_t line_cap;
    memlens_pidlist pids; /* Owned (libc): reused at every sample. */
    double meter_next;    /* When to redraw, seconds since start. */
    int meter_drawn;      /* Something is on the meter line. */
    uint64_t meter_peak;  /* Highest total drawn so far. */
} RecorderObject;

static RecorderObject *
recorder_of(memlens_sink *sink)
{
    return (RecorderObject *)((char *)sink - offsetof(RecorderObject, sink));
}

/* ---- Formatting (no locale, no Python) ------------------------------- */

/* Writes bytes as MiB with six decimals. Returns the length. */
static int
record_mib(char *buf, size_t size, uint64_t bytes)
{
    uint64_t whole = bytes >> 20;
    uint64_t frac = ((bytes & 0xFFFFFu) * 1000000u + (1u << 19)) >> 20;
    if (frac >= 1000000u) {
        whole++;
        frac -= 1000000u;
    }
    return snprintf(buf, size, "%" PRIu64 ".%06" PRIu64, whole, frac);
}

/* Writes non-negative seconds with six decimals. Returns the length. */
static int
record_seconds(char *buf, size_t size, double seconds)
{
    long long us = seconds > 0.0 ? llround(seconds * 1e6) : 0;
    return snprintf(buf, size, "%lld.%06lld", us / 1000000, us % 1000000);
}

/* Makes a libc buffer of *cap bytes hold at least `need`. 0, or -1
 * when out of memory (the buffer is left as it was). */
static int
record_reserve(char **buf, size_t *cap, size_t need)
{
    while (need > *cap) {
        if (memlens_grow((void **)buf, cap, *cap, 1, 1024) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Appends n bytes to the sample's buffer at *len. 0, or -1 when out of
 * memory. */
static int
record_append(RecorderObject *r, size_t *len, const char *text, size_t n)
{
    if (record_reserve(&r->line, &r->line_cap, *len + n) < 0) {
        return -1;
    }
    memcpy(r->line + *len, text, n);
    *len += n;
    return 0;
}

/* write(2) of all n bytes, through EINTR and short writes. 0 or -1. */
static int
record_write_all(int fd, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The data file's descriptor, checked: when the program took its number,
 * the file is opened again by its path (appending), if it is still the
 * file we created. -1 when closed or lost. The caller holds write_lock. */
static int
record_file_unlocked(RecorderObject *r)
{
    memlens_ownfd again = MEMLENS_OWNFD_NONE;
    if (!r->is_open) {
        return -1;
    }
    if (memlens_ownfd_check(&r->file)) {
        return r->file.fd;
    }
    if (r->path == NULL || r->file_lost) {
        return -1;
    }
    int fd;
    do {
        fd = open(r->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd >= 0 && memlens_ownfd_adopt(&again, fd) == 0) {
        if (again.dev == r->file.dev && again.ino == r->file.ino) {
            r->file = again;
            return r->file.fd;
        }
        /* Another file of that name now: not ours to write. */
        close(again.fd);
    }
    r->file_lost = 1;
    return -1;
}

/* Writes n bytes to the data file. 0, or -1 (counted) when the write
 * failed or the file is closed. The caller holds write_lock. */
static int
record_write_unlocked(RecorderObject *r, const char *data, size_t n)
{
    int fd = record_file_unlocked(r);
    int rc = fd >= 0 ? record_write_all(fd, data, n) : -1;
    if (rc < 0) {
        __atomic_add_fetch(&r->write_failures, 1, __ATOMIC_RELAXED);
    }
    return rc;
}

/* Writes the pending samples. 0 or -1. The caller holds write_lock. */
static int
record_flush_unlocked(RecorderObject *r)
{
    if (r->pending_len == 0) {
        return 0;
    }
    int rc = record_write_unlocked(r, r->pending, r->pending_len);
    r->pending_len = 0;
    return rc;
}

/* Writes the pending samples, then `data` (n bytes; none if NULL). 0 or
 * -1. Any thread, no GIL needed. */
static int
record_write_through(RecorderObject *r, const char *data, size_t n)
{
    pthread_mutex_lock(&r->write_lock);
    int rc = record_flush_unlocked(r);
    if (data != NULL && record_write_unlocked(r, data, n) < 0) {
        rc = -1;
    }
    pthread_mutex_unlock(&r->write_lock);
    return rc;
}

/* Queues one sample's lines (taken at t), writing them out with the
 * others pending once the oldest has waited long enough: at once when
 * the interval is as long as the flush period. Sampler thread. */
static void
record_queue(RecorderObject *r, double t, const char *data, size_t n)
{
    pthread_mutex_lock(&r->write_lock);
    if (r->pending_len == 0) {
        r->pending_since = t;
    }
    if (record_reserve(&r->pending, &r->pending_cap, r->pending_len + n) < 0) {
        /* Out of memory: what is there goes out first, then this. */
        (void)record_flush_unlocked(r);
        (void)record_write_unlocked(r, data, n);
    }
    else {
        memcpy(r->pending + r->pending_len, data, n);
        r->pending_len += n;
        if (r->s.interval >= RECORD_FLUSH_PERIOD
            || t + r->s.interval >= r->pending_since + RECORD_FLUSH_PERIOD) {
            (void)record_flush_unlocked(r);
        }
    }
    pthread_mutex_unlock(&r->write_lock);
}

/* Writes bytes as MiB with two decimals. Returns the length. */
static int
record_mib2(char *buf, size_t size, uint64_t bytes)
{
    uint64_t hundredths = (bytes * 100u + (1u << 19)) >> 20;
    return snprintf(buf, size, "%" PRIu64 ".%02" PRIu64, hundredths / 100,
                    hundredths % 100);
}

/* Draws the meter: carriage return, the line, erase to its end. */
static void
record_draw_meter(RecorderObject *r, double t, uint64_t total)
{
    char now[32], peak[32], elapsed[32], text[160];
    if (total > r->meter_peak) {
        r->meter_peak = total;
    }
    record_mib2(now, sizeof(now), total);
    record_mib2(peak, sizeof(peak), r->meter_peak);
    long long tenths = t > 0.0 ? (long long)(t * 10.0) : 0;
    long long secs = tenths / 10;
    if (secs < 60) {
        snprintf(elapsed, sizeof(elapsed), "%lld.%lld s", secs, tenths % 10);
    }
    else if (secs < 3600) {
        snprintf(elapsed, sizeof(elapsed), "%lld:%02lld", secs / 60,
                 secs % 60);
    }
    else {
        snprintf(elapsed, sizeof(elapsed), "%lld:%02lld:%02lld", secs / 3600,
                 secs / 60 % 60, secs % 60);
    }
    int n = snprintf(text, sizeof(text),
                     "\r\033[Kmemlens: %s MiB now%s, peak %s MiB, %s "
                     "elapsed",
                     now, r->children ? " with children" : "", peak, elapsed);
    if (n <= 0 || (size_t)n >= sizeof(text)) {
        return;
    }
    if (!memlens_ownfd_check(&r->meter)
        || record_write_all(r->meter.fd, text, (size_t)n) < 0) {
        /* The terminal went away: stop drawing rather than fail on every
         * sample. */
        __atomic_store_n(&r->meter_on, 0, __ATOMIC_RELAXED);
        return;
    }
    r->meter_drawn = 1;
}

/* The sink: writes the sample's lines, draws the meter, and returns the
 * total the sampler keeps. Sampler thread, no GIL (or stop() after the
 * join). */
static uint64_t
recorder_sample(memlens_sink *sink, double t, uint64_t rss)
{
    RecorderObject *r = recorder_of(sink);
    char mem[RECORD_MEM_ROOM], mib[32], when[32], head[48];
    size_t len = RECORD_MEM_ROOM;
    uint64_t total = rss;
    int failed = 0;

    if (record_reserve(&r->line, &r->line_cap, RECORD_MEM_ROOM) < 0) {
        /* No room even for the MEM line: the sample is counted lost. */
        __atomic_add_fetch(&r->write_failures, 1, __ATOMIC_RELAXED);
        return rss;
    }
    record_seconds(when, sizeof(when), r->s.start_epoch + t);
    if (r->children || r->multiprocess) {
        uint64_t kids = 0;
        r->pids.count = 0;
        if (memlens_descendants(r->owner_pid, &r->pids) < 0) {
            failed = 1;
        }
        for (size_t i = 0; i < r->pids.count; i++) {
            uint64_t crss;
            /* A zombie (exited, not yet reaped) reads as 0 pages. */
            if (memlens_rss_of_pid(r->pids.pids[i], &crss) < 0 || crss == 0) {
                continue;
            }
            kids += crss;
            record_mib(mib, sizeof(mib), crss);
            int n =
                snprintf(head, sizeof(head), "CHLD %d ", (int)r->pids.pids[i]);
            if (record_append(r, &len, head, (size_t)n) < 0
                || record_append(r, &len, mib, strlen(mib)) < 0
                || record_append(r, &len, " ", 1) < 0
                || record_append(r, &len, when, strlen(when)) < 0
                || record_append(r, &len, "\n", 1) < 0) {
                failed = 1;
                break;
            }
        }
        if (r->children) {
            total += kids;
            __atomic_store_n(&r->last_children, kids, __ATOMIC_RELAXED);
        }
    }
    record_mib(mib, sizeof(mib), total);
    int n = snprintf(mem, sizeof(mem), "MEM %s %s\n", mib, when);
    if (n > 0 && n < RECORD_MEM_ROOM) {
        char *start = r->line + RECORD_MEM_ROOM - n;
        memcpy(start, mem, (size_t)n);
        record_queue(r, t, start, len - RECORD_MEM_ROOM + (size_t)n);
    }
    else {
        failed = 1;
    }
    if (failed) {
        __atomic_add_fetch(&r->write_failures, 1, __ATOMIC_RELAXED);
    }
    if (__atomic_load_n(&r->meter_on, __ATOMIC_RELAXED)
        && t >= r->meter_next) {
        record_draw_meter(r, t, total);
        r->meter_next = t + RECORD_METER_PERIOD;
    }
    return total;
}

/* ---- The Python type -------------------------------------------------- */

/* Whether this is the process that made the recorder; after fork the
 * child must neither take the write lock nor write. */
static int
recorder_is_owner(RecorderObject *r)
{
    return r->ready && r->owner_pid == getpid();
}

static int
recorder_check(RecorderObject *r)
{
    if (!r->ready) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Recorder.__init__ was not called");
        return -1;
    }
    return 0;
}

/* Makes `o` a close-on-exec duplicate of `fd` at a high number. 0, or
 * -1 with OSError. */
static int
recorder_dup(int fd, memlens_ownfd *o)
{
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0 || memlens_ownfd_adopt(o, copy) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static int
recorder_tp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {
        "fd",       "interval", "children", "multiprocess",
        "meter_fd", "path",     NULL};
    RecorderObject *r = (RecorderObject *)self;
    PyObject *interval_obj = NULL, *path_obj = NULL;
    int fd, children = 0, multiprocess = 0, meter_fd = -1;
    double interval = 0.01;
    if (r->ready) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a Recorder cannot be initialised twice");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|O$ppiO&:Recorder", kwlist,
                                     &fd, &interval_obj, &children,
                                     &multiprocess, &meter_fd,
                                     PyUnicode_FSConverter, &path_obj)) {
        return -1;
    }
    if (interval_obj != NULL
        && memlens_sampler_parse_interval(interval_obj, &interval) < 0) {
        return -1;
    }
    if (fd < 0 || meter_fd < -1) {
        PyErr_SetString(PyExc_ValueError, "file descriptors must be >= 0");
        goto error;
    }
    if (path_obj != NULL) {
        const char *path = PyBytes_AS_STRING(path_obj);
        if (path[0] != '/') {
            /* The program may change directory. */
            PyErr_SetString(PyExc_ValueError, "path must be absolute");
            goto error;
        }
        r->path = strdup(path);
        if (r->path == NULL) {
            PyErr_NoMemory();
            goto error;
        }
    }
    if (recorder_dup(fd, &r->file) < 0) {
        goto error;
    }
    if (meter_fd >= 0 && recorder_dup(meter_fd, &r->meter) < 0) {
        /* A copy of our own: the program may redirect its fd 2. */
        goto error;
    }
    r->has_meter = meter_fd >= 0;
    if (pthread_mutex_init(&r->write_lock, NULL) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_mutex_init failed");
        goto error;
    }
    if (memlens_sampler_init(&r->s, interval) < 0) {
        pthread_mutex_destroy(&r->write_lock);
        goto error;
    }
    r->s.keep = 0;
    r->sink.sample = recorder_sample;
    r->s.sink = &r->sink;
    r->children = children;
    r->multiprocess = multiprocess;
    r->owner_pid = getpid();
    r->is_open = 1;
    r->ready = 1;
    Py_XDECREF(path_obj);
    return 0;
error:
    memlens_ownfd_close(&r->file);
    memlens_ownfd_close(&r->meter);
    free(r->path);
    r->path = NULL;
    Py_XDECREF(path_obj);
    return -1;
}

static PyObject *
recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    RecorderObject *r = (RecorderObject *)PyType_GenericNew(type, args, kwds);
    if (r != NULL) {
        r->file.fd = -1;
        r->meter.fd = -1;
    }
    return (PyObject *)r;
}

/* Stops the thread (taking a last sample), writes what is pending and
 * clears the meter. GIL. */
static void
recorder_halt(RecorderObject *r)
{
    __atomic_store_n(&r->meter_on, 0, __ATOMIC_RELAXED);
    memlens_sampler_stop(&r->s);
    if (recorder_is_owner(r)) {
        (void)record_write_through(r, NULL, 0);
    }
    if (r->meter_drawn && recorder_is_owner(r)
        && memlens_ownfd_check(&r->meter)) {
        (void)record_write_all(r->meter.fd, "\r\033[K", 4);
    }
    r->meter_drawn = 0;
}

static void
recorder_tp_dealloc(PyObject *self)
{
    RecorderObject *r = (RecorderObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (r->ready) {
        recorder_halt(r);
        memlens_sampler_fini(&r->s);
        if (recorder_is_owner(r)) {
            /* A forked child's copy may be held by a thread it lacks. */
            pthread_mutex_destroy(&r->write_lock);
        }
        r->ready = 0;
    }
    memlens_ownfd_close(&r->file);
    memlens_ownfd_close(&r->meter);
    free(r->path);
    free(r->line);
    free(r->pending);
    free(r->pids.pids);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
recorder_start(PyObject *self, PyObject *Py_UNUSED(args))
{
    RecorderObject *r = (RecorderObject *)self;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    if (!recorder_is_owner(r)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a Recorder cannot start in a forked child");
        return NULL;
    }
    if (!r->is_open) {
        PyErr_SetString(PyExc_ValueError, "the Recorder is closed");
        return NULL;
    }
    if (!r->s.running) {
        /* Only the thread reads these once it runs. */
        r->meter_next = 0.0;
        r->meter_peak = 0;
        r->meter_drawn = 0;
        __atomic_store_n(&r->last_children, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r->meter_on, r->meter.fd >= 0, __ATOMIC_RELAXED);
        if (memlens_sampler_start(&r->s) < 0) {
            __atomic_store_n(&r->meter_on, 0, __ATOMIC_RELAXED);
            return NULL;
        }
    }
    return Py_NewRef(self);
}

static PyObject *
recorder_stop(PyObject *self, PyObject *Py_UNUSED(args))
{
    RecorderObject *r = (RecorderObject *)self;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    recorder_halt(r);
    return Py_NewRef(self);
}

static PyObject *
recorder_exit(PyObject *self, PyObject *Py_UNUSED(args))
{
    PyObject *res = recorder_stop(self, NULL);
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_FALSE;
}

/* close(): stops, then closes the data file. Idempotent. */
static PyObject *
recorder_close(PyObject *self, PyObject *Py_UNUSED(args))
{
    RecorderObject *r = (RecorderObject *)self;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    recorder_halt(r);
    if (recorder_is_owner(r)) {
        pthread_mutex_lock(&r->write_lock);
        r->is_open = 0;
        memlens_ownfd_close(&r->file);
        pthread_mutex_unlock(&r->write_lock);
    }
    else {
        r->is_open = 0;
        memlens_ownfd_close(&r->file);
    }
    Py_RETURN_NONE;
}

/* write(data) -> bool: appends whole lines to the data file, in order
 * with the samples. False (and a counted failure) when the write fails,
 * the file is closed, or this is a forked child: the program being
 * recorded must never see an error of ours. */
static PyObject *
recorder_write(PyObject *self, PyObject *arg)
{
    RecorderObject *r = (RecorderObject *)self;
    Py_buffer view;
    int rc = -1;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (recorder_is_owner(r)) {
        /* The sampler thread may hold the lock for a moment. */
        PyThreadState *ts = PyEval_SaveThread();
        rc = record_write_through(r, view.buf, (size_t)view.len);
        PyEval_RestoreThread(ts);
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(rc == 0);
}

/* mark() -> (bytes, time): this process's RSS now, plus its descendants'
 * at the last sample when children are counted, and the time in epoch
 * seconds on the samples' clock. For FUNC lines. */
static PyObject *
recorder_mark(PyObject *self, PyObject *Py_UNUSED(args))
{
    RecorderObject *r = (RecorderObject *)self;
    struct timespec now;
    uint64_t rss;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    if (r->s.start_epoch == 0.0) {
        PyErr_SetString(PyExc_RuntimeError, "the Recorder was never started");
        return NULL;
    }
    if (memlens_rss_now(&rss) < 0) {
        return NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    rss += __atomic_load_n(&r->last_children, __ATOMIC_RELAXED);
    return Py_BuildValue("(Kd)", (unsigned long long)rss,
                         r->s.start_epoch
                             + memlens_sampler_since(&r->s, &now));
}

static PyObject *
recorder_get_peak(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    uint64_t peak = memlens_sampler_peak(&r->s);
    pthread_mutex_lock(&r->s.lock);
    uint64_t taken = r->s.taken;
    pthread_mutex_unlock(&r->s.lock);
    if (taken == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(peak);
}

static PyObject *
recorder_get_peak_time(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    (void)memlens_sampler_peak(&r->s); /* Mends the lock after fork. */
    pthread_mutex_lock(&r->s.lock);
    uint64_t taken = r->s.taken;
    double when = r->s.peak_time;
    pthread_mutex_unlock(&r->s.lock);
    if (taken == 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(when);
}

static PyObject *
recorder_get_count(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    (void)memlens_sampler_peak(&r->s);
    pthread_mutex_lock(&r->s.lock);
    uint64_t taken = r->s.taken;
    pthread_mutex_unlock(&r->s.lock);
    return PyLong_FromUnsignedLongLong(taken);
}

static PyObject *
recorder_get_failures(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    if (recorder_check(r) < 0) {
        return NULL;
    }
    (void)memlens_sampler_peak(&r->s);
    pthread_mutex_lock(&r->s.lock);
    uint64_t failures = r->s.failures;
    pthread_mutex_unlock(&r->s.lock);
    failures += __atomic_load_n(&r->write_failures, __ATOMIC_RELAXED);
    return PyLong_FromUnsignedLongLong(failures);
}

static PyObject *
recorder_get_running(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    return PyBool_FromLong(recorder_is_owner(r) && r->s.running);
}

static PyObject *
recorder_get_start_time(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    if (!r->ready || r->s.start_epoch == 0.0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(r->s.start_epoch);
}

static PyObject *
recorder_get_interval(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    return PyFloat_FromDouble(r->ready ? r->s.interval : 0.0);
}

static PyObject *
recorder_get_children(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    return PyBool_FromLong(r->children);
}

static PyObject *
recorder_get_multiprocess(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    return PyBool_FromLong(r->multiprocess);
}

static PyObject *
recorder_get_meter(PyObject *self, void *Py_UNUSED(closure))
{
    RecorderObject *r = (RecorderObject *)self;
    return PyBool_FromLong(r->has_meter);
}

static PyMethodDef recorder_methods[] = {
    {"start", recorder_start, METH_NOARGS,
     "Start sampling and writing (no-op when running)."},
    {"stop", recorder_stop, METH_NOARGS,
     "Stop and join the thread after a last sample; clear the meter."},
    {"close", recorder_close, METH_NOARGS, "Stop, then close the data file."},
    {"write", recorder_write, METH_O,
     "write(data) -> bool: append whole lines to the data file."},
    {"mark", recorder_mark, METH_NOARGS,
     "mark() -> (bytes, epoch seconds) now, on the samples' clock."},
    {"__enter__", recorder_start, METH_NOARGS, NULL},
    {"__exit__", recorder_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef recorder_getset[] = {
    {"peak", recorder_get_peak, NULL,
     "Highest total sampled, in bytes (None before the first sample).", NULL},
    {"peak_time", recorder_get_peak_time, NULL,
     "Seconds since start_time of the peak (None before any sample).", NULL},
    {"count", recorder_get_count, NULL, "Samples taken.", NULL},
    {"failures", recorder_get_failures, NULL,
     "Samples lost and writes failed.", NULL},
    {"running", recorder_get_running, NULL, "Whether the thread runs.", NULL},
    {"start_time", recorder_get_start_time, NULL,
     "Epoch seconds of the last start().", NULL},
    {"interval", recorder_get_interval, NULL, "Seconds between samples.",
     NULL},
    {"children", recorder_get_children, NULL,
     "Whether descendants are added to the MEM lines.", NULL},
    {"multiprocess", recorder_get_multiprocess, NULL,
     "Whether each descendant gets CHLD lines (MEM left alone).", NULL},
    {"meter", recorder_get_meter, NULL, "Whether a meter is drawn.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot recorder_slots[] = {
    {Py_tp_doc,
     "Recorder(fd, interval=0.01, *, children=False, multiprocess=False, "
     "meter_fd=-1, path=None)\n\n"
     "Samples RSS in a native thread and writes each sample to `fd` as\n"
     "mprof lines: MEM (with the descendants added when children=True),\n"
     "and a CHLD line per descendant with children or multiprocess; on\n"
     "`meter_fd`, a live one-line meter. The descriptors are duplicated.\n"
     "`path`, the data file's absolute path, is where it is opened again\n"
     "if the program closes the duplicate."},
    {Py_tp_new, recorder_new},
    {Py_tp_init, recorder_tp_init},
    {Py_tp_dealloc, recorder_tp_dealloc},
    {Py_tp_methods, recorder_methods},
    {Py_tp_getset, recorder_getset},
    {0, NULL},
};

static PyType_Spec recorder_spec = {
    .name = "memlens._core.Recorder",
    .basicsize = sizeof(RecorderObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = recorder_slots,
};

int
memlens_record_init_type(PyObject *module, memlens_state *st)
{
    st->recorder_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &recorder_spec, NULL);
    if (st->recorder_type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->recorder_type);
}
