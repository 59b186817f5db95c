/* peak.c: PeakWindow, the exact highest RSS reached inside a block.
 *
 * The kernel keeps one high-water mark (VmHWM) per process, and clear_refs
 * resets it to the current RSS. A window resets it on entry and reads it
 * on exit. Windows may nest or overlap, so before every reset the mark is
 * folded into each open window's running maximum: a reset made by an
 * inner window then costs the outer one nothing. The tiny gap between the
 * last read and the reset is the only moment a peak could slip by.
 *
 * Where the reset is refused, a window runs its own native sampler
 * instead (source "sampler").
 *
 * Threads: all of it runs with the GIL held, which protects the list of
 * open windows.
 */
#include "peak.h"
#include "readings.h"
#include "sampler.h"

#include <errno.h>
#include <string.h>

enum { PEAK_KERNEL = 0, PEAK_SAMPLER = 1 };
enum { PEAK_AUTO = -1 };
enum { PEAK_NEW = 0, PEAK_OPEN = 1, PEAK_CLOSED = 2 };

/* Interval of a sampler-backed window: fine enough for a 2 ms spike. */
#define PEAK_SAMPLER_INTERVAL 0.0005

typedef struct PeakWindow {
    PyObject_HEAD int requested; /* PEAK_AUTO, PEAK_KERNEL or PEAK_SAMPLER. */
    int source;                  /* What the last entry used. */
    int state;
    uint64_t start, end, peak; /* Bytes. */
    uint64_t max_seen;         /* Highest mark folded in so far. */
    memlens_sampler sampler;   /* Used when source is PEAK_SAMPLER. */
    int sampler_ready;
    struct PeakWindow *prev; /* Borrowed. Open-window list, GIL. */
    struct PeakWindow *next; /* Borrowed. Open-window list, GIL. */
} PeakWindow;

/* Open windows, newest first. Borrowed: a window unlinks itself on exit
 * and in dealloc. Protected by the GIL. */
static PeakWindow *peak_open_list = NULL;
static long peak_open_count = 0;

/* Whether clear_refs accepted a reset: 1, 0, or -1 not yet probed, for
 * the proc dir of generation peak_probe_generation. GIL. */
static int peak_kernel_works = -1;
static unsigned long peak_probe_generation = 0;

long
memlens_peak_open_windows(void)
{
    return peak_open_count;
}

/* Resets the kernel mark after folding the old one into every open
 * window. Returns 0, or -1 with errno (no exception). */
static int
peak_fold_and_reset(void)
{
    uint64_t before;
    if (memlens_hwm_reset(&before) < 0) {
        return -1;
    }
    for (PeakWindow *w = peak_open_list; w != NULL; w = w->next) {
        if (w->source == PEAK_KERNEL && before > w->max_seen) {
            w->max_seen = before;
        }
    }
    return 0;
}

/* Whether kernel windows work here: 1 or 0; probing resets the mark,
 * which is harmless because it folds first. */
static int
peak_kernel_available(void)
{
    if (peak_kernel_works < 0
        || peak_probe_generation != memlens_proc_generation) {
        peak_probe_generation = memlens_proc_generation;
        peak_kernel_works = peak_fold_and_reset() == 0;
    }
    return peak_kernel_works;
}

static void
peak_unlink(PeakWindow *w)
{
    if (w->state != PEAK_OPEN) {
        return;
    }
    if (w->prev != NULL) {
        w->prev->next = w->next;
    }
    else {
        peak_open_list = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    w->prev = w->next = NULL;
    peak_open_count--;
}

static int
peak_parse_source(PyObject *obj, int *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = PEAK_AUTO;
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "source must be str or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyUnicode_CompareWithASCIIString(obj, "auto") == 0) {
        *out = PEAK_AUTO;
    }
    else if (PyUnicode_CompareWithASCIIString(obj, "kernel") == 0) {
        *out = PEAK_KERNEL;
    }
    else if (PyUnicode_CompareWithASCIIString(obj, "sampler") == 0) {
        *out = PEAK_SAMPLER;
    }
    else {
        PyErr_Format(PyExc_ValueError,
                     "source must be 'auto', 'kernel' or 'sampler', not %R",
                     obj);
        return -1;
    }
    return 0;
}

static int
peak_tp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"source", NULL};
    PeakWindow *w = (PeakWindow *)self;
    PyObject *source = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:PeakWindow", kwlist,
                                     &source)) {
        return -1;
    }
    if (w->state == PEAK_OPEN) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot re-initialise an open PeakWindow");
        return -1;
    }
    return peak_parse_source(source, &w->requested);
}

static PyObject *
peak_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PeakWindow *w = (PeakWindow *)type->tp_alloc(type, 0);
    if (w != NULL) {
        w->requested = PEAK_AUTO;
        w->state = PEAK_NEW;
    }
    return (PyObject *)w;
}

/* __enter__: opens the window; returns self (new reference). */
static PyObject *
peak_enter(PyObject *self, PyObject *Py_UNUSED(args))
{
    PeakWindow *w = (PeakWindow *)self;
    int source = w->requested;
    if (w->state == PEAK_OPEN) {
        PyErr_SetString(PyExc_RuntimeError, "PeakWindow is already open");
        return NULL;
    }
    if (source != PEAK_SAMPLER) {
        int ok = peak_kernel_available();
        if (ok) {
            ok = peak_fold_and_reset() == 0;
        }
        if (!ok && source == PEAK_KERNEL) {
            int err = errno ? errno : EACCES;
            return PyErr_Format(PyExc_OSError,
                                "the kernel's peak reset is not available "
                                "here (clear_refs: %s); use source='sampler'",
                                strerror(err));
        }
        source = ok ? PEAK_KERNEL : PEAK_SAMPLER;
    }
    w->source = source;
    if (memlens_rss_now(&w->start) < 0) {
        return NULL;
    }
    w->max_seen = w->start;
    w->end = w->peak = 0;
    if (source == PEAK_SAMPLER) {
        if (!w->sampler_ready) {
            if (memlens_sampler_init(&w->sampler, PEAK_SAMPLER_INTERVAL) < 0) {
                return NULL;
            }
            w->sampler_ready = 1;
        }
        if (memlens_sampler_start(&w->sampler) < 0) {
            return NULL;
        }
    }
    w->state = PEAK_OPEN;
    w->prev = NULL;
    w->next = peak_open_list;
    if (peak_open_list != NULL) {
        peak_open_list->prev = w;
    }
    peak_open_list = w;
    peak_open_count++;
    return Py_NewRef(self);
}

/* The highest RSS seen by an open window so far. 0 or -1 + OSError. */
static int
peak_current(PeakWindow *w, uint64_t *peak)
{
    uint64_t seen = w->max_seen;
    if (w->source == PEAK_KERNEL) {
        uint64_t hwm;
        if (memlens_hwm_now(&hwm) < 0) {
            return -1;
        }
        if (hwm > seen) {
            seen = hwm;
        }
    }
    else {
        uint64_t sp = memlens_sampler_peak(&w->sampler);
        if (sp > seen) {
            seen = sp;
        }
    }
    *peak = seen;
    return 0;
}

/* Closes an open window, filling end and peak. 0 or -1 + exception (the
 * window is closed either way). */
static int
peak_close(PeakWindow *w)
{
    int rc = 0;
    uint64_t peak = w->max_seen;
    if (w->source == PEAK_SAMPLER) {
        memlens_sampler_stop(&w->sampler);
    }
    if (memlens_rss_now(&w->end) < 0 || peak_current(w, &peak) < 0) {
        rc = -1;
    }
    peak_unlink(w);
    w->state = PEAK_CLOSED;
    if (w->end > peak) {
        peak = w->end;
    }
    w->peak = peak;
    return rc;
}

static PyObject *
peak_exit(PyObject *self, PyObject *Py_UNUSED(args))
{
    PeakWindow *w = (PeakWindow *)self;
    if (w->state != PEAK_OPEN) {
        PyErr_SetString(PyExc_RuntimeError, "PeakWindow is not open");
        return NULL;
    }
    if (peak_close(w) < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

static void
peak_tp_dealloc(PyObject *self)
{
    PeakWindow *w = (PeakWindow *)self;
    PyTypeObject *tp = Py_TYPE(self);
    peak_unlink(w);
    if (w->sampler_ready) {
        memlens_sampler_fini(&w->sampler);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
peak_get_start(PyObject *self, void *Py_UNUSED(closure))
{
    PeakWindow *w = (PeakWindow *)self;
    if (w->state == PEAK_NEW) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(w->start);
}

static PyObject *
peak_get_end(PyObject *self, void *Py_UNUSED(closure))
{
    PeakWindow *w = (PeakWindow *)self;
    if (w->state != PEAK_CLOSED) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(w->end);
}

/* Peak so far: final once closed, live while open, None before. */
static int
peak_value(PeakWindow *w, uint64_t *peak)
{
    if (w->state == PEAK_CLOSED) {
        *peak = w->peak;
        return 1;
    }
    if (w->state == PEAK_OPEN) {
        return peak_current(w, peak) < 0 ? -1 : 1;
    }
    return 0;
}

static PyObject *
peak_get_peak(PyObject *self, void *Py_UNUSED(closure))
{
    uint64_t peak;
    int have = peak_value((PeakWindow *)self, &peak);
    if (have < 0) {
        return NULL;
    }
    if (!have) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(peak);
}

static PyObject *
peak_get_peak_delta(PyObject *self, void *Py_UNUSED(closure))
{
    PeakWindow *w = (PeakWindow *)self;
    uint64_t peak;
    int have = peak_value(w, &peak);
    if (have < 0) {
        return NULL;
    }
    if (!have) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong((long long)peak - (long long)w->start);
}

static PyObject *
peak_get_delta(PyObject *self, void *Py_UNUSED(closure))
{
    PeakWindow *w = (PeakWindow *)self;
    if (w->state != PEAK_CLOSED) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong((long long)w->end - (long long)w->start);
}

static PyObject *
peak_get_source(PyObject *self, void *Py_UNUSED(closure))
{
    PeakWindow *w = (PeakWindow *)self;
    if (w->state == PEAK_NEW) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(w->source == PEAK_KERNEL ? "kernel"
                                                         : "sampler");
}

static PyObject *
peak_get_open(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((PeakWindow *)self)->state == PEAK_OPEN);
}

static PyObject *
peak_tp_repr(PyObject *self)
{
    PeakWindow *w = (PeakWindow *)self;
    static const char *states[] = {"new", "open", "closed"};
    if (w->state != PEAK_CLOSED) {
        return PyUnicode_FromFormat("<PeakWindow %s>", states[w->state]);
    }
    return PyUnicode_FromFormat(
        "<PeakWindow source=%s start=%llu end=%llu peak=%llu>",
        w->source == PEAK_KERNEL ? "kernel" : "sampler",
        (unsigned long long)w->start, (unsigned long long)w->end,
        (unsigned long long)w->peak);
}

/* to_dict() -> dict of the window's figures (new reference). */
static PyObject *
peak_to_dict(PyObject *self, PyObject *Py_UNUSED(args))
{
    static const char *names[] = {"start", "end",    "peak", "peak_delta",
                                  "delta", "source", NULL};
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    for (int i = 0; names[i] != NULL; i++) {
        PyObject *v = PyObject_GetAttrString(self, names[i]);
        if (v == NULL || PyDict_SetItemString(d, names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyMethodDef peak_methods[] = {
    {"to_dict", peak_to_dict, METH_NOARGS, "The figures as a dict."},
    {"__enter__", peak_enter, METH_NOARGS, NULL},
    {"__exit__", peak_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef peak_getset[] = {
    {"start", peak_get_start, NULL, "RSS at entry, bytes.", NULL},
    {"end", peak_get_end, NULL, "RSS at exit, bytes (None while open).", NULL},
    {"peak", peak_get_peak, NULL,
     "Highest RSS inside the window, bytes (live while open).", NULL},
    {"peak_delta", peak_get_peak_delta, NULL, "peak - start, bytes.", NULL},
    {"delta", peak_get_delta, NULL, "end - start, bytes.", NULL},
    {"source", peak_get_source, NULL, "'kernel' or 'sampler'.", NULL},
    {"open", peak_get_open, NULL, "Whether the window is open.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot peak_slots[] = {
    {Py_tp_doc, "PeakWindow(source=None)\n\n"
                "Context manager: the exact highest RSS reached inside."},
    {Py_tp_new, peak_tp_new},
    {Py_tp_init, peak_tp_init},
    {Py_tp_dealloc, peak_tp_dealloc},
    {Py_tp_repr, peak_tp_repr},
    {Py_tp_methods, peak_methods},
    {Py_tp_getset, peak_getset},
    {0, NULL},
};

static PyType_Spec peak_spec = {
    .name = "memlens._core.PeakWindow",
    .basicsize = sizeof(PeakWindow),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = peak_slots,
};

int
memlens_peak_init_type(PyObject *module, memlens_state *st)
{
    st->window_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &peak_spec, NULL);
    if (st->window_type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->window_type);
}
