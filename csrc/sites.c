/* sites.c: where in the Python code each traced block was asked for.
 *
 * A site is the traceback of up to `nframes` Python frames, interned once:
 * tracing.c's tables hold its index. The current thread's frames are read
 * in place where compat.h knows the layout and the reading agrees with the
 * API (checked at each start), else through the API. Line numbers of
 * (code, lasti) are cached, and each thread keeps its few most recent
 * (frame, code, lasti) -> site answers.
 *
 * Called from the allocator hooks (through tracing.c) with the GIL held,
 * and from tracing.c's Python API. Never raises from the hooks; all
 * memory is libc's.
 */
#include "sites.h"
#include "native.h"
#include "table.h"

#include <stdlib.h>
#include <string.h>

memlens_site
    *memlens_sites_chunks[MEMLENS_SITES_MAX / MEMLENS_SITES_CHUNK + 1];
uint32_t memlens_sites_count = 0;

/* Site lookup: open addressing over indices, by hash (table.h's home
 * slot). Its probe loop is its own: two sites may share a hash, so a
 * lookup compares their frames. GIL. */
static uint32_t *sites_site_index = NULL; /* Owned (libc); 0 empty. */
static size_t sites_site_mask = 0;

static int sites_nframes = 1;
/* Sites not interned (no memory, no room): their blocks go to the unknown
 * site. GIL. */
static uint64_t sites_failures = 0;

static inline void
sites_fail(void)
{
    sites_failures++;
}

#define SITES_RECENT 4

typedef struct {
    /* A small cache of (frame, code, lasti) -> site: a loop alternates a
     * few allocating instructions. Identities only, never dereferenced. */
    struct {
        const void *frame;
        const void *code;
        int lasti;
        uint32_t site;
    } recent[SITES_RECENT];
    unsigned next_recent;
    unsigned long generation;
} sites_thread;

static MEMLENS_TLS sites_thread sites_tls;
/* Bumped at each start and when the skipped folders change: each thread's
 * cache of recent sites is then stale. GIL. */
static unsigned long sites_generation = 1;

/* Line numbers of (code, lasti), cached: computing one walks the code's
 * line table. Direct-mapped; GIL. An entry holds a reference to its code,
 * so that no other code object can come to live at the same address while
 * the entry stands (it would be given the dead one's line and kind). An
 * entry overwritten inside an allocator hook must not free its code there
 * (a deallocation may run weakref callbacks): a code that the entry held
 * last goes to sites_line_dead, released by sites_line_cache_clear. */
#define SITES_LINE_CACHE 8192
typedef struct {
    PyObject *code; /* Strong, or NULL. */
    int lasti;
    int firstlineno;
    int line;
    int skip; /* SITES_CODE_*: what the code's folder makes of it. */
} sites_line_entry;

/* What a site makes of the frames of a code object, by its file's folder:
 *   - SITES_CODE_SKIPPED: passed over (NumPy's own Python code, so that
 *     np.ones() lands on the caller's line);
 *   - SITES_CODE_OWN: memlens's own code. A block whose site starts there
 *     is not recorded at all: memlens's glue that runs while tracing (a
 *     magic calling exec(), a context manager's exit) is not the
 *     program's, and must neither show as a line nor raise the peak. */
enum { SITES_CODE_PLAIN, SITES_CODE_SKIPPED, SITES_CODE_OWN };

/* The folders of each kind: tuples of str, owned; GIL. */
static PyObject *sites_skip_prefixes = NULL;
static PyObject *sites_own_prefixes = NULL;

/* Whether `fn` starts with one of `prefixes` (a tuple of str, or NULL). */
static int
sites_under(PyObject *fn, PyObject *prefixes)
{
    Py_ssize_t n = prefixes != NULL ? PyTuple_GET_SIZE(prefixes) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t r = PyUnicode_Tailmatch(fn, PyTuple_GET_ITEM(prefixes, i),
                                           0, PY_SSIZE_T_MAX, -1);
        if (r < 0) {
            PyErr_Clear();
        }
        else if (r) {
            return 1;
        }
    }
    return 0;
}

/* SITES_CODE_* of `code`. */
static int
sites_code_kind(PyObject *code)
{
    PyObject *fn = ((PyCodeObject *)code)->co_filename;
    if (sites_under(fn, sites_own_prefixes)) {
        return SITES_CODE_OWN;
    }
    return sites_under(fn, sites_skip_prefixes) ? SITES_CODE_SKIPPED
                                                : SITES_CODE_PLAIN;
}
static sites_line_entry *sites_line_cache = NULL; /* Owned (libc). */
static PyObject **sites_line_dead = NULL;         /* Strong refs (libc). */
static size_t sites_nline_dead = 0, sites_capline_dead = 0;

/* Drops the cache's reference to `code` where no deallocation may run:
 * now if others hold it, else later. GIL. */
static void
sites_line_release(PyObject *code)
{
    if (Py_REFCNT(code) > 1) {
        Py_DECREF(code);
        return;
    }
    if (memlens_grow((void **)&sites_line_dead, &sites_capline_dead,
                     sites_nline_dead, sizeof(PyObject *), 64)
        < 0) {
        return; /* Out of memory: the code is kept, never wrongly freed. */
    }
    sites_line_dead[sites_nline_dead++] = code;
}

/* Empties the line cache and releases what it held. GIL, outside the
 * allocator hooks. */
static void
sites_line_cache_clear(void)
{
    if (sites_line_cache != NULL) {
        for (size_t i = 0; i < SITES_LINE_CACHE; i++) {
            Py_CLEAR(sites_line_cache[i].code);
        }
    }
    /* Deallocations may free more codes: take the list first. */
    PyObject **dead = sites_line_dead;
    size_t n = sites_nline_dead;
    sites_line_dead = NULL;
    sites_nline_dead = sites_capline_dead = 0;
    for (size_t i = 0; i < n; i++) {
        Py_DECREF(dead[i]);
    }
    free(dead);
}

/* ---- Sites from frames (GIL) --------------------------------------------- */

/* The line of (code, lasti); *skip is the code's SITES_CODE_* kind. */
static int
sites_line_of(PyObject *code, int lasti, int *skip)
{
    int first = ((PyCodeObject *)code)->co_firstlineno;
    /* (code >> 4) takes 44 bits at most: lasti above them. */
    uint64_t key = ((uint64_t)(uintptr_t)code >> 4) ^ ((uint64_t)lasti << 44);
    size_t h = memlens_table_home(key, SITES_LINE_CACHE - 1);
    sites_line_entry *e = sites_line_cache ? &sites_line_cache[h] : NULL;
    if (e != NULL && e->code == code && e->lasti == lasti
        && e->firstlineno == first) {
        *skip = e->skip;
        return e->line;
    }
    int line =
        lasti < 0 ? first : PyCode_Addr2Line((PyCodeObject *)code, lasti);
    *skip = sites_code_kind(code);
    if (e != NULL) {
        if (e->code != code) {
            Py_INCREF(code);
            if (e->code != NULL) {
                sites_line_release(e->code);
            }
            e->code = code;
        }
        e->lasti = lasti;
        e->firstlineno = first;
        e->line = line;
        e->skip = *skip;
    }
    return line;
}

static uint64_t
sites_hash_frames(const memlens_site_frame *f, int n)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)(uintptr_t)f[i].code;
        h *= UINT64_C(1099511628211);
        h ^= (uint64_t)(uint32_t)f[i].line;
        h *= UINT64_C(1099511628211);
    }
    return h ? h : 1;
}

/* Field by field: the struct has padding. */
static int
sites_same_frames(const memlens_site_frame *a, const memlens_site_frame *b,
                  int n)
{
    for (int i = 0; i < n; i++) {
        if (a[i].code != b[i].code || a[i].line != b[i].line) {
            return 0;
        }
    }
    return 1;
}

static int
sites_index_grow(void)
{
    size_t cap = sites_site_index ? (sites_site_mask + 1) * 2 : 4096;
    uint32_t *index = calloc(cap, sizeof(uint32_t));
    if (index == NULL) {
        return -1;
    }
    for (uint32_t i = 1; i < memlens_sites_count; i++) {
        size_t j = memlens_table_home(memlens_site_at(i)->hash, cap - 1);
        while (index[j] != 0) {
            j = (j + 1) & (cap - 1);
        }
        index[j] = i;
    }
    free(sites_site_index);
    sites_site_index = index;
    sites_site_mask = cap - 1;
    return 0;
}

/* The index of the site for these frames, interned on first sight
 * (taking references to the code objects); MEMLENS_SITE_UNKNOWN when out of
 * room. */
static uint32_t
sites_intern(const memlens_site_frame *frames, int n, int native)
{
    uint64_t h = sites_hash_frames(frames, n) ^ (uint64_t)native;
    h = h ? h : 1;
    if (sites_site_index != NULL) {
        size_t j = memlens_table_home(h, sites_site_mask);
        uint32_t i;
        while ((i = sites_site_index[j]) != 0) {
            memlens_site *s = memlens_site_at(i);
            if (s->hash == h && s->nframes == n && s->native == native
                && sites_same_frames(s->frames, frames, n)) {
                return i;
            }
            j = (j + 1) & sites_site_mask;
        }
    }
    if (memlens_sites_count >= MEMLENS_SITES_MAX) {
        sites_fail();
        return MEMLENS_SITE_UNKNOWN;
    }
    if (memlens_table_full(sites_site_index == NULL, memlens_sites_count,
                           sites_site_mask, 1, 2)) {
        if (sites_index_grow() < 0) {
            sites_fail();
            return MEMLENS_SITE_UNKNOWN;
        }
    }
    uint32_t i = memlens_sites_count;
    memlens_site **chunk = &memlens_sites_chunks[i / MEMLENS_SITES_CHUNK];
    if (*chunk == NULL) {
        *chunk = calloc(MEMLENS_SITES_CHUNK, sizeof(memlens_site));
        if (*chunk == NULL) {
            sites_fail();
            return MEMLENS_SITE_UNKNOWN;
        }
    }
    memlens_site_frame *copy = malloc(n * sizeof(memlens_site_frame));
    if (copy == NULL) {
        sites_fail();
        return MEMLENS_SITE_UNKNOWN;
    }
    memcpy(copy, frames, n * sizeof(memlens_site_frame));
    for (int k = 0; k < n; k++) {
        Py_INCREF(copy[k].code);
    }
    memlens_site *s = memlens_site_at(i);
    memset(s, 0, sizeof(*s));
    s->hash = h;
    s->nframes = n;
    s->frames = copy;
    s->native = native;
    memlens_sites_count++;
    size_t j = memlens_table_home(h, sites_site_mask);
    while (sites_site_index[j] != 0) {
        j = (j + 1) & sites_site_mask;
    }
    sites_site_index[j] = i;
    return i;
}

/* Frames are read in place (compat.h) when the reading agrees with the
 * API; decided at each start, with the GIL. */
static int sites_in_place = 0;
static int sites_frames_api = 0; /* Tests: always the API. */

/* A walk up the current thread's frames, in place or through the API (which
 * holds a reference to the frame it stands on). */
typedef struct {
    memlens_frame f;
    int in_place;
    PyFrameObject *owned; /* Through the API: the frame it stands on. */
} sites_cursor;

static int
sites_cursor_fill(sites_cursor *c)
{
    PyFrameObject *frame = c->owned;
    if (frame == NULL) {
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    Py_DECREF(code); /* The running frame holds it. */
    c->f.id = frame;
    c->f.code = code;
    c->f.lasti = MEMLENS_FRAME_LASTI(frame);
    c->f.at = frame;
    return 1;
}

static int
sites_cursor_top(PyThreadState *ts, sites_cursor *c, int in_place)
{
    c->in_place = in_place;
    c->owned = NULL;
#if MEMLENS_FRAMES_IN_PLACE
    if (in_place) {
        return memlens_frame_top(ts, &c->f);
    }
#endif
    c->owned = PyThreadState_GetFrame(ts);
    return sites_cursor_fill(c);
}

/* Moves to the caller; 0 (and stays put) when there is none. */
static int
sites_cursor_back(sites_cursor *c)
{
#if MEMLENS_FRAMES_IN_PLACE
    if (c->in_place) {
        return memlens_frame_back(&c->f);
    }
#endif
    if (c->owned == NULL) {
        return 0;
    }
    PyFrameObject *back = PyFrame_GetBack(c->owned);
    if (back == NULL) {
        return 0;
    }
    Py_SETREF(c->owned, back);
    return sites_cursor_fill(c);
}

static void
sites_cursor_done(sites_cursor *c)
{
    Py_CLEAR(c->owned);
}

/* Whether reading this thread's frames in place finds what the API finds,
 * frame by frame. GIL held. */
static int
sites_frames_agree(PyThreadState *ts)
{
#if MEMLENS_FRAMES_IN_PLACE
    sites_cursor api, here;
    int a = sites_cursor_top(ts, &api, 0);
    int h = sites_cursor_top(ts, &here, 1);
    int same = 1;
    for (int depth = 0; same && a && h && depth < 256; depth++) {
        same = api.f.code == here.f.code && api.f.lasti == here.f.lasti;
        a = sites_cursor_back(&api);
        h = sites_cursor_back(&here);
    }
    int agree = same && a == h;
    sites_cursor_done(&api);
    return agree;
#else
    (void)ts;
    return 0;
#endif
}

static uint32_t sites_current_site_walk(PyThreadState *ts);

/* The site of the Python stack of `ts`, this thread's state (borrowed),
 * passed in: the caller has just read it, and reading it costs a call
 * into libpython's thread-local storage. GIL held. Making frame objects
 * through the API may run a collection on 3.11 (compat.h); reading in
 * place makes none. */
uint32_t
memlens_sites_current(PyThreadState *ts)
{
#if MEMLENS_FRAMES_MAY_COLLECT
    if (!sites_in_place) {
        int collecting = PyGC_Disable();
        uint32_t site = sites_current_site_walk(ts);
        if (collecting) {
            PyGC_Enable();
        }
        return site;
    }
#endif
    return sites_current_site_walk(ts);
}

static uint32_t
sites_current_site_walk(PyThreadState *ts)
{
    sites_thread *t = &sites_tls;
    sites_cursor cur;
    if (!sites_cursor_top(ts, &cur, sites_in_place)) {
        return MEMLENS_SITE_UNKNOWN;
    }
    const void *frame = cur.f.id;
    PyCodeObject *code = cur.f.code;
    int lasti = cur.f.lasti;
    if (t->generation != sites_generation) {
        memset(t->recent, 0, sizeof(t->recent));
        t->generation = sites_generation;
    }
    if (sites_nframes == 1) {
        for (int k = 0; k < SITES_RECENT; k++) {
            if (t->recent[k].frame == frame
                && t->recent[k].code == (const void *)code
                && t->recent[k].lasti == lasti) {
                sites_cursor_done(&cur);
                return t->recent[k].site;
            }
        }
    }
    /* Codes borrowed from running frames, which hold them. */
    memlens_site_frame frames[MEMLENS_SITES_MAX_FRAMES];
    int skip;
    frames[0].code = (PyObject *)code;
    frames[0].line = sites_line_of((PyObject *)code, lasti, &skip);
    /* A site found past skipped frames depends on the callers: not for
     * the one-entry cache. Nor is a block of memlens's own code (no site):
     * only a site's reference keeps the code, and so the key, alive. */
    int cacheable = skip == SITES_CODE_PLAIN;
    /* Frames of skipped code are passed over, unless nothing else is
     * left: then the last one stands. */
    while (skip == SITES_CODE_SKIPPED && sites_cursor_back(&cur)) {
        frames[0].code = (PyObject *)cur.f.code;
        frames[0].line =
            sites_line_of((PyObject *)cur.f.code, cur.f.lasti, &skip);
    }
    /* A block memlens's own code asked for has no site. */
    int n = skip == SITES_CODE_OWN ? 0 : 1;
    while (n > 0 && n < sites_nframes && sites_cursor_back(&cur)) {
        frames[n].code = (PyObject *)cur.f.code;
        frames[n].line =
            sites_line_of((PyObject *)cur.f.code, cur.f.lasti, &skip);
        n++;
    }
    sites_cursor_done(&cur);
    if (n > 0 && n < sites_nframes) {
        /* The thread's stack ended: a thread started while tracing
         * natively goes on with the stack that started it. */
        uint32_t creator = memlens_native_creator();
        if (creator != MEMLENS_SITE_NONE && creator < memlens_sites_count) {
            const memlens_site *c = memlens_site_at(creator);
            for (int k = 0; k < c->nframes && n < sites_nframes; k++) {
                frames[n++] = c->frames[k];
            }
        }
    }
    uint32_t site = n > 0 ? sites_intern(frames, n, 0) : MEMLENS_SITE_NONE;
    if (cacheable && sites_nframes == 1) {
        unsigned k = t->next_recent++ % SITES_RECENT;
        t->recent[k].frame = frame;
        t->recent[k].code = code;
        t->recent[k].lasti = lasti;
        t->recent[k].site = site;
    }
    return site;
}

uint32_t
memlens_sites_native(uint32_t site)
{
    if (site == MEMLENS_SITE_NONE) {
        return site;
    }
    memlens_site *s = memlens_site_at(site);
    if (s->native || s->twin != 0) {
        return s->native ? site : s->twin;
    }
    /* Interning copies the frames and takes references of its own. */
    uint32_t twin = sites_intern(s->frames, s->nframes, 1);
    if (twin == MEMLENS_SITE_UNKNOWN) {
        return MEMLENS_SITE_NATIVE_THREAD;
    }
    memlens_site_at(site)->twin = twin;
    memlens_site_at(twin)->twin = site;
    return twin;
}

/* ---- Start, stop and settings (GIL) -------------------------------------- */

void
memlens_sites_clear(void)
{
    for (uint32_t i = 0; i < memlens_sites_count; i++) {
        memlens_site *s = memlens_site_at(i);
        for (int k = 0; k < s->nframes; k++) {
            Py_DECREF(s->frames[k].code);
        }
        free(s->frames);
    }
    for (size_t c = 0;
         c < sizeof(memlens_sites_chunks) / sizeof(memlens_sites_chunks[0]);
         c++) {
        free(memlens_sites_chunks[c]);
        memlens_sites_chunks[c] = NULL;
    }
    memlens_sites_count = 0;
    free(sites_site_index);
    sites_site_index = NULL;
    sites_site_mask = 0;
    sites_line_cache_clear();
}

int
memlens_sites_start(int nframes)
{
    memlens_sites_clear();
    if (sites_line_cache == NULL) {
        sites_line_cache = calloc(SITES_LINE_CACHE, sizeof(sites_line_entry));
        if (sites_line_cache == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* Site 0: allocations whose stack could not be seen. */
    memlens_site **chunk = &memlens_sites_chunks[0];
    *chunk = calloc(MEMLENS_SITES_CHUNK, sizeof(memlens_site));
    if (*chunk == NULL || sites_index_grow() < 0) {
        memlens_sites_clear();
        PyErr_NoMemory();
        return -1;
    }
    /* Site 1: native blocks of threads whose Python origin is unknown,
     * the native twin of site 0. */
    memlens_sites_chunks[0][MEMLENS_SITE_NATIVE_THREAD].native = 1;
    memlens_sites_chunks[0][MEMLENS_SITE_UNKNOWN].twin =
        MEMLENS_SITE_NATIVE_THREAD;
    memlens_sites_chunks[0][MEMLENS_SITE_NATIVE_THREAD].twin =
        MEMLENS_SITE_NATIVE_THREAD;
    memlens_sites_count = 2;
    sites_nframes = nframes;
    sites_failures = 0;
    sites_generation++;
    sites_in_place =
        !sites_frames_api && sites_frames_agree(PyThreadState_Get());
    return 0;
}

size_t
memlens_sites_own_bytes(void)
{
    size_t chunks =
        (memlens_sites_count + MEMLENS_SITES_CHUNK - 1) / MEMLENS_SITES_CHUNK;
    size_t frames = 0;
    for (uint32_t i = 0; i < memlens_sites_count; i++) {
        frames += (size_t)memlens_site_at(i)->nframes;
    }
    return chunks * MEMLENS_SITES_CHUNK * sizeof(memlens_site)
           + frames * sizeof(memlens_site_frame)
           + (sites_site_index ? (sites_site_mask + 1) * sizeof(uint32_t) : 0)
           + (sites_line_cache ? SITES_LINE_CACHE * sizeof(sites_line_entry)
                               : 0);
}

int
memlens_sites_nframes(void)
{
    return sites_nframes;
}

uint64_t
memlens_sites_failures(void)
{
    return sites_failures;
}

int
memlens_sites_in_place(void)
{
    return sites_in_place;
}

void
memlens_sites_frames_api(int flag)
{
    sites_frames_api = flag;
}

void
memlens_sites_skip(PyObject *skipped, PyObject *own)
{
    Py_INCREF(skipped);
    Py_XSETREF(sites_skip_prefixes, skipped);
    Py_INCREF(own);
    Py_XSETREF(sites_own_prefixes, own);
    sites_line_cache_clear();
    sites_generation++;
}

/* ---- Reports (GIL) -------------------------------------------------------- */

/* A tuple of (filename, lineno) pairs, most recent first; with
 * `functions`, (filename, lineno, function name) triples. */
PyObject *
memlens_site_traceback(const memlens_site *s, int functions)
{
    PyObject *tb = PyTuple_New(s->nframes);
    if (tb == NULL) {
        return NULL;
    }
    for (int k = 0; k < s->nframes; k++) {
        PyCodeObject *code = (PyCodeObject *)s->frames[k].code;
        PyObject *pair =
            functions
                ? Py_BuildValue("(OiO)", code->co_filename, s->frames[k].line,
                                code->co_name)
                : Py_BuildValue("(Oi)", code->co_filename, s->frames[k].line);
        if (pair == NULL) {
            Py_DECREF(tb);
            return NULL;
        }
        PyTuple_SET_ITEM(tb, k, pair);
    }
    return tb;
}
