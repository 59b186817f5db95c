"""Benchmark ``memlens run`` against ``mprof run`` (memory_profiler), and
``memlens run --trace`` against ``memray run`` and ``fil-profile run``.

Run with ``.venv/bin/python bench/bench_run.py`` (``--quick`` for a smoke
run, ``--seconds S`` for a shorter script; ``make bench`` runs it last).
In one run it times, as wall-clock seconds of a whole process (interpreter
start-up included), one script that computes for about two seconds:

- plain: ``python work.py N``;
- ``memlens run work.py N`` at its default interval (0.01 s) and at
  ``--interval 0.001``;
- ``mprof run work.py N`` at its default interval (0.1 s), at 0.01 s and
  at 0.001 s;
- ``memlens run --trace`` and ``memlens run --trace --native`` (every
  block, 10 frames: the defaults);
- ``memray run`` (Python frames; and ``--native``) and ``fil-profile
  run``, the tools that answer "what was alive at the peak" for a whole
  program, each skipped with a note when it is not installed
  (``pip install filprofiler`` has no wheel for every Python).

The script builds and drops tuples of an int and a str, keeping up to
200,000 of them, so that its memory moves. N is calibrated first so that
the plain loop takes about two seconds. The tools take turns within each
repeat, each round starting one place further on, so that any drift of the
machine affects them all alike; each figure is the median over the repeats.
Every run writes its data file to a temporary folder, and the samples a
run actually recorded are counted from that file: ``MEM`` lines, and the
rate between the first and the last of them, against the rate asked for.
The live meter is off (the output is not a terminal). The tracing tools
are set against ``memlens run`` without ``--trace`` (what tracing adds)
and against plain python; memray's and fil's outputs go to the same
temporary folder.

It ends with a "targets" section. It is a report, not a test: missing a
target still exits 0, but a real error (a run that fails, a data file
without samples) raises and exits non-zero.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (min_max, parse_args, print_header,  # noqa: E402
                     section, target_line, turns)

#: Seconds the plain loop is calibrated to take.
SECONDS = 2.0

#: Targets.
TARGET_OVERHEAD = 0.05  # memlens run adds under 5% of wall time
TARGET_RATE = 0.10      # and records within 10% of the asked rate

QUICK_HELP = "3 repeats instead of 7 (a smoke run)"

WORK = """\
import sys
import time

n = int(sys.argv[1])
start = time.perf_counter()
rows = []
for i in range(n):
    rows.append((i, str(i)))
    if len(rows) == 200_000:
        rows = []
print(time.perf_counter() - start)
"""

BIN = os.path.dirname(sys.executable)


class Tool:
    """One way to run the script: `argv(script, n, out)` is the command.
    A tool with an `interval` writes a data file, `out`, whose samples
    are counted; a `tracer` answers "what was alive at the peak"."""

    def __init__(self, key, label, interval, argv, tracer=False):
        self.key, self.label, self.interval, self.argv = (
            key, label, interval, argv)
        self.tracer = tracer


def tools_list():
    py = sys.executable
    mprof = os.path.join(BIN, "mprof")
    tools = [Tool("plain", "plain python", None,
                  lambda s, n, o: [py, s, str(n)])]
    for interval in (None, 0.001):
        flag = [] if interval is None else ["--interval", str(interval)]
        tools.append(Tool(
            f"memlens {interval or 0.01}", "memlens run", interval or 0.01,
            lambda s, n, o, flag=flag: [py, "-m", "memlens", "run", "-o", o,
                                        *flag, s, str(n)]))
    for interval in (None, 0.01, 0.001):
        flag = [] if interval is None else ["--interval", str(interval)]
        tools.append(Tool(
            f"mprof {interval or 0.1}", "mprof run", interval or 0.1,
            lambda s, n, o, flag=flag: [mprof, "run", "-o", o, *flag, s,
                                        str(n)]))
    for key, flags in (("memlens trace", ["--trace"]),
                       ("memlens trace native", ["--trace", "--native"])):
        tools.append(Tool(
            key, f"memlens run {' '.join(flags)}", 0.01,
            lambda s, n, o, flags=flags: [py, "-m", "memlens", "run", "-o",
                                          o, *flags, s, str(n)],
            tracer=True))
    memray = os.path.join(BIN, "memray")
    if os.path.exists(memray):
        for key, flags in (("memray", []), ("memray native", ["--native"])):
            tools.append(Tool(
                key, f"memray run {' '.join(flags)}".strip(), None,
                lambda s, n, o, flags=flags: [memray, "run", "-q", "-f",
                                              *flags, "-o", o + ".bin", s,
                                              str(n)],
                tracer=True))
    fil = os.path.join(BIN, "fil-profile")
    if os.path.exists(fil):
        tools.append(Tool(
            "fil", "fil-profile run", None,
            lambda s, n, o: [fil, "-o", o + ".fil", "--no-browser", "run",
                             s, str(n)],
            tracer=True))
    return {tool.key: tool for tool in tools}


def missing_tracers(tools):
    """Notes for the tracing tools this environment lacks."""
    notes = []
    if "memray" not in tools:
        notes.append("memray not installed: pip install memray")
    if "fil" not in tools:
        notes.append("fil-profile not installed (pip install filprofiler; "
                     "it has no wheel for every Python)")
    return notes


def run_once(argv):
    """Wall seconds of one process; raises if it fails."""
    begin = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True,
                            timeout=600)
    wall = time.perf_counter() - begin
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed ({result.returncode}):\n"
                           f"{result.stderr}")
    return wall, result.stdout


def recorded(path):
    """(MEM lines, their rate per second) of a data file."""
    times = []
    with open(path) as f:
        for line in f:
            if line.startswith("MEM "):
                times.append(float(line.split()[2]))
    if len(times) < 2:
        raise RuntimeError(f"{path}: fewer than two samples")
    return len(times), (len(times) - 1) / (times[-1] - times[0])


def loop_seconds(script, n):
    _, out = run_once([sys.executable, script, str(n)])
    return float(out.strip().splitlines()[-1])


def calibrate(script):
    """N for a plain loop of about SECONDS: scaled from a short run, then
    checked by the median of three runs of the full length."""
    n = 500_000
    while True:
        loop = loop_seconds(script, n)
        if loop > 0.25:
            break
        n *= 4
    n = int(n * SECONDS / loop)
    loop = statistics.median(loop_seconds(script, n) for _ in range(3))
    return int(n * SECONDS / loop)


def measure(tools, script, n, folder, repeat):
    walls = {key: [] for key in tools}
    counts = {key: [] for key in tools}
    rates = {key: [] for key in tools}
    for r, key, tool in turns(tools, repeat):
        out = os.path.join(folder, f"run-{r}-{key.replace(' ', '-')}.dat")
        wall, _ = run_once(tool.argv(script, n, out))
        walls[key].append(wall)
        if tool.interval is not None:
            count, rate = recorded(out)
            counts[key].append(count)
            rates[key].append(rate)
            os.remove(out)
        if tool.tracer:
            for extra in (out + ".trace", out + ".bin"):
                if os.path.exists(extra):
                    os.remove(extra)
            shutil.rmtree(out + ".fil", ignore_errors=True)
    return walls, counts, rates


def report_tracers(tools, walls, notes):
    """What tracing the whole program costs, against a plain memlens run
    and plain python, and memlens's tracing against the others'."""
    section("Tracing the whole program: what was alive at the peak", 78)
    plain = statistics.median(walls["plain"])
    run = statistics.median(walls["memlens 0.01"])
    print(f"  {'':<30} {'median s':>9} {'/ memlens run':>14} "
          f"{'/ plain':>8}")
    ratios = {}
    for key, tool in tools.items():
        if not tool.tracer:
            continue
        wall = statistics.median(walls[key])
        ratios[key] = wall
        print(f"  {tool.label:<30} {wall:>9.3f} {wall / run:>13.2f}x "
              f"{wall / plain:>7.2f}x")
    print()
    for mine, theirs in (("memlens trace", "memray"),
                         ("memlens trace", "fil"),
                         ("memlens trace native", "memray native")):
        if mine in ratios and theirs in ratios:
            print(f"  {tools[mine].label} / {tools[theirs].label}: "
                  f"{ratios[mine] / ratios[theirs]:.2f}x")
    for note in notes:
        print(f"  note  {note}")
    print()
    return ratios


def report(tools, walls, counts, rates):
    section("Wall time of the whole process (median of the repeats)", 78)
    print(f"  {'':<14} {'interval':>8} {'median s':>9} {'overhead':>9} "
          f"{'samples':>8} {'per s':>7} {'asked':>6}  min-max s")
    base = statistics.median(walls["plain"])
    results = {}
    for key, tool in tools.items():
        wall = statistics.median(walls[key])
        overhead = wall / base - 1
        if tool.interval is None:
            interval = samples = per_s = asked = ""
        else:
            interval = f"{tool.interval:g}"
            samples = f"{statistics.median(counts[key]):,.0f}"
            rate = statistics.median(rates[key])
            per_s, asked = f"{rate:,.0f}", f"{1 / tool.interval:,.0f}"
            results[key] = (overhead, rate)
        cell = "" if key == "plain" else f"{overhead:+.1%}"
        print(f"  {tool.label:<14} {interval:>8} {wall:>9.3f} {cell:>9} "
              f"{samples:>8} {per_s:>7} {asked:>6}  "
              f"{min_max(walls[key], 3)}")
    print()
    return results


def main():
    global SECONDS

    args = parse_args(__doc__, QUICK_HELP, lambda parser: parser.add_argument(
        "--seconds", type=float, default=SECONDS, metavar="S",
        help=f"seconds the plain script is calibrated to take (default "
             f"{SECONDS:g})"))
    SECONDS = args.seconds
    repeat = 3 if args.quick else 7
    if not os.path.exists(os.path.join(BIN, "mprof")):
        raise RuntimeError("mprof not found next to this Python: "
                           "pip install memory_profiler")
    folder = tempfile.mkdtemp(prefix="memlens-bench-run-")
    try:
        script = os.path.join(folder, "work.py")
        with open(script, "w") as f:
            f.write(WORK)
        n = calibrate(script)
        print_header("memlens run benchmark", ("memlens", "memory_profiler",
                                               "psutil", "memray",
                                               "filprofiler"), 78)
        print(f"script: a loop of n = {n:,} tuple appends (about "
              f"{SECONDS:g} s plain); {repeat} repeats, tools taking turns")
        print("overhead = median wall time / plain median - 1; samples = "
              "MEM lines in the")
        print("data file; per s = their rate from the first to the last")
        print()
        tools = tools_list()
        walls, counts, rates = measure(tools, script, n, folder, repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results = report({k: t for k, t in tools.items() if not t.tracer},
                     walls, counts, rates)
    report_tracers(tools, walls, missing_tracers(tools))

    section("Targets", 78)
    overhead, _ = results["memlens 0.01"]
    target_line(overhead < TARGET_OVERHEAD,
                f"memlens run (interval 0.01) adds < {TARGET_OVERHEAD:.0%} "
                f"({overhead:+.1%})")
    overhead, rate = results["memlens 0.001"]
    target_line(overhead < TARGET_OVERHEAD,
                f"memlens run --interval 0.001 adds < {TARGET_OVERHEAD:.0%} "
                f"({overhead:+.1%})")
    target_line(abs(rate / 1000 - 1) <= TARGET_RATE,
                f"memlens run --interval 0.001 records 1,000/s within "
                f"{TARGET_RATE:.0%} ({rate:,.0f}/s)")
    _, mp_rate = results["mprof 0.001"]
    print(f"  info  mprof run --interval 0.001 recorded {mp_rate:,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
