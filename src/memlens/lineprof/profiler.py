"""Line-by-line memory profile (SPEC 4): @profile and LineProfiler.

The per-line work is C (csrc/lineprof.c); this module registers code objects,
turns the backend on and off, and prints memory_profiler's table.
"""

import dis
import functools
import html
import inspect
import linecache
import sys
import threading
import types
import weakref
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from memlens import _core
from memlens._checks import int_in_range
from memlens._npmem import numpy_hook_acquire, numpy_hook_release
from memlens._report import html_table, mib
from memlens._wrap import wrap
from memlens.lineprof import backends

__all__ = ["LineProfiler", "profile", "FunctionProfile", "LineRecord",
           "show_results"]

#: The most decimals of a MiB figure: a byte count divided by 2**20 ends
#: within 20 decimals, so more would only add zeros.
MAX_PRECISION = 20


def _check_precision(precision):
    int_in_range("precision", precision, 0, MAX_PRECISION)


# --------------------------------------------------------------------------
# The engine: one per process, shared by every LineProfiler
# --------------------------------------------------------------------------

def _last_line(code):
    lines = [line for _, line in dis.findlinestarts(code) if line]
    return max(lines, default=code.co_firstlineno)


class _Registration:
    """A code object registered with the C engine: how many living
    profilers hold it, and the functions seen running it (weakly: the
    profilers hold them)."""

    __slots__ = ("code", "users", "functions")

    def __init__(self, code):
        self.code = code
        self.users = 0
        self.functions = []  # weakref.ref to each function

    def add(self, func):
        if not any(ref() is func for ref in self.functions):
            self.functions = [ref for ref in self.functions
                              if ref() is not None]
            self.functions.append(weakref.ref(func))

    def live_functions(self):
        """The functions still alive, or None if it was registered as a
        bare code object (the backend finds its functions itself)."""
        if not self.functions:
            return None
        return [f for f in (ref() for ref in self.functions) if f is not None]


class _Engine:
    """Counts enablings; the first starts the backend, the last stops it.

    Holds each code object only while a living profiler does: a profiler's
    finalizer gives its codes back (``release``), and the last one out
    unregisters the code from the C engine and the backend, with its
    statistics. Enabling then works on what living profilers hold, never
    on everything registered before.
    """

    def __init__(self):
        self.lock = threading.RLock()
        # id(code) -> _Registration; the registration holds the code, so
        # the id stays its own.
        self.registry = {}
        self.count = 0
        self.backend = None
        # Set while this engine's lock is held in a method: a finalizer
        # that runs then (a garbage collection inside) leaves its codes in
        # `pending` for the holder to release when it is done.
        self.busy = 0
        self.pending = []

    def register(self, code, func=None, new_user=True):
        """Counts one more profiler holding `code` (with `new_user`), or
        only notes one more function running it."""
        with self.lock:
            self.busy += 1
            try:
                reg = self.registry.get(id(code))
                created = reg is None
                if created:
                    _core._line_add_code(code, _last_line(code))
                    reg = self.registry[id(code)] = _Registration(code)
                try:
                    if func is not None:
                        reg.add(func)
                    if self.backend is not None:
                        self.backend.add_function(code,
                                                  reg.live_functions())
                except BaseException:
                    if created:
                        self._unregister(code)
                    raise
                reg.users += bool(new_user)
            finally:
                self.busy -= 1
        self._drain()

    def release(self, codes):
        """A profiler holding `codes` is gone (its finalizer)."""
        self.pending.append(codes)
        self._drain()

    def _drain(self):
        # Whoever holds the lock drains after; a release made meanwhile
        # finds the lock free once that holder checked `pending`.
        while self.pending and self.lock.acquire(blocking=False):
            try:
                if self.busy:
                    return  # our own thread, inside a method
                self.busy += 1
                try:
                    while self.pending:
                        for code in self.pending.pop():
                            self._release_one(code)
                finally:
                    self.busy -= 1
            finally:
                self.lock.release()

    def _release_one(self, code):
        reg = self.registry.get(id(code))
        if reg is None or reg.code is not code:
            return
        reg.users -= 1
        if reg.users <= 0:
            self._unregister(code)

    def _unregister(self, code):
        del self.registry[id(code)]
        if self.backend is not None:
            self.backend.remove_function(code)
        backends.forget(code)
        _core._line_remove_code(code)

    def enable(self, alloc):
        with self.lock:
            self.busy += 1
            try:
                if self.count == 0:
                    backend = backends.choose()
                    _core._line_begin(alloc)
                    try:
                        backend.start([(reg.code, reg.live_functions())
                                       for reg in self.registry.values()])
                    except BaseException:
                        backend.stop()  # what it had installed before
                        _core._line_end(alloc)
                        raise
                    self.backend = backend
                else:
                    _core._line_begin(alloc)
                self.count += 1
                backend = self.backend
            finally:
                self.busy -= 1
        self._drain()
        backend.thread_on()

    def disable(self, alloc):
        with self.lock:
            backend = self.backend
        backend.thread_off()
        with self.lock:
            self.busy += 1
            try:
                self.count -= 1
                _core._line_end(alloc)
                if self.count == 0:
                    self.backend = None
                    backend.stop()
            finally:
                self.busy -= 1
        self._drain()

    @property
    def backend_name(self):
        return self.backend.name if self.backend else None


_ENGINE = _Engine()


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

@dataclass
class LineRecord:
    """One line of a profiled function. Sizes in bytes; None where the line
    never ran (or, for allocated/net, where alloc was off)."""

    lineno: int
    contents: str
    occurrences: int = 0
    mem_usage: Optional[int] = None
    increment: Optional[int] = None
    allocated: Optional[int] = None
    net: Optional[int] = None

    def to_dict(self):
        return asdict(self)


@dataclass
class FunctionProfile:
    """The table of one profiled function."""

    filename: str
    name: str
    first_line: int
    last_line: int
    alloc: bool
    lines: List[LineRecord] = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    def format(self, precision=1):
        return _format_table(self, precision)

    def __str__(self):
        return self.format()

    def _repr_html_(self):
        return (f"<p>Filename: {html.escape(self.filename)}</p>"
                + html_table(*_table_rows(self, 1)))


def _mib(nbytes, precision):
    """memory_profiler's number format, never '-0.0'."""
    return f"{mib(nbytes, precision, precision + 4)} MiB"


def _table_rows(fp, precision):
    header = ["Line #", "Mem usage", "Increment"]
    if fp.alloc:
        header += ["Allocated", "Net"]
    header += ["Occurrences", "Line Contents"]
    rows = []
    for rec in fp.lines:
        if rec.occurrences or rec.increment:
            row = [rec.lineno, _mib(rec.mem_usage or 0, precision),
                   _mib(rec.increment or 0, precision)]
            if fp.alloc:
                row += [_mib(rec.allocated or 0, precision),
                        _mib(rec.net or 0, precision)]
            row.append(rec.occurrences)
        else:
            row = [rec.lineno, "", ""] + (["", ""] if fp.alloc else []) + [""]
        row.append(rec.contents)
        rows.append(row)
    return header, rows


def _format_table(fp, precision=1):
    if fp.alloc:
        template = "{0:>6} {1:>12} {2:>12} {3:>12} {4:>12}  {5:>10}   {6}"
    else:
        template = "{0:>6} {1:>12} {2:>12}  {3:>10}   {4}"
    header, rows = _table_rows(fp, precision)
    head = template.format(*header)
    out = [f"Filename: {fp.filename}", "", head, "=" * len(head)]
    out += [template.format(*row).rstrip() for row in rows]
    return "\n".join(out) + "\n\n"


def _profiles(codes, alloc):
    """FunctionProfile of each code object in `codes`, from the C stats."""
    stats = {id(code): rows for code, rows in _core._line_results()}
    result = []
    for code in codes:
        rows = {row[0]: row for row in stats.get(id(code), [])}
        first, last = code.co_firstlineno, _last_line(code)
        if rows:
            last = max(last, max(rows))
        source = linecache.getlines(code.co_filename)
        fp = FunctionProfile(code.co_filename,
                             getattr(code, "co_qualname", code.co_name),
                             first, last, alloc)
        for lineno in range(first, last + 1):
            text = source[lineno - 1].rstrip("\n") if lineno <= len(
                source) else ""
            rec = LineRecord(lineno, text)
            row = rows.get(lineno)
            if row is not None:
                _, hits, increment, mem_usage, allocated, freed = row
                rec.occurrences = hits
                rec.increment = increment
                rec.mem_usage = mem_usage
                if alloc:
                    rec.allocated = allocated
                    rec.net = allocated - freed
            fp.lines.append(rec)
        result.append(fp)
    return result


def show_results(profiler, stream=None, precision=1):
    """Print every table of `profiler` (memory_profiler's name)."""
    profiler.print_stats(stream=stream, precision=precision)


# --------------------------------------------------------------------------
# LineProfiler
# --------------------------------------------------------------------------

def _code_of(func):
    """The code object to profile for `func` and the function that runs it
    (None for a code object), or TypeError."""
    if isinstance(func, types.CodeType):
        return func, None
    for candidate in (func, getattr(func, "__func__", None)):
        code = getattr(candidate, "__code__", None)
        if isinstance(code, types.CodeType):
            if not isinstance(candidate, types.FunctionType):
                candidate = None
            return code, candidate
    raise TypeError(f"cannot profile {func!r}: not a Python function")


class LineProfiler:
    """Line-by-line memory of chosen functions.

    ``add_function(f)`` registers a function (methods, static and class
    methods too); ``enable()``/``disable()`` or ``with profiler:`` switch
    the tracing on and off; calling the profiler on a function returns a
    wrapper that traces each call. ``results`` holds the tables as data,
    ``print_stats()`` prints them. With ``alloc=True`` two more columns come
    from the allocator hooks: ``Allocated`` (bytes handed out on the line,
    NumPy arrays included) and ``Net`` (allocated minus freed).
    """

    def __init__(self, *functions, alloc=False, include_children=False):
        self.alloc = bool(alloc)
        self.include_children = bool(include_children)
        self.functions = []
        self.codes = []
        self._enabled = 0
        self._lock = threading.Lock()
        # When the profiler goes, the engine lets go of its code objects
        # (and so of every function, copy and figure of them that no other
        # profiler holds). The finalizer holds the list, not the profiler.
        finalizer = weakref.finalize(self, _ENGINE.release, self.codes)
        finalizer.atexit = False
        for func in functions:
            self.add_function(func)

    def add_function(self, func):
        code, function = _code_of(func)
        if not any(known is code for known in self.codes):
            _ENGINE.register(code, function)
            self.codes.append(code)  # given back by the finalizer
            # Statistics live per code object in the C engine: a profiler
            # starts its functions from zero.
            _core._line_clear(code)
            self.functions.append(func)
        elif function is not None and not any(
                known is func for known in self.functions):
            # Another function running the same code (a closure made
            # again): the instrument backend swaps its code too.
            _ENGINE.register(code, function, new_user=False)
            self.functions.append(func)

    # Switching on and off runs quiet (_core._quietly, given the plain
    # function: a bound method would be made before the quiet): what it
    # allocates is memlens's own, and must not count on the line of a
    # profiled function that called another one.
    def enable(self):
        _core._quietly(LineProfiler._enable, self)

    def disable(self):
        _core._quietly(LineProfiler._disable, self)

    def _enable(self):
        _ENGINE.enable(self.alloc)
        with self._lock:
            self._enabled += 1
            if self.include_children:
                _core._line_children(True)
        if self.alloc:
            numpy_hook_acquire()

    def _disable(self):
        with self._lock:
            if self._enabled == 0:
                raise RuntimeError("LineProfiler.disable() without enable()")
            self._enabled -= 1
            if self.include_children and self._enabled == 0:
                _core._line_children(False)
        if self.alloc:
            numpy_hook_release()
        _ENGINE.disable(self.alloc)

    # memory_profiler's names
    enable_by_count = enable
    disable_by_count = disable

    def __enter__(self):
        self.enable()
        return self

    def __exit__(self, *exc):
        self.disable()
        return False

    def __call__(self, func):
        self.add_function(func)
        return self.wrap_function(func)

    def wrap_function(self, func, after=None):
        """A wrapper that traces each call of `func` (each resumption of a
        generator or coroutine); `after()` runs when the outermost call
        ends, exception or not."""
        depth = threading.local()

        # The glue around each call runs quiet, entered straight from the
        # wrapper: what it allocates (the table printed after a decorated
        # function too, and under a trace function the frame object of each
        # call it makes) is memlens's own, and must not count on the line of
        # a profiled caller.
        quietly = _core._quietly
        on, off = self._enable, self._disable

        def enter(trace=True):
            depth.n = getattr(depth, "n", 0) + 1
            if trace:
                on()
            return leave

        def leave(trace=True):
            if trace:
                off()
            depth.n -= 1
            if depth.n == 0 and after is not None:
                after()

        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                # Traced only while the generator runs, not while it waits;
                # made while enabled, so that it runs the code being traced.
                quietly(on)
                try:
                    gen = func(*args, **kwargs)
                finally:
                    quietly(off)
                quietly(enter, False)
                try:
                    value, error = None, None
                    while True:
                        quietly(on)
                        try:
                            if error is None:
                                item = gen.send(value)
                            else:
                                item = gen.throw(error)
                        except StopIteration as stop:
                            return stop.value
                        finally:
                            quietly(off)
                        value, error = None, None
                        try:
                            value = yield item
                        except GeneratorExit:
                            gen.close()
                            raise
                        except BaseException as exc:
                            error = exc
                finally:
                    quietly(leave, False)
        else:
            # quietly(enter) before each call returns `leave`; quietly(leave)
            # after it.
            wrapper = wrap(func, quietly, quietly, enter)
        wrapper.__memlens_profiler__ = self
        return wrapper

    @property
    def results(self):
        """One FunctionProfile per registered function, as data."""
        return _profiles(self.codes, self.alloc)

    def print_stats(self, stream=None, precision=1):
        stream = stream if stream is not None else sys.stdout
        for fp in self.results:
            stream.write(fp.format(precision))
        stream.flush()

    def clear(self):
        """Forget what was measured for this profiler's functions."""
        for code in self.codes:
            _core._line_clear(code)


# --------------------------------------------------------------------------
# @profile
# --------------------------------------------------------------------------

def profile(func=None, *, precision=1, stream=None, alloc=False):
    """Decorator: print the line-by-line table when each outermost call of
    the function returns (or raises). ``@profile``, ``@profile()`` and
    ``@profile(precision=2, stream=f, alloc=True)`` all work."""
    if func is None:
        return functools.partial(profile, precision=precision, stream=stream,
                                 alloc=alloc)
    if not callable(func):
        raise TypeError(f"profile() decorates functions, not "
                        f"{type(func).__name__}")
    _check_precision(precision)
    if stream is not None and not callable(getattr(stream, "write", None)):
        raise TypeError(f"stream must have a write() method, not "
                        f"{type(stream).__name__}")
    profiler = LineProfiler(alloc=alloc)
    profiler.add_function(func)
    return profiler.wrap_function(
        func, after=lambda: profiler.print_stats(stream, precision))
