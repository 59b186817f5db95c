"""memlens.memory_usage(): memory_profiler's call, its arguments, results
and errors, sampled by the native thread."""
import io
import re
import subprocess
import sys
import time

import pytest

import memlens
from memlens import _core

from conftest import MiB, figures

#: What the helper child process holds, touched.
HOLD = 100 * MiB

#: A child that makes HOLD bytes resident, says so, and waits for its
#: stdin to close.
HOLDER = (
    "import sys\n"
    f"b = bytearray({HOLD})\n"
    "b[::4096] = b'x' * len(range(0, len(b), 4096))\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def holder():
    """A running child process holding HOLD bytes, ended afterwards."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        yield child
    finally:
        child.stdin.close()
        child.stdout.close()
        child.wait()


def is_mib(x):
    return type(x) is float and x > 0


# ---- Shapes -----------------------------------------------------------


def test_default_is_one_sample_of_this_process_in_mib():
    usage = memlens.memory_usage()
    assert isinstance(usage, list) and len(usage) == 1
    assert is_mib(usage[0])
    assert abs(usage[0] - memlens.rss() / MiB) < 20


def test_timeout_gives_timeout_over_interval_samples():
    usage = memlens.memory_usage(-1, interval=.01, timeout=.05)
    assert len(usage) == 5
    assert all(is_mib(x) for x in usage)


def test_timeout_shorter_than_half_an_interval_gives_nothing():
    assert memlens.memory_usage(-1, interval=1, timeout=.1) == []
    assert memlens.memory_usage(-1, interval=1, timeout=.1,
                                max_usage=True) == -1.0


def test_max_usage_of_this_process_is_a_float():
    peak = memlens.memory_usage(-1, interval=.01, timeout=.03,
                                max_usage=True)
    assert is_mib(peak)


def test_timestamps_pair_each_sample_with_its_epoch_time():
    before = time.time()
    usage = memlens.memory_usage(-1, interval=.01, timeout=.03,
                                 timestamps=True)
    after = time.time()
    assert len(usage) == 3
    for mem, when in usage:
        assert is_mib(mem)
        assert before - 1 <= when <= after + 1
    times = [when for _, when in usage]
    assert times == sorted(times)


def test_proc_none_is_this_process_for_max_iterations_samples():
    assert len(memlens.memory_usage(None, interval=.01,
                                    max_iterations=3)) == 3


def test_callable_forms_call_once_and_return_its_value():
    calls = []

    def f(*args, **kw):
        calls.append((args, kw))
        return len(calls)

    for proc, args, kw in [(f, (), {}), ((f,), (), {}),
                           ((f, (1, 2)), (1, 2), {}),
                           ((f, (1,), {"a": 3}), (1,), {"a": 3}),
                           ([f, [5]], (5,), {})]:
        calls.clear()
        usage, returned = memlens.memory_usage(proc, retval=True)
        assert calls == [(args, kw)]
        assert returned == 1
        # The moment before the call and the moment after, at least.
        assert len(usage) >= 2 and all(is_mib(x) for x in usage)


def test_callable_results_take_memory_profilers_shapes():
    def f():
        return "done"

    assert type(memlens.memory_usage(f, max_usage=True)) is float
    peak, returned = memlens.memory_usage((f,), max_usage=True,
                                          retval=True)
    assert is_mib(peak) and returned == "done"
    peak, when = memlens.memory_usage(f, max_usage=True, timestamps=True)
    assert is_mib(peak) and abs(when - time.time()) < 60
    pairs = memlens.memory_usage(f, timestamps=True)
    assert all(is_mib(m) and isinstance(t, float) for m, t in pairs)
    # multiprocess is for processes: a call's samples stay flat.
    assert all(is_mib(x) for x in memlens.memory_usage(f,
                                                       multiprocess=True))


def test_callable_runs_until_done_whatever_the_timeout():
    def slow():
        # Returns once the sampler has sampled it a few times: the call
        # is never cut short at the timeout.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _core.state()["sampler_threads"] == 1:
                time.sleep(0.05)
                return "finished"
        return "no sampler"

    usage, returned = memlens.memory_usage(slow, interval=.01, timeout=.01,
                                           retval=True)
    assert returned == "finished"
    assert len(usage) >= 2


@figures
def test_max_usage_catches_a_two_millisecond_spike():
    import numpy as np

    spike = 300 * MiB

    def burst():
        block = np.ones(spike // 8)  # Every page touched.
        del block

    for _ in range(5):
        base = memlens.rss() / MiB
        # Samples a second apart see none of it: the peak is exact.
        peak = memlens.memory_usage(burst, interval=1.0, max_usage=True)
        assert peak - base >= 0.95 * spike / MiB


@figures
def test_max_usage_of_this_process_catches_a_spike_in_another_thread():
    import threading

    import numpy as np

    spike = 300 * MiB
    done = threading.Event()

    def burst():
        # Once the call watches (its peak window is open), and however
        # busy the machine.
        deadline = time.monotonic() + 30
        while (_core.state()["open_windows"] == 0
               and time.monotonic() < deadline):
            time.sleep(0.001)
        block = np.ones(spike // 8)
        del block
        done.set()

    base = memlens.rss() / MiB
    th = threading.Timer(0.0, burst)
    th.start()
    try:
        peak = memlens.memory_usage(-1, interval=.5, timeout=3.0,
                                    max_usage=True)
    finally:
        th.join()
    assert done.is_set()
    assert peak - base >= 0.95 * spike / MiB


# ---- Other processes --------------------------------------------------


@figures
def test_pid_of_another_process_is_sampled(holder):
    usage = memlens.memory_usage(holder.pid)
    assert len(usage) == 1
    assert usage[0] >= HOLD / MiB
    assert memlens.memory_usage(holder.pid, max_usage=True) >= HOLD / MiB


@figures
def test_include_children_adds_their_rss(holder):
    alone = memlens.memory_usage(-1)[0]
    with_children = memlens.memory_usage(-1, include_children=True)[0]
    assert with_children - alone >= 0.9 * HOLD / MiB


@figures
def test_multiprocess_gives_each_child_beside_the_process(holder):
    usage = memlens.memory_usage(-1, interval=.01, timeout=.03,
                                 multiprocess=True)
    assert len(usage) == 3
    for sample in usage:
        assert is_mib(sample[0])
        assert len(sample) == 2 and sample[1] >= HOLD / MiB
    usage = memlens.memory_usage(-1, interval=.01, timeout=.02,
                                 multiprocess=True, timestamps=True)
    for (mem, when), child in usage:
        assert is_mib(mem) and isinstance(when, float) and is_mib(child)


def test_multiprocess_without_children_wraps_each_sample():
    usage = memlens.memory_usage(-1, interval=.01, timeout=.02,
                                 multiprocess=True)
    assert [len(x) for x in usage] == [1, 1]


def test_popen_is_sampled_until_it_exits_and_is_reaped():
    # Its exit, which gives back HOLD bytes, takes a while: sampled often,
    # it is seen exiting before it is a zombie, and still reaped.
    code = HOLDER.replace("sys.stdin.read()", "")
    child = subprocess.Popen([sys.executable, "-c", code],
                             stdout=subprocess.DEVNULL)
    usage = memlens.memory_usage(child, interval=.0001)
    assert isinstance(usage, list)
    assert all(type(x) is float for x in usage)
    assert child.returncode == 0


def test_popen_sampling_stops_at_the_timeout(holder):
    usage = memlens.memory_usage(holder, interval=.01, timeout=.04)
    assert len(usage) == 4
    assert holder.poll() is None


# ---- Stream -----------------------------------------------------------

MEM_LINE = re.compile(r"MEM \d+\.\d{6} \d+\.\d{4}")
CHLD_LINE = re.compile(r"CHLD \d+ \d+\.\d{6} \d+\.\d{4}")


def test_stream_gets_mprof_lines_and_none_is_returned():
    out = io.StringIO()
    assert memlens.memory_usage(-1, interval=.01, timeout=.03,
                                stream=out) is None
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(MEM_LINE.fullmatch(line) for line in lines)

    out = io.StringIO()
    assert memlens.memory_usage(lambda: None, stream=out) is None
    assert all(MEM_LINE.fullmatch(line)
               for line in out.getvalue().splitlines())


@figures
def test_stream_lists_children_with_multiprocess(holder):
    out = io.StringIO()
    memlens.memory_usage(-1, interval=.01, timeout=.02, stream=out,
                         multiprocess=True)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["MEM", "CHLD"] * 2
    for mem, chld in zip(lines[::2], lines[1::2]):
        assert MEM_LINE.fullmatch(mem) and CHLD_LINE.fullmatch(chld)
        assert chld.split()[1] == str(holder.pid)
        assert float(chld.split()[2]) >= HOLD / MiB
        assert chld.split()[3] == mem.split()[2]


# ---- Backends ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["psutil", "posix", "psutil_pss",
                                     "psutil_uss", None])
def test_memory_profilers_backends_are_read(backend):
    usage = memlens.memory_usage(-1, backend=backend)
    assert len(usage) == 1 and is_mib(usage[0])


@figures
def test_uss_leaves_out_what_is_shared():
    rss = memlens.memory_usage(-1, backend="psutil")[0]
    uss = memlens.memory_usage(-1, backend="psutil_uss")[0]
    detail = memlens.memory(detail=True)
    assert uss < rss
    assert abs(uss - detail.uss / MiB) < 10


# ---- Errors -----------------------------------------------------------


def _never_called():
    raise AssertionError("called")


@pytest.mark.parametrize("kwargs, exc", [
    ({"proc": "1234"}, TypeError),
    ({"proc": 1.5}, TypeError),
    ({"proc": True}, TypeError),
    ({"proc": ()}, ValueError),
    ({"proc": (_never_called, (), {}, 4)}, ValueError),
    ({"proc": (3, (), {})}, TypeError),
    ({"proc": -5}, ValueError),
    ({"interval": -1}, ValueError),
    ({"interval": -0.1, "timeout": 1}, ValueError),
    ({"interval": "fast"}, TypeError),
    ({"interval": 0, "timeout": 1}, ZeroDivisionError),
    ({"timeout": "1"}, TypeError),
    ({"backend": "nope"}, KeyError),
    ({"backend": "tracemalloc"}, RuntimeError),
    ({"proc": _never_called, "backend": "nope"}, KeyError),
    ({"proc": None, "max_iterations": "3"}, TypeError),
])
def test_bad_arguments_raise_memory_profilers_types(kwargs, exc):
    with pytest.raises(exc):
        memlens.memory_usage(**kwargs)


def _free_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # Reaped: no process has it (until it is reused).


@pytest.mark.parametrize("pid", [0, 2 ** 40, "reaped"])
def test_a_pid_of_no_process_raises_process_lookup_error(pid):
    if pid == "reaped":
        pid = _free_pid()
    with pytest.raises(ProcessLookupError, match=str(pid)):
        memlens.memory_usage(pid)


def test_a_pid_of_no_process_is_psutils_no_such_process_too():
    psutil = pytest.importorskip("psutil")
    with pytest.raises(psutil.NoSuchProcess) as info:
        memlens.memory_usage(_free_pid(), timeout=.1)
    assert isinstance(info.value, ProcessLookupError)


def test_an_exception_in_the_call_propagates_after_the_sampler_stops():
    seen = []

    def fails():
        seen.append(_core.state())
        raise ZeroDivisionError("inside")

    with pytest.raises(ZeroDivisionError, match="inside"):
        memlens.memory_usage((fails,), max_usage=True)
    assert seen[0]["sampler_threads"] == 1
    assert seen[0]["open_windows"] == 1


def test_waiting_lets_a_signal_handler_raise():
    import signal

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            memlens.memory_usage(-1, interval=1, timeout=300)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_nothing_outlives_the_call():
    import threading

    threads = set(threading.enumerate())
    for kwargs in [{}, {"timeout": .02, "interval": .01},
                   {"proc": lambda: None, "max_usage": True},
                   {"max_usage": True, "include_children": True},
                   {"multiprocess": True, "stream": io.StringIO()}]:
        memlens.memory_usage(**kwargs)
        state = _core.state()
        assert state["sampler_threads"] == 0
        assert state["open_windows"] == 0
        assert not state["hooks_installed"]
        assert set(threading.enumerate()) == threads


def test_memory_usage_is_loaded_on_first_use():
    code = ("import sys, memlens\n"
            "assert 'memlens._usage' not in sys.modules\n"
            "assert 'memory_usage' in dir(memlens)\n"
            "memlens.memory_usage\n"
            "assert 'memlens._usage' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
