"""census.c, through its _core functions: the heap census (_heap_census)
and how a census names a kind (_kind_name)."""
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
