"""mprof's options of `mprof run`, given to `memlens run`: -C
(--include-children), -M (--multiprocess), -T (--interval), -E
(--exit-code), and memory_profiler's --timestamp; what each does to the
data file and to the exit status, and the MODE line that tells the readers
(plot, peak, report, and mprof's own) what MEM counts."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from memlens import _core
from memlens.cli import datafile

from conftest import MEMLENS, MiB, figures

BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("in_tmp")]



def memlens(*args):
    return subprocess.run([*MEMLENS, *args], capture_output=True, text=True,
                          timeout=120)


def write(path, text):
    Path(path).write_text(text)
    return str(path)


# A program whose child holds 80 MiB until a CHLD line of at least 80 MiB
# (the block and the child's interpreter: a line taken while the kernel's
# count still catches up with the block is not enough) is in the data file, or (when no CHLD line will come) until a MEM line
# written after the child was ready is; then it exits with status 3.
# It waits for what the recorder writes, never for a time.
CHILD_PROGRAM = """\
import glob
import subprocess
import sys
import time

HOLD = ("b = bytearray(80 * 2**20)\\n"
        "for i in range(0, len(b), 4096): b[i] = 1\\n"
        "print('ready', flush=True)\\n"
        "import sys; sys.stdin.read()\\n")


def lines():
    with open(glob.glob("*.dat")[0]) as f:
        return [line.split() for line in f if line.endswith("\\n")]


def seen(ready_at):
    for fields in lines():
        if fields[0] == "CHLD" and float(fields[2]) >= 80:
            return True
        if (fields[0] == "MEM" and "--wait-mem" in sys.argv
                and float(fields[2]) > ready_at):
            return True
    return False


child = subprocess.Popen([sys.executable, "-c", HOLD],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
assert child.stdout.readline() == b"ready\\n"
ready_at = time.time()
give_up = time.monotonic() + 60
while not seen(ready_at):
    if time.monotonic() > give_up:
        raise SystemExit("the samples never came")
    time.sleep(0.001)
child.communicate(b"")
print("child", child.pid)
sys.exit(3)
"""


def run_child_program(*flags, wait_mem=False):
    """(result, RunData) of CHILD_PROGRAM run under `flags`."""
    prog = write("kid.py", CHILD_PROGRAM)
    extra = ["--wait-mem"] if wait_mem else []
    result = memlens("run", *flags, "-o", "kid.dat", prog, *extra)
    assert result.returncode == 3, result.stderr
    return result, datafile.read("kid.dat")


def child_pid(result):
    return result.stdout.split("child ")[1].split()[0]


def lines_of(path, kind):
    return [line for line in Path(path).read_text().splitlines()
            if line.startswith(kind + " ")]


# --------------------------------------------------------------------------
# -M / --multiprocess
# --------------------------------------------------------------------------

@figures
@pytest.mark.parametrize("flag", ["-M", "--multiprocess"])
def test_multiprocess_gives_each_child_a_chld_series_apart_from_mem(flag):
    result, data = run_child_program(flag)
    assert lines_of("kid.dat", "MODE") == ["MODE multiprocess"]
    pid = child_pid(result)
    # The child's series under its pid, as mprof -M writes it...
    assert list(data.children) == [pid]
    assert 75 <= max(data.children[pid].mem) <= 110
    # ...and MEM is this process alone: the child's 80 MiB are not in it.
    assert max(data.memory.mem) < 60
    assert data.children_in_memory() is False
    assert data.own_memory() is None
    # The summary line speaks of this process only.
    assert "with children" not in result.stderr


@figures
def test_multiprocess_files_are_read_by_peak_report_and_plot():
    result, data = run_child_program("-M")
    pid = child_pid(result)
    peak = memlens("peak", "kid.dat")
    assert peak.returncode == 0, peak.stderr
    head, kid = peak.stdout.splitlines()
    assert head == f"kid.dat\t{max(data.memory.mem):.2f} MiB"
    assert kid == f"  child {pid}\t{max(data.children[pid].mem):.2f} MiB"
    report = memlens("report", "kid.dat")
    assert report.returncode == 0, report.stderr
    assert f"{pid}: peak" in report.stdout
    pytest.importorskip("matplotlib")
    plot = memlens("plot", "kid.dat", "-o", "kid.png")
    assert plot.returncode == 0, plot.stderr
    assert Path("kid.png").read_bytes()[:4] == b"\x89PNG"


def test_mprof_reads_a_multiprocess_file():
    mprof = BIN / "mprof"
    if not mprof.exists():
        pytest.skip("memory_profiler is not installed")
    result, data = run_child_program("-M")
    pid = child_pid(result)
    out = subprocess.run([str(mprof), "peak", "kid.dat"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"kid.dat\t{max(data.memory.mem):.3f} MiB" in out.stdout
    assert f"Child {pid}\t" in out.stdout


# --------------------------------------------------------------------------
# -C / --include-children, alone and with -M
# --------------------------------------------------------------------------

@figures
@pytest.mark.parametrize("flags, mode", [
    (["-C"], "MODE include-children"),
    (["-C", "-M"], "MODE include-children multiprocess"),
])
def test_include_children_adds_the_child_to_mem(flags, mode):
    result, data = run_child_program(*flags)
    assert lines_of("kid.dat", "MODE") == [mode]
    pid = child_pid(result)
    assert max(data.memory.mem) >= 85  # the child's 80 MiB and ours
    # memlens gives each child its series with -C as well.
    assert 75 <= max(data.children[pid].mem) <= 110
    assert data.children_in_memory() is True
    own = data.own_memory()
    assert own is not None and max(own.mem) < 60
    assert "with children" in result.stderr


def test_without_children_flags_no_mode_and_no_chld_lines():
    _, data = run_child_program(wait_mem=True)
    assert lines_of("kid.dat", "MODE") == []
    assert data.children == {}
    assert max(data.memory.mem) < 60


# --------------------------------------------------------------------------
# The recorder underneath: children add the descendants to MEM (each
# with its series), multiprocess gives them series and leaves MEM alone
# --------------------------------------------------------------------------

HOLD_40 = ("b = bytearray(40 * 2**20)\n"
           "for i in range(0, len(b), 4096): b[i] = 1\n"
           "print('ready', flush=True)\n"
           "import sys; sys.stdin.read()\n")


@figures
@pytest.mark.parametrize("children, multiprocess", [
    (True, False), (False, True), (True, True)])
def test_recorder_multiprocess_writes_series_without_adding_them(
        tmp_path, children, multiprocess):
    path = tmp_path / "rec.dat"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    child = subprocess.Popen([sys.executable, "-c", HOLD_40],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        own = memlens_rss()
        rec = _core.Recorder(fd, 0.005, children=children,
                             multiprocess=multiprocess)
        assert (rec.children, rec.multiprocess) == (children, multiprocess)
        with rec:
            pass  # stop() takes a last sample
    finally:
        os.close(fd)
        child.communicate(b"")
    data = datafile.read(str(path))
    assert data.samples == rec.count >= 1
    assert [str(child.pid)] == list(data.children)
    assert max(data.children[str(child.pid)].mem) >= 35
    if children:
        assert min(data.memory.mem) * MiB >= own + 35 * MiB
    else:
        assert max(data.memory.mem) * MiB < own + 20 * MiB


def memlens_rss():
    import memlens

    return memlens.rss()


# --------------------------------------------------------------------------
# -T / --interval, -E / --exit-code, --timestamp
# --------------------------------------------------------------------------

# Waits until the data file holds four samples.
FOUR_SAMPLES = """\
import glob, time
give_up = time.monotonic() + 60
while sum(1 for line in open(glob.glob("*.dat")[0])
          if line.startswith("MEM ") and line.endswith("\\n")) < 4:
    assert time.monotonic() < give_up
    time.sleep(0.001)
"""


@pytest.mark.parametrize("flag", ["-T", "--interval"])
def test_T_is_mprofs_interval(flag):
    prog = write("four.py", FOUR_SAMPLES)
    result = memlens("run", flag, "0.05", "-o", "t.dat", prog)
    assert result.returncode == 0, result.stderr
    times = datafile.read("t.dat").memory.times
    # The sampler keeps at least the interval on average from its second
    # sample on (the last, taken at the end of the run, is off the
    # schedule): 0.01 s, the default, would give four in 0.03 s.
    scheduled = times[:-1]
    assert len(scheduled) >= 4
    assert (len(scheduled) - 2) * 0.05 <= (
        scheduled[-1] - scheduled[0] + 1e-5), times


@pytest.mark.parametrize("value", ["fast", "0", "-1"])
def test_T_refuses_what_is_not_an_interval(value):
    prog = write("p.py", "pass\n")
    result = memlens("run", "-T", value, "-o", "t.dat", prog)
    assert result.returncode == 2
    assert "-T/--interval" in result.stderr
    assert not Path("t.dat").exists()


EXITS = [("import sys; sys.exit(3)\n", 3), ("pass\n", 0),
         ("raise ValueError('no')\n", 1), ("import sys; sys.exit(0)\n", 0)]


@pytest.mark.parametrize("flag", ["-E", "--exit-code"])
@pytest.mark.parametrize("source, status", EXITS)
def test_exit_code_returns_the_programs_status(flag, source, status):
    prog = write("p.py", source)
    given = memlens("run", flag, "-o", "e.dat", prog)
    default = memlens("run", "-o", "d.dat", prog)
    # mprof returns 0 unless asked with -E; memlens always returns the
    # program's status, and -E asks for what it does anyway.
    assert given.returncode == default.returncode == status, given.stderr
    assert f"exit status {status}" in given.stderr
    assert datafile.read("e.dat").samples >= 1


SPAN_PROGRAM = """\
@profile
def grow():
    return bytearray(10 * 2**20)

grow()
grow()
"""


def test_timestamp_records_the_calls_of_profiled_functions():
    prog = write("s.py", SPAN_PROGRAM)
    result = memlens("run", "--timestamp", "-o", "s.dat", prog)
    assert result.returncode == 0, result.stderr
    spans = datafile.read("s.dat").spans
    assert [s.name for s in spans] == ["__main__.grow"] * 2
    # python -m memlens takes it as python -m memory_profiler does.
    result = memlens("--timestamp", "-o", "m.dat", prog)
    assert result.returncode == 0, result.stderr
    assert len(datafile.read("m.dat").spans) == 2


def test_flags_show_in_help():
    out = memlens("run", "--help").stdout
    # Python 3.13's argparse names the metavar once: "-T, --interval S".
    for flag in (r"-C, --include-children", r"-M, --multiprocess",
                 r"-T( S)?, --interval S", r"-E, --exit-code",
                 r"--timestamp"):
        assert re.search(flag, out), flag


# --------------------------------------------------------------------------
# The MODE line, read by memlens and skipped by mprof
# --------------------------------------------------------------------------

MULTIPROCESS_FILE = (
    "CMDLINE python x.py\n"
    "MODE multiprocess\n"
    "MEM 10.000000 100.000000\n"
    "CHLD 7 50.000000 100.000000\n"
    "MEM 12.000000 100.100000\n"
    "CHLD 7 60.000000 100.100000\n")


def test_mode_line_says_mem_is_this_process_alone(in_tmp):
    write("m.dat", MULTIPROCESS_FILE)
    data = datafile.read("m.dat")
    assert data.mode == frozenset({"multiprocess"})
    assert data.children_in_memory() is False
    # Without the MODE line the same figures read as memlens's -C files:
    # MEM counting the children whose lines share its times.
    write("c.dat", MULTIPROCESS_FILE.replace("MODE multiprocess\n", ""))
    legacy = datafile.read("c.dat")
    assert legacy.children_in_memory() is True
    assert legacy.own_memory().mem == [0.0, 0.0]
    assert data.own_memory() is None
    summary = datafile.summarise("m.dat")
    assert summary["peak_mib"] == 12.0 and not summary["truncated"]
    assert summary["children"][0]["peak_mib"] == 60.0


def test_mode_line_with_flags_of_a_later_version_is_read(in_tmp):
    write("m.dat", "MODE include-children something-new\nMEM 1 1\n")
    data = datafile.read("m.dat")
    assert data.mode == {"include-children", "something-new"}
    assert data.children_in_memory() is True


@pytest.mark.parametrize("line", ["MODE", "MODE ", "MODE a  b"])
def test_mode_line_without_flags_is_an_error_with_its_line(in_tmp, line):
    write("m.dat", f"MEM 1 1\n{line}\nMEM 1 2\n")
    result = memlens("report", "m.dat")
    assert result.returncode == 2
    assert "m.dat:2: bad MODE line" in result.stderr


def test_mprof_stamped_children_are_neither_counted_nor_denied(in_tmp):
    # mprof writes CHLD lines with times of their own, and no MODE line.
    write("p.dat", "MEM 10 100.0\nCHLD 7 50 100.01\nMEM 11 100.1\n")
    data = datafile.read("p.dat")
    assert data.children_in_memory() is None
    assert data.own_memory() is None


def test_plot_of_a_multiprocess_file_shows_children_above_mem(in_tmp):
    pytest.importorskip("matplotlib")
    from memlens.cli import plot

    write("m.dat", MULTIPROCESS_FILE)
    fig = plot.figure([datafile.read("m.dat")])
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "this process" in labels and "child 7" in labels
    assert not any(label.startswith("total") for label in labels)
    # The child's 60 MiB are inside the axes, not cut off at MEM's 12.
    assert ax.get_ylim()[1] >= 60
