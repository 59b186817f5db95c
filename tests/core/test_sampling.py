"""sampling.c, through tracing with sample_bytes: the weight a block
stands for and the filter of sampled blocks.

Synthetic blocks (_trace_block) sit in the first page, where no real block
can be; a block far larger than the period is weighed by arithmetic alone
(one mark per period, whatever the countdown stood at), so its figure is
bounded exactly. The period is large (1 GiB) so that no mark falls in
the interpreter's own allocations meanwhile."""
import sys

import pytest

from memlens import _core

MEM = 1
PERIOD = 2**30


@pytest.fixture
def sampling():
    _core._trace_start(1, PERIOD)
    try:
        yield
    finally:
        _core._trace_stop()


def rows_at(snapshot, line):
    return [r for r in snapshot[3] if r[0] and r[0][0] == (__file__, line)]


def test_a_large_block_stands_for_its_size_in_whole_periods(sampling):
    size = 100 * PERIOD + 123
    line = sys._getframe().f_lineno + 1
    _core._trace_block(MEM, 64, size)
    snap = _core._trace_snapshot(False)
    assert snap[1] == PERIOD
    [row] = rows_at(snap, line)
    weight, count = row[1], row[2]
    assert count == 1
    assert weight % PERIOD == 0
    # The first mark falls within the countdown (at most 1.1 periods in),
    # then one per period.
    assert size - 1.1 * PERIOD <= weight <= size + PERIOD
    _core._trace_block(MEM, 64, -1)


def test_the_filter_counts_a_sampled_block_until_it_is_freed(sampling):
    before = _core._trace_stats()
    _core._trace_block(MEM, 64, 4 * PERIOD)
    held = _core._trace_stats()
    assert held["filter_counted"] == before["filter_counted"] + 1
    _core._trace_block(MEM, 64, -1)
    after = _core._trace_stats()
    assert after["filter_counted"] == before["filter_counted"]
    assert after["blocks"] == before["blocks"]


def test_exact_tracing_keeps_no_filter():
    _core._trace_start(1, 0)
    try:
        _core._trace_block(MEM, 64, 1000)
        stats = _core._trace_stats()
        assert stats["filter_counted"] == 0 and stats["filter_full"] == 0
        _core._trace_block(MEM, 64, -1)
    finally:
        _core._trace_stop()
