"""A program to watch with `memlens run`: phases that build and drop data,
profiled functions, and a child process.

    memlens run --include-children examples/run_demo.py
    memlens plot -o run_demo.png
"""
import subprocess
import sys
import time

try:
    profile  # a builtin under `memlens run` (and memory_profiler's mprof)
except NameError:
    def profile(func):
        return func

CHILD = """\
import time
block = bytearray(150 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(0.8)
"""


@profile
def load(n):
    return [f"row {i:>8}" * 3 for i in range(n)]


@profile
def index(rows):
    return {row: i for i, row in enumerate(rows)}


@profile
def summarise(rows, table):
    scratch = [len(r) for r in rows] * 4
    time.sleep(0.2)
    return sum(scratch) + len(table)


def main():
    rows = load(600_000)
    table = index(rows)
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    time.sleep(0.3)
    summarise(rows, table)
    del table
    child.wait()
    time.sleep(0.3)
    return len(rows)


if __name__ == "__main__":
    main()
