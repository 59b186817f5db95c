/* lineprof.c: line-by-line memory attribution.
 *
 * Line events come from one of three backends, chosen by the Python layer:
 *   - a C trace function (PyEval_SetTrace), per thread (3.9, 3.10; on
 *     later versions when asked for);
 *   - hooks called by instrumented bytecode (3.11): C builtins bound to a
 *     code object's statistics, which a rewritten copy of the profiled
 *     code calls at each line start, start, return, yield, resumption and
 *     unwinding (src/memlens/lineprof/instrument.py);
 *   - sys.monitoring (3.12+): the callbacks below are C builtins that the
 *     Python layer registers for LINE, PY_START, PY_RESUME, PY_RETURN and
 *     PY_YIELD on the profiled code objects only, plus the global
 *     PY_UNWIND and PY_THROW.
 * All feed the same per-line work: close the line that ran (its RSS
 * change, its bytes allocated and freed), open the next.
 *
 * RSS is read only when it may have moved, which is when either:
 *   - the allocator hooks (in light mode, no table and no lock) saw churn:
 *     a process-wide count of the bytes of large blocks allocated and
 *     freed, or a net count of small blocks, moved by a step since the last
 *     read; or
 *   - the line that ends ran long. Memory that C code takes straight from
 *     malloc or mmap (NumPy's buffers, any library's) never passes the
 *     hooks, but the kernel charges it only as its pages are touched, and
 *     touching pages takes time: a line that grows RSS by megabytes runs
 *     for milliseconds. A line that ran LINEPROF_LONG_NS or more is read
 *     after. Reading the clock costs as much as the rest of a line event,
 *     so a line found quick LINEPROF_TRUST times in a row is then timed only
 *     once every LINEPROF_TRUST occurrences (and again every time as soon as
 *     it is found long); an outermost call always times its start and its
 *     end, so every call's lines add up to its whole RSS change.
 * A tight loop that makes and drops small objects never pays for a read.
 *
 * Memory is attributed to the innermost profiled line running: when a
 * profiled function calls another (or itself), the caller's line is paused
 * and resumed around the call, so nothing is counted twice.
 *
 * Threads: everything runs with the GIL held, which protects the engine
 * (the code table, the statistics, the last RSS read), and nothing in a
 * line event lets go of it: another thread running in the middle of an
 * event could unregister the code whose statistics it is updating. Each
 * thread has its own stack of profiled frames (thread-local, libc memory
 * freed at thread exit). Statistics are per code object and shared by
 * every profiler.
 *
 * Lifetime: a code object is in the table from _line_add_code to
 * _line_remove_code (the Python layer removes it when no living profiler
 * holds it), and the table owns a reference meanwhile, so the address that
 * keys the index cannot be reused while the entry is there. Removing an
 * entry bumps lineprof_epoch; a thread's frames are checked against the
 * table when it next sees an event after that (lineprof_here), by code
 * address and serial number, so that a frame of a removed code, or of a
 * new code registered at the same address since, is dropped instead of
 * followed. On 3.11 the hooks of instrumented copies hold the entry itself
 * (a count of references), and do nothing once it was removed.
 */
#include "lineprof.h"
#include "errors.h"
#include "hooks.h"
#include "readings.h"
#include "ptrtable.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Read RSS again once this many bytes of large blocks were allocated or
 * freed, or the count of small blocks moved by this many. */
#define LINEPROF_CHURN_STEP (32 * 1024)
#define LINEPROF_SMALL_STEP 256

/* A line that ran this long is followed by a read: a read costs about
 * 1.5 us, so even a loop of lines just this long pays under 3%. */
#define LINEPROF_LONG_NS (50 * 1000)

/* Quick occurrences in a row after which a line is timed only once every
 * this many occurrences. */
#define LINEPROF_TRUST 16

typedef struct {
    PyObject *code;           /* Owned; NULL once removed from the table. */
    uint64_t serial;          /* Never reused: tells entries apart. */
    size_t slot;              /* Index in lineprof_codes while there. */
    long refs;                /* The table's, and each hook capsule's. */
    int first_line;           /* co_firstlineno. */
    int nlines;               /* Lines first_line .. first_line+nlines-1. */
    memlens_line_stat *lines; /* Owned (libc). */
} lineprof_code;

typedef struct {
    lineprof_code *code; /* Borrowed from the engine; valid while the code's
                          entry (key, serial) is in the table. */
    const void *key;     /* The code object's address, never dereferenced. */
    uint64_t serial;     /* The entry's serial number. */
    const void *frame;   /* Frame identity (trace backend), or NULL. */
    int line;            /* Line running, -1 none. */
    int resumed;         /* The line runs on from before a yield: its
                          occurrence was counted then. */
    uint64_t rss0;       /* RSS when the line (re)started. */
    uint64_t alloc0;     /* Thread's hook counters then. */
    uint64_t freed0;
} lineprof_frame;

typedef struct {
    lineprof_frame *frames; /* Owned (libc). */
    int depth;
    int cap;
    uint64_t epoch; /* lineprof_epoch when the frames were last checked. */
} lineprof_thread;

/* ---- Engine state: all protected by the GIL ---------------------------- */

/* Each lineprof_code is allocated on its own, so that frames may point at
 * it while the array of pointers grows. */
static lineprof_code **lineprof_codes =
    NULL; /* Owned (libc), and each item. */
static size_t lineprof_ncodes = 0;
static size_t lineprof_capcodes = 0;
static memlens_ptrtable lineprof_index; /* code pointer -> lineprof_code*. */
static uint64_t lineprof_serial = 0;    /* Last serial number given. */
static uint64_t lineprof_epoch = 0;     /* Bumped at each removal. */
static uint64_t lineprof_dropped = 0;   /* Frames dropped by lineprof_prune. */

static long lineprof_begun = 0;       /* line_begin() calls open. */
static long lineprof_alloc_users = 0; /* ... of which with alloc. */
static int lineprof_children = 0;     /* Add children's RSS. */
/* statm, owned: at a high number and checked before each read, since the
 * profiled program may close it and open a file of its own there. */
static memlens_ownfd lineprof_statm = MEMLENS_OWNFD_NONE;
static pid_t lineprof_fd_pid = 0;
static uint64_t lineprof_rss = 0;        /* Last RSS read. */
static uint64_t lineprof_churn_mark = 0; /* Churn at that read. */
static int64_t lineprof_small_mark = 0;  /* Small-block count then. */
static uint64_t lineprof_failures = 0;   /* Reads or growths that failed. */
static uint64_t lineprof_clock_last = 0; /* Monotonic ns of the last timing. */
static uint64_t lineprof_reads = 0;      /* RSS reads made (for the tests). */

static pthread_key_t lineprof_key;
static MEMLENS_TLS lineprof_thread *lineprof_tls = NULL;

static void
lineprof_thread_free(void *p)
{
    lineprof_thread *t = p;
    if (t != NULL) {
        free(t->frames);
        free(t);
    }
    lineprof_tls = NULL; /* destructors run in the exiting thread */
}

/* This thread's frame stack, created on first use; NULL if out of
 * memory. */
static lineprof_thread *
lineprof_thread_get(void)
{
    lineprof_thread *t = lineprof_tls;
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL) {
            return NULL;
        }
        t->epoch = lineprof_epoch;
        lineprof_tls = t;
        pthread_setspecific(lineprof_key, t);
    }
    return t;
}

/* ---- RSS, read only when it may have moved ---------------------------- */

/* The summed RSS of every living descendant process (%mprun -c). Read
 * here with the GIL held throughout: memlens_children_rss() lets go of it
 * while it walks /proc, and a thread that ran then could change the engine
 * in the middle of a line event. Touches no Python object. */
static uint64_t
lineprof_children_rss(void)
{
    memlens_pidlist l = {NULL, 0, 0};
    uint64_t total = 0;
    if (memlens_descendants(getpid(), &l) < 0) {
        lineprof_failures++;
    }
    for (size_t i = 0; i < l.count; i++) {
        uint64_t rss;
        if (memlens_rss_of_pid(l.pids[i], &rss) == 0) {
            total += rss;
        }
    }
    free(l.pids);
    return total;
}

static inline uint64_t
lineprof_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
lineprof_read_rss(void)
{
    uint64_t rss;
    lineprof_reads++;
    if (lineprof_fd_pid != getpid()) {
        /* A forked child: the parent's statm, inherited, reads the
         * parent. */
        memlens_ownfd_close(&lineprof_statm);
        lineprof_fd_pid = getpid();
    }
    if (!memlens_ownfd_check(&lineprof_statm)) {
        char path[MEMLENS_PATH_MAX];
        int fd = memlens_proc_open("statm", path);
        if (fd >= 0) {
            (void)memlens_ownfd_adopt(&lineprof_statm, fd);
        }
    }
    if (lineprof_statm.fd >= 0
        && memlens_rss_from_fd(lineprof_statm.fd, &rss) == 0) {
        if (lineprof_children) {
            rss += lineprof_children_rss();
        }
        lineprof_rss = rss;
    }
    else {
        lineprof_failures++;
    }
    lineprof_churn_mark =
        __atomic_load_n(&memlens_hooks_churn, __ATOMIC_RELAXED);
    lineprof_small_mark =
        __atomic_load_n(&memlens_hooks_small_net, __ATOMIC_RELAXED);
    lineprof_clock_last = lineprof_clock();
}

/* Whether the line whose statistics are `st` (NULL: no line, or one whose
 * statistics could not grow; always timed) ran long, that is whether
 * LINEPROF_LONG_NS passed since the last timing. Untimed occurrences of a
 * trusted line make the next timing see a longer time: at worst an extra
 * read. */
static inline int
lineprof_ran_long(memlens_line_stat *st)
{
    if (st != NULL && st->untimed > 0) {
        st->untimed--;
        return 0;
    }
    uint64_t now = lineprof_clock();
    int ran_long = now - lineprof_clock_last >= LINEPROF_LONG_NS;
    lineprof_clock_last = now;
    if (st != NULL) {
        if (ran_long) {
            st->quick = 0;
        }
        else if (++st->quick >= LINEPROF_TRUST) {
            st->quick = LINEPROF_TRUST;
            st->untimed = LINEPROF_TRUST - 1;
        }
    }
    return ran_long;
}

/* The RSS now, read again only if it may have moved since the last read:
 * churn through the hooks, or the line `st` (as lineprof_ran_long) ran
 * long. */
static inline uint64_t
lineprof_rss_now(memlens_line_stat *st)
{
    uint64_t churn = __atomic_load_n(&memlens_hooks_churn, __ATOMIC_RELAXED);
    int64_t small =
        __atomic_load_n(&memlens_hooks_small_net, __ATOMIC_RELAXED);
    int64_t moved = small - lineprof_small_mark;
    if (churn - lineprof_churn_mark >= LINEPROF_CHURN_STEP
        || moved >= LINEPROF_SMALL_STEP || moved <= -LINEPROF_SMALL_STEP
        || lineprof_children || lineprof_ran_long(st)) {
        lineprof_read_rss();
    }
    return lineprof_rss;
}

/* ---- Code objects ------------------------------------------------------ */

static lineprof_code *
lineprof_lookup(PyObject *code)
{
    size_t found;
    if (!memlens_ptrtable_get(&lineprof_index, (uintptr_t)code, &found)) {
        return NULL;
    }
    return (lineprof_code *)found;
}

/* Drops the frames of `t` whose code entry was removed since the thread
 * last looked (they point at freed memory, or at an entry that another
 * code registered at the same address since). What is left keeps its
 * order: a frame whose caller was dropped is now the caller's caller's
 * callee, as if the dropped function had not been profiled. */
static void
lineprof_prune(lineprof_thread *t)
{
    int kept = 0;
    for (int i = 0; i < t->depth; i++) {
        lineprof_code *c = lineprof_lookup((PyObject *)t->frames[i].key);
        if (c != NULL && c->serial == t->frames[i].serial) {
            t->frames[kept++] = t->frames[i];
        }
    }
    lineprof_dropped += (uint64_t)(t->depth - kept);
    t->depth = kept;
    t->epoch = lineprof_epoch;
}

/* This thread's frame stack (NULL if it has none), every frame of it of a
 * code still registered. */
static inline lineprof_thread *
lineprof_here(void)
{
    lineprof_thread *t = lineprof_tls;
    if (t != NULL && t->epoch != lineprof_epoch) {
        lineprof_prune(t);
    }
    return t;
}

/* Drops one reference to `c`, freeing it with the last. */
static void
lineprof_code_unref(lineprof_code *c)
{
    if (--c->refs == 0) {
        free(c->lines);
        free(c);
    }
}

/* The statistics of `line` in `c`, growing the array as needed; NULL if
 * out of memory or the line precedes the function. */
static memlens_line_stat *
lineprof_stat(lineprof_code *c, int line)
{
    int i = line - c->first_line;
    if (i < 0) {
        return NULL;
    }
    if (i >= c->nlines) {
        int n = i + 16;
        memlens_line_stat *lines = realloc(c->lines, n * sizeof(*lines));
        if (lines == NULL) {
            lineprof_failures++;
            return NULL;
        }
        memset(lines + c->nlines, 0, (n - c->nlines) * sizeof(*lines));
        c->lines = lines;
        c->nlines = n;
    }
    return &c->lines[i];
}

/* ---- The per-line work ------------------------------------------------- */

static inline void
lineprof_start_line(lineprof_frame *f, int line)
{
    f->line = line;
    f->rss0 = lineprof_rss;
    if (lineprof_alloc_users) {
        f->alloc0 = memlens_hooks_thread_allocated();
        f->freed0 = memlens_hooks_thread_freed();
    }
}

/* Adds what happened since the line (re)started to its statistics;
 * `hit` counts one more occurrence (0 when only pausing); `last` says
 * that the outermost profiled call ends, which is always timed. */
static inline void
lineprof_account(lineprof_frame *f, int hit, int last)
{
    memlens_line_stat *st = lineprof_stat(f->code, f->line);
    uint64_t rss = lineprof_rss_now(last ? NULL : st);
    if (st == NULL) {
        return;
    }
    st->hits += (uint64_t)hit;
    st->increment += (int64_t)(rss - f->rss0);
    if (rss > st->mem_usage) {
        st->mem_usage = rss;
    }
    if (lineprof_alloc_users) {
        uint64_t a = memlens_hooks_thread_allocated() - f->alloc0;
        uint64_t fr = memlens_hooks_thread_freed() - f->freed0;
        st->allocated += a;
        st->freed += fr;
    }
}

static inline void
lineprof_line(lineprof_frame *f, int line)
{
    if (f->line >= 0) {
        lineprof_account(f, !f->resumed, 0);
    }
    f->resumed = 0;
    lineprof_start_line(f, line);
}

/* A profiled frame starts (fresh: its first line is the def line, which
 * gets the call's own occurrence) or resumes. */
static void
lineprof_push(lineprof_code *c, const void *frame, int fresh)
{
    if (c->code == NULL) {
        return; /* removed: a hook of an instrumented copy still running */
    }
    lineprof_thread *t = lineprof_thread_get();
    if (t == NULL) {
        lineprof_failures++;
        return;
    }
    if (t->epoch != lineprof_epoch) {
        lineprof_prune(t);
    }
    if (t->depth > 0) {
        lineprof_frame *caller = &t->frames[t->depth - 1];
        if (caller->line >= 0) {
            lineprof_account(caller, 0, 0); /* paused until we return */
        }
    }
    else {
        (void)lineprof_rss_now(NULL); /* the call's start, always timed */
    }
    if (t->depth == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        lineprof_frame *frames = realloc(t->frames, cap * sizeof(*frames));
        if (frames == NULL) {
            lineprof_failures++;
            return;
        }
        t->frames = frames;
        t->cap = cap;
    }
    lineprof_frame *f = &t->frames[t->depth++];
    f->code = c;
    f->key = c->code;
    f->serial = c->serial;
    f->frame = frame;
    f->line = -1;
    f->resumed = 0;
    f->alloc0 = memlens_hooks_thread_allocated();
    f->freed0 = memlens_hooks_thread_freed();
    if (fresh) {
        lineprof_start_line(f, c->first_line);
    }
}

/* A frame goes on inside `line`: resumed (after a yield or await: what it
 * does there is the line's, counted as the same occurrence) or adopted
 * (seen first there: the line counts when it ends). */
static void
lineprof_push_in_line(lineprof_code *c, const void *frame, int line,
                      int resumed)
{
    lineprof_push(c, frame, 0);
    lineprof_thread *t = lineprof_tls;
    if (line >= 0 && t != NULL && t->depth > 0
        && t->frames[t->depth - 1].frame == frame
        && t->frames[t->depth - 1].code == c) {
        lineprof_frame *f = &t->frames[t->depth - 1];
        lineprof_start_line(f, line);
        f->resumed = resumed;
    }
}

/* The frame on top returns, yields or unwinds: its line is closed and the
 * caller's resumes. */
static void
lineprof_pop(lineprof_thread *t)
{
    lineprof_frame *f = &t->frames[--t->depth];
    if (f->line >= 0) {
        lineprof_account(f, !f->resumed, t->depth == 0);
    }
    if (t->depth > 0) {
        lineprof_frame *caller = &t->frames[t->depth - 1];
        if (caller->line >= 0) {
            int line = caller->line;
            lineprof_start_line(caller, line);
        }
    }
}

static inline lineprof_frame *
lineprof_top(lineprof_thread *t)
{
    return (t != NULL && t->depth > 0) ? &t->frames[t->depth - 1] : NULL;
}

/* ---- Backend 1: the C trace function ----------------------------------- */

/* Whether a frame's call event is its start, not a resumption (see
 * compat.h). */
static inline int
lineprof_frame_fresh(PyFrameObject *frame, PyCodeObject *code)
{
    return memlens_frame_not_started(MEMLENS_FRAME_LASTI(frame), code);
}

static int
lineprof_trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    lineprof_frame *top;
    switch (what) {
        case PyTrace_CALL: {
            PyCodeObject *code = PyFrame_GetCode(frame);
            lineprof_code *c = lineprof_lookup((PyObject *)code);
            if (c != NULL) {
                if (lineprof_frame_fresh(frame, code)) {
                    lineprof_push(c, frame, 1);
                }
                else {
                    lineprof_push_in_line(c, frame,
                                          PyFrame_GetLineNumber(frame), 1);
                }
            }
            Py_DECREF(code);
            break;
        }
        case PyTrace_LINE:
            top = lineprof_top(lineprof_here());
            if (top != NULL && top->frame == (const void *)frame) {
                lineprof_line(top, PyFrame_GetLineNumber(frame));
            }
            break;
        case PyTrace_RETURN:
            top = lineprof_top(lineprof_here());
            if (top != NULL && top->frame == (const void *)frame) {
                lineprof_pop(lineprof_tls);
            }
            break;
        default:
            break;
    }
    return 0;
}

/* ---- Backend 2: sys.monitoring callbacks ------------------------------- */

static int
lineprof_check_args(Py_ssize_t nargs, Py_ssize_t want, const char *name)
{
    if (nargs < want) {
        PyErr_Format(PyExc_TypeError, "%s expects %zd arguments", name, want);
        return -1;
    }
    return 0;
}

/* PY_START(code, offset) and PY_RESUME / PY_THROW(code, offset[, exc]) */
static PyObject *
lineprof_mon_start(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (lineprof_check_args(nargs, 1, "_line_start") < 0) {
        return NULL;
    }
    lineprof_code *c = lineprof_lookup(args[0]);
    if (c != NULL) {
        lineprof_push(c, NULL, 1);
    }
    Py_RETURN_NONE;
}

static PyObject *
lineprof_mon_resume(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (lineprof_check_args(nargs, 2, "_line_resume") < 0) {
        return NULL;
    }
    lineprof_code *c = lineprof_lookup(args[0]);
    if (c != NULL) {
        long offset = memlens_small_int(args[1]);
        if (offset == -1 && PyErr_Occurred()) {
            return NULL;
        }
        lineprof_push_in_line(
            c, NULL, PyCode_Addr2Line((PyCodeObject *)args[0], (int)offset),
            1);
    }
    Py_RETURN_NONE;
}

/* LINE(code, line_number) */
static PyObject *
lineprof_mon_line(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2) {
        return PyErr_Format(PyExc_TypeError, "_line_line expects 2 arguments");
    }
    lineprof_frame *top = lineprof_top(lineprof_here());
    if (top != NULL && top->code->code == args[0]) {
        long line = memlens_small_int(args[1]);
        if (line == -1 && PyErr_Occurred()) {
            return NULL;
        }
        lineprof_line(top, (int)line);
    }
    Py_RETURN_NONE;
}

/* PY_RETURN / PY_YIELD / PY_UNWIND(code, offset, value) */
static PyObject *
lineprof_mon_leave(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (lineprof_check_args(nargs, 1, "_line_leave") < 0) {
        return NULL;
    }
    lineprof_frame *top = lineprof_top(lineprof_here());
    if (top != NULL && top->code->code == args[0]) {
        lineprof_pop(lineprof_tls);
    }
    Py_RETURN_NONE;
}

/* ---- Backend 3: hooks called by instrumented bytecode (3.11) ----------
 *
 * On 3.11 a trace function turns off the specializing interpreter for
 * every instruction; src/memlens/lineprof/instrument.py instead gives each profiled
 * code object a copy that calls the builtins below, each bound to the
 * code's statistics (a capsule of its lineprof_code). A frame is known by its
 * interpreter frame, read from the thread state: generators keep theirs
 * across resumptions, and a new call always enters before its lines. */

#if MEMLENS_LINE_INSTRUMENT
static const char lineprof_hook_name[] = "memlens.line_hook";

static inline lineprof_code *
lineprof_hook_code(PyObject *self)
{
    return PyCapsule_GetPointer(self, lineprof_hook_name);
}

static inline const void *
lineprof_hook_frame(void)
{
    return memlens_iframe_top(PyThreadState_Get());
}

/* line(n) starts line n; line_changed(n) only if n is not the line
 * running (an instruction reached both from its own line and from
 * another). */
static inline PyObject *
lineprof_hook_line_at(PyObject *self, PyObject *arg, int if_changed)
{
    if (lineprof_begun) {
        const void *frame = lineprof_hook_frame();
        lineprof_frame *top = lineprof_top(lineprof_here());
        long line = memlens_small_int(arg);
        if (line == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (top != NULL && top->frame == frame) {
            if (!if_changed || top->line != line) {
                lineprof_line(top, (int)line);
            }
        }
        else {
            /* A frame not on top of this thread's stack: one that began
             * before profiling did, or a generator resumed by throw(). */
            lineprof_push_in_line(lineprof_hook_code(self), frame, (int)line,
                                  0);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
lineprof_hook_line(PyObject *self, PyObject *arg)
{
    return lineprof_hook_line_at(self, arg, 0);
}

static PyObject *
lineprof_hook_line_changed(PyObject *self, PyObject *arg)
{
    return lineprof_hook_line_at(self, arg, 1);
}

static PyObject *
lineprof_hook_enter(PyObject *self, PyObject *Py_UNUSED(arg))
{
    if (lineprof_begun) {
        const void *frame = lineprof_hook_frame();
        lineprof_thread *t = lineprof_here();
        /* A frame left here unclosed is gone: this one just began. */
        while (t != NULL && t->depth > 0
               && t->frames[t->depth - 1].frame == frame) {
            lineprof_pop(t);
        }
        lineprof_push(lineprof_hook_code(self), frame, 1);
    }
    Py_RETURN_NONE;
}

/* resume(line): after a yield or await, inside `line`. */
static PyObject *
lineprof_hook_resume(PyObject *self, PyObject *arg)
{
    if (lineprof_begun) {
        long line = memlens_small_int(arg);
        if (line == -1 && PyErr_Occurred()) {
            return NULL;
        }
        lineprof_push_in_line(lineprof_hook_code(self), lineprof_hook_frame(),
                              (int)line, 1);
    }
    Py_RETURN_NONE;
}

/* Return, yield, or an exception leaving the frame. Runs even when no
 * profiler is on, so that no frame stays open. */
static PyObject *
lineprof_hook_leave(PyObject *self, PyObject *Py_UNUSED(arg))
{
    lineprof_frame *top = lineprof_top(lineprof_here());
    if (top != NULL && top->frame == lineprof_hook_frame()) {
        lineprof_pop(lineprof_tls);
    }
    Py_RETURN_NONE;
}

static PyMethodDef lineprof_hook_defs[] = {
    {"enter", lineprof_hook_enter, METH_O, NULL},
    {"line", lineprof_hook_line, METH_O, NULL},
    {"line_changed", lineprof_hook_line_changed, METH_O, NULL},
    {"leave", lineprof_hook_leave, METH_O, NULL},
    {"resume", lineprof_hook_resume, METH_O, NULL},
};

/* The hooks of an instrumented copy are gone: their entry may go too
 * (once removed from the table). */
static void
lineprof_hook_capsule_free(PyObject *capsule)
{
    lineprof_code *c = PyCapsule_GetPointer(capsule, lineprof_hook_name);
    if (c != NULL) {
        lineprof_code_unref(c);
    }
    else {
        PyErr_Clear();
    }
}

/* _line_ins_hooks(code) -> (enter, line, line_changed, leave, resume),
 * builtins bound to the statistics of a registered code object. */
static PyObject *
lineprof_py_ins_hooks(PyObject *m, PyObject *code)
{
    lineprof_code *c = lineprof_lookup(code);
    if (c == NULL) {
        return PyErr_Format(PyExc_ValueError,
                            "_line_ins_hooks: %R is not registered", code);
    }
    PyObject *capsule =
        PyCapsule_New(c, lineprof_hook_name, lineprof_hook_capsule_free);
    if (capsule == NULL) {
        return NULL;
    }
    c->refs++;
    size_t n = sizeof(lineprof_hook_defs) / sizeof(lineprof_hook_defs[0]);
    PyObject *out = PyTuple_New((Py_ssize_t)n);
    for (size_t i = 0; out != NULL && i < n; i++) {
        PyObject *f = PyCFunction_New(&lineprof_hook_defs[i], capsule);
        if (f == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, (Py_ssize_t)i, f);
    }
    Py_DECREF(capsule);
    return out;
}
#endif

/* ---- Python API -------------------------------------------------------- */

/* _line_add_code(code, last_line): profile this code object. */
static PyObject *
lineprof_py_add_code(PyObject *m, PyObject *args)
{
    PyObject *code;
    int last_line;
    if (!PyArg_ParseTuple(args, "O!i:_line_add_code", &PyCode_Type, &code,
                          &last_line)) {
        return NULL;
    }
    if (lineprof_lookup(code) != NULL) {
        Py_RETURN_NONE;
    }
    int first = ((PyCodeObject *)code)->co_firstlineno;
    int n = last_line >= first ? last_line - first + 1 : 1;
    if (lineprof_ncodes == lineprof_capcodes) {
        size_t cap = lineprof_capcodes ? lineprof_capcodes * 2 : 16;
        lineprof_code **codes = realloc(lineprof_codes, cap * sizeof(*codes));
        if (codes == NULL) {
            return PyErr_NoMemory();
        }
        lineprof_codes = codes;
        lineprof_capcodes = cap;
    }
    lineprof_code *c = calloc(1, sizeof(*c));
    memlens_line_stat *lines = calloc((size_t)n, sizeof(*lines));
    if (c == NULL || lines == NULL
        || memlens_ptrtable_put(&lineprof_index, (uintptr_t)code,
                                (size_t)(uintptr_t)c)
               < 0) {
        free(c);
        free(lines);
        return PyErr_NoMemory();
    }
    c->code = Py_NewRef(code);
    c->serial = ++lineprof_serial;
    c->slot = lineprof_ncodes;
    c->refs = 1;
    c->first_line = first;
    c->nlines = n;
    c->lines = lines;
    lineprof_codes[lineprof_ncodes++] = c;
    Py_RETURN_NONE;
}

/* _line_remove_code(code): stop profiling this code object and forget its
 * statistics; ValueError if it is not registered. */
static PyObject *
lineprof_py_remove_code(PyObject *m, PyObject *code)
{
    size_t found;
    if (!memlens_ptrtable_pop(&lineprof_index, (uintptr_t)code, &found)) {
        return PyErr_Format(PyExc_ValueError,
                            "_line_remove_code: %R is not registered", code);
    }
    lineprof_code *c = (lineprof_code *)found;
    lineprof_code *last = lineprof_codes[--lineprof_ncodes];
    lineprof_codes[c->slot] = last;
    last->slot = c->slot;
    if (lineprof_ncodes == 0) {
        /* Nothing left: give the storage back too. */
        free(lineprof_codes);
        lineprof_codes = NULL;
        lineprof_capcodes = 0;
        memlens_ptrtable_clear(&lineprof_index);
    }
    /* Frames of the entry are dropped before any thread follows them. */
    lineprof_epoch++;
    PyObject *obj = c->code;
    c->code = NULL;
    lineprof_code_unref(c);
    Py_DECREF(obj); /* last: it may run code (weakref callbacks) */
    Py_RETURN_NONE;
}

/* _line_begin(alloc): start attributing; hooks in light or exact mode. */
static PyObject *
lineprof_py_begin(PyObject *m, PyObject *arg)
{
    int alloc = PyObject_IsTrue(arg);
    if (alloc < 0) {
        return NULL;
    }
    if (lineprof_begun == 0) {
        char path[MEMLENS_PATH_MAX];
        /* A line that reuses heap pages freed before the profile would
         * show no growth: the figures must not depend on what ran
         * before. */
        (void)memlens_heap_trim();
        int fd = memlens_proc_open("statm", path);
        if (fd < 0) {
            return memlens_oserror_path(errno, path);
        }
        memlens_ownfd_close(&lineprof_statm);
        if (memlens_ownfd_adopt(&lineprof_statm, fd) < 0) {
            return memlens_oserror_path(errno, path);
        }
        lineprof_fd_pid = getpid();
        lineprof_read_rss();
        /* Nothing was being profiled: frames still open here were left by
         * an earlier run without their end (an error in a hook's call). */
        if (lineprof_tls != NULL) {
            lineprof_tls->depth = 0;
        }
    }
    if (memlens_hooks_acquire(alloc) < 0) {
        if (lineprof_begun == 0) {
            memlens_ownfd_close(&lineprof_statm);
        }
        return NULL;
    }
    lineprof_begun++;
    lineprof_alloc_users += alloc;
    Py_RETURN_NONE;
}

/* _line_end(alloc): the matching end of _line_begin. */
static PyObject *
lineprof_py_end(PyObject *m, PyObject *arg)
{
    int alloc = PyObject_IsTrue(arg);
    if (alloc < 0) {
        return NULL;
    }
    if (lineprof_begun == 0 || (alloc && lineprof_alloc_users == 0)
        || (!alloc && lineprof_begun == lineprof_alloc_users)) {
        PyErr_SetString(PyExc_RuntimeError, "_line_end without _line_begin");
        return NULL;
    }
    lineprof_begun--;
    lineprof_alloc_users -= alloc;
    memlens_hooks_release(alloc);
    if (lineprof_begun == 0) {
        memlens_ownfd_close(&lineprof_statm);
    }
    Py_RETURN_NONE;
}

/* _line_settrace(on): install or remove the C trace function in this
 * thread. The Python layer saves and restores any earlier one. */
static PyObject *
lineprof_py_settrace(PyObject *m, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    lineprof_thread *t = lineprof_thread_get();
    if (t == NULL) {
        return PyErr_NoMemory();
    }
    t->depth = 0;
    if (on) {
        PyEval_SetTrace(lineprof_trace, NULL);
    }
    else {
        PyEval_SetTrace(NULL, NULL);
    }
    Py_RETURN_NONE;
}

/* _line_reset_thread(): forget this thread's open frames (after a
 * backend switch or an interrupted run). */
static PyObject *
lineprof_py_reset_thread(PyObject *m, PyObject *Py_UNUSED(args))
{
    if (lineprof_tls != NULL) {
        lineprof_tls->depth = 0;
    }
    Py_RETURN_NONE;
}

/* _line_children(on): add the RSS of child processes to every reading. */
static PyObject *
lineprof_py_children(PyObject *m, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    lineprof_children = on;
    Py_RETURN_NONE;
}

/* _line_results() -> [(code, [(line, hits, increment, mem_usage,
 * allocated, freed), ...]), ...] for every line that ran. */
static PyObject *
lineprof_py_results(PyObject *m, PyObject *Py_UNUSED(args))
{
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < lineprof_ncodes; i++) {
        lineprof_code *c = lineprof_codes[i];
        PyObject *rows = PyList_New(0);
        if (rows == NULL) {
            goto error;
        }
        for (int j = 0; j < c->nlines; j++) {
            memlens_line_stat st = c->lines[j];
            if (st.hits == 0 && st.increment == 0 && st.allocated == 0) {
                continue;
            }
            PyObject *row = Py_BuildValue(
                "(iKLKKK)", c->first_line + j, (unsigned long long)st.hits,
                (long long)st.increment, (unsigned long long)st.mem_usage,
                (unsigned long long)st.allocated,
                (unsigned long long)st.freed);
            if (row == NULL || PyList_Append(rows, row) < 0) {
                Py_XDECREF(row);
                Py_DECREF(rows);
                goto error;
            }
            Py_DECREF(row);
        }
        PyObject *item = PyTuple_Pack(2, c->code, rows);
        Py_DECREF(rows);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto error;
        }
        Py_DECREF(item);
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* _line_clear(code=None): zero the statistics of one code or all. */
static PyObject *
lineprof_py_clear(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 0 && args[0] != Py_None) {
        lineprof_code *c = lineprof_lookup(args[0]);
        if (c != NULL) {
            memset(c->lines, 0, (size_t)c->nlines * sizeof(*c->lines));
        }
        Py_RETURN_NONE;
    }
    for (size_t i = 0; i < lineprof_ncodes; i++) {
        lineprof_code *c = lineprof_codes[i];
        memset(c->lines, 0, (size_t)c->nlines * sizeof(*c->lines));
    }
    Py_RETURN_NONE;
}

/* _line_state() -> dict: engine figures for tests and leak checks. */
static PyObject *
lineprof_py_state(PyObject *m, PyObject *Py_UNUSED(args))
{
    lineprof_thread *t = lineprof_here();
    return Py_BuildValue("{s:l,s:l,s:n,s:i,s:K,s:K,s:K}", "begun",
                         lineprof_begun, "alloc_users", lineprof_alloc_users,
                         "codes", (Py_ssize_t)lineprof_ncodes, "depth",
                         t != NULL ? t->depth : 0, "failures",
                         (unsigned long long)lineprof_failures, "reads",
                         (unsigned long long)lineprof_reads, "dropped_frames",
                         (unsigned long long)lineprof_dropped);
}

long
memlens_lineprof_active(void)
{
    return lineprof_begun;
}

#define FASTCALL(f) ((PyCFunction)(void (*)(void))(f))

static PyMethodDef lineprof_methods[] = {
    {"_line_add_code", lineprof_py_add_code, METH_VARARGS,
     "_line_add_code(code, last_line): profile this code object."},
    {"_line_remove_code", lineprof_py_remove_code, METH_O,
     "_line_remove_code(code): stop profiling it, forget its figures."},
    {"_line_begin", lineprof_py_begin, METH_O,
     "_line_begin(alloc): start attributing memory to lines."},
    {"_line_end", lineprof_py_end, METH_O, "_line_end(alloc)"},
    {"_line_settrace", lineprof_py_settrace, METH_O,
     "_line_settrace(on): the C trace function in this thread."},
    {"_line_reset_thread", lineprof_py_reset_thread, METH_NOARGS, NULL},
    {"_line_children", lineprof_py_children, METH_O,
     "_line_children(on): include child processes' RSS."},
    {"_line_results", lineprof_py_results, METH_NOARGS,
     "Per-line statistics of every profiled code object."},
    {"_line_clear", FASTCALL(lineprof_py_clear), METH_FASTCALL,
     "_line_clear(code=None): zero the statistics."},
    {"_line_state", lineprof_py_state, METH_NOARGS, NULL},
    {"_line_mon_start", FASTCALL(lineprof_mon_start), METH_FASTCALL,
     "sys.monitoring PY_START callback."},
    {"_line_mon_resume", FASTCALL(lineprof_mon_resume), METH_FASTCALL,
     "sys.monitoring PY_RESUME / PY_THROW callback."},
    {"_line_mon_line", FASTCALL(lineprof_mon_line), METH_FASTCALL,
     "sys.monitoring LINE callback."},
    {"_line_mon_leave", FASTCALL(lineprof_mon_leave), METH_FASTCALL,
     "sys.monitoring PY_RETURN / PY_YIELD / PY_UNWIND callback."},
#if MEMLENS_LINE_INSTRUMENT
    {"_line_ins_hooks", lineprof_py_ins_hooks, METH_O,
     "_line_ins_hooks(code): the hooks of instrumented bytecode."},
#endif
    {NULL, NULL, 0, NULL},
};

int
memlens_lineprof_init(PyObject *module)
{
    static int key_made = 0;
    if (!key_made) {
        int rc = pthread_key_create(&lineprof_key, lineprof_thread_free);
        if (rc != 0) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        key_made = 1;
    }
    return PyModule_AddFunctions(module, lineprof_methods);
}
