"""The ``profile`` builtin of ``memlens run`` (and ``python -m memlens``):
one profiler object for the whole program, as under ``python -m
memory_profiler``.

- ``@profile``, ``@profile()``, ``@profile(precision=3)`` and
  ``@profile(stream=f, precision=3, backend="tracemalloc")`` decorate a
  function; each call of it is a FUNC span of the data file and, with
  ``--line``, is profiled line by line;
- ``profile.add_function(f)`` profiles `f` without wrapping it, while the
  profile is on: ``with profile:`` or between ``profile.enable_by_count()``
  and ``profile.disable_by_count()`` (counted: the last disable turns it
  off; one too many does nothing, as with memory_profiler);
- the tables are printed when the program ends (``print_stats``), or when
  it calls ``show_results(profile)``; a function's table goes to the
  stream, with the precision, its decorator gave, if it gave them.

Without ``--line`` the same calls are accepted, and profile no line: a
program runs unchanged either way. The profiler is loaded only with
``--line``.
"""

import functools
import sys
import threading
import types

from memlens.lineprof.options import (backend_alloc, check_precision,
                                      check_stream)

__all__ = ["ProfileBuiltin"]


class ProfileBuiltin:
    """The ``profile`` builtin. `spans` (or None) decorates a function
    with the run's FUNC spans; `line` profiles line by line, with the
    Allocated and Net columns for every function under `alloc`."""

    def __init__(self, spans=None, line=False, alloc=False):
        self._spans = spans
        self._line = bool(line)
        self._alloc = bool(alloc)
        self._lock = threading.Lock()
        self._profilers = {}  # alloc -> LineProfiler, made when needed
        # (profiler, code, stream, precision) of each table, in the order
        # the functions were added.
        self._tables = []
        self._count = 0  # enable_by_count() calls not yet disabled

    def _profiler(self, alloc):
        with self._lock:
            profiler = self._profilers.get(alloc)
            if profiler is None:
                from memlens.lineprof.profiler import LineProfiler

                profiler = self._profilers[alloc] = LineProfiler(alloc=alloc)
            return profiler

    def _add(self, func, alloc, stream=None, precision=None):
        """Adds `func` to the line profiler of `alloc`; the profiler."""
        profiler = self._profiler(alloc)
        with self._lock:
            before = len(profiler.codes)
            profiler.add_function(func)
            if len(profiler.codes) > before:  # else no table of its own
                self._tables.append((profiler, profiler.codes[-1], stream,
                                     precision))
        return profiler

    def __call__(self, func=None, precision=None, *, stream=None,
                 backend=None, alloc=False):
        """Decorates `func`; without it, returns the decorator with these
        options. `precision` and `stream` are those of the function's
        table; ``backend="tracemalloc"`` (or ``alloc=True``) adds the
        Allocated and Net columns, memory_profiler's other backends give
        the RSS columns; another name raises KeyError."""
        if precision is not None:
            check_precision(precision)
        check_stream(stream)
        alloc = self._alloc or bool(alloc) or backend_alloc(backend)
        if func is None:
            return functools.partial(self, precision=precision,
                                     stream=stream, alloc=alloc)
        if not callable(func):
            raise TypeError(f"profile() decorates functions, not "
                            f"{type(func).__name__}")
        target = func
        if self._line:
            target = self._add(func, alloc, stream,
                               precision).wrap_function(func)
        if self._spans is not None:
            target = self._spans(target)
        return target

    def add_function(self, func):
        """Profiles `func` line by line (with ``--line``) whenever the
        profile is on, without wrapping it."""
        if self._line:
            self._add(func, self._alloc)
        elif not isinstance(func, types.CodeType) and not any(
                isinstance(getattr(f, "__code__", None), types.CodeType)
                for f in (func, getattr(func, "__func__", None))):
            raise TypeError(f"cannot profile {func!r}: not a Python "
                            f"function")

    def wrap_function(self, func):
        """A wrapper of `func` that turns the profile on for each call."""
        if self._line:
            return self._add(func, self._alloc).wrap_function(func)
        return func

    def enable_by_count(self):
        """Turns the profile on for the functions added (counted)."""
        if self._line:
            self._profiler(self._alloc).enable()
        with self._lock:
            self._count += 1

    def disable_by_count(self):
        """The matching end of enable_by_count(); nothing if none is on."""
        with self._lock:
            if self._count == 0:
                return
            self._count -= 1
        if self._line:
            self._profiler(self._alloc).disable()

    enable = enable_by_count
    disable = disable_by_count

    def __enter__(self):
        self.enable_by_count()
        return self

    def __exit__(self, *exc):
        self.disable_by_count()
        return False

    def runctx(self, cmd, globals, locals):
        """Runs the statement `cmd` with the profile on."""
        self.enable_by_count()
        try:
            exec(cmd, globals, locals)
        finally:
            self.disable_by_count()
        return self

    def print_stats(self, stream=None, precision=None):
        """Writes the tables: each to the stream its decorator gave, else
        to `stream` (default sys.stdout); with the precision its
        decorator gave, else `precision` (default 1). A stream of the
        program's that is closed by now gets none: its tables go to
        `stream` instead."""
        if precision is not None:
            check_precision(precision)
        with self._lock:
            tables = list(self._tables)
        if not tables:
            return
        from memlens.lineprof.profiler import write_tables

        results = {}
        for profiler in set(t[0] for t in tables):
            for code, fp in zip(profiler.codes, profiler.results):
                results[id(profiler), id(code)] = fp
        default = stream if stream is not None else sys.stdout
        for profiler, code, own_stream, own_precision in tables:
            fp = results[id(profiler), id(code)]
            digits = (own_precision if own_precision is not None
                      else precision if precision is not None else 1)
            if own_stream is not None:
                try:
                    write_tables([fp], own_stream, digits)
                    continue
                except (ValueError, OSError):
                    pass  # closed
            write_tables([fp], default, digits)

    def end_open_spans(self):
        """Writes the FUNC spans of the calls under way (SIGTERM)."""
        if self._spans is not None:
            self._spans.end_open_spans()
