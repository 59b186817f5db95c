"""Allocation tracing (SPEC 5): snapshots by line, now and at the peak."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

import memlens
from memlens import _core

from conftest import MiB, in_threads

HERE = os.path.abspath(__file__)

#: Before 3.11 every call makes a frame object, allocated on the caller's
#: line, and CPython keeps one per code object for the next call.
FRAMES_ARE_OBJECTS = sys.version_info < (3, 11)
#: memlens's own code: no report may show a line of it.
PACKAGE = os.path.dirname(memlens.__file__) + os.sep


@pytest.fixture(autouse=True)
def no_tracing_left():
    yield
    assert not memlens.is_tracing(), "tracing left running"


def line_of(snapshot, text, key="lineno"):
    """The Statistic of the line of this file whose source is `text`."""
    for stat in snapshot.statistics(key):
        if stat.filename == HERE and stat.line == text:
            return stat
    return None


@pytest.mark.valgrind
def test_surface_and_context_manager():
    assert not memlens.is_tracing()
    with memlens.tracing() as t:
        assert memlens.is_tracing()
        data = [bytes(1000) for _ in range(1000)]
        current, peak = memlens.traced_memory()
        assert peak >= current >= 1000 * 1000
    assert not memlens.is_tracing()
    row = line_of(t.snapshot, "data = [bytes(1000) for _ in range(1000)]")
    assert row.count >= 1000 and row.size >= 1000 * 1000
    assert t.traced[0] >= 1000 * 1000
    del data


def test_start_twice_and_bad_arguments():
    memlens.start_tracing()
    try:
        with pytest.raises(RuntimeError, match="already"):
            memlens.start_tracing()
    finally:
        memlens.stop_tracing()
    memlens.stop_tracing()  # idempotent
    with pytest.raises(ValueError, match="nframes"):
        memlens.start_tracing(0)
    with pytest.raises(ValueError, match="sample_bytes"):
        memlens.start_tracing(1, -1)
    with pytest.raises(ValueError, match="sample_bytes"):
        memlens.start_tracing(1, 2**50)
    with pytest.raises(TypeError):
        memlens.start_tracing("1")
    with pytest.raises(RuntimeError, match="not tracing"):
        memlens.take_snapshot()


def test_snapshot_total_is_the_sum_of_its_rows():
    with memlens.tracing() as t:
        keep = [[i] * 10 for i in range(5000)]
        text = "x" * 100000
    for snap in (t.snapshot, t.peak):
        assert snap.total == sum(s.size for s in snap.statistics("lineno"))
        assert snap.total == sum(s.size for s in snap.statistics("filename"))
        assert snap.total == sum(trace[1] for trace in snap.traces)
    assert str(t.snapshot).splitlines()[-1] == (
        f"Total allocated size: {t.snapshot.total / 1024:.1f} KiB")
    del keep, text


def test_str_has_the_familiar_form():
    with memlens.tracing() as t:
        words = ["w" * 50 + str(i) for i in range(20000)]
        prefix = [w[:3] for w in words]
    text = t.snapshot.format(limit=1)
    lines = text.splitlines()
    assert lines[0] == "Top 1 lines"
    assert lines[1].startswith(f"#1: {HERE}:") and lines[1].endswith(" KiB")
    assert lines[2] == '    words = ["w" * 50 + str(i) for i in range(20000)]'
    assert lines[3].endswith(" other: " + lines[3].split(" other: ")[1])
    assert lines[-1].startswith("Total allocated size: ")
    del words, prefix


@pytest.mark.parametrize("args, message", [
    ((2**63,), "nframes must be between 1 and 100, got 9223372036854775808"),
    ((-2**70,), "nframes must be between 1 and 100, got -"),
    ((1, 2**70), "sample_bytes must be between 0 and 1099511627776, got "
                 "1180591620717411303424"),
    ((1, -2**64), "sample_bytes must be between 0 and 1099511627776, got -"),
])
def test_huge_arguments_get_the_range_error(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        memlens.start_tracing(*args)
    with pytest.raises(ValueError, match=re.escape(message)):
        with memlens.tracing(*args):
            pass
    assert not memlens.is_tracing()


def test_python_ranges_are_the_c_cores():
    from memlens._tracing import MAX_FRAMES, MAX_SAMPLE_BYTES

    for args in ((MAX_FRAMES + 1, 0), (1, MAX_SAMPLE_BYTES + 1)):
        with pytest.raises(ValueError, match="must be between"):
            _core._trace_start(*args)
    memlens.start_tracing(MAX_FRAMES, MAX_SAMPLE_BYTES)
    memlens.stop_tracing()


def test_format_limit_negative_is_an_error_zero_and_none_keep_their_meaning():
    with memlens.tracing() as t:
        kept = [bytes(100) for _ in range(1000)]
    snap = t.snapshot
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative int or None"):
            snap.format(limit=bad)
    rows = len(snap.statistics())
    assert rows >= 1
    everything = snap.format(limit=None).splitlines()
    assert everything[0] == f"Top {rows} lines"
    assert not any(" other: " in line for line in everything)
    summary = snap.format(limit=0).splitlines()
    assert summary[0] == "Top 0 lines" and len(summary) == 3
    assert summary[1].startswith(f"{rows} other: ")
    assert summary[-1] == everything[-1]
    del kept


def test_numpy_array_data_is_counted_once_on_its_line():
    with memlens.tracing() as t:
        a = np.ones(10**6)
        view = a[::2]
    row = line_of(t.snapshot, "a = np.ones(10**6)")
    assert 8_000_000 <= row.size < 8_002_000
    view_row = line_of(t.snapshot, "view = a[::2]")
    assert view_row is None or view_row.size < 1000
    del a, view


def test_per_line_sizes_agree_with_tracemalloc():
    tracemalloc.start(1)
    try:
        with memlens.tracing() as t:
            lists = [[0] * 100 for _ in range(3000)]
            strings = ["s" * 1000 + str(i) for i in range(3000)]
            blob = bytearray(5 * MiB)
        theirs = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    compared = 0
    for stat in theirs.statistics("lineno"):
        frame = stat.traceback[0]
        if frame.filename != HERE or stat.size < MiB:
            continue
        mine = [s for s in t.snapshot.statistics("lineno")
                if s.filename == HERE and s.lineno == frame.lineno]
        assert mine, frame
        assert abs(mine[0].size - stat.size) <= 0.01 * stat.size
        compared += 1
    assert compared == 3
    del lists, strings, blob


def phase_a():
    big = np.ones(300 * MiB // 8)  # line X
    return float(big[0])


def phase_b():
    return np.ones(200 * MiB // 8)  # line Y


def test_peak_snapshot_shows_what_filled_memory_at_the_worst_moment():
    with memlens.tracing() as t:
        phase_a()
        kept = phase_b()
    top_peak = t.peak.top(1)[0]
    top_now = t.snapshot.top(1)[0]
    assert top_peak.line == "big = np.ones(300 * MiB // 8)  # line X"
    assert abs(top_peak.size - 300 * MiB) < MiB
    assert top_now.line == "return np.ones(200 * MiB // 8)  # line Y"
    assert abs(top_now.size - 200 * MiB) < MiB
    assert t.traced[1] >= 300 * MiB > t.traced[0]
    del kept


def test_reset_peak_starts_the_peak_again():
    memlens.start_tracing()
    try:
        phase_a()
        assert memlens.traced_memory()[1] >= 300 * MiB
        memlens.reset_peak()
        current, peak = memlens.traced_memory()
        assert peak == current < 10 * MiB
        assert memlens.peak_snapshot().total < 10 * MiB
    finally:
        memlens.stop_tracing()


def sampled_work():
    a = [bytes(100) for _ in range(200_000)]      # ~26 MB of small blocks
    b = bytearray(30 * MiB)
    c = [str(i) * 20 for i in range(300_000)]     # ~30 MB of strings
    # Over pymalloc's 512-byte limit: handed on to the raw domain, where
    # the same bytes must not count twice (~2x estimates if they do).
    d = [bytes(1000) for _ in range(20_000)]      # ~20 MB
    return a, b, c, d


def test_sampling_estimates_big_lines_within_ten_percent():
    # What a line hands out is what sampling estimates well: every mark
    # falling in the stream of a line's allocations counts for it.
    with memlens.tracing() as exact:
        kept = sampled_work()
    del kept
    for _ in range(3):
        with memlens.tracing(sample_bytes=512 * 1024) as sampled:
            kept = sampled_work()
        del kept
        checked = 0
        for stat in exact.snapshot.statistics("lineno", by="allocated"):
            if stat.allocated < 10 * MiB:
                continue
            est = [s for s in sampled.snapshot.statistics("lineno",
                                                          by="allocated")
                   if (s.filename, s.lineno) == (stat.filename, stat.lineno)]
            assert est, stat
            assert abs(est[0].allocated - stat.allocated) <= (
                0.10 * stat.allocated), (stat.line, est[0].allocated,
                                         stat.allocated)
            checked += 1
        assert checked == 4
    # Live bytes are estimated too, with the noise of which blocks were
    # marked (temporaries on the same line take some marks).
    big = sampled.snapshot.top(1)[0]
    assert big.size > 10 * MiB


def test_four_threads_allocating_at_once():
    def work(out):
        keep = []
        for i in range(20000):
            keep.append(bytearray(100 + i % 50))
            if i % 3 == 0:
                keep.pop()
        out.append(keep)

    results = []
    with memlens.tracing() as t:
        in_threads(work, (results,))
    assert t.snapshot.total == sum(s.size for s in t.snapshot.statistics())
    row = line_of(t.snapshot, "keep.append(bytearray(100 + i % 50))")
    live = sum(len(r) for r in results)
    assert row.count >= live


@pytest.mark.parametrize("child_action", ["continue", "stop"])
def test_forked_child_can_go_on_or_stop(child_action):
    memlens.start_tracing()
    try:
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)
            code = 1
            try:
                data = [bytes(1000) for _ in range(100)]
                if child_action == "continue":
                    snap = memlens.take_snapshot()
                    ok = line_of(snap, "data = [bytes(1000) for _ in "
                                       "range(100)]") is not None
                else:
                    memlens.stop_tracing()
                    ok = not memlens.is_tracing()
                code = 0 if ok and data else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert memlens.is_tracing()
    finally:
        memlens.stop_tracing()


def test_keyboard_interrupt_inside_traced_code_leaves_a_usable_state():
    def interrupted():
        keep = [bytes(100) for _ in range(1000)]
        raise KeyboardInterrupt(len(keep))

    memlens.start_tracing()
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupted()
        after = [bytes(100) for _ in range(1000)]
        assert line_of(memlens.take_snapshot(),
                       "after = [bytes(100) for _ in range(1000)]")
    finally:
        memlens.stop_tracing()
    del after


@pytest.mark.parametrize("first", ["memlens", "tracemalloc"])
def test_coexists_with_tracemalloc_in_both_orders(first):
    # Looked up at call time, as a program calls tracemalloc.stop().
    starts = {"memlens": lambda: memlens.start_tracing(),
              "tracemalloc": lambda: tracemalloc.start()}
    stops = {"memlens": lambda: memlens.stop_tracing(),
             "tracemalloc": lambda: tracemalloc.stop()}
    second = "tracemalloc" if first == "memlens" else "memlens"
    starts[first]()
    starts[second]()
    try:
        block = bytearray(3 * MiB)
        assert tracemalloc.get_traced_memory()[0] >= 3 * MiB
        assert memlens.traced_memory()[0] >= 3 * MiB
        stops[first]()
        more = bytearray(2 * MiB)  # the other one keeps working
        if second == "memlens":
            assert line_of(memlens.take_snapshot(),
                           "more = bytearray(2 * MiB)  # the other one "
                           "keeps working")
        else:
            assert tracemalloc.get_traced_memory()[0] >= 5 * MiB
    finally:
        stops[second]()
        stops[first]()
    # When tracemalloc chained above memlens and stopped last, memlens's
    # hook was left passing calls through; its next use unlinks it.
    _core._hooks_acquire(False)
    _core._hooks_release(False)
    assert not _core.state()["hooks_installed"]
    assert not hasattr(tracemalloc.stop, "__wrapped__")
    del block, more


def deep(n):
    if n == 0:
        return bytearray(2 * MiB)
    return deep(n - 1)


@pytest.mark.valgrind
def test_traceback_key_and_exports():
    with memlens.tracing(nframes=5) as t:
        kept = deep(3)
    stats = t.snapshot.statistics("traceback")
    top = stats[0]
    assert top.size >= 2 * MiB and len(top.traceback) == 5
    assert top.traceback[0].lineno == deep.__code__.co_firstlineno + 2
    text = t.snapshot.format(limit=1, key="traceback")
    assert text.count('  File "') == 5 and "return bytearray(2 * MiB)" in text
    folded = t.snapshot.folded()
    stack_line = max(folded.splitlines(), key=lambda x: int(x.split()[-1]))
    assert stack_line.count(";") == 4 and int(stack_line.split()[-1]) >= 2 * MiB
    doc = json.loads(json.dumps(t.snapshot.speedscope()))
    profile = doc["profiles"][0]
    assert profile["unit"] == "bytes"
    assert sum(profile["weights"]) == sum(
        trace[1] for trace in t.snapshot.traces if trace[1] > 0)
    assert len(profile["samples"]) == len(profile["weights"])
    assert json.loads(t.snapshot.to_json())["total"] == t.snapshot.total
    del kept


def test_diff_shows_what_grew():
    memlens.start_tracing()
    try:
        before = memlens.take_snapshot()
        grown = [bytes(500) for _ in range(4000)]
        after = memlens.take_snapshot()
    finally:
        memlens.stop_tracing()
    diffs = after.diff(before)
    top = diffs[0]
    assert top.line == "grown = [bytes(500) for _ in range(4000)]"
    assert top.size_diff >= 4000 * 500 and top.count_diff >= 4000
    with pytest.raises(TypeError):
        after.diff("nope")
    with pytest.raises(ValueError):
        after.top(key="bogus")
    del grown


def test_allocated_counts_what_was_freed_too():
    with memlens.tracing() as t:
        for _ in range(100):
            temp = bytearray(100_000)
        del temp
    row = [s for s in t.snapshot.statistics(by="allocated")
           if s.line == "temp = bytearray(100_000)"][0]
    assert row.allocated >= 100 * 100_000 and row.allocations >= 100
    assert row.size < 100_000 * 2
    text = t.snapshot.format(limit=1, by="allocated")
    assert "temp = bytearray(100_000)" in text
    assert "Total handed out: " in text


def test_snapshot_reprs():
    with memlens.tracing() as t:
        x = [bytes(100) for _ in range(100)]
    assert "<table" in t.snapshot._repr_html_()
    assert "Snapshot current" in repr(t.snapshot)
    assert t.snapshot.top(1)[0].to_dict()["line"]
    del x


def test_no_collection_runs_inside_a_traced_allocation():
    # On 3.11 making a frame object may start a collection; if the hook
    # let it, this __del__ would clear the list in the middle of a resize.
    import gc

    held = []
    items = tuple(range(300))

    class Bomb:
        def __init__(self):
            self.me = self

        def __del__(self):
            held.clear()

    def grow():
        held.extend(items)

    threshold = gc.get_threshold()
    memlens.start_tracing()
    gc.set_threshold(1)
    try:
        for _ in range(300):
            held[:] = [object() for _ in range(50)]
            Bomb()
            grow()
    finally:
        gc.set_threshold(*threshold)
        memlens.stop_tracing()
    gc.collect()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="no subinterpreters")
def test_a_subinterpreter_does_not_confuse_the_raw_hooks():
    import subprocess

    code = (
        "import os\n"
        "try:\n    import _interpreters as I\n"
        "except ImportError:\n    import _xxsubinterpreters as I\n"
        "import memlens\n"
        "iid = I.create()\n"
        "memlens.start_tracing()\n"
        "for _ in range(3):\n    os.getcwd()\n"
        "memlens.stop_tracing()\n"
        "I.destroy(iid)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("domain", [0, 1], ids=["raw", "mem"])
def test_an_address_reused_after_an_unseen_free_is_not_counted_twice(domain):
    # A block freed where no hook saw it (another interpreter's thread, for
    # one) leaves its entry; a new block at that address replaces it and
    # takes its bytes back from the old line.
    def now():
        return memlens.traced_memory()[0]

    with memlens.tracing():
        # readings first, comparisons after: comparing allocates
        start = now()
        _core._trace_block(domain, 0x40, 10_000)
        first = now()
        _core._trace_block(domain, 0x40, 3_000)  # 10,000 freed unseen
        second = now()
        _core._trace_block(domain, 0x40, -1)
        freed = now()
        # the interpreter's own small blocks come and go meanwhile
        assert first - start == pytest.approx(10_000, abs=1024)
        assert second - first == pytest.approx(-7_000, abs=1024)
        assert freed - second == pytest.approx(-3_000, abs=1024)
        with pytest.raises(ValueError):
            _core._trace_block(domain, 0x41, 10)
    with pytest.raises(RuntimeError):
        _core._trace_block(domain, 0x40, 10)


@pytest.mark.parametrize("domain", [0, 1], ids=["raw", "mem"])
@pytest.mark.parametrize("sample_bytes", [0, 512 * 1024])
def test_blocks_of_four_gib_and_more_keep_their_size(domain, sample_bytes):
    # A record keeps 32 bits of size; bigger ones go to a list of their own,
    # on the raw side too.
    big = 5 * 1024 ** 3
    with memlens.tracing(sample_bytes=sample_bytes):
        start = memlens.traced_memory()[0]
        _core._trace_block(domain, 0x40, big)
        grown = memlens.traced_memory()[0] - start
        _core._trace_block(domain, 0x80, big + 4096)
        _core._trace_block(domain, 0x40, -1)
        _core._trace_block(domain, 0x80, big)  # replaces its big record
        _core._trace_block(domain, 0x80, -1)
        left = memlens.traced_memory()[0] - start
        assert grown == pytest.approx(big, rel=0.01)
        assert abs(left) < 2 * 1024 * 1024


def _filter_matches_the_tables():
    stats = _core._trace_stats()
    assert stats["filter_full"] == 0
    assert stats["filter_counted"] == stats["blocks"]
    return stats["blocks"]


def test_sampling_filter_counts_exactly_the_recorded_blocks():
    # The free path skips the tables for any address whose filter count is
    # 0; a record left uncounted would never be taken back, and a count
    # left behind would send every later free at that address to the
    # tables. So the counts must add up to the records, always.
    def churn(n):
        for i in range(n):
            x = [i, i, i]
        return x

    with memlens.tracing(sample_bytes=256):
        keep = [[i, i] for i in range(50_000)]
        many = _filter_matches_the_tables()
        assert many > 1_000
        worker = threading.Thread(target=churn, args=(100_000,))
        worker.start()
        churn(100_000)
        worker.join()
        _filter_matches_the_tables()
        del keep
        churn(10_000)
        assert _filter_matches_the_tables() < many // 10
        # a record replaced at a reused address, and one taken back
        for domain in (0, 1):  # raw, mem
            _core._trace_block(domain, 0x40, 100_000)
            _filter_matches_the_tables()
            _core._trace_block(domain, 0x40, 200_000)
            _filter_matches_the_tables()
            _core._trace_block(domain, 0x40, -1)
            _filter_matches_the_tables()
    stats = _core._trace_stats()
    assert stats["filter_counted"] == stats["filter_full"] == 0


def _gen_blocks(n):
    for i in range(n):
        yield bytearray(100_000)  # a generator's frame


class _Holder:
    def fill(self, n):
        return [bytearray(50_000) for _ in range(n)]  # a comprehension


async def _coro_blocks(n):
    return [bytearray(70_000) for _ in range(n)]


def _mixed_workload():
    kept = [deep(2), list(_gen_blocks(20)), _Holder().fill(20)]
    coro = _coro_blocks(10)
    try:
        coro.send(None)
    except StopIteration as done:
        kept.append(done.value)
    return kept


def _tracebacks(api):
    _core._trace_frames_api(api)
    try:
        with memlens.tracing(nframes=4) as t:
            kept = _mixed_workload()
            in_place = _core._trace_stats()["frames_in_place"]
    finally:
        _core._trace_frames_api(False)
    del kept
    here = os.path.abspath(__file__)
    rows = {}
    for stat in t.snapshot.statistics("traceback"):
        frames = tuple((f.filename, f.lineno) for f in stat.traceback)
        if stat.size >= 500_000 and os.path.abspath(frames[0][0]) == here:
            rows[frames] = stat.size
    return in_place, rows


def test_frames_read_in_place_agree_with_the_api():
    # The hooks read the interpreter's frames in place where the layout is
    # known; the sites must be those the frame API gives, to the line.
    # (both from this one line, so that their last frames agree too)
    (in_place, rows), (api_in_place, api_rows) = [
        _tracebacks(api) for api in (False, True)]
    assert in_place and not api_in_place
    assert rows == api_rows
    lines = {frames[0][1] for frames in rows}
    for func, offset in ((_gen_blocks, 2), (_Holder.fill, 1),
                         (_coro_blocks, 1), (deep, 2)):
        assert func.__code__.co_firstlineno + offset in lines, func
    # the generator's caller is the list() line of _mixed_workload
    gen_line = _gen_blocks.__code__.co_firstlineno + 2
    callers = {frames[1][1] for frames in rows if frames[0][1] == gen_line}
    assert callers == {_mixed_workload.__code__.co_firstlineno + 1}


def test_exit_snapshots_hold_the_programs_blocks_and_nothing_else():
    with memlens.tracing() as t:
        x = bytes(5000)
    size = sys.getsizeof(x)  # one block of exactly that size
    assert t.traced == (size, size)
    for snap in (t.snapshot, t.peak):
        assert snap.total == size
        assert [(s.filename, s.line, s.size) for s in snap.statistics()] == [
            (HERE, "x = bytes(5000)", size)]
    with memlens.tracing() as t:
        y = [0] * 10
    # The item array, the list object (unless a free list had one) and the
    # one-item list made on the way: the peak holds those alone.
    assert 10 * 8 <= t.peak.total <= sys.getsizeof(y) + sys.getsizeof([0])
    assert [(s.filename, s.line) for s in t.peak.statistics()] == [
        (HERE, "y = [0] * 10")]
    del x, y


def test_no_row_of_any_report_is_memlens_own_code():
    snapshots = []
    with memlens.tracing(nframes=5) as t:
        kept = [bytes(100) for _ in range(100)]
        snapshots.append(memlens.take_snapshot())
        memlens.traced_memory()
        memlens.reset_peak()
        kept.append(bytes(1000))
        snapshots.append(memlens.peak_snapshot())
        snapshots.append(memlens.take_snapshot())
    snapshots += [t.snapshot, t.peak]
    for snapshot in snapshots:
        assert snapshot.traces
        for frames, *_ in snapshot.traces:
            assert not frames[0].filename.startswith(PACKAGE), frames
        for key in ("lineno", "filename", "traceback"):
            for by in ("size", "allocated"):
                for stat in snapshot.statistics(key, by):
                    assert not stat.filename.startswith(PACKAGE), stat
        assert PACKAGE not in snapshot.format(None, by="allocated")
    del kept


def test_a_snapshot_taken_while_tracing_leaves_the_peak_alone():
    memlens.start_tracing()
    try:
        x = bytes(5000)
        before = memlens.peak_snapshot()
        memlens.take_snapshot()
        memlens.take_snapshot()
        after = memlens.peak_snapshot()
        traced = memlens.traced_memory()
    finally:
        memlens.stop_tracing()
    size = sys.getsizeof(x)
    assert traced == (size, size)
    assert after.total == before.total == size
    assert after.traces == before.traces
    del x


def test_a_public_name_first_used_while_tracing_is_not_traced():
    # A fresh interpreter: memlens binds its public names on first use.
    code = textwrap.dedent("""
        import memlens

        def main():
            memlens.start_tracing()
            snapshot = memlens.take_snapshot()
            memory = memlens.traced_memory()
            peak = memlens.peak_snapshot()
            memlens.stop_tracing()
            print(peak.total, snapshot.total, *memory)

        main()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    if FRAMES_ARE_OBJECTS:
        # memlens's two Python functions called here leave their frames.
        assert all(int(figure) < 1024 for figure in out.split()), out
    else:
        assert out.split() == ["0", "0", "0", "0"]


@pytest.mark.parametrize("sample_bytes", [0, 512 * 1024])
def test_quiet_blocks_are_not_traced_but_frees_of_traced_ones_are(
        sample_bytes):
    # memlens's own work runs quiet: Python objects and NumPy data made
    # then are not recorded; the program's blocks it lets go of still are.
    memlens.start_tracing(1, sample_bytes)
    try:
        # 100 MB: 200 marks when sampling every 512 KiB, so the estimate
        # is within 25% (3.5 standard deviations).
        kept = [bytes(1000) for _ in range(100_000)]
        before = memlens.traced_memory()[0]
        _core._hooks_quiet(True)
        try:
            # Small blocks (the lean hooks' when sampling) and large ones.
            quiet = [bytes(100) for _ in range(100_000)]
            quiet_large = [bytes(1000) for _ in range(10_000)]
            quiet_array = np.ones(10**6)
            del kept
        finally:
            _core._hooks_quiet(False)
        current, peak = memlens.traced_memory()
        sizes = {s.line: s.size for s in memlens.take_snapshot().statistics()}
        lines = set(sizes)
    finally:
        memlens.stop_tracing()
    assert before >= 0.75 * 100_000 * sys.getsizeof(bytes(1000))
    assert current < MiB
    assert peak < before * 1.1
    kept_line = "kept = [bytes(1000) for _ in range(100_000)]"
    if FRAMES_ARE_OBJECTS:
        # The comprehension's frame object, kept by CPython for reuse.
        assert sizes.get(kept_line, 0) < 1024
    else:
        assert kept_line not in lines
    assert not {"quiet = [bytes(100) for _ in range(100_000)]",
                "quiet_large = [bytes(1000) for _ in range(10_000)]",
                "quiet_array = np.ones(10**6)"} & lines
    del quiet, quiet_large, quiet_array


RAW = 0


def test_snapshot_says_its_figures_overstate_when_frees_were_lost():
    # A thread without the GIL leaves its changes in a queue for the GIL
    # side; when the queue is full, a free is lost and its block's bytes
    # stay on their line. The snapshot must say so.
    with memlens.tracing() as t:
        _core._trace_block(RAW, 0x40, 100_000)  # with the GIL: applied
        _core._trace_queue_limit(0)  # the queue is full from now on
        _core._trace_block(RAW, 0x40, -1, False)  # its free: lost
    for snap in (t.snapshot, t.peak):
        assert snap.lost_frees == 1 and snap.lost_records == 0
        assert snap.affected
        text = snap.format()
        assert ("Warning: 1 frees were lost (too many at once without the "
                "GIL); the figures overstate live memory") in text
        assert "1 frees lost, figures overstate" in repr(snap)
        assert "overstate" in snap._repr_html_()
        assert snap.to_dict()["lost_frees"] == 1
    # the figure that is off: the freed block still counts
    assert max(s.size for s in t.snapshot.statistics()) >= 100_000


def test_snapshot_says_its_figures_understate_when_blocks_were_lost():
    with memlens.tracing() as t:
        _core._trace_queue_limit(0)
        _core._trace_block(RAW, 0x40, 100_000, False)  # not recorded
        stats = _core._trace_stats()
    assert stats["queue_lost"] == 1 and stats["lost_frees"] == 0
    snap = t.snapshot
    assert snap.lost_records == 1 and snap.lost_frees == 0
    assert ("Warning: 1 records were lost (out of memory, or too many at "
            "once without the GIL); the figures may understate"
            ) in snap.format()
    assert "1 records lost, figures may understate" in repr(snap)


def test_snapshot_with_nothing_lost_carries_no_warning():
    with memlens.tracing() as t:
        _core._trace_block(RAW, 0x40, 100_000, False)  # queued, applied
        _core._trace_block(RAW, 0x40, -1, False)
    assert t.snapshot.lost_frees == 0 and t.snapshot.lost_records == 0
    assert not t.snapshot.affected
    assert "Warning" not in t.snapshot.format()
    assert "lost" not in repr(t.snapshot)


def test_queue_limit_is_put_back_when_tracing_stops():
    with memlens.tracing():
        assert _core._trace_queue_limit(0) > 0
        with pytest.raises(ValueError):
            _core._trace_queue_limit(-1)
    with memlens.tracing():
        assert _core._trace_queue_limit(0) > 0
    with pytest.raises(RuntimeError):
        _core._trace_queue_limit(0)


# ---- NumPy's data handler: per context, counted per user ----------------

#: A child's preamble: NumPy's handler API reached as any extension
#: reaches it (its C-API table), and a handler of "another library" that
#: passes every call on to NumPy's default one.
NUMPY_HANDLERS = textwrap.dedent('''
    import contextvars, ctypes, json
    import numpy
    try:
        from numpy._core import _multiarray_umath as umath
        from numpy._core.multiarray import get_handler_name
    except ImportError:
        from numpy.core import _multiarray_umath as umath
        from numpy.core.multiarray import get_handler_name
    import memlens

    pointer = ctypes.pythonapi.PyCapsule_GetPointer
    pointer.restype = ctypes.c_void_p
    pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    api = ctypes.cast(pointer(umath._ARRAY_API, None),
                      ctypes.POINTER(ctypes.c_void_p))
    get_handler = ctypes.PYFUNCTYPE(ctypes.py_object)(api[305])
    set_handler = ctypes.PYFUNCTYPE(ctypes.py_object,
                                    ctypes.py_object)(api[304])

    class Allocator(ctypes.Structure):
        _fields_ = [(n, ctypes.c_void_p)
                    for n in ("ctx", "malloc", "calloc", "realloc", "free")]

    class Handler(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char * 127),
                    ("version", ctypes.c_uint8),
                    ("allocator", Allocator)]

    NAME = b"mem_handler"
    default = Handler.from_address(pointer(get_handler(), NAME))
    foreign = Handler(b"foreign", 1, default.allocator)
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                            ctypes.c_void_p]
    foreign_capsule = new_capsule(ctypes.addressof(foreign), NAME, None)
''')


def run_numpy_child(code):
    out = subprocess.run(
        [sys.executable, "-c", NUMPY_HANDLERS + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_numpy_handler_stays_for_a_user_who_came_after_numpy():
    # Tracing starts before NumPy is imported: its acquire cannot install
    # the handler, but counts; the line profiler's, after, installs it.
    # Stopping tracing must not take it from the profiler.
    out = subprocess.run([sys.executable, "-c", textwrap.dedent('''
        import json, sys
        import memlens
        memlens.start_tracing()
        assert "numpy" not in sys.modules
        import numpy
        try:
            from numpy._core.multiarray import get_handler_name
        except ImportError:
            from numpy.core.multiarray import get_handler_name
        prof = memlens.LineProfiler(alloc=True)
        prof.enable()
        memlens.stop_tracing()
        during = get_handler_name()
        prof.disable()
        print(json.dumps([during, get_handler_name()]))
    ''')], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["memlens", "default_allocator"]


def test_numpy_handler_release_leaves_another_librarys_handler():
    out = run_numpy_child('''
        memlens.start_tracing()
        ours = get_handler_name()
        set_handler(foreign_capsule)  # another library, meanwhile
        memlens.stop_tracing()
        left = get_handler_name()
        # and the next user leaves it alone too
        memlens.start_tracing()
        memlens.stop_tracing()
        print(json.dumps([ours, left, get_handler_name()]))
    ''')
    assert out == ["memlens", "foreign", "foreign"]


def test_numpy_handler_is_installed_in_each_context_that_asks():
    # NumPy's handler is a context variable: a user in one context gets
    # memlens's handler there, whatever another context holds.
    out = run_numpy_child('''
        ctx = contextvars.copy_context()
        ctx.run(memlens.start_tracing)
        seen = [ctx.run(get_handler_name), get_handler_name()]
        prof = memlens.LineProfiler(alloc=True)
        prof.enable()
        seen.append(get_handler_name())
        prof.disable()
        seen += [get_handler_name(), ctx.run(get_handler_name)]
        ctx.run(memlens.stop_tracing)
        seen.append(ctx.run(get_handler_name))
        print(json.dumps(seen))
    ''')
    assert out == ["memlens", "default_allocator", "memlens",
                   "default_allocator", "memlens", "default_allocator"]


def test_numpy_handler_restored_where_it_was_installed_not_elsewhere():
    # Tracing started in one context and stopped in another: the handler
    # of the stopping context is not touched (it was never memlens's).
    out = run_numpy_child('''
        ctx = contextvars.copy_context()
        ctx.run(memlens.start_tracing)
        set_handler(foreign_capsule)  # this context's own choice
        memlens.stop_tracing()
        print(json.dumps([get_handler_name(), memlens.is_tracing()]))
    ''')
    assert out == ["foreign", False]


def _allocating(n):
    return [0] * n


def test_a_code_cached_as_skipped_lends_nothing_to_one_born_at_its_address(
        tmp_path, monkeypatch):
    # Line numbers and what a code's folder makes of it are cached by the
    # code's address. Were the entry not to keep its code alive, a code
    # made later at the same address (pymalloc hands a freed block out
    # again first) would be taken for the dead one: here, for a skipped
    # library's, and its allocation would be put on the caller's line.
    import types

    from memlens import _tracing

    skipped = str(tmp_path / "lib") + os.sep
    monkeypatch.setattr(_tracing, "_skip_prefixes",
                        lambda: ((skipped,), (PACKAGE,)))
    template = _allocating.__code__
    user = str(tmp_path / "user.py")
    memlens.start_tracing()
    try:
        lib = types.FunctionType(
            template.replace(co_filename=skipped + "lib.py"), {})
        lib(1000)
        address = id(lib.__code__)
        del lib
        for _ in range(100):
            mine = types.FunctionType(template.replace(co_filename=user), {})
            if id(mine.__code__) == address:
                break
        kept = mine(1_000_000)
        snap = memlens.take_snapshot()
    finally:
        memlens.stop_tracing()
    where = [s for s in snap.statistics("lineno") if s.size >= 8_000_000]
    assert [(s.filename, s.lineno) for s in where] == [
        (user, template.co_firstlineno + 1)]
    del kept
