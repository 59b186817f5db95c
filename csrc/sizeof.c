/* sizeof.c: deep sizes (asizeof), walked in C.
 *
 * The rule (SPEC 6): the bytes of every distinct object reachable from the
 * arguments, each counted once. Followed: an object's references as its
 * type reports them (tp_traverse), every key and value of a dict (the GC
 * walk skips the keys of string-keyed dicts), a NumPy array's base, and
 * the objects a NumPy array's elements refer to (object arrays, object
 * fields of structured arrays; a view's are its owner's). Subclasses of
 * ndarray (np.matrix, np.memmap, a user's) are arrays too. An array counts
 * its data only when it owns it (ndarray.__sizeof__); otherwise the owner,
 * its base, counts it. A memmap's base is the mmap object, whose mapped
 * file pages are not heap and do not count, as with any array over a
 * buffer it does not own.
 * Neither counted nor followed when reached: modules, classes, functions
 * and code objects. The arguments themselves always count; an argument of
 * those kinds counts what it alone holds, never the program around it:
 *
 *   function       its defaults, keyword defaults, closure cells (and
 *                  what they hold) and its own __dict__; not its code,
 *                  globals, builtins, names, docstring, module name,
 *                  annotations or type parameters (the program's text
 *                  and context).
 *   builtin        its __self__ (the object a builtin method is bound
 *                  to); not its module's name.
 *   class, module  its namespace dict and the entries of it that are
 *                  data: not the entries named __dunder__ (the
 *                  language's bookkeeping: __module__, __doc__,
 *                  __builtins__, __spec__...), nor those whose value is
 *                  program (a module, class, function or code object, or
 *                  a method wrapper: staticmethod, classmethod, property
 *                  and the C-level descriptors). A class's bases and MRO
 *                  and a module's C state are not followed either.
 *   code object    what it refers to, under the rule of what is reached
 *                  (its constants, names and bytes).
 *
 * One object's size is what sys.getsizeof reports: computed here for the
 * common built-in types, asked of the object's __sizeof__ otherwise.
 *
 * The walk is iterative (an explicit stack, so a ten-million-long chain
 * does not overflow the C stack) and creates no Python object per visited
 * object; the visited set and the stack are libc memory. Objects on the
 * stack are held by a reference, because a __sizeof__ written in Python
 * may run arbitrary code. A __sizeof__ that raises an ordinary exception
 * (an Exception other than MemoryError) or returns nonsense counts the
 * object's basic size; the error is counted, not raised. Anything else it
 * raises (KeyboardInterrupt, SystemExit, MemoryError) stops the walk and
 * propagates, and so does a signal noticed during a long walk: every
 * SIZEOF_SIGNAL_EVERY objects the walk runs the pending signal handlers.
 * A size or a total past PY_SSIZE_T_MAX raises OverflowError: no real
 * object or heap is that large, so it can only come from a __sizeof__
 * that lies, and a clamped figure would pass for a measurement.
 *
 * GIL held throughout.
 */
#include "common.h"
#include "sizeof.h"
#include "table.h"

#include <string.h>

/* What sys.getsizeof adds to __sizeof__: the GC header (two pointers on
 * every version we support) and, from 3.11, the pre-header of objects
 * with a managed dict (and, from 3.12, managed weak references). */
#define SIZEOF_GC_HEAD (2 * sizeof(void *))

/* Objects walked between two checks for a pending signal (Ctrl-C): a few
 * milliseconds of walking at most, and a negligible cost. */
#define SIZEOF_SIGNAL_EVERY 4096

/* How the size of a type's instances is found. */
enum {
    SIZE_UNKNOWN = 0,
    SIZE_GENERIC,   /* object.__sizeof__: basicsize + itemsize * ob_size */
    SIZE_LIST,      /* basicsize + allocated pointers */
    SIZE_SET,       /* basicsize + the table unless it is the small one */
    SIZE_STR,       /* compact ASCII strings by formula, others: call */
    SIZE_BYTEARRAY, /* basicsize + ob_alloc (3.15: its __sizeof__) */
    SIZE_INT,       /* digits, by version */
    SIZE_CALL,      /* ask __sizeof__ */
};

/* Or-ed into a strategy: instances are NumPy arrays (follow their base
 * and the objects their elements refer to). */
#define SIZE_NDARRAY 0x80
#define SIZE_HOW(s) ((s)&0x7f)

static inline uint64_t
sizeof_region_key(const void *e)
{
    const memlens_sizeof_region *r = *(memlens_sizeof_region *const *)e;
    return r != NULL ? r->base : 0; /* no object lives below 64 KiB */
}

/* The region of `base`, made if `make`; NULL if absent (or no memory). */
static memlens_sizeof_region *
sizeof_region_of(memlens_sizeof_set *s, uintptr_t base, int make)
{
    if (s->last != NULL && s->last->base == base) {
        return s->last;
    }
    size_t i = 0;
    if (s->slots != NULL) {
        i = memlens_table_find(s->slots, sizeof(memlens_sizeof_region *),
                               s->mask, base, sizeof_region_key);
        if (s->slots[i] != NULL) {
            return s->last = s->slots[i];
        }
    }
    if (!make) {
        return NULL;
    }
    if (memlens_table_full(s->slots == NULL, s->used, s->mask, 1, 2)) {
        size_t cap = s->slots ? (s->mask + 1) * 2 : 256;
        memlens_sizeof_region **slots =
            calloc(cap, sizeof(memlens_sizeof_region *));
        if (slots == NULL) {
            return NULL;
        }
        memlens_table_rehash(
            slots, cap - 1, s->slots, s->slots ? s->mask + 1 : 0,
            sizeof(memlens_sizeof_region *), sizeof_region_key);
        free(s->slots);
        s->slots = slots;
        s->mask = cap - 1;
        i = memlens_table_find(s->slots, sizeof(memlens_sizeof_region *),
                               s->mask, base, sizeof_region_key);
    }
    memlens_sizeof_region *r = calloc(1, sizeof(memlens_sizeof_region));
    if (r == NULL) {
        return NULL;
    }
    r->base = base;
    s->slots[i] = r;
    s->used++;
    return s->last = r;
}

/* Adds p; 1 if it was new, 0 if already there, -1 out of memory. */
int
memlens_sizeof_set_add(memlens_sizeof_set *s, uintptr_t p)
{
    memlens_sizeof_region *r = sizeof_region_of(s, p >> SEEN_REGION_SHIFT, 1);
    if (r == NULL) {
        return -1;
    }
    size_t bit = (p >> 4) & (SEEN_WORDS * 64 - 1);
    uint64_t mask = UINT64_C(1) << (bit & 63);
    if (r->bits[bit >> 6] & mask) {
        return 0;
    }
    r->bits[bit >> 6] |= mask;
    return 1;
}

static void
sizeof_set_clear(memlens_sizeof_set *s)
{
    for (size_t k = 0; s->slots != NULL && k <= s->mask; k++) {
        free(s->slots[k]);
    }
    free(s->slots);
    s->slots = NULL;
    s->last = NULL;
    s->used = 0;
}

/* Marks o seen and pushes a new reference to it, unless it was seen
 * already: each object is pushed once. 0, or -1 out of memory. */
int
memlens_sizeof_push(memlens_sizeof_walk *w, PyObject *o)
{
    if (o == NULL) {
        return 0;
    }
    int added = memlens_sizeof_set_add(&w->seen, (uintptr_t)o);
    if (added <= 0) {
        if (added < 0) {
            w->oom = 1;
        }
        return added;
    }
    if (memlens_grow((void **)&w->stack, &w->cap, w->depth, sizeof(PyObject *),
                     1024)
            < 0
        || memlens_grow((void **)&w->levels, &w->levels_cap, w->depth,
                        sizeof(Py_ssize_t), 1024)
               < 0) {
        w->oom = 1;
        return -1;
    }
    Py_INCREF(o);
    w->levels[w->depth] = w->level + 1;
    w->stack[w->depth++] = o;
    return 0;
}

static int
sizeof_visit(PyObject *o, void *arg)
{
    return memlens_sizeof_push((memlens_sizeof_walk *)arg, o);
}

/* Program, not data: neither counted nor followed when reached. */
int
memlens_sizeof_excluded(PyObject *o)
{
    return PyModule_Check(o) || PyType_Check(o) || PyFunction_Check(o)
           || PyCFunction_Check(o) || PyCode_Check(o);
}

/* After a call made for the walk failed: an ordinary exception (an
 * Exception, but not MemoryError) is cleared, 0; anything else stays set,
 * to propagate, -1. */
static int
sizeof_clear_ordinary(void)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)
        || PyErr_ExceptionMatches(PyExc_MemoryError)) {
        return -1;
    }
    PyErr_Clear();
    return 0;
}

static int
sizeof_total_too_large(void)
{
    PyErr_SetString(PyExc_OverflowError,
                    "the total size exceeds sys.maxsize bytes: some "
                    "__sizeof__ reports more than any object can hold");
    return -1;
}

/* *total += n, both >= 0. 0, or -1 with OverflowError. */
static int
sizeof_add(Py_ssize_t *total, Py_ssize_t n)
{
    if (n > PY_SSIZE_T_MAX - *total) {
        return sizeof_total_too_large();
    }
    *total += n;
    return 0;
}

/* The same for the census's 64-bit counters, kept within sys.maxsize. */
int
memlens_sizeof_add64(int64_t *total, int64_t n)
{
    if (n > (int64_t)PY_SSIZE_T_MAX - *total) {
        return sizeof_total_too_large();
    }
    *total += n;
    return 0;
}

/* Counts one more object walked; runs the pending signal handlers now and
 * then. 0, or -1 with the exception a handler raised. */
int
memlens_sizeof_tick(memlens_sizeof_walk *w)
{
    if (++w->visits < SIZEOF_SIGNAL_EVERY) {
        return 0;
    }
    w->visits = 0;
    return PyErr_CheckSignals();
}

/* Stops a walk that failed: the exception set, or MemoryError when the
 * walk ran out of memory (its own tables). -1. */
int
memlens_sizeof_abort(void)
{
    if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    return -1;
}

static unsigned char
sizeof_strategy_for(memlens_sizeof_walk *w, PyTypeObject *tp)
{
    if (tp == &PyList_Type) {
        return SIZE_LIST;
    }
    if (tp == &PySet_Type || tp == &PyFrozenSet_Type) {
        return SIZE_SET;
    }
    if (tp == &PyUnicode_Type) {
        return SIZE_STR;
    }
    if (tp == &PyByteArray_Type) {
        return SIZE_BYTEARRAY;
    }
    if (tp == &PyLong_Type || tp == &PyBool_Type) {
        return SIZE_INT;
    }
    if (tp == &PyTuple_Type || tp == &PyFloat_Type || tp == &PyBytes_Type
        || tp == &PyComplex_Type) {
        return SIZE_GENERIC;
    }
    /* Anything else: generic if its __sizeof__ is object's. */
    PyObject *meth = PyObject_GetAttrString((PyObject *)tp, "__sizeof__");
    unsigned char s = SIZE_CALL;
    if (meth == NULL) {
        /* An ordinary error is counted when the call fails too. */
        if (sizeof_clear_ordinary() < 0) {
            w->failed = 1;
            return s;
        }
    }
    else {
        if (meth == w->object_sizeof) {
            s = SIZE_GENERIC;
        }
        Py_DECREF(meth);
    }
    /* Subclasses too (np.matrix, np.memmap, a user's): they keep the
     * array's C struct at their head, so the same fields are read. */
    for (PyTypeObject *t = tp; t != NULL; t = t->tp_base) {
        if (strcmp(t->tp_name, "numpy.ndarray") == 0) {
            s |= SIZE_NDARRAY;
            break;
        }
    }
    return s;
}

/* The strategy of a type, cached for the walk. */
static unsigned char sizeof_strategy_lookup(memlens_sizeof_walk *w,
                                            PyTypeObject *tp);

static unsigned char
sizeof_strategy(memlens_sizeof_walk *w, PyTypeObject *tp)
{
    uintptr_t key = (uintptr_t)tp;
    if (key == w->last_type) {
        return w->last_strategy;
    }
    w->last_type = key;
    w->last_strategy = sizeof_strategy_lookup(w, tp);
    return w->last_strategy;
}

static inline uint64_t
sizeof_type_key(const void *e)
{
    return ((const memlens_sizeof_type *)e)->type;
}

/* The strategy of a type from the walk's table, computed once. */
static unsigned char
sizeof_strategy_lookup(memlens_sizeof_walk *w, PyTypeObject *tp)
{
    uintptr_t key = (uintptr_t)tp;
    if (w->types != NULL) {
        size_t i = memlens_table_find(w->types, sizeof(memlens_sizeof_type),
                                      w->types_mask, key, sizeof_type_key);
        if (w->types[i].type != 0) {
            return w->types[i].strategy;
        }
    }
    unsigned char s = sizeof_strategy_for(w, tp);
    if (memlens_table_full(w->types == NULL, w->types_used, w->types_mask, 1,
                           2)) {
        size_t cap = w->types ? (w->types_mask + 1) * 2 : 64;
        memlens_sizeof_type *types = calloc(cap, sizeof(memlens_sizeof_type));
        if (types == NULL) {
            return s;
        }
        memlens_table_rehash(types, cap - 1, w->types,
                             w->types ? w->types_mask + 1 : 0,
                             sizeof(memlens_sizeof_type), sizeof_type_key);
        free(w->types);
        w->types = types;
        w->types_mask = cap - 1;
    }
    size_t i = memlens_table_find(w->types, sizeof(memlens_sizeof_type),
                                  w->types_mask, key, sizeof_type_key);
    w->types[i].type = key;
    w->types[i].strategy = s;
    w->types_used++;
    return s;
}

/* Raises OverflowError for an object whose size cannot be counted. -1. */
static Py_ssize_t
sizeof_too_large(PyTypeObject *tp)
{
    PyErr_Format(PyExc_OverflowError,
                 "the size of a '%.200s' object exceeds sys.maxsize bytes: "
                 "its __sizeof__ reports more than any object can hold",
                 tp->tp_name);
    return -1;
}

/* __sizeof__ of o, by a call; the basic size (and an error counted) if
 * it raises an ordinary exception or returns nonsense. -1 with an
 * exception that must propagate. */
static Py_ssize_t
sizeof_call(memlens_sizeof_walk *w, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    /* Looked up on the type, as sys.getsizeof does: a class's own
     * __sizeof__ is not the one that sizes it. */
    PyObject *meth = PyObject_GetAttrString((PyObject *)tp, "__sizeof__");
    PyObject *r = meth != NULL ? PyObject_CallOneArg(meth, o) : NULL;
    Py_XDECREF(meth);
    if (r == NULL) {
        if (sizeof_clear_ordinary() < 0) {
            return -1;
        }
        w->errors++;
        return tp->tp_basicsize;
    }
    long long n = -1;
    int overflow = 0;
    if (PyLong_Check(r)) {
        /* No user code: r is an int, read as it is. */
        n = PyLong_AsLongLongAndOverflow(r, &overflow);
    }
    Py_DECREF(r);
    if (overflow > 0 || n > (long long)PY_SSIZE_T_MAX) {
        return sizeof_too_large(tp);
    }
    if (overflow < 0 || n < 0) {
        w->errors++; /* nonsense: not an int, or negative */
        return tp->tp_basicsize;
    }
    return (Py_ssize_t)n;
}

/* What sys.getsizeof(o) reports; -1 with an exception that must
 * propagate (from a __sizeof__, or OverflowError). */
Py_ssize_t
memlens_sizeof_one(memlens_sizeof_walk *w, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    Py_ssize_t n;
    unsigned char how = SIZE_HOW(sizeof_strategy(w, tp));
    if (w->failed) {
        return -1;
    }
    switch (how) {
        case SIZE_LIST:
            n = tp->tp_basicsize
                + ((PyListObject *)o)->allocated * (Py_ssize_t)sizeof(void *);
            break;
        case SIZE_SET: {
            PySetObject *so = (PySetObject *)o;
            n = tp->tp_basicsize;
            if (so->table != so->smalltable) {
                n += (so->mask + 1) * (Py_ssize_t)sizeof(setentry);
            }
            break;
        }
        case SIZE_STR:
            if (memlens_str_plain_ascii(o)) {
                n = (Py_ssize_t)sizeof(PyASCIIObject) + PyUnicode_GET_LENGTH(o)
                    + 1;
            }
            else {
                n = sizeof_call(w, o);
            }
            break;
        case SIZE_BYTEARRAY:
#if MEMLENS_BYTEARRAY_IN_BYTES
            n = sizeof_call(w, o);
#else
            n = tp->tp_basicsize + ((PyByteArrayObject *)o)->ob_alloc;
#endif
            break;
        case SIZE_INT:
            n = memlens_int_size(o);
            break;
        case SIZE_GENERIC:
            n = tp->tp_basicsize;
            if (tp->tp_itemsize > 0) {
                n += Py_SIZE(o) * tp->tp_itemsize;
            }
            break;
        default:
            n = sizeof_call(w, o);
            break;
    }
    if (n < 0) {
        return -1;
    }
    /* What the object's own figure leaves out: a few words, and what
     * getsizeof leaves out from 3.11 (see compat.h). */
    Py_ssize_t extra = 0;
    if (MEMLENS_GETSIZEOF_GC_HEAD(o)) {
        extra += (Py_ssize_t)SIZEOF_GC_HEAD;
    }
    if (PyType_HasFeature(tp, MEMLENS_PREHEADER_FLAGS)) {
        extra += 2 * (Py_ssize_t)sizeof(PyObject *);
    }
    extra += memlens_instance_values_bytes(o);
    if (tp == &PyDict_Type) {
        extra += memlens_split_dict_correction(o);
    }
    if (extra > PY_SSIZE_T_MAX - n) {
        return sizeof_too_large(tp);
    }
    return n + extra;
}

/* Adds o's size to *total. 0, or -1 with an exception. */
static int
sizeof_count(memlens_sizeof_walk *w, PyObject *o, Py_ssize_t *total)
{
    Py_ssize_t n = memlens_sizeof_one(w, o);
    return n < 0 ? -1 : sizeof_add(total, n);
}

/* NumPy arrays, without importing NumPy. The array's own fields are read
 * from its C struct, whose head has kept this layout since NumPy 1.7
 * (through 2.x); the layout is checked against the `base` and `dtype`
 * attributes before any element is read. */
typedef struct {
    PyObject_HEAD char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
} sizeof_ndarray_head;

/* NumPy's type number of the object dtype. */
#define SIZEOF_NPY_OBJECT 17

/* Nesting of structured dtypes followed when finding object fields. */
#define SIZEOF_DTYPE_DEPTH 32

typedef struct {
    Py_ssize_t *at; /* Owned (libc). */
    size_t n, cap;
} sizeof_offsets;

/* An attribute of a dtype; NULL with an ordinary error cleared (*fail 0)
 * or with one set that must propagate (*fail -1). */
static PyObject *
sizeof_dtype_attr(PyObject *dtype, const char *name, int *fail)
{
    PyObject *v = PyObject_GetAttrString(dtype, name);
    if (v == NULL) {
        *fail = sizeof_clear_ordinary();
    }
    return v;
}

/* An integer attribute of a dtype, or -1 (errors handled as above). */
static Py_ssize_t
sizeof_dtype_int(PyObject *dtype, const char *name, int *fail)
{
    PyObject *v = sizeof_dtype_attr(dtype, name, fail);
    if (v == NULL) {
        return -1;
    }
    Py_ssize_t n = PyLong_Check(v) ? PyLong_AsSsize_t(v) : -1;
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred()) {
        *fail = sizeof_clear_ordinary();
    }
    return n;
}

/* Appends to *out the offsets, within an item of `dtype` placed at `at`,
 * of its object references: the item itself for the object dtype, the
 * object fields of a structured dtype and the object items of a subarray
 * dtype, at any nesting. 1 done, 0 the dtype is not understood (no
 * element is followed then), -1 out of memory or an error set. */
static int
sizeof_dtype_objects(PyObject *dtype, Py_ssize_t at, int depth,
                     sizeof_offsets *out)
{
    int fail = 0;
    if (depth > SIZEOF_DTYPE_DEPTH) {
        return 0;
    }
    PyObject *has = sizeof_dtype_attr(dtype, "hasobject", &fail);
    if (has == NULL) {
        return fail;
    }
    int any = PyObject_IsTrue(has);
    Py_DECREF(has);
    if (any <= 0) {
        return any < 0 ? sizeof_clear_ordinary() : 1;
    }
    Py_ssize_t num = sizeof_dtype_int(dtype, "num", &fail);
    if (fail < 0) {
        return -1;
    }
    if (num == SIZEOF_NPY_OBJECT) {
        if (memlens_grow((void **)&out->at, &out->cap, out->n,
                         sizeof(Py_ssize_t), 16)
            < 0) {
            PyErr_NoMemory();
            return -1;
        }
        out->at[out->n++] = at;
        return 1;
    }
    /* A subarray: (base dtype, shape), items one after the other. */
    PyObject *sub = sizeof_dtype_attr(dtype, "subdtype", &fail);
    if (sub == NULL) {
        return fail;
    }
    int rc = 0;
    if (PyTuple_Check(sub) && PyTuple_GET_SIZE(sub) == 2
        && PyTuple_Check(PyTuple_GET_ITEM(sub, 1))) {
        PyObject *base = PyTuple_GET_ITEM(sub, 0);
        PyObject *shape = PyTuple_GET_ITEM(sub, 1);
        Py_ssize_t size = sizeof_dtype_int(base, "itemsize", &fail);
        Py_ssize_t count = 1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shape) && count > 0; i++) {
            Py_ssize_t d = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, i));
            if (d < 0 || (d > 0 && count > PY_SSIZE_T_MAX / d)) {
                PyErr_Clear();
                count = -1;
            }
            else {
                count *= d;
            }
        }
        rc = fail < 0 ? -1 : 1;
        if (rc == 1 && (size <= 0 || count < 0)) {
            rc = 0;
        }
        for (Py_ssize_t i = 0; rc == 1 && i < count; i++) {
            rc = sizeof_dtype_objects(base, at + i * size, depth + 1, out);
        }
        Py_DECREF(sub);
        return rc;
    }
    Py_DECREF(sub);
    /* A structured dtype: its fields by name (titles name them again). */
    PyObject *names = sizeof_dtype_attr(dtype, "names", &fail);
    if (names == NULL) {
        return fail;
    }
    PyObject *fields = NULL;
    if (PyTuple_Check(names)) {
        fields = sizeof_dtype_attr(dtype, "fields", &fail);
    }
    rc = fields != NULL ? 1 : fail;
    for (Py_ssize_t i = 0; rc == 1 && i < PyTuple_GET_SIZE(names); i++) {
        PyObject *f = PyObject_GetItem(fields, PyTuple_GET_ITEM(names, i));
        if (f == NULL) {
            rc = sizeof_clear_ordinary();
            break;
        }
        Py_ssize_t off = -1;
        if (PyTuple_Check(f) && PyTuple_GET_SIZE(f) >= 2
            && PyLong_Check(PyTuple_GET_ITEM(f, 1))) {
            off = PyLong_AsSsize_t(PyTuple_GET_ITEM(f, 1));
            if (off < 0) {
                PyErr_Clear();
            }
        }
        rc = off < 0 ? 0
                     : sizeof_dtype_objects(PyTuple_GET_ITEM(f, 0), at + off,
                                            depth + 1, out);
        Py_DECREF(f);
    }
    Py_XDECREF(fields);
    Py_DECREF(names);
    return rc;
}

/* Pushes every non-NULL object reference of an array's elements, at the
 * given offsets of each item, over any shape and strides. 0, or -1 out
 * of memory (w->oom). */
static int
sizeof_ndarray_elements(memlens_sizeof_walk *w, sizeof_ndarray_head *a,
                        const sizeof_offsets *offs)
{
    int nd = a->nd;
    for (int k = 0; k < nd; k++) {
        if (a->dimensions[k] <= 0) {
            return 0; /* empty */
        }
    }
    Py_ssize_t *index = calloc(nd > 0 ? (size_t)nd : 1, sizeof(Py_ssize_t));
    if (index == NULL) {
        w->oom = 1;
        return -1;
    }
    char *item = a->data;
    int rc = 0;
    for (;;) {
        for (size_t j = 0; rc == 0 && j < offs->n; j++) {
            PyObject *e;
            memcpy(&e, item + offs->at[j], sizeof(e));
            rc = memlens_sizeof_push(w, e);
        }
        if (rc < 0) {
            break;
        }
        /* The next index, the last axis fastest. */
        int k = nd - 1;
        while (k >= 0 && ++index[k] == a->dimensions[k]) {
            item -= (index[k] - 1) * a->strides[k];
            index[k] = 0;
            k--;
        }
        if (k < 0) {
            break;
        }
        item += a->strides[k];
    }
    free(index);
    return rc;
}

/* Follows a NumPy array: its base (the owner of a view's buffer), which
 * is no GC referent, so that the buffer counts once; and, when its dtype
 * holds object references, the objects its elements refer to. Those are
 * followed from the array that holds the references: one whose base is
 * not an array (a view's elements are its owner's, reached through the
 * base). 0, or -1 (as memlens_sizeof_follow). */
static int
sizeof_ndarray(memlens_sizeof_walk *w, PyObject *o)
{
    PyObject *base = PyObject_GetAttrString(o, "base");
    if (base == NULL) {
        return sizeof_clear_ordinary();
    }
    int owner =
        base == Py_None || !(sizeof_strategy(w, Py_TYPE(base)) & SIZE_NDARRAY);
    sizeof_ndarray_head *a = (sizeof_ndarray_head *)o;
    int same = (base == Py_None ? NULL : base) == a->base;
    int rc = base != Py_None ? memlens_sizeof_push(w, base) : 0;
    Py_DECREF(base);
    if (rc < 0 || !owner || !same) {
        return rc;
    }
    PyObject *dtype = PyObject_GetAttrString(o, "dtype");
    if (dtype == NULL) {
        return sizeof_clear_ordinary();
    }
    sizeof_offsets offs = {NULL, 0, 0};
    if (dtype == a->descr && a->nd >= 0) {
        rc = sizeof_dtype_objects(dtype, 0, 0, &offs);
        if (rc < 0 && !PyErr_Occurred()) {
            w->oom = 1;
        }
        if (rc > 0 && offs.n > 0) {
            rc = sizeof_ndarray_elements(w, a, &offs);
        }
    }
    Py_DECREF(dtype);
    free(offs.at);
    return rc < 0 ? -1 : 0;
}

/* Pushes what o refers to, under the rule. 0, or -1: out of memory
 * (w->oom), or an exception set that must propagate. */
int
memlens_sizeof_follow(memlens_sizeof_walk *w, PyObject *o)
{
    if (w->limit >= 0 && w->level >= w->limit) {
        return 0;
    }
    traverseproc traverse = Py_TYPE(o)->tp_traverse;
    if (traverse != NULL && PyObject_IS_GC(o)) {
        if (traverse(o, sizeof_visit, w) < 0 || w->oom) {
            return -1;
        }
    }
    /* 3.13's traversal skips a made __dict__ whose values are still the
     * instance's inline ones. */
    if (memlens_sizeof_push(w, memlens_managed_dict(o)) < 0) {
        return -1;
    }
    if (PyDict_Check(o)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(o, &pos, &key, &value)) {
            if (memlens_sizeof_push(w, key) < 0
                || memlens_sizeof_push(w, value) < 0) {
                return -1;
            }
        }
    }
    else if (sizeof_strategy(w, Py_TYPE(o)) & SIZE_NDARRAY) {
        return sizeof_ndarray(w, o);
    }
    return 0;
}

/* 1 if key is a str named like __this__: the language's bookkeeping in a
 * namespace, not data. */
static int
sizeof_is_dunder(PyObject *key)
{
    if (!PyUnicode_Check(key)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GetLength(key);
    if (n < 5) {
        if (n < 0) {
            PyErr_Clear();
        }
        return 0;
    }
    return PyUnicode_ReadChar(key, 0) == '_'
           && PyUnicode_ReadChar(key, 1) == '_'
           && PyUnicode_ReadChar(key, n - 2) == '_'
           && PyUnicode_ReadChar(key, n - 1) == '_';
}

/* 1 if a namespace entry is program, not data: a __dunder__ name, or a
 * value that is program or wraps a function into a method or attribute
 * of a class. */
static int
sizeof_program_entry(PyObject *key, PyObject *value)
{
    return sizeof_is_dunder(key) || memlens_sizeof_excluded(value)
           || PyObject_TypeCheck(value, &PyStaticMethod_Type)
           || PyObject_TypeCheck(value, &PyClassMethod_Type)
           || PyObject_TypeCheck(value, &PyProperty_Type)
           || PyObject_TypeCheck(value, &PyMethodDescr_Type)
           || PyObject_TypeCheck(value, &PyClassMethodDescr_Type)
           || PyObject_TypeCheck(value, &PyWrapperDescr_Type)
           || PyObject_TypeCheck(value, &PyGetSetDescr_Type)
           || PyObject_TypeCheck(value, &PyMemberDescr_Type);
}

/* Counts the namespace dict `ns` of a class or module argument (one
 * reference away from it) and pushes the keys and values of its data
 * entries. A namespace counted already (with an earlier argument) adds
 * nothing. 0, or -1: out of memory, or an exception set. */
static int
sizeof_namespace(memlens_sizeof_walk *w, PyObject *ns, Py_ssize_t *total)
{
    if (ns == NULL || !PyDict_Check(ns)) {
        return 0;
    }
    int added = memlens_sizeof_set_add(&w->seen, (uintptr_t)ns);
    if (added <= 0) {
        return added;
    }
    if (sizeof_count(w, ns, total) < 0) {
        return -1;
    }
    if (w->limit >= 0 && w->limit <= 1) {
        return 0;
    }
    w->level = 1;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int rc = 0;
    while (rc == 0 && PyDict_Next(ns, &pos, &key, &value)) {
        if (!sizeof_program_entry(key, value)) {
            rc = memlens_sizeof_push(w, key) < 0
                         || memlens_sizeof_push(w, value) < 0
                     ? -1
                     : 0;
        }
    }
    w->level = 0;
    return rc;
}

/* Follows an argument (level 0) under the rule for arguments: one that is
 * program pushes only what it alone holds, anything else is followed as
 * when reached. Adds to *total what is counted here (a namespace). 0, or
 * -1 out of memory. */
static int
sizeof_follow_argument(memlens_sizeof_walk *w, PyObject *o, Py_ssize_t *total)
{
    if (w->limit == 0) {
        return 0;
    }
    if (PyFunction_Check(o)) {
        PyFunctionObject *f = (PyFunctionObject *)o;
        if (memlens_sizeof_push(w, f->func_defaults) < 0
            || memlens_sizeof_push(w, f->func_kwdefaults) < 0
            || memlens_sizeof_push(w, f->func_closure) < 0
            || memlens_sizeof_push(w, f->func_dict) < 0) {
            return -1;
        }
        return 0;
    }
    if (PyCFunction_Check(o)) {
        /* Its self, when a module, is not counted once popped. */
        return memlens_sizeof_push(w, PyCFunction_GET_SELF(o));
    }
    if (PyType_Check(o)) {
        PyObject *ns = memlens_type_dict((PyTypeObject *)o);
        int rc = sizeof_namespace(w, ns, total);
        Py_XDECREF(ns);
        return rc;
    }
    if (PyModule_Check(o)) {
        /* Borrowed (the module is held by the arguments); it cannot fail
         * on a module. */
        return sizeof_namespace(w, PyModule_GetDict(o), total);
    }
    return memlens_sizeof_follow(w, o);
}

/* Walks from one root; adds its new bytes to *total. 0, or -1 with an
 * exception (MemoryError, OverflowError, what a __sizeof__ or a signal
 * handler raised); what is left on the stack is released by
 * memlens_sizeof_walk_clear. */
static int
sizeof_walk_from(memlens_sizeof_walk *w, PyObject *root, Py_ssize_t *total)
{
    int added = memlens_sizeof_set_add(&w->seen, (uintptr_t)root);
    if (added < 0) {
        return memlens_sizeof_abort();
    }
    if (added == 0) {
        return 0; /* counted with an earlier argument */
    }
    w->level = 0;
    if (sizeof_count(w, root, total) < 0
        || sizeof_follow_argument(w, root, total) < 0) {
        return memlens_sizeof_abort();
    }
    while (w->depth > 0) {
        PyObject *o = w->stack[--w->depth];
        w->level = w->levels[w->depth];
        int rc = memlens_sizeof_tick(w);
        if (rc == 0 && !memlens_sizeof_excluded(o)) {
            rc = sizeof_count(w, o, total);
            if (rc == 0) {
                rc = memlens_sizeof_follow(w, o);
            }
        }
        Py_DECREF(o);
        if (rc < 0) {
            return memlens_sizeof_abort();
        }
    }
    return 0;
}

void
memlens_sizeof_walk_clear(memlens_sizeof_walk *w)
{
    while (w->depth > 0) {
        Py_DECREF(w->stack[--w->depth]);
    }
    free(w->stack);
    free(w->levels);
    sizeof_set_clear(&w->seen);
    free(w->types);
    Py_XDECREF(w->object_sizeof);
}

/* _asizesof(objs, limit) -> (tuple of sizes, errors): one total per
 * argument, an object reachable from two counted with the first; objects
 * `limit` references away from an argument are counted, not followed
 * (-1: no limit). */
static PyObject *
sizeof_py_asizesof(PyObject *m, PyObject *args)
{
    memlens_sizeof_walk w;
    PyObject *objs;
    Py_ssize_t limit;
    memset(&w, 0, sizeof(w));
    if (!PyArg_ParseTuple(args, "O!n:_asizesof", &PyTuple_Type, &objs,
                          &limit)) {
        return NULL;
    }
    w.limit = limit;
    w.object_sizeof =
        PyObject_GetAttrString((PyObject *)&PyBaseObject_Type, "__sizeof__");
    if (w.object_sizeof == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(objs);
    Py_ssize_t *totals = calloc((size_t)n + 1, sizeof(Py_ssize_t));
    if (totals == NULL) {
        memlens_sizeof_walk_clear(&w);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    Py_ssize_t all = 0; /* asizeof's figure, the sum, fits too */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (sizeof_walk_from(&w, PyTuple_GET_ITEM(objs, i), &totals[i]) < 0
            || sizeof_add(&all, totals[i]) < 0) {
            goto done;
        }
    }
    uint64_t errors = w.errors;
    PyObject *sizes = PyTuple_New(n);
    if (sizes == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromSsize_t(totals[i]);
        if (v == NULL) {
            Py_DECREF(sizes);
            goto done;
        }
        PyTuple_SET_ITEM(sizes, i, v);
    }
    result = Py_BuildValue("(NK)", sizes, (unsigned long long)errors);
done:
    free(totals);
    memlens_sizeof_walk_clear(&w);
    return result;
}

/* _getsizeof(obj) -> int: this file's idea of sys.getsizeof (tests). */
static PyObject *
sizeof_py_getsizeof(PyObject *m, PyObject *o)
{
    memlens_sizeof_walk w;
    memset(&w, 0, sizeof(w));
    w.object_sizeof =
        PyObject_GetAttrString((PyObject *)&PyBaseObject_Type, "__sizeof__");
    if (w.object_sizeof == NULL) {
        return NULL;
    }
    Py_ssize_t n = memlens_sizeof_one(&w, o);
    memlens_sizeof_walk_clear(&w);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyMethodDef sizeof_methods[] = {
    {"_asizesof", sizeof_py_asizesof, METH_VARARGS,
     "_asizesof(objs) -> (sizes, errors): deep sizes, one per object."},
    {"_getsizeof", sizeof_py_getsizeof, METH_O,
     "_getsizeof(obj) -> int: the size of one object, as sys.getsizeof."},
    {NULL, NULL, 0, NULL},
};

int
memlens_sizeof_init(PyObject *module)
{
    return PyModule_AddFunctions(module, sizeof_methods);
}
