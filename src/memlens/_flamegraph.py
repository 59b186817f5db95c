"""The flame graph page: one self-contained HTML document of what was alive
at the peak (and at the end), by traceback, with the RSS timeline and a
sortable table of the top lines.

The page loads nothing from outside: its style and script
(_flamegraph.css, _flamegraph.js beside this module) are written into it,
and the figures travel as one JSON object in a ``<script
type="application/json">`` element. They are encoded to stay small and
quick to read for 100,000 distinct tracebacks:

- ``frames``: every distinct (file, line) once, as three parallel arrays
  (``file``, an index into ``files``; ``line``; ``text``, the source
  line), shared by the graphs and the tables;
- per graph, the tracebacks merged into one tree (outermost frame first)
  written in pre-order as two columns, ``f`` (frame index, -1 for the
  root) and ``d`` (depth), each node's children largest first, packed
  (``_pack``: fixed-width numbers in the page's ``digits``, a byte or two
  a node where a JSON list would take four to eight); the bytes
  sit only on the nodes where tracebacks end (``own``: node indices as
  differences from the previous one, Python bytes, native bytes, blocks
  and resident bytes), and the page adds them up the tree;
- per graph, the top lines (``lines``: frame, bytes, native bytes,
  blocks, resident bytes), the rest summed;
- the timeline: seconds from its start, MiB, the index of the peak, and
  the ``FUNC`` spans.

Snapshots are read through their public figures (``traces``,
``statistics()``), so this module sits below memlens._tracing.
"""

import html
import json
import linecache
import os
from dataclasses import dataclass, field
from typing import List, Sequence

from memlens._report import human, kib

#: The rows of the top-lines table written into the page; the rest are
#: summed on one line.
TABLE_ROWS = 1000

#: Timeline samples written into the page: a longer timeline is cut into
#: this many buckets / 2, each keeping its lowest and highest sample.
TIMELINE_POINTS = 20000

#: Characters of a source line kept in the page.
TEXT_CHARS = 160

_HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Span:
    """One call of a profiled function: a ``FUNC`` line of a data file."""

    name: str
    start: float
    end: float


@dataclass
class Timeline:
    """RSS over time, as a data file holds it: epoch seconds, MiB, and the
    ``FUNC`` spans."""

    times: Sequence[float]
    mem: Sequence[float]
    spans: List[Span] = field(default_factory=list)

    @classmethod
    def of(cls, value):
        """`value` as a Timeline: a Timeline, a ``(times, mem)`` or
        ``(times, mem, spans)`` sequence (spans as ``(name, start, end)``
        or objects with those attributes), or what reading a data file
        gives (``.memory.times``, ``.memory.mem``, ``.spans``)."""
        if isinstance(value, cls):
            timeline = value
        elif hasattr(value, "memory") and hasattr(value, "spans"):
            timeline = cls(value.memory.times, value.memory.mem,
                           list(value.spans))
        elif (isinstance(value, (tuple, list))
              and len(value) in (2, 3)):
            timeline = cls(*value)
        else:
            raise TypeError(
                f"timeline must be (times, mem), (times, mem, spans) or "
                f"a data file's content, not {type(value).__name__}")
        times, mem = list(timeline.times), list(timeline.mem)
        if len(times) != len(mem):
            raise ValueError(f"timeline: {len(times)} times but "
                             f"{len(mem)} values")
        spans = []
        for span in timeline.spans:
            if isinstance(span, (tuple, list)):
                span = Span(*span[:3])
            spans.append(Span(str(span.name), float(span.start),
                              float(span.end)))
        return cls([float(t) for t in times], [float(m) for m in mem],
                   spans)

    def peak_index(self):
        """The first of the highest samples (None without samples)."""
        if not self.mem:
            return None
        return max(range(len(self.mem)), key=self.mem.__getitem__)


#: The digits of the packed columns: every character JSON, HTML and a
#: ``<script>`` element leave as one byte (no quote, backslash, ``<``,
#: ``>`` or ``&``).
DIGITS = ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
          "!#$%'()*+,-./:;=?@[]^_`{|}~")


def _pack(values, shift=0):
    """``{"w": width, "s": text}``: each of `values` plus `shift` (none
    negative then) written in `w` digits of :data:`DIGITS`, most
    significant first."""
    base = len(DIGITS)
    top = max(values, default=0) + shift
    width = 1
    while base ** width <= top:
        width += 1
    if width == 1:
        text = "".join([DIGITS[v + shift] for v in values])
    elif width == 2:
        pairs = [a + b for a in DIGITS for b in DIGITS]
        text = "".join([pairs[v + shift] for v in values])
    else:
        def digits(v):
            out = []
            for _ in range(width):
                v, r = divmod(v, base)
                out.append(DIGITS[r])
            return "".join(reversed(out))
        text = "".join([digits(v + shift) for v in values])
    return {"w": width, "s": text}


def _unpack(packed, shift=0):
    """The values :func:`_pack` wrote (for tests and readers)."""
    base, width, text = len(DIGITS), packed["w"], packed["s"]
    at = {c: i for i, c in enumerate(DIGITS)}
    out = []
    for i in range(0, len(text), width):
        v = 0
        for c in text[i:i + width]:
            v = v * base + at[c]
        out.append(v - shift)
    return out


class _Frames:
    """Frames interned once for the whole page."""

    def __init__(self):
        self.index = {}
        self.files = {}
        self.file = []
        self.line = []
        self.text = []

    def intern(self, frame):
        key = (frame.filename, frame.lineno)
        found = self.index.get(key)
        if found is not None:
            return found
        fid = self.files.setdefault(frame.filename, len(self.files))
        found = self.index[key] = len(self.file)
        self.file.append(fid)
        self.line.append(frame.lineno)
        text = linecache.getline(frame.filename, frame.lineno).strip()
        self.text.append(text[:TEXT_CHARS])
        return found

    def to_json(self):
        return {"files": list(self.files),
                "file": self.file, "line": self.line, "text": self.text}


def _tree(snapshot, frames):
    """The snapshot's live tracebacks merged into one tree, in pre-order:
    (f, d, own) as the module's docstring says. Built of flat lists of
    ints, no container per node: a snapshot of 100,000 tracebacks makes
    near a million nodes."""
    # Node 0 is the root; a node's child is found by parent << 32 | frame.
    node_frame, parent_of, depth_of = [-1], [-1], [0]
    child = {}
    own = {}
    intern = frames.intern
    for (stack, size, count, _allocated, _allocations, native,
         resident) in snapshot.traces:
        if size <= 0:
            continue
        node = 0
        for frame in reversed(stack):
            fid = intern(frame)
            key = node << 32 | fid
            nxt = child.get(key)
            if nxt is None:
                nxt = child[key] = len(node_frame)
                node_frame.append(fid)
                parent_of.append(node)
                depth_of.append(depth_of[node] + 1)
            node = nxt
        figures = own.get(node)
        if figures is None:
            figures = own[node] = [0, 0, 0, 0]
        figures[1 if native else 0] += size
        figures[2] += count
        figures[3] += resident
    del child
    # Totals bottom-up: a child is always numbered after its parent.
    n = len(node_frame)
    total = [0] * n
    for node, figures in own.items():
        total[node] = figures[0] + figures[1]
    for node in range(n - 1, 0, -1):
        total[parent_of[node]] += total[node]
    # Every node's children side by side, largest first (then in the
    # order their frames were met): the children of p are
    # order[first[p]:first[p] + kids[p]].
    order = sorted(range(1, n), key=lambda k: (parent_of[k], -total[k],
                                               node_frame[k]))
    first, kids = [0] * n, [0] * n
    for at in range(len(order) - 1, -1, -1):
        p = parent_of[order[at]]
        first[p] = at
        kids[p] += 1
    f, d = [], []
    own_index, py, nat, blocks, res = [], [], [], [], []
    last = 0
    stack = [0]
    while stack:
        node = stack.pop()
        here = len(f)
        f.append(node_frame[node])
        d.append(depth_of[node])
        figures = own.get(node)
        if figures is not None:
            own_index.append(here - last)
            last = here
            py.append(figures[0])
            nat.append(figures[1])
            blocks.append(figures[2])
            res.append(figures[3])
        if kids[node]:
            stack.extend(reversed(order[first[node]:first[node]
                                        + kids[node]]))
    out = {"f": _pack(f, 1), "d": _pack(d),
           "own": {"i": own_index, "py": py, "n": blocks}}
    if snapshot.native:
        out["own"]["nat"] = nat
        out["own"]["res"] = res
    return out


def _lines(snapshot, frames):
    """The top lines, largest first (by resident bytes with native
    tracing, as Snapshot.format() orders them), and what the rest sum
    to."""
    stats = snapshot.statistics("lineno")
    shown, rest = stats[:TABLE_ROWS], stats[TABLE_ROWS:]
    rows = [[frames.intern(s.traceback[0]), s.size, s.native_size, s.count,
             s.resident] for s in shown]
    return rows, {"lines": len(rest), "size": sum(s.size for s in rest),
                  "resident": sum(s.resident for s in rest)}


def _title(snapshot):
    return {"peak": "At the peak", "current": "Now"}.get(
        snapshot.kind, f"Snapshot ({snapshot.kind})")


def _notes(snapshot):
    """The sentences under a graph's heading, as Snapshot.format() says
    them."""
    out = [f"Total: {human(snapshot.total)} ({kib(snapshot.total)} KiB) in "
           f"{len(snapshot.traces)} sites; {snapshot.nframes} frames per "
           f"traceback"
           + (f", one sample per {snapshot.sample_bytes} bytes"
              if snapshot.sample_bytes else ", every allocation")]
    if snapshot.native:
        out.append(f"Resident: {human(snapshot.resident)}")
    if snapshot.rss_rise is not None:
        out.append(snapshot._reconciliation())
    return out, snapshot._warnings()


def _graph(snapshot, name, frames, title=None):
    data = _tree(snapshot, frames)
    rows, rest = _lines(snapshot, frames)
    notes, warnings = _notes(snapshot)
    data.update(id=name, title=title or _title(snapshot),
                native=bool(snapshot.native), total=snapshot.total,
                lines=rows, rest=rest, notes=notes, warnings=warnings)
    return data


def _timeline(value):
    timeline = Timeline.of(value)
    times, mem = timeline.times, timeline.mem
    peak = timeline.peak_index()
    t0 = min(times[:1] + [s.start for s in timeline.spans[:1]],
             default=0.0)
    keep = range(len(times))
    if len(times) > TIMELINE_POINTS:
        # Each bucket keeps its lowest and highest sample, in time order,
        # and the peak's bucket the peak itself.
        width = len(times) / (TIMELINE_POINTS // 2)
        keep = []
        for b in range(TIMELINE_POINTS // 2):
            lo, hi = int(b * width), min(int((b + 1) * width), len(times))
            if lo >= hi:
                continue
            part = range(lo, hi)
            keep.extend(sorted({min(part, key=mem.__getitem__),
                                max(part, key=mem.__getitem__)}))
    kept = list(keep)
    return {"t": [round(times[i] - t0, 4) for i in kept],
            "mib": [round(mem[i], 4) for i in kept],
            "peak": None if peak is None else kept.index(peak),
            "peak_mib": None if peak is None else mem[peak],
            "peak_s": None if peak is None else round(times[peak] - t0, 4),
            "start": t0,
            "spans": [[s.name, round(s.start - t0, 4), round(s.end - t0, 4)]
                      for s in timeline.spans]}


def data(snapshot, end=None, timeline=None):
    """The figures the page draws, as a dict ready for JSON (see the
    module's docstring)."""
    frames = _Frames()
    graphs = [_graph(snapshot, "g0", frames)]
    if end is not None:
        graphs.append(_graph(end, "g1", frames, "At the end"))
    out = {"version": 2, "digits": DIGITS, "graphs": graphs}
    out.update(frames.to_json())
    if timeline is not None:
        out["timeline"] = _timeline(timeline)
    return out


def _asset(name):
    with open(os.path.join(_HERE, name), encoding="utf-8") as f:
        return f.read()


def _json_in_script(value):
    """JSON that cannot end the ``<script>`` element it sits in: ``<``,
    ``>`` and ``&`` only appear inside its strings, written as escapes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026").replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029"))


def render(snapshot, end=None, timeline=None, title="memlens"):
    """One self-contained HTML document: the flame graph of `snapshot`
    (and of `end`), the `timeline` and the top lines."""
    figures = data(snapshot, end, timeline)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title>"
        f"<style>{_asset('_flamegraph.css')}</style></head>\n"
        f"<body><header><h1>{html.escape(title)}</h1>"
        "<label>Search <input id='search' type='search' "
        "placeholder='file, line or source; /regex/'></label>"
        "<span id='matched'></span></header>\n"
        "<main id='report'></main>\n"
        "<div id='tip' hidden></div>\n"
        "<script type='application/json' id='memlens-data'>"
        f"{_json_in_script(figures)}</script>\n"
        f"<script>{_asset('_flamegraph.js')}</script>\n"
        "</body></html>\n")

