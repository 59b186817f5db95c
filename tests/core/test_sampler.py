"""The native sampling thread."""
import math
import os
import time

import pytest

import memlens
from memlens import _core

from conftest import MiB, figures, fork_beside_threads
from .waiting import never_faster_than_asked, samples, until


@pytest.mark.parametrize("interval", [0, -1, -0.5, math.nan, math.inf, 1e-9])
def test_bad_interval_is_a_value_error(interval):
    with pytest.raises(ValueError, match="interval"):
        memlens.Sampler(interval=interval)


@pytest.mark.parametrize("interval", ["0.01", None, True, [1]])
def test_interval_of_wrong_type_is_a_type_error(interval):
    with pytest.raises(TypeError, match="interval"):
        memlens.Sampler(interval=interval)


def test_start_and_stop_are_idempotent_and_stop_joins():
    s = memlens.Sampler(interval=0.001)
    assert not s.running and s.peak is None and s.count == 0
    s.start()
    s.start()
    assert s.running and _core.state()["sampler_threads"] == 1
    samples(s, 5)
    s.stop()
    count = s.count
    s.stop()
    assert not s.running and _core.state()["sampler_threads"] == 0
    assert s.count == count >= 5  # joined: nothing more is taken


def test_samples_keep_the_interval():
    begin = time.time()
    with memlens.Sampler(interval=0.005) as s:
        samples(s, 30)
    end = time.time()
    times = s.times
    assert len(times) == s.count >= 30
    assert all(b > a for a, b in zip(times, times[1:]))
    never_faster_than_asked(times, 0.005)
    assert begin <= s.start_time <= end
    assert 0 <= times[0] and s.start_time + times[-1] <= end


def test_sampler_runs_while_the_gil_is_held():
    import ctypes

    # A C call made through PyDLL keeps the GIL all along: usleep() then
    # holds it for 20 ms. No other Python thread runs, so this thread never
    # lets go of the GIL between reading the count twice either.
    usleep = ctypes.PyDLL(None).usleep
    usleep.argtypes = [ctypes.c_uint]
    with memlens.Sampler(interval=0.002) as s:
        samples(s, 1)

        def sampled_while_held():
            before = s.count
            usleep(20_000)
            return s.count > before

        until(sampled_while_held, "a sample taken while the GIL was held")


@figures
def test_sampler_sees_an_allocation():
    import numpy as np

    with memlens.Sampler(interval=0.001) as s:
        start = memlens.rss()
        block = np.ones(100 * MiB // 8)
        samples(s, 2)  # the second one began after the block was made
        del block
    assert s.peak - start >= 95 * MiB
    values = s.values
    assert max(values) == s.peak and len(values) == s.count
    d = s.to_dict()
    assert d["peak"] == s.peak and len(d["times"]) == len(d["values"])


def test_restart_clears_earlier_samples():
    s = memlens.Sampler(interval=0.001)
    with s:
        samples(s, 20)
    first_start = s.start_time
    stopped = time.time()
    with s:
        samples(s, 1)
    # only the second run's samples, timed from its own start
    assert s.start_time >= stopped > first_start
    times = s.times
    assert len(times) == s.count == len(s.values) >= 1
    assert times[0] >= 0 and s.start_time + times[-1] <= time.time()


def test_sampler_in_a_forked_child_stops_safely():
    with memlens.Sampler(interval=0.001) as s:
        pid = fork_beside_threads()
        if pid == 0:
            code = 0 if not s.running else 1
            s.stop()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.valgrind
def test_many_samplers_start_and_stop():
    for i in range(30):
        s = memlens.Sampler(interval=0.0005)
        s.start()
        if i % 2:
            s.stop()
        del s
    assert _core.state()["sampler_threads"] == 0


def test_forked_child_never_hangs_on_the_samplers_lock():
    # A fork at the instant the thread holds its lock must not leave the
    # child's copy locked: the child reads the sampler, alarm as a guard.
    import signal

    s = memlens.Sampler(interval=1e-6)
    with s:
        for _ in range(30):
            pid = fork_beside_threads()
            if pid == 0:
                signal.alarm(5)
                ok = (s.count >= 0 and not s.running
                      and _core.state()["sampler_threads"] == 0)
                s.times
                s.stop()
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0


def test_start_while_another_thread_stops_is_refused_or_works():
    import threading

    for _ in range(30):
        s = memlens.Sampler(interval=0.001)
        s.start()
        go = threading.Barrier(2)
        errors = []

        def stopper():
            go.wait()
            s.stop()

        def starter():
            go.wait()
            try:
                s.start()
            except RuntimeError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=stopper),
                   threading.Thread(target=starter)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads)
        assert all("being stopped" in str(e) for e in errors)
        failures = s.failures
        if s.running:
            samples(s, 3)
        assert s.failures == failures  # its descriptor is its own
        s.stop()


def test_arrays_from_an_index_give_only_the_samples_since():
    with memlens.Sampler(interval=0.001) as s:
        samples(s, 10)
    times, values = s.arrays()
    later_times, later_values = s.arrays(4)
    assert list(later_times) == list(times[4:])
    assert list(later_values) == list(values[4:])
    assert len(s.arrays(len(times))[0]) == 0
    assert len(s.arrays(len(times) + 100)[1]) == 0


def test_arrays_from_a_negative_index_is_a_value_error():
    s = memlens.Sampler(interval=0.001)
    with pytest.raises(ValueError, match="first"):
        s.arrays(-1)
