"""Benchmark memlens's IPython magics against the usual alternatives.

Run with ``.venv/bin/python bench/bench_ipython.py`` (``make bench`` runs
it after bench_readings.py). In one run, in an in-process IPython shell
whose history lives in memory only, it measures side by side:

1. the wall time of ``%memit pass`` with memlens (``%load_ext memlens``)
   and with memory_profiler's magic, which polls RSS from a child process;
2. the time the per-cell watchers add to a ``pass`` cell: none, memlens's
   (``%memlens on``) and ipython_memory_usage's (``%imu_start``), which
   starts a sampling thread for every cell.

It ends with a "targets" section. It is a report, not a test: missing a
target still exits 0, but a real error (an import that fails, an exception
from one of the tools, a cell that fails) raises and exits non-zero.
"""

import contextlib
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (medians_of, min_max, parse_args, pass_fail,  # noqa: E402
                     print_header, print_warnings, section, target_line)

#: Target: memlens's %memit at least this many times cheaper than
#: memory_profiler's.
MEMIT_SPEEDUP_TARGET = 200.0

#: Target: memlens's watcher adds less than this to a cell (milliseconds).
WATCHER_OVERHEAD_TARGET_MS = 0.3

#: The cell every configuration of part 2 runs.
CELL = "pass"


QUICK_HELP = "fewer calls and cells (a smoke run of a few seconds)"


# --------------------------------------------------------------------------
# The shell
# --------------------------------------------------------------------------

def make_shell(ipython_dir):
    """A plain in-process InteractiveShell (the singleton, so that
    ``IPython.get_ipython()`` finds it, as ipython_memory_usage needs).
    History stays in memory: no SQLite file, no saving thread. The profile
    directory is created under `ipython_dir`, not in ~/.ipython."""
    from traitlets.config import Config
    from IPython.core.interactiveshell import InteractiveShell

    config = Config()
    config.HistoryManager.enabled = False
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.autocall = 0
    shell = InteractiveShell.instance(config=config, ipython_dir=ipython_dir)
    if shell.history_manager.save_thread is not None:
        raise RuntimeError("the benchmark shell started a history thread")
    return shell


def callbacks(shell):
    """The shell's event callbacks, to check that a phase left none."""
    return {event: list(funcs)
            for event, funcs in shell.events.callbacks.items()}


def owner_of(shell, magic):
    """Class name of the Magics instance behind line magic `magic`."""
    func = shell.magics_manager.magics["line"].get(magic)
    return None if func is None else type(func.__self__).__name__


@contextlib.contextmanager
def quiet():
    """stdout to /dev/null: memit lines and watcher lines are written (the
    writing is part of the cost) but not shown."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


# --------------------------------------------------------------------------
# 1. %memit pass
# --------------------------------------------------------------------------

def register_memory_profiler(shell):
    """memory_profiler's magics, registered from its Magics class (what its
    load_ipython_extension does, less the distutils version check)."""
    from memory_profiler import MemoryProfilerMagics

    shell.register_magics(MemoryProfilerMagics)
    return shell.magics_manager.registry["MemoryProfilerMagics"]


def unregister_magics(shell, magics):
    """Remove every magic `magics` registered (memory_profiler has no
    unload_ipython_extension)."""
    table = shell.magics_manager.magics
    for kind, names in magics.magics.items():
        for name in names:
            func = table[kind].get(name)
            if func is not None and getattr(func, "__self__", None) is magics:
                del table[kind][name]
    shell.magics_manager.registry.pop(type(magics).__name__, None)


def time_line_magic(shell, name, line, calls, warmup):
    """Seconds taken by each of `calls` run_line_magic(name, line) calls,
    after `warmup` untimed ones."""
    run = shell.run_line_magic
    clock = time.perf_counter
    times = []
    with quiet():
        for _ in range(warmup):
            run(name, line)
        for _ in range(calls):
            t0 = clock()
            run(name, line)
            times.append(clock() - t0)
    return times


def check_memit_result(label, result):
    """A %memit -o result whose peak is not a plausible RSS is an error."""
    rss_mib = psutil.Process().memory_info().rss / 2**20
    peak = result.peak if hasattr(result, "peak") else max(result.mem_usage)
    if not 0.5 * rss_mib <= peak <= 2 * rss_mib:
        raise RuntimeError(f"{label}: %memit -o reported a peak of "
                           f"{peak:.2f} MiB with RSS at {rss_mib:.2f} MiB")
    return peak


def bench_memit(shell, ml_calls, ml_gc_calls, mp_calls):
    before = callbacks(shell)
    results = {}

    # memlens
    shell.run_line_magic("load_ext", "memlens")
    try:
        if owner_of(shell, "memit") != "MemlensMagics":
            raise RuntimeError(f"%memit is {owner_of(shell, 'memit')}'s, "
                               "not memlens's")
        with quiet():
            ml_peak = check_memit_result(
                "memlens", shell.run_line_magic("memit", "-o pass"))
        results["memlens  %memit pass"] = time_line_magic(
            shell, "memit", "pass", ml_calls, warmup=20)
        results["memlens  %memit --gc pass"] = time_line_magic(
            shell, "memit", "--gc pass", ml_gc_calls, warmup=3)
    finally:
        shell.run_line_magic("unload_ext", "memlens")
    if owner_of(shell, "memit") is not None:
        raise RuntimeError("%memit still registered after %unload_ext memlens")

    # memory_profiler. Its warnings (a fork() in a process with threads,
    # for instance) are collected and summarised, not interleaved.
    magics = register_memory_profiler(shell)
    try:
        if owner_of(shell, "memit") != "MemoryProfilerMagics":
            raise RuntimeError(f"%memit is {owner_of(shell, 'memit')}'s, "
                               "not memory_profiler's")
        with warnings.catch_warnings(record=True) as mp_warnings:
            warnings.simplefilter("always")
            with quiet():
                mp_peak = check_memit_result(
                    "memory_profiler", shell.run_line_magic("memit",
                                                            "-o pass"))
            results["memory_profiler  %memit pass"] = time_line_magic(
                shell, "memit", "pass", mp_calls, warmup=1)
    finally:
        unregister_magics(shell, magics)
    if owner_of(shell, "memit") is not None:
        raise RuntimeError("%memit still registered after removing "
                           "memory_profiler's magics")
    if callbacks(shell) != before:
        raise RuntimeError("part 1 left event callbacks behind")
    return results, (ml_peak, mp_peak), mp_warnings


def report_memit(results, peaks, mp_warnings):
    section("1. %memit pass: wall time per call (median, min-max)", 60)
    medians = medians_of(results)
    for name, times in results.items():
        print(f"  {name:<30} {medians[name] * 1e3:9.3f} ms/call"
              f"   ({min_max(times, 3, 1e3)}; {len(times)} calls)")
    ratio = (medians["memory_profiler  %memit pass"]
             / medians["memlens  %memit pass"])
    gc_ratio = (medians["memory_profiler  %memit pass"]
                / medians["memlens  %memit --gc pass"])
    verdict = pass_fail(ratio >= MEMIT_SPEEDUP_TARGET)
    print()
    print(f"  memory_profiler / memlens        {ratio:8.1f}x"
          f"   (target >= {MEMIT_SPEEDUP_TARGET:g}x: {verdict})")
    print(f"  memory_profiler / memlens --gc   {gc_ratio:8.1f}x"
          "   (memory_profiler's %memit always runs gc.collect())")
    print(f"  %memit -o pass peak: memlens {peaks[0]:.2f} MiB, "
          f"memory_profiler {peaks[1]:.2f} MiB")
    print_warnings("memory_profiler", mp_warnings)
    print()
    return ratio


# --------------------------------------------------------------------------
# 2. Per-cell overhead of the watchers
# --------------------------------------------------------------------------

def run_cells(shell, count):
    """Seconds for `count` runs of CELL, stored in history as a notebook or
    terminal would."""
    run = shell.run_cell
    t0 = time.perf_counter()
    for _ in range(count):
        result = run(CELL, store_history=True)
        if not result.success:
            result.raise_error()
            raise RuntimeError(f"cell {CELL!r} failed: {result!r}")
    return time.perf_counter() - t0


def wait_for_threads(baseline, imu_module=None, timeout=10.0):
    """Wait until only the threads in `baseline` are left alive.
    ipython_memory_usage's samplers stop when its module-level flag
    `keep_watching` is false; a sampler that has only just started sets it
    back to true, hence the loop."""
    deadline = time.monotonic() + timeout
    while True:
        if imu_module is not None:
            imu_module.keep_watching = False
        extra = [t for t in threading.enumerate()
                 if t not in baseline and t.is_alive()]
        if not extra:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(extra)} thread(s) still alive after "
                               f"{timeout:g} s: {extra[:3]!r}")
        time.sleep(0.005)


class Configurations:
    """Turns each watcher on for one block of cells and off again."""

    def __init__(self, shell):
        self.shell = shell
        self.events = callbacks(shell)
        self.threads = set(threading.enumerate())
        self.imu = None

    def _check_clean(self, name):
        if callbacks(self.shell) != self.events:
            raise RuntimeError(f"{name} left event callbacks behind")
        wait_for_threads(self.threads, self.imu)

    @contextlib.contextmanager
    def none(self):
        yield
        self._check_clean("the baseline")

    @contextlib.contextmanager
    def memlens(self):
        shell = self.shell
        with quiet():
            shell.run_line_magic("load_ext", "memlens")
            try:
                shell.run_line_magic("memlens", "on")
                # The cell that turns it on is not measured; start from a
                # cell the watcher has seen begin.
                shell.run_cell(CELL, store_history=True)
                yield
            finally:
                shell.run_line_magic("memlens", "off")
                shell.run_line_magic("unload_ext", "memlens")
        self._check_clean("memlens's watcher")

    @contextlib.contextmanager
    def ipython_memory_usage(self):
        shell = self.shell
        with quiet():
            if self.imu is None:
                # Importing it needs the running shell (get_ipython()).
                shell.run_line_magic("load_ext", "ipython_memory_usage")
                import ipython_memory_usage.ipython_memory_usage as imu

                self.imu = imu
            try:
                shell.run_line_magic("imu_start", "")
                shell.run_cell(CELL, store_history=True)
                yield
            finally:
                shell.run_line_magic("imu_stop", "")
        self._check_clean("ipython_memory_usage's watcher")


#: Fewer cells for ipython_memory_usage: its post_run_cell callback calls
#: memory_profiler.memory_usage(), which sleeps its default interval (0.1 s)
#: after taking the reading, so every cell costs it at least 0.1 s.
IMU_CELLS_DIVISOR = 40


def bench_watchers(shell, cells, repeat):
    """Seconds per cell for each configuration, from `repeat` rounds of
    `cells` cells (cells / IMU_CELLS_DIVISOR for ipython_memory_usage).
    The configurations take turns within each round, the order reversed
    every other round, so that any drift of the machine affects them all
    alike. Each timed block is preceded by untimed cells in the same
    configuration: after ipython_memory_usage's block, which mostly sleeps,
    the next block would otherwise start on an idle, cold CPU. Returns the
    samples and the cell count of each configuration."""
    configs = Configurations(shell)
    imu_cells = max(5, cells // IMU_CELLS_DIVISOR)
    order = {
        "no watcher": (configs.none, cells),
        "memlens (%memlens on)": (configs.memlens, cells),
        "ipython_memory_usage (%imu_start)": (configs.ipython_memory_usage,
                                              imu_cells),
    }
    # Warm-up: first cells compile, import and fill caches.
    for start, count in order.values():
        with start(), quiet():
            run_cells(shell, min(count, 200))

    samples = {name: [] for name in order}
    for round_ in range(repeat):
        items = list(order.items())
        for name, (start, count) in (items[::-1] if round_ % 2 else items):
            gc.collect()
            with start(), quiet():
                run_cells(shell, max(1, count // 10))
                elapsed = run_cells(shell, count)
            samples[name].append(elapsed / count)
    return samples, {name: count for name, (_, count) in order.items()}


def report_watchers(samples, counts, repeat):
    """The median of each configuration, and what a watcher adds: the
    median over rounds of (watcher - no watcher) in the same round."""
    print(f"2. Per-cell overhead of the watchers on {CELL!r} cells "
          f"({repeat} rounds;")
    section("   median, min-max in ms/cell; output to /dev/null for all)", 60)
    base = samples["no watcher"]
    added = {name: statistics.median(w - b for w, b in zip(s, base)) * 1e3
             for name, s in samples.items() if name != "no watcher"}
    for name, s in samples.items():
        extra = f"   +{added[name]:.3f} ms" if name in added else ""
        print(f"  {name:<35} {statistics.median(s) * 1e3:8.3f} ms/cell"
              f"   ({min_max(s, 3, 1e3)}; {counts[name]:,} cells/round)"
              f"{extra}")
    ml = added["memlens (%memlens on)"]
    imu = added["ipython_memory_usage (%imu_start)"]
    ml_spread = [(w - b) * 1e3 for w, b in
                 zip(samples["memlens (%memlens on)"], base)]
    verdict = pass_fail(ml < WATCHER_OVERHEAD_TARGET_MS)
    print()
    print(f"  memlens adds              {ml:8.3f} ms/cell"
          f"   (target < {WATCHER_OVERHEAD_TARGET_MS:g} ms: {verdict};"
          f" rounds {min_max(ml_spread, 3)})")
    print(f"  ipython_memory_usage adds {imu:8.3f} ms/cell"
          "   (memory_profiler.memory_usage() sleeps 0.1 s per reading)")
    if ml > 0:
        print(f"  ipython_memory_usage / memlens overhead {imu / ml:8.1f}x")
    else:
        print("  ipython_memory_usage / memlens overhead: n/a (memlens's "
              "overhead is below the noise)")
    print()
    return ml, imu


# --------------------------------------------------------------------------

def main():
    args = parse_args(__doc__, QUICK_HELP)
    if args.quick:
        ml_calls, ml_gc_calls, mp_calls = 100, 10, 3
        cells, repeat = 300, 3
    else:
        ml_calls, ml_gc_calls, mp_calls = 500, 50, 10
        cells, repeat = 2_000, 5

    started = time.perf_counter()
    print_header("memlens IPython benchmark",
                 ("memlens", "ipython", "memory_profiler",
                  "ipython_memory_usage", "psutil"), 60, ram=True)
    print()
    with tempfile.TemporaryDirectory(prefix="memlens-bench-") as ipython_dir:
        shell = make_shell(ipython_dir)
        try:
            # Part 1 first: memory_profiler forks, and part 2 leaves
            # ipython_memory_usage imported (it cannot be unloaded).
            results, peaks, mp_warnings = bench_memit(
                shell, ml_calls, ml_gc_calls, mp_calls)
            memit_ratio = report_memit(results, peaks, mp_warnings)

            samples, counts = bench_watchers(shell, cells, repeat)
            ml_overhead, imu_overhead = report_watchers(
                samples, counts, repeat)
        finally:
            shell.history_manager.end_session()
            type(shell).clear_instance()

    section("Targets", 60)
    targets = [
        (f"memlens %memit >= {MEMIT_SPEEDUP_TARGET:g}x cheaper than "
         f"memory_profiler's ({memit_ratio:.1f}x)",
         memit_ratio >= MEMIT_SPEEDUP_TARGET),
        (f"memlens's watcher adds < {WATCHER_OVERHEAD_TARGET_MS:g} ms per "
         f"cell ({ml_overhead:.3f} ms)",
         ml_overhead < WATCHER_OVERHEAD_TARGET_MS),
    ]
    for label, ok in targets:
        target_line(ok, label)
    print()
    print(f"(benchmark took {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
