"""Trace files of ``memlens run --trace``: what was alive at the peak and
at the end of the run, beside the data file (``<data file>.trace``).

The format (version 1) is JSON Lines, UTF-8, one JSON value a line::

    {"format": "memlens-trace", "version": 1, ...}      the header
    ["F", "<filename>", <lineno>]                       one frame a line
    {"snapshot": "peak", ..., "rows": <n>}              a snapshot's head
    [<size>, <count>, <allocated>, <allocations>, <native>, <resident>,
     <frame>, ...]                                      its n rows

The header says what ran and how it was traced: ``datafile`` (its base
name), ``command``, ``pid``, ``python``, ``nframes``, ``sample_bytes``,
``native``, ``started`` and ``written`` (epoch seconds), ``final`` (true
once the run ended and the end snapshot is in), ``writes`` (how many
times the file was written). Frames are numbered by their order, from 0;
a row names its traceback by these numbers, the most recent frame first,
without the frames of memlens (and runpy) that ran the program. Only the
rows that hold memory at that moment are kept, largest first.
A snapshot's head holds the figures of :class:`memlens.Snapshot` (``total``,
``nframes``, ``sample_bytes``, ``timestamp``, ``lost_frees``,
``lost_records``, ``native``, ``resident``, ``rss_rise``, ``overhead``),
``peak_after`` and ``peak_time`` (epoch seconds: the traced peak came
after the first and by the second; null in the end snapshot) and
``rows``, the number of row lines that follow. There are at
most two snapshots, ``peak`` then ``end``; ``end`` only in a final file.

The file is written whole each time (a temporary file renamed over it),
so a reader sees one complete version. :func:`load` reads it back into
Snapshots; a file that does not read is a :class:`TraceFileError` naming
the file and the line.
"""

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from memlens._errors import UsageError

FORMAT = "memlens-trace"
VERSION = 1
SUFFIX = ".trace"

#: Row figures before the frame numbers.
_FIGURES = ("size", "count", "allocated", "allocations", "native",
            "resident")
#: What a snapshot's head holds, besides "snapshot", "peak_time", "rows".
_HEAD = ("total", "nframes", "sample_bytes", "timestamp", "lost_frees",
         "lost_records", "native", "resident", "rss_rise", "overhead")


class TraceFileError(UsageError):
    """A trace file that is missing or cannot be read: one line naming
    the file (and the line)."""


def trace_path(datafile):
    """The trace file of data file `datafile`."""
    return datafile + SUFFIX


@dataclass
class Trace:
    """What a trace file holds: the snapshot at the peak, the one at the
    end (None until the run ended), and the header (``meta``). The peak
    came after `peak_after` and by `peak_time` (epoch seconds, None when
    unknown)."""

    path: str
    meta: dict = field(default_factory=dict)
    peak: Optional[object] = None
    end: Optional[object] = None
    peak_time: Optional[float] = None
    peak_after: Optional[float] = None

    @property
    def final(self):
        """Whether the run ended and wrote its last version."""
        return bool(self.meta.get("final"))


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def _outer_frames():
    """Files whose frames, at the outer end of a traceback, are how
    memlens runs the program, not the program: memlens's own and
    runpy's (-m)."""
    import runpy

    from memlens._tracing import OWN_PREFIX

    return OWN_PREFIX, runpy.__file__


def _trim(tb, outer):
    """`tb` ((filename, lineno) pairs, most recent first) without
    memlens's frames around the program; as it is when nothing else is
    left."""
    prefix, runpy_file = outer
    n = len(tb)
    while n > 0 and (tb[n - 1][0].startswith(prefix)
                     or tb[n - 1][0] == runpy_file):
        n -= 1
    return tb[:n] if n else tb


class Taken:
    """One snapshot as the core gives it (_core._trace_snapshot: figures
    and rows of (filename, lineno) tracebacks), with when it was taken and
    what is known of when its peak was: the tracer saw it at `peak_time`,
    and not yet at `peak_after` (epoch seconds, or None)."""

    def __init__(self, name, raw, peak_time=None, peak_after=None):
        self.name, self.raw = name, raw
        self.timestamp = time.time()
        self.peak_time, self.peak_after = peak_time, peak_after

    def head(self):
        (nframes, sample_bytes, total, rows, lost_frees, lost_records,
         native, resident, rss_rise, overhead) = self.raw
        return {"snapshot": self.name, "peak_time": self.peak_time,
                "peak_after": self.peak_after, "total": total,
                "nframes": nframes, "sample_bytes": sample_bytes,
                "timestamp": self.timestamp, "lost_frees": lost_frees,
                "lost_records": lost_records, "native": bool(native),
                "resident": resident, "rss_rise": rss_rise,
                "overhead": overhead}

    def snapshot(self):
        """The memlens.Snapshot of it."""
        from memlens._tracing import Frame

        frames = {}

        def frame(pair):
            f = frames.get(pair)
            if f is None:
                f = frames[pair] = Frame(*pair)
            return f
        traces = [(tuple(frame(p) for p in tb), *rest)
                  for tb, *rest in self.raw[3]]
        return _make(dict(self.head(), name=self.name), traces)


def _encode(meta, taken):
    """The file's bytes: the header `meta`, then each Taken."""
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                            allow_nan=False).encode
    frames = {}
    outer = _outer_frames()
    lines = [dump(dict({"format": FORMAT, "version": VERSION}, **meta))]
    body = []
    for snap in taken:
        rows = sorted((r for r in snap.raw[3] if r[1] or r[2]),
                      key=lambda r: -r[1])
        head = snap.head()
        head["rows"] = len(rows)
        body.append(dump(head))
        for tb, size, count, allocated, allocations, native, held in rows:
            ids = []
            for pair in _trim(tb, outer):
                n = frames.get(pair)
                if n is None:
                    n = frames[pair] = len(frames)
                    lines.append(dump(["F", pair[0], pair[1]]))
                ids.append(n)
            body.append(dump([size, count, allocated, allocations,
                              int(bool(native)), held, *ids]))
    lines.extend(body)
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def write(path, meta, taken):
    """Writes the trace file `path` whole (the header `meta`, then each
    Taken): a temporary file beside it, renamed over it. OSError naming
    `path` when it cannot."""
    data = _encode(meta, taken)
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}"
                               ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                     | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OSError(exc.errno, exc.strerror, path) from None


class _NumpyWatch:
    """NumPy's data is traced through NumPy's own handler, which can only
    be put in place once NumPy is imported: when the program imports it
    after tracing started, this puts it in place then (in the importing
    thread's context, the program's), until remove()."""

    def __init__(self):
        self.token = None

    def install(self):
        if "numpy" not in sys.modules:
            sys.meta_path.insert(0, self)

    def find_spec(self, name, path=None, target=None):
        if name != "numpy":
            return None
        from memlens.cli.spawn import _Loader

        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader,
                                                       "exec_module"):
                    spec.loader = _Loader(self, spec.loader)
                return spec
        return None

    def patch(self, module):
        from memlens import _core
        from memlens._npmem import numpy_hook_acquire
        from memlens._tracing import _skip_prefixes

        self._unlink()
        if self.token is None:
            self.token = _core._quietly(numpy_hook_acquire)
            # NumPy's own Python code is passed over, as when it was
            # imported before tracing started.
            _core._trace_skip(*_skip_prefixes())

    def _unlink(self):
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass

    def remove(self):
        from memlens._npmem import numpy_hook_release

        self._unlink()
        token, self.token = self.token, None
        if token is not None:
            numpy_hook_release(token)


class TraceRecorder:
    """Traces the program of ``memlens run --trace`` and keeps its trace
    file up to date.

    prepare() writes the header (OSError if the file cannot be written);
    start() starts tracing and a daemon thread that every `poll` seconds
    reads the traced peak (two integers; with native tracing, also the
    process's high-water RSS). When the peak grew by `growth` (a fraction)
    since the
    last version written, or at all and `settle` seconds have passed, the
    peak snapshot is taken and the file written again, at most every
    `gap` seconds or ten times the time the last writing took, whichever
    is longer. finish() stops the thread, takes the end and peak
    snapshots, writes the final version and stops tracing.

    Only the process that started it writes: a child the program forks
    inherits neither the thread nor the file."""

    def __init__(self, path, meta, nframes, sample_bytes, native,
                 poll=0.05, growth=0.05, settle=1.0, gap=0.1):
        self.path = path
        self.meta = dict(meta, nframes=nframes, sample_bytes=sample_bytes,
                         native=bool(native), started=time.time(),
                         pid=os.getpid(), python=sys.version.split()[0],
                         final=False, writes=0)
        self.nframes, self.sample_bytes = nframes, sample_bytes
        self.native = bool(native)
        self.poll, self.growth, self.settle, self.gap = (
            poll, growth, settle, gap)
        self.failures = 0
        self.peak_time = self.peak_after = None
        self._looked = None    # when the peak was last looked at
        self._seen = 0         # the peak figures last read
        self._written = 0      # and when the peak snapshot was written
        self._last_write = 0.0
        self._cost = 0.0
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self._numpy = _NumpyWatch()

    def _save(self, taken, final=False):
        self.meta.update(written=time.time(), final=final,
                         writes=self.meta["writes"] + 1)
        write(self.path, self.meta, taken)

    def _take(self, name):
        """A Taken of now ("end") or of the peak ("peak"). Quiet."""
        from memlens import _core

        raw = _core._trace_snapshot(name == "peak")
        if name == "end":
            return Taken(name, raw)
        return Taken(name, raw, self.peak_time, self.peak_after)

    def prepare(self):
        """Writes the first version (the header); OSError if it cannot."""
        self._save([])

    def start(self):
        """Starts tracing, and the thread that keeps the file up to
        date."""
        from memlens import _core
        from memlens._tracing import start_tracing

        start_tracing(self.nframes, self.sample_bytes, self.native)
        self._numpy.install()
        self._looked = time.time()
        self._thread = threading.Thread(
            target=_core._quietly, args=(self._run,),
            name="memlens-trace", daemon=True)
        self._thread.start()

    def _peak_figure(self):
        """A number that rises when the traced peak does."""
        from memlens._tracing import traced_memory

        figure = traced_memory()[1]
        if self.native:
            import resource

            figure = max(figure, resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss * 1024)
        return figure

    def _look(self, now):
        """Reads the peak figure: when it rose, the peak was between the
        last look and `now`."""
        figure = self._peak_figure()
        if figure > self._seen:
            self._seen = figure
            self.peak_after, self.peak_time = self._looked, now
        self._looked = now

    def _run(self):
        while not self._stop.wait(self.poll):
            try:
                self._step()
            except Exception:
                self.failures += 1

    def _step(self):
        """One look at the peak; the peak snapshot written if due."""
        from memlens import _core
        from memlens._tracing import is_tracing

        with self._lock:
            if self._stop.is_set() or not is_tracing():
                return
            now = time.time()
            self._look(now)
            if self._seen <= self._written:
                return
            grown = self._seen >= self._written * (1 + self.growth)
            waited = now - self._last_write
            if waited < max(self.gap, 10 * self._cost):
                return
            if not grown and now - self.peak_time < self.settle:
                # A small rise: written once the peak has been still for
                # `settle` seconds, or with the next large one.
                return
            target = self._seen
            begin = time.perf_counter()
            self._save([_core._quietly(self._take, "peak")])
            self._cost = time.perf_counter() - begin
            self._last_write = time.time()
            self._written = target

    def finish(self):
        """The peak Snapshot, the final version written;
        None if tracing never started or the program stopped it; OSError
        if the file could not be written."""
        from memlens import _core
        from memlens._tracing import stop_tracing

        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        try:
            return _core._quietly(self._finish)
        finally:
            self._numpy.remove()
            stop_tracing()

    def _finish(self):
        from memlens._tracing import is_tracing

        with self._lock:
            if not is_tracing():
                return None  # the program stopped it
            self._look(time.time())
            end = self._take("end")
            peak = self._take("peak")
            self._save([peak, end], final=True)
        return peak.snapshot()


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

class _Bad(Exception):
    pass


def _int(value, what, nullable=False):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an integer, not {json.dumps(value)[:40]}")
    return value


def _number(value, what, nullable=False):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{what} must be a number, not {json.dumps(value)[:40]}")
    return value


def _parse(text):
    try:
        return json.loads(text)
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        col = getattr(exc, "colno", None)
        raise _Bad(f"not JSON ({msg}"
                   + (f" at column {col})" if col else ")")) from None


def _header(value):
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise _Bad(f"not a memlens trace file (no "
                   f"{{\"format\": \"{FORMAT}\"}} header)")
    version = value.get("version")
    if version != VERSION:
        raise _Bad(f"trace format version {json.dumps(version)[:20]}: this "
                   f"memlens reads version {VERSION}")
    return value


def _frame(value, Frame):
    if (not isinstance(value, list) or len(value) != 3
            or not isinstance(value[1], str)):
        raise _Bad('bad frame: expected ["F", "<filename>", <lineno>]')
    return Frame(value[1], _int(value[2], "a frame's line number"))


def _snapshot_head(value):
    head = {"name": value["snapshot"]}
    if head["name"] not in ("peak", "end"):
        raise _Bad(f"unknown snapshot {json.dumps(head['name'])[:30]}: "
                   f"expected \"peak\" or \"end\"")
    head["rows"] = _int(value.get("rows"), "rows")
    for key in ("peak_time", "peak_after"):
        head[key] = _number(value.get(key), key, True)
    for key in ("total", "nframes", "sample_bytes", "lost_frees",
                "lost_records", "resident"):
        head[key] = _int(value.get(key), key)
    for key in ("rss_rise", "overhead"):
        head[key] = _int(value.get(key), key, nullable=True)
    head["timestamp"] = _number(value.get("timestamp"), "timestamp")
    head["native"] = bool(value.get("native"))
    if head["rows"] < 0:
        raise _Bad("rows must not be negative")
    return head


def _row(value, frames):
    if not isinstance(value, list) or len(value) < len(_FIGURES):
        raise _Bad("bad row: expected [size, count, allocated, "
                   "allocations, native, resident, frame, ...]")
    size, count, allocated, allocations, native, held = (
        _int(v, k) for v, k in zip(value, _FIGURES))
    tb = []
    for n in value[len(_FIGURES):]:
        n = _int(n, "a frame number")
        if not 0 <= n < len(frames):
            raise _Bad(f"frame {n} is not defined before this line")
        tb.append(frames[n])
    return (tuple(tb), size, count, allocated, allocations, bool(native),
            held)


def _make(head, rows):
    """The memlens.Snapshot of a snapshot's head and rows (tracebacks of
    Frames)."""
    from memlens._tracing import NATIVE_THREAD, UNKNOWN, Snapshot

    traces = [(tb or (NATIVE_THREAD if native else UNKNOWN,), size, count,
               allocated, allocations, native, held)
              for tb, size, count, allocated, allocations, native, held
              in rows]
    return Snapshot(traces, head["total"], head["nframes"],
                    head["sample_bytes"],
                    "peak" if head["name"] == "peak" else "current",
                    timestamp=head["timestamp"],
                    lost_frees=head["lost_frees"],
                    lost_records=head["lost_records"],
                    native=head["native"], resident=head["resident"],
                    rss_rise=head["rss_rise"], overhead=head["overhead"])


def load(path):
    """The Trace of trace file `path`: its snapshots as
    :class:`memlens.Snapshot` objects. TraceFileError naming the file,
    and the line where it goes wrong, when it cannot be read."""
    from memlens._tracing import Frame

    if os.path.isdir(path):
        raise TraceFileError(f"{path}: is a directory, not a trace file")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise TraceFileError(f"{path}: no such trace file") from None
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: "
                             f"{exc.strerror or exc}") from None
    trace = Trace(path)
    frames, head, rows = [], None, []
    lineno = 0
    try:
        with f:
            for data in f:
                lineno += 1
                if not data.endswith(b"\n"):
                    raise _Bad("cut short (no newline at the end)")
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Bad("not text (invalid UTF-8)") from None
                value = _parse(text)
                if lineno == 1:
                    trace.meta = _header(value)
                elif head is not None and len(rows) < head["rows"]:
                    rows.append(_row(value, frames))
                elif isinstance(value, list) and value[:1] == ["F"]:
                    frames.append(_frame(value, Frame))
                elif isinstance(value, dict) and "snapshot" in value:
                    if head is not None:
                        _store(trace, head, rows)
                    head, rows = _snapshot_head(value), []
                    if getattr(trace, _slot(head)) is not None:
                        raise _Bad(f"a second {head['name']} snapshot")
                else:
                    raise _Bad("expected a frame or a snapshot")
            if lineno == 0:
                raise _Bad("empty file, not a trace file")
            lineno += 1
            if head is not None:
                if len(rows) < head["rows"]:
                    raise _Bad(f"cut short: the {head['name']} snapshot "
                               f"has {len(rows)} of its {head['rows']} "
                               f"rows")
                _store(trace, head, rows)
    except _Bad as exc:
        raise TraceFileError(f"{path}:{lineno}: {exc}") from None
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: "
                             f"{exc.strerror or exc}") from None
    return trace


def _slot(head):
    return "peak" if head["name"] == "peak" else "end"


def _store(trace, head, rows):
    setattr(trace, _slot(head), _make(head, rows))
    if head["name"] == "peak":
        trace.peak_time, trace.peak_after = (head["peak_time"],
                                             head["peak_after"])


def load_for(datafile, required=True):
    """The Trace beside data file `datafile`; when there is none,
    TraceFileError if `required`, else None."""
    path = trace_path(datafile)
    if not os.path.lexists(path):
        if required:
            raise TraceFileError(
                f"{datafile}: no trace beside this data file (no "
                f"{os.path.basename(path)}); record one with "
                f"`memlens run --trace`")
        return None
    return load(path)
