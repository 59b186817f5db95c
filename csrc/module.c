/* module.c: memlens._core, the C core of memlens.
 *
 * Multi-phase initialisation; the module state holds the heap types. The
 * process-wide resources (cached /proc descriptors, allocator hooks, the
 * open-window list) are process-wide by nature and live in each
 * subsystem's file, protected as documented there.
 *
 * Only the main interpreter may load the module. The hooks, the tracing
 * tables and the sampler are one per process and hold objects of the
 * interpreter that set them up: a subinterpreter that started tracing
 * and was then destroyed would leave the main interpreter tracing with
 * dangling state, and its stop would stop the main interpreter's run.
 */
#include "census.h"
#include "common.h"
#include "hooks.h"
#include "npmem.h"
#include "peak.h"
#include "record.h"
#include "readings.h"
#include "sampler.h"
#include "usage.h"
#include "sizeof.h"
#include "tracing.h"
#include "lineprof.h"
#include "native.h"

/* state() -> dict: what memlens has installed or running right now (the
 * quiet: on the calling thread). The test suite checks it is all gone
 * after each test. */
static PyObject *
module_state_info(PyObject *module, PyObject *Py_UNUSED(args))
{
    return Py_BuildValue(
        "{s:O,s:l,s:l,s:l,s:l,s:i}", "hooks_installed",
        memlens_hooks_installed() ? Py_True : Py_False, "hooks_users",
        memlens_hooks_users(), "sampler_threads", memlens_sampler_threads(),
        "open_windows", memlens_peak_open_windows(), "line_profiling",
        memlens_lineprof_active(), "quiet", memlens_hooks_quiet_depth());
}

static PyMethodDef module_methods[] = {
    {"state", module_state_info, METH_NOARGS,
     "state() -> dict of what memlens has installed or running."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    /* Before anything is set up: nothing is left behind. */
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_ImportError,
                        "memlens cannot be used in a subinterpreter: its "
                        "allocator hooks, tracing and sampler are shared by "
                        "the whole process; use memlens from the main "
                        "interpreter");
        return -1;
    }
    memlens_state *st = PyModule_GetState(module);
    if (memlens_readings_init(module) < 0 || memlens_hooks_init(module) < 0
        || memlens_lineprof_init(module) < 0 || memlens_npmem_init(module) < 0
        || memlens_tracing_init(module) < 0 || memlens_native_init(module) < 0
        || memlens_sizeof_init(module) < 0 || memlens_census_init(module) < 0
        || memlens_sampler_init_type(module, st) < 0
        || memlens_peak_init_type(module, st) < 0
        || memlens_record_init_type(module, st) < 0
        || memlens_usage_init_type(module, st) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    memlens_state *st = PyModule_GetState(module);
    if (st != NULL) {
        Py_VISIT(st->sampler_type);
        Py_VISIT(st->window_type);
        Py_VISIT(st->recorder_type);
        Py_VISIT(st->usage_type);
    }
    return 0;
}

static int
module_clear(PyObject *module)
{
    memlens_state *st = PyModule_GetState(module);
    if (st != NULL) {
        Py_CLEAR(st->sampler_type);
        Py_CLEAR(st->window_type);
        Py_CLEAR(st->recorder_type);
        Py_CLEAR(st->usage_type);
    }
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if MEMLENS_HAS_MULTIPLE_INTERPRETERS_SLOT
    /* Isolated subinterpreters refuse it before module_exec runs; the
     * others are refused there. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static PyModuleDef memlens_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "memlens._core",
    .m_doc =
        "The C core of memlens: readings, peaks, sampler, recorder, hooks.",
    .m_size = sizeof(memlens_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&memlens_module_def);
}
