/* compat.h: every CPython-version shim and private-layout mirror.
 *
 * Each is named after the behaviour it stands for, not after a version
 * number, and says which CPython change forced it. No other file tests
 * PY_VERSION_HEX. Included by common.h, after Python.h.
 */
#ifndef MEMLENS_COMPAT_H
#define MEMLENS_COMPAT_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

/* Py_NewRef arrived in 3.10 (bpo-42262); 3.9 is supported. */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
memlens_newref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#define Py_NewRef(o) memlens_newref((PyObject *)(o))
#endif

/* Where a frame stands: PyFrame_GetLasti arrived in 3.11, when the frame
 * struct became opaque (bpo-46836); before, f_lasti is a public field. -1
 * before the first instruction. */
#if PY_VERSION_HEX >= 0x030B0000
#define MEMLENS_FRAME_LASTI(f) PyFrame_GetLasti(f)
#elif PY_VERSION_HEX >= 0x030A0000
/* 3.10 counts f_lasti in instructions of two bytes (bpo-27129). */
#include <frameobject.h>
#define MEMLENS_FRAME_LASTI(f) ((f)->f_lasti < 0 ? -1 : (f)->f_lasti * 2)
#else
#include <frameobject.h>
#define MEMLENS_FRAME_LASTI(f) ((f)->f_lasti)
#endif

/* This thread's state if it holds a GIL, else NULL, without the fatal
 * error of PyThreadState_Get. PyGILState_Check cannot tell once a
 * subinterpreter has existed (it then always says yes). The unchecked
 * getter became public in 3.13 (What's New in 3.13: C API,
 * PyThreadState_GetUnchecked). */
#if PY_VERSION_HEX >= 0x030D0000
#define MEMLENS_CURRENT_TSTATE() PyThreadState_GetUnchecked()
#elif PY_VERSION_HEX >= 0x030C0000
/* 3.12 keeps the current thread state in a thread-local (a C11
 * _Py_thread_local, What's New in 3.12). */
#define MEMLENS_CURRENT_TSTATE() _PyThreadState_UncheckedGet()
#else
/* Before 3.12 the "current" thread state is the GIL holder's, process
 * wide: it is this thread's only if it is this thread's own. */
static inline PyThreadState *
memlens_current_tstate(void)
{
    PyThreadState *ts = _PyThreadState_UncheckedGet();
    return (ts != NULL && ts == PyGILState_GetThisThreadState()) ? ts : NULL;
}
#define MEMLENS_CURRENT_TSTATE() memlens_current_tstate()
#endif

/* Creating a frame object (3.11: PyThreadState_GetFrame, PyFrame_GetBack)
 * is a GC allocation, and on 3.11 a GC allocation may run a collection,
 * and any __del__, at once: inside an allocator hook that must not
 * happen. 3.12 only schedules the collection; 3.9 and 3.10 make no frame
 * objects there. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define MEMLENS_FRAMES_MAY_COLLECT 1
#else
#define MEMLENS_FRAMES_MAY_COLLECT 0
#endif

/* ---- Frames read in place ------------------------------------------------
 *
 * The allocation hooks need, for each frame of the current thread, its
 * code and where it stands. From 3.11 a function's frame is a struct on
 * the interpreter's own stack, and a frame object exists only once asked
 * for: PyThreadState_GetFrame and PyFrame_GetBack make one, which is an
 * allocation (inside an allocator hook), references, and on 3.11 maybe a
 * collection. So where the layout is known, the frames are read in place,
 * read-only, with the GIL, the way the interpreter's own tracemalloc reads
 * them. Each mirror below follows its version's struct _PyInterpreterFrame
 * up to the last field read (3.11 made frames structs of the interpreter's
 * own stack: bpo-44590). sites.c checks the reading against the API
 * when tracing starts, and uses the API instead if they disagree (and on
 * versions not listed here).
 *
 * Before 3.11 the frames are objects with public fields: in place too. */

typedef struct {
    const void *id;     /* The frame's identity, for caches. */
    PyCodeObject *code; /* Borrowed: the frame holds it. */
    int lasti;          /* In bytes; -1 before the first instruction. */
    const void *at;     /* Where the walk stands (the frame itself). */
} memlens_frame;

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x03100000
#define MEMLENS_FRAMES_IN_PLACE 1
typedef struct memlens_iframe memlens_iframe;
#if PY_VERSION_HEX < 0x030C0000
struct memlens_iframe { /* 3.11 */
    PyObject *func, *globals, *builtins, *locals;
    PyCodeObject *code;
    PyObject *frame_obj;
    memlens_iframe *previous;
    uint16_t *instr; /* prev_instr; code units are two bytes */
    int stacktop;
    char is_entry;
    char owner;
};
#elif PY_VERSION_HEX < 0x030E0000
struct memlens_iframe { /* 3.12: f_code; 3.13: f_executable */
    PyObject *executable;
    memlens_iframe *previous;
    PyObject *funcobj, *globals, *builtins, *locals, *frame_obj;
    uint16_t *instr; /* 3.12: prev_instr; 3.13: instr_ptr */
    int stacktop;
    uint16_t return_offset;
    char owner;
};
#else
/* 3.14: f_executable became a _PyStackRef (gh-123923), a pointer whose
 * two low bits are tags (a deferred or immortal reference), and the stack
 * top a pointer instead of an int (gh-120024), which moves `owner` down by
 * four bytes. 3.15 keeps this layout. */
struct memlens_iframe {
    uintptr_t executable; /* tagged: mask MEMLENS_STACKREF_TAGS */
    memlens_iframe *previous;
    uintptr_t funcobj;
    PyObject *globals, *builtins, *locals, *frame_obj;
    uint16_t *instr; /* instr_ptr */
    void *stackpointer;
    uint16_t return_offset;
    char owner;
};
#define MEMLENS_STACKREF_TAGS ((uintptr_t)3)
#endif
#define MEMLENS_IFRAME_GENERATOR 1 /* owner: a generator's frame */
/* owner (3.12+): from this value on, a frame that no Python code runs in
 * (3.12, 3.13: the C stack's entry shim; 3.14 adds one owned by the
 * interpreter before it), which PyFrame_GetBack skips. */
#define MEMLENS_IFRAME_SHIM 3

static inline memlens_iframe *
memlens_iframe_top(PyThreadState *ts)
{
#if PY_VERSION_HEX >= 0x030D0000
    return (memlens_iframe *)ts->current_frame;
#else
    return (memlens_iframe *)ts->cframe->current_frame;
#endif
}

static inline PyCodeObject *
memlens_iframe_code(const memlens_iframe *f)
{
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *x = (PyObject *)(f->executable & ~MEMLENS_STACKREF_TAGS);
    return (x != NULL && PyCode_Check(x)) ? (PyCodeObject *)x : NULL;
#elif PY_VERSION_HEX >= 0x030C0000
    PyObject *x = f->executable;
    return (x != NULL && PyCode_Check(x)) ? (PyCodeObject *)x : NULL;
#else
    return f->code;
#endif
}

/* The first frame from `f` on that has started running its code, as
 * PyThreadState_GetFrame and PyFrame_GetBack see them, into *out; 0 if
 * none. */
static inline int
memlens_iframe_settle(const memlens_iframe *f, memlens_frame *out)
{
    for (; f != NULL; f = f->previous) {
#if PY_VERSION_HEX >= 0x030C0000
        if (f->owner >= MEMLENS_IFRAME_SHIM) {
            continue;
        }
#endif
        PyCodeObject *code = memlens_iframe_code(f);
        if (code == NULL) {
            continue;
        }
        const uint16_t *start = (const uint16_t *)code->co_code_adaptive;
        if (f->owner != MEMLENS_IFRAME_GENERATOR
            && f->instr < start + code->_co_firsttraceable) {
            continue;
        }
        out->id = f;
        out->code = code;
        out->lasti = f->instr < start ? -1 : (int)(f->instr - start) * 2;
        out->at = f;
        return 1;
    }
    return 0;
}

static inline int
memlens_frame_top(PyThreadState *ts, memlens_frame *out)
{
    return memlens_iframe_settle(memlens_iframe_top(ts), out);
}

static inline int
memlens_frame_back(memlens_frame *f)
{
    return memlens_iframe_settle(((const memlens_iframe *)f->at)->previous, f);
}
#elif PY_VERSION_HEX < 0x030B0000
#define MEMLENS_FRAMES_IN_PLACE 1
static inline int
memlens_frame_settle(PyFrameObject *f, memlens_frame *out)
{
    if (f == NULL) {
        return 0;
    }
    out->id = f;
    out->code = f->f_code;
    out->lasti = MEMLENS_FRAME_LASTI(f);
    out->at = f;
    return 1;
}

static inline int
memlens_frame_top(PyThreadState *ts, memlens_frame *out)
{
    return memlens_frame_settle(ts->frame, out);
}

static inline int
memlens_frame_back(memlens_frame *f)
{
    return memlens_frame_settle(((PyFrameObject *)f->at)->f_back, f);
}
#else
#define MEMLENS_FRAMES_IN_PLACE 0
#endif

/* 3.11: the line tracer's instrumented bytecode calls hooks that know a
 * frame by the interpreter frame on top of the thread state. 3.12 brought
 * sys.monitoring (PEP 669) in its place; before 3.11 the trace function
 * is cheap enough. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define MEMLENS_LINE_INSTRUMENT 1
#else
#define MEMLENS_LINE_INSTRUMENT 0
#endif

/* 3.12 lets a module say whether it can be loaded in more than one
 * interpreter (Py_mod_multiple_interpreters, PEP 684); before, only its
 * exec function can refuse. */
#if PY_VERSION_HEX >= 0x030C0000
#define MEMLENS_HAS_MULTIPLE_INTERPRETERS_SLOT 1
#else
#define MEMLENS_HAS_MULTIPLE_INTERPRETERS_SLOT 0
#endif

/* sys.monitoring (PEP 669) arrived in 3.12: from there the line tracer
 * listens to LINE events on the profiled code objects only. */
#if PY_VERSION_HEX >= 0x030C0000
#define MEMLENS_HAS_SYS_MONITORING 1
#else
#define MEMLENS_HAS_SYS_MONITORING 0
#endif

/* A small int that the interpreter passes to a line event (a line
 * number, an offset), read without a call: PyLong_AsLong costs a third
 * of a line event. 3.12 made a compact int's value readable through
 * PyUnstable_Long_* (with the new int layout, gh-101291); on 3.11 an int of size 0 or 1 is its one digit
 * (cpython/longintrepr.h, which Python.h includes there). Anything else
 * goes through PyLong_AsLong: -1 with an exception set on failure. */
static inline long
memlens_small_int(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyLong_CheckExact(o) && PyUnstable_Long_IsCompact((PyLongObject *)o)) {
        return (long)PyUnstable_Long_CompactValue((PyLongObject *)o);
    }
#elif PY_VERSION_HEX >= 0x030B0000
    if (PyLong_CheckExact(o) && (Py_SIZE(o) == 0 || Py_SIZE(o) == 1)) {
        return Py_SIZE(o) == 0 ? 0 : (long)((PyLongObject *)o)->ob_digit[0];
    }
#endif
    return PyLong_AsLong(o);
}

/* 3.15 keeps a bytearray's buffer in a bytes object of its own (for
 * bytes(bytearray) without a copy), whose header its size counts when the
 * buffer is not empty: the bytearray's own __sizeof__ says what. Before,
 * the buffer is a bare block of ob_alloc bytes (What's New in 3.15). */
#if PY_VERSION_HEX >= 0x030F0000
#define MEMLENS_BYTEARRAY_IN_BYTES 1
#else
#define MEMLENS_BYTEARRAY_IN_BYTES 0
#endif

/* A class's namespace (what cls.__dict__ shows), a new reference, or NULL
 * without an exception. From 3.12 a static builtin type keeps it in the
 * interpreter, not in tp_dict (per-interpreter static types, What's New in
 * 3.12); PyType_GetDict finds it for any type. */
static inline PyObject *
memlens_type_dict(PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyType_GetDict(tp);
#else
    Py_XINCREF(tp->tp_dict);
    return tp->tp_dict;
#endif
}

/* ---- Instance attribute values (3.11+) ---------------------------------
 *
 * From 3.11 an instance of a class with a managed dict keeps its attribute
 * values outside any dict until someone asks for __dict__ (bpo-45340), and
 * sys.getsizeof does not count them. The public API says nothing of these
 * layouts; what follows reads them from the object itself, read-only,
 * under the GIL, and is checked against tracemalloc by the tests on each
 * version.
 *
 * 3.11 and 3.12: the values are an array of PyMem memory apart from the
 * object, its pointer in the pre-header (3.11: the fourth word before the
 * object; 3.12: the third word, tagged with its low bit, which holds the
 * dict instead once there is one). The array is led by a prefix of
 * insertion-order bytes whose last byte is the prefix's length, the
 * capacity plus two rounded up to a pointer. The capacity itself is the
 * usable size of the class's shared keys when the array was made; CPython
 * shrinks that by one per instance made, down to what the attributes
 * need, so the keys' size now is a lower bound, and exact for all but the
 * class's first few dozen instances. The shared keys' header starts with
 * a refcount, four small fields in one word, then the usable and used
 * entry counts (the same on 3.11 to 3.13 without free threading).
 *
 * 3.13: the values are inline, at tp_basicsize within the object's own
 * allocation (Py_TPFLAGS_INLINE_VALUES, gh-115776), led by a pointer-sized header
 * whose first byte is the capacity and third says "embedded in an
 * object", and followed by the capacity's order bytes rounded up to a
 * pointer. A materialised __dict__ shares them, and the GC traversal then
 * visits the values but not the dict, which sits in the third word before
 * the object. */
#if PY_VERSION_HEX >= 0x030B0000
typedef struct {
    Py_ssize_t refcnt;
    uint8_t log2_size, log2_index_bytes, kind;
    uint32_t version;
    Py_ssize_t usable, nentries;
} memlens_keys_head;

/* The usable size of shared keys `keys` (borrowed), or 0 if none. */
static inline Py_ssize_t
memlens_keys_usable(const void *keys)
{
    if (keys == NULL) {
        return 0;
    }
    const memlens_keys_head *k = keys;
    return k->usable + k->nentries;
}
#endif

#if PY_VERSION_HEX >= 0x030D0000
#define MEMLENS_VALUES_HEADER ((Py_ssize_t)sizeof(PyObject *))

/* Bytes of a 3.13 values block of `capacity` entries. */
static inline Py_ssize_t
memlens_values13_bytes(Py_ssize_t capacity)
{
    Py_ssize_t p = (Py_ssize_t)sizeof(PyObject *);
    return MEMLENS_VALUES_HEADER + capacity * p + (capacity + p - 1) / p * p;
}
#elif PY_VERSION_HEX >= 0x030B0000
/* Bytes of a 3.11/3.12 values array (`values` points past its prefix),
 * its capacity bounded by the prefix and estimated from `keys`. */
static inline Py_ssize_t
memlens_values11_bytes(const uint8_t *values, const void *keys)
{
    Py_ssize_t p = (Py_ssize_t)sizeof(PyObject *);
    Py_ssize_t prefix = values[-1];
    /* prefix == roundup(capacity + 2, p) */
    Py_ssize_t lo = prefix - p - 1, hi = prefix - 2;
    Py_ssize_t cap = memlens_keys_usable(keys);
    cap = cap < lo ? lo : cap > hi ? hi : cap;
    return prefix + (cap > 0 ? cap : 0) * p;
}
#endif

/* Bytes of o's attribute values that sys.getsizeof(o) leaves out: 0 but
 * for instances of classes with a managed dict, from 3.11. */
static inline Py_ssize_t
memlens_instance_values_bytes(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTypeObject *tp = Py_TYPE(o);
    if (!PyType_HasFeature(tp, Py_TPFLAGS_INLINE_VALUES)) {
        return 0;
    }
    return memlens_values13_bytes(((uint8_t *)o + tp->tp_basicsize)[0]);
#elif PY_VERSION_HEX >= 0x030B0000
    PyTypeObject *tp = Py_TYPE(o);
    if (!PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT)
        || !PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030C0000
    uintptr_t word = ((uintptr_t *)o)[-3];
    if (!(word & 1)) {
        return 0; /* a dict, or nothing */
    }
    const uint8_t *values = (const uint8_t *)(word + 1);
#else
    const uint8_t *values = ((uint8_t **)o)[-4];
    if (values == NULL) {
        return 0;
    }
#endif
    return memlens_values11_bytes(values,
                                  ((PyHeapTypeObject *)tp)->ht_cached_keys);
#else
    (void)o;
    return 0;
#endif
}

/* The dict of an instance with a managed dict, if made (borrowed), else
 * NULL; from 3.11. */
static inline PyObject *
memlens_managed_dict(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030B0000
    if (!PyType_HasFeature(Py_TYPE(o), Py_TPFLAGS_MANAGED_DICT)) {
        return NULL;
    }
    uintptr_t word = ((uintptr_t *)o)[-3];
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    if (word & 1) {
        return NULL; /* values, no dict */
    }
#endif
    return (PyObject *)word;
#else
    (void)o;
    return NULL;
#endif
}

/* What a split dict (an instance's __dict__ sharing its class's keys)
 * holds beyond what sys.getsizeof says, which is the keys' usable size in
 * pointers: negative on 3.13 when the values are the instance's inline
 * ones (counted with the instance). 0 for any other dict. */
static inline Py_ssize_t
memlens_split_dict_correction(PyObject *d)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyDictObject *mp = (PyDictObject *)d;
    if (mp->ma_values == NULL) {
        return 0;
    }
    Py_ssize_t said =
        memlens_keys_usable(mp->ma_keys) * (Py_ssize_t)sizeof(PyObject *);
#if PY_VERSION_HEX >= 0x030D0000
    const uint8_t *values = (const uint8_t *)mp->ma_values;
    Py_ssize_t own = values[2] ? 0 : memlens_values13_bytes(values[0]);
#else
    Py_ssize_t own =
        memlens_values11_bytes((const uint8_t *)mp->ma_values, mp->ma_keys);
#endif
    return own - said;
#else
    (void)d;
    return 0;
#endif
}

/* ---- Object sizes (sizeof.c, census.c) -------------------------------- */

/* Whether sys.getsizeof adds the GC header to o's __sizeof__. 3.11 and
 * 3.12 add it when the type is a GC type; the other versions ask the
 * object (static types are not collected). What's New in 3.11 / 3.13:
 * sys.getsizeof, object pre-headers. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
#define MEMLENS_GETSIZEOF_GC_HEAD(o) PyType_IS_GC(Py_TYPE(o))
#else
#define MEMLENS_GETSIZEOF_GC_HEAD(o) PyObject_IS_GC(o)
#endif

/* The type flags whose instances carry a pre-header of two words before
 * the object, which sys.getsizeof counts: the managed dict from 3.11
 * (bpo-45340), the managed weak references from 3.12. */
#if PY_VERSION_HEX >= 0x030C0000
#define MEMLENS_PREHEADER_FLAGS                                               \
    (Py_TPFLAGS_MANAGED_DICT | Py_TPFLAGS_MANAGED_WEAKREF)
#elif PY_VERSION_HEX >= 0x030B0000
#define MEMLENS_PREHEADER_FLAGS (Py_TPFLAGS_MANAGED_DICT)
#else
#define MEMLENS_PREHEADER_FLAGS 0
#endif

/* Whether str `o` is a compact ASCII string whose size is its header, its
 * characters and a NUL: before 3.12 a string may also hold a cached
 * wchar_t copy (wstr), removed with the legacy API (PEP 623). */
static inline int
memlens_str_plain_ascii(PyObject *o)
{
#if PY_VERSION_HEX < 0x030C0000
    return PyUnicode_IS_COMPACT_ASCII(o) && ((PyASCIIObject *)o)->wstr == NULL;
#else
    return PyUnicode_IS_COMPACT_ASCII(o);
#endif
}

/* What int.__sizeof__ says of `o`. 3.12 keeps the digit count in lv_tag
 * (gh-101291) and counts at least one digit; from 3.11 zero is counted
 * with one digit too (What's New in 3.11: int.__sizeof__). */
static inline Py_ssize_t
memlens_int_size(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030C0000
    Py_ssize_t digits =
        (Py_ssize_t)(((PyLongObject *)o)->long_value.lv_tag >> 3);
    return (Py_ssize_t)offsetof(PyLongObject, long_value.ob_digit)
           + (digits > 0 ? digits : 1) * (Py_ssize_t)sizeof(digit);
#else
    Py_ssize_t digits = Py_SIZE(o) < 0 ? -Py_SIZE(o) : Py_SIZE(o);
#if PY_VERSION_HEX >= 0x030B0000
    digits = digits > 0 ? digits : 1;
#endif
    return (Py_ssize_t)offsetof(PyLongObject, ob_digit)
           + digits * (Py_ssize_t)sizeof(digit);
#endif
}

/* The dict an instance of a heap type points at from tp_dictoffset
 * (borrowed), or NULL: the only place of an instance's dict before 3.11;
 * from there the managed dict (memlens_managed_dict) holds it
 * (bpo-45340). */
static inline PyObject *
memlens_offset_dict(PyObject *o)
{
#if PY_VERSION_HEX < 0x030B0000
    PyTypeObject *tp = Py_TYPE(o);
    if (PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE) && tp->tp_dictoffset > 0) {
        return *(PyObject **)((char *)o + tp->tp_dictoffset);
    }
#else
    (void)o;
#endif
    return NULL;
}

/* PyUnstable_GC_VisitObjects (gh-102013) arrived in 3.12: the census
 * visits the GC's objects itself; before, the caller passes
 * gc.get_objects(). */
#if PY_VERSION_HEX >= 0x030C0000
#define MEMLENS_HAS_GC_VISIT_OBJECTS 1
#else
#define MEMLENS_HAS_GC_VISIT_OBJECTS 0
#endif

/* ---- Line events (lineprof.c) ----------------------------------------- */

/* Whether a frame standing at `lasti` (MEMLENS_FRAME_LASTI) has not
 * started its own code yet. From 3.11 a frame may run a few instructions
 * before its RESUME (making cells, copying free variables; a generator's
 * first steps: PEP 659's specialising interpreter, bpo-44590), so
 * "nothing ran yet" is "not past the first RESUME". */
static inline int
memlens_frame_not_started(int lasti, PyCodeObject *code)
{
#if PY_VERSION_HEX >= 0x030B0000
    return lasti <= code->_co_firsttraceable * 2;
#else
    (void)code;
    return lasti <= 0;
#endif
}

/* The GIL is what serialises the window list and the hook installation.
 * A free-threaded build (3.13t, PEP 703) has none, so we refuse to build
 * there rather than race. */
#if defined(Py_GIL_DISABLED)
#error "memlens: free-threaded CPython builds are not supported yet"
#endif

#endif /* MEMLENS_COMPAT_H */
