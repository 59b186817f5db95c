"""lineprof.c, through its _core functions: code objects registered, line
events counted under the trace-function backend (every version has it),
the allocation columns, clearing, and the engine's state."""
import pytest

from memlens import _core

MiB = 2**20


def loop(n):
    total = 0
    for i in range(n):
        total += i
    return total


def allocate():
    block = bytearray(4 * MiB)
    del block
    return 1


def first_line(func):
    return func.__code__.co_firstlineno


def last_line(func):
    import dis

    return max(line for _, line in dis.findlinestarts(func.__code__)
               if line is not None)


def profiled(func, *args, alloc=False):
    """Runs func(*args) with its code profiled; its rows by line number."""
    code = func.__code__
    _core._line_add_code(code, last_line(func))
    _core._line_clear(code)
    _core._line_begin(alloc)
    try:
        _core._line_settrace(True)
        try:
            func(*args)
        finally:
            _core._line_settrace(False)
    finally:
        _core._line_end(alloc)
    rows = [r for c, r in _core._line_results() if c is code]
    assert len(rows) == 1
    return {row[0]: row for row in rows[0]}


def test_each_line_is_counted_once_per_occurrence():
    rows = profiled(loop, 7)
    start = first_line(loop)
    hits = {line - start: row[1] for line, row in rows.items()}
    assert hits[1] == 1  # total = 0
    assert hits[3] == 7  # the body
    assert hits[4] == 1  # return
    assert hits[2] in (7, 8)  # the for line: once per turn (and the exit)


def test_allocation_columns_count_the_line_that_allocated():
    rows = profiled(allocate, alloc=True)
    start = first_line(allocate)
    line, hits, increment, mem, allocated, freed = rows[start + 1]
    assert hits == 1 and allocated >= 4 * MiB
    # the del line freed it
    assert rows[start + 2][5] >= 4 * MiB
    assert _core._line_state()["alloc_users"] == 0


def test_without_alloc_the_allocation_columns_stay_zero():
    rows = profiled(allocate)
    assert all(row[4] == 0 and row[5] == 0 for row in rows.values())


def test_clear_zeroes_one_code_or_all():
    profiled(loop, 3)
    code = loop.__code__
    _core._line_clear(code)
    assert [r for c, r in _core._line_results() if c is code] == [[]]
    profiled(loop, 3)
    _core._line_clear()
    assert [r for c, r in _core._line_results() if c is code] == [[]]


def test_code_not_registered_is_not_counted():
    def other():
        return 1

    profiled(loop, 2)
    _core._line_begin(False)
    _core._line_settrace(True)
    try:
        other()
    finally:
        _core._line_settrace(False)
        _core._line_end(False)
    assert not [c for c, _ in _core._line_results() if c is other.__code__]


def test_begin_and_end_nest_and_the_state_says_so():
    state = _core._line_state()
    assert state["begun"] == 0 and state["depth"] == 0
    _core._line_begin(True)
    _core._line_begin(False)
    assert _core._line_state()["begun"] == 2
    assert _core._line_state()["alloc_users"] == 1
    assert _core.state()["line_profiling"]
    _core._line_end(False)
    _core._line_end(True)
    state = _core._line_state()
    assert state["begun"] == 0 and state["alloc_users"] == 0
    assert not _core.state()["line_profiling"]
    assert not _core.state()["hooks_installed"]


def test_registering_twice_keeps_one_entry():
    code = loop.__code__
    _core._line_add_code(code, last_line(loop))
    codes = _core._line_state()["codes"]
    _core._line_add_code(code, last_line(loop))
    assert _core._line_state()["codes"] == codes


@pytest.mark.parametrize("args", [(loop, 3), ("code", 3), (loop.__code__,)])
def test_add_code_takes_a_code_object_and_a_line(args):
    with pytest.raises(TypeError):
        _core._line_add_code(*args)
