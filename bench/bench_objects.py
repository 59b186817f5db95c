"""Benchmark memlens's deep sizes, memory points and heap census against
pympler, guppy3 (heapy) and objgraph.

Run with ``.venv/bin/python bench/bench_objects.py`` (``--quick`` for a
smoke run). In one run of one interpreter it times, side by side:

Deep sizes: ``memlens.asizeof(x)`` against ``pympler.asizeof.asizeof(x)``
(its default options), on three structures built so that the objects
memlens's rule counts are known:

(a) a dict of 100,000 str keys, each -> a list of 5 ints;
(b) a list of 100,000 instances of a plain class (an instance __dict__, no
    __slots__) with 3 attributes each: an int, a float and a str;
(c) a list of 100,000 small lists ``[str, float, (int, float, str),
    {str: int}]``: 1,000,001 objects, all distinct.

memlens's size is checked against the sum of the sizes of the objects built
(``sys.getsizeof``, plus an instance's attribute values on 3.11+, which it
leaves out), which makes the object count, and the ns per object, exact
(a mismatch is printed, not raised). pympler's size is printed next to it
for information: the two count differently (pympler rounds every size up to
a multiple of 8 and sizes an instance's ``__dict__`` as a dict of its own,
where on 3.11+ memlens counts the instance's attribute values with it).
memlens runs first (a warm-up call, then the timed runs),
pympler after it: pympler's walk reads ``__dict__``, which creates the
instances' dictionaries on Python 3.11+, and memlens is timed on the
structure as the program built it. memlens is measured again after pympler,
and a size that changed is reported.

Memory points: ``memlens.points.MEMORY()`` (every live object under
asizeof's rule) against ``pympler.asizeof.asizeof(all=True)`` (every object
the GC tracks and what they refer to), with the three structures above
still alive. Each prints its value; they measure different things.

Heap census: ``memlens.heap()`` against guppy3's ``hpy().heap()`` and
objgraph's ``most_common_types(limit=10)``, with the structures above
dropped and about 1.5 million objects alive: 100,000 records of 15 objects
each (an instance and its attributes: an int, a str, a list of 3 floats, a
dict holding a str key, an int and a str, a tuple of an int and a str, and
a bytes). Each tool is called once untimed first (heapy's first call
creates the instances' dictionaries on 3.11+, so that every timed run sees
the same heap; memlens's time on the heap before that is printed too), then
the tools take turns, each round starting one place further on. Printed:
each tool's object count and total (objgraph counts only the objects the GC
tracks, by type name, and has no sizes) and the largest kinds, memlens's
next to heapy's.

A collection is made before each timed run; the garbage collector stays
on (pympler's walk allocates, and its collections are part of its cost).

It ends with a "targets" section. It is a report, not a test: missing a
target still exits 0, but a real error (an import that fails, a tool that
raises) raises and exits non-zero.
"""

import gc
import os
import statistics
import sys
import time
import warnings

import memlens
import objgraph
from memlens import _core
from memlens.points import MEMORY
from pympler import asizeof as pympler_asizeof

try:
    from guppy import hpy
except ImportError:  # guppy3 does not build on every Python (3.15)
    hpy = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (min_max, parse_args,  # noqa: E402
                     print_header as print_common_header, print_warnings,
                     section, target_line, turns, version_of)

#: Items of each deep-size structure (keys, instances, small lists).
N = 100_000

#: Records of the census; each is RECORD_OBJECTS objects.
RECORDS = 100_000
RECORD_OBJECTS = 15

#: Targets.
TARGET_VS_PYMPLER = 20.0     # pympler's time / memlens's, each structure
TARGET_NS_PER_OBJECT = 60.0  # memlens asizeof on (c)
TARGET_VS_HEAPY = 0.5        # memlens.heap() time / heapy's

QUICK_HELP = ("fewer repeats (memlens 5 instead of 11, pympler 1 instead "
              "of 3, heapy 1 instead of 2): a smoke run")

WIDTH = 72


# --------------------------------------------------------------------------
# The structures. Each builder returns the structure and the objects that
# memlens's rule counts in it (for the check and the count).
# --------------------------------------------------------------------------

class Point:
    """A plain class: instances have a __dict__ (inline values on 3.11+)."""

    def __init__(self, i):
        self.x = i + 1_000_000
        self.y = i * 0.5
        self.name = f"point{i}"


def distinct(objects):
    """`objects` without repeats (by identity), in order."""
    seen, out = set(), []
    for o in objects:
        if id(o) not in seen:
            seen.add(id(o))
            out.append(o)
    return out


def build_dict_of_lists(n):
    d = {f"key{i}": [i, i + 1, i + 2, i + 3, i + 4] for i in range(n)}
    objects = [d]
    for key, value in d.items():
        objects += [key, value]
        objects += value
    return d, distinct(objects)


def build_instances(n):
    points = [Point(i) for i in range(n)]
    objects = [points]
    for p in points:
        objects += [p, p.x, p.y, p.name]
    if sys.version_info < (3, 11):
        # Every instance has a dict; its keys are the shared attribute names.
        objects += [p.__dict__ for p in points] + list(vars(points[0]))
    return points, distinct(objects)


def build_nested(n):
    outer = []
    objects = [outer]
    for i in range(n):
        s = f"s{i}"
        f = i * 0.5
        big = i + 1_000_000
        f2 = i + 0.25
        t_str = f"t{i}"
        t = (big, f2, t_str)
        key = f"k{i}"
        value = i + 2_000_000
        d = {key: value}
        item = [s, f, t, d]
        outer.append(item)
        objects += [item, s, f, t, big, f2, t_str, d, key, value]
    return outer, distinct(objects)


STRUCTURES = [
    ("a", f"dict of {N:,} str -> list of 5 ints", build_dict_of_lists),
    ("b", f"{N:,} instances of a class with __dict__, 3 attributes",
     build_instances),
    ("c", f"list of {N:,} small lists [str, float, (int, float, str), "
          "{str: int}]", build_nested),
]


class Record:
    """One census record: 15 objects with the instance itself."""

    def __init__(self, i):
        self.id = i + 1_000_000                              # int
        self.name = f"rec{i}"                                # str
        self.values = [i * 0.5, i * 0.25, i + 0.125]         # list, 3 floats
        self.meta = {f"k{i}": i + 2_000_000, "label": f"L{i}"}  # dict, 3
        self.pair = (i + 3_000_000, f"p{i}")                 # tuple, 2
        self.blob = bytes(16)                                # bytes


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

def timed_runs(func, repeat, summary=None):
    """`repeat` timed calls of func(), a collection before each. Each
    result is summarised by `summary` (default: kept as is) and dropped
    before the next call. Returns (the last summary, the times)."""
    times, out = [], None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
        out = result if summary is None else summary(result)
        del result
    return out, times


def quiet(func):
    """func run with its warnings recorded; returns (result, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func()
    return result, caught


def row(label, times, *values, label_width=25, runs=True):
    """One line of a table: median ms, runs, spread (fastest-slowest, ms)
    and `values` (ints with thousands separators, 13 wide; or, with more
    than one, 9 and 11 wide)."""
    widths = (13,) if len(values) == 1 else (9, 11)
    cells = "".join(f" {v:>{w},}" if isinstance(v, int) else f" {v:>{w}}"
                    for v, w in zip(values, widths))
    print(f"  {label:<{label_width}} {statistics.median(times) * 1e3:>9.2f}"
          + (f" {len(times):>4}" if runs else "")
          + f" {min_max(times, 2, 1e3):>15}{cells}")


def table_head(*heads, label_width=25, runs=True):
    widths = (13,) if len(heads) == 1 else (9, 11)
    print(f"  {'':<{label_width}} {'median ms':>9}"
          + (f" {'runs':>4}" if runs else "") + f" {'spread ms':>15}"
          + "".join(f" {h:>{w}}" for h, w in zip(heads, widths)))


# --------------------------------------------------------------------------
# Deep sizes
# --------------------------------------------------------------------------

def deep_sizes(letter, title, builder, ml_repeat, pp_repeat):
    """One structure, memlens then pympler. Returns (memlens median s,
    pympler median s, the count of objects)."""
    gc.collect()
    obj, objects = builder(N)
    count = len(objects)
    expected = sum(_core._getsizeof(o) for o in objects)
    del objects

    memlens.asizeof(obj)  # warm-up
    ml_size, ml_times = timed_runs(lambda: memlens.asizeof(obj), ml_repeat)
    (pp_size, pp_times), pp_warnings = quiet(
        lambda: timed_runs(lambda: pympler_asizeof.asizeof(obj), pp_repeat))
    ml_after = memlens.asizeof(obj)
    del obj

    ml, pp = statistics.median(ml_times), statistics.median(pp_times)
    section(f"({letter}) {title}", WIDTH)
    print(f"  {count:,} objects under memlens's rule; memlens's size "
          + ("= the sum" if ml_size == expected else
             f"= the sum {ml_size - expected:+,}")
          + " of")
    print("  their sizes (sys.getsizeof, plus inline attribute values)")
    table_head("size bytes")
    row("memlens.asizeof", ml_times, ml_size)
    row(f"pympler {version_of('pympler')} asizeof", pp_times, pp_size)
    print(f"  pympler / memlens time: {pp / ml:.1f}x; per object: memlens "
          f"{ml / count * 1e9:.1f} ns,")
    print(f"  pympler {pp / count * 1e9:.0f} ns")
    print(f"  sizes: pympler - memlens = {pp_size - ml_size:+,} bytes "
          f"({(pp_size - ml_size) / ml_size:+.1%}, "
          f"{(pp_size - ml_size) / count:+.1f} per object)")
    if ml_after != ml_size:
        print(f"  memlens.asizeof after pympler's runs: {ml_after:,} bytes "
              f"({ml_after - ml_size:+,}):")
        print("  pympler's walk created objects inside the structure")
    print_warnings("pympler", pp_warnings)
    print()
    return ml, pp, count


# --------------------------------------------------------------------------
# Memory points
# --------------------------------------------------------------------------

def memory_points(ml_repeat):
    """MEMORY() and pympler's asizeof(all=True) with the three structures
    alive. Returns (memlens median s, pympler's s)."""
    keep = [builder(N)[0] for _, _, builder in STRUCTURES]
    gc.collect()
    tracked = len(gc.get_objects())
    MEMORY()  # warm-up
    ml_value, ml_times = timed_runs(MEMORY, ml_repeat)
    (pp_value, pp_times), pp_warnings = quiet(
        lambda: timed_runs(lambda: pympler_asizeof.asizeof(all=True), 1))
    del keep
    ml, pp = statistics.median(ml_times), statistics.median(pp_times)
    section("memlens.points.MEMORY() against pympler asizeof(all=True)",
            WIDTH)
    print(f"  structures (a), (b) and (c) alive; {tracked:,} objects tracked "
          "by the GC")
    table_head("value bytes")
    row("memlens MEMORY()", ml_times, ml_value)
    row("pympler asizeof(all=True)", pp_times, pp_value)
    print(f"  pympler / memlens time: {pp / ml:.1f}x; values: pympler - "
          f"memlens = {pp_value - ml_value:+,}")
    print(f"  bytes ({(pp_value - ml_value) / ml_value:+.1%})")
    print_warnings("pympler", pp_warnings)
    print()
    return ml, pp


# --------------------------------------------------------------------------
# Heap census
# --------------------------------------------------------------------------

def heapy_name(name):
    """heapy's kind name in memlens's spelling: "dict" for "dict (no
    owner)", a class as its qualified name, prefixed by its module unless
    that is builtins or __main__ ("types.CodeType" is "code")."""
    if name == "dict (no owner)":
        return "dict"
    prefix = ""
    if name.startswith("dict of "):
        prefix, name = "dict of ", name[len("dict of "):]
    module, _, attr = name.rpartition(".")
    tp = getattr(sys.modules.get(module), attr, None) if module else None
    if isinstance(tp, type):
        module = getattr(tp, "__module__", "builtins")
        name = (tp.__qualname__ if module in ("builtins", "__main__")
                else f"{module}.{tp.__qualname__}")
    return prefix + name


def census(repeat, heapy_repeat):
    """The census with the records alive: memlens and objgraph `repeat`
    runs, heapy `heapy_repeat`. Returns their medians (s)."""
    keep = [Record(i) for i in range(RECORDS)]
    built = RECORDS * RECORD_OBJECTS + 1
    gc.collect()
    tracked = len(gc.get_objects())

    def ml_summary(c):
        return c.count, c.size, [(r.kind, r.count, r.size) for r in c.rows]

    def heapy_summary(x):
        return x.count, x.size, [(heapy_name(r.name), r.count, r.size)
                                 for r in x.stat.get_rows()]

    tools = {
        "memlens": ("memlens.heap()", memlens.heap, ml_summary, repeat),
        "objgraph": ("objgraph top 10 types",
                     lambda: objgraph.most_common_types(limit=10), None,
                     repeat),
    }
    if hpy is not None:
        tools["heapy"] = ("heapy hpy().heap()", hpy().heap, heapy_summary,
                          heapy_repeat)
    # memlens on the heap as built, before heapy's first call.
    _, untouched = timed_runs(memlens.heap, 1, ml_summary)
    # Warm-up: one untimed call each.
    for _, func, summary, _ in tools.values():
        gc.collect()
        result = func()
        del result
    samples = {key: [] for key in tools}
    last = {}
    for _, key, tool in turns(tools, max(t[3] for t in tools.values())):
        _, func, summary, repeat = tool
        if len(samples[key]) < repeat:
            out, times = timed_runs(func, 1, summary)
            samples[key] += times
            last[key] = out
    og_count = sum(objgraph.typestats().values())
    og_top = objgraph.most_common_types(limit=3)
    del keep

    ml_count, ml_size, ml_rows = last["memlens"]
    hp_count, hp_size, hp_rows = last.get("heapy", ("-", "-", []))
    section(f"Heap census, {built:,} objects built ({tracked:,} tracked by "
            "the GC)", WIDTH)
    print("  runs: " + ", ".join(f"{tools[k][0]} {len(samples[k])}"
                                 for k in tools))
    table_head("objects", "total bytes", label_width=21, runs=False)
    for key, count, size in (("memlens", ml_count, ml_size),
                             ("heapy", hp_count, hp_size),
                             ("objgraph", og_count, "-")):
        if key not in tools:
            print(f"  {'heapy hpy().heap()':<21} unavailable (no guppy3)")
            continue
        row(tools[key][0], samples[key], count, size, label_width=21,
            runs=False)
    ml = statistics.median(samples["memlens"])
    hp = statistics.median(samples["heapy"]) if "heapy" in tools else None
    og = statistics.median(samples["objgraph"])
    print(f"  memlens / heapy time: "
          f"{f'{ml / hp:.2f}' if hp else 'unavailable'}; memlens / "
          f"objgraph: {ml / og:.2f}")
    print(f"  memlens.heap() before heapy's first call: "
          f"{untouched[0] * 1e3:.2f} ms (one run)")
    print("  objgraph's objects: the GC's, by typestats() (untimed); no "
          "sizes. Its top 3:")
    print("    " + ", ".join(f"{name} {n:,}" for name, n in og_top))
    print()
    print(f"  {'largest kinds (memlens)':<24} {'memlens n':>9} {'bytes':>11}"
          f" {'heapy n':>9} {'bytes':>11}")
    heapy_by_kind = {}
    for kind, n, size in hp_rows:
        a = heapy_by_kind.setdefault(kind, [0, 0])
        a[0] += n
        a[1] += size
    for kind, n, size in ml_rows[:10]:
        hn, hs = heapy_by_kind.get(kind, ("-", "-"))
        print(f"  {kind[:24]:<24} {n:>9,} {size:>11,} "
              + (f"{hn:>9,} {hs:>11,}" if hn != "-" else
                 f"{hn:>9} {hs:>11}"))
    print()
    return ml, hp, og


# --------------------------------------------------------------------------

def print_header(ml_repeat, pp_repeat, census_repeat, heapy_repeat):
    print_common_header("memlens deep sizes and heap census benchmark",
                        ("memlens", "pympler", "guppy3", "objgraph",
                         "psutil"), WIDTH, ram=True)
    print(f"asizeof: memlens.asizeof(x) {ml_repeat} runs after a warm-up, "
          f"pympler.asizeof.asizeof(x)")
    print(f"{pp_repeat} after it; MEMORY(): memlens {ml_repeat} runs, pympler "
          "asizeof(all=True) 1;")
    print(f"census: memlens.heap() and objgraph.most_common_types(limit=10) "
          f"{census_repeat} runs,")
    print(f"guppy3 hpy().heap() {heapy_repeat}, after a warm-up call each, "
          "taking turns")
    print("times are medians; spread = fastest-slowest run")
    print()


def main():
    args = parse_args(__doc__, QUICK_HELP)
    ml_repeat = 5 if args.quick else 11
    pp_repeat = 1 if args.quick else 3
    census_repeat = 3
    heapy_repeat = 1 if args.quick else 2
    print_header(ml_repeat, pp_repeat, census_repeat, heapy_repeat)

    results = {}
    for letter, title, builder in STRUCTURES:
        results[letter] = deep_sizes(letter, title, builder, ml_repeat,
                                     pp_repeat)

    mem_ml, mem_pp = memory_points(ml_repeat)
    gc.collect()

    heap_ml, heap_hp, heap_og = census(census_repeat, heapy_repeat)

    section("Targets (times are medians)", WIDTH)
    for letter, _, _ in STRUCTURES:
        ml, pp, _ = results[letter]
        target_line(pp / ml >= TARGET_VS_PYMPLER,
                    f"({letter}) memlens.asizeof >= {TARGET_VS_PYMPLER:g}x "
                    f"faster than pympler ({pp * 1e3:.0f} ms / "
                    f"{ml * 1e3:.2f} ms = {pp / ml:.1f}x)")
    ml, _, count = results["c"]
    ns = ml / count * 1e9
    target_line(ns <= TARGET_NS_PER_OBJECT,
                f"(c) memlens.asizeof <= {TARGET_NS_PER_OBJECT:g} ns per "
                f"object ({ns:.1f} ns, {count:,} objects)")
    if heap_hp is None:
        print(f"  info  memlens.heap() <= {TARGET_VS_HEAPY:g} x heapy's "
              "time: heapy unavailable here (no guppy3)")
    else:
        target_line(heap_ml <= TARGET_VS_HEAPY * heap_hp,
                    f"memlens.heap() <= {TARGET_VS_HEAPY:g} x heapy's time "
                    f"({heap_ml * 1e3:.0f} ms / {heap_hp * 1e3:.0f} ms = "
                    f"{heap_ml / heap_hp:.2f})")
    print(f"  info  MEMORY() {mem_pp / mem_ml:.1f}x faster than pympler "
          f"asizeof(all=True) ({mem_ml * 1e3:.0f} ms vs "
          f"{mem_pp * 1e3:.0f} ms)")
    print(f"  info  memlens.heap() / objgraph most_common_types(10) time: "
          f"{heap_ml / heap_og:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
