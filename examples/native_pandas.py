"""Native memory in a pandas ETL: which lines hold the memory RSS shows.

A 400,000-row frame (ints, floats, strings) is written to a CSV file, then,
under ``memlens.tracing(native=True)``, read back with ``read_csv``, its
text columns joined into Arrow strings, and grouped. The parser's buffers
and the Arrow string data come from C and C++ code, not from Python's allocators: native
tracing puts them on the Python lines that caused them, in resident bytes,
and says how much of the RSS rise the lines explain.

pandas' own Python code sits between these lines and the allocations, so
the tracing keeps deep tracebacks and the report sums them by the line of
this script they pass through.

Arrow's memory pool (jemalloc or mimalloc) carves its buffers out of
large arenas it maps itself: native tracing counts an arena's resident
pages on the line that mapped it, whichever line later fills it.

    python examples/native_pandas.py          the report
    python examples/native_pandas.py --json   the figures, as JSON
"""
import argparse
import gc
import json
import linecache
import os
import sys
import tempfile


import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import memlens  # noqa: E402

ROWS = 400_000
CITIES = ["Amsterdam", "Berlin", "Cairo", "Dakar", "Edinburgh", "Fukuoka",
          "Geneva", "Hanoi", "Istanbul", "Jakarta", "Kyiv", "Lima"]

#: Frames kept per allocation: enough to reach this script's lines from
#: inside pandas and pyarrow.
NFRAMES = 40

MiB = 2**20


def build_frame(rows):
    """A frame of `rows` rows: ids, prices, quantities, a city and two
    free-text columns."""
    rng = np.random.default_rng(20)
    ids = np.arange(rows)
    return pd.DataFrame({
        "id": ids,
        "price": rng.random(rows) * 100,
        "qty": rng.integers(1, 50, rows),
        "city": rng.choice(CITIES, rows),
        "sku": [f"sku-{i:08d}-{i % 97:02d}" for i in ids],
        "note": [f"order {i} shipped in {i % 13 + 1} parcels" for i in ids],
    })


def etl(path):
    """Reads the CSV file at `path`, makes a label of its text columns as
    Arrow strings and sums the orders by city; the frame and the sums."""
    frame = pd.read_csv(path)
    text = frame["city"].str.cat([frame["sku"], frame["note"]], sep="/")
    frame["label"] = text.astype("string[pyarrow]")
    frame["total"] = frame["price"] * frame["qty"]
    sums = frame.groupby("city")["total"].sum()
    return frame, sums


def run():
    """The ETL under native tracing: the tracing object (.peak, .snapshot)
    and the sums."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "orders.csv")
        frame = build_frame(ROWS)
        frame.to_csv(path, index=False)
        del frame
        gc.collect()
        with memlens.tracing(NFRAMES, native=True) as traced:
            frame, sums = etl(path)
        del frame
    return traced, sums


def by_script_line(snapshot):
    """[(lineno, resident, allocated, native)] of this script's lines,
    most resident first: each traceback of `snapshot` counts on the
    innermost line of this script it passes through (none if it passes
    through none)."""
    here = os.path.abspath(__file__)
    lines = {}
    for stat in snapshot.top(None, key="traceback"):
        for frame in stat.traceback:
            if os.path.abspath(frame.filename) == here:
                entry = lines.setdefault(frame.lineno, [0, 0, 0])
                entry[0] += stat.resident
                entry[1] += stat.size
                entry[2] += stat.native_size
                break
    rows = [(lineno, *figures) for lineno, figures in lines.items()]
    rows.sort(key=lambda row: (-row[1], row[0]))
    return rows


def figures(traced):
    """The peak's reconciliation with RSS and its figures by line of this
    script, as a dict ready for JSON."""
    peak = traced.peak
    return {
        "rss_rise": peak.rss_rise,
        "resident": peak.resident,
        "overhead": peak.overhead,
        "untracked": peak.untracked,
        "explained": peak.explained,
        "lines": [{"lineno": lineno, "resident": resident,
                   "allocated": allocated, "native": native}
                  for lineno, resident, allocated, native
                  in by_script_line(peak)],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON")
    args = parser.parse_args(argv)
    traced, sums = run()
    if args.json:
        print(json.dumps(figures(traced), indent=1))
        return 0
    peak = traced.peak
    print(f"Orders by city ({ROWS:,} rows):")
    print(sums.round(2).to_string())
    print()
    print("At the peak, by line of this script (MiB):")
    print(f"  {'resident':>9} {'allocated':>9} {'native':>9}  line")
    for lineno, resident, allocated, native in by_script_line(peak)[:6]:
        source = linecache.getline(__file__, lineno).strip()
        print(f"  {resident / MiB:9.1f} {allocated / MiB:9.1f} "
              f"{native / MiB:9.1f}  {lineno}: {source}")
    print()
    print(f"RSS rose {peak.rss_rise / MiB:.1f} MiB from the start of tracing "
          f"to the peak, {peak.overhead / MiB:.1f} MiB of it memlens's own "
          f"tables.")
    share = ("" if peak.explained is None
             else f" ({peak.explained:.0%})")
    print(f"The rows hold {peak.resident / MiB:.1f} MiB of the rest{share}; "
          f"untracked: {peak.untracked / MiB:.1f} MiB (the interpreter, "
          f"library code, fragmentation).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
