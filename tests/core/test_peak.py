"""Exact peak windows: the kernel's resettable high-water mark, nested
windows, and the sampler fallback."""
import shutil
import threading

import pytest

import memlens

from conftest import MiB, figures, spike
from .waiting import until

SPIKE = 300 * MiB


def close_to(value, expected, tolerance=0.03):
    return abs(value - expected) <= tolerance * expected


@figures
def test_peak_catches_every_300mb_spike_twenty_times_in_a_row():
    deltas = []
    for _ in range(20):
        with memlens.peak() as p:
            spike(SPIKE)
        deltas.append(p.peak_delta)
        assert p.source == "kernel"
    misses = [d / MiB for d in deltas if not close_to(d, SPIKE)]
    assert not misses, f"peak_delta off by more than 3%: {misses} MiB"


@figures
def test_peak_catches_two_millisecond_spike():
    with memlens.peak() as p:
        spike(SPIKE, hold=0.002)
    assert close_to(p.peak_delta, SPIKE)


@figures
@pytest.mark.parametrize("before,inside,after", [
    (300, 100, 50),   # the outer peak came before the inner window
    (100, 300, 50),   # ... inside it
    (50, 100, 300),   # ... after it
    (0, 200, 0),      # only the inner window had a spike
])
def test_nested_windows_keep_both_peaks(before, inside, after):
    with memlens.peak() as outer:
        if before:
            spike(before * MiB)
        with memlens.peak() as inner:
            if inside:
                spike(inside * MiB)
        if after:
            spike(after * MiB)
    assert close_to(inner.peak_delta, inside * MiB)
    assert close_to(outer.peak_delta, max(before, inside, after) * MiB)
    assert outer.source == inner.source == "kernel"


@figures
def test_window_in_another_thread_does_not_corrupt_this_one():
    with memlens.peak() as outer:
        spike(250 * MiB)

        def other():
            with memlens.peak() as p:
                spike(50 * MiB)
            results.append(p)

        results = []
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert close_to(results[0].peak_delta, 50 * MiB)
    assert close_to(outer.peak_delta, 250 * MiB)


@figures
def test_window_figures_and_dict():
    import numpy as np

    with memlens.peak() as p:
        assert p.open and p.end is None and p.delta is None
        kept = np.ones(100 * MiB // 8)
        assert p.peak_delta >= 95 * MiB  # live while open
    assert not p.open
    assert close_to(p.delta, 100 * MiB)
    assert p.peak >= p.end and p.peak_delta == p.peak - p.start
    assert p.to_dict()["source"] == "kernel"
    assert "kernel" in repr(p)
    del kept


def test_fresh_window_has_no_figures():
    p = memlens.peak()
    assert (p.start, p.end, p.peak, p.source) == (None, None, None, None)
    assert "new" in repr(p)


def test_exception_inside_window_propagates_and_closes_it():
    p = memlens.peak()
    with pytest.raises(KeyError):
        with p:
            raise KeyError("x")
    assert not p.open and p.end is not None


def test_window_cannot_be_entered_twice_at_once():
    with memlens.peak() as p:
        with pytest.raises(RuntimeError, match="already open"):
            p.__enter__()
    with pytest.raises(RuntimeError, match="not open"):
        p.__exit__(None, None, None)


def test_closed_window_can_be_reused():
    p = memlens.peak()
    with p:
        pass
    with p:
        pass
    assert p.end is not None


@figures
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_sampler_fallback_catches_300mb_spike(how, monkeypatch):
    import numpy as np

    if how == "argument":
        window = memlens.peak(source="sampler")
    else:
        monkeypatch.setenv("MEMLENS_PEAK_SOURCE", "sampler")
        window = memlens.peak()
    for _ in range(5):
        with window:
            # Held until the window's thread has sampled it, however busy
            # the machine: what the sampler saw stays in the closed window.
            block = np.ones(SPIKE // 8)
            until(lambda: close_to(window.peak_delta, SPIKE),
                  "the window's sampler to see the spike")
            del block
        assert window.source == "sampler"
        assert close_to(window.peak_delta, SPIKE)


def test_auto_falls_back_to_sampler_where_reset_is_refused(proc_dir):
    # A proc folder without clear_refs: the reset is refused.
    shutil.copy("/proc/self/statm", proc_dir / "statm")
    (proc_dir / "status").write_text("VmHWM: 1 kB\n")
    with memlens.peak() as p:
        pass
    assert p.source == "sampler"
    with pytest.raises(OSError, match="not available"):
        with memlens.peak(source="kernel"):
            pass


def test_bad_source_is_rejected(monkeypatch):
    with pytest.raises(ValueError, match="'auto', 'kernel' or 'sampler'"):
        memlens.peak(source="magic")
    with pytest.raises(TypeError):
        memlens.peak(source=5)
    monkeypatch.setenv("MEMLENS_PEAK_SOURCE", "bogus")
    with pytest.raises(ValueError, match="MEMLENS_PEAK_SOURCE"):
        memlens.peak()


@pytest.mark.valgrind
def test_windows_open_and_close_cleanly_many_times():
    for source in ("kernel", "sampler", None):
        for _ in range(20):
            with memlens.peak(source=source) as p:
                pass
            assert p.peak >= p.start
