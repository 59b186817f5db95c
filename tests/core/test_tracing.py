"""tracing.c, through its _core functions: the block tables, the traced
current and peak, snapshots now and at the peak, and argument checks.

Synthetic blocks (_trace_block) sit in the first page, where no real block
can be, so that their figures are exact whatever else the interpreter
allocates meanwhile."""
import sys

import pytest

from memlens import _core

RAW, MEM = 0, 1


@pytest.fixture
def tracing():
    _core._trace_start(3, 0)
    try:
        yield
    finally:
        _core._trace_stop()


def here():
    """The caller's line number."""
    return sys._getframe(1).f_lineno


def rows_at(snapshot, line):
    """The rows of a snapshot whose innermost frame is `line` here."""
    return [r for r in snapshot[3]
            if r[0] and r[0][0] == (__file__, line)]


def test_start_and_stop_say_so_and_a_second_start_is_refused():
    assert not _core._trace_is_tracing()
    _core._trace_start(1, 0)
    try:
        assert _core._trace_is_tracing()
        assert _core.state()["hooks_installed"]
        with pytest.raises(RuntimeError, match="already running"):
            _core._trace_start(1, 0)
    finally:
        _core._trace_stop()
    assert not _core._trace_is_tracing()
    assert not _core.state()["hooks_installed"]
    _core._trace_stop()  # idempotent
    assert not _core._trace_is_tracing()


@pytest.mark.parametrize("nframes, sample, exc", [
    (0, 0, ValueError),
    (10**6, 0, ValueError),
    (1, -1, ValueError),
    (1, 2**62, ValueError),
    ("1", 0, TypeError),
    (1, 0.5, TypeError),
])
def test_bad_start_arguments_start_nothing(nframes, sample, exc):
    with pytest.raises(exc):
        _core._trace_start(nframes, sample)
    assert not _core._trace_is_tracing()


def test_a_block_counts_until_freed_and_the_peak_stays(tracing):
    # Exact in the block's own row; the totals also hold what the test's
    # own few objects take meanwhile.
    blocks = _core._trace_stats()["blocks"]
    current = _core._trace_memory()[0]
    line = here() + 1
    _core._trace_block(MEM, 16, 100_000)
    now, high = _core._trace_memory()
    assert 100_000 <= now - current < 100_000 + 16_384 and high >= now
    assert [r[1] for r in rows_at(_core._trace_snapshot(False), line)] == [
        100_000]
    assert _core._trace_stats()["blocks"] >= blocks + 1
    _core._trace_block(MEM, 16, -1)
    after, high_after = _core._trace_memory()
    assert after - current < 16_384 and high_after >= high
    _core._trace_reset_peak()
    now, peak = _core._trace_memory()
    assert peak - now < 16_384


def test_freeing_an_unknown_address_changes_nothing(tracing):
    line = here() + 1
    _core._trace_block(RAW, 32, 5000)
    _core._trace_block(RAW, 48, -1)  # never recorded
    _core._trace_block(MEM, 32, -1)  # recorded in the other domain
    assert [r[1] for r in rows_at(_core._trace_snapshot(False), line)] == [
        5000]
    _core._trace_block(RAW, 32, -1)
    assert [r[1] for r in rows_at(_core._trace_snapshot(False), line)] in (
        [], [0])


def test_a_block_recorded_again_replaces_the_first(tracing):
    line = here() + 1
    _core._trace_block(MEM, 64, 7000)
    _core._trace_block(MEM, 64, 3000)  # a realloc in place, as the hooks see
    rows = rows_at(_core._trace_snapshot(False), line)
    assert [r[1] for r in rows] == [0]  # the first is gone
    assert [r[1] for r in rows_at(_core._trace_snapshot(False), line + 1)
            ] == [3000]
    _core._trace_block(MEM, 64, -1)


def test_snapshot_names_the_line_now_and_at_the_peak(tracing):
    line = here() + 1
    _core._trace_block(MEM, 80, 123_456)
    snap = _core._trace_snapshot(False)
    (nframes, sample_bytes, total, _, lost_frees, lost_records, native,
     resident, rss_rise, overhead) = snap
    assert (nframes, sample_bytes, lost_frees, lost_records) == (3, 0, 0, 0)
    # without native tracing, every block is taken as resident
    assert (native, resident, rss_rise, overhead) == (False, total, None,
                                                      None)
    [row] = rows_at(snap, line)
    traceback, size, count, allocated, allocations, native, resident = row
    assert (size, count, native, resident) == (123_456, 1, False, 123_456)
    assert allocated >= 123_456 and allocations >= 1
    assert 1 <= len(traceback) <= 3
    assert total >= 123_456
    _core._trace_block(MEM, 80, -1)
    assert [r[1] for r in rows_at(_core._trace_snapshot(False), line)] in (
        [], [0])
    # the peak came while the block was alive: the peak's snapshot has it
    assert [r[1] for r in rows_at(_core._trace_snapshot(True), line)] == [
        123_456]


@pytest.mark.parametrize("args, exc, match", [
    ((2, 16, 10), ValueError, "domain"),
    ((MEM, 0, 10), ValueError, "address"),
    ((MEM, 24, 10), ValueError, "address"),
    ((MEM, 4096, 10), ValueError, "address"),
])
def test_synthetic_blocks_only_in_the_first_page(tracing, args, exc, match):
    with pytest.raises(exc, match=match):
        _core._trace_block(*args)


def test_nothing_to_snapshot_or_record_when_not_tracing():
    with pytest.raises(RuntimeError, match="not tracing"):
        _core._trace_snapshot(False)
    with pytest.raises(RuntimeError, match="not running"):
        _core._trace_block(MEM, 16, 10)


def test_skip_prefixes_must_be_tuples_of_str():
    with pytest.raises(TypeError, match="tuple of str"):
        _core._trace_skip(["/usr"], ())
    with pytest.raises(TypeError, match="tuple of str"):
        _core._trace_skip((), (1,))


def _allocate_here(nbytes):
    return here(), bytearray(nbytes)


def test_snapshot_names_each_frames_function_when_asked(tracing):
    line, block = _allocate_here(2**20)
    caller = here() - 1
    [plain] = rows_at(_core._trace_snapshot(False), line)
    assert plain[0][1] == (__file__, caller)
    named = [r for r in _core._trace_snapshot(False, True)[3]
             if r[0] and r[0][0] == (__file__, line, "_allocate_here")]
    assert len(named) == 1
    assert named[0][0][1] == (
        __file__, caller,
        "test_snapshot_names_each_frames_function_when_asked")
    assert named[0][1:] == plain[1:]
    with pytest.raises(TypeError):
        _core._trace_snapshot()
    del block


def test_real_allocations_are_traced_to_their_line(tracing):
    before = _core._trace_memory()[0]
    line = here() + 1
    block = bytearray(4 * 2**20)
    assert _core._trace_memory()[0] - before >= 4 * 2**20
    [row] = rows_at(_core._trace_snapshot(False), line)
    assert row[1] >= 4 * 2**20
    del block
    assert _core._trace_memory()[0] - before < 4 * 2**20
