"""Helpers shared by the benchmark scripts in this folder.

The scripts are run as ``python bench/bench_X.py``; each puts its own
folder first on ``sys.path`` before importing this module, so that the
import works however the script is started.
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import types


def parse_args(doc, quick_help, more=None):
    """The command line of every script: ``--quick``, and whatever
    `more(parser)` adds. The description is the first paragraph of the
    script's docstring `doc`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if more is not None:
        more(parser)
    return parser.parse_args()


# --------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------

def version_of(dist):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def print_header(title, dists, width, ram=False):
    """The opening lines of a report: `title` over a rule of `width` "=",
    then the Python, the machine (its RAM too, through psutil, if `ram`)
    and the versions of the distributions `dists`."""
    print(title)
    print("=" * width)
    print(f"Python   {platform.python_implementation()} "
          f"{platform.python_version()} ({sys.executable})")
    if ram:
        import psutil

        print(f"Machine  {platform.platform()} {platform.machine()}, "
              f"{psutil.cpu_count()} CPU(s), "
              f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM")
    else:
        print(f"Machine  {platform.platform()} {platform.machine()}, "
              f"{os.cpu_count()} CPU(s)")
    print("Versions " + ", ".join(f"{name} {version_of(name)}"
                                  for name in dists))


# --------------------------------------------------------------------------
# Report formatting
# --------------------------------------------------------------------------

def section(title, width):
    """A section's title over a rule of `width` "-"."""
    print(title)
    print("-" * width)


def medians_of(samples):
    """The median of each list of samples, by key."""
    return {key: statistics.median(s) for key, s in samples.items()}


def min_max(values, digits, scale=1):
    """"min-max" of `values` times `scale`, with `digits` decimals."""
    return f"{min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f}"


def pass_fail(ok):
    return "PASS" if ok else "FAIL"


def target_line(ok, text):
    """One line of a "Targets" section; returns `ok`."""
    print(f"  {pass_fail(ok)}  {text}")
    return ok


def print_warnings(name, caught):
    """Summarise the warnings `caught` (from warnings.catch_warnings(
    record=True)) that tool `name` raised, one line a kind."""
    if caught:
        kinds = sorted({f"{w.category.__name__}: {w.message}"
                        for w in caught})
        print(f"  {name} raised {len(caught)} warning(s):")
        for kind in kinds:
            print(f"    {kind}")


# --------------------------------------------------------------------------
# Slowdowns: tools that each time one run of their own copy of a workload
# --------------------------------------------------------------------------

def copy_of(func, tag):
    """`func` with its own code object: same bytecode and lines, a name of
    its own. Code objects compare equal by content, and profilers keep
    them in dicts and lists: a plain copy would be taken for the same code
    by one tool, or rewritten under another (line_profiler pads the
    bytecode of duplicates); and the specialization one tool's runs leave
    behind is not another's."""
    name = f"{func.__name__}__{tag}"
    changes = {"co_name": name}
    if sys.version_info >= (3, 11):
        changes["co_qualname"] = name
    code = func.__code__.replace(**changes)
    return types.FunctionType(code, func.__globals__, name,
                              func.__defaults__, func.__closure__)


def turns(tools, repeat):
    """(round, key, tool) for `repeat` rounds of the tools (a dict) taking
    turns, each round starting one place further on, so that no tool
    always runs right after the same neighbour or first."""
    keys = list(tools)
    for r in range(repeat):
        start = r % len(keys)
        for key in keys[start:] + keys[:start]:
            yield r, key, tools[key]


def measure(tools, repeat, n_of):
    """`repeat` timed runs of each tool, ``tool.run(n_of(tool))``, a
    collection before each, the tools taking turns (turns()). Returns the
    medians and the samples, by key."""
    samples = {key: [] for key in tools}
    for _, key, tool in turns(tools, repeat):
        gc.collect()
        samples[key].append(tool.run(n_of(tool)))
    return medians_of(samples), samples


def report_slowdowns(title, tools, medians, samples, width, label_width,
                     n_of, base_of, show_n=False):
    """The table of one workload: for each tool its median, its slowdown
    (median / median of the plain run `base_of(tool)`), the time it adds
    per iteration (of `n_of(tool)`), the same ratio by the fastest runs
    and the spread. Returns the slowdowns, by key."""
    section(title, width)
    n_head = f" {'n':>7}" if show_n else ""
    print(f"  {'':<{label_width}}{n_head} {'median ms':>10} {'slowdown':>9}"
          f" {'+ns/iter':>9} {'by min':>8}  min-max ms")
    slowdowns = {}
    for key, tool in tools.items():
        n = n_of(tool)
        plain = base_of(tool)
        base = medians[plain]
        slowdowns[key] = medians[key] / base
        extra = (medians[key] - base) / n * 1e9
        by_min = min(samples[key]) / min(samples[plain])
        spread = min_max(samples[key], 2, 1e3)
        n_cell = f" {n:>7,}" if show_n else ""
        print(f"  {tool.label:<{label_width}}{n_cell}"
              f" {medians[key] * 1e3:>10.2f}"
              f" {slowdowns[key]:>8.2f}x {extra:>9.1f} {by_min:>7.2f}x"
              f"  {spread}")
    print()
    return slowdowns


def bracketed_seconds(start, func, n, stop):
    """Seconds of start(), func(n), stop(), all inside the timed block;
    what func returned is dropped only after the clock stops."""
    import time

    t0 = time.perf_counter()
    start()
    try:
        result = func(n)
    finally:
        stop()
    t1 = time.perf_counter()
    del result
    return t1 - t0
