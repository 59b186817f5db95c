"""measure(): the seed of every report (SPEC 2).

One measurement is an exact peak window (C), RSS at both ends (C), the
allocator-hook counters (C, installed only while a measurement is open),
wall and CPU time. This module only orders those calls and formats.
"""

import functools
import os
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Optional

from memlens import _core
from memlens._readings import peak as _peak_window
from memlens._report import mib
from memlens._wrap import wrap

__all__ = ["measure", "Measurement"]

#: How many measurements a decorated function keeps (newest last).
HISTORY = 100


@dataclass
class Measurement:
    """What happened to memory inside one measured block.

    Sizes are bytes. ``peak`` is the exact highest RSS inside the block and
    ``peak_delta`` how far it rose above ``rss_start``. ``allocated`` and
    ``freed`` are the bytes the Python allocators handed out and took back
    inside the block, all threads included; ``freed`` counts blocks that were
    handed out while a measurement was open (the size of an older block is
    not known to the hooks). Fields are None until the block ends.
    """

    label: Optional[str] = None
    rss_start: Optional[int] = None
    rss_end: Optional[int] = None
    delta: Optional[int] = None
    peak: Optional[int] = None
    peak_delta: Optional[int] = None
    elapsed: Optional[float] = None
    cpu: Optional[float] = None
    allocated: Optional[int] = None
    freed: Optional[int] = None
    source: Optional[str] = None

    @property
    def done(self):
        return self.rss_end is not None

    def to_dict(self):
        return asdict(self)

    def __str__(self):
        prefix = f"{self.label}: " if self.label else ""
        if not self.done:
            return f"{prefix}measuring"
        return (
            f"{prefix}used {mib(self.delta)} MiB RAM (peaked "
            f"{mib(self.peak_delta)} MiB above start) in {self.elapsed:.2f} s, "
            f"total RAM usage {mib(self.rss_end)} MiB"
        )


class _Open:
    """One measurement in progress."""

    __slots__ = ("result", "window", "t0", "c0", "a0", "f0")

    def __init__(self, label):
        self.result = Measurement(label=label)
        _core._hooks_acquire()
        try:
            self.window = _peak_window()
            self.window.__enter__()
        except BaseException:
            _core._hooks_release()
            raise
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        # Counters last: the bookkeeping above is not the block's.
        self.a0, self.f0, _ = _core.alloc_counters()

    def close(self):
        allocated, freed, _ = _core.alloc_counters()
        elapsed = time.perf_counter() - self.t0
        cpu = time.process_time() - self.c0
        try:
            self.window.__exit__(None, None, None)
        finally:
            _core._hooks_release()
        w, m = self.window, self.result
        m.rss_start, m.rss_end, m.delta = w.start, w.end, w.delta
        m.peak, m.peak_delta, m.source = w.peak, w.peak_delta, w.source
        m.elapsed, m.cpu = elapsed, cpu
        m.allocated = allocated - self.a0
        m.freed = freed - self.f0
        return m


def _writer(file):
    """A callable that writes one report line to `file`."""
    if file is None:
        return lambda line: print(line, file=sys.stdout, flush=True)
    if isinstance(file, (str, os.PathLike)):
        def write_to_path(line):
            with open(file, "a", encoding="utf-8") as f:
                print(line, file=f)
        return write_to_path
    if callable(getattr(file, "write", None)):
        return lambda line: print(line, file=file, flush=True)
    raise TypeError(
        f"file must be a writable stream or a path, not {type(file).__name__}"
    )


class _Measure:
    """A measure(...) object: context manager and decorator."""

    def __init__(self, label, report, file):
        if label is not None and not isinstance(label, str):
            raise TypeError(
                f"label must be a str or None, not {type(label).__name__}")
        self.label = label
        self.report = bool(report)
        self._write = _writer(file)
        self._open = []

    def _finish(self, history, run):
        m = run.close()
        if self.report:
            self._write(str(m))
        if history is not None:
            history.append(m)
        return m

    def __enter__(self):
        run = _Open(self.label)
        self._open.append(run)
        return run.result

    def __exit__(self, exc_type, exc, tb):
        # Each exit closes the newest block still open (the object is
        # reusable and reentrant); an exit with none open is a misuse, as
        # releasing an unheld lock is.
        if not self._open:
            raise RuntimeError(
                "measure() block exited more times than it was entered")
        self._finish(None, self._open.pop())
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(
                f"measure() decorates callables, not {type(func).__name__}")
        label = self.label or getattr(func, "__qualname__", repr(func))
        history = deque(maxlen=HISTORY)
        # A generator function is measured as the call that makes the
        # generator, as any other function.
        wrapper = wrap(func, _Open, functools.partial(self._finish, history),
                       label, generators=False)
        wrapper.measurements = history
        return wrapper


def measure(label=None, *, report=False, file=None):
    """Measure a block or a function's calls.

    ``with measure("load") as m: ...`` fills the :class:`Measurement` ``m``
    when the block ends; ``@measure``, ``@measure("name")`` and
    ``@measure(report=True)`` measure every call and keep the latest
    ``HISTORY`` on ``func.measurements``. ``report=True`` prints one line per
    measurement to ``file`` (a stream or a path; stdout by default).
    Exceptions pass through unchanged; the measurement is completed first.
    """
    if callable(label) and not isinstance(label, str):
        return _Measure(None, report, file)(label)
    return _Measure(label, report, file)
