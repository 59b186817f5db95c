/* census.c: the heap census (heap()): every live object, by type.
 *
 * Every object the GC knows of, and every object they refer to (the
 * untracked ones: strings, numbers, dict keys), each counted once with
 * sizeof.c's walk and its idea of one object's size, and partitioned by
 * type. GIL held throughout.
 */
#include "census.h"
#include "sizeof.h"
#include "table.h"

#include <string.h>

/* ---- Heap census -------------------------------------------------------- *
 * Every live object the GC knows of, and every object they refer to (the
 * untracked ones: strings, numbers, dict keys), each counted once and
 * partitioned by type. A dict is "dict of C" when it is an instance
 * dictionary of class C: a split dict sharing the keys C caches for its
 * instances, or (before 3.11) the dict an instance points at. */

typedef struct {
    uintptr_t key; /* type pointer << 1 | 1 for "dict of"; 0 empty. */
    int64_t count, size;
} census_row;

typedef struct {
    census_row *rows; /* Owned (libc). */
    size_t mask, used;
} census_map;

static inline uint64_t
census_row_key(const void *e)
{
    return ((const census_row *)e)->key;
}

static census_row *
census_row_for(census_map *m, uintptr_t key)
{
    if (memlens_table_full(m->rows == NULL, m->used, m->mask, 1, 2)) {
        size_t cap = m->rows ? (m->mask + 1) * 2 : 256;
        census_row *rows = calloc(cap, sizeof(census_row));
        if (rows == NULL) {
            return NULL;
        }
        memlens_table_rehash(rows, cap - 1, m->rows, m->rows ? m->mask + 1 : 0,
                             sizeof(census_row), census_row_key);
        free(m->rows);
        m->rows = rows;
        m->mask = cap - 1;
    }
    size_t i = memlens_table_find(m->rows, sizeof(census_row), m->mask, key,
                                  census_row_key);
    if (m->rows[i].key == 0) {
        m->rows[i].key = key;
        m->used++;
    }
    return &m->rows[i];
}

/* A dict whose owner is decided after the walk. */
typedef struct {
    uintptr_t dict;
    uintptr_t keys; /* ma_keys when split, else 0. */
    int64_t size;
} census_dict;

typedef struct {
    memlens_sizeof_walk w;
    census_map kinds;
    census_dict *dicts; /* Owned (libc). */
    size_t ndicts, capdicts;
    census_map owners; /* dict or keys pointer -> owner type. */
    int program;       /* Count modules, classes, functions, code. */
    int64_t total_count, total_size;
} census;

static int
census_push_root(PyObject *o, void *arg)
{
    census *c = arg;
    c->w.level = 0;
    return memlens_sizeof_push(&c->w, o) < 0 ? 0 : 1;
}

/* Records that `dict` (or dicts with `keys`) belong to instances of tp. */
static int
census_note_owner(census *c, uintptr_t ptr, PyTypeObject *tp)
{
    census_row *r = census_row_for(&c->owners, ptr);
    if (r == NULL) {
        return -1;
    }
    if (r->count == 0) {
        /* Held until the census ends: a __sizeof__ run meanwhile could
         * let a class be freed. */
        Py_INCREF(tp);
        r->count = (int64_t)(uintptr_t)tp;
    }
    return 0;
}

/* Counts one object into the census. 0, or -1: out of memory, or an
 * exception set. A row's size never exceeds the total, checked here. */
static int
census_count(census *c, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    int64_t size = memlens_sizeof_one(&c->w, o);
    if (size < 0 || memlens_sizeof_add64(&c->total_size, size) < 0) {
        return -1;
    }
    c->total_count++;
    if (PyType_Check(o)
        && PyType_HasFeature((PyTypeObject *)o, Py_TPFLAGS_HEAPTYPE)) {
        PyHeapTypeObject *ht = (PyHeapTypeObject *)o;
        if (ht->ht_cached_keys != NULL
            && census_note_owner(c, (uintptr_t)ht->ht_cached_keys,
                                 (PyTypeObject *)o)
                   < 0) {
            return -1;
        }
    }
    PyObject *managed = memlens_managed_dict(o);
    if (managed != NULL && census_note_owner(c, (uintptr_t)managed, tp) < 0) {
        return -1;
    }
    /* Before 3.11 an instance points at its dict from a fixed offset. */
    PyObject *at_offset = memlens_offset_dict(o);
    if (at_offset != NULL
        && census_note_owner(c, (uintptr_t)at_offset, tp) < 0) {
        return -1;
    }
    if (PyDict_CheckExact(o)) {
        if (memlens_grow((void **)&c->dicts, &c->capdicts, c->ndicts,
                         sizeof(census_dict), 1024)
            < 0) {
            return -1;
        }
        PyDictObject *d = (PyDictObject *)o;
        census_dict *cd = &c->dicts[c->ndicts++];
        cd->dict = (uintptr_t)o;
        cd->keys = d->ma_values != NULL ? (uintptr_t)d->ma_keys : 0;
        cd->size = size;
        return 0;
    }
    census_row *r = census_row_for(&c->kinds, (uintptr_t)tp << 1);
    if (r == NULL) {
        return -1;
    }
    if (r->count == 0) {
        Py_INCREF(tp); /* held until the census ends */
    }
    r->count++;
    return memlens_sizeof_add64(&r->size, size);
}

static PyTypeObject *
census_owner(census *c, uintptr_t ptr)
{
    if (ptr == 0 || c->owners.rows == NULL) {
        return NULL;
    }
    size_t i = memlens_table_find(c->owners.rows, sizeof(census_row),
                                  c->owners.mask, ptr, census_row_key);
    return (PyTypeObject *)(uintptr_t)c->owners.rows[i].count;
}

/* Walks every live object. 0, or -1 with an exception. */
static int
census_run(census *c, PyObject *self_list)
{
    memlens_sizeof_walk *w = &c->w;
    w->object_sizeof =
        PyObject_GetAttrString((PyObject *)&PyBaseObject_Type, "__sizeof__");
    if (w->object_sizeof == NULL) {
        return -1;
    }
    w->limit = -1;
    if (self_list != NULL
        && memlens_sizeof_set_add(&w->seen, (uintptr_t)self_list) < 0) {
        return memlens_sizeof_abort();
    }
#if MEMLENS_HAS_GC_VISIT_OBJECTS
    PyUnstable_GC_VisitObjects(census_push_root, c);
#else
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(self_list); i++) {
        census_push_root(PyList_GET_ITEM(self_list, i), c);
    }
#endif
    if (w->oom) {
        return memlens_sizeof_abort();
    }
    while (w->depth > 0) {
        PyObject *o = w->stack[--w->depth];
        w->level = 0;
        int rc = memlens_sizeof_tick(w);
        if (rc == 0 && (c->program || !memlens_sizeof_excluded(o))) {
            rc = census_count(c, o);
            if (rc == 0) {
                rc = memlens_sizeof_follow(w, o);
            }
        }
        Py_DECREF(o);
        if (rc < 0) {
            /* What is left on the stack: census_clear. */
            return memlens_sizeof_abort();
        }
    }
    /* Now that every class has been seen, decide whose each dict is. */
    for (size_t i = 0; i < c->ndicts; i++) {
        census_dict *cd = &c->dicts[i];
        PyTypeObject *owner = census_owner(c, cd->dict);
        if (owner == NULL) {
            owner = census_owner(c, cd->keys);
        }
        uintptr_t key = owner != NULL ? ((uintptr_t)owner << 1) | 1
                                      : (uintptr_t)&PyDict_Type << 1;
        census_row *r = census_row_for(&c->kinds, key);
        if (r == NULL) {
            return memlens_sizeof_abort();
        }
        if (r->count == 0) {
            Py_INCREF((PyObject *)(key >> 1));
        }
        r->count++;
        if (memlens_sizeof_add64(&r->size, cd->size) < 0) {
            return -1;
        }
    }
    return 0;
}

static void
census_clear(census *c)
{
    memlens_sizeof_walk_clear(&c->w);
    for (size_t i = 0; c->kinds.rows != NULL && i <= c->kinds.mask; i++) {
        if (c->kinds.rows[i].key != 0 && c->kinds.rows[i].count != 0) {
            Py_DECREF((PyObject *)(c->kinds.rows[i].key >> 1));
        }
    }
    for (size_t i = 0; c->owners.rows != NULL && i <= c->owners.mask; i++) {
        if (c->owners.rows[i].key != 0 && c->owners.rows[i].count != 0) {
            Py_DECREF((PyObject *)(uintptr_t)c->owners.rows[i].count);
        }
    }
    free(c->kinds.rows);
    free(c->owners.rows);
    free(c->dicts);
}

/* _heap_census(objects, program) -> (count, size, errors, [(type,
 * dict_of, count, size)]). `objects`: gc.get_objects() before 3.12, None
 * after (the census visits the GC's objects itself); it is left out. With
 * `program` false, modules, classes, functions and code objects are
 * neither counted nor followed (MEMORY()). */
static PyObject *
census_py_heap_census(PyObject *m, PyObject *args)
{
    PyObject *objects;
    int program;
    census c;
    memset(&c, 0, sizeof(c));
    if (!PyArg_ParseTuple(args, "Op:_heap_census", &objects, &program)) {
        return NULL;
    }
#if !MEMLENS_HAS_GC_VISIT_OBJECTS
    if (!PyList_Check(objects)) {
        PyErr_SetString(PyExc_TypeError, "objects must be gc.get_objects()");
        return NULL;
    }
#endif
    c.program = program;
    PyObject *result = NULL;
    if (census_run(&c, objects != Py_None ? objects : NULL) < 0) {
        goto done;
    }
    PyObject *rows = PyList_New(0);
    if (rows == NULL) {
        goto done;
    }
    for (size_t i = 0; c.kinds.rows != NULL && i <= c.kinds.mask; i++) {
        census_row *r = &c.kinds.rows[i];
        if (r->key == 0) {
            continue;
        }
        PyObject *row = Py_BuildValue("(OiLL)", (PyObject *)(r->key >> 1),
                                      (int)(r->key & 1), (long long)r->count,
                                      (long long)r->size);
        if (row == NULL || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(rows);
            goto done;
        }
        Py_DECREF(row);
    }
    result = Py_BuildValue("(LLKN)", (long long)c.total_count,
                           (long long)c.total_size,
                           (unsigned long long)c.w.errors, rows);
done:
    census_clear(&c);
    return result;
}

/* _kind_name(type) -> str: how a census names a class, "module.qualname"
 * or, for builtins and __main__, "qualname". Read from the type's own
 * fields (tp_name; a heap type's qualified name and the __module__ entry
 * of its dict), so that no user code runs: a metaclass may define
 * __getattribute__ or properties for these names. */
static PyObject *
census_py_kind_name(PyObject *m, PyObject *arg)
{
    if (!PyType_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "_kind_name() needs a type, not %.200s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)arg;
    PyObject *module = NULL, *qualname = NULL, *result = NULL;
    if (PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        /* Both strings (the setters see to it), perhaps of a subclass of
         * str: only their characters are read. */
        qualname = ((PyHeapTypeObject *)tp)->ht_qualname;
        Py_XINCREF(qualname);
        PyObject *ns = memlens_type_dict(tp);
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        /* A walk, not a lookup: a lookup may compare keys with __eq__. */
        while (ns != NULL && PyDict_Next(ns, &pos, &key, &value)) {
            if (PyUnicode_Check(key)
                && PyUnicode_CompareWithASCIIString(key, "__module__") == 0) {
                if (PyUnicode_Check(value)) {
                    module = Py_NewRef(value);
                }
                break;
            }
        }
        Py_XDECREF(ns);
    }
    else {
        /* "module.name", or "name" for a builtin. */
        const char *dot = strrchr(tp->tp_name, '.');
        if (dot != NULL) {
            module =
                PyUnicode_FromStringAndSize(tp->tp_name, dot - tp->tp_name);
            if (module == NULL) {
                return NULL;
            }
        }
        qualname = PyUnicode_FromString(dot != NULL ? dot + 1 : tp->tp_name);
    }
    if (qualname == NULL) {
        qualname = PyUnicode_FromString(tp->tp_name);
        if (qualname == NULL) {
            goto error;
        }
    }
    if (module == NULL
        || PyUnicode_CompareWithASCIIString(module, "builtins") == 0
        || PyUnicode_CompareWithASCIIString(module, "__main__") == 0) {
        result = PyUnicode_FromFormat("%U", qualname);
    }
    else {
        result = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
error:
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return result;
}

static PyMethodDef census_methods[] = {
    {"_kind_name", census_py_kind_name, METH_O,
     "_kind_name(type) -> str: how a heap census names a class."},
    {"_heap_census", census_py_heap_census, METH_VARARGS,
     "_heap_census(objects, program) -> (count, size, errors, rows)."},
    {NULL, NULL, 0, NULL},
};

int
memlens_census_init(PyObject *module)
{
    return PyModule_AddFunctions(module, census_methods);
}
