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


#: A child that says so, waits for a line, then runs exec: the new
#: program says so too and waits for its stdin to close.
EXECS = (
    "import os, sys\n"
    "print('before', flush=True)\n"
    "sys.stdin.readline()\n"
    "os.execv(sys.executable, [sys.executable, '-c', "
    "\"import sys; print('after', flush=True); sys.stdin.read()\"])\n"
)


@pytest.mark.parametrize("metric", ["rss", "pss", "uss"])
def test_another_process_is_sampled_across_its_exec(metric):
    # smaps_rollup, opened once, reads the memory the process had when it
    # was opened: after exec every read of it fails with ESRCH.
    child = subprocess.Popen([sys.executable, "-c", EXECS],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "before\n"
        u = _core.UsageSampler(0.001, pid=child.pid, metric=metric)
        u.start()
        child.stdin.write("exec\n")
        child.stdin.flush()
        assert child.stdout.readline() == "after\n"
        taken = len(buffers(u)[1])
        # Unless the thread ended, stop() samples the new program once more.
        u.stop()
        assert not u.gone and not u.finished
        assert child.poll() is None
        values = buffers(u)[1]
        assert len(values) > taken and all(v > 0 for v in values)
    finally:
        child.stdin.close()
        child.stdout.close()
        child.wait()


@pytest.mark.parametrize("timeout", [1e9 + 1, 1e19, 1e300])
def test_wait_with_a_huge_timeout_waits_for_the_end(timeout):
    u = _core.UsageSampler(0.001, limit=5)
    u.start()
    try:
        assert u.wait(timeout) is True
        assert u.finished
    finally:
        u.stop()
    assert len(buffers(u)[1]) == 5


def test_wait_without_end_lets_a_signal_handler_raise():
    # An infinite timeout is no timeout; the limit only bounds the test.
    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    old = signal.signal(signal.SIGALRM, handler)
    u = _core.UsageSampler(0.05, limit=1200)
    try:
        u.start()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            u.wait(float("inf"))
        assert not u.finished
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        u.stop()


@pytest.mark.parametrize("timeout, exc", [
    (float("nan"), ValueError),
    (-1, ValueError),
    (float("-inf"), ValueError),
    ("1", TypeError),
])
def test_wait_rejects_a_bad_timeout(timeout, exc):
    u = _core.UsageSampler(0.001, limit=1)
    with pytest.raises(exc):
        u.wait(timeout)


def test_a_sampler_that_reached_its_limit_is_not_running_and_restarts():
    u = _core.UsageSampler(0.001, limit=3, add_children=True,
                           each_child=True)
    u.start()
    assert u.wait() is True
    assert u.finished and not u.running
    first = u.start_time
    # Started afresh: the ended thread is joined, the samples cleared.
    u.start()
    assert u.start_time >= first
    assert u.wait() is True
    assert not u.running
    assert _core.state()["sampler_threads"] == 0
    u.stop()
    assert len(buffers(u)[1]) == 3


def test_a_sampler_whose_process_is_gone_restarts_on_that_pid():
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        u = _core.UsageSampler(0.001, pid=child.pid)
        u.start()
        child.stdin.close()
        assert u.wait() is True
        assert u.gone and not u.running
    finally:
        child.wait()
    # start() begins again: on a reaped pid, that is no such process.
    with pytest.raises(ProcessLookupError):
        u.start()
    assert not u.running and _core.state()["sampler_threads"] == 0
