"""Benchmark memlens's readings against the usual alternatives.

Run with ``make bench`` (or ``.venv/bin/python bench/bench_readings.py``).
In one run it measures, side by side:

1. the cost of one RSS reading: ``memlens.rss()`` against psutil's
   ``Process().memory_info().rss`` (Process object cached) and
   ``resource.getrusage(RUSAGE_SELF)``;
2. how many transient 400 MiB spikes are caught within 1% by
   ``memlens.peak()`` and by ``memory_profiler.memory_usage(...,
   max_usage=True)``, which polls RSS from a child process.

It ends with a "targets" section. It is a report, not a test: missing a
target still exits 0, but a real error (an import that fails, an exception
from one of the tools) raises and exits non-zero.
"""

import os
import resource
import statistics
import sys
import timeit
import warnings

import memlens
import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (medians_of, min_max, parse_args, pass_fail,  # noqa: E402
                     print_header, print_warnings, section, target_line)

MiB = 1024 * 1024

#: Size of one transient spike.
SPIKE_BYTES = 400 * MiB

#: A spike counts as caught when the measured rise is within this fraction
#: of SPIKE_BYTES.
TOLERANCE = 0.01

#: Target: memlens.rss() at least this many times cheaper than psutil's.
RSS_SPEEDUP_TARGET = 10.0


QUICK_HELP = "fewer timing repeats and 5 spikes instead of 20 (a smoke run)"


# --------------------------------------------------------------------------
# 1. Cost of one RSS reading
# --------------------------------------------------------------------------

def time_readers(number, repeat):
    """Median ns per call of each reader, from `repeat` runs of `number`
    calls. The readers take turns within each repeat, so that any drift of
    the machine (frequency, other load) affects them all alike."""
    proc = psutil.Process()  # created once: only the reading is timed
    # Each statement is timed as written, with its names bound beforehand
    # in the timer's namespace, so no module attribute lookup is counted.
    readers = {
        "memlens.rss()": ("rss()", {"rss": memlens.rss}),
        "psutil memory_info().rss": ("proc.memory_info().rss",
                                     {"proc": proc}),
        "resource.getrusage(SELF)": ("getrusage(SELF)",
                                     {"getrusage": resource.getrusage,
                                      "SELF": resource.RUSAGE_SELF}),
    }
    timers = {name: timeit.Timer(stmt, globals=namespace)
              for name, (stmt, namespace) in readers.items()}

    # Warm-up: first calls open files, fill caches and so on.
    for timer in timers.values():
        timer.timeit(number=min(number, 1000))

    samples = {name: [] for name in timers}
    for _ in range(repeat):
        for name, timer in timers.items():
            samples[name].append(timer.timeit(number=number) / number * 1e9)
    return samples


def report_readers(samples, number, repeat):
    section(f"1. Cost of one RSS reading ({repeat} repeats of {number:,} "
            "calls; median, min-max in ns/call)", 60)
    medians = medians_of(samples)
    for name, ns in samples.items():
        print(f"  {name:<26} {medians[name]:>9.0f} ns/call"
              f"   ({min_max(ns, 0)})")

    base = medians["memlens.rss()"]
    psutil_ratio = medians["psutil memory_info().rss"] / base
    rusage_ratio = medians["resource.getrusage(SELF)"] / base
    verdict = pass_fail(psutil_ratio >= RSS_SPEEDUP_TARGET)
    print()
    print(f"  psutil / memlens      {psutil_ratio:6.2f}x"
          f"   (target >= {RSS_SPEEDUP_TARGET:g}x: {verdict})")
    print(f"  getrusage / memlens   {rusage_ratio:6.2f}x"
          "   (getrusage gives no current RSS; a bare syscall for scale)")
    print()
    return psutil_ratio


# --------------------------------------------------------------------------
# 2. Catching transient spikes
# --------------------------------------------------------------------------

def spike():
    """Raise RSS by SPIKE_BYTES for a moment: np.ones touches every page,
    the array is dropped at once (no hold) and, being far above malloc's
    mmap threshold, goes straight back to the kernel."""
    block = np.ones(SPIKE_BYTES // 8)
    del block


def caught(delta_bytes):
    return abs(delta_bytes - SPIKE_BYTES) <= TOLERANCE * SPIKE_BYTES


def spikes_memlens(count):
    """peak_delta of `count` memlens.peak() windows around a spike."""
    deltas, sources = [], set()
    for _ in range(count):
        with memlens.peak() as window:
            spike()
        if window.peak_delta is None:
            raise RuntimeError(f"closed window without peak_delta: {window!r}")
        deltas.append(window.peak_delta)
        sources.add(window.source)
    return deltas, sources


def spikes_memory_profiler(count):
    """Peak reported by memory_profiler (MiB) less the RSS just before the
    call, for `count` spikes, in bytes; and any warnings it raised."""
    from memory_profiler import memory_usage

    proc = psutil.Process()  # the same reading memory_profiler takes
    deltas = []
    # Collect warnings rather than let them interleave with the report;
    # they are summarised afterwards.
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        for _ in range(count):
            before = proc.memory_info().rss
            # Default interval (0.1 s); one iteration only, so that it does
            # not retry with a finer interval when it took too few samples.
            peak_mib = memory_usage((spike, (), {}), max_usage=True,
                                    max_iterations=1)
            # Older releases returned a one-element list here.
            if isinstance(peak_mib, (list, tuple)):
                peak_mib = peak_mib[0]
            deltas.append(peak_mib * MiB - before)
    return deltas, caught_warnings


def report_spikes(name, deltas):
    """Print "NAME: hits/count within 1%" and the spread of the deltas."""
    hits = sum(caught(d) for d in deltas)
    verdict = f"{name}: {hits}/{len(deltas)} within {TOLERANCE:.0%}"
    print(f"  {verdict:<46} median delta "
          f"{statistics.median(deltas) / MiB:7.2f} MiB"
          f"  (min {min(deltas) / MiB:.2f}, max {max(deltas) / MiB:.2f})")
    return hits


# --------------------------------------------------------------------------

def main():
    args = parse_args(__doc__, QUICK_HELP)
    number, repeat = (2_000, 5) if args.quick else (10_000, 15)
    n_spikes = 5 if args.quick else 20

    # Warm-up, so that imports and first-use costs pollute no figure:
    # numpy (and its allocator), memlens's C core and cached fd, the
    # kernel peak probe, memory_profiler's import and its child process.
    np.ones(1024).sum()
    memlens.rss()
    with memlens.peak():
        pass
    from memory_profiler import memory_usage
    memory_usage((np.ones, (1024,), {}), max_usage=True, max_iterations=1)

    print_header("memlens readings benchmark",
                 ("memlens", "numpy", "psutil", "memory_profiler"), 60,
                 ram=True)
    print()

    samples = time_readers(number, repeat)
    psutil_ratio = report_readers(samples, number, repeat)

    section(f"2. Transient spikes caught: {n_spikes} x {SPIKE_BYTES // MiB} "
            "MiB, allocated, touched and freed with no hold", 60)
    ml_deltas, sources = spikes_memlens(n_spikes)
    mp_deltas, mp_warnings = spikes_memory_profiler(n_spikes)
    ml_hits = report_spikes("memlens.peak()", ml_deltas)
    report_spikes("memory_profiler.memory_usage", mp_deltas)
    print(f"  (memlens peak source: {', '.join(sorted(sources))}; "
          "memory_profiler polls every 0.1 s from a child process)")
    print_warnings("memory_profiler", mp_warnings)
    print()

    section("Targets", 60)
    targets = [
        (f"memlens.rss() >= {RSS_SPEEDUP_TARGET:g}x cheaper than psutil "
         f"({psutil_ratio:.2f}x)", psutil_ratio >= RSS_SPEEDUP_TARGET),
        (f"memlens.peak() catches {n_spikes}/{n_spikes} spikes within "
         f"{TOLERANCE:.0%} ({ml_hits}/{n_spikes})", ml_hits == n_spikes),
    ]
    for label, ok in targets:
        target_line(ok, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
