"""Repeated calls leak nothing: every public entry point and magic, called
thousands of times, leaves the process's RSS, its Python allocator blocks
and its gc-tracked objects where they were.

Each entry point runs in a process of its own (this file run as a script),
so that one's garbage or caches never count against another. It warms the
entry point up, then measures two runs of N calls, one after the other,
and keeps each figure's smaller growth of the two: a leak grows both
alike, while a cache filling up or an allocator pool taken once grows one
only. (The heap census, for one, leaves a dozen allocator blocks per call
over its first calls, then fewer and fewer: 314 over 20 calls after 20,
74 after 60, 1 after 300.) Settling before each figure collects and gives
free heap pages back to the OS.

The bounds hold for any N. Runs of each entry point on CPython 3.9, 3.11
and 3.13 measured growths of at most 16 KiB of RSS, no gc object, and 63
allocator blocks, but for two: %memsize, whose runs move by -160 to +240
blocks whatever their length (IPython evaluating the expression; 39 over
20,000 calls), and the census walks' first calls on 3.11 and later (up to
330 blocks over 20 calls). The bounds: 10 objects, 300 blocks (16 per
call for the census walks), 128 KiB of RSS. A leak of one object per call
fails every run; of one allocator block per call, every run of more than
300 calls, and so every `make leaks` run but the census walks'; of 512
bytes of C memory per call, every run of 300 calls or more. The census
walks' bound is still far below a leak of anything per object they visit
(tens of thousands).

`make leaks` runs each entry point ten times as often, against the same
bounds (the tests marked `leaks`); the quick runs are part of every `make
test`.
"""
import json
import os
import subprocess
import sys

import pytest

#: Growth in gc-tracked objects a run may show (gc.get_objects()).
OBJECTS_BOUND = 10
#: Growth in Python allocator blocks (sys.getallocatedblocks()).
BLOCKS_BOUND = 300
#: The same, per call, for the heap census walks (see above).
CENSUS_BLOCKS_PER_CALL = 16
CENSUS = ("heap", "points", "magic-memheap")
#: Growth in RSS, bytes (not under a sanitizer: its allocator quarantines
#: freed memory, so RSS does not come back).
RSS_BOUND = 128 * 1024

#: name -> (calls in each quick run, warm-up calls). `make leaks` makes
#: ten times as many calls. The warm-up fills every bounded history
#: (measure()'s 100 calls, the watcher's 1,000 cells).
ENTRY_POINTS = {
    "rss": (3000, 300),
    "memory": (500, 50),
    "peak": (2000, 200),
    "sampler": (500, 50),
    "memory-usage": (500, 50),
    "measure-block": (2000, 200),
    "measure-decorator": (2000, 200),
    "line-profiler": (500, 50),
    "line-profiler-new-functions": (500, 50),
    "profile-decorator": (500, 50),
    "tracing": (500, 50),
    "snapshots": (300, 30),
    "asizeof": (2000, 200),
    "asizeof-numpy": (2000, 200),
    "heap": (20, 20),
    "points": (50, 5),
    "pytest-limits": (150, 15),
    "magic-memit": (300, 30),
    "magic-cell-memit": (500, 50),
    "magic-mprun": (300, 30),
    "magic-mprun-redefined": (50, 5),
    "magic-memtop": (300, 30),
    "magic-memsize": (500, 50),
    "magic-memheap": (5, 3),
    "magic-watcher": (1000, 1100),
}

#: Entry points too slow for the quick runs (a census of a whole IPython
#: session takes 0.4 s): only `make leaks` runs them.
LONG_ONLY = ("magic-memheap",)

#: Entry points that leak today, with what leaks (strict: they fail once
#: fixed, so that the mark goes).
KNOWN_LEAKS = {}


# --------------------------------------------------------------------------
# The entry points, as run in the child. Each returns a step() to repeat.

def _sink():
    import io

    class Sink(io.TextIOBase):
        def write(self, text):
            return len(text)

        def writable(self):
            return True

    return Sink()


def ep_rss():
    import memlens
    return memlens.rss


def ep_memory():
    import memlens

    def step():
        memlens.memory()
        memlens.memory(detail=True)
    return step


def ep_peak():
    import memlens

    def step():
        with memlens.peak() as p:
            block = bytearray(64 * 1024)
            del block
        p.to_dict()
    return step


def ep_sampler():
    import memlens

    def step():
        with memlens.Sampler(interval=0.001) as s:
            pass
        s.to_dict()
    return step


def ep_memory_usage():
    import memlens

    def work():
        return bytearray(64 * 1024)

    def step():
        memlens.memory_usage(-1, interval=0.001, timeout=0.003,
                             multiprocess=True, timestamps=True)
        memlens.memory_usage((work,), max_usage=True, retval=True)
    return step


def ep_measure_block():
    import memlens

    def step():
        with memlens.measure("block") as m:
            block = [0] * 1000
            del block
        m.to_dict()
    return step


def ep_measure_decorator():
    import memlens

    @memlens.measure(report=True, file=_sink())
    def build():
        return [0] * 1000

    return build


def _work():
    a = [0] * 1000
    b = {i: str(i) for i in range(20)}
    return len(a) + len(b)


def ep_line_profiler():
    import memlens
    sink = _sink()

    def step():
        profiler = memlens.LineProfiler(_work, alloc=True)
        with profiler:
            _work()
        profiler.print_stats(stream=sink)
        [f.to_dict() for f in profiler.results]
    return step


def ep_line_profiler_new_functions():
    # Each profiler gets a function made afresh, then both are dropped.
    import memlens
    sink = _sink()

    def step():
        def made():
            a = [0] * 1000
            return len(a)

        profiler = memlens.LineProfiler(made)
        with profiler:
            made()
        profiler.print_stats(stream=sink)
    return step


def ep_profile_decorator():
    import memlens
    return memlens.profile(_work, stream=_sink())


def ep_tracing():
    import memlens

    def step():
        memlens.start_tracing(2)
        block = [bytes(100) for _ in range(50)]
        memlens.is_tracing()
        memlens.traced_memory()
        memlens.reset_peak()
        del block
        memlens.stop_tracing()
        with memlens.tracing():
            block = bytearray(10_000)
            del block
    return step


def ep_snapshots():
    import memlens

    def step():
        with memlens.tracing(nframes=3):
            first = memlens.take_snapshot()
            block = [str(i) for i in range(200)]
            now = memlens.take_snapshot()
            top = memlens.peak_snapshot()
            del block
        now.statistics("traceback")
        now.top(5, key="filename")
        now.diff(first)
        now.format(5)
        top.to_json()
        top.folded()
        top.speedscope()
        now.to_dict()
    return step


def ep_asizeof():
    import memlens

    class Slotted:
        __slots__ = ("a", "b")

        def __init__(self):
            self.a, self.b = [1, 2], "x" * 10

    class Plain:
        def __init__(self):
            self.d = {"k": (1, 2.5, b"z")}

    shared = [1, 2, 3]
    value = {"list": [shared, shared, {1, 2}], "objs": [Slotted(), Plain()],
             "text": "é" * 50, "cycle": []}
    value["cycle"].append(value)

    def step():
        memlens.asizeof(value)
        memlens.asizesof(value, shared, limit=2)
        memlens.asizeof(_work)
    return step


def ep_asizeof_numpy():
    import numpy as np

    import memlens

    class Sub(np.ndarray):
        pass

    owner = np.empty(20, dtype=object)
    owner[:] = [[i] for i in range(20)]
    structured = np.zeros(3, dtype=[("n", "i4"), ("o", "O")])
    structured[1]["o"] = "text"
    values = [np.ones(100), owner, owner[::3], structured,
              np.ones(50).view(Sub), owner.view(Sub)[2:]]

    def step():
        memlens.asizeof(values)
    return step


def ep_heap():
    import memlens

    def step():
        census = memlens.heap()
        census.format(limit=5)
        census.diff(census)
        census.to_dict()
    return step


def ep_points():
    from memlens import points

    def step():
        points.MEMORY()
    return step


def ep_pytest_limits():
    # The limit markers' path of the pytest plugin: what it does around a
    # test's call, over a test that overruns both limits.
    import pathlib

    from memlens import pytest_plugin

    limit = pytest_plugin.Limit(pytest_plugin.parse_size("1 KB"), "1 KB")
    limits = {"limit_memory": limit, "limit_allocations": limit}
    root = pathlib.Path.cwd()

    def step():
        meter = pytest_plugin._Meter(limits)
        meter.start()
        try:
            block = bytearray(2 * 10**6)
            del block
        finally:
            meter.stop()
        meter.message(root)
    return step


def _shell():
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.run_line_magic("load_ext", "memlens")
    ip.run_cell("def work():\n    a = [0] * 1000\n    return len(a)\n",
                store_history=False)
    return ip


def ep_magic_memit():
    ip = _shell()

    def step():
        ip.run_line_magic("memit", "-q -r 2 x = [0] * 1000")
        ip.run_line_magic("memit", "-o -q -c x = [0] * 1000")
    return step


def ep_magic_cell_memit():
    ip = _shell()

    def step():
        ip.run_cell_magic("memit", "-q y = 3", "x = [y] * 1000\n")
    return step


def ep_magic_mprun():
    ip = _shell()

    def step():
        ip.run_line_magic("mprun", "-f work --alloc work()")
    return step


def ep_magic_mprun_redefined():
    # A notebook user's loop: define the function again, profile it again.
    ip = _shell()

    def step():
        ip.run_cell("def work():\n    a = [0] * 1000\n    return len(a)\n",
                    store_history=False)
        ip.run_line_magic("mprun", "-f work work()")
    return step


def ep_magic_memtop():
    ip = _shell()

    def step():
        ip.run_line_magic("memtop", "-n 3 -f 2 x = [str(i) for i in "
                                    "range(100)]")
    return step


def ep_magic_memsize():
    ip = _shell()
    ip.user_ns["value"] = {"a": [1, 2, 3], "b": "text"}

    def step():
        ip.run_line_magic("memsize", "value")
        ip.run_line_magic("memsize", "-l 1 value")
    return step


def ep_magic_memheap():
    ip = _shell()

    def step():
        ip.run_line_magic("memheap", "-n 3")
    return step


def ep_magic_watcher():
    ip = _shell()
    ip.run_line_magic("memlens", "on")

    outputs = getattr(ip.history_manager, "outputs", {})

    def step():
        ip.run_cell("x = [0] * 1000", store_history=False)
        ip.run_line_magic("memlens", "status")
        # IPython 9 keeps what each cell printed (the watcher's line too)
        # in its history, by execution count: IPython's store, not ours.
        outputs.clear()
    return step


# --------------------------------------------------------------------------
# The child.

def _settle():
    import gc

    from memlens import _core

    for _ in range(3):
        gc.collect()
    _core._trim_heap()


def _figures():
    import gc

    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"rss": resident, "objects": len(gc.get_objects()),
            "blocks": sys.getallocatedblocks()}


def _child(name, calls, warmup):
    """Warm up, then measure two runs of `calls` calls of the entry point,
    one after the other; print as JSON, on the descriptor that was stdout
    (the entry points' own output goes nowhere), each figure's smaller
    growth of the two runs. A leak grows both runs alike; a cache filling
    up, or an allocator's pool taken once, grows only one."""
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")
    step = globals()["ep_" + name.replace("-", "_")]()
    for _ in range(warmup):
        step()
    figures = []
    for run in range(3):
        if run:
            for _ in range(calls):
                step()
        _settle()
        figures.append(_figures())
    a, b, c = figures
    json.dump({k: min(b[k] - a[k], c[k] - b[k]) for k in a}, out)
    out.close()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    sys.exit(0)


# --------------------------------------------------------------------------
# The tests.

from conftest import SANITIZED  # noqa: E402


def _growth(name, calls, warmup):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("MEMLENS_LINE_BACKEND", None)
    proc = subprocess.run([sys.executable, __file__, name, str(calls),
                           str(warmup)],
                          capture_output=True, text=True, timeout=900,
                          env=env, cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _check(name, scale):
    calls, warmup = ENTRY_POINTS[name]
    calls *= scale
    growth = _growth(name, calls, warmup)
    problems = []
    if growth["objects"] > OBJECTS_BOUND:
        problems.append(f"{growth['objects']} gc objects more")
    blocks_bound = (CENSUS_BLOCKS_PER_CALL * calls if name in CENSUS
                    else BLOCKS_BOUND)
    if growth["blocks"] > blocks_bound:
        problems.append(f"{growth['blocks']} allocator blocks more")
    if not SANITIZED and growth["rss"] > RSS_BOUND:
        problems.append(f"RSS {growth['rss'] / 1024:.0f} KiB more")
    assert not problems, f"{name} x {calls}: " + ", ".join(problems)


def _params(quick):
    return [pytest.param(name, marks=[pytest.mark.xfail(
        strict=True, reason=KNOWN_LEAKS[name])] if name in KNOWN_LEAKS
        else []) for name in ENTRY_POINTS
        if not (quick and name in LONG_ONLY)]


@pytest.mark.parametrize("name", _params(quick=True))
def test_repeated_calls_leak_nothing(name):
    _check(name, 1)


@pytest.mark.leaks
@pytest.mark.parametrize("name", _params(quick=False))
def test_ten_times_as_many_calls_leak_nothing(name):
    _check(name, 10)
