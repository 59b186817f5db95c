/* mallocloop: the C side of bench_tracing.py's native workloads. A loop
 * of small mallocs made by C code, the GIL held, never through Python's
 * allocators: what a C or C++ extension's own data structures cost a
 * tracer that hooks every library's malloc. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>

/* Written through, so that the compiler keeps every malloc and free. */
static void *volatile mallocloop_sink;

/* keep(n, size): n blocks of size bytes alive together, then all freed;
 * returns n. */
static PyObject *
mallocloop_keep(PyObject *m, PyObject *args)
{
    Py_ssize_t n, size;
    if (!PyArg_ParseTuple(args, "nn:keep", &n, &size)) {
        return NULL;
    }
    if (n < 0 || size <= 0) {
        PyErr_SetString(PyExc_ValueError, "n >= 0 and size > 0");
        return NULL;
    }
    char **blocks = malloc((size_t)(n ? n : 1) * sizeof(char *));
    if (blocks == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        blocks[i] = malloc((size_t)size);
        if (blocks[i] == NULL) {
            break;
        }
        blocks[i][0] = (char)i;
        mallocloop_sink = blocks[i];
    }
    Py_ssize_t made = i;
    for (i = 0; i < made; i++) {
        free(blocks[i]);
    }
    free(blocks);
    if (made < n) {
        return PyErr_NoMemory();
    }
    return PyLong_FromSsize_t(n);
}

/* churn(n, size): n times a block of size bytes taken and given back at
 * once; returns n. */
static PyObject *
mallocloop_churn(PyObject *m, PyObject *args)
{
    Py_ssize_t n, size;
    if (!PyArg_ParseTuple(args, "nn:churn", &n, &size)) {
        return NULL;
    }
    if (n < 0 || size <= 0) {
        PyErr_SetString(PyExc_ValueError, "n >= 0 and size > 0");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char *p = malloc((size_t)size);
        if (p == NULL) {
            return PyErr_NoMemory();
        }
        p[0] = (char)i;
        mallocloop_sink = p;
        free(p);
    }
    return PyLong_FromSsize_t(n);
}

static PyMethodDef mallocloop_methods[] = {
    {"keep", mallocloop_keep, METH_VARARGS,
     "keep(n, size): n mallocs alive together, then freed"},
    {"churn", mallocloop_churn, METH_VARARGS,
     "churn(n, size): n times malloc then free"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mallocloop_module = {
    PyModuleDef_HEAD_INIT,
    "mallocloop",
    "Loops of small mallocs made by C code.",
    -1,
    mallocloop_methods,
};

PyMODINIT_FUNC
PyInit_mallocloop(void)
{
    return PyModule_Create(&mallocloop_module);
}
