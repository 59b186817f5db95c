"""sizeof.c, through its _core functions: one object's size (_getsizeof),
the deep walk (_asizesof), the heap census (_heap_census) and how a census
names a kind (_kind_name). The rule itself, against its plain-Python
oracle, is in tests/test_objects.py."""
import gc
import sys

import numpy as np
import pytest

from memlens import _core


def census(program=True):
    objects = None if sys.version_info >= (3, 12) else gc.get_objects()
    try:
        return _core._heap_census(objects, program)
    finally:
        del objects


class Holder:
    def __init__(self, value):
        self.value = value


class Slots:
    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a


class Lying:
    def __sizeof__(self):
        return -5


@pytest.mark.parametrize("obj", [
    0, 2**100, -1, True, None, "ascii", "é" * 9, "€", b"bytes",
    bytearray(100), [1, 2, 3], (1,), {1, 2}, frozenset(), {"a": 1}, 1.5,
    2j, object(), Slots(1), np.ones(5), range(3), len,
], ids=repr)
def test_getsizeof_agrees_with_sys_getsizeof(obj):
    assert _core._getsizeof(obj) == sys.getsizeof(obj)


def test_asizesof_shares_out_what_each_argument_adds():
    shared = list(range(1000))
    a, b = [shared], [shared, "b"]
    (first, second), errors = _core._asizesof((a, b), -1)
    assert errors == 0
    assert first == _core._asizesof((a,), -1)[0][0]
    # the second counts only what the first did not reach
    assert second == sys.getsizeof(b) + sys.getsizeof("b")
    whole = _core._asizesof(([a, b],), -1)[0][0]
    assert whole == sys.getsizeof([a, b]) + first + second


def test_asizesof_limit_is_the_depth_followed():
    deep = [[["x" * 100]]]
    sizes = [_core._asizesof((deep,), limit)[0][0] for limit in range(4)]
    expected = [sys.getsizeof(deep), sys.getsizeof(deep[0]),
                sys.getsizeof(deep[0][0]), sys.getsizeof(deep[0][0][0])]
    assert sizes == [sum(expected[:i + 1]) for i in range(4)]
    assert _core._asizesof((deep,), -1)[0][0] == sizes[-1]


def test_asizesof_counts_each_object_once_in_a_cycle():
    a = [1]
    b = [a]
    a.append(b)
    (size,), _ = _core._asizesof((a,), -1)
    assert size == sys.getsizeof(a) + sys.getsizeof(b) + sys.getsizeof(1)


def test_a_lying_sizeof_is_counted_as_an_error_and_its_basic_size():
    (size,), errors = _core._asizesof((Lying(),), -1)
    assert errors == 1
    assert size >= Lying.__basicsize__


def test_instances_reach_their_attributes_and_slots():
    big = "z" * 10_000
    for obj in (Holder(big), Slots(big)):
        (size,), _ = _core._asizesof((obj,), -1)
        assert size >= _core._getsizeof(obj) + sys.getsizeof(big)


def test_census_totals_are_the_sum_of_its_rows():
    count, size, errors, rows = census()
    assert errors == 0
    assert count == sum(r[2] for r in rows) > 1000
    assert size == sum(r[3] for r in rows) > 0
    kinds = {(tp, dict_of) for tp, dict_of, _, _ in rows}
    assert len(kinds) == len(rows)  # one row per kind
    assert all(isinstance(tp, type) and dict_of in (0, 1)
               for tp, dict_of, _, _ in rows)


def test_census_counts_new_instances_and_their_dicts():
    def of(rows, tp, dict_of=0):
        return next((r[2] for r in rows if r[0] is tp and r[1] == dict_of), 0)

    before = census()[3]
    held = [Holder(i) for i in range(500)]
    for h in held[:100]:
        h.__dict__  # made: a dict of Holder each
    after = census()[3]
    assert of(after, Holder) - of(before, Holder) == 500
    assert of(after, Holder, 1) - of(before, Holder, 1) >= 100
    del held


def test_census_of_data_only_leaves_out_the_program():
    with_program = census(program=True)[1]
    data_only = census(program=False)[1]
    assert 0 < data_only < with_program


@pytest.mark.parametrize("tp, name", [
    (int, "int"),
    (dict, "dict"),
    (Holder, f"{__name__}.Holder"),
    (type(sys), "module"),
    (np.ndarray, "numpy.ndarray"),
])
def test_kind_names(tp, name):
    assert _core._kind_name(tp) == name


def test_kind_name_of_a_nested_class_is_its_qualified_name():
    class Inner:
        pass

    assert _core._kind_name(Inner) == (
        f"{__name__}.test_kind_name_of_a_nested_class_is_its_qualified_name"
        ".<locals>.Inner")


def test_kind_name_runs_no_user_code():
    class Meta(type):
        def __getattribute__(cls, name):
            raise AssertionError(f"ran for {name}")

    Odd = Meta("Odd", (), {"__module__": "somewhere"})
    assert _core._kind_name(Odd) == "somewhere.Odd"


def test_kind_name_needs_a_type():
    with pytest.raises(TypeError, match="needs a type"):
        _core._kind_name(5)


@pytest.mark.parametrize("args", [(), ([1],), ([1], "x"), ((1,), -1, 2)])
def test_asizesof_argument_errors(args):
    with pytest.raises(TypeError):
        _core._asizesof(*args)
