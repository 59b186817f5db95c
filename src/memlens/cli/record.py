"""What ``memlens run`` records: the data file and the ``profile`` builtin.

The samples are written by the native recorder (``_core.Recorder``: a
thread without the GIL, one write per sample). This module opens the file,
writes the CMDLINE line and, through the ``profile`` builtin, one FUNC line
per call of a decorated function, written as the call ends.
"""

import itertools
import os
import re
import threading
import time

from memlens import _core
from memlens._report import mib
from memlens._wrap import wrap

_SPACE = re.compile(r"\s+")


def open_output(path=None):
    """(path, fd) of a new data file: `path`, truncated, or else
    ``memlens_YYYYMMDDhhmmss.dat`` in the current directory (``-2``,
    ``-3``... appended when a run of the same second has it). OSError
    when it cannot be created."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    if path is not None:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "is a directory", path)
        return path, os.open(path, flags | os.O_TRUNC, 0o644)
    stem = "memlens_" + time.strftime("%Y%m%d%H%M%S")
    for n in range(1, 1000):
        name = f"{stem}.dat" if n == 1 else f"{stem}-{n}.dat"
        try:
            return name, os.open(name, flags | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
    raise FileExistsError(17, "too many data files of the same second",
                          f"{stem}.dat")


def span_name(func):
    """module.qualname, with no blank (mprof splits lines on spaces)."""
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or getattr(
        func, "__name__", repr(func))
    return _SPACE.sub("_", f"{module}.{name}")


class RunProfile:
    """The ``profile`` builtin under ``memlens run``.

    Each call of a decorated function becomes a FUNC line (its name, the
    memory and the time at its start and end, its depth among decorated
    calls in the thread), written when the call ends, so that a run killed
    later keeps it; calls still open when the run is cut short (SIGTERM)
    are written by end_open_spans(). With a LineProfiler (``--line``), the function is also
    profiled line by line. ``@profile(precision=...)`` is accepted as with
    memory_profiler; the options of the command line win.
    """

    def __init__(self, recorder, line_profiler=None):
        self.recorder = recorder
        self.line_profiler = line_profiler
        self._depth = threading.local()
        self._open = {}  # key -> (name, begin) of the calls under way
        self._keys = itertools.count()

    def __call__(self, func=None, **options):
        if func is None:
            return self
        if not callable(func):
            raise TypeError(f"profile() decorates functions, not "
                            f"{type(func).__name__}")
        target = func
        if self.line_profiler is not None:
            target = self.line_profiler(func)
        # A generator's span runs from the first next() to the end.
        return wrap(func, self._enter, self._leave, span_name(func), target)

    # A failure here must never reach the program: the span is dropped.
    def _enter(self, name):
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        try:
            mem, when = self.recorder.mark()
        except Exception:
            return None
        key = next(self._keys)
        self._open[key] = name, (mem, when, depth)
        return key

    def _leave(self, key):
        self._depth.n -= 1
        if key is None:
            return
        opened = self._open.pop(key, None)
        if opened is not None:
            self._end(*opened)

    def _end(self, name, begin):
        try:
            mem, when = self.recorder.mark()
        except Exception:
            return
        mem0, start, depth = begin
        self.recorder.write(
            f"FUNC {name} {mib(mem0, 6)} {start:.6f} {mib(mem, 6)} {when:.6f} "
            f"{depth}\n".encode())

    def end_open_spans(self):
        """Writes the calls under way as ending now, outermost first."""
        opened = sorted(self._open.values(), key=lambda o: o[1][1:])
        self._open.clear()
        for name, begin in opened:
            self._end(name, begin)

    def print_stats(self, stream, precision):
        """The line tables of ``--line``, if any function was profiled."""
        profiler = self.line_profiler
        if profiler is not None and profiler.codes:
            profiler.print_stats(stream=stream, precision=precision)


def recorder(fd, interval, path, children=False, multiprocess=False,
             meter_fd=-1):
    """A native Recorder writing to `fd` (which it duplicates), the data
    file at the absolute `path`, where it is opened again if the program
    closes the duplicate; with a live meter on `meter_fd` unless -1. With
    `children`, the descendants are added to MEM and each gets its CHLD
    lines; with `multiprocess` alone, only the CHLD lines."""
    return _core.Recorder(fd, interval, children=children,
                          multiprocess=multiprocess, meter_fd=meter_fd,
                          path=path)


def mode_line(children, multiprocess):
    """The MODE line saying how descendants are followed (the flags, in
    mprof's words), or b"" when they are not."""
    flags = [name for name, on in (("include-children", children),
                                   ("multiprocess", multiprocess)) if on]
    return f"MODE {' '.join(flags)}\n".encode() if flags else b""
