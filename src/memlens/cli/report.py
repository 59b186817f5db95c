"""The data-file commands: ``memlens plot``, ``peak``, ``list``, ``clean``,
``report`` and ``flamegraph``."""

import os
import sys

from memlens._errors import UsageError


def _read_all(names, newest=True):
    from memlens.cli import datafile

    return [datafile.read(p) for p in datafile.select(names, newest)]


def _need_samples(path, samples):
    if not samples:
        raise UsageError(f"{path}: no MEM samples in this data file")


def plot(args):
    from memlens.cli import plot as plotting

    if args.output is not None:
        plotting.check_output(args.output)
    runs = _read_all(args.files)
    for run in runs:
        _need_samples(run.path, run.samples)
    traced = [_peak_time(_load_trace(run.path, args.trace)) for run in runs]
    out = args.output
    if out is None:
        out = os.path.splitext(os.path.basename(runs[0].path))[0] + ".png"
    plotting.save(runs, out, args.title, traced)
    print(f"memlens: plot saved to {out}", file=sys.stderr)
    return 0


def peak(args):
    from memlens.cli import datafile

    # Every file is read before a line is printed: a bad one prints
    # nothing but its error.
    summaries = [datafile.summarise(p) for p in datafile.select(args.files)]
    for s in summaries:
        _need_samples(s["file"], s["samples"])
    for s in summaries:
        print(f"{s['file']}\t{s['peak_mib']:.2f} MiB")
        for child in s["children"]:
            print(f"  child {child['id']}\t{child['peak_mib']:.2f} MiB")
    return 0


def list_files(args):
    from memlens.cli import datafile

    for n, path in enumerate(datafile.data_files()):
        print(f"{n} {path} {datafile.started(path)}")
    return 0


def clean(args):
    from memlens.cli import datafile

    paths = [p for p in datafile.data_files()
             if os.path.basename(p).startswith("memlens_")]
    for path in paths:
        if args.dry_run:
            print(f"would delete {path}")
        else:
            os.remove(path)
            print(f"deleted {path}")
    return 0


def _seconds(s):
    return f"{s:.2f} s"


def _report_text(s):
    lines = [f"{s['file']}: {s['command'] or '(no command line)'}"]
    n = s["samples"]
    if n:
        every = (f" (one every {s['duration_s'] / (n - 1) * 1e3:.1f} ms)"
                 if n > 1 else "")
        lines.append(f"  samples    {n} over {_seconds(s['duration_s'])}"
                     f"{every}")
        lines.append(f"  memory     start {s['start_mib']:.2f} MiB, peak "
                     f"{s['peak_mib']:.2f} MiB at "
                     f"{_seconds(s['peak_time_s'])}, end "
                     f"{s['end_mib']:.2f} MiB")
    else:
        lines.append("  samples    none")
    if s["truncated"]:
        lines.append("  note       the last line was cut short (the run "
                     "was killed while writing it)")
    if s["functions"]:
        lines.append("  functions")
        for f in s["functions"]:
            lines.append(f"    {f['name']}: {f['calls']} call"
                         f"{'' if f['calls'] == 1 else 's'}, "
                         f"{_seconds(f['total_s'])} in all")
            for sp in f["spans"][:10]:
                when = f"{sp['start_s']:.2f} - {sp['end_s']:.2f} s"
                lines.append(f"      {when:<20} {sp['start_mib']:9.2f} -> "
                             f"{sp['end_mib']:9.2f} MiB"
                             + (f"  (depth {sp['depth']})"
                                if sp["depth"] else ""))
            if len(f["spans"]) > 10:
                lines.append(f"      ... {len(f['spans']) - 10} more")
    if s["children"]:
        lines.append("  children")
        for c in s["children"]:
            lines.append(f"    {c['id']}: peak {c['peak_mib']:.2f} MiB at "
                         f"{_seconds(c['peak_time_s'])}, seen "
                         f"{c['first_s']:.2f} - {c['last_s']:.2f} s "
                         f"({c['samples']} samples)")
    return "\n".join(lines)


def _report_csv(path):
    """The samples as CSV rows, printed as the file is read: seconds since
    the first, MiB, and a column per child, filled from the child's CHLD
    line of the same time written next to the MEM line (before the next
    MEM line), as memlens writes them; empty where there is none."""
    import csv

    from memlens.cli import datafile

    # A first pass finds the columns and checks the whole file, so that a
    # bad file prints its error and no rows.
    summary = datafile.summarise(path)
    t0 = summary["start_time"] or 0.0
    kids = [c["id"] for c in summary["children"]]
    column = {pid: i for i, pid in enumerate(kids, 2)}
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["time_s", "memory_mib"] + [f"child_{pid}_mib"
                                             for pid in kids])
    row, row_time = None, None
    near = {}  # pid: (time, MiB) of its CHLD lines since the last MEM line
    for record in datafile.records(path):
        kind = record[0]
        if kind == "CHLD":
            _, pid, mem, when = record
            if pid in column:
                near[pid] = (when, mem)
                if when == row_time:
                    row[column[pid]] = f"{mem:.6f}"
        elif kind == "MEM":
            if row is not None:
                out.writerow(row)
            _, mem, row_time = record
            row = [f"{row_time - t0:.6f}", f"{mem:.6f}"] + [""] * len(kids)
            for pid, (when, mem) in near.items():
                if when == row_time:
                    row[column[pid]] = f"{mem:.6f}"
            near.clear()
    if row is not None:
        out.writerow(row)


def _load_trace(path, required):
    """The Trace beside data file `path`: TraceFileError when it is
    corrupt, or missing and `required`; None when missing."""
    from memlens.cli import tracefile

    return tracefile.load_for(path, required)


def _peak_time(trace):
    """(after, by) epoch seconds of the traced peak, or None."""
    if trace is None or trace.peak is None or trace.peak_time is None:
        return None
    return trace.peak_after, trace.peak_time


#: Lines listed at the peak and at the end.
_TOP_PEAK, _TOP_END = 10, 5


def _trace_summary(trace, t0):
    """The trace's part of the report, as data."""
    meta = trace.meta

    def part(snap, limit):
        if snap is None:
            return None
        return {"total": snap.total, "resident": snap.resident,
                "rss_rise": snap.rss_rise, "lost_frees": snap.lost_frees,
                "lost_records": snap.lost_records,
                "top": [s.to_dict() for s in snap.top(limit)]}
    when = _peak_time(trace)
    return {"file": trace.path, "final": trace.final,
            "nframes": meta.get("nframes"),
            "sample_bytes": meta.get("sample_bytes"),
            "native": bool(meta.get("native")),
            "peak_after_s": (None if when is None or when[0] is None
                             else round(when[0] - t0, 6)),
            "peak_time_s": None if when is None else round(when[1] - t0, 6),
            "peak": part(trace.peak, _TOP_PEAK),
            "end": part(trace.end, _TOP_END)}


def _trace_text(t):
    how = [f"{t['nframes']} frames",
           "every block" if not t["sample_bytes"]
           else f"one block per {t['sample_bytes']} bytes",
           *(("native",) if t["native"] else ())]
    state = "" if t["final"] else (
        " (the run did not end: the last peak written while it ran)")
    lines = [f"  trace      {t['file']}: {', '.join(how)}{state}"]
    for name, key in (("at the peak", "peak"), ("at the end", "end")):
        part = t[key]
        if part is None:
            continue
        when = (f", seen at {_seconds(t['peak_time_s'])}"
                if key == "peak" and t["peak_time_s"] is not None else "")
        lines.append(f"  {name} (traced {part['total'] / 2**20:.2f} MiB"
                     f"{when})")
        for i, s in enumerate(part["top"], 1):
            lines.append(f"    #{i:<2} {s['filename']}:{s['lineno']}  "
                         f"{s['size'] / 2**20:.2f} MiB"
                         + (f"  {s['line']}" if s["line"] else ""))
    return lines


def report(args):
    from memlens.cli import datafile

    path, = datafile.select([args.file] if args.file is not None else [])
    if args.csv:
        if args.trace:
            _load_trace(path, True)
        _report_csv(path)
        return 0
    summary = datafile.summarise(path)
    trace = _load_trace(path, args.trace)
    summary["trace"] = (None if trace is None else
                        _trace_summary(trace, summary["start_time"] or 0.0))
    if args.json:
        import json

        print(json.dumps(summary, indent=2))
    else:
        text = _report_text(summary)
        if summary["trace"] is not None:
            text += "\n" + "\n".join(_trace_text(summary["trace"]))
        print(text)
    return 0


def flamegraph(args):
    """The trace beside a data file (``memlens run --trace``) as one
    self-contained HTML page: the peak and the end by traceback, the RSS
    timeline, the top lines."""
    from memlens.cli import datafile

    path, = datafile.select([args.file] if args.file is not None else [])
    trace = _load_trace(path, True)
    run = datafile.read(path)
    out = args.output
    if out is None:
        out = os.path.splitext(os.path.basename(path))[0] + ".html"
    title = args.title or f"memlens: {run.cmdline or path}"
    trace.peak.to_html(out, end=trace.end,
                       timeline=run if run.samples else None, title=title)
    print(f"memlens: flame graph saved to {out}", file=sys.stderr)
    return 0
