"""``memlens plot``: memory over time from data files, with matplotlib.

matplotlib is an optional extra (``pip install 'memlens[plot]'``) and is
imported only here. The figure is drawn with matplotlib's object API (no
pyplot, no GUI backend): PNG, SVG and PDF come from ``savefig``; HTML is a
page embedding the SVG.
"""

import html
import io
import os

from memlens._errors import UsageError
from memlens._report import html_row

FORMATS = (".png", ".svg", ".pdf", ".html")

#: Colours: the memory line, the children, the function spans.
_MAIN = "#1f4e8c"
_PEAK = "#c0392b"
_CHILDREN = ("#8e44ad", "#a0522d", "#2c3e50", "#c71585", "#556b2f",
             "#b8860b", "#7f8c8d", "#d35400")
_SPANS = ("#4c9be8", "#f39c12", "#27ae60", "#e74c3c", "#1abc9c", "#e84393",
          "#95a5a6", "#f1c40f")

#: Legend entries beyond these are folded into "+N more".
_MAX_CHILD_LINES = 8
_MAX_SPAN_NAMES = 8


class PlotError(UsageError):
    """One line for the user."""


def check_output(path):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".htm":
        ext = ".html"
    if ext not in FORMATS:
        raise PlotError(f"cannot plot to {path!r}: give a file ending in "
                        f"{', '.join(FORMATS)}")
    return ext


def _load_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plotting needs matplotlib: "
                        "pip install 'memlens[plot]'") from None
    return Figure


def _label(text, limit=60):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _draw_run(ax, run, single, colour):
    """Draws one run; returns its peak (t, MiB)."""
    mem = run.memory
    t0 = run.start_time
    times = [t - t0 for t in mem.times]
    if single:
        counted = run.children_in_memory() if run.children else None
        label = {True: "total: this process and its children",
                 False: "this process"}.get(counted, "memory (RSS)")
    else:
        label = _label(os.path.basename(run.path), 40)
        if label.startswith("_"):
            label = " " + label  # matplotlib hides labels starting with _
    ax.plot(times, mem.mem, color=colour, linewidth=1.6, label=label,
            zorder=3)
    top = mem.peak_index()
    return times[top], mem.mem[top]


def _draw_children(ax, run):
    t0 = run.start_time
    own = run.own_memory()
    if own is not None:
        ax.plot([t - t0 for t in own.times], own.mem, color=_MAIN,
                linewidth=1.0, linestyle=":", label="this process", zorder=2)
    for i, (pid, series) in enumerate(run.children.items()):
        label = f"child {pid}" if i < _MAX_CHILD_LINES else None
        if i == _MAX_CHILD_LINES:
            label = f"+{len(run.children) - i} more children"
        ax.plot([t - t0 for t in series.times], series.mem,
                color=_CHILDREN[i % len(_CHILDREN)], linewidth=1.0,
                label=label, zorder=2)


def _short(name):
    """A function's name for the legend: no ``__main__.`` prefix, and no
    leading underscore (matplotlib hides labels that start with one)."""
    if name.startswith("__main__."):
        name = name[len("__main__."):]
    name = _label(name, 40)
    return " " + name if name.startswith("_") else name


def _draw_spans(ax, lane, run, duration):
    """Each call of a profiled function: a light band over the memory plot
    and a bar in the lane below it, one row per depth of nested calls, one
    colour per function, named inside when it is wide enough. Too short a
    call still gets a visible sliver. Returns legend handles."""
    from matplotlib.patches import Patch, Rectangle

    t0 = run.start_time
    names = list(dict.fromkeys(s.name for s in run.spans))
    colours = {n: _SPANS[i % len(_SPANS)] for i, n in enumerate(names)}
    counts = dict.fromkeys(names, 0)
    for s in run.spans:
        counts[s.name] += 1
    least = duration * 0.003
    for s in run.spans:
        start, end = s.start - t0, s.end - t0
        if end - start < least:
            end = start + least
        colour = colours[s.name]
        ax.axvspan(start, end, color=colour, alpha=0.10, linewidth=0,
                   zorder=1)
        lane.add_patch(Rectangle((start, s.depth + 0.08), end - start, 0.84,
                                 facecolor=colour, edgecolor="white",
                                 linewidth=0.5, alpha=0.85))
        if end - start > duration * 0.08:
            lane.text(start + (end - start) / 2, s.depth + 0.5,
                      _short(s.name).strip(), ha="center", va="center",
                      fontsize=7, clip_on=True)
    depth = max(s.depth for s in run.spans) + 1
    lane.set_ylim(depth, 0)
    lane.set_yticks([])
    lane.set_ylabel("calls", rotation=0, ha="right", va="center",
                    fontsize=8)
    handles = [Patch(facecolor=colours[n], alpha=0.85,
                     label=f"{_short(n)} ({counts[n]} call"
                           f"{'' if counts[n] == 1 else 's'})")
               for n in names[:_MAX_SPAN_NAMES]]
    if len(names) > _MAX_SPAN_NAMES:
        handles.append(Patch(facecolor="none", edgecolor="none",
                             label=f"+{len(names) - _MAX_SPAN_NAMES} more "
                                   "functions"))
    return handles


def _draw_traced_peak(ax, run, when):
    """When the traced peak was, from the run's trace: after `when[0]`
    and by `when[1]` (epoch seconds), a thin band."""
    after, by = when
    t1 = by - run.start_time
    t0 = t1 if after is None else max(after - run.start_time, 0.0)
    ax.axvspan(t0, t1, color=_PEAK, alpha=0.25, linewidth=0.8, zorder=2,
               label=f"traced peak, seen at {t1:.2f} s")


def figure(runs, title=None, traced=None):
    """A matplotlib Figure of the runs (RunData with samples); `traced`,
    when given, (after, by) epoch times of each run's traced peak (or
    None)."""
    Figure = _load_matplotlib()
    single = len(runs) == 1
    spans = single and bool(runs[0].spans)
    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    if spans:
        rows = min(max(s.depth for s in runs[0].spans) + 1, 6)
        grid = fig.add_gridspec(2, 1, height_ratios=[12, 1 + rows])
        ax = fig.add_subplot(grid[0])
        lane = fig.add_subplot(grid[1], sharex=ax)
        ax.tick_params(labelbottom=False)
    else:
        ax = lane = fig.add_subplot()
    peaks, extra = [], []
    for i, run in enumerate(runs):
        colour = _MAIN if single else _SPANS[i % len(_SPANS)]
        peaks.append(_draw_run(ax, run, single, colour))
    if single:
        run = runs[0]
        _draw_children(ax, run)
        if spans:
            duration = run.memory.times[-1] - run.start_time
            extra = _draw_spans(ax, lane, run, max(duration, 1e-3))
    for run, when in zip(runs, traced or ()):
        if when is not None:
            _draw_traced_peak(ax, run, when)
    end = max(run.memory.times[-1] - run.start_time for run in runs)
    for t, m in peaks:
        ax.plot([t], [m], marker="o", markersize=7, color=_PEAK, zorder=4)
        ax.axhline(m, color=_PEAK, linewidth=0.8, linestyle="--", alpha=0.6,
                   zorder=2)
        # Written on the side with room: right of an early peak, left of
        # a late one.
        left = t > 0.6 * end
        ax.annotate(f"peak {m:.2f} MiB at {t:.2f} s", xy=(t, m),
                    xytext=(-8 if left else 8, 6),
                    textcoords="offset points",
                    ha="right" if left else "left", color=_PEAK,
                    fontsize=9, zorder=5)
    # Children drawn apart from MEM (mprof's -M) may rise above it.
    highest = max([m for _, m in peaks]
                  + [max(s.mem) for run in runs[:1] if single
                     for s in run.children.values() if s.mem])
    ax.set_ylim(bottom=0, top=highest * 1.15 or 1)
    ax.set_xlim(left=0)
    lane.set_xlabel("time (s)")
    ax.set_ylabel("memory (MiB)")
    if title is None:
        title = runs[0].cmdline if single and runs[0].cmdline else (
            "memory over time")
    ax.set_title(_label(title, 90))
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    # Beside the plot, where it hides nothing.
    ax.legend(handles=handles + extra, loc="upper left", fontsize=8,
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    return fig


def _html_page(fig, runs, title):
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # inline: no XML prolog, no doctype
    rows = []
    for run in runs:
        s = run.summary()
        rows.append(html_row((
            run.path, s["samples"], f"{s['duration_s']:.2f} s",
            f"{s['peak_mib']:.2f} MiB", f"{s['peak_time_s']:.2f} s")))
    head = html.escape(title or runs[0].cmdline or "memlens")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
        "<meta charset=\"utf-8\">\n"
        f"<title>memlens: {head}</title>\n"
        "<style>body{font-family:sans-serif;margin:1.5em}"
        "svg{max-width:100%;height:auto}"
        "table{border-collapse:collapse}"
        "td,th{padding:.2em .8em;border-bottom:1px solid #ddd;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
        "</style>\n</head>\n<body>\n"
        f"{svg}\n"
        "<table>\n"
        + html_row(("data file", "samples", "duration", "peak", "peak at"),
                   "th") + "\n"
        + "\n".join(rows) + "\n</table>\n</body>\n</html>\n")


def save(runs, out, title=None, traced=None):
    """Draws `runs` into file `out` (its extension says the format);
    `traced` as figure()'s."""
    ext = check_output(out)
    fig = figure(runs, title, traced)
    if ext == ".html":
        page = _html_page(fig, runs, title)
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    else:
        fig.savefig(out, format=ext[1:])
