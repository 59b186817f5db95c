"""The data-file commands: ``memlens plot``, ``peak``, ``list``, ``clean``
and ``report``."""

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
    out = args.output
    if out is None:
        out = os.path.splitext(os.path.basename(runs[0].path))[0] + ".png"
    plotting.save(runs, out, args.title)
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


def report(args):
    from memlens.cli import datafile

    path, = datafile.select([args.file] if args.file is not None else [])
    if args.csv:
        _report_csv(path)
        return 0
    summary = datafile.summarise(path)
    if args.json:
        import json

        print(json.dumps(summary, indent=2))
    else:
        print(_report_text(summary))
    return 0
