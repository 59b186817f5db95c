"""Benchmark memlens's allocation tracing against tracemalloc and memray.

Run with ``.venv/bin/python bench/bench_tracing.py`` (``--quick`` for a
smoke run). In one run of one interpreter version it measures the slowdown,
traced time / plain time (each the median over the repeats), of three loops
of n = 200,000 iterations:

(1) keep: ``keep.append([i, i])``: a list, its item array and an int per
    iteration, all kept alive (the traced memory, and its peak, grow all
    the time);
(2) the same through a Python function, ``keep.append(make(i))`` with
    ``def make(i): return [i, i]``: the allocating frame is one call deeper;
(3) churn: ``x = [i, i]``: a list built and dropped at once (the same few
    blocks allocated and freed over and over; nothing stays alive);

under memlens exact (``memlens.start_tracing(1)``), memlens sampled
(``start_tracing(1, sample_bytes=512 * 1024)``), ``tracemalloc.start(1)``
and memray (``memray.Tracker(path, trace_python_allocators=True,
native_traces=False)``, every allocation written to a temporary file that
is deleted afterwards; "unavailable" if memray cannot be imported or its
Tracker fails on this Python). Also timed, as floors: memlens's hooks
linked on the three domains with nothing listening
(``_core._hooks_bare(True)``: every call passed straight on, what being an
allocator hook costs at all), and memlens's exact allocator hooks alone
(``_core._hooks_acquire(True)``: byte counters, no tracing).

The timed block is start, loop, stop (for memray: the ``with Tracker``
block), so enabling and disabling are included; the kept lists are dropped
only after the clock stops, and a collection is made before each timed run
(the garbage collector stays on: it is part of the real cost of (1) and
(2), traced and plain alike). Before timing, each tool runs each loop once,
untimed (warm-up), and that run is checked to have traced the loop (at least
n live blocks for memlens exact and tracemalloc, a positive traced size for
memlens sampled, at least n allocations in memray's file). The tools take
turns within each repeat, each round starting one place further on, so that
any drift of the machine affects them all alike. All of that is done in
five fresh processes, one after the other (``--processes``), and each
slowdown is the median of the five: how fast even the plain loop runs
varies from one process to the next by up to 15% (where its few blocks and
their pool land), and the hooks' share varies with it, so one process is
one draw. Each process's slowdown is shown too.

Then:

- bookkeeping bytes per live block at the end of the keep loop: memlens
  exact ``table_bytes / blocks`` from ``_core._trace_stats()``, tracemalloc
  ``get_tracemalloc_memory() / len(take_snapshot().traces)``;
- the cost of a snapshot with about 2 million live blocks traced, allocated
  from 32 lines: ``memlens.peak_snapshot()`` + ``.statistics('lineno')``,
  and ``memlens.take_snapshot().top(10)``, next to tracemalloc's
  ``take_snapshot().statistics('lineno')`` on the same objects.

Keeping the peak up to date (each site's bytes at the traced peak, for
``peak_snapshot()``) is part of every traced allocation and free, so its
cost is inside the slowdowns above; the keep loop, where the traced memory
reaches a new peak on nearly every allocation, is its worst case.

Native memory, the GIL held and outside Python's allocators, as C and C++
libraries take it: (4) and (5) a C extension the script builds
(bench/native/mallocloop.c), one call making n = 1,000,000 mallocs of 64
bytes, kept alive together then freed (4) or each freed at once (5); (6)
pandas ``read_csv`` of a generated CSV file of about 60 MB (ints, floats
and strings; its parser and the Arrow strings allocate in C and C++).
The targets are for (4) and (6), the issue's workloads; (5), a malloc and
a free of about 5 ns, is the hooks' floor, shown for information: any
hook through the offset table adds two indirect calls to each pair.
Each runs plain, under memlens native exact (``start_tracing(1,
native=True)``: every loaded library's malloc family and anonymous mmap
hooked), memlens native sampled (``sample_bytes=512 * 1024,
native=True``) and memray (``memray.Tracker(path)``, its defaults, which
hook every library's allocation functions), the tools taking turns in this
process; start and stop are inside the timed block. Each tool's warm-up
run is checked to have traced the workload.

It ends with a "targets" section. It is a report, not a test: missing a
target still exits 0, but a real error (an import that fails, a tool that
raises or traces nothing) raises and exits non-zero.
"""

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import memlens
from memlens import _core

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (bracketed_seconds, copy_of, measure,  # noqa: E402
                     min_max, parse_args, print_header as print_common_header,
                     report_slowdowns, section, target_line)

try:
    import memray
    MEMRAY_IMPORT_ERROR = None
except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
    memray = None
    MEMRAY_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

#: Iterations of each loop.
N = 200_000

#: memlens sampled: one record per this many bytes on average.
SAMPLE_BYTES = 512 * 1024

#: The snapshot test: live blocks wanted, and the lines they come from.
BIG_BLOCKS = 2_000_000
BIG_LINES = 32

#: The native workloads: mallocs per C call and their size; rows of the
#: CSV file read_csv reads (about 60 MB).
NATIVE_N = 1_000_000
NATIVE_SIZE = 64
CSV_ROWS = 700_000

#: Where the native workloads' C extension is.
NATIVE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "native", "mallocloop.c")

#: Targets.
TARGET_NATIVE_SAMPLED = 1.1    # memlens native sampled slowdown
#: Native workloads shown for information, not held to the targets.
NATIVE_FLOOR = ("5",)
TARGET_EXACT_KEEP = 2.0        # memlens exact slowdown on the keep loop
TARGET_VS_TRACEMALLOC = 0.5    # memlens exact overhead / tracemalloc's
TARGET_SAMPLED = 1.2           # memlens sampled slowdown, every loop
TARGET_BYTES_PER_BLOCK = 32.0  # memlens exact bookkeeping per live block
TARGET_SNAPSHOT_S = 0.5        # peak_snapshot() + statistics('lineno')


#: Fresh interpreters the loops are timed in (the slowdowns are the median
#: over them): how fast the plain loop itself runs depends on where a
#: process's blocks happen to land, by up to 15%, and one process is one
#: draw of that.
PROCESSES = 5

QUICK_HELP = ("5 repeats in this process instead of 15 in each of "
              f"{PROCESSES} fresh ones (a smoke run)")


# --------------------------------------------------------------------------
# The loops
# --------------------------------------------------------------------------

def make(i):
    return [i, i]


def keep_loop(n):
    keep = []
    for i in range(n):
        keep.append([i, i])
    return keep


def keep_func_loop(n):
    keep = []
    for i in range(n):
        keep.append(make(i))
    return keep


def churn_loop(n):
    for i in range(n):
        x = [i, i]
    return x


LOOPS = [
    ("1", "keep: keep.append([i, i])", keep_loop),
    ("2", "keep through a function: keep.append(make(i))", keep_func_loop),
    ("3", "churn: x = [i, i]", churn_loop),
]


# --------------------------------------------------------------------------
# The tools: run(n) -> seconds of one traced call; check(n) -> one untimed
# run that raises if nothing was traced
# --------------------------------------------------------------------------

class Plain:
    label = "plain (no tracing)"

    def __init__(self, func):
        self.func = func

    def run(self, n):
        func = self.func
        t0 = time.perf_counter()
        result = func(n)
        t1 = time.perf_counter()
        del result
        return t1 - t0

    def check(self, n):
        self.run(n)


class Bracketed(Plain):
    """A tool that starts before the loop and stops after it, both inside
    the timed block."""

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def run(self, n):
        return bracketed_seconds(self.start, self.func, n, self.stop)


class HooksFloor(Bracketed):
    """memlens's exact allocator hooks (byte counters), no tracing."""

    label = "memlens exact hooks, no tracing"

    def start(self):
        _core._hooks_acquire(True)

    def stop(self):
        _core._hooks_release(True)


class HooksBare(Bracketed):
    """memlens's allocator hooks linked on all three domains with nothing
    listening: every call passed straight on."""

    label = "memlens hooks passing calls on"

    def start(self):
        _core._hooks_bare(True)

    def stop(self):
        _core._hooks_bare(False)


class MemlensExact(Bracketed):
    label = "memlens exact"
    sample_bytes = 0

    def start(self):
        memlens.start_tracing(1, sample_bytes=self.sample_bytes)

    def stop(self):
        memlens.stop_tracing()

    def check(self, n):
        memlens.start_tracing(1, sample_bytes=self.sample_bytes)
        try:
            result = self.func(n)
            self._verify(n, result)
        finally:
            memlens.stop_tracing()
        del result

    def _verify(self, n, result):
        if isinstance(result, list) and len(result) == n:
            blocks = _core._trace_stats()["blocks"]
            if blocks < n:
                raise RuntimeError(f"{self.label}: {blocks} live blocks "
                                   f"traced after keeping {n} lists")
        else:  # churn: blocks come and go; the peak must have moved
            current, peak = memlens.traced_memory()
            if peak <= 0:
                raise RuntimeError(f"{self.label}: traced nothing")


class MemlensSampled(MemlensExact):
    label = f"memlens sampled ({SAMPLE_BYTES // 1024} KiB)"
    sample_bytes = SAMPLE_BYTES

    def _verify(self, n, result):
        current, peak = memlens.traced_memory()
        if peak <= 0:
            raise RuntimeError(f"{self.label}: traced nothing "
                               f"(traced_memory() = {(current, peak)})")


class Tracemalloc(Bracketed):
    label = "tracemalloc (1 frame)"

    def start(self):
        tracemalloc.start(1)

    def stop(self):
        tracemalloc.stop()

    def check(self, n):
        tracemalloc.start(1)
        try:
            result = self.func(n)
            current, peak = tracemalloc.get_traced_memory()
            if isinstance(result, list) and len(result) == n:
                traces = len(tracemalloc.take_snapshot().traces)
                if traces < n:
                    raise RuntimeError(f"{self.label}: {traces} traces "
                                       f"after keeping {n} lists")
            elif peak <= 0:
                raise RuntimeError(f"{self.label}: traced nothing")
        finally:
            tracemalloc.stop()
        del result


class Memray(Plain):
    """memray.Tracker around the loop, Python allocators traced, every
    allocation written to a fresh file in a temporary folder."""

    def __init__(self, func, folder):
        super().__init__(func)
        self.folder = folder
        self.count = 0
        self.label = "memray (python allocators)"

    def _path(self):
        self.count += 1
        return os.path.join(self.folder, f"{self.func.__name__}-"
                                         f"{self.count}.bin")

    #: memray.Tracker's options for this tool.
    options = {"trace_python_allocators": True, "native_traces": False}

    def run(self, n):
        func, path = self.func, self._path()
        try:
            t0 = time.perf_counter()
            with memray.Tracker(path, **self.options):
                result = func(n)
            t1 = time.perf_counter()
            del result
        finally:
            if os.path.exists(path):
                os.unlink(path)
        return t1 - t0

    def expected(self, n):
        """The allocations memray must have recorded for one run."""
        return n

    def check(self, n):
        path = self._path()
        try:
            with memray.Tracker(path, **self.options):
                result = self.func(n)
            del result
            reader = memray.FileReader(path)
            allocations = reader.metadata.total_allocations
            close = getattr(reader, "close", None)
            if close is not None:
                close()
            if allocations < self.expected(n):
                raise RuntimeError(f"{self.label}: {allocations} "
                                   f"allocations recorded, expected at "
                                   f"least {self.expected(n)}")
        finally:
            if os.path.exists(path):
                os.unlink(path)


def memray_status(folder):
    """None if memray's Tracker works here, else why not."""
    if memray is None:
        return f"import failed ({MEMRAY_IMPORT_ERROR})"
    path = os.path.join(folder, "probe.bin")
    try:
        with memray.Tracker(path, trace_python_allocators=True,
                            native_traces=False):
            [0] * 10
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        return f"Tracker failed ({type(exc).__name__}: {exc})"
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return None


def make_tools(func, memray_folder):
    """The tools for one loop, each with its own copy; by key."""
    tools = {
        "plain": Plain(copy_of(func, "plain")),
        "floor_bare": HooksBare(copy_of(func, "floor_bare")),
        "floor_hooks": HooksFloor(copy_of(func, "floor_hooks")),
        "exact": MemlensExact(copy_of(func, "exact")),
        "sampled": MemlensSampled(copy_of(func, "sampled")),
        "tracemalloc": Tracemalloc(copy_of(func, "tracemalloc")),
    }
    if memray_folder is not None:
        tools["memray"] = Memray(copy_of(func, "memray"), memray_folder)
    return tools


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------

def source_commit():
    """The commit of the source tree this script sits in, if it is a git
    checkout (the installed memlens may be older: reinstall after
    changing the C code)."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "log", "-1", "--format=%h %cI"],
            capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return ""
    return f"\n         (this script's git tree: {commit})"


def print_header(repeat, processes, memray_problem):
    print_common_header("memlens allocation tracing benchmark",
                        ("memlens", "memray", "numpy", "psutil", "pandas",
                         "pyarrow"), 72)
    print(f"memlens  {_core.__file__}" + source_commit())
    if memray_problem:
        print(f"memray   unavailable: {memray_problem}")
    where = (f"in each of {processes} fresh processes" if processes > 1
             else "in this process")
    print(f"n = {N:,}; {repeat} repeats {where}, tools taking turns;")
    print("timed: start, loop, stop. slowdown = median time / plain median "
          "of the same")
    print("process, then the median over the processes; +ns/iter = time "
          "added per loop")
    print("iteration; by min = fastest run / fastest plain run, a "
          "cross-check for a busy")
    print("machine")
    print()


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------

def n_of(tool):
    """Every tool runs the loop N times."""
    return N


def base_of(tool):
    """Every tool is compared with the one plain run."""
    return "plain"


def time_loops(repeat, memray_folder):
    """Times every tool on every loop in this process: the samples in
    seconds, by loop letter and tool key; and the tools' labels."""
    runs, labels = {}, {}
    for letter, _, func in LOOPS:
        tools = make_tools(func, memray_folder)
        for tool in tools.values():
            gc.collect()
            tool.check(N)
        _, runs[letter] = measure(tools, repeat, n_of)
        labels.update((key, tool.label) for key, tool in tools.items())
    return runs, labels


def time_loops_apart(processes, repeat, memray_folder):
    """time_loops() in `processes` fresh interpreters, one after the other;
    a list of their results."""
    results = []
    for _ in range(processes):
        argv = [sys.executable, os.path.abspath(__file__), "--child",
                "--repeat", str(repeat)]
        if memray_folder is not None:
            argv += ["--memray-folder", memray_folder]
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True,
                              check=True)
        runs, labels = json.loads(done.stdout)
        results.append((runs, labels))
    return results


def report(letter, title, results):
    """The table of one loop over the processes' results: for each tool
    the median over the processes of its median time, and of its slowdown
    (its median / the plain median of the same process); the time that
    adds per iteration; fastest run / fastest plain run; the spread; and
    each process's slowdown. Returns the slowdowns, by key."""
    section(f"({letter}) {title}", 72)
    print(f"  {'':<32} {'median ms':>9} {'slowdown':>8} {'+ns/iter':>8}"
          f" {'by min':>6}  {'min-max ms':<13} per process")
    runs = [r[letter] for r, _ in results]
    labels = results[0][1]
    plain = statistics.median(statistics.median(r[base_of(None)])
                              for r in runs)
    fastest_plain = min(min(r["plain"]) for r in runs)
    slowdowns = {}
    for key in runs[0]:
        each = [statistics.median(r[key]) / statistics.median(r["plain"])
                for r in runs]
        slowdowns[key] = statistics.median(each)
        median = statistics.median(statistics.median(r[key]) for r in runs)
        extra = (slowdowns[key] - 1) * plain / N * 1e9
        every = [t for r in runs for t in r[key]]
        by_min = min(every) / fastest_plain
        per = " ".join(f"{x:.2f}" for x in each) if len(each) > 1 else ""
        print(f"  {labels[key]:<32} {median * 1e3:>9.2f} "
              f"{slowdowns[key]:>7.2f}x {extra:>8.1f} {by_min:>5.2f}x"
              f"  {min_max(every, 2, 1e3):<13} {per}")
    print()
    return slowdowns


def bookkeeping():
    """Bytes of bookkeeping per live block at the end of the keep loop."""
    gc.collect()
    memlens.start_tracing(1)
    try:
        keep = keep_loop(N)
        stats = _core._trace_stats()
    finally:
        memlens.stop_tracing()
    del keep
    if stats["blocks"] < N:
        raise RuntimeError(f"memlens traced {stats['blocks']} blocks")
    ml = (stats["table_bytes"] / stats["blocks"], stats["table_bytes"],
          stats["blocks"])

    gc.collect()
    tracemalloc.start(1)
    try:
        keep = keep_loop(N)
        memory = tracemalloc.get_tracemalloc_memory()
        traces = len(tracemalloc.take_snapshot().traces)
    finally:
        tracemalloc.stop()
    del keep
    tm = (memory / traces, memory, traces)

    section(f"Bookkeeping per live block, end of the keep loop (n = {N:,})",
            72)
    print(f"  memlens exact  {ml[0]:6.1f} B/block  (table_bytes "
          f"{ml[1]:,} / blocks {ml[2]:,}; sites {stats['sites']})")
    print(f"  tracemalloc    {tm[0]:6.1f} B/block  "
          f"(get_tracemalloc_memory() {tm[1]:,} / traces {tm[2]:,})")
    print()
    return ml[0], tm[0]


def big_source():
    """A function keeping one small list per line, from BIG_LINES lines,
    for m iterations: about 2 blocks per list (object, item array) plus
    one int per iteration."""
    body = "\n".join("        keep.append([i])" for _ in range(BIG_LINES))
    src = ("def big(m):\n"
           "    keep = []\n"
           "    for i in range(1000, 1000 + m):\n"
           f"{body}\n"
           "    return keep\n")
    namespace = {}
    exec(compile(src, "<bench_tracing big>", "exec"), namespace)
    return namespace["big"]


def timed(func):
    t0 = time.perf_counter()
    result = func()
    return result, time.perf_counter() - t0


def snapshot_costs(repeat):
    """Snapshot costs with about BIG_BLOCKS live blocks traced."""
    big = big_source()
    m = BIG_BLOCKS // (2 * BIG_LINES + 1)
    gc.collect()
    memlens.start_tracing(1)
    try:
        keep = big(m)
        stats = _core._trace_stats()
        peak_s, top_s = [], []
        for _ in range(repeat):
            (snap, st), dt = timed(
                lambda: (lambda s: (s, s.statistics("lineno")))(
                    memlens.peak_snapshot()))
            peak_s.append(dt)
            top10, dt = timed(lambda: memlens.take_snapshot().top(10))
            top_s.append(dt)
    finally:
        memlens.stop_tracing()
    del keep
    rows = [r for r in st if r.filename == "<bench_tracing big>"]
    if len(rows) < BIG_LINES or sum(r.count for r in rows) < m * BIG_LINES:
        raise RuntimeError(f"peak_snapshot() found {len(rows)} lines, "
                           f"{sum(r.count for r in rows)} blocks")
    peak_cost = statistics.median(peak_s)
    top_cost = statistics.median(top_s)

    gc.collect()
    tracemalloc.start(1)
    try:
        keep = big(m)
        (tm_snap, tm_stats), tm_cost = timed(
            lambda: (lambda s: (s, s.statistics("lineno")))(
                tracemalloc.take_snapshot()))
        tm_traces = len(tm_snap.traces)
        del tm_snap, tm_stats
    finally:
        tracemalloc.stop()
    del keep
    gc.collect()

    section(f"Snapshots with {stats['blocks']:,} live blocks traced "
            f"({BIG_LINES} lines x {m:,} iterations; {stats['sites']} "
            f"sites; median of {repeat})", 72)
    rows_out = [
        ("memlens peak_snapshot() + statistics('lineno')", peak_cost,
         f"{len(st)} groups"),
        ("memlens take_snapshot().top(10)", top_cost,
         f"{len(top10)} rows"),
        ("tracemalloc take_snapshot() + statistics('lineno')", tm_cost,
         f"{tm_traces:,} traces; one run"),
    ]
    for label, cost, note in rows_out:
        print(f"  {label:<52} {cost * 1e3:9.2f} ms  ({note})")
    print(f"  memlens exact bookkeeping here: "
          f"{stats['table_bytes'] / stats['blocks']:.1f} B/block "
          f"(table_bytes {stats['table_bytes']:,})")
    print()
    return peak_cost, top_cost, stats["blocks"]


# --------------------------------------------------------------------------
# Native workloads: memory C code takes from malloc, outside Python's
# allocators
# --------------------------------------------------------------------------

def build_mallocloop(folder):
    """bench/native/mallocloop.c built as an extension of this interpreter
    in `folder`, and imported."""
    import importlib.util
    import shlex
    import sysconfig

    target = os.path.join(folder, "mallocloop"
                          + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    subprocess.run(cc + ["-shared", "-fPIC", "-O1",
                         "-I" + sysconfig.get_paths()["include"],
                         NATIVE_SOURCE, "-o", target],
                   check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("mallocloop", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(path, rows):
    """A CSV file of `rows` orders (ints, floats, strings) at `path`; its
    size in bytes."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(6)
    ids = np.arange(rows)
    pd.DataFrame({
        "id": ids,
        "price": rng.random(rows) * 100,
        "qty": rng.integers(1, 50, rows),
        "city": rng.choice(["Lima", "Oslo", "Hanoi", "Dakar"], rows),
        "sku": [f"sku-{i:08d}" for i in ids],
        "note": [f"order {i} in {i % 13 + 1} parcels" for i in ids],
    }).to_csv(path, index=False)
    return os.path.getsize(path)


class NativeExact(Bracketed):
    """memlens tracing with native=True: every loaded library's malloc
    family and anonymous mmap hooked."""

    label = "memlens native exact"
    sample_bytes = 0

    def __init__(self, func, expect):
        super().__init__(func)
        self.expect = expect

    def start(self):
        memlens.start_tracing(1, sample_bytes=self.sample_bytes, native=True)

    def stop(self):
        memlens.stop_tracing()

    def check(self, n):
        self.start()
        try:
            self.func(n)
            current, peak = memlens.traced_memory()
            native = memlens.take_snapshot().native
        finally:
            self.stop()
        if not native:
            raise RuntimeError(f"{self.label}: the snapshot is not native")
        if peak < self.expect:
            raise RuntimeError(f"{self.label}: traced peak {peak:,} bytes, "
                               f"expected at least {self.expect:,}")


class NativeSampled(NativeExact):
    label = f"memlens native sampled ({SAMPLE_BYTES // 1024} KiB)"
    sample_bytes = SAMPLE_BYTES


class MemrayDefault(Memray):
    """memray.Tracker(path) with its defaults: every library's allocation
    functions hooked, Python's own allocators seen only where they call
    malloc."""

    options = {}

    def __init__(self, func, folder, expect):
        super().__init__(func, folder)
        self.expect = expect
        self.label = "memray (defaults)"

    def expected(self, n):
        return self.expect


def native_workloads(folder):
    """[(letter, title, func, n, traced bytes at least, memray allocations
    at least)]: the C loops of mallocloop and pandas' read_csv."""
    import pandas as pd

    mallocloop = build_mallocloop(folder)
    path = os.path.join(folder, "orders.csv")
    size = write_csv(path, CSV_ROWS)

    def c_keep(n):
        return mallocloop.keep(n, NATIVE_SIZE)

    def c_churn(n):
        return mallocloop.churn(n, NATIVE_SIZE)

    def read_csv(n):
        return pd.read_csv(path)

    return [
        ("4", f"C extension: {NATIVE_N:,} x malloc({NATIVE_SIZE}) kept, "
              f"then freed", c_keep, NATIVE_N, NATIVE_N * NATIVE_SIZE,
         NATIVE_N),
        ("5", f"C extension: {NATIVE_N:,} x malloc({NATIVE_SIZE}) + free",
         c_churn, NATIVE_N, NATIVE_SIZE, NATIVE_N),
        ("6", f"pandas read_csv of {size / 2**20:.0f} MiB "
              f"({CSV_ROWS:,} rows)", read_csv, 1, size // 2, 1000),
    ]


def time_native(repeat, memray_folder, workloads):
    """Times plain, memlens native exact and sampled, and memray on each
    native workload in this process; {letter: slowdowns by key}."""
    results = {}
    for letter, title, func, n, expect, memray_expect in workloads:
        tools = {
            "plain": Plain(func),
            "native_exact": NativeExact(func, expect),
            "native_sampled": NativeSampled(func, 1),
        }
        if memray_folder is not None:
            tools["memray"] = MemrayDefault(func, memray_folder,
                                            memray_expect)
        for tool in tools.values():
            gc.collect()
            tool.check(n)
        medians, samples = measure(tools, repeat, lambda tool: n)
        results[letter] = report_slowdowns(
            f"({letter}) {title}; median of {repeat}", tools, medians,
            samples, 72, 34, lambda tool: n, lambda tool: "plain")
    return results


# --------------------------------------------------------------------------

def more_args(parser):
    parser.add_argument("--processes", type=int, default=PROCESSES,
                        help="fresh processes the loops are timed in "
                        f"(default {PROCESSES}; 1: this one)")
    # One process's share of the work, for the parent (not for users).
    parser.add_argument("--child", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memray-folder", help=argparse.SUPPRESS)


def main():
    args = parse_args(__doc__, QUICK_HELP, more_args)
    if args.child:
        print(json.dumps(time_loops(args.repeat, args.memray_folder)))
        return 0
    if args.processes < 1:
        print("--processes must be at least 1", file=sys.stderr)
        return 2
    repeat = 5 if args.quick else 15
    processes = 1 if args.quick else args.processes

    folder = tempfile.mkdtemp(prefix="memlens-bench-memray-")
    try:
        memray_problem = memray_status(folder)
        memray_folder = None if memray_problem else folder
        print_header(repeat, processes, memray_problem)
        if processes == 1:
            runs = [time_loops(repeat, memray_folder)]
        else:
            runs = time_loops_apart(processes, repeat, memray_folder)
        results = {}
        for letter, title, _ in LOOPS:
            results[letter] = report(letter, title, runs)
            if memray_problem:
                print(f"  memray: unavailable ({memray_problem})\n")
        native = time_native(3 if args.quick else 7, memray_folder,
                             native_workloads(folder))
        if memray_problem:
            print(f"  memray: unavailable ({memray_problem})\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    ml_bytes, tm_bytes = bookkeeping()
    peak_cost, top_cost, big_blocks = snapshot_costs(3 if args.quick else 5)

    print("Keeping the peak up to date: every traced allocation and free "
          "updates its")
    print("site's bytes at the peak; that cost is inside the slowdowns above "
          "(worst")
    print("case: loop (1), where nearly every allocation is a new peak).")
    print()

    section("Targets (slowdown = traced / plain median; overhead = "
            "slowdown - 1)", 72)

    keep = results["1"]
    target_line(keep["exact"] <= TARGET_EXACT_KEEP,
                f"(1) memlens exact <= {TARGET_EXACT_KEEP:g}x on the keep "
                f"loop ({keep['exact']:.2f}x)")
    for letter, _, _ in LOOPS:
        r = results[letter]
        ex, tm = r["exact"] - 1, r["tracemalloc"] - 1
        ok = ex <= TARGET_VS_TRACEMALLOC * tm
        target_line(ok, f"({letter}) memlens exact overhead <= "
                    f"{TARGET_VS_TRACEMALLOC:g} x tracemalloc's "
                    f"({ex:+.2f} vs {tm:+.2f}"
                    + (f", ratio {ex / tm:.2f})" if tm > 0 else ")"))
    for letter, _, _ in LOOPS:
        got = results[letter]["sampled"]
        target_line(got <= TARGET_SAMPLED,
                    f"({letter}) memlens sampled <= {TARGET_SAMPLED:g}x "
                    f"({got:.2f}x)")
    target_line(ml_bytes <= TARGET_BYTES_PER_BLOCK,
                f"memlens exact <= {TARGET_BYTES_PER_BLOCK:g} B per live "
                f"block ({ml_bytes:.1f}; tracemalloc {tm_bytes:.1f})")
    target_line(peak_cost <= TARGET_SNAPSHOT_S,
                f"peak_snapshot() + statistics('lineno') with {big_blocks:,} "
                f"blocks < {TARGET_SNAPSHOT_S:g} s ({peak_cost * 1e3:.1f} ms)")
    target_line(top_cost <= TARGET_SNAPSHOT_S,
                f"take_snapshot().top(10) with {big_blocks:,} blocks < "
                f"{TARGET_SNAPSHOT_S:g} s ({top_cost * 1e3:.1f} ms)")
    for letter, r in native.items():
        got = r["native_sampled"]
        exact = r["native_exact"] - 1
        if letter in NATIVE_FLOOR:
            print(f"  info  ({letter}) the hooks' floor: memlens native "
                  f"sampled {got:.2f}x, exact {exact + 1:.2f}x"
                  + (f", memray {r['memray']:.2f}x" if "memray" in r
                     else ""))
            continue
        target_line(got <= TARGET_NATIVE_SAMPLED,
                    f"({letter}) memlens native sampled <= "
                    f"{TARGET_NATIVE_SAMPLED:g}x ({got:.2f}x)")
        if "memray" in r:
            mr = r["memray"] - 1
            target_line(exact <= mr, f"({letter}) memlens native exact "
                        f"overhead <= memray's ({exact:+.2f} vs {mr:+.2f})")
    floors = ", ".join(f"({k}) {results[k]['floor_hooks']:.2f}x"
                       for k, _, _ in LOOPS)
    print(f"  info  memlens exact hooks alone (no tracing): {floors}")
    bare = ", ".join(f"({k}) {results[k]['floor_bare']:.2f}x"
                     for k, _, _ in LOOPS)
    print(f"  info  allocator hooks that pass every call on: {bare}")
    if memray_problem is None:
        mr = ", ".join(f"({k}) {results[k]['memray']:.2f}x"
                       for k, _, _ in LOOPS)
        print(f"  info  memray (python allocators): {mr}")
    else:
        print(f"  info  memray unavailable: {memray_problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
