"""The command line's data files: memlens run writing mprof data as it
goes, the live meter, children, Ctrl-C and kills; plot, peak, list, clean
and report; memory_profiler's mprof reading our files; bad input."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memlens.cli import datafile

from conftest import MEMLENS, figures

BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("in_tmp")]



def run(*args, **kwargs):
    kwargs.setdefault("timeout", 120)
    return subprocess.run(list(args), capture_output=True, text=True,
                          **kwargs)


def memlens(*args, **kwargs):
    return run(*MEMLENS, *args, **kwargs)


def write(path, text):
    Path(path).write_text(text)
    return str(path)


def wait_for_samples(path, n):
    """Polls data file `path` until it holds `n` whole MEM lines; their
    times."""
    give_up = time.monotonic() + 60
    while True:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            data = b""
        lines = data[:data.rfind(b"\n") + 1].splitlines()
        times = [float(line.split()[2]) for line in lines
                 if line.startswith(b"MEM ")]
        if len(times) >= n:
            return times
        assert time.monotonic() < give_up, f"{path}: no {n} samples"
        time.sleep(0.001)


# Programs wait for what the recorder writes, never for a time: they read
# their own data file (the only .dat file where they run) until its
# samples show what the test needs.
SEEN = """\
import glob as _glob
import time as _time


def samples():
    \"\"\"(MiB, time) of each MEM line of this run's data file so far.\"\"\"
    with open(_glob.glob("*.dat")[0]) as f:
        return [tuple(map(float, line.split()[1:])) for line in f
                if line.startswith("MEM ") and line.endswith("\\n")]


def wait_until(done):
    \"\"\"Polls the data file until done(samples()) is true.\"\"\"
    give_up = _time.monotonic() + 60
    while not done(samples()):
        if _time.monotonic() > give_up:
            raise SystemExit("the samples never came")
        _time.sleep(0.001)


def sampled():
    \"\"\"Returns once a sample taken after this call is in the file: the
    next one may have read the memory before.\"\"\"
    n = len(samples())
    wait_until(lambda s: len(s) >= n + 2)
"""


def default_sigint():
    # A shell may start background jobs with SIGINT ignored, and Python
    # keeps an ignored SIGINT ignored: give the child the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SPANS = SEEN + """
import sys

@profile
def build(mib):
    block = bytearray(mib * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    sampled()
    return block

@profile
def outer():
    return len(build(20))

keep = build(30)
outer()
print("done", sys.argv[1:])
"""


def one_error_line(result, *needles):
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("memlens: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------
# memlens run: the data file
# --------------------------------------------------------------------------

def test_run_writes_an_mprof_data_file_named_by_its_start(in_tmp):
    prog = write(in_tmp / "prog.py", SPANS)
    result = memlens("run", prog, "a", "b")
    assert result.returncode == 0, result.stderr
    assert "done ['a', 'b']" in result.stdout
    files = list(in_tmp.glob("memlens_*.dat"))
    assert len(files) == 1
    assert re.fullmatch(r"memlens_\d{14}\.dat", files[0].name)
    assert f"data in {files[0].name}" in result.stderr
    lines = files[0].read_text().splitlines()
    assert lines[0] == f"CMDLINE python {prog} a b"
    data = datafile.read(str(files[0]))
    assert data.samples >= 5
    assert data.memory.times == sorted(data.memory.times)
    names = [s.name for s in data.spans]
    assert names == ["__main__.build", "__main__.build", "__main__.outer"]
    inner, outer = data.spans[1], data.spans[2]
    assert (inner.depth, outer.depth) == (1, 0)
    assert outer.start <= inner.start <= inner.end <= outer.end
    assert data.spans[0].mem_end - data.spans[0].mem_start > 25


def test_run_output_and_interval(in_tmp):
    out = in_tmp / "sub" / "run.dat"
    out.parent.mkdir()
    code = ("import os; os.chdir('sub')\n" + SEEN
            + "wait_until(lambda s: len(s) >= 8)\n")
    result = memlens("run", "-o", str(out), "--interval", "0.05", "-c",
                     code)
    assert result.returncode == 0, result.stderr
    data = datafile.read(str(out))
    assert data.samples >= 8
    # The sampler's n-th deadline is n intervals after its start at the
    # soonest, and a late sample only delays the next ones: never more
    # samples than the interval allows. Spared: one interval for the
    # thread's start, and the last sample, which stop() takes at once.
    # At the default 10 ms this would fail.
    times = data.memory.times[:-1]
    assert times[-1] - times[0] >= (len(times) - 2) * 0.05
    assert data.cmdline == "python -c " + shlex.quote(code).replace(
        "\n", "\\n")
    assert not list(in_tmp.glob("memlens_*.dat"))


def test_two_runs_in_one_second_get_two_files(in_tmp):
    for _ in range(2):
        assert memlens("run", "-c", "pass").returncode == 0
    names = sorted(p.name for p in in_tmp.glob("memlens_*.dat"))
    assert len(names) == 2
    assert len(datafile.data_files()) == 2


def test_a_killed_run_leaves_its_data_up_to_the_last_moment(in_tmp):
    prog = write(in_tmp / "prog.py", """\
import time

@profile
def step():
    return bytearray(40 * 2**20)

keep = step()
print("stepped", flush=True)
while True:
    time.sleep(0.01)
""")
    out = in_tmp / "killed.dat"
    proc = subprocess.Popen([*MEMLENS, "run", "-o", str(out), prog],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"stepped\n"
    # Samples reach the file while the program runs, not at its exit.
    seen = wait_for_samples(str(out), 20)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    data = datafile.read(str(out))
    assert not data.truncated
    assert data.memory.times[:len(seen)] == seen
    assert [s.name for s in data.spans] == ["__main__.step"]
    result = memlens("report", str(out))
    assert result.returncode == 0 and "__main__.step: 1 call" in result.stdout


@figures
def test_include_children_adds_each_child_as_a_series(in_tmp):
    prog = write(in_tmp / "kids.py", SEEN + """
import multiprocessing as mp
import subprocess
import sys

HOLD = ("b = bytearray(100 * 2**20)\\n"
        "for i in range(0, len(b), 4096): b[i] = 1\\n"
        "import sys; sys.stdin.read()\\n")


def hold(ready, done):
    b = bytearray(100 * 2**20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    ready.set()
    done.wait()


def three_big_children(samples):
    # The CHLD lines of one sample share its time.
    big = {}
    with open("kids.dat") as f:
        for line in f:
            if line.startswith("CHLD ") and line.endswith("\\n"):
                _, pid, mib, when = line.split()
                if float(mib) >= 95:
                    big.setdefault(when, set()).add(pid)
    return any(len(pids) >= 3 for pids in big.values())


if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    ready = [ctx.Event(), ctx.Event()]
    done = ctx.Event()
    procs = [ctx.Process(target=hold, args=(r, done)) for r in ready]
    for p in procs:
        p.start()
    sub = subprocess.Popen([sys.executable, "-c", HOLD],
                           stdin=subprocess.PIPE)
    mine = bytearray(100 * 2**20)
    for i in range(0, len(mine), 4096):
        mine[i] = 1
    for r in ready:
        r.wait()
    wait_until(three_big_children)
    done.set()
    sub.communicate(b"")
    for p in procs:
        p.join()
""")
    result = memlens("run", "--include-children", "-o", "kids.dat", prog)
    assert result.returncode == 0, result.stderr
    assert "with children" in result.stderr
    data = datafile.read("kids.dat")
    peak = max(data.memory.mem)
    # This process and three children of 100 MiB each, plus the
    # interpreters' own memory (and multiprocessing's resource tracker).
    assert 400 <= peak <= 600, peak
    big = [pid for pid, s in data.children.items() if max(s.mem) >= 95]
    assert len(big) == 3, {p: max(s.mem) for p, s in data.children.items()}
    own = data.own_memory()
    assert 95 <= max(own.mem) <= 160
    peak_line = memlens("peak", "kids.dat").stdout.splitlines()
    assert len([line for line in peak_line if "child" in line]) >= 3


# --------------------------------------------------------------------------
# memlens run: meter, exit codes, Ctrl-C
# --------------------------------------------------------------------------

def test_live_meter_on_a_terminal(in_tmp):
    pexpect = pytest.importorskip("pexpect")
    # A redraw every 0.1 s of the samples' clock: 0.35 s of samples see
    # at least three.
    prog = write(in_tmp / "slow.py", SEEN + "wait_until(lambda s: len(s) > 1 "
                 "and s[-1][1] - s[0][1] >= 0.35)\n")
    child = pexpect.spawn(sys.executable, ["-m", "memlens", "run", "-o",
                                           "slow.dat", prog],
                          encoding="utf-8", timeout=60,
                          env=dict(os.environ, TERM="xterm"))
    child.expect(pexpect.EOF)
    child.close()
    out = child.before
    assert child.exitstatus == 0, out
    meters = re.findall(r"\r\x1b\[Kmemlens: ([\d.]+) MiB now, peak "
                        r"([\d.]+) MiB, ([\d.]+) s elapsed", out)
    assert len(meters) >= 3, repr(out)
    assert float(meters[-1][1]) >= float(meters[0][0]) > 1
    # Cleared at the end: the summary starts on a clean line.
    assert re.search(r"\r\x1b\[Kmemlens: .*slow\.py: peak", out), repr(out)


def test_no_meter_when_stderr_is_not_a_terminal(in_tmp):
    # Long enough on the samples' clock for three redraws on a terminal.
    result = memlens("run", "-c", SEEN + "wait_until(lambda s: len(s) > 1 "
                     "and s[-1][1] - s[0][1] >= 0.35)\n")
    assert result.returncode == 0
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "peak" in result.stderr


def test_ctrl_c_writes_the_data_and_the_summary_and_exits_130(in_tmp):
    prog = write(in_tmp / "wait.py", """\
import time

@profile
def work():
    return bytearray(10 * 2**20)

work()
print("working", flush=True)
while True:
    time.sleep(0.01)
""")
    proc = subprocess.Popen([*MEMLENS, "run", "-o", "int.dat", prog],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)
    assert proc.stdout.readline() == "working\n"
    wait_for_samples("int.dat", 10)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "exit status 130" in err and "data in int.dat" in err
    assert "Traceback" not in err
    data = datafile.read("int.dat")
    assert data.samples >= 10 and len(data.spans) == 1


@pytest.mark.parametrize("code, status", [
    ("import sys; sys.exit(3)", 3),
    ("raise SystemExit", 0),
    ("raise ValueError('boom')", 1),
    ("raise KeyboardInterrupt", 130),
])
def test_the_programs_exit_status_is_returned(code, status):
    result = memlens("run", "-c", code)
    assert result.returncode == status, result.stderr
    assert f"exit status {status}" in result.stderr


def test_threads_of_the_program_are_waited_for_and_recorded(in_tmp):
    # The thread allocates once the main code has ended, and waits for a
    # sample to see it: the recorder must still be running.
    result = memlens("run", "-o", "t.dat", "-c", SEEN + """
import threading
ended = threading.Event()
def late():
    ended.wait()
    global block
    block = bytearray(50 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    sampled()
threading.Thread(target=late).start()
ended.set()
""")
    assert result.returncode == 0, result.stderr
    data = datafile.read("t.dat")
    assert max(data.memory.mem) - data.memory.mem[0] > 40


def test_spans_of_generators_coroutines_and_raising_functions(in_tmp):
    prog = write(in_tmp / "kinds.py", """\
import asyncio

@profile
def mark(where):
    return where

@profile
def gen():
    yield 1
    mark("gen")
    yield 2

@profile
async def coro():
    await asyncio.sleep(0)
    mark("coro")
    return 5

@profile
def fails():
    raise ValueError("inside")

assert list(gen()) == [1, 2]
assert asyncio.run(coro()) == 5
try:
    fails()
except ValueError:
    pass
""")
    result = memlens("run", "-o", "k.dat", prog)
    assert result.returncode == 0, result.stderr
    spans = datafile.read("k.dat").spans
    assert [s.name for s in spans] == [
        "__main__.mark", "__main__.gen", "__main__.mark", "__main__.coro",
        "__main__.fails"]
    # A generator's span runs from its first next() to its end, past its
    # yields; a coroutine's past its awaits: each holds the call of mark()
    # made after the first suspension.
    for inner, outer in (spans[0:2], spans[2:4]):
        assert outer.start <= inner.start <= inner.end <= outer.end


def test_line_also_records_spans(in_tmp):
    prog = write(in_tmp / "prog.py", SPANS)
    result = memlens("run", "--line", "-o", "l.dat", prog)
    assert result.returncode == 0, result.stderr
    assert "Line #    Mem usage" in result.stdout
    assert "block = bytearray(mib * 2**20)" in result.stdout
    assert len(datafile.read("l.dat").spans) == 3


# --------------------------------------------------------------------------
# memory_profiler's mprof reads our files
# --------------------------------------------------------------------------

def test_mprof_reads_our_data_files(in_tmp):
    mprof = BIN / "mprof"
    if not mprof.exists():
        pytest.skip("memory_profiler is not installed")
    prog = write(in_tmp / "prog.py", SPANS)
    assert memlens("run", "--include-children", "-o", "ours.dat", prog,
                   ).returncode == 0
    data = datafile.read("ours.dat")
    result = run(str(mprof), "peak", "ours.dat")
    assert result.returncode == 0, result.stderr
    assert f"ours.dat\t{max(data.memory.mem):.3f} MiB" in result.stdout
    result = run(str(mprof), "plot", "-o", "mprof.png", "ours.dat")
    assert result.returncode == 0, result.stderr
    assert Path("mprof.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------
# plot, peak, list, clean, report
# --------------------------------------------------------------------------

# A child that lives until a sample has seen it.
CHILD = SEEN + """
wait_until(lambda s: any(line.startswith("CHLD ") for line in open("rec.dat")))
"""


@pytest.fixture
def recorded(in_tmp):
    """A data file with samples, spans and a child."""
    prog = write(in_tmp / "prog.py", SPANS.replace(
        "outer()\n", "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {CHILD!r}])\nouter()\n"))
    result = memlens("run", "--include-children", "-o", "rec.dat", prog)
    assert result.returncode == 0, result.stderr
    return "rec.dat"


def test_plot_renders_a_real_png(recorded):
    from PIL import Image

    result = memlens("plot", recorded, "-o", "out.png", "--title", "Demo")
    assert result.returncode == 0, result.stderr
    assert "out.png" in result.stderr
    with Image.open("out.png") as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 600 and height >= 300
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # Not a blank canvas: lines, bands, text in many shades.
    assert len(colours) > 50
    assert max(count for count, _ in colours) < 0.95 * width * height


def test_plot_svg_and_html(recorded):
    import xml.etree.ElementTree as ET

    assert memlens("plot", recorded, "-o", "out.svg").returncode == 0
    root = ET.parse("out.svg").getroot()
    assert root.tag.endswith("svg")
    text = Path("out.svg").read_text()
    assert "memory (MiB)" in text and "time (s)" in text
    assert "peak" in text and "build" in text
    assert memlens("plot", recorded, "-o", "out.html").returncode == 0
    page = Path("out.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "rec.dat" in page


def test_plot_defaults_to_the_newest_file(recorded):
    old = Path(recorded).read_bytes()
    Path("memlens_20240101000000.dat").write_bytes(old)
    Path("memlens_20240101000000-2.dat").write_bytes(old)
    Path("memlens_20230101000000.dat").write_bytes(old)
    result = memlens("plot")
    assert result.returncode == 0, result.stderr
    assert Path("memlens_20240101000000-2.png").exists()


def test_plot_several_files(recorded):
    Path("again.dat").write_bytes(Path(recorded).read_bytes())
    result = memlens("plot", recorded, "again.dat", "-o", "both.png")
    assert result.returncode == 0, result.stderr


def test_peak_list_clean(in_tmp):
    for _ in range(2):
        assert memlens("run", "-c", "b = bytearray(30 * 2**20)"
                       ).returncode == 0
    write(in_tmp / "mprofile_20200101000000.dat",
          "CMDLINE python x.py\nMEM 12.5 1577836800.0\n"
          "MEM 99.25 1577836801.0\n")
    listed = memlens("list").stdout.splitlines()
    assert len(listed) == 3
    assert listed[0] == ("0 mprofile_20200101000000.dat "
                         "00:00:00 01/01/2020")
    newest = listed[-1].split()[1]
    peak = memlens("peak").stdout.splitlines()
    assert len(peak) == 1 and peak[0].startswith(newest + "\t")
    assert memlens("peak", "0").stdout == (
        "mprofile_20200101000000.dat\t99.25 MiB\n")
    assert len(memlens("peak", "0", "1", "-1").stdout.splitlines()) == 3
    dry = memlens("clean", "--dry-run")
    assert dry.stdout.count("would delete") == 2
    assert len(list(in_tmp.glob("*.dat"))) == 3
    assert memlens("clean").returncode == 0
    # mprof's own files are mprof's to clean.
    assert [p.name for p in in_tmp.glob("*.dat")] == [
        "mprofile_20200101000000.dat"]


def test_report_text_and_json(recorded):
    text = memlens("report", recorded)
    assert text.returncode == 0, text.stderr
    assert "samples" in text.stdout and "peak" in text.stdout
    assert "__main__.build: 2 calls" in text.stdout
    assert "children" in text.stdout
    result = memlens("report", recorded, "--json")
    assert result.returncode == 0
    s = json.loads(result.stdout)
    data = datafile.read(recorded)
    assert s["samples"] == data.samples
    assert s["peak_mib"] == max(data.memory.mem)
    assert s["start_mib"] <= s["peak_mib"] and s["duration_s"] > 0
    names = {f["name"]: f for f in s["functions"]}
    assert names["__main__.build"]["calls"] == 2
    assert names["__main__.outer"]["spans"][0]["depth"] == 0
    assert s["children"] and s["children"][0]["samples"] >= 1


def test_report_csv_timeline(recorded):
    import csv

    result = memlens("report", recorded, "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(result.stdout.splitlines()))
    data = datafile.read(recorded)
    head = rows[0]
    assert head[:2] == ["time_s", "memory_mib"]
    assert head[2:] == [f"child_{pid}_mib" for pid in data.children]
    assert len(rows) == 1 + data.samples
    assert float(rows[1][0]) >= 0
    assert [float(r[1]) for r in rows[1:]] == data.memory.mem
    pid = next(iter(data.children))
    filled = [r for r in rows[1:] if r[2]]
    assert len(filled) == len(data.children[pid].mem)
    assert memlens("report", recorded, "--csv", "--json").returncode == 2


def test_report_reads_mprofs_own_format(in_tmp):
    write(in_tmp / "m.dat",
          "CMDLINE python x.py\n"
          "MEM 10.000000 1577836800.0000\n"
          "FUNC __main__.f 10.0000 1577836800.1000 30.0000 1577836800.5000\n"
          "MEM 30.000000 1577836800.5000\n"
          "CHLD 0 5.000000 1577836800.6000\n"
          "MEM 20.000000 1577836801.0000\n")
    s = json.loads(memlens("report", "m.dat", "--json").stdout)
    assert (s["samples"], s["peak_mib"], s["peak_time_s"]) == (3, 30.0, 0.5)
    assert s["functions"][0]["spans"][0]["depth"] == 0
    assert s["children"][0]["id"] == "0"


def test_report_of_a_file_cut_short_by_a_kill(in_tmp):
    write(in_tmp / "cut.dat", "MEM 10.0 100.0\nMEM 20.0 100.1\nMEM 2")
    result = memlens("report", "cut.dat")
    assert result.returncode == 0
    assert "cut short" in result.stdout and "2 over" in result.stdout


# --------------------------------------------------------------------------
# Bad input: one line, non-zero exit
# --------------------------------------------------------------------------

@pytest.mark.parametrize("content, line, what", [
    ("MEM 1.0 2.0\nMEM x 2.0\n", 2, "bad MEM line"),
    ("CMDLINE a\nMEM 1.0 2.0\nMEM 1.0\nMEM 1.0 3.0\n", 3, "bad MEM line"),
    ("MEM 1.0 2.0\nCHLD 12 1.0\nMEM 1.0 3.0\n", 2, "bad CHLD line"),
    ("MEM 1.0 2.0\nFUNC f 1 2 3\nMEM 1.0 3.0\n", 2, "bad FUNC line"),
    ("MEM 1.0 2.0\nFUNC f 1 2 3 4 x\nMEM 1.0 3.0\n", 2, "bad FUNC line"),
    ("MEM 1.0 2.0\nMEM nan 2.0\nMEM 1.0 3.0\n", 2, "bad MEM line"),
    ("MEM 1.0 2.0\nMEM -1.0 2.0\nMEM 1.0 3.0\n", 2, "bad MEM line"),
    ("MEM 1.0 2.0\n\nMEM 1.0 3.0\n", 2, "empty line"),
    ("MEM 1.0 2.0\nHELLO 1\nMEM 1.0 3.0\n", 2, "unknown record 'HELLO'"),
    ("MEM 1.0 2.0\nMEM 1.0 \xff\nMEM 1.0 3.0\n", 2, "not text"),
    ("\x89PNG\r\n\x1a\n\0\0\0IHDR", 1, "not text"),
    ("MEM 1.0 3.0\nMEM 1.0 2.5\nMEM 1.0 4.0\n", 2,
     "time goes backwards: MEM at 2.5 after 3.0"),
    ("CHLD 7 1.0 3.0\nCHLD 8 1.0 1.0\nCHLD 7 1.0 2.0\nMEM 1 5\n", 3,
     "time goes backwards: CHLD 7 at 2.0 after 3.0"),
    ("MEM 1.0 2.0\nFUNC f 1 3.0 2 2.5\nMEM 1.0 4.0\n", 2,
     "FUNC 'f' ends (2.5) before it starts (3.0)"),
])
@pytest.mark.parametrize("command", ["peak", "report", "plot"])
def test_corrupt_data_file_names_the_line(in_tmp, command, content, line,
                                          what):
    (in_tmp / "bad.dat").write_bytes(content.encode("latin-1"))
    result = memlens(command, "bad.dat")
    assert result.returncode == 2
    one_error_line(result, f"bad.dat:{line}: {what}")


def test_binary_data_file(in_tmp):
    (in_tmp / "bin.dat").write_bytes(b"\0\1\2\3" * 100)
    one_error_line(memlens("peak", "bin.dat"), "bin.dat:1: binary data")


@pytest.mark.parametrize("args, needle", [
    (["peak", "missing.dat"], "missing.dat: no such data file"),
    (["report", "7"], "no data file with that index"),
    (["plot"], "no data file here"),
    (["peak", "."], "is a directory"),
])
def test_missing_data_files(args, needle):
    one_error_line(memlens(*args), needle)


def test_file_without_samples(in_tmp):
    write(in_tmp / "empty.dat", "CMDLINE python x.py\n")
    one_error_line(memlens("plot", "empty.dat"), "no MEM samples")
    assert memlens("report", "empty.dat").returncode == 0


def test_plot_to_an_unknown_format(recorded):
    one_error_line(memlens("plot", recorded, "-o", "x.jpg"),
                   "cannot plot to 'x.jpg'", ".png")


def test_plot_without_matplotlib(recorded, in_tmp):
    fake = in_tmp / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    write(fake / "matplotlib" / "__init__.py",
          "raise ImportError('No module named matplotlib')\n")
    result = memlens("plot", recorded, env=dict(os.environ,
                                                PYTHONPATH=str(fake)))
    assert result.returncode == 2
    assert one_error_line(result) == (
        "memlens: error: plotting needs matplotlib: "
        "pip install 'memlens[plot]'")


@pytest.mark.parametrize("args, needle", [
    (["run", "-o", "no/such/dir/x.dat", "-c", "pass"],
     "cannot write the data file"),
    (["run", "-o", ".", "-c", "pass"], "cannot write the data file"),
    (["run", "--alloc", "-c", "pass"], "--alloc goes with --line"),
])
def test_bad_run_options(args, needle):
    one_error_line(memlens(*args), needle)


@pytest.mark.parametrize("args", [
    ["run", "--interval", "0", "-c", "pass"],
    ["run", "--interval", "x", "-c", "pass"],
    ["plot", "--bogus"],
    ["report", "--bogus"],
])
def test_unknown_options_get_the_usage_and_exit_2(args):
    result = memlens(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: ")
    assert result.stderr.strip().splitlines()[-1].startswith(
        "memlens")


@pytest.mark.parametrize("command", ["run", "plot", "peak", "list", "clean",
                                     "report"])
def test_each_command_has_help(command):
    result = memlens(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: memlens {command}")


def test_help_lists_every_command():
    result = memlens("--help")
    assert result.returncode == 0
    for command in ("run", "plot", "peak", "list", "clean", "report"):
        assert command in result.stdout
