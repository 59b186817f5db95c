"""Benchmark memlens's line-by-line profile against memory_profiler and
line_profiler.

Run with ``.venv/bin/python bench/bench_line.py`` (``--quick`` for a smoke
run). In one run of one interpreter it measures the slowdown of two
workloads, profiled time / plain time (each the median over the repeats):

(a) a tight loop, ``s += i * i`` for n = 200,000: almost nothing but line
    events, the worst case for a line profiler;
(b) a list-building loop, ``rows.append((i, str(i), i * 0.5))``: a tuple,
    a str, a float and a list growth per iteration, the kind of loop one
    profiles for memory;

under ``memlens.LineProfiler`` (default and ``alloc=True``), line_profiler's
``LineProfiler`` (time, not memory: the usual yardstick for the cost of line
events) and memory_profiler's ``LineProfiler``. memory_profiler reads RSS
through psutil on every line and is far too slow for n iterations: it runs
n / 100 of them, and its slowdown is taken against the plain time of that
same smaller n. On 3.12+ memlens also runs with
``MEMLENS_LINE_BACKEND=settrace`` for comparison.

Also measured, as floors that show where memlens's time goes: the C trace
function that memlens's ``settrace`` backend installs, with no profiled
code; ``sys.settrace`` with no line callback at all (the interpreter's
tracing mode alone, which before 3.12 also runs every instruction
unspecialized); memlens's allocator hooks in light mode, which every line
profile installs, with no tracing; (3.11) the instrumented copy of the
code with no profile running, so that each hook returns at once; and
(3.12+) sys.monitoring LINE events delivered to memlens's C callback with
nothing to do.

Last, the cost of what a profile does once before it starts: giving
the C heap's free pages back to the OS (glibc's ``malloc_trim(0)``, so that
a line's figures do not depend on pages freed before), with nothing to give
back and after 40 MB of lists were built and freed, and a whole empty
``with LineProfiler(f):`` block, that call included.

Every tool profiles its own copy of each workload (same bytecode, its own
code object), so that no tool sees, or rewrites, another's code object;
before timing, each copy is run once under its tool (warm-up) and the
per-line counts are checked to show that every iteration was traced. The
timed block is ``with profiler: result = func(n)``, enabling and disabling
included, and the result is dropped only after the clock stops. The
tools take turns within each repeat (each round starting one place further
on), so that any drift of the machine affects them all alike. The garbage
collector stays on (it is part of the real cost of (b), for profiled and
plain runs alike); a collection is made before each timed run.

It ends with a "targets" section. It is a report, not a test: missing a
target still exits 0, but a real error (an import that fails, a tool that
raises or traces nothing) raises and exits non-zero.
"""

import os
import statistics
import sys
import time

import line_profiler
import memlens
import memory_profiler
from memlens import _core
from memlens.lineprof import backends
from memlens.lineprof import profiler as line_engine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (bracketed_seconds, copy_of, measure,  # noqa: E402
                     parse_args, print_header as print_common_header,
                     report_slowdowns, section, target_line)

#: Iterations of each workload.
N = 200_000

#: memory_profiler runs N // MP_DIVISOR iterations.
MP_DIVISOR = 100

#: Targets. Slowdowns are profiled / plain time.
TARGET_SETTRACE_A = 4.0    # (a), Python < 3.12 (settrace backend)
TARGET_SETTRACE_B = 1.5    # (b), Python < 3.12
TARGET_INSTRUMENT_A = 2.0  # (a), Python 3.11 (instrument backend)
TARGET_MONITORING_A = 2.0  # (a), Python 3.12+
TARGET_VS_MEMORY_PROFILER = 300.0  # memory_profiler's slowdown / memlens's

HAS_MONITORING = sys.version_info >= (3, 12)
HAS_INSTRUMENT = backends.HAS_INSTRUMENT

#: memlens's own choice of backend here (the environment may force one).
DEFAULT_BACKEND = backends.choose().name

#: How a failed target names the floor of the backend in use.
FLOOR_WORDS = {
    "floor_settrace": "the C trace function alone (no profiled code) costs",
    "floor_monitoring": "sys.monitoring LINE events to a no-op C callback "
                        "cost",
    "floor_instrument": "the instrumented code with hooks returning at once "
                        "costs",
}


QUICK_HELP = "5 repeats instead of 15 (a smoke run)"


# --------------------------------------------------------------------------
# The workloads
# --------------------------------------------------------------------------

def tight_loop(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def build_rows(n):
    rows = []
    for i in range(n):
        rows.append((i, str(i), i * 0.5))
    return rows


WORKLOADS = [
    ("a", "tight loop: s += i * i", tight_loop),
    ("b", "list building: rows.append((i, str(i), i * 0.5))", build_rows),
]


# --------------------------------------------------------------------------
# The tools: each gives run(n) -> seconds of one profiled call, and hits()
# -> the most occurrences of any line of its copy (to check the tracing)
# --------------------------------------------------------------------------

class Plain:
    label = "plain (no profiler)"
    divisor = 1

    def __init__(self, func):
        self.func = func

    def start(self):
        """Installs what the tool measures with (inside the timed block)."""

    def stop(self):
        """Takes it away again (inside the timed block too)."""

    def run(self, n):
        return bracketed_seconds(self.start, self.func, n, self.stop)

    def hits(self):
        return None


class PlainSmall(Plain):
    """The plain time of one call of n // MP_DIVISOR iterations, averaged
    over MP_DIVISOR calls in a row (one call is too short to time well)."""

    label = "plain (no profiler)"
    divisor = MP_DIVISOR

    def run(self, n):
        func = self.func
        calls = MP_DIVISOR
        results = [None] * calls
        t0 = time.perf_counter()
        for k in range(calls):
            results[k] = func(n)
        t1 = time.perf_counter()
        del results
        return (t1 - t0) / calls


class Memlens:
    divisor = 1

    def __init__(self, func, alloc=False, backend=None):
        self.func = func
        self.alloc = alloc
        self.backend = backend  # None: memlens's own choice
        self.prof = memlens.LineProfiler(func, alloc=alloc)
        self.used = None
        self.label = "memlens" + (" alloc=True" if alloc else "")

    def _set_env(self):
        """Force the backend, if asked; returns what to put back. The
        backend is chosen when the first profiler is enabled."""
        if self.backend is None:
            return None
        saved = os.environ.get(backends.ENV)
        os.environ[backends.ENV] = self.backend
        return (saved,)

    @staticmethod
    def _restore_env(saved):
        if saved is None:
            return
        if saved[0] is None:
            os.environ.pop(backends.ENV, None)
        else:
            os.environ[backends.ENV] = saved[0]

    def run(self, n):
        func, prof = self.func, self.prof
        saved = self._set_env()
        try:
            t0 = time.perf_counter()
            with prof:
                result = func(n)
            t1 = time.perf_counter()
        finally:
            self._restore_env(saved)
        del result
        return t1 - t0

    def warm_up(self, n):
        """One untimed run, which also records the backend used."""
        saved = self._set_env()
        try:
            with self.prof:
                self.used = line_engine._ENGINE.backend_name
                self.func(n)
        finally:
            self._restore_env(saved)
        self.label += f" [{self.used}" + (", forced]" if self.backend
                                          else "]")

    def hits(self):
        return max((rec.occurrences for fp in self.prof.results
                    for rec in fp.lines), default=0)


class SettraceFloor(Plain):
    """memlens's C trace function installed, nothing registered: the cost
    of the trace events themselves on the settrace backend."""

    label = "C trace function alone (no profiled code)"

    def start(self):
        _core._line_settrace(True)

    def stop(self):
        _core._line_settrace(False)


class TracingModeFloor(Plain):
    """sys.settrace with a global trace function that returns None: one
    Python call per function call, no line callback at all. What remains is
    the interpreter's own tracing mode (before 3.12 it also runs every
    instruction in its generic, unspecialized form)."""

    label = "sys.settrace, no line callback (tracing mode)"

    @staticmethod
    def _global_trace(frame, event, arg):
        return None

    def start(self):
        sys.settrace(self._global_trace)

    def stop(self):
        sys.settrace(None)


class HooksFloor(Plain):
    """memlens's allocator hooks in light mode (what every line profile
    installs, to know when RSS may have moved), with no tracing."""

    label = "memlens allocator hooks alone (no tracing)"

    def start(self):
        _core._line_begin(False)

    def stop(self):
        _core._line_end(False)


class MonitoringFloor(Plain):
    """sys.monitoring LINE events on this copy only, delivered to memlens's
    C LINE callback with no profiled frame open (it returns at once): the
    cost of the events themselves on the monitoring backend."""

    label = "sys.monitoring LINE -> no-op C callback"
    TOOL_NAME = "memlens-bench-floor"

    def start(self):
        M, code = sys.monitoring, self.func.__code__
        self.tool = next(t for t in (5, 4, 3, 2) if M.get_tool(t) is None)
        M.use_tool_id(self.tool, self.TOOL_NAME)
        M.register_callback(self.tool, M.events.LINE, _core._line_mon_line)
        M.set_local_events(self.tool, code, M.events.LINE)

    def stop(self):
        M, code = sys.monitoring, self.func.__code__
        M.set_local_events(self.tool, code, 0)
        M.register_callback(self.tool, M.events.LINE, None)
        M.free_tool_id(self.tool)


class InstrumentFloor(Plain):
    """This copy's code swapped for its instrumented copy, with no profile
    running: each hook is called and returns at once. The cost of the calls
    themselves on the instrument backend."""

    label = "instrumented code, hooks returning at once"

    def __init__(self, func):
        from memlens.lineprof import instrument
        super().__init__(func)
        self.code = func.__code__
        _core._line_add_code(self.code, line_engine._last_line(self.code))
        self.copy = instrument.instrument(self.code)

    def start(self):
        self.func.__code__ = self.copy

    def stop(self):
        self.func.__code__ = self.code


class LineProfilerTool(Plain):
    def __init__(self, func):
        self.func = func
        self.prof = line_profiler.LineProfiler(func)
        self.label = f"line_profiler {line_profiler.__version__} (time)"

    def start(self):
        self.prof.enable_by_count()

    def stop(self):
        self.prof.disable_by_count()

    def hits(self):
        timings = self.prof.get_stats().timings
        return max((nhits for lines in timings.values()
                    for _, nhits, _ in lines), default=0)


class MemoryProfilerTool(Plain):
    divisor = MP_DIVISOR

    def __init__(self, func):
        self.func = func
        self.prof = memory_profiler.LineProfiler(backend="psutil")
        self.prof.add_function(func)
        if func.__code__ not in self.prof.code_map:
            raise RuntimeError("memory_profiler did not register "
                               f"{func.__name__}")
        self.label = f"memory_profiler {memory_profiler.__version__}"

    def start(self):
        self.prof.enable_by_count()

    def stop(self):
        self.prof.disable_by_count()

    def hits(self):
        lines = self.prof.code_map.get(self.func.__code__, {})
        return max((occ for _, _, occ in lines.values()), default=0)


def make_tools(func):
    """The tools for one workload, each with its own copy; by key."""
    tools = {
        "plain": Plain(copy_of(func, "plain")),
        "memlens": Memlens(copy_of(func, "memlens")),
        "memlens_alloc": Memlens(copy_of(func, "memlens_alloc"), alloc=True),
    }
    if DEFAULT_BACKEND != "settrace":
        tools["memlens_st"] = Memlens(copy_of(func, "memlens_st"),
                                      backend="settrace")
        tools["memlens_alloc_st"] = Memlens(
            copy_of(func, "memlens_alloc_st"), alloc=True,
            backend="settrace")
    tools["floor_settrace"] = SettraceFloor(copy_of(func, "floor_settrace"))
    tools["floor_tracing"] = TracingModeFloor(copy_of(func, "floor_tracing"))
    tools["floor_hooks"] = HooksFloor(copy_of(func, "floor_hooks"))
    if HAS_MONITORING:
        tools["floor_monitoring"] = MonitoringFloor(
            copy_of(func, "floor_monitoring"))
    if HAS_INSTRUMENT:
        tools["floor_instrument"] = InstrumentFloor(
            copy_of(func, "floor_instrument"))
    tools["line_profiler"] = LineProfilerTool(copy_of(func, "line_profiler"))
    tools["plain_small"] = PlainSmall(copy_of(func, "plain_small"))
    tools["memory_profiler"] = MemoryProfilerTool(
        copy_of(func, "memory_profiler"))
    return tools


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------

def print_header(repeat):
    print_common_header("memlens line-by-line profile benchmark",
                        ("memlens", "memory_profiler", "line_profiler",
                         "psutil"), 72)
    chosen = backends.choose().name
    env = os.environ.get(backends.ENV)
    print(f"memlens line backend: {chosen}"
          + (f" ({backends.ENV}={env})" if env else " (auto)")
          + ("; also run with settrace forced, for comparison"
             if chosen != "settrace" else ""))
    print(f"n = {N:,} ({N // MP_DIVISOR:,} for memory_profiler); "
          f"{repeat} repeats, tools taking turns")
    print("slowdown = median time / plain median for the same n; "
          "+ns/iter = time added")
    print("per loop iteration (medians); by min = fastest run / fastest "
          "plain run, a")
    print("cross-check for a busy machine")
    print()
    return chosen


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------

def n_of(tool):
    """Iterations of one run of `tool` (fewer for memory_profiler)."""
    return N // tool.divisor


def base_of(tool):
    """The plain run for the same n as `tool`."""
    return "plain_small" if tool.divisor > 1 else "plain"


def warm_up_and_check(tools):
    """Run every tool once, untimed; check that each profiler traced every
    iteration of its copy (the loop's lines run n times)."""
    for key, tool in tools.items():
        n = n_of(tool)
        if isinstance(tool, Memlens):
            tool.prof.clear()
            tool.warm_up(n)
        else:
            tool.run(n)
        hits = tool.hits()
        if hits is not None and hits < n:
            raise RuntimeError(
                f"{tool.label}: the busiest line ran {hits} times in the "
                f"warm-up, expected at least {n}: the tool did not trace "
                "its function")
    for tool in tools.values():
        if isinstance(tool, Memlens):
            tool.prof.clear()


def median_us(func, repeat, setup=None):
    """Median microseconds of `func()` over `repeat` runs, `setup()` before
    each, untimed."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def free_forty_megabytes():
    for _ in range(5):
        x = [0] * 1_000_000
        del x


def report_start_costs(repeat):
    """What a profile pays once, when it starts: the heap trim."""
    section("Once per profile: the C heap's free pages given back "
            "(malloc_trim(0))", 72)
    idle = median_us(_core._trim_heap, repeat, setup=_core._trim_heap)
    freed = median_us(_core._trim_heap, repeat, setup=free_forty_megabytes)
    prof = memlens.LineProfiler(copy_of(tight_loop, "start_cost"))

    def empty_profile():
        with prof:
            pass

    whole = median_us(empty_profile, repeat)
    print(f"  trim, nothing to give back       {idle:10.1f} us")
    print(f"  trim, after 40 MB built and freed {freed:9.1f} us")
    print(f"  empty `with LineProfiler(f):`    {whole:10.1f} us "
          "(enable + disable, the trim included)")
    print(f"  one RSS reading (memlens.rss())  "
          f"{median_us(memlens.rss, repeat):10.1f} us")


def report(letter, title, tools, medians, samples):
    return report_slowdowns(f"({letter}) {title}", tools, medians, samples,
                            72, 46, n_of, base_of, show_n=True)


# --------------------------------------------------------------------------

def main():
    args = parse_args(__doc__, QUICK_HELP)
    repeat = 5 if args.quick else 15

    # Anything memlens is given in the environment is its default backend;
    # only the settrace rows force one, and put it back afterwards.
    chosen = print_header(repeat)

    results = {}
    for letter, title, func in WORKLOADS:
        tools = make_tools(func)
        warm_up_and_check(tools)
        medians, samples = measure(tools, repeat, n_of)
        results[letter] = report(letter, title, tools, medians, samples)

    report_start_costs(repeat)

    a, b = results["a"], results["b"]
    section("Targets (memlens = LineProfiler, alloc=False, backend "
            f"{chosen}; slowdown = profiled / plain median)", 72)
    # (workload, target, label): memlens's slowdown at most `target`.
    if HAS_MONITORING:
        slow_targets = [("a", TARGET_MONITORING_A, "on Python 3.12+")]
    elif chosen == "instrument":
        slow_targets = [("a", TARGET_INSTRUMENT_A, "on Python 3.11"),
                        ("b", TARGET_SETTRACE_B, "before Python 3.12")]
    else:
        slow_targets = [("a", TARGET_SETTRACE_A, "before Python 3.12"),
                        ("b", TARGET_SETTRACE_B, "before Python 3.12")]
    floor_key = f"floor_{chosen}"
    if not HAS_MONITORING:
        print("  (the targets before 3.12 are stated for 3.11; 3.9 and 3.10 "
              "use the settrace backend)")
    for letter, target, when in slow_targets:
        got = results[letter]["memlens"]
        ok = target_line(got <= target, f"({letter}) memlens <= "
                                         f"{target:g}x {when} ({got:.2f}x)")
        if not ok:
            floor = results[letter][floor_key]
            print(f"        {FLOOR_WORDS[floor_key]} {floor:.2f}x here"
                  + (f", the interpreter's tracing mode alone "
                     f"{results[letter]['floor_tracing']:.2f}x"
                     if chosen == "settrace" else "")
                  + f"; line_profiler {results[letter]['line_profiler']:.2f}x")
    vs_mp = a["memory_profiler"] / a["memlens"]
    target_line(vs_mp >= TARGET_VS_MEMORY_PROFILER,
                f"(a) memlens >= {TARGET_VS_MEMORY_PROFILER:g}x faster than "
                f"memory_profiler ({a['memory_profiler']:.0f}x / "
                f"{a['memlens']:.2f}x = {vs_mp:.0f}x)")
    vs_mp_b = b["memory_profiler"] / b["memlens"]
    print(f"  info  (b) memlens {b['memlens']:.2f}x, memory_profiler "
          f"{b['memory_profiler']:.0f}x: {vs_mp_b:.0f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
