"""Sampled tracing over pymalloc: the mem and obj hooks leave frees to
pymalloc, and every block a mark falls in is one pymalloc hands on to the
raw domain, whose hook sees it go."""
import os
import subprocess
import sys
import sysconfig
import textwrap
import tracemalloc

import pytest

import memlens
from memlens import _core

from conftest import MiB, in_threads

SAMPLE = 512 * 1024
# Lean hooks need pymalloc below: not under PYTHONMALLOC=malloc or debug
# (the sanitizer runs), nor in a free-threaded build.
PYMALLOC = (os.environ.get("PYTHONMALLOC", "") in ("", "pymalloc")
            and not sysconfig.get_config_var("Py_GIL_DISABLED"))
LEAN = (PYMALLOC, PYMALLOC)


@pytest.fixture(autouse=True)
def no_tracing_left():
    yield
    assert not memlens.is_tracing(), "tracing left running"
    assert not tracemalloc.is_tracing()


def blocks():
    return _core._trace_stats()["blocks"]


def filter_matches_the_tables():
    stats = _core._trace_stats()
    assert stats["filter_full"] == 0
    assert stats["filter_counted"] == stats["blocks"]


def allocated_by_line(snapshot):
    return {(s.filename, s.lineno): s.allocated
            for s in snapshot.statistics("lineno", by="allocated")}


def grown_lists():
    # Lists grown by append: their item arrays are resized again and again,
    # below pymalloc's 512-byte limit (small) and past it (big).
    small = []
    for i in range(100_000):
        x = []
        for j in range(40):
            x.append(j)
        small.append(x)
    big = []
    for i in range(10_000):
        x = []
        for j in range(300):
            x.append(j)
        big.append(x)
    return small, big


def test_sampling_alone_links_lean_hooks_whose_frees_leave_nothing():
    with memlens.tracing(sample_bytes=SAMPLE):
        assert _core._hooks_lean() == LEAN
        before = memlens.traced_memory()[0]
        keep = [bytes(100) for _ in range(300_000)]
        grown = memlens.traced_memory()[0] - before
        live = 300_000 * bytes(100).__sizeof__() + keep.__sizeof__()
        assert grown == pytest.approx(live, rel=0.15)
        filter_matches_the_tables()
        del keep
        after = memlens.traced_memory()[0] - before
        # the marks on the freed blocks came back through the raw hook
        assert after < 2 * SAMPLE, after
        filter_matches_the_tables()
    assert _core._hooks_lean() == (False, False)


def test_resized_blocks_are_estimated_within_ten_percent():
    # The two append lines hand out nearly all the bytes of their loops;
    # a line that shares its loop with a bigger one gets the marks that
    # fall in its few bytes by chance, with more spread.
    with memlens.tracing() as exact:
        kept = grown_lists()
    exact_sizes = allocated_by_line(exact.snapshot)
    del kept
    with memlens.tracing(sample_bytes=SAMPLE) as sampled:
        assert _core._hooks_lean() == LEAN
        kept = grown_lists()
    estimates = allocated_by_line(sampled.snapshot)
    checked = 0
    for key, size in exact_sizes.items():
        if size < 40 * MiB:
            continue
        assert abs(estimates.get(key, 0) - size) <= 0.10 * size, (
            key, estimates.get(key), size)
        checked += 1
    assert checked == 2
    with memlens.tracing(sample_bytes=SAMPLE):
        before = memlens.traced_memory()[0]
        mid = blocks()
        for lst in kept[0][:50_000]:
            lst.extend(range(100))  # a small array moved to a big one
        del kept
        assert memlens.traced_memory()[0] - before < 2 * SAMPLE
        assert blocks() <= mid + 4
        filter_matches_the_tables()


def test_a_listener_that_needs_frees_relinks_full_hooks():
    with memlens.tracing(sample_bytes=SAMPLE):
        assert _core._hooks_lean() == LEAN
        base = memlens.traced_memory()[0]
        keep = [bytes(200) for _ in range(200_000)]
        assert memlens.traced_memory()[0] - base > 30 * MiB
        with memlens.measure():
            assert _core._hooks_lean() == (False, False)
            # the substitutes recorded before are freed through full hooks
            del keep
            assert memlens.traced_memory()[0] - base < 2 * SAMPLE
            filter_matches_the_tables()
            more = [bytes(200) for _ in range(100_000)]
        # full hooks stay for the rest of the run: they sampled small
        # blocks into their own table, whose frees they must see
        assert _core._hooks_lean() == (False, False)
        del more
        assert memlens.traced_memory()[0] - base < 2 * SAMPLE
        filter_matches_the_tables()


def test_small_sampling_periods_keep_full_hooks():
    with memlens.tracing(sample_bytes=4096):
        assert _core._hooks_lean() == (False, False)
    with memlens.tracing():
        assert _core._hooks_lean() == (False, False)


def test_tracemalloc_started_during_sampled_tracing():
    memlens.start_tracing(sample_bytes=SAMPLE)
    try:
        tracemalloc.start()
        try:
            base = memlens.traced_memory()[0]
            keep = [bytes(100) for _ in range(200_000)]
            assert tracemalloc.get_traced_memory()[0] > 20 * MiB
            assert memlens.traced_memory()[0] - base > 20 * MiB
            del keep
            assert memlens.traced_memory()[0] - base < 2 * SAMPLE
            memlens.stop_tracing()
            more = [bytes(100) for _ in range(100_000)]
            assert tracemalloc.get_traced_memory()[0] > 10 * MiB
            del more
            if PYMALLOC:
                # memlens's lean hooks, held under tracemalloc's, see no
                # frees: what needs them is refused with a clear message
                with pytest.raises(RuntimeError, match="tracemalloc.stop"):
                    memlens.start_tracing()
                with pytest.raises(RuntimeError, match="tracemalloc.stop"):
                    with memlens.measure():
                        pass
                assert not memlens.is_tracing()
            # sampled tracing needs no frees there: it can start again
            with memlens.tracing(sample_bytes=SAMPLE) as t:
                again = [bytes(100) for _ in range(200_000)]
            assert t.snapshot.total > 20 * MiB
            del again
        finally:
            tracemalloc.stop()
    finally:
        if memlens.is_tracing():
            memlens.stop_tracing()
    # with tracemalloc gone, everything works again
    with memlens.tracing() as t:
        block = bytearray(3 * MiB)
    assert t.snapshot.total >= 3 * MiB
    with memlens.measure() as m:
        block2 = bytearray(3 * MiB)
    assert m.allocated >= 3 * MiB
    del block, block2


def test_sampled_tracing_started_over_tracemalloc():
    tracemalloc.start()
    try:
        with memlens.tracing(sample_bytes=SAMPLE):
            # pymalloc is still what tracemalloc chains to: lean hooks
            assert _core._hooks_lean() == LEAN
            base = memlens.traced_memory()[0]
            keep = [bytes(100) for _ in range(200_000)]
            tracemalloc.stop()  # memlens's hooks are chained again
            assert memlens.traced_memory()[0] - base > 20 * MiB
            del keep
            assert memlens.traced_memory()[0] - base < 2 * SAMPLE
            filter_matches_the_tables()
            more = [bytes(100) for _ in range(200_000)]
            assert memlens.traced_memory()[0] - base > 20 * MiB
            del more
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()


def test_four_threads_sampling_at_once():
    def work(out):
        keep = [bytearray(100 + i % 50) for i in range(100_000)]
        del keep[::3]
        out.append(keep)

    results = []
    with memlens.tracing(sample_bytes=SAMPLE) as t:
        base = memlens.traced_memory()[0]
        in_threads(work, (results,))
        live = sum(x.__sizeof__() for r in results for x in r)
        live += sum(r.__sizeof__() for r in results)
        # a third of the blocks were dropped again: the live bytes take
        # about a third of the marks, and scatter with them
        assert memlens.traced_memory()[0] - base == pytest.approx(live,
                                                                  rel=0.25)
        results.clear()
        assert memlens.traced_memory()[0] - base < 2 * SAMPLE
        filter_matches_the_tables()
    assert t.snapshot.total == sum(s.size for s in t.snapshot.statistics())


# A million blocks (140 MB): some 270 marks, so that the estimate's
# scatter (about 6% with 80 marks, 3% with 270) stays well inside its 15%.
CHILD = textwrap.dedent("""
    import memlens
    from memlens import _core

    with memlens.tracing() as exact:
        keep = [bytes(100) for _ in range(1_000_000)]
    want = exact.snapshot.total
    del keep
    with memlens.tracing(sample_bytes=512 * 1024) as t:
        lean = _core._hooks_lean()
        base = memlens.traced_memory()[0]
        keep = [bytes(100) for _ in range(1_000_000)]
        got = memlens.traced_memory()[0] - base
        del keep
        left = memlens.traced_memory()[0] - base
    print(all(lean), any(lean), abs(got - want) <= 0.15 * want,
          left < 1024 * 1024)
""")


@pytest.mark.parametrize("allocator,lean", [
    ("pymalloc", True), ("debug", False), ("malloc", False),
    ("pymalloc_debug", False)])
def test_other_allocators_keep_full_hooks(allocator, lean):
    env = dict(os.environ, PYTHONMALLOC=allocator)
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(lean), str(lean), "True", "True"]


@pytest.mark.parametrize("child_action", ["continue", "stop"])
def test_forked_child_sampling_can_go_on_or_stop(child_action):
    memlens.start_tracing(sample_bytes=SAMPLE)
    try:
        keep = [bytes(100) for _ in range(100_000)]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                del keep[:]
                if child_action == "continue":
                    data = [bytes(100) for _ in range(100_000)]
                    ok = memlens.traced_memory()[0] > 5 * MiB and data
                else:
                    memlens.stop_tracing()
                    data = [bytes(100) for _ in range(100_000)]
                    ok = not memlens.is_tracing() and data
                code = 0 if ok else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert memlens.is_tracing()
        del keep
    finally:
        memlens.stop_tracing()


def test_relink_over_another_allocator_publishes_a_new_copy_whole():
    # A raw call without the GIL may still be reading the allocator below
    # ours when a relink chains ours above another one: the relink must
    # not rewrite what that call reads, but publish another copy whole.
    memlens.start_tracing()
    first = _core._hooks_below()[0]
    memlens.stop_tracing()
    tracemalloc.start()
    try:
        memlens.start_tracing()
        second = _core._hooks_below()[0]
        memlens.stop_tracing()
    finally:
        tracemalloc.stop()
    assert second[0] != first[0]
    assert second[1:] != first[1:]  # tracemalloc's raw allocator below now
    kept = {k[0]: k for k in _core._hooks_kept()}
    assert kept[first[0]] == first  # the old copy, untouched
    assert kept[second[0]] == second
    # the same allocator below again: the same copy, not a new one
    memlens.start_tracing()
    third = _core._hooks_below()[0]
    memlens.stop_tracing()
    assert third == first
    assert len(_core._hooks_kept()) == len(kept)


def test_raw_calls_without_the_gil_survive_relinks_over_other_allocators():
    # bz2 compresses without the GIL, its buffers from the raw domain:
    # such calls go through the raw hook while the main thread relinks it
    # above tracemalloc's allocator and back, again and again.
    code = textwrap.dedent('''
        import bz2, os, threading, tracemalloc
        import memlens
        data = os.urandom(1 << 16)
        stop = threading.Event()
        def work():
            while not stop.is_set():
                bz2.compress(data, 1)
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for i in range(60):
                if i % 2:
                    tracemalloc.start()
                memlens.start_tracing(sample_bytes=i % 3 * 65536)
                bz2.compress(data, 1)
                memlens.stop_tracing()
                if i % 2:
                    tracemalloc.stop()
        finally:
            stop.set()
            for t in threads:
                t.join()
        print("ok")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
