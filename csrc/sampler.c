/* sampler.c: a native thread that samples RSS at a fixed interval.
 *
 * The thread is a plain pthread: it never takes the GIL and touches no
 * Python object. It preads statm, stamps the sample with CLOCK_MONOTONIC
 * and appends it to libc-allocated arrays under the sampler's mutex, then
 * sleeps on a condition variable until the next deadline, so that stop()
 * wakes it at once. Deadlines are absolute: sampling does not drift.
 *
 * By default it samples this process's RSS; a sampler may instead read
 * another process (`pid`), or PSS or USS from smaps_rollup (`metric`),
 * and may end by itself after `limit` samples. A sampler of another
 * process ends by itself when that process exits. memlens_sampler_wait()
 * waits for either end, with the GIL released.
 *
 * The owner (Python, GIL held) starts and stops it; stop() releases the
 * GIL while joining. After fork the thread does not exist in the child:
 * stop() there only marks the sampler stopped.
 *
 * A sink (sampler.h) may be attached before start: each sample is handed
 * to it first, outside the lock, and what it returns is what is kept. The
 * recorder of `memlens run` (record.c) is one.
 */
#include "sampler.h"
#include "errors.h"
#include "readings.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long sampler_live_threads = 0; /* Atomic (__atomic builtins). */

long
memlens_sampler_threads(void)
{
    return __atomic_load_n(&sampler_live_threads, __ATOMIC_SEQ_CST);
}

/* After fork the child has no sampler thread, but a copy of a lock the
 * thread may have held at that instant: make both fit the child again.
 * Called before any use of the lock. GIL held. */
static void
sampler_adopt_after_fork(memlens_sampler *s)
{
    pthread_condattr_t attr;
    if (!s->running || s->owner_pid == getpid()) {
        return;
    }
    s->running = 0;
    pthread_mutex_init(&s->lock, NULL);
    if (pthread_condattr_init(&attr) == 0) {
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&s->wake, &attr);
        pthread_cond_init(&s->done, &attr);
        pthread_condattr_destroy(&attr);
    }
    memlens_ownfd_close(&s->file);
}

static void
sampler_atfork_child(void)
{
    /* Threads do not survive fork. */
    __atomic_store_n(&sampler_live_threads, 0, __ATOMIC_SEQ_CST);
}

double
memlens_sampler_since(const memlens_sampler *s, const struct timespec *mono)
{
    return (double)(mono->tv_sec - s->t0.tv_sec)
           + (double)(mono->tv_nsec - s->t0.tv_nsec) * 1e-9;
}

static double
sampler_elapsed(const memlens_sampler *s)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return memlens_sampler_since(s, &now);
}

/* Marks the sampler finished and wakes its waiters. Lock held. */
static void
sampler_finish_unlocked(memlens_sampler *s)
{
    s->finished = 1;
    pthread_cond_broadcast(&s->done);
}

/* Reads one sample through s->file into *value: 1 read, 0 failed, -1
 * when the process sampled is gone. A file whose number the program took
 * is opened again. So is another process's after a failed read:
 * smaps_rollup reads the memory the process had when it was opened, and
 * every read fails (ESRCH) once the process has run exec. Only a process
 * that is no more (its folder gone, or exiting) is gone; a read or a
 * parse that fails for a living one is a failure. Never raises. */
static int
sampler_read(memlens_sampler *s, uint64_t *value)
{
    int opened = memlens_ownfd_check(&s->file);
    int err = 0;
    if (!opened && memlens_proc_reopen(&s->file, s->file_path) < 0) {
        err = errno;
    }
    else if (memlens_metric_from_fd(s->file.fd, s->metric, value) == 0) {
        goto read;
    }
    else if (s->pid > 0 && opened) {
        memlens_ownfd_close(&s->file);
        if (memlens_proc_reopen(&s->file, s->file_path) < 0) {
            err = errno;
        }
        else if (memlens_metric_from_fd(s->file.fd, s->metric, value) == 0) {
            goto read;
        }
    }
    if (s->pid <= 0) {
        return 0;
    }
    return err == ENOENT || err == ESRCH || memlens_pid_gone(s->pid) ? -1 : 0;
read:
    /* Another process's files read as zero pages from the moment its exit
     * releases its memory (so do a kernel thread's, which is why a zero
     * is checked). */
    if (s->pid > 0 && *value == 0 && memlens_pid_gone(s->pid)) {
        return -1;
    }
    return 1;
}

/* Takes one sample, hands it to the sink and keeps it. Called by the
 * thread, or by the owner after join; never raises. */
static void
sampler_take(memlens_sampler *s)
{
    uint64_t rss = 0;
    int got = sampler_read(s, &rss);
    int ok = got > 0;
    int gone = got < 0;
    double t = sampler_elapsed(s);
    if (ok && !gone && s->sink != NULL) {
        rss = s->sink->sample(s->sink, t, rss);
    }
    pthread_mutex_lock(&s->lock);
    if (gone) {
        s->gone = 1;
        sampler_finish_unlocked(s);
        goto done;
    }
    if (!ok) {
        s->failures++;
        goto done;
    }
    s->taken++;
    if (rss > s->peak || s->taken == 1) {
        s->peak = rss;
        s->peak_time = t;
    }
    if (!s->keep) {
        goto done;
    }
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *times = realloc(s->times, cap * sizeof(double));
        if (times == NULL) {
            s->failures++;
            goto done;
        }
        s->times = times;
        uint64_t *values = realloc(s->values, cap * sizeof(uint64_t));
        if (values == NULL) {
            s->failures++;
            goto done;
        }
        s->values = values;
        s->cap = cap;
    }
    s->times[s->count] = t;
    s->values[s->count] = rss;
    s->count++;
done:
    if (s->limit != 0 && s->taken >= s->limit && !s->finished) {
        sampler_finish_unlocked(s);
    }
    pthread_mutex_unlock(&s->lock);
}

static void
sampler_add_seconds(struct timespec *ts, double seconds)
{
    double whole = floor(seconds);
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((seconds - whole) * 1e9);
    while (ts->tv_nsec >= 1000000000L) {
        ts->tv_nsec -= 1000000000L;
        ts->tv_sec++;
    }
}

/* Timeouts longer than this (about 31 years) are no timeout: the
 * deadline would not fit a time_t, or a double would lose its seconds. */
#define SAMPLER_WAIT_FOREVER 1e9

static int
sampler_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec
           || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void *
sampler_main(void *arg)
{
    memlens_sampler *s = arg;
    struct timespec next = s->t0;
    struct timespec now;
    int take = !s->first_now; /* Else start() took the sample of t0. */

    pthread_mutex_lock(&s->lock);
    while (!s->stop_requested && !s->finished) {
        pthread_mutex_unlock(&s->lock);
        if (take) {
            sampler_take(s);
        }
        take = 1;
        sampler_add_seconds(&next, s->interval);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (sampler_before(&next, &now)) {
            /* Late (the machine was busy): skip the missed ticks rather
             * than firing a burst. */
            next = now;
        }
        pthread_mutex_lock(&s->lock);
        while (!s->stop_requested && !s->finished) {
            /* Past the deadline (ETIMEDOUT) or refused (EINVAL): a wait
             * that returns at once must not spin with the lock held. */
            if (pthread_cond_timedwait(&s->wake, &s->lock, &next) != 0) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    __atomic_sub_fetch(&sampler_live_threads, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

int
memlens_sampler_init(memlens_sampler *s, double interval)
{
    pthread_condattr_t attr;
    memset(s, 0, sizeof(*s));
    s->file.fd = -1;
    s->interval = interval;
    s->keep = 1;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_mutex_init failed");
        return -1;
    }
    if (pthread_condattr_init(&attr) != 0) {
        pthread_mutex_destroy(&s->lock);
        PyErr_SetString(PyExc_OSError, "pthread_condattr_init failed");
        return -1;
    }
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0
        || pthread_cond_init(&s->wake, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        pthread_mutex_destroy(&s->lock);
        PyErr_SetString(PyExc_OSError, "pthread_cond_init failed");
        return -1;
    }
    if (pthread_cond_init(&s->done, &attr) != 0) {
        pthread_condattr_destroy(&attr);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        PyErr_SetString(PyExc_OSError, "pthread_cond_init failed");
        return -1;
    }
    pthread_condattr_destroy(&attr);
    return 0;
}

int
memlens_sampler_start(memlens_sampler *s)
{
    struct timespec wall;
    sampler_adopt_after_fork(s);
    if (s->running) {
        if (memlens_sampler_active(s)) {
            return 0;
        }
        /* It ended by itself (limit reached, process gone): joined as
         * stop() joins it, then started afresh, as after stop(). */
        memlens_sampler_stop(s);
        if (s->running) {
            return 0; /* Started by another thread while we joined. */
        }
    }
    if (s->stopping) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the Sampler is being stopped in another thread");
        return -1;
    }
    memlens_ownfd_close(&s->file);
    /* A descriptor of its own: the thread preads it without the GIL while
     * Python code may reopen the cached one. */
    const char *name = memlens_metric_file(s->metric);
    int fd;
    if (s->pid > 0) {
        snprintf(s->file_path, sizeof(s->file_path), "/proc/%d/%s",
                 (int)s->pid, name);
        do {
            fd = open(s->file_path, O_RDONLY | O_CLOEXEC);
        } while (fd < 0 && errno == EINTR);
        if (fd < 0 && errno == ENOENT) {
            /* No such folder: no such process. */
            errno = ESRCH;
        }
    }
    else {
        fd = memlens_proc_open(name, s->file_path);
    }
    if (fd < 0 || memlens_ownfd_adopt(&s->file, fd) < 0) {
        memlens_oserror_path(errno, s->file_path);
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    s->count = 0;
    s->taken = 0;
    s->peak = 0;
    s->peak_time = 0.0;
    s->failures = 0;
    s->stop_requested = 0;
    s->finished = 0;
    s->gone = 0;
    pthread_mutex_unlock(&s->lock);
    clock_gettime(CLOCK_MONOTONIC, &s->t0);
    clock_gettime(CLOCK_REALTIME, &wall);
    s->start_epoch = (double)wall.tv_sec + (double)wall.tv_nsec * 1e-9;
    s->owner_pid = getpid();
    if (s->first_now) {
        /* Before the thread exists: a sample of the moment start()
         * returns, however late the thread is scheduled. */
        sampler_take(s);
    }

    __atomic_add_fetch(&sampler_live_threads, 1, __ATOMIC_SEQ_CST);
    int rc = pthread_create(&s->thread, NULL, sampler_main, s);
    if (rc != 0) {
        __atomic_sub_fetch(&sampler_live_threads, 1, __ATOMIC_SEQ_CST);
        memlens_ownfd_close(&s->file);
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    s->running = 1;
    return 0;
}

void
memlens_sampler_stop(memlens_sampler *s)
{
    sampler_adopt_after_fork(s);
    if (!s->running) {
        return;
    }
    /* The GIL is released while joining: another thread may call start()
     * or stop() meanwhile. `stopping` turns start() away and makes stop()
     * a no-op, and the thread is this call's own copy. */
    s->running = 0;
    s->stopping = 1;
    pthread_t thread = s->thread;
    pthread_mutex_lock(&s->lock);
    s->stop_requested = 1;
    pthread_cond_signal(&s->wake);
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->lock);
    Py_BEGIN_ALLOW_THREADS pthread_join(thread, NULL);
    Py_END_ALLOW_THREADS
        /* The thread is joined: `finished` is ours to read. A sampler that
     * ended by itself takes no last sample: it has all it was asked for,
     * or its process is gone. */
        if (!s->finished)
    {
        sampler_take(s);
    }
    memlens_ownfd_close(&s->file);
    s->stopping = 0;
}

/* Longest wait between two checks for signals, seconds. */
#define SAMPLER_WAIT_SLICE 0.05

int
memlens_sampler_wait(memlens_sampler *s, double timeout)
{
    struct timespec deadline, slice;
    int ended;
    sampler_adopt_after_fork(s);
    if (isnan(timeout) || timeout > SAMPLER_WAIT_FOREVER) {
        timeout = -1.0;
    }
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout >= 0.0) {
        sampler_add_seconds(&deadline, timeout);
    }
    for (;;) {
        if (!s->running || s->stopping) {
            return 1;
        }
        Py_BEGIN_ALLOW_THREADS clock_gettime(CLOCK_MONOTONIC, &slice);
        sampler_add_seconds(&slice, SAMPLER_WAIT_SLICE);
        if (timeout >= 0.0 && sampler_before(&deadline, &slice)) {
            slice = deadline;
        }
        pthread_mutex_lock(&s->lock);
        while (!s->finished && !s->stop_requested) {
            /* Any return but a wake-up (ETIMEDOUT, or EINVAL for a
             * deadline refused) ends the slice: signals are checked
             * below, and the lock is not held in a spin. */
            if (pthread_cond_timedwait(&s->done, &s->lock, &slice) != 0) {
                break;
            }
        }
        ended = s->finished || s->stop_requested;
        pthread_mutex_unlock(&s->lock);
        Py_END_ALLOW_THREADS if (ended)
        {
            return 1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        if (timeout >= 0.0 && !sampler_before(&slice, &deadline)) {
            return 0;
        }
    }
}

void
memlens_sampler_fini(memlens_sampler *s)
{
    memlens_sampler_stop(s);
    free(s->times);
    free(s->values);
    s->times = NULL;
    s->values = NULL;
    s->count = s->cap = 0;
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->done);
    pthread_mutex_destroy(&s->lock);
}

int
memlens_sampler_active(memlens_sampler *s)
{
    sampler_adopt_after_fork(s);
    if (!s->running) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    int finished = s->finished;
    pthread_mutex_unlock(&s->lock);
    return !finished;
}

uint64_t
memlens_sampler_peak(memlens_sampler *s)
{
    sampler_adopt_after_fork(s);
    pthread_mutex_lock(&s->lock);
    uint64_t peak = s->peak;
    pthread_mutex_unlock(&s->lock);
    return peak;
}

/* ---- The Python type -------------------------------------------------- */

typedef struct {
    PyObject_HEAD memlens_sampler s;
    int ready; /* memlens_sampler_init succeeded. */
} SamplerObject;

int
memlens_sampler_parse_interval(PyObject *obj, double *out)
{
    if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyLong_Check(obj))) {
        PyErr_Format(PyExc_TypeError,
                     "interval must be a number of seconds, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (!(v > 0.0) || !isfinite(v)) {
        PyErr_Format(PyExc_ValueError,
                     "interval must be a positive number of seconds, got %R",
                     obj);
        return -1;
    }
    if (v < 1e-6 || v > 86400.0) {
        PyErr_Format(PyExc_ValueError,
                     "interval must be between 1e-06 and 86400 seconds, "
                     "got %R",
                     obj);
        return -1;
    }
    *out = v;
    return 0;
}

static int
sampler_tp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"interval", NULL};
    SamplerObject *so = (SamplerObject *)self;
    PyObject *interval_obj = NULL;
    double interval = 0.001;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Sampler", kwlist,
                                     &interval_obj)) {
        return -1;
    }
    if (interval_obj != NULL
        && memlens_sampler_parse_interval(interval_obj, &interval) < 0) {
        return -1;
    }
    if (so->ready) {
        if (so->s.running) {
            PyErr_SetString(PyExc_RuntimeError,
                            "cannot re-initialise a running Sampler");
            return -1;
        }
        so->s.interval = interval;
        return 0;
    }
    if (memlens_sampler_init(&so->s, interval) < 0) {
        return -1;
    }
    so->ready = 1;
    return 0;
}

static int
sampler_check_ready(SamplerObject *so)
{
    if (!so->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Sampler.__init__ was not called");
        return -1;
    }
    sampler_adopt_after_fork(&so->s);
    return 0;
}

static void
sampler_tp_dealloc(PyObject *self)
{
    SamplerObject *so = (SamplerObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (so->ready) {
        memlens_sampler_fini(&so->s);
        so->ready = 0;
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
sampler_start(PyObject *self, PyObject *Py_UNUSED(args))
{
    SamplerObject *so = (SamplerObject *)self;
    if (sampler_check_ready(so) < 0 || memlens_sampler_start(&so->s) < 0) {
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
sampler_stop(PyObject *self, PyObject *Py_UNUSED(args))
{
    SamplerObject *so = (SamplerObject *)self;
    if (sampler_check_ready(so) < 0) {
        return NULL;
    }
    memlens_sampler_stop(&so->s);
    return Py_NewRef(self);
}

static PyObject *
sampler_exit(PyObject *self, PyObject *Py_UNUSED(args))
{
    PyObject *r = sampler_stop(self, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

/* _buffers(first=0) -> (bytes of float64 times, bytes of uint64 values)
 * of the samples from index `first` on (none when there are not that
 * many): a copy taken under the lock, so a running thread may go on
 * appending. A reader that keeps what it took asks only for the rest. */
static PyObject *
sampler_buffers(PyObject *self, PyObject *args)
{
    SamplerObject *so = (SamplerObject *)self;
    PyObject *times = NULL, *values = NULL, *result = NULL;
    double *tcopy = NULL;
    uint64_t *vcopy = NULL;
    Py_ssize_t first = 0;
    size_t n, skip;
    if (!PyArg_ParseTuple(args, "|n:_buffers", &first)) {
        return NULL;
    }
    if (first < 0) {
        PyErr_Format(PyExc_ValueError, "first must be >= 0, not %zd", first);
        return NULL;
    }
    if (sampler_check_ready(so) < 0) {
        return NULL;
    }
    /* Copy out with libc first: building Python objects under the lock
     * would make the thread wait on our allocations. */
    pthread_mutex_lock(&so->s.lock);
    skip = (size_t)first < so->s.count ? (size_t)first : so->s.count;
    n = so->s.count - skip;
    tcopy = malloc(n ? n * sizeof(double) : 1);
    vcopy = malloc(n ? n * sizeof(uint64_t) : 1);
    if (tcopy != NULL && vcopy != NULL && n > 0) {
        memcpy(tcopy, so->s.times + skip, n * sizeof(double));
        memcpy(vcopy, so->s.values + skip, n * sizeof(uint64_t));
    }
    pthread_mutex_unlock(&so->s.lock);
    if (tcopy == NULL || vcopy == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    times = PyBytes_FromStringAndSize((const char *)tcopy,
                                      (Py_ssize_t)(n * sizeof(double)));
    if (times == NULL) {
        goto error;
    }
    values = PyBytes_FromStringAndSize((const char *)vcopy,
                                       (Py_ssize_t)(n * sizeof(uint64_t)));
    if (values == NULL) {
        goto error;
    }
    result = PyTuple_Pack(2, times, values);
error:
    free(tcopy);
    free(vcopy);
    Py_XDECREF(times);
    Py_XDECREF(values);
    return result;
}

static PyObject *
sampler_get_peak(PyObject *self, void *Py_UNUSED(closure))
{
    SamplerObject *so = (SamplerObject *)self;
    if (sampler_check_ready(so) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&so->s.lock);
    size_t n = so->s.count;
    uint64_t peak = so->s.peak;
    pthread_mutex_unlock(&so->s.lock);
    if (n == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(peak);
}

static PyObject *
sampler_get_count(PyObject *self, void *Py_UNUSED(closure))
{
    SamplerObject *so = (SamplerObject *)self;
    if (sampler_check_ready(so) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&so->s.lock);
    size_t n = so->s.count;
    pthread_mutex_unlock(&so->s.lock);
    return PyLong_FromSize_t(n);
}

static PyObject *
sampler_get_failures(PyObject *self, void *Py_UNUSED(closure))
{
    SamplerObject *so = (SamplerObject *)self;
    if (sampler_check_ready(so) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&so->s.lock);
    uint64_t n = so->s.failures;
    pthread_mutex_unlock(&so->s.lock);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *
sampler_get_running(PyObject *self, void *Py_UNUSED(closure))
{
    SamplerObject *so = (SamplerObject *)self;
    return PyBool_FromLong(so->ready && so->s.running
                           && so->s.owner_pid == getpid());
}

static PyObject *
sampler_get_interval(PyObject *self, void *Py_UNUSED(closure))
{
    SamplerObject *so = (SamplerObject *)self;
    return PyFloat_FromDouble(so->ready ? so->s.interval : 0.0);
}

static PyObject *
sampler_get_start_time(PyObject *self, void *Py_UNUSED(closure))
{
    SamplerObject *so = (SamplerObject *)self;
    if (!so->ready || so->s.start_epoch == 0.0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(so->s.start_epoch);
}

static PyMethodDef sampler_methods[] = {
    {"start", sampler_start, METH_NOARGS,
     "Start sampling in a native thread (no-op when running)."},
    {"stop", sampler_stop, METH_NOARGS,
     "Stop and join the thread (no-op when stopped)."},
    {"__enter__", sampler_start, METH_NOARGS, NULL},
    {"__exit__", sampler_exit, METH_VARARGS, NULL},
    {"_buffers", sampler_buffers, METH_VARARGS,
     "_buffers(first=0): (times, values) of the samples from index first\n"
     "on, as raw float64 / uint64 bytes."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sampler_getset[] = {
    {"peak", sampler_get_peak, NULL,
     "Highest RSS sampled, in bytes (None before the first sample).", NULL},
    {"count", sampler_get_count, NULL, "Number of samples taken.", NULL},
    {"failures", sampler_get_failures, NULL,
     "Samples lost to failed reads or allocations.", NULL},
    {"running", sampler_get_running, NULL, "Whether the thread runs.", NULL},
    {"interval", sampler_get_interval, NULL, "Seconds between samples.", NULL},
    {"start_time", sampler_get_start_time, NULL,
     "Wall-clock time (epoch seconds) of the last start().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sampler_slots[] = {
    {Py_tp_doc, "Sampler(interval=0.001)\n\n"
                "Samples RSS in a native thread that never holds the GIL."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, sampler_tp_init},
    {Py_tp_dealloc, sampler_tp_dealloc},
    {Py_tp_methods, sampler_methods},
    {Py_tp_getset, sampler_getset},
    {0, NULL},
};

static PyType_Spec sampler_spec = {
    .name = "memlens._core.Sampler",
    .basicsize = sizeof(SamplerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = sampler_slots,
};

int
memlens_sampler_init_type(PyObject *module, memlens_state *st)
{
    static int registered = 0;
    if (!registered) {
        int rc = pthread_atfork(NULL, NULL, sampler_atfork_child);
        if (rc != 0) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        registered = 1;
    }
    st->sampler_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &sampler_spec, NULL);
    if (st->sampler_type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->sampler_type);
}
