"""The one place that chooses the line tracer's event backend.

- ``settrace``: the C trace function (PyEval_SetTrace), per thread; the only
  choice before Python 3.12, and still available after.
- ``instrument`` (Python 3.11): each profiled function runs a copy of its
  code that calls memlens's C hooks at each line start (see
  ``instrument``), in every thread; tracing stays off, so the rest of the
  program and the function's own instructions stay specialized.
- ``monitoring``: sys.monitoring (PEP 669, Python 3.12+), with LINE events
  switched on for the profiled code objects only, in every thread.

``auto`` (the default) takes ``monitoring`` where it exists, ``instrument``
on 3.11 and ``settrace`` before. The
MEMLENS_LINE_BACKEND environment variable forces one; asking for a backend
that cannot load raises instead of silently falling back.
"""

import os
import sys
import threading
import types
import weakref

from memlens import _core

ENV = "MEMLENS_LINE_BACKEND"
NAMES = ("auto", "settrace", "instrument", "monitoring")

HAS_MONITORING = sys.version_info >= (3, 12)
HAS_INSTRUMENT = sys.version_info[:2] == (3, 11)


class SettraceBackend:
    """The C trace function, installed in each thread that enables."""

    name = "settrace"

    def __init__(self):
        self._local = threading.local()

    def start(self, functions):
        pass

    def add_function(self, code, functions):
        pass

    def remove_function(self, code):
        pass

    def stop(self):
        pass

    def thread_on(self):
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            # Someone else's trace function is put back when we are done.
            self._local.previous = sys.gettrace()
            _core._line_settrace(True)
        self._local.depth = depth + 1

    def thread_off(self):
        self._local.depth -= 1
        if self._local.depth == 0:
            _core._line_settrace(False)
            previous, self._local.previous = self._local.previous, None
            if previous is not None:
                sys.settrace(previous)


class MonitoringBackend:
    """sys.monitoring: C callbacks on the profiled code objects only."""

    name = "monitoring"
    TOOL_NAME = "memlens"
    # Tool ids 0-2 are the debugger's, coverage's and the profiler's by
    # convention; take a free one, those last.
    TOOL_IDS = (4, 3, 5, 2)

    def __init__(self):
        self.tool = None
        self.codes = {}  # id(code) -> code, with local events on

    def _local_events(self):
        E = sys.monitoring.events
        return E.LINE | E.PY_START | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD

    def start(self, functions):
        M = sys.monitoring
        for tool in self.TOOL_IDS:
            if M.get_tool(tool) is None:
                break
        else:
            raise RuntimeError("memlens: every sys.monitoring tool id is "
                               "taken; set MEMLENS_LINE_BACKEND=settrace")
        M.use_tool_id(tool, self.TOOL_NAME)
        self.tool = tool
        E = M.events
        callbacks = {
            E.LINE: _core._line_mon_line,
            E.PY_START: _core._line_mon_start,
            E.PY_RESUME: _core._line_mon_resume,
            E.PY_THROW: _core._line_mon_resume,
            E.PY_RETURN: _core._line_mon_leave,
            E.PY_YIELD: _core._line_mon_leave,
            E.PY_UNWIND: _core._line_mon_leave,
        }
        for event, callback in callbacks.items():
            M.register_callback(tool, event, callback)
        # Unwinding and throwing cannot be asked per code object.
        M.set_events(tool, E.PY_UNWIND | E.PY_THROW)
        for code, funcs in functions:
            self.add_function(code, funcs)

    def add_function(self, code, functions):
        if self.tool is not None:
            sys.monitoring.set_local_events(self.tool, code,
                                            self._local_events())
            self.codes[id(code)] = code

    def remove_function(self, code):
        if self.codes.pop(id(code), None) is not None:
            sys.monitoring.set_local_events(self.tool, code, 0)

    def stop(self):
        M = sys.monitoring
        tool, self.tool = self.tool, None
        if tool is None:
            return
        M.set_events(tool, 0)
        for code in self.codes.values():
            M.set_local_events(tool, code, 0)
        self.codes = {}
        for event in (M.events.LINE, M.events.PY_START, M.events.PY_RESUME,
                      M.events.PY_THROW, M.events.PY_RETURN,
                      M.events.PY_YIELD, M.events.PY_UNWIND):
            M.register_callback(tool, event, None)
        M.free_tool_id(tool)

    def thread_on(self):
        pass

    def thread_off(self):
        pass


class InstrumentBackend:
    """Profiled functions run an instrumented copy of their code."""

    name = "instrument"

    def __init__(self):
        # Imported here, before the engine installs its allocator hooks:
        # a first import is not something to profile.
        import memlens.lineprof.instrument  # noqa: F401
        # id(code) -> (original code, instrumented code, [weakref.ref to
        # each function running the copy]); the function is not kept
        # alive for its code to be put back.
        self.swapped = {}

    def start(self, functions):
        for code, funcs in functions:
            self.add_function(code, funcs)

    def add_function(self, code, functions):
        copy = _instrumented(code)
        _, _, refs = self.swapped.setdefault(id(code), (code, copy, []))
        if functions is None:
            functions = _functions_running(code)
        for func in functions:
            if func.__code__ is code:
                func.__code__ = copy
                refs.append(weakref.ref(func))

    def remove_function(self, code):
        entry = self.swapped.pop(id(code), None)
        if entry is not None:
            _put_back(*entry)

    def stop(self):
        swapped, self.swapped = self.swapped, {}
        for entry in swapped.values():
            _put_back(*entry)

    def thread_on(self):
        pass

    def thread_off(self):
        pass


def _put_back(code, copy, refs):
    for ref in refs:
        func = ref()
        # Unless someone gave the function other code meanwhile.
        if func is not None and func.__code__ is copy:
            func.__code__ = code


def _functions_running(code):
    """The functions whose code is `code` (a code object was registered
    without its function): found once, through the garbage collector."""
    import gc
    import types
    return [obj for obj in gc.get_referrers(code)
            if isinstance(obj, types.FunctionType) and obj.__code__ is code]


#: Instrumented copy of each registered code object, made once: (code,
#: copy) by id(code); the entry keeps the code alive, so the id stays its
#: own, until the engine unregisters the code (forget). _ORIGINALS maps
#: back: (copy, code) by id(copy).
_COPIES = {}
_ORIGINALS = {}


def forget(code):
    """Drops the instrumented copy of `code` (unregistered)."""
    entry = _COPIES.get(id(code))
    if entry is not None and entry[0] is code:
        del _COPIES[id(code)]
        _ORIGINALS.pop(id(entry[1]), None)


def original_code(code):
    """The code object whose instrumented copy `code` is, else `code`: a
    function made while the copy of the code around it ran runs a copy of
    its own."""
    entry = _ORIGINALS.get(id(code))
    return entry[1] if entry is not None and entry[0] is code else code


def _instrumented(code):
    """The instrumented copy of `code`, made once. Every code object
    defined inside `code` is registered with it (the engine registers them
    together), and the copy holds their copies in their place: the
    functions, lambdas and comprehensions it makes run instrumented."""
    copy = _COPIES.get(id(code))
    if copy is None:
        from memlens.lineprof.instrument import instrument
        inner = {id(const): _instrumented(const) for const in code.co_consts
                 if isinstance(const, types.CodeType)}
        try:
            copy = (code, instrument(code, inner))
        except Exception as exc:
            raise RuntimeError(
                f"memlens: cannot instrument {code.co_qualname} for the line "
                f"profile ({type(exc).__name__}: {exc}); "
                f"{ENV}=settrace profiles it with the trace function "
                f"instead") from exc
        _COPIES[id(code)] = copy
        _ORIGINALS[id(copy[1])] = (copy[1], code)
    return copy[1]


def choose(name=None):
    """The backend asked by `name` or the environment, or the best one."""
    name = name or os.environ.get(ENV) or "auto"
    if name not in NAMES:
        raise ValueError(f"{ENV}={name!r}: must be one of {', '.join(NAMES)}")
    if name == "auto":
        name = ("monitoring" if HAS_MONITORING else
                "instrument" if HAS_INSTRUMENT else "settrace")
    if name == "monitoring":
        if not HAS_MONITORING:
            raise RuntimeError(
                f"the 'monitoring' line backend needs Python 3.12 or newer "
                f"(this is {sys.version.split()[0]}); use 'settrace'")
        return MonitoringBackend()
    if name == "instrument":
        if not HAS_INSTRUMENT:
            raise RuntimeError(
                f"the 'instrument' line backend is for Python 3.11 (this is "
                f"{sys.version.split()[0]}); use 'auto'")
        return InstrumentBackend()
    return SettraceBackend()
