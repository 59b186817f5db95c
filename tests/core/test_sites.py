"""sites.c, through tracing: a site is a traceback interned once, the
folders it passes over, and the unknown site of blocks whose stack cannot
be seen.

Synthetic blocks (_trace_block) sit in the first page, where no real block
can be."""
import os
import sys

import pytest

from memlens import _core

RAW, MEM = 0, 1


@pytest.fixture
def tracing():
    _core._trace_skip((), ())
    _core._trace_start(1, 0)
    try:
        yield
    finally:
        _core._trace_stop()
        _core._trace_skip((), ())


def rows_at(line):
    return [r for r in _core._trace_snapshot(False)[3]
            if r[0] and r[0][0] == (__file__, line)]


def test_blocks_from_one_line_share_one_site(tracing):
    line = sys._getframe().f_lineno + 2
    for address in (16, 32, 48):
        _core._trace_block(MEM, address, 100)
    [row] = rows_at(line)
    assert (row[1], row[2]) == (300, 3)
    _core._trace_block(MEM, 64, 100)  # another line: a site of its own
    assert [(r[1], r[2]) for r in rows_at(line)] == [(300, 3)]
    assert [r[1] >= 100 for r in rows_at(line + 3)] == [True]
    for address in (16, 32, 48, 64):
        _core._trace_block(MEM, address, -1)


def test_a_skipped_folder_hands_its_blocks_to_the_caller(tracing):
    _core._trace_skip((os.path.dirname(__file__),), ())
    line = sys._getframe().f_lineno + 1
    _core._trace_block(MEM, 16, 100)
    assert rows_at(line) == []
    # Nothing from this folder since it was skipped (a block from the
    # test's entry, before, may stand).
    folder = os.path.dirname(__file__)
    assert not [r for r in _core._trace_snapshot(False)[3]
                if r[0] and r[0][0][0].startswith(folder)
                and r[0][0][1] >= line - 1]
    assert _core._trace_memory()[0] >= 100
    _core._trace_block(MEM, 16, -1)


def test_blocks_of_memlenss_own_folders_get_no_site(tracing):
    _core._trace_skip((), (os.path.dirname(__file__),))
    before = _core._trace_memory()[0]
    line = sys._getframe().f_lineno + 1
    _core._trace_block(MEM, 16, 100)
    assert _core._trace_memory()[0] - before < 100
    assert rows_at(line) == []
    _core._trace_block(MEM, 16, -1)


def test_a_raw_block_without_the_gil_goes_to_the_unknown_site(tracing):
    _core._trace_block(RAW, 16, 100, False)
    unknown = [r for r in _core._trace_snapshot(False)[3] if r[0] == ()]
    assert [(r[1], r[2]) for r in unknown] == [(100, 1)]
    _core._trace_block(RAW, 16, -1, False)
