"""UsageSampler: the sampler of memory_usage(), this or another process,
bounded or not, with the descendants summed or kept one by one."""
import os
import signal
import subprocess
import sys
from array import array

import pytest

from memlens import _core

from conftest import MiB, fork_beside_threads


def buffers(u):
    out = [array("d"), array("Q"), array("d"), array("q"), array("Q")]
    for arr, data in zip(out, u._buffers()):
        arr.frombytes(data)
    return out


def test_limit_ends_the_thread_after_that_many_samples():
    u = _core.UsageSampler(0.001, limit=7)
    u.start()
    assert u.wait() is True
    assert u.finished and not u.gone
    u.stop()
    times, values = buffers(u)[:2]
    assert len(values) == 7  # stop() adds none to a finished sampler
    assert list(times) == sorted(times) and times[0] >= 0
    assert all(v > 0 for v in values)
    assert _core.state()["sampler_threads"] == 0


def test_first_sample_is_taken_by_start_itself():
    u = _core.UsageSampler(86400.0)
    u.start()
    # The thread's own first sample is a day away.
    assert len(buffers(u)[1]) == 1
    u.stop()
    assert len(buffers(u)[1]) == 2


def test_wait_times_out_without_a_limit():
    u = _core.UsageSampler(0.01)
    u.start()
    try:
        assert u.wait(0.02) is False
        assert not u.finished
    finally:
        u.stop()
    assert u.wait() is True  # stopped: nothing to wait for


def test_wait_lets_a_signal_handler_raise():
    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    old = signal.signal(signal.SIGALRM, handler)
    u = _core.UsageSampler(1.0)
    try:
        u.start()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            u.wait(300)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        u.stop()


def test_another_process_is_sampled_until_it_exits():
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        u = _core.UsageSampler(0.005, pid=child.pid)
        u.start()
        assert u.wait(0.05) is False  # alive: still sampled
        child.stdin.close()
        # Exited but not reaped: a zombie ends the sampling too.
        assert u.wait() is True
        assert u.gone
        u.stop()
        values = buffers(u)[1]
        assert len(values) >= 1 and all(v > 0 for v in values)
    finally:
        child.wait()


def test_a_missing_process_is_a_process_lookup_error():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    u = _core.UsageSampler(0.01, pid=child.pid)
    with pytest.raises(ProcessLookupError, match=f"/proc/{child.pid}/"):
        u.start()
    assert _core.state()["sampler_threads"] == 0


def test_each_child_is_kept_with_its_sample_time():
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        u = _core.UsageSampler(0.001, limit=3, add_children=True,
                               each_child=True)
        u.start()
        u.wait()
        u.stop()
        times, values, kid_times, kid_pids, kid_values = buffers(u)
        assert list(kid_times) == list(times)
        assert set(kid_pids) == {child.pid}
        alone = _core.rss()
        for v, kv in zip(values, kid_values):
            # The sample is this process plus the child.
            assert abs(v - kv - alone) < 50 * MiB
    finally:
        child.stdin.close()
        child.wait()


@pytest.mark.parametrize("metric", ["pss", "uss"])
def test_pss_and_uss_are_read_from_smaps_rollup(metric):
    u = _core.UsageSampler(0.01, metric=metric, limit=1)
    u.start()
    u.wait()
    u.stop()
    value = buffers(u)[1][0]
    assert 0 < value <= _core.rss() + 50 * MiB


@pytest.mark.parametrize("kwargs, exc", [
    ({"interval": 0}, ValueError),
    ({"interval": "1"}, TypeError),
    ({"interval": 1, "pid": -3}, ValueError),
    ({"interval": 1, "metric": "vms"}, ValueError),
    ({"interval": 1, "limit": -1}, ValueError),
])
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        _core.UsageSampler(**kwargs)


def test_fork_in_the_child_leaves_it_usable():
    u = _core.UsageSampler(0.001, add_children=True, each_child=True)
    u.start()
    pid = fork_beside_threads()
    if pid == 0:
        # The thread is the parent's: the child stops nothing, and its
        # locks are its own.
        code = 1
        try:
            u._buffers()
            code = 0 if not u.running and u.failures >= 0 else 2
            u.stop()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    u.stop()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
