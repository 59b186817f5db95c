"""sizeof.c, through its _core functions: one object's size (_getsizeof)
and the deep walk (_asizesof). The rule itself, against its plain-Python
oracle, is in tests/test_objects.py; the heap census, which reuses the
walk, in test_census.py."""
import sys

import numpy as np
import pytest

from memlens import _core


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


@pytest.mark.parametrize("args", [(), ([1],), ([1], "x"), ((1,), -1, 2)])
def test_asizesof_argument_errors(args):
    with pytest.raises(TypeError):
        _core._asizesof(*args)
