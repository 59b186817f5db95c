"""Line tables see all memory (SPEC 4): the RSS columns of a line profile,
without alloc=True, are right for memory from any source, Python objects,
NumPy arrays and a C extension's malloc or mmap, on every backend; and they
do not depend on what the session freed before the profile."""
import io
import os
import subprocess
import sys

import numpy as np

import memlens
from memlens import _core

from conftest import MiB, figures


def profile_call(func, *args):
    """(profiler, RSS rise of the call, its result) with func profiled."""
    profiler = memlens.LineProfiler(func)
    with profiler:
        before = memlens.rss()
        result = func(*args)
        rise = memlens.rss() - before
    return profiler, rise, result


def increments(profiler):
    """{source line text (stripped): its increment in bytes}."""
    return {rec.contents.strip(): rec.increment or 0
            for rec in profiler.results[0].lines}


def one_big_array():
    a = np.ones(50_000_000)
    return a


def seventy_arrays():
    arrays = []
    for i in range(70):
        arrays.append(np.random.rand(371_000))
    return arrays


@figures
def test_a_numpy_array_shows_on_its_line(line_backend):
    profiler, rise, kept = profile_call(one_big_array)
    line = increments(profiler)["a = np.ones(50_000_000)"]
    assert rise >= kept.nbytes  # its pages were touched
    assert abs(line - rise) <= 0.02 * rise, (line / MiB, rise / MiB)
    assert abs(line - 50_000_000 * 8) <= 0.02 * 50_000_000 * 8


@figures
def test_a_loop_of_numpy_arrays_adds_up_to_the_rss_rise(line_backend):
    profiler, rise, kept = profile_call(seventy_arrays)
    by_line = increments(profiler)
    data = sum(a.nbytes for a in kept)
    assert rise >= 0.98 * data
    total = sum(by_line.values())
    assert abs(total - rise) <= 0.02 * rise, (total / MiB, rise / MiB)
    append = by_line["arrays.append(np.random.rand(371_000))"]
    assert append >= 0.95 * data, (append / MiB, data / MiB)


SIZE = 64 * MiB


def native_lines(touchmem):
    a = touchmem.malloc_touch(SIZE)
    b = touchmem.mmap_touch(SIZE)
    touchmem.munmap(b, SIZE)
    mapped = glibc_mapped(a)
    touchmem.free(a)
    return mapped


def glibc_mapped(address):
    """Whether glibc served the block at `address` with a mapping of its
    own (the IS_MMAPPED bit of its chunk's size word)."""
    import ctypes

    return bool(ctypes.c_size_t.from_address(address - 8).value & 2)


@figures
def test_malloc_and_mmap_of_a_c_extension_show_on_their_lines(
        line_backend, touchmem):
    profiler, rise, mapped = profile_call(native_lines, touchmem)
    by_line = increments(profiler)
    slack = 0.02 * SIZE
    assert abs(by_line["a = touchmem.malloc_touch(SIZE)"] - SIZE) <= slack
    assert abs(by_line["b = touchmem.mmap_touch(SIZE)"] - SIZE) <= slack
    assert abs(by_line["touchmem.munmap(b, SIZE)"] + SIZE) <= slack
    # glibc serves a block this big with a mapping of its own, and free()
    # unmaps it; unless earlier tests left a free stretch of heap that
    # big, which takes it and keeps its pages once it is freed.
    freed = -SIZE if mapped else 0
    assert abs(by_line["touchmem.free(a)"] - freed) <= slack
    assert abs(sum(by_line.values()) - rise) <= slack


def tight_loop(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def test_a_tight_loop_does_not_read_rss_on_every_line(line_backend):
    n = 100_000
    profiler = memlens.LineProfiler(tight_loop)
    with profiler:
        reads = _core._line_state()["reads"]
        tight_loop(n)
        reads = _core._line_state()["reads"] - reads
    hits = max(rec.occurrences for rec in profiler.results[0].lines)
    assert hits >= n
    # Lines found quick are timed once in 16 occurrences, and read only
    # when one ran 50 us: a few reads where the machine paused the loop.
    assert reads < n / 100


REUSED_HEAP = """
import memlens

def build_and_free():
    for _ in range(5):
        x = [0] * 1000000
        del x

def first():
    a = [1] * 1000000
    return a

build_and_free()
profiler = memlens.LineProfiler(first)
with profiler:
    first()
print([rec.increment for rec in profiler.results[0].lines
       if rec.contents.strip() == "a = [1] * 1000000"][0])
"""


@figures
def test_a_heap_freed_before_the_profile_does_not_hide_a_line(
        line_backend, tmp_path):
    # Five 8 MB lists built and freed leave their pages to glibc's heap;
    # the next list would reuse them without touching a new page. A fresh
    # interpreter, so that the heap's history is this script's.
    path = tmp_path / "reuse.py"
    path.write_text(REUSED_HEAP)
    out = subprocess.run([sys.executable, str(path)], capture_output=True,
                         text=True, check=True, env=os.environ).stdout
    assert abs(int(out) - 8_000_000) <= 0.05 * 8_000_000, out


@figures
def test_the_profile_decorator_sees_numpy(line_backend):
    out = io.StringIO()

    @memlens.profile(stream=out)
    def make():
        a = np.ones(20_000_000)
        return a

    make()
    line = next(x for x in out.getvalue().splitlines()
                if x.endswith("a = np.ones(20_000_000)"))
    increment = float(line.split()[3])  # Line #, Mem usage, MiB, Increment
    assert abs(increment - 152.6) <= 0.02 * 152.6, line


CLI_SCRIPT = """
import numpy as np

@profile
def big():
    a = np.ones(20_000_000)
    return a

big()
"""


@figures
def test_memlens_run_line_sees_numpy(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(CLI_SCRIPT)
    result = subprocess.run(
        [sys.executable, "-m", "memlens", "run", "--line", "-o",
         str(tmp_path / "run.dat"), str(path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines()
                if x.endswith("a = np.ones(20_000_000)"))
    increment = float(line.split()[3])  # Line #, Mem usage, MiB, Increment
    assert abs(increment - 152.6) <= 0.02 * 152.6, line
