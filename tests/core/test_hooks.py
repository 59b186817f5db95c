"""The allocator hooks behind measure()'s allocated/freed counters."""
import threading
import tracemalloc

import pytest

from memlens import _core

from conftest import MiB, counting_hooks as hooks


def test_hooks_count_a_block_handed_out_and_taken_back():
    with hooks() as h:
        block = bytes(10 * MiB)
        del block
    assert 10 * MiB <= h.allocated < 10 * MiB + 64 * 1024
    assert 10 * MiB <= h.freed < 10 * MiB + 64 * 1024


def test_hooks_count_a_large_block_once():
    # pymalloc hands large requests to the raw domain: one block, one count.
    with hooks() as h:
        items = [0] * 10**6
    assert 8 * 10**6 <= h.allocated < 8 * 10**6 + 64 * 1024
    del items


def test_hooks_do_not_count_when_nobody_asked():
    before = _core.alloc_counters()
    block = bytes(5 * MiB)
    del block
    assert _core.alloc_counters() == before
    assert not _core.state()["hooks_installed"]


def test_freeing_an_older_block_is_not_counted():
    block = bytes(5 * MiB)
    with hooks() as h:
        del block
    assert h.freed < 64 * 1024


def test_resize_counts_old_block_freed_and_new_one_allocated():
    with hooks() as h:
        buf = bytearray(1 * MiB)
        buf.extend(bytes(3 * MiB))
        del buf
    assert h.allocated >= 4 * MiB + 1 * MiB
    assert h.allocated - h.freed < 64 * 1024


def test_acquire_and_release_are_counted():
    _core._hooks_acquire()
    _core._hooks_acquire()
    _core._hooks_release()
    assert _core.state()["hooks_installed"]
    _core._hooks_release()
    assert not _core.state()["hooks_installed"]
    with pytest.raises(RuntimeError, match="released more often"):
        _core._hooks_release()


def test_hooks_coexist_with_tracemalloc_started_after():
    with hooks() as h:
        tracemalloc.start()
        try:
            block = bytes(2 * MiB)
            traced = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        later = bytes(3 * MiB)
    assert traced >= 2 * MiB
    assert h.allocated >= 5 * MiB
    del block, later
    # Ours stayed in the chain under tracemalloc's; the next use tidies up.
    with hooks():
        pass
    assert not _core.state()["hooks_installed"]


def test_hooks_released_under_tracemalloc_leave_it_working():
    tracemalloc.start()
    try:
        with hooks() as h:
            block = bytes(2 * MiB)
        assert h.allocated >= 2 * MiB
        before = tracemalloc.get_traced_memory()[0]
        more = bytes(3 * MiB)
        assert tracemalloc.get_traced_memory()[0] - before >= 3 * MiB
    finally:
        tracemalloc.stop()
    del block, more
    assert not _core.state()["hooks_installed"]


@pytest.mark.valgrind
def test_four_threads_allocating_at_once():
    def work():
        keep = []
        for i in range(2000):
            keep.append(bytes(1000))
            if i % 3 == 0:
                keep.pop(0)

    with hooks() as h:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert h.allocated >= 4 * 2000 * 1000
    assert _core.alloc_counters()[2] == 0  # no bookkeeping failure


def test_hooks_dropped_by_tracemalloc_stopping_are_noticed():
    # tracemalloc.stop() restores the allocators it saved, which drops
    # ours from the chain; the next use must chain afresh.
    tracemalloc.start()
    try:
        _core._hooks_acquire()
    finally:
        tracemalloc.stop()
    _core._hooks_release()
    assert not _core.state()["hooks_installed"]
    with hooks() as h:
        block = bytes(MiB)
    assert h.allocated >= MiB
    del block


def test_light_users_count_no_bytes():
    _core._hooks_acquire(False)
    try:
        before = _core.alloc_counters()
        block = bytes(MiB)
        assert _core.alloc_counters() == before
    finally:
        _core._hooks_release(False)
    del block
    with pytest.raises(RuntimeError):
        _core._hooks_release(False)


def test_bare_hooks_pass_every_call_on_and_go_away():
    # What the tracing benchmark times as the floor of being a hook at all.
    before = _core.alloc_counters()
    _core._hooks_bare(True)
    try:
        assert _core.state()["hooks_installed"]
        tracemalloc.start()  # chained above ours: sees what passes through
        try:
            kept = [bytearray(1000) for _ in range(1000)]
            assert tracemalloc.get_traced_memory()[0] >= 1000 * 1000
        finally:
            tracemalloc.stop()
        assert _core.alloc_counters() == before  # nothing counted
        del kept
    finally:
        _core._hooks_bare(False)
    assert not _core.state()["hooks_installed"]
    with pytest.raises(RuntimeError, match="more often than acquired"):
        _core._hooks_bare(False)


def test_quiet_blocks_are_not_counted_but_frees_of_counted_ones_are():
    with hooks() as h:
        counted = bytes(5 * MiB)
        grown = bytearray(1 * MiB)
        assert _core._hooks_quiet(True) == 1
        try:
            quiet = bytes(3 * MiB)
            del counted
            grown.extend(bytes(3 * MiB))  # the old block goes, counted
        finally:
            assert _core._hooks_quiet(False) == 0
        del quiet, grown  # blocks never counted: no free counted either
    assert 6 * MiB <= h.allocated < 6 * MiB + 64 * 1024
    assert 6 * MiB <= h.freed < 6 * MiB + 64 * 1024


def test_quiet_nests_and_refuses_to_go_below_zero():
    assert _core._hooks_quiet(True) == 1
    assert _core._hooks_quiet(True) == 2
    assert _core._hooks_quiet(False) == 1
    assert _core._hooks_quiet(False) == 0
    with pytest.raises(RuntimeError, match="without"):
        _core._hooks_quiet(False)
