"""Line-by-line memory profile (SPEC 4): @profile and LineProfiler.

The per-line work is C (csrc/lineprof.c); this module registers code objects,
turns the backend on and off, and prints memory_profiler's table.
"""

import dis
import functools
import html
import inspect
import linecache
import logging
import sys
import threading
import types
import weakref
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from memlens import _core
from memlens._npmem import numpy_hook_acquire, numpy_hook_release
from memlens._report import html_table, mib
from memlens._wrap import wrap
from memlens.lineprof import backends
from memlens.lineprof.options import (MAX_PRECISION, backend_alloc,
                                      check_precision, check_stream)

__all__ = ["LineProfiler", "profile", "FunctionProfile", "LineRecord",
           "show_results", "LogFile", "MAX_PRECISION"]


# --------------------------------------------------------------------------
# The engine: one per process, shared by every LineProfiler
# --------------------------------------------------------------------------

def _last_line(code):
    lines = [line for _, line in dis.findlinestarts(code) if line]
    return max(lines, default=code.co_firstlineno)


def _nested_codes(code):
    """The code objects defined inside `code`, at any depth: its nested
    functions, lambdas, classes, generator expressions and (before 3.12,
    PEP 709) comprehensions. Their lines are profiled with it, and show in
    its table, as memory_profiler shows them."""
    found, todo = [], [code]
    while todo:
        for const in todo.pop().co_consts:
            if isinstance(const, types.CodeType) and not any(
                    known is const for known in found):
                found.append(const)
                todo.append(const)
    return found


class _Registration:
    """A code object registered with the C engine: how many living
    profilers hold it, the functions seen running it (weakly: the
    profilers hold them), and whether it was registered as defined inside
    a profiled function (`nested`: its functions are made by running the
    outer code, none to look for)."""

    __slots__ = ("code", "users", "functions", "nested")

    def __init__(self, code):
        self.code = code
        self.users = 0
        self.functions = []  # weakref.ref to each function
        self.nested = False

    def add(self, func):
        if not any(ref() is func for ref in self.functions):
            self.functions = [ref for ref in self.functions
                              if ref() is not None]
            self.functions.append(weakref.ref(func))

    def live_functions(self):
        """The functions still alive, or None if it was registered as a
        bare code object (the backend finds its functions itself); none
        for a nested code object seen running no function of its own."""
        if not self.functions:
            return [] if self.nested else None
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

    def register(self, code, func=None, new_user=True, nested=False):
        """Counts one more profiler holding `code` (with `new_user`), or
        only notes one more function running it. A `nested` code object
        is one defined inside a profiled function: registered before the
        function's own, so that the instrument backend's copy of the outer
        code makes functions of the instrumented inner copies."""
        with self.lock:
            self.busy += 1
            try:
                reg = self.registry.get(id(code))
                created = reg is None
                if created:
                    _core._line_add_code(code, _last_line(code))
                    reg = self.registry[id(code)] = _Registration(code)
                reg.nested = reg.nested or nested
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


def _table_pieces(fp, precision=1):
    """The table as memory_profiler writes it, a piece per write: the
    file name, the header, its rule, each row, the blank line after. A
    stream that logs (LogFile) makes a record of each."""
    if fp.alloc:
        template = "{0:>6} {1:>12} {2:>12} {3:>12} {4:>12}  {5:>10}   {6}"
    else:
        template = "{0:>6} {1:>12} {2:>12}  {3:>10}   {4}"
    header, rows = _table_rows(fp, precision)
    head = template.format(*header)
    out = [f"Filename: {fp.filename}\n\n", head + "\n",
           "=" * len(head) + "\n"]
    out += [template.format(*row).rstrip() + "\n" for row in rows]
    out.append("\n")
    return out


def _format_table(fp, precision=1):
    return "".join(_table_pieces(fp, precision))


def write_tables(profiles, stream=None, precision=1):
    """Writes each FunctionProfile of `profiles` to `stream` (default
    sys.stdout), a write per line, then flushes it."""
    check_precision(precision)
    stream = stream if stream is not None else sys.stdout
    for fp in profiles:
        for piece in _table_pieces(fp, precision):
            stream.write(piece)
    stream.flush()


def _merged_rows(stats, codes):
    """{line: (line, hits, increment, mem_usage, allocated, freed)} of the
    code objects `codes` together: a line run by several of them (a
    comprehension's line, run by the function and by the comprehension's
    own code) adds their figures, and keeps the highest memory."""
    merged = {}
    for code in codes:
        for row in stats.get(id(code), []):
            old = merged.get(row[0])
            if old is not None:
                row = (row[0], old[1] + row[1], old[2] + row[2],
                       max(old[3], row[3]), old[4] + row[4], old[5] + row[5])
            merged[row[0]] = row
    return merged


def _profiles(codes, alloc):
    """FunctionProfile of each code object in `codes`, from the C stats.
    The code objects defined inside each (its nested functions, lambdas,
    comprehensions...) show in its table, unless they are in `codes`
    themselves, as memory_profiler shows them."""
    stats = {id(code): rows for code, rows in _core._line_results()}
    result = []
    for code in codes:
        tree = [code] + [sub for sub in _nested_codes(code)
                         if not any(sub is top for top in codes)]
        rows = _merged_rows(stats, tree)
        first = code.co_firstlineno
        last = max(_last_line(sub) for sub in tree)
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
    """Prints every table of `profiler` (a LineProfiler, or the
    ``profile`` builtin of ``memlens run --line``) to `stream` (default
    sys.stdout) with `precision` decimals: memory_profiler's
    ``show_results``."""
    profiler.print_stats(stream=stream, precision=precision)


def _increment_above_zero(text):
    """Whether `text` is a table row whose Increment (the second MiB
    figure) is above zero."""
    parts = text.split("MiB")
    if len(parts) < 3:
        return False
    try:
        return float(parts[1]) > 0
    except ValueError:
        return False  # "MiB" in a line of source, not a figure


class LogFile:
    """A file-like object that sends what is written to it to the
    ``logging`` module, as memory_profiler's ``LogFile``: each write
    becomes one record of the logger `name` (the root logger by default),
    at INFO level, so that ``profile(stream=LogFile("memory_profile_log"))``
    logs each line of the tables. With `reportIncrementFlag`, only the rows
    whose Increment is above zero are logged, with each table's
    ``Filename:`` and header lines."""

    def __init__(self, name=None, reportIncrementFlag=False):
        self.logger = logging.getLogger(name)
        self.reportIncrementFlag = reportIncrementFlag

    def write(self, msg, level=logging.INFO):
        if self.reportIncrementFlag and not (
                _increment_above_zero(msg) or "Filename:" in msg
                or "Line Contents" in msg):
            return
        self.logger.log(level, msg)

    def flush(self):
        for handler in self.logger.handlers:
            handler.flush()


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
    NumPy arrays included) and ``Net`` (allocated minus freed); so does
    memory_profiler's ``backend="tracemalloc"``, while its other backends
    (``psutil``...) give the RSS columns alone.
    """

    def __init__(self, *functions, alloc=False, include_children=False,
                 backend=None):
        self.alloc = bool(alloc) or backend_alloc(backend)
        self.include_children = bool(include_children)
        self.functions = []
        self.codes = []  # one table each
        # Every code object registered: those of `codes` and the ones
        # defined inside them.
        self._held = []
        self._enabled = 0
        self._lock = threading.Lock()
        # When the profiler goes, the engine lets go of its code objects
        # (and so of every function, copy and figure of them that no other
        # profiler holds). The finalizer holds the list, not the profiler.
        finalizer = weakref.finalize(self, _ENGINE.release, self._held)
        finalizer.atexit = False
        for func in functions:
            self.add_function(func)

    def add_function(self, func):
        """Profiles `func` (a function, method, static or class method, or
        a code object), with the functions, lambdas and comprehensions
        defined inside it: their lines show in its table. A function
        defined inside one added before shows in that one's table, not in
        a table of its own."""
        code, function = _code_of(func)
        code = backends.original_code(code)
        if not any(known is code for known in self._held):
            # Inner code objects first: see _Engine.register.
            for sub in reversed(_nested_codes(code)):
                if not any(known is sub for known in self._held):
                    _ENGINE.register(sub, nested=True)
                    self._held.append(sub)  # given back by the finalizer
                    _core._line_clear(sub)
            _ENGINE.register(code, function)
            self._held.append(code)
            self.codes.append(code)
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
        """Writes the tables to `stream` (default sys.stdout), a write per
        line, so that a LogFile logs each."""
        write_tables(self.results, stream, precision)

    def clear(self):
        """Forget what was measured for this profiler's functions."""
        for code in self._held:
            _core._line_clear(code)


# --------------------------------------------------------------------------
# @profile
# --------------------------------------------------------------------------

def profile(func=None, stream=None, precision=1, backend=None, *,
            alloc=False):
    """Decorator: print the line-by-line table when each outermost call of
    the function returns (or raises). ``@profile``, ``@profile()`` and
    ``@profile(precision=2, stream=f, alloc=True)`` all work, and so do
    memory_profiler's arguments, in its order: ``backend="tracemalloc"``
    adds the Allocated and Net columns (as ``alloc=True``), ``"psutil"``,
    ``"psutil_pss"``, ``"psutil_uss"`` and ``"posix"`` give the RSS
    columns; another name raises KeyError, as memory_profiler does."""
    alloc = bool(alloc) or backend_alloc(backend)
    if func is None:
        return functools.partial(profile, precision=precision, stream=stream,
                                 alloc=alloc)
    if not callable(func):
        raise TypeError(f"profile() decorates functions, not "
                        f"{type(func).__name__}")
    check_precision(precision)
    check_stream(stream)
    profiler = LineProfiler(alloc=alloc)
    profiler.add_function(func)
    return profiler.wrap_function(
        func, after=lambda: profiler.print_stats(stream, precision))
