"""Deep sizes (SPEC 6): asizeof against a plain-Python walk of the rule."""
import gc
import sys
import tracemalloc
import types

import numpy as np
import pytest

import memlens
from memlens import _core

EXCLUDED = (types.ModuleType, type, types.FunctionType,
            types.BuiltinFunctionType, types.CodeType)


def reference(*objs):
    """The SPEC's rule, walked in plain Python (the test oracle)."""
    seen = set()
    total = 0
    for root in objs:
        if id(root) in seen:
            continue
        stack = [(root, True)]
        while stack:
            obj, is_root = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if not is_root and isinstance(obj, EXCLUDED):
                continue
            total += sys.getsizeof(obj)
            refs = list(gc.get_referents(obj)) if gc.is_tracked(obj) or (
                isinstance(obj, (dict, list, tuple, set))) else []
            if isinstance(obj, dict):
                refs += list(obj.keys()) + list(obj.values())
            if isinstance(obj, np.ndarray) and obj.base is not None:
                refs.append(obj.base)
            stack.extend((r, False) for r in refs)
    return total


def module_level():
    return 1


CASES = {
    "str-keyed dict": lambda: {f"key{i}": [i] * 5 for i in range(1000)},
    "int-keyed dict": lambda: {i: str(i) for i in range(1000)},
    "nested lists": lambda: [[[i, str(i)] for i in range(10)] for _ in range(100)],
    "tuples and sets": lambda: (set(range(100)), frozenset("abc"), (1, 2.5)),
    "strings and bytes": lambda: ["ascii", "é" * 10, "€" * 3, b"xyz" * 100,
                                  bytearray(1000), 2**100, -7, 1.5j],
    "shared sub-objects": lambda: (lambda s: [s, s, {"a": s}])([1, 2, 3]),
    "cycle": lambda: (lambda a: (a.append(a), a)[1])([1, "x"]),
    "functions and modules are not data": lambda: [module_level, sys, int,
                                                   module_level.__code__, 5],
    "many objects": lambda: [[str(i), i * 1.5, (i,)] for i in range(100_000)],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_equal_to_the_byte_to_a_python_walk_of_the_rule(name):
    value = CASES[name]()
    assert memlens.asizeof(value) == reference(value)


def test_several_arguments_and_asizesof():
    shared = list(range(1000))
    a, b = [shared, "a"], [shared, "b"]
    sizes = memlens.asizesof(a, b)
    assert sizes[0] == reference(a)
    assert sizes[1] == reference(a, b) - reference(a)
    assert memlens.asizeof(a, b) == reference(a, b)


def test_arguments_always_count_even_when_excluded_kinds():
    # An argument is counted and followed whatever its kind; what it
    # reaches follows the rule.
    assert memlens.asizeof(int) == reference(int) >= sys.getsizeof(int)
    code = module_level.__code__
    assert memlens.asizeof(code) == reference(code) >= sys.getsizeof(code)


def test_numpy_buffers_count_once_with_their_owner():
    a = np.ones(10**6)
    view = a[::2]
    assert memlens.asizeof(a) == sys.getsizeof(a)
    assert memlens.asizeof(view) == sys.getsizeof(view) + sys.getsizeof(a)
    assert memlens.asizeof([a, view]) < 8_100_000


def test_limit_stops_following():
    deep = [[[["leaf"]]]]
    assert memlens.asizeof(deep, limit=0) == sys.getsizeof(deep)
    assert memlens.asizeof(deep, limit=1) == (sys.getsizeof(deep)
                                              + sys.getsizeof(deep[0]))
    assert memlens.asizeof(deep) == reference(deep)
    with pytest.raises(ValueError):
        memlens.asizeof(deep, limit=-1)
    with pytest.raises(TypeError):
        memlens.asizeof(deep, limit="2")


class Plain:
    def __init__(self, i):
        self.a = i
        self.b = str(i)


def test_sizing_creates_nothing_and_materialises_no_dict():
    items = [Plain(i) for i in range(100_000)]
    had_dict = sum(any(isinstance(r, dict) for r in gc.get_referents(x))
                   for x in items[:100])
    memlens.asizeof(items)  # warm up
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        memlens.asizeof(items)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 1024
    now_dict = sum(any(isinstance(r, dict) for r in gc.get_referents(x))
                   for x in items[:100])
    assert now_dict == had_dict


@pytest.mark.slow
def test_ten_million_long_chain_without_stack_overflow():
    node = None
    for _ in range(10**7):
        node = (node,)
    assert memlens.asizeof(node) == (10**7 * sys.getsizeof((None,))
                                     + sys.getsizeof(None))
    del node


class BadSizeof:
    def __sizeof__(self):
        raise ValueError("no")


class NonsenseSizeof:
    def __sizeof__(self):
        return "big"


def test_failing_sizeof_counts_basic_size_and_is_reported():
    objs = [BadSizeof(), NonsenseSizeof()]
    with pytest.warns(memlens.SizeWarning, match="2 object"):
        size = memlens.asizeof(objs)
    basics = sum(type(o).__basicsize__ for o in objs)
    assert size >= sys.getsizeof(objs) + basics


def test_one_object_size_matches_sys_getsizeof():
    samples = [0, 1, 255, 256, 2**30, 2**64, -5, "abc", "é", "€x", b"xx",
               bytearray(10), [1, 2], list(range(100)), (1, 2), {1, 2},
               frozenset(range(50)), {"a": 1}, 1.5, 1j, True, None, object(),
               Slotted(1), np.ones(3)]
    for obj in samples:
        assert _core._getsizeof(obj) == sys.getsizeof(obj), obj


def test_instance_size_adds_the_inline_values_from_3_11():
    plain = Plain(1)
    extra = _core._getsizeof(plain) - sys.getsizeof(plain)
    if sys.version_info < (3, 11):
        assert extra == 0
    else:
        # an array of a few pointers with its order bytes, never counted
        # by sys.getsizeof
        assert 3 * 8 <= extra <= 40 * 8


# --------------------------------------------------------------------------
# Instance-heavy structures against what tracemalloc saw being allocated
# --------------------------------------------------------------------------

class Slotted:
    __slots__ = ("a", "b", "c")

    def __init__(self, i):
        self.a, self.b, self.c = i, str(i), i * 0.5


class WithDict:
    def __init__(self, i):
        self.a, self.b, self.c = i, str(i), i * 0.5


class MixedSlots(Slotted):  # slots below, a managed dict above
    def __init__(self, i):
        super().__init__(i)
        self.d = (i,)


class Wide:
    def __init__(self, i):
        for k in range(12):
            setattr(self, f"f{k}", i + k + 0.5)


def _made_dicts(n):
    objs = [WithDict(i) for i in range(n)]
    for o in objs:
        o.__dict__  # materialised: held by the instance alone
    return objs


def _grown(n):
    objs = [WithDict(i) for i in range(n)]
    for o in objs:
        o.extra = str(-o.a)  # an attribute added later
    return objs


STRUCTURES = {
    "__dict__": lambda n: [WithDict(i) for i in range(n)],
    "__slots__": lambda n: [Slotted(i) for i in range(n)],
    "slots and dict": lambda n: [MixedSlots(i) for i in range(n)],
    "mixed in a dict": lambda n: {i: (WithDict(i) if i % 2 else Slotted(i))
                                  for i in range(n)},
    "materialised __dict__": _made_dicts,
    "attribute added later": _grown,
    "twelve attributes": lambda n: [Wide(i) for i in range(n)],
}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_instance_structures_within_3_percent_of_tracemalloc(name):
    build = STRUCTURES[name]
    build(100)  # the classes' first instances get larger value arrays
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        objs = build(20_000)
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = memlens.asizeof(objs)
    assert abs(size - allocated) <= 0.03 * allocated, (size, allocated)


# --------------------------------------------------------------------------
# Heap census
# --------------------------------------------------------------------------

class Census:
    def __init__(self, i):
        self.a = i
        self.b = str(i)


KIND = f"{Census.__module__}.Census"  # kinds name classes with their module


def test_census_counts_every_object_once_and_totals_add_up():
    keep = [Census(i) for i in range(5000)]
    key_only = {("k" * 30 + str(i)): None for i in range(1000)}
    census = memlens.heap()
    assert census.count == sum(r.count for r in census.rows)
    assert census.size == sum(r.size for r in census.rows)
    assert census[KIND].count == 5000
    assert census[KIND].size == sum(_core._getsizeof(k) for k in keep)
    # strings that are only dict keys are untracked by the GC, and counted
    assert census["str"].count >= 1000 + 5000
    text = census.format(limit=3)
    lines = text.splitlines()
    assert lines[0] == (f"Partition of a set of {census.count} objects. "
                        f"Total size = {census.size} bytes.")
    assert lines[1] == (" Index  Count   %     Size   % Cumulative  % "
                        "Kind (class / dict of class)")
    assert lines[2].startswith("     0 ")
    del keep, key_only


def test_census_names_instance_dicts_dict_of_class():
    keep = [Census(i) for i in range(300)]
    dicts = [x.__dict__ for x in keep]  # materialised and held
    census = memlens.heap()
    assert census["dict of " + KIND].count == 300
    del keep, dicts


def test_census_diff_shows_what_grew_and_only_the_census_objects_else():
    first = memlens.heap()
    second = memlens.heap()
    grown = {r.kind for r in second.diff(first).rows if r.count > 0}
    # the first census's own result objects: HeapCensus, its rows, their
    # kind strings and numbers, the lists holding them
    assert grown <= {"memlens._objects.HeapCensus",
                     "dict of memlens._objects.HeapCensus",
                     "memlens._objects.HeapRow", "str", "int", "list", "dict",
                     "tuple"}, grown
    keep = [Census(i) for i in range(1000)]
    third = memlens.heap()
    growth = third.diff(second)
    assert growth[KIND].count == 1000
    assert growth.rows[0].size > 0
    with pytest.raises(TypeError):
        third.diff("x")
    assert "<table" in third._repr_html_() and third.to_dict()["rows"]
    del keep


def test_census_finds_instance_dicts_held_by_their_instance_only():
    keep = _made_dicts(400)
    census = memlens.heap()
    kind = f"dict of {WithDict.__module__}.WithDict"
    assert census[kind].count == 400
    assert census[kind].size >= 400 * sys.getsizeof({})
    del keep


def test_census_changes_nothing():
    keep = [Census(i) for i in range(1000)]
    had_dict = sum(any(isinstance(r, dict) for r in gc.get_referents(x))
                   for x in keep)
    memlens.heap()
    assert had_dict == sum(any(isinstance(r, dict) for r in
                               gc.get_referents(x)) for x in keep)
    del keep
