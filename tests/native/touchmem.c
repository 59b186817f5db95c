/* touchmem: a tiny C extension for the tests. It takes memory the way C
 * libraries do, straight from malloc or an anonymous mmap, never through
 * the Python allocators, and touches every page so that the kernel
 * charges it to RSS. Blocks are passed around as integer addresses. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int
touchmem_size(PyObject *arg, size_t *n)
{
    Py_ssize_t v = PyLong_AsSsize_t(arg);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        return -1;
    }
    *n = (size_t)v;
    return 0;
}

/* malloc_touch(n) -> address of n bytes from malloc, every page written. */
static PyObject *
touchmem_malloc_touch(PyObject *m, PyObject *arg)
{
    size_t n;
    if (touchmem_size(arg, &n) < 0) {
        return NULL;
    }
    void *p = malloc(n);
    if (p == NULL) {
        return PyErr_NoMemory();
    }
    memset(p, 1, n);
    return PyLong_FromVoidPtr(p);
}

/* free(address) */
static PyObject *
touchmem_free(PyObject *m, PyObject *arg)
{
    void *p = PyLong_AsVoidPtr(arg);
    if (p == NULL && PyErr_Occurred()) {
        return NULL;
    }
    free(p);
    Py_RETURN_NONE;
}

/* mmap_touch(n) -> address of an anonymous private mapping of n bytes,
 * every page written. */
static PyObject *
touchmem_mmap_touch(PyObject *m, PyObject *arg)
{
    size_t n;
    if (touchmem_size(arg, &n) < 0) {
        return NULL;
    }
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    memset(p, 1, n);
    return PyLong_FromVoidPtr(p);
}

/* munmap(address, n) */
static PyObject *
touchmem_munmap(PyObject *m, PyObject *args)
{
    PyObject *addr;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "On:munmap", &addr, &n)) {
        return NULL;
    }
    void *p = PyLong_AsVoidPtr(addr);
    if (p == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (munmap(p, (size_t)n) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef touchmem_methods[] = {
    {"malloc_touch", touchmem_malloc_touch, METH_O, NULL},
    {"free", touchmem_free, METH_O, NULL},
    {"mmap_touch", touchmem_mmap_touch, METH_O, NULL},
    {"munmap", touchmem_munmap, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef touchmem_module = {
    PyModuleDef_HEAD_INIT, "touchmem", NULL, -1, touchmem_methods,
};

PyMODINIT_FUNC
PyInit_touchmem(void)
{
    return PyModule_Create(&touchmem_module);
}
