"""Allocation tracing (SPEC 5): which lines hold memory, now and at the peak.

The recording is C (csrc/tracing.c, fed by the allocator hooks and NumPy's
data handler): every block, or one per `sample_bytes` on average, is kept
with its site, and each site keeps its live bytes now and at the peak. This
module turns the per-site figures into snapshots, groups and formats them.
"""

import html
import json
import linecache
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

from memlens import _core
from memlens._checks import int_in_range
from memlens._npmem import numpy_hook_acquire, numpy_hook_release
from memlens._report import Markup, html_table, kib

__all__ = ["start_tracing", "stop_tracing", "is_tracing", "tracing",
           "tracing_native",
           "traced_memory", "reset_peak", "take_snapshot", "peak_snapshot",
           "Snapshot", "Statistic", "StatisticDiff", "Frame"]

KEYS = ("lineno", "filename", "traceback")

#: The ranges the C core accepts (MEMLENS_SITES_MAX_FRAMES in csrc/sites.h,
#: TRACING_MAX_SAMPLE_BYTES in csrc/tracing.c). Checked here first, so that
#: a value too large for a C integer gets the same ValueError as any other
#: out of range.
MAX_FRAMES = 100
MAX_SAMPLE_BYTES = 1 << 40

#: The folder of memlens's own code: blocks it asks for while tracing (its
#: glue around the program) are not recorded.
OWN_PREFIX = os.path.dirname(__file__) + os.sep


def _skip_prefixes():
    """NumPy's own Python code is passed over, so that np.ones() lands on
    the caller's line; memlens's own is left out."""
    numpy = sys.modules.get("numpy")
    path = getattr(numpy, "__file__", None)
    skipped = (os.path.dirname(path) + os.sep,) if path else ()
    return skipped, (OWN_PREFIX,)


_tracemalloc_stop = None

#: The NumPy handler's token of the running trace (memlens._npmem).
_numpy_token = None


def _watch_tracemalloc():
    """tracemalloc.stop() puts back the allocators tracemalloc saved when
    it started, which drops memlens's hooks if they were chained above it
    since. While memlens traces on top of a running tracemalloc, its stop
    is wrapped to chain memlens's hooks again right after."""
    global _tracemalloc_stop
    import tracemalloc

    if not tracemalloc.is_tracing() or _tracemalloc_stop is not None:
        return
    original = tracemalloc.stop

    def stop():
        original()
        _core._hooks_relink()

    stop.__wrapped__ = original
    stop.__doc__ = original.__doc__
    _tracemalloc_stop = original
    tracemalloc.stop = stop


def _unwatch_tracemalloc():
    global _tracemalloc_stop
    if _tracemalloc_stop is not None:
        import tracemalloc

        tracemalloc.stop = _tracemalloc_stop
        _tracemalloc_stop = None


def start_tracing(nframes=1, sample_bytes=0, native=False):
    """Start recording allocations with `nframes` frames each.

    ``sample_bytes=0`` records every allocation exactly; ``sample_bytes=N``
    drops a mark every N bytes allocated on average (N +/- 10% at random)
    and records the blocks marks fall in, each standing for N bytes per
    mark, for near-zero overhead.

    ``native=True`` also records what every loaded library asks of the C
    allocators (the malloc family) and of ``mmap``, hooked in each
    library's global offset table, libraries loaded later included, and
    put back at stop_tracing(). Large blocks and mappings then count their
    resident pages: see the snapshots' ``resident`` and ``untracked``.

    memlens keeps out of its own records: the blocks its own code asks for
    while tracing (taking snapshots, the glue of tracing() and of the
    magics) are not recorded, and raise neither the figures nor the peak.
    """
    int_in_range("nframes", nframes, 1, MAX_FRAMES)
    int_in_range("sample_bytes", sample_bytes, 0, MAX_SAMPLE_BYTES)
    # Checked here, not in a helper: on 3.9 and 3.10 each function called
    # for the first time keeps a frame, which a later call of the
    # program's would otherwise have taken from the free list.
    if not isinstance(native, (bool, int)):
        raise TypeError(f"native must be True or False, not "
                        f"{type(native).__name__}")
    global _numpy_token
    _core._trace_skip(*_skip_prefixes())
    # first: its own bookkeeping is not the program's
    token = numpy_hook_acquire()
    try:
        _core._trace_start(nframes, sample_bytes, bool(native))
    except BaseException:
        numpy_hook_release(token)
        raise
    _numpy_token = token
    if "tracemalloc" in sys.modules:
        _watch_tracemalloc()


def stop_tracing():
    """Stop recording and forget every record (as tracemalloc.stop())."""
    global _numpy_token
    if _core._trace_is_tracing():
        _unwatch_tracemalloc()
        _core._trace_stop()
        token, _numpy_token = _numpy_token, None
        numpy_hook_release(token)


def is_tracing():
    return _core._trace_is_tracing()


def tracing_native():
    """Whether the native hooks are in place now (native tracing)."""
    return _core._native_stats()["on"]


def traced_memory():
    """(current, peak) bytes of the traced blocks (estimated when
    sampling)."""
    return _core._trace_memory()


def reset_peak():
    """Make the peak (and the peak snapshot) start again from now."""
    _core._trace_reset_peak()


def _snapshot(at_peak):
    return Snapshot._from_core(_core._trace_snapshot(at_peak),
                               "peak" if at_peak else "current")


# memlens's own work while tracing (building a snapshot, the glue of
# tracing()) runs through _core._quietly: the blocks it allocates are left
# out of every record, so that they neither show as lines nor raise the
# peak.

def take_snapshot():
    """What is alive now, by site. Taking it changes neither the figures
    nor the peak."""
    return _core._quietly(_snapshot, False)


def peak_snapshot():
    """What was alive when the traced memory reached its peak, by site."""
    return _core._quietly(_snapshot, True)


def _live_stacks():
    """What is alive now, by site, with function names: a list of
    (frames, size, count, native), frames ((filename, lineno, function),
    ...) most recent first, empty for a block of unknown origin. Taking it
    changes neither the figures nor the peak (the pytest plugin's
    limit_leaks)."""
    rows = _core._quietly(_core._trace_snapshot, False, True)[3]
    return [(frames, size, count, native)
            for frames, size, count, _, _, native, _ in rows]


class tracing:
    """``with memlens.tracing(nframes=1, sample_bytes=0, native=False) as t:``

    Traces the block; on exit ``t.snapshot`` (what was alive at the end),
    ``t.peak`` (what was alive at the peak) and ``t.traced`` ((current,
    peak) bytes) are kept, then tracing stops. Exceptions pass through.
    """

    def __init__(self, nframes=1, sample_bytes=0, native=False):
        self.nframes = nframes
        self.sample_bytes = sample_bytes
        self.native = native
        self.snapshot = None
        self.peak = None
        self.traced = None

    def __enter__(self):
        start_tracing(self.nframes, self.sample_bytes, self.native)
        return self

    def __exit__(self, exc_type, exc, tb):
        # The arguments are named: a tuple of them would be made, and
        # traced, on the with statement's line.
        _core._quietly(tracing._finish, self)
        return False

    def _finish(self):
        try:
            self.traced = traced_memory()
            self.snapshot = _snapshot(False)
            self.peak = _snapshot(True)
        finally:
            stop_tracing()


# --------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    filename: str
    lineno: int

    @property
    def line(self):
        return linecache.getline(self.filename, self.lineno).strip()


@dataclass
class Statistic:
    """One row: a line (key "lineno"), a file ("filename") or a traceback
    ("traceback"). ``size`` and ``count`` are the live bytes and blocks;
    ``allocated`` and ``allocations`` what the group handed out since
    tracing started, freed since or not. Bytes; estimates when sampling.

    With native tracing, ``native_size`` and ``native_count`` are the part
    of ``size`` and ``count`` the native hooks saw (``python_size`` the
    rest), and ``resident`` the bytes of them in RAM: large blocks and
    mappings count their resident pages. Without, ``resident`` is
    ``size``."""

    filename: str
    lineno: Optional[int]
    size: int
    count: int
    traceback: Tuple[Frame, ...]
    allocated: int = 0
    allocations: int = 0
    native_size: int = 0
    native_count: int = 0
    resident: Optional[int] = None

    def __post_init__(self):
        if self.resident is None:
            self.resident = self.size

    @property
    def python_size(self):
        """The live bytes of the Python allocators (and NumPy's data)."""
        return self.size - self.native_size

    @property
    def line(self):
        if self.lineno is None:
            return ""
        return linecache.getline(self.filename, self.lineno).strip()

    def to_dict(self):
        d = asdict(self)
        d["traceback"] = [asdict(f) for f in self.traceback]
        d["line"] = self.line
        return d


@dataclass
class StatisticDiff(Statistic):
    size_diff: int = 0
    count_diff: int = 0


UNKNOWN = Frame("<unknown>", 0)
#: Native blocks of a thread whose Python origin is unknown.
NATIVE_THREAD = Frame("<native thread>", 0)

#: What top(), statistics() and format() can order by.
ORDERS = ("size", "allocated", "resident")


def _check_limit(limit):
    """A row count: None (every row) or an int >= 0; a negative one is an
    error, not a slice from the end."""
    if limit is not None and (isinstance(limit, bool)
                              or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, "
                         f"not {limit!r}")


def _fmt_kib(nbytes):
    return f"{kib(nbytes)} KiB"


class Snapshot:
    """Memory by site, now (take_snapshot) or at the peak (peak_snapshot).
    ``traces`` holds (traceback, size, count, allocated, allocations,
    native, resident) per site, tracebacks most recent frame first.

    The figures are exact (or sampling estimates) unless memlens lost some
    of its bookkeeping since tracing started, which the snapshot says:
    ``lost_frees`` frees could not be applied (threads without the GIL
    gave back more blocks at once than memlens's queue holds), so those
    blocks still count as live and the figures overstate; ``lost_records``
    times memlens could not keep a record as it should (no memory for its
    tables, or the same queue full): blocks went unrecorded, or to the
    ``<unknown>`` line, and the figures may understate. ``affected`` is
    true when either is not zero; format() and repr() then say so.

    Taken with native tracing (``native``), it reconciles with RSS:
    ``resident`` is what its rows hold in RAM, ``rss_rise`` the RSS then
    (now, or when RSS peaked) less the RSS when tracing started,
    ``overhead`` what memlens's own bookkeeping held then (its tables,
    which the program without memlens would not have), and ``untracked``
    the rest, what no hook sees (the interpreter and library code,
    allocator fragmentation, memory freed but kept by the allocator):
    ``resident + overhead + untracked == rss_rise``. ``explained`` is the
    share of the program's rise (``rss_rise - overhead``) the rows
    account for."""

    def __init__(self, traces, total, nframes=1, sample_bytes=0,
                 kind="current", timestamp=None, lost_frees=0,
                 lost_records=0, native=False, resident=None, rss_rise=None,
                 overhead=None):
        self.traces = traces
        self.total = total
        self.nframes = nframes
        self.sample_bytes = sample_bytes
        self.kind = kind
        self.timestamp = time.time() if timestamp is None else timestamp
        self.lost_frees = lost_frees
        self.lost_records = lost_records
        self.native = native
        self.resident = total if resident is None else resident
        self.rss_rise = rss_rise
        self.overhead = overhead

    @classmethod
    def _from_core(cls, raw, kind):
        (nframes, sample_bytes, total, rows, lost_frees, lost_records,
         native, resident, rss_rise, overhead) = raw
        traces = []
        for tb, size, count, allocated, allocations, is_native, held in rows:
            frames = tuple(Frame(fn, ln) for fn, ln in tb) or (
                NATIVE_THREAD if is_native else UNKNOWN,)
            traces.append((frames, size, count, allocated, allocations,
                           is_native, held))
        return cls(traces, total, nframes, sample_bytes, kind,
                   lost_frees=lost_frees, lost_records=lost_records,
                   native=native, resident=resident, rss_rise=rss_rise,
                   overhead=overhead)

    @property
    def untracked(self):
        """The RSS rise no row explains (None without native tracing)."""
        if self.rss_rise is None:
            return None
        return self.rss_rise - (self.overhead or 0) - self.resident

    @property
    def explained(self):
        """The share of the program's RSS rise the rows hold (None without
        native tracing, or when it did not rise)."""
        if self.rss_rise is None:
            return None
        rise = self.rss_rise - (self.overhead or 0)
        return self.resident / rise if rise > 0 else None

    @property
    def affected(self):
        """Whether lost bookkeeping makes the figures inexact."""
        return bool(self.lost_frees or self.lost_records)

    def _warnings(self):
        """One sentence per kind of loss; none when the figures hold."""
        out = []
        if self.lost_frees:
            out.append(f"Warning: {self.lost_frees} frees were lost (too "
                       f"many at once without the GIL); the figures "
                       f"overstate live memory")
        if self.lost_records:
            out.append(f"Warning: {self.lost_records} records were lost "
                       f"(out of memory, or too many at once without the "
                       f"GIL); the figures may understate")
        return out

    # ---- grouping --------------------------------------------------------

    def _order(self, by):
        """`by` checked; None: resident with native tracing, else size."""
        if by is None:
            return "resident" if self.native else "size"
        if by not in ORDERS:
            raise ValueError(f"by must be one of {', '.join(ORDERS)}, "
                             f"not {by!r}")
        return by

    def statistics(self, key="lineno", by=None):
        """Every group under `key`, largest first by live ``size``, by
        bytes ``allocated`` or by ``resident`` bytes (the default with
        native tracing)."""
        if key not in KEYS:
            raise ValueError(f"key must be one of {', '.join(KEYS)}, "
                             f"not {key!r}")
        by = self._order(by)
        groups = {}
        for (frames, size, count, allocated, allocations, native,
             resident) in self.traces:
            top = frames[0]
            if key == "lineno":
                group = (top.filename, top.lineno, (top,))
            elif key == "filename":
                group = (top.filename, None, (Frame(top.filename, 0),))
            else:
                group = (top.filename, top.lineno, frames)
            entry = groups.setdefault(group, [0] * 7)
            entry[0] += size
            entry[1] += count
            entry[2] += allocated
            entry[3] += allocations
            entry[4] += size if native else 0
            entry[5] += count if native else 0
            entry[6] += resident
        stats = [Statistic(fn, ln, *figures[:2], tb, *figures[2:])
                 for (fn, ln, tb), figures in groups.items()]
        if by == "allocated":
            stats.sort(key=lambda s: (-s.allocated, -s.allocations,
                                      s.filename, s.lineno or 0))
        else:
            stats = [s for s in stats if s.size or s.count]
            stats.sort(key=lambda s: (-getattr(s, by), -s.count, s.filename,
                                      s.lineno or 0))
        return stats

    def top(self, limit=10, key="lineno", by=None):
        """The `limit` largest groups under `key` (by live ``size``, bytes
        ``allocated`` or ``resident``). ``limit=None`` gives every
        group."""
        _check_limit(limit)
        stats = self.statistics(key, by)
        return stats if limit is None else stats[:limit]

    def diff(self, older, key="lineno"):
        """What changed since `older`, by group, largest change first."""
        if not isinstance(older, Snapshot):
            raise TypeError(f"diff() needs a Snapshot, not "
                            f"{type(older).__name__}")
        new = {(s.filename, s.lineno, s.traceback): s
               for s in self.statistics(key, "size")}
        old = {(s.filename, s.lineno, s.traceback): s
               for s in older.statistics(key, "size")}
        out = []
        for group in set(new) | set(old):
            n, o = new.get(group), old.get(group)
            fn, ln, tb = group
            cur = n or Statistic(fn, ln, 0, 0, tb)
            old_size, old_count = (o.size, o.count) if o else (0, 0)
            out.append(StatisticDiff(
                fn, ln, cur.size, cur.count, tb, cur.allocated,
                cur.allocations, cur.native_size, cur.native_count,
                cur.resident, size_diff=cur.size - old_size,
                count_diff=cur.count - old_count))
        out.sort(key=lambda d: (-abs(d.size_diff), -d.size, d.filename,
                                d.lineno or 0))
        return out

    # ---- output ---------------------------------------------------------

    def format(self, limit=10, key="lineno", by=None):
        """The familiar text (tracemalloc's display_top layout); with
        ``by="allocated"`` the groups that handed out most. ``limit`` rows
        are shown (``None``: all; ``0``: none, only the summary lines); the
        rest are summed on one ``other`` line. With native tracing the rows
        show resident bytes, then what was allocated and how much of it
        was native, and the summary how much of the RSS rise they
        explain."""
        _check_limit(limit)
        by = self._order(by)
        stats = self.statistics(key, by)
        shown = stats if limit is None else stats[:limit]
        noun = {"lineno": "lines", "filename": "files",
                "traceback": "tracebacks"}[key]
        out = [f"Top {len(shown)} {noun}"]
        figure = (lambda s: getattr(s, by))
        for i, s in enumerate(shown, 1):
            if key == "traceback":
                out.append(f"#{i}: {s.count} blocks, {_fmt_kib(figure(s))}")
                for frame in s.traceback:
                    out.append(f'  File "{frame.filename}", line '
                               f'{frame.lineno}')
                    if frame.line:
                        out.append(f"    {frame.line}")
                continue
            where = s.filename if key == "filename" else (
                f"{s.filename}:{s.lineno}")
            out.append(f"#{i}: {where}: {_fmt_kib(figure(s))}"
                       + self._native_note(s))
            if key == "lineno" and s.line:
                out.append(f"    {s.line}")
        rest = stats[len(shown):]
        if rest:
            out.append(f"{len(rest)} other: "
                       f"{_fmt_kib(sum(figure(s) for s in rest))}")
        total = sum(figure(s) for s in stats)
        if by == "size":
            out.append(f"Total allocated size: {_fmt_kib(total)}")
        elif by == "resident":
            out.append(f"Total resident: {_fmt_kib(total)} (allocated: "
                       f"{_fmt_kib(sum(s.size for s in stats))})")
        else:
            out.append(f"Total handed out: {_fmt_kib(total)}")
        if self.rss_rise is not None:
            out.append(self._reconciliation())
        out.extend(self._warnings())
        return "\n".join(out)

    def _native_note(self, s):
        """What a native snapshot's row adds: allocated and native bytes
        beside the resident ones."""
        if not self.native:
            return ""
        return (f" resident ({_fmt_kib(s.size)} allocated, "
                f"{_fmt_kib(s.native_size)} native)")

    def _reconciliation(self):
        """The sentence that squares the rows with RSS."""
        share = self.explained
        said = (f"the rows explain {share:.1%}" if share is not None
                else "RSS did not rise")
        return (f"RSS rise since tracing started: {_fmt_kib(self.rss_rise)}"
                f" (memlens's own tables: {_fmt_kib(self.overhead or 0)});"
                f" {said}, untracked {_fmt_kib(self.untracked)}")

    def __str__(self):
        return self.format()

    def __repr__(self):
        lost = []
        if self.lost_frees:
            lost.append(f"{self.lost_frees} frees lost, figures overstate")
        if self.lost_records:
            lost.append(f"{self.lost_records} records lost, figures may "
                        f"understate")
        held = (f", {_fmt_kib(self.resident)} resident" if self.native
                else "")
        return (f"<memlens.Snapshot {self.kind}: {len(self.traces)} sites, "
                f"{_fmt_kib(self.total)}{held}"
                f"{''.join(', ' + x for x in lost)}>")

    def _repr_html_(self):
        native = ("resident", "native") if self.native else ()
        rows = [(i, f"{s.filename}:{s.lineno}", _fmt_kib(s.size), s.count,
                 *((_fmt_kib(s.resident), _fmt_kib(s.native_size))
                   if native else ()),
                 Markup(f"<code>{html.escape(s.line)}</code>"))
                for i, s in enumerate(self.top(10), 1)]
        notes = [f"Total: {_fmt_kib(self.total)}"]
        if self.rss_rise is not None:
            notes.append(self._reconciliation())
        return (html_table(("#", "line", "size", "blocks", *native,
                            "source"), rows)
                + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
                + "".join(f"<p><strong>{html.escape(w)}</strong></p>"
                          for w in self._warnings()))

    def to_html(self, path=None, end=None, timeline=None, title="memlens"):
        """The flame graph page: one self-contained HTML document (no
        network, nothing loaded from outside) with an icicle of this
        snapshot by traceback, Python and native bytes apart, search, click
        to zoom and a sortable table of the top lines.

        `end`: a second snapshot drawn below, what was alive at the end
        (with this one the peak). `timeline`: RSS over time drawn above,
        the peak and the ``FUNC`` spans marked: ``(times, mem)`` or
        ``(times, mem, spans)`` (epoch seconds, MiB, ``(name, start,
        end)``), or what reading a ``memlens run`` data file gives.
        Returns the document, or writes it to `path` and returns `path`.
        (``_repr_html_`` stays the short table: notebooks show it.)"""
        from memlens import _flamegraph

        if end is not None and not isinstance(end, Snapshot):
            raise TypeError(f"end must be a Snapshot, not "
                            f"{type(end).__name__}")
        # memlens's own work: neither a line of any snapshot nor part of
        # the traced peak, however large the page.
        text = _core._quietly(_flamegraph.render, self, end, timeline, title)
        if path is None:
            return text
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def to_dict(self):
        return {"kind": self.kind, "total": self.total,
                "nframes": self.nframes, "sample_bytes": self.sample_bytes,
                "timestamp": self.timestamp,
                "lost_frees": self.lost_frees,
                "lost_records": self.lost_records,
                "native": self.native, "resident": self.resident,
                "rss_rise": self.rss_rise, "overhead": self.overhead,
                "untracked": self.untracked,
                "traces": [{"traceback": [asdict(f) for f in frames],
                            "size": size, "count": count,
                            "allocated": allocated,
                            "allocations": allocations,
                            "native": native, "resident": resident}
                           for (frames, size, count, allocated, allocations,
                                native, resident) in self.traces]}

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def folded(self):
        """Folded stacks (``outer;...;inner size`` per line), the input of
        flame-graph tools."""
        lines = []
        for frames, size, *_ in self.traces:
            if size <= 0:
                continue
            stack = ";".join(f"{os.path.basename(f.filename)}:{f.lineno}"
                             for f in reversed(frames))
            lines.append(f"{stack} {size}")
        return "\n".join(sorted(lines)) + ("\n" if lines else "")

    def speedscope(self, name="memlens"):
        """A speedscope (https://www.speedscope.app) sampled profile, as a
        dict ready for json.dump; weights are bytes."""
        frames, index, samples, weights = [], {}, [], []
        for stack, size, *_ in self.traces:
            if size <= 0:
                continue
            ids = []
            for f in reversed(stack):
                k = (f.filename, f.lineno)
                if k not in index:
                    index[k] = len(frames)
                    frames.append({"name": f"{os.path.basename(f.filename)}:"
                                           f"{f.lineno}",
                                   "file": f.filename, "line": f.lineno})
                ids.append(index[k])
            samples.append(ids)
            weights.append(size)
        return {
            "$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": frames},
            "profiles": [{"type": "sampled", "name": f"{name} ({self.kind})",
                          "unit": "bytes", "startValue": 0,
                          "endValue": sum(weights), "samples": samples,
                          "weights": weights}],
            "name": name, "exporter": "memlens",
        }
