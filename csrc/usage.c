/* usage.c: UsageSampler, the sampler behind memlens.memory_usage().
 *
 * A UsageSampler owns a native sampler (sampler.c) of this process or of
 * another one, reading RSS, PSS or USS, optionally bounded to a number of
 * samples. When descendants are asked for, it is also the sampler's sink:
 * at every sample it walks the descendants of the process sampled (every
 * thread's /proc/<pid>/task/<tid>/children, as the recorder does), reads
 * each one's figure, and either adds their total to the sample, or keeps
 * each one's figure with the sample's time, or both.
 *
 * Threads: usage_sample runs on the sampler's thread without the GIL (or
 * in stop() once the thread is joined) and touches no Python object;
 * failures are counted, never raised. The descendants' records are shared
 * with the Python methods under kids_lock. The Python methods run with the
 * GIL. After fork the child re-creates kids_lock, which the thread may
 * have held at that instant.
 */
#include "usage.h"
#include "readings.h"
#include "sampler.h"

#include <string.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD memlens_sampler s; /* The thread; its sink is `sink`. */
    memlens_sink sink;
    int ready;       /* s and kids_lock are initialised. */
    int add_kids;    /* Add the descendants' total to each sample.
                      Read-only after init. */
    int keep_kids;   /* Keep each descendant's figure. Read-only after
                      init. */
    pid_t owner_pid; /* The process kids_lock belongs to. GIL. */
    pthread_mutex_t kids_lock;
    /* One record per living descendant per sample, in sample order.
     * Owned (libc). Protected by kids_lock. */
    double *kid_times; /* The sample's time, as the sampler's. */
    int64_t *kid_pids;
    uint64_t *kid_values;  /* Bytes. */
    size_t kid_count;      /* kids_lock. */
    size_t kid_cap;        /* kids_lock. */
    uint64_t kid_failures; /* Walks or records lost. Atomic. */
    memlens_pidlist pids;  /* Owned (libc): reused at every sample.
                              Sampler thread only. */
} UsageObject;

static UsageObject *
usage_of(memlens_sink *sink)
{
    return (UsageObject *)((char *)sink - offsetof(UsageObject, sink));
}

/* Appends one descendant's record. 0, or -1 when out of memory.
 * kids_lock held. */
static int
usage_keep_unlocked(UsageObject *u, double t, pid_t pid, uint64_t value)
{
    if (u->kid_count == u->kid_cap) {
        size_t cap = u->kid_cap ? u->kid_cap * 2 : 256;
        double *times = realloc(u->kid_times, cap * sizeof(double));
        if (times == NULL) {
            return -1;
        }
        u->kid_times = times;
        int64_t *pids = realloc(u->kid_pids, cap * sizeof(int64_t));
        if (pids == NULL) {
            return -1;
        }
        u->kid_pids = pids;
        uint64_t *values = realloc(u->kid_values, cap * sizeof(uint64_t));
        if (values == NULL) {
            return -1;
        }
        u->kid_values = values;
        u->kid_cap = cap;
    }
    u->kid_times[u->kid_count] = t;
    u->kid_pids[u->kid_count] = (int64_t)pid;
    u->kid_values[u->kid_count] = value;
    u->kid_count++;
    return 0;
}

/* The sink: reads every living descendant, keeps each one's figure when
 * asked, and returns the sample with their total added when asked.
 * Sampler thread, no GIL (or stop() after the join). */
static uint64_t
usage_sample(memlens_sink *sink, double t, uint64_t value)
{
    UsageObject *u = usage_of(sink);
    pid_t root = u->s.pid > 0 ? u->s.pid : u->s.owner_pid;
    uint64_t total = 0;
    int failed = 0;

    u->pids.count = 0;
    if (memlens_descendants(root, &u->pids) < 0) {
        failed = 1;
    }
    if (u->keep_kids) {
        pthread_mutex_lock(&u->kids_lock);
    }
    for (size_t i = 0; i < u->pids.count; i++) {
        uint64_t v;
        pid_t pid = u->pids.pids[i];
        /* A zombie (exited, not yet reaped) reads as 0 pages. */
        if (memlens_metric_of_pid(pid, u->s.metric, &v) < 0 || v == 0) {
            continue;
        }
        total += v;
        if (u->keep_kids && usage_keep_unlocked(u, t, pid, v) < 0) {
            failed = 1;
        }
    }
    if (u->keep_kids) {
        pthread_mutex_unlock(&u->kids_lock);
    }
    if (failed) {
        __atomic_add_fetch(&u->kid_failures, 1, __ATOMIC_RELAXED);
    }
    return u->add_kids ? value + total : value;
}

/* ---- The Python type -------------------------------------------------- */

/* After fork the thread is gone but its locks may be held: the child's
 * copy of the sampler is marked stopped (which renews the sampler's
 * lock), and kids_lock is made anew. GIL held. */
static void
usage_adopt_after_fork(UsageObject *u)
{
    if (u->ready && u->owner_pid != getpid()) {
        memlens_sampler_stop(&u->s);
        pthread_mutex_init(&u->kids_lock, NULL);
        u->owner_pid = getpid();
    }
}

static int
usage_check(UsageObject *u)
{
    if (!u->ready) {
        PyErr_SetString(PyExc_RuntimeError,
                        "UsageSampler.__init__ was not called");
        return -1;
    }
    usage_adopt_after_fork(u);
    return 0;
}

static int
usage_parse_metric(const char *name, int *out)
{
    if (strcmp(name, "rss") == 0) {
        *out = MEMLENS_METRIC_RSS;
    }
    else if (strcmp(name, "pss") == 0) {
        *out = MEMLENS_METRIC_PSS;
    }
    else if (strcmp(name, "uss") == 0) {
        *out = MEMLENS_METRIC_USS;
    }
    else {
        PyErr_Format(PyExc_ValueError,
                     "metric must be 'rss', 'pss' or 'uss', not '%.100s'",
                     name);
        return -1;
    }
    return 0;
}

static int
usage_tp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"interval",     "pid",        "metric", "limit",
                             "add_children", "each_child", NULL};
    UsageObject *u = (UsageObject *)self;
    PyObject *interval_obj;
    double interval;
    long pid = 0;
    const char *metric_name = "rss";
    long long limit = 0;
    int add_kids = 0, keep_kids = 0, metric;
    if (u->ready) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a UsageSampler cannot be initialised twice");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$lsLpp:UsageSampler",
                                     kwlist, &interval_obj, &pid, &metric_name,
                                     &limit, &add_kids, &keep_kids)) {
        return -1;
    }
    if (memlens_sampler_parse_interval(interval_obj, &interval) < 0
        || usage_parse_metric(metric_name, &metric) < 0) {
        return -1;
    }
    if (pid < 0 || pid > INT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "pid must be a process id, or 0 for this process, "
                     "not %ld",
                     pid);
        return -1;
    }
    if (limit < 0) {
        PyErr_Format(PyExc_ValueError,
                     "limit must be a number of samples, or 0 for no "
                     "limit, not %lld",
                     limit);
        return -1;
    }
    if (pthread_mutex_init(&u->kids_lock, NULL) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_mutex_init failed");
        return -1;
    }
    if (memlens_sampler_init(&u->s, interval) < 0) {
        pthread_mutex_destroy(&u->kids_lock);
        return -1;
    }
    u->s.pid = (pid_t)pid;
    u->s.metric = metric;
    u->s.limit = (uint64_t)limit;
    /* The first sample is the moment before the watched call. */
    u->s.first_now = 1;
    u->add_kids = add_kids;
    u->keep_kids = keep_kids;
    if (add_kids || keep_kids) {
        u->sink.sample = usage_sample;
        u->s.sink = &u->sink;
    }
    u->owner_pid = getpid();
    u->ready = 1;
    return 0;
}

static void
usage_tp_dealloc(PyObject *self)
{
    UsageObject *u = (UsageObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (u->ready) {
        memlens_sampler_fini(&u->s);
        usage_adopt_after_fork(u);
        pthread_mutex_destroy(&u->kids_lock);
        free(u->kid_times);
        free(u->kid_pids);
        free(u->kid_values);
        free(u->pids.pids);
        u->ready = 0;
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* start(): clears earlier samples and starts the thread. Returns self. */
static PyObject *
usage_start(PyObject *self, PyObject *Py_UNUSED(args))
{
    UsageObject *u = (UsageObject *)self;
    if (usage_check(u) < 0) {
        return NULL;
    }
    /* A thread that ended by itself calls the sink no more: its records
     * are cleared too, and start() joins it. */
    if (!memlens_sampler_active(&u->s)) {
        pthread_mutex_lock(&u->kids_lock);
        u->kid_count = 0;
        pthread_mutex_unlock(&u->kids_lock);
        __atomic_store_n(&u->kid_failures, 0, __ATOMIC_RELAXED);
    }
    if (memlens_sampler_start(&u->s) < 0) {
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
usage_stop(PyObject *self, PyObject *Py_UNUSED(args))
{
    UsageObject *u = (UsageObject *)self;
    if (usage_check(u) < 0) {
        return NULL;
    }
    memlens_sampler_stop(&u->s);
    return Py_NewRef(self);
}

/* wait(timeout=None) -> bool: whether the thread ended by itself (or was
 * stopped) before `timeout` seconds passed. */
static PyObject *
usage_wait(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    UsageObject *u = (UsageObject *)self;
    PyObject *timeout_obj = Py_None;
    double timeout = -1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:wait", kwlist,
                                     &timeout_obj)) {
        return NULL;
    }
    if (usage_check(u) < 0) {
        return NULL;
    }
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (!(timeout >= 0.0)) {
            PyErr_Format(PyExc_ValueError,
                         "timeout must be a non-negative number of seconds, "
                         "or None, not %R",
                         timeout_obj);
            return NULL;
        }
    }
    int rc = memlens_sampler_wait(&u->s, timeout);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

/* The `n` items of `size` bytes at `src` as a new bytes object, or NULL
 * with an exception. */
static PyObject *
usage_bytes(const void *src, size_t n, size_t size)
{
    return PyBytes_FromStringAndSize((const char *)src,
                                     (Py_ssize_t)(n * size));
}

/* _buffers() -> (times, values, kid_times, kid_pids, kid_values): raw
 * float64 / uint64 / float64 / int64 / uint64 bytes, copied under the
 * locks, so that a running thread may go on appending. */
static PyObject *
usage_buffers(PyObject *self, PyObject *Py_UNUSED(args))
{
    UsageObject *u = (UsageObject *)self;
    PyObject *parts[5] = {NULL, NULL, NULL, NULL, NULL};
    PyObject *result = NULL;
    double *times = NULL, *kid_times = NULL;
    uint64_t *values = NULL, *kid_values = NULL;
    int64_t *kid_pids = NULL;
    size_t n, k;
    if (usage_check(u) < 0) {
        return NULL;
    }
    /* Copied out with libc first: building Python objects under a lock
     * would make the thread wait on our allocations. */
    memlens_sampler *s = &u->s;
    pthread_mutex_lock(&s->lock);
    n = s->count;
    times = malloc(n ? n * sizeof(double) : 1);
    values = malloc(n ? n * sizeof(uint64_t) : 1);
    if (times != NULL && values != NULL && n > 0) {
        memcpy(times, s->times, n * sizeof(double));
        memcpy(values, s->values, n * sizeof(uint64_t));
    }
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&u->kids_lock);
    k = u->kid_count;
    kid_times = malloc(k ? k * sizeof(double) : 1);
    kid_pids = malloc(k ? k * sizeof(int64_t) : 1);
    kid_values = malloc(k ? k * sizeof(uint64_t) : 1);
    if (kid_times != NULL && kid_pids != NULL && kid_values != NULL && k > 0) {
        memcpy(kid_times, u->kid_times, k * sizeof(double));
        memcpy(kid_pids, u->kid_pids, k * sizeof(int64_t));
        memcpy(kid_values, u->kid_values, k * sizeof(uint64_t));
    }
    pthread_mutex_unlock(&u->kids_lock);
    if (times == NULL || values == NULL || kid_times == NULL
        || kid_pids == NULL || kid_values == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    parts[0] = usage_bytes(times, n, sizeof(double));
    parts[1] = usage_bytes(values, n, sizeof(uint64_t));
    parts[2] = usage_bytes(kid_times, k, sizeof(double));
    parts[3] = usage_bytes(kid_pids, k, sizeof(int64_t));
    parts[4] = usage_bytes(kid_values, k, sizeof(uint64_t));
    for (int i = 0; i < 5; i++) {
        if (parts[i] == NULL) {
            goto error;
        }
    }
    result = PyTuple_Pack(5, parts[0], parts[1], parts[2], parts[3], parts[4]);
error:
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(parts[i]);
    }
    free(times);
    free(values);
    free(kid_times);
    free(kid_pids);
    free(kid_values);
    return result;
}

static PyObject *
usage_get_failures(PyObject *self, void *Py_UNUSED(closure))
{
    UsageObject *u = (UsageObject *)self;
    if (usage_check(u) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&u->s.lock);
    uint64_t n = u->s.failures;
    pthread_mutex_unlock(&u->s.lock);
    n += __atomic_load_n(&u->kid_failures, __ATOMIC_RELAXED);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *
usage_get_finished(PyObject *self, void *Py_UNUSED(closure))
{
    UsageObject *u = (UsageObject *)self;
    if (usage_check(u) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&u->s.lock);
    int finished = u->s.finished;
    pthread_mutex_unlock(&u->s.lock);
    return PyBool_FromLong(finished);
}

static PyObject *
usage_get_gone(PyObject *self, void *Py_UNUSED(closure))
{
    UsageObject *u = (UsageObject *)self;
    if (usage_check(u) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&u->s.lock);
    int gone = u->s.gone;
    pthread_mutex_unlock(&u->s.lock);
    return PyBool_FromLong(gone);
}

static PyObject *
usage_get_running(PyObject *self, void *Py_UNUSED(closure))
{
    UsageObject *u = (UsageObject *)self;
    /* A thread that ended by itself runs no more, though not joined. */
    return PyBool_FromLong(u->ready && u->s.owner_pid == getpid()
                           && memlens_sampler_active(&u->s));
}

static PyObject *
usage_get_start_time(PyObject *self, void *Py_UNUSED(closure))
{
    UsageObject *u = (UsageObject *)self;
    if (!u->ready || u->s.start_epoch == 0.0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(u->s.start_epoch);
}

static PyMethodDef usage_methods[] = {
    {"start", usage_start, METH_NOARGS,
     "Start sampling in a native thread (no-op when running)."},
    {"stop", usage_stop, METH_NOARGS,
     "Stop and join the thread (no-op when stopped)."},
    {"wait", (PyCFunction)(void (*)(void))usage_wait,
     METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None) -> bool: until the thread ends by itself."},
    {"_buffers", usage_buffers, METH_NOARGS,
     "(times, values, kid_times, kid_pids, kid_values) as raw bytes."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef usage_getset[] = {
    {"failures", usage_get_failures, NULL,
     "Samples or descendants' readings lost.", NULL},
    {"finished", usage_get_finished, NULL,
     "Whether the thread ended by itself (limit, or process gone).", NULL},
    {"gone", usage_get_gone, NULL,
     "Whether the process sampled exited (or began to).", NULL},
    {"running", usage_get_running, NULL, "Whether the thread runs.", NULL},
    {"start_time", usage_get_start_time, NULL,
     "Wall-clock time (epoch seconds) of the last start().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot usage_slots[] = {
    {Py_tp_doc,
     "UsageSampler(interval, *, pid=0, metric='rss', limit=0,\n"
     "             add_children=False, each_child=False)\n\n"
     "Samples a process's RSS, PSS or USS (and its descendants') in a\n"
     "native thread; the sampler of memlens.memory_usage()."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, usage_tp_init},
    {Py_tp_dealloc, usage_tp_dealloc},
    {Py_tp_methods, usage_methods},
    {Py_tp_getset, usage_getset},
    {0, NULL},
};

static PyType_Spec usage_spec = {
    .name = "memlens._core.UsageSampler",
    .basicsize = sizeof(UsageObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = usage_slots,
};

int
memlens_usage_init_type(PyObject *module, memlens_state *st)
{
    st->usage_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &usage_spec, NULL);
    if (st->usage_type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->usage_type);
}
