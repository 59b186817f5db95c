"""The recorder of `memlens run`: samples written as mprof lines by the
native sampler's thread."""
import os
import re
import subprocess
import sys
import time

import pytest

import memlens
from memlens import _core

from conftest import MiB, figures, fork_beside_threads
from .waiting import never_faster_than_asked, samples, until

MEM = re.compile(r"MEM (\d+\.\d{6}) (\d+\.\d{6})\Z")
CHLD = re.compile(r"CHLD (\d+) (\d+\.\d{6}) (\d+\.\d{6})\Z")


@pytest.fixture
def data(tmp_path):
    """(path, fd) of a fresh data file; the fd is closed afterwards."""
    path = tmp_path / "run.dat"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    yield path, fd
    os.close(fd)


def lines(path):
    return path.read_text().splitlines()


def test_each_sample_is_a_mem_line_written_at_once(data):
    path, fd = data
    rec = _core.Recorder(fd, 0.005)
    before = time.time()
    with rec:
        # Written as taken: the file has them while the recorder runs.
        until(lambda: sum(1 for line in lines(path)
                          if line.startswith("MEM")) >= 8,
              "8 MEM lines in the file")
    after = time.time()
    mem = [MEM.match(line) for line in lines(path)]
    assert all(mem), lines(path)
    assert len(mem) == rec.count >= 8 and rec.failures == 0
    times = [float(m.group(2)) for m in mem]
    assert times == sorted(times)
    never_faster_than_asked(times, 0.005 - 1e-6)  # the file's 6 decimals
    assert before - 0.01 <= times[0] and times[-1] <= after + 0.01
    values = [float(m.group(1)) * MiB for m in mem]
    assert max(values) == pytest.approx(rec.peak, abs=1)
    assert abs(values[-1] - memlens.rss()) < 8 * MiB
    assert rec.start_time == pytest.approx(times[0], abs=0.05)
    assert 0 <= rec.peak_time <= after - before


@pytest.mark.parametrize("interval", [0.0001, 0.001, 0.02])
def test_every_sample_is_in_the_file_after_stop(data, interval):
    path, fd = data
    rec = _core.Recorder(fd, interval)
    with rec:
        samples(rec, 5)
    mem = [line for line in lines(path) if MEM.match(line)]
    assert len(mem) == rec.count == len(lines(path))


@pytest.mark.valgrind
@pytest.mark.parametrize("interval", [0.0005, 0.01])
def test_write_keeps_lines_in_order_with_the_samples(data, interval):
    path, fd = data
    rec = _core.Recorder(fd, interval)
    assert rec.write(b"CMDLINE python x.py\n")
    with rec:
        for i in range(50):
            if i % 5 == 0:
                samples(rec, 1)  # samples between the lines
            _, when = rec.mark()
            assert rec.write(f"FUNC f{i} 1 2 3 {when:.6f} 0\n".encode())
    text = lines(path)
    assert text[0] == "CMDLINE python x.py"
    funcs = [line.rsplit(" ", 2)[0] for line in text
             if line.startswith("FUNC")]
    assert funcs == [f"FUNC f{i} 1 2 3" for i in range(50)]
    # Samples pending when a line is written go out before it. Only the
    # one sample the thread may be taking while the line is written (its
    # time read, not yet queued) can come after the line and predate it:
    # the first MEM line after a FUNC line, never a later one.
    latest, after = 0.0, 0
    for line in text[1:]:
        if line.startswith("FUNC"):
            latest, after = float(line.split()[5]), 0
        else:
            after += 1
            if float(MEM.match(line).group(2)) < latest:
                assert after == 1, (line, latest)
    assert all(MEM.match(line) for line in text
               if not line.startswith(("FUNC", "CMDLINE")))


def test_mark_is_on_the_samples_clock(data):
    path, fd = data
    rec = _core.Recorder(fd, 0.01)
    with pytest.raises(RuntimeError, match="never started"):
        rec.mark()
    with rec:
        mem, when = rec.mark()
    last = float(MEM.match(lines(path)[-1]).group(2))
    assert abs(mem - memlens.rss()) < 8 * MiB
    assert abs(when - time.time()) < 0.5
    assert when <= last + 0.001


@pytest.mark.valgrind
def test_closed_recorder_refuses_writes_and_starts(data):
    path, fd = data
    rec = _core.Recorder(fd, 0.01)
    rec.close()
    rec.close()
    assert rec.write(b"FUNC f 1 2 3 4\n") is False
    with pytest.raises(ValueError, match="closed"):
        rec.start()
    assert path.read_text() == ""


@pytest.mark.parametrize("args, kwargs, exc", [
    ((-1,), {}, ValueError),
    ((0, 0), {}, ValueError),
    ((0, "0.1"), {}, TypeError),
    ((0, 0.01), {"meter_fd": -5}, ValueError),
    (("x",), {}, TypeError),
])
def test_bad_arguments(args, kwargs, exc):
    with pytest.raises(exc):
        _core.Recorder(*args, **kwargs)


def test_a_closed_descriptor_is_an_os_error(tmp_path):
    fd = os.open(tmp_path / "x", os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    with pytest.raises(OSError):
        _core.Recorder(fd, 0.01)


def test_the_recorder_keeps_its_own_copy_of_the_descriptor(data):
    path, fd = data
    rec = _core.Recorder(fd, 0.01)
    os.close(os.dup(fd))  # the caller's fd may be closed: ours stays
    with rec:
        samples(rec, 1)
    assert MEM.match(lines(path)[0])


@figures
def test_children_add_up_with_one_chld_series_each(data):
    path, fd = data
    hold = ("b = bytearray(60 * 2**20)\n"
            "for i in range(0, len(b), 4096): b[i] = 1\n"
            "import sys; print('ready', flush=True); sys.stdin.read()\n")
    rec = _core.Recorder(fd, 0.005, children=True)
    procs = [subprocess.Popen([sys.executable, "-c", hold],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline() == b"ready\n"
        with rec:
            samples(rec, 3)
    finally:
        for p in procs:
            p.communicate(b"")
    text = lines(path)
    chld = [CHLD.match(line) for line in text if line.startswith("CHLD")]
    assert all(chld)
    pids = {int(m.group(1)) for m in chld}
    assert pids == {p.pid for p in procs}
    # Each sample: its CHLD lines carry the MEM line's time, and the MEM
    # line their total plus this process.
    last = max(float(m.group(3)) for m in chld)
    mem = [MEM.match(line) for line in text if line.startswith("MEM")]
    total = next(float(m.group(1)) for m in mem
                 if float(m.group(2)) == last)
    kids = sum(float(m.group(2)) for m in chld if float(m.group(3)) == last)
    assert kids > 120
    assert total == pytest.approx(kids + memlens.rss() / MiB, abs=8)
    assert rec.peak >= 120 * MiB


def test_a_forked_child_writes_nothing(data):
    path, fd = data
    rec = _core.Recorder(fd, 0.001)
    with rec:
        pid = fork_beside_threads()
        if pid == 0:
            ok = rec.write(b"FUNC child 1 2 3 4\n") is False
            ok = ok and not rec.running
            rec.stop()
            rec.close()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert rec.write(b"FUNC parent 1 2 3 4\n")
    text = path.read_text()
    assert "FUNC parent" in text and "child" not in text


def test_numbers_ignore_the_programs_locale(data):
    import locale

    path, fd = data
    try:
        old = locale.setlocale(locale.LC_NUMERIC)
        locale.setlocale(locale.LC_NUMERIC, "de_DE.UTF-8")
    except locale.Error:
        pytest.skip("no de_DE locale here")
    try:
        with _core.Recorder(fd, 0.01) as rec:
            samples(rec, 2)
    finally:
        locale.setlocale(locale.LC_NUMERIC, old)
    assert all(MEM.match(line) for line in lines(path))
