"""memory_usage(): memory_profiler's most used call, on memlens's C core.

The samples are taken by a native thread (C: usage.c over sampler.c), of
this process or of another one, never by a Python loop; for this process
``max_usage`` is the exact peak of a peak window (C: peak.c). This module
checks the arguments as memory_profiler does and shapes the results as it
does: MiB floats, lists, tuples.
"""

import errno
import numbers
import os
import subprocess
import sys
from array import array
from contextlib import nullcontext

from memlens import _core
from memlens._readings import peak as _peak_window

__all__ = ["memory_usage"]

_MiB = float(1 << 20)

#: memory_profiler's backend names -> what memlens samples. Its
#: 'tracemalloc' backend never worked in memory_usage() (it raises
#: RuntimeError); memlens raises the same.
BACKENDS = {
    "psutil": "rss",
    "psutil_pss": "pss",
    "psutil_uss": "uss",
    "posix": "rss",
    "tracemalloc": None,
}

#: The finest interval sampled, seconds: an interval of 0 ("as often as
#: you can" in memory_profiler) or below samples this often; finer would
#: only fill memory with samples. The coarsest is a day.
FINEST = 1e-4
COARSEST = 86400.0

#: While samples are written to a stream, how often (seconds) the new
#: ones are written out, so that a long run can be followed as it goes.
STREAM_PERIOD = 1.0

_PID_MAX = (1 << 31) - 1
_NO_SUCH_PROCESS = {}


def memory_usage(proc=-1, interval=.1, timeout=None, timestamps=False,
                 include_children=False, multiprocess=False, max_usage=False,
                 retval=False, stream=None, backend=None,
                 max_iterations=None):
    """Memory of a process or of a function call over time, in MiB.

    memory_profiler's ``memory_usage``, with its arguments and results.
    The samples are taken every ``interval`` seconds by a native thread
    that never holds the GIL (an interval of 0, or under 0.1 ms, samples
    every 0.1 ms).

    ``proc`` is what to watch:

    - ``-1`` (this process) or a pid: ``round(timeout / interval)``
      samples, one every ``interval``, or a single sample without a
      timeout. ``None`` also means this process, sampled until
      ``timeout``, ``max_iterations`` samples, or Ctrl-C.
    - a ``subprocess.Popen``: sampled until it exits (it is then reaped)
      or until ``timeout``.
    - a callable ``f``, or a tuple ``(f,)``, ``(f, args)`` or ``(f, args,
      kw)``: ``f(*args, **kw)`` is called once, in this thread, and this
      process is sampled from just before the call to just after it.
      ``timeout`` does not cut the call short.

    Results (MiB floats, as memory_profiler's):

    - a list of samples;
    - with ``timestamps=True``, ``(MiB, epoch seconds)`` pairs;
    - with ``multiprocess=True`` (for a pid or a Popen), one list per
      sample: the process's figure (or pair), then each living
      descendant's MiB;
    - with ``max_usage=True``, one float: the highest figure. For this
      process (``-1`` or a callable) it is the exact peak RSS, from the
      kernel's high-water mark, which no spike escapes however short;
      another process's is the highest sample. With ``timestamps`` a
      callable gives ``(MiB, time of the highest sample)``, as
      memory_profiler does;
    - with ``retval=True`` and a callable, ``(result, f's return value)``;
    - with ``stream``, the samples are written to it as mprof writes them
      (``MEM <MiB> <epoch>`` lines, ``CHLD <pid> <MiB> <epoch>`` with
      ``multiprocess``) and None is returned. ``stream`` implies
      ``timestamps``.

    ``include_children`` adds every living descendant's figure to each
    sample (their peak is sampled, not exact). ``max_iterations`` bounds
    the samples of ``proc=None``; memlens calls a function only once, so
    it bounds nothing else (memory_profiler calls a short function again,
    with a tenth of the interval, until it has five samples).

    ``backend`` names memory_profiler's backends, all read from /proc:
    ``'psutil'`` (the default) and ``'posix'`` are the resident set size
    (RSS, statm), ``'psutil_pss'`` and ``'psutil_uss'`` the proportional
    and unique set sizes (smaps_rollup; their ``max_usage`` is sampled).
    ``'tracemalloc'`` raises RuntimeError, as memory_profiler's
    memory_usage does: use ``memlens.tracing()`` for traced allocations.
    An unknown name raises KeyError.

    Errors as memory_profiler's: TypeError for a ``proc`` of another kind
    or arguments of the wrong type, ValueError for a tuple of another
    length, a negative pid or interval, ZeroDivisionError for an interval
    of 0 with a timeout, and ProcessLookupError for a pid that names no
    process (also a ``psutil.NoSuchProcess`` when psutil is imported).
    Exceptions raised by ``f`` propagate; the sampler is stopped first.
    """
    metric = _metric(backend)
    interval, timeout = _times(interval, timeout)
    if stream is not None:
        timestamps = True
    call = _call(proc)
    if call is not None:
        return _usage_of_call(
            call, interval, metric, timestamps, include_children,
            multiprocess, max_usage, retval, stream)
    pid, popen = _pid(proc)
    # How many samples: None for no bound (until a Popen exits, or Ctrl-C).
    if timeout is not None:
        limit = int(round(timeout / interval))
    elif popen is not None:
        limit = None
    elif proc is None:
        limit = _iterations(max_iterations)
    else:
        limit = 1
    if limit is not None and limit <= 0:
        # A timeout shorter than half an interval, max_iterations=0:
        # memory_profiler's empty result.
        return None if stream is not None else (-1.0 if max_usage else [])
    return _usage_of_pid(
        pid, popen, limit, interval, metric, timestamps, include_children,
        multiprocess, max_usage, stream)


# ---- Arguments --------------------------------------------------------


def _metric(backend):
    if backend is None:
        backend = "psutil"
    metric = BACKENDS[backend]  # KeyError for an unknown name, as theirs.
    if metric is None:
        raise RuntimeError(
            "memory_usage() cannot use the 'tracemalloc' backend (nor can "
            "memory_profiler's): use memlens.tracing() to trace "
            "allocations, or the 'psutil' backend for RSS")
    return metric


def _real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number of seconds, not "
            f"{type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must be a number of seconds, not nan")
    return value


def _times(interval, timeout):
    """(interval, timeout) as floats, checked."""
    interval = _real("interval", interval)
    if interval < 0:
        raise ValueError(
            f"interval must be a non-negative number of seconds, got "
            f"{interval!r}")
    if timeout is not None:
        timeout = _real("timeout", timeout)
        if interval == 0:
            raise ZeroDivisionError(
                "interval must be positive when a timeout is given (the "
                "number of samples is timeout / interval)")
    return interval, timeout


def _iterations(max_iterations):
    """The number of samples of proc=None: None for no bound."""
    if max_iterations is None:
        return None
    if isinstance(max_iterations, bool) or not isinstance(
            max_iterations, numbers.Integral):
        raise TypeError(
            f"max_iterations must be an int, not "
            f"{type(max_iterations).__name__}")
    return int(max_iterations)


def _call(proc):
    """(f, args, kw) for a callable or a tuple, else None."""
    if callable(proc):
        return proc, (), {}
    if not isinstance(proc, (list, tuple)):
        return None
    if not 1 <= len(proc) <= 3:
        raise ValueError(
            f"proc as a tuple must be (f,), (f, args) or (f, args, kw), "
            f"not {len(proc)} items")
    f, args, kw = tuple(proc) + ((), {})[len(proc) - 1:]
    if not callable(f):
        raise TypeError(f"{type(f).__name__!r} object is not callable")
    return f, args, kw


def _pid(proc):
    """(pid for the sampler, the Popen or None): 0 is this process."""
    if isinstance(proc, subprocess.Popen):
        return _checked_pid(proc.pid), proc
    if proc is None:
        return 0, None
    if isinstance(proc, bool) or not isinstance(proc, numbers.Integral):
        raise TypeError(
            f"proc must be -1, a pid, a subprocess.Popen, a callable or a "
            f"tuple (f, args, kw), not {type(proc).__name__}")
    return _checked_pid(int(proc)), None


def _checked_pid(pid):
    if pid == -1 or pid == os.getpid():
        return 0
    if pid < 0:
        raise ValueError(f"pid must be a positive integer (got {pid})")
    if pid == 0 or pid > _PID_MAX:
        raise _no_such_process(pid)
    return pid


def _no_such_process(pid):
    """ProcessLookupError for `pid`, and psutil.NoSuchProcess as well when
    psutil is imported: code written for memory_profiler catches that."""
    psutil = sys.modules.get("psutil")
    base = getattr(psutil, "NoSuchProcess", None)
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base = None
    cls = _NO_SUCH_PROCESS.get(base)
    if cls is None:
        bases = (ProcessLookupError,) if base is None else (
            ProcessLookupError, base)
        cls = type("NoSuchProcess", bases, {
            "__module__": "memlens",
            "__doc__": "No process has this pid.",
            "__str__": OSError.__str__,
            "__repr__": BaseException.__repr__,
        })
        _NO_SUCH_PROCESS[base] = cls
    message = f"no process has pid {pid}"
    exc = cls(errno.ESRCH, message)
    exc.pid, exc.name, exc.msg = pid, None, message
    return exc


# ---- Sampling ---------------------------------------------------------


def _sampler(interval, pid, metric, limit, add_children, each_child):
    return _core.UsageSampler(
        min(max(interval, FINEST), COARSEST), pid=pid, metric=metric,
        limit=limit or 0,
        add_children=bool(add_children), each_child=bool(each_child))


def _start(sampler, pid):
    try:
        sampler.start()
    except ProcessLookupError:
        raise _no_such_process(pid) from None


def _usage_of_pid(pid, popen, limit, interval, metric, timestamps,
                  include_children, multiprocess, max_usage, stream):
    each_child = multiprocess and not max_usage
    sampler = _sampler(interval, pid, metric, limit, include_children,
                       each_child)
    exact = max_usage and pid == 0 and metric == "rss"
    window = _peak_window() if exact else None
    written = [0]
    with window if window is not None else nullcontext():
        _start(sampler, pid)
        try:
            if stream is not None and not max_usage:
                while not sampler.wait(STREAM_PERIOD):
                    _write(stream, sampler, written, flush=True)
            else:
                sampler.wait()
        finally:
            sampler.stop()
    if popen is not None:
        # Reaped once it exited, as memory_profiler's poll() reaps it. Seen
        # as it began to exit, it is waited for: a moment.
        if sampler.gone:
            popen.wait()
        else:
            popen.poll()
    if max_usage:
        result = _highest(sampler, window)
        return None if stream is not None else result
    if stream is not None:
        _write(stream, sampler, written, flush=False)
        return None
    return _series(sampler, timestamps, multiprocess)


def _usage_of_call(call, interval, metric, timestamps, include_children,
                   multiprocess, max_usage, retval, stream):
    f, args, kw = call
    sampler = _sampler(interval, 0, metric, 0, include_children,
                       multiprocess and stream is not None)
    window = _peak_window() if max_usage and metric == "rss" else None
    with window if window is not None else nullcontext():
        _start(sampler, 0)
        try:
            returned = f(*args, **kw)
        finally:
            sampler.stop()
    if stream is not None:
        if not max_usage:
            _write(stream, sampler, [0], flush=False)
        return None
    if max_usage:
        result = _highest(sampler, window)
        if timestamps:
            result = (result, _time_of_highest(sampler))
    else:
        result = _series(sampler, timestamps, False)
    return (result, returned) if retval else result


# ---- Results ----------------------------------------------------------


def _arrays(sampler):
    """(times, values, kid_times, kid_pids, kid_values) arrays; times are
    epoch seconds, values MiB."""
    raw = sampler._buffers()
    times, values = array("d"), array("Q")
    kid_times, kid_pids, kid_values = array("d"), array("q"), array("Q")
    for arr, data in zip((times, values, kid_times, kid_pids, kid_values),
                         raw):
        arr.frombytes(data)
    return times, values, kid_times, kid_pids, kid_values


def _series(sampler, timestamps, multiprocess):
    times, values, kid_times, _, kid_values = _arrays(sampler)
    start = sampler.start_time
    if timestamps:
        out = [(v / _MiB, start + t) for t, v in zip(times, values)]
    else:
        out = [v / _MiB for v in values]
    if not multiprocess:
        return out
    kids = {}
    for t, v in zip(kid_times, kid_values):
        kids.setdefault(t, []).append(v / _MiB)
    return [[sample] + kids.get(t, []) for t, sample in zip(times, out)]


def _highest(sampler, window):
    """The highest figure in MiB: the sampled one, raised to the exact
    peak of this process when there is one; -1.0 with no sample, as
    memory_profiler's -1."""
    values = _arrays(sampler)[1]
    best = max(values) if values else None
    if window is not None and window.peak is not None:
        best = window.peak if best is None else max(best, window.peak)
    return -1.0 if best is None else best / _MiB


def _time_of_highest(sampler):
    times, values = _arrays(sampler)[:2]
    if not values:
        return None
    # The latest of equal highs, as memory_profiler's max over pairs.
    i = max(range(len(values)), key=lambda k: (values[k], times[k]))
    return sampler.start_time + times[i]


def _write(stream, sampler, written, flush):
    """Writes the samples from written[0] on as mprof's lines."""
    times, values, kid_times, kid_pids, kid_values = _arrays(sampler)
    start = sampler.start_time
    kids = {}
    for t, pid, v in zip(kid_times, kid_pids, kid_values):
        kids.setdefault(t, []).append((pid, v))
    lines = []
    for t, v in zip(times[written[0]:], values[written[0]:]):
        when = start + t
        lines.append(f"MEM {v / _MiB:.6f} {when:.4f}\n")
        for pid, kv in kids.get(t, ()):
            lines.append(f"CHLD {pid} {kv / _MiB:.6f} {when:.4f}\n")
    written[0] = len(times)
    if lines:
        stream.write("".join(lines))
        if flush:
            stream.flush()
