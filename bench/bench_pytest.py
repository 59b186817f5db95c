"""Benchmark the pytest plugin's limits against pytest-memray's.

Run with ``.venv/bin/python bench/bench_pytest.py`` (``--quick`` for a
smoke run). Every figure comes from pytest run in a subprocess on a folder
of generated tests, under each variant:

- plain: pytest with neither plugin at work (``-p no:memray``; memlens
  does nothing without a marker or ``--memlens``);
- memlens ``--memlens``: the report alone (an exact RSS peak window around
  every test);
- memlens ``limit_memory``: the marker on every test (the peak window, and
  sampled allocation tracing for the lines of a failure message);
- memlens ``limit_allocations``: the marker on every test (exact
  allocation tracing, and a full garbage collection before each test);
- pytest-memray ``limit_memory`` (with ``--memray``, which its limits
  need; ``-p no:memlens``); "unavailable" when pytest-memray is not
  installed.

The markers are added to every test by the folder's conftest.py, with a
limit no test reaches. Two workloads:

(1) 400 empty tests: the cost per test is (wall time of the run - wall
    time of the plain run) / 400;
(2) one test whose body builds 300,000 two-item lists kept alive, then
    300,000 more dropped at once: the slowdown is the body's own time
    (measured inside the test) / its plain time.

Medians over the repeats; the variants take turns within each repeat. It
is a report, not a test: it exits 0 unless a run fails.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (medians_of, parse_args, print_header,  # noqa: E402
                     section)

QUICK_HELP = "fewer repeats (2 instead of 7)"

N_EMPTY = 400

CONFTEST = """
import os

import pytest


def pytest_collection_modifyitems(items):
    marker = os.environ.get("BENCH_MARKER")
    if marker:
        for item in items:
            item.add_marker(getattr(pytest.mark, marker)("10 GB"))
"""

EMPTY = f"""
import pytest


@pytest.mark.parametrize("i", range({N_EMPTY}))
def test_empty(i):
    pass
"""

LOOP = """
import os
import time


def test_loop():
    start = time.perf_counter()
    keep = [[i, i] for i in range(300_000)]
    for i in range(300_000):
        x = [i, i]
    elapsed = time.perf_counter() - start
    with open(os.environ["BENCH_OUT"], "w") as f:
        f.write(repr(elapsed))
"""

VARIANTS = [
    ("plain", ["-p", "no:memray"], None),
    ("memlens --memlens", ["-p", "no:memray", "--memlens"], None),
    ("memlens limit_memory", ["-p", "no:memray"], "limit_memory"),
    ("memlens limit_allocations", ["-p", "no:memray"], "limit_allocations"),
    ("pytest-memray limit_memory", ["-p", "no:memlens", "--memray"],
     "limit_memory"),
]


def memray_status():
    """None if pytest-memray can run here, else why not."""
    try:
        import pytest_memray  # noqa: F401
    except ImportError as exc:
        return f"pytest-memray cannot be imported: {exc}"
    return None


def run(folder, test_file, args, marker):
    """(wall seconds, seconds the loop test reported or None)."""
    out = os.path.join(folder, "elapsed")
    env = dict(os.environ, BENCH_OUT=out)
    env.pop("BENCH_MARKER", None)
    if marker:
        env["BENCH_MARKER"] = marker
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               *args, test_file]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n"
                           f"{done.stderr}")
    if os.path.exists(out):
        with open(out) as f:
            loop = float(f.read())
        os.unlink(out)
        return wall, loop
    return wall, None


def main():
    args = parse_args(__doc__, QUICK_HELP)
    repeat = 2 if args.quick else 7
    problem = memray_status()
    variants = [v for v in VARIANTS
                if not (problem and v[0].startswith("pytest-memray"))]

    print_header("memlens pytest plugin vs pytest-memray",
                 ["pytest", "memlens", "pytest-memray", "memray"], 72)
    print(f"Repeats  {repeat}")
    print()

    folder = tempfile.mkdtemp(prefix="memlens-bench-pytest-")
    try:
        for name, text in (("conftest.py", CONFTEST),
                           ("test_empty.py", EMPTY), ("test_loop.py", LOOP)):
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)
        walls = {v[0]: [] for v in variants}
        loops = {v[0]: [] for v in variants}
        for r in range(repeat):
            turn = variants[r % len(variants):] + variants[:r % len(variants)]
            for name, extra, marker in turn:
                walls[name].append(run(folder, "test_empty.py", extra,
                                       marker)[0])
                loops[name].append(run(folder, "test_loop.py", extra,
                                       marker)[1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    wall, loop = medians_of(walls), medians_of(loops)
    section(f"(1) cost per test, {N_EMPTY} empty tests; (2) slowdown of an "
            f"allocating test body", 72)
    print(f"{'variant':<30} {'(1) ms/test':>12} {'(2) slowdown':>13} "
          f"{'(2) body s':>11}")
    for name, _, _ in variants:
        per_test = (wall[name] - wall["plain"]) / N_EMPTY * 1e3
        print(f"{name:<30} {per_test:>12.3f} "
              f"{loop[name] / loop['plain']:>12.2f}x {loop[name]:>11.3f}")
    if problem:
        print(f"{'pytest-memray limit_memory':<30} unavailable ({problem})")


if __name__ == "__main__":
    main()
